//! The `hubspot_sink` kind: HubSpot as the CS platform. Health fields become company properties;
//! a playbook project becomes one HubSpot task per project task, associated to the company.
//!
//! Base URL `https://api.hubapi.com`, `Authorization: Bearer <private-app token>`; 100 requests per 10 s
//! (Free/Starter), and HubSpot's 429s are classified by the `hubspot` source kind's classifier (shared):
//! `policyName: DAILY` is `QuotaExhausted`, not retried (the write stays transient for a later cycle);
//! the ten-secondly limit is retried by the engine with backoff.
//!
//! - `SetFields` → `PATCH /crm/v3/objects/companies/{id}` `{"properties":{name: "text"}}`; batches →
//!   `POST /crm/v3/objects/companies/batch/update` `{"inputs":[{"id","properties","objectWriteTraceId"}]}`
//!   (≤100). HubSpot answers 200, or 207 with `results` and `errors`; each error is matched to its input
//!   by `context.objectWriteTraceId` (we send the input's index) or else `context.ids`. Property values
//!   are strings; `null` is sent as `""`, which clears the property. A whole batch refused with 400/404
//!   (no per-item detail) is resent item by item, so the good items still land.
//!   Errors: `VALIDATION_ERROR` (e.g. `PROPERTY_DOESNT_EXIST`) → `Invalid`; 404/`OBJECT_NOT_FOUND` →
//!   `Rejected`; both carry HubSpot's `message`.
//! - `CreateProject` → HubSpot has no projects. Each task is `POST /crm/v3/objects/tasks` with
//!   `hs_timestamp` (due date), `hs_task_subject`, `hs_task_body` (project name, description and the
//!   task's instructions), `hs_task_status: NOT_STARTED`, `hs_task_priority: HIGH`, `hs_task_type: TODO`,
//!   associated to the company with `HUBSPOT_DEFINED` type 192 (task → company). Tasks have no external
//!   id, so the idempotency key is a marker at the end of the subject, `[<key>/task-<n>]`; before
//!   creating, `POST /crm/v3/objects/tasks/search` lists the company's tasks (`associations.company EQ
//!   <id>`) and any task whose subject carries the marker is not created again (`AlreadyPresent`).
//! - `CloseProject` → the same search, then `POST /crm/v3/objects/tasks/batch/update` setting
//!   `hs_task_status: COMPLETED` on the project's open tasks. No open task left is `AlreadyPresent`.
//!   The recovery note itself is not written to HubSpot.
//!
//! Verified against `specs/hubspot` (HubSpot's OpenAPI) and HubSpot's docs (search tool): the batch
//! update request/response shapes (200/207, `objectWriteTraceId`, `StandardError`), the task properties
//! and their values, the association body, the search request. From ../shared/api [C], not re-verified:
//! association type ids 192 (task→company). Assumed, not verified: that 207 errors carry the input's
//! `objectWriteTraceId` (or `ids`) in `context`. Seen in public client code [C], not in the spec: the
//! `associations.company EQ <id>` search filter. Assumed:
//! that a task is searchable by the time the outbox retries (HubSpot's search index lags a few seconds
//! behind writes, so a resend within seconds of a crash could miss the first attempt's task). A task's
//! `hubspot_owner_id` is set when `[params.owners]` maps the account's owner (the model's
//! `accounts.owner_field`) to a HubSpot owner id; otherwise it is left unset. This kind does not decide what to write (the planner)
//! nor when to retry (the outbox).

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common;
use super::sink_support::{self, BatchResults, CloseWrite, Errors, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{encode_segment, Call, Clock, HttpClient, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, FieldValue, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "hubspot_sink",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    // As the source: a private app's token or a public app's OAuth refresh token.
    auth: &[AuthScheme::Bearer, AuthScheme::OAuth2RefreshToken],
    // Private apps on Free/Starter: 100 requests per 10 s (Pro/Enterprise 190).
    default_rate_limit: RateLimit::per_secs(100, 10),
    parse_params: read_params,
    limitations: &[
            "HubSpot has no projects: each playbook task is a task on the company, found again by a key in its subject",
            "recovery completes the tasks; no closing note is written",
        ],
};

/// HubSpot's batch update takes at most 100 inputs.
pub const BATCH_MAX: usize = 100;
/// `HUBSPOT_DEFINED` association type: task → company.
const TASK_TO_COMPANY: u32 = 192;
const SEARCH_PAGE: u32 = 200;
/// A search query pages through at most 10,000 results.
const SEARCH_CEILING: usize = 10_000;
const COMPANIES: &str = "/crm/v3/objects/companies";

/// The account owner → platform user map (`[params.owners]`).
type Owners = std::collections::BTreeMap<String, String>;

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    common::check_keys(params, &["owners"])?;
    common::owner_map(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?
        .with_classifier(super::hubspot::classify)
        .with_quota_reader(super::hubspot::quota);
    let owners = ctx.params::<Owners>()?.clone();
    let mut sink = HubSpotSink::new(http, Arc::new(SystemClock));
    sink.owners = owners;
    Ok(Built::Sink(Box::new(sink)))
}

pub struct HubSpotSink {
    http: HttpClient,
    clock: Arc<dyn Clock>,
    /// The model's account owner → HubSpot owner id (`hubspot_owner_id` on playbook tasks).
    owners: BTreeMap<String, String>,
}

/// How a HubSpot error is to be treated.
fn classify_error(err: &Value, http_status: Option<StatusCode>) -> fn(&str) -> DeliveryError {
    let category = err.get("category").and_then(Value::as_str).unwrap_or("");
    let status = http_status
        .map(|s| s.as_u16())
        .or_else(|| err.get("status").and_then(Value::as_str)?.parse().ok());
    if status == Some(404) || category == "OBJECT_NOT_FOUND" {
        |m| DeliveryError::Rejected(m.to_string())
    } else if status.is_some_and(|s| s >= 500) {
        |m| DeliveryError::Transient(m.to_string())
    } else if category == "VALIDATION_ERROR" || status == Some(400) {
        |m| DeliveryError::Invalid(m.to_string())
    } else {
        |m| DeliveryError::Rejected(m.to_string())
    }
}

/// HubSpot's `message`, else the body as text.
fn hubspot_message(body: &Value) -> String {
    match body.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => match body {
            Value::String(s) => s.clone(),
            Value::Null => "(no message)".into(),
            other => other.to_string(),
        },
    }
}

fn properties(fields: &BTreeMap<String, FieldValue>) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(sink_support::field_text(v))))
        .collect()
}

/// One task found by the marker search: its id, its index in the project and whether it is completed.
struct FoundTask {
    id: String,
    index: usize,
    completed: bool,
}

/// The subject marker of task `index` of the project under `key`.
fn marker(key: &str, index: usize) -> String {
    format!("[{}]", sink_support::task_key(key, index))
}

/// The task index a subject's marker names, if it is a task of the project under `key`.
fn marked_index(subject: &str, key: &str) -> Option<usize> {
    let rest = subject.trim_end().strip_suffix(']')?;
    let (_, inner) = rest.rsplit_once('[')?;
    let n: usize = inner
        .strip_prefix(key)?
        .strip_prefix("/task-")?
        .parse()
        .ok()?;
    n.checked_sub(1)
}

impl HubSpotSink {
    /// `clock` gives "today" for task due dates.
    pub fn new(http: HttpClient, clock: Arc<dyn Clock>) -> HubSpotSink {
        HubSpotSink {
            http,
            clock,
            owners: BTreeMap::new(),
        }
    }

    fn errors(&self) -> Errors<'_> {
        Errors {
            connector: self.http.connector(),
            platform: "hubspot",
        }
    }

    /// A classified error for `account`, keeping HubSpot's message.
    fn refused(
        &self,
        account: &AccountRef,
        what: &str,
        err: &Value,
        status: Option<StatusCode>,
    ) -> DeliveryError {
        let make = classify_error(err, status);
        let msg = format!(
            "connector {}: account {} ({}): {what}: hubspot says: {}",
            self.http.connector(),
            account.external_id,
            account.name,
            hubspot_message(err)
        );
        make(&msg)
    }

    async fn set_account_fields(
        &self,
        account: &AccountRef,
        fields: &BTreeMap<String, FieldValue>,
    ) -> Result<Delivered, DeliveryError> {
        let body = json!({ "properties": properties(fields) });
        let path = format!("{COMPANIES}/{}", encode_segment(&account.external_id));
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            ..Call::new(&Method::PATCH, &path)
        };
        let r = self.http.execute(call).await?;
        if r.status.is_success() {
            return Ok(Delivered::Applied);
        }
        Err(self.refused(account, "update company", &r.body, Some(r.status)))
    }

    /// One batch call for at most [`BATCH_MAX`] `SetFields` writes: one result per write, in order.
    async fn set_fields_batch(
        &self,
        items: &[(&AccountRef, &BTreeMap<String, FieldValue>)],
    ) -> Vec<Result<Delivered, DeliveryError>> {
        let inputs: Vec<Value> = items
            .iter()
            .enumerate()
            .map(|(i, (a, f))| {
                json!({"id": a.external_id, "properties": properties(f), "objectWriteTraceId": i.to_string()})
            })
            .collect();
        let body = json!({ "inputs": inputs });
        let path = format!("{COMPANIES}/batch/update");
        let call = Call {
            body: Some(&body),
            accept: &[
                StatusCode::MULTI_STATUS,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
            ],
            ..Call::new(&Method::POST, &path)
        };
        let r = match self.http.execute(call).await {
            Ok(r) => r,
            Err(e) => {
                let e = DeliveryError::from(e);
                return items
                    .iter()
                    .map(|_| Err(sink_support::same_error(&e)))
                    .collect();
            }
        };
        if r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND {
            // The whole batch was refused without per-item detail: resend one by one, so one bad
            // property name or unknown company does not hold back the rest.
            tracing::debug!(connector = %self.http.connector(), items = items.len(), status = r.status.as_u16(),
                "hubspot refused the whole batch; sending its items one by one");
            let mut out = Vec::with_capacity(items.len());
            for (a, f) in items {
                out.push(self.set_account_fields(a, f).await);
            }
            return out;
        }
        let mut out: Vec<Option<Result<Delivered, DeliveryError>>> =
            items.iter().map(|_| None).collect();
        let indices_of = |v: &Value, ids: &str| -> Vec<usize> {
            let trace: Vec<usize> = v
                .pointer("/context/objectWriteTraceId")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str()?.parse().ok()).collect())
                .or_else(|| {
                    v.get("objectWriteTraceId")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .map(|i| vec![i])
                })
                .unwrap_or_default();
            if !trace.is_empty() {
                return trace.into_iter().filter(|i| *i < items.len()).collect();
            }
            let wanted: Vec<String> = match ids {
                "id" => v
                    .get("id")
                    .and_then(|i| common::id_of(Some(i)))
                    .into_iter()
                    .collect(),
                _ => v
                    .pointer("/context/ids")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|x| common::id_of(Some(x))).collect())
                    .unwrap_or_default(),
            };
            (0..items.len())
                .filter(|i| wanted.contains(&items[*i].0.external_id))
                .collect()
        };
        for res in r
            .body
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for i in indices_of(res, "id") {
                out[i] = Some(Ok(Delivered::Applied));
            }
        }
        for err in r
            .body
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for i in indices_of(err, "ids") {
                out[i] = Some(Err(self.refused(items[i].0, "update company", err, None)));
            }
        }
        out.into_iter()
            .zip(items)
            .map(|(o, (a, _))| {
                o.unwrap_or_else(|| {
                    Err(self.errors().transient(
                        a,
                        "hubspot's batch response mentions neither a result nor an error for this company",
                    ))
                })
            })
            .collect()
    }

    /// The project's tasks on the company, found by their subject markers.
    async fn find_tasks(
        &self,
        account: &AccountRef,
        key: &str,
    ) -> Result<Vec<FoundTask>, DeliveryError> {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        // Every `after` token sent so far: a vendor that hands one back again would page forever.
        let mut sent = std::collections::BTreeSet::new();
        let mut seen = 0usize;
        loop {
            let mut body = json!({
                "filterGroups": [{"filters": [{
                    "propertyName": "associations.company", "operator": "EQ", "value": account.external_id,
                }]}],
                "properties": ["hs_task_subject", "hs_task_status"],
                "limit": SEARCH_PAGE,
            });
            if let Some(a) = &after {
                body["after"] = Value::String(a.clone());
            }
            let call = Call {
                body: Some(&body),
                ..Call::new(&Method::POST, "/crm/v3/objects/tasks/search")
            };
            let r = self.http.execute(call).await?;
            let results = r
                .body
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    self.errors().transient(
                        account,
                        "hubspot task search: response has no `results` list",
                    )
                })?;
            for t in results {
                let subject = t
                    .pointer("/properties/hs_task_subject")
                    .and_then(Value::as_str);
                let (Some(id), Some(index)) = (
                    common::id_of(t.get("id")),
                    subject.and_then(|s| marked_index(s, key)),
                ) else {
                    continue;
                };
                let status = t
                    .pointer("/properties/hs_task_status")
                    .and_then(Value::as_str);
                found.push(FoundTask {
                    id,
                    index,
                    completed: status == Some("COMPLETED"),
                });
            }
            seen += results.len();
            after = r
                .body
                .pointer("/paging/next/after")
                .and_then(|v| common::id_of(Some(v)));
            if after.is_none() || results.is_empty() || seen >= SEARCH_CEILING {
                return Ok(found);
            }
            if let Some(a) = after.as_ref().filter(|a| !sent.insert(a.to_string())) {
                return Err(self.errors().transient(
                    account,
                    &format!("hubspot task search returned page token `{a}` again; stopping to avoid a loop"),
                ));
            }
        }
    }

    async fn open_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        description: &str,
        tasks: &[TaskSpec],
        owner: Option<&str>,
    ) -> Result<Delivered, DeliveryError> {
        let existing = self.find_tasks(account, key).await?;
        let tasks = sink_support::project_tasks(name, description, tasks);
        let mut created = 0;
        for (n, task) in tasks.iter().enumerate() {
            if existing.iter().any(|t| t.index == n) {
                continue;
            }
            self.create_task(account, key, n, name, description, task, owner)
                .await?;
            created += 1;
        }
        Ok(if created == tasks.len() {
            Delivered::Applied
        } else {
            Delivered::AlreadyPresent
        })
    }

    #[allow(clippy::too_many_arguments)] // each argument is one distinct part of the task body
    async fn create_task(
        &self,
        account: &AccountRef,
        key: &str,
        index: usize,
        project: &str,
        description: &str,
        task: &TaskSpec,
        owner: Option<&str>,
    ) -> Result<(), DeliveryError> {
        let due = sink_support::due_at(self.clock.as_ref(), task.due_days);
        let mut body = json!({
            "properties": {
                "hs_timestamp": due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "hs_task_subject": format!("{} {}", task.name, marker(key, index)),
                "hs_task_body": format!("{project}: {description}\n\n{}", task.description),
                "hs_task_status": "NOT_STARTED",
                "hs_task_priority": "HIGH",
                "hs_task_type": "TODO",
            },
            "associations": [{
                "to": {"id": account.external_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_COMPANY}],
            }],
        });
        if let Some(id) = owner.and_then(|o| self.owners.get(o)) {
            body["properties"]["hubspot_owner_id"] = Value::String(id.clone());
        }
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            creates: true,
            ..Call::new(&Method::POST, "/crm/v3/objects/tasks")
        };
        let r = self.http.execute(call).await?;
        if r.status.is_success() {
            return Ok(());
        }
        Err(self.refused(account, "create task", &r.body, Some(r.status)))
    }

    async fn end_project(
        &self,
        account: &AccountRef,
        key: &str,
    ) -> Result<Delivered, DeliveryError> {
        let open: Vec<FoundTask> = self
            .find_tasks(account, key)
            .await?
            .into_iter()
            .filter(|t| !t.completed)
            .collect();
        if open.is_empty() {
            return Ok(Delivered::AlreadyPresent);
        }
        for chunk in open.chunks(BATCH_MAX) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|t| json!({"id": t.id, "properties": {"hs_task_status": "COMPLETED"}}))
                .collect();
            let body = json!({ "inputs": inputs });
            let call = Call {
                body: Some(&body),
                accept: &[StatusCode::MULTI_STATUS, StatusCode::BAD_REQUEST],
                ..Call::new(&Method::POST, "/crm/v3/objects/tasks/batch/update")
            };
            let r = self.http.execute(call).await?;
            if r.status == StatusCode::BAD_REQUEST {
                return Err(self.refused(account, "complete tasks", &r.body, Some(r.status)));
            }
            // A task deleted since the search needs no closing; any other item error fails the write.
            let failed = r
                .body
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|e| e.get("category").and_then(Value::as_str) != Some("OBJECT_NOT_FOUND"));
            if let Some(e) = failed {
                return Err(self.refused(account, "complete tasks", e, None));
            }
        }
        Ok(Delivered::Applied)
    }
}

impl PlatformApi for HubSpotSink {
    const BATCH: usize = BATCH_MAX;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(async move { self.set_fields_batch(&writes).await })
    }

    fn set_one<'a>(
        &'a self,
        account: &'a AccountRef,
        fields: &'a BTreeMap<String, FieldValue>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        // One write: PATCH the company itself, as a lone write always has been.
        Box::pin(self.set_account_fields(account, fields))
    }

    fn create_project<'a>(
        &'a self,
        p: ProjectWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.open_project(p.account, p.key, p.name, p.description, p.tasks, p.owner))
    }

    fn close_project<'a>(
        &'a self,
        c: CloseWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.end_project(c.account, c.key))
    }
}

#[cfg(test)]
#[path = "hubspot_sink_tests.rs"]
mod tests;
