# shellcheck shell=bash
# Sourced by the scripts in scripts/: makes sure the system packages that
# sluice's build, tests and demo need are installed.
#
#   source scripts/lib/deps.sh
#   sluice_ensure_deps
#
# Installs only what is missing, with apt-get, so it is a fast no-op (no
# `apt-get update`) on a machine that is already set up. The Rust toolchain
# is a precondition and is not installed here.

# Prints "<package> " for each Debian package whose programs are missing.
_sluice_missing_packages() {
  { _sluice_have_program mariadbd && _sluice_have_program mariadb-install-db; } ||
    printf 'mariadb-server '
  { _sluice_have_program mariadb && _sluice_have_program mariadb-binlog; } ||
    printf 'mariadb-client '
  _sluice_have_program sqlite3 || printf 'sqlite3 '
  # The TLS tests make their CA and certificates with the openssl command.
  _sluice_have_program openssl || printf 'openssl '
  # PostgreSQL's server programs (initdb, postgres) for the PostgreSQL target's tests; Debian
  # keeps them off PATH, under /usr/lib/postgresql/<version>/bin.
  _sluice_have_postgres_server || printf 'postgresql '
  { _sluice_have_program cc && _sluice_have_program make; } ||
    printf 'build-essential '
  _sluice_have_program pkg-config || printf 'pkg-config '
  # The status page's browser test drives Debian's Chromium through chromedriver.
  _sluice_have_program chromium || printf 'chromium '
  _sluice_have_program chromedriver || printf 'chromium-driver '
  # The online schema change tests run the real pt-online-schema-change.
  _sluice_have_program pt-online-schema-change || printf 'percona-toolkit '
  # The fan-out tests start their own nats-server (JetStream) as the log.
  _sluice_have_program nats-server || printf 'nats-server '
}

# mariadbd lives in sbin, which a non-root user's PATH often lacks.
_sluice_have_program() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/local/sbin/$1" ]]
}

_sluice_have_postgres_server() {
  local dir
  for dir in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
    [[ -x "$dir/initdb" && -x "$dir/postgres" ]] && return 0
  done
  command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}

_sluice_ensure_cargo() {
  if command -v cargo >/dev/null 2>&1; then
    return 0
  fi
  # rustup installs here, but only login shells get it on PATH.
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    return 0
  fi
  echo "error: cargo not found. sluice needs a Rust toolchain (1.95 or newer; rust-toolchain.toml pins it);" >&2
  echo "       install it from https://rustup.rs and re-run." >&2
  return 1
}

sluice_ensure_deps() {
  _sluice_ensure_cargo || return 1

  local -a missing
  # Word splitting is intended: package names contain no spaces.
  # shellcheck disable=SC2207
  missing=($(_sluice_missing_packages))
  if ((${#missing[@]} == 0)); then
    return 0
  fi

  echo "Installing missing system packages: ${missing[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; please install these packages yourself: ${missing[*]}" >&2
    return 1
  fi
  local -a as_root=()
  if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "error: need root (or sudo) to install: ${missing[*]}" >&2
      return 1
    fi
    as_root=(sudo)
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${missing[@]}" || {
    echo "error: installing ${missing[*]} failed" >&2
    return 1
  }
}

# Benchmark-only system packages (scripts/bench-*): sysbench, the MySQL load generator.
# Like sluice_ensure_deps, installs only what is missing (apt-get update only then).
sluice_ensure_bench_deps() {
  _sluice_have_program sysbench && return 0
  echo "Installing missing system packages: sysbench" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; please install sysbench yourself" >&2
    return 1
  fi
  local -a as_root=()
  if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "error: need root (or sudo) to install: sysbench" >&2
      return 1
    fi
    as_root=(sudo)
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends sysbench || {
    echo "error: installing sysbench failed" >&2
    return 1
  }
}

# Installs Debian package $2 when program $1 is missing (apt-get update only then), e.g.
# `sluice_ensure_packages pt-table-checksum percona-toolkit` for scripts/bench-verify.
sluice_ensure_packages() {
  local program=$1 package=$2
  _sluice_have_program "$program" && return 0
  echo "Installing missing system package: $package" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; please install $package yourself" >&2
    return 1
  fi
  local -a as_root=()
  if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "error: need root (or sudo) to install: $package" >&2
      return 1
    fi
    as_root=(sudo)
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$package" || {
    echo "error: installing $package failed" >&2
    return 1
  }
}
