//! What the source user may do, read from `SHOW GRANTS`, held against what sluice needs.
//!
//! `SHOW GRANTS` (for the current user, with its enabled roles) lists lines such as
//! `GRANT SELECT, INSERT ON `shop`.* TO `u`@`%``. Each line is split into its privileges and
//! the object they are on: every database (`*.*`), one database or a `LIKE` pattern of
//! databases (`` `shop\_%`.* ``), or one table. Column-level grants (`SELECT (a, b)`) do not
//! let sluice read whole rows, so they do not count as SELECT. Hand-written: no maintained
//! crate parses MariaDB/MySQL grant lines.
//!
//! The analysis only decides what to *ask for*; the tables sluice will read are also probed
//! with a real `SELECT` (see `preflight`), so a grant this parser misreads cannot pass a
//! broken setup.

/// One `GRANT … ON … TO …` line.
#[derive(Debug, Clone, PartialEq)]
struct Grant {
    /// Upper-case privilege names, column-level ones left out.
    privileges: Vec<String>,
    on: GrantObject,
}

#[derive(Debug, Clone, PartialEq)]
enum GrantObject {
    Global,
    /// A database name, or a `LIKE` pattern of names (`_`, `%`, `\` escapes).
    Database(String),
    Table {
        database: String,
        table: String,
    },
}

/// The privileges of the source user.
#[derive(Debug, Default)]
pub struct Grants {
    grants: Vec<Grant>,
}

impl Grants {
    /// Parses the lines `SHOW GRANTS` returned; lines that grant nothing sluice uses (roles,
    /// PROXY, routines) are skipped.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Grants {
        Grants {
            grants: lines.iter().filter_map(|l| parse_line(l.as_ref())).collect(),
        }
    }

    fn any(&self, privilege: &str, applies: impl Fn(&GrantObject) -> bool) -> bool {
        self.grants.iter().any(|g| {
            applies(&g.on)
                && g.privileges
                    .iter()
                    .any(|p| p == privilege || p == "ALL PRIVILEGES" || p == "ALL")
        })
    }

    /// Whether `privilege` is held on every database.
    pub fn global(&self, privilege: &str) -> bool {
        self.any(privilege, |on| *on == GrantObject::Global)
    }

    /// Whether `privilege` is held on all of `database` (globally or for the database).
    pub fn on_database(&self, privilege: &str, database: &str) -> bool {
        self.any(privilege, |on| match on {
            GrantObject::Global => true,
            GrantObject::Database(pattern) => like(pattern, database),
            GrantObject::Table { .. } => false,
        })
    }

    /// Whether `privilege` is held on the table (globally, for its database, or for it).
    pub fn on_table(&self, privilege: &str, database: &str, table: &str) -> bool {
        self.on_database(privilege, database)
            || self.any(
                privilege,
                |on| matches!(on, GrantObject::Table { database: d, table: t } if d == database && t == table),
            )
    }

    /// Whether `privilege` is held on some database whose name `matches` (a glob of the
    /// config), or on every database.
    pub fn on_some_database(&self, privilege: &str, matches: impl Fn(&str) -> bool) -> bool {
        self.any(privilege, |on| match on {
            GrantObject::Global => true,
            GrantObject::Database(pattern) => matches(&unescape_like(pattern)),
            GrantObject::Table { database, .. } => matches(database),
        })
    }
}

fn parse_line(line: &str) -> Option<Grant> {
    let rest = line.trim().strip_prefix("GRANT ")?;
    let on_at = find_outside_parens(rest, " ON ")?;
    let (privileges, rest) = (&rest[..on_at], &rest[on_at + 4..]);
    let to_at = rest.find(" TO ")?;
    let object = rest[..to_at].trim();
    if object.starts_with("FUNCTION ") || object.starts_with("PROCEDURE ") || object.starts_with("PACKAGE ") {
        return None;
    }
    let on = parse_object(object)?;
    let privileges = split_outside_parens(privileges)
        .into_iter()
        .map(|p| p.trim().to_ascii_uppercase())
        // `SELECT (a, b)`: column-level, not whole rows.
        .filter(|p| !p.contains('('))
        .collect();
    Some(Grant { privileges, on })
}

fn parse_object(object: &str) -> Option<GrantObject> {
    if object == "*.*" {
        return Some(GrantObject::Global);
    }
    let (database, rest) = take_identifier(object)?;
    let rest = rest.strip_prefix('.')?;
    if rest == "*" {
        return Some(GrantObject::Database(database));
    }
    let (table, rest) = take_identifier(rest)?;
    rest.is_empty().then_some(GrantObject::Table { database, table })
}

/// A backquoted (`` `a``b` `` is a`b) or bare identifier, and what follows it.
fn take_identifier(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('`') {
        let mut name = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if chars.peek().is_some_and(|&(_, n)| n == '`') {
                    chars.next();
                    name.push('`');
                } else {
                    return Some((name, &body[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = s.find('.').unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
    }
}

fn find_outside_parens(s: &str, needle: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 && s[i..].starts_with(needle) => return Some(i),
            _ => {}
        }
    }
    None
}

fn split_outside_parens(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// SQL `LIKE` as database-level grants use it: `%` any run, `_` one character, `\` escapes.
fn like(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('%') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('_') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// A database-level grant's name with its `LIKE` escapes removed (`shop\_eu` → `shop_eu`).
fn unescape_like(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `user@host` as `CURRENT_USER()` gives it, written the way a GRANT statement names it.
pub fn grantee(current_user: &str) -> String {
    let (user, host) = current_user.rsplit_once('@').unwrap_or((current_user, "%"));
    format!("'{}'@'{}'", user.replace('\'', "''"), host.replace('\'', "''"))
}

/// A quoted database name for a GRANT statement.
pub fn quote_database(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(lines: &[&str]) -> Grants {
        Grants::parse(lines)
    }

    #[test]
    fn global_database_table_and_column_grants() {
        let g = grants(&[
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `sluice_repl`@`%` IDENTIFIED BY PASSWORD '*AB'",
            "GRANT SELECT ON `shop`.* TO `sluice_repl`@`%`",
            "GRANT SELECT (`id`, `name`), INSERT ON `crm`.`people` TO `sluice_repl`@`%`",
            "GRANT SELECT ON `odd``name`.`t.1` TO `sluice_repl`@`%`",
            "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `sluice_repl`@`%`",
            "GRANT `reader` TO `sluice_repl`@`%`",
        ]);
        assert!(g.global("REPLICATION SLAVE") && g.global("BINLOG MONITOR"));
        assert!(!g.global("SELECT"));
        assert!(g.on_database("SELECT", "shop") && g.on_table("SELECT", "shop", "orders"));
        assert!(!g.on_database("SELECT", "crm"));
        // Column-level SELECT cannot read whole rows.
        assert!(!g.on_table("SELECT", "crm", "people") && g.on_table("INSERT", "crm", "people"));
        assert!(g.on_table("SELECT", "odd`name", "t.1"));
        assert!(!g.on_table("EXECUTE", "shop", "p"));
    }

    #[test]
    fn all_privileges_and_like_patterns() {
        let g = grants(&[
            "GRANT ALL PRIVILEGES ON `shop\\_%`.* TO `u`@`localhost`",
            "GRANT USAGE ON *.* TO `u`@`localhost`",
        ]);
        assert!(g.on_database("SELECT", "shop_eu"));
        // `\_` is a literal underscore.
        assert!(!g.on_database("SELECT", "shopXeu"));
        assert!(!g.on_database("SELECT", "crm"));
        assert!(g.on_some_database("SELECT", |d| d.starts_with("shop_")));
        assert!(!g.global("REPLICATION SLAVE"));
    }

    #[test]
    fn grantee_is_quoted_for_a_grant_statement() {
        assert_eq!(grantee("sluice_repl@%"), "'sluice_repl'@'%'");
        assert_eq!(grantee("o'brien@10.0.0.%"), "'o''brien'@'10.0.0.%'");
    }
}
