//! The `chargebee` source kind: customers, subscriptions and invoices from Chargebee's API v2.
//!
//! `GET /api/v2/{customers|subscriptions|invoices}?limit=<≤100>&sort_by[asc]=updated_at
//! [&updated_at[after]=<unix>][&offset=<next_offset>]`, authenticated with HTTP Basic (the site's API key as
//! the user, empty password). Each list item wraps the resource under its singular name (`{"customer":{…}}`,
//! subscriptions also carry their `customer`); `next_offset` is present only when more pages exist and is
//! stored as the page token. Incremental runs filter `updated_at[after]` on the high-water mark minus the
//! lookback: `updated_at` has one-second resolution, so records tied with the mark are re-read (upserts), never
//! skipped.
//!
//! Throttling: Chargebee limits requests per minute per site and answers 429 with `api_error_code`
//! `api_request_limit_exceeded` (or `lock_timeout` for concurrent writes to one resource). It documents no
//! `Retry-After`; one is honoured if sent, otherwise the engine waits [`NO_RETRY_AFTER_WAIT`] (a quarter of
//! the minute window) instead of its sub-second backoff, because a live site that keeps exceeding its limit
//! gets flagged and blocked.
//!
//! Records: `id`, `updated_at` (unix seconds), `fields` = the resource object. Account keys:
//! `chargebee_customer_id` on every record (a customer's own id, else `customer_id`), and on customers
//! `crm_id` from the custom field named by `crm_id_field` (e.g. `cf_hubspot_company_id`), when set.
//!
//! Verified: list shape, `limit` ≤ 100, `next_offset`, Basic auth and the 429 error codes from Chargebee's
//! OpenAPI (v1 file in ../shared/api/specs); `sort_by[asc]=updated_at` from Chargebee's KB and client
//! libraries (search tool). Assumed: `updated_at[after]` on all three lists (v2 filter docs, not in the local
//! spec). This kind owns the list and record shapes only.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use super::common::{self, StreamCursor};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{retry_after, Classified, HttpClient};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "chargebee",
    role: Role::Source,
    streams: &["customers", "subscriptions", "invoices"],
    default_streams: &["customers", "subscriptions", "invoices"],
    auth: &[AuthScheme::Basic],
    // Starter plan and test sites: 150 requests per minute.
    default_rate_limit: RateLimit::per_secs(150, 60),
    parse_params: read_params,
    limitations: &[],
};

const MAX_PAGE: u32 = 100;
/// The wait after a 429 that carried no `Retry-After`.
pub const NO_RETRY_AFTER_WAIT: Duration = Duration::from_secs(15);

/// `crm_id_field`: the customer custom field that holds the CRM id, if any.
struct Settings {
    crm_id_field: Option<String>,
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    common::check_keys(params, &["crm_id_field"])?;
    let crm_id_field = common::string_param(params, "crm_id_field")?;
    Ok(crate::config::Params::new(Settings { crm_id_field }))
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let crm_id_field = ctx.params::<Settings>()?.crm_id_field.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?.with_classifier(classify);
    Ok(Built::Source(Box::new(Chargebee::new(
        http,
        ctx.connector.streams.clone(),
        crm_id_field,
        ctx.connector.page_size,
    ))))
}

/// Chargebee's 429s: honour `Retry-After` if present, otherwise wait a quarter of the minute window.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    _: &[u8],
    now: DateTime<Utc>,
) -> Option<Classified> {
    (status == StatusCode::TOO_MANY_REQUESTS).then(|| Classified::RateLimited {
        retry_after: Some(retry_after(headers, now).unwrap_or(NO_RETRY_AFTER_WAIT)),
    })
}

pub struct Chargebee {
    http: HttpClient,
    streams: Vec<String>,
    crm_id_field: Option<String>,
    limit: u32,
}

impl Chargebee {
    pub fn new(
        http: HttpClient,
        streams: Vec<String>,
        crm_id_field: Option<String>,
        page_size: Option<u32>,
    ) -> Chargebee {
        Chargebee {
            http,
            streams,
            crm_id_field,
            limit: page_size.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
        }
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        let Some(item_key) = item_key(stream) else {
            return Err(SourceError::UnknownStream(stream.to_string()));
        };
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let run = state.current_run();
        let mut query = vec![
            ("limit", self.limit.to_string()),
            ("sort_by[asc]", "updated_at".to_string()),
        ];
        if let Some(since) = run.since {
            query.push(("updated_at[after]", since.timestamp().to_string()));
        }
        if let Some(offset) = &run.token {
            query.push(("offset", offset.clone()));
        }
        let mut body = common::in_stream(
            self.http
                .get_json(&format!("/api/v2/{stream}"), &query)
                .await,
            stream,
        )?;
        let list = common::take_list(&mut body, "list")
            .ok_or_else(|| common::malformed(stream, connector, "response has no `list` array"))?;
        let next = match body.get("next_offset") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(common::malformed(
                    stream,
                    connector,
                    "`next_offset` is not a non-empty string",
                ))
            }
        };
        let count = list.len();
        let (page, max) = common::map_page(list, |item| {
            map_item(item, item_key, self.crm_id_field.as_deref()).map(common::marked)
        });
        state.finish_page(run, page, max, count, next, stream, connector)
    }
}

fn item_key(stream: &str) -> Option<&'static str> {
    match stream {
        "customers" => Some("customer"),
        "subscriptions" => Some("subscription"),
        "invoices" => Some("invoice"),
        _ => None,
    }
}

impl Source for Chargebee {
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

/// Maps one list item (`{"<resource>": {…}, …}`) onto a [`Record`].
fn map_item(
    mut item: Value,
    key: &str,
    crm_id_field: Option<&str>,
) -> Result<Record, RejectedRecord> {
    let Some(Value::Object(obj)) = item.get_mut(key).map(Value::take) else {
        return Err(common::rejected(
            None,
            format!("list item has no `{key}` object"),
        ));
    };
    let id = common::id_of(obj.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
    let updated_at = common::unix_seconds(obj.get("updated_at"))
        .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `updated_at`"))?;
    let mut account_keys = BTreeMap::new();
    let customer = if key == "customer" {
        Some(id.clone())
    } else {
        common::id_of(obj.get("customer_id"))
    };
    if let Some(c) = customer {
        account_keys.insert("chargebee_customer_id".to_string(), c);
    }
    if key == "customer" {
        if let Some(crm) = crm_id_field.and_then(|f| common::id_of(obj.get(f))) {
            account_keys.insert("crm_id".to_string(), crm);
        }
    }
    Ok(Record {
        id,
        updated_at,
        account_keys,
        fields: obj,
    })
}

#[cfg(test)]
#[path = "chargebee_tests.rs"]
mod tests;
