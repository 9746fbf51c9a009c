//! Row filters and PII transforms, end to end, checked against the source with SQL (an
//! implementation of the filter that shares no code with sluice) and an independent HMAC.

mod common;

use std::time::Duration;

use common::{wait_for, Env};
use sha2::{Digest, Sha256};

const HMAC_KEY: &str = "0123456789abcdef-test-key";

/// HMAC-SHA256 (RFC 2104), written here independently of sluice's implementation.
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(message.iter().copied()).collect();
    let inner_hash = Sha256::digest(&inner);
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner_hash.iter().copied()).collect();
    hex::encode(Sha256::digest(&outer))
}

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, region VARCHAR(10), status ENUM('new','paid','cancelled'), total DECIMAL(8,2), note TEXT);
CREATE TABLE shop.customers (email VARCHAR(100) PRIMARY KEY, name VARCHAR(50), phone VARCHAR(30), card VARCHAR(30), note VARCHAR(50), tier INT);
";

const FILTER: &str = "region IN ('eu', 'us') AND status <> 'cancelled'";

fn tables_toml() -> String {
    format!(
        "[[tables]]
match = \"shop.orders\"
where = \"{FILTER}\"

[[tables]]
match = \"shop.customers\"
[tables.transforms]
email = \"hmac\"
phone = \"mask:4\"
card = \"null\"
note = \"truncate:5\"
tier = \"const:0\"

[transforms]
hmac_key_env = \"SLUICE_TEST_HMAC_KEY\"
"
    )
}

fn env() -> Env {
    let env = Env::new(SETUP, &tables_toml());
    std::env::set_var("SLUICE_TEST_HMAC_KEY", HMAC_KEY);
    env
}

#[test]
fn rows_move_in_and_out_of_the_filter_exactly() {
    let env = env();
    let mut sluice = env.start();
    env.db.exec(
        "INSERT INTO shop.orders VALUES (1,'eu','new',10,'a'),(2,'asia','new',20,'b'),(3,'us','cancelled',30,'c'),(4,'us','paid',40,NULL),(5,NULL,'new',1,'n');
         UPDATE shop.orders SET region = 'eu' WHERE id = 2;            -- enters: insert
         UPDATE shop.orders SET status = 'cancelled' WHERE id = 1;     -- leaves: delete
         UPDATE shop.orders SET total = 41 WHERE id = 4;               -- stays: update
         UPDATE shop.orders SET total = 31 WHERE id = 3;               -- stays out: nothing
         UPDATE shop.orders SET id = 40, region = 'asia' WHERE id = 4; -- key change and leaves
         UPDATE shop.orders SET id = 30, status = 'paid' WHERE id = 3; -- key change and enters
         INSERT INTO shop.orders VALUES (6,'eu','paid',60,'x');
         DELETE FROM shop.orders WHERE id = 6;                         -- deleted inside
         DELETE FROM shop.orders WHERE id = 40;                        -- deleted outside
         UPDATE shop.orders SET region = 'us' WHERE id = 5;            -- NULL region enters",
    );
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let source = env.db.query_rows(&format!(
        "SELECT id, region, status, total, note FROM shop.orders WHERE {FILTER} ORDER BY id"
    ));
    let target = env.target_rows("SELECT id, region, status, total, note FROM orders ORDER BY id");
    assert_eq!(target, source);
    assert_eq!(
        target.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        vec!["2", "5", "30"]
    );
}

#[test]
fn transforms_scrub_columns_before_they_reach_the_target() {
    let env = env();
    let mut sluice = env.start();
    env.db.exec(
        "INSERT INTO shop.customers VALUES ('ann@example.com', 'Ann', '+1-555-0100', '4111111111111111', 'longer note', 7),
                                           ('bob@example.com', 'Bob', NULL, NULL, NULL, NULL);
         UPDATE shop.customers SET name = 'Ann B' WHERE email = 'ann@example.com';
         UPDATE shop.customers SET email = 'robert@example.com' WHERE email = 'bob@example.com';",
    );
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let key = HMAC_KEY.as_bytes();
    let mut expected = vec![
        vec![
            hmac_hex(key, b"ann@example.com"),
            "Ann B".into(),
            "*******0100".into(),
            "NULL".into(),
            "longe".into(),
            "0".into(),
        ],
        vec![
            hmac_hex(key, b"robert@example.com"),
            "Bob".into(),
            "NULL".into(),
            "NULL".into(),
            "NULL".into(),
            "0".into(),
        ],
    ];
    expected.sort();
    assert_eq!(
        env.target_rows("SELECT email, name, phone, card, note, tier FROM customers ORDER BY email"),
        expected
    );
}

#[test]
fn a_pii_canary_appears_nowhere() {
    const CANARY: &str = "canary-7f3a9c-PII";
    let env = env();
    // The target table exists already with a CHECK that one row will fail, so that a failing
    // write (and its error) carries the canary's row too.
    let conn = rusqlite::Connection::open(&env.target).unwrap();
    conn.execute_batch(
        "CREATE TABLE customers (email TEXT PRIMARY KEY, name TEXT, phone TEXT, card TEXT, note TEXT CHECK (note IS NULL OR note <> 'boom'), tier INTEGER);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, region TEXT, status TEXT, total TEXT, note TEXT);",
    )
    .unwrap();
    drop(conn);
    let mut sluice = env.start_with_log_level("trace");
    env.db.exec(&format!(
        "INSERT INTO shop.customers VALUES ('{CANARY}@example.com', 'ok', '{CANARY}', '{CANARY}', 'fine', 1);"
    ));
    env.wait_caught_up(&mut sluice);
    env.db.exec(&format!(
        "INSERT INTO shop.customers VALUES ('x-{CANARY}', 'bad', '{CANARY}', '{CANARY}', 'boom', 2);"
    ));
    let status = sluice.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the CHECK violation must stop sluice");
    let log = env.log();
    assert!(log.contains("CHECK constraint failed"), "{log}");
    // Nothing under the test directory (target, WAL, logs, config) holds the canary…
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "the canary leaked into {}",
            path.display()
        );
    }
    // …and the scrubbed row is there, hashed and masked.
    let rows = env.target_rows("SELECT email, phone, card FROM customers");
    assert_eq!(
        rows,
        vec![vec![
            hmac_hex(HMAC_KEY.as_bytes(), format!("{CANARY}@example.com").as_bytes()),
            "*************-PII".into(),
            "NULL".into()
        ]]
    );
}

#[test]
fn bad_filters_and_transforms_are_refused_with_the_key_and_position() {
    let env = env();
    let cases = [
        (
            "[[tables]]\nmatch = \"shop.orders\"\nwhere = \"total > 'abc'\"\n",
            "tables[0].where",
        ),
        (
            "[[tables]]\nmatch = \"shop.orders\"\nwhere = \"regoin = 'eu'\"\n",
            "position 1",
        ),
        (
            "[[tables]]\nmatch = \"shop.orders\"\nwhere = \"total >\"\n",
            "tables[0].where",
        ),
        (
            "[[tables]]\nmatch = \"shop.orders\"\n[tables.transforms]\nnote = \"rot13\"\n",
            "tables[0].transforms.note",
        ),
        (
            "[[tables]]\nmatch = \"shop.orders\"\n[tables.transforms]\nid = \"mask:2\"\n",
            "primary key",
        ),
        (
            "[[tables]]\nmatch = \"shop.customers\"\n[tables.transforms]\nemail = \"hmac\"\n",
            "hmac_key_env",
        ),
    ];
    for (tables, needle) in cases {
        env.write_config(tables, "");
        let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{tables} was accepted");
        assert!(text.contains(needle), "expected {needle:?} for {tables:?}, got: {text}");
    }
}

/// The key file's contents changed under a running sluice: a SIGHUP that would hash with
/// the new key is refused (old and new hashes would not match), and replication goes on
/// with the old key.
#[test]
fn a_reload_that_would_change_the_hmac_key_is_refused() {
    let tables = tables_toml().replace(
        "hmac_key_env = \"SLUICE_TEST_HMAC_KEY\"",
        "hmac_key_file = \"hmac.key\"",
    );
    let env = Env::new(SETUP, &tables);
    let key_file = env.dir.path().join("hmac.key");
    let old_key = "0123456789abcdef0123456789abcdef";
    std::fs::write(&key_file, format!("{old_key}\n")).unwrap();
    let mut sluice = env.start();
    std::fs::write(&key_file, "another-key-another-key-another-key\n").unwrap();
    sluice.reload();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env.log().contains("HMAC key changed") {
        assert!(sluice.try_exit().is_none(), "sluice exited; log:\n{}", env.log());
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal logged; log:\n{}",
            env.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    env.db
        .exec("INSERT INTO shop.customers VALUES ('cy@example.com', 'Cy', NULL, NULL, NULL, 1)");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_eq!(
        env.target_rows("SELECT email FROM customers"),
        vec![vec![hmac_hex(old_key.as_bytes(), b"cy@example.com")]]
    );
}

/// A changed row filter or transform applies to the rows already at the edge too: the table
/// is created afresh and copied again (rows copied under the old rules would otherwise stay:
/// a row the new filter leaves out, a value masked the old way).
#[test]
fn a_changed_row_filter_or_transform_recopies_the_table() {
    let env = env();
    env.db.exec(
        "INSERT INTO shop.orders VALUES (1,'eu','new',10,'a'),(2,'asia','new',20,'b'),(3,'us','paid',30,'c');
         INSERT INTO shop.customers VALUES ('ann@example.com', 'Ann', '+1-555-0100', NULL, NULL, 1);",
    );
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let ids = |env: &Env| env.target_rows("SELECT id FROM orders ORDER BY id");
    let one = |v: &[&str]| v.iter().map(|s| vec![(*s).to_owned()]).collect::<Vec<_>>();
    assert_eq!(ids(&env), one(&["1", "3"]));

    let changed = tables_toml()
        .replace(FILTER, "region = 'asia'")
        .replace("phone = \"mask:4\"", "phone = \"mask:2\"");
    env.write_config(&changed, "");
    let mut sluice = env.start();
    wait_for(&env, &mut sluice, "the orders of the new filter", || {
        env.target.exists() && ids(&env) == one(&["2"])
    });
    wait_for(&env, &mut sluice, "phones masked the new way", || {
        env.target_rows("SELECT phone FROM customers") == one(&["*********00"])
    });
    env.db
        .exec("INSERT INTO shop.orders VALUES (4,'asia','new',40,'d'),(5,'eu','new',50,'e')");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_eq!(ids(&env), one(&["2", "4"]));
    assert!(env.log().contains("row filter or transforms changed"), "{}", env.log());
}
