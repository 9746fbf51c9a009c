//! Running it: what an operator sees and what is checked before anything moves.
//!
//! * [`lag`]: replication lag from a heartbeat row.
//! * [`metrics`]: `GET /metrics` (Prometheus) for `[metrics] listen`.
//! * [`status`]: `sluice status`, read from the target and compared with the source.
//! * [`plan`]: `sluice plan`, what a start with a changed config would do, without doing it.
//! * [`preflight`]: the source's settings and privileges, checked before streaming.
//! * [`grants`]: the source user's privileges, read from `SHOW GRANTS`.

pub mod grants;
pub mod lag;
pub mod metrics;
pub mod plan;
pub mod preflight;
pub mod status;
