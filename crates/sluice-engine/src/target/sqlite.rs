//! SQLite target (placeholder, being written).
