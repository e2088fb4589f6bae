//! Simulated vendor APIs (being built).
