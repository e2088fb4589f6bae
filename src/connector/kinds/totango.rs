//! The `totango` sink kind: writes health fields as Totango account attributes through the HTTP (SDR pixel)
//! API, and playbook projects as a marker touchpoint plus one Totango task per playbook task.
//!
//! Two Totango hosts: the REST API at the connector's `base_url` (`https://api.totango.com`, EU
//! `https://api-eu1.totango.com`) with the API token in the `app-token` header (`scheme =
//! "api_key_header"`, `header = "app-token"`), and the collection gateway at `params.collector_url`
//! (`https://sdr.totango.com`, EU `https://sdr-eu1.totango.com`) identified by `params.service_id`
//! (`SP-XXXX-01`, not a secret: it ships in browser snippets). The collector needs no token, but the
//! engine sends the connector's auth header on every request, so it receives it too (Totango's own host,
//! over TLS).
//!
//! - `SetFields` → `GET <collector>/pixel.gif/?sdr_s=<service>&sdr_o=<crm id>&sdr_o.account_name=<name>
//!   &sdr_o.<attribute>=<value>…` (an empty value for a cleared field). One account per call, so no batch.
//!   **What Totango does not give:** the gateway answers 200 and a 1×1 gif whatever it received ("not a
//!   confirmation that the request is correctly formed"), so `Applied` means accepted for collection, a
//!   refused attribute is never reported, and an account id Totango does not know *creates* that account
//!   (the API inserts missing accounts). Anything but 200 is retried, as Totango asks.
//! - `CreateProject` → `POST /api/v2/events/search` (touchpoints of the account) for a touchpoint carrying
//!   `healthsync key: <key>`; found → `AlreadyPresent`. Else `POST /api/v3/touchpoints/` (subject = the
//!   project name; content = description, the task list and the key line), then per task
//!   `POST /api/v3/tasks` `{"title","description","due_date","priority":1,"status":"open","account_id",
//!   "activity_type_id","assignee"?}`. The Tasks API documents no lookup, so the touchpoint is the
//!   project's findable record and is written first: a crash after it and before the tasks leaves tasks
//!   missing (at most once), never duplicated. The search reads one page of 1,000 touchpoints, so on an
//!   account with more the key can be missed (a second touchpoint and tasks would follow).
//! - `CloseProject` → the Tasks API answers a create with `Success` and no id, so our tasks cannot be
//!   found to close; recovery is a closing touchpoint keyed `<key>/closed` (looked up first, so a resend is
//!   `AlreadyPresent`), and the tasks stay open for the CSM.
//!
//! Verified (support.totango.com): the pixel parameters (`sdr_s`, `sdr_o`, `sdr_o.account_name`,
//! `sdr_o.<attribute>`), the gateway's 200-and-gif answer and insert behaviour, the `app-token` header, the
//! Tasks API body and its `400 Account not found`, the Touchpoints API fields (`account_id`, `content`,
//! `subject`, `activity_type_id`), the events search endpoint and its `query`/`account_id` parameters, and
//! the limit of 100 calls per minute per token. **Assumed:** that the search parameters are accepted in
//! the query string of the POST (Totango documents them as form fields), the shape of a search answer (we
//! look for the key line anywhere in it), and 429 with `Retry-After` when throttled. This kind does not
//! decide what to write (the planner) nor when to retry (the outbox).

use std::sync::Arc;

use chrono::Days;
use reqwest::{Method, Url};
use serde_json::{json, Value};

use super::common;
use super::sink_support::{self, BatchResults, CloseWrite, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{Call, Clock, HttpClient, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, FieldValue, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "totango",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[AuthScheme::ApiKeyHeader],
    // "Like all APIs, there is a global rate limit of 100 calls/minute for each token."
    default_rate_limit: RateLimit::per_secs(100, 60),
    parse_params: read_params,
    limitations: &[
        "attributes are not confirmed and unknown accounts are created, not refused",
        "tasks return no id, so recovery adds a closing touchpoint instead of closing them",
    ],
};

const PARAM_KEYS: &[&str] = &[
    "service_id",
    "collector_url",
    "activity_type_id",
    "assignee",
];

/// The kind's settings from `[params]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub service_id: String,
    pub collector_url: Url,
    /// The Flow id tasks and touchpoints are filed under (required by the Tasks API).
    pub activity_type_id: String,
    /// Task assignee (email or uuid); Totango's default when absent.
    pub assignee: Option<String>,
}

impl Settings {
    pub fn from_params(params: &toml::Table) -> Result<Settings, String> {
        common::check_keys(params, PARAM_KEYS)?;
        let service_id = common::string_param(params, "service_id")?
            .ok_or("`service_id` is required: your Totango service id, e.g. \"SP-1234-01\"")?;
        let collector = common::string_param(params, "collector_url")?
            .unwrap_or_else(|| "https://sdr.totango.com".to_string());
        let collector_url =
            Url::parse(&collector).map_err(|e| format!("`collector_url` is not a url: {e}"))?;
        let activity_type_id = common::string_param(params, "activity_type_id")?.ok_or(
            "`activity_type_id` is required: the Flow id tasks are filed under (GET /api/v3/activity-types)",
        )?;
        Ok(Settings {
            service_id,
            collector_url,
            activity_type_id,
            assignee: common::string_param(params, "assignee")?,
        })
    }
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    Settings::from_params(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let settings = ctx.params::<Settings>()?.clone();
    let api = HttpClient::new(ctx.connector, ctx.secrets)?;
    let mut collector_cfg = ctx.connector.clone();
    collector_cfg.base_url = settings.collector_url.clone();
    let collector = HttpClient::new(&collector_cfg, ctx.secrets)?;
    Ok(Built::Sink(Box::new(Totango::new(
        api,
        collector,
        settings,
        Arc::new(SystemClock),
    ))))
}

pub struct Totango {
    api: HttpClient,
    collector: HttpClient,
    settings: Settings,
    clock: Arc<dyn Clock>,
}

impl Totango {
    /// `api` talks to the REST host, `collector` to the collection gateway; `clock` gives task due dates.
    pub fn new(
        api: HttpClient,
        collector: HttpClient,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Totango {
        Totango {
            api,
            collector,
            settings,
            clock,
        }
    }

    async fn set_attributes(
        &self,
        account: &AccountRef,
        fields: &std::collections::BTreeMap<String, FieldValue>,
    ) -> Result<Delivered, DeliveryError> {
        let mut query: Vec<(&str, String)> = vec![
            ("sdr_s", self.settings.service_id.clone()),
            ("sdr_o", account.external_id.clone()),
            ("sdr_o.account_name", account.name.clone()),
        ];
        let names: Vec<String> = fields.keys().map(|k| format!("sdr_o.{k}")).collect();
        for (name, value) in names.iter().zip(fields.values()) {
            let v = match value {
                FieldValue::Null => String::new(),
                other => other.to_string(),
            };
            query.push((name.as_str(), v));
        }
        let call = Call {
            query: &query,
            ..Call::new(&Method::GET, "/pixel.gif/")
        };
        // The body is a gif: nothing in it to read.
        self.collector.execute_lines(call).await?;
        Ok(Delivered::Applied)
    }

    /// POSTs `body` as JSON to `path`; a 400 (`Account not found`) comes back as `Rejected` with Totango's text.
    async fn post(&self, path: &str, body: &Value) -> Result<(), DeliveryError> {
        let call = Call {
            body: Some(body),
            creates: true,
            ..Call::new(&Method::POST, path)
        };
        let mut stream = self.api.execute_lines(call).await?;
        // Answers are `Success` or a small JSON object; read them so the connection is reused.
        while stream.next_line().await?.is_some() {}
        Ok(())
    }

    /// Whether one of the account's touchpoints carries `marker`.
    async fn has_touchpoint(
        &self,
        account: &AccountRef,
        marker: &str,
    ) -> Result<bool, DeliveryError> {
        let query = json!({
            "terms": [{"type": "event_property", "name": "event_type", "eq": "note"}],
            "fields": [], "offset": 0, "count": 1000,
        });
        let params = [
            ("query", query.to_string()),
            ("account_id", account.external_id.clone()),
        ];
        let call = Call {
            query: &params,
            ..Call::new(&Method::POST, "/api/v2/events/search")
        };
        let r = self.api.execute(call).await?;
        Ok(contains_text(&r.body, marker))
    }

    async fn touchpoint(
        &self,
        account: &AccountRef,
        subject: &str,
        content: &str,
    ) -> Result<(), DeliveryError> {
        let body = json!({
            "account_id": account.external_id,
            "subject": subject,
            "content": content,
            "activity_type_id": self.settings.activity_type_id,
        });
        self.post("/api/v3/touchpoints/", &body).await
    }

    async fn open_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        description: &str,
        tasks: &[TaskSpec],
    ) -> Result<Delivered, DeliveryError> {
        let marker = key_line(key);
        if self.has_touchpoint(account, &marker).await? {
            return Ok(Delivered::AlreadyPresent);
        }
        let today = self.clock.now().date_naive();
        let due = |days: u32| {
            today
                .checked_add_days(Days::new(u64::from(days)))
                .unwrap_or(today)
                .format("%Y-%m-%d")
                .to_string()
        };
        let mut content = description.to_string();
        for t in tasks {
            content.push_str(&format!("\n- {} (due {})", t.name, due(t.due_days)));
        }
        content.push_str(&format!("\n{marker}"));
        self.touchpoint(account, name, &content).await?;
        for (n, t) in tasks.iter().enumerate() {
            let mut body = json!({
                "title": format!("{name}: {}", t.name),
                "description": format!("{}\n{}", t.description, key_line(&format!("{key}/task-{}", n + 1))),
                "due_date": due(t.due_days),
                "priority": 1,
                "status": "open",
                "account_id": account.external_id,
                "activity_type_id": self.settings.activity_type_id,
            });
            if let Some(a) = &self.settings.assignee {
                body["assignee"] = Value::String(a.clone());
            }
            self.post("/api/v3/tasks", &body).await?;
        }
        Ok(Delivered::Applied)
    }

    async fn end_project(
        &self,
        account: &AccountRef,
        key: &str,
        name: &str,
        note: &str,
    ) -> Result<Delivered, DeliveryError> {
        let marker = key_line(&format!("{key}/closed"));
        if self.has_touchpoint(account, &marker).await? {
            return Ok(Delivered::AlreadyPresent);
        }
        let content = format!("{note}\n{marker}");
        self.touchpoint(account, &format!("Resolved: {name}"), &content)
            .await?;
        Ok(Delivered::Applied)
    }
}

/// The line that makes a touchpoint or task findable by its idempotency key.
fn key_line(key: &str) -> String {
    format!("healthsync key: {key}")
}

/// Whether any string inside `v` contains `needle` as a whole line.
fn contains_text(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s.lines().any(|l| l.trim() == needle),
        Value::Array(a) => a.iter().any(|x| contains_text(x, needle)),
        Value::Object(o) => o.values().any(|x| contains_text(x, needle)),
        _ => false,
    }
}

impl PlatformApi for Totango {
    const BATCH: usize = 1;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(sink_support::each_account(writes, |a, f| self.set_attributes(a, f)))
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
        Box::pin(self.end_project(c.account, c.key, c.name, c.note))
    }
}

#[cfg(test)]
#[path = "totango/tests.rs"]
mod tests;
