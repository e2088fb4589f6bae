//! The `salesforce_sink` kind: Salesforce as the CS platform. Health fields become Account fields;
//! a playbook project becomes one Task record per project task, on the Account (`WhatId`).
//!
//! Auth is the engine's OAuth 2.0 (client-credentials or refresh-token grant), as for the `salesforce`
//! source; base URL is the org's My Domain URL. Every response's `Sforce-Limit-Info: api-usage=N/M` is
//! read (the source's parser, shared): once usage reaches `max_api_usage_percent` (default 90) writes
//! stop being sent and come back `Transient`, leaving the rest of the org's 24 h quota to other
//! integrations. 403 `REQUEST_LIMIT_EXCEEDED` is the source's classifier (shared): not retried.
//!
//! - Accounts: `account_id_field` (default `Id`) names the Account field that holds the write's
//!   `external_id`. With `Id` it is used as is; with another field (e.g. `HubSpot_Company_Id__c`) the
//!   Account Ids are looked up by SOQL (`SELECT Id, <field> FROM Account WHERE <field> IN (…)`) and kept
//!   for the life of the process. No matching Account → `Rejected` (nothing is ever created).
//! - `SetFields` → `PATCH /services/data/<v>/sobjects/Account/{Id}` with the mapped fields (numbers as
//!   JSON numbers, `null` clears) → 204. Batches → sObject Collections `PATCH /services/data/<v>/composite/sobjects`
//!   `{"allOrNone":false,"records":[{"attributes":{"type":"Account"},"id",…}]}` (≤200), answered with one
//!   `{id, success, errors:[{statusCode, message, fields}]}` per record in request order. A whole request
//!   refused with 400 (e.g. `INVALID_FIELD`: an unknown field fails deserialisation of the whole body) is
//!   resent record by record so the good ones land. Codes: `UNABLE_TO_LOCK_ROW` → `Transient`;
//!   `INVALID_CROSS_REFERENCE_KEY`, `ENTITY_IS_DELETED`, `NOT_FOUND`, `INSUFFICIENT_ACCESS*` → `Rejected`;
//!   anything else about the record (`INVALID_FIELD`, `STRING_TOO_LONG`, validation rules) → `Invalid`.
//! - `CreateProject` → Tasks carry the idempotency key `<key>/task-<n>` in `key_field` (default
//!   `Healthsync_Key__c`: a custom Text field on Task, marked External ID and Unique, that the admin
//!   creates). Before creating, `SELECT Id, Status, IsClosed, <key_field> FROM Task WHERE <key_field>
//!   LIKE '<key>/task-%'` finds what an earlier attempt made; only missing tasks are created with
//!   `POST /sobjects/Task` `{Subject, Description, ActivityDate, Status:"Not Started", Priority:"High",
//!   WhatId, <key_field>}` → 201 `{id, success, errors}`. A `DUPLICATE_VALUE` answer (the unique key
//!   exists) counts as present.
//! - `CloseProject` → the same query, then the open tasks get `Status: "Completed"` through sObject
//!   Collections. Nothing open left is `AlreadyPresent`. The recovery note is not written.
//!
//! Verified against Salesforce's REST docs (search tool): sObject Collections update (`allOrNone`,
//! ≤200 records, per-record results in request order), the sObject update (204) and create (201) shapes,
//! error bodies `[{message, errorCode, fields}]`, `Sforce-Limit-Info`. From ../shared/api [K], not
//! verified: the Task field values `Not Started`/`Completed`/`High` (org picklists can differ). Assumed:
//! that the key field exists as described; SOQL `LIKE` on it. This kind does not decide what to write
//! (the planner) nor when to retry (the outbox).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common;
use super::salesforce::{api_usage, is_api_version, is_field_name, DEFAULT_API_VERSION};
use super::sink_support::{self, BatchResults, CloseWrite, Errors, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{encode_segment, Call, Clock, HttpClient, JsonResponse, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, FieldValue, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "salesforce_sink",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[
        AuthScheme::OAuth2ClientCredentials,
        AuthScheme::OAuth2RefreshToken,
    ],
    // The binding quota is the org's daily allocation (Sforce-Limit-Info); this only smooths bursts.
    default_rate_limit: RateLimit::per_secs(25, 1),
    parse_params: read_params,
    limitations: &[
        "duplicate-free task creation needs a unique External ID field on Task (`key_field`)",
    ],
};

/// sObject Collections take at most 200 records per request.
pub const BATCH_MAX: usize = 200;
const PARAM_KEYS: &[&str] = &[
    "api_version",
    "account_id_field",
    "key_field",
    "max_api_usage_percent",
];

#[derive(Debug, Clone)]
pub struct Params {
    pub api_version: String,
    pub account_id_field: String,
    pub key_field: String,
    pub max_usage_percent: u32,
}

pub fn parse_params(params: &toml::Table) -> Result<Params, String> {
    common::check_keys(params, PARAM_KEYS)?;
    let api_version =
        common::string_param(params, "api_version")?.unwrap_or_else(|| DEFAULT_API_VERSION.into());
    if !is_api_version(&api_version) {
        return Err(format!(
            "`api_version` must look like v62.0, not `{api_version}`"
        ));
    }
    let field = |key: &str, default: &str| -> Result<String, String> {
        let f = common::string_param(params, key)?.unwrap_or_else(|| default.into());
        if is_field_name(&f) && !f.contains('.') {
            Ok(f)
        } else {
            Err(format!("`{key}` `{f}` is not a Salesforce field name"))
        }
    };
    let max_usage_percent = match params.get("max_api_usage_percent") {
        None => 90,
        Some(toml::Value::Integer(n)) if (1..=100).contains(n) => *n as u32,
        Some(_) => return Err("`max_api_usage_percent` must be an integer from 1 to 100".into()),
    };
    Ok(Params {
        api_version,
        account_id_field: field("account_id_field", "Id")?,
        key_field: field("key_field", "Healthsync_Key__c")?,
        max_usage_percent,
    })
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    parse_params(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let params = ctx.params::<Params>()?.clone();
    let http =
        HttpClient::new(ctx.connector, ctx.secrets)?.with_classifier(super::salesforce::classify);
    Ok(Built::Sink(Box::new(SalesforceSink::new(
        http,
        params,
        Arc::new(SystemClock),
    ))))
}

/// A SOQL string literal's inside: `\` and `'` escaped (and, for LIKE, `%` and `_`).
fn soql_escape(s: &str, like: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '\'' => out.push('\\'),
            '%' | '_' if like => out.push('\\'),
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Salesforce's `[{message, errorCode}]` (or a record's `errors[{statusCode, message}]`) as
/// `(code, message)`.
fn sf_error(body: &Value) -> (String, String) {
    let first = body.as_array().and_then(|a| a.first()).unwrap_or(body);
    let code = first
        .get("errorCode")
        .or_else(|| first.get("statusCode"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let message = match first.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => body.to_string(),
    };
    (code, message)
}

enum Class {
    Transient,
    Rejected,
    Invalid,
}

fn classify_code(code: &str) -> Class {
    match code {
        "UNABLE_TO_LOCK_ROW" | "SERVER_UNAVAILABLE" | "REQUEST_RUNNING_TOO_LONG" => {
            Class::Transient
        }
        "INVALID_CROSS_REFERENCE_KEY"
        | "ENTITY_IS_DELETED"
        | "NOT_FOUND"
        | "INVALID_ID_FIELD"
        | "MALFORMED_ID" => Class::Rejected,
        c if c.starts_with("INSUFFICIENT_ACCESS") => Class::Rejected,
        _ => Class::Invalid,
    }
}

/// One Task of a project, found by its key field.
struct FoundTask {
    id: String,
    key: String,
    closed: bool,
}

pub struct SalesforceSink {
    http: HttpClient,
    params: Params,
    clock: Arc<dyn Clock>,
    /// `external_id` → Account Id, when `account_id_field` is not `Id`.
    account_ids: Mutex<HashMap<String, String>>,
    /// Set once `Sforce-Limit-Info` shows usage at or over the configured share.
    quota_stop: Mutex<Option<(u64, u64)>>,
}

impl SalesforceSink {
    pub fn new(http: HttpClient, params: Params, clock: Arc<dyn Clock>) -> SalesforceSink {
        SalesforceSink {
            http,
            params,
            clock,
            account_ids: Mutex::new(HashMap::new()),
            quota_stop: Mutex::new(None),
        }
    }

    fn errors(&self) -> Errors<'_> {
        Errors {
            connector: self.http.connector(),
            platform: "salesforce",
        }
    }

    fn data(&self, rest: &str) -> String {
        format!("/services/data/{}{rest}", self.params.api_version)
    }

    fn refused(&self, account: &AccountRef, what: &str, body: &Value) -> DeliveryError {
        let (code, message) = sf_error(body);
        let message = format!("{code}: {message}");
        match classify_code(&code) {
            Class::Transient => self
                .errors()
                .transient(account, &format!("{what}: {message}")),
            Class::Rejected => self.errors().rejected(account, what, &message),
            Class::Invalid => self.errors().invalid(account, what, &message),
        }
    }

    /// Sends a call unless the org's quota share is spent; records the usage the response reports.
    async fn send(&self, call: Call<'_>) -> Result<JsonResponse, DeliveryError> {
        if let Some((used, max)) = self.quota_stop.lock().ok().and_then(|q| *q) {
            return Err(DeliveryError::Transient(format!(
                "connector {}: salesforce api usage is {used}/{max}, at or above max_api_usage_percent = {}; not sending",
                self.http.connector(),
                self.params.max_usage_percent
            )));
        }
        let r = self.http.execute(call).await?;
        self.note_usage(&r.headers);
        Ok(r)
    }

    fn note_usage(&self, headers: &HeaderMap) {
        if let Some((used, max)) = api_usage(headers) {
            if max > 0 && used * 100 >= max * u64::from(self.params.max_usage_percent) {
                if let Ok(mut q) = self.quota_stop.lock() {
                    *q = Some((used, max));
                }
            }
        }
    }

    async fn query(&self, soql: String) -> Result<Vec<Value>, DeliveryError> {
        let path = self.data("/query");
        let query = [("q", soql)];
        let mut records = Vec::new();
        let mut r = self
            .send(Call {
                query: &query,
                ..Call::new(&Method::GET, &path)
            })
            .await?;
        // Every nextRecordsUrl followed so far: a server that hands one back again would page forever.
        let mut followed = std::collections::BTreeSet::new();
        loop {
            let batch = r
                .body
                .get("records")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    DeliveryError::Transient(format!(
                        "connector {}: salesforce query response has no `records` list",
                        self.http.connector()
                    ))
                })?;
            records.extend(batch.iter().cloned());
            let next = r
                .body
                .get("nextRecordsUrl")
                .and_then(Value::as_str)
                .map(str::to_string);
            match next {
                Some(next) if r.body.get("done") == Some(&Value::Bool(false)) => {
                    if !followed.insert(next.clone()) {
                        return Err(DeliveryError::Transient(format!(
                            "connector {}: salesforce returned nextRecordsUrl {next} again; stopping the query to avoid a loop",
                            self.http.connector()
                        )));
                    }
                    r = self.send(Call::new(&Method::GET, &next)).await?;
                }
                _ => return Ok(records),
            }
        }
    }

    /// Account Ids for the accounts' `external_id`s (in `account_id_field`), missing ones left out.
    async fn resolve(
        &self,
        accounts: &[&AccountRef],
    ) -> Result<HashMap<String, String>, DeliveryError> {
        let field = &self.params.account_id_field;
        if field == "Id" {
            return Ok(accounts
                .iter()
                .map(|a| (a.external_id.clone(), a.external_id.clone()))
                .collect());
        }
        let mut known: HashMap<String, String> = HashMap::new();
        let mut missing = Vec::new();
        if let Ok(cache) = self.account_ids.lock() {
            for a in accounts {
                match cache.get(&a.external_id) {
                    Some(id) => {
                        known.insert(a.external_id.clone(), id.clone());
                    }
                    None if !missing.contains(&a.external_id) => {
                        missing.push(a.external_id.clone())
                    }
                    None => {}
                }
            }
        }
        // Keep each SOQL statement well under Salesforce's length limit.
        for chunk in missing.chunks(100) {
            let list: Vec<String> = chunk
                .iter()
                .map(|v| format!("'{}'", soql_escape(v, false)))
                .collect();
            let soql = format!(
                "SELECT Id, {field} FROM Account WHERE {field} IN ({})",
                list.join(", ")
            );
            for rec in self.query(soql).await? {
                if let (Some(id), Some(ext)) =
                    (common::id_of(rec.get("Id")), common::id_of(rec.get(field)))
                {
                    known.insert(ext.clone(), id.clone());
                    if let Ok(mut cache) = self.account_ids.lock() {
                        cache.insert(ext, id);
                    }
                }
            }
        }
        Ok(known)
    }

    fn unknown_account(&self, account: &AccountRef) -> DeliveryError {
        self.errors().rejected(
            account,
            "find account",
            &format!(
                "no Account has {} = {}",
                self.params.account_id_field, account.external_id
            ),
        )
    }

    async fn set_account_fields(
        &self,
        account: &AccountRef,
        id: &str,
        fields: &BTreeMap<String, FieldValue>,
    ) -> Result<Delivered, DeliveryError> {
        let body = Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        );
        let path = self.data(&format!("/sobjects/Account/{}", encode_segment(id)));
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            ..Call::new(&Method::PATCH, &path)
        };
        let r = self.send(call).await?;
        if r.status.is_success() {
            return Ok(Delivered::Applied);
        }
        Err(self.refused(account, "update account", &r.body))
    }

    /// Up to [`BATCH_MAX`] `SetFields` writes in one sObject Collections call; one result each, in order.
    async fn set_fields_batch(
        &self,
        items: &[(&AccountRef, &BTreeMap<String, FieldValue>)],
    ) -> Vec<Result<Delivered, DeliveryError>> {
        let accounts: Vec<&AccountRef> = items.iter().map(|(a, _)| *a).collect();
        let ids = match self.resolve(&accounts).await {
            Ok(ids) => ids,
            Err(e) => {
                return items
                    .iter()
                    .map(|_| Err(sink_support::same_error(&e)))
                    .collect()
            }
        };
        let mut out: Vec<Option<Result<Delivered, DeliveryError>>> =
            items.iter().map(|_| None).collect();
        let mut sent = Vec::new();
        let mut records = Vec::new();
        for (i, (a, f)) in items.iter().enumerate() {
            let Some(id) = ids.get(&a.external_id) else {
                out[i] = Some(Err(self.unknown_account(a)));
                continue;
            };
            let mut rec = Map::new();
            rec.insert("attributes".into(), json!({"type": "Account"}));
            rec.insert("id".into(), Value::String(id.clone()));
            rec.extend(f.iter().map(|(k, v)| (k.clone(), v.to_json())));
            records.push(Value::Object(rec));
            sent.push(i);
        }
        if !sent.is_empty() {
            let body = json!({"allOrNone": false, "records": records});
            let path = self.data("/composite/sobjects");
            let call = Call {
                body: Some(&body),
                accept: &[StatusCode::BAD_REQUEST],
                ..Call::new(&Method::PATCH, &path)
            };
            match self.send(call).await {
                Err(e) => sent
                    .iter()
                    .for_each(|i| out[*i] = Some(Err(sink_support::same_error(&e)))),
                Ok(r) if r.status == StatusCode::BAD_REQUEST => {
                    tracing::debug!(connector = %self.http.connector(), records = sent.len(),
                        "salesforce refused the whole collection; sending its records one by one");
                    for i in &sent {
                        let (a, f) = items[*i];
                        let id = ids
                            .get(&a.external_id)
                            .map(String::as_str)
                            .unwrap_or_default();
                        out[*i] = Some(self.set_account_fields(a, id, f).await);
                    }
                }
                Ok(r) => {
                    let results = r.body.as_array().cloned().unwrap_or_default();
                    for (n, i) in sent.iter().enumerate() {
                        let account = items[*i].0;
                        out[*i] = Some(match results.get(n) {
                            Some(res) if res.get("success") == Some(&Value::Bool(true)) => {
                                Ok(Delivered::Applied)
                            }
                            Some(res) => Err(self.refused(
                                account,
                                "update account",
                                res.get("errors").unwrap_or(&Value::Null),
                            )),
                            None => Err(self.errors().transient(
                                account,
                                "salesforce returned fewer results than records sent",
                            )),
                        });
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DeliveryError::Transient("not sent".into()))))
            .collect()
    }

    async fn find_tasks(&self, key: &str) -> Result<Vec<FoundTask>, DeliveryError> {
        let field = &self.params.key_field;
        let soql = format!(
            "SELECT Id, Status, IsClosed, {field} FROM Task WHERE {field} LIKE '{}/task-%'",
            soql_escape(key, true)
        );
        Ok(self
            .query(soql)
            .await?
            .iter()
            .filter_map(|r| {
                Some(FoundTask {
                    id: common::id_of(r.get("Id"))?,
                    key: common::id_of(r.get(field.as_str()))?,
                    closed: r.get("IsClosed") == Some(&Value::Bool(true))
                        || r.get("Status").and_then(Value::as_str) == Some("Completed"),
                })
            })
            .collect())
    }

    async fn open_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        description: &str,
        tasks: &[TaskSpec],
    ) -> Result<Delivered, DeliveryError> {
        let what_id = match self.resolve(&[account]).await?.remove(&account.external_id) {
            Some(id) => id,
            None => return Err(self.unknown_account(account)),
        };
        let existing = self.find_tasks(key).await?;
        let tasks = sink_support::project_tasks(name, description, tasks);
        let mut created = 0;
        for (n, task) in tasks.iter().enumerate() {
            let task_key = sink_support::task_key(key, n);
            if existing.iter().any(|t| t.key == task_key) {
                continue;
            }
            let mut body = json!({
                "Subject": task.name,
                "Description": format!("{name}: {description}\n\n{}", task.description),
                "ActivityDate": sink_support::due_date(self.clock.as_ref(), task.due_days).format("%Y-%m-%d").to_string(),
                "Status": "Not Started",
                "Priority": "High",
                "WhatId": what_id,
            });
            body[self.params.key_field.as_str()] = Value::String(task_key);
            let path = self.data("/sobjects/Task");
            let call = Call {
                body: Some(&body),
                accept: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
                creates: true,
                ..Call::new(&Method::POST, &path)
            };
            let r = self.send(call).await?;
            if r.status.is_success() {
                created += 1;
            } else if sf_error(&r.body).0 != "DUPLICATE_VALUE" {
                return Err(self.refused(account, "create task", &r.body));
            }
        }
        Ok(if created == tasks.len() {
            Delivered::Applied
        } else {
            Delivered::AlreadyPresent
        })
    }

    async fn end_project(
        &self,
        account: &AccountRef,
        key: &str,
    ) -> Result<Delivered, DeliveryError> {
        let open: Vec<FoundTask> = self
            .find_tasks(key)
            .await?
            .into_iter()
            .filter(|t| !t.closed)
            .collect();
        if open.is_empty() {
            return Ok(Delivered::AlreadyPresent);
        }
        for chunk in open.chunks(BATCH_MAX) {
            let records: Vec<Value> = chunk
                .iter()
                .map(|t| json!({"attributes": {"type": "Task"}, "id": t.id, "Status": "Completed"}))
                .collect();
            let body = json!({"allOrNone": false, "records": records});
            let path = self.data("/composite/sobjects");
            let call = Call {
                body: Some(&body),
                accept: &[StatusCode::BAD_REQUEST],
                ..Call::new(&Method::PATCH, &path)
            };
            let r = self.send(call).await?;
            if r.status == StatusCode::BAD_REQUEST {
                return Err(self.refused(account, "complete tasks", &r.body));
            }
            // A task deleted since the query needs no closing; any other record error fails the write.
            for res in r.body.as_array().into_iter().flatten() {
                if res.get("success") != Some(&Value::Bool(true)) {
                    let errors = res.get("errors").unwrap_or(&Value::Null);
                    if sf_error(errors).0 != "ENTITY_IS_DELETED" {
                        return Err(self.refused(account, "complete tasks", errors));
                    }
                }
            }
        }
        Ok(Delivered::Applied)
    }
}

impl PlatformApi for SalesforceSink {
    const BATCH: usize = BATCH_MAX;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(async move { self.set_fields_batch(&writes).await })
    }

    fn set_one<'a>(
        &'a self,
        account: &'a AccountRef,
        fields: &'a BTreeMap<String, FieldValue>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        // One write: PATCH the Account itself rather than a collection of one.
        Box::pin(async move {
            let id = self.resolve(&[account]).await?.remove(&account.external_id);
            match id {
                Some(id) => self.set_account_fields(account, &id, fields).await,
                None => Err(self.unknown_account(account)),
            }
        })
    }

    fn create_project<'a>(
        &'a self,
        p: ProjectWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.open_project(p.account, p.key, p.name, p.description, p.tasks))
    }

    fn close_project<'a>(
        &'a self,
        c: CloseWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.end_project(c.account, c.key))
    }
}

#[cfg(test)]
#[path = "salesforce_sink_tests.rs"]
mod tests;
