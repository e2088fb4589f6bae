//! Tests of the `clientsuccess` kind against wiremock answering as ClientSuccess's Open API: the login and
//! its token on every request, re-login on 401, custom field values, to-dos as projects, error
//! classification and no credential in errors or logs.

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::testing::{config, manual_clock, secrets};
use crate::http::ManualClock;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "api-access@acme.example";
const PASSWORD: &str = "cs-password-secret";
const TOKEN: &str = "bc7b4279-9b7f-4a1f-8f46-d72e753cf4f4";

fn sink(server: &MockServer) -> (ClientSuccess, Arc<ManualClock>) {
    let mut cfg = config(
        "clientsuccess",
        Role::Sink,
        &server.uri(),
        AuthScheme::Basic,
    );
    let s = secrets(&mut cfg, &[("username", EMAIL), ("password", PASSWORD)]);
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &s,
    };
    assert!(matches!(build(&ctx), Ok(Built::Sink(_))));
    let clock = manual_clock();
    let http = HttpClient::new(&cfg, &s)
        .unwrap()
        .with_clock(clock.clone())
        .with_login(LOGIN)
        .unwrap();
    (ClientSuccess::new(http, clock.clone()), clock)
}

/// The login endpoint hands out `token` (once unless `times` says more).
async fn mount_login(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/v1/auth"))
        .and(body_json(json!({"username": EMAIL, "password": PASSWORD})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": token, "token_type": "Bearer", "expires_in": 43200}),
        ))
        .up_to_n_times(times)
        .expect(times)
        .mount(server)
        .await;
}

async fn mount_client(server: &MockServer, external_id: &str, id: u64) {
    Mock::given(method("GET"))
        .and(path("/v1/clients"))
        .and(query_param("externalId", external_id))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": id, "name": format!("Company {external_id}"), "externalId": external_id}),
        ))
        .mount(server)
        .await;
}

/// Every request but the login carried the bare token; the login carried no Authorization at all.
async fn assert_token_everywhere(server: &MockServer, token: &str) {
    let requests = server.received_requests().await.unwrap();
    assert!(requests.len() > 1);
    for r in &requests {
        let auth = r.headers.get("authorization").and_then(|v| v.to_str().ok());
        if r.url.path() == "/v1/auth" {
            assert_eq!(auth, None, "the login sends no Authorization header");
        } else {
            assert_eq!(auth, Some(token), "{} {}", r.method, r.url);
        }
        assert!(!r.url.as_str().contains(PASSWORD));
    }
}

#[tokio::test]
async fn one_login_then_the_bare_token_on_every_field_write() {
    let server = MockServer::start().await;
    mount_login(&server, TOKEN, 1).await;
    mount_client(&server, "101", 7001).await;
    mount_client(&server, "102", 7002).await;
    Mock::given(method("PATCH"))
        .and(path("/v1/customfield/value/client/7001"))
        .and(header("authorization", TOKEN))
        .and(body_json(
            json!({"Health Score": 87.5, "Health Band": "green", "Health Top Risk": null}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/v1/customfield/value/client/7002"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let op = set_fields(
        "101",
        &[
            ("Health Score", num(87.5)),
            ("Health Band", text("green")),
            ("Health Top Risk", FieldValue::Null),
        ],
    );
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    let other = set_fields("102", &[("Health Score", num(40.0))]);
    assert_eq!(sink.deliver(&other).await.unwrap(), Delivered::Applied);
    assert_eq!(sink.batch_size(), 1, "no batch endpoint");
    assert_token_everywhere(&server, TOKEN).await;
    // The client id was looked up once per client, not per write.
    let lookups = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/clients")
        .count();
    assert_eq!(lookups, 2);
}

#[tokio::test]
async fn an_expired_token_logs_in_again_once() {
    let server = MockServer::start().await;
    mount_login(&server, "token-1", 1).await;
    mount_login(&server, "token-2", 1).await;
    Mock::given(method("GET"))
        .and(path("/v1/clients"))
        .and(header("authorization", "token-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalidToken"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/clients"))
        .and(header("authorization", "token-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 7001})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "token-2"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let op = set_fields("101", &[("Health Score", num(1.0))]);
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    assert!(clock.sleeps().is_empty(), "a re-login is not a backoff");
}

#[tokio::test]
async fn the_token_is_renewed_before_it_expires() {
    let server = MockServer::start().await;
    mount_login(&server, "token-1", 1).await;
    mount_login(&server, "token-2", 1).await;
    mount_client(&server, "101", 7001).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let op = set_fields("101", &[("Health Score", num(1.0))]);
    sink.deliver(&op).await.unwrap();
    // 12 h minus 30 s: inside the renewal margin.
    clock
        .sleep(std::time::Duration::from_secs(43_200 - 30))
        .await;
    sink.deliver(&op).await.unwrap();
    let last = server.received_requests().await.unwrap();
    let auth = last
        .last()
        .and_then(|r| r.headers.get("authorization"))
        .and_then(|v| v.to_str().ok());
    assert_eq!(auth, Some("token-2"));
}

#[tokio::test]
async fn unknown_clients_are_rejected_and_bad_fields_are_invalid() {
    let server = MockServer::start().await;
    mount_login(&server, TOKEN, 1).await;
    Mock::given(method("GET"))
        .and(path("/v1/clients"))
        .and(query_param("externalId", "999"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"userMessage": "Client not found"})),
        )
        .mount(&server)
        .await;
    mount_client(&server, "101", 7001).await;
    Mock::given(method("PATCH"))
        .and(path("/v1/customfield/value/client/7001"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"userMessage": "Unknown custom field: Helth Score"})),
        )
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let e = sink
        .deliver(&set_fields("999", &[("Health Score", num(1.0))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Rejected(m) if m.contains("no client has this external id") && m.contains("999")),
        "{e:?}"
    );
    let e = sink
        .deliver(&set_fields("101", &[("Helth Score", num(1.0))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Invalid(m) if m.contains("Unknown custom field: Helth Score")),
        "{e:?}"
    );
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_then_transient() {
    let server = MockServer::start().await;
    mount_login(&server, TOKEN, 1).await;
    Mock::given(method("GET"))
        .and(path("/v1/clients"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/clients"))
        .respond_with(ResponseTemplate::new(503).set_body_string("System Maintenance"))
        .expect(4)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let e = sink
        .deliver(&set_fields("101", &[("Health Score", num(1.0))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Transient(m) if m.contains("http 503")),
        "{e:?}"
    );
    let sleeps = clock.sleeps();
    assert_eq!(&sleeps[..2], &[std::time::Duration::from_secs(3); 2]);
}

#[tokio::test]
async fn projects_become_keyed_to_dos_created_once_and_completed_on_recovery() {
    let server = MockServer::start().await;
    mount_login(&server, TOKEN, 1).await;
    mount_client(&server, "101", 7001).await;
    // The first task was created before a crash; only the second is created now.
    let first =
        json!({"id": 55, "name": format!("Call champion [{KEY}/task-1]"), "completed": false});
    Mock::given(method("GET"))
        .and(path("/v1/clients/7001/to-dos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([first])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/clients/7001/to-dos"))
        .and(body_json(json!({
            "name": format!("Exec sponsor [{KEY}/task-2]"),
            "description": "Poor Health: usage: Escalate",
            "dueDate": "2026-11-23",
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 56})))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    assert_eq!(
        sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
    // Now both exist: a resend creates nothing.
    let second =
        json!({"id": 56, "name": format!("Exec sponsor [{KEY}/task-2]"), "completed": false});
    let other = json!({"id": 9, "name": "Quarterly review", "completed": false});
    Mock::given(method("GET"))
        .and(path("/v1/clients/7001/to-dos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([first, second, other])))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    assert_eq!(
        sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
    for (id, body) in [(55, &first), (56, &second)] {
        let mut done = body.clone();
        done["completed"] = json!(true);
        Mock::given(method("PUT"))
            .and(path(format!("/v1/clients/7001/to-dos/{id}")))
            .and(body_json(done))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
    }
    assert_eq!(
        sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
    let mut done = vec![first.clone(), second.clone()];
    for d in &mut done {
        d["completed"] = json!(true);
    }
    done.push(other);
    Mock::given(method("GET"))
        .and(path("/v1/clients/7001/to-dos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(Value::Array(done)))
        .mount(&server)
        .await;
    assert_eq!(
        sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
    assert_token_everywhere(&server, TOKEN).await;
}

#[tokio::test]
async fn refused_credentials_reach_neither_errors_nor_logs() {
    let (log, _guard) = CapturedLog::install();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/auth"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_grant"})))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let e = sink
        .deliver(&set_fields("101", &[("Health Score", num(1.0))]))
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        matches!(e, DeliveryError::Rejected(_)) && text.contains("credentials refused"),
        "{text}"
    );
    let logged = log.text();
    for secret in [PASSWORD, EMAIL] {
        assert_no_secret(&text, secret);
        assert!(!logged.contains(secret), "{logged}");
    }
}

#[tokio::test]
async fn a_token_never_reaches_the_log() {
    let (log, _guard) = CapturedLog::install();
    let server = MockServer::start().await;
    mount_login(&server, TOKEN, 1).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let e = sink
        .deliver(&set_fields("101", &[("Health Score", num(1.0))]))
        .await
        .unwrap_err();
    assert_no_secret(&e.to_string(), TOKEN);
    // Whether the debug lines were captured depends on tracing's callsite cache, which tests running in
    // parallel share; so only the absence of secrets is asserted, as the other sinks' tests do.
    let logged = log.text();
    assert!(
        !logged.contains(TOKEN) && !logged.contains(PASSWORD),
        "{logged}"
    );
}

#[test]
fn a_connector_without_a_password_cannot_log_in() {
    let mut cfg = config(
        "clientsuccess",
        Role::Sink,
        "http://127.0.0.1:9",
        AuthScheme::Basic,
    );
    let s = secrets(&mut cfg, &[("username", EMAIL)]);
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &s,
    };
    match build(&ctx) {
        Err(e) => assert!(e.to_string().contains("`password`"), "{e}"),
        Ok(_) => panic!("built without a password"),
    }
    assert!((SPEC.parse_params)(&toml::from_str("x = 1").unwrap()).is_err());
}

#[tokio::test]
async fn closing_with_refused_credentials_is_not_mistaken_for_already_closed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/auth"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let e = sink.deliver(&close_op("101", KEY)).await.unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Rejected(m) if m.contains("credentials refused")),
        "{e:?}"
    );
}
