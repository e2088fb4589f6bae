//! outbox (being built).
