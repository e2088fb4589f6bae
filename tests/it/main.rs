//! Integration tests: one binary (matklad's "delete cargo integration tests"), one module per area.
//!
//! `validate` drives the real `healthsync` binary over broken copies of the shipped config; `pipeline`
//! runs the library against the simulator in-process; `crash` kills `healthsync once` mid-run; `models`
//! checks the four shipped health models; `report` renders the HTML report and loads it in headless Chromium.

mod support;

mod backtest;
mod crash;
mod daemon;
mod export;
mod incremental_sources;
mod models;
mod pipeline;
mod report;
mod sinks;
mod support_sources;
mod tidy;
mod validate;
mod writeback;
