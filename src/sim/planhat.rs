//! Simulated Planhat API (CS platform), under `/planhat`: companies (bulk upsert `PUT /companies`,
//! `GET /leancompanies`), projects (`POST /projects`, `GET|PUT /projects/{id}`) and tasks
//! (`POST /tasks`, `GET /tasks/{id}`), Bearer auth with [`API_TOKEN`], a per-minute budget answered with
//! 429 and `Retry-After`, and the mutable CS-side state behind `/_sim/state/planhat`. Writes go to the
//! shared `/_sim/received` log as `/planhat/...`. It does not own the population (see `world`): one
//! company per simulated account, `externalId` = the HubSpot company id.
//!
//! Shapes follow planhat.com/developers: the bulk upsert answers 200 (all applied), 206 (some failed) or
//! 400 (none applied) with `created`, `createdErrors`, `insertsKeys`, `updated`, `updatedErrors`,
//! `updatesKeys`, `nonupdates`, `modified`, `upsertedIds`, `permissionErrors`. Ours, not Planhat's
//! (undocumented): one error entry is `{"item": <the item>, "error": "<message>"}`; a custom value that is
//! an object or array is an update error; an unmatched item without `name` is a create error; `{id}` may be
//! the `_id` or `extid-<externalId>`; 404 and 400 bodies are `{"message"}`; 401 for a wrong token. Like
//! Planhat (as far as we know), `POST /projects` does not refuse a duplicate `externalId`, so idempotency
//! rests on the client looking up first.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::sim::sink_log::{record, MinuteBudget};
use crate::sim::world::World;
use crate::sim::{bearer, ceil_secs, iso_ms, json_response, lock, query_pairs, SimState};

/// The API access token the simulated Planhat accepts.
pub const API_TOKEN: &str = "planhat-sim";
/// Items per bulk upsert.
const MAX_BULK: usize = 5000;

pub(crate) struct PlanhatState {
    pub(crate) budget: MinuteBudget,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    companies: Vec<Value>,
    by_ext: HashMap<String, usize>,
    projects: Vec<Value>,
    tasks: Vec<Value>,
    seq: u64,
}

impl Store {
    fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("65{:022x}", self.seq)
    }
}

impl PlanhatState {
    pub(crate) fn new(w: &World, per_min: u32) -> PlanhatState {
        let mut store = Store::default();
        for a in &w.accounts {
            let id = store.next_id();
            store
                .by_ext
                .insert(a.hubspot_id.clone(), store.companies.len());
            store.companies.push(json!({
                "_id": id, "name": a.name, "externalId": a.hubspot_id, "custom": {},
            }));
        }
        PlanhatState {
            budget: MinuteBudget::new(per_min),
            store: Mutex::new(store),
        }
    }

    /// `/_sim/state/planhat`: companies (with their custom fields), projects and tasks.
    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.store);
        json!({"companies": s.companies, "projects": s.projects, "tasks": s.tasks})
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/companies", put(bulk_upsert))
        .route("/leancompanies", get(lean_companies))
        .route("/projects", axum::routing::post(create_project))
        .route("/projects/{id}", get(get_project).put(update_project))
        .route("/tasks", axum::routing::post(create_task))
        .route("/tasks/{id}", get(get_task))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

pub(crate) async fn sim_state(State(st): State<Arc<SimState>>) -> Response {
    json_response(StatusCode::OK, st.planhat.snapshot())
}

fn msg(status: StatusCode, m: &str) -> Response {
    json_response(status, json!({ "message": m }))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if bearer(req.headers()) != Some(API_TOKEN) {
        return msg(
            StatusCode::UNAUTHORIZED,
            "Invalid or missing API access token",
        );
    }
    if let Err((_, wait)) = st.planhat.budget.take() {
        let mut r = msg(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(ceil_secs(wait).max(1)));
        return r;
    }
    match record(&st, "/planhat", req).await {
        Ok(req) => next.run(req).await,
        Err(r) => r,
    }
}

/// A custom value Planhat stores: Date (as a string), String, Boolean, Number, or null to clear.
fn storable(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

fn find_company(s: &Store, item: &Map<String, Value>) -> Option<usize> {
    if let Some(Value::String(id)) = item.get("_id") {
        return s.companies.iter().position(|c| c["_id"] == id.as_str());
    }
    match item.get("externalId") {
        Some(Value::String(x)) => s.by_ext.get(x).copied(),
        _ => None,
    }
}

async fn bulk_upsert(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&body) else {
        return msg(
            StatusCode::BAD_REQUEST,
            "Body must be an array of companies",
        );
    };
    if items.len() > MAX_BULK {
        return msg(StatusCode::BAD_REQUEST, "Too many items, the limit is 5000");
    }
    let mut s = lock(&st.planhat.store);
    let (mut created, mut updated, mut nonupdates) = (0, 0, 0);
    let (mut created_errors, mut updated_errors) = (Vec::new(), Vec::new());
    let (mut inserts, mut updates, mut upserted) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        let Value::Object(obj) = &item else {
            created_errors.push(json!({"item": item, "error": "Item must be an object"}));
            continue;
        };
        let custom = match obj.get("custom") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(c)) => c.clone(),
            Some(_) => {
                updated_errors.push(json!({"item": item, "error": "custom must be an object"}));
                continue;
            }
        };
        if let Some((k, _)) = custom.iter().find(|(_, v)| !storable(v)) {
            let e = format!(
                "Invalid value for custom field \"{k}\": expected Date, String, Boolean or Number"
            );
            updated_errors.push(json!({"item": item, "error": e}));
            continue;
        }
        match find_company(&s, obj) {
            Some(i) => {
                let c = &mut s.companies[i];
                let mut changed = false;
                for (k, v) in custom {
                    if c["custom"][&k] != v {
                        c["custom"][&k] = v;
                        changed = true;
                    }
                }
                if let Some(Value::String(n)) = obj.get("name") {
                    c["name"] = Value::String(n.clone());
                    changed = true;
                }
                if changed {
                    updated += 1;
                } else {
                    nonupdates += 1;
                }
                updates.push(json!({"_id": c["_id"], "externalId": c["externalId"]}));
            }
            None => {
                let Some(Value::String(name)) = obj.get("name") else {
                    let e = "No company matches the keys given, and a new company needs a name";
                    created_errors.push(json!({"item": item, "error": e}));
                    continue;
                };
                let id = s.next_id();
                let ext = obj.get("externalId").cloned().unwrap_or(Value::Null);
                if let Value::String(x) = &ext {
                    let at = s.companies.len();
                    s.by_ext.insert(x.clone(), at);
                }
                s.companies
                    .push(json!({"_id": id, "name": name, "externalId": ext, "custom": custom}));
                created += 1;
                inserts.push(json!({"_id": id, "externalId": ext}));
                upserted.push(Value::String(id));
            }
        }
    }
    let failed = created_errors.len() + updated_errors.len();
    let ok = created + updated + nonupdates;
    let status = match (failed, ok) {
        (0, _) => StatusCode::OK,
        (_, 0) => StatusCode::BAD_REQUEST,
        _ => StatusCode::PARTIAL_CONTENT,
    };
    json_response(
        status,
        json!({
            "created": created, "createdErrors": created_errors, "insertsKeys": inserts,
            "updated": updated, "updatedErrors": updated_errors, "updatesKeys": updates,
            "nonupdates": nonupdates, "modified": [], "upsertedIds": upserted, "permissionErrors": [],
        }),
    )
}

async fn lean_companies(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return msg(StatusCode::BAD_REQUEST, &e),
    };
    let ext = pairs
        .iter()
        .find(|(k, _)| k == "externalId")
        .map(|(_, v)| v);
    let s = lock(&st.planhat.store);
    let list: Vec<Value> = s
        .companies
        .iter()
        .filter(|c| ext.is_none_or(|x| c["externalId"] == x.as_str()))
        .map(|c| json!({"_id": c["_id"], "externalId": c["externalId"], "name": c["name"]}))
        .collect();
    json_response(StatusCode::OK, Value::Array(list))
}

/// Finds by `_id` or `extid-<externalId>`.
fn position(items: &[Value], id: &str) -> Option<usize> {
    match id.strip_prefix("extid-") {
        Some(ext) => items.iter().position(|o| o["externalId"] == ext),
        None => items.iter().position(|o| o["_id"] == id),
    }
}

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(msg(StatusCode::BAD_REQUEST, "Body must be a JSON object")),
    }
}

/// Which collection a route serves.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Project,
    Task,
}

fn items(s: &mut Store, kind: Kind) -> &mut Vec<Value> {
    match kind {
        Kind::Project => &mut s.projects,
        Kind::Task => &mut s.tasks,
    }
}

fn create(st: &SimState, kind: Kind, body: &Bytes) -> Response {
    let mut obj = match parse_object(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let required = match kind {
        Kind::Project => "name",
        Kind::Task => "mainType",
    };
    if !obj.get(required).is_some_and(Value::is_string) {
        return msg(StatusCode::BAD_REQUEST, &format!("{required} is required"));
    }
    let mut s = lock(&st.planhat.store);
    let company = obj
        .get("companyId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(c) = company.and_then(|id| {
        s.companies
            .iter()
            .find(|c| c["_id"] == id.as_str())
            .cloned()
    }) else {
        return msg(
            StatusCode::BAD_REQUEST,
            "companyId must be the _id of an existing company",
        );
    };
    let id = s.next_id();
    let now = iso_ms(st.clock());
    obj.insert("_id".into(), Value::String(id));
    obj.insert("companyName".into(), c["name"].clone());
    obj.insert("createdAt".into(), Value::String(now.clone()));
    obj.insert("updatedAt".into(), Value::String(now));
    let obj = Value::Object(obj);
    items(&mut s, kind).push(obj.clone());
    json_response(StatusCode::OK, obj)
}

fn fetch(st: &SimState, kind: Kind, id: &str) -> Response {
    let mut s = lock(&st.planhat.store);
    let list = items(&mut s, kind);
    match position(list, id) {
        Some(i) => json_response(StatusCode::OK, list[i].clone()),
        None => msg(StatusCode::NOT_FOUND, "Not found"),
    }
}

async fn create_project(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    create(&st, Kind::Project, &body)
}

async fn create_task(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    create(&st, Kind::Task, &body)
}

async fn get_project(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    fetch(&st, Kind::Project, &id)
}

async fn get_task(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    fetch(&st, Kind::Task, &id)
}

async fn update_project(
    State(st): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let patch = match parse_object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let now = iso_ms(st.clock());
    let mut s = lock(&st.planhat.store);
    let Some(i) = position(&s.projects, &id) else {
        return msg(StatusCode::NOT_FOUND, "Not found");
    };
    let p = &mut s.projects[i];
    for (k, v) in patch {
        p[&k] = v;
    }
    p["updatedAt"] = Value::String(now);
    json_response(StatusCode::OK, p.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, start_sim, Auth};
    use crate::sim::{SimRateLimits, Vendor};

    #[tokio::test]
    async fn bulk_upsert_reports_per_item_and_throttles() {
        let sim = start_sim(3, SimRateLimits::unlimited()).await;
        let w = sim.world();
        let url = format!("{}/companies", sim.base_url(Vendor::Planhat));
        let good = &w.accounts[0].hubspot_id;
        let body = json!([
            {"externalId": good, "custom": {"Health": 42}},
            {"externalId": w.accounts[1].hubspot_id, "custom": {"Health": {"x": 1}}},
            {"externalId": "nope", "custom": {"Health": 1}},
        ]);
        let r = call("PUT", &url, Auth::Bearer(API_TOKEN), Some(&body)).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body["updated"], 1);
        assert_eq!(r.body["updatesKeys"][0]["externalId"], good.as_str());
        assert_eq!(
            r.body["updatedErrors"][0]["item"]["externalId"],
            w.accounts[1].hubspot_id.as_str()
        );
        assert_eq!(r.body["createdErrors"][0]["item"]["externalId"], "nope");
        let same = json!([{"externalId": good, "custom": {"Health": 42}}]);
        let r = call("PUT", &url, Auth::Bearer(API_TOKEN), Some(&same)).await;
        assert_eq!((r.status, r.body["nonupdates"].as_i64()), (200, Some(1)));
        let r = call("PUT", &url, Auth::Bearer("wrong"), Some(&same)).await;
        assert_eq!(r.status, 401);

        let log = sim.received();
        assert_eq!(log.len(), 2, "the refused token is not logged");
        assert_eq!(log[0].path, "/planhat/companies");
        let state = call(
            "GET",
            &format!("http://{}/_sim/state/planhat", sim.addr()),
            Auth::None,
            None,
        )
        .await;
        assert_eq!(state.body["companies"][0]["custom"], json!({"Health": 42}));

        sim.state.planhat.budget.set(1);
        let lean = format!(
            "{}/leancompanies?externalId={good}",
            sim.base_url(Vendor::Planhat)
        );
        let ok = call("GET", &lean, Auth::Bearer(API_TOKEN), None).await;
        assert_eq!(ok.body[0]["externalId"], good.as_str());
        let r = call("GET", &lean, Auth::Bearer(API_TOKEN), None).await;
        assert_eq!(r.status, 429);
        let wait: u64 = r.header("retry-after").parse().expect("seconds");
        assert!((1..=60).contains(&wait));
    }
}
