//! The `zendesk` source kind: organizations, tickets and (legacy CSAT) satisfaction ratings from Zendesk
//! Support's REST API v2.
//!
//! - `organizations`: the time-based incremental export, `GET /api/v2/incremental/organizations?start_time=<unix>`
//!   (up to 1,000 a page), each page's `end_time` the next page's `start_time`, until `end_of_stream`.
//!   `start_time` is the high-water mark minus the lookback (0 on the first run). Organizations updated at
//!   a page's `end_time` come again on the next page (upserts by id). Same export limit as tickets.
//! - `tickets`: the cursor-based incremental export, `GET /api/v2/incremental/tickets/cursor.json` with
//!   `start_time=<unix>` on a run's first page and `cursor=<after_cursor>` after it, until `end_of_stream`.
//!   `start_time` is the high-water mark minus the lookback (0 on the first run). Zendesk excludes items
//!   changed in the last minute and refuses a `start_time` that recent, so a stored mark in the future (or
//!   within that minute) ends the run with zero records and no request.
//!   Zendesk compares `start_time` with a ticket's `generated_timestamp` (never earlier than `updated_at`),
//!   so starting from an `updated_at` mark can re-read a ticket but never skip one.
//!   The incremental endpoints have their own limit, 10 requests/min (`params.incremental_per_min`, 30 with
//!   the High Volume add-on), so they go through a second HTTP client with that quota.
//! - `satisfaction_ratings`: `GET /api/v2/satisfaction_ratings?page[size]=100&start_time=<unix>` with the
//!   same cursor paging as organizations. `start_time` filters on `created_at`, so the cursor tracks
//!   `created_at`: a rating changed long after it was created is not re-read (clear the cursor to re-list).
//!
//! Keys: organizations → `zendesk_org` (id) and `domain` (first of `domain_names`); tickets →
//! `zendesk_ticket` (id) and `zendesk_org` (`organization_id`); ratings → `zendesk_ticket` (`ticket_id`),
//! which identity joins through the ticket. Fields are the vendor object as is (status, priority,
//! created_at, score, comment…). Auth: Basic `{email}/token:{api_token}` (username `email/token`, password
//! the token) or an OAuth bearer token. Throttling: 429 with `Retry-After` seconds, handled by the engine;
//! a response with `ratelimit-remaining: 0` pauses that client's next request for `ratelimit-reset` seconds.
//!
//! Verified against Zendesk's docs (search tool): the export path, `start_time`/`cursor` params,
//! `after_cursor`/`end_of_stream`, the 10/min limit and Retry-After advice, the last-minute exclusion,
//! the ratings' fields, `start_time` filter and cursor pagination (`meta.has_more`, `meta.after_cursor`).
//! Assumed: `per_page` (≤ 1000) on the cursor export, sent only when `page_size` is configured; a
//! too-recent `start_time` is a 400.

use std::collections::BTreeMap;

use chrono::Duration;
use reqwest::Method;
use serde_json::Value;

use super::common::{self, Mark, StreamCursor};
use super::quota_pause::{header_u64, QuotaPause};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{Call, HttpClient};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "zendesk",
    role: Role::Source,
    streams: &["organizations", "tickets", "satisfaction_ratings"],
    default_streams: &["organizations", "tickets", "satisfaction_ratings"],
    auth: &[AuthScheme::Basic, AuthScheme::Bearer],
    // Account-wide per-minute limit of the Team plan, the lowest; higher plans may raise it in the file.
    default_rate_limit: RateLimit::per_secs(200, 60),
    parse_params: read_params,
    limitations: &[],
};

const PARAM_KEYS: &[&str] = &["incremental_per_min"];
/// Zendesk's limit on incremental export endpoints without the High Volume add-on.
const INCREMENTAL_PER_MIN: u32 = 10;
const LIST_PAGE: u32 = 100;
const EXPORT_PAGE: u32 = 1000;
/// Zendesk leaves out (and refuses `start_time` within) the last minute.
const EXPORT_DELAY: Duration = Duration::seconds(60);

fn incremental_per_min(params: &toml::Table) -> Result<u32, String> {
    match params.get("incremental_per_min") {
        None => Ok(INCREMENTAL_PER_MIN),
        Some(toml::Value::Integer(n)) if (1..=1000).contains(n) => Ok(*n as u32),
        Some(_) => Err("`incremental_per_min` must be an integer from 1 to 1000".into()),
    }
}

/// `incremental_per_min`: the incremental export endpoints' own quota.
struct Settings {
    incremental_per_min: u32,
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    common::check_keys(params, PARAM_KEYS)?;
    let incremental_per_min = incremental_per_min(params)?;
    Ok(crate::config::Params::new(Settings {
        incremental_per_min,
    }))
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let export_cfg = export_config(ctx.connector, ctx.params::<Settings>()?);
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    let export = HttpClient::new(&export_cfg, ctx.secrets)?;
    Ok(Built::Source(Box::new(Zendesk::new(
        http,
        export,
        ctx.connector.streams.clone(),
        ctx.connector.page_size,
    ))))
}

/// The connector's config under the incremental endpoints' quota (requests per minute).
fn export_config(
    connector: &crate::config::ConnectorConfig,
    settings: &Settings,
) -> crate::config::ConnectorConfig {
    let mut cfg = connector.clone();
    cfg.rate_limit = RateLimit::per_secs(settings.incremental_per_min, 60);
    cfg
}

pub struct Zendesk {
    http: HttpClient,
    /// The same credentials under the incremental endpoints' own quota.
    export: HttpClient,
    streams: Vec<String>,
    page_size: Option<u32>,
    /// Pre-throttling per client from `ratelimit-remaining`/`ratelimit-reset`.
    pauses: [QuotaPause; 2],
}

impl Zendesk {
    pub fn new(
        http: HttpClient,
        export: HttpClient,
        streams: Vec<String>,
        page_size: Option<u32>,
    ) -> Zendesk {
        Zendesk {
            http,
            export,
            streams,
            page_size,
            pauses: Default::default(),
        }
    }

    /// `GET path?query` on the list (`export` false) or export client, after any pause its last response
    /// asked for; notes the quota this response reports.
    async fn get(
        &self,
        export: bool,
        path: &str,
        query: &[(&str, String)],
        stream: &str,
    ) -> Result<Value, SourceError> {
        let (client, pause) = if export {
            (&self.export, &self.pauses[1])
        } else {
            (&self.http, &self.pauses[0])
        };
        pause.wait(client.clock().as_ref()).await;
        let call = Call {
            query,
            ..Call::new(&Method::GET, path)
        };
        let resp = common::in_stream(client.execute(call).await, stream)?;
        let refill = header_u64(&resp.headers, "ratelimit-reset")
            .and_then(|s| i64::try_from(s).ok())
            .map(|s| client.clock().now() + Duration::seconds(s));
        pause.observe(header_u64(&resp.headers, "ratelimit-remaining"), refill);
        Ok(resp.body)
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let run = state.current_run();
        let (mut body, items_key, next) = match stream {
            "tickets" => {
                // Zendesk's default (and largest) export page is 1000; `per_page` only when configured.
                let mut query: Vec<(&str, String)> = self
                    .page_size
                    .map(|n| ("per_page", n.clamp(1, EXPORT_PAGE).to_string()))
                    .into_iter()
                    .collect();
                match &run.token {
                    Some(token) => query.push(("cursor", token.clone())),
                    None => match self.export_start(&run) {
                        Some(start) => query.push(("start_time", start.to_string())),
                        None => return nothing_yet(&state, run, stream, connector),
                    },
                }
                let path = "/api/v2/incremental/tickets/cursor.json";
                let body = self.get(true, path, &query, stream).await?;
                let end = body
                    .get("end_of_stream")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| {
                        common::malformed(stream, connector, "response has no `end_of_stream`")
                    })?;
                let next = if end {
                    None
                } else {
                    Some(nonempty(body.get("after_cursor")).ok_or_else(|| {
                        common::malformed(
                            stream,
                            connector,
                            "`end_of_stream` is false but there is no `after_cursor`",
                        )
                    })?)
                };
                (body, "tickets", next)
            }
            "organizations" => {
                // The time-based export: each page's `end_time` is the next page's `start_time`.
                let start = match &run.token {
                    Some(token) => token.parse::<i64>().map_err(|_| {
                        common::malformed(
                            stream,
                            connector,
                            format!("stored export position `{token}` is not a unix time"),
                        )
                    })?,
                    None => match self.export_start(&run) {
                        Some(start) => start,
                        None => return nothing_yet(&state, run, stream, connector),
                    },
                };
                let query = [("start_time", start.to_string())];
                let path = "/api/v2/incremental/organizations";
                let body = self.get(true, path, &query, stream).await?;
                let end = body
                    .get("end_of_stream")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| {
                        common::malformed(stream, connector, "response has no `end_of_stream`")
                    })?;
                let next = if end {
                    None
                } else {
                    let end_time =
                        body.get("end_time")
                            .and_then(Value::as_i64)
                            .ok_or_else(|| {
                                common::malformed(
                                    stream,
                                    connector,
                                    "`end_of_stream` is false but there is no `end_time`",
                                )
                            })?;
                    Some(end_time.to_string())
                };
                (body, "organizations", next)
            }
            "satisfaction_ratings" => {
                let size = self.page_size.unwrap_or(LIST_PAGE).clamp(1, LIST_PAGE);
                let mut query = vec![("page[size]", size.to_string())];
                if let Some(since) = run.since {
                    query.push(("start_time", since.timestamp().max(0).to_string()));
                }
                if let Some(after) = &run.token {
                    query.push(("page[after]", after.clone()));
                }
                let path = format!("/api/v2/{stream}");
                let body = self.get(false, &path, &query, stream).await?;
                let has_more = body
                    .pointer("/meta/has_more")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let next = if has_more {
                    Some(nonempty(body.pointer("/meta/after_cursor")).ok_or_else(|| {
                        common::malformed(
                            stream,
                            connector,
                            "`meta.has_more` is true but there is no `meta.after_cursor`",
                        )
                    })?)
                } else {
                    None
                };
                (body, stream, next)
            }
            other => return Err(SourceError::UnknownStream(other.to_string())),
        };
        let items = common::take_list(&mut body, items_key).ok_or_else(|| {
            common::malformed(
                stream,
                connector,
                format!("response has no `{items_key}` list"),
            )
        })?;
        let count = items.len();
        let (page, max) = common::map_page(items, |item| map_item(stream, item));
        state.finish_page(run, page, max, count, next, stream, connector)
    }
}

impl Zendesk {
    /// Where an export run starts: the high-water mark minus the lookback (0 on a first run), or `None`
    /// when that is within the last minute, which Zendesk refuses and could not answer anything newer for.
    fn export_start(&self, run: &common::RunState) -> Option<i64> {
        let start = run.since.map(|s| s.timestamp().max(0)).unwrap_or(0);
        let latest = self.export.clock().now() - EXPORT_DELAY;
        (start <= latest.timestamp()).then_some(start)
    }
}

/// A finished run with no request made: nothing can be newer than the mark yet.
fn nothing_yet(
    state: &StreamCursor,
    run: common::RunState,
    stream: &str,
    connector: &str,
) -> Result<Page, SourceError> {
    let (done_state, _) = state
        .advance(run, None, 0, None)
        .map_err(|e| common::malformed(stream, connector, e))?;
    Ok(Page {
        cursor: done_state.to_cursor(),
        done: true,
        ..Page::default()
    })
}

fn nonempty(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Maps one organization, ticket or rating; the mark is on the field the stream filters by.
fn map_item(stream: &str, obj: Value) -> Result<(Record, Mark), RejectedRecord> {
    let id = common::id_of(obj.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
    let updated_at = common::timestamp(obj.get("updated_at"))
        .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `updated_at`"))?;
    let mut account_keys = BTreeMap::new();
    let mut mark_at = updated_at;
    match stream {
        "organizations" => {
            account_keys.insert("zendesk_org".to_string(), id.clone());
            let first = obj
                .get("domain_names")
                .and_then(Value::as_array)
                .and_then(|d| d.first());
            if let Some(d) = common::domain_key(first) {
                account_keys.insert("domain".to_string(), d);
            }
        }
        "tickets" => {
            account_keys.insert("zendesk_ticket".to_string(), id.clone());
            if let Some(org) = common::id_of(obj.get("organization_id")) {
                account_keys.insert("zendesk_org".to_string(), org);
            }
        }
        _ => {
            let ticket = common::id_of(obj.get("ticket_id"))
                .ok_or_else(|| common::rejected(Some(&id), "missing `ticket_id`"))?;
            account_keys.insert("zendesk_ticket".to_string(), ticket);
            mark_at = common::timestamp(obj.get("created_at"))
                .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `created_at`"))?;
        }
    }
    let mark = Mark {
        updated_at: mark_at,
        id: id.clone(),
    };
    let fields = common::into_object(obj, &id)?;
    let record = Record {
        id,
        updated_at,
        account_keys,
        fields,
    };
    Ok((record, mark))
}

impl Source for Zendesk {
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
