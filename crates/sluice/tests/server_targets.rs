//! MariaDB source → MariaDB and PostgreSQL targets, with parallel writers, end to end.

mod common;

use common::Env;
use sluice_testkit::{MariaDb, PostgresServer};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.accounts (id INT PRIMARY KEY, owner VARCHAR(40), balance DECIMAL(12,2), opened DATETIME(6), note TEXT);
CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO shop.counters VALUES (1, 0), (2, 0);
";
const TABLES: &str =
    "[[tables]]\nmatch = \"shop.*\"\nexclude_columns = [\"note\"]\n\n[apply]\nwriters = 4\nbatch_max_rows = 20\n";

/// Concurrent clients with hot counters, key changes and deletes.
fn workload(env: &Env) {
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let sql: String = (0..80)
                .map(|i| {
                    let id = c * 1000 + i;
                    format!(
                        "BEGIN; UPDATE shop.counters SET n = n + 1 WHERE id = {hot};
                         INSERT INTO shop.accounts VALUES ({id}, 'o{c}-{i}', {i}.25, '2024-02-29 12:00:00.{i:06}', 'secret');
                         UPDATE shop.accounts SET id = id + 500, balance = balance * 2 WHERE id = {prev};
                         DELETE FROM shop.accounts WHERE id = {old};
                         COMMIT;",
                        hot = 1 + i % 2,
                        prev = id - 1,
                        old = id + 500 - 4,
                    )
                })
                .collect();
            let port = env.db.port();
            std::thread::spawn(move || {
                let ok = std::process::Command::new("mariadb")
                    .args(["-h127.0.0.1", "-uroot", &format!("-P{port}"), "-e", &sql])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

fn source_accounts(env: &Env) -> Vec<Vec<String>> {
    env.db
        .query_rows("SELECT id, owner, balance, opened FROM shop.accounts ORDER BY id")
}

#[test]
fn replicates_into_a_mariadb_target() {
    let env = Env::new(SETUP, TABLES);
    let target = MariaDb::start();
    target.create_user("edge", "edge-pw", &["ALL PRIVILEGES"]);
    std::fs::write(env.dir.path().join("target-password"), "edge-pw\n").unwrap();
    env.write_config_with_target(
        TABLES,
        "",
        &format!(
            "[target]\nkind = \"mariadb\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"edge\"\npassword_file = \"target-password\"\ndatabase = \"edge\"\n",
            target.port()
        ),
    );
    let positions = || -> Vec<String> {
        let exists = target.query_value(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edge' AND TABLE_NAME = '_sluice_checkpoint'",
        );
        if exists == "0" {
            return Vec::new();
        }
        target
            .query_rows("SELECT position FROM edge._sluice_checkpoint")
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    };
    let mut sluice = env.start_server_target(positions);
    workload(&env);
    env.wait_caught_up_with(&mut sluice, positions);
    assert!(sluice.stop().success());
    assert_eq!(
        target.query_rows("SELECT id, owner, balance, opened FROM edge.accounts ORDER BY id"),
        source_accounts(&env)
    );
    assert_eq!(
        target.query_rows("SELECT id, n FROM edge.counters ORDER BY id"),
        vec![vec!["1", "120"], vec!["2", "120"]]
    );
    assert!(env.log().contains("writers=4"));
}

#[test]
fn replicates_into_a_postgres_target() {
    let env = Env::new(SETUP, TABLES);
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    env.write_config_with_target(
        TABLES,
        "",
        &format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\nschema = \"shop_edge\"\n",
            pg.port()
        ),
    );
    let positions = || -> Vec<String> {
        let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
        client
            .query("SELECT position FROM shop_edge._sluice_checkpoint", &[])
            .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
            .unwrap_or_default()
    };
    let mut sluice = env.start_server_target(positions);
    workload(&env);
    env.wait_caught_up_with(&mut sluice, positions);
    assert!(sluice.stop().success());
    let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    let target: Vec<Vec<String>> = client
        .query("SELECT id::text, owner, balance::text, to_char(opened, 'YYYY-MM-DD HH24:MI:SS.US') FROM shop_edge.accounts a ORDER BY a.id", &[])
        .unwrap()
        .iter()
        .map(|r| (0..4).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    assert_eq!(target, source_accounts(&env));
    let counters: Vec<(i32, i64)> = client
        .query("SELECT id, n FROM shop_edge.counters ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counters, vec![(1, 120), (2, 120)]);
}

const PII_SETUP: &str = "
CREATE DATABASE crm;
CREATE TABLE crm.customers (id INT PRIMARY KEY, email VARCHAR(100), phone VARCHAR(30), card VARCHAR(30), note VARCHAR(50), tier INT, region VARCHAR(8));
";
const PII_TABLES: &str = "[[tables]]
match = \"crm.customers\"
where = \"region = 'eu'\"
[tables.transforms]
email = \"hmac\"
phone = \"mask:4\"
card = \"null\"
note = \"truncate:3\"
tier = \"const:9\"

[transforms]
hmac_key_file = \"hmac-key\"
";

/// Every transform and a row filter, on a server target; returns the target rows as text.
fn transformed_rows(
    target_toml: &str,
    read: impl Fn() -> Vec<Vec<String>>,
    positions: impl Fn() -> Vec<String> + Copy,
) {
    let env = Env::new(PII_SETUP, PII_TABLES);
    std::fs::write(env.dir.path().join("hmac-key"), "k3y-k3y-k3y-k3y-k3y\n").unwrap();
    env.write_config_with_target(PII_TABLES, "", target_toml);
    let mut sluice = env.start_server_target(positions);
    env.db.exec(
        "INSERT INTO crm.customers VALUES (1, 'a@example.com', '+1-555-0101', '4111', 'hello', 3, 'eu'),
                                          (2, 'b@example.com', '+1-555-0102', '4222', 'hi', 4, 'us'),
                                          (3, NULL, NULL, NULL, NULL, NULL, 'eu');
         UPDATE crm.customers SET region = 'eu' WHERE id = 2;
         UPDATE crm.customers SET region = 'us' WHERE id = 3;",
    );
    env.wait_caught_up_with(&mut sluice, positions);
    assert!(sluice.stop().success());
    let rows = read();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "1");
    assert_eq!(rows[0][1].len(), 64, "email is an HMAC hex digest: {rows:?}");
    assert!(rows[0][1].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(&rows[0][2..], ["*******0101", "NULL", "hel", "9"]);
    assert_eq!(rows[1][0], "2");
    assert_ne!(rows[1][1], rows[0][1]);
    assert_eq!(&rows[1][2..], ["*******0102", "NULL", "hi", "9"]);
}

#[test]
fn transforms_and_filters_on_a_mariadb_target() {
    let target = MariaDb::start();
    target.create_user("edge", "edge-pw", &["ALL PRIVILEGES"]);
    let positions = || -> Vec<String> {
        if target.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edge' AND TABLE_NAME = '_sluice_checkpoint'") == "0" {
            return Vec::new();
        }
        target
            .query_rows("SELECT position FROM edge._sluice_checkpoint")
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    };
    let toml = format!(
        "[target]\nkind = \"mariadb\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"edge\"\npassword_env = \"SLUICE_TEST_EDGE_PW\"\ndatabase = \"edge\"\n",
        target.port()
    );
    std::env::set_var("SLUICE_TEST_EDGE_PW", "edge-pw");
    transformed_rows(
        &toml,
        || target.query_rows("SELECT id, email, phone, card, note, tier FROM edge.customers ORDER BY id"),
        positions,
    );
}

#[test]
fn transforms_and_filters_on_a_postgres_target() {
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    let conn = pg.conn_string_for("edge");
    let positions = || -> Vec<String> {
        let mut client = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        client
            .query("SELECT position FROM public._sluice_checkpoint", &[])
            .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
            .unwrap_or_default()
    };
    let toml = format!(
        "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
        pg.port()
    );
    transformed_rows(
        &toml,
        || {
            let mut client = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            client
                .query(
                    "SELECT id::text, coalesce(email, 'NULL'), coalesce(phone, 'NULL'), coalesce(card, 'NULL'), coalesce(note, 'NULL'), coalesce(tier::text, 'NULL') FROM customers ORDER BY customers.id",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| (0..6).map(|i| r.get::<_, String>(i)).collect())
                .collect()
        },
        positions,
    );
}

#[test]
fn names_postgres_would_cut_are_refused_before_anything_is_written() {
    // MySQL allows 64-character names; PostgreSQL keeps 63 bytes and cuts the rest silently.
    let long_column = format!("c{}", "x".repeat(63));
    let env = Env::new(
        &format!("CREATE DATABASE shop; CREATE TABLE shop.wide (id INT PRIMARY KEY, {long_column} INT);"),
        "[[tables]]\nmatch = \"shop.wide\"\n",
    );
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    env.write_config_with_target(
        "[[tables]]\nmatch = \"shop.wide\"\n",
        "",
        &format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
            pg.port()
        ),
    );
    let config = env.config.to_str().unwrap();
    for command in ["check", "run"] {
        let out = env.run_cmd(&[command, "-c", config]);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{command} accepted a 64-byte column name: {text}"
        );
        assert!(
            text.contains(&long_column) && text.contains("64 bytes") && text.contains("PostgreSQL keeps at most 63"),
            "{command}: {text}"
        );
    }
    let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'wide'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "no edge table may be created");
}

/// A row the target cannot store stops replication with an error naming the table, the
/// column and the source transaction, never the value.
#[test]
fn a_row_the_target_refuses_is_named_by_table_column_and_gtid_without_its_value() {
    let env = Env::new(
        "CREATE DATABASE shop; CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT);",
        "[[tables]]\nmatch = \"shop.notes\"\n",
    );
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    env.write_config_with_target(
        "[[tables]]\nmatch = \"shop.notes\"\n",
        "",
        &format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
            pg.port()
        ),
    );
    let mut sluice = env.start_server_target(|| common::postgres_positions(&pg, "public"));
    env.db
        .exec("INSERT INTO shop.notes VALUES (1, CONCAT('top-secret', CHAR(0), 'value'))");
    let gtid = env.source_position();
    let status = sluice.wait_exit(std::time::Duration::from_secs(60));
    assert!(!status.success());
    let log = env.log();
    let error = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        error.contains("table notes") && error.contains("column body") && error.contains("NUL character"),
        "{error}"
    );
    assert!(
        error.contains(&format!("source transaction {gtid}")),
        "want {gtid}: {error}"
    );
    assert!(!log.contains("top-secret"), "{log}");
    assert_eq!(log.matches("error:").count(), 1, "the error is printed once: {log}");
}
