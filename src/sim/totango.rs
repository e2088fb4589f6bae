//! Simulated Totango, under `/totango`: the collection gateway (`GET|POST /pixel.gif/`, answering 200 and a
//! 1×1 gif whatever it gets, and inserting accounts it does not know, as Totango documents) and the REST
//! API with the `app-token` header ([`APP_TOKEN`]): `POST /api/v3/tasks` (answers `Success`; 400
//! `Account not found`), `POST /api/v3/touchpoints/`, `POST /api/v2/events/search` (the account's
//! touchpoints), a per-minute budget on the REST API answered with 429 and `Retry-After`, and the state
//! behind `/_sim/state/totango`. Pixel calls and REST writes go to the shared `/_sim/received` log as
//! `/totango/...` (pixel calls with their query). One account per simulated company, id = the HubSpot id.
//!
//! Ours, not Totango's (unverified): the search answer's shape (`{"response":{"events":{"hits":[…],
//! "total_hits"}}}` with each touchpoint's `subject` and `content`), search parameters read from the query
//! string, the touchpoint create answer (the stored touchpoint as JSON), 401 and 429 bodies, and that a
//! task's `activity_type_id` must be one of [`FLOWS`]. The gateway ignores a wrong `sdr_s` silently, as
//! the real one gives no feedback either.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::sim::sink_log::{record, MinuteBudget};
use crate::sim::world::World;
use crate::sim::{ceil_secs, iso_ms, json_response, lock, query_pairs, ReceivedRequest, SimState};

/// The API token the simulated REST API accepts.
pub const APP_TOKEN: &str = "totango-sim";
/// The service id whose pixel calls are stored.
pub const SERVICE_ID: &str = "SP-0000-01";
/// Flow ids tasks and touchpoints may be filed under.
pub const FLOWS: &[&str] = &["health_risk", "onboarding", "escalation"];
/// A 1×1 transparent gif.
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 1, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21,
    0xf9, 4, 1, 0, 0, 0, 0, 0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 1, 0, 0x3b,
];

pub(crate) struct TotangoState {
    pub(crate) budget: MinuteBudget,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    /// account id → attributes (`account_name` included).
    accounts: BTreeMap<String, Map<String, Value>>,
    tasks: Vec<Value>,
    touchpoints: Vec<Value>,
    seq: u64,
}

impl TotangoState {
    pub(crate) fn new(w: &World, per_min: u32) -> TotangoState {
        let mut store = Store::default();
        for a in &w.accounts {
            let mut attrs = Map::new();
            attrs.insert("account_name".into(), Value::String(a.name.clone()));
            store.accounts.insert(a.hubspot_id.clone(), attrs);
        }
        TotangoState {
            budget: MinuteBudget::new(per_min),
            store: Mutex::new(store),
        }
    }

    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.store);
        json!({"accounts": s.accounts, "tasks": s.tasks, "touchpoints": s.touchpoints})
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    let api = Router::new()
        .route("/api/v3/tasks", post(create_task))
        .route("/api/v3/touchpoints/", post(create_touchpoint))
        .route("/api/v2/events/search", post(search_events))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate));
    Router::new()
        .route("/pixel.gif/", get(pixel).post(pixel))
        .merge(api)
}

pub(crate) async fn sim_state(State(st): State<Arc<SimState>>) -> Response {
    json_response(StatusCode::OK, st.totango.snapshot())
}

fn error(status: StatusCode, m: &str) -> Response {
    json_response(status, json!({ "error": m }))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let token = req.headers().get("app-token").and_then(|v| v.to_str().ok());
    if token != Some(APP_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "Invalid app-token");
    }
    if let Err((_, wait)) = st.totango.budget.take() {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded: 100 calls per minute",
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(ceil_secs(wait).max(1)));
        return r;
    }
    match record(&st, "/totango", req).await {
        Ok(req) => next.run(req).await,
        Err(r) => r,
    }
}

fn gif() -> Response {
    ([(header::CONTENT_TYPE, "image/gif")], GIF).into_response()
}

/// Attribute updates from the query (GET) or a form body (POST); always 200 and the gif.
async fn pixel(State(st): State<Arc<SimState>>, uri: Uri, body: Bytes) -> Response {
    let mut pairs = query_pairs(&uri).unwrap_or_default();
    if let Ok(form) = serde_urlencoded_pairs(&body) {
        pairs.extend(form);
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    lock(&st.received).push(ReceivedRequest {
        method: if body.is_empty() { "GET" } else { "POST" }.into(),
        path: format!("/totango/pixel.gif/{query}"),
        body: Value::Null,
    });
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(service), Some(account)) = (get("sdr_s"), get("sdr_o")) else {
        return gif();
    };
    if service != SERVICE_ID || account.is_empty() {
        return gif();
    }
    let mut s = lock(&st.totango.store);
    // Totango inserts accounts it does not know.
    let attrs = s.accounts.entry(account).or_default();
    for (k, v) in &pairs {
        if let Some(attr) = k.strip_prefix("sdr_o.") {
            if v.is_empty() {
                attrs.remove(attr);
            } else {
                attrs.insert(attr.to_string(), Value::String(v.clone()));
            }
        }
    }
    gif()
}

/// `application/x-www-form-urlencoded` pairs of a body (empty when it is not a form).
fn serde_urlencoded_pairs(body: &Bytes) -> Result<Vec<(String, String)>, String> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let uri: Uri = format!("/?{text}")
        .parse()
        .map_err(|_| "not a form".to_string())?;
    query_pairs(&uri)
}

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(error(StatusCode::BAD_REQUEST, "Body must be a JSON object")),
    }
}

/// Validates a task or touchpoint: a known account and flow, and the `required` text field.
fn check(s: &Store, obj: &Map<String, Value>, required: &str) -> Result<(), Response> {
    let account = obj
        .get("account_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !s.accounts.contains_key(account) {
        return Err(error(StatusCode::BAD_REQUEST, "Account not found"));
    }
    let flow = obj.get("activity_type_id").and_then(Value::as_str);
    if flow.is_some_and(|f| !FLOWS.contains(&f)) {
        return Err(error(StatusCode::BAD_REQUEST, "Unknown activity_type_id"));
    }
    if !obj.get(required).is_some_and(Value::is_string) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{required} is required"),
        ));
    }
    Ok(())
}

async fn create_task(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let mut obj = match parse_object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut s = lock(&st.totango.store);
    if let Err(r) = check(&s, &obj, "title") {
        return r;
    }
    if obj.get("activity_type_id").is_none() {
        return error(StatusCode::BAD_REQUEST, "activity_type_id is required");
    }
    s.seq += 1;
    obj.insert("id".into(), Value::String(format!("task-{}", s.seq)));
    s.tasks.push(Value::Object(obj));
    (StatusCode::OK, "Success").into_response()
}

async fn create_touchpoint(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let mut obj = match parse_object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let now = iso_ms(st.clock());
    let mut s = lock(&st.totango.store);
    if let Err(r) = check(&s, &obj, "content") {
        return r;
    }
    s.seq += 1;
    obj.insert("id".into(), Value::String(format!("tp-{}", s.seq)));
    obj.insert("timestamp".into(), Value::String(now));
    let tp = Value::Object(obj);
    s.touchpoints.push(tp.clone());
    json_response(StatusCode::OK, tp)
}

async fn search_events(State(st): State<Arc<SimState>>, uri: Uri, body: Bytes) -> Response {
    let mut pairs = query_pairs(&uri).unwrap_or_default();
    pairs.extend(serde_urlencoded_pairs(&body).unwrap_or_default());
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(query) = get("query").and_then(|q| serde_json::from_str::<Value>(&q).ok()) else {
        return error(StatusCode::BAD_REQUEST, "query is required");
    };
    if !query.get("terms").is_some_and(Value::is_array) {
        return error(StatusCode::BAD_REQUEST, "query.terms is required");
    }
    let account = get("account_id");
    let s = lock(&st.totango.store);
    let hits: Vec<Value> = s
        .touchpoints
        .iter()
        .filter(|t| account.as_deref().is_none_or(|a| t["account_id"] == a))
        .map(|t| {
            json!({"type": "note", "account": {"id": t["account_id"]}, "timestamp": t["timestamp"],
                   "note_content": {"subject": t["subject"], "text": t["content"]}})
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({"response": {"events": {"total_hits": hits.len(), "hits": hits}}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::start_sim;
    use crate::sim::{SimRateLimits, Vendor};

    #[tokio::test]
    async fn the_pixel_always_answers_a_gif_and_the_api_checks_its_token_and_budget() {
        let sim = start_sim(2, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Totango);
        let client = reqwest::Client::new();
        let url = format!("{base}/pixel.gif/?sdr_s={SERVICE_ID}&sdr_o=new-acct&sdr_o.Health=42");
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), GIF);
        let bad = client
            .get(format!(
                "{base}/pixel.gif/?sdr_s=SP-wrong&sdr_o=x&sdr_o.Health=1"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 200, "no feedback for a wrong service id");
        let state = sim.state.totango.snapshot();
        assert_eq!(
            state["accounts"]["new-acct"]["Health"], "42",
            "unknown accounts are inserted"
        );
        assert!(state["accounts"].get("x").is_none());
        assert_eq!(sim.received().len(), 2);

        let task = json!({"title": "t", "account_id": "nope", "activity_type_id": "health_risk"});
        let r = client
            .post(format!("{base}/api/v3/tasks"))
            .header("app-token", APP_TOKEN)
            .json(&task)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("Account not found"));
        let r = client
            .post(format!("{base}/api/v3/tasks"))
            .header("app-token", "nope")
            .json(&task)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        sim.state.totango.budget.set(0);
        let r = client
            .post(format!("{base}/api/v3/tasks"))
            .header("app-token", APP_TOKEN)
            .json(&task)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_some());
    }
}
