//! The `stripe` source kind: customers, subscriptions and invoices.
//!
//! A first run lists `GET /v1/{stream}?limit=100&starting_after=<last id>` while `has_more` (newest first);
//! subscriptions add `status=all` (the default omits canceled ones). Stripe lists have no "updated since"
//! filter, so later runs read what changed from the events API instead:
//! `GET /v1/events?created[gte]=<high-water mark minus the lookback>` with `type=invoice.*`,
//! `type=customer.subscription.*`, or `types[]=customer.created|updated|deleted`, paged the same way.
//! Each page's changed objects are then read by id (`GET /v1/{stream}/{id}`), so what is stored is the
//! object as it is now, whatever order the events came in; an object that is gone (404, or a customer
//! answered as `deleted: true`) is stored from its newest event's snapshot with `deleted: true`. The
//! cursor's high-water mark is on the events' `created`; a full list's is the time it started (by the
//! engine's clock; the lookback covers a few minutes of skew from Stripe's). Stripe keeps events for 30
//! days, so a cursor older than 29 days starts a full re-list instead.
//!
//! `updated_at` is the latest lifecycle timestamp Stripe exposes: `created` for customers; the latest of
//! `created`, `canceled_at`, `ended_at` for subscriptions; the latest of `created` and
//! `status_transitions.*` for invoices. Account keys: customers → `stripe_customer` (the id) and `crm_id`
//! from `metadata[crm_id_metadata_key]` (default `hubspot_company_id`); subscriptions and invoices →
//! `stripe_customer` from `customer` (an id or an expanded object). A 429 carries no `Retry-After`, so the
//! engine backs off; `Stripe-Should-Retry: true` makes any status retryable. Auth and retries are the HTTP
//! engine's; this kind only knows Stripe's shapes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use super::common::{self, Mark, StreamCursor};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{Classified, HttpClient};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "stripe",
    role: Role::Source,
    streams: &["customers", "subscriptions", "invoices"],
    default_streams: &["customers", "subscriptions", "invoices"],
    auth: &[AuthScheme::Bearer],
    // Most endpoints: 25 requests per second each (sandbox: 25/s globally).
    default_rate_limit: RateLimit::per_secs(25, 1),
    parse_params: read_params,
    limitations: &[],
};

const PARAM_KEYS: &[&str] = &["crm_id_metadata_key"];
const DEFAULT_CRM_KEY: &str = "hubspot_company_id";
const MAX_PAGE: u32 = 100;
/// Stripe keeps events for 30 days; a day less leaves room for clock skew and a slow run.
const EVENTS_KEPT: chrono::Duration = chrono::Duration::days(29);

/// `crm_id_metadata_key`: the customer metadata key that holds the CRM id.
struct Settings {
    crm_key: String,
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    common::check_keys(params, PARAM_KEYS)?;
    let crm_key = common::string_param(params, "crm_id_metadata_key")?
        .unwrap_or_else(|| DEFAULT_CRM_KEY.to_string());
    Ok(crate::config::Params::new(Settings { crm_key }))
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let crm_key = ctx.params::<Settings>()?.crm_key.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?.with_classifier(classify);
    Ok(Built::Source(Box::new(Stripe::new(
        http,
        ctx.connector.streams.clone(),
        crm_key,
        ctx.connector.page_size,
    ))))
}

/// Stripe's own retry advice (`Stripe-Should-Retry`, which its SDKs obey before looking at the status)
/// wins over the status code: `true` retries even a 409 (`lock_timeout`), `false` is final even for a
/// 5xx. A response without it falls back to the engine's rules.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    _: &[u8],
    _: DateTime<Utc>,
) -> Option<Classified> {
    let should_retry = headers.get("stripe-should-retry")?.to_str().ok()?;
    match (should_retry, status) {
        ("true", StatusCode::TOO_MANY_REQUESTS) => {
            Some(Classified::RateLimited { retry_after: None })
        }
        ("true", _) => Some(Classified::Transient),
        ("false", _) => Some(Classified::Permanent),
        _ => None,
    }
}

pub struct Stripe {
    http: HttpClient,
    streams: Vec<String>,
    crm_key: String,
    limit: u32,
}

impl Stripe {
    pub fn new(
        http: HttpClient,
        streams: Vec<String>,
        crm_key: String,
        page_size: Option<u32>,
    ) -> Stripe {
        Stripe {
            http,
            streams,
            crm_key,
            limit: page_size.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
        }
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if !SPEC.streams.contains(&stream) {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let mut run = state.current_run();
        if let (Some(since), None) = (run.since, &run.token) {
            if since < self.http.clock().now() - EVENTS_KEPT {
                tracing::info!(connector, stream, since = %since, "the last sync is older than Stripe keeps events; listing everything again");
                run.since = None;
            }
        }
        if let Some(since) = run.since {
            return self.fetch_changes(stream, state, run, since).await;
        }
        let mut query = vec![("limit", self.limit.to_string())];
        if stream == "subscriptions" {
            query.push(("status", "all".to_string()));
        }
        if let Some(after) = &run.token {
            query.push(("starting_after", after.clone()));
        }
        let (data, next) = self
            .list_page(&format!("/v1/{stream}"), &query, stream)
            .await?;
        let count = data.len();
        let (page, mut max) = common::map_page(data, |obj| self.map_object(stream, obj));
        if run.token.is_none() {
            // A full list is as of when it started: the next run reads events from then, not from the
            // newest object's `created`, which may be older than the events Stripe still keeps.
            max = max.max(Some(Mark {
                updated_at: self.http.clock().now(),
                id: String::new(),
            }));
        }
        state.finish_page(run, page, max, count, next, stream, connector)
    }

    /// One page of a Stripe list: its `data` and the id to page after when `has_more`.
    async fn list_page(
        &self,
        path: &str,
        query: &[(&str, String)],
        stream: &str,
    ) -> Result<(Vec<Value>, Option<String>), SourceError> {
        let connector = self.http.connector();
        let mut body = common::in_stream(self.http.get_json(path, query).await, stream)?;
        let data = common::take_list(&mut body, "data")
            .ok_or_else(|| common::malformed(stream, connector, "response has no `data` list"))?;
        let has_more = body
            .get("has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let next = if has_more {
            let last = data.last().ok_or_else(|| {
                common::malformed(stream, connector, "`has_more` is true but `data` is empty")
            })?;
            Some(common::id_of(last.get("id")).ok_or_else(|| {
                common::malformed(
                    stream,
                    connector,
                    "the page's last object has no `id` to page after",
                )
            })?)
        } else {
            None
        };
        Ok((data, next))
    }

    /// One page of events since `since`, and the current version of every object they name.
    async fn fetch_changes(
        &self,
        stream: &str,
        state: StreamCursor,
        run: common::RunState,
        since: DateTime<Utc>,
    ) -> Result<Page, SourceError> {
        let connector = self.http.connector();
        let (object_kind, types): (&str, &[(&str, &str)]) = match stream {
            "customers" => (
                "customer",
                &[
                    ("types[]", "customer.created"),
                    ("types[]", "customer.updated"),
                    ("types[]", "customer.deleted"),
                ],
            ),
            "subscriptions" => ("subscription", &[("type", "customer.subscription.*")]),
            _ => ("invoice", &[("type", "invoice.*")]),
        };
        let mut query = vec![
            ("limit", self.limit.to_string()),
            ("created[gte]", since.timestamp().to_string()),
        ];
        query.extend(types.iter().map(|(k, v)| (*k, v.to_string())));
        if let Some(after) = &run.token {
            query.push(("starting_after", after.clone()));
        }
        let (events, next) = self.list_page("/v1/events", &query, stream).await?;
        let count = events.len();
        let mut page = Page::default();
        let mut max: Option<Mark> = None;
        // Newest first: the first snapshot of an object is its newest.
        let mut changed: Vec<(String, Value)> = Vec::new();
        for mut event in events {
            let event_id = common::id_of(event.get("id"));
            let created = common::unix_seconds(event.get("created"));
            let (Some(event_id), Some(created)) = (event_id, created) else {
                page.rejected.push(common::rejected(
                    None,
                    "an event without a readable `id` or `created`",
                ));
                continue;
            };
            let mark = Mark {
                updated_at: created,
                id: event_id.clone(),
            };
            if max.as_ref().is_none_or(|m| mark > *m) {
                max = Some(mark);
            }
            let snapshot = event
                .pointer_mut("/data/object")
                .map(Value::take)
                .unwrap_or(Value::Null);
            if snapshot.get("object").and_then(Value::as_str) != Some(object_kind) {
                continue;
            }
            match common::id_of(snapshot.get("id")) {
                Some(id) if !changed.iter().any(|(seen, _)| *seen == id) => {
                    changed.push((id, snapshot))
                }
                Some(_) => {}
                None => page.rejected.push(common::rejected(
                    None,
                    format!("event {event_id} names no object id"),
                )),
            }
        }
        for (id, mut snapshot) in changed {
            let current = match self.http.get_json(&format!("/v1/{stream}/{id}"), &[]).await {
                Ok(obj) if obj.get("deleted") != Some(&Value::Bool(true)) => obj,
                Ok(_) => {
                    snapshot["deleted"] = Value::Bool(true);
                    snapshot
                }
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                    snapshot["deleted"] = Value::Bool(true);
                    snapshot
                }
                Err(e) => return common::in_stream(Err(e), stream),
            };
            match self.map_object(stream, current) {
                Ok((record, _)) => page.records.push(record),
                Err(rejected) => page.rejected.push(rejected),
            }
        }
        state.finish_page(run, page, max, count, next, stream, connector)
    }

    /// Maps one Stripe object; the mark is on `created`, the order Stripe lists objects in.
    fn map_object(&self, stream: &str, obj: Value) -> Result<(Record, Mark), RejectedRecord> {
        let id =
            common::id_of(obj.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
        let created = common::unix_seconds(obj.get("created"))
            .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `created`"))?;
        let later: Vec<Option<&Value>> = match stream {
            "subscriptions" => vec![obj.get("canceled_at"), obj.get("ended_at")],
            "invoices" => obj
                .get("status_transitions")
                .and_then(Value::as_object)
                .map(|t| t.values().map(Some).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let updated_at = later
            .into_iter()
            .filter_map(common::unix_seconds)
            .fold(created, DateTime::max);
        let mut account_keys = BTreeMap::new();
        if stream == "customers" {
            account_keys.insert("stripe_customer".to_string(), id.clone());
            if let Some(crm) =
                common::id_of(obj.pointer(&format!("/metadata/{}", pointer_escape(&self.crm_key))))
            {
                account_keys.insert("crm_id".to_string(), crm);
            }
        } else {
            let customer = obj.get("customer");
            let customer_id = common::id_of(customer)
                .or_else(|| common::id_of(customer.and_then(|c| c.get("id"))));
            if let Some(c) = customer_id {
                account_keys.insert("stripe_customer".to_string(), c);
            }
        }
        let fields = common::into_object(obj, &id)?;
        let mark = Mark {
            updated_at: created,
            id: id.clone(),
        };
        Ok((
            Record {
                id,
                updated_at,
                account_keys,
                fields,
            },
            mark,
        ))
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Source for Stripe {
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

#[cfg(test)]
#[path = "stripe_tests.rs"]
mod tests;
