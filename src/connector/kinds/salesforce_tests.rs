//! Tests of the `salesforce` kind against wiremock serving Salesforce's query responses and OAuth token
//! endpoint. Shared setup: [`Fixture`] (server, token endpoint, source) and the record/batch builders.

use std::sync::Arc;

use serde_json::json;
use wiremock::matchers::{header, method, path, query_param_contains, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::connector::kinds::testkit::drain;
use crate::http::testing::{
    assert_every_request_carries, manual_clock, oauth2_config, Fault, FaultProxy, FAULT_TIMEOUT,
};
use crate::http::ManualClock;

const QUERY: &str = "/services/data/v62.0/query";

struct Fixture {
    server: MockServer,
    src: Salesforce,
    clock: Arc<ManualClock>,
    proxy: Option<FaultProxy>,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_params("crm_id_field = \"HubSpot_Company_Id__c\"").await
    }

    async fn with_params(params: &str) -> Fixture {
        Fixture::build(params, &[]).await
    }

    /// A fixture whose source (token grant included) reaches the server through a [`FaultProxy`]
    /// injecting `faults`, with a [`FAULT_TIMEOUT`], when `faults` is not empty.
    async fn with_faults(faults: &[(usize, Fault)]) -> Fixture {
        Fixture::build("crm_id_field = \"HubSpot_Company_Id__c\"", faults).await
    }

    async fn build(params: &str, faults: &[(usize, Fault)]) -> Fixture {
        let server = MockServer::start().await;
        let proxy = match faults {
            [] => None,
            _ => Some(FaultProxy::start(&server.uri(), faults).await),
        };
        let url = proxy.as_ref().map_or(server.uri(), |p| p.url().to_string());
        let token_url = format!("{url}/services/oauth2/token");
        let (mut cfg, secrets) = oauth2_config(
            "salesforce",
            &url,
            &token_url,
            AuthScheme::OAuth2ClientCredentials,
        );
        if proxy.is_some() {
            cfg.timeout = FAULT_TIMEOUT;
        }
        Self::mount_token(&server, "at-1").await;
        let clock = manual_clock();
        let http = HttpClient::new(&cfg, &secrets)
            .unwrap()
            .with_classifier(classify)
            .with_clock(clock.clone());
        let params = parse_params(&toml::from_str(params).unwrap()).unwrap();
        let src = Salesforce::new(
            http,
            SPEC.default_streams.iter().map(|s| s.to_string()).collect(),
            params,
            None,
        );
        Fixture {
            server,
            src,
            clock,
            proxy,
        }
    }

    async fn mount_token(server: &MockServer, token: &str) {
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": token, "instance_url": server.uri(), "token_type": "Bearer",
                "id": "https://login.salesforce.com/id/00D/005", "issued_at": "1700000000000", "signature": "s",
            })))
            .up_to_n_times(1)
            .mount(server)
            .await;
    }

    /// The first batch of a query whose SOQL contains `soql`.
    async fn first(&self, soql: &str, body: Value) {
        Mock::given(method("GET"))
            .and(path(QUERY))
            .and(query_param_contains("q", soql))
            .respond_with(ok(body))
            .mount(&self.server)
            .await;
    }

    /// The batch behind a `nextRecordsUrl`.
    async fn more(&self, locator: &str, body: Value) {
        Mock::given(method("GET"))
            .and(path(format!("{QUERY}/{locator}")))
            .and(query_param_is_missing("q"))
            .respond_with(ok(body))
            .mount(&self.server)
            .await;
    }

    async fn api_requests(&self) -> Vec<wiremock::Request> {
        let all = self.server.received_requests().await.unwrap();
        all.into_iter()
            .filter(|r| r.url.path().starts_with(QUERY))
            .collect()
    }
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("Sforce-Limit-Info", "api-usage=120/15000")
        .set_body_json(body)
}

/// A row as the query resource returns it.
fn row(object: &str, id: &str, account: &str, stamp: &str) -> Value {
    let mut v = json!({
        "attributes": {"type": object, "url": format!("/services/data/v62.0/sobjects/{object}/{id}")},
        "Id": id,
        "SystemModstamp": stamp,
        "CreatedDate": "2024-01-01T00:00:00.000+0000",
    });
    if object == "Account" {
        v["Name"] = json!(format!("Account {id}"));
        v["Website"] = json!(format!("https://www.{account}"));
        v["HubSpot_Company_Id__c"] = json!(format!("hs-{id}"));
    } else {
        v["AccountId"] = json!(account);
    }
    v
}

fn batch(records: Vec<Value>, next: Option<&str>) -> Value {
    let mut v = json!({"totalSize": 99, "done": next.is_none(), "records": records});
    if let Some(n) = next {
        v["nextRecordsUrl"] = json!(format!("{QUERY}/{n}"));
    }
    v
}

async fn three_account_batches(f: &Fixture) {
    f.first(
        "FROM Account ORDER BY SystemModstamp ASC, Id ASC",
        batch(
            vec![
                row(
                    "Account",
                    "001A",
                    "acme.com",
                    "2024-03-01T10:00:00.000+0000",
                ),
                row("Account", "001B", "beta.io", "2024-03-02T10:00:00.000+0000"),
            ],
            Some("01gL-2"),
        ),
    )
    .await;
    // A tie at the page boundary: 001C and 001D share a SystemModstamp across two batches.
    f.more(
        "01gL-2",
        batch(
            vec![
                row(
                    "Account",
                    "001C",
                    "gamma.dev",
                    "2024-03-05T10:00:00.000+0000",
                ),
                json!({"attributes": {"type": "Account"}, "Id": "001X", "Name": "no stamp"}),
            ],
            Some("01gL-4"),
        ),
    )
    .await;
    f.more(
        "01gL-4",
        batch(
            vec![row(
                "Account",
                "001D",
                "delta.ai",
                "2024-03-05T10:00:00.000+0000",
            )],
            None,
        ),
    )
    .await;
}

#[tokio::test]
async fn pages_through_next_records_urls_with_keys_and_rejections() {
    let f = Fixture::new().await;
    three_account_batches(&f).await;
    let d = drain(&f.src, "accounts", None).await.unwrap();
    assert_eq!(d.pages, 3);
    assert_eq!(d.ids(), ["001A", "001B", "001C", "001D"]);
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].id.as_deref(), Some("001X"));
    assert!(d.rejected[0].reason.contains("SystemModstamp"));
    let acme = &d.records[0];
    assert_eq!(acme.account_keys["salesforce_account_id"], "001A");
    assert_eq!(acme.account_keys["domain"], "acme.com");
    assert_eq!(acme.account_keys["crm_id"], "hs-001A");
    assert!(!acme.fields.contains_key("attributes"));
    // The tie resolves to the higher id, so the next run's lookback re-reads both tied records.
    let hwm = d.state().hwm.unwrap();
    assert_eq!(
        (hwm.id.as_str(), hwm.updated_at.to_rfc3339()),
        ("001D", "2024-03-05T10:00:00+00:00".into())
    );
    let reqs = f.api_requests().await;
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.headers.get("authorization").unwrap(), "Bearer at-1");
        assert_eq!(
            r.headers.get("sforce-query-options").unwrap(),
            "batchSize=2000"
        );
    }
}

#[tokio::test]
async fn a_reset_token_grant_and_a_timeout_midway_are_retried_and_queries_carry_the_token() {
    // Request 1 is the token grant (reset); 2 is the first batch; 3 the first attempt at the second
    // batch (times out).
    let f = Fixture::with_faults(&[(1, Fault::Reset), (3, Fault::Hang)]).await;
    three_account_batches(&f).await;
    let d = drain(&f.src, "accounts", None).await.unwrap();
    assert_eq!(d.ids(), ["001A", "001B", "001C", "001D"]);
    assert_eq!(f.proxy.as_ref().map(FaultProxy::requests), Some(6));
    assert_eq!(f.clock.sleeps().len(), 2, "one backoff per failed attempt");
    assert_eq!(
        assert_every_request_carries(&f.server, QUERY, "authorization", "Bearer at-1").await,
        3,
        "the faulted attempt never reached the server"
    );
    assert_eq!(f.server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn second_run_queries_from_the_high_water_mark_and_children_carry_the_account() {
    let f = Fixture::new().await;
    f.first(
        "FROM Case ORDER BY",
        batch(
            vec![row("Case", "500A", "001A", "2024-04-01T08:00:00.000+0000")],
            None,
        ),
    )
    .await;
    let first = drain(&f.src, "cases", None).await.unwrap();
    assert_eq!(
        first.records[0].account_keys["salesforce_account_id"],
        "001A"
    );
    // hwm 08:00:00 minus the five-minute lookback.
    f.first(
        "FROM Case WHERE SystemModstamp >= 2024-04-01T07:55:00Z ORDER BY SystemModstamp ASC, Id ASC",
        batch(vec![row("Case", "500B", "001B", "2024-04-02T09:00:00.000+0000")], None),
    )
    .await;
    let second = drain(&f.src, "cases", Some(first.cursor)).await.unwrap();
    assert_eq!(second.ids(), ["500B"]);
    assert_eq!(second.state().hwm.unwrap().id, "500B");
}

#[tokio::test]
async fn resumes_from_a_mid_run_checkpoint_with_the_stored_url() {
    let f = Fixture::new().await;
    three_account_batches(&f).await;
    let p1 = f.src.fetch_page("accounts", None).await.unwrap();
    let p2 = f
        .src
        .fetch_page("accounts", Some(&p1.cursor))
        .await
        .unwrap();
    // A new process resumes from the second checkpoint: one request, for the third batch only.
    let g = Fixture::new().await;
    three_account_batches(&g).await;
    let rest = drain(&g.src, "accounts", Some(p2.cursor)).await.unwrap();
    assert_eq!(rest.ids(), ["001D"]);
    let reqs = g.api_requests().await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].url.path(), format!("{QUERY}/01gL-4"));
}

#[tokio::test]
async fn an_expired_query_locator_re_issues_the_query() {
    let f = Fixture::new().await;
    three_account_batches(&f).await;
    let p1 = f.src.fetch_page("accounts", None).await.unwrap();
    f.server.reset().await;
    Fixture::mount_token(&f.server, "at-1").await;
    Mock::given(path(format!("{QUERY}/01gL-2")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!([
            {"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}
        ])))
        .expect(1)
        .mount(&f.server)
        .await;
    f.first(
        "FROM Account ORDER BY",
        batch(
            vec![row(
                "Account",
                "001B",
                "beta.io",
                "2024-03-02T10:00:00.000+0000",
            )],
            None,
        ),
    )
    .await;
    let rest = drain(&f.src, "accounts", Some(p1.cursor)).await.unwrap();
    assert_eq!(rest.ids(), ["001B"]);
}

#[tokio::test]
async fn a_repeated_next_records_url_stops_with_an_error() {
    let f = Fixture::new().await;
    f.first(
        "FROM Account",
        batch(
            vec![row(
                "Account",
                "001A",
                "a.com",
                "2024-03-01T10:00:00.000+0000",
            )],
            Some("01gL-2"),
        ),
    )
    .await;
    f.more(
        "01gL-2",
        batch(
            vec![row(
                "Account",
                "001B",
                "b.com",
                "2024-03-02T10:00:00.000+0000",
            )],
            Some("01gL-2"),
        ),
    )
    .await;
    let err = drain(&f.src, "accounts", None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("again") && text.contains("01gL-2"), "{text}");
    assert!(
        text.contains("accounts") && text.contains("connector test_salesforce"),
        "{text}"
    );
}

#[tokio::test]
async fn request_limit_exceeded_is_quota_exhausted_and_not_retried() {
    let f = Fixture::new().await;
    Mock::given(path(QUERY))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!([
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ])))
        .expect(1)
        .mount(&f.server)
        .await;
    let err = f.src.fetch_page("accounts", None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::Http(HttpError::QuotaExhausted { .. })),
        "{err:?}"
    );
    assert!(f.clock.sleeps().is_empty());
}

#[tokio::test]
async fn usage_near_the_org_quota_stops_before_the_next_request() {
    let f = Fixture::with_params("max_api_usage_percent = 90").await;
    Mock::given(path(QUERY))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Sforce-Limit-Info", "api-usage=13600/15000")
                .set_body_json(batch(
                    vec![row(
                        "Contact",
                        "003A",
                        "001A",
                        "2024-03-01T10:00:00.000+0000",
                    )],
                    Some("01gC-2"),
                )),
        )
        .mount(&f.server)
        .await;
    let p1 = f.src.fetch_page("contacts", None).await.unwrap();
    assert_eq!(p1.records.len(), 1, "the page already fetched is kept");
    let err = f
        .src
        .fetch_page("contacts", Some(&p1.cursor))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("13600/15000"), "{err}");
    assert_eq!(f.api_requests().await.len(), 1);
}

#[tokio::test]
async fn a_5xx_burst_is_retried_with_backoff() {
    let f = Fixture::new().await;
    Mock::given(path(QUERY))
        .respond_with(ResponseTemplate::new(503).set_body_string("Service Unavailable"))
        .up_to_n_times(3)
        .mount(&f.server)
        .await;
    f.first(
        "FROM Event",
        batch(
            vec![row("Event", "00UA", "001A", "2024-03-01T10:00:00.000+0000")],
            None,
        ),
    )
    .await;
    let d = drain(&f.src, "events", None).await.unwrap();
    assert_eq!(d.ids(), ["00UA"]);
    assert_eq!(f.clock.sleeps().len(), 3);
}

#[tokio::test]
async fn an_expired_session_refreshes_the_token_once() {
    let f = Fixture::new().await;
    Fixture::mount_token(&f.server, "at-2").await;
    Mock::given(path(QUERY))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!([
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ])))
        .mount(&f.server)
        .await;
    Mock::given(path(QUERY))
        .and(header("authorization", "Bearer at-2"))
        .respond_with(ok(batch(
            vec![row("Task", "00TA", "001A", "2024-03-01T10:00:00.000+0000")],
            None,
        )))
        .mount(&f.server)
        .await;
    let d = drain(&f.src, "tasks", None).await.unwrap();
    assert_eq!(d.ids(), ["00TA"]);
}

#[tokio::test]
async fn malformed_json_names_connector_stream_and_path() {
    let f = Fixture::new().await;
    Mock::given(path(QUERY))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"records\": [ {\"Id\": "))
        .mount(&f.server)
        .await;
    let err = f
        .src
        .fetch_page("opportunities", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("connector test_salesforce")
            && err.contains(QUERY)
            && err.contains("opportunities"),
        "{err}"
    );
    let g = Fixture::new().await;
    Mock::given(path(QUERY))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"totalSize": 1, "done": true})),
        )
        .mount(&g.server)
        .await;
    let err = g
        .src
        .fetch_page("opportunities", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("opportunities") && err.contains("no `records` list"),
        "{err}"
    );
}

#[test]
fn helpers_and_params() {
    let mut h = HeaderMap::new();
    h.insert("sforce-limit-info", "api-usage=18/5000".parse().unwrap());
    assert_eq!(api_usage(&h), Some((18, 5000)));
    assert_eq!(
        sf_datetime(Some(&json!("2024-01-02T03:04:05.000+0000")))
            .unwrap()
            .to_rfc3339(),
        "2024-01-02T03:04:05+00:00"
    );
    assert_eq!(
        website_domain(Some(&json!("HTTPS://www.Acme.com/about"))).as_deref(),
        Some("acme.com")
    );
    assert_eq!(
        website_domain(Some(&json!("acme.io"))).as_deref(),
        Some("acme.io")
    );
    let t = |s: &str| (SPEC.parse_params)(&toml::from_str(s).unwrap());
    assert!(t("crm_id_field = \"Id\"\nextra_fields = { accounts = [\"Health__c\"] }").is_ok());
    assert!(t("api_version = \"62\"").unwrap_err().contains("v62.0"));
    assert!(t("extra_fields = { leads = [\"x\"] }")
        .unwrap_err()
        .contains("no such stream"));
    assert!(t("extra_fields = { cases = [\"a b\"] }")
        .unwrap_err()
        .contains("not a Salesforce field"));
    assert!(t("max_api_usage_percent = 0").is_err());
    let forbidden = classify(
        StatusCode::FORBIDDEN,
        &h,
        br#"[{"message":"no","errorCode":"INSUFFICIENT_ACCESS"}]"#,
        Utc::now(),
    );
    assert_eq!(forbidden, None, "other 403s stay credential errors");
}
