//! The `salesforce` source kind: Account, Contact, Opportunity, Task, Event and Case through the REST API's
//! SOQL query resource, authenticated with OAuth 2.0 (the engine's `oauth2_*` schemes).
//!
//! Each run sends `GET /services/data/<api_version>/query?q=SELECT <fields> FROM <Object> [WHERE
//! SystemModstamp >= <hwm − lookback>] ORDER BY SystemModstamp ASC, Id ASC` with
//! `Sforce-Query-Options: batchSize=<page_size>` and then follows `nextRecordsUrl` (a GET with no
//! parameters) until `done` is true. The page token stored in the cursor is that `nextRecordsUrl`, so a
//! resumed run re-requests exactly the next batch; if Salesforce has meanwhile dropped the query locator
//! (`INVALID_QUERY_LOCATOR`, locators expire after ~15 idle minutes) the run re-issues its query from the
//! same filter. The (SystemModstamp, Id) high-water mark with the lookback comes from `common`.
//!
//! Limits: every response's `Sforce-Limit-Info: api-usage=<used>/<allowed>` (the org's rolling 24 h quota,
//! shared with every other integration) is read; once usage reaches `max_api_usage_percent` (default 90) the
//! kind stops asking for more in this run (`QuotaExhausted`). A 403 whose body names `REQUEST_LIMIT_EXCEEDED`
//! is the quota itself and is never retried; other 403s are credential/permission errors. Error bodies are
//! Salesforce's JSON array of `{message, errorCode}`.
//!
//! Records: `id` = `Id`, `updated_at` = `SystemModstamp` (Salesforce prints `2024-01-02T03:04:05.000+0000`),
//! `fields` = the record without its `attributes`. Account keys: Accounts carry `salesforce_account_id` (their
//! Id), `domain` (from `Website`) and, when `crm_id_field` is set, `crm_id` from that field (set it to `Id`
//! when Salesforce is the CRM of record, or to a field holding the other CRM's id); every other object carries
//! `salesforce_account_id` from its `AccountId`, and identity joins it through the Account.
//!
//! Verified against Salesforce's REST docs (search tool): the query and query-more resources, `totalSize` /
//! `done` / `nextRecordsUrl` / `records[].attributes`, the batch-size header, `Sforce-Limit-Info`, and the
//! OAuth token response (`access_token`, `instance_url`, no `expires_in`). From ../shared/api (not re-verified):
//! the 403 `REQUEST_LIMIT_EXCEEDED` body. Assumed: `base_url` is the org's My Domain URL (the token response's
//! `instance_url` is not used to re-point the client). This kind owns the query and record shapes only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::common::{self, RunState, StreamCursor};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{Call, Classified, HttpClient, HttpError};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "salesforce",
    role: Role::Source,
    streams: &[
        "accounts",
        "contacts",
        "opportunities",
        "tasks",
        "events",
        "cases",
    ],
    default_streams: &[
        "accounts",
        "contacts",
        "opportunities",
        "tasks",
        "events",
        "cases",
    ],
    auth: &[
        AuthScheme::OAuth2ClientCredentials,
        AuthScheme::OAuth2RefreshToken,
    ],
    // The binding quota is the org's daily allocation (Sforce-Limit-Info); this only smooths bursts.
    default_rate_limit: RateLimit::per_secs(25, 1),
    parse_params: read_params,
    limitations: &[],
};

const PARAM_KEYS: &[&str] = &[
    "api_version",
    "crm_id_field",
    "extra_fields",
    "max_api_usage_percent",
];
pub(crate) const DEFAULT_API_VERSION: &str = "v62.0";
/// Salesforce's batch-size bounds for `Sforce-Query-Options`.
const MIN_BATCH: u32 = 200;
const MAX_BATCH: u32 = 2000;
const DEFAULT_USAGE_PERCENT: u32 = 90;

/// Stream → (sObject, fields always selected).
fn object(stream: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match stream {
        "accounts" => (
            "Account",
            &[
                "Id",
                "Name",
                "Website",
                "Industry",
                "Type",
                "NumberOfEmployees",
                "AnnualRevenue",
                "OwnerId",
                "CreatedDate",
                "LastModifiedDate",
                "SystemModstamp",
            ],
        ),
        "contacts" => (
            "Contact",
            &[
                "Id",
                "AccountId",
                "FirstName",
                "LastName",
                "Email",
                "Title",
                "CreatedDate",
                "LastModifiedDate",
                "SystemModstamp",
            ],
        ),
        "opportunities" => (
            "Opportunity",
            &[
                "Id",
                "AccountId",
                "Name",
                "StageName",
                "Amount",
                "CloseDate",
                "IsClosed",
                "IsWon",
                "Type",
                "CreatedDate",
                "LastModifiedDate",
                "SystemModstamp",
            ],
        ),
        "tasks" => (
            "Task",
            &[
                "Id",
                "AccountId",
                "WhatId",
                "Subject",
                "Status",
                "Priority",
                "TaskSubtype",
                "ActivityDate",
                "CreatedDate",
                "LastModifiedDate",
                "SystemModstamp",
            ],
        ),
        "events" => (
            "Event",
            &[
                "Id",
                "AccountId",
                "WhatId",
                "Subject",
                "StartDateTime",
                "EndDateTime",
                "DurationInMinutes",
                "CreatedDate",
                "LastModifiedDate",
                "SystemModstamp",
            ],
        ),
        "cases" => (
            "Case",
            &[
                "Id",
                "AccountId",
                "Subject",
                "Status",
                "Priority",
                "Origin",
                "IsClosed",
                "ClosedDate",
                "CreatedDate",
                "LastModifiedDate",
                "SystemModstamp",
            ],
        ),
        _ => return None,
    })
}

/// A SOQL field name: letters, digits, underscores and relationship dots (`Owner.Email`, `Health__c`).
pub(crate) fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `v62.0`-shaped: a `v`, digits, a dot, digits. Shared with the `salesforce_sink` kind.
pub(crate) fn is_api_version(s: &str) -> bool {
    s.strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && (a.to_string() + b).chars().all(|c| c.is_ascii_digit())
        })
}

#[derive(Clone)]
struct Params {
    api_version: String,
    crm_id_field: Option<String>,
    extra_fields: BTreeMap<String, Vec<String>>,
    max_usage_percent: u32,
}

fn parse_params(params: &toml::Table) -> Result<Params, String> {
    common::check_keys(params, PARAM_KEYS)?;
    let api_version =
        common::string_param(params, "api_version")?.unwrap_or_else(|| DEFAULT_API_VERSION.into());
    if !is_api_version(&api_version) {
        return Err(format!(
            "`api_version` must look like v62.0, not `{api_version}`"
        ));
    }
    let crm_id_field = common::string_param(params, "crm_id_field")?;
    if let Some(f) = &crm_id_field {
        if !is_field_name(f) {
            return Err(format!(
                "`crm_id_field` `{f}` is not a Salesforce field name"
            ));
        }
    }
    let mut extra_fields = BTreeMap::new();
    if let Some(v) = params.get("extra_fields") {
        let table = v
            .as_table()
            .ok_or("`extra_fields` must be a table of stream = [field, …]")?;
        for stream in table.keys() {
            if object(stream).is_none() {
                return Err(format!(
                    "`extra_fields.{stream}`: no such stream; streams: {}",
                    SPEC.streams.join(", ")
                ));
            }
            let fields = common::string_list(table, stream)?.unwrap_or_default();
            if let Some(bad) = fields.iter().find(|f| !is_field_name(f)) {
                return Err(format!(
                    "`extra_fields.{stream}`: `{bad}` is not a Salesforce field name"
                ));
            }
            extra_fields.insert(stream.clone(), fields);
        }
    }
    let max_usage_percent = match params.get("max_api_usage_percent") {
        None => DEFAULT_USAGE_PERCENT,
        Some(toml::Value::Integer(n)) if (1..=100).contains(n) => *n as u32,
        Some(_) => return Err("`max_api_usage_percent` must be an integer from 1 to 100".into()),
    };
    Ok(Params {
        api_version,
        crm_id_field,
        extra_fields,
        max_usage_percent,
    })
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    parse_params(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let params = ctx.params::<Params>()?.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?.with_classifier(classify);
    Ok(Built::Source(Box::new(Salesforce::new(
        http,
        ctx.connector.streams.clone(),
        params,
        ctx.connector.page_size,
    ))))
}

/// Salesforce answers an exhausted org quota with 403 `REQUEST_LIMIT_EXCEEDED` (not 429) and no
/// `Retry-After`: the 24 h rolling window does not refill within a run, so do not retry.
pub(crate) fn classify(
    status: StatusCode,
    _: &HeaderMap,
    body: &[u8],
    _: DateTime<Utc>,
) -> Option<Classified> {
    if status != StatusCode::FORBIDDEN {
        return None;
    }
    let errors: Value = serde_json::from_slice(body).ok()?;
    let hit = errors
        .as_array()?
        .iter()
        .find(|e| e.get("errorCode").and_then(Value::as_str) == Some("REQUEST_LIMIT_EXCEEDED"))?;
    let message = hit.get("message").and_then(Value::as_str).unwrap_or("");
    Some(Classified::QuotaExhausted {
        reason: format!("salesforce api request limit exceeded ({message}); the org's 24 h quota refills gradually"),
    })
}

/// `api-usage=N/M` from `Sforce-Limit-Info`. Shared with the `salesforce_sink` kind.
pub(crate) fn api_usage(headers: &HeaderMap) -> Option<(u64, u64)> {
    let v = headers.get("sforce-limit-info")?.to_str().ok()?;
    let usage = v
        .split(',')
        .find_map(|part| part.trim().strip_prefix("api-usage="))?;
    let (used, max) = usage.split_once('/')?;
    Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// Salesforce's datetime format (`2024-01-02T03:04:05.000+0000`), or RFC 3339.
fn sf_datetime(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// A website as a domain key: `https://www.Acme.com/about` → `acme.com`.
fn website_domain(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?.trim().to_ascii_lowercase();
    let s = s.split_once("://").map_or(s.as_str(), |(_, rest)| rest);
    let host = s.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.strip_prefix("www.").unwrap_or(host);
    (!host.is_empty()).then(|| host.to_string())
}

pub struct Salesforce {
    http: HttpClient,
    streams: Vec<String>,
    params: Params,
    batch_size: u32,
    /// Set once `Sforce-Limit-Info` shows usage at or over the configured share: `(used, allowed)`.
    quota_stop: Mutex<Option<(u64, u64)>>,
}

impl Salesforce {
    fn new(
        http: HttpClient,
        streams: Vec<String>,
        params: Params,
        page_size: Option<u32>,
    ) -> Salesforce {
        Salesforce {
            http,
            streams,
            params,
            batch_size: page_size.unwrap_or(MAX_BATCH).clamp(MIN_BATCH, MAX_BATCH),
            quota_stop: Mutex::new(None),
        }
    }

    fn soql(&self, stream: &str, since: Option<DateTime<Utc>>) -> Option<String> {
        let (object, base) = object(stream)?;
        let mut fields: Vec<&str> = base.to_vec();
        let extra = self.params.extra_fields.get(stream).into_iter().flatten();
        let crm = (stream == "accounts")
            .then_some(self.params.crm_id_field.as_ref())
            .flatten();
        for f in extra.chain(crm) {
            if !fields.iter().any(|x| x.eq_ignore_ascii_case(f)) {
                fields.push(f);
            }
        }
        let mut q = format!("SELECT {} FROM {object}", fields.join(", "));
        if let Some(since) = since {
            // SOQL datetime literals are unquoted ISO-8601.
            q.push_str(&format!(
                " WHERE SystemModstamp >= {}",
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        q.push_str(" ORDER BY SystemModstamp ASC, Id ASC");
        Some(q)
    }

    async fn request(&self, stream: &str, run: &RunState) -> Result<(Value, HeaderMap), HttpError> {
        let options = [(
            "Sforce-Query-Options",
            format!("batchSize={}", self.batch_size),
        )];
        let query_path = format!("/services/data/{}/query", self.params.api_version);
        let soql = self.soql(stream, run.since).unwrap_or_default();
        let query = [("q", soql)];
        let call = match &run.token {
            Some(next) => Call::new(&Method::GET, next),
            None => Call {
                query: &query,
                ..Call::new(&Method::GET, &query_path)
            },
        };
        let r = self
            .http
            .execute(Call {
                headers: &options,
                ..call
            })
            .await?;
        Ok((r.body, r.headers))
    }

    fn check_quota(&self, headers: &HeaderMap) {
        if let Some((used, max)) = api_usage(headers) {
            tracing::debug!(connector = %self.http.connector(), used, max, "salesforce api usage");
            if max > 0 && used * 100 >= max * u64::from(self.params.max_usage_percent) {
                if let Ok(mut q) = self.quota_stop.lock() {
                    *q = Some((used, max));
                }
            }
        }
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if object(stream).is_none() {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        if let Some((used, max)) = self.quota_stop.lock().ok().and_then(|q| *q) {
            return Err(SourceError::Http(HttpError::QuotaExhausted {
                target: self.http.target(&Method::GET, &format!("/services/data/{}/query", self.params.api_version)),
                reason: format!(
                    "salesforce api usage is {used}/{max}, at or above max_api_usage_percent = {}; stopping before the org runs out",
                    self.params.max_usage_percent
                ),
            }));
        }
        let state = StreamCursor::load(cursor, stream, connector)?;
        let mut run = state.current_run();
        let (mut body, headers) = match self.request(stream, &run).await {
            Err(HttpError::Permanent { body_excerpt, .. })
                if run.token.is_some() && body_excerpt.contains("INVALID_QUERY_LOCATOR") =>
            {
                tracing::info!(
                    connector,
                    stream,
                    "query locator expired; re-issuing the query"
                );
                run.token = None;
                run.prev = None;
                common::in_stream(self.request(stream, &run).await, stream)?
            }
            other => common::in_stream(other, stream)?,
        };
        self.check_quota(&headers);
        let records = common::take_list(&mut body, "records").ok_or_else(|| {
            common::malformed(stream, connector, "query response has no `records` list")
        })?;
        let done = body.get("done").and_then(Value::as_bool).ok_or_else(|| {
            common::malformed(stream, connector, "query response has no boolean `done`")
        })?;
        let next = match (done, body.get("nextRecordsUrl").and_then(Value::as_str)) {
            (true, _) => None,
            (false, Some(url)) if !url.is_empty() => Some(url.to_string()),
            (false, _) => {
                return Err(common::malformed(
                    stream,
                    connector,
                    "`done` is false but there is no `nextRecordsUrl`",
                ))
            }
        };
        let count = records.len();
        let (page, max) = common::map_page(records, |rec| {
            map_record(stream, rec, self.params.crm_id_field.as_deref()).map(common::marked)
        });
        state.finish_page(run, page, max, count, next, stream, connector)
    }
}

impl Source for Salesforce {
    fn streams(&self) -> Vec<String> {
        self.streams.clone()
    }

    fn fetch_page<'a>(
        &'a self,
        stream: &'a str,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(self.fetch(stream, cursor))
    }
}

/// Maps one SOQL result row onto a [`Record`].
fn map_record(
    stream: &str,
    rec: Value,
    crm_id_field: Option<&str>,
) -> Result<Record, RejectedRecord> {
    let Value::Object(mut fields) = rec else {
        return Err(common::rejected(None, "record is not a json object"));
    };
    fields.remove("attributes");
    let obj = &fields;
    let id = common::id_of(obj.get("Id")).ok_or_else(|| common::rejected(None, "missing `Id`"))?;
    let updated_at = sf_datetime(obj.get("SystemModstamp"))
        .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `SystemModstamp`"))?;
    let mut account_keys = BTreeMap::new();
    if stream == "accounts" {
        account_keys.insert("salesforce_account_id".to_string(), id.clone());
        if let Some(d) = website_domain(obj.get("Website")) {
            account_keys.insert("domain".to_string(), d);
        }
        if let Some(crm) = crm_id_field.and_then(|f| common::id_of(obj.get(f))) {
            account_keys.insert("crm_id".to_string(), crm);
        }
    } else if let Some(account) = common::id_of(obj.get("AccountId")) {
        account_keys.insert("salesforce_account_id".to_string(), account);
    }
    Ok(Record {
        id,
        updated_at,
        account_keys,
        fields,
    })
}

#[cfg(test)]
#[path = "salesforce_tests.rs"]
mod tests;
