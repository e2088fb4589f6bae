//! What the CRM-style sink kinds (`hubspot_sink`, `salesforce_sink`, `churnzero`) share: field values
//! rendered as the text those APIs expect, task due dates from an injectable clock, the per-task
//! idempotency key, a project's task list (a project without tasks still becomes one task), and the
//! error constructors that name connector and account. It owns no vendor's wire format.

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::connector::{AccountRef, DeliveryError, FieldValue, TaskSpec};
use crate::http::Clock;

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
