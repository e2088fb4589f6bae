//! The `customersuccessbox` sink kind: health fields and playbook state as CustomerSuccessBox account
//! attributes, through its HTTP server API (base `https://<your-domain>.customersuccessbox.com/api/v1_1`).
//!
//! - Auth: HTTP Basic with the Secret Key (Settings > Developer Console > API Key, Administrators only) as
//!   the username and no password (auth scheme `basic`); the docs also allow `Authorization: Bearer
//!   <secret key>` (scheme `bearer`). The API Key (POST-only) would do for writes too, but the secret key
//!   is what the docs name for server calls.
//! - `SetFields` → `POST /account` with `{"account_id": <crm id>, "<attribute>": value, …}`: the account
//!   is matched by its account id (the CRM id every healthsync sink uses as external id) and every other
//!   key is an account attribute. One call per account; the API has no batch form.
//! - Projects: the HTTP server API offers accounts, users, subscriptions, invoices and usage (features,
//!   events), not tasks, so a playbook cannot open a task through it. The nearest honest thing is account
//!   state that is idempotent by nature (as the `churnzero` kind does): `CreateProject` sets
//!   `<prefix><playbook>` = `<project name> [<key>]` and `<prefix><playbook> Tasks` = the task list with
//!   due dates, which a CustomerSuccessBox playbook or alert rule can act on; `CloseProject` clears both.
//!   A resend writes the same values, so a crash never makes a second anything; the API cannot tell what
//!   was there before, so the answer is always `Applied`.
//! - Errors as the docs list them: 400 (validation) is `Invalid`, 401 (bad key) and 404 are `Rejected`,
//!   429 and 500/502/504 are retried by the engine (`Retry-After` honoured when sent), then `Transient`.
//!
//! Sources (search tool): developers.customersuccessbox.com "HTTP Server API: Authentication" (Basic with
//! the secret key as username, no password; Bearer as an alternative) and "Errors" (the status codes
//! above, and that only the Track Feature API answers 200 to everything) [D]; the `/api/v1_1/` base on the
//! tenant's host, `POST account` with `account_id`, `name` and extra keys as flat JSON, and
//! `GET account/<id>` from a customer's client code [C]. Assumed where the docs found are silent: that
//! keys other than the standard ones become (custom) account attributes, that a push for an unknown
//! account id creates it (an upsert, as the JS/Segment `group` call does), that `null`/`""` clear an
//! attribute, and the rate limit (the docs' rate-limit page was not found; 600 a minute is a guess).
//! This kind does not decide what to write (the planner) nor when to retry (the outbox).

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common;
use super::sink_support::{self, BatchResults, CloseWrite, Errors, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{Call, Clock, HttpClient, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, FieldValue, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "customersuccessbox",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[AuthScheme::Basic, AuthScheme::Bearer],
    // Not found in the docs; assumed.
    default_rate_limit: RateLimit::per_secs(600, 60),
    parse_params: read_params,
    limitations: &[
            "the HTTP server API offers no tasks: a playbook sets account attributes (name and task list) that a CustomerSuccessBox playbook or alert can act on",
            "account pushes are upserts: an unknown account id creates an account rather than being refused",
        ],
};

const PARAM_KEYS: &[&str] = &["playbook_attribute_prefix"];

#[derive(Debug, Clone)]
pub struct Params {
    /// Prepended to the playbook id to name the playbook attributes.
    pub playbook_prefix: String,
}

pub fn parse_params(params: &toml::Table) -> Result<Params, String> {
    common::check_keys(params, PARAM_KEYS)?;
    let playbook_prefix = common::prefix_param(params, "playbook_attribute_prefix")?
        .unwrap_or_else(|| "Healthsync Playbook ".into());
    Ok(Params { playbook_prefix })
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    parse_params(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let params = ctx.params::<Params>()?.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Sink(Box::new(CustomerSuccessBox::new(
        http,
        params,
        Arc::new(SystemClock),
    ))))
}

pub struct CustomerSuccessBox {
    http: HttpClient,
    params: Params,
    clock: Arc<dyn Clock>,
}

/// The vendor's own words from an error body.
fn vendor_message(body: &Value) -> String {
    ["message", "error", "errors"]
        .iter()
        .find_map(|k| body.get(*k))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

impl CustomerSuccessBox {
    pub fn new(http: HttpClient, params: Params, clock: Arc<dyn Clock>) -> CustomerSuccessBox {
        CustomerSuccessBox {
            http,
            params,
            clock,
        }
    }

    fn errors(&self) -> Errors<'_> {
        Errors {
            connector: self.http.connector(),
            platform: "customersuccessbox",
        }
    }

    /// `POST /account` with the account id and `attrs`.
    async fn push(
        &self,
        account: &AccountRef,
        what: &str,
        attrs: Map<String, Value>,
    ) -> Result<Delivered, DeliveryError> {
        if account.external_id.is_empty() {
            return Err(self
                .errors()
                .rejected(account, what, "the account has no account id"));
        }
        let mut body = Map::new();
        body.insert("account_id".into(), json!(account.external_id));
        body.extend(attrs);
        let body = Value::Object(body);
        let call = Call {
            body: Some(&body),
            accept: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::UNPROCESSABLE_ENTITY,
            ],
            ..Call::new(&Method::POST, "/account")
        };
        let r = self.http.execute(call).await?;
        if r.status.is_success() {
            return Ok(Delivered::Applied);
        }
        let msg = format!("http {}: {}", r.status.as_u16(), vendor_message(&r.body));
        Err(match r.status.as_u16() {
            400 | 422 => self.errors().invalid(account, what, &msg),
            _ => self.errors().rejected(account, what, &msg),
        })
    }

    fn playbook_attr(&self, playbook: &str) -> String {
        format!("{}{playbook}", self.params.playbook_prefix)
    }

    /// The tasks as text: one numbered line per task with its due date, then its instructions.
    fn tasks_text(&self, description: &str, tasks: &[TaskSpec]) -> String {
        let lines: Vec<String> = tasks
            .iter()
            .enumerate()
            .map(|(n, t)| {
                let due = sink_support::due_date(self.clock.as_ref(), t.due_days);
                format!("{}. {} (due {due}): {}", n + 1, t.name, t.description)
            })
            .collect();
        format!("{description}\n{}", lines.join("\n"))
    }

    async fn set_account_fields(
        &self,
        account: &AccountRef,
        fields: &BTreeMap<String, FieldValue>,
    ) -> Result<Delivered, DeliveryError> {
        let attrs = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        self.push(account, "set account attributes", attrs).await
    }
}

impl PlatformApi for CustomerSuccessBox {
    const BATCH: usize = 1;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(sink_support::each_account(writes, |a, f| self.set_account_fields(a, f)))
    }

    fn create_project<'a>(
        &'a self,
        p: ProjectWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let tasks = sink_support::project_tasks(p.name, p.description, p.tasks);
            let attr = self.playbook_attr(p.playbook);
            let mut attrs = Map::new();
            attrs.insert(attr.clone(), json!(format!("{} [{}]", p.name, p.key)));
            attrs.insert(
                format!("{attr} Tasks"),
                json!(self.tasks_text(p.description, &tasks)),
            );
            self.push(p.account, "set playbook attributes", attrs).await
        })
    }

    fn close_project<'a>(
        &'a self,
        c: CloseWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let attr = self.playbook_attr(c.playbook);
            let mut attrs = Map::new();
            attrs.insert(format!("{attr} Tasks"), json!(""));
            attrs.insert(attr, json!(""));
            self.push(c.account, "clear playbook attributes", attrs).await
        })
    }
}

#[cfg(test)]
#[path = "customersuccessbox_tests.rs"]
mod tests;
