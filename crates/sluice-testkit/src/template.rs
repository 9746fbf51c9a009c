//! Creating fresh data directories quickly.
//!
//! `mariadb-install-db` costs roughly a second of CPU per run, which adds up
//! when every test starts its own server. It is therefore run once per
//! machine (per user, per MariaDB build, per install settings) into a cache
//! directory under the system temp dir, and each new server gets a copy of
//! that template.
//!
//! Robustness with parallel test processes:
//! - a template is built in a private staging directory and published with a
//!   single `rename`, so readers never see a half-built template;
//! - builders serialize on an `flock`ed lock file (released by the kernel if
//!   the builder dies), so a cold cache costs one install, not one per process;
//! - a published template is never modified; a manifest of file sizes detects
//!   one damaged by temp-dir cleaners, which is then replaced.
//!
//! If the cache cannot be used at all, each server falls back to running
//! `mariadb-install-db` itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::binaries::binaries;

/// Server settings baked into the data files at install time. The InnoDB
/// redo log size must match what the server is started with, otherwise every
/// start would begin by resizing the log.
pub(crate) const INSTALL_SERVER_ARGS: &[&str] = &["--innodb-log-file-size=48M", "--innodb-buffer-pool-size=64M"];

/// Bump when the template layout or install procedure changes.
const TEMPLATE_FORMAT: &str = "1";
const MANIFEST_NAME: &str = "manifest";

/// Fills the (not yet existing) directory `data_dir` with a freshly
/// initialized MariaDB data directory.
pub(crate) fn create_data_dir(data_dir: &Path) {
    match cached_template() {
        Ok(template) => {
            if let Err(err) = copy_dir_recursive(template, data_dir) {
                panic!(
                    "sluice-testkit: copying the template data dir {} to {} failed: {err}",
                    template.display(),
                    data_dir.display()
                );
            }
        }
        Err(reason) => {
            eprintln!(
                "sluice-testkit: not using a cached template data dir ({reason}); \
                 running mariadb-install-db for this server"
            );
            if let Err(err) = install_db(data_dir) {
                panic!("sluice-testkit: {err}");
            }
        }
    }
}

/// The template data directory, validated once per process.
fn cached_template() -> Result<&'static Path, &'static str> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| prepare_template().map_err(|err| err.to_string()))
        .as_ref()
        .map(|path| path.as_path())
        .map_err(|reason| reason.as_str())
}

fn prepare_template() -> io::Result<PathBuf> {
    let cache_root = cache_root()?;
    let name = format!("template-{:016x}", fnv1a(cache_key()?.as_bytes()));
    let template = cache_root.join(&name);
    if manifest_matches(&template) {
        return Ok(template.join("data"));
    }

    let _lock = FileLock::exclusive(&cache_root.join(format!("{name}.lock")))?;
    // Another process may have built it while we waited for the lock.
    if manifest_matches(&template) {
        return Ok(template.join("data"));
    }
    if template.exists() {
        let trash = cache_root.join(format!(".trash-{}", unique_suffix()));
        fs::rename(&template, &trash)?;
        fs::remove_dir_all(&trash)?;
    }
    let staging = cache_root.join(format!(".staging-{}", unique_suffix()));
    let built = build_template(&staging).and_then(|()| fs::rename(&staging, &template));
    if built.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    built?;
    Ok(template.join("data"))
}

fn build_template(staging: &Path) -> io::Result<()> {
    fs::create_dir(staging)?;
    let data_dir = staging.join("data");
    install_db(&data_dir)?;
    let manifest = manifest_of(&data_dir)?;
    let mut file = File::create(staging.join(MANIFEST_NAME))?;
    file.write_all(manifest.as_bytes())?;
    file.sync_all()
}

/// A per-user cache directory: sharing one between users would fail on
/// permissions, and trusting a directory someone else created is unsafe.
fn cache_root() -> io::Result<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let root = std::env::temp_dir().join(format!("sluice-testkit-cache-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&root) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let meta = fs::symlink_metadata(&root)?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(io::Error::other(format!(
            "{} is not a directory owned by uid {uid}",
            root.display()
        )));
    }
    Ok(root)
}

/// Identifies the MariaDB build and install settings a template was made by.
fn cache_key() -> io::Result<String> {
    let bins = binaries();
    let mut key = format!("format={TEMPLATE_FORMAT};root={};", running_as_root());
    for program in [&bins.server, &bins.install_db] {
        let meta = fs::metadata(program)?;
        let modified = meta.modified()?.duration_since(UNIX_EPOCH).unwrap_or_default();
        key.push_str(&format!(
            "{}:{}:{};",
            program.display(),
            meta.len(),
            modified.as_nanos()
        ));
    }
    key.push_str(&INSTALL_SERVER_ARGS.join(" "));
    Ok(key)
}

/// Runs `mariadb-install-db` into `data_dir`.
pub(crate) fn install_db(data_dir: &Path) -> io::Result<()> {
    let mut command = Command::new(&binaries().install_db);
    // --no-defaults must come first; it keeps the machine's my.cnf out.
    command.arg("--no-defaults");
    if running_as_root() {
        command.arg("--user=root");
    }
    command
        .arg("--auth-root-authentication-method=normal")
        .arg(crate::flag("--datadir=", data_dir))
        .arg("--skip-test-db")
        .args(INSTALL_SERVER_ARGS);
    let output = command
        .output()
        .map_err(|err| io::Error::other(format!("cannot run {}: {err}", binaries().install_db.display())))?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "mariadb-install-db into {} failed ({}):\n{}{}",
        data_dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn manifest_matches(template: &Path) -> bool {
    let Ok(recorded) = fs::read_to_string(template.join(MANIFEST_NAME)) else {
        return false;
    };
    manifest_of(&template.join("data")).is_ok_and(|actual| actual == recorded)
}

/// One `relative/path<TAB>size` line per file, sorted.
fn manifest_of(dir: &Path) -> io::Result<String> {
    let mut entries = Vec::new();
    collect_files(dir, Path::new(""), &mut entries)?;
    entries.sort();
    Ok(entries
        .into_iter()
        .map(|(path, size)| format!("{}\t{size}\n", path.display()))
        .collect())
}

fn collect_files(root: &Path, relative: &Path, out: &mut Vec<(PathBuf, u64)>) -> io::Result<()> {
    for entry in fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let relative_child = relative.join(entry.file_name());
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect_files(root, &relative_child, out)?;
        } else {
            out.push((relative_child, meta.len()));
        }
    }
    Ok(())
}

/// `std::fs::copy` uses `copy_file_range`, which is cheap (even a reflink on
/// CoW file systems) for the mostly-empty InnoDB files.
fn copy_dir_recursive(from: &Path, to: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir_recursive(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// FNV-1a: a hash that, unlike `DefaultHasher`, is stable across Rust
/// versions, so the cache survives toolchain upgrades.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An exclusive `flock`, released on drop or when the process dies.
struct FileLock {
    _file: File,
}

impl FileLock {
    fn exclusive(path: &Path) -> io::Result<FileLock> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
