//! GTIDs and replication positions of both server flavours.
//!
//! # MariaDB
//!
//! A MariaDB GTID ([`Gtid`]) is `domain-server-sequence`. A replication *position*
//! ([`GtidPosition`], what `@@gtid_binlog_pos` and `@@slave_connect_state` hold) keeps the
//! last GTID applied per replication domain; everything at or below it in that domain counts
//! as applied. sluice's checkpoint is such a position.
//!
//! # MySQL
//!
//! A MySQL GTID is `source_uuid:transaction_number` (MySQL 8.4 adds an optional tag:
//! `source_uuid:tag:transaction_number`). Transactions of one source are not necessarily
//! applied in order, so MySQL tracks *sets* of GTIDs, written as ranges per source
//! (`@@gtid_executed`, `@@gtid_purged`, the PREVIOUS_GTIDS event). [`MysqlGtidSet`] is such a
//! set with real set semantics: union, intersection, difference and inclusion.
//!
//! ```
//! use sluice_binlog::gtid::MysqlGtidSet;
//!
//! let executed: MysqlGtidSet = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9,\n\
//!                               3e11fa47-71ca-11e1-9e33-c80aa9429562:6"
//!     .parse()
//!     .unwrap();
//! assert_eq!(executed.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9");
//! let applied: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-4".parse().unwrap();
//! assert!(executed.contains_set(&applied));
//! assert_eq!(executed.subtract(&applied).to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:5-9");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// One MariaDB global transaction id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub sequence: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.sequence)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid GTID {text:?}: expected domain-server-sequence such as 0-1-42")]
pub struct ParseGtidError {
    pub text: String,
}

impl FromStr for Gtid {
    type Err = ParseGtidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseGtidError { text: s.to_owned() };
        let mut parts = s.trim().splitn(3, '-');
        let domain = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let server = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let sequence = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        Ok(Gtid {
            domain,
            server,
            sequence,
        })
    }
}

/// A MariaDB replication position: the last GTID per domain.
///
/// Ordering within a domain is by sequence number, which MariaDB keeps strictly increasing
/// per domain in a binlog (`gtid_strict_mode` makes the server enforce it).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GtidPosition {
    domains: BTreeMap<u32, Gtid>,
}

impl GtidPosition {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Records `gtid` as the newest transaction of its domain.
    pub fn advance(&mut self, gtid: Gtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    /// The last GTID of `domain`, if any.
    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.domains.get(&domain).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = Gtid> + '_ {
        self.domains.values().copied()
    }

    /// Whether the transaction `gtid` is at or before this position (already covered).
    pub fn contains(&self, gtid: Gtid) -> bool {
        self.domains
            .get(&gtid.domain)
            .is_some_and(|last| gtid.sequence <= last.sequence)
    }

    /// Whether every domain's GTID of `other` is covered by this position.
    pub fn covers(&self, other: &GtidPosition) -> bool {
        other.iter().all(|g| self.contains(g))
    }

    /// The position covering everything either position covers: per domain, the GTID with
    /// the higher sequence number (this position's on a tie). Commutative up to the server
    /// id of a tie, associative and idempotent; both inputs are [covered](Self::covers).
    pub fn union(&self, other: &GtidPosition) -> GtidPosition {
        let mut out = self.clone();
        for gtid in other.iter() {
            if !out.contains(gtid) {
                out.advance(gtid);
            }
        }
        out
    }
}

impl fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for gtid in self.domains.values() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{gtid}")?;
        }
        Ok(())
    }
}

impl FromStr for GtidPosition {
    type Err = ParseGtidError;

    /// Parses `0-1-42,1-2-7` (the empty string is the empty position).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pos = GtidPosition::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let gtid: Gtid = part.parse()?;
            if pos.domains.contains_key(&gtid.domain) {
                return Err(ParseGtidError { text: s.to_owned() });
            }
            pos.advance(gtid);
        }
        Ok(pos)
    }
}

// MySQL GTID sets.

/// The largest MySQL transaction number: MySQL keeps them below `GNO_END = INT64_MAX`, so
/// 2^63 - 2. The smallest is 1.
pub const MAX_GNO: u64 = i64::MAX as u64 - 1;

/// Why a MySQL server UUID, GTID tag, transaction number or GTID set was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MysqlGtidError {
    #[error("invalid server UUID {0:?}: expected 32 hex digits such as 3e11fa47-71ca-11e1-9e33-c80aa9429562")]
    Uuid(String),
    #[error("invalid GTID tag {0:?}: expected a letter or underscore, then at most 31 letters, digits or underscores")]
    Tag(String),
    #[error("GTID transaction number {0} outside 1..={MAX_GNO}")]
    Gno(u64),
    #[error("empty GTID interval {start}-{end}: the end is below the start")]
    Interval { start: u64, end: u64 },
    #[error("invalid MySQL GTID set {text:?}: {reason}")]
    Syntax { text: String, reason: String },
}

/// A MySQL server UUID (`@@server_uuid`): the source part of a MySQL GTID.
///
/// Parsed, as MySQL does, from the hyphenated 36-character form, the bare 32-digit form, or
/// either in braces, hex digits in any case. Printed hyphenated in lowercase. Ordered by its
/// bytes, which is the order MySQL prints a GTID set in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Uuid(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl FromStr for Uuid {
    type Err = MysqlGtidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MysqlGtidError::Uuid(s.to_owned());
        let inner = s
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .unwrap_or(s)
            .as_bytes();
        let hyphenated = inner.len() == 36 && [8, 13, 18, 23].iter().all(|&i| inner[i] == b'-');
        if !hyphenated && inner.len() != 32 {
            return Err(err());
        }
        let mut digits = inner
            .iter()
            .enumerate()
            .filter(|&(i, _)| !(hyphenated && matches!(i, 8 | 13 | 18 | 23)))
            .map(|(_, &c)| char::from(c).to_digit(16).map(|d| d as u8));
        let mut bytes = [0u8; 16];
        for byte in &mut bytes {
            let (hi, lo) = (digits.next().flatten(), digits.next().flatten());
            *byte = hi.zip(lo).map(|(hi, lo)| hi << 4 | lo).ok_or_else(err)?;
        }
        Ok(Uuid(bytes))
    }
}

impl serde::Serialize for Uuid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A MySQL 8.4 GTID tag, as in `3e11fa47-71ca-11e1-9e33-c80aa9429562:my_tag:7`.
///
/// One to 32 characters: a letter or underscore, then letters, digits and underscores. Tags
/// are case-insensitive; like MySQL, this type keeps them in lowercase.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GtidTag(String);

impl GtidTag {
    pub fn new(tag: &str) -> Result<Self, MysqlGtidError> {
        let b = tag.as_bytes();
        let valid = (1..=32).contains(&b.len())
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !valid {
            return Err(MysqlGtidError::Tag(tag.to_owned()));
        }
        Ok(GtidTag(tag.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key untagged intervals are stored under. Not a valid tag, and it sorts first, as
    /// untagged intervals print first.
    fn untagged() -> Self {
        GtidTag(String::new())
    }

    fn is_untagged(&self) -> bool {
        self.0.is_empty()
    }
}

/// Lets the interval map be searched with a `&str`, without building a `GtidTag`.
impl std::borrow::Borrow<str> for GtidTag {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GtidTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GtidTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GtidTag({:?})", self.0)
    }
}

impl FromStr for GtidTag {
    type Err = MysqlGtidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GtidTag::new(s)
    }
}

/// Sorted, disjoint, non-adjacent inclusive intervals of transaction numbers, never empty
/// inside a [`MysqlGtidSet`]. Ends are at most [`MAX_GNO`], so `end + 1` cannot overflow.
type Intervals = Vec<(u64, u64)>;

/// A set of MySQL GTIDs, such as `@@gtid_executed`.
///
/// # Text form
///
/// Parsing ([`FromStr`]) accepts what MySQL accepts and prints:
///
/// * `uuid:1-5:7:9-12`: a source UUID then intervals, a single number being a one-GTID
///   interval. Intervals may overlap, touch or come in any order.
/// * `uuid:1-5:tag_a:1-3:7:tag_b:2`: MySQL 8.4 tags. A tag applies to the intervals after it,
///   up to the next tag; intervals before any tag are untagged. Tags are case-insensitive.
/// * Entries separated by commas, and the same UUID may appear in several entries. Whitespace
///   (spaces, tabs, newlines) is allowed around every UUID, tag, number, `:`, `-` and `,`, so
///   `@@gtid_executed` as MySQL prints it (`,` then a newline between sources) parses as is.
/// * The empty string (or only whitespace) is the empty set. A UUID or tag without intervals
///   contributes nothing.
///
/// Numbers are `1..=`[`MAX_GNO`]; an interval whose end is below its start is an error.
///
/// [`Display`](fmt::Display) prints MySQL's canonical form: sources sorted by UUID (lowercase),
/// each once; intervals merged and sorted; the untagged intervals first, then each tag in
/// sorted order followed by its intervals, as MySQL 8.4 prints them:
/// `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-3:tag_a:5-6:tag_b:1` (MySQL 9.1 prints
/// `@@gtid_executed` as `3e11fa47-…:domain_1:1-3:15-21:domain_2:8-52` after being given
/// `3E11FA47-…:Domain_1:1-3:15-21, 3E11FA47-…:Domain_2:8-52`, see MySQL bug #116789; the
/// untagged intervals come first because MySQL orders a source's untagged GTIDs before its
/// tagged ones, the empty tag being the smallest). Sources are separated by
/// `,`; the alternate form (`{:#}`) separates them by `,` and a newline exactly as MySQL's
/// `@@gtid_executed` does. The empty set prints as the empty string. Printing and parsing
/// round-trip, and two sets are equal exactly when they print the same.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct MysqlGtidSet {
    /// Per source UUID, per tag (the untagged key first), the intervals. No inner map and no
    /// interval list is empty.
    sources: BTreeMap<Uuid, BTreeMap<GtidTag, Intervals>>,
}

impl MysqlGtidSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// How many GTIDs the set holds.
    pub fn count(&self) -> u128 {
        self.intervals()
            .map(|(_, _, r)| u128::from(r.end() - r.start()) + 1)
            .sum()
    }

    /// Adds one GTID. Returns whether it was new; fails when `gno` is outside
    /// `1..=`[`MAX_GNO`].
    pub fn insert(&mut self, uuid: Uuid, tag: Option<&GtidTag>, gno: u64) -> Result<bool, MysqlGtidError> {
        check_gno(gno)?;
        if self.contains_gtid(&uuid, tag, gno) {
            return Ok(false);
        }
        self.insert_range(uuid, tag, gno..=gno)?;
        Ok(true)
    }

    /// Adds the GTIDs `range` of one source and tag. Fails when an end is outside
    /// `1..=`[`MAX_GNO`] or the range is empty.
    pub fn insert_range(
        &mut self,
        uuid: Uuid,
        tag: Option<&GtidTag>,
        range: RangeInclusive<u64>,
    ) -> Result<(), MysqlGtidError> {
        let (start, end) = range.into_inner();
        check_gno(start)?;
        check_gno(end)?;
        if end < start {
            return Err(MysqlGtidError::Interval { start, end });
        }
        let tags = self.sources.entry(uuid).or_default();
        let key = tag.cloned().unwrap_or_else(GtidTag::untagged);
        let list = tags.entry(key).or_default();
        match list.last_mut() {
            // The common case, transactions arriving in order: extend or append.
            None => list.push((start, end)),
            Some(last) if start > last.1 + 1 => list.push((start, end)),
            Some(last) if start >= last.0 => last.1 = last.1.max(end),
            Some(_) => *list = union_intervals(list, &[(start, end)]),
        }
        Ok(())
    }

    /// Whether the set holds the GTID `uuid[:tag]:gno`.
    pub fn contains_gtid(&self, uuid: &Uuid, tag: Option<&GtidTag>, gno: u64) -> bool {
        self.list(uuid, tag).is_some_and(|list| {
            // The last interval starting at or below gno is the only candidate.
            let i = list.partition_point(|&(start, _)| start <= gno);
            i > 0 && gno <= list[i - 1].1
        })
    }

    /// Whether every GTID of `other` is in this set (`other` ⊆ `self`), like MySQL's
    /// `GTID_SUBSET(other, self)`.
    pub fn contains_set(&self, other: &MysqlGtidSet) -> bool {
        other.sources.iter().all(|(uuid, tags)| {
            tags.iter().all(|(tag, theirs)| {
                let ours = self.sources.get(uuid).and_then(|t| t.get(tag.as_str()));
                ours.is_some_and(|ours| covers(ours, theirs))
            })
        })
    }

    /// The GTIDs in either set (`self` ∪ `other`).
    pub fn union(&self, other: &MysqlGtidSet) -> MysqlGtidSet {
        let mut out = self.clone();
        for (uuid, tags) in &other.sources {
            let ours = out.sources.entry(*uuid).or_default();
            for (tag, theirs) in tags {
                match ours.get_mut(tag.as_str()) {
                    Some(list) => *list = union_intervals(list, theirs),
                    None => {
                        ours.insert(tag.clone(), theirs.clone());
                    }
                }
            }
        }
        out
    }

    /// The GTIDs in both sets (`self` ∩ `other`).
    pub fn intersection(&self, other: &MysqlGtidSet) -> MysqlGtidSet {
        self.combine(
            |tag_lists| match tag_lists {
                (ours, Some(theirs)) => intersect_intervals(ours, theirs),
                (_, None) => Vec::new(),
            },
            other,
        )
    }

    /// The GTIDs of this set that are not in `other` (`self` − `other`), like MySQL's
    /// `GTID_SUBTRACT(self, other)`.
    pub fn subtract(&self, other: &MysqlGtidSet) -> MysqlGtidSet {
        self.combine(
            |tag_lists| match tag_lists {
                (ours, Some(theirs)) => subtract_intervals(ours, theirs),
                (ours, None) => ours.clone(),
            },
            other,
        )
    }

    /// Every interval of the set as (source, tag, range), in printing order.
    pub fn intervals(&self) -> impl Iterator<Item = (&Uuid, Option<&GtidTag>, RangeInclusive<u64>)> + '_ {
        self.sources.iter().flat_map(|(uuid, tags)| {
            tags.iter().flat_map(move |(tag, list)| {
                let tag = (!tag.is_untagged()).then_some(tag);
                list.iter().map(move |&(start, end)| (uuid, tag, start..=end))
            })
        })
    }

    fn list(&self, uuid: &Uuid, tag: Option<&GtidTag>) -> Option<&Intervals> {
        self.sources.get(uuid)?.get(tag.map_or("", GtidTag::as_str))
    }

    /// A set made of `f(self's intervals, other's intervals of the same source and tag)` for
    /// every source and tag of `self`, dropping what comes out empty.
    fn combine(&self, f: impl Fn((&Intervals, Option<&Intervals>)) -> Intervals, other: &MysqlGtidSet) -> MysqlGtidSet {
        let mut out = MysqlGtidSet::new();
        for (uuid, tags) in &self.sources {
            let mut kept = BTreeMap::new();
            for (tag, ours) in tags {
                let theirs = other.sources.get(uuid).and_then(|t| t.get(tag.as_str()));
                let list = f((ours, theirs));
                if !list.is_empty() {
                    kept.insert(tag.clone(), list);
                }
            }
            if !kept.is_empty() {
                out.sources.insert(*uuid, kept);
            }
        }
        out
    }
}

fn check_gno(gno: u64) -> Result<(), MysqlGtidError> {
    if (1..=MAX_GNO).contains(&gno) {
        Ok(())
    } else {
        Err(MysqlGtidError::Gno(gno))
    }
}

/// Merges two interval lists into one (sorted, overlapping and touching intervals joined).
fn union_intervals(a: &[(u64, u64)], b: &[(u64, u64)]) -> Intervals {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Intervals = Vec::with_capacity(all.len());
    for (start, end) in all {
        match out.last_mut() {
            Some(last) if start <= last.1 + 1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

fn intersect_intervals(a: &[(u64, u64)], b: &[(u64, u64)]) -> Intervals {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if start <= end {
            out.push((start, end));
        }
        // Drop whichever interval ends first; the other may still overlap the next one.
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn subtract_intervals(a: &[(u64, u64)], b: &[(u64, u64)]) -> Intervals {
    let mut out = Vec::new();
    let mut j = 0;
    for &(start, end) in a {
        let mut from = start;
        // Skip the intervals of b that end before this one starts.
        while j < b.len() && b[j].1 < from {
            j += 1;
        }
        let mut k = j;
        while from <= end && k < b.len() && b[k].0 <= end {
            if b[k].0 > from {
                out.push((from, b[k].0 - 1));
            }
            // b[k].1 + 1 cannot overflow: ends are at most MAX_GNO.
            from = from.max(b[k].1 + 1);
            k += 1;
        }
        if from <= end {
            out.push((from, end));
        }
    }
    out
}

/// Whether `a` holds every number of `b` (both normalised).
fn covers(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    b.iter().all(|&(start, end)| {
        // Intervals of a are maximal, so a covered interval lies inside a single one.
        let i = a.partition_point(|&(s, _)| s <= start);
        i > 0 && end <= a[i - 1].1
    })
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = if f.alternate() { ",\n" } else { "," };
        for (i, (uuid, tags)) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(separator)?;
            }
            write!(f, "{uuid}")?;
            for (tag, list) in tags {
                if !tag.is_untagged() {
                    write!(f, ":{tag}")?;
                }
                for &(start, end) in list {
                    if start == end {
                        write!(f, ":{start}")?;
                    } else {
                        write!(f, ":{start}-{end}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MysqlGtidSet({:?})", self.to_string())
    }
}

impl FromStr for MysqlGtidSet {
    type Err = MysqlGtidError;

    /// Parses the text form described on [`MysqlGtidSet`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| MysqlGtidError::Syntax {
            text: text.to_owned(),
            reason,
        };
        let mut set = MysqlGtidSet::new();
        if text.trim().is_empty() {
            return Ok(set);
        }
        for entry in text.split(',') {
            let mut fields = entry.split(':').map(str::trim);
            let uuid_text = fields.next().unwrap_or_default();
            if uuid_text.is_empty() {
                return Err(err("empty entry between commas".into()));
            }
            let uuid: Uuid = uuid_text.parse().map_err(|e: MysqlGtidError| err(e.to_string()))?;
            let mut tag: Option<GtidTag> = None;
            for field in fields {
                match field.bytes().next() {
                    None => return Err(err(format!("empty field after {uuid_text}:"))),
                    Some(b'0'..=b'9') => {
                        let (start, end) = match field.split_once('-') {
                            Some((start, end)) => (start.trim_end(), end.trim_start()),
                            None => (field, field),
                        };
                        let (start, end) = (parse_gno(start).map_err(&err)?, parse_gno(end).map_err(&err)?);
                        set.insert_range(uuid, tag.as_ref(), start..=end)
                            .map_err(|e| err(e.to_string()))?;
                    }
                    Some(_) => tag = Some(field.parse().map_err(|e: MysqlGtidError| err(e.to_string()))?),
                }
            }
        }
        Ok(set)
    }
}

fn parse_gno(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a transaction number"));
    }
    text.parse()
        .map_err(|_| format!("transaction number {text} outside 1..={MAX_GNO}"))
}

impl serde::Serialize for MysqlGtidSet {
    /// Serialises as the canonical text.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_positions() {
        let pos: GtidPosition = "1-2-7, 0-1-42".parse().unwrap();
        assert_eq!(pos.to_string(), "0-1-42,1-2-7");
        assert!(pos.contains("0-5-41".parse().unwrap()));
        assert!(!pos.contains("0-1-43".parse().unwrap()));
        assert!(!pos.contains("2-1-1".parse().unwrap()));
        assert!("".parse::<GtidPosition>().unwrap().is_empty());
        assert!("0-1".parse::<GtidPosition>().is_err());
        assert!("0-1-2,0-1-3".parse::<GtidPosition>().is_err());
    }

    proptest! {
        #[test]
        fn position_text_round_trips(gtids in proptest::collection::btree_map(any::<u32>(), (any::<u32>(), any::<u64>()), 0..6)) {
            let mut pos = GtidPosition::new();
            for (domain, (server, sequence)) in gtids {
                pos.advance(Gtid { domain, server, sequence });
            }
            let back: GtidPosition = pos.to_string().parse().unwrap();
            prop_assert_eq!(back, pos);
        }
    }

    #[test]
    fn mariadb_text_as_the_server_prints_it() {
        // @@gtid_binlog_pos / @@gtid_slave_pos: comma-separated, possibly with spaces or
        // newlines after the commas; empty before the first transaction.
        let pos: GtidPosition = "0-1-100,\n1-2-5, 2-3-18446744073709551615".parse().unwrap();
        assert_eq!(pos.to_string(), "0-1-100,1-2-5,2-3-18446744073709551615");
        assert_eq!(pos.get(2).unwrap().sequence, u64::MAX);
        assert_eq!(" ".parse::<GtidPosition>().unwrap().to_string(), "");
        for bad in ["0-1-", "-1-2", "0-1-2-3", "0-1-x", "a-1-2", "0-1--2", "4294967296-1-1"] {
            assert!(bad.parse::<Gtid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mariadb_union_keeps_the_newest_per_domain() {
        let a: GtidPosition = "0-1-10,1-1-5".parse().unwrap();
        let b: GtidPosition = "0-2-7,2-1-3".parse().unwrap();
        let u = a.union(&b);
        assert_eq!(u.to_string(), "0-1-10,1-1-5,2-1-3");
        assert!(u.covers(&a) && u.covers(&b));
        assert_eq!(b.union(&a).to_string(), "0-1-10,1-1-5,2-1-3");
        assert_eq!(a.union(&a), a);
        assert_eq!(a.union(&GtidPosition::new()), a);
    }

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "ced1e1e8-bad8-11ee-8e07-0800277de1cd";

    fn set(text: &str) -> MysqlGtidSet {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn uuid(text: &str) -> Uuid {
        text.parse().unwrap()
    }

    fn tag(text: &str) -> GtidTag {
        text.parse().unwrap()
    }

    #[test]
    fn mysql_sets_print_canonically() {
        // Upper case, unsorted, overlapping and touching intervals, repeated sources.
        let s = set(&format!("{}:7-9:1-5, {U1}:6,{U1}:12,{U2}:4-6", U2.to_uppercase()));
        assert_eq!(s.to_string(), format!("{U1}:6:12,{U2}:1-9"));
        // As @@gtid_executed prints it: ",\n" between sources.
        let s = set(&format!("{U1}:1-5:11-18,\n{U2}:1-27"));
        assert_eq!(format!("{s:#}"), format!("{U1}:1-5:11-18,\n{U2}:1-27"));
        assert_eq!(s.to_string(), format!("{U1}:1-5:11-18,{U2}:1-27"));
        // Whitespace everywhere MySQL tolerates it.
        assert_eq!(
            set(&format!("\n {U1} : 1 - 3 : 5 ,\t{U2}:\n2 \n")).to_string(),
            format!("{U1}:1-3:5,{U2}:2")
        );
        // Other UUID spellings MySQL accepts.
        assert_eq!(set(&format!("{{{}}}:1", U1)).to_string(), format!("{U1}:1"));
        assert_eq!(
            set(&format!("{}:1", U1.replace('-', ""))).to_string(),
            format!("{U1}:1")
        );
        // Empty, and sources without intervals.
        assert!(set("").is_empty() && set(" \n").is_empty() && set(U1).is_empty());
        assert_eq!(set("").to_string(), "");
        assert_eq!(set(&format!("{U1}:{MAX_GNO}")).to_string(), format!("{U1}:{MAX_GNO}"));
    }

    #[test]
    fn mysql_tags_group_after_the_untagged_intervals() {
        let s = set(&format!("{U1}:Tag_B:1, {U1}:5-6:tag_a:3:4, {U1}:1-3, {U1}:TAG_A:1"));
        assert_eq!(s.to_string(), format!("{U1}:1-3:5-6:tag_a:1:3-4:tag_b:1"));
        assert_eq!(set(&s.to_string()), s);
        assert!(s.contains_gtid(&uuid(U1), Some(&tag("TAG_A")), 4));
        assert!(!s.contains_gtid(&uuid(U1), Some(&tag("tag_a")), 2));
        assert!(!s.contains_gtid(&uuid(U1), None, 4));
        assert!(s.contains_gtid(&uuid(U1), None, 6));
        assert_eq!(tag("Ab_9").as_str(), "ab_9");
        assert!(GtidTag::new(&"x".repeat(32)).is_ok());
        for bad in ["", "9a", "a-b", "é", &"x".repeat(33)] {
            assert!(GtidTag::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mysql_tagged_set_as_the_server_prints_it() {
        // MySQL bug #116789: what `SET GLOBAL gtid_purged` was given and what the server shows.
        let given = "3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_1:1-3:15-21,\n\
                     3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_2:8-52";
        let shown = "3e11fa47-71ca-11e1-9e33-c80aa9429562:domain_1:1-3:15-21:domain_2:8-52";
        assert_eq!(set(given).to_string(), shown);
        assert_eq!(set(shown), set(given));
    }

    #[test]
    fn mysql_set_syntax_errors() {
        for bad in [
            format!("{U1}:5-3"),
            format!("{U1}:0"),
            format!("{U1}:0-3"),
            format!("{U1}:1-{}", MAX_GNO + 1),
            format!("{U1}:99999999999999999999"),
            format!("{U1}::1"),
            format!("{U1}:1-"),
            format!("{U1}:-1"),
            format!("{U1}:+1"),
            format!("{U1}:1-2-3"),
            format!("{U1}:1,"),
            format!(",{U1}:1"),
            format!("{U1}:1,,{U2}:1"),
            format!("{U1}:9tag:1"),
            format!("{U1}:bad-tag:1"),
            "3e11fa47-71ca-11e1-9e33-c80aa942956:1".into(),
            "3e11fa47-71ca-11e1-9e33-c80aa942956g:1".into(),
            "3e11fa4771ca-11e1-9e33-c80aa9429562-:1".into(),
            "1-2-3".into(),
            "ü".repeat(18),
        ] {
            assert!(bad.parse::<MysqlGtidSet>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn mysql_set_operations() {
        let a = set(&format!("{U1}:1-10:20-30,{U2}:1-5:t:1-3"));
        let b = set(&format!("{U1}:5-25,{U2}:t:2"));
        assert_eq!(a.union(&b).to_string(), format!("{U1}:1-30,{U2}:1-5:t:1-3"));
        assert_eq!(a.intersection(&b).to_string(), format!("{U1}:5-10:20-25,{U2}:t:2"));
        assert_eq!(a.subtract(&b).to_string(), format!("{U1}:1-4:26-30,{U2}:1-5:t:1:3"));
        assert_eq!(b.subtract(&a).to_string(), format!("{U1}:11-19"));
        assert!(a.contains_set(&set(&format!("{U1}:2-9:21,{U2}:t:3"))));
        assert!(!a.contains_set(&b));
        assert!(a.contains_set(&MysqlGtidSet::new()));
        assert_eq!(a.count(), 10 + 11 + 5 + 3);
        let mut c = MysqlGtidSet::new();
        assert!(c.insert(uuid(U1), None, 2).unwrap());
        assert!(c.insert(uuid(U1), None, 1).unwrap());
        assert!(!c.insert(uuid(U1), None, 2).unwrap());
        assert!(c.insert(uuid(U1), Some(&tag("x")), 3).unwrap());
        assert!(c.insert(uuid(U1), None, 0).is_err());
        assert!(c.insert(uuid(U1), None, MAX_GNO + 1).is_err());
        let (start, end) = (5, 4);
        assert_eq!(
            c.insert_range(uuid(U1), None, start..=end),
            Err(MysqlGtidError::Interval { start, end })
        );
        assert_eq!(c.to_string(), format!("{U1}:1-2:x:3"));
        // The largest numbers do not overflow when merged or subtracted.
        let top = set(&format!("{U1}:1-{MAX_GNO}"));
        let mid = set(&format!("{U1}:2-{}", MAX_GNO - 1));
        assert_eq!(top.subtract(&mid).to_string(), format!("{U1}:1:{MAX_GNO}"));
        assert_eq!(top.subtract(&mid).union(&mid), top);
        assert_eq!(top.count(), u128::from(MAX_GNO));
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{U1}:1-2:x:3\""));
    }

    /// Three sources, the untagged intervals and two tags, small numbers: small enough that
    /// a `BTreeSet` of single GTIDs models a set exactly.
    const UUIDS: [&str; 3] = [U1, U2, "00000000-0000-0000-0000-00000000000a"];
    const TAGS: [Option<&str>; 3] = [None, Some("a"), Some("tag_b")];

    type Model = std::collections::BTreeSet<(Uuid, Option<GtidTag>, u64)>;

    fn arb_set() -> impl Strategy<Value = MysqlGtidSet> {
        proptest::collection::vec((0..3usize, 0..3usize, 1..40u64, 0..6u64), 0..8).prop_map(|ranges| {
            let mut s = MysqlGtidSet::new();
            for (u, t, start, len) in ranges {
                let tag = TAGS[t].map(tag);
                s.insert_range(uuid(UUIDS[u]), tag.as_ref(), start..=start + len)
                    .unwrap();
            }
            s
        })
    }

    fn model(s: &MysqlGtidSet) -> Model {
        s.intervals()
            .flat_map(|(u, t, range)| range.map(move |gno| (*u, t.cloned(), gno)))
            .collect()
    }

    proptest! {
        #[test]
        fn mysql_text_round_trips(a in arb_set()) {
            prop_assert_eq!(set(&a.to_string()), a.clone());
            prop_assert_eq!(set(&format!("{a:#}")), a.clone());
            prop_assert_eq!(set(&a.to_string()).to_string(), a.to_string());
        }

        #[test]
        fn mysql_union_is_commutative_associative_idempotent(a in arb_set(), b in arb_set(), c in arb_set()) {
            prop_assert_eq!(a.union(&b), b.union(&a));
            prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
            prop_assert_eq!(a.union(&a), a.clone());
            prop_assert_eq!(a.union(&MysqlGtidSet::new()), a.clone());
            let u = a.union(&b);
            prop_assert!(u.contains_set(&a) && u.contains_set(&b));
        }

        #[test]
        fn mysql_difference_and_intersection_partition(a in arb_set(), b in arb_set()) {
            let diff = a.subtract(&b);
            let both = a.intersection(&b);
            prop_assert!(diff.intersection(&b).is_empty());
            prop_assert_eq!(diff.union(&both), a.clone());
            prop_assert_eq!(both.clone(), b.intersection(&a));
            prop_assert!(a.contains_set(&diff) && a.contains_set(&both) && b.contains_set(&both));
            prop_assert!(a.subtract(&a).is_empty());
            prop_assert_eq!(a.contains_set(&b), b.subtract(&a).is_empty());
        }

        #[test]
        fn mysql_sets_agree_with_a_naive_model(a in arb_set(), b in arb_set()) {
            let (ma, mb) = (model(&a), model(&b));
            prop_assert_eq!(a.count(), ma.len() as u128);
            prop_assert_eq!(model(&a.union(&b)), ma.union(&mb).cloned().collect::<Model>());
            prop_assert_eq!(model(&a.intersection(&b)), ma.intersection(&mb).cloned().collect::<Model>());
            prop_assert_eq!(model(&a.subtract(&b)), ma.difference(&mb).cloned().collect::<Model>());
            prop_assert_eq!(a.contains_set(&b), mb.is_subset(&ma));
            for u in UUIDS {
                for t in TAGS {
                    let t = t.map(tag);
                    for gno in 1..50 {
                        prop_assert_eq!(
                            a.contains_gtid(&uuid(u), t.as_ref(), gno),
                            ma.contains(&(uuid(u), t.clone(), gno))
                        );
                    }
                }
            }
            // Building a set one GTID at a time gives the same set.
            let mut one_by_one = MysqlGtidSet::new();
            for (u, t, gno) in ma.iter().rev() {
                prop_assert!(one_by_one.insert(*u, t.as_ref(), *gno).unwrap());
            }
            prop_assert_eq!(one_by_one, a.clone());
        }

        #[test]
        fn mysql_parse_never_panics(text in "[0-9a-fA-F:, \n{}_xg-]{0,80}|\\PC{0,40}") {
            if let Ok(s) = text.parse::<MysqlGtidSet>() {
                prop_assert_eq!(set(&s.to_string()), s);
            }
        }
    }
}
