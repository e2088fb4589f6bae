//! Test setup the sink kinds' tests share: an account, the three kinds of write, a captured log (to
//! show no secret reaches it) and a check that every request a mock server saw carried the expected
//! auth header. Test-only; it owns no vendor knowledge (each kind's tests mount their own responses).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::connector::{AccountRef, FieldValue, TaskSpec, WriteOp};

pub const KEY: &str = "101:poor-health:2026-11-23";

pub fn account(external_id: &str) -> AccountRef {
    AccountRef {
        account_id: format!("acct-{external_id}"),
        external_id: external_id.to_string(),
        name: format!("Company {external_id}"),
    }
}

/// `SetFields` on `external_id` with `(field, value)` pairs; numbers and `None` (null) as given.
pub fn set_fields(external_id: &str, fields: &[(&str, FieldValue)]) -> WriteOp {
    WriteOp::SetFields {
        account: account(external_id),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

pub fn num(n: f64) -> FieldValue {
    FieldValue::Number(n)
}

pub fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.to_string())
}

/// A two-task project on account `101` under [`KEY`]: due in 7 and 0 days.
pub fn project_op() -> WriteOp {
    WriteOp::CreateProject {
        account: account("101"),
        key: KEY.into(),
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
    }
}

pub fn close_op() -> WriteOp {
    WriteOp::CloseProject {
        account: account("101"),
        key: KEY.into(),
        playbook: "poor-health".into(),
        name: "Poor Health: usage".into(),
        note: "Company 101 recovered".into(),
    }
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
