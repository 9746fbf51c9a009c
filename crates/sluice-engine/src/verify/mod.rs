//! Proving what was written.
//!
//! * [`canonical`]: the engine-neutral row encoding both sides are digested in.
//! * [`incremental`]: every committed target transaction's rows read back and compared.
//! * [`full`]: `sluice verify`, whole tables of source (through filters and transforms) and
//!   target compared chunk by chunk while replication runs.

pub mod canonical;
pub mod full;
pub mod incremental;
