//! Row filters: a small SQL-like predicate language evaluated on source row images.
//!
//! A filter is parsed once from the config text ([`parse`]) and compiled once per table
//! definition ([`compile`]): column names become indexes, every comparison is type-checked
//! against the column's [`ColumnKind`], and each literal is converted once into the form the
//! column's values are compared in. [`CompiledFilter::matches`] then only walks indexes and
//! compares; it never allocates and never fails.
//!
//! Semantics in short (the reference is docs/filters-and-transforms.md):
//!
//! * SQL three-valued logic: a comparison involving NULL is *unknown*, `NOT unknown` is
//!   unknown, and a row passes only when the whole predicate is TRUE.
//! * Integers (signed, unsigned, YEAR, BIT) compare exactly as mathematical integers; DECIMAL
//!   compares exactly by its decimal text; FLOAT/DOUBLE compare as `f64` (a FLOAT value is
//!   widened exactly, as MySQL does); a number literal is exact.
//! * DATE and DATETIME compare by their calendar fields; TIMESTAMP literals are read as UTC.
//! * Text compares byte by byte (a binary collation): `'A' = 'a'` is false, unlike under the
//!   source's usual case-insensitive collations, and trailing spaces are significant.
//!
//! Errors ([`FilterError`]) carry the 1-based character position in the filter text. They
//! quote the filter text and the table's schema (column names, ENUM labels), never row values.

use std::cmp::Ordering;
use std::fmt;

use sluice_binlog::value::days_from_civil;
use sluice_binlog::{ColumnDef, ColumnKind, TableDef, Value};

/// A syntax error, or a compile error against a table definition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct FilterError {
    /// 1-based character (not byte) position in the filter text; one past the last character
    /// when the text ends too early.
    pub position: usize,
    /// What is wrong. Never contains row values.
    pub message: String,
}

fn fail<T>(position: usize, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        position,
        message: message.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------------------------

/// A parsed filter, not yet bound to a table.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `left op right`.
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
    },
    /// `operand [NOT] IN (list…)`.
    InList {
        operand: Operand,
        list: Vec<Operand>,
        negated: bool,
    },
    /// `operand [NOT] BETWEEN low AND high` (both bounds inclusive).
    Between {
        operand: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    /// `operand IS [NOT] NULL`.
    IsNull {
        operand: Operand,
        negated: bool,
    },
    /// `operand [NOT] LIKE 'prefix%'` or `operand [NOT] LIKE 'exact'`.
    Like {
        operand: Operand,
        pattern: LikePattern,
        negated: bool,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    fn test(self, ord: Ordering) -> bool {
        match self {
            CompareOp::Eq => ord == Ordering::Equal,
            CompareOp::Ne => ord != Ordering::Equal,
            CompareOp::Lt => ord == Ordering::Less,
            CompareOp::Le => ord != Ordering::Greater,
            CompareOp::Gt => ord == Ordering::Greater,
            CompareOp::Ge => ord != Ordering::Less,
        }
    }
}

/// A column reference or a literal, with the 1-based character position where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Operand {
    pub term: Term,
    pub position: usize,
}

/// What an [`Operand`] is.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// A column name (bare or backquoted, with backquotes removed). Matched case-insensitively.
    Column(String),
    Literal(Literal),
}

/// A literal as written in the filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    /// A number as written (`-12`, `12.50`, `1e3`), already checked to be a valid number.
    /// Number literals are exact: `1e3` is the integer 1000, `0.1` is one tenth.
    Number(String),
    /// A string with its escapes resolved. As in MySQL, `\%` and `\_` keep their backslash.
    String(String),
    /// `DATE '…'`, already checked to be `YYYY-MM-DD`.
    Date(String),
    /// `TIME '…'`, already checked to be a time.
    Time(String),
    /// `TIMESTAMP '…'`, already checked to be a date and time (read as UTC for TIMESTAMP
    /// columns, as wall-clock fields for DATE and DATETIME columns).
    Timestamp(String),
}

/// The supported LIKE patterns: a literal prefix followed by one trailing `%`, or an exact
/// string without wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LikePattern {
    /// The literal part, with `\%`, `\_` and `\\` escapes resolved.
    pub prefix: String,
    /// True when the pattern has no trailing `%` (the value must equal `prefix`).
    pub exact: bool,
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A bare word: an identifier or a keyword.
    Word(String),
    /// A backquoted identifier.
    Quoted(String),
    Str(String),
    Num(String),
    LParen,
    RParen,
    Comma,
    Minus,
    Op(CompareOp),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// 1-based character position.
    pos: usize,
    /// The token's text as written, for messages.
    text: String,
}

/// Words that can't be bare column names (backquote such a column: `` `in` ``).
const RESERVED: &[&str] = &[
    "AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL", "LIKE", "TRUE", "FALSE",
];

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let pos = i + 1;
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '-' => {
                i += 1;
                Tok::Minus
            }
            '=' => {
                i += 1;
                Tok::Op(CompareOp::Eq)
            }
            '<' => match at(i + 1) {
                Some('=') if at(i + 2) == Some('>') => {
                    return fail(
                        pos,
                        "'<=>' is not supported; use IS NULL / IS NOT NULL to test for NULL",
                    )
                }
                Some('=') => {
                    i += 2;
                    Tok::Op(CompareOp::Le)
                }
                Some('>') => {
                    i += 2;
                    Tok::Op(CompareOp::Ne)
                }
                _ => {
                    i += 1;
                    Tok::Op(CompareOp::Lt)
                }
            },
            '>' => {
                if at(i + 1) == Some('=') {
                    i += 2;
                    Tok::Op(CompareOp::Ge)
                } else {
                    i += 1;
                    Tok::Op(CompareOp::Gt)
                }
            }
            '!' => {
                if at(i + 1) == Some('=') {
                    i += 2;
                    Tok::Op(CompareOp::Ne)
                } else {
                    return fail(pos, "unexpected '!'; write NOT to negate a condition");
                }
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match at(i) {
                        None => return fail(pos, "unterminated string: missing the closing quote (')"),
                        Some('\'') if at(i + 1) == Some('\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let Some(e) = at(i + 1) else {
                                return fail(pos, "unterminated string: missing the closing quote (')");
                            };
                            match e {
                                '0' => s.push('\0'),
                                'b' => s.push('\u{8}'),
                                'n' => s.push('\n'),
                                'r' => s.push('\r'),
                                't' => s.push('\t'),
                                'Z' => s.push('\u{1a}'),
                                // As in MySQL: kept with their backslash, so LIKE sees them as
                                // escaped wildcards.
                                '%' | '_' => {
                                    s.push('\\');
                                    s.push(e);
                                }
                                other => s.push(other),
                            }
                            i += 2;
                        }
                        Some(other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            '"' => {
                return fail(
                    pos,
                    "strings are written in single quotes ('…'); quote column names with backquotes (`…`)",
                )
            }
            '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match at(i) {
                        None => return fail(pos, "unterminated column name: missing the closing backquote (`)"),
                        Some('`') if at(i + 1) == Some('`') => {
                            s.push('`');
                            i += 2;
                        }
                        Some('`') => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                if s.is_empty() {
                    return fail(pos, "empty column name ``");
                }
                Tok::Quoted(s)
            }
            c if c.is_ascii_digit() || (c == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                while at(i).is_some_and(|d| d.is_ascii_digit()) {
                    i += 1;
                }
                if at(i) == Some('.') {
                    i += 1;
                    while at(i).is_some_and(|d| d.is_ascii_digit()) {
                        i += 1;
                    }
                }
                if matches!(at(i), Some('e' | 'E')) {
                    let digit_at = |j: usize| at(j).is_some_and(|d| d.is_ascii_digit());
                    if digit_at(i + 1) {
                        i += 1;
                    } else if matches!(at(i + 1), Some('+' | '-')) && digit_at(i + 2) {
                        i += 2;
                    }
                    while at(i).is_some_and(|d| d.is_ascii_digit()) {
                        i += 1;
                    }
                }
                if let Some(next) = at(i).filter(|&n| is_ident_char(n) || n == '.') {
                    return fail(i + 1, format!("unexpected character '{next}' in a number"));
                }
                Tok::Num(chars[start..i].iter().collect())
            }
            c if is_ident_start(c) => {
                while at(i).is_some_and(is_ident_char) {
                    i += 1;
                }
                Tok::Word(chars[start..i].iter().collect())
            }
            other => return fail(pos, format!("unexpected character '{other}'")),
        };
        out.push(Token {
            tok,
            pos,
            text: chars[start..i].iter().collect(),
        });
    }
    out.push(Token {
        tok: Tok::End,
        pos: chars.len() + 1,
        text: String::new(),
    });
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

/// Parses a filter. Checks syntax and literal formats only; column names and types are
/// checked by [`compile`].
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    let mut p = Parser { toks: lex(text)?, i: 0 };
    if p.peek().tok == Tok::End {
        return fail(1, "the filter is empty; expected a condition such as region = 'eu'");
    }
    let expr = p.parse_or()?;
    if p.peek().tok != Tok::End {
        let t = p.peek();
        let message = if t.tok == Tok::RParen {
            "unexpected ')' without a matching '('".to_string()
        } else {
            format!("unexpected '{}'; expected AND, OR or the end of the filter", t.text)
        };
        return fail(t.pos, message);
    }
    Ok(expr)
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.i]
    }

    fn peek2(&self) -> &Token {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if t.tok != Tok::End {
            self.i += 1;
        }
        t
    }

    fn at_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let found = self.at_kw(kw);
        if found {
            self.i += 1;
        }
        found
    }

    /// "expected {what} after '{previous token}'[, found '{current}']" at the current token.
    fn expected(&self, what: &str) -> FilterError {
        let t = self.peek();
        let mut message = format!("expected {what}");
        if self.i > 0 {
            message.push_str(&format!(" after '{}'", self.toks[self.i - 1].text));
        }
        if t.tok != Tok::End {
            message.push_str(&format!(", found '{}'", t.text));
        }
        FilterError {
            position: t.pos,
            message,
        }
    }

    fn parse_or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.parse_and()?;
        while self.eat_kw("OR") {
            let right = self.parse_and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.parse_not()?;
        while self.eat_kw("AND") {
            let right = self.parse_not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_not(&mut self) -> Result<Expr, FilterError> {
        if self.eat_kw("NOT") {
            return Ok(Expr::Not(Box::new(self.parse_not()?)));
        }
        self.parse_predicate()
    }

    fn parse_predicate(&mut self) -> Result<Expr, FilterError> {
        if self.peek().tok == Tok::LParen {
            let open = self.bump();
            let inner = self.parse_or()?;
            if self.peek().tok != Tok::RParen {
                let mut e = self.expected("')'");
                e.message
                    .push_str(&format!(" to close the '(' at position {}", open.pos));
                return Err(e);
            }
            self.bump();
            return Ok(inner);
        }
        let starts_operand = match &self.peek().tok {
            Tok::Word(w) => !RESERVED.iter().any(|r| w.eq_ignore_ascii_case(r)) || self.at_value_keyword(),
            Tok::Quoted(_) | Tok::Str(_) | Tok::Num(_) | Tok::Minus => true,
            _ => false,
        };
        if !starts_operand {
            return Err(self.expected("a condition"));
        }
        let operand = self.parse_operand()?;
        if let Tok::Op(op) = self.peek().tok {
            self.bump();
            let right = self.parse_operand()?;
            return Ok(Expr::Compare {
                left: operand,
                op,
                right,
            });
        }
        if self.eat_kw("IS") {
            let negated = self.eat_kw("NOT");
            if !self.eat_kw("NULL") {
                return Err(self.expected("NULL"));
            }
            return Ok(Expr::IsNull { operand, negated });
        }
        let negated = self.eat_kw("NOT");
        if self.eat_kw("IN") {
            return self.parse_in(operand, negated);
        }
        if self.eat_kw("BETWEEN") {
            let low = self.parse_operand()?;
            if !self.eat_kw("AND") {
                return Err(self.expected("AND (BETWEEN low AND high)"));
            }
            let high = self.parse_operand()?;
            return Ok(Expr::Between {
                operand,
                low,
                high,
                negated,
            });
        }
        if self.eat_kw("LIKE") {
            let t = self.peek().clone();
            let Tok::Str(s) = &t.tok else {
                return Err(self.expected("a string pattern such as 'abc%'"));
            };
            let pattern = like_pattern(s).map_err(|message| FilterError {
                position: t.pos,
                message,
            })?;
            self.bump();
            return Ok(Expr::Like {
                operand,
                pattern,
                negated,
            });
        }
        if negated {
            return Err(self.expected("IN, BETWEEN or LIKE"));
        }
        Err(self.expected("a comparison (=, <>, <, <=, >, >=, IN, BETWEEN, LIKE or IS NULL)"))
    }

    fn parse_in(&mut self, operand: Operand, negated: bool) -> Result<Expr, FilterError> {
        if self.peek().tok != Tok::LParen {
            return Err(self.expected("'(' to start the IN list"));
        }
        self.bump();
        let mut list = Vec::new();
        loop {
            list.push(self.parse_operand()?);
            match self.peek().tok {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RParen => {
                    self.bump();
                    break;
                }
                _ => return Err(self.expected("',' or ')' in the IN list")),
            }
        }
        Ok(Expr::InList { operand, list, negated })
    }

    /// Whether the current word is a keyword that starts a value (NULL, TRUE, FALSE).
    fn at_value_keyword(&self) -> bool {
        self.at_kw("NULL") || self.at_kw("TRUE") || self.at_kw("FALSE")
    }

    fn parse_operand(&mut self) -> Result<Operand, FilterError> {
        let t = self.peek().clone();
        let term = match &t.tok {
            Tok::Word(w) => {
                let upper = w.to_ascii_uppercase();
                match upper.as_str() {
                    "NULL" => Term::Literal(Literal::Null),
                    "TRUE" => Term::Literal(Literal::Bool(true)),
                    "FALSE" => Term::Literal(Literal::Bool(false)),
                    "DATE" | "TIME" | "TIMESTAMP" if matches!(self.peek2().tok, Tok::Str(_)) => {
                        self.bump();
                        let st = self.peek().clone();
                        let Tok::Str(s) = &st.tok else { unreachable!() };
                        let lit = match upper.as_str() {
                            "DATE" => match parse_civil(s) {
                                Some(c) if !c.has_time => Literal::Date(s.clone()),
                                _ => return fail(st.pos, format!("DATE literal '{s}' is not a date 'YYYY-MM-DD'")),
                            },
                            "TIME" => match parse_time(s) {
                                Some(_) => Literal::Time(s.clone()),
                                None => {
                                    return fail(
                                        st.pos,
                                        format!(
                                        "TIME literal '{s}' is not a time '[-]HH:MM:SS[.ffffff]' (at most 838:59:59)"
                                    ),
                                    )
                                }
                            },
                            _ => match parse_civil(s) {
                                Some(_) => Literal::Timestamp(s.clone()),
                                None => {
                                    return fail(
                                        st.pos,
                                        format!(
                                        "TIMESTAMP literal '{s}' is not a date and time 'YYYY-MM-DD HH:MM:SS[.ffffff]'"
                                    ),
                                    )
                                }
                            },
                        };
                        Term::Literal(lit)
                    }
                    _ if RESERVED.contains(&upper.as_str()) => return Err(self.expected("a value")),
                    _ => Term::Column(w.clone()),
                }
            }
            Tok::Quoted(name) => Term::Column(name.clone()),
            Tok::Str(s) => Term::Literal(Literal::String(s.clone())),
            Tok::Num(n) => {
                check_number(n, t.pos)?;
                Term::Literal(Literal::Number(n.clone()))
            }
            Tok::Minus => {
                self.bump();
                let nt = self.peek().clone();
                let Tok::Num(n) = &nt.tok else {
                    return Err(self.expected("a number"));
                };
                let n = format!("-{n}");
                check_number(&n, t.pos)?;
                Term::Literal(Literal::Number(n))
            }
            _ => return Err(self.expected("a value")),
        };
        self.bump();
        Ok(Operand { term, position: t.pos })
    }
}

fn check_number(text: &str, pos: usize) -> Result<(), FilterError> {
    Dec::parse_literal(text)
        .map(drop)
        .map_err(|message| FilterError { position: pos, message })
}

/// Checks a LIKE pattern: a literal prefix and at most one `%`, at the very end.
fn like_pattern(s: &str) -> Result<LikePattern, String> {
    let unsupported = || {
        format!(
            "LIKE pattern '{s}' is not supported: only a literal prefix followed by a single trailing '%' \
             (e.g. 'abc%') or an exact string without wildcards is; escape a literal % or _ as \\% or \\_"
        )
    };
    let mut prefix = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut exact = true;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) => prefix.push(e),
                None => prefix.push('\\'),
            },
            '%' if chars.peek().is_none() => exact = false,
            '%' | '_' => return Err(unsupported()),
            other => prefix.push(other),
        }
    }
    Ok(LikePattern { prefix, exact })
}

// ---------------------------------------------------------------------------------------------
// Exact decimals
// ---------------------------------------------------------------------------------------------

/// An exact decimal number, owned: sign, integer digits without leading zeros, fraction
/// digits without trailing zeros (zero is empty/empty, never negative).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Dec {
    pub(crate) negative: bool,
    pub(crate) int: String,
    pub(crate) frac: String,
    /// The value as plain decimal text (`-12.5`, `0`), for `f64` conversion.
    text: String,
}

/// Largest exponent magnitude accepted in a number literal (`1e400` is refused).
const MAX_EXPONENT: i64 = 400;

impl Dec {
    /// Parses a number literal: `[-+]digits[.digits][e[-+]digits]` (or `.digits…`).
    pub(crate) fn parse_literal(text: &str) -> Result<Dec, String> {
        let bad = || format!("'{text}' is not a number");
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(p) => {
                let e: i64 = rest[p + 1..].parse().map_err(|_| bad())?;
                if e.abs() > MAX_EXPONENT {
                    return Err(format!("the exponent of '{text}' is out of range"));
                }
                (&rest[..p], e)
            }
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let digits: String = format!("{int}{frac}");
        let point = int.len() as i64 + exponent;
        let (int_digits, frac_digits) = if point <= 0 {
            (String::new(), format!("{}{digits}", "0".repeat((-point) as usize)))
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            (
                digits[..point as usize].to_string(),
                digits[point as usize..].to_string(),
            )
        };
        Ok(Dec::from_parts(negative, &int_digits, &frac_digits))
    }

    fn from_parts(negative: bool, int: &str, frac: &str) -> Dec {
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let negative = negative && !(int.is_empty() && frac.is_empty());
        let mut text = String::new();
        if negative {
            text.push('-');
        }
        text.push_str(if int.is_empty() { "0" } else { int });
        if !frac.is_empty() {
            text.push('.');
            text.push_str(frac);
        }
        Dec {
            negative,
            int: int.to_string(),
            frac: frac.to_string(),
            text,
        }
    }

    /// The value as an `i128` when it is an integer that fits.
    fn to_i128(&self) -> Option<i128> {
        if !self.frac.is_empty() || self.int.len() > 38 {
            return None;
        }
        let magnitude: i128 = if self.int.is_empty() { 0 } else { self.int.parse().ok()? };
        Some(if self.negative { -magnitude } else { magnitude })
    }

    fn view(&self) -> DecView<'_> {
        DecView {
            negative: self.negative,
            int: self.int.as_bytes(),
            frac: self.frac.as_bytes(),
            text: &self.text,
        }
    }
}

/// A borrowed exact decimal, normalized like [`Dec`]; `text` is a parseable form of it.
#[derive(Clone, Copy, Debug)]
struct DecView<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    text: &'a str,
}

impl<'a> DecView<'a> {
    /// Reads DECIMAL text as the decoder produces it (`-12.340`, `0.00`). `None` when it isn't
    /// plain decimal text.
    fn parse(text: &'a str) -> Option<DecView<'a>> {
        let b = text.as_bytes();
        let (negative, rest) = match b.first() {
            Some(b'-') => (true, &b[1..]),
            Some(b'+') => (false, &b[1..]),
            _ => (false, b),
        };
        let (int, frac) = match rest.iter().position(|&c| c == b'.') {
            Some(p) => (&rest[..p], &rest[p + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if (int.is_empty() && frac.is_empty()) || !int.iter().chain(frac).all(u8::is_ascii_digit) {
            return None;
        }
        let lead = int.iter().take_while(|&&c| c == b'0').count();
        let trail = frac.iter().rev().take_while(|&&c| c == b'0').count();
        let int = &int[lead..];
        let frac = &frac[..frac.len() - trail];
        Some(DecView {
            negative: negative && !(int.is_empty() && frac.is_empty()),
            int,
            frac,
            text,
        })
    }

    /// An integer as a decimal view, its digits written into `buf` (no allocation).
    fn from_int(x: i128, buf: &'a mut [u8; 40]) -> DecView<'a> {
        let mut m = x.unsigned_abs();
        let mut start = buf.len();
        while m > 0 {
            start -= 1;
            buf[start] = b'0' + (m % 10) as u8;
            m /= 10;
        }
        DecView {
            negative: x < 0,
            int: &buf[start..],
            frac: &[],
            text: "",
        }
    }

    fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.is_empty()
    }
}

/// Exact comparison of two normalized decimals.
fn cmp_dec(a: &DecView<'_>, b: &DecView<'_>) -> Ordering {
    let sign = |d: &DecView<'_>| {
        if d.is_zero() {
            0
        } else if d.negative {
            -1
        } else {
            1
        }
    };
    let (sa, sb) = (sign(a), sign(b));
    if sa != sb || sa == 0 {
        return sa.cmp(&sb);
    }
    // Same sign, both non-zero: compare magnitudes. Without leading zeros, a longer integer
    // part is larger; without trailing zeros, fractions compare lexicographically.
    let magnitude = a
        .int
        .len()
        .cmp(&b.int.len())
        .then_with(|| a.int.cmp(b.int))
        .then_with(|| a.frac.cmp(b.frac));
    if sa < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

fn cmp_int_dec(x: i128, d: &DecView<'_>) -> Ordering {
    let mut buf = [0u8; 40];
    cmp_dec(&DecView::from_int(x, &mut buf), d)
}

// ---------------------------------------------------------------------------------------------
// Temporal literals
// ---------------------------------------------------------------------------------------------

/// A calendar date and time of day as written in a literal (zero and partial-zero dates
/// such as `0000-00-00` and `2024-00-00` allowed, as MySQL keeps them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Civil {
    pub(crate) year: u16,
    pub(crate) month: u8,
    pub(crate) day: u8,
    pub(crate) hour: u8,
    pub(crate) minute: u8,
    pub(crate) second: u8,
    pub(crate) micros: u32,
    /// Whether the text had a time part.
    pub(crate) has_time: bool,
}

impl Civil {
    fn is_zero(&self) -> bool {
        self.year == 0
            && self.month == 0
            && self.day == 0
            && self.hour == 0
            && self.minute == 0
            && self.second == 0
            && self.micros == 0
    }

    /// Seconds and microseconds since the Unix epoch, reading the fields as UTC. The zero
    /// date maps to `(0, 0)` (MySQL's zero TIMESTAMP); `None` for partial-zero dates.
    pub(crate) fn to_unix_utc(self) -> Option<(i64, u32)> {
        if self.is_zero() {
            return Some((0, 0));
        }
        if self.month == 0 || self.day == 0 {
            return None;
        }
        let days = days_from_civil(i64::from(self.year), u32::from(self.month), u32::from(self.day));
        let seconds =
            days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second);
        Some((seconds, self.micros))
    }
}

/// A TIME literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeLit {
    pub(crate) negative: bool,
    pub(crate) hours: u32,
    pub(crate) minutes: u8,
    pub(crate) seconds: u8,
    pub(crate) micros: u32,
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn eat(&mut self, c: u8) -> bool {
        let found = self.b.get(self.i) == Some(&c);
        if found {
            self.i += 1;
        }
        found
    }

    /// Between `min` and `max` decimal digits; returns the value and the digit count.
    fn digits(&mut self, min: usize, max: usize) -> Option<(u32, usize)> {
        let mut value = 0u32;
        let mut n = 0;
        while n < max {
            match self.b.get(self.i) {
                Some(&d) if d.is_ascii_digit() => {
                    value = value * 10 + u32::from(d - b'0');
                    self.i += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        (n >= min).then_some((value, n))
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }

    /// `H[H[H]]:MM[:SS[.f{1,6}]]` → (hours, minutes, seconds, micros).
    fn clock(&mut self) -> Option<(u32, u8, u8, u32)> {
        let (hours, _) = self.digits(1, 3)?;
        if !self.eat(b':') {
            return None;
        }
        let (minutes, _) = self.digits(2, 2)?;
        let (mut seconds, mut micros) = (0, 0);
        if self.eat(b':') {
            seconds = self.digits(2, 2)?.0;
            if self.eat(b'.') {
                let (f, n) = self.digits(1, 6)?;
                micros = f * 10u32.pow(6 - n as u32);
            }
        }
        if minutes > 59 || seconds > 59 {
            return None;
        }
        Some((hours, minutes as u8, seconds as u8, micros))
    }
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `YYYY-MM-DD` optionally followed by `' '` or `T` and `HH:MM[:SS[.ffffff]]`.
pub(crate) fn parse_civil(s: &str) -> Option<Civil> {
    let mut p = Scan { b: s.as_bytes(), i: 0 };
    let (year, _) = p.digits(4, 4)?;
    if !p.eat(b'-') {
        return None;
    }
    let (month, _) = p.digits(1, 2)?;
    if !p.eat(b'-') {
        return None;
    }
    let (day, _) = p.digits(1, 2)?;
    if month > 12 || day > 31 || (month > 0 && day > 0 && day > days_in_month(year, month)) {
        return None;
    }
    let mut civil = Civil {
        year: year as u16,
        month: month as u8,
        day: day as u8,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
        has_time: false,
    };
    if !p.done() {
        if !(p.eat(b' ') || p.eat(b'T')) {
            return None;
        }
        while p.eat(b' ') {}
        let (hour, minute, second, micros) = p.clock()?;
        if hour > 23 {
            return None;
        }
        civil.hour = hour as u8;
        civil.minute = minute;
        civil.second = second;
        civil.micros = micros;
        civil.has_time = true;
    }
    p.done().then_some(civil)
}

/// Parses `[-]H[H[H]]:MM[:SS[.ffffff]]`, at most 838:59:59.999999 either way.
pub(crate) fn parse_time(s: &str) -> Option<TimeLit> {
    let mut p = Scan { b: s.as_bytes(), i: 0 };
    let negative = p.eat(b'-');
    let (hours, minutes, seconds, micros) = p.clock()?;
    if !p.done() || hours > 838 {
        return None;
    }
    Some(TimeLit {
        negative,
        hours,
        minutes,
        seconds,
        micros,
    })
}

/// Packs calendar fields into an integer that orders like the fields (year, month, … micros).
fn civil_key(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8, micros: u32) -> u64 {
    (u64::from(year) << 46)
        | (u64::from(month & 0xf) << 42)
        | (u64::from(day & 0x1f) << 37)
        | (u64::from(hour & 0x1f) << 32)
        | (u64::from(minute & 0x3f) << 26)
        | (u64::from(second & 0x3f) << 20)
        | u64::from(micros & 0xf_ffff)
}

/// A TIMESTAMP as microseconds since the epoch; the zero timestamp sorts before everything.
fn instant_micros(seconds: i64, micros: u32) -> i64 {
    if seconds == 0 && micros == 0 {
        return i64::MIN;
    }
    seconds.saturating_mul(1_000_000).saturating_add(i64::from(micros))
}

fn time_micros(negative: bool, hours: u32, minutes: u8, seconds: u8, micros: u32) -> i64 {
    let total =
        (i64::from(hours) * 3600 + i64::from(minutes) * 60 + i64::from(seconds)) * 1_000_000 + i64::from(micros);
    if negative {
        -total
    } else {
        total
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled form
// ---------------------------------------------------------------------------------------------

/// A filter bound to one table definition. Cheap to evaluate; see [`CompiledFilter::matches`].
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    root: Node,
}

#[derive(Clone, Debug)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Compare {
        left: Arg,
        op: CompareOp,
        right: Arg,
    },
    In {
        column: usize,
        list: Vec<Const>,
        negated: bool,
    },
    Between {
        column: usize,
        low: Arg,
        high: Arg,
        negated: bool,
    },
    IsNull {
        column: usize,
        negated: bool,
    },
    Like {
        column: usize,
        prefix: Vec<u8>,
        exact: bool,
        negated: bool,
    },
}

#[derive(Clone, Debug)]
enum Arg {
    Column(usize),
    Const(Const),
}

/// A literal converted for the column it is compared with.
#[derive(Clone, Debug)]
enum Const {
    Int(i128),
    Dec(Dec),
    F64(f64),
    Civil(u64),
    Instant(i64),
    Time(i64),
    Bytes(Vec<u8>),
}

/// A value in comparable form, borrowed from a row or a [`Const`].
#[derive(Clone, Copy, Debug)]
enum Scalar<'a> {
    Int(i128),
    Dec(DecView<'a>),
    F64(f64),
    Civil(u64),
    Instant(i64),
    Time(i64),
    Bytes(&'a [u8]),
}

impl Const {
    fn scalar(&self) -> Scalar<'_> {
        match self {
            Const::Int(v) => Scalar::Int(*v),
            Const::Dec(d) => Scalar::Dec(d.view()),
            Const::F64(v) => Scalar::F64(*v),
            Const::Civil(v) => Scalar::Civil(*v),
            Const::Instant(v) => Scalar::Instant(*v),
            Const::Time(v) => Scalar::Time(*v),
            Const::Bytes(b) => Scalar::Bytes(b),
        }
    }
}

/// A row value in comparable form; `None` for NULL (and for values that aren't comparable at
/// all, which a well-formed row image doesn't contain).
fn value_scalar(v: &Value) -> Option<Scalar<'_>> {
    Some(match v {
        Value::Null => return None,
        Value::Int(i) => Scalar::Int(i128::from(*i)),
        Value::UInt(u) | Value::Bit(u) => Scalar::Int(i128::from(*u)),
        Value::Year(y) => Scalar::Int(i128::from(*y)),
        Value::Float(f) => Scalar::F64(f64::from(*f)),
        Value::Double(d) => Scalar::F64(*d),
        Value::Decimal(s) => Scalar::Dec(DecView::parse(s)?),
        Value::Date { year, month, day } => Scalar::Civil(civil_key(*year, *month, *day, 0, 0, 0, 0)),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => Scalar::Civil(civil_key(*year, *month, *day, *hour, *minute, *second, *micros)),
        Value::Timestamp { seconds, micros } => Scalar::Instant(instant_micros(*seconds, *micros)),
        Value::Time {
            negative,
            hours,
            minutes,
            seconds,
            micros,
        } => Scalar::Time(time_micros(*negative, *hours, *minutes, *seconds, *micros)),
        Value::Text(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) => Scalar::Bytes(s.as_bytes()),
        Value::Bytes(b) => Scalar::Bytes(b),
    })
}

/// Compares two scalars; `None` when they aren't comparable (compile prevents that).
fn compare(a: &Scalar<'_>, b: &Scalar<'_>) -> Option<Ordering> {
    use Scalar as S;
    match (a, b) {
        (S::Int(x), S::Int(y)) => Some(x.cmp(y)),
        (S::Int(x), S::Dec(d)) => Some(cmp_int_dec(*x, d)),
        (S::Dec(d), S::Int(x)) => Some(cmp_int_dec(*x, d).reverse()),
        (S::Dec(x), S::Dec(y)) => Some(cmp_dec(x, y)),
        (S::F64(x), S::F64(y)) => x.partial_cmp(y),
        // Mixed with floating point: as doubles, as MySQL does.
        (S::F64(x), S::Int(y)) => x.partial_cmp(&(*y as f64)),
        (S::Int(x), S::F64(y)) => (*x as f64).partial_cmp(y),
        (S::F64(x), S::Dec(d)) => x.partial_cmp(&d.text.parse::<f64>().ok()?),
        (S::Dec(d), S::F64(y)) => d.text.parse::<f64>().ok()?.partial_cmp(y),
        (S::Civil(x), S::Civil(y)) => Some(x.cmp(y)),
        (S::Instant(x), S::Instant(y)) => Some(x.cmp(y)),
        (S::Time(x), S::Time(y)) => Some(x.cmp(y)),
        (S::Bytes(x), S::Bytes(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Arg {
    fn scalar<'a>(&'a self, row: &'a [Value]) -> Option<Scalar<'a>> {
        match self {
            Arg::Column(i) => value_scalar(row.get(*i)?),
            Arg::Const(c) => Some(c.scalar()),
        }
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

impl Node {
    /// Three-valued evaluation: `None` is SQL's unknown.
    fn eval(&self, row: &[Value]) -> Option<bool> {
        match self {
            Node::And(a, b) => match a.eval(row) {
                Some(false) => Some(false),
                left => and3(left, b.eval(row)),
            },
            Node::Or(a, b) => match a.eval(row) {
                Some(true) => Some(true),
                left => or3(left, b.eval(row)),
            },
            Node::Not(a) => a.eval(row).map(|v| !v),
            Node::Compare { left, op, right } => {
                let ord = compare(&left.scalar(row)?, &right.scalar(row)?)?;
                Some(op.test(ord))
            }
            Node::In { column, list, negated } => {
                let v = value_scalar(row.get(*column)?)?;
                let found = list.iter().any(|c| compare(&v, &c.scalar()) == Some(Ordering::Equal));
                Some(found != *negated)
            }
            Node::Between {
                column,
                low,
                high,
                negated,
            } => {
                let v = value_scalar(row.get(*column)?)?;
                let ge = low
                    .scalar(row)
                    .and_then(|l| compare(&v, &l))
                    .map(|o| o != Ordering::Less);
                let le = high
                    .scalar(row)
                    .and_then(|h| compare(&v, &h))
                    .map(|o| o != Ordering::Greater);
                and3(ge, le).map(|inside| inside != *negated)
            }
            Node::IsNull { column, negated } => {
                let is_null = row.get(*column).is_none_or(Value::is_null);
                Some(is_null != *negated)
            }
            Node::Like {
                column,
                prefix,
                exact,
                negated,
            } => {
                let Scalar::Bytes(b) = value_scalar(row.get(*column)?)? else {
                    return None;
                };
                let m = if *exact {
                    b == &prefix[..]
                } else {
                    b.starts_with(prefix)
                };
                Some(m != *negated)
            }
        }
    }
}

impl CompiledFilter {
    /// Whether a full source row image (one value per source column, in table order) passes:
    /// true only when the predicate is TRUE; FALSE and unknown (NULL involved) filter it out.
    /// Never allocates on the supported paths and never panics, even on a short row (missing
    /// columns read as NULL).
    pub fn matches(&self, row: &[Value]) -> bool {
        self.root.eval(row) == Some(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiler
// ---------------------------------------------------------------------------------------------

/// How a column's values are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Domain {
    /// Integer kinds, YEAR, BIT: exact integers.
    Int,
    /// DECIMAL: exact decimals.
    Decimal,
    /// FLOAT, DOUBLE: f64.
    Float,
    /// DATE, DATETIME: calendar fields.
    Civil,
    /// TIMESTAMP: UTC instant.
    Instant,
    Time,
    /// Text, ENUM, SET, JSON, binary: bytes.
    Bytes,
}

impl Domain {
    fn of(kind: ColumnKind) -> Option<Domain> {
        Some(match kind {
            k if k.is_integer() => Domain::Int,
            ColumnKind::Year | ColumnKind::Bit => Domain::Int,
            ColumnKind::Decimal => Domain::Decimal,
            ColumnKind::Float | ColumnKind::Double => Domain::Float,
            ColumnKind::Date | ColumnKind::DateTime => Domain::Civil,
            ColumnKind::Timestamp => Domain::Instant,
            ColumnKind::Time => Domain::Time,
            ColumnKind::Text | ColumnKind::Binary | ColumnKind::Enum | ColumnKind::Set | ColumnKind::Json => {
                Domain::Bytes
            }
            _ => return None,
        })
    }

    fn is_numeric(self) -> bool {
        matches!(self, Domain::Int | Domain::Decimal | Domain::Float)
    }

    fn compatible(self, other: Domain) -> bool {
        self == other || (self.is_numeric() && other.is_numeric())
    }

    fn hint(self) -> &'static str {
        match self {
            Domain::Int | Domain::Decimal | Domain::Float => "a number",
            Domain::Civil => "a date or datetime string such as '2024-01-31' or '2024-01-31 12:00:00'",
            Domain::Instant => "a datetime string in UTC such as '2024-01-31 12:00:00'",
            Domain::Time => "a time string such as '12:30:00'",
            Domain::Bytes => "a string such as 'abc'",
        }
    }
}

fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::TinyInt => "TINYINT",
        ColumnKind::SmallInt => "SMALLINT",
        ColumnKind::MediumInt => "MEDIUMINT",
        ColumnKind::Int => "INT",
        ColumnKind::BigInt => "BIGINT",
        ColumnKind::Decimal => "DECIMAL",
        ColumnKind::Float => "FLOAT",
        ColumnKind::Double => "DOUBLE",
        ColumnKind::Date => "DATE",
        ColumnKind::Time => "TIME",
        ColumnKind::DateTime => "DATETIME",
        ColumnKind::Timestamp => "TIMESTAMP",
        ColumnKind::Year => "YEAR",
        ColumnKind::Text => "a text column (CHAR/VARCHAR/TEXT)",
        ColumnKind::Binary => "a binary column (BINARY/VARBINARY/BLOB)",
        ColumnKind::Enum => "ENUM",
        ColumnKind::Set => "SET",
        ColumnKind::Bit => "BIT",
        ColumnKind::Json => "JSON",
        ColumnKind::Other => "a GEOMETRY or other opaque column",
    }
}

fn literal_desc(lit: &Literal) -> String {
    match lit {
        Literal::Null => "NULL".into(),
        Literal::Bool(b) => format!("the boolean {}", if *b { "TRUE" } else { "FALSE" }),
        Literal::Number(n) => format!("a number ({n})"),
        Literal::String(s) => format!("a string ('{s}')"),
        Literal::Date(s) => format!("a DATE literal ('{s}')"),
        Literal::Time(s) => format!("a TIME literal ('{s}')"),
        Literal::Timestamp(s) => format!("a TIMESTAMP literal ('{s}')"),
    }
}

/// Binds a parsed filter to a table definition: resolves columns (case-insensitively),
/// type-checks every comparison and converts literals once. Any source column may be used,
/// replicated or not.
pub fn compile(expr: &Expr, table: &TableDef) -> Result<CompiledFilter, FilterError> {
    Ok(CompiledFilter {
        root: Compiler { table }.node(expr)?,
    })
}

struct Compiler<'a> {
    table: &'a TableDef,
}

/// A resolved column operand.
struct Col<'a> {
    index: usize,
    def: &'a ColumnDef,
    position: usize,
}

impl<'a> Compiler<'a> {
    fn node(&self, expr: &Expr) -> Result<Node, FilterError> {
        Ok(match expr {
            Expr::And(a, b) => Node::And(Box::new(self.node(a)?), Box::new(self.node(b)?)),
            Expr::Or(a, b) => Node::Or(Box::new(self.node(a)?), Box::new(self.node(b)?)),
            Expr::Not(a) => Node::Not(Box::new(self.node(a)?)),
            Expr::Compare { left, op, right } => {
                let check_label = matches!(op, CompareOp::Eq | CompareOp::Ne);
                match (self.column(left)?, self.column(right)?) {
                    (Some(l), Some(r)) => {
                        let (dl, dr) = (self.domain(&l)?, self.domain(&r)?);
                        if !dl.compatible(dr) {
                            return fail(
                                right.position,
                                format!(
                                    "cannot compare column `{}` ({}) with column `{}` ({})",
                                    l.def.name,
                                    kind_name(l.def.kind),
                                    r.def.name,
                                    kind_name(r.def.kind)
                                ),
                            );
                        }
                        Node::Compare {
                            left: Arg::Column(l.index),
                            op: *op,
                            right: Arg::Column(r.index),
                        }
                    }
                    (Some(l), None) => Node::Compare {
                        left: Arg::Column(l.index),
                        op: *op,
                        right: Arg::Const(self.literal(right, &l, check_label)?),
                    },
                    (None, Some(r)) => Node::Compare {
                        left: Arg::Const(self.literal(left, &r, check_label)?),
                        op: *op,
                        right: Arg::Column(r.index),
                    },
                    (None, None) => return fail(left.position, "a comparison needs a column on at least one side"),
                }
            }
            Expr::InList { operand, list, negated } => {
                let col = self.required_column(operand, "IN")?;
                self.domain(&col)?;
                let mut consts = Vec::with_capacity(list.len());
                for item in list {
                    if let Term::Column(name) = &item.term {
                        return fail(
                            item.position,
                            format!("IN lists hold values, not columns (`{name}`); use = with OR to compare columns"),
                        );
                    }
                    consts.push(self.literal(item, &col, true)?);
                }
                Node::In {
                    column: col.index,
                    list: consts,
                    negated: *negated,
                }
            }
            Expr::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let col = self.required_column(operand, "BETWEEN")?;
                Node::Between {
                    column: col.index,
                    low: self.bound(low, &col)?,
                    high: self.bound(high, &col)?,
                    negated: *negated,
                }
            }
            Expr::IsNull { operand, negated } => {
                let col = self.required_column(operand, "IS NULL")?;
                Node::IsNull {
                    column: col.index,
                    negated: *negated,
                }
            }
            Expr::Like {
                operand,
                pattern,
                negated,
            } => {
                let col = self.required_column(operand, "LIKE")?;
                if Domain::of(col.def.kind) != Some(Domain::Bytes) {
                    return fail(
                        col.position,
                        format!(
                            "LIKE applies to text and binary columns; column `{}` is {}",
                            col.def.name,
                            kind_name(col.def.kind)
                        ),
                    );
                }
                Node::Like {
                    column: col.index,
                    prefix: pattern.prefix.as_bytes().to_vec(),
                    exact: pattern.exact,
                    negated: *negated,
                }
            }
        })
    }

    fn column(&self, op: &Operand) -> Result<Option<Col<'a>>, FilterError> {
        let Term::Column(name) = &op.term else {
            return Ok(None);
        };
        match self.table.column_index(name) {
            Some(index) => Ok(Some(Col {
                index,
                def: &self.table.columns[index],
                position: op.position,
            })),
            None => fail(
                op.position,
                format!("column `{name}` does not exist in {}", self.table.qualified_name()),
            ),
        }
    }

    fn required_column(&self, op: &Operand, what: &str) -> Result<Col<'a>, FilterError> {
        match self.column(op)? {
            Some(c) => Ok(c),
            None => fail(op.position, format!("{what} needs a column on its left")),
        }
    }

    fn domain(&self, col: &Col<'_>) -> Result<Domain, FilterError> {
        Domain::of(col.def.kind).ok_or_else(|| FilterError {
            position: col.position,
            message: format!(
                "column `{}` is {}, which filters can't compare; only IS [NOT] NULL applies to it",
                col.def.name,
                kind_name(col.def.kind)
            ),
        })
    }

    fn bound(&self, op: &Operand, col: &Col<'_>) -> Result<Arg, FilterError> {
        match self.column(op)? {
            Some(other) => {
                let (d, o) = (self.domain(col)?, self.domain(&other)?);
                if !d.compatible(o) {
                    return fail(
                        op.position,
                        format!(
                            "cannot compare column `{}` ({}) with column `{}` ({})",
                            col.def.name,
                            kind_name(col.def.kind),
                            other.def.name,
                            kind_name(other.def.kind)
                        ),
                    );
                }
                Ok(Arg::Column(other.index))
            }
            None => Ok(Arg::Const(self.literal(op, col, false)?)),
        }
    }

    /// Converts a literal for comparison with `col`. `check_label`: an equality test against
    /// an ENUM column, whose string must be one of the labels (catches typos that would
    /// otherwise silently match nothing, or everything with `<>`).
    fn literal(&self, op: &Operand, col: &Col<'_>, check_label: bool) -> Result<Const, FilterError> {
        let Term::Literal(lit) = &op.term else {
            unreachable!("literal() is called on literal operands")
        };
        let pos = op.position;
        let domain = self.domain(col)?;
        let def = col.def;
        let mismatch = || {
            fail(
                pos,
                format!(
                    "column `{}` is {}; compare it with {}, not {}",
                    def.name,
                    kind_name(def.kind),
                    domain.hint(),
                    literal_desc(lit)
                ),
            )
        };
        let c = match (lit, domain) {
            (Literal::Null, _) => {
                return fail(
                    pos,
                    format!(
                        "NULL can't be compared with (any comparison with NULL is unknown, so no row would pass); \
                         use `{0}` IS NULL or `{0}` IS NOT NULL",
                        def.name
                    ),
                )
            }
            (Literal::Bool(b), Domain::Int | Domain::Decimal) => Const::Int(i128::from(*b)),
            (Literal::Bool(b), Domain::Float) => Const::F64(if *b { 1.0 } else { 0.0 }),
            (Literal::Number(n), Domain::Int | Domain::Decimal) => {
                let d = Dec::parse_literal(n).map_err(|m| FilterError {
                    position: pos,
                    message: m,
                })?;
                match d.to_i128() {
                    Some(i) => Const::Int(i),
                    None => Const::Dec(d),
                }
            }
            (Literal::Number(n), Domain::Float) => {
                let d = Dec::parse_literal(n).map_err(|m| FilterError {
                    position: pos,
                    message: m,
                })?;
                match d.text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Const::F64(f),
                    _ => {
                        return fail(
                            pos,
                            format!("the number {n} is out of range for a {}", kind_name(def.kind)),
                        )
                    }
                }
            }
            (Literal::String(s) | Literal::Date(s) | Literal::Timestamp(s), Domain::Civil) => match parse_civil(s) {
                Some(c) => Const::Civil(civil_key(c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros)),
                None => {
                    return fail(
                        pos,
                        format!(
                            "'{s}' is not a valid {} value for column `{}`; expected 'YYYY-MM-DD' or \
                             'YYYY-MM-DD HH:MM:SS[.ffffff]'",
                            kind_name(def.kind),
                            def.name
                        ),
                    )
                }
            },
            (Literal::String(s) | Literal::Date(s) | Literal::Timestamp(s), Domain::Instant) => {
                // The zero date is the zero TIMESTAMP (sorting first); every other date is
                // an instant, 1970-01-01 00:00:00 UTC included.
                let instant = parse_civil(s).and_then(|c| match c.to_unix_utc()? {
                    _ if c.is_zero() => Some(i64::MIN),
                    (seconds, micros) => Some(seconds.saturating_mul(1_000_000) + i64::from(micros)),
                });
                match instant {
                    Some(micros) => Const::Instant(micros),
                    None => {
                        return fail(
                            pos,
                            format!(
                                "'{s}' is not a valid TIMESTAMP value for column `{}`; expected \
                                 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC",
                                def.name
                            ),
                        )
                    }
                }
            }
            (Literal::String(s) | Literal::Time(s), Domain::Time) => match parse_time(s) {
                Some(t) => Const::Time(time_micros(t.negative, t.hours, t.minutes, t.seconds, t.micros)),
                None => {
                    return fail(
                        pos,
                        format!(
                            "'{s}' is not a valid TIME value for column `{}`; expected '[-]HH:MM:SS[.ffffff]'",
                            def.name
                        ),
                    )
                }
            },
            (Literal::String(s), Domain::Bytes) => {
                if check_label && def.kind == ColumnKind::Enum && !def.labels.is_empty() && !s.is_empty() {
                    check_enum_label(s, def, pos)?;
                }
                Const::Bytes(s.as_bytes().to_vec())
            }
            _ => return mismatch(),
        };
        Ok(c)
    }
}

/// Whether a literal names an ENUM/SET label. `information_schema` prints characters outside
/// the Basic Multilingual Plane as `?`, so a `?` in a label matches any one character.
pub(crate) fn is_label(labels: &[String], s: &str) -> bool {
    labels.iter().any(|l| crate::stream::catalog::label_matches(l, s))
}

fn check_enum_label(s: &str, def: &ColumnDef, pos: usize) -> Result<(), FilterError> {
    if is_label(&def.labels, s) {
        return Ok(());
    }
    const SHOWN: usize = 20;
    let mut labels: Vec<String> = def.labels.iter().take(SHOWN).map(|l| format!("'{l}'")).collect();
    if def.labels.len() > SHOWN {
        labels.push(format!("… ({} more)", def.labels.len() - SHOWN));
    }
    fail(
        pos,
        format!(
            "'{s}' is not a value of ENUM column `{}` (its values are {}); ENUM comparisons are exact and case-sensitive",
            def.name,
            labels.join(", ")
        ),
    )
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_binlog::Charset;

    fn col(name: &str, kind: ColumnKind) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            kind,
            binlog_type: 0,
            meta: 0,
            unsigned: false,
            nullable: true,
            charset: Charset::Utf8,
            labels: Vec::new(),
            precision: 0,
            scale: 0,
            fsp: 0,
            length: 0,
        }
    }

    fn table() -> TableDef {
        let mut id = col("id", ColumnKind::BigInt);
        id.unsigned = true;
        let mut price = col("price", ColumnKind::Decimal);
        price.precision = 10;
        price.scale = 2;
        let mut status = col("status", ColumnKind::Enum);
        status.labels = vec!["pending".into(), "paid".into(), "cancelled".into()];
        let mut tags = col("tags", ColumnKind::Set);
        tags.labels = vec!["a".into(), "b".into(), "c".into()];
        let mut flags = col("flags", ColumnKind::Bit);
        flags.length = 8;
        TableDef {
            schema: "shop".into(),
            name: "orders".into(),
            columns: vec![
                id,                                     // 0
                col("qty", ColumnKind::Int),            // 1
                price,                                  // 2
                col("ratio", ColumnKind::Double),       // 3
                col("weight", ColumnKind::Float),       // 4
                col("placed_at", ColumnKind::DateTime), // 5
                col("day", ColumnKind::Date),           // 6
                col("created", ColumnKind::Timestamp),  // 7
                col("dur", ColumnKind::Time),           // 8
                col("yr", ColumnKind::Year),            // 9
                flags,                                  // 10
                col("region", ColumnKind::Text),        // 11
                status,                                 // 12
                tags,                                   // 13
                col("doc", ColumnKind::Json),           // 14
                col("blob", ColumnKind::Binary),        // 15
                col("geom", ColumnKind::Other),         // 16
                col("my col", ColumnKind::Text),        // 17
                col("n2", ColumnKind::BigInt),          // 18
                col("price2", ColumnKind::Decimal),     // 19
                col("upd", ColumnKind::Timestamp),      // 20
                col("a`b", ColumnKind::Int),            // 21
            ],
            primary_key: vec![0],
        }
    }

    fn row(values: &[(&str, Value)]) -> Vec<Value> {
        let t = table();
        let mut r = vec![Value::Null; t.columns.len()];
        for (name, v) in values {
            r[t.column_index(name).expect(name)] = v.clone();
        }
        r
    }

    fn filter(text: &str) -> CompiledFilter {
        let expr = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        compile(&expr, &table()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn m(text: &str, values: &[(&str, Value)]) -> bool {
        filter(text).matches(&row(values))
    }

    fn error(text: &str) -> FilterError {
        match parse(text) {
            Err(e) => e,
            Ok(expr) => compile(&expr, &table()).expect_err(text),
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn dec(s: &str) -> Value {
        Value::Decimal(s.into())
    }

    fn dt(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8, micros: u32) -> Value {
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        }
    }

    #[test]
    fn comparison_operators() {
        let q = |v: i64| [("qty", Value::Int(v))];
        for (f, results) in [
            ("qty = 5", [false, true, false]),
            ("qty <> 5", [true, false, true]),
            ("qty != 5", [true, false, true]),
            ("qty < 5", [true, false, false]),
            ("qty <= 5", [true, true, false]),
            ("qty > 5", [false, false, true]),
            ("qty >= 5", [false, true, true]),
            ("5 > qty", [true, false, false]),
            ("5 <= qty", [false, true, true]),
        ] {
            for (v, want) in [4, 5, 6].into_iter().zip(results) {
                assert_eq!(m(f, &q(v)), want, "{f} with qty = {v}");
            }
        }
    }

    #[test]
    fn in_and_not_in() {
        let f = "region IN ('eu-west', 'eu-central')";
        assert!(m(f, &[("region", text("eu-west"))]));
        assert!(m(f, &[("region", text("eu-central"))]));
        assert!(!m(f, &[("region", text("us-east"))]));
        let f = "region NOT IN ('eu-west', 'eu-central')";
        assert!(!m(f, &[("region", text("eu-west"))]));
        assert!(m(f, &[("region", text("us-east"))]));
        assert!(m("qty IN (1, 2, 3)", &[("qty", Value::Int(2))]));
        assert!(!m("qty IN (1, 2, 3)", &[("qty", Value::Int(4))]));
        assert!(m("qty IN (-1)", &[("qty", Value::Int(-1))]));
    }

    #[test]
    fn between_is_inclusive() {
        for (v, want) in [(0, false), (1, true), (5, true), (10, true), (11, false)] {
            assert_eq!(m("qty BETWEEN 1 AND 10", &[("qty", Value::Int(v))]), want, "{v}");
            assert_eq!(m("qty NOT BETWEEN 1 AND 10", &[("qty", Value::Int(v))]), !want, "{v}");
        }
        // Bounds may be columns; a NULL bound makes the result unknown unless the other
        // bound already decides it.
        assert!(m(
            "qty BETWEEN n2 AND 10",
            &[("qty", Value::Int(5)), ("n2", Value::Int(5))]
        ));
        assert!(!m("qty BETWEEN n2 AND 10", &[("qty", Value::Int(5))]));
        assert!(!m("qty NOT BETWEEN n2 AND 10", &[("qty", Value::Int(5))]));
        assert!(m("qty NOT BETWEEN n2 AND 10", &[("qty", Value::Int(11))]));
        // Followed by more conditions: BETWEEN's AND is not the boolean AND.
        assert!(m(
            "qty BETWEEN 1 AND 10 AND region = 'eu'",
            &[("qty", Value::Int(3)), ("region", text("eu"))]
        ));
        assert!(m(
            "day BETWEEN '2024-01-01' AND '2024-12-31'",
            &[(
                "day",
                Value::Date {
                    year: 2024,
                    month: 6,
                    day: 1
                }
            )]
        ));
    }

    #[test]
    fn is_null_and_is_not_null() {
        assert!(m("region IS NULL", &[]));
        assert!(!m("region IS NULL", &[("region", text(""))]));
        assert!(m("region IS NOT NULL", &[("region", text(""))]));
        assert!(!m("region IS NOT NULL", &[]));
        // Any column kind, including opaque ones.
        assert!(m("geom IS NULL", &[]));
        assert!(m("geom is not null", &[("geom", Value::Bytes(vec![1]))]));
    }

    #[test]
    fn like_prefix_and_exact() {
        let f = "region LIKE 'eu-%'";
        assert!(m(f, &[("region", text("eu-west"))]));
        assert!(m(f, &[("region", text("eu-"))]));
        assert!(!m(f, &[("region", text("EU-west"))]));
        assert!(!m(f, &[("region", text("us-east"))]));
        assert!(!m(f, &[]));
        assert!(m("region NOT LIKE 'eu-%'", &[("region", text("us-east"))]));
        assert!(!m("region NOT LIKE 'eu-%'", &[("region", text("eu-west"))]));
        assert!(!m("region NOT LIKE 'eu-%'", &[]));
        // No wildcard: exact.
        assert!(m("region LIKE 'eu'", &[("region", text("eu"))]));
        assert!(!m("region LIKE 'eu'", &[("region", text("eu-west"))]));
        // '%' alone matches every non-NULL value.
        assert!(m("region LIKE '%'", &[("region", text(""))]));
        // Escaped wildcards are literal.
        assert!(m(r"region LIKE '50\%%'", &[("region", text("50% off"))]));
        assert!(!m(r"region LIKE '50\%%'", &[("region", text("500"))]));
        assert!(m(r"region LIKE 'a\_b'", &[("region", text("a_b"))]));
        // Unicode prefixes, ENUM, binary.
        assert!(m("region LIKE 'Zürich%'", &[("region", text("Zürich-Nord"))]));
        assert!(m("status LIKE 'pa%'", &[("status", Value::Enum("paid".into()))]));
        assert!(m("blob LIKE 'ab%'", &[("blob", Value::Bytes(b"abc".to_vec()))]));
    }

    #[test]
    fn like_rejects_unsupported_patterns() {
        for (f, pos) in [
            ("region LIKE '%x'", 13),
            ("region LIKE 'a%b'", 13),
            ("region LIKE 'a%%'", 13),
            ("region LIKE 'a_c%'", 13),
            ("region NOT LIKE '%'||", 17),
        ] {
            let e = error(f);
            if f.ends_with("||") {
                // '|' is not part of the language; the lexer stops there first.
                assert_eq!(e.position, 20, "{f}: {e}");
                continue;
            }
            assert_eq!(e.position, pos, "{f}: {e}");
            assert!(e.message.contains("not supported"), "{f}: {e}");
            assert!(e.message.ends_with(r"escape a literal % or _ as \% or \_"), "{f}: {e}");
        }
        let e = error("qty LIKE '1%'");
        assert_eq!(e.position, 1);
        assert!(e.message.contains("LIKE applies to text"), "{e}");
        let e = error("region LIKE region");
        assert!(e.message.contains("string pattern"), "{e}");
    }

    #[test]
    fn precedence_not_and_or() {
        // a OR b AND c is a OR (b AND c).
        let f = "qty = 1 OR qty = 2 AND region = 'x'";
        assert!(m(f, &[("qty", Value::Int(1)), ("region", text("y"))]));
        assert!(!m(f, &[("qty", Value::Int(2)), ("region", text("y"))]));
        assert!(m(f, &[("qty", Value::Int(2)), ("region", text("x"))]));
        // Parentheses override it.
        let f = "(qty = 1 OR qty = 2) AND region = 'x'";
        assert!(!m(f, &[("qty", Value::Int(1)), ("region", text("y"))]));
        // NOT binds tighter than AND: (NOT qty = 1) AND region = 'x'.
        let f = "NOT qty = 1 AND region = 'x'";
        assert!(m(f, &[("qty", Value::Int(2)), ("region", text("x"))]));
        assert!(!m(f, &[("qty", Value::Int(2)), ("region", text("y"))]));
        // NOT NOT, and keywords in any case.
        assert!(m("not NOT qty = 1", &[("qty", Value::Int(1))]));
        assert!(m(
            "region in ('x') And Not qty Is Null oR qty between 1 and 2",
            &[("qty", Value::Int(9)), ("region", text("x"))]
        ));
        // Left-associative chains and nesting.
        assert!(m("((qty = 1)) OR (qty = 2 OR (qty = 3))", &[("qty", Value::Int(3))]));
    }

    #[test]
    fn three_valued_logic() {
        let null_qty = [("region", text("eu"))];
        assert!(!m("qty = 5", &null_qty));
        assert!(!m("qty <> 5", &null_qty));
        // NOT unknown is unknown.
        assert!(!m("NOT qty = 5", &null_qty));
        assert!(!m("NOT (qty = 5)", &null_qty));
        assert!(!m("qty IN (1, 2)", &null_qty));
        assert!(!m("qty NOT IN (1, 2)", &null_qty));
        assert!(!m("qty BETWEEN 1 AND 2", &null_qty));
        assert!(!m("qty NOT BETWEEN 1 AND 2", &null_qty));
        // unknown OR true = true; unknown AND false = false, so NOT of it is true.
        assert!(m("qty = 5 OR region = 'eu'", &null_qty));
        assert!(m("region = 'eu' OR qty = 5", &null_qty));
        assert!(!m("qty = 5 OR region = 'us'", &null_qty));
        assert!(!m("qty = 5 AND region = 'eu'", &null_qty));
        assert!(m("NOT (qty = 5 AND region = 'us')", &null_qty));
        assert!(m("NOT (region = 'us' AND qty = 5)", &null_qty));
        assert!(!m("NOT (qty = 5 OR region = 'us')", &null_qty));
        // Column against a NULL column.
        assert!(!m("qty = n2", &[("qty", Value::Int(1))]));
        assert!(!m("qty <> n2", &[("qty", Value::Int(1))]));
    }

    #[test]
    fn short_rows_do_not_panic() {
        let f = filter("qty = 1 OR region LIKE 'a%' OR region IS NOT NULL OR qty IN (1) OR qty BETWEEN 1 AND 2");
        assert!(!f.matches(&[]));
        assert!(filter("region IS NULL").matches(&[]));
    }

    #[test]
    fn integer_literals_and_edges() {
        let max = u64::MAX;
        assert!(m("id = 18446744073709551615", &[("id", Value::UInt(max))]));
        assert!(m("id > -1", &[("id", Value::UInt(0))]));
        assert!(m("id > 9223372036854775807", &[("id", Value::UInt(1 << 63))]));
        assert!(!m("id < 0", &[("id", Value::UInt(max))]));
        assert!(m("n2 = -9223372036854775808", &[("n2", Value::Int(i64::MIN))]));
        assert!(m("n2 < 18446744073709551615", &[("n2", Value::Int(i64::MAX))]));
        // Column against column, mixed signedness: mathematically, not by bit pattern.
        assert!(m("n2 < id", &[("n2", Value::Int(-1)), ("id", Value::UInt(0))]));
        assert!(m("n2 < id", &[("n2", Value::Int(i64::MAX)), ("id", Value::UInt(max))]));
        assert!(!m("n2 = id", &[("n2", Value::Int(-1)), ("id", Value::UInt(max))]));
        // Beyond u64: still exact.
        assert!(m("id < 100000000000000000000", &[("id", Value::UInt(max))]));
        assert!(m("id > -100000000000000000000", &[("id", Value::UInt(0))]));
        // A fraction against an integer column.
        assert!(m("qty > 2.5", &[("qty", Value::Int(3))]));
        assert!(!m("qty > 2.5", &[("qty", Value::Int(2))]));
        assert!(m("qty < -2.5", &[("qty", Value::Int(-3))]));
        assert!(!m("qty < -2.5", &[("qty", Value::Int(-2))]));
        assert!(!m("qty = 2.5", &[("qty", Value::Int(2))]));
        assert!(m("qty = 2.0", &[("qty", Value::Int(2))]));
        // Exponents are exact.
        assert!(m("qty = 1e3", &[("qty", Value::Int(1000))]));
        assert!(m("qty = 15E-1 OR qty = 1.5e+3", &[("qty", Value::Int(1500))]));
        // TRUE/FALSE are 1/0.
        assert!(m("qty = TRUE", &[("qty", Value::Int(1))]));
        assert!(m("qty = false", &[("qty", Value::Int(0))]));
        // YEAR and BIT compare as integers.
        assert!(m("yr >= 2020", &[("yr", Value::Year(2024))]));
        assert!(!m("yr >= 2020", &[("yr", Value::Year(1999))]));
        assert!(m("flags = 5", &[("flags", Value::Bit(5))]));
        assert!(m("flags IN (1, 5)", &[("flags", Value::Bit(5))]));
    }

    #[test]
    fn decimal_comparisons_are_exact() {
        assert!(m("price = 10.5", &[("price", dec("10.50"))]));
        assert!(m("price = 10.50", &[("price", dec("10.5"))]));
        assert!(m("price = 10.500000", &[("price", dec("10.50"))]));
        assert!(m("price < 0", &[("price", dec("-0.10"))]));
        assert!(m("price = 0", &[("price", dec("-0.00"))]));
        assert!(m("price = -0", &[("price", dec("0.00"))]));
        assert!(m("price > -1", &[("price", dec("-0.99"))]));
        assert!(m("price < -1", &[("price", dec("-1.01"))]));
        assert!(m("price = 12", &[("price", dec("12.00"))]));
        assert!(m("price >= 1e1", &[("price", dec("10.00"))]));
        // 0.1 + 0.2 style rounding can't happen: beyond f64 precision.
        assert!(m(
            "price2 > 12345678901234567890.123456789",
            &[("price2", dec("12345678901234567890.123456790"))]
        ));
        assert!(!m(
            "price2 = 12345678901234567890.123456789",
            &[("price2", dec("12345678901234567890.123456790"))]
        ));
        // Two DECIMAL columns with different scales, DECIMAL against an integer column.
        assert!(m(
            "price = price2",
            &[("price", dec("10.50")), ("price2", dec("10.5000"))]
        ));
        assert!(m("price > qty", &[("price", dec("3.01")), ("qty", Value::Int(3))]));
        assert!(m("qty > price", &[("price", dec("-3.01")), ("qty", Value::Int(-3))]));
        assert!(m("price IN (1.5, 10.5)", &[("price", dec("10.50"))]));
        // Malformed decimal text is unknown, not a panic.
        assert!(!m("price = 1", &[("price", dec("1x"))]));
    }

    #[test]
    fn float_comparisons() {
        assert!(m("ratio = 0.1", &[("ratio", Value::Double(0.1))]));
        assert!(m("ratio > 1e-3", &[("ratio", Value::Double(0.01))]));
        assert!(m("ratio = 3", &[("ratio", Value::Double(3.0))]));
        assert!(m("weight = 0.5", &[("weight", Value::Float(0.5))]));
        // FLOAT is widened exactly, as MySQL does: FLOAT 0.1 isn't the double 0.1.
        assert!(!m("weight = 0.1", &[("weight", Value::Float(0.1))]));
        assert!(m("weight BETWEEN 0.09 AND 0.11", &[("weight", Value::Float(0.1))]));
        assert!(m(
            "ratio > qty",
            &[("ratio", Value::Double(2.5)), ("qty", Value::Int(2))]
        ));
        assert!(m(
            "ratio < price",
            &[("ratio", Value::Double(2.5)), ("price", dec("2.51"))]
        ));
        assert!(m("ratio = TRUE", &[("ratio", Value::Double(1.0))]));
        assert!(error("ratio > 1e400").message.contains("out of range"));
    }

    #[test]
    fn temporal_comparisons() {
        let placed = |v| [("placed_at", v)];
        let f = "placed_at >= '2024-01-01 00:00:00'";
        assert!(m(f, &placed(dt(2024, 1, 1, 0, 0, 0, 0))));
        assert!(!m(f, &placed(dt(2023, 12, 31, 23, 59, 59, 999_999))));
        assert!(m("placed_at < '2024-01-01'", &placed(dt(2023, 12, 31, 23, 59, 59, 0))));
        assert!(m(
            "placed_at > '2024-01-01T10:00'",
            &placed(dt(2024, 1, 1, 10, 0, 0, 1))
        ));
        assert!(m(
            "placed_at = '2024-01-01 10:00:00.5'",
            &placed(dt(2024, 1, 1, 10, 0, 0, 500_000))
        ));
        assert!(m(
            "placed_at = TIMESTAMP '2024-01-01 10:00:00'",
            &placed(dt(2024, 1, 1, 10, 0, 0, 0))
        ));
        assert!(m("placed_at < DATE '2024-01-02'", &placed(dt(2024, 1, 1, 23, 0, 0, 0))));
        assert!(m("placed_at = '0000-00-00 00:00:00'", &placed(dt(0, 0, 0, 0, 0, 0, 0))));
        assert!(m("placed_at < '2024-01-01'", &placed(dt(2024, 0, 0, 0, 0, 0, 0))));
        // DATE against dates and datetimes.
        let d = [(
            "day",
            Value::Date {
                year: 2024,
                month: 2,
                day: 29,
            },
        )];
        assert!(m("day = '2024-02-29'", &d));
        assert!(m("day = DATE '2024-2-29'", &d));
        assert!(m("day < '2024-02-29 00:00:01'", &d));
        assert!(m(
            "day = placed_at",
            &[d[0].clone(), ("placed_at", dt(2024, 2, 29, 0, 0, 0, 0))]
        ));
        // TIMESTAMP literals are UTC.
        let ts = [(
            "created",
            Value::Timestamp {
                seconds: 1_700_000_000,
                micros: 120,
            },
        )];
        assert!(m("created = '2023-11-14 22:13:20.000120'", &ts));
        assert!(m("created > TIMESTAMP '2023-11-14 22:13:20'", &ts));
        assert!(m("created < '2023-11-14 22:13:21'", &ts));
        assert!(m("created >= DATE '2023-11-14'", &ts));
        assert!(m(
            "created < upd",
            &[
                ts[0].clone(),
                (
                    "upd",
                    Value::Timestamp {
                        seconds: 1_700_000_001,
                        micros: 0
                    }
                )
            ]
        ));
        // The zero timestamp sorts first and equals '0000-00-00 00:00:00'.
        let zero = [("created", Value::Timestamp { seconds: 0, micros: 0 })];
        assert!(m("created = '0000-00-00 00:00:00'", &zero));
        assert!(m("created < '1970-01-01 00:00:01'", &zero));
        assert!(!m("created = '1970-01-01 00:00:00'", &zero));
        // TIME, including negative and beyond 24 hours.
        let t = |negative, hours, minutes| Value::Time {
            negative,
            hours,
            minutes,
            seconds: 0,
            micros: 0,
        };
        assert!(m("dur > '24:00:00'", &[("dur", t(false, 100, 0))]));
        assert!(m("dur < '00:00:00'", &[("dur", t(true, 1, 0))]));
        assert!(m("dur < TIME '-00:30'", &[("dur", t(true, 1, 0))]));
        assert!(m("dur = '838:59:00'", &[("dur", t(false, 838, 59))]));
        assert!(m("dur BETWEEN '-1:00:00' AND '1:00'", &[("dur", t(true, 0, 30))]));
    }

    #[test]
    fn text_compares_by_bytes() {
        assert!(m("region = 'eu'", &[("region", text("eu"))]));
        assert!(!m("region = 'EU'", &[("region", text("eu"))]));
        assert!(!m("region = 'eu '", &[("region", text("eu"))]));
        assert!(m("region < 'b'", &[("region", text("a"))]));
        assert!(m("region < 'a'", &[("region", text("B"))]));
        assert!(m("region > 'z'", &[("region", text("é"))]));
        // Text in a charset sluice doesn't decode arrives as bytes.
        assert!(m("region = 'abc'", &[("region", Value::Bytes(b"abc".to_vec()))]));
        assert!(m("blob = 'abc'", &[("blob", Value::Bytes(b"abc".to_vec()))]));
        assert!(m("status = 'paid'", &[("status", Value::Enum("paid".into()))]));
        assert!(m(
            "status IN ('paid', 'pending')",
            &[("status", Value::Enum("pending".into()))]
        ));
        assert!(m("status <> 'cancelled'", &[("status", Value::Enum("paid".into()))]));
        assert!(m("status = ''", &[("status", Value::Enum("".into()))]));
        assert!(m("tags = 'a,c'", &[("tags", Value::Set("a,c".into()))]));
        assert!(m(r#"doc = '{"a":1}'"#, &[("doc", Value::Json(r#"{"a":1}"#.into()))]));
        assert!(m(
            "region = status",
            &[("region", text("paid")), ("status", Value::Enum("paid".into()))]
        ));
    }

    #[test]
    fn string_literal_escapes() {
        assert!(m("region = 'it''s'", &[("region", text("it's"))]));
        assert!(m(r"region = 'it\'s'", &[("region", text("it's"))]));
        assert!(m(r"region = 'a\\b'", &[("region", text(r"a\b"))]));
        assert!(m(r"region = 'a\nb\tc'", &[("region", text("a\nb\tc"))]));
        assert!(m(r"region = '\0'", &[("region", text("\0"))]));
        assert!(m(r"region = '\x'", &[("region", text("x"))]));
        // As in MySQL, \% and \_ keep their backslash outside LIKE.
        assert!(m(r"region = '50\%'", &[("region", text(r"50\%"))]));
        assert!(m("region = ''", &[("region", text(""))]));
        assert!(m("region = '😀'", &[("region", text("😀"))]));
    }

    #[test]
    fn identifiers() {
        assert!(m("`my col` = 'x'", &[("my col", text("x"))]));
        assert!(m("`a``b` = 1", &[("a`b", Value::Int(1))]));
        assert!(m(
            "REGION = 'x' AND Qty = 1",
            &[("region", text("x")), ("qty", Value::Int(1))]
        ));
        assert!(m("`qty` = 1", &[("qty", Value::Int(1))]));
        // DATE/TIME/TIMESTAMP are literal prefixes only before a string.
        let mut t = table();
        t.columns.push(col("date", ColumnKind::Date));
        let f = compile(&parse("date = '2024-01-01'").unwrap(), &t).unwrap();
        let mut r = vec![Value::Null; t.columns.len()];
        r[t.columns.len() - 1] = Value::Date {
            year: 2024,
            month: 1,
            day: 1,
        };
        assert!(f.matches(&r));
        // Reserved words need backquotes.
        let e = error("in = 1");
        assert_eq!(e.position, 1);
    }

    #[test]
    fn parse_tree_shape() {
        let e = parse("a = 1 OR NOT b IS NULL AND c IN ('x')").unwrap();
        let Expr::Or(left, right) = e else { panic!("{e:?}") };
        assert!(matches!(*left, Expr::Compare { op: CompareOp::Eq, .. }));
        let Expr::And(l2, r2) = *right else { panic!() };
        assert!(matches!(*l2, Expr::Not(_)));
        assert!(matches!(*r2, Expr::InList { negated: false, .. }));
        let e = parse("x NOT LIKE 'ab\\%c%'").unwrap();
        assert_eq!(
            e,
            Expr::Like {
                operand: Operand {
                    term: Term::Column("x".into()),
                    position: 1
                },
                pattern: LikePattern {
                    prefix: "ab%c".into(),
                    exact: false
                },
                negated: true,
            }
        );
        let e = parse("x >= -12.50").unwrap();
        let Expr::Compare { right, .. } = e else { panic!() };
        assert_eq!(right.term, Term::Literal(Literal::Number("-12.50".into())));
        assert_eq!(right.position, 6);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let cases: &[(&str, usize, &str)] = &[
            ("placed_at > ", 13, "expected a value after '>'"),
            (
                "placed_at >= AND qty = 1",
                14,
                "expected a value after '>=', found 'AND'",
            ),
            ("region = 'eu", 10, "unterminated string"),
            ("region = 'eu\\'", 10, "unterminated string"),
            ("`my col = 1", 1, "unterminated column name"),
            (
                "qty = 1 qty",
                9,
                "unexpected 'qty'; expected AND, OR or the end of the filter",
            ),
            ("qty = 1)", 8, "unexpected ')'"),
            ("(qty = 1", 9, "expected ')' after '1' to close the '(' at position 1"),
            ("", 1, "the filter is empty"),
            ("   ", 1, "the filter is empty"),
            ("qty = 1 AND", 12, "expected a condition after 'AND'"),
            (
                "qty = 1 AND OR qty = 2",
                13,
                "expected a condition after 'AND', found 'OR'",
            ),
            ("qty", 4, "expected a comparison"),
            ("qty NOT 5", 9, "expected IN, BETWEEN or LIKE after 'NOT'"),
            ("qty IS 5", 8, "expected NULL after 'IS'"),
            ("qty IN 1, 2", 8, "expected '(' to start the IN list"),
            ("qty IN (1 2)", 11, "expected ',' or ')' in the IN list"),
            ("qty IN ()", 9, "expected a value after '('"),
            ("qty BETWEEN 1 OR 2", 15, "expected AND (BETWEEN low AND high)"),
            ("region = \"eu\"", 10, "single quotes"),
            ("qty = 12abc", 9, "unexpected character 'a' in a number"),
            ("qty = 1.2.3", 10, "unexpected character '.' in a number"),
            ("qty = - x", 9, "expected a number after '-'"),
            ("qty # 1", 5, "unexpected character '#'"),
            ("qty ! 1", 5, "write NOT"),
            ("qty <=> 1", 5, "'<=>' is not supported"),
            ("qty = 1e999", 7, "out of range"),
            ("day = DATE '2024-01-01 10:00'", 12, "DATE literal"),
            ("day = DATE '2024-02-30'", 12, "DATE literal"),
            ("dur = TIME '839:00:00'", 12, "TIME literal"),
            ("created = TIMESTAMP 'now'", 21, "TIMESTAMP literal"),
            ("``= 1", 1, "empty column name"),
        ];
        for (f, pos, msg) in cases {
            let e = parse(f).expect_err(f);
            assert_eq!(e.position, *pos, "{f}: {e}");
            assert!(e.message.contains(msg), "{f}: {e}");
        }
        assert_eq!(
            parse("placed_at >     ").unwrap_err().to_string(),
            "at position 17: expected a value after '>'"
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        // 'é' and '😀' are one character each but 2 and 4 bytes.
        let f = "region = 'é😀' AND qty = 'x'";
        let e = error(f);
        assert_eq!(e.position, 25);
        assert_eq!(f.chars().nth(e.position - 1), Some('\''));
        assert!(parse("region = 'é😀")
            .unwrap_err()
            .to_string()
            .starts_with("at position 10:"));
    }

    #[test]
    fn compile_errors_have_positions() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "qty = 1 AND regoin = 'x'",
                13,
                "column `regoin` does not exist in shop.orders",
            ),
            (
                "qty = '5'",
                7,
                "column `qty` is INT; compare it with a number, not a string ('5')",
            ),
            ("'5' = qty", 1, "column `qty` is INT"),
            (
                "region = 5",
                10,
                "compare it with a string such as 'abc', not a number (5)",
            ),
            ("region = TRUE", 10, "not the boolean TRUE"),
            ("price = 'cheap'", 9, "DECIMAL"),
            ("ratio IN (1, 'x')", 14, "DOUBLE"),
            ("placed_at > 5", 13, "DATETIME"),
            ("placed_at > '2024-13-01'", 13, "not a valid DATETIME value"),
            ("placed_at > '2024-02-30'", 13, "not a valid DATETIME value"),
            ("placed_at > '2024-01-01 24:00:00'", 13, "not a valid DATETIME value"),
            ("placed_at > TIME '10:00'", 13, "a TIME literal"),
            ("created > '2024-00-01'", 11, "not a valid TIMESTAMP value"),
            ("dur > '25'", 7, "not a valid TIME value"),
            ("dur > DATE '2024-01-01'", 7, "a DATE literal"),
            ("region = DATE '2024-01-01'", 10, "a DATE literal"),
            ("yr = '2024'", 6, "YEAR"),
            ("flags = 'x'", 9, "BIT"),
            ("qty = NULL", 7, "use `qty` IS NULL or `qty` IS NOT NULL"),
            ("qty IN (1, NULL)", 12, "IS NULL"),
            ("qty BETWEEN NULL AND 1", 13, "IS NULL"),
            (
                "qty = region",
                7,
                "cannot compare column `qty` (INT) with column `region`",
            ),
            (
                "created = placed_at",
                11,
                "cannot compare column `created` (TIMESTAMP) with column `placed_at` (DATETIME)",
            ),
            ("qty BETWEEN 1 AND region", 19, "cannot compare"),
            ("qty IN (1, n2)", 12, "IN lists hold values, not columns"),
            ("1 = 1", 1, "needs a column on at least one side"),
            ("1 IN (1)", 1, "IN needs a column"),
            ("geom = 'x'", 1, "only IS [NOT] NULL applies"),
            (
                "status = 'canceled'",
                10,
                "'canceled' is not a value of ENUM column `status`",
            ),
            ("status IN ('paid', 'Paid')", 20, "not a value of ENUM"),
            ("status <> 'x'", 11, "'pending', 'paid', 'cancelled'"),
        ];
        for (f, pos, msg) in cases {
            let e = error(f);
            assert_eq!(e.position, *pos, "{f}: {e}");
            assert!(e.message.contains(msg), "{f}: {e}");
        }
        // Labels read from information_schema have '?' for characters outside the BMP.
        let mut t = table();
        t.columns[12].labels.push("hot ?".into());
        compile(&parse("status = 'hot 🔥'").unwrap(), &t).unwrap();
        assert!(compile(&parse("status = 'hot 🔥🔥'").unwrap(), &t).is_err());
        // Ordering comparisons on ENUM are not label-checked (they compare text).
        assert!(m("status >= 'p'", &[("status", Value::Enum("pending".into()))]));
    }

    #[test]
    fn temporal_helpers() {
        for seconds in [
            0i64,
            1,
            86_399,
            86_400,
            951_782_400,
            1_700_000_000,
            -1,
            -86_401,
            253_402_300_799,
        ] {
            let (y, mo, d, h, mi, s) = sluice_binlog::value::civil_from_unix(seconds);
            let days = days_from_civil(y, mo, d);
            assert_eq!(days * 86_400 + i64::from(h * 3600 + mi * 60 + s), seconds);
        }
        assert_eq!(
            parse_civil("2024-2-9 1:02").map(|c| (c.month, c.day, c.hour, c.minute)),
            Some((2, 9, 1, 2))
        );
        assert_eq!(parse_civil("2024-01-01 00:00:00.1234567"), None);
        assert_eq!(parse_civil("24-01-01"), None);
        assert_eq!(parse_civil("2023-02-29"), None);
        assert!(parse_civil("2000-02-29").is_some());
        assert_eq!(
            parse_civil("2024-01-01 10:00:00").and_then(Civil::to_unix_utc),
            Some((1_704_103_200, 0))
        );
        assert_eq!(parse_time("-838:59:59.999999").map(|t| t.negative), Some(true));
        assert_eq!(parse_time("12:60"), None);
    }

    /// The examples and error messages of docs/filters-and-transforms.md.
    #[test]
    fn documented_examples() {
        let mut status = col("status", ColumnKind::Enum);
        status.labels = vec!["pending".into(), "paid".into(), "cancelled".into()];
        let mut total = col("total", ColumnKind::Decimal);
        total.precision = 12;
        total.scale = 2;
        let t = TableDef {
            schema: "shop".into(),
            name: "orders".into(),
            columns: vec![
                col("id", ColumnKind::BigInt),
                col("deleted_at", ColumnKind::DateTime),
                col("region", ColumnKind::Text),
                status,
                col("placed_at", ColumnKind::DateTime),
                total,
                col("created_at", ColumnKind::Timestamp),
                col("customer type", ColumnKind::Text),
                col("email", ColumnKind::Text),
                col("shipped_at", ColumnKind::DateTime),
                col("qty", ColumnKind::Int),
                col("sku", ColumnKind::Text),
            ],
            primary_key: vec![0],
        };
        for f in [
            "deleted_at IS NULL",
            "region IN ('eu-west', 'eu-central') AND status <> 'cancelled'",
            "placed_at >= '2024-01-01 00:00:00' AND total BETWEEN 10 AND 10000.00",
            "created_at >= TIMESTAMP '2024-06-01 00:00:00'",
            "NOT (`customer type` = 'internal' OR email LIKE 'test+%')",
            "shipped_at >= placed_at OR shipped_at IS NULL",
            "qty <> 5 OR qty IS NULL",
            "sku LIKE 'EU-%'",
        ] {
            compile(&parse(f).unwrap(), &t).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        for (f, want) in [
            ("placed_at >", "at position 12: expected a value after '>'"),
            (
                "region = 'eu",
                "at position 10: unterminated string: missing the closing quote (')",
            ),
            (
                "qty = 1 qty",
                "at position 9: unexpected 'qty'; expected AND, OR or the end of the filter",
            ),
            (
                "regoin = 'eu'",
                "at position 1: column `regoin` does not exist in shop.orders",
            ),
            (
                "qty > 0 AND regoin = 'eu'",
                "at position 13: column `regoin` does not exist in shop.orders",
            ),
            (
                "qty = '5'",
                "at position 7: column `qty` is INT; compare it with a number, not a string ('5')",
            ),
            ("sku LIKE '%x'", "at position 10: LIKE pattern '%x' is not supported: "),
            (
                "status = 'canceled'",
                "at position 10: 'canceled' is not a value of ENUM column `status` (its values are ",
            ),
            ("deleted_at = NULL", "at position 14: NULL can't be compared with "),
        ] {
            let e = match parse(f) {
                Err(e) => e,
                Ok(expr) => compile(&expr, &t).expect_err(f),
            };
            assert!(e.to_string().starts_with(want), "{f}: {e}");
        }
    }

    fn decimal_text(m: i64, scale: u32, extra_zeros: usize) -> String {
        let digits = m.unsigned_abs().to_string();
        let scale = scale as usize;
        let padded = format!("{}{digits}", "0".repeat((scale + 1).saturating_sub(digits.len())));
        let (int, frac) = padded.split_at(padded.len() - scale);
        let mut s = String::new();
        if m < 0 {
            s.push('-');
        }
        s.push_str(int);
        if scale > 0 || extra_zeros > 0 {
            s.push('.');
            s.push_str(frac);
            s.push_str(&"0".repeat(extra_zeros));
        }
        s
    }

    fn ops() -> [(CompareOp, &'static str); 6] {
        [
            (CompareOp::Eq, "="),
            (CompareOp::Ne, "<>"),
            (CompareOp::Lt, "<"),
            (CompareOp::Le, "<="),
            (CompareOp::Gt, ">"),
            (CompareOp::Ge, ">="),
        ]
    }

    fn int_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            (-3i64..3).prop_map(Value::Int),
            (0u64..3).prop_map(Value::UInt),
            Just(Value::UInt(u64::MAX)),
            Just(Value::Int(i64::MIN)),
        ]
    }

    fn as_i128(v: &Value) -> i128 {
        match v {
            Value::Int(i) => i128::from(*i),
            Value::UInt(u) => i128::from(*u),
            _ => unreachable!(),
        }
    }

    proptest! {
        #[test]
        fn decimal_comparison_matches_rationals(
            a in prop_oneof![any::<i64>(), -1000i64..1000],
            sa in 0u32..12,
            za in 0usize..3,
            b in prop_oneof![any::<i64>(), -1000i64..1000],
            sb in 0u32..12,
            zb in 0usize..3,
        ) {
            let (ta, tb) = (decimal_text(a, sa, za), decimal_text(b, sb, zb));
            // a / 10^sa against b / 10^sb, exactly.
            let want = (i128::from(a) * 10i128.pow(sb)).cmp(&(i128::from(b) * 10i128.pow(sa)));
            let got = cmp_dec(&DecView::parse(&ta).unwrap(), &DecView::parse(&tb).unwrap());
            prop_assert_eq!(got, want, "{} vs {}", ta, tb);
            // The same through a compiled filter: column against literal.
            let f = filter(&format!("price = {tb}"));
            prop_assert_eq!(f.matches(&row(&[("price", dec(&ta))])), want == Ordering::Equal);
            let f = filter(&format!("price < {tb}"));
            prop_assert_eq!(f.matches(&row(&[("price", dec(&ta))])), want == Ordering::Less);
        }

        #[test]
        fn integer_columns_compare_like_i128(a in int_value(), b in int_value()) {
            let want = as_i128(&a).cmp(&as_i128(&b));
            let r = row(&[("n2", a.clone()), ("id", b.clone())]);
            for (op, sym) in ops() {
                prop_assert_eq!(filter(&format!("n2 {sym} id")).matches(&r), op.test(want), "{:?} {} {:?}", a, sym, b);
            }
        }

        #[test]
        fn integer_literals_compare_like_i128(a in int_value(), lit in (i128::from(i64::MIN)..=i128::from(u64::MAX))) {
            let want = as_i128(&a).cmp(&lit);
            let r = row(&[("n2", a.clone())]);
            for (op, sym) in ops() {
                prop_assert_eq!(filter(&format!("n2 {sym} {lit}")).matches(&r), op.test(want), "{:?} {} {}", a, sym, lit);
            }
        }
    }
}
