//! Throwaway PostgreSQL servers for tests of sluice's PostgreSQL target.
//!
//! Each [`PostgresServer`] is a private `postgres` process with a data directory made by
//! `initdb` in its own temp directory, listening on a free TCP port on 127.0.0.1 (and on a
//! unix socket in that directory), with `trust` authentication for the superuser
//! `postgres`. It is stopped (fast shutdown, SIGKILL after a grace period) and its directory
//! deleted when the value is dropped, including when the test panics. No server that happens
//! to run on the machine is used.
//!
//! ```no_run
//! use sluice_testkit::PostgresServer;
//!
//! let pg = PostgresServer::start();
//! let mut client = postgres::Client::connect(&pg.conn_string(), postgres::NoTls).unwrap();
//! client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").unwrap();
//! ```
//!
//! Things worth knowing:
//!
//! - **Requirements**: PostgreSQL's server programs `initdb` and `postgres` (Debian:
//!   `postgresql`, which installs them under `/usr/lib/postgresql/<version>/bin`). They are
//!   looked up in `$SLUICE_PG_BINDIR`, then `$PATH`, then the newest
//!   `/usr/lib/postgresql/*/bin`, then `/usr/local/pgsql/bin`.
//! - **Running as root**: `initdb` and `postgres` refuse to run as root. When the test process
//!   is root, both run as the `postgres` system user (or `nobody` if there is none): the temp
//!   directory is created where that user can reach it and handed over to it with `chown`, and
//!   the programs are started with that user's uid and gid (no `sudo`/`runuser` needed). As any
//!   other user they simply run as that user.
//! - **Speed**: `initdb` takes well under a second with `--no-sync`; the server runs with
//!   `fsync=off` and `synchronous_commit=off`, which is fine for tests and only for tests.
//! - **Debugging**: set `SLUICE_KEEP_TESTDB=1` to keep the directory (data dir,
//!   `postgres.log`) after the test; its path is printed.

use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{free_port, log_since, log_tail, spawn_tied_to_process, stop_child};

/// How long a starting server may take to accept a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(20);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Another process can grab a free port between our probe and the server's bind.
const FRESH_PORT_ATTEMPTS: u32 = 10;
const LOG_TAIL_LINES: usize = 40;
/// The port production PostgreSQL servers use; never ours.
const DEFAULT_PG_PORT: u16 = 5432;

/// A running throwaway PostgreSQL server; see the [module docs](self).
#[derive(Debug)]
pub struct PostgresServer {
    /// `None` once the directory has been handed over to the user to keep.
    dir: Option<TempDir>,
    base: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    port: u16,
    process: Option<Child>,
    /// `name=value` server settings given after the defaults (later `-c` settings win).
    settings: Vec<String>,
}

/// The programs, and who runs them.
#[derive(Debug)]
struct Setup {
    initdb: PathBuf,
    postgres: PathBuf,
    /// `Some((uid, gid))` when the test runs as root and the server must not.
    run_as: Option<(u32, u32)>,
}

impl PostgresServer {
    /// Creates a data directory with `initdb` and starts a server on it.
    ///
    /// # Panics
    ///
    /// If PostgreSQL is not installed, `initdb` fails, or the server does not come up within
    /// 60 s; the message includes the end of the server's log.
    pub fn start() -> PostgresServer {
        Self::start_with_settings(&[])
    }

    /// Like [`PostgresServer::start`], with `name=value` settings that override the test
    /// defaults; e.g. benchmarks restore durability with `fsync=on`, `synchronous_commit=on`
    /// and `full_page_writes=on`.
    pub fn start_with_settings(settings: &[&str]) -> PostgresServer {
        let setup = setup();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir_in(temp_root(setup.run_as.is_some()))
            .unwrap_or_else(|err| panic!("sluice-testkit: cannot create a temp dir: {err}"));
        let base = dir.path().to_path_buf();
        let mut server = PostgresServer {
            dir: Some(dir),
            data_dir: base.join("data"),
            log: base.join("postgres.log"),
            base,
            port: 0,
            process: None,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        };
        if let Some((uid, gid)) = setup.run_as {
            std::os::unix::fs::chown(&server.base, Some(uid), Some(gid)).unwrap_or_else(|err| {
                panic!(
                    "sluice-testkit: cannot hand {} to uid {uid}: {err}",
                    server.base.display()
                )
            });
        }
        server.initdb(setup);
        server.launch(setup, true);
        server
    }

    /// Shuts the server down as a restart or an outage does (fast shutdown: every client is
    /// disconnected at once, nothing waits for them).
    pub fn shut_down(&mut self) {
        self.stop();
    }

    /// Starts a shut-down server again on the same data directory and port.
    ///
    /// # Panics
    ///
    /// If the server is running, or does not come up.
    pub fn start_again(&mut self) {
        assert!(
            self.process.is_none(),
            "sluice-testkit: start_again() on a running server; call shut_down() first"
        );
        self.launch(setup(), false);
    }

    /// The TCP port, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for the superuser `postgres` (no password) and the
    /// `postgres` database over TCP: `host=127.0.0.1 port=PORT user=postgres dbname=postgres`.
    pub fn conn_string(&self) -> String {
        self.conn_string_for("postgres")
    }

    /// Like [`conn_string`](Self::conn_string), for another database.
    pub fn conn_string_for(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname='{}' connect_timeout=10",
            self.port,
            database.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// Opens a connection as `postgres` to the `postgres` database. The sync client drives
    /// its own tokio runtime: don't use it on a thread that is running one.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.conn_string(), postgres::NoTls).unwrap_or_else(|err| {
            panic!(
                "sluice-testkit: cannot connect to the test PostgreSQL on port {}: {err}",
                self.port
            )
        })
    }

    /// Runs one or more `;`-separated SQL statements in the `postgres` database.
    ///
    /// # Panics
    ///
    /// If a statement fails.
    pub fn exec(&self, sql: &str) {
        // The sync client runs its own tokio runtime, which must not be nested in a caller's.
        let result = off_runtime(|| self.connect().batch_execute(sql));
        if let Err(err) = result {
            panic!("sluice-testkit: SQL failed on the test PostgreSQL: {err}\nSQL: {sql}");
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.base
    }

    /// The server's log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The pid of the `postgres` postmaster.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    fn command(&self, program: &Path, setup: &Setup) -> Command {
        let mut command = Command::new(program);
        // The working directory must be readable by the user the programs run as.
        command.current_dir(&self.base).stdin(Stdio::null());
        if let Some((uid, gid)) = setup.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn initdb(&self, setup: &Setup) {
        let mut command = self.command(&setup.initdb, setup);
        command.arg("-D").arg(&self.data_dir).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        let output = command
            .output()
            .unwrap_or_else(|err| panic!("sluice-testkit: cannot run {}: {err}", setup.initdb.display()));
        if !output.status.success() {
            panic!(
                "sluice-testkit: initdb into {} failed ({}):\n{}{}",
                self.data_dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Starts `postgres` and waits until it accepts connections. With `fresh_port`, picks a
    /// new free port (and retries on a clash); otherwise reuses `self.port`.
    fn launch(&mut self, setup: &Setup, fresh_port: bool) {
        let attempts = if fresh_port { FRESH_PORT_ATTEMPTS } else { 1 };
        for attempt in 1..=attempts {
            if fresh_port {
                self.port = free_port(DEFAULT_PG_PORT);
            }
            let log_offset = fs::metadata(&self.log).map_or(0, |meta| meta.len());
            let mut command = self.command(&setup.postgres, setup);
            let mut socket_dir = OsString::from("unix_socket_directories=");
            socket_dir.push(&self.base);
            command
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-c")
                .arg(socket_dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=32MB",
                    "-c",
                    "max_connections=50",
                    "-c",
                    "logging_collector=off",
                ]);
            for setting in &self.settings {
                command.arg("-c").arg(setting);
            }
            if let Ok(log) = OpenOptions::new().create(true).append(true).open(&self.log) {
                if let Ok(log_for_stderr) = log.try_clone() {
                    command.stdout(log).stderr(log_for_stderr);
                }
            }
            let child = spawn_tied_to_process(command)
                .unwrap_or_else(|err| panic!("sluice-testkit: cannot run {}: {err}", setup.postgres.display()));
            self.process = Some(child);
            match self.wait_until_ready(log_offset) {
                Ok(()) => return,
                Err(None) if attempt < attempts => {}
                Err(None) => self.fail_start(log_offset, "the TCP port stayed in use".to_owned()),
                Err(Some(reason)) => self.fail_start(log_offset, reason),
            }
        }
    }

    /// `Err(None)`: the port was taken (retry on another); `Err(Some(reason))`: failed.
    fn wait_until_ready(&mut self, log_offset: u64) -> Result<(), Option<String>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let data_dir = fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        loop {
            let child = self.process.as_mut().expect("server was just spawned");
            if let Some(status) = child.try_wait().ok().flatten() {
                self.process = None;
                let log = log_since(&self.log, log_offset).unwrap_or_default();
                if log.contains("could not bind") || log.contains("Address already in use") {
                    return Err(None);
                }
                return Err(Some(format!("postgres exited ({status})")));
            }
            match probe(self.port) {
                // Whoever answers could be another server that grabbed the port first.
                Ok(dir) if Path::new(&dir) == data_dir || Path::new(&dir) == self.data_dir => return Ok(()),
                Ok(_) => thread::sleep(READY_POLL_INTERVAL),
                Err(err) if Instant::now() >= deadline => {
                    return Err(Some(format!(
                        "not accepting connections after {READY_TIMEOUT:?} (last error: {err})"
                    )));
                }
                Err(_) => thread::sleep(READY_POLL_INTERVAL),
            }
        }
    }

    fn fail_start(&mut self, log_offset: u64, reason: String) -> ! {
        self.stop();
        panic!(
            "sluice-testkit: PostgreSQL test server (port {}, dir {}) failed to start: {reason}\n\
             --- last lines of {} ---\n{}",
            self.port,
            self.base.display(),
            self.log.display(),
            log_tail(&self.log, log_offset, LOG_TAIL_LINES)
        );
    }

    /// Fast shutdown (SIGINT: disconnects clients, no waiting for them), SIGKILL after the
    /// grace period.
    fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            if let Err(err) = stop_child(&mut child, libc::SIGINT, STOP_GRACE) {
                eprintln!("sluice-testkit: stopping postgres (pid {}) failed: {err}", child.id());
            }
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Must not panic: this also runs while a failed test unwinds.
        self.stop();
        let keep = std::env::var("SLUICE_KEEP_TESTDB").is_ok_and(|value| value == "1");
        if let (true, Some(dir)) = (keep, self.dir.take()) {
            eprintln!(
                "sluice-testkit: SLUICE_KEEP_TESTDB=1, keeping PostgreSQL test dir {}",
                dir.keep().display()
            );
        }
        // Otherwise dropping the TempDir deletes everything.
    }
}

/// Runs `f` on a scoped thread, so the sync `postgres` client (which drives its own tokio
/// runtime) works even when the caller is inside a tokio runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Connects over TCP as the tests will and returns the server's data directory.
fn probe(port: u16) -> Result<String, postgres::Error> {
    off_runtime(|| probe_now(port))
}

fn probe_now(port: u16) -> Result<String, postgres::Error> {
    let mut client = postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5))
        .connect(postgres::NoTls)?;
    let row = client.query_one("SHOW data_directory", &[])?;
    Ok(row.get(0))
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let bindir = find_bindir();
        Setup {
            initdb: bindir.join("initdb"),
            postgres: bindir.join("postgres"),
            run_as: running_as_root().then(unprivileged_user),
        }
    })
}

/// A directory holding both `initdb` and `postgres`.
fn find_bindir() -> PathBuf {
    let has_both = |dir: &Path| is_executable_file(&dir.join("initdb")) && is_executable_file(&dir.join("postgres"));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("SLUICE_PG_BINDIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths));
    }
    // Debian/Ubuntu: /usr/lib/postgresql/<major>/bin, newest first.
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    candidates.into_iter().find(|dir| has_both(dir)).unwrap_or_else(|| {
        panic!(
            "sluice-testkit: cannot find PostgreSQL's `initdb` and `postgres` in $SLUICE_PG_BINDIR, $PATH, \
             /usr/lib/postgresql/*/bin or /usr/local/pgsql/bin; install PostgreSQL \
             (Debian/Ubuntu: `apt-get install postgresql`, or run \
             `source scripts/lib/deps.sh && sluice_ensure_deps`)"
        )
    })
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of `postgres` (or `nobody`), for running the server when we are root.
fn unprivileged_user() -> (u32, u32) {
    for name in ["postgres", "nobody"] {
        if let Some(ids) = user_ids(name) {
            return ids;
        }
    }
    panic!(
        "sluice-testkit: PostgreSQL refuses to run as root and there is no `postgres` or `nobody` user \
         to run it as; create one (`useradd --system postgres`) or run the tests as another user"
    );
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both valid for the given sizes, and
    // sets `result` to `&mut pwd` or null.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_uid == 0 {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// The system temp dir, unless its path is so long that the unix socket path would exceed
/// the 107-byte `sun_path` limit, or (when the server runs as another user) that user cannot
/// reach it; `/tmp` otherwise.
fn temp_root(other_user: bool) -> PathBuf {
    let temp_dir = std::env::temp_dir();
    let reachable = !other_user
        || temp_dir
            .ancestors()
            .all(|dir| fs::metadata(dir).is_ok_and(|meta| meta.is_dir() && meta.mode() & 0o001 != 0));
    if temp_dir.as_os_str().len() <= 60 && reachable {
        temp_dir
    } else {
        PathBuf::from("/tmp")
    }
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
