//! Configuration: the daemon file, one file per connector, and the health model, loaded and checked as one.
//!
//! Loading is parse → validate → validated types. Parsing (`raw.rs`) only mirrors TOML; validation
//! (`validate.rs`) is pure (no network, no secret values read) and collects *every* problem with its file and
//! line before giving up, so an admin fixes a config in one pass. Runtime code sees only the types defined
//! here and in `model.rs`. Reading secret values is `crate::secrets`'s job, not this module's.

mod model;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use model::*;
pub use validate::{load, load_for_reading, load_with_model};

use crate::connector::Role;
use crate::secrets::SecretRef;

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
    /// Kind-specific settings, already checked by the kind's `validate_params`.
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
    /// Kind-specific settings, already checked by the kind's `validate_params`.
    pub params: toml::Table,
    pub fields: FieldMap,
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// HTTP Basic with `username` and optional `password` (many vendors use the API key as the username).
    Basic,
    /// The key in a vendor-named header (`header`), e.g. Gainsight's `accessKey`.
    ApiKeyHeader,
    /// The key in a vendor-named query parameter (`param`), e.g. ChurnZero's `appKey`. Engine errors and
    /// logs never show query strings, so the key stays out of them.
    ApiKeyQuery,
    /// OAuth 2.0 client-credentials grant (RFC 6749 §4.4) at `token_url`; the access token is cached and
    /// sent as a bearer token (Salesforce connected apps, HubSpot/Zendesk apps).
    OAuth2ClientCredentials,
    /// OAuth 2.0 refresh-token grant (RFC 6749 §6) at `token_url` with a stored `refresh_token`.
    OAuth2RefreshToken,
}

impl AuthScheme {
    pub const ALL: &'static [(&'static str, AuthScheme)] = &[
        ("bearer", AuthScheme::Bearer),
        ("basic", AuthScheme::Basic),
        ("api_key_header", AuthScheme::ApiKeyHeader),
        ("api_key_query", AuthScheme::ApiKeyQuery),
        (
            "oauth2_client_credentials",
            AuthScheme::OAuth2ClientCredentials,
        ),
        ("oauth2_refresh_token", AuthScheme::OAuth2RefreshToken),
    ];

    pub fn name(self) -> &'static str {
        AuthScheme::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .unwrap_or("unknown")
    }
}

/// Auth settings: the scheme and *references* to secrets, never their values.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub scheme: AuthScheme,
    pub token: Option<SecretRef>,
    pub username: Option<SecretRef>,
    pub password: Option<SecretRef>,
    pub header: Option<String>,
    /// For `api_key_query`: the query parameter that carries the key.
    pub param: Option<String>,
    /// Set for the `oauth2_*` schemes.
    pub oauth2: Option<OAuth2Settings>,
}

/// Where and how an OAuth 2.0 access token is obtained. Secrets are references, as everywhere in config.
#[derive(Debug, Clone)]
pub struct OAuth2Settings {
    pub token_url: reqwest::Url,
    pub client_id: SecretRef,
    pub client_secret: SecretRef,
    /// Required by `oauth2_refresh_token`, unused by `oauth2_client_credentials`.
    pub refresh_token: Option<SecretRef>,
    pub scope: Option<String>,
}

impl AuthConfig {
    /// Every secret reference of this auth table, by role (`token`, `client_secret`, …).
    pub fn secret_refs(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut out: Vec<(&'static str, &SecretRef)> = [
            ("token", &self.token),
            ("username", &self.username),
            ("password", &self.password),
        ]
        .into_iter()
        .filter_map(|(n, r)| r.as_ref().map(|r| (n, r)))
        .collect();
        if let Some(o) = &self.oauth2 {
            out.push(("client_id", &o.client_id));
            out.push(("client_secret", &o.client_secret));
            if let Some(r) = &o.refresh_token {
                out.push(("refresh_token", r));
            }
        }
        out
    }
}

/// A request budget: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    pub const fn per_secs(requests: u32, secs: u64) -> RateLimit {
        RateLimit {
            requests,
            per: Duration::from_secs(secs),
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
