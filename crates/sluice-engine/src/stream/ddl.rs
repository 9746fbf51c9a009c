//! Recognising what a QUERY event's statement does to tables.
//!
//! This is not a SQL parser: it tokenizes just enough (identifiers, quoted names, strings,
//! comments) to tell which tables a DDL statement touches and how, so that sluice can stop
//! *before* applying anything past a change it cannot follow. Column changes are also
//! caught independently by comparing each TABLE_MAP with the known definition, so an
//! unrecognised ALTER cannot slip through silently.

/// A `schema.table` name as written (schema filled in from the event's default schema).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlterAction {
    AddColumn(String),
    DropColumn(String),
    /// MODIFY (same name) or CHANGE old new.
    ChangeColumn {
        old: String,
        new: String,
    },
    RenameColumn {
        old: String,
        new: String,
    },
    RenameTable(TableName),
    /// Index, engine, option and other changes that do not change columns.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    Alter {
        table: TableName,
        actions: Vec<AlterAction>,
    },
    Create {
        table: TableName,
    },
    Drop {
        tables: Vec<TableName>,
    },
    Rename {
        pairs: Vec<(TableName, TableName)>,
    },
    Truncate {
        table: TableName,
    },
    /// INSERT/UPDATE/DELETE/REPLACE/LOAD logged as a statement (binlog_format=STATEMENT or
    /// MIXED). `table` is the first table named, when it could be found.
    Dml {
        table: Option<TableName>,
    },
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Str,
    Punct(char),
}

fn tokenize(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') || c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            // Executable comments (/*! ... */ and /*M! ... */) hold real SQL: keep their body.
            let executable = matches!(chars.get(i + 2), Some('!'))
                || (chars.get(i + 2) == Some(&'M') && chars.get(i + 3) == Some(&'!'));
            if executable {
                i += if chars[i + 2] == '!' { 3 } else { 4 };
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
        } else if c == '*' && chars.get(i + 1) == Some(&'/') {
            i += 2;
        } else if c == '`' || c == '"' {
            let quote = c;
            let mut s = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == quote {
                    if chars.get(i + 1) == Some(&quote) {
                        s.push(quote);
                        i += 2;
                        continue;
                    }
                    break;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Token::Quoted(s));
        } else if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\\' {
                    i += 2;
                    continue;
                }
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Str);
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    default_schema: &'a str,
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Token::Word(w)) => Some(w.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.peek_word().as_deref() == Some(w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.toks.get(self.pos) == Some(&Token::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Token::Word(w)) | Some(Token::Quoted(w)) => {
                self.pos += 1;
                Some(w.clone())
            }
            _ => None,
        }
    }

    fn table_name(&mut self) -> Option<TableName> {
        let first = self.ident()?;
        if self.eat_punct('.') {
            let table = self.ident()?;
            Some(TableName { schema: first, table })
        } else {
            Some(TableName {
                schema: self.default_schema.to_owned(),
                table: first,
            })
        }
    }

    fn skip_if_exists(&mut self) {
        let save = self.pos;
        if self.eat_word("IF") {
            if self.eat_word("NOT") && self.eat_word("EXISTS") || self.eat_word("EXISTS") {
                return;
            }
            self.pos = save;
        }
    }

    /// Skips to the next top-level comma (or the end); returns false at the end.
    fn skip_clause(&mut self) -> bool {
        let mut depth = 0i32;
        while let Some(t) = self.toks.get(self.pos) {
            match t {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') => depth -= 1,
                Token::Punct(',') if depth == 0 => {
                    self.pos += 1;
                    return true;
                }
                _ => {}
            }
            self.pos += 1;
        }
        false
    }

    fn alter_action(&mut self) -> AlterAction {
        let word = self.peek_word();
        match word.as_deref() {
            Some("ADD") => {
                self.pos += 1;
                let is_column = self.eat_word("COLUMN");
                let not_a_column = matches!(
                    self.peek_word().as_deref(),
                    Some(
                        "INDEX"
                            | "KEY"
                            | "UNIQUE"
                            | "PRIMARY"
                            | "FULLTEXT"
                            | "SPATIAL"
                            | "CONSTRAINT"
                            | "FOREIGN"
                            | "CHECK"
                            | "PARTITION"
                            | "PERIOD"
                            | "SYSTEM"
                    )
                );
                if !is_column && not_a_column {
                    return AlterAction::Other;
                }
                self.skip_if_exists();
                // ADD (a INT, b INT) adds several; report the first, the TABLE_MAP check
                // covers the rest.
                self.eat_punct('(');
                self.ident().map(AlterAction::AddColumn).unwrap_or(AlterAction::Other)
            }
            Some("DROP") => {
                self.pos += 1;
                let is_column = self.eat_word("COLUMN");
                let not_a_column = matches!(
                    self.peek_word().as_deref(),
                    Some("INDEX" | "KEY" | "PRIMARY" | "FOREIGN" | "CONSTRAINT" | "CHECK" | "PARTITION" | "SYSTEM")
                );
                if !is_column && not_a_column {
                    return AlterAction::Other;
                }
                self.skip_if_exists();
                self.ident().map(AlterAction::DropColumn).unwrap_or(AlterAction::Other)
            }
            Some("MODIFY") => {
                self.pos += 1;
                self.eat_word("COLUMN");
                self.skip_if_exists();
                self.ident()
                    .map(|c| AlterAction::ChangeColumn { old: c.clone(), new: c })
                    .unwrap_or(AlterAction::Other)
            }
            Some("CHANGE") => {
                self.pos += 1;
                self.eat_word("COLUMN");
                self.skip_if_exists();
                match (self.ident(), self.ident()) {
                    (Some(old), Some(new)) => AlterAction::ChangeColumn { old, new },
                    _ => AlterAction::Other,
                }
            }
            Some("RENAME") => {
                self.pos += 1;
                if self.eat_word("COLUMN") {
                    let old = self.ident();
                    self.eat_word("TO");
                    match (old, self.ident()) {
                        (Some(old), Some(new)) => AlterAction::RenameColumn { old, new },
                        _ => AlterAction::Other,
                    }
                } else if matches!(self.peek_word().as_deref(), Some("INDEX" | "KEY")) {
                    AlterAction::Other
                } else {
                    let _ = self.eat_word("TO") || self.eat_word("AS");
                    self.table_name()
                        .map(AlterAction::RenameTable)
                        .unwrap_or(AlterAction::Other)
                }
            }
            _ => AlterAction::Other,
        }
    }
}

/// Classifies one statement. `default_schema` is the QUERY event's current database.
pub fn classify(sql: &str, default_schema: &str) -> Statement {
    let toks = tokenize(sql);
    let mut p = Parser {
        toks,
        pos: 0,
        default_schema,
    };
    let Some(first) = p.peek_word() else {
        return Statement::Other;
    };
    p.pos += 1;
    match first.as_str() {
        "BEGIN" => Statement::Begin,
        "COMMIT" => Statement::Commit,
        "ROLLBACK" => Statement::Rollback,
        "XA" => Statement::Other,
        "ALTER" => {
            // ALTER [ONLINE] [IGNORE] TABLE name
            while matches!(p.peek_word().as_deref(), Some("ONLINE" | "IGNORE")) {
                p.pos += 1;
            }
            if !p.eat_word("TABLE") {
                return Statement::Other;
            }
            p.skip_if_exists();
            let Some(table) = p.table_name() else {
                return Statement::Other;
            };
            let mut actions = Vec::new();
            loop {
                let start = p.pos;
                let action = p.alter_action();
                p.pos = p.pos.max(start);
                actions.push(action);
                if !p.skip_clause() {
                    break;
                }
            }
            Statement::Alter { table, actions }
        }
        "CREATE" => {
            while matches!(p.peek_word().as_deref(), Some("OR" | "REPLACE" | "TEMPORARY")) {
                p.pos += 1;
            }
            if !p.eat_word("TABLE") {
                return Statement::Other;
            }
            p.skip_if_exists();
            p.table_name()
                .map(|table| Statement::Create { table })
                .unwrap_or(Statement::Other)
        }
        "DROP" => {
            p.eat_word("TEMPORARY");
            if !p.eat_word("TABLE") {
                return Statement::Other;
            }
            p.skip_if_exists();
            let mut tables = Vec::new();
            while let Some(t) = p.table_name() {
                tables.push(t);
                if !p.eat_punct(',') {
                    break;
                }
            }
            Statement::Drop { tables }
        }
        "RENAME" => {
            if !p.eat_word("TABLE") {
                return Statement::Other;
            }
            let mut pairs = Vec::new();
            loop {
                p.skip_if_exists();
                let Some(from) = p.table_name() else { break };
                if !p.eat_word("TO") {
                    break;
                }
                let Some(to) = p.table_name() else { break };
                pairs.push((from, to));
                if !p.eat_punct(',') {
                    break;
                }
            }
            Statement::Rename { pairs }
        }
        "TRUNCATE" => {
            p.eat_word("TABLE");
            p.table_name()
                .map(|table| Statement::Truncate { table })
                .unwrap_or(Statement::Other)
        }
        "INSERT" | "REPLACE" => {
            while matches!(
                p.peek_word().as_deref(),
                Some("LOW_PRIORITY" | "DELAYED" | "HIGH_PRIORITY" | "IGNORE" | "INTO")
            ) {
                p.pos += 1;
            }
            Statement::Dml { table: p.table_name() }
        }
        "UPDATE" => {
            while matches!(p.peek_word().as_deref(), Some("LOW_PRIORITY" | "IGNORE")) {
                p.pos += 1;
            }
            Statement::Dml { table: p.table_name() }
        }
        "DELETE" => {
            while let Some(w) = p.peek_word() {
                p.pos += 1;
                if w == "FROM" {
                    break;
                }
            }
            Statement::Dml { table: p.table_name() }
        }
        "LOAD" => Statement::Dml { table: None },
        _ => Statement::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: &str, table: &str) -> TableName {
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }

    #[test]
    fn alter_actions() {
        let s = classify("ALTER TABLE `shop`.`or``ders` ADD COLUMN note TEXT DEFAULT 'a,b', DROP INDEX ix, DROP COLUMN `x`, MODIFY y INT, CHANGE COLUMN a b INT, RENAME COLUMN c TO d", "db");
        assert_eq!(
            s,
            Statement::Alter {
                table: t("shop", "or`ders"),
                actions: vec![
                    AlterAction::AddColumn("note".into()),
                    AlterAction::Other,
                    AlterAction::DropColumn("x".into()),
                    AlterAction::ChangeColumn {
                        old: "y".into(),
                        new: "y".into()
                    },
                    AlterAction::ChangeColumn {
                        old: "a".into(),
                        new: "b".into()
                    },
                    AlterAction::RenameColumn {
                        old: "c".into(),
                        new: "d".into()
                    },
                ]
            }
        );
        assert_eq!(
            classify("alter table orders add index (a), add unique key u (b)", "shop"),
            Statement::Alter {
                table: t("shop", "orders"),
                actions: vec![AlterAction::Other, AlterAction::Other]
            }
        );
        assert_eq!(
            classify("ALTER TABLE orders RENAME TO archive.orders_old", "shop"),
            Statement::Alter {
                table: t("shop", "orders"),
                actions: vec![AlterAction::RenameTable(t("archive", "orders_old"))]
            }
        );
    }

    #[test]
    fn table_level_statements() {
        assert_eq!(
            classify("/* c */ TRUNCATE TABLE orders", "shop"),
            Statement::Truncate {
                table: t("shop", "orders")
            }
        );
        assert_eq!(
            classify("DROP TABLE IF EXISTS a, b.c /* generated by server */", "s"),
            Statement::Drop {
                tables: vec![t("s", "a"), t("b", "c")]
            }
        );
        assert_eq!(
            classify("RENAME TABLE a TO b, s.c TO s.d", "x"),
            Statement::Rename {
                pairs: vec![(t("x", "a"), t("x", "b")), (t("s", "c"), t("s", "d"))]
            }
        );
        assert_eq!(
            classify("CREATE TABLE IF NOT EXISTS n (id int)", "s"),
            Statement::Create { table: t("s", "n") }
        );
        assert_eq!(classify("BEGIN", ""), Statement::Begin);
        assert_eq!(classify("COMMIT", ""), Statement::Commit);
        assert_eq!(
            classify("insert into s.t values (1)", "x"),
            Statement::Dml {
                table: Some(t("s", "t"))
            }
        );
        assert_eq!(
            classify("DELETE LOW_PRIORITY FROM t WHERE a=1", "x"),
            Statement::Dml {
                table: Some(t("x", "t"))
            }
        );
        assert_eq!(classify("GRANT ALL ON *.* TO x", "x"), Statement::Other);
    }
}
