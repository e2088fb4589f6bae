//! The `intercom` source kind: companies and conversations from Intercom's REST API, version pinned with
//! `Intercom-Version: 2.14` on every request (shapes from `specs/intercom/api.intercom.io.2.14.yaml`).
//!
//! - `companies`: `POST /companies/list?page=N&per_page=50&order=asc` while `pages.page < pages.total_pages`.
//!   No "updated since" filter exists, so every run re-lists. Intercom stops this list at 10,000 companies
//!   (beyond that only the one-at-a-time scroll API works, which cannot resume after a crash); a workspace
//!   reporting more than 10,000 fails the stream with that reason rather than silently missing companies.
//!   Companies with no users are not listed by Intercom. The list is sorted by `last_request_at`, so a
//!   company active while a run pages may move between pages; the next run's re-list picks it up.
//! - `conversations`: the first run lists `GET /conversations?per_page=150&starting_after=…` following
//!   `pages.next.starting_after`; later runs search `POST /conversations/search` with
//!   `{"query":{"field":"updated_at","operator":">","value":<mark − lookback − 1>},"pagination":{"per_page":150,
//!   "starting_after":…}}`. Timestamps are unix seconds.
//!
//! Keys: companies → `intercom_company` (id) and `domain` (the host of `website`); conversations →
//! `intercom_contact` (the first of `contacts.contacts[].id`) and `domain` from `source.author.email` when the
//! author is a user or lead (a conversation an admin started carries only the contact key). Fields are the
//! vendor objects as is (`state`, `open`, `priority`, `created_at`, `conversation_rating`, `statistics`…).
//! Throttling: 429 with `X-RateLimit-Reset` (a unix time), mapped onto the engine's wait; `Retry-After` is
//! honoured too if present. A response reporting `X-RateLimit-Remaining: 0` pauses the next request until
//! its `X-RateLimit-Reset` (pre-throttling, `quota_pause`). Auth: bearer access token.
//!
//! Verified in the 2.14 spec: paths, methods, `per_page` ≤ 150 for conversations, `pages.next.starting_after`,
//! search operators and `updated_at` as a unix timestamp, company fields, the 10,000 cap. From Intercom's
//! rate-limit docs (via the vendor fact sheet): the `X-RateLimit-*` headers and 10,000 calls/min per app.
//! Assumed: `per_page` ≤ 60 for `/companies/list` (the spec gives only the default, 15).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::common::{self, StreamCursor};
use super::quota_pause::{header_u64, QuotaPause};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{retry_after, Call, Classified, HttpClient};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "intercom",
    role: Role::Source,
    streams: &["companies", "conversations"],
    default_streams: &["companies", "conversations"],
    auth: &[AuthScheme::Bearer],
    // 10,000 calls per minute per app, enforced in 10-second slices.
    default_rate_limit: RateLimit::per_secs(1666, 10),
    parse_params: common::no_params,
    limitations: &[],
};

pub const API_VERSION: &str = "2.14";
const CONVERSATION_PAGE: u32 = 150;
const COMPANY_PAGE: u32 = 60;
const COMPANY_LIST_CAP: u64 = 10_000;


pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Source(Box::new(Intercom::new(
        http,
        ctx.connector.streams.clone(),
        ctx.connector.page_size,
    ))))
}

/// Intercom's 429 says when the window resets as a unix time; the engine wants a duration.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    _: &[u8],
    now: DateTime<Utc>,
) -> Option<Classified> {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    Some(Classified::RateLimited {
        retry_after: retry_after(headers, now).or_else(|| reset_wait(headers, now)),
    })
}

/// `X-RateLimit-Reset` (unix seconds) as a wait from `now`; a reset in the past means no wait.
pub fn reset_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let reset: i64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(
        u64::try_from(reset - now.timestamp()).unwrap_or(0),
    ))
}

pub struct Intercom {
    http: HttpClient,
    streams: Vec<String>,
    page_size: Option<u32>,
    pause: QuotaPause,
}

impl Intercom {
    /// Installs the version pin and the throttle mapping on `http`.
    pub fn new(http: HttpClient, streams: Vec<String>, page_size: Option<u32>) -> Intercom {
        Intercom {
            http: http
                .with_header("intercom-version", API_VERSION)
                .with_classifier(classify),
            streams,
            page_size,
            pause: QuotaPause::default(),
        }
    }

    /// Sends `call` after any pause the last response asked for, and notes the quota it reports.
    async fn send(&self, call: Call<'_>, stream: &str) -> Result<Value, SourceError> {
        self.pause.wait(self.http.clock().as_ref()).await;
        let resp = common::in_stream(self.http.execute(call).await, stream)?;
        let reset = header_u64(&resp.headers, "x-ratelimit-reset")
            .and_then(|t| Utc.timestamp_opt(i64::try_from(t).ok()?, 0).single());
        self.pause
            .observe(header_u64(&resp.headers, "x-ratelimit-remaining"), reset);
        Ok(resp.body)
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let mut run = state.current_run();
        let (items, next) = match stream {
            "companies" => {
                run.since = None;
                let per_page = self.page_size.unwrap_or(50).clamp(1, COMPANY_PAGE);
                let page: u64 = match &run.token {
                    None => 1,
                    Some(t) => t.parse().map_err(|_| {
                        common::malformed(stream, connector, "stored page number is not a number")
                    })?,
                };
                let query = [
                    ("page", page.to_string()),
                    ("per_page", per_page.to_string()),
                    ("order", "asc".to_string()),
                ];
                let call = Call {
                    query: &query,
                    ..Call::new(&Method::POST, "/companies/list")
                };
                let mut body = self.send(call, stream).await?;
                let total = body.get("total_count").and_then(Value::as_u64).unwrap_or(0);
                if total > COMPANY_LIST_CAP {
                    return Err(common::malformed(
                        stream,
                        connector,
                        format!("the workspace has {total} companies; Intercom lists at most {COMPANY_LIST_CAP} and the scroll API is not supported"),
                    ));
                }
                let total_pages = body
                    .pointer("/pages/total_pages")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let next = (page < total_pages).then(|| (page + 1).to_string());
                (list(&mut body, "data", stream, connector)?, next)
            }
            "conversations" => {
                let per_page = self
                    .page_size
                    .unwrap_or(CONVERSATION_PAGE)
                    .clamp(1, CONVERSATION_PAGE);
                let mut body = match run.since {
                    None => {
                        let mut query = vec![("per_page", per_page.to_string())];
                        if let Some(after) = &run.token {
                            query.push(("starting_after", after.clone()));
                        }
                        let call = Call {
                            query: &query,
                            ..Call::new(&Method::GET, "/conversations")
                        };
                        self.send(call, stream).await?
                    }
                    Some(since) => {
                        let mut pagination = json!({ "per_page": per_page });
                        if let Some(after) = &run.token {
                            pagination["starting_after"] = Value::String(after.clone());
                        }
                        let body = json!({
                            "query": {"field": "updated_at", "operator": ">", "value": since.timestamp() - 1},
                            "pagination": pagination,
                        });
                        let call = Call {
                            body: Some(&body),
                            ..Call::new(&Method::POST, "/conversations/search")
                        };
                        self.send(call, stream).await?
                    }
                };
                let next = body
                    .pointer("/pages/next/starting_after")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                (list(&mut body, "conversations", stream, connector)?, next)
            }
            other => return Err(SourceError::UnknownStream(other.to_string())),
        };
        let count = items.len();
        let (page, max) =
            common::map_page(items, |item| map_item(stream, item).map(common::marked));
        state.finish_page(run, page, max, count, next, stream, connector)
    }
}

fn list(
    body: &mut Value,
    key: &str,
    stream: &str,
    connector: &str,
) -> Result<Vec<Value>, SourceError> {
    common::take_list(body, key).ok_or_else(|| {
        common::malformed(stream, connector, format!("response has no `{key}` list"))
    })
}

/// The host of a company website: `https://www.Acme.com/about` → `www.acme.com` → `acme.com`.
fn website_domain(v: Option<&Value>) -> Option<String> {
    let raw = v?.as_str()?.trim();
    let rest = raw.split_once("://").map_or(raw, |(_, r)| r);
    let host = rest.split(['/', '?', '#', ':']).next()?;
    let host = host.strip_prefix("www.").unwrap_or(host);
    common::domain_key(Some(&Value::String(host.to_string())))
}

fn email_domain(v: Option<&Value>) -> Option<String> {
    let (_, domain) = v?.as_str()?.rsplit_once('@')?;
    common::domain_key(Some(&Value::String(domain.to_string())))
}

fn map_item(stream: &str, obj: Value) -> Result<Record, RejectedRecord> {
    let id = common::id_of(obj.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
    let updated_at = common::unix_seconds(obj.get("updated_at"))
        .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `updated_at`"))?;
    let mut account_keys = BTreeMap::new();
    if stream == "companies" {
        account_keys.insert("intercom_company".to_string(), id.clone());
        if let Some(d) = website_domain(obj.get("website")) {
            account_keys.insert("domain".to_string(), d);
        }
    } else {
        let contact = obj
            .pointer("/contacts/contacts")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find_map(|c| common::id_of(c.get("id"))));
        if let Some(c) = contact {
            account_keys.insert("intercom_contact".to_string(), c);
        }
        let author = obj.pointer("/source/author");
        let by_customer = matches!(
            author.and_then(|a| a.get("type")).and_then(Value::as_str),
            Some("user" | "lead" | "contact")
        );
        if let Some(d) = by_customer
            .then(|| email_domain(author.and_then(|a| a.get("email"))))
            .flatten()
        {
            account_keys.insert("domain".to_string(), d);
        }
    }
    let fields = common::into_object(obj, &id)?;
    Ok(Record {
        id,
        updated_at,
        account_keys,
        fields,
    })
}

impl Source for Intercom {
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
