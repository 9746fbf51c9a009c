//! Schema changes, declared and at the source: tables leaving and re-entering the config,
//! columns removed and re-added, and what sluice does with each kind of source DDL on a
//! replicated table (docs/schema-changes.md).

mod common;

use std::time::Duration;

use common::{same_rows, wait_for, Env};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL, total DECIMAL(10,2), note VARCHAR(40));
CREATE TABLE shop.tags (name VARCHAR(30) PRIMARY KEY, hits BIGINT UNSIGNED);
INSERT INTO shop.orders SELECT seq, seq % 97, seq * 1.25, CONCAT('n', seq) FROM shop.seq_1_to_3000;
INSERT INTO shop.tags SELECT CONCAT('tag-', seq), seq FROM shop.seq_1_to_200;
";

const BOTH: &str =
    "[[tables]]\nmatch = \"shop.orders\"\n\n[[tables]]\nmatch = \"shop.tags\"\n\n[backfill]\nchunk_rows = 250\n";
const TAGS_ONLY: &str = "[[tables]]\nmatch = \"shop.tags\"\n\n[backfill]\nchunk_rows = 250\n";

/// Changes to every kind of row of `shop.orders`: updated, deleted, inserted, key moved.
const CHANGES_WHILE_OUT: &str = "
UPDATE shop.orders SET total = total + 100, note = 'changed while out' WHERE id % 7 = 0;
DELETE FROM shop.orders WHERE id % 11 = 0;
INSERT INTO shop.orders VALUES (5001, 1, 9.99, 'inserted while out'), (5002, 2, NULL, NULL);
UPDATE shop.orders SET id = id + 10000 WHERE id % 13 = 1;
UPDATE shop.tags SET hits = hits + 1 WHERE name = 'tag-5';
";

/// The backfill record of `table`: (done, detail), or `None`.
fn record(env: &Env, table: &str) -> Option<(String, String)> {
    if !env.target.exists()
        || env
            .target_rows("SELECT name FROM sqlite_master WHERE name = '_sluice_backfill'")
            .is_empty()
    {
        return None;
    }
    env.target_rows(&format!(
        "SELECT done, coalesce(detail, '') FROM _sluice_backfill WHERE name = '{table}'"
    ))
    .into_iter()
    .next()
    .map(|mut r| (r.remove(0), r.remove(0)))
}

fn copied(env: &Env, table: &str) -> bool {
    record(env, table).is_some_and(|(done, detail)| done == "1" && !detail.contains("\"stale\":true"))
}

fn stale(env: &Env, table: &str) -> bool {
    record(env, table).is_some_and(|(_, detail)| detail.contains("\"stale\":true"))
}

fn assert_equal(env: &Env) {
    same_rows(
        "orders",
        env.target_rows("SELECT id, customer, total, note FROM orders"),
        env.db.query_rows("SELECT id, customer, total, note FROM shop.orders"),
    );
    same_rows(
        "tags",
        env.target_rows("SELECT name, hits FROM tags"),
        env.db.query_rows("SELECT name, hits FROM shop.tags"),
    );
}

/// The data-loss path of issue 13: a table taken out of the config (by a SIGHUP reload),
/// changed at the source meanwhile (updates, deletes, inserts, key changes), and put back.
/// While out, the target table is kept as it was and marked stale; once back, it is created
/// afresh and copied again, so the target equals the source, row for row.
#[test]
fn a_table_back_in_the_config_after_a_reload_is_copied_afresh() {
    let env = Env::new(SETUP, BOTH);
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "both copies", || {
        copied(&env, "orders") && copied(&env, "tags")
    });
    env.wait_caught_up(&mut sluice);
    assert_equal(&env);
    let before = env.target_rows("SELECT id, customer, total, note FROM orders");

    env.write_config(TAGS_ONLY, "");
    sluice.reload();
    wait_for(&env, &mut sluice, "orders marked stale", || stale(&env, "orders"));
    env.db.exec(CHANGES_WHILE_OUT);
    env.wait_caught_up(&mut sluice);
    // Out of the config: not updated any more (tags still are).
    assert_eq!(env.target_rows("SELECT id, customer, total, note FROM orders"), before);
    assert_eq!(
        env.target_rows("SELECT hits FROM tags WHERE name = 'tag-5'"),
        vec![vec!["6".to_owned()]]
    );
    let status = env.run_cmd(&["status", "-c", env.config.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let orders = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "orders")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(orders["backfill"], "stale", "{status}");
    assert_eq!(orders["readiness"], "stale", "{status}");

    env.write_config(BOTH, "");
    sluice.reload();
    wait_for(&env, &mut sluice, "orders copied again", || copied(&env, "orders"));
    env.db
        .exec("UPDATE shop.orders SET note = 'after the return' WHERE id = 2;");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert!(env.log().contains("table left the config"), "{}", env.log());
    assert!(env.log().contains("table selected again"), "{}", env.log());
    assert_equal(&env);
}

/// The same across restarts: the table leaves the config at one start and comes back at a
/// later one.
#[test]
fn a_table_back_in_the_config_after_a_restart_is_copied_afresh() {
    let env = Env::new(SETUP, BOTH);
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "both copies", || {
        copied(&env, "orders") && copied(&env, "tags")
    });
    assert!(sluice.stop().success());

    env.write_config(TAGS_ONLY, "");
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "orders marked stale", || stale(&env, "orders"));
    env.db.exec(CHANGES_WHILE_OUT);
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());

    env.write_config(BOTH, "");
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "orders copied again", || copied(&env, "orders"));
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_equal(&env);
}

/// A column removed from the replicated columns and added back later. Removing it is refused
/// (the target table has a column sluice would no longer write) with the advice to drop the
/// target table; after that the table is copied again (its old record said "done": before,
/// the recreated table stayed empty), and the column, added back, is filled by a column-only
/// copy once the rule releases it: every row equals the source, with the changes made in
/// between.
#[test]
fn a_column_removed_and_added_back_is_copied_again() {
    let env = Env::new(SETUP, BOTH);
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "both copies", || {
        copied(&env, "orders") && copied(&env, "tags")
    });
    assert!(sluice.stop().success());

    let without_note = "[[tables]]\nmatch = \"shop.orders\"\nexclude_columns = [\"note\"]\n\n[[tables]]\nmatch = \"shop.tags\"\n\n[backfill]\nchunk_rows = 250\n";
    env.write_config(without_note, "");
    let mut refused = env.start();
    assert!(!refused.wait_exit(Duration::from_secs(30)).success());
    assert!(env.log().contains("drop or rename the table"), "{}", env.log());
    let conn = rusqlite::Connection::open(&env.target).unwrap();
    conn.execute_batch("DROP TABLE orders").unwrap();
    drop(conn);
    env.db.exec(CHANGES_WHILE_OUT);

    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "orders copied again", || copied(&env, "orders"));
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    same_rows(
        "orders without note",
        env.target_rows("SELECT id, customer, total FROM orders"),
        env.db.query_rows("SELECT id, customer, total FROM shop.orders"),
    );

    env.db
        .exec("UPDATE shop.orders SET note = 'changed without note' WHERE id % 5 = 0;");
    // A column the target table lacks is held back by a rule without a `columns` list until
    // the rule releases it (new columns are held by default).
    let released = "[[tables]]\nmatch = \"shop.orders\"\nrelease_columns = [\"note\"]\n\n[[tables]]\nmatch = \"shop.tags\"\n\n[backfill]\nchunk_rows = 250\n";
    env.write_config(released, "");
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "note copied", || {
        copied(&env, "orders") && env.log().contains("column_only=true")
    });
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_equal(&env);
}

/// TRUNCATE and DROP TABLE of replicated tables do not stop sluice: a truncated table is
/// emptied at the edge at the statement's GTID (rows written before and after it in the
/// stream end up exactly as at the source), a dropped one is emptied and marked stale, and a
/// table created again under the name is created afresh and streamed (with other columns, too).
#[test]
fn truncate_and_drop_table_are_followed() {
    let env = Env::new(SETUP, BOTH);
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "both copies", || {
        copied(&env, "orders") && copied(&env, "tags")
    });
    env.db.exec(
        "INSERT INTO shop.orders VALUES (7001, 1, 1.00, 'before truncate');
         TRUNCATE TABLE shop.orders;
         INSERT INTO shop.orders VALUES (1, 5, 2.00, 'after truncate'), (7002, 6, NULL, NULL);
         UPDATE shop.tags SET hits = 0 WHERE name = 'tag-1';",
    );
    env.wait_caught_up(&mut sluice);
    assert_equal(&env);

    env.db.exec("DROP TABLE shop.tags");
    env.wait_caught_up(&mut sluice);
    assert!(env.target_rows("SELECT * FROM tags").is_empty());
    assert!(stale(&env, "tags"));
    assert_eq!(
        env.target_rows("SELECT state FROM _sluice_readiness WHERE table_name = 'tags' AND column_name = ''"),
        vec![vec!["stale".to_owned()]]
    );
    env.db.exec(
        "CREATE TABLE shop.tags (name VARCHAR(30) PRIMARY KEY, hits BIGINT UNSIGNED, label VARCHAR(10));
         INSERT INTO shop.tags VALUES ('again', 1, 'x'), ('more', 2, NULL);",
    );
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_equal(&env);
    same_rows(
        "tags with label",
        env.target_rows("SELECT name, hits, label FROM tags"),
        env.db.query_rows("SELECT name, hits, label FROM shop.tags"),
    );
    assert!(env.log().contains("table selected again"), "{}", env.log());
}

/// A replicated column dropped at the source stops sluice with an error that names the table,
/// the statement, the GTID and the way to resume; following it (table out of the config,
/// reload, wait for the checkpoint to pass the GTID, table back in, reload) brings the
/// target to equal the source, changes made around the DDL included.
#[test]
fn a_dropped_replicated_column_stops_and_the_documented_resume_works() {
    let env = Env::new(SETUP, BOTH);
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "both copies", || {
        copied(&env, "orders") && copied(&env, "tags")
    });
    env.db.exec(
        "UPDATE shop.orders SET note = 'before' WHERE id = 3;
         ALTER TABLE shop.orders DROP COLUMN note;
         UPDATE shop.orders SET total = 0 WHERE id = 4;",
    );
    let gtid = env.db.query_value("SELECT @@global.gtid_binlog_pos");
    assert!(!sluice.wait_exit(Duration::from_secs(30)).success());
    let log = env.log();
    let ddl_gtid = {
        let (domain_server, seq) = gtid.rsplit_once('-').unwrap();
        format!("{domain_server}-{}", seq.parse::<u64>().unwrap() - 1)
    };
    for needle in [
        "shop.orders",
        "DROP COLUMN note",
        ddl_gtid.as_str(),
        "leave shop.orders out of the config",
        "put the rule",
    ] {
        assert!(log.contains(needle), "missing {needle:?}; log:\n{log}");
    }

    // Step 1: the table out; sluice goes past the DDL.
    env.write_config(TAGS_ONLY, "");
    let mut sluice = env.start();
    env.db.exec("UPDATE shop.orders SET total = 1 WHERE id = 5;");
    env.wait_caught_up(&mut sluice);
    assert!(stale(&env, "orders"));
    // Step 2: back in, with the columns it has now.
    env.write_config(BOTH, "");
    sluice.reload();
    wait_for(&env, &mut sluice, "orders copied again", || copied(&env, "orders"));
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    same_rows(
        "orders",
        env.target_rows("SELECT id, customer, total FROM orders"),
        env.db.query_rows("SELECT id, customer, total FROM shop.orders"),
    );
    assert_eq!(
        env.target_rows("SELECT count(*) FROM pragma_table_info('orders') WHERE name = 'note'"),
        vec![vec!["0".to_owned()]]
    );
}

const ITEMS_SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT);
CREATE TABLE shop.orders (id INT PRIMARY KEY, item INT NOT NULL, note VARCHAR(40));
INSERT INTO shop.items SELECT seq, CONCAT('item-', seq), seq % 50 FROM shop.seq_1_to_2000;
INSERT INTO shop.orders SELECT seq, seq % 2000 + 1, NULL FROM shop.seq_1_to_300;
";
const SHOP_GLOB: &str = "[[tables]]\nmatch = \"shop.*\"\n\n[backfill]\nchunk_rows = 250\n";

/// The statements pt-online-schema-change issues before its swap, as it writes them: the
/// shadow table, its ALTER, the three triggers, the copy in chunks (`nibbles`) and ANALYZE.
/// The application keeps writing `items` from another connection meanwhile, so the triggers
/// put row events on `_items_new` into the application's own transactions.
fn pt_osc_copy(env: &Env) {
    env.db.exec(
        "CREATE TABLE `shop`.`_items_new` LIKE `shop`.`items`;
         ALTER TABLE `shop`.`_items_new` ADD COLUMN colour VARCHAR(10) NOT NULL DEFAULT 'none', MODIFY name VARCHAR(60) NOT NULL;
         DELIMITER //
         CREATE TRIGGER `shop`.`pt_osc_shop_items_del` AFTER DELETE ON `shop`.`items` FOR EACH ROW BEGIN DECLARE CONTINUE HANDLER FOR 1146 begin end; DELETE IGNORE FROM `shop`.`_items_new` WHERE `shop`.`_items_new`.`id` <=> OLD.`id`; END //
         CREATE TRIGGER `shop`.`pt_osc_shop_items_upd` AFTER UPDATE ON `shop`.`items` FOR EACH ROW BEGIN DECLARE CONTINUE HANDLER FOR 1146 begin end; DELETE IGNORE FROM `shop`.`_items_new` WHERE !(OLD.`id` <=> NEW.`id`) AND `shop`.`_items_new`.`id` <=> OLD.`id`; REPLACE INTO `shop`.`_items_new` (`id`, `name`, `qty`) VALUES (NEW.`id`, NEW.`name`, NEW.`qty`); END //
         CREATE TRIGGER `shop`.`pt_osc_shop_items_ins` AFTER INSERT ON `shop`.`items` FOR EACH ROW BEGIN DECLARE CONTINUE HANDLER FOR 1146 begin end; REPLACE INTO `shop`.`_items_new` (`id`, `name`, `qty`) VALUES (NEW.`id`, NEW.`name`, NEW.`qty`); END //
         DELIMITER ;",
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..20 {
                env.db.exec(&format!(
                    "BEGIN;
                     UPDATE shop.items SET qty = qty + 1, name = 'app-{i}' WHERE id % 20 = {i};
                     INSERT INTO shop.items VALUES ({id}, 'new-{i}', {i});
                     DELETE FROM shop.items WHERE id = {del};
                     UPDATE shop.items SET id = id + 100000 WHERE id = {moved};
                     INSERT INTO shop.orders VALUES ({id}, {id}, 'with item');
                     COMMIT;",
                    id = 5000 + i,
                    del = 3 + i * 50,
                    moved = 7 + i * 50,
                ));
            }
        });
        for lo in (1..=2000).step_by(400) {
            env.db.exec(&format!(
                "INSERT LOW_PRIORITY IGNORE INTO `shop`.`_items_new` (`id`, `name`, `qty`) SELECT `id`, `name`, `qty` FROM `shop`.`items` FORCE INDEX(`PRIMARY`) WHERE ((`id` >= '{lo}')) AND ((`id` <= '{hi}')) LOCK IN SHARE MODE /*pt-online-schema-change 4242 copy nibble*/",
                hi = lo + 399,
            ));
        }
    });
    env.db
        .exec("ANALYZE TABLE `shop`.`_items_new` /* pt-online-schema-change */");
}

fn edge_tables(env: &Env) -> Vec<String> {
    env.target_rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_sluice%' ESCAPE '\\' ORDER BY name",
    )
    .into_iter()
    .map(|mut r| r.remove(0))
    .collect()
}

fn assert_items_equal(env: &Env, columns: &str) {
    same_rows(
        "items",
        env.target_rows(&format!("SELECT {columns} FROM items")),
        env.db.query_rows(&format!("SELECT {columns} FROM shop.items")),
    );
    same_rows(
        "orders",
        env.target_rows("SELECT id, item, note FROM orders"),
        env.db.query_rows("SELECT id, item, note FROM shop.orders"),
    );
}

/// pt-online-schema-change under a `shop.*` rule, statement for statement: its shadow table
/// `_items_new` never reaches the edge (no table, no copy record) although the glob matches it,
/// and `items` at the edge equals the source throughout the copy, with the application's
/// writes (and the triggers' row events on `_items_new` in the same transactions). The swap
/// (`RENAME TABLE items TO _items_old, _items_new TO items`) stops sluice, since the tool
/// changed a replicated column's type (`MODIFY name`; swaps that leave the replicated columns
/// alone are followed: tests/osc.rs), with an error that names the tool, the GTID, why and the
/// two-step resume; following that resume (glob narrowed,
/// reload; glob back, reload) leaves `items` at the edge equal to the source, new column
/// included, and still no tool table at the edge.
#[test]
fn pt_online_schema_change_tables_stay_off_the_edge_and_the_swap_names_the_resume() {
    let env = Env::new(ITEMS_SETUP, SHOP_GLOB);
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "both copies", || {
        copied(&env, "items") && copied(&env, "orders")
    });
    pt_osc_copy(&env);
    env.wait_caught_up(&mut sluice);
    assert!(
        env.db
            .query_value("SELECT count(*) FROM shop._items_new")
            .parse::<u64>()
            .unwrap()
            > 1900,
        "the copy and the triggers filled the shadow table"
    );
    assert_eq!(edge_tables(&env), ["items", "orders"]);
    assert_eq!(record(&env, "_items_new"), None);
    assert_items_equal(&env, "id, name, qty");
    let before_swap = env.db.query_rows("SELECT id, name, qty FROM shop.items");

    // The swap, as pt-online-schema-change writes it, then its clean-up.
    env.db
        .exec("RENAME TABLE `shop`.`items` TO `shop`.`_items_old`, `shop`.`_items_new` TO `shop`.`items`");
    let swap_gtid = env.db.query_value("SELECT @@global.gtid_binlog_pos");
    env.db.exec(
        "DROP TABLE IF EXISTS `shop`.`_items_old`;
         DROP TRIGGER IF EXISTS `shop`.`pt_osc_shop_items_del`;
         DROP TRIGGER IF EXISTS `shop`.`pt_osc_shop_items_upd`;
         DROP TRIGGER IF EXISTS `shop`.`pt_osc_shop_items_ins`;
         UPDATE shop.items SET colour = 'red' WHERE id % 3 = 0;",
    );
    assert!(!sluice.wait_exit(Duration::from_secs(30)).success());
    let log = env.log();
    for needle in [
        "pt-online-schema-change's swap of replicated table shop.items",
        "the tool changes replicated column name",
        "shop._items_new",
        "shop._items_old",
        swap_gtid.as_str(),
        "leave shop.items out of the config",
        "narrow the glob",
        "put the rule back",
    ] {
        assert!(log.contains(needle), "missing {needle:?}; log:\n{log}");
    }
    // Stopped before the swap: the edge holds items as it was just before it.
    assert_eq!(edge_tables(&env), ["items", "orders"]);
    same_rows(
        "items before the swap",
        env.target_rows("SELECT id, name, qty FROM items"),
        before_swap,
    );

    // Step 1: the glob narrowed so it no longer matches items; sluice goes past the swap.
    env.write_config(
        "[[tables]]\nmatch = \"shop.[!i]*\"\n\n[backfill]\nchunk_rows = 250\n",
        "",
    );
    let mut sluice = env.start();
    env.db
        .exec("UPDATE shop.items SET qty = -1 WHERE id = 10; INSERT INTO shop.orders VALUES (9000, 10, 'after');");
    env.wait_caught_up(&mut sluice);
    assert!(stale(&env, "items"));
    // Step 2: the glob back; items is created afresh with its new column and copied again.
    env.write_config(SHOP_GLOB, "");
    sluice.reload();
    wait_for(&env, &mut sluice, "items copied again", || copied(&env, "items"));
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_items_equal(&env, "id, name, qty, colour");
    assert_eq!(edge_tables(&env), ["items", "orders"]);
}
