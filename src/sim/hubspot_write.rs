//! Simulated HubSpot write side, for the `hubspot_sink` kind: company property updates (single and
//! batch), tasks (create, search, batch update). Mounted into the `/hubspot` router behind its gate, so
//! the same Bearer token, ten-secondly limit, daily limit and 429 bodies apply as for the reads.
//!
//! Shapes follow `specs/hubspot` (companies and tasks): batch responses are 200 with `results`, or 207
//! with `results`, `errors` (`StandardError`: `status`, `category`, `message`, `context`, `errors`,
//! `links`) and `numErrors`; errors name the input by `context.objectWriteTraceId` when the input had one,
//! else by `context.ids`. Company property names must be a readable company property (see `hubspot`) or
//! one of the custom `healthsync_*` properties that `connectors/hubspot_sink.toml` maps;
//! anything else is `VALIDATION_ERROR` / `PROPERTY_DOESNT_EXIST`. Unknown companies or tasks are
//! `OBJECT_NOT_FOUND`. Task search understands `EQ` filters on `associations.company`, `hs_task_subject`
//! and `hs_task_status`, `limit` 1..=200 and an offset `after`. Error texts are modelled on HubSpot's but
//! not verified. Writes are logged at `/hubspot/_sim/received`; companies' written properties and the
//! tasks are at `/hubspot/_sim/state`. It does not own auth or rate limits (`hubspot`).

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::sim::{iso_ms, json_response, lock, ReceivedRequest, SimState};

const BATCH_MAX: usize = 100;
const TASK_STATUSES: [&str; 5] = [
    "NOT_STARTED",
    "IN_PROGRESS",
    "WAITING",
    "COMPLETED",
    "DEFERRED",
];
/// The custom company properties the simulated portal has: those `connectors/hubspot_sink.toml` maps.
const CUSTOM: [&str; 7] = [
    "healthsync_score",
    "healthsync_band",
    "healthsync_coverage",
    "healthsync_top_risk",
    "healthsync_usage",
    "healthsync_engagement",
    "healthsync_financial",
];
/// Readable standard company properties a write may also set.
const STANDARD: [&str; 6] = [
    "name",
    "domain",
    "industry",
    "numberofemployees",
    "hubspot_owner_id",
    "description",
];

#[derive(Default)]
pub(crate) struct WriteState {
    inner: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    /// Company id → properties written through the API.
    companies: BTreeMap<String, Map<String, Value>>,
    tasks: Vec<Task>,
    received: Vec<ReceivedRequest>,
}

struct Task {
    id: String,
    company: String,
    properties: Map<String, Value>,
    created_at: String,
}

/// Routes served behind the HubSpot gate.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/crm/v3/objects/companies/{id}", patch(patch_company))
        .route(
            "/crm/v3/objects/companies/batch/update",
            post(batch_companies),
        )
        .route("/crm/v3/objects/tasks", post(create_task))
        .route("/crm/v3/objects/tasks/search", post(search_tasks))
        .route("/crm/v3/objects/tasks/batch/update", post(batch_tasks))
}

/// Introspection, outside the gate.
pub(crate) fn introspection() -> Router<Arc<SimState>> {
    Router::new()
        .route("/_sim/received", get(received))
        .route("/_sim/state", get(state))
}

fn error(st: &SimState, status: StatusCode, category: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"status": "error", "message": message, "correlationId": st.next_uuid(), "category": category}),
    )
}

fn record(
    st: &SimState,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Map<String, Value>, Response> {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    lock(&st.hubspot.write.inner)
        .received
        .push(ReceivedRequest {
            method: method.to_string(),
            path: path.to_string(),
            body: parsed.clone(),
        });
    match parsed {
        Value::Object(m) => Ok(m),
        _ => Err(error(st, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "Invalid input JSON on line 1, column 1: Cannot build input, the body must be a JSON object")),
    }
}

fn company_exists(st: &SimState, id: &str) -> bool {
    st.world.accounts.iter().any(|a| a.hubspot_id == id)
}

fn writable(name: &str) -> bool {
    CUSTOM.contains(&name) || STANDARD.contains(&name)
}

/// Checks a `properties` object: every name writable, every value a scalar. The error is HubSpot's text.
fn check_properties(props: Option<&Value>) -> Result<Map<String, Value>, (String, String)> {
    let Some(Value::Object(p)) = props else {
        return Err((
            "INVALID_INPUT".into(),
            "properties must be an object of property name to value".into(),
        ));
    };
    for (k, v) in p {
        if !writable(k) {
            return Err((
                "PROPERTY_DOESNT_EXIST".into(),
                format!("Property \"{k}\" does not exist"),
            ));
        }
        if v.is_object() || v.is_array() {
            return Err((
                "INVALID_PROPERTY_VALUE".into(),
                format!("Property \"{k}\" must be a string"),
            ));
        }
    }
    Ok(p.clone())
}

fn apply(store: &mut Store, company: &str, props: Map<String, Value>) -> Value {
    let stored = store.companies.entry(company.to_string()).or_default();
    for (k, v) in props {
        let text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        stored.insert(k, Value::String(text));
    }
    json!({"id": company, "properties": stored.clone(), "archived": false,
           "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2026-11-23T12:00:00.000Z"})
}

async fn patch_company(
    State(st): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let b = match record(
        &st,
        &Method::PATCH,
        &format!("/crm/v3/objects/companies/{id}"),
        &body,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !company_exists(&st, &id) {
        return error(
            &st,
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        );
    }
    match check_properties(b.get("properties")) {
        Ok(props) => {
            let obj = apply(&mut lock(&st.hubspot.write.inner), &id, props);
            json_response(StatusCode::OK, obj)
        }
        Err((code, msg)) => {
            let detail = json!([{"isValid": false, "message": msg, "error": code}]);
            error(
                &st,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Property values were not valid: {detail}"),
            )
        }
    }
}

fn inputs(st: &SimState, b: &Map<String, Value>) -> Result<Vec<Value>, Response> {
    match b.get("inputs").and_then(Value::as_array) {
        Some(i) if i.len() <= BATCH_MAX => Ok(i.clone()),
        Some(_) => Err(error(
            st,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Batch size must be no more than 100",
        )),
        None => Err(error(
            st,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "inputs is required",
        )),
    }
}

/// One item error, naming the input by its trace id when it has one, else by its id.
fn item_error(
    st: &SimState,
    input: &Value,
    category: &str,
    message: &str,
    code: Option<&str>,
) -> Value {
    let context = match input.get("objectWriteTraceId").and_then(Value::as_str) {
        Some(t) => json!({"objectWriteTraceId": [t]}),
        None => json!({"ids": [input.get("id").cloned().unwrap_or(Value::Null)]}),
    };
    let details = match code {
        Some(c) => json!([{"message": message, "code": c}]),
        None => json!([]),
    };
    json!({"status": "error", "category": category, "message": message, "context": context,
           "errors": details, "links": {}, "id": st.next_uuid()})
}

fn batch_reply(st: &SimState, results: Vec<Value>, errors: Vec<Value>) -> Response {
    let now = iso_ms(st.clock());
    let mut body =
        json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now});
    if errors.is_empty() {
        return json_response(StatusCode::OK, body);
    }
    body["numErrors"] = json!(errors.len());
    body["errors"] = Value::Array(errors);
    json_response(StatusCode::MULTI_STATUS, body)
}

async fn batch_companies(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let b = match record(
        &st,
        &Method::POST,
        "/crm/v3/objects/companies/batch/update",
        &body,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let items = match inputs(&st, &b) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in &items {
        let id = input.get("id").and_then(Value::as_str).unwrap_or("");
        if !company_exists(&st, id) {
            let msg = "Could not get some COMPANY objects, they may be deleted or not exist. Check that ids are valid.";
            errors.push(item_error(&st, input, "OBJECT_NOT_FOUND", msg, None));
            continue;
        }
        match check_properties(input.get("properties")) {
            Ok(props) => {
                let mut obj = apply(&mut lock(&st.hubspot.write.inner), id, props);
                if let Some(t) = input.get("objectWriteTraceId") {
                    obj["objectWriteTraceId"] = t.clone();
                }
                results.push(obj);
            }
            Err((code, msg)) => errors.push(item_error(
                &st,
                input,
                "VALIDATION_ERROR",
                &msg,
                Some(&code),
            )),
        }
    }
    batch_reply(&st, results, errors)
}

fn task_json(t: &Task, wanted: &[String]) -> Value {
    let mut props = Map::new();
    props.insert("hs_object_id".into(), Value::String(t.id.clone()));
    for name in wanted {
        if let Some(v) = t.properties.get(name) {
            props.insert(name.clone(), v.clone());
        }
    }
    json!({"id": t.id, "properties": props, "createdAt": t.created_at, "updatedAt": t.created_at, "archived": false})
}

async fn create_task(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let b = match record(&st, &Method::POST, "/crm/v3/objects/tasks", &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(Value::Object(props)) = b.get("properties") else {
        return error(
            &st,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "properties is required",
        );
    };
    if !props.get("hs_timestamp").is_some_and(Value::is_string) {
        return error(
            &st,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Property values were not valid: hs_timestamp is required",
        );
    }
    if let Some(s) = props.get("hs_task_status").and_then(Value::as_str) {
        if !TASK_STATUSES.contains(&s) {
            return error(
                &st,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Property values were not valid: {s} was not one of the allowed options"),
            );
        }
    }
    let assoc = b
        .get("associations")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let company = assoc.and_then(|a| a.pointer("/to/id")).and_then(|v| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.as_u64().map(|n| n.to_string()))
    });
    let type_id = assoc
        .and_then(|a| a.pointer("/types/0/associationTypeId"))
        .and_then(Value::as_u64);
    let Some(company) = company.filter(|c| company_exists(&st, c) && type_id == Some(192)) else {
        return error(&st, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "One or more associations are invalid: a task must be associated to an existing company with type 192");
    };
    let now = iso_ms(st.clock());
    let mut s = lock(&st.hubspot.write.inner);
    let id = format!("9{:010}", s.tasks.len() + 1);
    let task = Task {
        id,
        company,
        properties: props.clone(),
        created_at: now,
    };
    let out = task_json(&task, &props.keys().cloned().collect::<Vec<_>>());
    s.tasks.push(task);
    json_response(StatusCode::CREATED, out)
}

async fn search_tasks(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let limit = b.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    if !(1..=200).contains(&limit) {
        return error(
            &st,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "limit must be between 1 and 200",
        );
    }
    let offset = b
        .get("after")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(0);
    let mut filters = Vec::new();
    for f in b
        .pointer("/filterGroups/0/filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some("EQ"), Some(value)) = (
            f.get("propertyName").and_then(Value::as_str),
            f.get("operator").and_then(Value::as_str),
            f.get("value").and_then(Value::as_str),
        ) else {
            return error(
                &st,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "the simulator supports only EQ filters with string values",
            );
        };
        filters.push((name.to_string(), value.to_string()));
    }
    let wanted: Vec<String> = b
        .get("properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let s = lock(&st.hubspot.write.inner);
    let hits: Vec<&Task> = s
        .tasks
        .iter()
        .filter(|t| {
            filters.iter().all(|(name, value)| match name.as_str() {
                "associations.company" => &t.company == value,
                other => t
                    .properties
                    .get(other)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(value)),
            })
        })
        .collect();
    let page: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|t| task_json(t, &wanted))
        .collect();
    let mut out = json!({"total": hits.len(), "results": page});
    if offset + limit < hits.len() {
        out["paging"] = json!({"next": {"after": (offset + limit).to_string()}});
    }
    json_response(StatusCode::OK, out)
}

async fn batch_tasks(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let b = match record(
        &st,
        &Method::POST,
        "/crm/v3/objects/tasks/batch/update",
        &body,
    ) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let items = match inputs(&st, &b) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in &items {
        let id = input.get("id").and_then(Value::as_str).unwrap_or("");
        let Some(Value::Object(props)) = input.get("properties") else {
            errors.push(item_error(
                &st,
                input,
                "VALIDATION_ERROR",
                "properties is required",
                None,
            ));
            continue;
        };
        let mut s = lock(&st.hubspot.write.inner);
        match s.tasks.iter_mut().find(|t| t.id == id) {
            Some(t) => {
                t.properties.extend(props.clone());
                results.push(task_json(t, &props.keys().cloned().collect::<Vec<_>>()));
            }
            None => errors.push(item_error(&st, input, "OBJECT_NOT_FOUND", "Could not get some TASK objects, they may be deleted or not exist. Check that ids are valid.", None)),
        }
    }
    batch_reply(&st, results, errors)
}

async fn received(State(st): State<Arc<SimState>>) -> Response {
    json_response(
        StatusCode::OK,
        json!(lock(&st.hubspot.write.inner).received),
    )
}

async fn state(State(st): State<Arc<SimState>>) -> Response {
    json_response(StatusCode::OK, st.hubspot.write.snapshot())
}

impl WriteState {
    /// Written company properties by company id, and every task with its company and properties.
    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.inner);
        let tasks: Vec<Value> = s
            .tasks
            .iter()
            .map(|t| json!({"id": t.id, "company": t.company, "properties": t.properties}))
            .collect();
        json!({"companies": s.companies, "tasks": tasks})
    }

    #[cfg(test)]
    pub(crate) fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.inner).received.clone()
    }
}

#[cfg(test)]
#[path = "hubspot_write_tests.rs"]
mod tests;
