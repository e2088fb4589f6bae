//! The `freshdesk` source kind: companies and tickets from Freshdesk's API v2.
//!
//! - `companies`: `GET /api/v2/companies?per_page=100&page=1`, then the URL in the `Link: <…>; rel="next"`
//!   header until there is none. No "updated since" filter exists, so every run re-lists.
//! - `tickets`: `GET /api/v2/tickets?updated_since=<RFC 3339>&order_by=updated_at&order_type=asc&per_page=100`
//!   then `Link` next. `updated_since` is always sent, because without it Freshdesk returns only tickets
//!   created in the last 30 days: the first run uses 2000-01-01, later runs the high-water mark minus the
//!   lookback. Freshdesk serves at most 300 pages per query (assumed from a secondary source), so a run
//!   restarts its query from the highest `updated_at` seen before page 300.
//!
//! A `Link` URL is followed only when it points at the configured host (credentials are never sent
//! elsewhere); it is stored relative to the base URL so resuming re-requests exactly that page. Keys:
//! companies → `freshdesk_company` (id) and `domain` (the first of `domains`); tickets → `freshdesk_ticket`
//! and `freshdesk_company` (`company_id`). Fields are the vendor objects plus `status_label` and
//! `priority_label` (Freshdesk sends status 2–5 and priority 1–4 as numbers). Auth: Basic, the API key as
//! user and `X` as password. Throttling: 429 with `Retry-After` (the engine honours it);
//! `X-RateLimit-Remaining` is logged at debug level only, as Freshdesk sends no reset time to wait for.
//!
//! Verified (search tool: Freshdesk docs excerpts, Airbyte's connector PR, freshdeskr docs): Basic
//! `key:X`, `updated_since` and the 30-day default, `per_page` ≤ 100, `order_by`/`order_type`, the
//! `X-RateLimit-*` headers and 429 + Retry-After. Assumed: the `Link` header format, the 300-page cap, and
//! that an empty password works like `X` (the docs say any dummy password does; a `password` secret holding
//! `X` can be configured if not).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use reqwest::{Method, Url};
use serde_json::Value;

use super::common::{self, StreamCursor};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{Call, HttpClient};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "freshdesk",
    role: Role::Source,
    streams: &["companies", "tickets"],
    default_streams: &["companies", "tickets"],
    auth: &[AuthScheme::Basic],
    // The smallest current per-minute plan (Growth); Pro 400, Enterprise 700.
    default_rate_limit: RateLimit::per_secs(100, 60),
    parse_params: common::no_params,
    limitations: &[],
};

const MAX_PAGE: u32 = 100;
/// Freshdesk stops a query at this page.
const PAGE_CAP: u64 = 300;


pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Source(Box::new(Freshdesk::new(
        http,
        ctx.connector.streams.clone(),
        ctx.connector.page_size,
    ))))
}

pub struct Freshdesk {
    http: HttpClient,
    streams: Vec<String>,
    per_page: u32,
}

/// Where a first run's `updated_since` starts: before any Freshdesk account existed.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

impl Freshdesk {
    pub fn new(http: HttpClient, streams: Vec<String>, page_size: Option<u32>) -> Freshdesk {
        Freshdesk {
            http,
            streams,
            per_page: page_size.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
        }
    }

    /// The first page's path and query of a run.
    fn first_page(&self, stream: &str, since: Option<DateTime<Utc>>) -> String {
        let mut q = format!("per_page={}&page=1", self.per_page);
        if stream == "tickets" {
            let since = since.unwrap_or_else(epoch);
            let since = since.to_rfc3339_opts(SecondsFormat::Secs, true);
            q = format!("updated_since={since}&order_by=updated_at&order_type=asc&{q}");
        }
        format!("/api/v2/{stream}?{q}")
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if !SPEC.streams.contains(&stream) {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let mut run = state.current_run();
        if stream == "companies" {
            run.since = None;
        }
        let target = match &run.token {
            Some(t) => t.clone(),
            None => self.first_page(stream, run.since),
        };
        let mut resp = common::in_stream(
            self.http.execute(Call::new(&Method::GET, &target)).await,
            stream,
        )?;
        if let Some(left) = resp.headers.get("x-ratelimit-remaining") {
            tracing::debug!(connector, stream, remaining = ?left, "freshdesk rate limit");
        }
        let Value::Array(items) = std::mem::take(&mut resp.body) else {
            return Err(common::malformed(
                stream,
                connector,
                "response is not a list",
            ));
        };
        let next = match next_link(&resp.headers) {
            None => None,
            Some(link) => Some(
                self.relative(&link)
                    .map_err(|e| common::malformed(stream, connector, e))?,
            ),
        };
        let count = items.len();
        let (mut page, max) =
            common::map_page(items, |item| map_item(stream, item).map(common::marked));
        let since = run.since;
        let (mut new_state, done) = state
            .advance(run, max, count, next.clone())
            .map_err(|e| common::malformed(stream, connector, e))?;
        if let (false, Some(r), Some(next)) = (done, new_state.run.as_mut(), next) {
            if page_number(&next) > Some(PAGE_CAP) {
                let from = r.max.as_ref().map(|m| m.updated_at);
                if stream != "tickets" || from.is_none() || from == since {
                    return Err(common::malformed(
                        stream,
                        connector,
                        format!("more than {PAGE_CAP} pages share one updated_at; a query cannot page past them"),
                    ));
                }
                // Restart the query from the highest updated_at seen (upserts absorb the overlap).
                r.since = from;
                r.token = Some(self.first_page(stream, from));
                r.prev = None;
            }
        }
        page.cursor = new_state.to_cursor();
        page.done = done;
        Ok(page)
    }

    /// A `Link` URL as a path (and query) under the base URL; refuses other hosts.
    fn relative(&self, link: &str) -> Result<String, String> {
        let base = self.http.url("/");
        let url = Url::parse(link)
            .or_else(|_| base.join(link))
            .map_err(|_| format!("the next-page link `{link}` is not a URL"))?;
        if url.origin() != base.origin() {
            return Err(format!(
                "the next-page link points to {}, not the configured host; not following it",
                url.origin().ascii_serialization()
            ));
        }
        let prefix = base.path().trim_end_matches('/');
        let path = url.path().strip_prefix(prefix).unwrap_or(url.path());
        Ok(match url.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        })
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_string())
        })
}

fn page_number(path: &str) -> Option<u64> {
    let (_, q) = path.split_once('?')?;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|v| v.parse().ok())
}

fn label(stream: &str, field: &str, v: Option<&Value>) -> Option<&'static str> {
    let n = v?.as_i64()?;
    Some(match (stream, field, n) {
        ("tickets", "status", 2) => "open",
        ("tickets", "status", 3) => "pending",
        ("tickets", "status", 4) => "resolved",
        ("tickets", "status", 5) => "closed",
        ("tickets", "priority", 1) => "low",
        ("tickets", "priority", 2) => "medium",
        ("tickets", "priority", 3) => "high",
        ("tickets", "priority", 4) => "urgent",
        _ => return None,
    })
}

fn map_item(stream: &str, obj: Value) -> Result<Record, RejectedRecord> {
    let id = common::id_of(obj.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
    let updated_at = common::timestamp(obj.get("updated_at"))
        .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `updated_at`"))?;
    let mut account_keys = BTreeMap::new();
    let mut labels = Vec::new();
    if stream == "companies" {
        account_keys.insert("freshdesk_company".to_string(), id.clone());
        let first = obj
            .get("domains")
            .and_then(Value::as_array)
            .and_then(|d| d.first());
        if let Some(d) = common::domain_key(first) {
            account_keys.insert("domain".to_string(), d);
        }
    } else {
        account_keys.insert("freshdesk_ticket".to_string(), id.clone());
        if let Some(c) = common::id_of(obj.get("company_id")) {
            account_keys.insert("freshdesk_company".to_string(), c);
        }
        for field in ["status", "priority"] {
            if let Some(l) = label(stream, field, obj.get(field)) {
                labels.push((format!("{field}_label"), Value::String(l.into())));
            }
        }
    }
    let mut fields = common::into_object(obj, &id)?;
    fields.extend(labels);
    Ok(Record {
        id,
        updated_at,
        account_keys,
        fields,
    })
}

impl Source for Freshdesk {
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
mod tests;
