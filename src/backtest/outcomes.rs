//! Outcomes read from billing data: when each account churned, and its monthly recurring revenue on any
//! date, from its subscription records as the model's `[outcomes]` describes them.
//!
//! Pure: records in, outcomes out. An account churned when it went longer than the grace period with no
//! subscription running; a subscription that is still running, or scheduled to cancel at the end of its
//! period, is not churn yet. Records that cannot be read (no start
//! time, an MRR expression that fails) are reported by record id, not dropped silently. This module does
//! not decide which dates to evaluate nor what is measured (`super`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::CohortRetention;
use crate::config::OutcomesSpec;
use crate::identity::AccountData;
use crate::metrics::{as_time, eval_number, to_cel};
use crate::vocab::{lookup, Record};

/// One subscription: when it ran and what it was worth per month.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub mrr: f64,
}

impl Span {
    fn runs_at(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && self.end.is_none_or(|e| t < e)
    }
}

/// One account's revenue history and churn date.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountOutcome {
    pub spans: Vec<Span>,
    /// When the account's last subscription ended, when no other started within the grace period.
    pub churned_at: Option<DateTime<Utc>>,
}

impl AccountOutcome {
    /// Monthly recurring revenue on `t`: the sum over subscriptions running then.
    pub fn mrr_at(&self, t: DateTime<Utc>) -> f64 {
        self.spans
            .iter()
            .filter(|s| s.runs_at(t))
            .map(|s| s.mrr)
            .sum()
    }

    /// A paying customer on `t`: some subscription runs then.
    pub fn customer_at(&self, t: DateTime<Utc>) -> bool {
        self.spans.iter().any(|s| s.runs_at(t))
    }

    /// How MRR moved over `(from, from + days]` for an account that did not churn in it: `Some(true)` for
    /// an expansion, `Some(false)` for a downgrade, `None` when it stayed flat or the account churned.
    pub fn revenue_change_within(&self, from: DateTime<Utc>, days: u32) -> Option<bool> {
        if self.churned_within(from, days) {
            return None;
        }
        let (before, after) = (
            self.mrr_at(from),
            self.mrr_at(from + Duration::days(i64::from(days))),
        );
        // Cents of rounding are not a change of plan.
        ((after - before).abs() >= 0.01).then_some(after > before)
    }

    /// When the first subscription started: the account's cohort.
    pub fn first_start(&self) -> Option<DateTime<Utc>> {
        self.spans.iter().map(|s| s.start).min()
    }

    /// Churned within `(from, from + days]`.
    pub fn churned_within(&self, from: DateTime<Utc>, days: u32) -> bool {
        self.churned_at
            .is_some_and(|c| c > from && c <= from + Duration::days(i64::from(days)))
    }
}

/// Every account's outcome, and the subscription records that could not be read.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub accounts: BTreeMap<String, AccountOutcome>,
    pub problems: Vec<String>,
}

impl Outcomes {
    pub fn of(&self, account: &str) -> Option<&AccountOutcome> {
        self.accounts.get(account)
    }

    /// Net revenue retention per start-quarter cohort: MRR at `until` over MRR a month after each start.
    pub fn cohorts(&self, until: DateTime<Utc>) -> Vec<CohortRetention> {
        use chrono::Datelike as _;
        let mut by_cohort: BTreeMap<String, CohortRetention> = BTreeMap::new();
        for outcome in self.accounts.values() {
            let Some(start) = outcome.first_start() else {
                continue;
            };
            let settled = start + Duration::days(30);
            if settled > until {
                continue;
            }
            let cohort = format!("{}-Q{}", start.year(), start.month0() / 3 + 1);
            let c = by_cohort
                .entry(cohort.clone())
                .or_insert_with(|| CohortRetention {
                    cohort,
                    accounts: 0,
                    churned: 0,
                    starting_mrr: 0.0,
                    current_mrr: 0.0,
                    nrr: None,
                });
            c.accounts += 1;
            c.churned += usize::from(outcome.churned_at.is_some_and(|t| t <= until));
            c.starting_mrr += outcome.mrr_at(settled);
            c.current_mrr += outcome.mrr_at(until);
        }
        by_cohort
            .into_values()
            .map(|mut c| {
                c.nrr = (c.starting_mrr > 0.0).then(|| c.current_mrr / c.starting_mrr);
                c
            })
            .collect()
    }

    pub fn churn_events(&self) -> usize {
        self.accounts
            .values()
            .filter(|a| a.churned_at.is_some())
            .count()
    }
}

/// Reads every account's subscriptions; `observed_until` bounds the grace period (a subscription that
/// ended less than the grace period before it may still be renewed, so it is not churn yet).
pub fn derive(
    spec: &OutcomesSpec,
    accounts: &[AccountData],
    observed_until: DateTime<Utc>,
) -> Outcomes {
    let mut out = Outcomes::default();
    for data in accounts {
        let records = data
            .records
            .get(&spec.subscriptions)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut spans = Vec::with_capacity(records.len());
        for r in records {
            match span(spec, r) {
                Ok(s) => spans.push(s),
                Err(why) => out.problems.push(format!(
                    "{}: subscription {} of account {}: {why}",
                    spec.subscriptions, r.id, data.account.id
                )),
            }
        }
        if spans.is_empty() {
            continue;
        }
        let churned_at = churn_date(&spans, spec.renewal_grace_days, observed_until);
        out.accounts.insert(
            data.account.id.clone(),
            AccountOutcome { spans, churned_at },
        );
    }
    out
}

fn span(spec: &OutcomesSpec, r: &Record) -> Result<Span, String> {
    let time = |field: &str| lookup(&r.fields, field).filter(|v| !v.is_null());
    let start = time(&spec.start_field)
        .ok_or_else(|| format!("no `{}`", spec.start_field))
        .and_then(|v| as_time(v).ok_or_else(|| format!("`{}` is not a time", spec.start_field)))?;
    let end = match time(&spec.end_field) {
        None => None,
        Some(v) => Some(as_time(v).ok_or_else(|| format!("`{}` is not a time", spec.end_field))?),
    };
    let mut ctx = cel_interpreter::Context::default();
    ctx.add_variable_from_value("r", to_cel(&serde_json::Value::Object(r.fields.clone())));
    let mrr = eval_number(&spec.mrr, &ctx).map_err(|e| format!("mrr {e}"))?;
    if !mrr.is_finite() {
        return Err("mrr is not a finite number".into());
    }
    Ok(Span { start, end, mrr })
}

/// The first time the account had no subscription for longer than the grace period: an end after which
/// nothing runs and nothing starts within the grace period, and the grace period is over by
/// `observed_until`. A customer won back later still churned then.
fn churn_date(
    spans: &[Span],
    grace_days: u32,
    observed_until: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let grace = Duration::days(i64::from(grace_days));
    let mut ends: Vec<DateTime<Utc>> = spans.iter().filter_map(|s| s.end).collect();
    ends.sort();
    ends.into_iter().find(|&e| {
        e + grace <= observed_until
            && !spans
                .iter()
                .any(|s| s.runs_at(e) || (s.start >= e && s.start <= e + grace))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Expr, StreamRef};
    use crate::identity::Account;
    use serde_json::json;

    fn spec(grace: u32) -> OutcomesSpec {
        OutcomesSpec {
            subscriptions: StreamRef {
                connector: "stripe".into(),
                stream: "subscriptions".into(),
            },
            start_field: "start_date".into(),
            end_field: "ended_at".into(),
            mrr: Expr::compile("double(r.amount) / 100.0").expect("compiles"),
            renewal_grace_days: grace,
        }
    }

    fn day(d: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + d * 86_400, 0).expect("in range")
    }

    fn sub(id: &str, start: i64, end: Option<i64>, amount: i64) -> Record {
        let fields = json!({"start_date": day(start).timestamp(), "ended_at": end.map(|e| day(e).timestamp()), "amount": amount});
        Record {
            id: id.into(),
            updated_at: day(end.unwrap_or(start)),
            account_keys: BTreeMap::new(),
            fields: fields.as_object().cloned().unwrap_or_default(),
        }
    }

    fn account(id: &str, subs: Vec<Record>) -> AccountData {
        let stream = spec(0).subscriptions;
        AccountData {
            account: Account {
                id: id.into(),
                name: id.into(),
                stage: None,
                segment: None,
                owner: None,
            },
            records: BTreeMap::from([(stream, subs)]),
        }
    }

    #[test]
    fn churn_needs_every_subscription_ended_and_no_renewal_within_grace() {
        let accounts = vec![
            account("gone", vec![sub("s1", 0, Some(50), 10_000)]),
            account(
                "renewed",
                vec![sub("s2", 0, Some(50), 10_000), sub("s3", 60, None, 5_000)],
            ),
            account(
                "late",
                vec![sub("s4", 0, Some(50), 10_000), sub("s5", 90, None, 5_000)],
            ),
            account("running", vec![sub("s6", 0, None, 10_000)]),
            account("recent", vec![sub("s7", 0, Some(95), 10_000)]),
        ];
        let o = derive(&spec(30), &accounts, day(100));
        assert_eq!(o.of("gone").and_then(|a| a.churned_at), Some(day(50)));
        assert_eq!(o.of("renewed").and_then(|a| a.churned_at), None);
        // Won back after the grace period: it still churned when the first subscription ended.
        assert_eq!(o.of("late").and_then(|a| a.churned_at), Some(day(50)));
        assert_eq!(o.of("running").and_then(|a| a.churned_at), None);
        // Ended 5 days before the data ends: could still renew within 30 days.
        assert_eq!(o.of("recent").and_then(|a| a.churned_at), None);
        assert_eq!(o.churn_events(), 2);
    }

    #[test]
    fn mrr_sums_running_subscriptions_and_windows_are_half_open() {
        let accounts = vec![account(
            "a",
            vec![sub("s1", 0, Some(50), 10_000), sub("s2", 50, None, 7_000)],
        )];
        let o = derive(&spec(30), &accounts, day(100));
        let a = o.of("a").expect("derived");
        assert_eq!(a.mrr_at(day(10)), 100.0);
        assert_eq!(
            a.mrr_at(day(50)),
            70.0,
            "the old plan ended as the new one started"
        );
        assert!(a.customer_at(day(99)) && !a.customer_at(day(-1)));
        let gone = AccountOutcome {
            spans: Vec::new(),
            churned_at: Some(day(50)),
        };
        assert!(gone.churned_within(day(20), 30) && !gone.churned_within(day(19), 30));
        assert!(
            !gone.churned_within(day(50), 30),
            "churn on the date itself is not after it"
        );
        assert_eq!(
            a.revenue_change_within(day(40), 20),
            Some(false),
            "100 → 70 is a downgrade"
        );
        assert_eq!(a.revenue_change_within(day(60), 20), None, "flat");
        assert_eq!(
            gone.revenue_change_within(day(40), 20),
            None,
            "churn is not a downgrade"
        );
        assert_eq!(a.first_start(), Some(day(0)));
    }

    #[test]
    fn cohorts_group_by_start_quarter_and_count_churn_at_zero() {
        // day(0) is 2023-11-14: Q4 2023. Two accounts start then; one churns, one downgrades 100 → 70.
        let accounts = vec![
            account("gone", vec![sub("s1", 0, Some(50), 10_000)]),
            account(
                "down",
                vec![sub("s2", 0, Some(60), 10_000), sub("s3", 60, None, 7_000)],
            ),
            account("late", vec![sub("s4", 80, None, 5_000)]),
        ];
        let o = derive(&spec(30), &accounts, day(200));
        let cohorts = o.cohorts(day(200));
        assert_eq!(cohorts.len(), 2, "{cohorts:?}");
        let q4 = &cohorts[0];
        assert_eq!(
            (q4.cohort.as_str(), q4.accounts, q4.churned),
            ("2023-Q4", 2, 1)
        );
        assert_eq!((q4.starting_mrr, q4.current_mrr), (200.0, 70.0));
        assert_eq!(q4.nrr, Some(0.35));
        assert_eq!(
            (cohorts[1].cohort.as_str(), cohorts[1].nrr),
            ("2024-Q1", Some(1.0))
        );
        // A cohort not a month old yet has no starting MRR to compare with: left out.
        assert!(o.cohorts(day(100)).iter().all(|c| c.cohort != "2024-Q1"));
    }

    #[test]
    fn unreadable_records_are_reported_by_id() {
        let mut bad = sub("s9", 0, None, 1);
        bad.fields.remove("start_date");
        let mut worse = sub("s10", 0, None, 1);
        worse.fields.insert("amount".into(), json!("lots"));
        let o = derive(&spec(30), &[account("a", vec![bad, worse])], day(100));
        assert!(o.accounts.is_empty());
        assert_eq!(o.problems.len(), 2);
        assert!(
            o.problems[0].contains("subscription s9 of account a: no `start_date`"),
            "{:?}",
            o.problems
        );
        assert!(
            o.problems[1].contains("s10") && o.problems[1].contains("mrr"),
            "{:?}",
            o.problems
        );
    }
}
