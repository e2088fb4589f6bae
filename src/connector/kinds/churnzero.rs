//! The `churnzero` sink kind: health fields and playbook state as ChurnZero account attributes, through
//! ChurnZero's HTTP (push) API.
//!
//! One endpoint, `POST <base>/i` (base `https://analytics.churnzero.net`, EU `https://eu1analytics.churnzero.net`,
//! or the instance's own URL from Admin > Application Keys), with the app key as the `appKey` query
//! parameter (auth scheme `api_key_query`, `param = "appKey"`) and a JSON array of actions as the body.
//!
//! - `SetFields` → `{"action":"setAttribute","entity":"account","accountExternalId":<id>,
//!   "contactExternalId":<contact_external_id>,"attr_<Name>":"<value>",…}` (the multi-attribute form),
//!   one element per account, up to 50 accounts per call. Values are sent as text (ChurnZero parses
//!   numbers and dates from text); `null` is sent as `""`.
//! - Projects: ChurnZero's push API cannot create tasks, and the push API cannot be queried, so nothing
//!   sent through it can be looked up again. The nearest honest thing is state that is idempotent by
//!   nature: `CreateProject` sets two account attributes, `<prefix><playbook>` = `<project name> [<key>]`
//!   and `<prefix><playbook> Tasks` = the rendered tasks with due dates; a ChurnZero Play that watches
//!   the first one (e.g. a segment "Healthsync Playbook poor-health is not blank") creates the CSM's
//!   tasks inside ChurnZero. `CloseProject` clears both attributes. A resend writes the same values
//!   again, so a crash between send and record never makes a second anything; but the sink cannot see
//!   what is already there, so it always answers `Applied`, never `AlreadyPresent`. A `trackEvent` was
//!   not used: events cannot be de-duplicated through this API.
//!
//! Responses: ChurnZero documents that every call answers HTTP 200 with a 1×1 GIF, so unknown accounts or
//! attribute names are not reported back and the sink cannot report them either; the body is not read.
//! Non-2xx answers (a proxy's 5xx, 429, or a 4xx refusing the whole call) go through the engine: 5xx and
//! 429 are retried with backoff (`Retry-After` honoured), and a batch refused with a 4xx is resent
//! account by account so one bad item does not hold back the rest.
//!
//! Verified (search tool, ChurnZero's support article "Integrate ChurnZero using HTTP API" and "Data
//! Input Formats"): the `/i` endpoint, GET or POST (form or JSON), `appKey`, `accountExternalId`,
//! `contactExternalId`, `action=setAttribute&entity=account`, the always-200-with-a-GIF answer, text
//! formats. From ../shared/api [C], not re-verified: the `attr_<Name>` multi-attribute form and JSON
//! arrays as batches. Assumed: that `appKey` may travel in the query string of a POST; a batch of 50;
//! the default rate limit (ChurnZero publishes none for the push API). This kind does not decide what to
//! write (the planner) nor when to retry (the outbox).

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::common;
use super::sink_support::{self, BatchResults, CloseWrite, Errors, FieldWrite, PlatformApi, ProjectWrite};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Delivered, DeliveryError};
use crate::http::{Call, Clock, HttpClient, HttpError, SystemClock};
use crate::vocab::{AccountRef, AuthScheme, BoxFuture, RateLimit, Role, TaskSpec};

pub static SPEC: KindSpec = KindSpec {
    name: "churnzero",
    role: Role::Sink,
    streams: &[],
    default_streams: &[],
    auth: &[AuthScheme::ApiKeyQuery],
    // Not published for the push API; ChurnZero's read API allows about 200 per minute.
    default_rate_limit: RateLimit::per_secs(200, 60),
    parse_params: read_params,
    limitations: &[
            "the push API cannot create tasks: a playbook sets account attributes a ChurnZero Play can act on",
            "it answers 200 to everything: unknown accounts and attribute names are not reported back",
        ],
};

/// Accounts per JSON-array call (assumed; ChurnZero documents no maximum).
pub const BATCH_MAX: usize = 50;
const PARAM_KEYS: &[&str] = &["contact_external_id", "playbook_attribute_prefix"];

#[derive(Debug, Clone)]
pub struct Params {
    /// The contact every call names (ChurnZero requires one on each call).
    pub contact_external_id: String,
    /// Prepended to the playbook id to name the playbook attributes.
    pub playbook_prefix: String,
}

pub fn parse_params(params: &toml::Table) -> Result<Params, String> {
    common::check_keys(params, PARAM_KEYS)?;
    let contact_external_id =
        common::string_param(params, "contact_external_id")?.unwrap_or_else(|| "healthsync".into());
    let playbook_prefix = common::prefix_param(params, "playbook_attribute_prefix")?
        .unwrap_or_else(|| "Healthsync Playbook ".into());
    if contact_external_id.trim().is_empty() {
        return Err("`contact_external_id` must not be empty".into());
    }
    Ok(Params {
        contact_external_id,
        playbook_prefix,
    })
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    parse_params(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let params = ctx.params::<Params>()?.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?;
    Ok(Built::Sink(Box::new(ChurnZero::new(
        http,
        params,
        Arc::new(SystemClock),
    ))))
}

pub struct ChurnZero {
    http: HttpClient,
    params: Params,
    clock: Arc<dyn Clock>,
}

impl ChurnZero {
    pub fn new(http: HttpClient, params: Params, clock: Arc<dyn Clock>) -> ChurnZero {
        ChurnZero {
            http,
            params,
            clock,
        }
    }

    fn errors(&self) -> Errors<'_> {
        Errors {
            connector: self.http.connector(),
            platform: "churnzero",
        }
    }

    /// One `setAttribute` action on an account with `attrs` (attribute name → text).
    fn set_attribute(&self, account: &AccountRef, attrs: Vec<(String, String)>) -> Value {
        let mut action = Map::new();
        action.insert("action".into(), json!("setAttribute"));
        action.insert("entity".into(), json!("account"));
        action.insert("accountExternalId".into(), json!(account.external_id));
        action.insert(
            "contactExternalId".into(),
            json!(self.params.contact_external_id),
        );
        for (name, value) in attrs {
            action.insert(format!("attr_{name}"), Value::String(value));
        }
        Value::Object(action)
    }

    /// Sends a JSON array of actions. A 2xx is acceptance (the body, a GIF, is not read).
    async fn push(&self, actions: &[Value]) -> Result<(), HttpError> {
        let body = Value::Array(actions.to_vec());
        let call = Call {
            body: Some(&body),
            ..Call::new(&Method::POST, "/i")
        };
        // `execute_lines` hands the 2xx body back unread: ChurnZero answers with an image, not JSON.
        drop(self.http.execute_lines(call).await?);
        Ok(())
    }

    fn refused(&self, account: &AccountRef, what: &str, e: HttpError) -> DeliveryError {
        match e {
            HttpError::Permanent { body_excerpt, .. } => {
                self.errors().rejected(account, what, &body_excerpt)
            }
            other => DeliveryError::from(other),
        }
    }

    fn field_attrs(
        fields: &std::collections::BTreeMap<String, crate::vocab::FieldValue>,
    ) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| (k.clone(), sink_support::field_text(v)))
            .collect()
    }

    async fn set_fields_batch(
        &self,
        items: &[FieldWrite<'_>],
    ) -> Vec<Result<Delivered, DeliveryError>> {
        let actions: Vec<Value> = items
            .iter()
            .map(|(a, f)| self.set_attribute(a, Self::field_attrs(f)))
            .collect();
        match self.push(&actions).await {
            Ok(()) => items.iter().map(|_| Ok(Delivered::Applied)).collect(),
            Err(HttpError::Permanent { .. }) if items.len() > 1 => {
                tracing::debug!(connector = %self.http.connector(), items = items.len(),
                    "churnzero refused the whole batch; sending its items one by one");
                let mut out = Vec::with_capacity(items.len());
                for (i, action) in actions.iter().enumerate() {
                    let r = self.push(std::slice::from_ref(action)).await;
                    out.push(
                        r.map(|()| Delivered::Applied)
                            .map_err(|e| self.refused(items[i].0, "set attributes", e)),
                    );
                }
                out
            }
            Err(e) => {
                let e = match items {
                    [(a, _)] => self.refused(a, "set attributes", e),
                    _ => DeliveryError::from(e),
                };
                items
                    .iter()
                    .map(|_| Err(sink_support::same_error(&e)))
                    .collect()
            }
        }
    }

    fn playbook_attr(&self, playbook: &str) -> String {
        format!("{}{playbook}", self.params.playbook_prefix)
    }

    /// The tasks as text: one numbered line per task with its due date, then its instructions.
    fn tasks_text(&self, tasks: &[TaskSpec]) -> String {
        tasks
            .iter()
            .enumerate()
            .map(|(n, t)| {
                let due = sink_support::due_date(self.clock.as_ref(), t.due_days);
                format!("{}. {} (due {due}): {}", n + 1, t.name, t.description)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn set_playbook(
        &self,
        account: &AccountRef,
        playbook: &str,
        value: String,
        tasks: String,
    ) -> Result<Delivered, DeliveryError> {
        let attr = self.playbook_attr(playbook);
        let action = self.set_attribute(
            account,
            vec![(format!("{attr} Tasks"), tasks), (attr, value)],
        );
        self.push(&[action])
            .await
            .map(|()| Delivered::Applied)
            .map_err(|e| self.refused(account, "set playbook attributes", e))
    }
}

impl PlatformApi for ChurnZero {
    const BATCH: usize = BATCH_MAX;

    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults> {
        Box::pin(async move { self.set_fields_batch(&writes).await })
    }

    fn create_project<'a>(
        &'a self,
        p: ProjectWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let tasks = sink_support::project_tasks(p.name, p.description, p.tasks);
            let text = format!("{}\n{}", p.description, self.tasks_text(&tasks));
            self.set_playbook(p.account, p.playbook, format!("{} [{}]", p.name, p.key), text)
                .await
        })
    }

    fn close_project<'a>(
        &'a self,
        c: CloseWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.set_playbook(c.account, c.playbook, String::new(), String::new()))
    }
}

#[cfg(test)]
#[path = "churnzero_tests.rs"]
mod tests;
