//! Tests of the `mixpanel` kind against wiremock serving the raw export's JSON lines. Shared setup:
//! [`Fixture`] (server, Basic-auth source, manual clock at 2026-11-23T12:00Z) and the event/day builders.

use std::sync::Arc;

use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::connector::kinds::testkit::drain;
use crate::http::testing::{
    assert_every_request_carries, config, manual_clock, secrets, Fault, FaultProxy, FAULT_TIMEOUT,
};
use crate::http::{HttpError, ManualClock};
use crate::vocab::Role;

/// `Authorization` for project secret `mp_secret_test` with an empty password.
const BASIC: &str = "Basic bXBfc2VjcmV0X3Rlc3Q6";

struct Fixture {
    server: MockServer,
    src: Mixpanel,
    clock: Arc<ManualClock>,
    proxy: Option<FaultProxy>,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_faults(&[]).await
    }

    /// A fixture whose source reaches the server through a [`FaultProxy`] injecting `faults`, with a 50 ms
    /// request timeout (real time: reqwest's timeout cannot be paused), when `faults` is not empty.
    async fn with_faults(faults: &[(usize, Fault)]) -> Fixture {
        let server = MockServer::start().await;
        let proxy = match faults {
            [] => None,
            _ => Some(FaultProxy::start(&server.uri(), faults).await),
        };
        let url = proxy.as_ref().map_or(server.uri(), |p| p.url().to_string());
        let mut cfg = config(
            "mixpanel",
            Role::Source,
            &format!("{url}/api/2.0"),
            AuthScheme::Basic,
        );
        if proxy.is_some() {
            cfg.timeout = FAULT_TIMEOUT;
        }
        let s = secrets(&mut cfg, &[("username", "mp_secret_test")]);
        let clock = manual_clock();
        let http = HttpClient::new(&cfg, &s)
            .unwrap()
            .with_classifier(classify)
            .with_clock(clock.clone());
        let params =
            parse_params(&toml::from_str("project_id = 42\nbackfill_days = 3").unwrap()).unwrap();
        let src = Mixpanel {
            http,
            streams: vec!["daily_activity".into()],
            params,
        };
        Fixture {
            server,
            src,
            clock,
            proxy,
        }
    }

    /// The export of `date` answers `lines` (joined with newlines).
    async fn day(&self, date: &str, lines: &[String]) {
        Mock::given(method("GET"))
            .and(path("/api/2.0/export"))
            .and(header("authorization", BASIC))
            .and(query_param("from_date", date))
            .and(query_param("to_date", date))
            .and(query_param("project_id", "42"))
            .respond_with(ResponseTemplate::new(200).set_body_string(lines.join("\n") + "\n"))
            .mount(&self.server)
            .await;
    }

    async fn requested_dates(&self) -> Vec<String> {
        let reqs = self.server.received_requests().await.unwrap();
        reqs.iter()
            .filter_map(|r| {
                r.url
                    .query_pairs()
                    .find(|(k, _)| k == "from_date")
                    .map(|(_, v)| v.to_string())
            })
            .collect()
    }
}

/// One exported event, as a JSON line.
fn event(name: &str, time: i64, user: &str, company: Value) -> String {
    json!({"event": name, "properties": {
        "time": time, "distinct_id": user, "$insert_id": format!("{user}-{time}"),
        "mp_processing_time_ms": time * 1000 + 5, "company_domain": company,
    }})
    .to_string()
}

/// 2026-11-20T00:00:00Z.
const D20: i64 = 1_795_132_800;

async fn four_days(f: &Fixture) {
    f.day(
        "2026-11-20",
        &[
            event("Login", D20 + 60, "u1", json!("Acme.com")),
            event("Report Run", D20 + 120, "u1", json!("acme.com")),
            event("Login", D20 + 180, "u2", json!(["acme.com", "beta.io"])),
            "{\"event\": \"Login\", \"properties\": {".to_string(),
            json!({"event": "Login", "properties": {"time": D20 + 200, "distinct_id": "u9"}})
                .to_string(),
        ],
    )
    .await;
    f.day(
        "2026-11-21",
        &[event("Login", D20 + 86_400 + 10, "u3", json!("beta.io"))],
    )
    .await;
    f.day("2026-11-22", &[]).await;
    f.day(
        "2026-11-23",
        &[event(
            "Login",
            D20 + 3 * 86_400 + 10,
            "u1",
            json!("acme.com"),
        )],
    )
    .await;
}

#[tokio::test]
async fn a_day_per_page_rolled_up_per_account_with_rejections() {
    let f = Fixture::new().await;
    four_days(&f).await;
    let d = drain(&f.src, "daily_activity", None).await.unwrap();
    assert_eq!(d.pages, 4);
    assert_eq!(
        d.ids(),
        [
            "acme.com:2026-11-20",
            "beta.io:2026-11-20",
            "beta.io:2026-11-21",
            "acme.com:2026-11-23"
        ]
    );
    let acme = &d.records[0];
    assert_eq!(acme.account_keys["domain"], "acme.com");
    assert_eq!(acme.fields["events"], 3);
    assert_eq!(acme.fields["active_users"], 2);
    assert_eq!(acme.fields["features_used"], 2);
    assert_eq!(
        acme.fields["event_counts"],
        json!({"Login": 2, "Report Run": 1})
    );
    assert_eq!(acme.fields["first_event_at"], "2026-11-20T00:01:00+00:00");
    assert_eq!(
        d.records[1].fields["events"], 1,
        "a list-valued group key counts for each account"
    );
    let reasons: Vec<String> = d
        .rejected
        .iter()
        .map(|r| format!("{:?}: {}", r.id, r.reason))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("2026-11-20 line 4") && reasons[0].contains("not a json event"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("1 event(s) on 2026-11-20 carry no `company_domain`"),
        "{reasons:?}"
    );
    assert_eq!(
        f.requested_dates().await,
        ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
    );
}

#[tokio::test]
async fn the_next_run_re_reads_the_late_days_only() {
    let f = Fixture::new().await;
    four_days(&f).await;
    let first = drain(&f.src, "daily_activity", None).await.unwrap();
    f.server.reset().await;
    four_days(&f).await;
    let second = drain(&f.src, "daily_activity", Some(first.cursor))
        .await
        .unwrap();
    assert_eq!(
        f.requested_dates().await,
        ["2026-11-21", "2026-11-22", "2026-11-23"]
    );
    assert_eq!(second.ids(), ["beta.io:2026-11-21", "acme.com:2026-11-23"]);
}

#[tokio::test]
async fn resumes_at_the_next_day_and_a_future_cursor_asks_nothing() {
    let f = Fixture::new().await;
    four_days(&f).await;
    let p1 = f.src.fetch_page("daily_activity", None).await.unwrap();
    f.server.reset().await;
    four_days(&f).await;
    let rest = drain(&f.src, "daily_activity", Some(p1.cursor))
        .await
        .unwrap();
    assert_eq!(rest.pages, 3);
    assert_eq!(
        f.requested_dates().await,
        ["2026-11-21", "2026-11-22", "2026-11-23"]
    );

    let g = Fixture::new().await;
    let future =
        Cursor(json!({"hwm": {"updated_at": "2099-01-01T00:00:00Z", "id": "x:2099-01-01"}}));
    let none = drain(&g.src, "daily_activity", Some(future)).await.unwrap();
    assert_eq!((none.records.len(), none.pages), (0, 1));
    assert!(g.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn quiet_days_still_move_the_next_start() {
    let f = Fixture::new().await;
    for d in ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"] {
        f.day(d, &[]).await;
    }
    let d = drain(&f.src, "daily_activity", None).await.unwrap();
    assert_eq!((d.records.len(), d.pages), (0, 4));
    let hwm = d.state().hwm.unwrap();
    assert_eq!(hwm.updated_at.to_rfc3339(), "2026-11-23T00:00:00+00:00");
}

#[tokio::test]
async fn a_429_waits_a_minute_and_a_5xx_burst_backs_off() {
    let f = Fixture::new().await;
    Mock::given(path("/api/2.0/export"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(json!({"error": "rate limit exceeded", "status": "error"})),
        )
        .up_to_n_times(1)
        .mount(&f.server)
        .await;
    Mock::given(path("/api/2.0/export"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .mount(&f.server)
        .await;
    f.day(
        "2026-11-20",
        &[event("Login", D20 + 1, "u1", json!("acme.com"))],
    )
    .await;
    let p = f.src.fetch_page("daily_activity", None).await.unwrap();
    assert_eq!(p.records.len(), 1);
    let sleeps = f.clock.sleeps();
    assert_eq!(sleeps.len(), 3);
    assert_eq!(sleeps[0], NO_RETRY_AFTER_WAIT);
}

#[tokio::test]
async fn a_timeout_and_a_reset_midway_are_retried_and_every_request_carries_the_secret() {
    // Requests 2 and 3 are the first two attempts at 2026-11-21's export.
    let f = Fixture::with_faults(&[(2, Fault::Hang), (3, Fault::Reset)]).await;
    four_days(&f).await;
    let d = drain(&f.src, "daily_activity", None).await.unwrap();
    assert_eq!(d.ids().len(), 4);
    assert_eq!(d.records[2].id, "beta.io:2026-11-21");
    assert_eq!(f.proxy.as_ref().map(FaultProxy::requests), Some(6));
    assert_eq!(f.clock.sleeps().len(), 2, "one backoff per failed attempt");
    assert_eq!(
        assert_every_request_carries(&f.server, "/", "authorization", BASIC).await,
        4,
        "the faulted attempts never reached the server"
    );
}

#[tokio::test]
async fn an_export_cut_off_midway_is_requested_again_and_counted_once() {
    // The first answer is cut after 4,000 bytes: its headers and a part of the ~15 KB of lines.
    let f = Fixture::with_faults(&[(1, Fault::CutAfter(4_000))]).await;
    let lines: Vec<String> = (0..100)
        .map(|i| event("Login", D20 + i, &format!("u{i}"), json!("acme.com")))
        .collect();
    f.day("2026-11-20", &lines).await;
    let p = f.src.fetch_page("daily_activity", None).await.unwrap();
    assert_eq!(p.records.len(), 1);
    let acme = &p.records[0];
    assert_eq!(
        (
            acme.fields["events"].clone(),
            acme.fields["active_users"].clone()
        ),
        (json!(100), json!(100)),
        "the lines read before the cut are not counted twice"
    );
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    assert_eq!(f.requested_dates().await, ["2026-11-20", "2026-11-20"]);
    assert_eq!(f.clock.sleeps().len(), 1);
}

#[tokio::test]
async fn an_export_cut_off_on_every_attempt_fails_the_day() {
    let cuts: Vec<(usize, Fault)> = (1..=10).map(|n| (n, Fault::CutAfter(4_000))).collect();
    let f = Fixture::with_faults(&cuts).await;
    let lines: Vec<String> = (0..100)
        .map(|i| event("Login", D20 + i, &format!("u{i}"), json!("acme.com")))
        .collect();
    f.day("2026-11-20", &lines).await;
    let err = f.src.fetch_page("daily_activity", None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::Http(HttpError::Transient { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("/api/2.0/export"), "{err}");
    // The default policy's six attempts; its backoffs (at most 15.5 s) stay inside its 120 s budget.
    let policy = crate::http::RetryPolicy::default();
    assert_eq!(
        f.requested_dates().await.len(),
        policy.max_attempts as usize
    );
    assert_eq!(f.clock.sleeps().len(), policy.max_attempts as usize - 1);
}

#[tokio::test]
async fn refused_credentials_name_no_secret() {
    let f = Fixture::new().await;
    Mock::given(path("/api/2.0/export"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "Invalid username or secret", "status": "error"})),
        )
        .expect(1)
        .mount(&f.server)
        .await;
    let err = f.src.fetch_page("daily_activity", None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::Http(HttpError::Auth { .. })),
        "{err:?}"
    );
    let text = format!("{err} {err:?} {:?}", f.src.http);
    assert!(
        text.contains("/api/2.0/export") && !text.contains("mp_secret_test"),
        "{text}"
    );
}

#[test]
fn params_are_validated() {
    let t = |s: &str| (SPEC.parse_params)(&toml::from_str(s).unwrap());
    assert!(
        t("account_property = \"company_id\"\naccount_key = \"crm_id\"\nevents = [\"Login\"]")
            .is_ok()
    );
    assert!(t("backfill_days = 0").unwrap_err().contains("1 to 365"));
    assert!(t("project_id = \"42\"")
        .unwrap_err()
        .contains("positive integer"));
    assert!(t("window = 1").unwrap_err().contains("unknown key"));
}

/// The typed line decoder reads the same four fields a full `Value` would, whatever the line's shape.
#[test]
fn export_lines_decode_like_a_full_value() {
    let full = |line: &str, property: &str| {
        let v: Value = serde_json::from_slice(line.as_bytes()).unwrap();
        let props = v.get("properties");
        let prop = |k: &str| props.and_then(|p| p.get(k)).cloned();
        ExportEvent {
            name: v.get("event").cloned(),
            time: prop("time"),
            user: prop("distinct_id"),
            account: prop(property),
        }
    };
    let lines = [
        r#"{"event":"login","properties":{"time":1700000000,"distinct_id":"u1","company_domain":"Acme.io","$insert_id":"x","nested":{"a":[1,2,{"b":null}]}}}"#,
        r#"{"properties":{"company_domain":["a.io","b.io"],"time":1.5},"event":"x","extra":[{"event":"not me"}]}"#,
        r#"{"event":"esc\"aped","properties":{"compa\u006ey_domain":"c.io","time":"1700000000"}}"#,
        r#"{"event":"twice","properties":{"time":1},"properties":{"distinct_id":7}}"#,
        r#"{"event":"login","properties":"not an object"}"#,
        r#"{"event":"login"}"#,
        r#"["not", "an", "event"]"#,
        r#"42"#,
    ];
    for line in lines {
        for property in ["company_domain", "distinct_id"] {
            assert_eq!(
                ExportEvent::decode(line.as_bytes(), property).unwrap(),
                full(line, property),
                "{line} with account property {property}"
            );
        }
    }
    assert!(ExportEvent::decode(b"{\"event\": ", "company_domain").is_err());
    assert!(ExportEvent::decode(b"{\"event\":\"a\"} trailing", "company_domain").is_err());
}

#[tokio::test]
async fn a_200_that_is_not_an_export_fails_the_day_instead_of_skipping_it() {
    // Issue 25, case 2: an HTML page or broken JSON behind a 200 counted as one rejected line, the
    // cursor moved past the day and later runs (2 days back) never read it again.
    for body in [
        "<html><body>Service temporarily unavailable</body></html>\n",
        "{\"event\": \"Login\", \"properties\": {\"time\": 1795\n",
    ] {
        let f = Fixture::new().await;
        Mock::given(method("GET"))
            .and(path("/api/2.0/export"))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&f.server)
            .await;
        match f.src.fetch_page("daily_activity", None).await {
            Err(SourceError::Malformed { reason, .. }) => {
                assert!(reason.contains("2026-11-20 holds no readable event"), "{reason}");
            }
            other => panic!("expected the day to fail, got {other:?}"),
        }
    }
    // A day with some unreadable lines among good ones still counts the good ones.
    let f = Fixture::new().await;
    f.day(
        "2026-11-20",
        &[event("Login", D20, "u1", json!("acme.com")), "<html>".into()],
    )
    .await;
    let page = f.src.fetch_page("daily_activity", None).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.rejected.len(), 1);
}
