//! MariaDB GTIDs and replication positions.
//!
//! A MariaDB GTID is `domain-server-sequence`. A replication *position* (what
//! `@@gtid_binlog_pos` / `@slave_connect_state` hold) keeps the last GTID applied per
//! replication domain. sluice's checkpoint is such a position.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One MariaDB global transaction id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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
}
