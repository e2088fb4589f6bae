//! Integration tests: one binary (matklad's "delete cargo integration tests"), one module per area.
//!
//! `validate` drives the real `healthsync` binary over broken copies of the shipped config; `pipeline`
//! runs the library against the simulator in-process; `crash` kills `healthsync once` mid-run; `models`
//! checks the four shipped health models.

mod support;

mod crash;
mod daemon;
mod export;
mod models;
mod pipeline;
mod sinks;
mod support_sources;
mod tidy;
mod validate;
mod writeback;
