//! What the simulated CS platforms beyond Vitally (Planhat, Gainsight, Totango) share: recording a write
//! request into the simulator's `/_sim/received` log (with the vendor's path prefix, so the log says who
//! received it) and a per-minute request budget a test can shrink. It owns no vendor's routes or shapes.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::sim::{json_response, lock, ReceivedRequest, RollingWindow, SimState};

/// Largest request body the sim buffers for the write log.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Buffers the body of a request that passed auth and the budget, logs it as received by `prefix`
/// (`/planhat`), and hands back an equivalent request. GETs are not logged.
pub(crate) async fn record(st: &SimState, prefix: &str, req: Request) -> Result<Request, Response> {
    if req.method() == axum::http::Method::GET {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return Err(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"message": "request body too large"}),
        ));
    };
    let logged = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    lock(&st.received).push(ReceivedRequest {
        method: parts.method.to_string(),
        path: format!("{prefix}{}{query}", parts.uri.path()),
        body: logged,
    });
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A rolling one-minute request budget.
pub(crate) struct MinuteBudget(Mutex<RollingWindow>);

impl MinuteBudget {
    pub(crate) fn new(per_min: u32) -> MinuteBudget {
        MinuteBudget(Mutex::new(RollingWindow::new(
            per_min,
            Duration::from_secs(60),
        )))
    }

    /// `Ok((limit, remaining))`, or `Err((limit, time until a request is allowed))`.
    pub(crate) fn take(&self) -> Result<(u32, u32), (u32, Duration)> {
        let mut w = lock(&self.0);
        let limit = w.limit();
        w.try_hit(Instant::now())
            .map(|rem| (limit, rem))
            .map_err(|wait| (limit, wait))
    }

    /// Replaces the budget (tests use a tiny one to provoke 429s).
    #[cfg(test)]
    pub(crate) fn set(&self, per_min: u32) {
        *lock(&self.0) = RollingWindow::new(per_min, Duration::from_secs(60));
    }
}
