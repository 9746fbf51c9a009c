//! New columns at the source (docs/schema-changes.md, *New columns*) and the edge's readiness
//! table (docs/readiness.md): a column added at the source is held back by default (never at
//! the edge, rows keep streaming, `sluice status` lists it), released by naming it in the
//! rule's `release_columns` (added at the edge, filled by a column-only copy, then ready), or
//! followed at once with `new_columns = "replicate"`.

mod common;

use common::{mariadb_positions, mariadb_target, same_rows, status_json, wait_for, Env};
use sluice_testkit::PostgresServer;

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL, total DECIMAL(10,2), note VARCHAR(40));
INSERT INTO shop.orders SELECT seq, seq % 97, seq * 1.25, CONCAT('n', seq) FROM shop.seq_1_to_3000;
";

const HOLD: &str = "[[tables]]\nmatch = \"shop.*\"\n\n[backfill]\nchunk_rows = 250\n";
const RELEASED: &str =
    "[[tables]]\nmatch = \"shop.*\"\nrelease_columns = [\"discount\"]\n\n[backfill]\nchunk_rows = 250\n";
const REPLICATE: &str = "[[tables]]\nmatch = \"shop.*\"\nnew_columns = \"replicate\"\n\n[backfill]\nchunk_rows = 250\n";

/// The column added at the source: existing rows get its DEFAULT without a row event, so only
/// a copy can bring their values to the edge.
const ADD_DISCOUNT: &str = "ALTER TABLE shop.orders ADD COLUMN discount INT DEFAULT 5;";

/// Writes after the ALTER, some of them to the new column.
const WRITES_AFTER: &str = "
INSERT INTO shop.orders VALUES (5001, 1, 9.99, 'after the alter', 42), (5002, 2, NULL, NULL, NULL);
UPDATE shop.orders SET total = total + 1, discount = id % 9 WHERE id % 7 = 0;
DELETE FROM shop.orders WHERE id % 11 = 0;
";

/// A readiness row of the SQLite edge (`column` empty for the table's own row).
fn readiness(env: &Env, table: &str, column: &str) -> Option<String> {
    if !env.target.exists()
        || env
            .target_rows("SELECT name FROM sqlite_master WHERE name = '_sluice_readiness'")
            .is_empty()
    {
        return None;
    }
    env.target_rows(&format!(
        "SELECT state FROM _sluice_readiness WHERE table_name = '{table}' AND column_name = '{column}'"
    ))
    .into_iter()
    .next()
    .map(|mut r| r.remove(0))
}

fn edge_columns(env: &Env) -> Vec<String> {
    env.target_rows("SELECT name FROM pragma_table_info('orders') ORDER BY cid")
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
}

const BASE_COLUMNS: &str = "id, customer, total, note";
const ALL_COLUMNS: &str = "id, customer, total, note, discount";

fn assert_orders_equal(env: &Env, columns: &str) {
    same_rows(
        columns,
        env.target_rows(&format!("SELECT {columns} FROM orders")),
        env.db.query_rows(&format!("SELECT {columns} FROM shop.orders")),
    );
}

fn orders_status(env: &Env) -> serde_json::Value {
    let status = status_json(env);
    status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "orders")
        .unwrap_or_else(|| panic!("no orders in {status}"))
        .clone()
}

/// Starts sluice with `HOLD`, waits for the copy and asserts the readiness it leaves.
fn start_copied(env: &Env) -> common::Sluice {
    let mut sluice = env.start();
    wait_for(env, &mut sluice, "orders ready", || {
        readiness(env, "orders", "").as_deref() == Some("ready")
    });
    assert_eq!(readiness(env, "orders", "note").as_deref(), Some("ready"));
    sluice
}

/// The whole lifecycle on SQLite: added while streaming, held (not at the edge, not in the
/// rows, rows keep streaming, listed by status), released by a SIGHUP reload (added, copied,
/// ready), and the edge ends equal to the source, the new column included.
#[test]
fn a_column_added_while_streaming_is_held_until_released() {
    let env = Env::new(SETUP, HOLD);
    let mut sluice = start_copied(&env);

    env.db.exec(ADD_DISCOUNT);
    env.db.exec(WRITES_AFTER);
    env.wait_caught_up(&mut sluice);
    assert!(sluice.try_exit().is_none(), "sluice stopped: {}", env.log());
    assert_eq!(edge_columns(&env), ["id", "customer", "total", "note"]);
    assert_orders_equal(&env, BASE_COLUMNS);
    assert_eq!(readiness(&env, "orders", "discount").as_deref(), Some("held"));
    let orders = orders_status(&env);
    assert_eq!(orders["held_columns"], serde_json::json!(["discount"]), "{orders}");
    assert_eq!(orders["readiness"], "ready", "{orders}");
    let text = env.run_cmd(&["status", "-c", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("held:      discount"), "{text}");
    assert!(env.log().contains("are held"), "{}", env.log());
    // Verification compares the columns the edge has: the held one is no difference.
    let verify = env.run_cmd(&["verify", "-c", env.config.to_str().unwrap(), "--catch-up-timeout", "60"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    env.write_config(RELEASED, "");
    sluice.reload();
    wait_for(&env, &mut sluice, "discount ready", || {
        readiness(&env, "orders", "discount").as_deref() == Some("ready")
    });
    env.db
        .exec("UPDATE shop.orders SET discount = 77 WHERE id BETWEEN 10 AND 20;");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success(), "{}", env.log());
    assert_orders_equal(&env, ALL_COLUMNS);
    let orders = orders_status(&env);
    assert_eq!(orders["held_columns"], serde_json::json!([]), "{orders}");
    assert!(
        orders["columns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "ready"),
        "{orders}"
    );
}

/// `new_columns = "replicate"`: the ALTER is followed by running again past it, which adds
/// the column at the edge and fills it.
#[test]
fn new_columns_replicate_follows_an_added_column() {
    let env = Env::new(SETUP, REPLICATE);
    let mut sluice = start_copied(&env);
    env.db.exec(ADD_DISCOUNT);
    env.db.exec(WRITES_AFTER);
    wait_for(&env, &mut sluice, "discount copied", || {
        readiness(&env, "orders", "discount").as_deref() == Some("ready")
    });
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success(), "{}", env.log());
    assert!(env.log().contains("adds column(s) discount"), "{}", env.log());
    assert_eq!(edge_columns(&env), ["id", "customer", "total", "note", "discount"]);
    assert_orders_equal(&env, ALL_COLUMNS);
}

/// A column added while sluice was stopped is held at the next start too; its release's
/// column copy is killed (`kill -9`) half way, and the start after it finishes the copy: the
/// edge ends equal to the source.
#[test]
fn a_kill_during_the_release_copy_ends_equal() {
    let small_chunks = |tables: &str| tables.replace("chunk_rows = 250", "chunk_rows = 20");
    let env = Env::new(SETUP, &small_chunks(HOLD));
    let mut sluice = start_copied(&env);
    assert!(sluice.stop().success());

    env.db.exec(ADD_DISCOUNT);
    env.db.exec(WRITES_AFTER);
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    assert_eq!(readiness(&env, "orders", "discount").as_deref(), Some("held"));
    assert_eq!(edge_columns(&env), ["id", "customer", "total", "note"]);
    assert!(sluice.stop().success());

    env.write_config(&small_chunks(RELEASED), "");
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "the column copy under way", || {
        let copied: Vec<Vec<String>> =
            env.target_rows("SELECT rows_copied, done FROM _sluice_backfill WHERE name = 'orders'");
        readiness(&env, "orders", "discount").as_deref() == Some("backfilling_column")
            && copied.first().is_some_and(|r| r[0] != "0" && r[1] == "0")
    });
    sluice.kill9();
    assert_eq!(
        readiness(&env, "orders", "discount").as_deref(),
        Some("backfilling_column")
    );
    env.db
        .exec("UPDATE shop.orders SET discount = 3 WHERE id BETWEEN 2000 AND 2100;");
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "discount ready", || {
        readiness(&env, "orders", "discount").as_deref() == Some("ready")
    });
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success(), "{}", env.log());
    assert_orders_equal(&env, ALL_COLUMNS);
}

/// The readiness table and a held column on a PostgreSQL edge.
#[test]
fn held_and_released_columns_on_a_postgres_target() {
    let env = Env::new(SETUP, HOLD);
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    let target = format!(
        "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
        pg.port()
    );
    env.write_config_with_target(HOLD, "", &target);
    let client = || postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    let state = |column: &str| -> Option<String> {
        client()
            .query(
                "SELECT state FROM _sluice_readiness WHERE table_name = 'orders' AND column_name = $1",
                &[&column],
            )
            .ok()?
            .first()
            .map(|r| r.get(0))
    };
    let positions = || common::postgres_positions(&pg, "public");
    let mut sluice = env.start_server_target(positions);
    wait_for(&env, &mut sluice, "orders ready", || {
        state("").as_deref() == Some("ready")
    });

    env.db.exec(ADD_DISCOUNT);
    env.db.exec(WRITES_AFTER);
    env.wait_caught_up_with(&mut sluice, positions);
    assert_eq!(state("discount").as_deref(), Some("held"));
    let edge_has_discount = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'discount'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(edge_has_discount(&mut client()), 0);
    assert_eq!(orders_status(&env)["held_columns"], serde_json::json!(["discount"]));

    env.write_config_with_target(RELEASED, "", &target);
    sluice.reload();
    wait_for(&env, &mut sluice, "discount ready", || {
        state("discount").as_deref() == Some("ready")
    });
    env.wait_caught_up_with(&mut sluice, positions);
    assert!(sluice.stop().success(), "{}", env.log());
    let rows: Vec<Vec<String>> = client()
        .query(
            "SELECT id::text, customer::text, coalesce(total::text, 'NULL'), coalesce(note, 'NULL'), \
             coalesce(discount::text, 'NULL') FROM orders",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (0..5).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    let source = env.db.query_rows(
        "SELECT id, customer, coalesce(total, 'NULL'), coalesce(note, 'NULL'), coalesce(discount, 'NULL') FROM shop.orders",
    );
    same_rows("orders on postgres", rows, source);
}

/// The readiness table and a held column on a MariaDB edge, released by a restart.
#[test]
fn held_and_released_columns_on_a_mariadb_target() {
    let env = Env::new(SETUP, HOLD);
    let (target, target_toml) = mariadb_target(&env);
    env.write_config_with_target(HOLD, "", &target_toml);
    let state = |column: &str| -> Option<String> {
        let rows = target.query_rows(&format!(
            "SELECT state FROM edge._sluice_readiness WHERE table_name = 'orders' AND column_name = '{column}'"
        ));
        rows.into_iter().next().map(|mut r| r.remove(0))
    };
    let readiness_exists = || {
        target.query_value(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'edge' AND table_name = '_sluice_readiness'",
        ) == "1"
    };
    let positions = || mariadb_positions(target.port());
    let mut sluice = env.start_server_target(positions);
    wait_for(&env, &mut sluice, "orders ready", || {
        readiness_exists() && state("").as_deref() == Some("ready")
    });

    env.db.exec(ADD_DISCOUNT);
    env.db.exec(WRITES_AFTER);
    env.wait_caught_up_with(&mut sluice, positions);
    assert_eq!(state("discount").as_deref(), Some("held"));
    assert_eq!(
        target.query_value(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'edge' AND table_name = 'orders' AND column_name = 'discount'",
        ),
        "0"
    );
    same_rows(
        "orders on mariadb, held",
        target.query_rows(&format!("SELECT {BASE_COLUMNS} FROM edge.orders")),
        env.db.query_rows(&format!("SELECT {BASE_COLUMNS} FROM shop.orders")),
    );
    assert!(sluice.stop().success(), "{}", env.log());

    env.write_config_with_target(RELEASED, "", &target_toml);
    let mut sluice = env.start_server_target(positions);
    wait_for(&env, &mut sluice, "discount ready", || {
        state("discount").as_deref() == Some("ready")
    });
    env.wait_caught_up_with(&mut sluice, positions);
    assert!(sluice.stop().success(), "{}", env.log());
    same_rows(
        "orders on mariadb, released",
        target.query_rows(&format!("SELECT {ALL_COLUMNS} FROM edge.orders")),
        env.db.query_rows(&format!("SELECT {ALL_COLUMNS} FROM shop.orders")),
    );
}
