//! The daemon's HTTP endpoints on its `listen` address (loopback by default): `GET /metrics` (Prometheus
//! text), `GET /healthz` (the process is alive and answering), `GET /readyz` (store open and no source
//! failing beyond its max age: 200 or 503 with the reasons) and `GET /status` (the `healthsync status`
//! report as JSON, which is how that command works while the daemon holds the store's lock).
//!
//! Read-only: nothing here changes the store or the schedule. Gauges that mirror the store are refreshed
//! from it on each scrape, so they cannot drift.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::DaemonState;
use crate::observe;

pub fn router(state: Arc<DaemonState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<DaemonState>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}

fn store_error(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the store: {e}\n"),
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<DaemonState>>) -> Response {
    match state.report(Utc::now()) {
        Ok(report) => {
            let verdict = report.readiness();
            let code = if verdict.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(verdict)).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn status(State(state): State<Arc<DaemonState>>) -> Response {
    match state.report(Utc::now()) {
        Ok(report) => Json(report).into_response(),
        Err(e) => store_error(e),
    }
}

async fn metrics(State(state): State<Arc<DaemonState>>) -> Response {
    if let Err(e) = state.refresh_gauges(Utc::now()) {
        return store_error(e);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        observe::metrics().render(),
    )
        .into_response()
}
