//! The `usage_feed` source kind: a generic product-usage JSON feed of daily per-workspace rows.
//!
//! `GET /v1/usage/daily?updated_since=<RFC 3339>&cursor=<opaque>&limit=<page_size or 500>` →
//! `{"data":[{"id","workspace_id","account_domain","date","active_users","events","features_used",
//! "updated_at"}],"next_cursor":"…"|null}`, ordered by (updated_at, id). The first run omits
//! `updated_since`; later runs send the high-water mark minus the lookback. Account keys: `domain` (from
//! `account_domain`) and `workspace_id`. A 429 carries `Retry-After`, which the HTTP engine honours. This
//! kind owns the feed's shape only; auth, retries and storage are elsewhere.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use serde_json::Value;

use super::common::{self, StreamCursor};
use crate::config::{AuthScheme, RateLimit};
use crate::connector::{
    BoxFuture, BuildContext, BuildError, Built, Cursor, KindSpec, Page, Record, RejectedRecord,
    Role, Source, SourceError,
};
use crate::http::HttpClient;

pub static SPEC: KindSpec = KindSpec {
    name: "usage_feed",
    role: Role::Source,
    streams: &["daily_usage"],
    default_streams: &["daily_usage"],
    auth: &[AuthScheme::Bearer],
    default_rate_limit: RateLimit::per_secs(600, 60),
    validate_params,
    build,
};

const DEFAULT_PAGE: u32 = 500;

fn validate_params(params: &toml::Table) -> Result<(), String> {
    common::check_keys(params, &[])
}

fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Source(Box::new(UsageFeed::new(
        http,
        ctx.connector.streams.clone(),
        ctx.connector.page_size,
    ))))
}

pub struct UsageFeed {
    http: HttpClient,
    streams: Vec<String>,
    limit: u32,
}

impl UsageFeed {
    pub fn new(http: HttpClient, streams: Vec<String>, page_size: Option<u32>) -> UsageFeed {
        UsageFeed {
            http,
            streams,
            limit: page_size.unwrap_or(DEFAULT_PAGE).max(1),
        }
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if !SPEC.streams.contains(&stream) {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let run = state.current_run();
        let mut query = vec![("limit", self.limit.to_string())];
        if let Some(since) = run.since {
            query.push((
                "updated_since",
                since.to_rfc3339_opts(SecondsFormat::Secs, true),
            ));
        }
        if let Some(token) = &run.token {
            query.push(("cursor", token.clone()));
        }
        let mut body = self.http.get_json("/v1/usage/daily", &query).await?;
        let data = common::take_list(&mut body, "data")
            .ok_or_else(|| common::malformed(stream, connector, "response has no `data` list"))?;
        let next = match body.get("next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(common::malformed(
                    stream,
                    connector,
                    "`next_cursor` is neither a string nor null",
                ))
            }
        };
        let count = data.len();
        let (page, max) = common::map_page(data, |row| map_row(row).map(common::marked));
        state.finish_page(run, page, max, count, next, stream, connector)
    }
}

fn map_row(row: Value) -> Result<Record, RejectedRecord> {
    let id = common::id_of(row.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
    let updated_at = common::timestamp(row.get("updated_at"))
        .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `updated_at`"))?;
    let mut account_keys = BTreeMap::new();
    if let Some(d) = common::domain_key(row.get("account_domain")) {
        account_keys.insert("domain".to_string(), d);
    }
    if let Some(w) = common::id_of(row.get("workspace_id")) {
        account_keys.insert("workspace_id".to_string(), w);
    }
    let fields = common::into_object(row, &id)?;
    Ok(Record {
        id,
        updated_at,
        account_keys,
        fields,
    })
}

impl Source for UsageFeed {
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
mod tests {
    use super::*;
    use crate::http::testing::bearer_client;
    use serde_json::json;
    use std::time::Duration;
    use wiremock::matchers::{header, path, query_param, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn row(id: &str, domain: &str, updated: &str) -> Value {
        json!({
            "id": id, "workspace_id": format!("ws_{id}"), "account_domain": domain, "date": "2024-03-01",
            "active_users": 12, "events": 340, "features_used": 5, "updated_at": updated,
        })
    }

    fn page(data: Vec<Value>, next: Option<&str>) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"data": data, "next_cursor": next}))
    }

    fn feed(server: &MockServer) -> (UsageFeed, std::sync::Arc<crate::http::ManualClock>) {
        let (http, clock) = bearer_client(&server.uri());
        (
            UsageFeed::new(http, vec!["daily_usage".into()], None),
            clock,
        )
    }

    async fn run_to_end(
        src: &UsageFeed,
        mut cursor: Option<Cursor>,
    ) -> (Vec<Record>, Vec<RejectedRecord>, Cursor, usize) {
        let (mut records, mut rejected, mut pages) = (Vec::new(), Vec::new(), 0);
        loop {
            let p = src
                .fetch_page("daily_usage", cursor.as_ref())
                .await
                .unwrap();
            pages += 1;
            records.extend(p.records);
            rejected.extend(p.rejected);
            cursor = Some(p.cursor);
            if p.done {
                return (records, rejected, cursor.unwrap_or_default(), pages);
            }
            assert!(pages < 20, "runaway paging");
        }
    }

    async fn mount_first_run(server: &MockServer) {
        let base = || {
            Mock::given(path("/v1/usage/daily"))
                .and(header("authorization", "Bearer tok_test"))
                .and(query_param("limit", "500"))
                .and(query_param_is_missing("updated_since"))
        };
        base()
            .and(query_param_is_missing("cursor"))
            .respond_with(page(
                vec![
                    row("u1", "Acme.com", "2024-03-01T01:00:00Z"),
                    row("u2", "beta.io", "2024-03-01T02:00:00Z"),
                ],
                Some("c2"),
            ))
            .expect(1)
            .mount(server)
            .await;
        base()
            .and(query_param("cursor", "c2"))
            .respond_with(page(
                vec![
                    json!({"workspace_id": "ws_x", "updated_at": "2024-03-01T02:30:00Z"}),
                    row("u3", "acme.com", "2024-03-01T03:00:00Z"),
                ],
                Some("c3"),
            ))
            .mount(server)
            .await;
        base()
            .and(query_param("cursor", "c3"))
            .respond_with(page(
                vec![row("u4", "gamma.dev", "2024-03-01T04:00:00Z")],
                None,
            ))
            .mount(server)
            .await;
    }

    #[tokio::test]
    async fn pages_then_incremental_run_with_updated_since() {
        let server = MockServer::start().await;
        mount_first_run(&server).await;
        let (src, _) = feed(&server);
        let (records, rejected, cursor, pages) = run_to_end(&src, None).await;
        assert_eq!(pages, 3);
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["u1", "u2", "u3", "u4"]
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].reason, "missing `id`");
        assert_eq!(
            records[0].account_keys.get("domain").map(String::as_str),
            Some("acme.com")
        );
        assert_eq!(
            records[0]
                .account_keys
                .get("workspace_id")
                .map(String::as_str),
            Some("ws_u1")
        );
        assert_eq!(records[0].fields["active_users"], json!(12));

        Mock::given(path("/v1/usage/daily"))
            .and(query_param("updated_since", "2024-03-01T03:55:00Z"))
            .respond_with(page(
                vec![row("u4", "gamma.dev", "2024-03-02T04:00:00Z")],
                None,
            ))
            .expect(1)
            .mount(&server)
            .await;
        let (records, _, _, pages) = run_to_end(&src, Some(cursor)).await;
        assert_eq!((pages, records.len()), (1, 1));
    }

    #[tokio::test]
    async fn resumes_mid_run_and_refuses_a_repeated_cursor() {
        let server = MockServer::start().await;
        mount_first_run(&server).await;
        let (src, _) = feed(&server);
        let p1 = src.fetch_page("daily_usage", None).await.unwrap();
        let (records, _, _, pages) = run_to_end(&feed(&server).0, Some(p1.cursor)).await;
        assert_eq!(pages, 2);
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["u3", "u4"]
        );

        let loop_server = MockServer::start().await;
        Mock::given(path("/v1/usage/daily"))
            .respond_with(page(
                vec![row("u1", "a.com", "2024-03-01T01:00:00Z")],
                Some("again"),
            ))
            .mount(&loop_server)
            .await;
        let (src, _) = feed(&loop_server);
        let p1 = src.fetch_page("daily_usage", None).await.unwrap();
        let err = src
            .fetch_page("daily_usage", Some(&p1.cursor))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("page token `again` again"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn rate_limited_honours_retry_after() {
        let server = MockServer::start().await;
        Mock::given(path("/v1/usage/daily"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "12"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(path("/v1/usage/daily"))
            .respond_with(page(vec![row("u1", "a.com", "2024-03-01T01:00:00Z")], None))
            .mount(&server)
            .await;
        let (src, clock) = feed(&server);
        let p = src.fetch_page("daily_usage", None).await.unwrap();
        assert_eq!(p.records.len(), 1);
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(12)]);
    }

    #[tokio::test]
    async fn unknown_stream_is_refused() {
        let server = MockServer::start().await;
        let (src, _) = feed(&server);
        let err = src.fetch_page("events", None).await.unwrap_err();
        assert_eq!(err.to_string(), "unknown stream events");
    }

    #[test]
    fn takes_no_params() {
        assert!(validate_params(&toml::Table::new()).is_ok());
        let t: toml::Table = toml::from_str("x = 1").unwrap();
        assert!(validate_params(&t).is_err());
    }
}
