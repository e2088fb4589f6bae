//! What the sink kinds share. First the CS-platform adapter: a kind implements [`PlatformApi`] (set
//! fields, open a project, close it) and is a `Sink` through the one impl here, which owns the `WriteOp`
//! dispatch, batching `SetFields` writes in chunks of the kind's batch size, and one result per write,
//! in order. Then the pieces the CRM-style kinds (`hubspot_sink`, `salesforce_sink`, `churnzero`) use:
//! field values rendered as the text those APIs expect, task due dates from an injectable clock, the
//! per-task idempotency key, a project's task list (a project without tasks still becomes one task),
//! and the error constructors that name connector and account. It owns no vendor's wire format.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::connector::{Delivered, DeliveryError, Sink};
use crate::http::Clock;
use crate::vocab::{AccountRef, BoxFuture, FieldValue, TaskSpec, WriteOp};

/// One `SetFields` write, borrowed: the account and its mapped fields.
pub type FieldWrite<'a> = (&'a AccountRef, &'a BTreeMap<String, FieldValue>);

/// One result per write of a batch, in order.
pub type BatchResults = Vec<Result<Delivered, DeliveryError>>;

/// A `CreateProject` write, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct ProjectWrite<'a> {
    pub account: &'a AccountRef,
    /// Stable per (account, playbook, opening): what a resend finds the project again by.
    pub key: &'a str,
    pub playbook: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub tasks: &'a [TaskSpec],
    /// The account's owner as the model reads it; a kind maps it to a platform user, or ignores it.
    pub owner: Option<&'a str>,
}

/// A `CloseProject` write, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct CloseWrite<'a> {
    pub account: &'a AccountRef,
    pub key: &'a str,
    pub playbook: &'a str,
    pub name: &'a str,
    pub note: &'a str,
}

/// A CS platform as a sink kind speaks it: only what differs per vendor. Every `PlatformApi` is a
/// [`Sink`] through the impl below.
pub trait PlatformApi: Send + Sync {
    /// How many accounts one [`PlatformApi::set_fields`] call takes: the vendor's batch size, or 1 where
    /// it has no batch endpoint.
    const BATCH: usize;

    /// Sets the fields of each write's account, at most `BATCH` of them: one result per write, in order.
    fn set_fields<'a>(&'a self, writes: Vec<FieldWrite<'a>>) -> BoxFuture<'a, BatchResults>;

    /// Sets one account's fields, for a write delivered on its own: a batch of one unless the platform
    /// has a single-record endpoint the kind prefers.
    fn set_one<'a>(
        &'a self,
        account: &'a AccountRef,
        fields: &'a BTreeMap<String, FieldValue>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            self.set_fields(vec![(account, fields)])
                .await
                .pop()
                .unwrap_or_else(|| {
                    Err(DeliveryError::Transient(
                        "the platform returned no result".into(),
                    ))
                })
        })
    }

    /// Opens the project, or finds the one an earlier attempt opened under the same key.
    fn create_project<'a>(
        &'a self,
        project: ProjectWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;

    /// Resolves the project opened under the key, or does the nearest thing the platform allows.
    fn close_project<'a>(
        &'a self,
        close: CloseWrite<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;
}

impl<P: PlatformApi> Sink for P {
    fn deliver<'a>(&'a self, op: &'a WriteOp) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        match op {
            WriteOp::SetFields { account, fields } => self.set_one(account, fields),
            WriteOp::CreateProject {
                account,
                key,
                playbook,
                name,
                description,
                tasks,
                owner,
            } => self.create_project(ProjectWrite {
                account,
                key,
                playbook,
                name,
                description,
                tasks,
                owner: owner.as_deref(),
            }),
            WriteOp::CloseProject {
                account,
                key,
                playbook,
                name,
                note,
            } => self.close_project(CloseWrite {
                account,
                key,
                playbook,
                name,
                note,
            }),
        }
    }

    fn batch_size(&self) -> usize {
        P::BATCH
    }

    fn deliver_batch<'a>(&'a self, ops: &'a [WriteOp]) -> BoxFuture<'a, BatchResults> {
        Box::pin(deliver_grouped(self, ops, P::BATCH, move |items| {
            self.set_fields(items)
        }))
    }
}

/// [`PlatformApi::set_fields`] for a platform without a batch endpoint: `one` per write, in order.
pub async fn each_account<'a, F, Fut>(writes: Vec<FieldWrite<'a>>, one: F) -> BatchResults
where
    F: Fn(&'a AccountRef, &'a BTreeMap<String, FieldValue>) -> Fut,
    Fut: Future<Output = Result<Delivered, DeliveryError>>,
{
    let mut out = Vec::with_capacity(writes.len());
    for (account, fields) in writes {
        out.push(one(account, fields).await);
    }
    out
}

/// The same classified error again, for every item of a batch that failed as a whole.
pub fn same_error(e: &DeliveryError) -> DeliveryError {
    match e {
        DeliveryError::Transient(m) => DeliveryError::Transient(m.clone()),
        DeliveryError::Invalid(m) => DeliveryError::Invalid(m.clone()),
        DeliveryError::Rejected(m) => DeliveryError::Rejected(m.clone()),
    }
}

/// `Sink::deliver_batch` for a vendor batch endpoint: `SetFields` writes go to `batch` in chunks of
/// `max` (which must answer one result per item, in order); any other write goes through `deliver`.
/// Results come back one per op, in order.
pub async fn deliver_grouped<'a, S, F, Fut>(
    sink: &'a S,
    ops: &'a [WriteOp],
    max: usize,
    batch: F,
) -> Vec<Result<Delivered, DeliveryError>>
where
    S: Sink + ?Sized,
    F: Fn(Vec<FieldWrite<'a>>) -> Fut,
    Fut: Future<Output = Vec<Result<Delivered, DeliveryError>>>,
{
    let mut out: Vec<Option<Result<Delivered, DeliveryError>>> = ops.iter().map(|_| None).collect();
    let mut writes = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            WriteOp::SetFields { account, fields } => writes.push((i, (account, fields))),
            other => out[i] = Some(sink.deliver(other).await),
        }
    }
    for chunk in writes.chunks(max.max(1)) {
        let items: Vec<FieldWrite<'a>> = chunk.iter().map(|(_, w)| *w).collect();
        let mut results = batch(items).await.into_iter();
        for (i, _) in chunk {
            out[*i] = Some(results.next().unwrap_or_else(|| {
                Err(DeliveryError::Transient(
                    "the batch returned fewer results than items".into(),
                ))
            }));
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(DeliveryError::Transient("not sent".into()))))
        .collect()
}

/// A field value as text: numbers without a trailing `.0`, `Null` as the empty string (which clears a
/// HubSpot property or a ChurnZero attribute).
pub fn field_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
        FieldValue::Number(n) => n.to_string(),
        FieldValue::Text(s) => s.clone(),
        FieldValue::Null => String::new(),
    }
}

/// Today (by `clock`) plus `days`.
pub fn due_date(clock: &dyn Clock, days: u32) -> NaiveDate {
    let today = clock.now().date_naive();
    today
        .checked_add_days(Days::new(u64::from(days)))
        .unwrap_or(today)
}

/// Due date at midnight UTC, for APIs that want a timestamp.
pub fn due_at(clock: &dyn Clock, days: u32) -> DateTime<Utc> {
    due_date(clock, days)
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(|| clock.now())
}

/// The idempotency key of task `index` (from 0) of the project opened under `project_key`.
pub fn task_key(project_key: &str, index: usize) -> String {
    format!("{project_key}/task-{}", index + 1)
}

/// The tasks to create for a project: its own, or (when it has none) one task standing for the project,
/// so that every project leaves something on the platform that a resend can find again.
pub fn project_tasks(name: &str, description: &str, tasks: &[TaskSpec]) -> Vec<TaskSpec> {
    if tasks.is_empty() {
        vec![TaskSpec {
            name: name.to_string(),
            description: description.to_string(),
            due_days: 0,
        }]
    } else {
        tasks.to_vec()
    }
}

/// Builds the classified errors of one sink connector, each naming the connector and the account.
pub struct Errors<'a> {
    pub connector: &'a str,
    pub platform: &'a str,
}

impl Errors<'_> {
    fn prefix(&self, account: &AccountRef) -> String {
        format!(
            "connector {}: account {} ({})",
            self.connector, account.external_id, account.name
        )
    }

    pub fn invalid(&self, account: &AccountRef, what: &str, message: &str) -> DeliveryError {
        DeliveryError::Invalid(format!(
            "{}: {what}: {} says: {message}",
            self.prefix(account),
            self.platform
        ))
    }

    pub fn rejected(&self, account: &AccountRef, what: &str, message: &str) -> DeliveryError {
        DeliveryError::Rejected(format!(
            "{}: {what}: {} says: {message}",
            self.prefix(account),
            self.platform
        ))
    }

    pub fn transient(&self, account: &AccountRef, what: &str) -> DeliveryError {
        DeliveryError::Transient(format!("{}: {what}", self.prefix(account)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_text() {
        assert_eq!(field_text(&FieldValue::Number(87.0)), "87");
        assert_eq!(field_text(&FieldValue::Number(87.5)), "87.5");
        assert_eq!(field_text(&FieldValue::Number(-3.0)), "-3");
        assert_eq!(field_text(&FieldValue::Text("red".into())), "red");
        assert_eq!(field_text(&FieldValue::Null), "");
    }

    #[test]
    fn a_project_without_tasks_becomes_one_task() {
        let t = project_tasks("Poor Health", "why", &[]);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].name.as_str(), t[0].due_days), ("Poor Health", 0));
        assert_eq!(task_key("k", 0), "k/task-1");
    }
}
