//! Online schema change tools followed through their swap (docs/schema-changes.md, "Online
//! schema change tools"): the real `pt-online-schema-change` under concurrent writes, and the
//! statement sequences of gh-ost (atomic and two-step cut-over) and LHM (atomic and locked
//! switchers) fed through the source as plain SQL. In every case a `shop.*` glob matches the
//! tool's tables too; sluice must not stop, no tool table may reach the edge, and the edge
//! table must equal the source over the replicated columns at the end.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{same_rows, wait_for, Env, Sluice};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT);
CREATE TABLE shop.orders (id INT PRIMARY KEY, item INT NOT NULL, note VARCHAR(40));
INSERT INTO shop.items SELECT seq, CONCAT('item-', seq), seq % 50 FROM shop.seq_1_to_20000;
INSERT INTO shop.orders SELECT seq, seq % 2000 + 1, NULL FROM shop.seq_1_to_300;
";

/// All of `shop`, the tool's new column left out by name.
const GLOB_EXCLUDING_EXTRA: &str =
    "[[tables]]\nmatch = \"shop.*\"\nexclude_columns = [\"extra\"]\n\n[backfill]\nchunk_rows = 500\n";
/// `items` with an explicit column list (the tool's new column is not in it), and the rest.
const EXPLICIT_COLUMNS: &str = "[[tables]]\nmatch = \"shop.items\"\ncolumns = [\"id\", \"name\", \"qty\"]\n\n\
     [[tables]]\nmatch = \"shop.*\"\n\n[backfill]\nchunk_rows = 500\n";

fn copied(env: &Env, table: &str) -> bool {
    env.target.exists()
        && !env
            .target_rows("SELECT name FROM sqlite_master WHERE name = '_sluice_backfill'")
            .is_empty()
        && !env
            .target_rows(&format!(
                "SELECT 1 FROM _sluice_backfill WHERE name = '{table}' AND done = 1 \
                 AND coalesce(detail, '') NOT LIKE '%\"stale\":true%'"
            ))
            .is_empty()
}

fn edge_tables(env: &Env) -> Vec<String> {
    env.target_rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_sluice%' ESCAPE '\\' ORDER BY name",
    )
    .into_iter()
    .map(|mut r| r.remove(0))
    .collect()
}

fn backfill_records(env: &Env) -> Vec<String> {
    env.target_rows("SELECT name FROM _sluice_backfill ORDER BY name")
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
}

/// Starts sluice and waits for both tables' copies.
fn start_copied(env: &Env) -> Sluice {
    let mut sluice = env.start();
    wait_for(env, &mut sluice, "both copies", || {
        copied(env, "items") && copied(env, "orders")
    });
    sluice
}

/// The application: small transactions on `items` (update, insert, delete; never a key
/// change, which LHM's triggers do not carry) and `orders`, until `stop`.
fn application(env: &Env, stop: &AtomicBool, next: &AtomicU32) {
    while !stop.load(Ordering::SeqCst) {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let sql = format!(
            "BEGIN;
             UPDATE shop.items SET qty = qty + 1, name = 'app-{i}' WHERE id BETWEEN {m} AND {m} + 4;
             INSERT INTO shop.items (id, name, qty) VALUES ({id}, 'new-{i}', {i});
             DELETE FROM shop.items WHERE id = {del};
             INSERT INTO shop.orders VALUES ({id}, {id}, 'app');
             COMMIT;",
            m = 1 + (i * 37) % 20000,
            id = 100_000 + i,
            del = 1 + (i * 13) % 20000,
        );
        // As an application would: a transaction that fails (a deadlock with the tool's copy
        // or triggers, the table briefly missing in a two-statement swap) is rolled back and
        // tried again.
        let mut tries = 0;
        while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.db.exec(&sql))).is_err() {
            tries += 1;
            assert!(tries < 50, "the application's transaction {i} keeps failing");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until the application has committed a few more transactions.
fn let_it_write(next: &AtomicU32, transactions: u32) {
    let until = next.load(Ordering::SeqCst) + transactions;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.load(Ordering::SeqCst) < until {
        assert!(Instant::now() < deadline, "the application stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// After the migration: sluice still running, caught up, no tool table at the edge (nor a
/// copy record of one), and `items` and `orders` equal to the source over the replicated
/// columns; the log says how many swaps were followed.
fn assert_followed(env: &Env, sluice: &mut Sluice, swaps: usize) {
    assert_followed_over(env, sluice, swaps, "id, name, qty");
}

fn assert_followed_over(env: &Env, sluice: &mut Sluice, swaps: usize, item_columns: &str) {
    // Writes after the swap, to the new table (its new column included).
    env.db.exec(
        "UPDATE shop.items SET extra = id, qty = qty + 5 WHERE id % 10 = 3; DELETE FROM shop.items WHERE id % 10 = 4;",
    );
    env.wait_caught_up(sluice);
    if item_columns.contains("extra") {
        // The run started again past the swap adds the column (after recording its copy).
        wait_for(env, sluice, "the new column at the edge", || {
            !env.target_rows("SELECT 1 FROM pragma_table_info('items') WHERE name = 'extra'")
                .is_empty()
        });
        let log = env.log();
        assert!(
            log.contains("which adds column(s) extra the rule replicates"),
            "log:\n{log}"
        );
    }
    wait_for(env, sluice, "the copies", || {
        copied(env, "items") && copied(env, "orders")
    });
    env.wait_caught_up(sluice);
    assert!(sluice.try_exit().is_none(), "sluice stopped; log:\n{}", env.log());
    assert_eq!(edge_tables(env), ["items", "orders"]);
    assert_eq!(backfill_records(env), ["items", "orders"]);
    same_rows(
        "items",
        env.target_rows(&format!("SELECT {item_columns} FROM items")),
        env.db.query_rows(&format!("SELECT {item_columns} FROM shop.items")),
    );
    same_rows(
        "orders",
        env.target_rows("SELECT id, item, note FROM orders"),
        env.db.query_rows("SELECT id, item, note FROM shop.orders"),
    );
    let log = env.log();
    assert_eq!(
        log.matches("online schema change swap followed").count(),
        swaps,
        "log:\n{log}"
    );
    assert!(sluice.stop().success(), "log:\n{}", env.log());
}

/// The real pt-online-schema-change adding a column to `items` while the application writes,
/// sluice streaming into SQLite with a glob that also matches `_items_new` and `_items_old`.
fn pt_osc_add_column_is_followed(tables_toml: &str) {
    pt_osc_alter_is_followed(tables_toml, "ADD COLUMN extra INT", "id, name, qty");
}

fn pt_osc_alter_is_followed(tables_toml: &str, alter: &str, item_columns: &str) {
    let env = Env::new(SETUP, tables_toml);
    let mut sluice = start_copied(&env);
    let stop = AtomicBool::new(false);
    let next = AtomicU32::new(0);
    let (out, during) = std::thread::scope(|s| {
        s.spawn(|| application(&env, &stop, &next));
        // Stops the application however this closure ends (a panic too), so the scope ends.
        let _stop = StopOnDrop(&stop);
        let_it_write(&next, 5);
        let before = next.load(Ordering::SeqCst);
        let dsn = format!("S={},u=root,D=shop,t=items", env.db.socket_path().display());
        let out = Command::new("pt-online-schema-change")
            .args([
                "--alter",
                alter,
                "--execute",
                "--no-check-replication-filters",
                "--recursion-method=none",
                "--chunk-size=1000",
                &dsn,
            ])
            .output()
            .expect("run pt-online-schema-change (Debian package percona-toolkit)");
        let during = next.load(Ordering::SeqCst) - before;
        if out.status.success() {
            let_it_write(&next, 5);
        }
        (out, during)
    });
    assert!(
        out.status.success(),
        "pt-online-schema-change failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Swapped original and new tables OK"), "{stdout}");
    // The application wrote while the tool copied (its triggers carried those writes).
    assert!(
        during >= 5,
        "only {during} application transactions during the tool's run"
    );
    assert_eq!(
        env.db.query_value(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'shop' AND table_name = 'items' AND column_name = 'extra'"
        ),
        "1"
    );
    assert_followed_over(&env, &mut sluice, 1, item_columns);
}

#[test]
fn pt_online_schema_change_with_the_new_column_excluded_is_followed() {
    pt_osc_add_column_is_followed(GLOB_EXCLUDING_EXTRA);
}

#[test]
fn pt_online_schema_change_with_an_explicit_column_list_is_followed() {
    pt_osc_add_column_is_followed(EXPLICIT_COLUMNS);
}

/// A rule replicating every column, with new columns held back (the default): the column
/// pt-online-schema-change adds stays off the edge, and the swap is followed as one that
/// leaves the replicated columns alone.
#[test]
fn pt_online_schema_change_adding_a_held_column_is_followed() {
    pt_osc_alter_is_followed(
        "[[tables]]\nmatch = \"shop.*\"\n",
        "ADD COLUMN extra INT DEFAULT 7",
        "id, name, qty",
    );
}

/// A rule replicating every column and `new_columns = "replicate"`: the column
/// pt-online-schema-change adds (with a DEFAULT, so existing rows get a value no row event
/// carries) is replicated too. sluice follows the swap by running again from just past it:
/// the edge table gains the column and a column-only copy fills it, while the stream goes on.
/// (Before new columns were held by default, a rule with all columns did this by itself.)
#[test]
fn pt_online_schema_change_adding_a_replicated_column_is_followed_with_a_column_copy() {
    // Incremental verification stays on (the default): it is what caught chunks read before
    // transactions the stream had already passed became visible at the source (see
    // `backfill::snapshot`), which overwrote their values with older ones.
    pt_osc_alter_is_followed(
        "[[tables]]\nmatch = \"shop.*\"\nnew_columns = \"replicate\"\n\n[backfill]\nchunk_rows = 500\n",
        "ADD COLUMN extra INT DEFAULT 7",
        "id, name, qty, extra",
    );
}

/// gh-ost's statements before the cut-over: changelog, ghost table, the ALTER, the chunked
/// copy while the application writes, and the backlog applied to the ghost (gh-ost reads the
/// binlog for it; here the ghost is brought up to date with `items` once the application
/// has stopped, as gh-ost's cut-over waits for).
fn gh_ost_copy(env: &Env, next: &AtomicU32) {
    let stop = &AtomicBool::new(false);
    env.db.exec(
        "create /* gh-ost */ table `shop`.`_items_ghc` (id bigint unsigned auto_increment, \
           last_update timestamp not null DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, \
           hint varchar(64) charset ascii not null, value varchar(4096) charset ascii not null, \
           primary key(id), unique key hint_uidx(hint)) auto_increment=256 comment='gh-ost changelog';
         create /* gh-ost */ table `shop`.`_items_gho` like `shop`.`items`;
         alter /* gh-ost */ table `shop`.`_items_gho` ADD COLUMN extra INT;
         insert /* gh-ost */ into `shop`.`_items_ghc` (id, hint, value) values (2, 'state', 'GhostTableMigrated')
           on duplicate key update last_update=NOW(), value=VALUES(value);",
    );
    std::thread::scope(|s| {
        s.spawn(|| application(env, stop, next));
        let _stop = StopOnDrop(stop);
        for chunk in 0..8 {
            env.db.exec(&format!(
                "insert /* gh-ost `shop`.`items` */ ignore into `shop`.`_items_gho` (`id`, `name`, `qty`)
                   (select `id`, `name`, `qty` from `shop`.`items` force index (`PRIMARY`)
                    where `id` > {lo} and `id` <= {hi} lock in share mode);
                 insert /* gh-ost */ into `shop`.`_items_ghc` (id, hint, value) values (1, 'heartbeat', NOW())
                   on duplicate key update last_update=NOW(), value=VALUES(value);",
                lo = chunk * 2500,
                hi = if chunk == 7 { i32::MAX } else { (chunk + 1) * 2500 },
            ));
            let_it_write(next, 2);
        }
        stop.store(true, Ordering::SeqCst);
    });
    env.db.exec(
        "replace /* gh-ost `shop`.`_items_gho` */ into `shop`.`_items_gho` (`id`, `name`, `qty`)
           select `id`, `name`, `qty` from `shop`.`items`;
         delete /* gh-ost `shop`.`_items_gho` */ from `shop`.`_items_gho`
           where `id` not in (select `id` from `shop`.`items`);",
    );
}

#[test]
fn gh_ost_cut_overs_are_followed() {
    // Atomic cut-over (the default), then the two-step one, on the same running sluice.
    let env = Env::new(SETUP, GLOB_EXCLUDING_EXTRA);
    let mut sluice = start_copied(&env);
    let next = AtomicU32::new(0);
    gh_ost_copy(&env, &next);
    env.db.exec(
        "create /* gh-ost */ table `shop`.`_items_del` (id int auto_increment primary key) engine=InnoDB comment='ghost-cut-over-sentry';
         drop /* gh-ost */ table if exists `shop`.`_items_del`;
         rename /* gh-ost */ table `shop`.`items` to `shop`.`_items_del`, `shop`.`_items_gho` to `shop`.`items`;
         drop /* gh-ost */ table if exists `shop`.`_items_ghc`;
         drop /* gh-ost */ table if exists `shop`.`_items_del`;",
    );
    env.wait_caught_up(&mut sluice);
    assert!(sluice.try_exit().is_none(), "sluice stopped; log:\n{}", env.log());

    // A second migration, cut over in two steps (`--cut-over=two-step`).
    env.db.exec("ALTER TABLE shop.items DROP COLUMN extra");
    gh_ost_copy(&env, &next);
    env.db.exec(
        "alter /* gh-ost */ table `shop`.`items` rename `shop`.`_items_del`;
         alter /* gh-ost */ table `shop`.`_items_gho` rename `shop`.`items`;
         drop /* gh-ost */ table if exists `shop`.`_items_ghc`;
         drop /* gh-ost */ table if exists `shop`.`_items_del`;",
    );
    assert_followed(&env, &mut sluice, 2);
}

/// LHM's statements before the switch, unqualified in the current database as LHM writes
/// them: the new table from the source's definition, its ALTER, the three triggers, and the
/// chunked copy while the application writes.
fn lhm_copy(env: &Env, next: &AtomicU32) {
    env.db.exec(
        "USE shop;
         CREATE TABLE `lhmn_items` (`id` int(11) NOT NULL, `name` varchar(40) NOT NULL, `qty` int(11) DEFAULT NULL, \
           PRIMARY KEY (`id`)) ENGINE=InnoDB DEFAULT CHARSET=latin1;
         ALTER TABLE `lhmn_items` ADD COLUMN extra INT;
         create trigger `lhmt_ins_items` after insert on `items` for each row
           replace into `lhmn_items` (`id`, `name`, `qty`) /* large hadron migration */
           values (NEW.`id`, NEW.`name`, NEW.`qty`);
         create trigger `lhmt_upd_items` after update on `items` for each row
           replace into `lhmn_items` (`id`, `name`, `qty`) /* large hadron migration */
           values (NEW.`id`, NEW.`name`, NEW.`qty`);
         create trigger `lhmt_del_items` after delete on `items` for each row
           delete ignore from `lhmn_items` /* large hadron migration */ where `lhmn_items`.`id` = OLD.`id`;",
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| application(env, &stop, next));
        let _stop = StopOnDrop(&stop);
        for chunk in 0..8 {
            env.db.exec(&format!(
                "USE shop;
                 insert ignore into `lhmn_items` (`id`, `name`, `qty`) /* large hadron migration */
                   select `items`.`id`, `items`.`name`, `items`.`qty` from `items`
                   where `items`.`id` between {lo} and {hi}",
                lo = chunk * 2500 + 1,
                // The last chunk runs to the end of the table (the application's rows too).
                hi = if chunk == 7 { i32::MAX } else { (chunk + 1) * 2500 },
            ));
            let_it_write(next, 2);
        }
        // Rows the application inserts past the chunks are carried by the insert trigger.
        stop.store(true, Ordering::SeqCst);
    });
}

const DROP_LHM_TRIGGERS: &str = "USE shop; DROP TRIGGER IF EXISTS `lhmt_ins_items`; \
     DROP TRIGGER IF EXISTS `lhmt_upd_items`; DROP TRIGGER IF EXISTS `lhmt_del_items`;";

#[test]
fn lhm_switches_are_followed() {
    let env = Env::new(SETUP, EXPLICIT_COLUMNS);
    let mut sluice = start_copied(&env);
    let next = AtomicU32::new(0);

    // AtomicSwitcher, the application writing through the switch.
    lhm_copy(&env, &next);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| application(&env, &stop, &next));
        let _stop = StopOnDrop(&stop);
        let_it_write(&next, 3);
        env.db
            .exec("USE shop; RENAME TABLE `items` TO `lhma_2026_12_05_07_30_00_000_items`, `lhmn_items` TO `items`;");
        let_it_write(&next, 3);
        stop.store(true, Ordering::SeqCst);
    });
    env.db.exec(DROP_LHM_TRIGGERS);
    env.wait_caught_up(&mut sluice);
    assert!(sluice.try_exit().is_none(), "sluice stopped; log:\n{}", env.log());

    // LockedSwitcher on a second migration: two renames under LOCK TABLES.
    env.db.exec("ALTER TABLE shop.items DROP COLUMN extra");
    lhm_copy(&env, &next);
    env.db.exec(
        "USE shop;
         LOCK TABLE `items` WRITE, `lhmn_items` WRITE;
         ALTER TABLE `items` RENAME `lhma_2026_12_05_07_31_00_000_items`;
         ALTER TABLE `lhmn_items` RENAME `items`;
         UNLOCK TABLES;",
    );
    env.db.exec(DROP_LHM_TRIGGERS);
    assert_followed(&env, &mut sluice, 2);
    // The archive tables stay at the source (until LHM's cleanup), never at the edge.
    assert_eq!(
        env.db
            .query_value("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'lhma%'"),
        "2"
    );
}
