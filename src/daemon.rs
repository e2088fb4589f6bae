//! daemon (being built).
