//! The shared vocabulary every layer speaks: records and cursors as sources deliver them, the writes a sink
//! accepts, a connector's role, auth scheme and request budget.
//!
//! This is the bottom of the crate: it imports nothing from it, and config, the store, the HTTP engine,
//! identity, metrics and the connector kinds all import it. It holds plain data and the few functions
//! that read it (a field by dotted path); what a kind does with a record is `crate::connector`'s
//! contract, how records are kept is `crate::store`'s.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Looks up a dotted path (`items.data.0.price.unit_amount`) in a record's fields.
pub fn lookup<'a>(fields: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = fields.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
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
