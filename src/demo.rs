//! demo (being built).
