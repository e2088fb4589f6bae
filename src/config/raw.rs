//! Serde mirrors of the three TOML file types, exactly as an admin writes them.
//!
//! Every struct denies unknown keys, and values that later checks may complain about are `Spanned` so the
//! complaint can name the line. Nothing here is interpreted: defaults, cross-references and secret syntax are
//! checked in `validate.rs`, and these types never leave the `config` module.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `config/healthsync.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub version: Spanned<i64>,
    /// Where sled keeps its files. Relative paths are resolved against the config file's folder.
    pub state_dir: Spanned<String>,
    pub connectors_dir: Spanned<String>,
    pub model: Spanned<String>,
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Upper bound of the random delay before each scheduled job, so connectors on the same schedule don't
    /// all hit the network in the same second.
    #[serde(default)]
    pub jitter_secs: Option<Spanned<i64>>,
    /// How long SIGTERM waits for in-flight pages and batches before giving up on them.
    #[serde(default)]
    pub shutdown_grace_secs: Option<Spanned<i64>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub scoring: RawJob,
    #[serde(default)]
    pub delivery: RawJob,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub schedule: Option<Spanned<String>>,
}

/// `connectors/<id>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    pub kind: Spanned<String>,
    pub role: Spanned<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    pub base_url: Spanned<String>,
    pub auth: Spanned<RawAuth>,
    #[serde(default)]
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub streams: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub page_size: Option<Spanned<i64>>,
    #[serde(default)]
    pub timeout_secs: Option<Spanned<i64>>,
    /// A source whose last successful sync is older than this is stale.
    #[serde(default)]
    pub max_age_mins: Option<Spanned<i64>>,
    #[serde(default)]
    pub params: Option<Spanned<toml::Table>>,
    /// Sinks: health output → platform field name.
    #[serde(default)]
    pub fields: Option<Spanned<RawFieldMap>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub scheme: Spanned<String>,
    pub token: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    /// For `api_key_header`: the header that carries the key.
    pub header: Option<Spanned<String>>,
    /// For `api_key_query`: the query parameter that carries the key.
    pub param: Option<Spanned<String>>,
    /// For the `oauth2_*` schemes: the token endpoint (a plain URL, not a secret).
    pub token_url: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<String>>,
    /// For `oauth2_refresh_token`: the long-lived refresh token.
    pub refresh_token: Option<Spanned<String>>,
    /// For the `oauth2_*` schemes: an optional space-separated scope sent with the grant.
    pub scope: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests: Spanned<i64>,
    pub per_secs: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldMap {
    pub score: Option<Spanned<String>>,
    pub band: Option<Spanned<String>>,
    pub coverage: Option<Spanned<String>>,
    pub top_risk: Option<Spanned<String>>,
    /// The overall score's change over 30 days, in points.
    pub trend: Option<Spanned<String>>,
    /// When the score was computed; written only together with another change.
    pub computed_at: Option<Spanned<String>>,
    #[serde(default)]
    pub categories: BTreeMap<String, Spanned<String>>,
    /// Category id → the platform field for that category's band.
    #[serde(default)]
    pub category_bands: BTreeMap<String, Spanned<String>>,
}

/// `config/models/<name>.toml`: the health model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub version: Spanned<i64>,
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub accounts: Spanned<RawAccounts>,
    pub bands: Spanned<RawBands>,
    #[serde(default)]
    pub min_coverage: Option<Spanned<f64>>,
    /// Not `Spanned`: the table is implicit (`[metrics.x]` headers), which toml cannot span.
    pub metrics: BTreeMap<String, Spanned<RawMetric>>,
    pub categories: BTreeMap<String, Spanned<RawCategory>>,
    /// Per-stage / per-segment weights, thresholds, bands and benchmarks.
    #[serde(default)]
    pub overrides: BTreeMap<String, Spanned<RawOverride>>,
    /// Risk events and positive signals.
    #[serde(default)]
    pub risks: BTreeMap<String, Spanned<RawRisk>>,
    #[serde(default)]
    pub playbooks: BTreeMap<String, Spanned<RawPlaybook>>,
    /// How churn and revenue outcomes are read from billing data, for backtests.
    #[serde(default)]
    pub outcomes: Option<Spanned<RawOutcomes>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutcomes {
    /// `connector.stream` of subscriptions, one record per subscription.
    pub subscriptions: Spanned<String>,
    pub start_field: Spanned<String>,
    pub end_field: Spanned<String>,
    /// CEL over the record's fields as `r`: the subscription's monthly recurring revenue.
    pub mrr: Spanned<String>,
    #[serde(default)]
    pub renewal_grace_days: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccounts {
    /// `connector.stream` whose records define the accounts (the CRM's companies).
    pub stream: Spanned<String>,
    /// The account key other sources join on (e.g. `crm_id`).
    pub key: Spanned<String>,
    pub name_field: Spanned<String>,
    #[serde(default)]
    pub stage_field: Option<Spanned<String>>,
    #[serde(default)]
    pub segment_field: Option<Spanned<String>>,
    #[serde(default)]
    pub owner_field: Option<Spanned<String>>,
    /// Lifecycle stages the CRM uses; when given, overrides must name one of them.
    #[serde(default)]
    pub stages: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub segments: Option<Spanned<Vec<String>>>,
    /// Turns a numeric segment field (ARR, employees) into named bands: `[[0, "small"], [100000, "mid"]]`,
    /// each label from its threshold up.
    #[serde(default)]
    pub segment_bands: Option<Spanned<Vec<(f64, String)>>>,
    /// Explicit external-id mapping, `"key:value" = "account id"` (`"domain:acme.co.uk" = "123"`); a link
    /// wins over what the record's keys would join on their own.
    #[serde(default)]
    pub links: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBands {
    pub red_below: Spanned<f64>,
    pub green_from: Spanned<f64>,
    /// Points a score must clear a threshold by before its band changes (hysteresis).
    #[serde(default)]
    pub margin: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub stream: Option<Spanned<String>>,
    pub aggregate: Spanned<String>,
    #[serde(default)]
    pub field: Option<Spanned<String>>,
    #[serde(default)]
    pub window_days: Option<Spanned<i64>>,
    /// Either `{ field = value, … }` (equality) or a CEL expression over `r` and `now`.
    #[serde(default)]
    pub filter: Option<Spanned<RawFilter>>,
    /// Text value → number, for manual inputs such as CSM sentiment (`{ green = 100, red = 1 }`).
    #[serde(default)]
    pub map: Option<Spanned<BTreeMap<String, f64>>>,
    /// For `aggregate = "expr"`: CEL over `m` (other metrics' values) and `account`.
    #[serde(default)]
    pub expr: Option<Spanned<String>>,
    #[serde(default)]
    pub bands: Option<Spanned<RawBands>>,
    #[serde(default)]
    pub numerator: Option<Spanned<String>>,
    #[serde(default)]
    pub denominator: Option<Spanned<String>>,
    #[serde(default)]
    pub score: Option<Spanned<RawScore>>,
    /// Inputs older than this count as missing.
    #[serde(default)]
    pub ttl_days: Option<Spanned<i64>>,
    /// Shown to the CSM in tasks for this metric.
    #[serde(default)]
    pub advice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScore {
    /// `[[value, score], …]`, linear between points, flat outside.
    #[serde(default)]
    pub linear: Option<Vec<[f64; 2]>>,
    /// `[[at_least, score], …]`: the score of the highest threshold the value reaches.
    #[serde(default)]
    pub steps: Option<Vec<[f64; 2]>>,
    /// `"higher"` or `"lower"` (is better): percentile rank within the account's segment.
    #[serde(default)]
    pub percentile: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawFilter {
    Cel(String),
    Equals(BTreeMap<String, toml::Value>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCategory {
    #[serde(default)]
    pub label: Option<String>,
    pub weight: Spanned<f64>,
    /// Nests this category inside another; its weight is then a share of the parent.
    #[serde(default)]
    pub parent: Option<Spanned<String>>,
    /// Metrics and their weights; with sub-categories, the weights of both add up to 100.
    #[serde(default)]
    pub metrics: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
    #[serde(default)]
    pub bands: Option<Spanned<RawBands>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    #[serde(default)]
    pub stage: Option<Spanned<String>>,
    #[serde(default)]
    pub segment: Option<Spanned<String>>,
    /// Category or metric id → weight within its parent.
    #[serde(default)]
    pub weights: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
    /// Metric id → scoring function for accounts this override matches.
    #[serde(default)]
    pub scores: BTreeMap<String, Spanned<RawScore>>,
    #[serde(default)]
    pub bands: Option<Spanned<RawBands>>,
    #[serde(default)]
    pub benchmark: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRisk {
    /// `hard`, `soft` or `advocacy`.
    pub kind: Spanned<String>,
    #[serde(default)]
    pub label: Option<String>,
    pub when: Spanned<String>,
    #[serde(default)]
    pub clear_when: Option<Spanned<String>>,
    #[serde(default)]
    pub advice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    /// `overall`, a category id, or `risk:<risk id>`.
    pub when: Spanned<String>,
    /// The band that triggers the playbook (`red` by default).
    #[serde(default)]
    pub enters: Option<Spanned<String>>,
    #[serde(default)]
    pub cooldown_days: Option<Spanned<i64>>,
    /// At most `times` openings in any `days`-day window, e.g. `limit = { times = 2, days = 90 }`.
    #[serde(default)]
    pub limit: Option<Spanned<RawOpenLimit>>,
    /// Trigger on a fall instead of a band: `drop = { points = 15, days = 30 }`.
    #[serde(default)]
    pub drop: Option<Spanned<RawDrop>>,
    /// An advocate candidate: green for this many days in a row (`thriving_days = 60`).
    #[serde(default)]
    pub thriving_days: Option<Spanned<i64>>,
    pub project: Spanned<String>,
    #[serde(default)]
    pub description: Option<Spanned<String>>,
    #[serde(default)]
    pub tasks: Vec<Spanned<RawTask>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrop {
    pub points: f64,
    pub days: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenLimit {
    pub times: i64,
    pub days: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<Spanned<String>>,
    /// `once` (default) or `failing_metric`: one task per metric of the category that is red.
    #[serde(default)]
    pub for_each: Option<Spanned<String>>,
    #[serde(default)]
    pub due_days: Option<Spanned<i64>>,
}

/// Just the `role` of a connector file, read first so that an export file (which has no `base_url` or
/// `auth`) is parsed as [`RawExport`] and every other file as [`RawConnector`].
#[derive(Debug, Deserialize)]
pub struct RawRole {
    #[serde(default)]
    pub role: Option<String>,
    /// Read too, so an export kind filed under another role gets a hint instead of "missing base_url".
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
}

/// `connectors/<id>.toml` with `role = "export"`: files written after each scoring run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    pub kind: Spanned<String>,
    pub role: Spanned<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The kind's settings; `directory` is required by every export kind.
    pub params: Spanned<toml::Table>,
}
