//! The `planhat` sink kind: writes health fields to Planhat company custom fields through the bulk upsert
//! endpoint, and playbook projects as a Planhat Project plus Tasks.
//!
//! Base URL `https://api.planhat.com` (or a region host, or a simulator prefix). Auth is
//! `Authorization: Bearer <API access token>` of a Service Account.
//!
//! - `SetFields` (batched, up to 5,000 per call) → `PUT /companies` with a JSON array of
//!   `{"externalId": "<crm id>", "custom": {"<field>": value}}`. Planhat matches each item on
//!   `externalId`; the response counts `created`/`updated` and lists `insertsKeys`/`updatesKeys` and
//!   `createdErrors`/`updatedErrors`/`permissionErrors`, answered as 200 (all good), 206 (some failed),
//!   400 (payload problems) or 403 (permissions). An item is `Applied` when its externalId is among the keys
//!   (or the response reports no errors at all, which covers unchanged items); an error that names the
//!   item's externalId makes it `Invalid` (an update error: a value Planhat refused) or `Rejected` (a create
//!   error, meaning Planhat has no company with that externalId, or a permission error), with Planhat's
//!   message. Items carry no `name`, so an unknown externalId cannot create a company.
//! - `CreateProject` → `GET /leancompanies?externalId=` for the company's `_id`; `GET /projects/extid-<key>`;
//!   if found, create whichever tasks are missing and answer `AlreadyPresent`; else `POST /projects`
//!   `{"name","companyId","externalId":<key>,"startDate","custom":{"Description"}}`. Each task is
//!   `GET /tasks/extid-<key>/task-<n>` then, if missing, `POST /tasks` `{"mainType":"task","companyId",
//!   "action","description","startTime","endTime":<due>,"externalId"}`.
//! - `CloseProject` → `GET /projects/extid-<key>`, then `PUT /projects/<_id>` `{"endDate": today}`: a
//!   Planhat project closes by getting its end date. A project already ended, or gone, is
//!   `AlreadyPresent`. Its tasks are left for the CSM to complete; the recovery note is not written.
//!
//! Verified against planhat.com/developers: Bearer auth, the bulk upsert matching on `externalId`, its
//! response fields and status codes (200/206/400/403/500), the `custom` object, the Project fields
//! (`name`, `companyId`, `externalId`, `startDate`, `endDate`, `custom`) and Task fields (`mainType`,
//! `companyId`, `action`, `description`, `startTime`, `endTime`), `GET /leancompanies?externalId=`, and the
//! limits (a quota of 200 calls per minute; hard limit 150/s; 5,000 items per bulk call). **Assumed, not
//! verified:** the shape of one entry of `createdErrors`/`updatedErrors` (undocumented; we attribute an
//! entry to an item by any string in it equal to the item's externalId), `extid-<externalId>` as an id in
//! project and task paths, `externalId` on tasks, a `Description` custom field on projects, and 429 with
//! `Retry-After` when throttled (the engine backs off when the header is missing). Tasks are not linked to
//! the project (the task object documents no project reference). This kind does not decide what to write
//! (the planner) nor when to retry (the outbox).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{Days, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common;
use super::sink_support::{BatchResults, CloseWrite, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{encode_segment, Call, Clock, HttpClient, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, FieldValue, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "planhat",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[AuthScheme::Bearer],
    // Planhat's quota (soft limit) is 200 calls per minute per tenant.
    default_rate_limit: RateLimit::per_secs(200, 60),
    parse_params: common::no_params,
    limitations: &["recovery ends the project (end date); its tasks stay open for the CSM"],
};

/// Items per `PUT /companies` call (Planhat's bulk upsert limit).
pub const BATCH_SIZE: usize = 5000;


pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Sink(Box::new(Planhat::new(
        http,
        Arc::new(SystemClock),
    ))))
}

pub struct Planhat {
    http: HttpClient,
    clock: Arc<dyn Clock>,
}

impl Planhat {
    /// `clock` gives "today" for start, due and end dates.
    pub fn new(http: HttpClient, clock: Arc<dyn Clock>) -> Planhat {
        Planhat { http, clock }
    }

    fn err_text(&self, account: &AccountRef, what: &str, detail: &str) -> String {
        format!(
            "connector {}: account {} ({}): {what}: {detail}",
            self.http.connector(),
            account.external_id,
            account.name
        )
    }

    fn transient(&self, account: &AccountRef, what: &str) -> DeliveryError {
        DeliveryError::Transient(format!(
            "connector {}: account {}: {what}",
            self.http.connector(),
            account.external_id
        ))
    }

    /// A bulk upsert answered without per-item results: 403 refuses, 400 blames the payload, and a 2xx
    /// without results cannot be confirmed (retry later).
    fn batch_error(&self, (status, msg): (StatusCode, String)) -> DeliveryError {
        let c = self.http.connector();
        match status {
            StatusCode::FORBIDDEN => DeliveryError::Rejected(format!(
                "connector {c}: planhat refused the bulk upsert: {msg}"
            )),
            StatusCode::BAD_REQUEST => DeliveryError::Invalid(format!(
                "connector {c}: planhat refused the bulk upsert: {msg}"
            )),
            _ => DeliveryError::Transient(format!(
                "connector {c}: planhat answered the bulk upsert without results: {msg}"
            )),
        }
    }

    fn today(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }

    /// One bulk upsert for `writes`; one result per write, in order.
    async fn upsert_companies(&self, writes: &[FieldWrite<'_>]) -> BatchResults {
        if writes.is_empty() {
            return Vec::new();
        }
        let items: Vec<Value> = writes.iter().map(|(a, f)| company_item(a, f)).collect();
        let body = Value::Array(items);
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::BAD_REQUEST, StatusCode::FORBIDDEN],
            ..Call::new(&Method::PUT, "/companies")
        };
        let outcome = match self.http.execute(call).await {
            Ok(r) => UpsertOutcome::parse(r.status, &r.body).map_err(|e| self.batch_error(e)),
            Err(e) => Err(DeliveryError::from(e)),
        };
        writes
            .iter()
            .map(|(account, _)| {
                match &outcome {
                    Ok(o) => o.result_for(account).map_err(|e| match e {
                        ItemError::Invalid(m) => DeliveryError::Invalid(self.err_text(
                            account,
                            "planhat refused the update",
                            &m,
                        )),
                        ItemError::Rejected(m) => DeliveryError::Rejected(self.err_text(
                            account,
                            "planhat refused the write",
                            &m,
                        )),
                    }),
                    Err(whole) => Err(copy_error(whole)),
                }
            })
            .collect()
    }

    /// The Planhat `_id` of the company whose externalId is the account's.
    async fn company_id(&self, account: &AccountRef) -> Result<String, DeliveryError> {
        let body = self
            .http
            .get_json(
                "/leancompanies",
                &[("externalId", account.external_id.clone())],
            )
            .await?;
        let list = body
            .as_array()
            .ok_or_else(|| self.transient(account, "GET /leancompanies did not return a list"))?;
        list.iter()
            .find(|c| c.get("externalId").and_then(Value::as_str) == Some(&account.external_id))
            .and_then(|c| common::id_of(c.get("_id")))
            .ok_or_else(|| {
                DeliveryError::Rejected(self.err_text(
                    account,
                    "no planhat company has this externalId",
                    "GET /leancompanies found none",
                ))
            })
    }

    /// `GET /<resource>/extid-<key>`: the object, or `None` on 404.
    async fn find(&self, resource: &str, key: &str) -> Result<Option<Value>, DeliveryError> {
        let path = format!("/{resource}/{}", encode_segment(&format!("extid-{key}")));
        let call = Call {
            accept: &[StatusCode::NOT_FOUND],
            ..Call::new(&Method::GET, &path)
        };
        let r = self.http.execute(call).await?;
        Ok((r.status != StatusCode::NOT_FOUND && r.body.is_object()).then_some(r.body))
    }

    async fn open_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        description: &str,
        tasks: &[TaskSpec],
    ) -> Result<Delivered, DeliveryError> {
        let company_id = self.company_id(account).await?;
        let existed = self.find("projects", key).await?.is_some();
        if !existed {
            let body = json!({
                "name": name,
                "companyId": company_id,
                "externalId": key,
                "startDate": self.today().to_rfc3339_opts(SecondsFormat::Secs, true),
                "custom": {"Description": description},
            });
            self.post(account, "/projects", &body).await?;
        }
        for (n, task) in tasks.iter().enumerate() {
            let ext = format!("{key}/task-{}", n + 1);
            if !existed || self.find("tasks", &ext).await?.is_none() {
                self.create_task(account, &company_id, &ext, task).await?;
            }
        }
        Ok(if existed {
            Delivered::AlreadyPresent
        } else {
            Delivered::Applied
        })
    }

    async fn create_task(
        &self,
        account: &AccountRef,
        company_id: &str,
        external_id: &str,
        task: &TaskSpec,
    ) -> Result<(), DeliveryError> {
        let now = self.today();
        let due = now
            .checked_add_days(Days::new(u64::from(task.due_days)))
            .unwrap_or(now);
        let body = json!({
            "mainType": "task",
            "companyId": company_id,
            "action": task.name,
            "description": task.description,
            "startTime": now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "endTime": due.to_rfc3339_opts(SecondsFormat::Secs, true),
            "externalId": external_id,
        });
        self.post(account, "/tasks", &body).await
    }

    /// POST a create; a 400 is the payload's fault (`Invalid`) with Planhat's message.
    async fn post(
        &self,
        account: &AccountRef,
        path: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let call = Call {
            body: Some(body),
            accept: &[StatusCode::BAD_REQUEST],
            creates: true,
            ..Call::new(&Method::POST, path)
        };
        let r = self.http.execute(call).await?;
        if r.status == StatusCode::BAD_REQUEST {
            return Err(DeliveryError::Invalid(self.err_text(
                account,
                &format!("POST {path} refused"),
                &planhat_message(&r.body),
            )));
        }
        Ok(())
    }

    async fn end_project(
        &self,
        account: &AccountRef,
        key: &str,
    ) -> Result<Delivered, DeliveryError> {
        let Some(project) = self.find("projects", key).await? else {
            return Ok(Delivered::AlreadyPresent);
        };
        if project.get("endDate").is_some_and(|d| !d.is_null()) {
            return Ok(Delivered::AlreadyPresent);
        }
        let id = common::id_of(project.get("_id"))
            .ok_or_else(|| self.transient(account, "planhat project has no `_id`"))?;
        let body = json!({"endDate": self.today().to_rfc3339_opts(SecondsFormat::Secs, true)});
        let path = format!("/projects/{}", encode_segment(&id));
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::NOT_FOUND],
            ..Call::new(&Method::PUT, &path)
        };
        let r = self.http.execute(call).await?;
        Ok(if r.status == StatusCode::NOT_FOUND {
            Delivered::AlreadyPresent
        } else {
            Delivered::Applied
        })
    }
}

fn company_item(account: &AccountRef, fields: &BTreeMap<String, FieldValue>) -> Value {
    let custom: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    json!({"externalId": account.external_id, "custom": custom})
}

/// The same failure for each item of a batch that failed as a whole.
fn copy_error(e: &DeliveryError) -> DeliveryError {
    match e {
        DeliveryError::Transient(m) => DeliveryError::Transient(m.clone()),
        DeliveryError::Invalid(m) => DeliveryError::Invalid(m.clone()),
        DeliveryError::Rejected(m) => DeliveryError::Rejected(m.clone()),
    }
}

enum ItemError {
    Invalid(String),
    Rejected(String),
}

/// A bulk upsert response, read per item.
struct UpsertOutcome {
    confirmed: HashSet<String>,
    /// `(error entry, invalid?)`: update errors are invalid values; create and permission errors are refusals.
    errors: Vec<(Value, bool)>,
}

impl UpsertOutcome {
    /// `Err` is a response that is not per item: its status and Planhat's message.
    fn parse(status: StatusCode, body: &Value) -> Result<UpsertOutcome, (StatusCode, String)> {
        let lists = ["createdErrors", "updatedErrors", "permissionErrors"];
        if !body.is_object() || !lists.iter().any(|k| body.get(*k).is_some()) {
            return Err((status, planhat_message(body)));
        }
        let mut confirmed = HashSet::new();
        for k in ["insertsKeys", "updatesKeys"] {
            for key in body.get(k).and_then(Value::as_array).into_iter().flatten() {
                if let Some(x) = key.get("externalId").and_then(Value::as_str) {
                    confirmed.insert(x.to_string());
                }
            }
        }
        let mut errors = Vec::new();
        for (k, invalid) in [
            ("createdErrors", false),
            ("updatedErrors", true),
            ("permissionErrors", false),
        ] {
            for e in body.get(k).and_then(Value::as_array).into_iter().flatten() {
                errors.push((e.clone(), invalid));
            }
        }
        Ok(UpsertOutcome { confirmed, errors })
    }

    fn result_for(&self, account: &AccountRef) -> Result<Delivered, ItemError> {
        let id = account.external_id.as_str();
        if let Some((e, invalid)) = self.errors.iter().find(|(e, _)| mentions(e, id)) {
            let m = planhat_message(e);
            return Err(if *invalid {
                ItemError::Invalid(m)
            } else {
                ItemError::Rejected(m)
            });
        }
        if self.confirmed.contains(id) || self.errors.is_empty() {
            return Ok(Delivered::Applied);
        }
        let unattributed: Vec<String> = self
            .errors
            .iter()
            .map(|(e, _)| planhat_message(e))
            .collect();
        Err(ItemError::Rejected(format!(
            "not confirmed; planhat reported errors it did not tie to an item: {}",
            unattributed.join("; ")
        )))
    }
}

/// Whether any string inside `v` equals `id`.
fn mentions(v: &Value, id: &str) -> bool {
    match v {
        Value::String(s) => s == id,
        Value::Array(a) => a.iter().any(|x| mentions(x, id)),
        Value::Object(o) => o.values().any(|x| mentions(x, id)),
        _ => false,
    }
}

/// Planhat's message: `message` or `error` when a string, else the value as text.
fn planhat_message(v: &Value) -> String {
    for k in ["message", "error", "msg"] {
        if let Some(Value::String(s)) = v.get(k) {
            return s.clone();
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(no message)".to_string(),
        other => other.to_string(),
    }
}

impl PlatformApi for Planhat {
    const BATCH: usize = BATCH_SIZE;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(async move { self.upsert_companies(&writes).await })
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
#[path = "planhat/tests.rs"]
mod tests;
