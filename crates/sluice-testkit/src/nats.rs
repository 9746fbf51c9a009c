//! Throwaway `nats-server` processes with JetStream (the fan-out log's tests): own temp dir
//! (store and log), a free port on 127.0.0.1, stopped and deleted on drop.
//!
//! [`NatsServer::kill`] / [`NatsServer::start_again`] simulate an outage; the port and the
//! stored streams survive it. Requires `nats-server` (Debian: `nats-server`, in /usr/sbin).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{free_port, log_tail, spawn_tied_to_process, stop_child};

/// NATS's own port; never ours.
const DEFAULT_NATS_PORT: u16 = 4222;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const FRESH_PORT_ATTEMPTS: u32 = 10;
const SAME_PORT_ATTEMPTS: u32 = 40;
const LOG_TAIL_LINES: usize = 30;

pub struct NatsServer {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port; panics with the log when it cannot.
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("sluice-nats-")
            .tempdir()
            .expect("sluice-testkit: cannot create a temp dir for nats-server");
        let mut server = NatsServer {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..FRESH_PORT_ATTEMPTS {
            server.port = free_port(DEFAULT_NATS_PORT);
            if server.spawn() {
                return server;
            }
        }
        panic!("sluice-testkit: nats-server did not start:\n{}", server.log_tail());
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILLs the server (no clean shutdown); the store stays for [`Self::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = stop_child(&mut child, libc::SIGKILL, STOP_GRACE);
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "sluice-testkit: nats-server is running");
        for _ in 0..SAME_PORT_ATTEMPTS {
            if self.spawn() {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
        panic!("sluice-testkit: nats-server did not start again:\n{}", self.log_tail());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log_path(), 0, LOG_TAIL_LINES)
    }

    /// Starts the process and waits until it greets clients with JetStream on; false when it
    /// exited first (typically: the port was taken).
    fn spawn(&mut self) -> bool {
        let mut command = Command::new(program());
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn_tied_to_process(command)
            .unwrap_or_else(|e| panic!("sluice-testkit: cannot run {}: {e}", program().display()));
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.greets_with_jetstream() {
                self.child = Some(child);
                return true;
            }
            thread::sleep(Duration::from_millis(25));
        }
        let _ = stop_child(&mut child, libc::SIGKILL, STOP_GRACE);
        false
    }

    fn greets_with_jetstream(&self) -> bool {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut info = String::new();
        BufReader::new(stream).read_line(&mut info).is_ok() && info.contains("\"jetstream\":true")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = stop_child(&mut child, libc::SIGTERM, STOP_GRACE);
        }
    }
}

/// `nats-server` from `$PATH`, or /usr/sbin where Debian puts it.
fn program() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("sluice-testkit: cannot find nats-server in $PATH or /usr/sbin; install it (Debian: apt-get install nats-server)")
        })
}
