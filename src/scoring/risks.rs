//! Risk events and positive signals: rules that fire on an account's metric values and stay active until
//! their exit condition holds.
//!
//! Pure: the previous score carries which events were active and since when; nothing else is read. A rule
//! whose expression cannot be evaluated (a metric it reads is missing) neither fires nor clears.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AccountScore;
use crate::config::{Model, RiskKind};
use crate::identity::Account;
use crate::metrics::{eval_bool, rule_context, MetricValue};

/// An active risk event or positive signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskState {
    pub id: String,
    pub label: String,
    pub kind: RiskKind,
    /// When it fired (kept across runs while it stays active).
    pub since: DateTime<Utc>,
    /// How the account comes off it: the rule's exit condition.
    pub clears_when: String,
    pub advice: Option<String>,
}

/// The risk events active after this run, in model order.
pub fn evaluate(
    model: &Model,
    account: &Account,
    values: &BTreeMap<String, MetricValue>,
    previous: Option<&AccountScore>,
    as_of: DateTime<Utc>,
) -> Vec<RiskState> {
    let ctx = rule_context(account, values);
    let mut out = Vec::new();
    for rule in &model.risks {
        let was = previous.and_then(|p| p.risks.iter().find(|r| r.id == rule.id));
        let active = match was {
            None => eval_bool(&rule.when, &ctx).unwrap_or(false),
            Some(_) => {
                let clears = match &rule.clear_when {
                    Some(c) => eval_bool(c, &ctx).unwrap_or(false),
                    // Without an exit condition it clears when `when` is evaluably false.
                    None => eval_bool(&rule.when, &ctx).is_ok_and(|fires| !fires),
                };
                !clears
            }
        };
        if active {
            out.push(RiskState {
                id: rule.id.clone(),
                label: rule.label.clone(),
                kind: rule.kind,
                since: was.map(|w| w.since).unwrap_or(as_of),
                clears_when: rule
                    .clear_when
                    .as_ref()
                    .map(|c| c.source.clone())
                    .unwrap_or_else(|| format!("!({})", rule.when.source)),
                advice: rule.advice.clone(),
            });
        }
    }
    out
}
