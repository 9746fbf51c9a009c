//! One writer per target. Two `sluice run`s writing one target corrupt it silently (each
//! believes its checkpoint), whatever their configs say, so the fence lives in the target
//! itself, as a lock the target's own server (or file system) holds for the writer's life:
//!
//! * SQLite: an exclusive `flock` on `<file>.sluice-lock` beside the database;
//! * MariaDB/MySQL: `GET_LOCK('sluice:<database>')` on a connection of its own;
//! * PostgreSQL: a session advisory lock keyed by database and schema, on a connection of its
//!   own.
//!
//! Each is released by the kernel or the server when the process dies (kill -9 included), so
//! a crashed writer never blocks its successor. A second writer is refused at once, with what
//! the holder left to identify itself (host, pid, since when).

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{TargetError, TargetResult};

/// Held for as long as this process writes the target; dropping it lets another writer in.
pub struct WriterFence {
    held: Held,
}

/// What holds the lock; never read, only kept alive (the lock goes with it).
#[allow(dead_code)]
enum Held {
    File(std::fs::File),
    Mariadb(mysql::Conn),
    /// An `Option` so that `drop` can move it off the tokio runtime.
    Postgres(Option<Box<postgres::Client>>),
}

/// `host pid N since <unix seconds>`: how this process names itself to the next one.
fn identity() -> String {
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    let host = if ok {
        String::from_utf8_lossy(&host[..end]).into_owned()
    } else {
        "?".into()
    };
    format!(
        "host {host}, pid {}, since unix time {}",
        std::process::id(),
        super::common::unix_now()
    )
}

fn refused(target: &str, holder: &str) -> TargetError {
    TargetError::Other(format!(
        "another sluice is writing {target} ({holder}); only one may write a target. Stop it first, or point \
         this one at another target"
    ))
}

fn sqlite_lock_path(path: &Path) -> std::path::PathBuf {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".sluice-lock");
    lock_path.into()
}

/// Whether a `flock` is held on the file with inode `ino`, from the kernel's `/proc/locks`
/// (`N: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF`). Reading it takes no lock,
/// so asking can never refuse a `sluice run` starting at that moment. `None` without `/proc`.
fn flock_held(ino: u64) -> Option<bool> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    Some(locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"FLOCK")
            && fields
                .get(5)
                .and_then(|dev_ino| dev_ino.rsplit(':').next())
                .and_then(|i| i.parse::<u64>().ok())
                == Some(ino)
    }))
}

/// Who holds a target's writer lock now, without taking it (`sluice status`): the holder's
/// identity while a `sluice run` writes the target, `None` when none does.
pub fn sqlite_holder(path: &Path) -> TargetResult<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let lock_path = sqlite_lock_path(path);
    let io = |e: std::io::Error| TargetError::Other(format!("read {}: {e}", lock_path.display()));
    let mut file = match std::fs::File::open(&lock_path) {
        Ok(f) => f,
        // Never run against this file (or from an older version): nobody writes it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let held = match flock_held(file.metadata().map_err(io)?.ino()) {
        Some(held) => held,
        None => {
            // No /proc: a shared lock cannot be had while the writer holds its exclusive one.
            // SAFETY: flock on a descriptor this function owns.
            let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
            if free {
                // SAFETY: as above.
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            }
            !free
        }
    };
    if !held {
        return Ok(None);
    }
    let mut holder = String::new();
    file.read_to_string(&mut holder).map_err(io)?;
    Ok(Some(holder.trim().to_owned()))
}

/// See [`sqlite_holder`]; `conn` is a session to the target server.
pub fn mariadb_holder(conn: &mut mysql::Conn, database: &str) -> TargetResult<Option<String>> {
    use mysql::prelude::Queryable;
    let name = format!("sluice:{database}");
    let holder: Option<(Option<u64>, Option<String>)> = conn
        .exec_first(
            "SELECT IS_USED_LOCK(?), (SELECT p.HOST FROM information_schema.PROCESSLIST p WHERE p.ID = IS_USED_LOCK(?))",
            (&name, &name),
        )
        .map_err(|e| TargetError::Other(format!("target lock for database {database}: {e}")))?;
    Ok(match holder {
        Some((Some(id), host)) => Some(format!(
            "MariaDB lock {name:?} held by connection {id} from {}",
            host.as_deref().unwrap_or("?")
        )),
        _ => None,
    })
}

/// See [`sqlite_holder`]; `connect` opens a session to the target database.
pub fn postgres_holder(
    connect: impl FnOnce() -> TargetResult<postgres::Client> + Send,
    schema: &str,
) -> TargetResult<Option<String>> {
    let key = format!("sluice:{schema}");
    super::postgres::off_runtime(move || {
        let mut client = connect()?;
        let row = client
            .query_opt(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND l.objid = (hashtext(current_database() || ':' || $1)::bigint & 4294967295)::oid LIMIT 1",
                &[&key],
            )
            .map_err(|e| TargetError::Other(format!("target lock for {key}: {e}")))?;
        Ok(row.map(|r| r.get::<_, Option<String>>(0).unwrap_or_else(|| "holder unknown".into())))
    })
}

impl WriterFence {
    pub fn sqlite(path: &Path) -> TargetResult<WriterFence> {
        let lock_path = sqlite_lock_path(path);
        let io = |e: std::io::Error| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => " (does the target file's directory exist?)",
                std::io::ErrorKind::PermissionDenied => " (may sluice's user write in the target file's directory?)",
                _ => "",
            };
            TargetError::Other(format!(
                "cannot use the SQLite target's writer lock file {}: {e}{hint}",
                Path::new(&lock_path).display()
            ))
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(refused(&path.display().to_string(), holder.trim()));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", identity()).map_err(io)?;
        Ok(WriterFence { held: Held::File(file) })
    }

    pub fn mariadb(opts: mysql::Opts, database: &str) -> TargetResult<WriterFence> {
        use mysql::prelude::Queryable;
        let db = |e: mysql::Error| crate::target::mariadb::session_error("lock", database, &e);
        let mut conn = mysql::Conn::new(opts).map_err(db)?;
        let name = format!("sluice:{database}");
        let got: Option<i64> = conn.exec_first("SELECT GET_LOCK(?, 0)", (&name,)).map_err(db)?;
        if got != Some(1) {
            let holder: Option<(u64, String)> = conn
                .exec_first(
                    "SELECT p.ID, p.HOST FROM information_schema.PROCESSLIST p WHERE p.ID = IS_USED_LOCK(?)",
                    (&name,),
                )
                .map_err(db)?;
            let holder = holder.map_or("holder unknown".into(), |(id, host)| {
                format!("MariaDB lock {name:?} held by connection {id} from {host}")
            });
            return Err(refused(&format!("database {database}"), &holder));
        }
        Ok(WriterFence {
            held: Held::Mariadb(conn),
        })
    }

    /// `connect` opens a session to the target database (TLS as configured).
    pub fn postgres(
        connect: impl FnOnce() -> TargetResult<postgres::Client> + Send,
        schema: &str,
    ) -> TargetResult<WriterFence> {
        let identity = identity();
        let schema = schema.to_owned();
        super::postgres::off_runtime(move || {
            let db = |e: postgres::Error| TargetError::Other(format!("target lock for schema {schema}: {e}"));
            let mut client = connect()?;
            // The holder names itself where the next one can read it.
            let name = format!("sluice writer: {identity}");
            client
                .execute("SELECT set_config('application_name', $1, false)", &[&name])
                .map_err(db)?;
            let key = format!("sluice:{schema}");
            let got: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtext(current_database() || ':' || $1))",
                    &[&key],
                )
                .map_err(db)?
                .get(0);
            if !got {
                let holder: Option<String> = client
                    .query_opt(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                         WHERE l.locktype = 'advisory' AND l.granted AND l.database = \
                         (SELECT oid FROM pg_database WHERE datname = current_database()) \
                         AND l.objid = (hashtext(current_database() || ':' || $1)::bigint & 4294967295)::oid \
                         AND a.pid <> pg_backend_pid() LIMIT 1",
                        &[&key],
                    )
                    .map_err(db)?
                    .map(|r| r.get(0));
                return Err(refused(
                    &format!("schema {schema}"),
                    holder.as_deref().unwrap_or("holder unknown"),
                ));
            }
            Ok(WriterFence {
                held: Held::Postgres(Some(Box::new(client))),
            })
        })
    }
}

impl Drop for WriterFence {
    fn drop(&mut self) {
        // A postgres::Client must not be dropped on a tokio runtime thread.
        if let Held::Postgres(client) = &mut self.held {
            if let Some(client) = client.take() {
                super::postgres::off_runtime(move || drop(client));
            }
        }
    }
}
