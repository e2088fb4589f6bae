//! Tests of the `customersuccessbox` kind against wiremock answering as CustomerSuccessBox's HTTP server
//! API: the exact account push, Basic auth with the secret key on every request, playbook attributes,
//! the documented error codes, and no key in errors or logs.

use super::*;
use crate::connector::Sink;
use crate::connector::kinds::sink_testkit::*;
use crate::http::ManualClock;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET_KEY: &str = "csb-secret-key-value";

fn sink(server: &MockServer) -> (CustomerSuccessBox, Arc<ManualClock>) {
    let base = format!("{}/api/v1_1", server.uri());
    let (cfg, s) = sink_config(
        "customersuccessbox",
        &base,
        AuthScheme::Basic,
        None,
        SECRET_KEY,
    );
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &s,
    };
    assert!(matches!(build(&ctx), Ok(Built::Sink(_))));
    let (http, clock) = client(&cfg, &s, None);
    let params = parse_params(&toml::Table::new()).unwrap();
    (CustomerSuccessBox::new(http, params, clock.clone()), clock)
}

/// `Basic base64("<secret key>:")`.
fn basic() -> String {
    // `<key>:` is 21 bytes: standard base64 needs no padding, which the sim's encoder leaves out.
    format!(
        "Basic {}",
        crate::sim::b64_encode(format!("{SECRET_KEY}:").as_bytes())
    )
}

#[tokio::test]
async fn set_fields_pushes_the_account_with_its_attributes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1_1/account"))
        .and(body_json(json!({
            "account_id": "101",
            "Health Score": 87.5,
            "Health Band": "green",
            "Health Top Risk": null,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "ok"})))
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
    assert_eq!(sink.batch_size(), 1);
    assert_auth_on_every_request(&server, "authorization", &basic(), SECRET_KEY).await;
}

#[tokio::test]
async fn per_item_errors_map_to_the_documented_classes_and_the_rest_land() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_json(
            json!({"account_id": "102", "Health Score": "high"}),
        ))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"errors": {"Health Score": ["is not a number"]}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!({"account_id": "103", "Health Score": 5.0})))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(
            json!({"account_id": "101", "Health Score": 80.0}),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let ops = vec![
        set_fields("101", &[("Health Score", num(80.0))]),
        set_fields("102", &[("Health Score", text("high"))]),
        set_fields("103", &[("Health Score", num(5.0))]),
        set_fields("", &[("Health Score", num(5.0))]),
    ];
    let r = sink.deliver_batch(&ops).await;
    assert_eq!(r[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(&r[1], Err(DeliveryError::Invalid(m)) if m.contains("is not a number") && m.contains("102")),
        "{:?}",
        r[1]
    );
    assert!(
        matches!(&r[2], Err(DeliveryError::Rejected(m)) if m.contains("http 404")),
        "{:?}",
        r[2]
    );
    assert!(
        matches!(&r[3], Err(DeliveryError::Rejected(m)) if m.contains("no account id")),
        "{:?}",
        r[3]
    );
    // The account without an id was refused before any request.
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn projects_set_playbook_attributes_and_recovery_clears_them() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_json(json!({
            "account_id": "101",
            "Healthsync Playbook poor-health": format!("Poor Health: usage [{KEY}]"),
            "Healthsync Playbook poor-health Tasks": "Usage dropped\n1. Call champion (due 2026-11-30): Ask why\n2. Exec sponsor (due 2026-11-23): Escalate",
        })))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!({
            "account_id": "101",
            "Healthsync Playbook poor-health": "",
            "Healthsync Playbook poor-health Tasks": "",
        })))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    // A resend after a crash writes the very same values: nothing new appears.
    for _ in 0..2 {
        assert_eq!(
            sink.deliver(&project_op("101", KEY)).await.unwrap(),
            Delivered::Applied
        );
    }
    assert_eq!(
        sink.deliver(&close_op("101", KEY)).await.unwrap(),
        Delivered::Applied
    );
}

#[tokio::test]
async fn throttling_and_gateway_errors_are_retried_then_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "5"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(504))
        .expect(4)
        .mount(&server)
        .await;
    let (sink, clock) = sink(&server);
    let e = sink
        .deliver(&set_fields("101", &[("Health Score", num(1.0))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Transient(m) if m.contains("http 504")),
        "{e:?}"
    );
    assert_eq!(
        &clock.sleeps()[..2],
        &[std::time::Duration::from_secs(5); 2]
    );
}

#[tokio::test]
async fn the_secret_key_reaches_neither_logs_nor_errors() {
    let (log, _guard) = CapturedLog::install();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "API key is invalid"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = sink(&server);
    let e = sink
        .deliver(&set_fields("101", &[("Health Score", num(1.0))]))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, DeliveryError::Rejected(_)) && text.contains("credentials refused"),
        "{text}"
    );
    assert_no_secret(&text, SECRET_KEY);
    assert!(!log.text().contains(SECRET_KEY));
    assert_all_authed(&server, &basic()).await;
}

#[test]
fn params_are_checked() {
    let p = parse_params(&toml::from_str("playbook_attribute_prefix = \"HS \"").unwrap()).unwrap();
    assert_eq!(p.playbook_prefix, "HS ");
    assert!(parse_params(&toml::from_str("playbook_attribute_prefix = \" \"").unwrap()).is_err());
    assert!(parse_params(&toml::from_str("secret_key = \"x\"").unwrap())
        .unwrap_err()
        .contains("secret_key"));
}
