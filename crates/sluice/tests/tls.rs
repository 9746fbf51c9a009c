//! TLS to the source (queries and the replication stream) and to a PostgreSQL target, with a
//! CA made in the test by `openssl`: a good certificate works; a wrong host name, an unknown
//! CA, a server without TLS and an account that requires TLS without it are refused clearly.

mod common;

use std::path::Path;
use std::process::Command;

use common::Env;
use sluice_testkit::{MariaDbOptions, PostgresServer};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(40));
INSERT INTO shop.orders VALUES (1, 'before');
";
const TABLES: &str = "[[tables]]\nmatch = \"shop.orders\"\n";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `{name}-ca.pem` and a server certificate `{name}.pem`/`{name}.key` it signed for
/// `san` (an openssl subjectAltName value), readable by the servers' unprivileged users.
fn certificates(dir: &Path, name: &str, san: &str) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in [format!("{name}.pem"), format!("{name}.key"), format!("{ca}.pem")] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// A TLS source whose server certificate is for `san`; the replication user requires TLS.
fn tls_source(certs: &Path, san: &str) -> Env {
    certificates(certs, "server", san);
    let path = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let env = Env::with_options(
        MariaDbOptions::new()
            .server_arg(format!("--ssl-ca={}", path("server-ca.pem")))
            .server_arg(format!("--ssl-cert={}", path("server.pem")))
            .server_arg(format!("--ssl-key={}", path("server.key"))),
        SETUP,
        TABLES,
    );
    env.db.exec("ALTER USER 'sluice_repl'@'%' REQUIRE SSL");
    env
}

fn output(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// Rewrites the config with `[source] tls_mode` and `tls_ca_file`.
fn use_tls(env: &Env, mode: &str, ca: &Path) {
    env.write_config(
        TABLES,
        &format!("tls_mode = \"{mode}\"\ntls_ca_file = \"{}\"", ca.display()),
    );
}

/// `sluice binlog dump` of one event from the source's current position: the replication
/// stream's own connection (hand-written protocol), not the SQL connections `check` makes.
/// One event from the replication stream alone: `--raw` with `--from` opens no SQL
/// connection, so this is the hand-written protocol's TLS.
fn dump_one(env: &Env) -> std::process::Output {
    env.run_cmd(&[
        "binlog",
        "dump",
        "-c",
        env.config.to_str().unwrap(),
        "--from",
        &env.source_position(),
        "--limit",
        "1",
        "--raw",
    ])
}

fn check(env: &Env) -> (bool, String) {
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    (out.status.success(), output(&out))
}

#[test]
fn a_source_with_a_verified_certificate_replicates_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let env = tls_source(certs.path(), "IP:127.0.0.1,DNS:localhost");
    let ca = certs.path().join("server-ca.pem");
    use_tls(&env, "verify_identity", &ca);
    let (ok, text) = check(&env);
    assert!(ok, "{text}");
    // The account requires TLS: every connection sluice makes (preflight, the replication
    // stream, backfill, the heartbeat) is encrypted or refused.
    let mut sluice = env.start();
    env.db
        .exec("INSERT INTO shop.orders VALUES (2, 'streamed'); UPDATE shop.orders SET note = 'changed' WHERE id = 1;");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success(), "{}", env.log());
    assert_eq!(
        env.target_rows("SELECT id, note FROM orders ORDER BY id"),
        vec![vec!["1", "changed"], vec!["2", "streamed"]]
    );
}

#[test]
fn wrong_name_unknown_ca_and_plaintext_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    let env = tls_source(certs.path(), "DNS:db.invalid");
    let ca = certs.path().join("server-ca.pem");

    // A certificate for another host name: refused by verify_identity.
    use_tls(&env, "verify_identity", &ca);
    let (ok, text) = check(&env);
    assert!(!ok && text.to_lowercase().contains("name"), "{text}");
    let dump = dump_one(&env);
    let dump_text = output(&dump);
    assert!(!dump.status.success() && dump_text.contains("TLS"), "{dump_text}");
    use_tls(&env, "verify_ca", &ca);
    // verify_ca: the replication stream checks the chain only, so it gets past TLS to the
    // binlog; the SQL connections still check the name (see source_rows::mysql_async_tls).
    let dump = dump_one(&env);
    let dump_text = output(&dump);
    assert!(dump.status.success(), "{dump_text}");
    let (ok, text) = check(&env);
    assert!(!ok && text.contains("not valid for name"), "{text}");

    // A CA that did not sign the server's certificate.
    certificates(certs.path(), "other", "IP:127.0.0.1");
    let other = certs.path().join("other-ca.pem");
    use_tls(&env, "verify_ca", &other);
    let (ok, text) = check(&env);
    assert!(!ok && text.to_lowercase().contains("issuer"), "{text}");

    // Plaintext to an account that requires TLS: the error says TLS is the likely cause.
    env.write_config(TABLES, "tls_mode = \"disabled\"");
    let (ok, text) = check(&env);
    assert!(
        !ok && text.contains("REQUIRE SSL") && text.contains("tls_mode"),
        "{text}"
    );
    assert!(!text.contains(common::REPL_PASSWORD));
}

#[test]
fn tls_asked_of_a_server_without_it_is_refused_not_downgraded() {
    let env = Env::new(SETUP, TABLES);
    env.write_config(TABLES, "tls_mode = \"required\"");
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    // The replication stream (hand-written protocol) refuses too, before authenticating.
    let dump = dump_one(&env);
    let text = output(&dump);
    assert!(
        !dump.status.success() && text.contains("does not offer TLS") && text.contains("tls_mode"),
        "{text}"
    );
}

#[test]
fn a_postgres_target_over_verified_tls() {
    let env = Env::new(SETUP, TABLES);
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    // Certificates in the data directory, owned by the server's user (PostgreSQL insists on
    // a private key only its owner can read), then TLS switched on by a reload.
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path(), "server", "IP:127.0.0.1");
    let data = pg.data_dir();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let owner = std::fs::metadata(data).unwrap();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(certs.path().join(f), data.join(f)).unwrap();
        std::os::unix::fs::chown(data.join(f), Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    pg.exec("ALTER SYSTEM SET ssl_cert_file = 'server.pem'");
    pg.exec("ALTER SYSTEM SET ssl_key_file = 'server.key'");
    pg.exec("ALTER SYSTEM SET ssl = on");
    pg.exec("SELECT pg_reload_conf()");
    let target = |mode: &str| {
        format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\ntls_mode = \"{mode}\"\ntls_ca_file = \"{}\"\n",
            pg.port(),
            certs.path().join("server-ca.pem").display()
        )
    };
    env.write_config_with_target(TABLES, "", &target("verify_identity"));
    let positions = || common::postgres_positions(&pg, "public");
    let mut sluice = env.start_server_target(positions);
    env.db.exec("INSERT INTO shop.orders VALUES (2, 'over tls')");
    env.wait_caught_up_with(&mut sluice, positions);
    // Every connection sluice holds to the edge database is encrypted.
    let mut client = postgres::Client::connect(&pg.conn_string_for("postgres"), postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'edge' AND a.pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    let encrypted: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(!encrypted.is_empty() && encrypted.iter().all(|&e| e), "{encrypted:?}");
    assert!(sluice.stop().success(), "{}", env.log());
    let mut edge = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    let notes: Vec<String> = edge
        .query("SELECT note FROM public.orders ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(notes, vec!["before", "over tls"]);
}
