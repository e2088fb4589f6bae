//! Simulated ChurnZero HTTP (push) API, for the `churnzero` sink kind.
//!
//! Owns, under `/churnzero`: `GET /i` (one action in the query string), `POST /i` with a form body (one
//! action) or a JSON body (one action object, or an array of them), the app key check, a per-minute
//! budget, the account attributes written and the log of accepted calls (`/churnzero/_sim/received`,
//! `/churnzero/_sim/state`). Accounts are the world's, keyed by their CRM (HubSpot) id as
//! `accountExternalId`.
//!
//! As ChurnZero documents, an accepted call answers 200 with a 1×1 transparent GIF. Assumed, not
//! documented: a missing or wrong `appKey` answers 403, a call the simulator cannot apply (unknown
//! action or entity, no `accountExternalId`, an account it does not know, no attribute) answers 400
//! `{"status":"error","message"}` for the whole call and applies none of it, and the budget (600 a
//! minute) answers 429 with `Retry-After`. `attr_<Name>` and `name`/`value` both set attributes;
//! `""` clears one. `trackEvent` and `incrementAttribute` are accepted and logged. It does not own the
//! population (`world`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::sim::{
    ceil_secs, json_response, lock, query_pairs, ReceivedRequest, RollingWindow, SimState,
};

/// The app key the simulated instance accepts.
pub const APP_KEY: &str = "churnzero-sim-appkey";
/// A 1x1 transparent GIF, ChurnZero's answer to every accepted call.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

pub(crate) struct ChurnZeroState {
    budget: Mutex<RollingWindow>,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    /// accountExternalId → attribute name → value.
    accounts: BTreeMap<String, Map<String, Value>>,
    events: Vec<Value>,
    received: Vec<ReceivedRequest>,
}

impl ChurnZeroState {
    /// `per_min`: the budget, as `SimRateLimits` gives it (600 by default and in the demo).
    pub(crate) fn new(per_min: u32) -> ChurnZeroState {
        ChurnZeroState {
            budget: Mutex::new(RollingWindow::new(per_min, Duration::from_secs(60))),
            store: Mutex::new(Store::default()),
        }
    }

    /// Attributes by account and the events tracked.
    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.store);
        json!({"accounts": s.accounts, "events": s.events})
    }

    #[cfg(test)]
    pub(crate) fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.store).received.clone()
    }
}

pub(crate) fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/i", get(push).post(push))
        .route(
            "/_sim/received",
            get(|State(st): State<Arc<SimState>>| async move {
                json_response(StatusCode::OK, json!(lock(&st.churnzero.store).received))
            }),
        )
        .route(
            "/_sim/state",
            get(|State(st): State<Arc<SimState>>| async move {
                json_response(StatusCode::OK, st.churnzero.snapshot())
            }),
        )
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({"status": "error", "message": message}))
}

/// The actions of one call, each as an object of strings.
fn actions(
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
) -> Result<Vec<Map<String, Value>>, String> {
    let pairs_to_obj = |pairs: Vec<(String, String)>| -> Map<String, Value> {
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    };
    if method == Method::GET {
        return Ok(vec![pairs_to_obj(query_pairs(uri)?)]);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        let text = String::from_utf8_lossy(body);
        let uri: Uri = format!("/?{text}")
            .parse()
            .map_err(|_| "invalid form body".to_string())?;
        return Ok(vec![pairs_to_obj(query_pairs(&uri)?)]);
    }
    match serde_json::from_slice::<Value>(body).map_err(|e| format!("invalid json: {e}"))? {
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err("each element of the array must be an object".to_string()),
            })
            .collect(),
        _ => Err("the body must be an object or an array of objects".into()),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn push(
    State(st): State<Arc<SimState>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query = query_pairs(&uri).unwrap_or_default();
    let parsed = actions(&method, &headers, &uri, &body);
    let key_in_body = parsed
        .as_ref()
        .ok()
        .and_then(|a| a.first())
        .and_then(|a| a.get("appKey"))
        .map(text);
    let key = query
        .iter()
        .find(|(k, _)| k == "appKey")
        .map(|(_, v)| v.clone())
        .or(key_in_body);
    if key.as_deref() != Some(APP_KEY) {
        return error(StatusCode::FORBIDDEN, "invalid appKey");
    }
    if let Err(wait) = lock(&st.churnzero.budget).try_hit(Instant::now()) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(wait)));
        return r;
    }
    let logged = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let path = uri.path().to_string();
    lock(&st.churnzero.store).received.push(ReceivedRequest {
        method: method.to_string(),
        path,
        body: logged,
    });
    let items = match parsed {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    // Check every action before applying any: a refused call changes nothing.
    for a in &items {
        if let Err(e) = check(&st, a) {
            return error(StatusCode::BAD_REQUEST, &e);
        }
    }
    let mut s = lock(&st.churnzero.store);
    for a in items {
        apply(&mut s, a);
    }
    ([(header::CONTENT_TYPE, "image/gif")], GIF).into_response()
}

fn check(st: &SimState, a: &Map<String, Value>) -> Result<(), String> {
    let account = a.get("accountExternalId").map(text).unwrap_or_default();
    if account.is_empty() {
        return Err("accountExternalId is required".into());
    }
    if !st.world.accounts.iter().any(|w| w.hubspot_id == account) {
        return Err(format!("account {account} not found"));
    }
    match a.get("action").map(text).as_deref() {
        Some("setAttribute") | Some("incrementAttribute") => {
            let entity = a.get("entity").map(text).unwrap_or_default();
            if entity != "account" && entity != "contact" {
                return Err(format!("entity must be account or contact, not `{entity}`"));
            }
            let has_attr = a.keys().any(|k| k.starts_with("attr_")) || a.contains_key("name");
            if !has_attr {
                return Err("setAttribute needs name and value, or attr_<Name> fields".into());
            }
            Ok(())
        }
        Some("trackEvent") if a.contains_key("eventName") => Ok(()),
        Some("trackEvent") => Err("trackEvent needs eventName".into()),
        other => Err(format!("unknown action `{}`", other.unwrap_or(""))),
    }
}

fn apply(s: &mut Store, a: Map<String, Value>) {
    let account = a.get("accountExternalId").map(text).unwrap_or_default();
    match a.get("action").map(text).as_deref() {
        Some("setAttribute") if a.get("entity").map(text).as_deref() == Some("account") => {
            let attrs = s.accounts.entry(account).or_default();
            let mut set = |name: String, value: String| {
                if value.is_empty() {
                    attrs.remove(&name);
                } else {
                    attrs.insert(name, Value::String(value));
                }
            };
            for (k, v) in &a {
                if let Some(name) = k.strip_prefix("attr_") {
                    set(name.to_string(), text(v));
                }
            }
            if let Some(name) = a.get("name") {
                set(text(name), a.get("value").map(text).unwrap_or_default());
            }
        }
        Some("trackEvent") => s.events.push(Value::Object(a)),
        _ => {}
    }
}

#[cfg(test)]
#[path = "churnzero_tests.rs"]
mod tests;
