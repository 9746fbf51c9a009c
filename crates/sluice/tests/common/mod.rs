//! Shared helpers for the end-to-end tests: a throwaway MariaDB source, a config file, the
//! real `sluice` binary as a child process, and waiting on state (never on fixed sleeps).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_testkit::{MariaDb, MariaDbOptions};

pub const REPL_USER: &str = "sluice_repl";
pub const REPL_PASSWORD: &str = "s3cret-Pa55";

pub struct Env {
    pub db: MariaDb,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub target: PathBuf,
}

/// Grants a replication user needs (see README): replication and the catalog reads.
pub const REPL_GRANTS: &[&str] = &["REPLICATION SLAVE, BINLOG MONITOR", "SELECT ON *.*"];

impl Env {
    /// A source with `setup_sql` run, a replication user, and a config selecting with `tables_toml`.
    pub fn new(setup_sql: &str, tables_toml: &str) -> Env {
        Self::with_options(MariaDbOptions::new(), setup_sql, tables_toml)
    }

    pub fn with_options(options: MariaDbOptions, setup_sql: &str, tables_toml: &str) -> Env {
        let db = options.start();
        if !setup_sql.trim().is_empty() {
            db.exec(setup_sql);
        }
        db.create_user(REPL_USER, REPL_PASSWORD, REPL_GRANTS);
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("edge.sqlite");
        let config = dir.path().join("sluice.toml");
        std::fs::write(dir.path().join("password"), format!("{REPL_PASSWORD}\n")).unwrap();
        let env = Env {
            db,
            dir,
            config,
            target,
        };
        env.write_config(tables_toml, "");
        env
    }

    /// (Re)writes the config; `extra_source` lines go into [source].
    pub fn write_config(&self, tables_toml: &str, extra_source: &str) {
        self.write_config_with_target(
            tables_toml,
            extra_source,
            "[target]\nkind = \"sqlite\"\npath = \"edge.sqlite\"\n",
        );
    }

    /// (Re)writes the config with another `[target]` section.
    pub fn write_config_with_target(&self, tables_toml: &str, extra_source: &str, target_toml: &str) {
        let text = format!(
            "[source]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{REPL_USER}\"\npassword_file = \"password\"\nheartbeat_ms = 500\n{extra_source}\n\n{target_toml}\n{tables_toml}\n",
            port = self.db.port()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn sluice(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.current_dir(self.dir.path())
            .env("SLUICE_LOG", "info,sluice_engine=debug");
        cmd
    }

    /// Runs a sluice subcommand to completion.
    pub fn run_cmd(&self, args: &[&str]) -> std::process::Output {
        self.sluice().args(args).output().expect("run sluice")
    }

    /// Starts `sluice run` in the background, logging to `sluice.log` in the test dir, and
    /// waits until it streams (or exits: refusal tests inspect that).
    pub fn start(&self) -> Sluice {
        self.start_with_log_level("info,sluice_engine=debug")
    }

    /// [`Env::start`] with a `SLUICE_LOG` filter.
    pub fn start_with_log_level(&self, level: &str) -> Sluice {
        self.spawn_and_wait(level, || self.checkpoint().is_some())
    }

    fn spawn_and_wait(&self, level: &str, has_checkpoint: impl Fn() -> bool) -> Sluice {
        let mut sluice = self.spawn_with_log_level(level, &["run", "-c", self.config.to_str().unwrap()], "sluice.log");
        // Writes made before the start position is recorded are not replicated when sluice
        // starts from the source's current position, so wait for it.
        let streams_before = self.log().matches("streaming binlog").count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !has_checkpoint() || self.log().matches("streaming binlog").count() == streams_before {
            if sluice.try_exit().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "sluice did not start; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        sluice
    }

    /// Starts sluice against a server target; `positions` reads the writers' checkpoint rows.
    pub fn start_server_target(&self, positions: impl Fn() -> Vec<String>) -> Sluice {
        self.spawn_and_wait("info,sluice_engine=debug", || !positions().is_empty())
    }

    /// Waits until the merged checkpoint (per-domain maximum over the writers' rows, read
    /// with `positions`) equals the source's binlog position.
    pub fn wait_caught_up_with(&self, sluice: &mut Sluice, positions: impl Fn() -> Vec<String>) {
        let want: sluice_binlog::GtidPosition = self.source_position().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut merged = sluice_binlog::GtidPosition::new();
            for p in positions() {
                for g in p.parse::<sluice_binlog::GtidPosition>().unwrap().iter() {
                    if !merged.contains(g) {
                        merged.advance(g);
                    }
                }
            }
            if merged == want {
                return;
            }
            if let Some(status) = sluice.try_exit() {
                panic!("sluice exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "target did not reach {want} (at {merged}); log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `sluice ARGS` in the background, logging to `log_name` in the test dir, without
    /// waiting for anything.
    pub fn spawn(&self, args: &[&str], log_name: &str) -> Sluice {
        self.spawn_with_log_level("info,sluice_engine=debug", args, log_name)
    }

    fn spawn_with_log_level(&self, level: &str, args: &[&str], log_name: &str) -> Sluice {
        let log_path = self.dir.path().join(log_name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = self
            .sluice()
            .env("SLUICE_LOG", level)
            .args(args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice");
        Sluice {
            child: Some(child),
            log: log_path,
        }
    }

    /// The log file `name` in the test dir (see [`Env::spawn`]).
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    pub fn source_position(&self) -> String {
        self.db.query_value("SELECT @@global.gtid_binlog_pos")
    }

    /// The target's low-water mark (merged over all writers' records), if the target file and
    /// a checkpoint exist.
    pub fn checkpoint(&self) -> Option<String> {
        use sluice_engine::target::Target;
        if !self.target.exists() {
            return None;
        }
        let mut target = sluice_engine::target::sqlite::SqliteTarget::open(&self.target).ok()?;
        target
            .load_checkpoint()
            .ok()
            .flatten()
            .map(|cp| cp.position.to_string())
    }

    /// Waits until the target's checkpoint equals the source's binlog position.
    pub fn wait_caught_up(&self, sluice: &mut Sluice) {
        let want = self.source_position();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.checkpoint().as_deref() == Some(want.as_str()) {
                return;
            }
            if let Some(status) = sluice.try_exit() {
                panic!(
                    "sluice exited ({status}) before catching up to {want}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "target did not reach {want} (at {:?}); log:\n{}",
                self.checkpoint(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn target_rows(&self, sql: &str) -> Vec<Vec<String>> {
        sqlite_rows(&self.target, sql)
    }
}

/// Rows of a SQLite query as strings: NULL as "NULL", blobs as uppercase hex, reals and
/// integers in their shortest text form.
pub fn sqlite_rows(path: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..n)
            .map(|i| match row.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                rusqlite::types::ValueRef::Real(v) => v.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02X}")).collect(),
            })
            .collect())
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A TCP port free right now on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `request` raw to 127.0.0.1:`port` and returns the whole response (the metrics
/// listener closes after answering).
pub fn http_raw(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read the response");
    String::from_utf8(response).expect("UTF-8 response")
}

/// `GET path` from the metrics listener: status line and body.
pub fn http_get(port: u16, path: &str) -> (String, String) {
    let response = http_raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    );
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// Lets the replication user write sluice's heartbeat table (lag in microseconds).
pub fn grant_heartbeat(env: &Env) {
    env.db.exec(&format!(
        "SET SESSION sql_log_bin = 0; GRANT CREATE, INSERT, UPDATE ON `sluice`.* TO '{REPL_USER}'@'%';"
    ));
}

/// `sluice status --json`, which must succeed.
pub fn status_json(env: &Env) -> serde_json::Value {
    let out = env.run_cmd(&["status", "--json", "-c", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

pub struct Sluice {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Sluice {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit on its own (e.g. after a fatal error).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(Instant::now() < deadline, "sluice did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: a clean stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        unsafe_kill(child.id(), "TERM");
        self.wait_exit(Duration::from_secs(30))
    }

    /// SIGKILL: a crash.
    /// SIGHUP: reload the config without stopping.
    pub fn reload(&mut self) {
        let child = self.child.as_mut().expect("running");
        unsafe_kill(child.id(), "HUP");
    }

    pub fn kill9(&mut self) {
        let child = self.child.as_mut().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Compares row sets and, when they differ, names only the differing rows.
pub fn same_rows(what: &str, mut target: Vec<Vec<String>>, mut source: Vec<Vec<String>>) {
    target.sort();
    source.sort();
    if target != source {
        let missing: Vec<_> = source.iter().filter(|r| !target.contains(r)).take(8).collect();
        let extra: Vec<_> = target.iter().filter(|r| !source.contains(r)).take(8).collect();
        panic!(
            "{what}: {} target rows, {} source rows; missing {missing:?}; extra {extra:?}",
            target.len(),
            source.len()
        );
    }
}

/// The `[target]` section for a throwaway MariaDB target with user `edge` (password in the
/// test dir's `target-password`), writing into database `edge`.
pub fn mariadb_target(env: &Env) -> (MariaDb, String) {
    let target = MariaDb::start();
    target.create_user("edge", "edge-pw", &["ALL PRIVILEGES"]);
    std::fs::write(env.dir.path().join("target-password"), "edge-pw\n").unwrap();
    let toml = format!(
        "[target]\nkind = \"mariadb\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"edge\"\npassword_file = \"target-password\"\ndatabase = \"edge\"\n",
        target.port()
    );
    (target, toml)
}

/// The writers' checkpoint positions in a MariaDB target's database `edge`, read with the
/// `mariadb` client (so it works while the server is down: no rows then).
pub fn mariadb_positions(port: u16) -> Vec<String> {
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", "-uroot", &format!("-P{port}"), "-N", "-B", "-e"])
        .arg("SELECT position FROM edge._sluice_checkpoint")
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The writers' checkpoint positions in a PostgreSQL target's database `edge`, `schema`.
pub fn postgres_positions(pg: &sluice_testkit::PostgresServer, schema: &str) -> Vec<String> {
    let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    client
        .query(&format!("SELECT position FROM {schema}._sluice_checkpoint"), &[])
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .unwrap_or_default()
}

/// Waits (up to 90 s) until `done`, failing with sluice's log if sluice exits first.
pub fn wait_for(env: &Env, sluice: &mut Sluice, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        if let Some(status) = sluice.try_exit() {
            panic!("sluice exited ({status}) waiting for {what}; log:\n{}", env.log());
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
