//! Preflight: checks the source before anything is streamed or written.
//!
//! Each failure says what is wrong and what to do about it. `sluice check` runs these and
//! `sluice run` runs them first.

use mysql_async::prelude::Queryable;
use sluice_binlog::{Gtid, GtidPosition, MysqlGtidSet, SourceFlavor, SourcePosition};

use crate::config::Config;
use crate::ops::grants::{grantee, quote_database, Grants};
use crate::select::rules::TablePlan;
use crate::target::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("cannot connect to the source {addr} as {user}: {message}")]
    Connect {
        addr: String,
        user: String,
        message: String,
    },
    #[error("source query failed ({what}): {message}")]
    Query { what: &'static str, message: String },
    #[error("{0}")]
    Setting(String),
    #[error("the source user {grantee} lacks {}. Run on the source:\n{}", .missing.iter().map(|m| m.what()).collect::<Vec<_>>().join(", "), .missing.iter().map(|m| format!("  {};", m.statement(grantee))).collect::<Vec<_>>().join("\n"))]
    Privileges {
        grantee: String,
        missing: Vec<MissingGrant>,
    },
    #[error(
        "the source user cannot read {} selected table(s): {}. Grant SELECT on them (e.g. GRANT SELECT ON `schema`.* TO \
         the user), or change the config's [[tables]] rules so they are not selected",
        .0.len(),
        .0.iter().map(|(t, e)| format!("{t} ({e})")).collect::<Vec<_>>().join("; ")
    )]
    Unreadable(Vec<(String, String)>),
    #[error(
        "the source no longer has the binlogs sluice needs: the checkpoint is {checkpoint}, but the oldest binlog \
         ({oldest_file}) starts at {oldest_pos}. Transactions in between were purged, and sluice will not skip them. \
         Rebuild the target (delete it and start fresh), or raise the source's binlog retention (expire_logs_days / \
         binlog_expire_logs_seconds) before it happens again"
    )]
    Purged {
        checkpoint: String,
        oldest_file: String,
        oldest_pos: String,
    },
    #[error(
        "the source's history is behind sluice's checkpoint: the checkpoint is {checkpoint} but the source has only \
         executed {source_pos}. The source was restored from an older backup or is a different server; refusing to \
         continue. Point sluice at the right server, or rebuild the target"
    )]
    Rewound { checkpoint: String, source_pos: String },
    #[error(
        "the source's history has diverged from sluice's checkpoint: the checkpoint ends with {checkpoint_gtid}, which \
         is not in this server's binlog history (its last transaction from server {server} in domain {domain} is \
         {source_last}), although it has written past that sequence number since. This is typical of a replica \
         promoted before it had received everything the old primary wrote: the target holds transactions this \
         server never had. Either point sluice at a server that holds {checkpoint_gtid} (the old primary, or a \
         replica that received it), or rebuild the target (delete it, or drop its tables and _sluice_* bookkeeping, \
         and start again for a full copy)"
    )]
    Diverged {
        checkpoint_gtid: String,
        domain: u32,
        server: u32,
        source_last: String,
    },
    #[error(
        "the MySQL source no longer has the binlogs sluice needs: it purged {needed}, which the checkpoint \
         {checkpoint} lacks (gtid_purged is {purged}). sluice will not skip them. Rebuild the target (delete it and \
         start fresh), or raise the source's binlog_expire_logs_seconds before it happens again"
    )]
    MysqlPurged {
        checkpoint: String,
        purged: String,
        needed: String,
    },
    #[error(
        "the MySQL source's history has diverged from sluice's checkpoint: the checkpoint holds {missing}, which \
         this server never executed (its gtid_executed is {executed}). The target holds transactions this server \
         never had (a restored backup, another server, or a replica promoted before it received them). Point sluice \
         at a server whose gtid_executed contains the checkpoint {checkpoint}, or rebuild the target (delete it, or \
         drop its tables and _sluice_* bookkeeping, and start again for a full copy)"
    )]
    MysqlDiverged {
        checkpoint: String,
        executed: String,
        missing: String,
    },
}

/// A privilege the source user needs and lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingGrant {
    /// e.g. `REPLICATION SLAVE` or `SELECT`.
    pub privileges: String,
    /// e.g. `*.*`, `` `shop`.* ``.
    pub on: String,
}

impl MissingGrant {
    fn what(&self) -> String {
        match self.on.as_str() {
            "*.*" => self.privileges.clone(),
            on => format!("{} on {on}", self.privileges),
        }
    }

    fn statement(&self, grantee: &str) -> String {
        format!("GRANT {} ON {} TO {grantee}", self.privileges, self.on)
    }
}

/// What preflight learned about the source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub version: String,
    pub flavor: SourceFlavor,
    /// What the source has committed: MariaDB's `@@gtid_binlog_pos` (the last GTID per
    /// domain in its binlog), MySQL's `@@gtid_executed`.
    pub binlog_position: SourcePosition,
    pub warnings: Vec<String>,
}

fn query_err(what: &'static str) -> impl Fn(mysql_async::Error) -> PreflightError {
    move |e| PreflightError::Query {
        what,
        message: crate::source_rows::error_text(&e),
    }
}

/// Runs every source check. `checkpoint` is the target's, when it has one.
pub async fn check_source(
    conn: &mut mysql_async::Conn,
    config: &Config,
    checkpoint: Option<&Checkpoint>,
) -> Result<SourceInfo, PreflightError> {
    let version: String = conn
        .query_first("SELECT @@version")
        .await
        .map_err(query_err("server version"))?
        .unwrap_or_default();
    let flavor = SourceFlavor::from_server_version(&version);
    // A target cannot move between flavours: its checkpoint means nothing to the other one.
    let checkpoint = match checkpoint {
        Some(cp) => Some(
            cp.resume_from()
                .for_flavor(flavor)
                .map_err(|e| PreflightError::Setting(format!("the source is {flavor} {version}: {e}")))?,
        ),
        None => None,
    };
    if let Some(SourcePosition::Mysql(set)) = &checkpoint {
        return mysql_source_info(conn, config, Some(set), version).await;
    }
    if flavor == SourceFlavor::Mysql {
        return mysql_source_info(conn, config, None, version).await;
    }
    let checkpoint = match &checkpoint {
        Some(SourcePosition::Mariadb(p)) => Some(p),
        _ => None,
    };
    let (log_bin, format, image): (i64, String, String) = conn
        .query_first("SELECT @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image")
        .await
        .map_err(query_err("binlog settings"))?
        .unwrap_or_default();
    if log_bin != 1 {
        return Err(PreflightError::Setting(
            "binary logging is off on the source: start it with --log-bin (and --binlog-format=ROW, \
             --binlog-row-image=FULL)"
                .into(),
        ));
    }
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(PreflightError::Setting(format!(
            "the source's binlog_format is {format}; sluice needs ROW. Run SET GLOBAL binlog_format = 'ROW' and set it \
             in the server config (sessions that set their own format are refused when their events arrive)"
        )));
    }
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(PreflightError::Setting(format!(
            "the source's binlog_row_image is {image}; sluice needs FULL row images to apply and verify by key. Run \
             SET GLOBAL binlog_row_image = 'FULL' and set it in the server config"
        )));
    }
    let mut warnings = Vec::new();
    let metadata: Option<String> = conn
        .query_first("SELECT @@global.binlog_row_metadata")
        .await
        .unwrap_or(None);
    if !metadata.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("FULL")) {
        warnings.push(format!(
            "binlog_row_metadata is {}; with FULL the binlog itself names columns and keys at every position. Without \
             it sluice reads them from information_schema, which describes the table now, not at the position being \
             read",
            metadata.as_deref().unwrap_or("unavailable")
        ));
    }

    check_grants(conn, config, SourceFlavor::MariaDb, &mut warnings).await?;

    let binlog_pos: String = conn
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(query_err("gtid_binlog_pos"))?
        .unwrap_or_default();
    let binlog_position: GtidPosition = binlog_pos.parse().map_err(|_| PreflightError::Query {
        what: "gtid_binlog_pos",
        message: format!("unparseable position {binlog_pos:?}"),
    })?;

    if let Some(cp) = checkpoint {
        check_checkpoint_available(conn, cp, &binlog_position).await?;
        check_lineage(conn, cp).await?;
    }
    Ok(SourceInfo {
        version,
        flavor,
        binlog_position: binlog_position.into(),
        warnings,
    })
}

/// Refuses, listing every missing grant at once as a GRANT statement, when the user cannot
/// replicate or cannot read what the config selects; missing heartbeat grants are a warning
/// (lag then falls back to event timestamps).
async fn check_grants(
    conn: &mut mysql_async::Conn,
    config: &Config,
    flavor: SourceFlavor,
    warnings: &mut Vec<String>,
) -> Result<(), PreflightError> {
    let lines: Vec<String> = conn.query("SHOW GRANTS").await.map_err(query_err("SHOW GRANTS"))?;
    let current: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(query_err("CURRENT_USER()"))?;
    let grantee = grantee(current.as_deref().unwrap_or(&config.source.user));
    let grants = Grants::parse(&lines);
    let (missing, heartbeat) = missing_grants(&grants, config, flavor);
    if !heartbeat.is_empty() {
        warnings.push(format!(
            "the heartbeat needs more privileges (lag falls back to event timestamps, 1 s resolution, without them); \
             run on the source: {}; or set [lag] heartbeat = false",
            heartbeat
                .iter()
                .map(|m| m.statement(&grantee))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(PreflightError::Privileges { grantee, missing })
}

/// What the user lacks to replicate and read the selected tables, and what it lacks for the
/// heartbeat.
fn missing_grants(grants: &Grants, config: &Config, flavor: SourceFlavor) -> (Vec<MissingGrant>, Vec<MissingGrant>) {
    let global = |privileges: &str| MissingGrant {
        privileges: privileges.into(),
        on: "*.*".into(),
    };
    let mut missing = Vec::new();
    if !grants.global("REPLICATION SLAVE") {
        missing.push(global("REPLICATION SLAVE"));
    }
    // MariaDB 10.5+ needs BINLOG MONITOR for SHOW BINARY LOGS; older ones and MySQL
    // REPLICATION CLIENT.
    if !(grants.global("BINLOG MONITOR") || grants.global("REPLICATION CLIENT") || grants.global("SUPER")) {
        missing.push(global(match flavor {
            SourceFlavor::MariaDb => "BINLOG MONITOR",
            SourceFlavor::Mysql => "REPLICATION CLIENT",
        }));
    }
    for selector in config.selectors() {
        let Some((schema, table)) = selector.pattern.split_once('.') else {
            continue;
        };
        let schema_is_glob = schema.contains(['*', '?', '[', '{']);
        let held = if !schema_is_glob && selector.is_exact {
            grants.on_table("SELECT", schema, table)
        } else if !schema_is_glob {
            // Table-level grants on some of its tables will do too: the tables found are
            // probed with a real SELECT.
            grants.on_database("SELECT", schema) || grants.on_some_database("SELECT", |d| d == schema)
        } else {
            // Databases the user has no privilege on are invisible to it, so only a grant on
            // some matching database (or on all) can be checked here; the tables found are
            // then probed with a real SELECT.
            grants.on_some_database("SELECT", |d| selector.matches_schema(d))
        };
        let need = MissingGrant {
            privileges: "SELECT".into(),
            on: match (schema_is_glob, selector.is_exact) {
                (true, _) => "*.*".into(),
                (false, true) => format!("{}.{}", quote_database(schema), quote_database(table)),
                (false, false) => format!("{}.*", quote_database(schema)),
            },
        };
        if !held && !missing.contains(&need) {
            missing.push(need);
        }
    }
    let mut heartbeat = Vec::new();
    if config.lag.heartbeat {
        let lacking: Vec<&str> = ["SELECT", "INSERT", "UPDATE", "CREATE"]
            .into_iter()
            .filter(|p| !grants.on_database(p, &config.lag.database))
            .collect();
        if !lacking.is_empty() {
            heartbeat.push(MissingGrant {
                privileges: lacking.join(", "),
                on: format!("{}.*", quote_database(&config.lag.database)),
            });
        }
    }
    (missing, heartbeat)
}

/// Reads no row of each planned table, but makes the server check that the user may read
/// every column of it: information_schema lists tables the user holds *any*
/// privilege on, and a grant the parser misread must not pass. Every unreadable table is
/// named at once. A table locked by someone else is waited for a few seconds, then reported
/// as not checked (never as readable).
pub async fn probe_tables(
    conn: &mut mysql_async::Conn,
    plans: &[std::sync::Arc<TablePlan>],
) -> Result<(), PreflightError> {
    // ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR.
    const DENIED: [u16; 3] = [1044, 1142, 1143];
    // ER_NO_SUCH_TABLE: dropped since it was listed; the stream will see the DROP.
    const GONE: u16 = 1146;
    conn.query_drop("SET SESSION lock_wait_timeout = 10")
        .await
        .map_err(query_err("lock_wait_timeout"))?;
    let mut unreadable = Vec::new();
    for plan in plans {
        let def = &plan.source;
        // `*`, not the columns sluice knows: information_schema hides the columns the user
        // has no privilege on, and `*` needs every one of them.
        let sql = format!(
            "SELECT * FROM {}.{} LIMIT 0",
            quote_database(&def.schema),
            quote_database(&def.name)
        );
        match conn.query_drop(sql).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if DENIED.contains(&e.code) => {
                unreadable.push((def.qualified_name(), e.message.clone()))
            }
            Err(mysql_async::Error::Server(e)) if e.code == GONE => {}
            Err(e) => {
                return Err(PreflightError::Query {
                    what: "reading a selected table",
                    message: format!("{}: {e}", def.qualified_name()),
                })
            }
        }
    }
    conn.query_drop("SET SESSION lock_wait_timeout = DEFAULT")
        .await
        .map_err(query_err("lock_wait_timeout"))?;
    match unreadable.is_empty() {
        true => Ok(()),
        false => Err(PreflightError::Unreadable(unreadable)),
    }
}

/// Refuses when the checkpoint's successors were purged, or the source is behind it.
async fn check_checkpoint_available(
    conn: &mut mysql_async::Conn,
    checkpoint: &GtidPosition,
    binlog_position: &GtidPosition,
) -> Result<(), PreflightError> {
    if !binlog_position.covers(checkpoint) {
        return Err(PreflightError::Rewound {
            checkpoint: checkpoint.to_string(),
            source_pos: binlog_position.to_string(),
        });
    }
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(query_err("SHOW BINARY LOGS"))?;
    let Some(oldest) = logs.first().and_then(|r| r.get::<String, _>(0)) else {
        return Err(PreflightError::Setting(
            "the source lists no binary logs (SHOW BINARY LOGS is empty)".into(),
        ));
    };
    let oldest_pos: Option<String> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, 4)", (oldest.as_str(),))
        .await
        .map_err(query_err("BINLOG_GTID_POS"))?;
    let oldest_pos: GtidPosition = oldest_pos.unwrap_or_default().parse().unwrap_or_default();
    // Every transaction after the checkpoint must be in the binlogs we still have: for each
    // domain, the oldest file must not start after the checkpoint.
    let purged = oldest_pos.iter().any(|start| match checkpoint.get(start.domain) {
        Some(cp) => cp.sequence < start.sequence,
        None => start.sequence > 0,
    });
    if purged {
        return Err(PreflightError::Purged {
            checkpoint: checkpoint.to_string(),
            oldest_file: oldest,
            oldest_pos: oldest_pos.to_string(),
        });
    }
    Ok(())
}

/// Refuses when the checkpoint's transactions are not in the source's history although the
/// source has gone past their sequence numbers: a promoted replica that never received the
/// old primary's last transactions and then wrote its own under the same numbers. Sequence
/// numbers alone cannot tell (they only say the source is not behind); MariaDB's
/// `gtid_binlog_state` keeps the last GTID of every (domain, server) pair its binlogs ever
/// held, purged ones included, so the checkpoint's GTID `d-s-n` is in its history only if
/// the state's entry for `d-s` has reached `n` (sequence numbers rise within a domain).
async fn check_lineage(conn: &mut mysql_async::Conn, checkpoint: &GtidPosition) -> Result<(), PreflightError> {
    let state: String = conn
        .query_first("SELECT @@global.gtid_binlog_state")
        .await
        .map_err(query_err("gtid_binlog_state"))?
        .unwrap_or_default();
    let state = parse_binlog_state(&state).ok_or_else(|| PreflightError::Query {
        what: "gtid_binlog_state",
        message: format!("unparseable state {state:?}"),
    })?;
    match diverged_from(checkpoint, &state) {
        None => Ok(()),
        Some((gtid, source_last)) => Err(PreflightError::Diverged {
            checkpoint_gtid: gtid.to_string(),
            domain: gtid.domain,
            server: gtid.server,
            source_last: source_last.map_or_else(|| "none".to_string(), |g| g.to_string()),
        }),
    }
}

/// `gtid_binlog_state`: comma-separated GTIDs, one per (domain, server) pair (so a domain may
/// appear several times, unlike in a position).
fn parse_binlog_state(text: &str) -> Option<Vec<Gtid>> {
    text.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| g.parse().ok())
        .collect()
}

/// The first checkpoint GTID the state does not hold, with the state's last GTID from the
/// same server and domain (if any).
fn diverged_from(checkpoint: &GtidPosition, state: &[Gtid]) -> Option<(Gtid, Option<Gtid>)> {
    checkpoint.iter().find_map(|cp| {
        let same_origin = state
            .iter()
            .copied()
            .find(|g| g.domain == cp.domain && g.server == cp.server);
        match same_origin {
            Some(g) if g.sequence >= cp.sequence => None,
            other => Some((cp, other)),
        }
    })
}

// ----------------------------------------------------------------------------------------
// MySQL 8.0 / 8.4 / 9.x sources. Kept apart from the MariaDB checks above: MySQL names its
// settings and grants differently and keeps GTIDs as sets (`uuid[:tag]:intervals`), so the
// checkpoint checks compare sets instead of per-domain sequence numbers.

/// What a MySQL source reports about the settings sluice depends on, read in one query.
#[derive(Debug, Clone)]
pub struct MysqlSourceSettings {
    pub log_bin: bool,
    pub gtid_mode: String,
    pub enforce_gtid_consistency: String,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub binlog_row_metadata: String,
    pub gtid_executed: MysqlGtidSet,
    pub gtid_purged: MysqlGtidSet,
    /// `binlog_transaction_compression` (MySQL 8.0.20+; `None` on older servers, which
    /// never compress).
    pub binlog_transaction_compression: Option<String>,
    /// What passed with a warning (the heartbeat's grants).
    pub warnings: Vec<String>,
}

/// How [`check_mysql_source`] reads `binlog_transaction_compression`: a variable MySQL has
/// only since 8.0.20, so asked for by a query that returns no row before (public for the
/// protocol test server).
pub const MYSQL_COMPRESSION_QUERY: &str = "SHOW GLOBAL VARIABLES LIKE 'binlog_transaction_compression'";

/// The one query [`check_mysql_source`] reads the settings with (public for the protocol test server).
pub const MYSQL_SETTINGS_QUERY: &str =
    "SELECT @@global.log_bin, @@global.gtid_mode, @@global.enforce_gtid_consistency, \
     @@global.binlog_format, @@global.binlog_row_image, @@global.binlog_row_metadata, @@global.gtid_executed, \
     @@global.gtid_purged";

/// Reads [`MysqlSourceSettings`] and refuses, naming every wrong setting at once with the
/// statement that fixes it, unless the source can be streamed from faithfully; then checks
/// the grants (MySQL's names) and, given the checkpoint's GTID set, that the source still has
/// every transaction after it and never lost one before it.
pub async fn check_mysql_source(
    conn: &mut mysql_async::Conn,
    config: &Config,
    checkpoint: Option<&MysqlGtidSet>,
) -> Result<MysqlSourceSettings, PreflightError> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Row = conn
        .query_first(MYSQL_SETTINGS_QUERY)
        .await
        .map_err(query_err("MySQL replication settings"))?
        .ok_or_else(|| PreflightError::Query {
            what: "MySQL replication settings",
            message: "no row".into(),
        })?;
    let set = |what: &'static str, text: Option<String>| -> Result<MysqlGtidSet, PreflightError> {
        // MySQL prints long sets over several lines.
        let text = text.unwrap_or_default().replace(['\n', ' '], "");
        text.parse().map_err(|e| PreflightError::Query {
            what,
            message: format!("unparseable GTID set {text:?}: {e}"),
        })
    };
    let text = |t: Option<String>| t.unwrap_or_else(|| "unavailable".into());
    let compression: Option<(String, String)> = conn
        .query_first(MYSQL_COMPRESSION_QUERY)
        .await
        .map_err(query_err("MySQL binlog_transaction_compression"))?;
    let settings = MysqlSourceSettings {
        log_bin: matches!(row.0.as_deref(), Some("1" | "ON")),
        gtid_mode: text(row.1),
        enforce_gtid_consistency: text(row.2),
        binlog_format: text(row.3),
        binlog_row_image: text(row.4),
        binlog_row_metadata: text(row.5),
        gtid_executed: set("gtid_executed", row.6)?,
        gtid_purged: set("gtid_purged", row.7)?,
        binlog_transaction_compression: compression.map(|(_, value)| value),
        warnings: Vec::new(),
    };
    let problems = mysql_setting_problems(&settings);
    if !problems.is_empty() {
        return Err(PreflightError::Setting(format!(
            "the MySQL source is not set up for sluice:\n{}",
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    let mut settings = settings;
    check_grants(conn, config, SourceFlavor::Mysql, &mut settings.warnings).await?;
    if let Some(checkpoint) = checkpoint {
        mysql_checkpoint_available(checkpoint, &settings.gtid_executed, &settings.gtid_purged)?;
    }
    Ok(settings)
}

/// Every setting of a MySQL source that keeps sluice from streaming it faithfully, each with
/// what to run. All of them fail closed: MySQL has had each since 8.0, so there is no reason
/// to stream without (unlike MariaDB's optional `binlog_row_metadata`).
pub fn mysql_setting_problems(s: &MysqlSourceSettings) -> Vec<String> {
    let is = |value: &str, wanted: &str| value.eq_ignore_ascii_case(wanted);
    let mut problems = Vec::new();
    if !s.log_bin {
        problems.push(
            "log_bin is OFF: binary logging is off. Start mysqld without --skip-log-bin / --disable-log-bin (on by \
             default since 8.0)"
                .to_string(),
        );
    }
    if !is(&s.enforce_gtid_consistency, "ON") {
        problems.push(format!(
            "enforce_gtid_consistency is {}; sluice needs ON. Run SET PERSIST enforce_gtid_consistency = ON (first \
             WARN, to find offending statements in the error log)",
            s.enforce_gtid_consistency
        ));
    }
    if !is(&s.gtid_mode, "ON") {
        problems.push(format!(
            "gtid_mode is {}; sluice resumes from GTIDs and needs ON. With enforce_gtid_consistency = ON, step it up \
             one value at a time: SET PERSIST gtid_mode = OFF_PERMISSIVE; then ON_PERMISSIVE; wait until \
             Ongoing_anonymous_transaction_count is 0; then SET PERSIST gtid_mode = ON (MySQL manual, \
             \"Enabling GTID Transactions Online\")",
            s.gtid_mode
        ));
    }
    if !is(&s.binlog_format, "ROW") {
        problems.push(format!(
            "binlog_format is {}; sluice needs ROW. Run SET PERSIST binlog_format = 'ROW'",
            s.binlog_format
        ));
    }
    if !is(&s.binlog_row_image, "FULL") {
        problems.push(format!(
            "binlog_row_image is {}; sluice needs FULL row images to apply and verify by key. Run SET PERSIST \
             binlog_row_image = 'FULL'",
            s.binlog_row_image
        ));
    }
    if !is(&s.binlog_row_metadata, "FULL") {
        problems.push(format!(
            "binlog_row_metadata is {}; sluice needs FULL, so that the binlog itself names columns and keys at every \
             position. Run SET PERSIST binlog_row_metadata = 'FULL'",
            s.binlog_row_metadata
        ));
    }
    if s.binlog_transaction_compression.as_deref().is_some_and(|v| is(v, "ON")) {
        problems.push(
            "binlog_transaction_compression is ON; sluice does not expand compressed transactions \
             (TRANSACTION_PAYLOAD events) yet and would stop at the first one. Run SET PERSIST \
             binlog_transaction_compression = OFF; transactions already written compressed after sluice's position \
             still stop it (start after them, or rebuild the target from a position after the change)"
                .to_string(),
        );
    }
    problems
}

/// With GTID sets the checks are exact: the source must hold every transaction of the
/// checkpoint (else its history is not the one the target was built from), and every
/// transaction it purged must be in the checkpoint (else sluice would skip it).
pub fn mysql_checkpoint_available(
    checkpoint: &MysqlGtidSet,
    executed: &MysqlGtidSet,
    purged: &MysqlGtidSet,
) -> Result<(), PreflightError> {
    let missing = checkpoint.subtract(executed);
    if !missing.is_empty() {
        return Err(PreflightError::MysqlDiverged {
            checkpoint: checkpoint.to_string(),
            executed: executed.to_string(),
            missing: missing.to_string(),
        });
    }
    let needed = purged.subtract(checkpoint);
    if !needed.is_empty() {
        return Err(PreflightError::MysqlPurged {
            checkpoint: checkpoint.to_string(),
            purged: purged.to_string(),
            needed: needed.to_string(),
        });
    }
    Ok(())
}

/// A MySQL source: MySQL's checks (settings, grants, the checkpoint's set against
/// `gtid_executed` and `gtid_purged`), then what the engine needs to stream from it.
async fn mysql_source_info(
    conn: &mut mysql_async::Conn,
    config: &Config,
    checkpoint: Option<&MysqlGtidSet>,
    version: String,
) -> Result<SourceInfo, PreflightError> {
    let settings = check_mysql_source(conn, config, checkpoint).await?;
    Ok(SourceInfo {
        version,
        flavor: SourceFlavor::Mysql,
        binlog_position: settings.gtid_executed.into(),
        warnings: settings.warnings,
    })
}

#[cfg(test)]
mod mysql_tests {
    use super::*;

    fn set(text: &str) -> MysqlGtidSet {
        text.parse().unwrap()
    }

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "11111111-2222-3333-4444-555555555555";

    fn good() -> MysqlSourceSettings {
        MysqlSourceSettings {
            log_bin: true,
            gtid_mode: "ON".into(),
            enforce_gtid_consistency: "ON".into(),
            binlog_format: "ROW".into(),
            binlog_row_image: "FULL".into(),
            binlog_row_metadata: "FULL".into(),
            gtid_executed: set(&format!("{A}:1-100")),
            gtid_purged: MysqlGtidSet::new(),
            binlog_transaction_compression: Some("OFF".into()),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_well_set_source_has_no_problems_and_every_bad_setting_is_named() {
        assert!(mysql_setting_problems(&good()).is_empty());
        let bad = MysqlSourceSettings {
            log_bin: false,
            gtid_mode: "OFF".into(),
            enforce_gtid_consistency: "WARN".into(),
            binlog_format: "MIXED".into(),
            binlog_row_image: "MINIMAL".into(),
            binlog_row_metadata: "MINIMAL".into(),
            binlog_transaction_compression: Some("ON".into()),
            ..good()
        };
        let problems = mysql_setting_problems(&bad).join("\n");
        for expected in [
            "log_bin is OFF",
            "gtid_mode is OFF",
            "SET PERSIST gtid_mode = OFF_PERMISSIVE",
            "enforce_gtid_consistency is WARN",
            "binlog_format is MIXED",
            "binlog_row_image is MINIMAL",
            "binlog_row_metadata is MINIMAL",
            "SET PERSIST binlog_row_metadata = 'FULL'",
            "binlog_transaction_compression is ON",
        ] {
            assert!(problems.contains(expected), "{expected:?} in {problems}");
        }
    }

    #[test]
    fn a_checkpoint_inside_the_sources_history_with_nothing_needed_purged_passes() {
        let executed = set(&format!("{A}:1-100,{B}:tag:1-5"));
        assert!(mysql_checkpoint_available(
            &set(&format!("{A}:1-40,{B}:tag:1-5")),
            &executed,
            &set(&format!("{A}:1-40"))
        )
        .is_ok());
        assert!(mysql_checkpoint_available(&MysqlGtidSet::new(), &executed, &MysqlGtidSet::new()).is_ok());
    }

    #[test]
    fn purged_transactions_the_checkpoint_lacks_are_refused() {
        let executed = set(&format!("{A}:1-100"));
        let err = mysql_checkpoint_available(&set(&format!("{A}:1-40")), &executed, &set(&format!("{A}:1-50")))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("it purged {A}:41-50")), "{err}");
        assert!(err.contains("binlog_expire_logs_seconds"), "{err}");
    }

    #[test]
    fn a_checkpoint_with_transactions_the_source_never_had_has_diverged() {
        // The target holds A:1-40 and B:1-3; the source (a promoted replica) never got B:3,
        // though tagged and untagged GTIDs of B are counted apart.
        let executed = set(&format!("{A}:1-100,{B}:1-2,{B}:tag:3"));
        let err = mysql_checkpoint_available(&set(&format!("{A}:1-40,{B}:1-3")), &executed, &MysqlGtidSet::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("the checkpoint holds {B}:3")), "{err}");
        assert!(err.contains("diverged"), "{err}");
    }
}

#[cfg(test)]
mod lineage_tests {
    use super::*;

    fn position(text: &str) -> GtidPosition {
        text.parse().unwrap()
    }

    #[test]
    fn a_caught_up_promoted_replica_holds_the_checkpoint() {
        // The replica received 0-1-100, then wrote 0-2-101.. as the new primary.
        let state = parse_binlog_state("0-1-100,0-2-120").unwrap();
        assert_eq!(diverged_from(&position("0-1-100"), &state), None);
        assert_eq!(diverged_from(&position("0-1-57"), &state), None);
    }

    #[test]
    fn a_promoted_replica_that_missed_transactions_has_diverged() {
        // The replica stopped at 0-1-90 and wrote 0-2-91.. in place of the old primary's 91..100.
        let state = parse_binlog_state("0-1-90,0-2-120").unwrap();
        let (gtid, last) = diverged_from(&position("0-1-100"), &state).unwrap();
        assert_eq!(gtid.to_string(), "0-1-100");
        assert_eq!(last.unwrap().to_string(), "0-1-90");
    }

    #[test]
    fn a_server_with_no_transaction_from_the_checkpoints_origin_has_diverged() {
        let state = parse_binlog_state("0-7-500").unwrap();
        let (gtid, last) = diverged_from(&position("0-1-100"), &state).unwrap();
        assert_eq!((gtid.server, last), (1, None));
    }

    #[test]
    fn every_domain_is_checked_and_an_empty_state_parses() {
        let state = parse_binlog_state("0-1-100, 1-1-5").unwrap();
        assert!(diverged_from(&position("0-1-100,1-1-6"), &state).is_some());
        assert_eq!(parse_binlog_state(""), Some(vec![]));
        assert_eq!(parse_binlog_state("0-1-x"), None);
    }
}
