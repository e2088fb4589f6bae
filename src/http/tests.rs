//! Engine tests against wiremock: auth on every request, retry classes and waits, path joining, redaction.
//! Waits go through a `ManualClock`, so nothing sleeps in real time.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::testing::{bearer_client, config, secrets};
use super::*;
use crate::vocab::Role;

#[tokio::test]
async fn auth_header_on_every_request_for_each_scheme() {
    let server = MockServer::start().await;
    // "user:pass" and "key:" in base64.
    Mock::given(path("/bearer"))
        .and(header("authorization", "Bearer tok_b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": 1})))
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(path("/basic"))
        .and(header("authorization", "Basic dXNlcjpwYXNz"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": 1})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/basic-key"))
        .and(header("authorization", "Basic a2V5Og=="))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": 1})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/header"))
        .and(header("accessKey", "ak_1"))
        .and(header(
            "user-agent",
            concat!("healthsync/", env!("CARGO_PKG_VERSION")),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": 1})))
        .expect(2)
        .mount(&server)
        .await;

    let mut c = config("t", Role::Source, &server.uri(), AuthScheme::Bearer);
    let s = secrets(&mut c, &[("token", "tok_b")]);
    let bearer = HttpClient::new(&c, &s).unwrap();
    for _ in 0..3 {
        assert_eq!(
            bearer.get_json("/bearer", &[]).await.unwrap(),
            json!({"ok": 1})
        );
    }

    let mut c = config("t", Role::Sink, &server.uri(), AuthScheme::Basic);
    let s = secrets(&mut c, &[("username", "user"), ("password", "pass")]);
    let basic = HttpClient::new(&c, &s).unwrap();
    basic.get_json("/basic", &[]).await.unwrap();
    basic
        .send_json(Method::PUT, "/basic", &json!({}))
        .await
        .unwrap();

    let mut c = config("t", Role::Sink, &server.uri(), AuthScheme::Basic);
    let s = secrets(&mut c, &[("username", "key")]);
    let key_only = HttpClient::new(&c, &s).unwrap();
    key_only.get_json("/basic-key", &[]).await.unwrap();
    key_only
        .send_json(Method::POST, "/basic-key", &json!({"a": 1}))
        .await
        .unwrap();

    let mut c = config("t", Role::Sink, &server.uri(), AuthScheme::ApiKeyHeader);
    c.auth.header = Some("accessKey".into());
    let s = secrets(&mut c, &[("token", "ak_1")]);
    let hdr = HttpClient::new(&c, &s).unwrap();
    hdr.get_json("/header", &[]).await.unwrap();
    hdr.get_json("/header", &[]).await.unwrap();
}

#[tokio::test]
async fn api_key_query_sends_the_key_as_a_parameter_and_never_in_errors() {
    let server = MockServer::start().await;
    Mock::given(path("/i"))
        .and(wiremock::matchers::query_param("appKey", "ak_query_secret"))
        .and(wiremock::matchers::query_param("action", "setAttribute"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad"))
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config("t", Role::Sink, &server.uri(), AuthScheme::ApiKeyQuery);
    c.auth.param = Some("appKey".into());
    let s = secrets(&mut c, &[("token", "ak_query_secret")]);
    let client = HttpClient::new(&c, &s).unwrap();
    let err = client
        .get_json("/i", &[("action", "setAttribute".to_string())])
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?} {client:?}");
    assert!(shown.contains("http 400"), "{shown}");
    assert!(!shown.contains("ak_query_secret"), "{shown}");
}

#[tokio::test]
async fn missing_secret_fails_the_build_without_values() {
    let mut c = config("t", Role::Source, "http://127.0.0.1:9", AuthScheme::Bearer);
    let s = secrets(&mut c, &[]);
    let err = HttpClient::new(&c, &s).unwrap_err().to_string();
    assert_eq!(
        err,
        "connector test_t: auth scheme bearer needs secret `token`"
    );
}

#[tokio::test]
async fn rate_limited_with_retry_after_seconds_then_success() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([1])))
        .mount(&server)
        .await;
    let (client, clock) = bearer_client(&server.uri());
    assert_eq!(client.get_json("/x", &[]).await.unwrap(), json!([1]));
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(3); 2]);
}

#[tokio::test]
async fn rate_limited_with_retry_after_http_date_then_success() {
    let server = MockServer::start().await;
    // The manual clock reads 2026-11-23T12:00:00Z.
    Mock::given(path("/x"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "Mon, 23 Nov 2026 12:00:20 GMT"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let (client, clock) = bearer_client(&server.uri());
    client.get_json("/x", &[]).await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(20)]);
}

#[tokio::test]
async fn server_errors_burst_then_success_with_backoff() {
    let server = MockServer::start().await;
    for status in [500, 502, 503, 408] {
        Mock::given(path("/x"))
            .respond_with(ResponseTemplate::new(status))
            .up_to_n_times(1)
            .mount(&server)
            .await;
    }
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"n": 5})))
        .mount(&server)
        .await;
    let (client, clock) = bearer_client(&server.uri());
    assert_eq!(client.get_json("/x", &[]).await.unwrap(), json!({"n": 5}));
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 4);
    // Full jitter under ceilings of 0.5 s, 1 s, 2 s, 4 s.
    for (i, s) in sleeps.iter().enumerate() {
        assert!(
            *s <= Duration::from_millis(500) * 2u32.pow(i as u32),
            "{sleeps:?}"
        );
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 5);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"message": "bad filter"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/auth"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let (client, clock) = bearer_client(&server.uri());
    let err = client
        .get_json("/x", &[("key", "s3cr3t".into())])
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::Permanent { status, .. } if status == 400),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert_eq!(
        msg,
        r#"connector test_test: GET /x: http 400: {"message":"bad filter"}"#
    );
    let err = client.get_json("/auth", &[]).await.unwrap_err();
    assert!(matches!(err, HttpError::Auth { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "connector test_test: GET /auth: credentials refused (http 401)"
    );
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn exhausted_retries_keep_the_last_class() {
    let server = MockServer::start().await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503).set_body_string("maintenance"))
        .expect(6)
        .mount(&server)
        .await;
    Mock::given(path("/busy"))
        .respond_with(ResponseTemplate::new(429))
        .expect(6)
        .mount(&server)
        .await;
    let (client, _clock) = bearer_client(&server.uri());
    let err = client.get_json("/down", &[]).await.unwrap_err();
    assert!(
        matches!(err, HttpError::Transient { status: Some(s), .. } if s == 503),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "connector test_test: GET /down: http 503: maintenance"
    );
    let err = client.get_json("/busy", &[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            HttpError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn retry_after_beyond_the_wait_budget_returns_at_once() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let (client, clock) = bearer_client(&server.uri());
    let err = client.get_json("/x", &[]).await.unwrap_err();
    assert!(
        matches!(err, HttpError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3600)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "connector test_test: GET /x: rate limited (retry after 3600s)"
    );
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn classifier_hook_overrides_the_default() {
    fn stop_on_quota(
        status: StatusCode,
        _: &HeaderMap,
        body: &[u8],
        _: chrono::DateTime<chrono::Utc>,
    ) -> Option<Classified> {
        (status == StatusCode::TOO_MANY_REQUESTS && body.starts_with(b"daily")).then(|| {
            Classified::QuotaExhausted {
                reason: "daily".into(),
            }
        })
    }
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(429).set_body_string("daily"))
        .expect(1)
        .mount(&server)
        .await;
    let (client, _) = bearer_client(&server.uri());
    let client = client.with_classifier(stop_on_quota);
    let err = client.get_json("/x", &[]).await.unwrap_err();
    assert!(matches!(err, HttpError::QuotaExhausted { .. }), "{err:?}");
}

#[tokio::test]
async fn bad_json_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(&server)
        .await;
    let (client, _) = bearer_client(&server.uri());
    let err = client.get_json("/x", &[]).await.unwrap_err();
    assert!(matches!(err, HttpError::Decode { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("connector test_test: GET /x: expected a json body: "),
        "{err}"
    );
}

#[tokio::test]
async fn accepted_statuses_come_back_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tasks"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"error": "duplicate"})))
        .expect(1)
        .mount(&server)
        .await;
    let (client, _) = bearer_client(&server.uri());
    let body = json!({"name": "t"});
    let call = Call {
        body: Some(&body),
        accept: &[StatusCode::CONFLICT],
        ..Call::new(&Method::POST, "/tasks")
    };
    let r = client.execute(call).await.unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body, json!({"error": "duplicate"}));
}

#[tokio::test]
async fn debug_shows_no_secret() {
    let mut c = config("t", Role::Sink, "http://127.0.0.1:9", AuthScheme::Basic);
    let s = secrets(
        &mut c,
        &[("username", "user_s3cret"), ("password", "pw_s3cret")],
    );
    let client = HttpClient::new(&c, &s).unwrap();
    let dbg = format!("{client:?} {s:?}");
    assert!(!dbg.contains("s3cret"), "{dbg}");
    assert!(dbg.contains("basic"), "{dbg}");
}

#[tokio::test]
async fn paths_join_under_a_base_url_prefix() {
    let server = MockServer::start().await;
    Mock::given(path("/hubspot/crm/v3/objects/companies"))
        .and(query_param("limit", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .expect(2)
        .mount(&server)
        .await;
    for base in [
        format!("{}/hubspot", server.uri()),
        format!("{}/hubspot/", server.uri()),
    ] {
        let (client, _) = bearer_client(&base);
        assert_eq!(
            client.url("/crm/v3/objects/companies").as_str(),
            format!("{}/hubspot/crm/v3/objects/companies", server.uri())
        );
        client
            .get_json("/crm/v3/objects/companies", &[("limit", "100".into())])
            .await
            .unwrap();
    }
    let (client, _) = bearer_client("http://127.0.0.1:9");
    assert_eq!(
        client.url("v1/x?a=b").as_str(),
        "http://127.0.0.1:9/v1/x?a=b"
    );
    assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
}

#[tokio::test]
async fn connection_failure_is_transient_and_names_no_query() {
    // Port 9 (discard) is closed on loopback in the test environment.
    let (client, clock) = bearer_client("http://127.0.0.1:9");
    let client = client.with_retry_policy(RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    });
    let err = client
        .get_json("/v1/x", &[("api_key", "s3cret".into())])
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::Transient { status: None, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(!msg.contains("s3cret") && !msg.contains("api_key"), "{msg}");
    assert_eq!(clock.sleeps().len(), 1);
}

/// What a scripted raw-TCP server does with each connection it accepts, in order.
#[derive(Clone, Copy)]
enum OnAccept {
    /// Reads the request and never answers (the socket stays open until the test ends).
    Hang,
    /// Reads the request and closes with an RST (linger 0): a connection reset.
    Reset,
    /// Answers 200 with a small JSON body.
    Answer,
}

/// A loopback server following `script` (the last entry repeats); returns its URL and the accept count.
async fn scripted_server(script: Vec<OnAccept>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            match script[n.min(script.len() - 1)] {
                OnAccept::Hang => held.push(sock),
                OnAccept::Reset => {
                    // Deprecated because a nonzero linger blocks on drop; a zero linger closes at once with
                    // an RST, which is the point.
                    #[allow(deprecated)]
                    let _ = sock.set_linger(Some(Duration::ZERO));
                    drop(sock);
                }
                OnAccept::Answer => {
                    let body = r#"{"n": 1}"#;
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                }
            }
        }
    });
    (url, accepted)
}

/// A client for a scripted server with a 50 ms request timeout and a manual clock for the retry waits.
fn short_timeout_client(url: &str) -> (HttpClient, Arc<ManualClock>) {
    let mut c = config("t", Role::Source, url, AuthScheme::Bearer);
    c.timeout = Duration::from_millis(50);
    let s = secrets(&mut c, &[("token", "tok_t")]);
    let clock = super::testing::manual_clock();
    let client = HttpClient::new(&c, &s).unwrap().with_clock(clock.clone());
    (client, clock)
}

#[tokio::test]
async fn a_timeout_is_retried_then_succeeds() {
    // reqwest's timeout runs on real time, so it cannot be paused. It is bounded instead: the server never
    // answers the first connection, so the attempt ends exactly when the 50 ms timeout fires, and the
    // backoff before the retry goes through the manual clock (recorded, not slept).
    let (url, accepted) = scripted_server(vec![OnAccept::Hang, OnAccept::Answer]).await;
    let (client, clock) = short_timeout_client(&url);
    assert_eq!(client.get_json("/x", &[]).await.unwrap(), json!({"n": 1}));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(clock.sleeps().len(), 1, "one backoff before the retry");
}

#[tokio::test]
async fn timeouts_until_the_attempts_run_out_are_a_transient_error() {
    let (url, accepted) = scripted_server(vec![OnAccept::Hang]).await;
    let (client, clock) = short_timeout_client(&url);
    let client = client.with_retry_policy(RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    });
    let err = client.get_json("/x", &[]).await.unwrap_err();
    match &err {
        HttpError::Transient {
            status: None,
            reason,
            ..
        } => assert_eq!(reason, "timed out"),
        other => panic!("expected a transient timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("GET /x"), "{err}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(clock.sleeps().len(), 2);
}

#[tokio::test]
async fn a_connection_reset_is_retried_then_succeeds() {
    let (url, accepted) =
        scripted_server(vec![OnAccept::Reset, OnAccept::Reset, OnAccept::Answer]).await;
    let (client, clock) = short_timeout_client(&url);
    let client = client.with_retry_policy(RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    });
    assert_eq!(client.get_json("/x", &[]).await.unwrap(), json!({"n": 1}));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(clock.sleeps().len(), 2);
}

#[tokio::test]
async fn a_connection_reset_on_every_attempt_is_a_transient_error() {
    let (url, _) = scripted_server(vec![OnAccept::Reset]).await;
    let (client, _) = short_timeout_client(&url);
    let client = client.with_retry_policy(RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    });
    let err = client.get_json("/x", &[]).await.unwrap_err();
    assert!(
        matches!(err, HttpError::Transient { status: None, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_vendor_reported_quota_paces_a_client_configured_too_high() {
    // The client is configured for 10,000/s; the vendor reports 2 per 10 s. After the first response the
    // third request waits for the first to leave the vendor's window (10 s plus the 2% margin).
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-test-max", "2")
                .set_body_json(json!({})),
        )
        .mount(&server)
        .await;
    fn read(h: &reqwest::header::HeaderMap) -> Option<WindowQuota> {
        let max = h.get("x-test-max")?.to_str().ok()?.parse().ok()?;
        Some(WindowQuota {
            requests: max,
            window: Duration::from_secs(10),
        })
    }
    let (client, clock) = bearer_client(&server.uri());
    let client = client.with_quota_reader(read);
    for _ in 0..3 {
        client.get_json("/x", &[]).await.unwrap();
    }
    assert_eq!(clock.sleeps(), vec![Duration::from_millis(10_200)]);
}

#[tokio::test]
async fn a_spent_quota_that_refills_beyond_the_wait_budget_is_rate_limited_at_once() {
    // 2 requests per hour: the third would wait an hour (plus the margin), far beyond the retry budget, so
    // it fails at once without a request and without sleeping, instead of hanging the run.
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(2)
        .mount(&server)
        .await;
    let mut c = config("t", Role::Source, &server.uri(), AuthScheme::Bearer);
    c.rate_limit = RateLimit::per_secs(2, 3600);
    let s = secrets(&mut c, &[("token", "tok_t")]);
    let clock = super::testing::manual_clock();
    let client = HttpClient::new(&c, &s).unwrap().with_clock(clock.clone());
    client.get_json("/x", &[]).await.unwrap();
    client.get_json("/x", &[]).await.unwrap();
    let err = client.get_json("/x", &[]).await.unwrap_err();
    match err {
        HttpError::RateLimited {
            retry_after: Some(wait),
            ..
        } => assert!(wait > Duration::from_secs(3600), "{wait:?}"),
        other => panic!("expected rate limited, got {other:?}"),
    }
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn the_rate_limiter_waits_on_the_injected_clock() {
    // 2 requests per 10 s: governor spaces them 5 s apart after the burst of 2. Under a manual clock the
    // third request must wait exactly once for governor (5 s of manual time), not spin through many
    // instant sleeps while governor's real clock catches up; the rolling window then holds it until the
    // first send leaves its 10 s window (plus the 2% margin).
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(3)
        .mount(&server)
        .await;
    let mut c = config("t", Role::Source, &server.uri(), AuthScheme::Bearer);
    c.rate_limit = RateLimit::per_secs(2, 10);
    let s = secrets(&mut c, &[("token", "tok_t")]);
    let clock = super::testing::manual_clock();
    let client = HttpClient::new(&c, &s).unwrap().with_clock(clock.clone());
    for _ in 0..3 {
        client.get_json("/x", &[]).await.unwrap();
    }
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(5), Duration::from_millis(5_200)]
    );
}

#[tokio::test]
async fn credentials_a_vendor_echoes_in_a_refusal_are_redacted_everywhere_it_could_go() {
    // Issue 25, case 4: vendors quoting the request back in a 400 put the token, the Basic user and
    // password and the base64 Basic string into errors, `once` output, `status` and the store.
    let server = MockServer::start().await;
    let basic = "dXNlci1zZWNyZXQtMTIzOnBhc3Mtc2VjcmV0LTQ1Ng=="; // base64("user-secret-123:pass-secret-456")
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": "bad request",
            "echo": {"user": "user-secret-123", "password": "pass-secret-456",
                     "authorization": format!("Basic {basic}")}})))
        .mount(&server)
        .await;
    Mock::given(path("/accepted"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_string("refused for key user-secret-123, try again"),
        )
        .mount(&server)
        .await;
    let mut c = config("t", Role::Source, &server.uri(), AuthScheme::Basic);
    let s = secrets(
        &mut c,
        &[
            ("username", "user-secret-123"),
            ("password", "pass-secret-456"),
        ],
    );
    let client = HttpClient::new(&c, &s).unwrap();
    let err = client.get_json("/x", &[]).await.unwrap_err().to_string();
    for secret in ["user-secret-123", "pass-secret-456", basic] {
        assert!(!err.contains(secret), "{secret} in {err}");
    }
    assert!(err.contains("[redacted]"), "{err}");
    // A status the kind accepts hands it the body, redacted the same way.
    let call = Call {
        accept: &[StatusCode::UNPROCESSABLE_ENTITY],
        ..Call::new(&Method::GET, "/accepted")
    };
    let r = client.execute(call).await.unwrap();
    assert_eq!(r.body, json!("refused for key [redacted], try again"));
}

#[test]
fn redaction_leaves_short_values_and_other_text_alone() {
    let body = br#"{"error":"X is not a key; token abcdef123 refused; abcdef123"}"#;
    let out = redact(body, &["X".into(), "abcdef123".into()]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"error":"X is not a key; token [redacted] refused; [redacted]"}"#
    );
}

#[tokio::test]
async fn a_create_that_may_have_landed_is_not_resent_but_a_throttled_one_is() {
    // Issue 25, case 7: a POST that reached the platform but whose answer was lost was re-sent by the
    // engine without a lookup; 20 of 85 projects were POSTed twice.
    let server = MockServer::start().await;
    Mock::given(path("/create"))
        .respond_with(ResponseTemplate::new(502))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/throttled"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/throttled"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "p-1"})))
        .expect(1)
        .mount(&server)
        .await;
    let (client, clock) = bearer_client(&server.uri());
    let body = json!({"name": "Poor Health"});
    let create = |p: &'static str| Call {
        body: Some(&body),
        creates: true,
        ..Call::new(&Method::POST, p)
    };
    let err = client.execute(create("/create")).await.unwrap_err();
    assert!(matches!(err, HttpError::Transient { .. }), "{err:?}");
    assert!(clock.sleeps().is_empty(), "no retry was waited for");
    let r = client.execute(create("/throttled")).await.unwrap();
    assert_eq!(r.body["id"], "p-1");
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(1)]);
}
