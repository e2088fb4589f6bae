//! Simulated Salesforce write side, for the `salesforce_sink` kind: Account field updates (one sObject,
//! or sObject Collections), Task creation, Task status updates, and the two SOQL shapes the sink asks
//! (`SELECT … FROM Account WHERE <field> IN ('…')` and `SELECT … FROM Task WHERE Healthsync_Key__c LIKE
//! '<prefix>%'`). Mounted behind the `/salesforce` gate, so sessions, `Sforce-Limit-Info` and 403
//! `REQUEST_LIMIT_EXCEEDED` apply as for the reads.
//!
//! The org's Account has the custom fields `connectors/salesforce_sink.toml` maps (`Health_Score__c`
//! and friends; the score fields must be numbers from 0 to 100, a validation rule answering
//! `FIELD_CUSTOM_VALIDATION_EXCEPTION`); Task has `Healthsync_Key__c` (External ID, Unique: a second
//! Task with the same key is `DUPLICATE_VALUE`) and a restricted `Status` picklist. An unknown field
//! fails the whole request (400 `INVALID_FIELD`), as a body Salesforce cannot deserialise does; an
//! unknown record Id fails only its record (`INVALID_CROSS_REFERENCE_KEY`), with per-record results in
//! request order; `allOrNone: true` is not simulated (refused). Error texts are modelled on
//! Salesforce's, not verified. Created Tasks are not visible to the source's `tasks` stream. Writes are
//! logged at `/salesforce/_sim/received`; state at `/salesforce/_sim/state`.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::response::IntoResponse;
use axum::routing::{get, patch};

use super::*;
use crate::sim::ReceivedRequest;

/// The Account custom fields the simulated org has; the first four are numbers from 0 to 100.
const ACCOUNT_FIELDS: [&str; 7] = [
    "Health_Score__c",
    "Health_Usage__c",
    "Health_Engagement__c",
    "Health_Financial__c",
    "Health_Band__c",
    "Health_Coverage__c",
    "Health_Top_Risk__c",
];
const TASK_FIELDS: [&str; 8] = [
    "Subject",
    "Description",
    "ActivityDate",
    "Status",
    "Priority",
    "WhatId",
    "OwnerId",
    "Healthsync_Key__c",
];
const TASK_STATUSES: [&str; 5] = [
    "Not Started",
    "In Progress",
    "Completed",
    "Waiting on someone else",
    "Deferred",
];

#[derive(Default)]
pub(crate) struct WriteState {
    inner: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    /// Account Id → fields written.
    accounts: BTreeMap<String, Map<String, Value>>,
    /// Task Id → fields.
    tasks: BTreeMap<String, Map<String, Value>>,
    received: Vec<ReceivedRequest>,
}

impl WriteState {
    /// Written Account fields by Id, and every created Task.
    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.inner);
        json!({"accounts": s.accounts, "tasks": s.tasks})
    }

    #[cfg(test)]
    pub(crate) fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.inner).received.clone()
    }
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/services/data/{version}/sobjects/Account/{id}",
            patch(patch_account),
        )
        .route(
            "/services/data/{version}/composite/sobjects",
            patch(patch_collection),
        )
        .route("/services/data/{version}/sobjects/Task", post(create_task))
}

pub(crate) fn introspection() -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/_sim/received",
            get(|State(st): State<Arc<SimState>>| async move {
                json_response(
                    StatusCode::OK,
                    json!(lock(&st.salesforce.write.inner).received),
                )
            }),
        )
        .route(
            "/_sim/state",
            get(|State(st): State<Arc<SimState>>| async move {
                json_response(StatusCode::OK, st.salesforce.write.snapshot())
            }),
        )
}

fn record(st: &SimState, method: &str, uri: &Uri, body: &Bytes) -> Result<Value, Response> {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    lock(&st.salesforce.write.inner)
        .received
        .push(ReceivedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            body: parsed.clone(),
        });
    if parsed.is_object() {
        Ok(parsed)
    } else {
        Err(errors(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "Unexpected character: was expecting a JSON object",
        ))
    }
}

/// The Account Ids of the generated org.
fn account_exists(sf: &SalesforceState, id: &str) -> bool {
    sf.tables
        .get("Account")
        .is_some_and(|t| t.rows.iter().any(|(_, rid, _)| rid == id))
}

/// Checks every field name first (an unknown one fails the whole request), then the values.
fn unknown_field<'a>(object: &str, rec: &'a Map<String, Value>) -> Option<&'a str> {
    let known: &[&str] = if object == "Account" {
        &ACCOUNT_FIELDS
    } else {
        &TASK_FIELDS
    };
    rec.keys()
        .map(String::as_str)
        .find(|k| !["attributes", "id", "Id"].contains(k) && !known.contains(k))
}

fn invalid_field(object: &str, field: &str) -> Response {
    errors(
        StatusCode::BAD_REQUEST,
        "INVALID_FIELD",
        &format!("No such column '{field}' on sobject of type {object}"),
    )
}

/// A record-level problem: `(statusCode, message, fields)`.
fn check_values(
    object: &str,
    rec: &Map<String, Value>,
) -> Option<(&'static str, String, Vec<String>)> {
    if object == "Account" {
        for f in &ACCOUNT_FIELDS[..4] {
            match rec.get(*f) {
                None | Some(Value::Null) => {}
                Some(v) if v.as_f64().is_some_and(|n| (0.0..=100.0).contains(&n)) => {}
                Some(_) => {
                    return Some((
                        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                        format!("{f} must be a number from 0 to 100"),
                        vec![f.to_string()],
                    ))
                }
            }
        }
    } else if let Some(s) = rec.get("Status").and_then(Value::as_str) {
        if !TASK_STATUSES.contains(&s) {
            return Some((
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                format!("Status: bad value for restricted picklist field: {s}"),
                vec!["Status".into()],
            ));
        }
    }
    None
}

async fn patch_account(
    State(st): State<Arc<SimState>>,
    Path((_v, id)): Path<(String, String)>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rec = match record(&st, "PATCH", &uri, &body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return errors(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                "expected an object",
            )
        }
        Err(r) => return r,
    };
    if let Some(f) = unknown_field("Account", &rec) {
        return invalid_field("Account", f);
    }
    if !account_exists(&st.salesforce, &id) {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    }
    if let Some((code, msg, _)) = check_values("Account", &rec) {
        return errors(StatusCode::BAD_REQUEST, code, &msg);
    }
    lock(&st.salesforce.write.inner)
        .accounts
        .entry(id)
        .or_default()
        .extend(rec);
    StatusCode::NO_CONTENT.into_response()
}

async fn patch_collection(State(st): State<Arc<SimState>>, uri: Uri, body: Bytes) -> Response {
    let b = match record(&st, "PATCH", &uri, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.get("allOrNone") == Some(&Value::Bool(true)) {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "the simulator supports only allOrNone: false",
        );
    }
    let Some(records) = b.get("records").and_then(Value::as_array) else {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "records is required",
        );
    };
    if records.len() > 200 {
        return errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    let mut parsed = Vec::new();
    for r in records {
        let Some(m) = r.as_object() else {
            return errors(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                "each record must be an object",
            );
        };
        let object = r
            .pointer("/attributes/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if object != "Account" && object != "Task" {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                "each record needs attributes.type Account or Task",
            );
        }
        if let Some(f) = unknown_field(object, m) {
            return invalid_field(object, f);
        }
        parsed.push((object, m.clone()));
    }
    let mut s = lock(&st.salesforce.write.inner);
    let results: Vec<Value> = parsed
        .into_iter()
        .map(|(object, mut m)| {
            let id = m.get("id").and_then(Value::as_str).unwrap_or("").to_string();
            let exists = if object == "Account" { account_exists(&st.salesforce, &id) } else { s.tasks.contains_key(&id) };
            if !exists {
                return json!({"success": false, "errors": [{"statusCode": "INVALID_CROSS_REFERENCE_KEY", "message": "invalid cross reference id", "fields": []}]});
            }
            if let Some((code, msg, fields)) = check_values(object, &m) {
                return json!({"id": id, "success": false, "errors": [{"statusCode": code, "message": msg, "fields": fields}]});
            }
            m.remove("attributes");
            m.remove("id");
            let target = if object == "Account" { s.accounts.entry(id.clone()).or_default() } else { s.tasks.entry(id.clone()).or_default() };
            target.extend(m);
            json!({"id": id, "success": true, "errors": []})
        })
        .collect();
    json_response(StatusCode::OK, Value::Array(results))
}

async fn create_task(State(st): State<Arc<SimState>>, uri: Uri, body: Bytes) -> Response {
    let rec = match record(&st, "POST", &uri, &body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return errors(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                "expected an object",
            )
        }
        Err(r) => return r,
    };
    if let Some(f) = unknown_field("Task", &rec) {
        return invalid_field("Task", f);
    }
    if let Some((code, msg, _)) = check_values("Task", &rec) {
        return errors(StatusCode::BAD_REQUEST, code, &msg);
    }
    let what = rec.get("WhatId").and_then(Value::as_str).unwrap_or("");
    if !account_exists(&st.salesforce, what) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!([{"message": "Related To ID: id value of incorrect type: ".to_string() + what, "errorCode": "INVALID_CROSS_REFERENCE_KEY", "fields": ["WhatId"]}]),
        );
    }
    let mut s = lock(&st.salesforce.write.inner);
    if let Some(key) = rec.get("Healthsync_Key__c").and_then(Value::as_str) {
        if let Some((dup, _)) = s
            .tasks
            .iter()
            .find(|(_, t)| t.get("Healthsync_Key__c").and_then(Value::as_str) == Some(key))
        {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!([{"message": format!("duplicate value found: Healthsync_Key__c duplicates value on record with id: {dup}"), "errorCode": "DUPLICATE_VALUE", "fields": []}]),
            );
        }
    }
    let id = format!("00TSIM{:012}", s.tasks.len() + 1);
    let mut stored = rec;
    stored
        .entry("Status".to_string())
        .or_insert(json!("Not Started"));
    s.tasks.insert(id.clone(), stored);
    json_response(
        StatusCode::CREATED,
        json!({"id": id, "success": true, "errors": []}),
    )
}

/// Answers the sink's two SOQL shapes; `None` hands the query to the read side's parser.
pub(crate) fn query(st: &SimState, version: &str, q: &str) -> Option<Response> {
    let upper = q.to_ascii_uppercase();
    let from = upper.find(" FROM ")?;
    let rest = &q[from + 6..];
    let object = rest.split_whitespace().next()?;
    let where_at = upper.find(" WHERE ")?;
    let cond = q[where_at + 7..].trim();
    let fields: Vec<&str> = q[7..from].split(',').map(str::trim).collect();
    let render = |object: &str, id: &str, row: &Map<String, Value>| {
        let mut out = Map::new();
        out.insert("attributes".into(), json!({"type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}")}));
        for f in &fields {
            let v = match *f {
                "Id" => json!(id),
                "IsClosed" => json!(row.get("Status").and_then(Value::as_str) == Some("Completed")),
                other => row.get(other).cloned().unwrap_or(Value::Null),
            };
            out.insert((*f).to_string(), v);
        }
        Value::Object(out)
    };
    let records: Vec<Value> = if object.eq_ignore_ascii_case("Task") {
        let (field, pattern) = cond.split_once(" LIKE ")?;
        let prefix = pattern
            .trim()
            .strip_prefix('\'')?
            .strip_suffix("%'")?
            .replace("\\_", "_")
            .replace("\\%", "%")
            .replace("\\'", "'");
        let s = lock(&st.salesforce.write.inner);
        s.tasks
            .iter()
            .filter(|(_, t)| {
                t.get(field.trim())
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.starts_with(&prefix))
            })
            .map(|(id, t)| render("Task", id, t))
            .collect()
    } else if object.eq_ignore_ascii_case("Account") {
        let (field, list) = cond.split_once(" IN ")?;
        let wanted: Vec<String> = list
            .trim()
            .strip_prefix('(')?
            .strip_suffix(')')?
            .split(',')
            .map(|v| v.trim().trim_matches('\'').replace("\\'", "'"))
            .collect();
        let table = st.salesforce.tables.get("Account")?;
        table
            .rows
            .iter()
            .filter(|(_, _, row)| {
                row.get(field.trim())
                    .and_then(Value::as_str)
                    .is_some_and(|v| wanted.iter().any(|w| w == v))
            })
            .map(|(_, id, row)| render("Account", id, row))
            .collect()
    } else {
        return None;
    };
    Some(json_response(
        StatusCode::OK,
        json!({"totalSize": records.len(), "done": true, "records": records}),
    ))
}

#[cfg(test)]
#[path = "salesforce_write_tests.rs"]
mod tests;
