//! `sluice plan`: what a start with a changed config would do, printed without doing it, and
//! then done by `run` as printed.

mod common;

use common::{same_rows, Env};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL, note VARCHAR(40));
CREATE TABLE shop.lines (order_id INT, line_no SMALLINT, qty INT, PRIMARY KEY (order_id, line_no));
CREATE TABLE shop.tags (name VARCHAR(30) PRIMARY KEY, hits BIGINT UNSIGNED);
INSERT INTO shop.orders SELECT seq, seq % 97, CONCAT('n', seq) FROM shop.seq_1_to_3000;
INSERT INTO shop.lines SELECT seq DIV 4, seq % 4, seq % 7 FROM shop.seq_4_to_1999;
INSERT INTO shop.tags SELECT CONCAT('tag-', seq), seq FROM shop.seq_1_to_500;
";

const FIRST: &str = "[[tables]]\nmatch = \"shop.orders\"\nexclude_columns = [\"note\"]\n\n\
                     [[tables]]\nmatch = \"shop.lines\"\n\n\
                     [[tables]]\nmatch = \"shop.tags\"\n\n[backfill]\nchunk_rows = 400\n";

/// `note` released, `lines` filtered, `tags` out of the config.
const CHANGED: &str = "[[tables]]\nmatch = \"shop.orders\"\nrelease_columns = [\"note\"]\n\n\
                       [[tables]]\nmatch = \"shop.lines\"\nwhere = \"qty > 2\"\n\n[backfill]\nchunk_rows = 400\n";

fn plan(env: &Env) -> serde_json::Value {
    let out = env.run_cmd(&["plan", "-c", env.config.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The actions planned for a target table, joined.
fn actions(plan: &serde_json::Value, table: &str) -> String {
    let t = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == table)
        .unwrap_or_else(|| panic!("{table} not in the plan: {plan}"));
    t["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The target's bookkeeping, to show that `plan` changed nothing.
fn bookkeeping(env: &Env) -> Vec<Vec<String>> {
    let mut rows = env.target_rows("SELECT name, sql FROM sqlite_master ORDER BY name");
    rows.extend(env.target_rows("SELECT * FROM _sluice_backfill ORDER BY 1"));
    rows.extend(env.target_rows("SELECT * FROM _sluice_tables ORDER BY 1"));
    rows
}

#[test]
fn plan_prints_what_a_changed_config_does_and_run_does_it() {
    let env = Env::new(SETUP, FIRST);

    // A fresh target: everything is created and copied; the SQLite file is not created.
    let fresh = plan(&env);
    assert!(!env.target.exists(), "plan created the target file");
    for table in ["orders", "lines", "tags"] {
        let a = actions(&fresh, table);
        assert!(
            a.starts_with("create (") && a.contains("copy every existing row"),
            "{table}: {a}"
        );
    }
    assert!(actions(&fresh, "orders").starts_with("create (2 columns)"), "{fresh}");

    let mut sluice = env.start();
    common::wait_for(&env, &mut sluice, "the copies", || {
        env.target_rows("SELECT count(*) FROM _sluice_backfill WHERE done")[0][0] == "3"
    });
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());

    // The same config again: nothing to do.
    let same = plan(&env);
    for table in ["orders", "lines", "tags"] {
        assert_eq!(actions(&same, table), "no change", "{same}");
    }

    env.write_config(CHANGED, "");
    let before = bookkeeping(&env);
    let changed = plan(&env);
    assert_eq!(bookkeeping(&env), before, "plan changed the target");
    let orders = actions(&changed, "orders");
    assert!(
        orders.contains("add column(s) note") && orders.contains("column-only copy of note"),
        "{orders}"
    );
    let lines = actions(&changed, "lines");
    assert!(
        lines.contains("drop and create afresh: the table's row filter or transforms changed")
            && lines.contains("copy every existing row"),
        "{lines}"
    );
    assert!(actions(&changed, "tags").contains("no longer selected"), "{changed}");
    assert_eq!(changed.as_array().unwrap().len(), 3, "{changed}");

    // `run` does what was printed.
    let mut sluice = env.start();
    common::wait_for(&env, &mut sluice, "the copies", || {
        env.target_rows("SELECT count(*) FROM _sluice_backfill WHERE done AND name <> 'tags'")[0][0] == "2"
    });
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let log = env.log();
    assert!(log.contains("columns added to the replicated columns"), "{log}");
    assert!(log.contains("row filter or transforms changed"), "{log}");
    assert!(log.contains("table left the config"), "{log}");
    same_rows(
        "orders",
        env.target_rows("SELECT id, customer, note FROM orders"),
        env.db.query_rows("SELECT id, customer, note FROM shop.orders"),
    );
    same_rows(
        "lines",
        env.target_rows("SELECT order_id, line_no, qty FROM lines"),
        env.db
            .query_rows("SELECT order_id, line_no, qty FROM shop.lines WHERE qty > 2"),
    );
    // Afterwards the plan of the same config is empty again.
    let after = plan(&env);
    assert_eq!(actions(&after, "orders"), "no change", "{after}");
    assert_eq!(actions(&after, "lines"), "no change", "{after}");
}

/// An edge behind the fan-out log has no source catalog to plan from: refused with what to do.
#[test]
fn plan_of_an_edge_behind_the_log_is_refused() {
    let env = Env::new("", "[[tables]]\nmatch = \"shop.*\"\n");
    std::fs::write(
        &env.config,
        "[source]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nstream = \"s\"\n\n\
         [target]\nkind = \"sqlite\"\npath = \"edge.sqlite\"\n\n[[tables]]\nmatch = \"shop.*\"\n",
    )
    .unwrap();
    let out = env.run_cmd(&["plan", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("publisher's config"), "{stderr}");
}
