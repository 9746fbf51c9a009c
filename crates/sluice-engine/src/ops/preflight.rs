//! Preflight: checks the source before anything is streamed or written.
//!
//! Each failure says what is wrong and what to do about it. `sluice check` runs these and
//! `sluice run` runs them first.

use mysql_async::prelude::Queryable;
use sluice_binlog::GtidPosition;

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
    #[error("the replication user lacks {missing}. Run on the source: GRANT {missing} ON *.* TO {user}")]
    Privilege { missing: String, user: String },
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
}

/// What preflight learned about the source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub version: String,
    /// `@@gtid_binlog_pos`: the last GTID per domain in the source's binlog.
    pub binlog_position: GtidPosition,
    pub warnings: Vec<String>,
}

fn query_err(what: &'static str) -> impl Fn(mysql_async::Error) -> PreflightError {
    move |e| PreflightError::Query {
        what,
        message: e.to_string(),
    }
}

/// Runs every source check. `checkpoint` is the target's, when it has one.
pub async fn check_source(
    conn: &mut mysql_async::Conn,
    user: &str,
    checkpoint: Option<&Checkpoint>,
) -> Result<SourceInfo, PreflightError> {
    let version: String = conn
        .query_first("SELECT @@version")
        .await
        .map_err(query_err("server version"))?
        .unwrap_or_default();
    if !version.contains("MariaDB") {
        return Err(PreflightError::Setting(format!(
            "the source is MySQL {version}; sluice streams from MariaDB servers for now (MySQL binlog files can be read \
             with `sluice binlog dump FILE`)"
        )));
    }
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

    check_grants(conn, user).await?;

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
        check_checkpoint_available(conn, &cp.position, &binlog_position).await?;
    }
    Ok(SourceInfo {
        version,
        binlog_position,
        warnings,
    })
}

async fn check_grants(conn: &mut mysql_async::Conn, user: &str) -> Result<(), PreflightError> {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.map_err(query_err("SHOW GRANTS"))?;
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    let has = |needle: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(needle))
    };
    if !has("REPLICATION SLAVE") {
        return Err(PreflightError::Privilege {
            missing: "REPLICATION SLAVE".into(),
            user: user.to_owned(),
        });
    }
    // MariaDB 10.5+ needs BINLOG MONITOR for SHOW BINARY LOGS; older ones REPLICATION CLIENT.
    if !(has("BINLOG MONITOR") || has("REPLICATION CLIENT") || has("SUPER")) {
        return Err(PreflightError::Privilege {
            missing: "BINLOG MONITOR".into(),
            user: user.to_owned(),
        });
    }
    Ok(())
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
