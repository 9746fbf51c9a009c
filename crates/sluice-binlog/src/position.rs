//! One source transaction id and one source position for both server flavours, so that a
//! replication engine keeps a single checkpoint type whatever the source is.
//!
//! * [`SourceGtid`]: a MariaDB [`Gtid`] (`0-1-42`) or a MySQL [`MysqlGtid`]
//!   (`uuid:42`, `uuid:tag:42`).
//! * [`SourcePosition`]: a MariaDB [`GtidPosition`] (last GTID per domain) or a MySQL
//!   [`MysqlGtidSet`] (every transaction executed).
//!
//! Both have one text form, the flavour's own: a MariaDB text never holds a `:`, a MySQL one
//! always does (after the UUID), so the text tells the flavour and MariaDB texts written
//! before MySQL existed here read unchanged. The empty text is the empty position, which
//! belongs to no flavour until [`SourcePosition::for_flavor`] or the first
//! [`SourcePosition::advance`] gives it one.

use std::fmt;
use std::str::FromStr;

use crate::gtid::{Gtid, GtidPosition, GtidTag, MysqlGtidError, MysqlGtidSet, Uuid};
use crate::replica::{DumpStart, SourceFlavor};

/// Longest MySQL GTID tag (MySQL's `Tag::tag_max_length`).
const TAG_MAX: usize = 32;

/// One MySQL GTID, `uuid[:tag]:gno`. `Copy` (the tag is kept inline) so that it moves
/// through the engine like a MariaDB [`Gtid`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MysqlGtid {
    pub uuid: Uuid,
    /// Tag length (0: untagged), then the tag's lowercase bytes, zero-padded.
    tag: (u8, [u8; TAG_MAX]),
    pub gno: u64,
}

impl MysqlGtid {
    pub fn new(uuid: Uuid, tag: Option<&GtidTag>, gno: u64) -> MysqlGtid {
        let mut bytes = [0u8; TAG_MAX];
        let text = tag.map_or("", GtidTag::as_str).as_bytes();
        // A GtidTag is at most TAG_MAX bytes by construction.
        bytes[..text.len()].copy_from_slice(text);
        MysqlGtid {
            uuid,
            tag: (text.len() as u8, bytes),
            gno,
        }
    }

    pub fn tag(&self) -> Option<GtidTag> {
        let (len, bytes) = &self.tag;
        (*len > 0).then(|| {
            let text = std::str::from_utf8(&bytes[..usize::from(*len)]).expect("tags are ASCII");
            GtidTag::new(text).expect("valid by construction")
        })
    }
}

impl fmt::Display for MysqlGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag() {
            Some(tag) => write!(f, "{}:{tag}:{}", self.uuid, self.gno),
            None => write!(f, "{}:{}", self.uuid, self.gno),
        }
    }
}

impl fmt::Debug for MysqlGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MysqlGtid({self})")
    }
}

impl FromStr for MysqlGtid {
    type Err = MysqlGtidError;

    /// `uuid:gno` or `uuid:tag:gno`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| MysqlGtidError::Syntax {
            text: s.to_owned(),
            reason: reason.to_owned(),
        };
        let fields: Vec<&str> = s.trim().split(':').map(str::trim).collect();
        let (uuid, tag, gno) = match fields.as_slice() {
            [uuid, gno] => (uuid, None, gno),
            [uuid, tag, gno] => (uuid, Some(tag.parse::<GtidTag>()?), gno),
            _ => return Err(err("expected uuid:number or uuid:tag:number")),
        };
        let gno: u64 = gno.parse().map_err(|_| err("not a transaction number"))?;
        if !(1..=crate::gtid::MAX_GNO).contains(&gno) {
            return Err(MysqlGtidError::Gno(gno));
        }
        Ok(MysqlGtid::new(uuid.parse()?, tag.as_ref(), gno))
    }
}

/// The id of one source transaction, in the source's flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceGtid {
    Mariadb(Gtid),
    Mysql(MysqlGtid),
}

impl SourceGtid {
    pub fn flavor(&self) -> SourceFlavor {
        match self {
            SourceGtid::Mariadb(_) => SourceFlavor::MariaDb,
            SourceGtid::Mysql(_) => SourceFlavor::Mysql,
        }
    }
}

impl From<Gtid> for SourceGtid {
    fn from(g: Gtid) -> Self {
        SourceGtid::Mariadb(g)
    }
}

impl From<MysqlGtid> for SourceGtid {
    fn from(g: MysqlGtid) -> Self {
        SourceGtid::Mysql(g)
    }
}

impl fmt::Display for SourceGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceGtid::Mariadb(g) => g.fmt(f),
            SourceGtid::Mysql(g) => g.fmt(f),
        }
    }
}

/// Why a GTID or position text was refused (the flavour's own parse error, as text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ParsePositionError(String);

impl FromStr for SourceGtid {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse()
                .map(SourceGtid::Mysql)
                .map_err(|e| ParsePositionError(e.to_string()))
        } else {
            s.parse()
                .map(SourceGtid::Mariadb)
                .map_err(|e| ParsePositionError(e.to_string()))
        }
    }
}

/// MariaDB GTIDs serialise as they always have (the `Gtid` struct), so logs written before
/// MySQL sources existed read unchanged; MySQL GTIDs as their text.
impl serde::Serialize for SourceGtid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SourceGtid::Mariadb(g) => g.serialize(serializer),
            SourceGtid::Mysql(g) => serializer.collect_str(g),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SourceGtid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Mariadb(Gtid),
            Text(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Mariadb(g) => Ok(SourceGtid::Mariadb(g)),
            Wire::Text(text) => text
                .parse::<MysqlGtid>()
                .map(SourceGtid::Mysql)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl crate::event::EventBody<'_> {
    /// The GTID of the transaction this event starts: MariaDB's GTID event, or MySQL's GTID /
    /// GTID_TAGGED event. `None` for every other event, including MySQL's ANONYMOUS_GTID (a
    /// transaction without a GTID, which a GTID position cannot cover).
    pub fn source_gtid(&self) -> Option<SourceGtid> {
        match self {
            crate::event::EventBody::Gtid(g) => Some(SourceGtid::Mariadb(g.gtid)),
            crate::event::EventBody::MysqlGtid(g) => g
                .gtid
                .as_ref()
                .map(|(uuid, tag, gno)| SourceGtid::Mysql(MysqlGtid::new(*uuid, tag.as_ref(), *gno))),
            _ => None,
        }
    }
}

/// Where a replica stands on the source, in the source's flavour: for MariaDB the last GTID
/// per domain (everything at or below it applied), for MySQL the set of every transaction
/// applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourcePosition {
    Mariadb(GtidPosition),
    Mysql(MysqlGtidSet),
}

impl Default for SourcePosition {
    /// The empty position (flavourless until given one).
    fn default() -> Self {
        SourcePosition::Mariadb(GtidPosition::new())
    }
}

impl From<GtidPosition> for SourcePosition {
    fn from(p: GtidPosition) -> Self {
        SourcePosition::Mariadb(p)
    }
}

impl From<MysqlGtidSet> for SourcePosition {
    fn from(s: MysqlGtidSet) -> Self {
        SourcePosition::Mysql(s)
    }
}

/// A position of one flavour met a GTID or position of the other.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the position {position} is a {position_flavor} one, but the source is {source_flavor}; a target cannot \
     move between MariaDB and MySQL sources. Point sluice at the source the target was built from, or rebuild \
     the target"
)]
pub struct FlavorMismatch {
    pub position: String,
    pub position_flavor: SourceFlavor,
    pub source_flavor: SourceFlavor,
}

impl SourcePosition {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        match self {
            SourcePosition::Mariadb(p) => p.is_empty(),
            SourcePosition::Mysql(s) => s.is_empty(),
        }
    }

    /// The flavour, `None` while empty.
    pub fn flavor(&self) -> Option<SourceFlavor> {
        match self {
            _ if self.is_empty() => None,
            SourcePosition::Mariadb(_) => Some(SourceFlavor::MariaDb),
            SourcePosition::Mysql(_) => Some(SourceFlavor::Mysql),
        }
    }

    /// This position as one of `flavor`: an empty one becomes the empty position of that
    /// flavour; one of the other flavour is refused.
    pub fn for_flavor(self, flavor: SourceFlavor) -> Result<SourcePosition, FlavorMismatch> {
        match (self.flavor(), flavor) {
            (None, SourceFlavor::MariaDb) => Ok(SourcePosition::Mariadb(GtidPosition::new())),
            (None, SourceFlavor::Mysql) => Ok(SourcePosition::Mysql(MysqlGtidSet::new())),
            (Some(own), wanted) if own == wanted => Ok(self),
            (Some(own), wanted) => Err(FlavorMismatch {
                position: self.to_string(),
                position_flavor: own,
                source_flavor: wanted,
            }),
        }
    }

    /// Whether the transaction `gtid` is covered (applied). A GTID of the other flavour is not.
    pub fn contains(&self, gtid: impl Into<SourceGtid>) -> bool {
        match (self, gtid.into()) {
            (SourcePosition::Mariadb(p), SourceGtid::Mariadb(g)) => p.contains(g),
            (SourcePosition::Mysql(s), SourceGtid::Mysql(g)) => s.contains_gtid(&g.uuid, g.tag().as_ref(), g.gno),
            _ => false,
        }
    }

    /// Whether everything `other` covers is covered here. The empty position is covered by
    /// every position; otherwise a position of the other flavour is not.
    pub fn covers(&self, other: &SourcePosition) -> bool {
        match (self, other) {
            _ if other.is_empty() => true,
            (SourcePosition::Mariadb(a), SourcePosition::Mariadb(b)) => a.covers(b),
            (SourcePosition::Mysql(a), SourcePosition::Mysql(b)) => a.contains_set(b),
            _ => false,
        }
    }

    /// Records the transaction `gtid` as applied: for MariaDB the newest of its domain, for
    /// MySQL one more member of the set. An empty position takes the GTID's flavour.
    ///
    /// # Panics
    /// On a GTID of the other flavour than a non-empty position: callers convert positions
    /// with [`for_flavor`](Self::for_flavor) before streaming, so that is a bug.
    pub fn advance(&mut self, gtid: impl Into<SourceGtid>) {
        let gtid = gtid.into();
        if self.is_empty() && self.flavor_of_variant() != gtid.flavor() {
            *self = SourcePosition::new().for_flavor(gtid.flavor()).expect("empty");
        }
        match (self, gtid) {
            (SourcePosition::Mariadb(p), SourceGtid::Mariadb(g)) => p.advance(g),
            (SourcePosition::Mysql(s), SourceGtid::Mysql(g)) => {
                // The number is in range: it was parsed or decoded as a GTID.
                let _ = s.insert(g.uuid, g.tag().as_ref(), g.gno);
            }
            (position, gtid) => panic!("GTID {gtid} of another flavour than the position {position}"),
        }
    }

    /// Everything either position covers. Positions of different flavours cannot meet (see
    /// [`advance`](Self::advance)); the empty one is the identity.
    pub fn union(&self, other: &SourcePosition) -> SourcePosition {
        match (self, other) {
            _ if other.is_empty() => self.clone(),
            _ if self.is_empty() => other.clone(),
            (SourcePosition::Mariadb(a), SourcePosition::Mariadb(b)) => SourcePosition::Mariadb(a.union(b)),
            (SourcePosition::Mysql(a), SourcePosition::Mysql(b)) => SourcePosition::Mysql(a.union(b)),
            (a, b) => panic!("positions of different flavours: {a} and {b}"),
        }
    }

    /// Where to ask the source to stream from.
    pub fn dump_start(&self) -> DumpStart<'_> {
        match self {
            SourcePosition::Mariadb(p) => DumpStart::MariaDb(p),
            SourcePosition::Mysql(s) => DumpStart::Mysql(s),
        }
    }

    fn flavor_of_variant(&self) -> SourceFlavor {
        match self {
            SourcePosition::Mariadb(_) => SourceFlavor::MariaDb,
            SourcePosition::Mysql(_) => SourceFlavor::Mysql,
        }
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePosition::Mariadb(p) => p.fmt(f),
            SourcePosition::Mysql(s) => s.fmt(f),
        }
    }
}

impl FromStr for SourcePosition {
    type Err = ParsePositionError;

    /// A MariaDB position (`0-1-42,1-2-7`), a MySQL GTID set (`uuid:1-5,uuid2:3`) or the
    /// empty text.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse()
                .map(SourcePosition::Mysql)
                .map_err(|e| ParsePositionError(e.to_string()))
        } else {
            s.parse()
                .map(SourcePosition::Mariadb)
                .map_err(|e| ParsePositionError(e.to_string()))
        }
    }
}

impl serde::Serialize for SourcePosition {
    /// Serialises as the text form.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn pos(text: &str) -> SourcePosition {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn gtid(text: &str) -> SourceGtid {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn text_tells_the_flavor_and_round_trips() {
        for text in ["0-1-42,1-2-7", &format!("{U1}:1-5:7:tag_a:3"), ""] {
            assert_eq!(pos(text).to_string(), text);
        }
        assert_eq!(pos("0-1-42").flavor(), Some(SourceFlavor::MariaDb));
        assert_eq!(pos(&format!("{U1}:1")).flavor(), Some(SourceFlavor::Mysql));
        assert_eq!(pos("").flavor(), None);
        for text in ["0-1-42", &format!("{U1}:42"), &format!("{U1}:tag_a:42")] {
            assert_eq!(gtid(text).to_string(), text);
        }
        assert_eq!(
            gtid(&format!("{}:TAG_A:7", U1.to_uppercase())).to_string(),
            format!("{U1}:tag_a:7")
        );
        for bad in [
            &format!("{U1}:0"),
            &format!("{U1}:1-2"),
            &format!("{U1}:a:b:1"),
            "0-1",
            "x:1",
        ] {
            assert!(bad.parse::<SourceGtid>().is_err(), "{bad}");
        }
        assert!("0-1-2,0-1-3".parse::<SourcePosition>().is_err());
        assert!(format!("{U1}:5-3").parse::<SourcePosition>().is_err());
    }

    #[test]
    fn mysql_position_is_a_set() {
        let mut p = SourcePosition::new().for_flavor(SourceFlavor::Mysql).unwrap();
        for g in ["3", "1", "tag_a:1", "2"] {
            p.advance(gtid(&format!("{U1}:{g}")));
        }
        assert_eq!(p.to_string(), format!("{U1}:1-3:tag_a:1"));
        assert!(p.contains(gtid(&format!("{U1}:2"))));
        assert!(!p.contains(gtid(&format!("{U1}:4"))));
        assert!(!p.contains(gtid(&format!("{U1}:tag_a:2"))));
        assert!(!p.contains(gtid("0-1-1")));
        assert!(p.covers(&pos(&format!("{U1}:1:3"))));
        assert!(!p.covers(&pos(&format!("{U1}:1-4"))));
        assert!(p.covers(&SourcePosition::new()));
        assert!(!p.covers(&pos("0-1-1")));
        // Merging writers' records: the union, whatever order they committed in.
        let other = pos(&format!("{U1}:5:7"));
        assert_eq!(p.union(&other).to_string(), format!("{U1}:1-3:5:7:tag_a:1"));
        assert_eq!(other.union(&p), p.union(&other));
        assert_eq!(p.union(&SourcePosition::new()), p);
    }

    #[test]
    fn empty_positions_take_a_flavor_and_others_keep_theirs() {
        let mut p = SourcePosition::new();
        p.advance(gtid(&format!("{U1}:9")));
        assert_eq!(p, pos(&format!("{U1}:9")));
        let mariadb = pos("0-1-5");
        assert_eq!(mariadb.clone().for_flavor(SourceFlavor::MariaDb).unwrap(), mariadb);
        let err = mariadb.for_flavor(SourceFlavor::Mysql).unwrap_err();
        assert_eq!(err.position, "0-1-5");
        assert!(
            err.to_string().contains("cannot move between MariaDB and MySQL"),
            "{err}"
        );
        assert!(matches!(
            SourcePosition::new().for_flavor(SourceFlavor::Mysql).unwrap().dump_start(),
            DumpStart::Mysql(s) if s.is_empty()
        ));
    }

    #[test]
    fn gtids_serialise_compatibly() {
        let mariadb = gtid("0-1-42");
        let old = rmp_serde::to_vec(&Gtid {
            domain: 0,
            server: 1,
            sequence: 42,
        })
        .unwrap();
        assert_eq!(rmp_serde::to_vec(&mariadb).unwrap(), old);
        assert_eq!(rmp_serde::from_slice::<SourceGtid>(&old).unwrap(), mariadb);
        let mysql = gtid(&format!("{U1}:tag_a:42"));
        let bytes = rmp_serde::to_vec(&mysql).unwrap();
        assert_eq!(rmp_serde::from_slice::<SourceGtid>(&bytes).unwrap(), mysql);
    }
}
