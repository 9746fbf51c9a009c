//! The [`MariaDb`] server handle and its [`MariaDbOptions`] builder.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tempfile::TempDir;

use crate::binaries::binaries;
use crate::flag;
use crate::process::{free_port, log_since, log_tail, spawn_tied_to_process, stop_child};
use crate::template::{self, running_as_root, INSTALL_SERVER_ARGS};

/// How long a starting server may take to accept a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to shut down cleanly before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(20);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Another process can grab a free port between our probe and the server's
/// bind; each clash costs one more attempt on a new port.
const FRESH_PORT_ATTEMPTS: u32 = 10;
/// On restart the port must stay the same, so a clash means waiting for
/// whoever took it (e.g. a client's ephemeral port) to let go.
const SAME_PORT_ATTEMPTS: u32 = 40;
const SAME_PORT_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Lines of `error.log` quoted when a server fails to start.
const ERROR_LOG_TAIL_LINES: usize = 40;

/// The port production MySQL/MariaDB servers use; never ours.
const DEFAULT_MYSQL_PORT: u16 = 3306;

/// MariaDB error codes meaning "server is up but `root` may not log in over
/// TCP": ER_ACCESS_DENIED_ERROR, ER_HOST_NOT_PRIVILEGED, ER_ACCESS_DENIED_NO_PASSWORD_ERROR.
const ROOT_LOGIN_REFUSED_CODES: [u16; 3] = [1045, 1130, 1698];

/// How to start a [`MariaDb`]; the defaults match what sluice expects from a
/// production source (binlog on, ROW format, FULL row image and metadata,
/// GTID strict mode).
///
/// ```no_run
/// # use sluice_testkit::MariaDbOptions;
/// let db = MariaDbOptions::new()
///     .server_arg("--binlog-row-image=MINIMAL")
///     .server_id(7)
///     .start();
/// ```
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    server_args: Vec<String>,
    server_id: Option<u32>,
    binlog: bool,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            server_args: Vec::new(),
            server_id: None,
            binlog: true,
        }
    }
}

impl MariaDbOptions {
    /// The defaults; same as [`MariaDbOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one `mariadbd` command-line argument, e.g.
    /// `"--binlog-row-image=MINIMAL"`.
    ///
    /// Extra arguments come after the test kit's own, and for `mariadbd` the
    /// last occurrence of an option wins, so any default can be overridden
    /// (e.g. `"--innodb-flush-log-at-trx-commit=1"`). Use
    /// [`server_id`](Self::server_id) and [`binlog`](Self::binlog) rather than
    /// raw arguments for those, so that [`MariaDb::server_id`] stays accurate.
    pub fn server_arg(mut self, arg: impl Into<String>) -> Self {
        self.server_args.push(arg.into());
        self
    }

    /// Appends several `mariadbd` arguments; see [`server_arg`](Self::server_arg).
    pub fn server_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.server_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets `--server-id`. By default it is the server's TCP port, which is
    /// unique among the servers running on this machine.
    ///
    /// # Panics
    ///
    /// If `server_id` is 0, which MariaDB reserves for "no replication".
    pub fn server_id(mut self, server_id: u32) -> Self {
        assert_ne!(server_id, 0, "server_id 0 disables replication");
        self.server_id = Some(server_id);
        self
    }

    /// Whether the binary log is written (`--log-bin`); on by default. The
    /// binlog format settings are passed either way, so only `@@log_bin`
    /// changes.
    pub fn binlog(mut self, enabled: bool) -> Self {
        self.binlog = enabled;
        self
    }

    /// Starts a server with these options; see [`MariaDb::start`].
    pub fn start(self) -> MariaDb {
        MariaDb::start_with(self)
    }
}

/// A running throwaway MariaDB server; see the [crate docs](crate).
///
/// Dropping it stops the server (SIGTERM, then SIGKILL after 20 s) and
/// deletes its directory unless `SLUICE_KEEP_TESTDB=1`.
#[derive(Debug)]
pub struct MariaDb {
    /// `None` once the directory has been handed over to the user to keep.
    dir: Option<TempDir>,
    paths: Paths,
    port: u16,
    server_id: u32,
    options: MariaDbOptions,
    process: Option<Child>,
}

/// Where a server keeps its files, all inside its private temp directory.
#[derive(Debug)]
struct Paths {
    base: PathBuf,
    data_dir: PathBuf,
    socket: PathBuf,
    error_log: PathBuf,
    pid_file: PathBuf,
    tmp_dir: PathBuf,
}

impl Paths {
    fn new(base: &Path) -> Paths {
        Paths {
            base: base.to_path_buf(),
            data_dir: base.join("data"),
            socket: base.join("mysql.sock"),
            error_log: base.join("error.log"),
            pid_file: base.join("mariadbd.pid"),
            tmp_dir: base.join("tmp"),
        }
    }
}

enum StartFailure {
    PortInUse,
    Failed(String),
}

impl MariaDb {
    /// Starts a server with the default [`MariaDbOptions`].
    ///
    /// # Panics
    ///
    /// If MariaDB is not installed or the server does not come up within
    /// 60 s; the message includes the end of the server's error log.
    pub fn start() -> MariaDb {
        MariaDbOptions::default().start()
    }

    fn start_with(options: MariaDbOptions) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("sluice-mariadb-")
            .tempdir_in(temp_root())
            .unwrap_or_else(|err| panic!("sluice-testkit: cannot create a temp dir: {err}"));
        let paths = Paths::new(dir.path());
        // From here on, `Drop` cleans up if anything panics.
        let mut db = MariaDb {
            dir: Some(dir),
            paths,
            port: 0,
            server_id: 0,
            options,
            process: None,
        };
        fs::create_dir(&db.paths.tmp_dir).unwrap_or_else(|err| panic!("sluice-testkit: cannot create tmp dir: {err}"));
        template::create_data_dir(&db.paths.data_dir);
        db.launch(true);
        db
    }

    /// The TCP port, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `--server-id` the server runs with.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// The server's unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.paths.socket
    }

    /// The server's data directory (binlogs are in here, named `mysql-bin.*`).
    pub fn data_dir(&self) -> &Path {
        &self.paths.data_dir
    }

    /// The server's error log.
    pub fn error_log(&self) -> &Path {
        &self.paths.error_log
    }

    /// The pid of the `mariadbd` process, or `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Whether the server process is running (it may be stopped by
    /// [`stop`](Self::stop) / [`kill`](Self::kill)).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// A `mysql_async` URL for `root` (no password) over TCP:
    /// `mysql://root@127.0.0.1:PORT/`.
    ///
    /// Note that `mysql_async` by default (`prefer_socket=true`) switches a
    /// connection to a local server over to its unix socket, as user
    /// `root@localhost`; append `?prefer_socket=false` to stay on TCP.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }

    /// Connection options equivalent to [`url`](Self::url).
    pub fn opts(&self) -> mysql_async::Opts {
        mysql_async::Opts::from_url(&self.url()).expect("the test kit builds valid URLs")
    }

    /// Opens a connection as `root`.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub async fn conn(&self) -> mysql_async::Conn {
        match mysql_async::Conn::new(self.opts()).await {
            Ok(conn) => conn,
            Err(err) => panic!(
                "sluice-testkit: cannot connect to the test MariaDB at {}: {err}",
                self.url()
            ),
        }
    }

    /// Runs one or more `;`-separated SQL statements as `root` with the
    /// `mariadb` command-line client over the unix socket, blocking until
    /// done. Results are discarded; statements are binlogged normally.
    ///
    /// # Panics
    ///
    /// If a statement fails (with the server's error message) or the
    /// server is not running.
    pub fn exec(&self, sql: &str) {
        self.run_client(sql);
    }

    /// Runs a query with the `mariadb` command-line client
    /// (`--batch --raw --skip-column-names`) and returns its rows as
    /// strings, blocking until done.
    ///
    /// SQL `NULL` comes back as the string `"NULL"` (indistinguishable from
    /// the text `'NULL'`), and values containing tabs or newlines cannot be
    /// split reliably; use [`conn`](Self::conn) when that matters. With
    /// several statements, the rows of all of them are concatenated.
    ///
    /// # Panics
    ///
    /// Like [`exec`](Self::exec).
    pub fn query_rows(&self, sql: &str) -> Vec<Vec<String>> {
        let output = self.run_client(sql);
        if output.is_empty() {
            return Vec::new();
        }
        let output = output.strip_suffix('\n').unwrap_or(&output);
        output
            .split('\n')
            .map(|line| line.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// The first column of the first row of a query's result, as
    /// [`query_rows`](Self::query_rows) formats it, e.g.
    /// `db.query_value("SELECT @@gtid_binlog_pos")`.
    ///
    /// # Panics
    ///
    /// Like [`exec`](Self::exec), and if the query returns no rows.
    pub fn query_value(&self, sql: &str) -> String {
        self.query_rows(sql)
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .unwrap_or_else(|| panic!("sluice-testkit: query returned no rows: {sql}"))
    }

    /// Creates `name@'%'` with `password` and the given grants.
    ///
    /// Each grant is the part of a `GRANT` statement before `TO`; without an
    /// `ON` clause it applies `ON *.*`. For example
    /// `&["REPLICATION SLAVE, REPLICATION CLIENT", "SELECT ON shop.*"]`.
    ///
    /// This is setup, not data: it is not written to the binlog, so it does
    /// not show up in replication streams or `@@gtid_binlog_pos`.
    ///
    /// # Panics
    ///
    /// Like [`exec`](Self::exec).
    pub fn create_user(&self, name: &str, password: &str, grants: &[&str]) {
        let account = format!("{}@'%'", sql_string(name));
        let mut sql = format!(
            "SET SESSION sql_log_bin = 0;\nCREATE USER {account} IDENTIFIED BY {};\n",
            sql_string(password)
        );
        for grant in grants {
            let has_on_clause = grant.split_whitespace().any(|word| word.eq_ignore_ascii_case("ON"));
            let target = if has_on_clause { "" } else { " ON *.*" };
            sql.push_str(&format!("GRANT {grant}{target} TO {account};\n"));
        }
        self.exec(&sql);
    }

    /// Stops the server cleanly and starts it again on the same data
    /// directory and port, e.g. to simulate a short source outage.
    ///
    /// # Panics
    ///
    /// If the server does not come back.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Shuts the server down cleanly (SIGTERM) and waits for it to exit. It
    /// stays down until [`start_again`](Self::start_again). Does nothing if
    /// it is already stopped.
    pub fn stop(&mut self) {
        self.stop_process(libc::SIGTERM);
    }

    /// Kills the server with SIGKILL, simulating a crash; InnoDB and binlog
    /// crash recovery run on [`start_again`](Self::start_again).
    pub fn kill(&mut self) {
        self.stop_process(libc::SIGKILL);
    }

    /// Starts a stopped server again on the same data directory and port.
    ///
    /// # Panics
    ///
    /// If the server is running, or does not come up.
    pub fn start_again(&mut self) {
        assert!(
            self.process.is_none(),
            "sluice-testkit: start_again() on a running server; call stop() first"
        );
        self.launch(false);
    }

    /// Starts `mariadbd` and waits until `root` can log in over TCP. With
    /// `fresh_port`, picks a new free port (and retries on a clash);
    /// otherwise reuses `self.port`.
    fn launch(&mut self, fresh_port: bool) {
        let attempts = if fresh_port {
            FRESH_PORT_ATTEMPTS
        } else {
            SAME_PORT_ATTEMPTS
        };
        for attempt in 1..=attempts {
            if fresh_port {
                self.port = free_port(DEFAULT_MYSQL_PORT);
                self.server_id = self.options.server_id.unwrap_or(u32::from(self.port));
            }
            self.remove_stale_runtime_files();
            let log_offset = fs::metadata(&self.paths.error_log).map_or(0, |meta| meta.len());
            let child = spawn_tied_to_process(self.server_command())
                .unwrap_or_else(|err| panic!("sluice-testkit: cannot run {}: {err}", binaries().server.display()));
            self.process = Some(child);
            match self.wait_until_ready(log_offset) {
                Ok(()) => return,
                Err(StartFailure::PortInUse) if attempt < attempts => {
                    if !fresh_port {
                        thread::sleep(SAME_PORT_RETRY_DELAY);
                    }
                }
                Err(StartFailure::PortInUse) => self.fail_start(log_offset, "the TCP port stayed in use".to_owned()),
                Err(StartFailure::Failed(reason)) => self.fail_start(log_offset, reason),
            }
        }
    }

    fn fail_start(&mut self, log_offset: u64, reason: String) -> ! {
        self.stop_process(libc::SIGKILL);
        panic!(
            "sluice-testkit: MariaDB test server (port {}, dir {}) failed to start: {reason}\n\
             --- last lines of {} ---\n{}",
            self.port,
            self.paths.base.display(),
            self.paths.error_log.display(),
            log_tail(&self.paths.error_log, log_offset, ERROR_LOG_TAIL_LINES)
        );
    }

    fn server_command(&self) -> Command {
        let paths = &self.paths;
        let mut args: Vec<OsString> = vec!["--no-defaults".into()];
        if running_as_root() {
            // mariadbd refuses to run as root unless told to.
            args.push("--user=root".into());
        }
        args.extend([
            flag("--datadir=", &paths.data_dir),
            flag("--socket=", &paths.socket),
            flag("--pid-file=", &paths.pid_file),
            flag("--log-error=", &paths.error_log),
            flag("--tmpdir=", &paths.tmp_dir),
            format!("--port={}", self.port).into(),
            "--bind-address=127.0.0.1".into(),
            format!("--server-id={}", self.server_id).into(),
            "--skip-name-resolve".into(),
            "--gtid-strict-mode=1".into(),
            "--binlog-format=ROW".into(),
            "--binlog-row-image=FULL".into(),
            "--binlog-row-metadata=FULL".into(),
            "--character-set-server=utf8mb4".into(),
            // Durability is pointless for a throwaway server.
            "--innodb-flush-log-at-trx-commit=2".into(),
            // io_uring/libaio need kernel resources (and seccomp permission)
            // per server; InnoDB's simulated AIO works everywhere.
            "--innodb-use-native-aio=0".into(),
        ]);
        args.extend(INSTALL_SERVER_ARGS.iter().map(OsString::from));
        if self.options.binlog {
            args.push(flag("--log-bin=", &paths.data_dir.join("mysql-bin")));
        }
        args.extend(self.options.server_args.iter().map(OsString::from));

        let mut command = Command::new(&binaries().server);
        command.args(args).stdin(Stdio::null());
        // Errors before mariadbd opens --log-error (e.g. a bad option) go to
        // stderr; send them to the same file.
        if let Ok(log) = append_to(&paths.error_log) {
            if let Ok(log_for_stderr) = log.try_clone() {
                command.stdout(log).stderr(log_for_stderr);
            }
        }
        command
    }

    fn wait_until_ready(&mut self, log_offset: u64) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut root_login_repaired = false;
        loop {
            let child = self.process.as_mut().expect("server was just spawned");
            if let Some(status) = child.try_wait().ok().flatten() {
                self.process = None;
                let port_clash = log_since(&self.paths.error_log, log_offset)
                    .is_ok_and(|log| log.contains("Address already in use"));
                return Err(if port_clash {
                    StartFailure::PortInUse
                } else {
                    StartFailure::Failed(format!("mariadbd exited ({status})"))
                });
            }
            match probe_root_over_tcp(self.port) {
                // Whoever answers on the port could be another server that
                // grabbed it first; ours then exits with a bind error soon.
                Ok(socket) if Path::new(&socket) == self.paths.socket => return Ok(()),
                Ok(_) => thread::sleep(READY_POLL_INTERVAL),
                Err(mysql_async::Error::Server(err))
                    if ROOT_LOGIN_REFUSED_CODES.contains(&err.code)
                        && !root_login_repaired
                        && self.paths.socket.exists() =>
                {
                    self.allow_root_over_tcp();
                    root_login_repaired = true;
                }
                Err(err) if Instant::now() >= deadline => {
                    return Err(StartFailure::Failed(format!(
                        "not accepting connections after {READY_TIMEOUT:?} (last error: {err})"
                    )));
                }
                Err(_) => thread::sleep(READY_POLL_INTERVAL),
            }
        }
    }

    /// The data directory normally comes with a password-less
    /// `root@127.0.0.1`; if that account is missing or was changed (e.g. by
    /// a test before a restart), recreate it through the unix socket.
    fn allow_root_over_tcp(&self) {
        self.exec(
            "SET SESSION sql_log_bin = 0;\n\
             CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;",
        );
    }

    /// Files a killed server leaves behind that could confuse the next start.
    fn remove_stale_runtime_files(&self) {
        let mut socket_lock = self.paths.socket.clone().into_os_string();
        socket_lock.push(".lock");
        for path in [
            self.paths.socket.clone(),
            PathBuf::from(socket_lock),
            self.paths.pid_file.clone(),
        ] {
            let _ = fs::remove_file(path);
        }
    }

    fn run_client(&self, sql: &str) -> String {
        let mut command = Command::new(&binaries().client);
        command
            // --no-defaults must come first; it keeps the machine's my.cnf out.
            .arg("--no-defaults")
            .arg("--protocol=SOCKET")
            .arg(flag("--socket=", &self.paths.socket))
            .arg("--user=root")
            .arg("--default-character-set=utf8mb4")
            .arg("--batch")
            .arg("--raw")
            .arg("--skip-column-names")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("sluice-testkit: cannot run {}: {err}", binaries().client.display()));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // Feed stdin from another thread: a large result could otherwise
        // fill the stdout pipe while we are still writing the SQL.
        let sql_owned = sql.to_owned();
        let writer = thread::spawn(move || stdin.write_all(sql_owned.as_bytes()));
        let output = child
            .wait_with_output()
            .unwrap_or_else(|err| panic!("sluice-testkit: mariadb client failed: {err}"));
        let write_result = writer.join().expect("stdin writer does not panic");
        if !output.status.success() {
            panic!(
                "sluice-testkit: SQL failed on the test MariaDB (port {}): {}\nSQL: {sql}",
                self.port,
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        write_result.unwrap_or_else(|err| panic!("sluice-testkit: writing SQL to mariadb failed: {err}"));
        String::from_utf8(output.stdout).unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
    }

    fn stop_process(&mut self, signal: libc::c_int) {
        if let Some(mut child) = self.process.take() {
            if let Err(err) = stop_child(&mut child, signal, STOP_GRACE) {
                eprintln!("sluice-testkit: stopping mariadbd (pid {}) failed: {err}", child.id());
            }
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // Must not panic: this also runs while a failed test unwinds.
        self.stop();
        let keep = std::env::var("SLUICE_KEEP_TESTDB").is_ok_and(|value| value == "1");
        if let (true, Some(dir)) = (keep, self.dir.take()) {
            eprintln!(
                "sluice-testkit: SLUICE_KEEP_TESTDB=1, keeping MariaDB test dir {}",
                dir.keep().display()
            );
        }
        // Otherwise dropping the TempDir deletes everything.
    }
}

/// Runs a future to completion on a private runtime in a scoped thread, so
/// it works whether or not the caller is inside a tokio runtime.
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("sluice-testkit: cannot build a tokio runtime")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Logs in as password-less `root` over TCP, exactly as tests will, and
/// returns the server's `@@socket` to identify it.
fn probe_root_over_tcp(port: u16) -> Result<String, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false);
    block_on(async move {
        let connect = mysql_async::Conn::new(opts);
        let mut conn = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|elapsed| mysql_async::Error::Other(Box::new(elapsed)))??;
        let socket: Option<String> = conn.query_first("SELECT @@socket").await?;
        conn.disconnect().await?;
        Ok(socket.unwrap_or_default())
    })
}

/// The system temp dir, unless its path is so long that the server's unix
/// socket path would exceed the 107-byte `sun_path` limit.
fn temp_root() -> PathBuf {
    let temp_dir = std::env::temp_dir();
    if temp_dir.as_os_str().len() <= 60 {
        temp_dir
    } else {
        PathBuf::from("/tmp")
    }
}

fn append_to(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Quotes `value` as a SQL string literal.
fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
