//! The `vitally` sink kind: writes health traits and playbook projects to Vitally's REST API.
//!
//! Base URL `https://<subdomain>.rest.vitally.io` (or a simulator prefix); every path is under
//! `/resources`. Auth is HTTP Basic with the API key as username and an empty password.
//!
//! - `SetFields` → `PUT /resources/accounts/{externalId}` with `{"traits":{…}}` (traits merge; `null`
//!   deletes one). **Assumption:** Vitally accepts the account's externalId in place of its Vitally id on
//!   this path; not verified against the live API. 404 → `Rejected` with Vitally's `{"error"}` message.
//! - `CreateProject` → `GET /resources/projects?externalId=<key>`; if found, make sure each task exists
//!   and answer `AlreadyPresent`. Otherwise `POST /resources/projects` `{"accountId","name","description",
//!   "externalId"}`, then per task `POST /resources/tasks` `{"accountId","projectId","name","description",
//!   "dueDate","externalId":"<key>/task-<n>"}` (n counts from 1). A 409 means the externalId already exists,
//!   which is success. **Not verified:** the project body (Vitally documents projects only as created from
//!   templates); the task body follows the unofficial spec's `TaskWrite`. `accountId` carries the externalId
//!   under the same assumption as above. Due dates are today (from an injectable clock) plus `due_days`.
//!
//!   A task is assigned (`assignedToId`) when `[params.owners]` maps the account's owner (the model's
//!   `accounts.owner_field`, e.g. the HubSpot owner id) to a Vitally admin id; otherwise it is unassigned.
//! - `CloseProject` → `POST /resources/notes` `{"accountId","externalId":"<key>/closed","subject","note",
//!   "noteDate"}`: the API documents no way to complete or archive a project, so the nearest honest thing
//!   is a closing note on the account; 409 (the note exists) is `AlreadyPresent`. The project itself stays
//!   open in Vitally until a CSM completes it.
//!
//! Throttling: 429 with `RateLimit-Reset` (seconds until a unit refills) is waited out by the engine; what
//! survives the retries becomes `DeliveryError::Transient`. This kind does not decide what to write
//! (the planner) nor when to retry a failed write (the outbox).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common;
use super::sink_support::{self, BatchResults, CloseWrite, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{encode_segment, retry_after, Call, Classified, Clock, HttpClient, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "vitally",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[AuthScheme::Basic],
    // A token bucket of 1,000 units per minute per key.
    default_rate_limit: RateLimit::per_secs(1000, 60),
    parse_params: read_params,
    limitations: &[
        "projects cannot be completed through the API: recovery adds a closing note to the account",
    ],
};

/// The account owner → platform user map (`[params.owners]`).
type Owners = std::collections::BTreeMap<String, String>;

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    common::check_keys(params, &["owners"])?;
    common::owner_map(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let http = HttpClient::new(ctx.connector, ctx.secrets)?.with_classifier(classify);
    let owners = ctx.params::<Owners>()?.clone();
    Ok(Built::Sink(Box::new(
        Vitally::new(http, Arc::new(SystemClock)).with_owners(owners),
    )))
}

/// 429 waits `Retry-After` if sent, else `RateLimit-Reset` (seconds until the bucket refills a unit).
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    _: &[u8],
    now: DateTime<Utc>,
) -> Option<Classified> {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let reset = headers
        .get("ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Some(Classified::RateLimited {
        retry_after: retry_after(headers, now).or(reset),
    })
}

pub struct Vitally {
    http: HttpClient,
    clock: Arc<dyn Clock>,
    /// The model's account owner → Vitally admin id, for `assignedToId` on playbook tasks.
    owners: std::collections::BTreeMap<String, String>,
}

impl Vitally {
    /// `clock` gives "today" for task due dates.
    pub fn new(http: HttpClient, clock: Arc<dyn Clock>) -> Vitally {
        Vitally {
            http,
            clock,
            owners: Default::default(),
        }
    }

    pub fn with_owners(mut self, owners: std::collections::BTreeMap<String, String>) -> Vitally {
        self.owners = owners;
        self
    }

    fn rejected(&self, account: &AccountRef, what: &str, body: &Value) -> DeliveryError {
        DeliveryError::Rejected(format!(
            "connector {}: account {} ({}): {what}: {}",
            self.http.connector(),
            account.external_id,
            account.name,
            vitally_error(body)
        ))
    }

    fn transient(&self, account: &AccountRef, what: &str) -> DeliveryError {
        DeliveryError::Transient(format!(
            "connector {}: account {}: {what}",
            self.http.connector(),
            account.external_id
        ))
    }

    async fn set_account_fields(
        &self,
        account: &AccountRef,
        fields: &std::collections::BTreeMap<String, crate::vocab::FieldValue>,
    ) -> Result<Delivered, DeliveryError> {
        let traits: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let body = json!({ "traits": traits });
        let path = format!(
            "/resources/accounts/{}",
            encode_segment(&account.external_id)
        );
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::NOT_FOUND],
            ..Call::new(&Method::PUT, &path)
        };
        let r = self.http.execute(call).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Err(self.rejected(account, "account not found in vitally", &r.body));
        }
        Ok(Delivered::Applied)
    }

    /// The object of `resource` whose `externalId` is `key`, if any.
    async fn find(&self, resource: &str, key: &str) -> Result<Option<Value>, DeliveryError> {
        let body = self
            .http
            .get_json(
                &format!("/resources/{resource}"),
                &[("externalId", key.to_string())],
            )
            .await?;
        let results = body
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                DeliveryError::Transient(format!(
                    "connector {}: GET /resources/{resource}: response has no `results` list",
                    self.http.connector()
                ))
            })?;
        // Match exactly, in case the filter is ignored and a plain list comes back.
        Ok(results
            .iter()
            .find(|o| o.get("externalId").and_then(Value::as_str) == Some(key))
            .cloned())
    }

    async fn open_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        description: &str,
        tasks: &[TaskSpec],
        assignee: Option<&str>,
    ) -> Result<Delivered, DeliveryError> {
        if let Some(project) = self.find("projects", key).await? {
            return self
                .complete_existing(account, key, &project, tasks, assignee)
                .await;
        }
        let body = json!({
            "accountId": account.external_id,
            "name": name,
            "description": description,
            "externalId": key,
        });
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::CONFLICT],
            creates: true,
            ..Call::new(&Method::POST, "/resources/projects")
        };
        let r = self.http.execute(call).await?;
        if r.status == StatusCode::CONFLICT {
            // Created between our lookup and our POST: finish it as an existing project. Looked up once
            // only, so a lookup that cannot see it fails the write instead of looping.
            return match self.find("projects", key).await? {
                Some(project) => {
                    self.complete_existing(account, key, &project, tasks, assignee)
                        .await
                }
                None => Err(self.transient(
                    account,
                    "vitally reports the project exists but the externalId lookup does not find it",
                )),
            };
        }
        let project_id = common::id_of(r.body.get("id")).ok_or_else(|| {
            self.transient(account, "vitally created the project but returned no `id`")
        })?;
        for (n, task) in tasks.iter().enumerate() {
            self.create_task(account, &project_id, &task_key(key, n), task, assignee)
                .await?;
        }
        Ok(Delivered::Applied)
    }

    /// Creates whichever tasks of an existing project are missing; the write was already present.
    async fn complete_existing(
        &self,
        account: &AccountRef,
        key: &str,
        project: &Value,
        tasks: &[TaskSpec],
        assignee: Option<&str>,
    ) -> Result<Delivered, DeliveryError> {
        let project_id = common::id_of(project.get("id"))
            .ok_or_else(|| self.transient(account, "existing vitally project has no `id`"))?;
        for (n, task) in tasks.iter().enumerate() {
            let ext = task_key(key, n);
            if self.find("tasks", &ext).await?.is_none() {
                self.create_task(account, &project_id, &ext, task, assignee)
                    .await?;
            }
        }
        Ok(Delivered::AlreadyPresent)
    }

    async fn create_task(
        &self,
        account: &AccountRef,
        project_id: &str,
        external_id: &str,
        task: &TaskSpec,
        assignee: Option<&str>,
    ) -> Result<(), DeliveryError> {
        let today = self.clock.now().date_naive();
        let due = today
            .checked_add_days(Days::new(u64::from(task.due_days)))
            .unwrap_or(today);
        let mut body = json!({
            "accountId": account.external_id,
            "projectId": project_id,
            "name": task.name,
            "description": task.description,
            "dueDate": due.format("%Y-%m-%d").to_string(),
            "externalId": external_id,
        });
        if let Some(admin) = assignee {
            body["assignedToId"] = Value::String(admin.to_string());
        }
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::CONFLICT],
            creates: true,
            ..Call::new(&Method::POST, "/resources/tasks")
        };
        // 409: a task with this externalId exists already, which is what we wanted.
        self.http.execute(call).await?;
        Ok(())
    }
}

impl Vitally {
    /// Vitally's REST API has no documented way to complete or archive a project, so recovery is recorded
    /// as a note on the account (`POST /resources/notes`), keyed `<project key>/closed`: a resend gets 409
    /// (the note exists), which is `AlreadyPresent`.
    async fn end_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        note: &str,
    ) -> Result<Delivered, DeliveryError> {
        let body = json!({
            "accountId": account.external_id,
            "externalId": format!("{key}/closed"),
            "subject": format!("Resolved: {name}"),
            "note": note,
            "noteDate": self.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        let call = Call {
            body: Some(&body),
            accept: &[StatusCode::CONFLICT, StatusCode::NOT_FOUND],
            creates: true,
            ..Call::new(&Method::POST, "/resources/notes")
        };
        let r = self.http.execute(call).await?;
        match r.status {
            StatusCode::CONFLICT => Ok(Delivered::AlreadyPresent),
            StatusCode::NOT_FOUND => {
                Err(self.rejected(account, "account not found in vitally", &r.body))
            }
            _ => Ok(Delivered::Applied),
        }
    }
}

fn task_key(project_key: &str, index: usize) -> String {
    format!("{project_key}/task-{}", index + 1)
}

/// Vitally's `{"error": "..."}` message, else the body as text.
fn vitally_error(body: &Value) -> String {
    match body.get("error") {
        Some(Value::String(s)) => s.clone(),
        _ => match body {
            Value::String(s) => s.clone(),
            Value::Null => "(no message)".to_string(),
            other => other.to_string(),
        },
    }
}

impl PlatformApi for Vitally {
    const BATCH: usize = 1;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(sink_support::each_account(writes, |a, f| self.set_account_fields(a, f)))
    }

    fn create_project<'a>(
        &'a self,
        p: ProjectWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let assignee = p.owner.and_then(|o| self.owners.get(o));
            self.open_project(
                p.account,
                p.key,
                p.name,
                p.description,
                p.tasks,
                assignee.map(String::as_str),
            )
            .await
        })
    }

    fn close_project<'a>(
        &'a self,
        c: CloseWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.end_project(c.account, c.key, c.name, c.note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Sink;
    use crate::vocab::{FieldValue, WriteOp};
    use crate::http::testing::{config, manual_clock, secrets};
    use crate::http::ManualClock;
    use std::collections::BTreeMap;
    use wiremock::matchers::{body_json, body_partial_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// Basic auth for API key `vk_test` and an empty password.
    const AUTH: &str = "Basic dmtfdGVzdDo=";

    fn sink(server: &MockServer) -> (Vitally, Arc<ManualClock>) {
        let mut cfg = config(
            "vitally",
            Role::Sink,
            &format!("{}/vitally", server.uri()),
            AuthScheme::Basic,
        );
        let s = secrets(&mut cfg, &[("username", "vk_test")]);
        let clock = manual_clock();
        let http = HttpClient::new(&cfg, &s)
            .unwrap()
            .with_classifier(classify)
            .with_clock(clock.clone());
        (Vitally::new(http, clock.clone()), clock)
    }

    fn account() -> AccountRef {
        AccountRef {
            account_id: "acct-1".into(),
            external_id: "101".into(),
            name: "Acme".into(),
        }
    }

    fn project_op() -> WriteOp {
        WriteOp::CreateProject {
            account: account(),
            key: "101:poor-health:2026-11-23".into(),
            playbook: "poor-health".into(),
            name: "Poor Health: usage".into(),
            description: "Usage dropped".into(),
            tasks: vec![
                TaskSpec {
                    name: "Call champion".into(),
                    description: "Ask why".into(),
                    due_days: 7,
                },
                TaskSpec {
                    name: "Exec sponsor".into(),
                    description: "Escalate".into(),
                    due_days: 0,
                },
            ],
            owner: None,
        }
    }

    #[tokio::test]
    async fn close_project_adds_a_keyed_note_and_a_resend_is_already_present() {
        let server = MockServer::start().await;
        let close = WriteOp::CloseProject {
            account: account(),
            key: "101:poor-health:2026-11-23".into(),
            playbook: "poor-health".into(),
            name: "Poor Health: usage".into(),
            note: "Acme recovered".into(),
        };
        let expected = json!({
            "accountId": "101",
            "externalId": "101:poor-health:2026-11-23/closed",
            "subject": "Resolved: Poor Health: usage",
            "note": "Acme recovered",
        });
        Mock::given(method("POST"))
            .and(path("/vitally/resources/notes"))
            .and(header("authorization", AUTH))
            .and(body_partial_json(expected.clone()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "n-1"})))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/vitally/resources/notes"))
            .and(body_partial_json(expected))
            .respond_with(
                ResponseTemplate::new(409).set_body_json(json!({"error": "externalId exists"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let (sink, _) = sink(&server);
        assert_eq!(sink.deliver(&close).await.unwrap(), Delivered::Applied);
        assert_eq!(
            sink.deliver(&close).await.unwrap(),
            Delivered::AlreadyPresent
        );
    }

    #[tokio::test]
    async fn set_fields_puts_traits_on_the_account() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/vitally/resources/accounts/101"))
            .and(header("authorization", AUTH))
            .and(body_json(
                json!({"traits": {"healthScoreExt": 87.5, "healthBand": "green", "topRisk": null}}),
            ))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"id": "v-1", "externalId": "101"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let (sink, _) = sink(&server);
        let mut fields = BTreeMap::new();
        fields.insert("healthScoreExt".to_string(), FieldValue::Number(87.5));
        fields.insert("healthBand".to_string(), FieldValue::Text("green".into()));
        fields.insert("topRisk".to_string(), FieldValue::Null);
        let op = WriteOp::SetFields {
            account: account(),
            fields,
        };
        assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    }

    #[tokio::test]
    async fn unknown_account_is_rejected_with_vitallys_message() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(
                ResponseTemplate::new(404).set_body_json(json!({"error": "Account not found"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let (sink, _) = sink(&server);
        let op = WriteOp::SetFields {
            account: account(),
            fields: BTreeMap::new(),
        };
        let err = sink.deliver(&op).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Rejected(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "rejected: connector test_vitally: account 101 (Acme): account not found in vitally: Account not found"
        );
    }

    #[tokio::test]
    async fn throttling_is_transient_after_retries() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("RateLimit-Limit", "1000, 1000;window=60")
                    .insert_header("RateLimit-Remaining", "0")
                    .insert_header("RateLimit-Reset", "5")
                    .set_body_json(json!({"error": "Too many requests"})),
            )
            .expect(6)
            .mount(&server)
            .await;
        let (sink, clock) = sink(&server);
        let op = WriteOp::SetFields {
            account: account(),
            fields: BTreeMap::new(),
        };
        let err = sink.deliver(&op).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Transient(_)), "{err:?}");
        assert!(err.to_string().contains("rate limited"), "{err}");
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(5); 5]);
    }

    #[tokio::test]
    async fn tasks_are_assigned_to_the_mapped_owner_only() {
        use crate::connector::kinds::sink_testkit::with_owner;
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/vitally/resources/projects"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"results": [], "next": null})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/vitally/resources/projects"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "proj-9"})))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/vitally/resources/tasks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "t-1"})))
            .mount(&server)
            .await;
        let (sink, _) = sink(&server);
        let sink = sink.with_owners(BTreeMap::from([(
            "hs-42".to_string(),
            "admin-7".to_string(),
        )]));
        sink.deliver(&with_owner(project_op(), "hs-42"))
            .await
            .unwrap();
        sink.deliver(&with_owner(project_op(), "hs-unmapped"))
            .await
            .unwrap();
        let assignees: Vec<Value> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/tasks"))
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["assignedToId"].clone())
            .collect();
        assert_eq!(
            assignees,
            vec![json!("admin-7"), json!("admin-7"), Value::Null, Value::Null]
        );
    }

    #[tokio::test]
    async fn project_lookup_then_create_with_tasks() {
        let server = MockServer::start().await;
        let key = "101:poor-health:2026-11-23";
        Mock::given(method("GET"))
            .and(path("/vitally/resources/projects"))
            .and(query_param("externalId", key))
            .and(header("authorization", AUTH))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"results": [], "next": null})),
            )
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/vitally/resources/projects"))
            .and(body_json(json!({"accountId": "101", "name": "Poor Health: usage", "description": "Usage dropped", "externalId": key})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "proj-9", "externalId": key})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/vitally/resources/tasks"))
            .and(body_json(json!({
                "accountId": "101", "projectId": "proj-9", "name": "Call champion", "description": "Ask why",
                "dueDate": "2026-11-30", "externalId": format!("{key}/task-1"),
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "t-1"})))
            .expect(1)
            .mount(&server)
            .await;
        // The second task already exists (an earlier attempt): 409 is fine.
        Mock::given(method("POST"))
            .and(path("/vitally/resources/tasks"))
            .and(body_json(json!({
                "accountId": "101", "projectId": "proj-9", "name": "Exec sponsor", "description": "Escalate",
                "dueDate": "2026-11-23", "externalId": format!("{key}/task-2"),
            })))
            .respond_with(ResponseTemplate::new(409).set_body_json(json!({"error": "externalId already exists"})))
            .expect(1)
            .mount(&server)
            .await;
        let (sink, _) = sink(&server);
        assert_eq!(
            sink.deliver(&project_op()).await.unwrap(),
            Delivered::Applied
        );
    }

    #[tokio::test]
    async fn existing_project_is_already_present_and_creates_nothing() {
        let server = MockServer::start().await;
        let key = "101:poor-health:2026-11-23";
        Mock::given(method("GET"))
            .and(path("/vitally/resources/projects"))
            .and(query_param("externalId", key))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "results": [{"id": "proj-9", "externalId": key, "name": "Poor Health: usage"}], "next": null,
            })))
            .expect(1)
            .mount(&server)
            .await;
        for n in 1..=2 {
            let ext = format!("{key}/task-{n}");
            Mock::given(method("GET"))
                .and(path("/vitally/resources/tasks"))
                .and(query_param("externalId", ext.as_str()))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "results": [{"id": format!("t-{n}"), "externalId": ext, "name": "x", "accountId": "101"}], "next": null,
                })))
                .expect(1)
                .mount(&server)
                .await;
        }
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&server)
            .await;
        let (sink, _) = sink(&server);
        assert_eq!(
            sink.deliver(&project_op()).await.unwrap(),
            Delivered::AlreadyPresent
        );
    }

    #[tokio::test]
    async fn existing_project_gets_its_missing_task_only() {
        let server = MockServer::start().await;
        let key = "101:poor-health:2026-11-23";
        Mock::given(method("GET"))
            .and(path("/vitally/resources/projects"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "results": [{"id": "proj-9", "externalId": key}], "next": null,
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/vitally/resources/tasks"))
            .and(query_param("externalId", format!("{key}/task-1").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "results": [{"id": "t-1", "externalId": format!("{key}/task-1")}], "next": null,
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/vitally/resources/tasks"))
            .and(query_param("externalId", format!("{key}/task-2").as_str()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"results": [], "next": null})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/vitally/resources/tasks"))
            .and(body_partial_json(
                json!({"projectId": "proj-9", "externalId": format!("{key}/task-2")}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "t-2"})))
            .expect(1)
            .mount(&server)
            .await;
        let (sink, _) = sink(&server);
        assert_eq!(
            sink.deliver(&project_op()).await.unwrap(),
            Delivered::AlreadyPresent
        );
        let posts = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count();
        assert_eq!(posts, 1);
    }

    #[test]
    fn params_are_only_an_owner_map() {
        assert!((SPEC.parse_params)(&toml::Table::new()).is_ok());
        let t: toml::Table = toml::from_str("subdomain = \"acme\"").unwrap();
        assert!((SPEC.parse_params)(&t)
            .unwrap_err()
            .contains("unknown key `subdomain`"));
        let t: toml::Table = toml::from_str("[owners]\n\"hs-42\" = \"admin-7\"").unwrap();
        assert!((SPEC.parse_params)(&t).is_ok());
        let t: toml::Table = toml::from_str("[owners]\n\"hs-42\" = 7").unwrap();
        assert!((SPEC.parse_params)(&t)
            .unwrap_err()
            .contains("`owners.hs-42` must be a non-empty string"));
    }
}
