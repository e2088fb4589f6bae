//! Test helpers shared by the CS-platform sink kinds' tests: the writes they deliver, a config pointing at
//! a mock server or the simulator, a captured log (to show no secret reaches it), and checks every sink
//! test repeats.
//! Test-only; it owns no vendor knowledge (each kind's tests mount their own vendor responses).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::config::ConnectorConfig;
use crate::http::testing::{config, manual_clock, secrets};
use crate::http::{HttpClient, ManualClock};
use crate::secrets::ResolvedSecrets;
use crate::vocab::{AccountRef, AuthScheme, FieldValue, Role, TaskSpec, WriteOp};

/// The playbook key every project test uses.
pub const KEY: &str = "101:poor-health:2026-11-23";

pub fn account(external_id: &str) -> AccountRef {
    AccountRef {
        account_id: format!("acct-{external_id}"),
        external_id: external_id.to_string(),
        name: format!("Company {external_id}"),
    }
}

/// A `SetFields` write of `pairs` (numbers and texts) on account `external_id`.
pub fn set_fields(external_id: &str, pairs: &[(&str, FieldValue)]) -> WriteOp {
    let fields: BTreeMap<String, FieldValue> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    WriteOp::SetFields {
        account: account(external_id),
        fields,
    }
}

pub fn num(n: f64) -> FieldValue {
    FieldValue::Number(n)
}

pub fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.to_string())
}

/// A two-task "Poor Health: usage" project for account `external_id` under `key`.
pub fn project_op(external_id: &str, key: &str) -> WriteOp {
    WriteOp::CreateProject {
        account: account(external_id),
        key: key.to_string(),
        playbook: "poor-health".into(),
        name: "Poor Health: usage".into(),
        description: "Usage dropped".into(),
        tasks: vec![
            TaskSpec {
                name: "Call champion".into(),
                description: "Ask why".into(),
                due_days: 7,
            },
            TaskSpec {
                name: "Exec sponsor".into(),
                description: "Escalate".into(),
                due_days: 0,
            },
        ],
        owner: None,
    }
}

/// `op` (a `CreateProject`) with the account owner set to `owner`.
pub fn with_owner(op: WriteOp, owner: &str) -> WriteOp {
    match op {
        WriteOp::CreateProject {
            account,
            key,
            playbook,
            name,
            description,
            tasks,
            ..
        } => WriteOp::CreateProject {
            account,
            key,
            playbook,
            name,
            description,
            tasks,
            owner: Some(owner.to_string()),
        },
        other => other,
    }
}

pub fn close_op(external_id: &str, key: &str) -> WriteOp {
    WriteOp::CloseProject {
        account: account(external_id),
        key: key.to_string(),
        playbook: "poor-health".into(),
        name: "Poor Health: usage".into(),
        note: format!("Company {external_id} recovered"),
    }
}

/// A sink config for `kind` at `base_url` with `scheme` auth whose secret (role `token`, or `username`
/// for Basic) is `secret`; `header` names the vendor header for `api_key_header`.
pub fn sink_config(
    kind: &str,
    base_url: &str,
    scheme: AuthScheme,
    header: Option<&str>,
    secret: &str,
) -> (ConnectorConfig, ResolvedSecrets) {
    let mut cfg = config(kind, Role::Sink, base_url, scheme);
    cfg.auth.header = header.map(str::to_string);
    let role = if scheme == AuthScheme::Basic {
        "username"
    } else {
        "token"
    };
    let s = secrets(&mut cfg, &[(role, secret)]);
    (cfg, s)
}

/// An HTTP client for `cfg` with the kind's `classifier` (if any) and a manual clock
/// (2026-11-23T12:00:00Z).
pub fn client(
    cfg: &ConnectorConfig,
    s: &ResolvedSecrets,
    classifier: Option<crate::http::Classifier>,
) -> (HttpClient, Arc<ManualClock>) {
    let clock = manual_clock();
    let mut http = HttpClient::new(cfg, s)
        .expect("client")
        .with_clock(clock.clone());
    if let Some(c) = classifier {
        http = http.with_classifier(c);
    }
    (http, clock)
}

/// Every request wiremock received carried `header: value`, and none carried the secret anywhere else
/// (path, query or body).
pub async fn assert_auth_on_every_request(
    server: &wiremock::MockServer,
    header: &str,
    value: &str,
    secret: &str,
) {
    let requests = server.received_requests().await.expect("recording on");
    assert!(!requests.is_empty(), "no request reached the mock");
    for r in &requests {
        let got = r.headers.get(header).and_then(|v| v.to_str().ok());
        assert_eq!(got, Some(value), "{} {} lacks {header}", r.method, r.url);
        assert!(!r.url.as_str().contains(secret), "secret in url {}", r.url);
        assert!(
            !String::from_utf8_lossy(&r.body).contains(secret),
            "secret in body"
        );
    }
}

/// An error message never repeats the secret.
pub fn assert_no_secret(message: &str, secret: &str) {
    assert!(!message.contains(secret), "secret leaked in: {message}");
}

/// Every log line written (at debug and above) while the guard lives, on this thread.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Installs a debug-level subscriber for the current thread (`#[tokio::test]` runs on one thread).
    pub fn install() -> (CapturedLog, tracing::subscriber::DefaultGuard) {
        let log = CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        (log, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts that the mock saw at least one request and every one carried `authorization: expected`.
pub async fn assert_all_authed(server: &wiremock::MockServer, expected: &str) {
    let requests = server.received_requests().await.expect("recording on");
    assert!(!requests.is_empty(), "no request reached the mock");
    for r in &requests {
        let got = r.headers.get("authorization").and_then(|v| v.to_str().ok());
        assert_eq!(got, Some(expected), "{} {}", r.method, r.url.path());
    }
}

/// The JSON bodies of the requests the mock saw with `method` on `path`, in order.
pub async fn bodies(
    server: &wiremock::MockServer,
    method: &str,
    path: &str,
) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .expect("recording on")
        .iter()
        .filter(|r| r.method.as_str() == method && r.url.path() == path)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
        .collect()
}
