//! Tests of the `churnzero` kind against wiremock answering as ChurnZero's push API does (200 with a
//! GIF): the exact actions sent, batches, the playbook attributes, retries, and the app key's place.

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::testing::{config, manual_clock, secrets};
use crate::http::ManualClock;
use crate::vocab::FieldValue;
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const APP_KEY: &str = "cz-app-key-secret";
/// ChurnZero's answer: a 1x1 transparent GIF.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

fn gif() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(GIF, "image/gif")
}

fn sink(server: &MockServer) -> (ChurnZero, Arc<ManualClock>) {
    let mut cfg = config(
        "churnzero",
        Role::Sink,
        &server.uri(),
        AuthScheme::ApiKeyQuery,
    );
    cfg.auth.param = Some("appKey".into());
    let s = secrets(&mut cfg, &[("token", APP_KEY)]);
    let clock = manual_clock();
    let http = HttpClient::new(&cfg, &s).unwrap().with_clock(clock.clone());
    let params = parse_params(&toml::Table::new()).unwrap();
    (ChurnZero::new(http, params, clock.clone()), clock)
}

fn attrs(id: &str, pairs: &[(&str, &str)]) -> Value {
    let mut v = json!({"action": "setAttribute", "entity": "account", "accountExternalId": id,
                       "contactExternalId": "healthsync"});
    for (k, val) in pairs {
        v[format!("attr_{k}")] = json!(val);
    }
    v
}

/// Every request carried the app key as the `appKey` query parameter.
async fn assert_app_key_everywhere(server: &MockServer) {
    let requests = server.received_requests().await.unwrap();
    assert!(!requests.is_empty());
    for r in requests {
        let key = r
            .url
            .query_pairs()
            .find(|(k, _)| k == "appKey")
            .map(|(_, v)| v.into_owned());
        assert_eq!(key.as_deref(), Some(APP_KEY));
    }
}

#[tokio::test]
async fn set_fields_sends_exactly_the_mapped_attributes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/i"))
        .and(query_param("appKey", APP_KEY))
        .and(body_json(json!([attrs(
            "101",
            &[
                ("Health Band", "green"),
                ("Health Score", "87.5"),
                ("Top Risk", "")
            ]
        )])))
        .respond_with(gif())
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let op = set_fields(
        "101",
        &[
            ("Health Score", num(87.5)),
            ("Health Band", text("green")),
            ("Top Risk", FieldValue::Null),
        ],
    );
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
}

#[tokio::test]
async fn a_batch_goes_as_one_json_array_and_a_refused_one_item_by_item() {
    let server = MockServer::start().await;
    let good = attrs("101", &[("Health Score", "80")]);
    let bad = attrs("", &[("Health Score", "70")]);
    let other = attrs("103", &[("Health Score", "60")]);
    Mock::given(method("POST"))
        .and(body_json(json!([good, bad, other])))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                json!({"status": "error", "message": "accountExternalId is required"}),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!([bad])))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                json!({"status": "error", "message": "accountExternalId is required"}),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    for one in [&good, &other] {
        Mock::given(method("POST"))
            .and(body_json(json!([one])))
            .respond_with(gif())
            .expect(1)
            .mount(&server)
            .await;
    }
    let (sink, _) = sink(&server);
    let ops = vec![
        set_fields("101", &[("Health Score", num(80.0))]),
        set_fields("", &[("Health Score", num(70.0))]),
        set_fields("103", &[("Health Score", num(60.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    let e = results[1].as_ref().unwrap_err();
    assert!(
        matches!(e, DeliveryError::Rejected(m) if m.contains("accountExternalId is required")),
        "{e:?}"
    );
    assert_eq!(results[2].as_ref().unwrap(), &Delivered::Applied);
    assert_eq!(sink.batch_size(), 50);
    assert_app_key_everywhere(&server).await;
}

#[tokio::test]
async fn projects_become_idempotent_playbook_attributes_and_closing_clears_them() {
    let server = MockServer::start().await;
    let open = attrs("101", &[
        ("Healthsync Playbook poor-health Tasks", "Usage dropped\n1. Call champion (due 2026-11-30): Ask why\n2. Exec sponsor (due 2026-11-23): Escalate"),
        ("Healthsync Playbook poor-health", &format!("Poor Health: usage [{KEY}]")),
    ]);
    Mock::given(method("POST"))
        .and(body_json(json!([open])))
        .respond_with(gif())
        .expect(2)
        .mount(&server)
        .await;
    let cleared = attrs(
        "101",
        &[
            ("Healthsync Playbook poor-health Tasks", ""),
            ("Healthsync Playbook poor-health", ""),
        ],
    );
    Mock::given(method("POST"))
        .and(body_json(json!([cleared])))
        .respond_with(gif())
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    // A resend (after a crash before the outbox recorded it) sends the very same values: nothing new
    // appears in ChurnZero. The push API cannot be asked, so the answer is Applied both times.
    assert_eq!(
        sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
    assert_eq!(
        sink.deliver(&project_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
    assert_eq!(
        sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_then_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("Service Unavailable"))
        .expect(4)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let err = sink
        .deliver(&set_fields("101", &[("Health Score", num(1.0))]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeliveryError::Transient(ref m) if m.contains("http 503")),
        "{err:?}"
    );
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 5);
    assert_eq!(&sleeps[..2], &[std::time::Duration::from_secs(7); 2]);
}

#[tokio::test]
async fn the_app_key_reaches_neither_logs_nor_errors() {
    let (log, _guard) = CapturedLog::install();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_string("forbidden"))
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let ops = vec![
        set_fields("101", &[("a", num(1.0))]),
        set_fields("102", &[("a", num(1.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    let logged = log.text();
    for r in &results {
        let e = r.as_ref().unwrap_err().to_string();
        assert!(e.contains("credentials refused"), "{e}");
        assert!(!e.contains(APP_KEY), "{e}");
    }
    assert!(!logged.contains(APP_KEY), "{logged}");
    assert_app_key_everywhere(&server).await;
}

#[test]
fn params_are_checked() {
    let p =
        parse_params(&toml::from_str("contact_external_id = \"ops@acme.com\"").unwrap()).unwrap();
    assert_eq!(p.contact_external_id, "ops@acme.com");
    assert!(parse_params(&toml::from_str("contact_external_id = \" \"").unwrap()).is_err());
    // The shipped prefix ends in a space that separates it from the playbook id: kept as written.
    let shipped = include_str!("../../../connectors/churnzero.toml");
    let params = toml::from_str::<toml::Table>(shipped).unwrap()["params"].clone();
    let p = parse_params(params.as_table().unwrap()).unwrap();
    assert_eq!(p.playbook_prefix, "Healthsync Playbook ");
    assert!(parse_params(&toml::from_str("app_key = \"x\"").unwrap())
        .unwrap_err()
        .contains("app_key"));
}
