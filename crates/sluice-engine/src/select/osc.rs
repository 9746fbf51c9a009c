//! The tables online schema change tools create beside the table they change: names
//! recognised exactly as pt-online-schema-change, gh-ost and LHM build them.
//!
//! These tables hold a copy of the table being changed (filled by chunked `INSERT … SELECT`
//! and by triggers or the tool's own binlog apply), bookkeeping, or the old table after the
//! swap. None of it is data an edge wants: a glob rule never selects them
//! ([`crate::select::rules::TableFilter`]), so their row events are skipped undecoded and
//! they never become edge tables. An exact rule naming one still selects it (the escape hatch
//! for an application table whose name happens to fit a pattern).

/// The tool whose naming scheme a table name fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OscTool {
    /// pt-online-schema-change: `_<t>_new` (with more leading underscores when the name is
    /// taken), `_<t>_old`.
    PtOsc,
    /// gh-ost: `_<t>_gho`, `_<t>_ghc`, `_<t>_ghk`, `_<t>_del` (also `_<t>_<timestamp>_del`,
    /// `_<t>_rev_del`).
    GhOst,
    /// LHM (Large Hadron Migrator): `lhmn_<t>`, `lhma_<YYYY_MM_DD_hh_mm_ss_mmm>_<t>`.
    Lhm,
}

impl OscTool {
    pub fn name(self) -> &'static str {
        match self {
            OscTool::PtOsc => "pt-online-schema-change",
            OscTool::GhOst => "gh-ost",
            OscTool::Lhm => "LHM (Large Hadron Migrator)",
        }
    }
}

/// What role a tool's table plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OscRole {
    /// The new copy of the table, swapped in at the end (`_t_new`, `_t_gho`, `lhmn_t`).
    Shadow,
    /// The old table after the swap (`_t_old`, `_t_del`, `lhma_…_t`).
    Old,
    /// The tool's own bookkeeping (gh-ost's changelog `_t_ghc` and checkpoint `_t_ghk`).
    Bookkeeping,
}

/// A table name some online schema change tool builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OscTable {
    pub tool: OscTool,
    pub role: OscRole,
}

/// Whether `table` is named as one of the tools names its tables; `None` for any other name.
pub fn osc_table(table: &str) -> Option<OscTable> {
    let found = |tool, role| Some(OscTable { tool, role });
    if let Some(rest) = table.strip_prefix('_') {
        // `_<t>_<suffix>` with a non-empty `<t>`.
        let base_then = |suffix: &str| rest.strip_suffix(suffix).is_some_and(|base| !base.is_empty());
        if base_then("_gho") {
            return found(OscTool::GhOst, OscRole::Shadow);
        }
        if base_then("_ghc") || base_then("_ghk") {
            return found(OscTool::GhOst, OscRole::Bookkeeping);
        }
        if base_then("_del") {
            return found(OscTool::GhOst, OscRole::Old);
        }
        // pt-osc puts more underscores in front when `_<t>_new` is taken; the base table
        // itself may start with underscores too, so only "something is left" is required.
        let pt_base = |suffix: &str| {
            rest.strip_suffix(suffix)
                .is_some_and(|base| !base.trim_start_matches('_').is_empty())
        };
        if pt_base("_new") {
            return found(OscTool::PtOsc, OscRole::Shadow);
        }
        if pt_base("_old") {
            return found(OscTool::PtOsc, OscRole::Old);
        }
        return None;
    }
    if table.strip_prefix("lhmn_").is_some_and(|base| !base.is_empty()) {
        return found(OscTool::Lhm, OscRole::Shadow);
    }
    if let Some(rest) = table.strip_prefix("lhma_") {
        // `YYYY_MM_DD_hh_mm_ss_mmm_` then the (possibly truncated) table name.
        const SHAPE: &[usize] = &[4, 2, 2, 2, 2, 2, 3];
        let mut rest = rest;
        for &digits in SHAPE {
            let (number, after) = rest.split_at_checked(digits)?;
            if !number.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            rest = after.strip_prefix('_')?;
        }
        if !rest.is_empty() {
            return found(OscTool::Lhm, OscRole::Old);
        }
    }
    None
}

/// The longest table name MariaDB and MySQL accept; the tools cut the base name to fit.
const MAX_NAME: usize = 64;

/// `prefix` + `base` + `suffix`, with `base` cut so the whole fits in [`MAX_NAME`] characters
/// (gh-ost's `getSafeTableName`, LHM's name building).
fn safe_name(prefix: &str, base: &str, suffix: &str) -> String {
    let room = MAX_NAME.saturating_sub(prefix.chars().count() + suffix.chars().count());
    format!("{prefix}{}{suffix}", base.chars().take(room).collect::<String>())
}

/// Whether `shadow` is the shadow table a tool builds for `table` (`_t_new` and its variants
/// with more leading underscores, `_t_gho`, `lhmn_t`), and which tool's.
pub fn shadow_of(shadow: &str, table: &str) -> Option<OscTool> {
    if shadow == safe_name("_", table, "_gho") {
        return Some(OscTool::GhOst);
    }
    if shadow == safe_name("lhmn_", table, "") {
        return Some(OscTool::Lhm);
    }
    let underscores = shadow.strip_suffix("_new")?.strip_suffix(table)?;
    (!underscores.is_empty() && underscores.bytes().all(|b| b == b'_')).then_some(OscTool::PtOsc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Option<(OscTool, OscRole)> {
        osc_table(name).map(|t| (t.tool, t.role))
    }

    #[test]
    fn pt_online_schema_change_names() {
        use OscRole::*;
        use OscTool::PtOsc;
        assert_eq!(tool("_items_new"), Some((PtOsc, Shadow)));
        assert_eq!(tool("_items_old"), Some((PtOsc, Old)));
        // Leading underscores added when the name is taken, and base tables starting with one.
        assert_eq!(tool("__items_new"), Some((PtOsc, Shadow)));
        assert_eq!(tool("___________items_new"), Some((PtOsc, Shadow)));
        assert_eq!(tool("___items_old"), Some((PtOsc, Old)));
        assert_eq!(tool("__private_new"), Some((PtOsc, Shadow)));
        assert_eq!(tool("_order_items_new"), Some((PtOsc, Shadow)));
        // Nothing left for the table's name, or not the tool's shape.
        assert_eq!(tool("_new"), None);
        assert_eq!(tool("__new"), None);
        assert_eq!(tool("___old"), None);
        assert_eq!(tool("items_new"), None);
        assert_eq!(tool("_items_New"), None);
        assert_eq!(tool("_items_newer"), None);
        assert_eq!(tool("news"), None);
    }

    #[test]
    fn gh_ost_names() {
        use OscRole::*;
        use OscTool::GhOst;
        assert_eq!(tool("_items_gho"), Some((GhOst, Shadow)));
        assert_eq!(tool("_items_ghc"), Some((GhOst, Bookkeeping)));
        assert_eq!(tool("_items_ghk"), Some((GhOst, Bookkeeping)));
        assert_eq!(tool("_items_del"), Some((GhOst, Old)));
        assert_eq!(tool("_items_20260101120000_del"), Some((GhOst, Old)));
        assert_eq!(tool("_items_rev_del"), Some((GhOst, Old)));
        // 64-character names: the base is cut, the suffix kept.
        let long = format!("_{}_gho", "x".repeat(59));
        assert_eq!(long.len(), 64);
        assert_eq!(tool(&long), Some((GhOst, Shadow)));
        assert_eq!(tool("_gho"), None);
        assert_eq!(tool("items_gho"), None);
        assert_eq!(tool("_items_ghost"), None);
        assert_eq!(tool("model_del"), None);
    }

    #[test]
    fn lhm_names() {
        use OscRole::*;
        use OscTool::Lhm;
        assert_eq!(tool("lhmn_items"), Some((Lhm, Shadow)));
        assert_eq!(tool("lhma_2026_12_04_20_24_11_123_items"), Some((Lhm, Old)));
        assert_eq!(tool("lhma_2026_12_04_20_24_11_123_order_items"), Some((Lhm, Old)));
        assert_eq!(tool("lhmn_"), None);
        assert_eq!(tool("lhma_2026_12_04_20_24_11_123_"), None);
        assert_eq!(tool("lhma_items"), None);
        assert_eq!(tool("lhma_2026_12_04_20_24_11_items"), None);
        assert_eq!(tool("lhma_2026_12_04_20_24_1x_123_items"), None);
        assert_eq!(tool("lhm_items"), None);
        assert_eq!(tool("lhmnitems"), None);
    }

    #[test]
    fn shadow_tables_are_matched_to_their_table() {
        assert_eq!(shadow_of("_items_new", "items"), Some(OscTool::PtOsc));
        assert_eq!(shadow_of("___items_new", "items"), Some(OscTool::PtOsc));
        assert_eq!(shadow_of("_items_gho", "items"), Some(OscTool::GhOst));
        assert_eq!(shadow_of("lhmn_items", "items"), Some(OscTool::Lhm));
        assert_eq!(shadow_of("_order_items_new", "items"), None);
        assert_eq!(shadow_of("_items_new", "item"), None);
        assert_eq!(shadow_of("_items_old", "items"), None);
        assert_eq!(shadow_of("lhmn_items", "orders"), None);
        let long = "y".repeat(62);
        assert_eq!(shadow_of(&format!("_{}_gho", &long[..59]), &long), Some(OscTool::GhOst));
        assert_eq!(shadow_of(&format!("lhmn_{}", &long[..59]), &long), Some(OscTool::Lhm));
    }

    #[test]
    fn ordinary_names_are_not_tool_tables() {
        for name in [
            "items",
            "orders",
            "_sluice_heartbeat",
            "_private",
            "user_news",
            "old",
            "del",
            "lhm",
        ] {
            assert_eq!(osc_table(name), None, "{name}");
        }
    }
}
