//! Selecting: which tables, columns and rows reach the edge, and how values are scrubbed on
//! the way. Everything here is compiled once per table definition, never per row.
//!
//! * [`rules`]: table and column rules, compiled into a [`rules::TablePlan`] per table.
//! * [`rowfilter`]: the row filter language (`where = "…"`).
//! * [`transform`]: column transforms (PII scrubbing).
//! * [`osc`]: the tables of online schema change tools, which glob rules never select.

pub mod osc;
pub mod rowfilter;
pub mod rules;
pub mod transform;
