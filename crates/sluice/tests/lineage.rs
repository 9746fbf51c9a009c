//! Lineage: after a failover, sluice follows a promoted replica that holds its checkpoint,
//! and refuses one whose history diverged from it (the old primary's last transactions never
//! reached it, and it wrote its own under the same sequence numbers). Real MariaDB servers:
//! one primary and two replicas, both promoted.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use sluice_testkit::{MariaDb, MariaDbOptions};

const SHOP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note TEXT);
";

const ORDERS: &str = "
[[tables]]
match = \"shop.orders\"
";

fn output_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// A replica of `primary` that writes what it applies to its own binlog, as a server that
/// may be promoted must.
fn start_replica(primary: &MariaDb) -> MariaDb {
    let replica = MariaDbOptions::new().server_arg("--log-slave-updates").start();
    // The test kit creates users outside the binlog, so each server gets its own.
    replica.create_user(common::REPL_USER, common::REPL_PASSWORD, common::REPL_GRANTS);
    replica.exec(&format!(
        "CHANGE MASTER TO master_host = '127.0.0.1', master_port = {}, master_user = 'root', \
         master_use_gtid = slave_pos; START SLAVE;",
        primary.port()
    ));
    replica
}

/// Waits until `replica` has applied everything `primary` has in its binlog.
fn wait_replicated(primary: &MariaDb, replica: &MariaDb) {
    let want = primary.query_value("SELECT @@global.gtid_binlog_pos");
    let deadline = Instant::now() + Duration::from_secs(60);
    while replica.query_value(&format!("SELECT MASTER_GTID_WAIT('{want}', 1)")) != "0" {
        assert!(
            Instant::now() < deadline,
            "the replica did not reach {want}; its status: {:?}",
            replica.query_rows("SHOW SLAVE STATUS")
        );
    }
}

/// Makes `replica` a primary: it stops replicating and forgets its primary.
fn promote(replica: &MariaDb) {
    replica.exec("STOP SLAVE; RESET SLAVE ALL;");
}

/// Points the test's config at another source server.
fn point_config_at(env: &Env, server: &MariaDb) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|line| match line.starts_with("port = ") {
            true => format!("port = {}", server.port()),
            false => line.to_string(),
        })
        .collect();
    std::fs::write(&env.config, text.join("\n")).unwrap();
}

fn checkpoint_sequence(checkpoint: &str) -> u64 {
    let position: sluice_binlog::GtidPosition = checkpoint.parse().unwrap();
    position.get(0).expect("a checkpoint in domain 0").sequence
}

#[test]
fn a_promoted_replica_is_followed_when_it_holds_the_checkpoint_and_refused_when_it_diverged() {
    let env = Env::new(SHOP, ORDERS);
    let caught_up = start_replica(&env.db);
    let behind = start_replica(&env.db);

    let mut sluice = env.start();
    env.db
        .exec("INSERT INTO shop.orders VALUES (1, 'a'); INSERT INTO shop.orders VALUES (2, 'b');");
    env.wait_caught_up(&mut sluice);
    wait_replicated(&env.db, &behind);
    // `behind` misses what the primary writes from here on; sluice and `caught_up` do not.
    behind.exec("STOP SLAVE");
    env.db
        .exec("INSERT INTO shop.orders VALUES (3, 'c'); UPDATE shop.orders SET note = 'a2' WHERE id = 1;");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    wait_replicated(&env.db, &caught_up);
    let checkpoint = env.checkpoint().unwrap();
    let checkpoint_seq = checkpoint_sequence(&checkpoint);

    // Failover: both replicas are promoted and write as primaries. `behind` writes past the
    // checkpoint's sequence number, so sequence numbers alone would say it is ahead.
    promote(&caught_up);
    promote(&behind);
    caught_up.exec("INSERT INTO shop.orders VALUES (4, 'after failover')");
    behind.exec(&format!(
        "SET SESSION gtid_seq_no = {}; INSERT INTO shop.orders VALUES (5, 'diverged')",
        checkpoint_seq + 10
    ));

    point_config_at(&env, &behind);
    let config = env.config.to_str().unwrap();
    let check = env.run_cmd(&["check", "-c", config]);
    let text = output_text(&check);
    assert!(!check.status.success(), "check passed on a diverged source: {text}");
    assert!(text.contains("diverged") && text.contains(&checkpoint), "{text}");
    let run = env.run_cmd(&["run", "-c", config]);
    let text = output_text(&run);
    assert!(!run.status.success(), "run started on a diverged source: {text}");
    assert!(text.contains("diverged"), "{text}");
    assert_eq!(env.checkpoint().unwrap(), checkpoint, "the checkpoint must not move");

    point_config_at(&env, &caught_up);
    let check = env.run_cmd(&["check", "-c", config]);
    assert!(check.status.success(), "{}", output_text(&check));
    let mut sluice = env.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.target_rows("SELECT count(*) FROM orders") != vec![vec!["4"]] {
        assert!(
            Instant::now() < deadline,
            "the promoted replica's row did not arrive; log:\n{}",
            env.log()
        );
        if let Some(status) = sluice.try_exit() {
            panic!("sluice exited ({status}); log:\n{}", env.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sluice.stop().success());
    assert_eq!(
        env.target_rows("SELECT id, note FROM orders ORDER BY id"),
        caught_up.query_rows("SELECT id, note FROM shop.orders ORDER BY id")
    );
}
