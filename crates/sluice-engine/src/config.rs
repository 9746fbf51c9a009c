//! Configuration: one TOML file, validated without touching the network.
//!
//! Secrets never appear in the file or on the command line: the source password comes from
//! an environment variable (`password_env`) or a file (`password_file`), and [`Secret`]
//! never prints its contents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use sluice_binlog::tls::{TlsMode, TlsSettings};

pub const DEFAULT_SOURCE_PORT: u16 = 3306;
pub const DEFAULT_SERVER_ID: u32 = 4_207_001;
pub const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
pub const DEFAULT_BATCH_MAX_ROWS: usize = 5_000;
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 100;
pub const DEFAULT_SQLITE_WRITERS: usize = 1;
pub const MAX_WRITERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// TOML syntax errors and unknown keys; the message names the key and line.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A password or key. Debug and Display print `<redacted>`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub target: TargetConfig,
    #[serde(default, rename = "tables")]
    pub tables: Vec<TableRule>,
    #[serde(default)]
    pub apply: ApplyConfig,
    #[serde(default)]
    pub transforms: TransformsConfig,
    #[serde(default)]
    pub backfill: BackfillConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    #[serde(default)]
    pub lag: LagConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The Prometheus endpoint (`crate::ops::metrics`): off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:port` that `sluice run` serves `GET /metrics` on, e.g. `"127.0.0.1:9464"`.
    pub listen: Option<String>,
}

impl MetricsConfig {
    /// The address to serve metrics on, or `None` when metrics are off.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(text) = &self.listen else {
            return Ok(None);
        };
        match text.trim().parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(Some(addr)),
            Ok(_) => Err(invalid("metrics.listen", "needs a fixed port, not 0")),
            Err(_) => Err(invalid(
                "metrics.listen",
                format!("`{text}` is not an IP:port address (e.g. \"127.0.0.1:9464\" or \"[::1]:9464\")"),
            )),
        }
    }
}

/// What to do when a row read back differs from what sluice wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchPolicy {
    /// Stop replication with an error (fail closed).
    Stop,
    /// Write the expected row again, count it, and go on.
    Repair,
    /// Count it (status shows the count), log it, and go on.
    Report,
}

/// Incremental verification: committed rows read back and compared (`crate::verify::incremental`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Read back every committed target transaction's rows.
    #[serde(default = "default_true")]
    pub incremental: bool,
    /// `stop`, `repair` or `report` when a row read back differs.
    #[serde(default = "default_on_mismatch")]
    pub on_mismatch: MismatchPolicy,
    /// Rows of one target transaction checked at most (memory bound); the rest of a larger
    /// transaction is left to `sluice verify`.
    #[serde(default = "default_verify_max_rows")]
    pub max_rows_per_transaction: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            incremental: true,
            on_mismatch: default_on_mismatch(),
            max_rows_per_transaction: default_verify_max_rows(),
        }
    }
}

pub const DEFAULT_LAG_INTERVAL_MS: u64 = 500;
pub const DEFAULT_LAG_WINDOW_S: u64 = 60;

/// Lag measurement (see `crate::ops::lag`): a heartbeat row sluice writes on the source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagConfig {
    /// Write a heartbeat row on the source (needs CREATE, INSERT, UPDATE on `database`; without
    /// them sluice falls back to event timestamps and says so).
    #[serde(default = "default_true")]
    pub heartbeat: bool,
    /// Milliseconds between heartbeats.
    #[serde(default = "default_lag_interval_ms")]
    pub interval_ms: u64,
    /// Source database of the heartbeat table (created if missing and allowed).
    #[serde(default = "default_lag_database")]
    pub database: String,
    #[serde(default = "default_lag_table")]
    pub table: String,
    /// Percentiles cover the samples of the last `window_s` to 2 × `window_s` seconds.
    #[serde(default = "default_lag_window_s")]
    pub window_s: u64,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            heartbeat: true,
            interval_ms: DEFAULT_LAG_INTERVAL_MS,
            database: default_lag_database(),
            table: default_lag_table(),
            window_s: DEFAULT_LAG_WINDOW_S,
        }
    }
}

fn default_on_mismatch() -> MismatchPolicy {
    MismatchPolicy::Stop
}

fn default_verify_max_rows() -> usize {
    100_000
}

fn default_lag_interval_ms() -> u64 {
    DEFAULT_LAG_INTERVAL_MS
}
fn default_lag_database() -> String {
    "sluice".into()
}
fn default_lag_table() -> String {
    "sluice_heartbeat".into()
}
fn default_lag_window_s() -> u64 {
    DEFAULT_LAG_WINDOW_S
}

/// Rows per chunk unless configured otherwise.
pub const DEFAULT_BACKFILL_CHUNK_ROWS: usize = 2_000;

/// Copying existing rows of the selected tables (see docs and `crate::backfill`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// Copy the existing rows of every selected table the target has not copied yet.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Rows per chunk (one source `SELECT`, one target transaction).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Target connections that apply chunks, beside the stream's writers (default 1 for
    /// SQLite, which has one write lock anyway, 2 for server targets).
    pub writers: Option<usize>,
    /// Tables copied at the same time (each reads its next chunk while the last is applied).
    #[serde(default = "default_parallel_tables")]
    pub parallel_tables: usize,
    /// Pause reading new chunks while the stream's lag is above this (ms); 0 never pauses.
    #[serde(default = "default_backfill_max_lag_ms")]
    pub max_lag_ms: u64,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            enabled: true,
            chunk_rows: DEFAULT_BACKFILL_CHUNK_ROWS,
            writers: None,
            parallel_tables: default_parallel_tables(),
            max_lag_ms: default_backfill_max_lag_ms(),
        }
    }
}

fn default_parallel_tables() -> usize {
    2
}
fn default_backfill_max_lag_ms() -> u64 {
    1_000
}

fn default_true() -> bool {
    true
}
fn default_chunk_rows() -> usize {
    DEFAULT_BACKFILL_CHUNK_ROWS
}

/// Where `sluice run` reads source transactions from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A MariaDB/MySQL server's binlog, as a replica.
    #[default]
    Mariadb,
    /// A NATS JetStream stream that `sluice publish` fills (see docs/fan-out.md).
    Nats,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `"mariadb"` (default) or `"nats"`: a fan-out log written by `sluice publish`.
    #[serde(default)]
    pub kind: SourceKind,
    /// With `kind = "nats"`: the NATS server URL(s), comma-separated, e.g. `"nats://10.0.0.5:4222"`.
    pub url: Option<String>,
    /// With `kind = "nats"`: the JetStream stream the publisher writes.
    pub stream: Option<String>,
    /// With `kind = "nats"`: a NATS credentials file (JWT and NKey seed), when the server asks for one.
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub user: String,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// Path of a file holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Server id sluice registers with as a replica.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Where a fresh target starts reading: `"current"` (the source's current position; the
    /// existing rows come from the backfill), `"earliest"` (the oldest binlog still on the
    /// server), or a GTID position such as `"0-1-100"`.
    #[serde(default = "default_start")]
    pub start: String,
    /// TLS: `"disabled"`, `"required"`, `"verify_ca"` or `"verify_identity"`. Default:
    /// `verify_identity`, except `disabled` for loopback addresses and `localhost`.
    pub tls_mode: Option<sluice_binlog::tls::TlsMode>,
    /// PEM CA certificate(s) to trust (default: the Mozilla root set).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that ask for one.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl SourceConfig {
    /// The TLS settings of every source connection (queries and the replication stream).
    pub fn tls(&self) -> TlsSettings {
        tls_settings(
            &self.host,
            self.tls_mode,
            &self.tls_ca_file,
            &self.tls_cert_file,
            &self.tls_key_file,
        )
    }
}

/// A connection's TLS settings, with the default mode for `host` when none is set.
fn tls_settings(
    host: &str,
    mode: Option<TlsMode>,
    ca_file: &Option<PathBuf>,
    cert_file: &Option<PathBuf>,
    key_file: &Option<PathBuf>,
) -> TlsSettings {
    TlsSettings {
        mode: mode.unwrap_or(if is_loopback(host) {
            TlsMode::Disabled
        } else {
            TlsMode::VerifyIdentity
        }),
        ca_file: ca_file.clone(),
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
    }
}

/// Loopback addresses and `localhost`: traffic that never leaves the host.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a connection's TLS keys that can be checked offline.
fn validate_tls(
    section: &str,
    mode: Option<TlsMode>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    ca: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    if cert.is_some() != key.is_some() {
        return Err(invalid(
            format!("{section}.tls_cert_file"),
            "set both tls_cert_file and tls_key_file, or neither",
        ));
    }
    if mode == Some(TlsMode::Disabled) && (ca.is_some() || cert.is_some()) {
        return Err(invalid(
            format!("{section}.tls_mode"),
            "tls_mode is \"disabled\" but TLS files are set; remove them or choose a TLS mode",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum TargetConfig {
    /// An embedded SQLite file (one writer).
    Sqlite { path: PathBuf },
    /// A MariaDB or MySQL server.
    Mariadb(ServerTarget),
    /// A PostgreSQL server.
    Postgres(ServerTarget),
    /// A NATS JetStream stream: the fan-out log that `sluice publish` writes and consumers
    /// (`[source] kind = "nats"`) read.
    Nats(NatsLogConfig),
}

/// A fan-out log on NATS JetStream (see `crate::log`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsLogConfig {
    /// The NATS server URL(s), comma-separated, e.g. `"nats://10.0.0.5:4222"`.
    pub url: String,
    /// The JetStream stream (created by the publisher when missing, file storage).
    pub stream: String,
    /// A NATS credentials file (JWT and NKey seed), when the server asks for one.
    pub credentials_file: Option<PathBuf>,
}

impl NatsLogConfig {
    /// The subject the stream's entries are published on.
    pub fn subject(&self) -> String {
        format!("sluice.{}", self.stream)
    }

    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.url.trim().is_empty() {
            return Err(invalid(
                format!("{section}.url"),
                "must not be empty (e.g. \"nats://127.0.0.1:4222\")",
            ));
        }
        // A user or token in the URL would be printed wherever the URL is (errors, status).
        if self.url.contains('@') {
            return Err(invalid(
                format!("{section}.url"),
                "must not hold credentials (user:password@ or token@): put them in a credentials_file",
            ));
        }
        // JetStream stream names may not hold these (they are subject tokens).
        if self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(invalid(
                format!("{section}.stream"),
                "must be a JetStream stream name: not empty, no whitespace, '.', '*', '>', '/' or '\\'",
            ));
        }
        Ok(())
    }
}

/// Connection settings of a server target. The password, like the source's, comes from an
/// environment variable or a file only.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTarget {
    pub host: String,
    pub port: Option<u16>,
    pub user: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The database to write into (created if missing on MariaDB).
    pub database: String,
    /// PostgreSQL schema (default `public`).
    pub schema: Option<String>,
    /// TLS: `"disabled"`, `"required"`, `"verify_ca"` or `"verify_identity"`. Default:
    /// `verify_identity`, except `disabled` for loopback addresses and `localhost`.
    pub tls_mode: Option<sluice_binlog::tls::TlsMode>,
    /// PEM CA certificate(s) to trust (default: the Mozilla root set).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that ask for one.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl ServerTarget {
    pub fn tls(&self) -> TlsSettings {
        tls_settings(
            &self.host,
            self.tls_mode,
            &self.tls_ca_file,
            &self.tls_cert_file,
            &self.tls_key_file,
        )
    }
}

/// Default writers for server targets: enough to overlap commit latency on a small machine.
pub const DEFAULT_SERVER_WRITERS: usize = 4;

/// Selects tables by `schema.table` name or glob, and their columns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRule {
    /// `schema.table`; `*`, `?` and `[...]` globs allowed in either part (e.g. `shop.*`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replicate only these columns (the primary key must be among them).
    pub columns: Option<Vec<String>>,
    /// Replicate all columns but these.
    pub exclude_columns: Option<Vec<String>>,
    /// Target table name, for a rule that matches exactly one table.
    pub target: Option<String>,
    /// Row filter: only rows for which this condition is TRUE reach the target
    /// (see docs/filters-and-transforms.md).
    #[serde(rename = "where")]
    pub row_filter: Option<String>,
    /// Per-column transforms (`null`, `const:V`, `hmac`, `mask:N`, `truncate:N`), applied
    /// before anything leaves the process.
    #[serde(default)]
    pub transforms: std::collections::BTreeMap<String, String>,
    /// What happens to a column the source table has and the target table lacks (added at
    /// the source while streaming, or before a start): held back (the default) or replicated.
    #[serde(default)]
    pub new_columns: NewColumns,
    /// Held columns to replicate from now on (added at the edge and filled by a column-only
    /// copy), under a rule whose `new_columns` is `"hold"`.
    #[serde(default)]
    pub release_columns: Vec<String>,
}

/// What a rule does with a column the target table does not have yet (see
/// docs/schema-changes.md, *New columns*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewColumns {
    /// Not replicated until the config releases it (`release_columns`): a column added at the
    /// source may hold data the edge must not see, and only a person can say it may.
    #[default]
    Hold,
    /// Replicated like the rule's other columns: added at the edge and filled.
    Replicate,
}

/// Where the HMAC key for `hmac` transforms comes from.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransformsConfig {
    pub hmac_key_env: Option<String>,
    pub hmac_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// A target transaction is committed once it holds this many row changes…
    #[serde(default = "default_batch_rows")]
    pub batch_max_rows: usize,
    /// …or has been open this long, whichever comes first (and whenever the source is idle).
    #[serde(default = "default_batch_delay_ms")]
    pub batch_max_delay_ms: u64,
    /// Parallel writer connections. Default: 1 for SQLite (one writer at a time is all SQLite
    /// allows; more connections would only queue on its lock).
    pub writers: Option<usize>,
    /// Which order target commits keep: the source's commit order (default), or only the
    /// order of transactions touching the same rows.
    #[serde(default)]
    pub commit_order: CommitOrder,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_delay_ms: DEFAULT_BATCH_MAX_DELAY_MS,
            writers: None,
            commit_order: CommitOrder::default(),
        }
    }
}

/// The order in which parallel writers make source transactions visible at the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitOrder {
    /// Target commits become visible in source commit order: a reader at the target sees only
    /// states the source had (MySQL's `replica_preserve_commit_order`).
    #[default]
    Source,
    /// Only transactions touching the same target rows keep source order; independent ones
    /// may become visible in any order (faster on server targets with several writers).
    Key,
}

fn default_port() -> u16 {
    DEFAULT_SOURCE_PORT
}
fn default_server_id() -> u32 {
    DEFAULT_SERVER_ID
}
fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}
fn default_start() -> String {
    "current".into()
}
fn default_batch_rows() -> usize {
    DEFAULT_BATCH_MAX_ROWS
}
fn default_batch_delay_ms() -> u64 {
    DEFAULT_BATCH_MAX_DELAY_MS
}

/// Where to start when the target has no checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum StartPosition {
    Current,
    Earliest,
    At(sluice_binlog::SourcePosition),
}

/// A compiled table rule.
#[derive(Debug, Clone)]
pub struct TableSelector {
    pub pattern: String,
    schema: GlobMatcher,
    table: GlobMatcher,
    pub columns: ColumnSelection,
    pub target: Option<String>,
    pub is_exact: bool,
    /// The config key of this rule, e.g. `tables[2]`, for messages.
    pub key: String,
    /// The parsed `where` condition (compiled per table definition when planned).
    pub row_filter: Option<std::sync::Arc<crate::select::rowfilter::Expr>>,
    /// Per-column transforms, by column name.
    pub transforms: Vec<(String, crate::select::transform::TransformSpec)>,
    /// The row filter and transforms as one text (`where` with its whitespace normalised,
    /// transforms sorted by column), recorded with each target table: a table whose rules
    /// changed holds rows written under the old ones and is copied afresh
    /// (`crate::schema_manager`).
    pub rules: String,
    /// `new_columns`: whether columns the target table lacks are held back.
    pub new_columns: NewColumns,
    /// `release_columns`: held columns named to be replicated.
    pub release_columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnSelection {
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl ColumnSelection {
    pub fn includes(&self, column: &str) -> bool {
        match self {
            ColumnSelection::All => true,
            ColumnSelection::Include(cols) => cols.iter().any(|c| c.eq_ignore_ascii_case(column)),
            ColumnSelection::Exclude(cols) => !cols.iter().any(|c| c.eq_ignore_ascii_case(column)),
        }
    }
}

impl TableSelector {
    /// Whether `column`, which the rule selects, is held back when the target table does not
    /// have it yet: under `new_columns = "hold"`, unless an explicit `columns` list or
    /// `release_columns` names it (a `columns` list only ever replicates what it names, so a
    /// column it names was asked for).
    pub fn holds(&self, column: &str) -> bool {
        self.new_columns == NewColumns::Hold
            && !matches!(self.columns, ColumnSelection::Include(_))
            && !self.release_columns.iter().any(|c| c.eq_ignore_ascii_case(column))
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.is_match(schema) && self.table.is_match(table)
    }

    /// Whether the rule's schema part matches `schema` (whatever the table).
    pub fn matches_schema(&self, schema: &str) -> bool {
        self.schema.is_match(schema)
    }
}

impl Config {
    /// Why `new` cannot replace this config in a running process (`None`: it can). A reload
    /// may change which tables and columns are replicated and how (they take effect as if
    /// sluice had restarted); a different source, target or HMAC key needs a deliberate
    /// restart, because the checkpoint and the rows already written belong to the old ones.
    pub fn reload_refusal(&self, new: &Config) -> Option<&'static str> {
        if self.source != new.source {
            Some("the [source] section changed; restart sluice to replicate from another source")
        } else if self.target != new.target {
            Some("the [target] section changed; restart sluice to write to another target")
        } else if self.transforms != new.transforms {
            Some("the [transforms] section (the HMAC key's source) changed; restart sluice to change it")
        } else {
            None
        }
    }

    /// Reads and validates `path`. No network access.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        // Relative paths in the file are relative to the file.
        Ok(config.resolve_paths(path.parent().unwrap_or(Path::new("."))))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(mut self, base: &Path) -> Config {
        match &mut self.target {
            TargetConfig::Sqlite { path } if path.is_relative() => *path = base.join(&*path),
            TargetConfig::Mariadb(t) | TargetConfig::Postgres(t) => {
                for p in [
                    &mut t.password_file,
                    &mut t.tls_ca_file,
                    &mut t.tls_cert_file,
                    &mut t.tls_key_file,
                ]
                .into_iter()
                .flatten()
                {
                    if p.is_relative() {
                        *p = base.join(&*p);
                    }
                }
            }
            _ => {}
        }
        if let TargetConfig::Nats(NatsLogConfig {
            credentials_file: Some(p),
            ..
        }) = &mut self.target
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [
            &mut self.source.credentials_file,
            &mut self.source.password_file,
            &mut self.transforms.hmac_key_file,
            &mut self.source.tls_ca_file,
            &mut self.source.tls_cert_file,
            &mut self.source.tls_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        self
    }

    /// Checks everything that can be checked without a network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.source.kind == SourceKind::Nats {
            return self.validate_log_consumer();
        }
        if self.source.url.is_some() || self.source.stream.is_some() || self.source.credentials_file.is_some() {
            return Err(invalid(
                "source.url",
                "url, stream and credentials_file belong to a NATS source: set [source] kind = \"nats\", or remove them",
            ));
        }
        if self.source.host.trim().is_empty() {
            return Err(invalid("source.host", "must not be empty"));
        }
        let src = &self.source;
        validate_tls(
            "source",
            src.tls_mode,
            &src.tls_cert_file,
            &src.tls_key_file,
            &src.tls_ca_file,
        )?;
        if self.source.user.trim().is_empty() {
            return Err(invalid("source.user", "must not be empty"));
        }
        if self.transforms.hmac_key_env.is_some() && self.transforms.hmac_key_file.is_some() {
            return Err(invalid(
                "transforms.hmac_key_env",
                "set either hmac_key_env or hmac_key_file, not both",
            ));
        }
        if self.source.password_env.is_some() && self.source.password_file.is_some() {
            return Err(invalid(
                "source.password_env",
                "set either password_env or password_file, not both",
            ));
        }
        if self.source.server_id == 0 {
            return Err(invalid(
                "source.server_id",
                "must be a non-zero id unique among the source's replicas",
            ));
        }
        if !(100..=60_000).contains(&self.source.heartbeat_ms) {
            return Err(invalid("source.heartbeat_ms", "must be between 100 and 60000"));
        }
        self.start_position()?;
        if self.tables.is_empty() {
            return Err(invalid(
                "tables",
                "no [[tables]] rule: select at least one table, e.g. match = \"shop.*\"",
            ));
        }
        for (i, _) in self.tables.iter().enumerate() {
            self.selector(i)?;
        }
        self.validate_applier()?;
        if !(1..=1_000_000).contains(&self.backfill.chunk_rows) {
            return Err(invalid("backfill.chunk_rows", "must be between 1 and 1000000"));
        }
        if self.backfill.writers.is_some_and(|w| w == 0 || w > MAX_WRITERS) {
            return Err(invalid(
                "backfill.writers",
                format!("must be between 1 and {MAX_WRITERS}"),
            ));
        }
        if !(1..=64).contains(&self.backfill.parallel_tables) {
            return Err(invalid("backfill.parallel_tables", "must be between 1 and 64"));
        }
        if !(10..=60_000).contains(&self.lag.interval_ms) {
            return Err(invalid("lag.interval_ms", "must be between 10 and 60000"));
        }
        if !(1..=86_400).contains(&self.lag.window_s) {
            return Err(invalid("lag.window_s", "must be between 1 and 86400"));
        }
        if self.lag.heartbeat && (self.lag.database.trim().is_empty() || self.lag.table.trim().is_empty()) {
            return Err(invalid("lag.table", "lag.database and lag.table must not be empty"));
        }
        self.metrics.listen_addr()?;
        if self.apply.batch_max_delay_ms > 60_000 {
            return Err(invalid("apply.batch_max_delay_ms", "must be at most 60000"));
        }
        match &self.target {
            TargetConfig::Sqlite { path } if path.as_os_str().is_empty() => {
                return Err(invalid("target.path", "must not be empty"));
            }
            TargetConfig::Mariadb(t) | TargetConfig::Postgres(t) => {
                if t.host.trim().is_empty() {
                    return Err(invalid("target.host", "must not be empty"));
                }
                if t.database.trim().is_empty() {
                    return Err(invalid("target.database", "must not be empty"));
                }
                if t.user.trim().is_empty() {
                    return Err(invalid("target.user", "must not be empty"));
                }
                if t.password_env.is_some() && t.password_file.is_some() {
                    return Err(invalid(
                        "target.password_env",
                        "set either password_env or password_file, not both",
                    ));
                }
                validate_tls("target", t.tls_mode, &t.tls_cert_file, &t.tls_key_file, &t.tls_ca_file)?;
            }
            TargetConfig::Nats(log) => log.validate("target")?,
            TargetConfig::Sqlite { .. } => {}
        }
        Ok(())
    }

    /// The applier's and the incremental verifier's settings, whatever the source.
    fn validate_applier(&self) -> Result<(), ConfigError> {
        if self.verify.max_rows_per_transaction == 0 {
            return Err(invalid(
                "verify.max_rows_per_transaction",
                "must be at least 1 (set [verify] incremental = false to turn read-back off)",
            ));
        }
        if self.apply.batch_max_rows == 0 {
            return Err(invalid("apply.batch_max_rows", "must be at least 1"));
        }
        if self.apply.writers.is_some_and(|w| w == 0 || w > MAX_WRITERS) {
            return Err(invalid("apply.writers", format!("must be between 1 and {MAX_WRITERS}")));
        }
        Ok(())
    }

    /// The NATS log a consumer reads (`[source] kind = "nats"`), or `None` for a MariaDB source.
    pub fn log_source(&self) -> Option<NatsLogConfig> {
        (self.source.kind == SourceKind::Nats).then(|| NatsLogConfig {
            url: self.source.url.clone().unwrap_or_default(),
            stream: self.source.stream.clone().unwrap_or_default(),
            credentials_file: self.source.credentials_file.clone(),
        })
    }

    /// A consumer of the fan-out log: the publisher selected, filtered and transformed the
    /// rows, so table rules, backfill and source settings have no place here.
    fn validate_log_consumer(&self) -> Result<(), ConfigError> {
        let log = self.log_source().expect("a NATS source");
        if self.source.url.is_none() {
            return Err(invalid(
                "source.url",
                "a NATS source needs url (e.g. \"nats://127.0.0.1:4222\")",
            ));
        }
        if self.source.stream.is_none() {
            return Err(invalid(
                "source.stream",
                "a NATS source needs the stream that `sluice publish` writes",
            ));
        }
        log.validate("source")?;
        if !self.source.host.is_empty() || !self.source.user.is_empty() {
            return Err(invalid(
                "source.host",
                "a NATS source reads no database: host and user belong in the publisher's config",
            ));
        }
        if !self.tables.is_empty() {
            return Err(invalid(
                "tables",
                "a NATS source applies what the publisher selected: move the [[tables]] rules to the publisher's config",
            ));
        }
        if matches!(self.target, TargetConfig::Nats(_)) {
            return Err(invalid("target.kind", "a NATS source cannot write to a NATS target"));
        }
        self.validate_applier()?;
        match &self.target {
            TargetConfig::Sqlite { path } if path.as_os_str().is_empty() => {
                Err(invalid("target.path", "must not be empty"))
            }
            _ => Ok(()),
        }
    }

    pub fn start_position(&self) -> Result<StartPosition, ConfigError> {
        match self.source.start.as_str() {
            "current" => Ok(StartPosition::Current),
            "earliest" => Ok(StartPosition::Earliest),
            blank if blank.trim().is_empty() => Err(invalid(
                "source.start",
                "is empty; say \"current\", \"earliest\", a MariaDB GTID position such as \"0-1-100\" or a MySQL GTID set such as \"<server_uuid>:1-100\"",
            )),
            other => other.parse().map(StartPosition::At).map_err(|_| {
                invalid(
                    "source.start",
                    "expected \"current\", \"earliest\", a MariaDB GTID position such as \"0-1-100\" or a MySQL GTID set such as \"<server_uuid>:1-100\"",
                )
            }),
        }
    }

    /// The compiled selectors, in file order (the first matching rule wins).
    pub fn selectors(&self) -> Vec<TableSelector> {
        (0..self.tables.len())
            .map(|i| self.selector(i).expect("validated"))
            .collect()
    }

    fn selector(&self, i: usize) -> Result<TableSelector, ConfigError> {
        let rule = &self.tables[i];
        let key = |k: &str| format!("tables[{i}].{k}");
        let (schema, table) = rule.pattern.split_once('.').ok_or_else(|| {
            invalid(
                key("match"),
                format!(
                    "{:?} is not schema.table (globs allowed, e.g. \"shop.*\")",
                    rule.pattern
                ),
            )
        })?;
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return Err(invalid(key("match"), format!("{:?} is not schema.table", rule.pattern)));
        }
        let glob = |part: &str| {
            GlobBuilder::new(part)
                .case_insensitive(false)
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| invalid(key("match"), format!("bad glob {:?}: {}", rule.pattern, e.kind())))
        };
        let is_exact = !rule.pattern.contains(['*', '?', '[', '{']);
        let columns = match (&rule.columns, &rule.exclude_columns) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key("columns"),
                    "set either columns or exclude_columns, not both",
                ))
            }
            (Some(cols), None) if cols.is_empty() => {
                return Err(invalid(key("columns"), "an empty include list selects nothing"))
            }
            (Some(cols), None) => ColumnSelection::Include(cols.clone()),
            (None, Some(cols)) => ColumnSelection::Exclude(cols.clone()),
            (None, None) => ColumnSelection::All,
        };
        if !rule.release_columns.is_empty() {
            let why = match (&columns, rule.new_columns) {
                (ColumnSelection::Include(_), _) => Some(
                    "a rule with an explicit `columns` list replicates exactly what it names: name the column in \
                     `columns` instead"
                        .to_owned(),
                ),
                (_, NewColumns::Replicate) => Some(
                    "new_columns = \"replicate\" holds nothing back, so there is nothing to release: remove \
                     release_columns or set new_columns = \"hold\""
                        .to_owned(),
                ),
                (_, NewColumns::Hold) => rule.release_columns.iter().find(|c| !columns.includes(c)).map(|c| {
                    format!("column {c} is excluded by exclude_columns, so releasing it would not replicate it")
                }),
            };
            if let Some(why) = why {
                return Err(invalid(key("release_columns"), why));
            }
        }
        if rule.target.is_some() && !is_exact {
            return Err(invalid(
                key("target"),
                "a target name needs a rule that matches one exact table, not a glob",
            ));
        }
        if let Some(t) = &rule.target {
            if t.is_empty() || t.starts_with("_sluice") {
                return Err(invalid(
                    key("target"),
                    "must be non-empty and must not start with _sluice (reserved)",
                ));
            }
        }
        let row_filter = match &rule.row_filter {
            Some(text) => Some(std::sync::Arc::new(
                crate::select::rowfilter::parse(text).map_err(|e| invalid(key("where"), e.to_string()))?,
            )),
            None => None,
        };
        let mut transforms = Vec::with_capacity(rule.transforms.len());
        for (column, spec) in &rule.transforms {
            let parsed = crate::select::transform::parse_transform(spec)
                .map_err(|e| invalid(key(&format!("transforms.{column}")), e))?;
            if !columns.includes(column) {
                return Err(invalid(
                    key(&format!("transforms.{column}")),
                    format!("column {column} is not replicated by this rule, so there is nothing to transform"),
                ));
            }
            if parsed == crate::select::transform::TransformSpec::Hmac
                && self.transforms.hmac_key_env.is_none()
                && self.transforms.hmac_key_file.is_none()
            {
                return Err(invalid(
                    key(&format!("transforms.{column}")),
                    "hmac needs a key: set transforms.hmac_key_env or transforms.hmac_key_file",
                ));
            }
            transforms.push((column.clone(), parsed));
        }
        let rules = {
            let mut specs: Vec<String> = transforms
                .iter()
                .map(|(column, spec)| format!("{}={spec}", column.to_lowercase()))
                .collect();
            specs.sort();
            let filter = rule
                .row_filter
                .as_deref()
                .map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "));
            format!(
                "where: {}; transforms: {}",
                filter.unwrap_or_default(),
                specs.join(", ")
            )
        };
        Ok(TableSelector {
            pattern: rule.pattern.clone(),
            schema: glob(schema)?,
            table: glob(table)?,
            columns,
            target: rule.target.clone(),
            is_exact,
            key: format!("tables[{i}]"),
            row_filter,
            transforms,
            rules,
            new_columns: rule.new_columns,
            release_columns: rule.release_columns.clone(),
        })
    }

    /// Everything [`Config::validate`] cannot see in the file itself but can check without a
    /// network: the secrets it names can be read (environment variables set, files
    /// readable), TLS files are readable, and `hmac` transforms have a key. `check` runs it
    /// before it says "config: ok", and a SIGHUP before it stops anything.
    pub fn check_local_resources(&self) -> Result<(), ConfigError> {
        self.source_password()?;
        self.target_password()?;
        // (A rule with an hmac transform and no key is refused by `validate`.)
        self.hmac_key()?;
        let mut files = vec![
            ("source.tls_ca_file", &self.source.tls_ca_file),
            ("source.tls_cert_file", &self.source.tls_cert_file),
            ("source.tls_key_file", &self.source.tls_key_file),
        ];
        if let TargetConfig::Mariadb(t) | TargetConfig::Postgres(t) = &self.target {
            files.extend([
                ("target.tls_ca_file", &t.tls_ca_file),
                ("target.tls_cert_file", &t.tls_cert_file),
                ("target.tls_key_file", &t.tls_key_file),
            ]);
        }
        for (key, path) in files {
            if let Some(path) = path {
                std::fs::File::open(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Reads the HMAC key for `hmac` transforms, when one is configured.
    pub fn hmac_key(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(var) = &self.transforms.hmac_key_env {
            return std::env::var(var).map(|v| Some(Secret::new(v))).map_err(|_| {
                invalid(
                    "transforms.hmac_key_env",
                    format!("environment variable {var} is not set"),
                )
            });
        }
        if let Some(path) = &self.transforms.hmac_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "transforms.hmac_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let key = text.strip_suffix('\n').unwrap_or(&text);
            return Ok(Some(Secret::new(key.to_owned())));
        }
        Ok(None)
    }

    /// Reads the source password from where the config says. Missing → empty password only if
    /// neither key is set.
    pub fn source_password(&self) -> Result<Secret, ConfigError> {
        if let Some(var) = &self.source.password_env {
            return std::env::var(var)
                .map(Secret::new)
                .map_err(|_| invalid("source.password_env", format!("environment variable {var} is not set")));
        }
        if let Some(path) = &self.source.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("source.password_file", format!("cannot read {}: {e}", path.display())))?;
            return Ok(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()));
        }
        Ok(Secret::default())
    }

    /// The number of writer connections to use.
    pub fn writers(&self) -> usize {
        self.apply.writers.unwrap_or(match self.target {
            TargetConfig::Sqlite { .. } => DEFAULT_SQLITE_WRITERS,
            _ => DEFAULT_SERVER_WRITERS,
        })
    }

    /// Target connections applying backfill chunks.
    pub fn backfill_writers(&self) -> usize {
        self.backfill.writers.unwrap_or(match self.target {
            TargetConfig::Sqlite { .. } => 1,
            _ => 2,
        })
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.source.heartbeat_ms)
    }

    /// A human-readable name of the target (never containing a password).
    pub fn target_description(&self) -> String {
        match &self.target {
            TargetConfig::Sqlite { path } => format!("sqlite:{}", path.display()),
            TargetConfig::Mariadb(t) => format!(
                "mariadb://{}@{}:{}/{}",
                t.user,
                t.host,
                t.port.unwrap_or(3306),
                t.database
            ),
            TargetConfig::Postgres(t) => format!(
                "postgres://{}@{}:{}/{} schema {}",
                t.user,
                t.host,
                t.port.unwrap_or(5432),
                t.database,
                t.schema.as_deref().unwrap_or("public")
            ),
            TargetConfig::Nats(log) => format!("nats stream {} at {}", log.stream, log.url),
        }
    }

    /// The target password, for server targets.
    pub fn target_password(&self) -> Result<Secret, ConfigError> {
        let (TargetConfig::Mariadb(t) | TargetConfig::Postgres(t)) = &self.target else {
            return Ok(Secret::default());
        };
        if let Some(var) = &t.password_env {
            return std::env::var(var)
                .map(Secret::new)
                .map_err(|_| invalid("target.password_env", format!("environment variable {var} is not set")));
        }
        if let Some(path) = &t.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("target.password_file", format!("cannot read {}: {e}", path.display())))?;
            return Ok(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()));
        }
        Ok(Secret::default())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn tls_defaults_to_verify_identity_off_loopback() {
        use sluice_binlog::tls::TlsMode;
        for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["db1.internal", "10.0.0.5", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
        let none = None;
        assert_eq!(
            tls_settings("db1", None, &none, &none, &none).mode,
            TlsMode::VerifyIdentity
        );
        assert_eq!(
            tls_settings("127.0.0.1", None, &none, &none, &none).mode,
            TlsMode::Disabled
        );
        assert_eq!(
            tls_settings("127.0.0.1", Some(TlsMode::Required), &none, &none, &none).mode,
            TlsMode::Required
        );
        let cert = Some(PathBuf::from("c.pem"));
        assert!(validate_tls("source", None, &cert, &none, &none).is_err());
        assert!(validate_tls("source", Some(TlsMode::Disabled), &none, &none, &cert).is_err());
        assert!(validate_tls("source", None, &cert, &cert, &none).is_ok());
    }

    use super::*;

    const BASE: &str = r#"
[source]
host = "127.0.0.1"
user = "repl"
password_env = "SLUICE_TEST_PW"

[target]
kind = "sqlite"
path = "edge.db"
"#;

    fn with_tables(tables: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{BASE}\n{tables}"))
    }

    #[test]
    fn accepts_globs_and_column_lists() {
        let cfg = with_tables("[[tables]]\nmatch = \"shop.*\"\nexclude_columns = [\"email\"]\n[[tables]]\nmatch = \"crm.users\"\ncolumns = [\"id\"]").unwrap();
        let sel = cfg.selectors();
        assert!(sel[0].matches("shop", "orders"));
        assert!(!sel[0].matches("shopx", "orders"));
        assert!(!sel[0].columns.includes("EMAIL"));
        assert!(sel[1].columns.includes("id") && !sel[1].columns.includes("name"));
        assert_eq!(cfg.source.port, DEFAULT_SOURCE_PORT);
    }

    #[test]
    fn new_columns_are_held_unless_named_or_replicated() {
        let cfg = with_tables(
            "[[tables]]\nmatch = \"shop.a\"\n[[tables]]\nmatch = \"shop.b\"\nrelease_columns = [\"Discount\"]\n\
             [[tables]]\nmatch = \"shop.c\"\nnew_columns = \"replicate\"\n[[tables]]\nmatch = \"shop.d\"\ncolumns = [\"id\", \"x\"]",
        )
        .unwrap();
        let sel = cfg.selectors();
        assert_eq!(sel[0].new_columns, NewColumns::Hold);
        assert!(sel[0].holds("discount"));
        assert!(!sel[1].holds("discount") && sel[1].holds("other"));
        assert!(!sel[2].holds("discount"));
        // An explicit list replicates what it names and nothing else.
        assert!(!sel[3].holds("x"));

        let refused = |rule: &str, why: &str| {
            let err = with_tables(&format!("[[tables]]\nmatch = \"shop.a\"\n{rule}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("tables[0].release_columns") && err.contains(why), "{err}");
        };
        refused(
            "columns = [\"id\"]\nrelease_columns = [\"x\"]",
            "name the column in `columns`",
        );
        refused(
            "new_columns = \"replicate\"\nrelease_columns = [\"x\"]",
            "nothing to release",
        );
        refused("exclude_columns = [\"x\"]\nrelease_columns = [\"X\"]", "excluded");
        let err = with_tables("[[tables]]\nmatch = \"shop.a\"\nnew_columns = \"follow\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("new_columns") || err.contains("hold"), "{err}");
    }

    #[test]
    fn a_nats_source_takes_only_the_log_and_the_target() {
        let edge = |source: &str, rest: &str| {
            Config::parse(&format!(
                "[source]\n{source}\n[target]\nkind = \"sqlite\"\npath = \"e.db\"\n{rest}"
            ))
        };
        let nats = "kind = \"nats\"\nurl = \"nats://n1:4222\"\nstream = \"shop\"";
        assert_eq!(edge(nats, "").unwrap().log_source().unwrap().subject(), "sluice.shop");
        let refused = |source: &str, rest: &str, key: &str| {
            let err = edge(source, rest).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        };
        refused(nats, "[[tables]]\nmatch = \"shop.*\"", "`tables`");
        refused(&format!("{nats}\nhost = \"db1\""), "", "source.host");
        refused("kind = \"nats\"\nstream = \"shop\"", "", "source.url");
        refused("kind = \"nats\"\nurl = \"nats://n1:4222\"", "", "source.stream");
        refused(
            "kind = \"nats\"\nurl = \"nats://n1:4222\"\nstream = \"a.b\"",
            "",
            "source.stream",
        );
        refused(
            "kind = \"nats\"\nurl = \"nats://u:pw@n1:4222\"\nstream = \"s\"",
            "",
            "source.url",
        );
        // Log keys on a database source are a mistake, not ignored.
        refused(
            "host = \"db1\"\nuser = \"r\"\nstream = \"shop\"",
            "[[tables]]\nmatch = \"a.b\"",
            "source.url",
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = with_tables("[[tables]]\nmatch = \"shop.*\"\ncolumnz = [\"a\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("columnz"), "{err}");
        let err = Config::parse(&BASE.replace("user =", "usr =")).unwrap_err().to_string();
        assert!(err.contains("usr"), "{err}");
    }

    #[test]
    fn bad_globs_and_names_are_named() {
        let err = with_tables("[[tables]]\nmatch = \"shop.[abc\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tables[0].match"), "{err}");
        let err = with_tables("[[tables]]\nmatch = \"orders\"").unwrap_err().to_string();
        assert!(err.contains("tables[0].match"), "{err}");
        let err = with_tables("[[tables]]\nmatch = \"a.b\"\ncolumns = [\"x\"]\nexclude_columns = [\"y\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tables[0].columns"), "{err}");
        let err = with_tables("").unwrap_err().to_string();
        assert!(err.contains("`tables`"), "{err}");
    }

    #[test]
    fn metrics_listen_is_checked() {
        let rules = "[[tables]]\nmatch = \"a.b\"";
        let cfg = with_tables(rules).unwrap();
        assert_eq!(cfg.metrics.listen_addr().unwrap(), None, "off unless set");
        let cfg = with_tables(&format!("{rules}\n[metrics]\nlisten = \"127.0.0.1:9464\"")).unwrap();
        assert_eq!(
            cfg.metrics.listen_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let cfg = with_tables(&format!("{rules}\n[metrics]\nlisten = \"[::1]:9464\"")).unwrap();
        assert!(cfg.metrics.listen_addr().unwrap().unwrap().is_ipv6());
        for bad in ["localhost:9464", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:0", ""] {
            let err = with_tables(&format!("{rules}\n[metrics]\nlisten = \"{bad}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains("metrics.listen"), "{bad}: {err}");
        }
        let err = with_tables(&format!("{rules}\n[metrics]\nlisen = \"127.0.0.1:9464\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn start_position_is_checked() {
        let cfg = Config::parse(&format!(
            "{}\n[[tables]]\nmatch = \"a.b\"",
            BASE.replace("[target]", "start = \"0-1-x\"\n[target]")
        ));
        assert!(cfg.unwrap_err().to_string().contains("source.start"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
    }
}
