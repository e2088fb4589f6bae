//! sync (being built).
