//! Configuration: the daemon file, one file per connector, and the health model, loaded and checked as one.
//!
//! Loading is parse → validate → validated types. Parsing (`raw.rs`) only mirrors TOML; validation
//! (`validate.rs`) is pure (no network, no secret values read) and collects *every* problem with its file and
//! line before giving up, so an admin fixes a config in one pass. Runtime code sees only the types defined
//! here and in `model.rs`. Reading secret values is `crate::secrets`'s job, not this module's.

mod catalog;
mod model;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use catalog::{Catalog, KindSpec, Params};
pub use model::*;
pub use validate::{load, load_for_reading, load_with_model};

use crate::secrets::AuthConfig;
use crate::vocab::{RateLimit, Role};

/// The file stem an export writes when its `[params]` set none (`healthsync-scores.csv`, `.xlsx`).
pub const DEFAULT_FILE_STEM: &str = "healthsync-scores";

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub connectors: Vec<ConnectorConfig>,
    /// Connector files with `role = "export"`: files written after each scoring run.
    pub exports: Vec<ExportConfig>,
    pub model: Model,
    /// Problems that do not stop healthsync from running (a secret not resolvable on this machine).
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    pub fn connector(&self, id: &str) -> Option<&ConnectorConfig> {
        self.connectors.iter().find(|c| c.id == id)
    }

    pub fn sources(&self) -> impl Iterator<Item = &ConnectorConfig> {
        self.connectors
            .iter()
            .filter(|c| c.enabled && c.role == Role::Source)
    }

    pub fn sinks(&self) -> impl Iterator<Item = &ConnectorConfig> {
        self.connectors
            .iter()
            .filter(|c| c.enabled && c.role == Role::Sink)
    }
}

/// One export instance, from `connectors/<id>.toml` with `role = "export"`: no base URL, no auth, a folder.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The file stem of the connector file.
    pub id: String,
    pub kind: String,
    pub enabled: bool,
    /// Where the files go, resolved against the daemon config's folder like `state_dir`.
    pub directory: PathBuf,
    /// The line of `directory` in the connector file, so a folder that turns out to be unwritable is
    /// reported where it was configured.
    pub directory_line: Option<usize>,
    /// Kind-specific settings, already checked by the kind's `parse_params` (exports read the table
    /// themselves when they are built).
    pub params: toml::Table,
    pub file: PathBuf,
}

/// `config/healthsync.toml`, with paths resolved against the file's folder.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub connectors_dir: PathBuf,
    pub model_path: PathBuf,
    pub listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Six-field cron expressions (with seconds) for the daemon's scoring and delivery jobs.
    pub scoring_schedule: String,
    pub delivery_schedule: String,
    /// Each scheduled job waits a random time up to this before it starts.
    pub jitter: Duration,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable on a terminal, journald fields when stderr is the journal, JSON otherwise.
    Auto,
    Text,
    Json,
    /// Structured fields straight into the systemd journal.
    Journald,
}

/// One connector instance, from `connectors/<id>.toml`.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The file stem.
    pub id: String,
    pub kind: String,
    pub role: Role,
    pub enabled: bool,
    /// Six-field cron expression; `None` means the connector only runs on demand.
    pub schedule: Option<String>,
    pub base_url: reqwest::Url,
    pub auth: AuthConfig,
    pub rate_limit: RateLimit,
    pub streams: Vec<String>,
    pub page_size: Option<u32>,
    pub timeout: Duration,
    /// Sources: a last successful sync older than this makes the connector stale (status, /metrics,
    /// /readyz). Defaults to three intervals of its schedule.
    pub max_age: Duration,
    /// Kind-specific settings, as the kind's `parse_params` read them from `[params]`.
    pub params: Params,
    pub fields: FieldMap,
    pub file: PathBuf,
}

impl<'a> From<&'a ConnectorConfig> for crate::http::Endpoint<'a> {
    fn from(c: &'a ConnectorConfig) -> Self {
        crate::http::Endpoint {
            connector: &c.id,
            base_url: &c.base_url,
            auth: &c.auth,
            rate_limit: c.rate_limit,
            timeout: c.timeout,
        }
    }
}

/// Sinks: which platform field receives which health output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMap {
    pub score: Option<String>,
    pub band: Option<String>,
    pub coverage: Option<String>,
    pub top_risk: Option<String>,
    /// The overall score's 30-day change in points.
    pub trend: Option<String>,
    /// The scoring time (RFC 3339), sent only along with another change so it never causes a write.
    pub computed_at: Option<String>,
    /// Category id → platform field.
    pub categories: BTreeMap<String, String>,
    /// Category id → platform field for the category's band.
    pub category_bands: BTreeMap<String, String>,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; `None` when the problem is about the file as a whole (missing, unreadable).
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem that stops the configuration from loading, in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the configuration", .0.len())]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl ConfigErrors {
    pub fn single(file: &Path, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![Diagnostic {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        }])
    }
}
