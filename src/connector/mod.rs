//! The connector contract: what a source returns, what a sink accepts, and the one explicit list of kinds.
//!
//! "Connector" means an *instance* an admin configured (`connectors/<id>.toml`); "kind" means the Rust code
//! that speaks one vendor's API (`kinds/<kind>.rs`). This module owns the shared types ([`Record`],
//! [`Cursor`], [`Page`], [`WriteOp`]) and the traits; it does not own the sync loop (`crate::sync`), the HTTP
//! machinery (`crate::http`) or delivery bookkeeping (`crate::outbox`).

pub mod kinds;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::HttpError;

/// A boxed, sendable future: the object-safe shape of the async trait methods below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether a connector reads from a vendor, writes to a CS platform, or writes whole files per scoring run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Source,
    Sink,
    /// Writes every account's score to files after each scoring run (spreadsheets, BI tools). Not a sink:
    /// it does not diff against confirmed values and never goes through the outbox.
    Export,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Sink => "sink",
            Role::Export => "export",
        })
    }
}

/// One normalized vendor record. Kinds map the vendor's shape onto this without losing raw fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Vendor id, unique within (connector, stream).
    pub id: String,
    /// When the vendor last changed the record; the incremental cursor's tie-breaker is (updated_at, id).
    pub updated_at: DateTime<Utc>,
    /// Keys that tie the record to an account, by key name: `crm_id`, `domain`, `stripe_customer`…
    /// `crate::identity` joins records from different sources on shared key names.
    pub account_keys: BTreeMap<String, String>,
    /// The vendor's fields, flattened one level where the vendor nests them (HubSpot `properties`).
    pub fields: serde_json::Map<String, Value>,
}

/// Where a stream's sync stands. Opaque to the store and the sync loop; each kind decides what goes in
/// (a page token, a high-water mark, both). Persisted only together with the records it covers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor(pub Value);

/// One page from a source.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Record>,
    /// The cursor to store with this page's records; resuming from it re-reads at most this page's successor.
    pub cursor: Cursor,
    /// True when the stream has nothing more for this run.
    pub done: bool,
    /// Records the kind could not map (a missing id, a malformed field), each with a reason. The run goes on.
    pub rejected: Vec<RejectedRecord>,
}

/// A vendor record that could not be mapped, kept so that the error names connector, stream and record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub id: Option<String>,
    pub reason: String,
}

/// A source kind, built for one connector instance.
pub trait Source: Send + Sync {
    /// The streams this instance syncs, in order.
    fn streams(&self) -> Vec<String>;

    /// Fetches the page after `cursor` (`None` means from the beginning) of `stream`.
    fn fetch_page<'a>(
        &'a self,
        stream: &'a str,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Page, SourceError>>;
}

/// Why a page could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("unexpected response for stream {stream}: {reason}")]
    Malformed { stream: String, reason: String },
    #[error("unknown stream {0}")]
    UnknownStream(String),
}

/// A value written to a CS platform field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Number(f64),
    Text(String),
    Null,
}

impl FieldValue {
    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::Number(n) => serde_json::Number::from_f64(*n)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            FieldValue::Text(s) => Value::String(s.clone()),
            FieldValue::Null => Value::Null,
        }
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Number(n) => write!(f, "{n}"),
            FieldValue::Text(s) => f.write_str(s),
            FieldValue::Null => f.write_str("(none)"),
        }
    }
}

/// How a sink finds the account on its side: the CRM id the platform stores as external id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRef {
    pub account_id: String,
    pub external_id: String,
    pub name: String,
}

/// One task of a project, rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    pub description: String,
    pub due_days: u32,
}

/// A write the planner wants made on a CS platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WriteOp {
    /// Set platform fields (already mapped to the platform's field names) on one account.
    SetFields {
        account: AccountRef,
        fields: BTreeMap<String, FieldValue>,
    },
    /// Create a project with tasks. `key` is stable per (account, playbook, opening) and is sent as the
    /// platform's external id, so a resend finds the project instead of creating a second one.
    CreateProject {
        account: AccountRef,
        key: String,
        playbook: String,
        name: String,
        description: String,
        tasks: Vec<TaskSpec>,
        /// The account's owner as the model reads it (`accounts.owner_field`, e.g. the CRM owner id). A
        /// sink assigns the tasks only where its `[params.owners]` maps this to a platform user.
        #[serde(default)]
        owner: Option<String>,
    },
    /// The account recovered: resolve the project opened under `key`. A platform whose API cannot close a
    /// project adds `note` as a closing note or task instead (its kind's docs say which); closing a project
    /// that is already closed, or that the platform no longer has, is `AlreadyPresent`.
    CloseProject {
        account: AccountRef,
        key: String,
        playbook: String,
        name: String,
        note: String,
    },
}

impl WriteOp {
    pub fn account(&self) -> &AccountRef {
        match self {
            WriteOp::SetFields { account, .. }
            | WriteOp::CreateProject { account, .. }
            | WriteOp::CloseProject { account, .. } => account,
        }
    }

    /// What kind of write this is, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::SetFields { .. } => "set_fields",
            WriteOp::CreateProject { .. } => "create_project",
            WriteOp::CloseProject { .. } => "close_project",
        }
    }
}

/// What a sink did with one write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivered {
    /// The platform confirmed the write.
    Applied,
    /// The platform already had it (an earlier attempt landed before a crash); nothing new was created.
    AlreadyPresent,
}

/// Why a write failed, classified so the outbox knows whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later: throttled, 5xx, timeout, connection reset.
    #[error("transient: {0}")]
    Transient(String),
    /// The write itself is wrong for this platform (a field it does not have, a value of the wrong type):
    /// resending cannot help until the config changes; goes to dead letters.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The platform refused this write for good (unknown account, no permission); goes to dead letters.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl From<HttpError> for DeliveryError {
    fn from(e: HttpError) -> Self {
        if e.is_retryable() {
            DeliveryError::Transient(e.to_string())
        } else {
            DeliveryError::Rejected(e.to_string())
        }
    }
}

/// A sink kind, built for one connector instance.
pub trait Sink: Send + Sync {
    /// Delivers one write. Must be idempotent per write: a resend after a crash finds what the first
    /// attempt created (by the write's key) instead of creating it again.
    fn deliver<'a>(&'a self, op: &'a WriteOp) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;

    /// How many `SetFields` writes one call of [`Sink::deliver_batch`] takes: the vendor's batch size, or
    /// 1 where it has no batch endpoint.
    fn batch_size(&self) -> usize {
        1
    }

    /// Delivers several `SetFields` writes (at most `batch_size`) in as few calls as the vendor allows,
    /// with one result per write, in order, so a batch with per-item errors lands its good items. The
    /// default sends them one by one.
    fn deliver_batch<'a>(
        &'a self,
        ops: &'a [WriteOp],
    ) -> BoxFuture<'a, Vec<Result<Delivered, DeliveryError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(self.deliver(op).await);
            }
            out
        })
    }
}

/// Everything a kind needs to build an instance, already validated.
pub struct BuildContext<'a> {
    pub connector: &'a crate::config::ConnectorConfig,
    pub secrets: &'a crate::secrets::ResolvedSecrets,
}

/// A registered kind: its name, role, streams, and how to validate params and build an instance.
pub struct KindSpec {
    pub name: &'static str,
    pub role: Role,
    /// Streams a source kind can sync (empty for sinks).
    pub streams: &'static [&'static str],
    /// Streams synced when the connector file does not list any.
    pub default_streams: &'static [&'static str],
    /// Auth schemes the kind accepts, e.g. `bearer`, `basic`.
    pub auth: &'static [crate::config::AuthScheme],
    /// Default rate limit (requests per period) when the file does not set one: the vendor's documented quota.
    pub default_rate_limit: crate::config::RateLimit,
    /// Pure check of the kind-specific `[params]` table: no network, no secrets.
    pub validate_params: fn(&toml::Table) -> Result<(), String>,
    pub build: fn(&BuildContext<'_>) -> Result<Built, BuildError>,
}

/// An instance built from a spec.
pub enum Built {
    Source(Box<dyn Source>),
    Sink(Box<dyn Sink>),
}

/// One scoring run as an export sees it: every account's score, the model that produced them, and each
/// account's 30-day trend (read from the stored history by the pipeline, since exports do not read the
/// store).
pub struct ExportRun<'a> {
    pub as_of: DateTime<Utc>,
    pub model: &'a crate::config::Model,
    pub scores: &'a [crate::scoring::AccountScore],
    /// Account id → change of the overall score over 30 days, where known.
    pub trends: &'a BTreeMap<String, f64>,
}

/// An export kind, built for one export instance: writes whole files per scoring run.
pub trait Export: Send + Sync {
    /// Writes this run's files; returns the paths written (the current files, not archives or history).
    fn export(&self, run: &ExportRun<'_>) -> Result<Vec<std::path::PathBuf>, ExportError>;
}

/// Why an export could not be written. The scoring run it belongs to still counts.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("cannot build the workbook {path}: {reason}")]
    Workbook { path: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("connector {connector}: {reason}")]
    Invalid { connector: String, reason: String },
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Finds a kind by name. The list lives in `kinds::KINDS`.
pub fn kind(name: &str) -> Option<&'static KindSpec> {
    kinds::KINDS.iter().copied().find(|k| k.name == name)
}

/// Names of all registered kinds, for "unknown kind" messages.
pub fn kind_names() -> Vec<&'static str> {
    kinds::KINDS.iter().map(|k| k.name).collect()
}
