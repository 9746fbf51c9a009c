//! End to end: a real MariaDB source, the real `sluice` binary, a SQLite target.

mod common;

use common::Env;

const SHOP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200), phone VARCHAR(40));
CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(10,2), note TEXT);
CREATE TABLE shop.audit (id INT PRIMARY KEY, msg TEXT);
CREATE DATABASE other;
CREATE TABLE other.things (id INT PRIMARY KEY, v INT);
";

const TABLES: &str = "
[[tables]]
match = \"shop.customers\"
exclude_columns = [\"email\", \"phone\"]

[[tables]]
match = \"shop.ord*\"
";

#[test]
fn replicates_filtered_tables_and_columns() {
    let env = Env::new(SHOP, TABLES);
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    env.db.exec(
        "INSERT INTO shop.customers VALUES (1, 'Ann', 'ann@example.com', '555-1'), (2, 'Bob', 'bob@example.com', NULL);
         INSERT INTO shop.orders VALUES (10, 1, 12.50, 'first'), (11, 2, NULL, NULL);
         INSERT INTO shop.audit VALUES (1, 'not replicated');
         INSERT INTO other.things VALUES (1, 1);
         UPDATE shop.orders SET total = 99.99 WHERE id = 10;
         UPDATE shop.customers SET id = 3 WHERE id = 2;
         DELETE FROM shop.orders WHERE id = 11;",
    );
    env.wait_caught_up(&mut sluice);
    assert_eq!(
        env.target_rows("SELECT id, name FROM customers ORDER BY id"),
        vec![vec!["1", "Ann"], vec!["3", "Bob"]]
    );
    assert_eq!(
        env.target_rows("SELECT id, customer_id, total, note FROM orders"),
        vec![vec!["10", "1", "99.99", "first"]]
    );
    let cols: Vec<String> = env
        .target_rows("SELECT name FROM pragma_table_info('customers')")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(cols, vec!["id", "name"], "PII columns must not exist at the target");
    let tables = env.target_rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_sluice%' ESCAPE '\\' ORDER BY name",
    );
    assert_eq!(tables, vec![vec!["customers"], vec!["orders"]]);
    let log = env.log();
    assert!(
        !log.contains("ann@example.com") && !log.contains(common::REPL_PASSWORD),
        "log leaks PII or the password:\n{log}"
    );
    assert!(sluice.stop().success());
}
