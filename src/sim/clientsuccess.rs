//! Simulated ClientSuccess Open API, under `/clientsuccess`, for the `clientsuccess` sink kind.
//!
//! Owns: `POST /v1/auth` (JSON or form `username`/`password`; [`EMAIL`]/[`PASSWORD`] get
//! `{"access_token","token_type":"Bearer","expires_in":43200}`, anything else 401), the bare
//! `Authorization: <token>` check on every other route (401 `{"error":"invalidToken"}`), a per-minute
//! budget (429 with `Retry-After`), `GET /v1/clients?externalId=` (the client, or 404), `PATCH
//! /v1/customfield/value/client/<id>` (custom field values by label), the client's to-dos (`GET`/`POST
//! /v1/clients/<id>/to-dos`, `PUT /v1/clients/<id>/to-dos/<to-do id>`), and the state behind
//! `/_sim/state/clientsuccess`. Writes go to the shared `/_sim/received` log as `/clientsuccess/...`; the
//! login is not logged (its body is a password). One client per simulated company: id 7001, 7002, … and
//! external id = the HubSpot id.
//!
//! Per the client libraries the kind cites: the login, the bare token, the client lookup and the custom
//! field route. Ours (unverified): the to-do shape (`id`, `clientId`, `name`, `description`, `dueDate`,
//! `completed`), the error bodies (`{"userMessage"}`), that an unknown custom field label or a non-number
//! for a NUMBER field is a 400 that applies nothing, the custom fields the instance defines
//! ([`CUSTOM_FIELDS`]) and the budget. It does not own the population (`world`).

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post, put};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::sim::sink_log::{record, MinuteBudget};
use crate::sim::world::World;
use crate::sim::{ceil_secs, json_response, lock, query_pairs, SimState};

/// The API user's login the simulated instance accepts.
pub const EMAIL: &str = "api-access@healthsync.example";
pub const PASSWORD: &str = "clientsuccess-sim-password";
/// The client custom fields the simulated instance defines: label and type.
pub const CUSTOM_FIELDS: &[(&str, FieldType)] = &[
    ("Health Score", FieldType::Number),
    ("Health Band", FieldType::String),
    ("Health Coverage", FieldType::Number),
    ("Health Top Risk", FieldType::String),
    ("Health Usage", FieldType::Number),
    ("Health Engagement", FieldType::Number),
    ("Health Financial", FieldType::Number),
];
const FIRST_CLIENT_ID: u64 = 7001;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Number,
    String,
}

pub(crate) struct ClientSuccessState {
    pub(crate) budget: MinuteBudget,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    tokens: BTreeSet<String>,
    logins: u64,
    /// client id → (external id, name, custom field values by label).
    clients: BTreeMap<u64, (String, String, Map<String, Value>)>,
    todos: Vec<Value>,
    next_todo: u64,
}

impl ClientSuccessState {
    pub(crate) fn new(w: &World, per_min: u32) -> ClientSuccessState {
        let mut store = Store {
            next_todo: 1,
            ..Store::default()
        };
        for (i, a) in w.accounts.iter().enumerate() {
            store.clients.insert(
                FIRST_CLIENT_ID + i as u64,
                (a.hubspot_id.clone(), a.name.clone(), Map::new()),
            );
        }
        ClientSuccessState {
            budget: MinuteBudget::new(per_min),
            store: Mutex::new(store),
        }
    }

    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.store);
        let clients: Vec<Value> = s
            .clients
            .iter()
            .map(|(id, (ext, name, custom))| {
                json!({"id": id, "externalId": ext, "name": name, "custom": custom})
            })
            .collect();
        json!({"clients": clients, "todos": s.todos, "logins": s.logins})
    }

    /// Forgets every issued token, as a token expiring would: the next call answers 401.
    #[cfg(test)]
    pub(crate) fn expire_tokens(&self) {
        lock(&self.store).tokens.clear();
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    let api = Router::new()
        .route("/v1/clients", get(find_client))
        .route("/v1/customfield/value/client/{id}", patch(set_custom))
        .route("/v1/clients/{id}/to-dos", get(list_todos).post(create_todo))
        .route("/v1/clients/{id}/to-dos/{todo}", put(update_todo))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate));
    Router::new().route("/v1/auth", post(login)).merge(api)
}

pub(crate) async fn sim_state(State(st): State<Arc<SimState>>) -> Response {
    json_response(StatusCode::OK, st.clientsuccess.snapshot())
}

fn user_error(status: StatusCode, m: &str) -> Response {
    json_response(status, json!({ "userMessage": m }))
}

fn too_many(wait: std::time::Duration) -> Response {
    let mut r = user_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(ceil_secs(wait).max(1)));
    r
}

async fn login(State(st): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err((_, wait)) = st.clientsuccess.budget.take() {
        return too_many(wait);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let creds: Option<(String, String)> = if json {
        serde_json::from_slice::<Value>(&body).ok().map(|v| {
            let f = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (f("username"), f("password"))
        })
    } else {
        format!("/?{}", String::from_utf8_lossy(&body))
            .parse::<Uri>()
            .ok()
            .and_then(|u| query_pairs(&u).ok())
            .map(|pairs| {
                let f = |k: &str| {
                    pairs
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                (f("username"), f("password"))
            })
    };
    if creds != Some((EMAIL.to_string(), PASSWORD.to_string())) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_grant", "error_description": "Bad credentials"}),
        );
    }
    let token = st.next_uuid();
    let mut s = lock(&st.clientsuccess.store);
    s.tokens.insert(token.clone());
    s.logins += 1;
    json_response(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 43200}),
    )
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !lock(&st.clientsuccess.store).tokens.contains(token) {
        return json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalidToken"}));
    }
    if let Err((_, wait)) = st.clientsuccess.budget.take() {
        return too_many(wait);
    }
    match record(&st, "/clientsuccess", req).await {
        Ok(req) => next.run(req).await,
        Err(r) => r,
    }
}

fn client_json(id: u64, ext: &str, name: &str, custom: &Map<String, Value>) -> Value {
    let values: Vec<Value> = CUSTOM_FIELDS
        .iter()
        .map(|(label, kind)| {
            json!({"label": label, "type": format!("{kind:?}").to_uppercase(),
                   "value": custom.get(*label).cloned().unwrap_or(Value::Null)})
        })
        .collect();
    json!({"id": id, "externalId": ext, "name": name, "customFieldValues": values})
}

async fn find_client(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = query_pairs(&uri).unwrap_or_default();
    let Some((_, ext)) = pairs.iter().find(|(k, _)| k == "externalId") else {
        let s = lock(&st.clientsuccess.store);
        let all: Vec<Value> = s
            .clients
            .iter()
            .map(|(id, (e, n, c))| client_json(*id, e, n, c))
            .collect();
        return json_response(StatusCode::OK, Value::Array(all));
    };
    let s = lock(&st.clientsuccess.store);
    match s.clients.iter().find(|(_, (e, _, _))| e == ext) {
        Some((id, (e, n, c))) => json_response(StatusCode::OK, client_json(*id, e, n, c)),
        None => user_error(StatusCode::NOT_FOUND, "Client not found"),
    }
}

fn check_value(label: &str, v: &Value) -> Result<(), String> {
    let Some((_, kind)) = CUSTOM_FIELDS.iter().find(|(l, _)| *l == label) else {
        return Err(format!("Unknown custom field: {label}"));
    };
    let ok = match (kind, v) {
        (_, Value::Null) => true,
        (FieldType::Number, Value::Number(_)) => true,
        (FieldType::Number, Value::String(s)) => s.is_empty() || s.parse::<f64>().is_ok(),
        (FieldType::String, Value::String(_) | Value::Number(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid value for custom field {label}"))
    }
}

async fn set_custom(State(st): State<Arc<SimState>>, Path(id): Path<u64>, body: Bytes) -> Response {
    let Ok(Value::Object(values)) = serde_json::from_slice::<Value>(&body) else {
        return user_error(StatusCode::BAD_REQUEST, "Body must be a JSON object");
    };
    // Check every value before applying any: a refused call changes nothing.
    for (label, v) in &values {
        if let Err(m) = check_value(label, v) {
            return user_error(StatusCode::BAD_REQUEST, &m);
        }
    }
    let mut s = lock(&st.clientsuccess.store);
    let Some((_, _, custom)) = s.clients.get_mut(&id) else {
        return user_error(StatusCode::NOT_FOUND, "Client not found");
    };
    for (label, v) in values {
        if v.is_null() {
            custom.remove(&label);
        } else {
            custom.insert(label, v);
        }
    }
    json_response(StatusCode::OK, json!({}))
}

async fn list_todos(State(st): State<Arc<SimState>>, Path(id): Path<u64>) -> Response {
    let s = lock(&st.clientsuccess.store);
    if !s.clients.contains_key(&id) {
        return user_error(StatusCode::NOT_FOUND, "Client not found");
    }
    let mine: Vec<Value> = s
        .todos
        .iter()
        .filter(|t| t["clientId"] == json!(id))
        .cloned()
        .collect();
    json_response(StatusCode::OK, Value::Array(mine))
}

async fn create_todo(
    State(st): State<Arc<SimState>>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(t)) = serde_json::from_slice::<Value>(&body) else {
        return user_error(StatusCode::BAD_REQUEST, "Body must be a JSON object");
    };
    let name = t.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return user_error(StatusCode::BAD_REQUEST, "name is required");
    }
    let due = t.get("dueDate").and_then(Value::as_str).unwrap_or("");
    if chrono::NaiveDate::parse_from_str(due, "%Y-%m-%d").is_err() {
        return user_error(StatusCode::BAD_REQUEST, "dueDate must be YYYY-MM-DD");
    }
    let mut s = lock(&st.clientsuccess.store);
    if !s.clients.contains_key(&id) {
        return user_error(StatusCode::NOT_FOUND, "Client not found");
    }
    let todo_id = s.next_todo;
    s.next_todo += 1;
    let todo = json!({
        "id": todo_id,
        "clientId": id,
        "name": name,
        "description": t.get("description").cloned().unwrap_or(Value::Null),
        "dueDate": due,
        "completed": false,
    });
    s.todos.push(todo.clone());
    let mut r = json_response(StatusCode::CREATED, todo);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/clients/{id}/to-dos/{todo_id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn update_todo(
    State(st): State<Arc<SimState>>,
    Path((id, todo_id)): Path<(u64, u64)>,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(update)) = serde_json::from_slice::<Value>(&body) else {
        return user_error(StatusCode::BAD_REQUEST, "Body must be a JSON object");
    };
    let mut s = lock(&st.clientsuccess.store);
    let Some(todo) = s
        .todos
        .iter_mut()
        .find(|t| t["id"] == json!(todo_id) && t["clientId"] == json!(id))
    else {
        return user_error(StatusCode::NOT_FOUND, "To-do not found");
    };
    for key in ["name", "description", "dueDate", "completed"] {
        if let Some(v) = update.get(key) {
            todo[key] = v.clone();
        }
    }
    json_response(StatusCode::OK, todo.clone())
}

#[cfg(test)]
#[path = "clientsuccess_tests.rs"]
mod tests;
