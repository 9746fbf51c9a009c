//! Keeps docs/config.md true to the config parser:
//!
//! 1. every ```toml block parses with `Config::parse`: a block with `[source]` and `[target]`
//!    is a whole config and parses as it is; any other block is a partial one, which must open
//!    with a section header and is completed with a minimal `[source]`, `[target]` and
//!    `[[tables]]` (those it lacks) appended after it;
//! 2. the keys each section's table documents are exactly the keys the deserializer accepts
//!    (asked from the deserializer itself, through the "unknown field …, expected …" message
//!    of `deny_unknown_fields`), and the enumerated values (`kind`, `tls_mode`,
//!    `on_mismatch`, `commit_order`) are all named;
//! 3. the defaults the tables give are the code's defaults.

use std::collections::BTreeSet;

use sluice_engine::config::Config;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

const MIN_SOURCE: &str = "[source]\nhost = \"db1.internal\"\nuser = \"repl\"\n";
const MIN_TARGET: &str = "[target]\nkind = \"sqlite\"\npath = \"edge.db\"\n";
const MIN_TABLES: &str = "[[tables]]\nmatch = \"shop.orders\"\n";

/// A config from the minimal one, with `extra` appended to `section` (`""`: top level).
fn config_with(section: &str, extra: &str, target: &str) -> String {
    let mut sections = vec![
        ("source".to_string(), MIN_SOURCE.to_string()),
        ("target".to_string(), target.to_string()),
        ("tables".to_string(), MIN_TABLES.to_string()),
    ];
    let mut text = String::new();
    if section.is_empty() {
        text.push_str(extra);
        text.push('\n');
    }
    let mut found = section.is_empty();
    for (name, body) in &mut sections {
        if name == section {
            body.push_str(extra);
            body.push('\n');
            found = true;
        }
    }
    for (_, body) in &sections {
        text.push_str(body);
    }
    if !found {
        text.push_str(&format!("[{section}]\n{extra}\n"));
    }
    text
}

/// The names the deserializer lists after "expected" for an unknown field or variant.
fn expected_names(message: &str, unknown: &str) -> BTreeSet<String> {
    let marker = format!("`{unknown}`, expected");
    let at = message
        .find(&marker)
        .unwrap_or_else(|| panic!("no \"{marker}\" in the parse error:\n{message}"));
    let rest = &message[at + marker.len()..];
    let rest = rest.lines().next().unwrap_or("");
    rest.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The keys `section` (e.g. "source", "target" with a given kind) accepts.
fn accepted_keys(section: &str, target: &str) -> BTreeSet<String> {
    let unknown = "zz_not_a_key";
    let text = config_with(section, &format!("{unknown} = 1"), target);
    let err = Config::parse(&text)
        .expect_err("an unknown key must be refused")
        .to_string();
    expected_names(&err, unknown)
}

/// The part of the doc under the `## ` heading that contains `heading` (up to the next `## `).
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let mut start = None;
    let mut offset = 0;
    for line in doc.split_inclusive('\n') {
        if line.starts_with("## ") {
            if let Some(start) = start {
                return &doc[start..offset];
            }
            if line.contains(heading) {
                start = Some(offset);
            }
        }
        offset += line.len();
    }
    match start {
        Some(s) => &doc[s..],
        None => panic!("docs/config.md has no `## ` heading containing {heading}"),
    }
}

/// The rows of the key tables in `text`: (key, default cell, whole row).
fn key_rows(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let key = cells[0].trim_start_matches("| ").trim_matches('`').to_owned();
            assert!(cells.len() >= 4, "a key row needs key | type | default | what: {l}");
            (key, cells[2].to_owned(), l.to_owned())
        })
        .collect()
}

fn documented_keys(text: &str) -> BTreeSet<String> {
    key_rows(text).into_iter().map(|(k, _, _)| k).collect()
}

fn default_cell(text: &str, key: &str) -> String {
    key_rows(text)
        .into_iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, d, _)| d)
        .unwrap_or_else(|| panic!("no row for `{key}`"))
}

fn toml_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in doc.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some((n + 1, String::new())),
            Some(_) if line.trim_start().starts_with("```") => blocks.push(current.take().unwrap()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unterminated ```toml block");
    blocks
}

fn has_header(block: &str, header: &str) -> bool {
    block.lines().any(|l| l.trim() == header)
}

#[test]
fn every_toml_block_parses() {
    let doc = doc();
    let blocks = toml_blocks(&doc);
    assert!(
        blocks.len() >= 10,
        "expected an example per section, found {}",
        blocks.len()
    );
    let mut whole = 0;
    for (line, block) in blocks {
        let text = if has_header(&block, "[source]") && has_header(&block, "[target]") {
            whole += 1;
            block.clone()
        } else {
            // A partial block must open with a section header, so that what is appended
            // after it cannot change what its keys belong to.
            let first = block
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or("");
            assert!(
                first.starts_with('['),
                "docs/config.md line {line}: a partial ```toml block must start with a [section] header"
            );
            let mut text = block.clone();
            if !has_header(&block, "[target]") {
                text.push_str(MIN_TARGET);
            }
            if !has_header(&block, "[[tables]]") {
                text.push_str(MIN_TABLES);
            }
            if !has_header(&block, "[source]") {
                text.push_str(MIN_SOURCE);
            }
            text
        };
        if let Err(e) = Config::parse(&text) {
            panic!("docs/config.md line {line}: the ```toml block does not parse: {e}\n{text}");
        }
    }
    assert!(whole >= 1, "docs/config.md needs a complete example config");
}

#[test]
fn the_complete_example_has_what_it_says() {
    let doc = doc();
    let (_, last) = toml_blocks(&doc).pop().expect("blocks");
    let cfg = Config::parse(&last).expect("the complete example parses");
    assert!(cfg.source.tls_ca_file.is_some(), "source over TLS with a CA file");
    assert!(cfg.target_description().starts_with("postgres://"));
    assert_eq!(cfg.tables.len(), 2);
    assert!(cfg.tables.iter().any(|t| t.row_filter.is_some()));
    assert!(cfg.tables.iter().any(|t| t.transforms.values().any(|s| s == "hmac")));
    assert!(cfg.transforms.hmac_key_file.is_some());
    assert!(cfg.metrics.listen_addr().unwrap().is_some());
}

const POSTGRES: &str = "[target]\nkind = \"postgres\"\nhost = \"edge\"\nuser = \"u\"\ndatabase = \"d\"\n";
const MARIADB: &str = "[target]\nkind = \"mariadb\"\nhost = \"edge\"\nuser = \"u\"\ndatabase = \"d\"\n";

#[test]
fn every_accepted_key_is_documented_and_no_other() {
    let doc = doc();
    // Top level: a `## ` heading per section.
    let sections = accepted_keys("", MIN_TARGET);
    for name in &sections {
        let heading = if name == "tables" {
            "`[[tables]]`".to_string()
        } else {
            format!("`[{name}]`")
        };
        section(&doc, &heading);
    }
    let expected: BTreeSet<String> = [
        "source",
        "target",
        "tables",
        "apply",
        "transforms",
        "backfill",
        "verify",
        "lag",
        "metrics",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        sections, expected,
        "the top-level sections changed: document the new one in docs/config.md and list it here"
    );

    for name in [
        "source",
        "tables",
        "transforms",
        "apply",
        "backfill",
        "verify",
        "lag",
        "metrics",
    ] {
        let heading = if name == "tables" {
            "`[[tables]]`".to_string()
        } else {
            format!("`[{name}]`")
        };
        let accepted = accepted_keys(name, MIN_TARGET);
        assert!(!accepted.is_empty(), "[{name}]: no keys found");
        let documented = documented_keys(section(&doc, &heading));
        assert_eq!(
            documented, accepted,
            "docs/config.md section {heading}: documented keys (left) differ from the keys the parser accepts (right)"
        );
    }

    // [target]: `kind`, then the keys of each kind under its own `### ` heading.
    let target = section(&doc, "`[target]`");
    let by_kind = |kind: &str| -> BTreeSet<String> {
        let start = target
            .find(&format!("### `kind = \"{kind}\"`"))
            .or_else(|| target.find(&format!("`kind = \"{kind}\"`")))
            .unwrap_or_else(|| panic!("no `### ` heading for kind = \"{kind}\""));
        let rest = &target[start..];
        let end = rest[3..].find("\n### ").map(|i| i + 3).unwrap_or(rest.len());
        documented_keys(&rest[..end])
    };
    let top: BTreeSet<String> = documented_keys(&target[..target.find("\n### ").expect("### per kind")]);
    assert_eq!(top, BTreeSet::from(["kind".to_string()]));
    let sqlite = accepted_keys("target", MIN_TARGET);
    assert_eq!(by_kind("sqlite"), sqlite, "[target] kind = \"sqlite\"");
    let server = accepted_keys("target", POSTGRES);
    assert_eq!(accepted_keys("target", MARIADB), server);
    assert_eq!(
        by_kind("postgres"),
        server,
        "[target] kind = \"postgres\" / \"mariadb\""
    );
}

#[test]
fn every_enumerated_value_is_documented() {
    let doc = doc();
    let unknown = "zz_not_a_value";
    let variants = |section: &str, key: &str, target: &str| -> BTreeSet<String> {
        let text = config_with(section, &format!("{key} = \"{unknown}\""), target);
        let err = Config::parse(&text)
            .expect_err("an unknown value must be refused")
            .to_string();
        expected_names(&err, unknown)
    };
    let kinds = {
        let text = config_with("", "", &format!("[target]\nkind = \"{unknown}\"\n"));
        expected_names(&Config::parse(&text).unwrap_err().to_string(), unknown)
    };
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    let checks = [
        ("`[target]`", "kind", kinds),
        ("`[source]`", "tls_mode", variants("source", "tls_mode", MIN_TARGET)),
        ("`[target]`", "tls_mode", variants("target", "tls_mode", POSTGRES)),
        (
            "`[verify]`",
            "on_mismatch",
            variants("verify", "on_mismatch", MIN_TARGET),
        ),
        (
            "`[apply]`",
            "commit_order",
            variants("apply", "commit_order", MIN_TARGET),
        ),
    ];
    for (heading, key, values) in checks {
        assert!(!values.is_empty());
        let rows = key_rows(section(&doc, heading));
        let row = &rows.iter().find(|(k, _, _)| k == key).expect("documented").2;
        for value in values {
            assert!(
                row.contains(&format!("`\"{value}\"`")),
                "docs/config.md {heading} `{key}` does not name the value \"{value}\": {row}"
            );
        }
    }
}

#[test]
fn documented_defaults_are_the_code_defaults() {
    let doc = doc();
    let minimal = |target: &str| Config::parse(&config_with("", "", target)).unwrap();
    let sqlite = minimal(MIN_TARGET);
    let postgres = minimal(POSTGRES);
    let mariadb = minimal(MARIADB);
    let quoted = |s: &str| format!("\"{s}\"");
    let lower = |v: &dyn std::fmt::Debug| format!("\"{v:?}\"").to_lowercase();
    let port = |c: &Config| {
        let d = c.target_description();
        let after_at = &d[d.find('@').unwrap()..];
        let colon = after_at.find(':').unwrap();
        let slash = after_at.find('/').unwrap();
        after_at[colon + 1..slash].to_owned()
    };
    let loopback = Config::parse(&config_with("", "", MIN_TARGET).replace("db1.internal", "127.0.0.1")).unwrap();
    let s = &sqlite;
    let checks: Vec<(&str, &str, Vec<String>)> = vec![
        ("`[source]`", "port", vec![s.source.port.to_string()]),
        ("`[source]`", "server_id", vec![s.source.server_id.to_string()]),
        ("`[source]`", "heartbeat_ms", vec![s.source.heartbeat_ms.to_string()]),
        ("`[source]`", "start", vec![quoted(&s.source.start)]),
        (
            "`[source]`",
            "tls_mode",
            vec![
                quoted(&s.source.tls().mode.to_string()),
                quoted(&loopback.source.tls().mode.to_string()),
            ],
        ),
        ("`[target]`", "port", vec![port(&mariadb), port(&postgres)]),
        (
            "`[target]`",
            "schema",
            vec![quoted(postgres.target_description().rsplit(' ').next().unwrap())],
        ),
        ("`[apply]`", "batch_max_rows", vec![s.apply.batch_max_rows.to_string()]),
        (
            "`[apply]`",
            "batch_max_delay_ms",
            vec![s.apply.batch_max_delay_ms.to_string()],
        ),
        (
            "`[apply]`",
            "writers",
            vec![s.writers().to_string(), postgres.writers().to_string()],
        ),
        ("`[apply]`", "commit_order", vec![lower(&s.apply.commit_order)]),
        ("`[backfill]`", "enabled", vec![s.backfill.enabled.to_string()]),
        ("`[backfill]`", "chunk_rows", vec![s.backfill.chunk_rows.to_string()]),
        (
            "`[backfill]`",
            "writers",
            vec![
                s.backfill_writers().to_string(),
                postgres.backfill_writers().to_string(),
            ],
        ),
        (
            "`[backfill]`",
            "parallel_tables",
            vec![s.backfill.parallel_tables.to_string()],
        ),
        ("`[backfill]`", "max_lag_ms", vec![s.backfill.max_lag_ms.to_string()]),
        ("`[verify]`", "incremental", vec![s.verify.incremental.to_string()]),
        ("`[verify]`", "on_mismatch", vec![lower(&s.verify.on_mismatch)]),
        (
            "`[verify]`",
            "max_rows_per_transaction",
            vec![s.verify.max_rows_per_transaction.to_string()],
        ),
        ("`[lag]`", "heartbeat", vec![s.lag.heartbeat.to_string()]),
        ("`[lag]`", "interval_ms", vec![s.lag.interval_ms.to_string()]),
        ("`[lag]`", "database", vec![quoted(&s.lag.database)]),
        ("`[lag]`", "table", vec![quoted(&s.lag.table)]),
        ("`[lag]`", "window_s", vec![s.lag.window_s.to_string()]),
    ];
    assert_eq!(mariadb.writers(), postgres.writers());
    assert_eq!(mariadb.backfill_writers(), postgres.backfill_writers());
    for (heading, key, values) in checks {
        let cell = default_cell(section(&doc, heading), key);
        // The first value opens the cell; the others (other kinds, loopback) follow in it.
        assert!(
            cell.starts_with(&format!("`{}`", values[0])),
            "docs/config.md {heading} `{key}`: the default is `{}`, the doc says {cell}",
            values[0]
        );
        for value in &values {
            assert!(
                cell.contains(&format!("`{value}`")),
                "docs/config.md {heading} `{key}`: the default `{value}` is missing from {cell}"
            );
        }
    }
    // Optional keys without a default say "unset" (metrics are off unless `listen` is set).
    assert_eq!(s.metrics.listen_addr().unwrap(), None);
    assert!(default_cell(section(&doc, "`[metrics]`"), "listen").starts_with("unset"));
    assert!(s.apply.writers.is_none() && s.backfill.writers.is_none());
}
