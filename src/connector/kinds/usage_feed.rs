//! The `usage_feed` source kind: a generic product-usage JSON feed of daily per-workspace rows.
//!
//! `GET /v1/usage/daily?updated_since=<RFC 3339>&cursor=<opaque>&limit=<page_size or 500>` →
//! `{"data":[{"id","workspace_id","account_domain","date","active_users","events","features_used",
//! "updated_at"}],"next_cursor":"…"|null}`, ordered by (updated_at, id). The first run omits
//! `updated_since`; later runs send the high-water mark minus the lookback. Account keys: `domain` (from
//! `account_domain`) and `workspace_id`. A 429 carries `Retry-After`, which the HTTP engine honours. This
//! kind owns the feed's shape only (a `paged::PagedApi`: request, page, record); the page loop, cursor and
//! loop guard are `paged.rs`'s, auth and retries the engine's, storage the store's.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use serde_json::Value;

use super::common::{self, Mark, RunState};
use super::paged::{ListPage, PageRequest, PagedApi, PagedSource};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, RejectedRecord};
use crate::http::{HttpClient, JsonResponse};
use crate::vocab::{AuthScheme, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "usage_feed",
    role: Role::Source,
    streams: &["daily_usage"],
    default_streams: &["daily_usage"],
    auth: &[AuthScheme::Bearer],
    default_rate_limit: RateLimit::per_secs(600, 60),
    parse_params: common::no_params,
    limitations: &[],
};

const DEFAULT_PAGE: u32 = 500;


pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Source(Box::new(UsageFeed::new(
        http,
        ctx.connector.streams.clone(),
        ctx.connector.page_size,
    ))))
}

/// The feed's source: the shared page loop over [`DailyUsage`] pages.
pub type UsageFeed = PagedSource<DailyUsage>;

impl UsageFeed {
    pub fn new(http: HttpClient, streams: Vec<String>, page_size: Option<u32>) -> UsageFeed {
        let limit = page_size.unwrap_or(DEFAULT_PAGE).max(1);
        PagedSource::with_api(DailyUsage { limit }, http, streams)
    }
}

/// `GET /v1/usage/daily` pages of `limit` rows.
pub struct DailyUsage {
    limit: u32,
}

impl PagedApi for DailyUsage {
    const SPEC: &'static KindSpec = &SPEC;

    fn request(&self, _stream: &str, run: &RunState) -> Result<PageRequest, String> {
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
        Ok(PageRequest {
            path: "/v1/usage/daily".into(),
            query,
        })
    }

    fn read_page(
        &self,
        _stream: &str,
        _run: &RunState,
        mut response: JsonResponse,
    ) -> Result<ListPage, String> {
        let items = common::take_list(&mut response.body, "data")
            .ok_or("response has no `data` list")?;
        let next = match response.body.get("next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("`next_cursor` is neither a string nor null".into()),
        };
        Ok(ListPage { items, next })
    }

    fn map_item(&self, _stream: &str, row: Value) -> Result<(Record, Mark), RejectedRecord> {
        map_row(row).map(common::marked)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{kinds::common::StreamCursor, kinds::testkit::drain, Source, SourceError};
    use crate::vocab::Cursor;
    use crate::http::testing::{
        assert_every_request_carries, bearer_client, bearer_client_behind_proxy, Fault, FaultProxy,
    };
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

    /// [`drain`] of `daily_usage`, as the tuple the older tests destructure.
    async fn run_to_end(
        src: &UsageFeed,
        cursor: Option<Cursor>,
    ) -> (Vec<Record>, Vec<RejectedRecord>, Cursor, usize) {
        let d = drain(src, "daily_usage", cursor).await.unwrap();
        (d.records, d.rejected, d.cursor, d.pages)
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
    async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_token() {
        let server = MockServer::start().await;
        mount_first_run(&server).await;
        // Requests 2 and 3 are the first two attempts at the second page (cursor c2).
        let proxy = FaultProxy::start(&server.uri(), &[(2, Fault::Hang), (3, Fault::Reset)]).await;
        let (http, clock) = bearer_client_behind_proxy(proxy.url());
        let src = UsageFeed::new(http, vec!["daily_usage".into()], None);
        let (records, _, _, _) = run_to_end(&src, None).await;
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["u1", "u2", "u3", "u4"]
        );
        assert_eq!(proxy.requests(), 5);
        assert_eq!(clock.sleeps().len(), 2, "one backoff per failed attempt");
        assert_eq!(
            assert_every_request_carries(&server, "/", "authorization", "Bearer tok_test").await,
            3,
            "the faulted attempts never reached the server"
        );
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
        assert!((SPEC.parse_params)(&toml::Table::new()).is_ok());
        let t: toml::Table = toml::from_str("x = 1").unwrap();
        assert!((SPEC.parse_params)(&t).is_err());
    }

    // ---- Future marks, ties, bad bodies and resuming from every checkpoint ----

    /// The `updated_since` and `cursor` of every request the server received, in order.
    async fn queries(server: &MockServer) -> Vec<(Option<String>, Option<String>)> {
        let q = |r: &wiremock::Request, name: &str| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| (q(r, "updated_since"), q(r, "cursor")))
            .collect()
    }

    #[tokio::test]
    async fn a_future_mark_asks_from_it_and_finds_nothing() {
        let server = MockServer::start().await;
        // 2027-01-01T12:00:00Z is after the manual clock's 2026-11-23T12:00Z. The kind does not consult the
        // clock: it asks once, from five minutes before the mark, and the feed has nothing.
        Mock::given(path("/v1/usage/daily"))
            .and(query_param("updated_since", "2027-01-01T11:55:00Z"))
            .and(query_param_is_missing("cursor"))
            .respond_with(page(vec![], None))
            .expect(1)
            .mount(&server)
            .await;
        let (src, clock) = feed(&server);
        let future = json!({"hwm": {"updated_at": "2027-01-01T12:00:00Z", "id": "u9"}});
        let r = drain(&src, "daily_usage", Some(Cursor(future.clone())))
            .await
            .unwrap();
        assert_eq!((r.pages, r.records.len(), r.rejected.len()), (1, 0, 0));
        assert_eq!(
            r.state(),
            serde_json::from_value::<StreamCursor>(future).unwrap(),
            "the mark stays where it was"
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
        assert!(clock.sleeps().is_empty());
    }

    #[tokio::test]
    async fn equal_timestamps_across_a_page_boundary_and_across_runs_are_all_kept() {
        let server = MockServer::start().await;
        let t = "2026-11-10T12:00:00Z";
        let first_run =
            || Mock::given(path("/v1/usage/daily")).and(query_param_is_missing("updated_since"));
        first_run()
            .and(query_param_is_missing("cursor"))
            .respond_with(page(
                vec![row("u7", "a.com", t), row("u8", "a.com", t)],
                Some("c1"),
            ))
            .expect(1)
            .mount(&server)
            .await;
        first_run()
            .and(query_param("cursor", "c1"))
            .respond_with(page(vec![row("u9", "a.com", t)], None))
            .expect(1)
            .mount(&server)
            .await;
        // The next run asks from the mark's timestamp minus five minutes, so a row committed late with the
        // same updated_at and an id below the mark's (u6 < u9) is found; the tied rows already stored come
        // back too (upserts by id), each once, across the feed's page boundary.
        let next_run = || {
            Mock::given(path("/v1/usage/daily"))
                .and(query_param("updated_since", "2026-11-10T11:55:00Z"))
        };
        next_run()
            .and(query_param_is_missing("cursor"))
            .respond_with(page(
                vec![row("u6", "a.com", t), row("u7", "a.com", t)],
                Some("d1"),
            ))
            .expect(1)
            .mount(&server)
            .await;
        next_run()
            .and(query_param("cursor", "d1"))
            .respond_with(page(
                vec![row("u8", "a.com", t), row("u9", "a.com", t)],
                None,
            ))
            .expect(1)
            .mount(&server)
            .await;
        let (src, _) = feed(&server);
        let first = drain(&src, "daily_usage", None).await.unwrap();
        assert_eq!((first.pages, first.ids()), (2, vec!["u7", "u8", "u9"]));
        let hwm = first.state().hwm.unwrap();
        assert_eq!(
            (hwm.updated_at.to_rfc3339(), hwm.id.as_str()),
            ("2026-11-10T12:00:00+00:00".to_string(), "u9")
        );
        let second = drain(&src, "daily_usage", Some(first.cursor))
            .await
            .unwrap();
        assert_eq!(
            (second.pages, second.ids()),
            (2, vec!["u6", "u7", "u8", "u9"])
        );
        assert_eq!(second.state().hwm.map(|m| m.id), Some("u9".to_string()));
        let since = Some("2026-11-10T11:55:00Z".to_string());
        assert_eq!(
            queries(&server).await,
            [
                (None, None),
                (None, Some("c1".to_string())),
                (since.clone(), None),
                (since, Some("d1".to_string())),
            ],
            "every page of a run keeps the filter it started with"
        );
    }

    #[tokio::test]
    async fn malformed_json_names_connector_and_request_path() {
        let server = MockServer::start().await;
        Mock::given(path("/v1/usage/daily"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string("{\"data\": [{\"id\": \"u1\","),
            )
            .expect(1)
            .mount(&server)
            .await;
        let (src, clock) = feed(&server);
        let err = drain(&src, "daily_usage", None).await.unwrap_err();
        assert!(matches!(&err, SourceError::Malformed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("for stream daily_usage")
                && msg.contains("connector test_test")
                && msg.contains("GET /v1/usage/daily:"),
            "{msg}"
        );
        assert!(clock.sleeps().is_empty(), "a bad body is not retried");
    }

    #[tokio::test]
    async fn resumes_from_every_checkpoint() {
        let server = MockServer::start().await;
        mount_first_run(&server).await;
        // After the full run the mark is u4's 2024-03-01T04:00:00Z; the next run asks from five minutes
        // before it and gets u4 again (unchanged): the only duplicate the design allows.
        Mock::given(path("/v1/usage/daily"))
            .and(query_param("updated_since", "2024-03-01T03:55:00Z"))
            .respond_with(page(
                vec![row("u4", "gamma.dev", "2024-03-01T04:00:00Z")],
                None,
            ))
            .expect(1)
            .mount(&server)
            .await;
        let (src, _) = feed(&server);
        let mut cursor = None;
        let mut checkpoints: Vec<(Vec<String>, Cursor)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let p = src
                .fetch_page("daily_usage", cursor.as_ref())
                .await
                .unwrap();
            seen.extend(p.records.iter().map(|r| r.id.clone()));
            checkpoints.push((seen.clone(), p.cursor.clone()));
            cursor = Some(p.cursor);
            if p.done {
                break;
            }
        }
        let full = ["u1", "u2", "u3", "u4"];
        assert_eq!(seen, full);
        assert_eq!(checkpoints.len(), 3);
        let expected_rest: [&[&str]; 3] = [&["u3", "u4"], &["u4"], &["u4"]];
        for (k, ((before, checkpoint), rest)) in
            checkpoints.into_iter().zip(expected_rest).enumerate()
        {
            // A fresh process resuming from the checkpoint stored after page k+1.
            let after = drain(&feed(&server).0, "daily_usage", Some(checkpoint))
                .await
                .unwrap();
            assert_eq!(after.ids(), rest, "resumed after page {}", k + 1);
            let mut union: Vec<&str> = before
                .iter()
                .map(String::as_str)
                .chain(after.ids())
                .collect();
            union.sort_unstable();
            union.dedup();
            assert_eq!(union, full, "nothing lost resuming after page {}", k + 1);
        }
        // Page 1 once (its mock expects one request), page 2 once more, page 3 twice more.
        let cursors: Vec<Option<String>> =
            queries(&server).await.into_iter().map(|(_, c)| c).collect();
        let count = |c: &str| cursors.iter().filter(|x| x.as_deref() == Some(c)).count();
        assert_eq!((count("c2"), count("c3")), (2, 3));
    }
}
