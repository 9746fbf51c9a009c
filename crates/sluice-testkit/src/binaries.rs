//! Locating the MariaDB executables.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Absolute paths of the MariaDB programs the test kit drives.
#[derive(Debug)]
pub(crate) struct Binaries {
    pub(crate) server: PathBuf,
    pub(crate) install_db: PathBuf,
    pub(crate) client: PathBuf,
}

/// Directories searched after `$PATH`: distributions put `mariadbd` in an
/// `sbin` directory, which is often missing from a non-root user's `$PATH`.
const EXTRA_SEARCH_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/local/mysql/bin",
];

/// Finds the MariaDB programs once per process; panics with installation
/// advice when one is missing.
pub(crate) fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| Binaries {
        server: find_program(&["mariadbd"]),
        install_db: find_program(&["mariadb-install-db", "mysql_install_db"]),
        client: find_program(&["mariadb", "mysql"]),
    })
}

fn find_program(names: &[&str]) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let search_dirs = path_dirs.into_iter().chain(EXTRA_SEARCH_DIRS.iter().map(PathBuf::from));
    for dir in search_dirs {
        for name in names {
            let candidate = dir.join(name);
            if is_executable_file(&candidate) {
                return candidate;
            }
        }
    }
    panic!(
        "sluice-testkit: cannot find `{}` in $PATH or {:?}; install MariaDB \
         (Debian/Ubuntu: `apt-get install mariadb-server mariadb-client`, or run \
         `source scripts/lib/deps.sh && sluice_ensure_deps`)",
        names[0], EXTRA_SEARCH_DIRS
    );
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
