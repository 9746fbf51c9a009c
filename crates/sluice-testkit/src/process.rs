//! Spawning and stopping server processes without leaking them.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that the child is SIGKILLed if the test process dies
/// without running destructors (abort, SIGKILL from a test runner timeout,
/// Ctrl-C).
///
/// Linux delivers `PR_SET_PDEATHSIG` when the *thread* that forked the child
/// exits, not the process. Test threads (and tokio worker threads) come and
/// go, so every server is forked from one dedicated thread that lives as long
/// as the process does.
pub(crate) fn spawn_tied_to_process(mut command: Command) -> io::Result<Child> {
    arrange_death_with_parent(&mut command);
    let (reply_sender, reply_receiver) = mpsc::channel();
    spawner()
        .send((command, reply_sender))
        .map_err(|_| io::Error::other("sluice-testkit spawner thread is gone"))?;
    reply_receiver
        .recv()
        .map_err(|_| io::Error::other("sluice-testkit spawner thread is gone"))?
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (request_sender, request_receiver) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("sluice-testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in request_receiver {
                    // The requester may have given up (panicked); nothing to do then.
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("sluice-testkit: cannot start the server spawner thread");
        request_sender
    })
}

#[cfg(target_os = "linux")]
fn arrange_death_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;

    // SAFETY: getpid has no preconditions.
    let parent_pid = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls, without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl, in which case
            // the death signal will never come.
            if libc::getppid() != parent_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn arrange_death_with_parent(_command: &mut Command) {}

/// Sends `signal`, waits up to `grace` for the process to exit, then
/// SIGKILLs it. Always reaps the child, so no zombie is left behind.
pub(crate) fn stop_child(child: &mut Child, signal: libc::c_int, grace: Duration) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // The child has not been reaped yet, so its pid cannot have been reused.
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: plain kill(2) on our own unreaped child.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()
}

/// A port on 127.0.0.1 that was free a moment ago (never `avoid`, the server kind's
/// well-known port); the caller retries on a clash.
pub(crate) fn free_port(avoid: u16) -> u16 {
    loop {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|err| panic!("sluice-testkit: cannot bind 127.0.0.1:0: {err}"));
        let port = listener.local_addr().expect("a bound listener has an address").port();
        if port != avoid {
            return port;
        }
    }
}

/// What was appended to the log at `path` after byte `offset`.
pub(crate) fn log_since(path: &std::path::Path, offset: u64) -> io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `lines` lines of the log at `path` written since byte `offset`.
pub(crate) fn log_tail(path: &std::path::Path, offset: u64, lines: usize) -> String {
    match log_since(path, offset) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read: {err})"),
    }
}
