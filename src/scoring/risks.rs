//! Risk events and positive signals: rules that fire on an account's metric values and stay active until
//! their exit condition holds.
//!
//! Pure: the previous score carries which events were active and since when; nothing else is read. A rule
//! whose expression cannot be evaluated (a metric it reads is missing) neither fires nor clears; one that
//! fails for another reason is also reported, so a broken rule is not silently quiet.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AccountScore;
use crate::config::{Model, RiskKind};
use crate::identity::Account;
use crate::metrics::{eval_bool, rule_context, EvalError, MetricValue};

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

/// The risk events active after this run, in model order, and the rules that could not be evaluated for
/// a reason other than a missing input (a mistake in the rule, such as comparing text with a number).
pub fn evaluate(
    model: &Model,
    account: &Account,
    values: &BTreeMap<String, MetricValue>,
    previous: Option<&AccountScore>,
    as_of: DateTime<Utc>,
) -> (Vec<RiskState>, Vec<String>) {
    let ctx = rule_context(account, values);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut eval = |what: &str, e: &crate::config::Expr, id: &str| -> Option<bool> {
        match eval_bool(e, &ctx) {
            Ok(b) => Some(b),
            Err(EvalError::Missing(_)) => None,
            Err(EvalError::Invalid(msg)) => {
                errors.push(format!("risk {id}: {what}: {msg}"));
                None
            }
        }
    };
    for rule in &model.risks {
        let was = previous.and_then(|p| p.risks.iter().find(|r| r.id == rule.id));
        let active = match was {
            None => eval("when", &rule.when, &rule.id).unwrap_or(false),
            Some(_) => {
                let clears = match &rule.clear_when {
                    Some(c) => eval("clear_when", c, &rule.id).unwrap_or(false),
                    // Without an exit condition it clears when `when` is evaluably false.
                    None => eval("when", &rule.when, &rule.id).is_some_and(|fires| !fires),
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
    (out, errors)
}
