//! The connector contract: what a source returns, what a sink accepts, and the one explicit list of kinds.
//!
//! "Connector" means an *instance* an admin configured (`connectors/<id>.toml`); "kind" means the Rust code
//! that speaks one vendor's API (`kinds/<kind>.rs`). This module owns the shared types ([`Record`],
//! [`Cursor`], [`Page`], [`WriteOp`]) and the traits; it does not own the sync loop (`crate::sync`), the HTTP
//! machinery (`crate::http`) or delivery bookkeeping (`crate::outbox`).

pub mod kinds;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::KindSpec;
use crate::http::HttpError;
use crate::vocab::{BoxFuture, Cursor, Record, WriteOp};

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
        match e {
            // A 2xx whose body does not decode: the write may well have landed. Retrying is safe (field
            // writes are idempotent, creates look their key up first) and refusing it for good was not:
            // a garbled answer dead-lettered writes the platform had applied or would have.
            HttpError::Decode { .. } => DeliveryError::Transient(e.to_string()),
            e if e.is_retryable() => DeliveryError::Transient(e.to_string()),
            e => DeliveryError::Rejected(e.to_string()),
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

impl BuildContext<'_> {
    /// The connector's `[params]` as its kind's `parse_params` read them at validation. A type other
    /// than the one the kind parsed into can only come from a config built by hand for another kind.
    pub fn params<T: std::any::Any>(&self) -> Result<&T, BuildError> {
        self.connector
            .params
            .get::<T>()
            .ok_or_else(|| BuildError::Invalid {
                connector: self.connector.id.clone(),
                reason: format!(
                    "its [params] were not read by kind {}; validate the config first",
                    self.connector.kind
                ),
            })
    }
}

/// A registered kind: its catalog entry (what validation knows of it, `crate::config::KindSpec`) and the
/// factory that builds an instance from a connector config that entry has already validated.
pub struct Kind {
    pub spec: &'static KindSpec,
    pub factory: Factory,
}

/// How a kind's instance is built from its validated config.
pub enum Factory {
    /// A source or sink: an HTTP connector, from its config and resolved secrets.
    Connector(fn(&BuildContext<'_>) -> Result<Built, BuildError>),
    /// An export: files written per scoring run, from its export config (no URL, auth or client).
    Export(fn(&crate::config::ExportConfig) -> Result<Box<dyn Export>, BuildError>),
}

impl Kind {
    /// Builds a source or sink of this kind.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
        match self.factory {
            Factory::Connector(build) => build(ctx),
            Factory::Export(_) => Err(BuildError::Invalid {
                connector: ctx.connector.id.clone(),
                reason: format!(
                    "{} is an export: give its file role = \"export\"",
                    self.spec.name
                ),
            }),
        }
    }

    /// Builds an export of this kind.
    pub fn build_export(
        &self,
        config: &crate::config::ExportConfig,
    ) -> Result<Box<dyn Export>, BuildError> {
        match self.factory {
            Factory::Export(build) => build(config),
            Factory::Connector(_) => Err(BuildError::Invalid {
                connector: config.id.clone(),
                reason: format!("kind {} is not an export kind", self.spec.name),
            }),
        }
    }
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
pub fn kind(name: &str) -> Option<&'static Kind> {
    kinds::KINDS.iter().find(|k| k.spec.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_hundred_that_does_not_decode_is_retried_not_dead_lettered() {
        // Issue 25, case 6: a malformed 2xx from a platform went straight to dead letters.
        let e = HttpError::Decode {
            target: crate::http::RequestTarget {
                connector: "vitally".into(),
                method: "PUT".into(),
                path: "/resources/accounts/1".into(),
            },
            expected: "a json body".into(),
            reason: "expected value at line 1 column 1".into(),
        };
        assert!(matches!(
            DeliveryError::from(e),
            DeliveryError::Transient(_)
        ));
    }
}
