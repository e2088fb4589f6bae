//! The `gainsight` sink kind (Gainsight CS, NXT): health fields as Company object fields through the Company
//! API, and playbook projects as Cockpit CTAs.
//!
//! Base URL `https://<customer>.gainsightcloud.com` (or a custom domain, or a simulator prefix). Auth is
//! the tenant's access key in the `accessKey` header (`scheme = "api_key_header"`, `header = "accessKey"`).
//! Every answer is the envelope `{"result", "errorCode", "errorDesc", "requestId", "data"}`.
//!
//! - `SetFields` (batched, up to 50 per call) → `PUT /v1/data/objects/Company?keys=<match_field>` with
//!   `{"records": [{"<match_field>": "<crm id>", "<field>": value, …}]}`; `match_field` (a param, e.g. a
//!   custom `HubSpot_Id__gc`) is the Company field that holds the account's CRM id. Gainsight validates the
//!   whole call and refuses it all when one record is bad (400, `GSOBJ_…` code, the column and value in
//!   `errorDesc`), so a refused batch is split in halves and resent until the bad records stand alone:
//!   the good ones land, each bad one is `Invalid` with Gainsight's `errorDesc`. That costs one extra call
//!   per halving (at most 2n−1 calls for n records when every one is bad), counted by the rate limiter.
//! - `CreateProject` → a CTA. The company's `Gsid` comes from `POST /v1/data/objects/query/Company`
//!   (`where` on `match_field`); the CTA is looked up first with `POST /v2/cockpit/cta/list` on the
//!   `cta_key_field` (a CTA field holding our idempotency key); if found it is `AlreadyPresent`, else
//!   `POST /v2/cockpit/cta/` `{"requests":[{"Name","CompanyId","TypeName","ReasonName","PriorityName",
//!   "StatusName","DueDate","Comments","<cta_key_field>": key}]}`. The playbook's tasks travel in
//!   `Comments` as a checklist (one line per task with its due date): creating Cockpit tasks through the API
//!   was not verified, so tasks are not created as task records.
//! - `CloseProject` → look the CTA up by key and `PUT /v2/cockpit/cta/` `{"requests":[{"Gsid",
//!   "StatusName": <cta_closed_status>, "Comments": note}]}`; a CTA already closed (`IsClosed`) or gone is
//!   `AlreadyPresent`.
//!
//! Verified (support.gainsight.com): the `accessKey` header, the Company update path with `keys`, 50
//! records per call, all-or-nothing validation with `GSOBJ_` error codes and `errorDesc`, the response
//! envelope, 100 calls per minute and 50,000 per day (fixed windows). From client code, not the docs
//! [C]: the Cockpit paths `/v2/cockpit/cta/` and `/v2/cockpit/cta/list`, and the query body
//! (`select`, `where.conditions[{name, alias, value, operator}]`, `expression`). **Assumed:** the CTA
//! request field names above (`TypeName`, `ReasonName`, `PriorityName`, `StatusName`, `DueDate`,
//! `Comments`, `IsClosed`; the CTA schema shows the ids and names but the request shape is unverified),
//! a tenant-defined CTA field for our key, where new CTAs appear in the answer (`data.records[0].Gsid`,
//! `data[0].Gsid` or `data.Gsid` are all read), and 429 with `Retry-After` when throttled (the engine backs
//! off when it is missing). This kind does not decide what to write (the planner) nor when to retry (the
//! outbox).

use std::sync::Arc;

use chrono::Days;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common;
use super::sink_support::{BatchResults, CloseWrite, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{Call, Clock, HttpClient, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "gainsight",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[AuthScheme::ApiKeyHeader],
    // Recommended synchronous limit: 100 calls per minute (and 50,000 per day) per tenant.
    default_rate_limit: RateLimit::per_secs(100, 60),
    parse_params: read_params,
    limitations: &["Cockpit tasks are not created through the API: a CTA's tasks are a checklist in its comments"],
};

/// Records per Company API call.
pub const BATCH_SIZE: usize = 50;

const PARAM_KEYS: &[&str] = &[
    "match_field",
    "cta_key_field",
    "cta_type",
    "cta_reason",
    "cta_priority",
    "cta_status",
    "cta_closed_status",
];

/// The kind's settings from `[params]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub match_field: String,
    pub cta_key_field: String,
    pub cta_type: String,
    pub cta_reason: String,
    pub cta_priority: String,
    pub cta_status: String,
    pub cta_closed_status: String,
}

impl Settings {
    pub fn from_params(params: &toml::Table) -> Result<Settings, String> {
        common::check_keys(params, PARAM_KEYS)?;
        let get = |k: &str, default: &str| -> Result<String, String> {
            Ok(common::string_param(params, k)?.unwrap_or_else(|| default.to_string()))
        };
        let match_field = common::string_param(params, "match_field")?.ok_or_else(|| {
            "`match_field` is required: the Company field holding the CRM id, e.g. \"HubSpot_Id__gc\""
                .to_string()
        })?;
        Ok(Settings {
            match_field,
            cta_key_field: get("cta_key_field", "Healthsync_Key__gc")?,
            cta_type: get("cta_type", "Risk")?,
            cta_reason: get("cta_reason", "Health Score")?,
            cta_priority: get("cta_priority", "High")?,
            cta_status: get("cta_status", "New")?,
            cta_closed_status: get("cta_closed_status", "Closed Success")?,
        })
    }
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    Settings::from_params(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let settings = ctx.params::<Settings>()?.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Sink(Box::new(Gainsight::new(
        http,
        settings,
        Arc::new(SystemClock),
    ))))
}

pub struct Gainsight {
    http: HttpClient,
    settings: Settings,
    clock: Arc<dyn Clock>,
}

impl Gainsight {
    /// `clock` gives "today" for CTA and task due dates.
    pub fn new(http: HttpClient, settings: Settings, clock: Arc<dyn Clock>) -> Gainsight {
        Gainsight {
            http,
            settings,
            clock,
        }
    }

    fn err_text(&self, account: &AccountRef, what: &str, detail: &str) -> String {
        format!(
            "connector {}: account {} ({}): {what}: {detail}",
            self.http.connector(),
            account.external_id,
            account.name
        )
    }

    /// One Company update call for `ops`; a 400 for several records is split and resent, so each result
    /// is the record's own.
    async fn update_companies(&self, ops: &[FieldWrite<'_>]) -> BatchResults {
        // Iterative halving: each pending range is sent whole; a refused range of more than one record is
        // split, a refused single record fails alone.
        let mut results: Vec<Option<Result<Delivered, DeliveryError>>> =
            (0..ops.len()).map(|_| None).collect();
        let mut pending = vec![(0, ops.len())];
        while let Some((from, to)) = pending.pop() {
            let chunk = &ops[from..to];
            match self.send_update(chunk).await {
                Ok(()) => (from..to).for_each(|i| results[i] = Some(Ok(Delivered::Applied))),
                Err(Refusal::Validation(desc)) if chunk.len() == 1 => {
                    let account = chunk[0].0;
                    results[from] = Some(Err(DeliveryError::Invalid(self.err_text(
                        account,
                        "gainsight refused the update",
                        &desc,
                    ))));
                }
                Err(Refusal::Validation(_)) => {
                    let mid = from + chunk.len() / 2;
                    pending.push((mid, to));
                    pending.push((from, mid));
                }
                Err(Refusal::Other(e)) => {
                    for slot in &mut results[from..to] {
                        *slot = Some(Err(copy_error(&e)));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DeliveryError::Transient("no result".into()))))
            .collect()
    }

    async fn send_update(&self, ops: &[FieldWrite<'_>]) -> Result<(), Refusal> {
        let mut records = Vec::with_capacity(ops.len());
        for (account, fields) in ops {
            let mut record: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect();
            record.insert(
                self.settings.match_field.clone(),
                Value::String(account.external_id.clone()),
            );
            records.push(Value::Object(record));
        }
        let body = json!({ "records": records });
        let query = [("keys", self.settings.match_field.clone())];
        let call = Call {
            query: &query,
            body: Some(&body),
            accept: &[StatusCode::BAD_REQUEST],
            ..Call::new(&Method::PUT, "/v1/data/objects/Company")
        };
        let r = self
            .http
            .execute(call)
            .await
            .map_err(|e| Refusal::Other(e.into()))?;
        if r.status == StatusCode::BAD_REQUEST || r.body.get("result") == Some(&Value::Bool(false))
        {
            return Err(Refusal::Validation(gainsight_error(&r.body)));
        }
        Ok(())
    }

    /// Sends `body` to `path` and returns the envelope's `data`, or `Invalid` with Gainsight's error.
    /// `creates` marks the CTA create, which the engine must not re-send (`Call::creates`).
    async fn call(
        &self,
        account: &AccountRef,
        method: Method,
        path: &str,
        body: &Value,
        creates: bool,
    ) -> Result<Value, DeliveryError> {
        let call = Call {
            body: Some(body),
            accept: &[StatusCode::BAD_REQUEST],
            creates,
            ..Call::new(&method, path)
        };
        let r = self.http.execute(call).await?;
        if r.status == StatusCode::BAD_REQUEST || r.body.get("result") == Some(&Value::Bool(false))
        {
            return Err(DeliveryError::Invalid(self.err_text(
                account,
                &format!("{method} {path} refused"),
                &gainsight_error(&r.body),
            )));
        }
        Ok(r.body.get("data").cloned().unwrap_or(Value::Null))
    }

    async fn company_gsid(&self, account: &AccountRef) -> Result<String, DeliveryError> {
        let m = &self.settings.match_field;
        let body = json!({
            "select": ["Gsid", m],
            "where": {"conditions": [{"name": m, "alias": "A", "value": [account.external_id], "operator": "EQ"}],
                      "expression": "A"},
            "limit": 1, "offset": 0,
        });
        let data = self
            .call(
                account,
                Method::POST,
                "/v1/data/objects/query/Company",
                &body,
                false,
            )
            .await?;
        records(&data)
            .iter()
            .find(|r| r.get(m).and_then(Value::as_str) == Some(&account.external_id))
            .and_then(|r| common::id_of(r.get("Gsid")))
            .ok_or_else(|| {
                DeliveryError::Rejected(self.err_text(
                    account,
                    "no gainsight company matches",
                    &format!("{m} = {}", account.external_id),
                ))
            })
    }

    /// The CTA carrying `key` in the key field, if any.
    async fn find_cta(
        &self,
        account: &AccountRef,
        key: &str,
    ) -> Result<Option<Value>, DeliveryError> {
        let f = &self.settings.cta_key_field;
        let body = json!({
            "select": ["Gsid", "Name", "IsClosed", f],
            "where": {"conditions": [{"name": f, "alias": "A", "value": [key], "operator": "EQ"}],
                      "expression": "A"},
            "limit": 10, "offset": 0,
        });
        let data = self
            .call(account, Method::POST, "/v2/cockpit/cta/list", &body, false)
            .await?;
        Ok(records(&data)
            .iter()
            .find(|c| c.get(f).and_then(Value::as_str) == Some(key))
            .cloned())
    }

    async fn create_cta(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        description: &str,
        tasks: &[TaskSpec],
    ) -> Result<Delivered, DeliveryError> {
        if self.find_cta(account, key).await?.is_some() {
            return Ok(Delivered::AlreadyPresent);
        }
        let company = self.company_gsid(account).await?;
        let today = self.clock.now().date_naive();
        let due = |days: u32| {
            today
                .checked_add_days(Days::new(u64::from(days)))
                .unwrap_or(today)
                .format("%Y-%m-%d")
                .to_string()
        };
        let last_due = tasks.iter().map(|t| t.due_days).max().unwrap_or(0);
        let mut comments = description.to_string();
        for t in tasks {
            comments.push_str(&format!(
                "\n[ ] {} (due {}): {}",
                t.name,
                due(t.due_days),
                t.description
            ));
        }
        let s = &self.settings;
        let mut cta = json!({
            "Name": name, "CompanyId": company, "TypeName": s.cta_type, "ReasonName": s.cta_reason,
            "PriorityName": s.cta_priority, "StatusName": s.cta_status, "DueDate": due(last_due),
            "Comments": comments,
        });
        cta[&s.cta_key_field] = Value::String(key.to_string());
        let data = self
            .call(
                account,
                Method::POST,
                "/v2/cockpit/cta/",
                &json!({ "requests": [cta] }),
                true,
            )
            .await?;
        if created_gsid(&data).is_none() {
            return Err(DeliveryError::Transient(self.err_text(
                account,
                "gainsight accepted the cta but returned no Gsid",
                "the next attempt looks it up by key",
            )));
        }
        Ok(Delivered::Applied)
    }

    async fn close_cta(
        &self,
        account: &AccountRef,
        key: &str,
        note: &str,
    ) -> Result<Delivered, DeliveryError> {
        let Some(cta) = self.find_cta(account, key).await? else {
            return Ok(Delivered::AlreadyPresent);
        };
        if cta.get("IsClosed") == Some(&Value::Bool(true)) {
            return Ok(Delivered::AlreadyPresent);
        }
        let gsid = common::id_of(cta.get("Gsid")).ok_or_else(|| {
            DeliveryError::Transient(self.err_text(account, "cta without Gsid", key))
        })?;
        let body = json!({"requests": [{
            "Gsid": gsid, "StatusName": self.settings.cta_closed_status, "Comments": note,
        }]});
        self.call(account, Method::PUT, "/v2/cockpit/cta/", &body, false)
            .await?;
        Ok(Delivered::Applied)
    }
}

/// Why an update call failed: Gainsight's validation (resend the halves), or anything else.
enum Refusal {
    Validation(String),
    Other(DeliveryError),
}

fn copy_error(e: &DeliveryError) -> DeliveryError {
    match e {
        DeliveryError::Transient(m) => DeliveryError::Transient(m.clone()),
        DeliveryError::Invalid(m) => DeliveryError::Invalid(m.clone()),
        DeliveryError::Rejected(m) => DeliveryError::Rejected(m.clone()),
    }
}

/// The records of an envelope's `data`: `data.records`, or `data` itself when it is a list.
fn records(data: &Value) -> Vec<Value> {
    match data {
        Value::Array(a) => a.clone(),
        other => other
            .get("records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    }
}

fn created_gsid(data: &Value) -> Option<String> {
    records(data)
        .first()
        .and_then(|r| common::id_of(r.get("Gsid")))
        .or_else(|| common::id_of(data.get("Gsid")))
}

/// `errorCode: errorDesc` from the envelope, else the body as text.
fn gainsight_error(body: &Value) -> String {
    match (
        body.get("errorCode").and_then(Value::as_str),
        body.get("errorDesc").and_then(Value::as_str),
    ) {
        (Some(c), Some(d)) => format!("{c}: {d}"),
        (None, Some(d)) => d.to_string(),
        _ => match body {
            Value::String(s) => s.clone(),
            Value::Null => "(no message)".to_string(),
            other => other.to_string(),
        },
    }
}

impl PlatformApi for Gainsight {
    const BATCH: usize = BATCH_SIZE;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(async move { self.update_companies(&writes).await })
    }

    fn create_project<'a>(
        &'a self,
        p: ProjectWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.create_cta(p.account, p.key, p.name, p.description, p.tasks))
    }

    fn close_project<'a>(
        &'a self,
        c: CloseWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.close_cta(c.account, c.key, c.note))
    }
}

#[cfg(test)]
#[path = "gainsight/tests.rs"]
mod tests;
