//! Simulated CustomerSuccessBox HTTP server API, under `/customersuccessbox/api/v1_1`, for the
//! `customersuccessbox` sink kind.
//!
//! Owns: the auth check the docs describe (HTTP Basic with [`SECRET_KEY`] as the username and any or no
//! password, or `Authorization: Bearer <secret key>`; otherwise 401 `{"message"}`), a per-minute budget
//! (429 with `Retry-After`), `POST /account` (an account push: `account_id` and flat attributes),
//! `GET /account/<id>`, and the state behind `/_sim/state/customersuccessbox`. Pushes go to the shared
//! `/_sim/received` log. One account per simulated company, account id = the HubSpot id.
//!
//! From the docs: the auth forms and the status codes (400 validation, 401, 404, 429, 5xx). Ours
//! (unverified): the bodies (`{"message"}`, `{"errors":{field:[…]}}`), that a push for an unknown
//! account id creates the account (an upsert), that a non-scalar attribute value is a 400 that applies
//! nothing, that `null` or `""` clears an attribute, and the budget. It does not own the population
//! (`world`).

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::sim::sink_log::{record, MinuteBudget};
use crate::sim::world::World;
use crate::sim::{basic, bearer, ceil_secs, json_response, lock, SimState, Vendor};

/// The secret key the simulated instance accepts.
pub const SECRET_KEY: &str = "csb-sim-secret-key";

pub(crate) struct CustomerSuccessBoxState {
    pub(crate) budget: MinuteBudget,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    /// account id → attributes (`name` included).
    accounts: BTreeMap<String, Map<String, Value>>,
    /// Account ids a push created.
    created: Vec<String>,
}

impl CustomerSuccessBoxState {
    pub(crate) fn new(w: &World, per_min: u32) -> CustomerSuccessBoxState {
        let mut store = Store::default();
        for a in &w.accounts {
            let mut attrs = Map::new();
            attrs.insert("name".into(), Value::String(a.name.clone()));
            store.accounts.insert(a.hubspot_id.clone(), attrs);
        }
        CustomerSuccessBoxState {
            budget: MinuteBudget::new(per_min),
            store: Mutex::new(store),
        }
    }

    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.store);
        json!({"accounts": s.accounts, "created": s.created})
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/account", post(push_account))
        .route("/account/{id}", get(get_account))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

pub(crate) async fn sim_state(State(st): State<Arc<SimState>>) -> Response {
    json_response(StatusCode::OK, st.customersuccessbox.snapshot())
}

fn message(status: StatusCode, m: &str) -> Response {
    json_response(status, json!({ "message": m }))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let ok = basic(headers).is_some_and(|(user, _)| user == SECRET_KEY)
        || bearer(headers) == Some(SECRET_KEY);
    if !ok {
        return message(
            StatusCode::UNAUTHORIZED,
            "API key is not sent, is invalid or is malformed",
        );
    }
    if let Err((_, wait)) = st.customersuccessbox.budget.take() {
        let mut r = message(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(ceil_secs(wait).max(1)));
        return r;
    }
    match record(&st, Vendor::CustomerSuccessBox.prefix(), req).await {
        Ok(req) => next.run(req).await,
        Err(r) => r,
    }
}

fn invalid(field: &str, problem: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"errors": { field: [problem] }}),
    )
}

async fn push_account(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let Ok(Value::Object(mut attrs)) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "body must be a JSON object");
    };
    let id = match attrs.remove("account_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => return invalid("account_id", "can't be blank"),
    };
    // Check every value before applying any: a refused push changes nothing.
    for (k, v) in &attrs {
        if matches!(v, Value::Array(_) | Value::Object(_)) {
            return invalid(k, "must be a string, number, boolean or null");
        }
    }
    let mut s = lock(&st.customersuccessbox.store);
    if !s.accounts.contains_key(&id) {
        s.created.push(id.clone());
    }
    let account = s.accounts.entry(id.clone()).or_default();
    for (k, v) in attrs {
        if v.is_null() || v == json!("") {
            account.remove(&k);
        } else {
            account.insert(k, v);
        }
    }
    json_response(
        StatusCode::OK,
        json!({"status": "success", "account_id": id}),
    )
}

async fn get_account(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let s = lock(&st.customersuccessbox.store);
    match s.accounts.get(&id) {
        Some(a) => {
            let mut out = a.clone();
            out.insert("account_id".into(), Value::String(id));
            json_response(StatusCode::OK, Value::Object(out))
        }
        None => message(StatusCode::NOT_FOUND, "Resource not available"),
    }
}

#[cfg(test)]
#[path = "customersuccessbox_tests.rs"]
mod tests;
