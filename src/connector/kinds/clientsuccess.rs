//! The `clientsuccess` sink kind: health fields as ClientSuccess client custom field values, and playbook
//! projects as client to-dos, through ClientSuccess's Open API (base `https://api.clientsuccess.com`).
//!
//! - Auth: `POST /v1/auth` with the API user's email and password returns `{"access_token","token_type",
//!   "expires_in":43200}`; the token then goes on every request as a bare `Authorization: <token>` (no
//!   `Bearer`). The connector's auth is `basic` with `username` (the email) and `password` references; the
//!   engine logs in, caches the token until a minute before it expires, and on a 401 logs in again and
//!   retries once (`http/login.rs`). ClientSuccess recommends a dedicated user named "API Access".
//! - Clients are found by external id: `GET /v1/clients?externalId=<crm id>` answers the client (404 when
//!   none). The id is cached for the life of the connector.
//! - `SetFields` → `PATCH /v1/customfield/value/client/<client id>` with `{"<custom field label>": value}`
//!   (numbers as numbers, text as text, `null` clears). There is no batch endpoint: one call per client.
//!   400/422 (an unknown field, a value of the wrong type) are `Invalid`; an unknown client is `Rejected`.
//! - Projects: ClientSuccess has no project object in its Open API; the nearest thing is the client's
//!   to-dos. `CreateProject` creates one to-do per task (`POST /v1/clients/<id>/to-dos` with `name`,
//!   `description`, `dueDate`), each named `<task> [<key>/task-<n>]`; before creating, it lists the
//!   client's to-dos (`GET /v1/clients/<id>/to-dos`) and skips those whose name already carries their key,
//!   so a resend after a crash creates nothing twice (all found → `AlreadyPresent`). `CloseProject`
//!   completes the project's open to-dos (`PUT /v1/clients/<id>/to-dos/<to-do id>` with the to-do and
//!   `"completed": true`); none open → `AlreadyPresent`. To-dos are not assigned to the account owner
//!   (no owner mapping is built for this kind); ClientSuccess leaves them to the client's CSM.
//! - 429 and 5xx are retried by the engine (`Retry-After` honoured), then `Transient`.
//!
//! Sources (search tool): ClientSuccess's help centre ("Getting API Access…", the Open API v1/v2 and a
//! dedicated API user) and its API reference at clientsuccess.readme.io (client fields incl. External ID)
//! [D]; the `/v1/auth` login, its JSON body and answer, the bare `Authorization` token, re-login on 401,
//! `GET /v1/clients?externalId=`, `PATCH /v1/customfield/value/client/<id>` and the to-do routes under
//! `/v1/clients/<id>/to-dos` from three client libraries (LawKick's Ruby client, mindsmash's and
//! Roadmunk's Node clients) and an MCP server that notes its auth facts were checked live [C]. Assumed
//! where those are silent: the to-do body's field names (`name`, `description`, `dueDate` as
//! `YYYY-MM-DD`, `completed`) and that `PUT` of a to-do with `completed: true` completes it; that a list
//! of to-dos is a JSON array; that 400/422 carry a `userMessage`; the rate limit (ClientSuccess publishes
//! none; 300 a minute is a guess that stays polite). This kind does not decide what to write (the
//! planner) nor when to retry (the outbox).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common;
use super::sink_support::{self, BatchResults, CloseWrite, Errors, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{encode_segment, Call, Clock, HttpClient, HttpError, LoginSpec, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, FieldValue, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "clientsuccess",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[AuthScheme::Basic],
    // ClientSuccess publishes no limit; assumed.
    default_rate_limit: RateLimit::per_secs(300, 60),
    parse_params: common::no_params,
    limitations: &[
            "ClientSuccess's Open API has no projects: each playbook task is a to-do on the client, found again by a key in its name",
            "recovery completes the to-dos; no closing note is written, and to-dos are not assigned to the account owner",
        ],
};

/// ClientSuccess's login: the token comes back bare in `Authorization`.
pub const LOGIN: LoginSpec = LoginSpec {
    path: "/v1/auth",
    header_prefix: None,
};


pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?.with_login(LOGIN)?;
    Ok(Built::Sink(Box::new(ClientSuccess::new(
        http,
        Arc::new(SystemClock),
    ))))
}

pub struct ClientSuccess {
    http: HttpClient,
    clock: Arc<dyn Clock>,
    /// External id → ClientSuccess client id, learned from lookups.
    client_ids: Mutex<HashMap<String, String>>,
}

/// The JSON id as path text (ClientSuccess ids are numbers).
/// The vendor's own words from an error body: `userMessage`, `message`, or the body.
fn vendor_message(body: &Value) -> String {
    ["userMessage", "message", "error"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

/// The marker a to-do's name carries: ` [<task key>]`.
fn marker(task_key: &str) -> String {
    format!("[{task_key}]")
}

impl ClientSuccess {
    pub fn new(http: HttpClient, clock: Arc<dyn Clock>) -> ClientSuccess {
        ClientSuccess {
            http,
            clock,
            client_ids: Mutex::new(HashMap::new()),
        }
    }

    fn errors(&self) -> Errors<'_> {
        Errors {
            connector: self.http.connector(),
            platform: "clientsuccess",
        }
    }

    /// A non-2xx answer the kind handles itself: 400/422 → `Invalid`, anything else → `Rejected`.
    fn refused(
        &self,
        account: &AccountRef,
        what: &str,
        status: StatusCode,
        body: &Value,
    ) -> DeliveryError {
        let msg = format!("http {}: {}", status.as_u16(), vendor_message(body));
        match status.as_u16() {
            400 | 422 => self.errors().invalid(account, what, &msg),
            _ => self.errors().rejected(account, what, &msg),
        }
    }

    fn forget(&self, account: &AccountRef) {
        if let Ok(mut ids) = self.client_ids.lock() {
            ids.remove(&account.external_id);
        }
    }

    /// The ClientSuccess id of the client whose external id is the account's CRM id; no such client is
    /// `Rejected`.
    async fn client_id(&self, account: &AccountRef) -> Result<String, DeliveryError> {
        self.lookup(account).await?.ok_or_else(|| {
            self.errors()
                .rejected(account, "find client", "no client has this external id")
        })
    }

    /// The client's id, `None` when ClientSuccess has no client with the account's external id.
    async fn lookup(&self, account: &AccountRef) -> Result<Option<String>, DeliveryError> {
        if let Some(id) = self
            .client_ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(&account.external_id).cloned())
        {
            return Ok(Some(id));
        }
        if account.external_id.is_empty() {
            return Ok(None);
        }
        let query = [("externalId", account.external_id.clone())];
        let call = Call {
            query: &query,
            accept: &[StatusCode::NOT_FOUND],
            ..Call::new(&Method::GET, "/v1/clients")
        };
        let r = self.http.execute(call).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // One client; tolerate a list filtered to the external id as well.
        let found = match &r.body {
            Value::Array(items) => items
                .iter()
                .find(|c| c.get("externalId").and_then(Value::as_str) == Some(&account.external_id))
                .and_then(|c| common::id_of(c.get("id"))),
            other => common::id_of(other.get("id")),
        };
        if let (Some(id), Ok(mut ids)) = (&found, self.client_ids.lock()) {
            ids.insert(account.external_id.clone(), id.clone());
        }
        Ok(found)
    }

    async fn set_account_fields(
        &self,
        account: &AccountRef,
        fields: &BTreeMap<String, FieldValue>,
    ) -> Result<Delivered, DeliveryError> {
        let id = self.client_id(account).await?;
        let body: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let body = Value::Object(body);
        let path = format!("/v1/customfield/value/client/{}", encode_segment(&id));
        let call = Call {
            body: Some(&body),
            accept: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::UNPROCESSABLE_ENTITY,
            ],
            ..Call::new(&Method::PATCH, &path)
        };
        let r = self.http.execute(call).await?;
        if r.status.is_success() {
            return Ok(Delivered::Applied);
        }
        if r.status == StatusCode::NOT_FOUND {
            // The client went away since it was looked up: look it up again next time.
            self.forget(account);
        }
        Err(self.refused(account, "set custom fields", r.status, &r.body))
    }

    /// The client's to-dos; `None` when the client is gone (404).
    async fn todos(
        &self,
        account: &AccountRef,
        client: &str,
    ) -> Result<Option<Vec<Value>>, DeliveryError> {
        let path = format!("/v1/clients/{}/to-dos", encode_segment(client));
        let call = Call {
            accept: &[StatusCode::NOT_FOUND],
            ..Call::new(&Method::GET, &path)
        };
        let r = self.http.execute(call).await?;
        if r.status == StatusCode::NOT_FOUND {
            self.forget(account);
            return Ok(None);
        }
        match r.body {
            Value::Array(items) => Ok(Some(items)),
            Value::Null => Ok(Some(Vec::new())),
            _ => Err(HttpError::Decode {
                target: self.http.target(&Method::GET, &path),
                expected: "a json array of to-dos".into(),
                reason: "got another json value".into(),
            }
            .into()),
        }
    }

    async fn open_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        description: &str,
        tasks: &[TaskSpec],
    ) -> Result<Delivered, DeliveryError> {
        let client = self.client_id(account).await?;
        let Some(existing) = self.todos(account, &client).await? else {
            return Err(self.errors().rejected(
                account,
                "list to-dos",
                "the client no longer exists",
            ));
        };
        let names: Vec<&str> = existing
            .iter()
            .filter_map(|t| t.get("name").and_then(Value::as_str))
            .collect();
        let tasks = sink_support::project_tasks(name, description, tasks);
        let path = format!("/v1/clients/{}/to-dos", encode_segment(&client));
        let mut created = 0;
        for (i, task) in tasks.iter().enumerate() {
            let mark = marker(&sink_support::task_key(key, i));
            if names.iter().any(|n| n.contains(&mark)) {
                continue;
            }
            let due = sink_support::due_date(self.clock.as_ref(), task.due_days);
            let body = json!({
                "name": format!("{} {mark}", task.name),
                "description": format!("{name}: {}", task.description),
                "dueDate": due.format("%Y-%m-%d").to_string(),
            });
            let call = Call {
                body: Some(&body),
                accept: &[StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY],
                creates: true,
                ..Call::new(&Method::POST, &path)
            };
            let r = self.http.execute(call).await?;
            if !r.status.is_success() {
                return Err(self.refused(account, "create to-do", r.status, &r.body));
            }
            created += 1;
        }
        Ok(if created == 0 {
            Delivered::AlreadyPresent
        } else {
            Delivered::Applied
        })
    }

    async fn end_project(
        &self,
        account: &AccountRef,
        key: &str,
    ) -> Result<Delivered, DeliveryError> {
        // A client that no longer exists has no project left to close.
        let Some(client) = self.lookup(account).await? else {
            return Ok(Delivered::AlreadyPresent);
        };
        let Some(todos) = self.todos(account, &client).await? else {
            return Ok(Delivered::AlreadyPresent);
        };
        let prefix = format!("[{key}/task-");
        let open: Vec<Value> = todos
            .into_iter()
            .filter(|t| {
                t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.contains(&prefix))
                    && t.get("completed").and_then(Value::as_bool) != Some(true)
            })
            .collect();
        if open.is_empty() {
            return Ok(Delivered::AlreadyPresent);
        }
        for mut todo in open {
            let Some(todo_id) = common::id_of(todo.get("id")) else {
                continue;
            };
            todo["completed"] = Value::Bool(true);
            let path = format!(
                "/v1/clients/{}/to-dos/{}",
                encode_segment(&client),
                encode_segment(&todo_id)
            );
            let call = Call {
                body: Some(&todo),
                accept: &[
                    StatusCode::BAD_REQUEST,
                    StatusCode::NOT_FOUND,
                    StatusCode::UNPROCESSABLE_ENTITY,
                ],
                ..Call::new(&Method::PUT, &path)
            };
            let r = self.http.execute(call).await?;
            // A to-do deleted meanwhile needs no completing.
            if !r.status.is_success() && r.status != StatusCode::NOT_FOUND {
                return Err(self.refused(account, "complete to-do", r.status, &r.body));
            }
        }
        Ok(Delivered::Applied)
    }
}

impl PlatformApi for ClientSuccess {
    const BATCH: usize = 1;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(sink_support::each_account(writes, |a, f| self.set_account_fields(a, f)))
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
#[path = "clientsuccess_tests.rs"]
mod tests;
