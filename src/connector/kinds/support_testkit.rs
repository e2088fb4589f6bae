//! Test setup shared by the support and survey source kinds (zendesk, intercom, freshdesk, delighted): an
//! HTTP client with any auth scheme and a manual clock (optionally with the short request timeout that runs
//! through a [`FaultProxy`](crate::http::testing::FaultProxy) need), a loop that runs a stream to its end,
//! and checks over what a wiremock server received. Test-only; it owns no vendor knowledge.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use wiremock::MockServer;

use crate::config::ConnectorConfig;
use crate::connector::{Page, RejectedRecord, Source, SourceError};
use crate::http::testing::{config, manual_clock, secrets};
use crate::http::{HttpClient, ManualClock};
use crate::vocab::{AuthScheme, Cursor, Record, Role};

/// A client for `base_url` authenticating with `scheme` and the given secret roles, on a manual clock.
pub fn client(
    base_url: &str,
    scheme: AuthScheme,
    values: &[(&str, &str)],
) -> (HttpClient, Arc<ManualClock>) {
    build(config("test", Role::Source, base_url, scheme), values)
}

pub use crate::http::testing::FAULT_TIMEOUT;

/// [`client`] whose requests time out after `timeout` (in real time), e.g. [`FAULT_TIMEOUT`].
pub fn client_with_timeout(
    base_url: &str,
    scheme: AuthScheme,
    values: &[(&str, &str)],
    timeout: Duration,
) -> (HttpClient, Arc<ManualClock>) {
    let mut cfg = config("test", Role::Source, base_url, scheme);
    cfg.timeout = timeout;
    build(cfg, values)
}

fn build(mut cfg: ConnectorConfig, values: &[(&str, &str)]) -> (HttpClient, Arc<ManualClock>) {
    let s = secrets(&mut cfg, values);
    let clock = manual_clock();
    let http = HttpClient::new(&cfg, &s)
        .expect("client")
        .with_clock(clock.clone());
    (http, clock)
}

/// Everything one run of a stream returned.
#[derive(Debug, Default)]
pub struct Run {
    pub records: Vec<Record>,
    pub rejected: Vec<RejectedRecord>,
    pub cursor: Cursor,
    pub pages: usize,
}

impl Run {
    pub fn ids(&self) -> Vec<&str> {
        self.records.iter().map(|r| r.id.as_str()).collect()
    }

    pub fn key(&self, i: usize, key: &str) -> Option<&str> {
        self.records[i].account_keys.get(key).map(String::as_str)
    }
}

/// Fetches pages of `stream` from `cursor` until the source says done; the first error ends the run.
pub async fn run(
    src: &dyn Source,
    stream: &str,
    mut cursor: Option<Cursor>,
) -> Result<Run, SourceError> {
    let mut out = Run::default();
    loop {
        let page: Page = src.fetch_page(stream, cursor.as_ref()).await?;
        out.pages += 1;
        out.records.extend(page.records);
        out.rejected.extend(page.rejected);
        cursor = Some(page.cursor.clone());
        if page.done {
            out.cursor = page.cursor;
            return Ok(out);
        }
        assert!(out.pages < 50, "runaway paging");
    }
}

/// Runs to the end and panics with the error if the run fails.
pub async fn run_ok(src: &dyn Source, stream: &str, cursor: Option<Cursor>) -> Run {
    match run(src, stream, cursor).await {
        Ok(r) => r,
        Err(e) => panic!("run of {stream} failed: {e}"),
    }
}

/// The `authorization` header of every request the server received; asserts each one is `expected`.
pub async fn assert_auth_on_every_request(server: &MockServer, expected: &str) -> usize {
    crate::http::testing::assert_every_request_carries(server, "/", "authorization", expected).await
}

/// Query value `name` of the `i`th request the server received.
pub async fn query_of(server: &MockServer, i: usize, name: &str) -> Option<String> {
    let reqs = server.received_requests().await.unwrap_or_default();
    let r = reqs.get(i)?;
    r.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An RFC 2822 date `secs` after the manual clock's start, for `Retry-After` as an HTTP-date.
pub fn http_date_after(secs: i64) -> String {
    let start: DateTime<Utc> = crate::http::Clock::now(manual_clock().as_ref());
    (start + chrono::Duration::seconds(secs))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The stored high-water mark of a cursor, as (updated_at, id).
pub fn hwm(cursor: &Cursor) -> Option<(DateTime<Utc>, String)> {
    let v: &Value = cursor.0.get("hwm")?;
    let at = v.get("updated_at")?.as_str()?;
    let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    Some((at, v.get("id")?.as_str()?.to_string()))
}
