//! What the CRM-style sink kinds (`hubspot_sink`, `salesforce_sink`, `churnzero`) share: field values
//! rendered as the text those APIs expect, task due dates from an injectable clock, the per-task
//! idempotency key, a project's task list (a project without tasks still becomes one task), and the
//! error constructors that name connector and account. It owns no vendor's wire format.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::connector::{Delivered, DeliveryError, Sink};
use crate::http::Clock;
use crate::vocab::{AccountRef, FieldValue, TaskSpec, WriteOp};

/// One `SetFields` write, borrowed: the account and its mapped fields.
pub type FieldWrite<'a> = (&'a AccountRef, &'a BTreeMap<String, FieldValue>);

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
