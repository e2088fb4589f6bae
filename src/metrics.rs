//! Metric values: an account's records turned into one number per metric, as of a given time.
//!
//! Pure and deterministic: the same records and `as_of` give the same values. Windows count back from
//! `as_of` over each record's `updated_at`; a value whose newest input is older than the metric's TTL is
//! reported as stale (missing), so scoring redistributes its weight. Record filters and derived values are
//! CEL expressions compiled at validate time (`config::Expr`); this module evaluates them. Text inputs
//! (CSM sentiment `green`) become numbers through the metric's `map`. This module computes values only;
//! turning them into 1–100 scores is `crate::scoring`'s job.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Aggregate, Expr, Filter, Metric, MetricInput, Model};
use crate::identity::AccountData;
use crate::vocab::{lookup, Record};

/// A metric's value for one account, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    pub value: Option<f64>,
    /// Why `value` is missing: no records, stale input, division by zero…
    pub missing: Option<String>,
}

impl MetricValue {
    fn present(v: f64) -> MetricValue {
        if v.is_finite() {
            MetricValue {
                value: Some(v),
                missing: None,
            }
        } else {
            MetricValue::missing("not a finite number")
        }
    }

    fn missing(reason: impl Into<String>) -> MetricValue {
        MetricValue {
            value: None,
            missing: Some(reason.into()),
        }
    }
}

/// A number from a JSON value; vendors such as HubSpot send every property as a string.
pub fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A timestamp from RFC 3339 text, a date, or unix seconds/milliseconds (numbers above 10^11 are ms).
pub fn as_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
            }
            s.trim().parse::<i64>().ok().and_then(unix)
        }
        Value::Number(n) => n.as_i64().and_then(unix),
        _ => None,
    }
}

fn unix(n: i64) -> Option<DateTime<Utc>> {
    if n.abs() > 100_000_000_000 {
        Utc.timestamp_millis_opt(n).single()
    } else {
        Utc.timestamp_opt(n, 0).single()
    }
}

/// A JSON value as a CEL value (objects become maps, integers stay integers).
pub fn to_cel(v: &Value) -> cel_interpreter::Value {
    use cel_interpreter::Value as C;
    match v {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => C::Int(i),
            (None, Some(u)) => C::UInt(u),
            _ => C::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => C::String(std::sync::Arc::new(s.clone())),
        Value::Array(a) => C::List(std::sync::Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => fields_to_cel(m),
    }
}

fn fields_to_cel(m: &serde_json::Map<String, Value>) -> cel_interpreter::Value {
    let map: std::collections::HashMap<String, cel_interpreter::Value> =
        m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
    map.into()
}

/// Why a CEL expression gave no usable result.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// It reads a key the data does not have (a missing metric, a record without the field): an input
    /// is missing, not a mistake in the model.
    Missing(String),
    /// Anything else (a type mismatch, a non-boolean condition): the expression itself is wrong.
    Invalid(String),
}

/// Why running a compiled expression failed.
enum Failed {
    Cel(cel_interpreter::ExecutionError),
    /// cel-interpreter panicked: its message (`attempt to divide by zero`).
    Panicked(String),
}

/// Runs a compiled CEL program. cel-interpreter 0.9 does integer arithmetic with Rust's operators, so
/// `r.a / r.b` or `%` with an integer zero (and, in a debug build, an overflowing `+`, `-` or `*`)
/// panics inside it. Validation cannot know the data, so the panic is caught here and becomes the
/// expression's error: a missing value with its reason for that account, never a crashed run. The
/// program is immutable and the context only borrowed, so nothing is left half-changed by the unwind.
fn execute(e: &Expr, ctx: &cel_interpreter::Context<'_>) -> Result<cel_interpreter::Value, Failed> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.program.execute(ctx))) {
        Ok(result) => result.map_err(Failed::Cel),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the expression could not be evaluated".into());
            Err(Failed::Panicked(message))
        }
    }
}

/// Evaluates a boolean CEL expression.
pub fn eval_bool(e: &Expr, ctx: &cel_interpreter::Context<'_>) -> Result<bool, EvalError> {
    match execute(e, ctx) {
        Ok(cel_interpreter::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(EvalError::Invalid(format!(
            "`{}` gave {other:?}, not true or false",
            e.source
        ))),
        Err(Failed::Cel(cel_interpreter::ExecutionError::NoSuchKey(k))) => {
            Err(EvalError::Missing(k.to_string()))
        }
        Err(Failed::Cel(err)) => Err(EvalError::Invalid(format!("`{}`: {err}", e.source))),
        Err(Failed::Panicked(why)) => Err(EvalError::Invalid(format!("`{}`: {why}", e.source))),
    }
}

/// Evaluates a numeric CEL expression.
pub fn eval_number(e: &Expr, ctx: &cel_interpreter::Context<'_>) -> Result<f64, String> {
    use cel_interpreter::Value as C;
    match execute(e, ctx) {
        Ok(C::Float(x)) => Ok(x),
        Ok(C::Int(i)) => Ok(i as f64),
        Ok(C::UInt(u)) => Ok(u as f64),
        Ok(other) => Err(format!("`{}` gave {other:?}, not a number", e.source)),
        Err(Failed::Cel(err)) => Err(format!("`{}`: {err}", e.source)),
        Err(Failed::Panicked(why)) => Err(format!("`{}`: {why}", e.source)),
    }
}

/// The `m` (present metric values) and `account` variables that rules and derived metrics see.
pub fn rule_context(
    account: &crate::identity::Account,
    values: &BTreeMap<String, MetricValue>,
) -> cel_interpreter::Context<'static> {
    use cel_interpreter::Value as C;
    let mut ctx = cel_interpreter::Context::default();
    let m: std::collections::HashMap<String, C> = values
        .iter()
        .filter_map(|(k, v)| v.value.map(|x| (k.clone(), C::Float(x))))
        .collect();
    ctx.add_variable_from_value("m", m);
    let text = |s: &Option<String>| match s {
        Some(s) => C::String(std::sync::Arc::new(s.clone())),
        None => C::Null,
    };
    let a: std::collections::HashMap<String, C> = [
        (
            "id".to_string(),
            C::String(std::sync::Arc::new(account.id.clone())),
        ),
        (
            "name".to_string(),
            C::String(std::sync::Arc::new(account.name.clone())),
        ),
        ("stage".to_string(), text(&account.stage)),
        ("segment".to_string(), text(&account.segment)),
        ("owner".to_string(), text(&account.owner)),
    ]
    .into_iter()
    .collect();
    ctx.add_variable_from_value("account", a);
    ctx
}

fn matches(r: &Record, filter: &[(String, Value)]) -> bool {
    filter.iter().all(|(k, want)| match lookup(&r.fields, k) {
        Some(have) if have == want => true,
        // "5" (HubSpot sends every property as a string) equals 5 in the model; "true" equals true.
        Some(have) => match (as_number(have), as_number(want)) {
            (Some(a), Some(b)) => a == b,
            _ => match (have, want) {
                (Value::String(s), Value::Bool(b)) => {
                    s.eq_ignore_ascii_case(if *b { "true" } else { "false" })
                }
                _ => false,
            },
        },
        None => want.is_null(),
    })
}

/// Computes every metric of the model for one account. Ratios are computed after the metrics they divide.
pub fn compute(
    model: &Model,
    data: &AccountData,
    as_of: DateTime<Utc>,
) -> BTreeMap<String, MetricValue> {
    let mut out = BTreeMap::new();
    for m in &model.metrics {
        if let MetricInput::Records { .. } = m.input {
            out.insert(m.id.clone(), compute_records(m, data, as_of));
        }
    }
    for m in &model.metrics {
        if let MetricInput::Ratio {
            numerator,
            denominator,
        } = &m.input
        {
            let v = match (
                out.get(numerator).and_then(|v| v.value),
                out.get(denominator).and_then(|v| v.value),
            ) {
                (Some(_), Some(0.0)) => MetricValue::missing(format!("{denominator} is 0")),
                (Some(n), Some(d)) => MetricValue::present(n / d),
                (None, _) => MetricValue::missing(format!("{numerator} is missing")),
                (_, None) => MetricValue::missing(format!("{denominator} is missing")),
            };
            out.insert(m.id.clone(), v);
        }
    }
    let derived: Vec<&Metric> = model
        .metrics
        .iter()
        .filter(|m| matches!(m.input, MetricInput::Derived { .. }))
        .collect();
    if !derived.is_empty() {
        let ctx = rule_context(&data.account, &out);
        for m in derived {
            let MetricInput::Derived { expr, uses } = &m.input else {
                continue;
            };
            let v = match uses
                .iter()
                .find(|u| out.get(*u).is_none_or(|v| v.value.is_none()))
            {
                Some(u) => MetricValue::missing(format!("{u} is missing")),
                None => match eval_number(expr, &ctx) {
                    Ok(x) => MetricValue::present(x),
                    Err(e) => MetricValue::missing(e),
                },
            };
            out.insert(m.id.clone(), v);
        }
    }
    out
}

fn compute_records(m: &Metric, data: &AccountData, as_of: DateTime<Utc>) -> MetricValue {
    let MetricInput::Records {
        stream,
        aggregate,
        filter,
        window_days,
        map,
    } = &m.input
    else {
        return MetricValue::missing("not a records metric");
    };
    let empty = Vec::new();
    let all = data.records.get(stream).unwrap_or(&empty);
    // Records from the future (relative to as_of) never count: that is what lets a backtest score the past.
    let current = all.iter().filter(|r| r.updated_at <= as_of);
    let records: Vec<&Record> = match filter {
        Filter::Equals(eq) => current.filter(|r| matches(r, eq)).collect(),
        Filter::Cel(expr) => {
            let mut root = cel_interpreter::Context::default();
            root.add_variable_from_value("now", as_of.timestamp() as f64);
            let mut kept = Vec::new();
            for r in current {
                let mut ctx = root.new_inner_scope();
                ctx.add_variable_from_value("r", fields_to_cel(&r.fields));
                // A record the expression cannot evaluate (a field it lacks) is one it does not select;
                // `has(r.field)` makes that explicit in the model.
                if eval_bool(expr, &ctx).unwrap_or(false) {
                    kept.push(r);
                }
            }
            kept
        }
    };
    if let (Some(ttl), Some(newest)) = (m.ttl_days, records.iter().map(|r| r.updated_at).max()) {
        if as_of - newest > Duration::days(i64::from(ttl)) {
            return MetricValue::missing(format!("stale: newest input is older than {ttl} days"));
        }
    }
    let window = |days: u32, back: u32| {
        let end = as_of - Duration::days(i64::from(days) * i64::from(back));
        let start = end - Duration::days(i64::from(days));
        records
            .iter()
            .copied()
            .filter(move |r| r.updated_at > start && r.updated_at <= end)
    };
    let in_window: Vec<&Record> = match window_days {
        Some(d) if !matches!(aggregate, Aggregate::Trend(_)) => window(*d, 0).collect(),
        _ => records.clone(),
    };
    let numbers = |rs: &[&Record], field: &str| -> Vec<f64> {
        rs.iter()
            .filter_map(|r| lookup(&r.fields, field).and_then(as_number))
            .collect()
    };
    if records.is_empty() && !matches!(aggregate, Aggregate::Count) {
        return MetricValue::missing(format!("no records in {stream}"));
    }
    match aggregate {
        Aggregate::Count => MetricValue::present(in_window.len() as f64),
        Aggregate::Sum(f) => MetricValue::present(numbers(&in_window, f).iter().sum()),
        Aggregate::Avg(f) => {
            let xs = numbers(&in_window, f);
            if xs.is_empty() {
                MetricValue::missing(format!("no {f} values in the window"))
            } else {
                MetricValue::present(xs.iter().sum::<f64>() / xs.len() as f64)
            }
        }
        Aggregate::Latest(f) => {
            let mapped = |v: &Value| -> Option<f64> {
                match map {
                    Some(map) => match v {
                        Value::String(s) => map.get(&s.trim().to_lowercase()).copied(),
                        _ => None,
                    },
                    None => as_number(v),
                }
            };
            match in_window
                .iter()
                .rev()
                .find_map(|r| lookup(&r.fields, f).and_then(mapped))
            {
                Some(v) => MetricValue::present(v),
                None if map.is_some() => {
                    MetricValue::missing(format!("no {f} value the map knows"))
                }
                None => MetricValue::missing(format!("no numeric {f}")),
            }
        }
        Aggregate::Distinct(f) => {
            let set: BTreeSet<String> = in_window
                .iter()
                .filter_map(|r| lookup(&r.fields, f))
                .map(|v| v.to_string())
                .collect();
            MetricValue::present(set.len() as f64)
        }
        Aggregate::DaysSince(f) => match in_window
            .iter()
            .filter_map(|r| lookup(&r.fields, f).and_then(as_time))
            .max()
        {
            // Whole days, so the value does not drift with the time of day the run happens at.
            Some(t) => MetricValue::present((as_of - t).num_days().max(0) as f64),
            None => MetricValue::missing(format!("no {f} timestamps")),
        },
        Aggregate::Trend(f) => {
            let days = window_days.unwrap_or(30);
            let cur: f64 = window(days, 0)
                .filter_map(|r| lookup(&r.fields, f).and_then(as_number))
                .sum();
            let prev_records: Vec<&Record> = window(days, 1).collect();
            if prev_records.is_empty() {
                return MetricValue::missing("no records in the previous window");
            }
            let prev: f64 = numbers(&prev_records, f).iter().sum();
            if prev == 0.0 {
                MetricValue::present(if cur > 0.0 { 100.0 } else { 0.0 })
            } else {
                MetricValue::present((cur - prev) / prev * 100.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StreamRef;
    use crate::identity::Account;
    use serde_json::json;

    fn at(day: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + day * 86_400, 0).unwrap()
    }

    fn rec(id: &str, day: i64, fields: Value) -> Record {
        Record {
            id: id.into(),
            updated_at: at(day),
            account_keys: BTreeMap::new(),
            fields: fields.as_object().cloned().unwrap_or_default(),
        }
    }

    fn data(records: Vec<Record>) -> AccountData {
        let mut m = BTreeMap::new();
        m.insert(
            StreamRef {
                connector: "u".into(),
                stream: "s".into(),
            },
            records,
        );
        AccountData {
            account: Account {
                id: "a".into(),
                name: "A".into(),
                stage: None,
                segment: None,
                owner: None,
            },
            records: m,
        }
    }

    fn metric(
        aggregate: Aggregate,
        window_days: Option<u32>,
        filter: Vec<(String, Value)>,
    ) -> Metric {
        Metric {
            id: "m".into(),
            label: "m".into(),
            input: MetricInput::Records {
                stream: StreamRef {
                    connector: "u".into(),
                    stream: "s".into(),
                },
                aggregate,
                filter: Filter::Equals(filter),
                window_days,
                map: None,
            },
            score: None,
            bands: None,
            ttl_days: None,
            advice: None,
        }
    }

    #[test]
    fn aggregates_over_windows() {
        let d = data(vec![
            rec("1", 0, json!({"n": "5", "u": "x", "status": "open"})),
            rec("2", 20, json!({"n": 7, "u": "y", "status": "paid"})),
            rec("3", 29, json!({"n": 1, "u": "x", "status": "open"})),
        ]);
        let now = at(30);
        let v = |a, w, f| compute_records(&metric(a, w, f), &d, now).value;
        assert_eq!(v(Aggregate::Count, None, vec![]), Some(3.0));
        assert_eq!(v(Aggregate::Count, Some(15), vec![]), Some(2.0));
        assert_eq!(v(Aggregate::Sum("n".into()), None, vec![]), Some(13.0));
        assert_eq!(v(Aggregate::Avg("n".into()), Some(15), vec![]), Some(4.0));
        assert_eq!(v(Aggregate::Latest("n".into()), None, vec![]), Some(1.0));
        assert_eq!(v(Aggregate::Distinct("u".into()), None, vec![]), Some(2.0));
        assert_eq!(
            v(
                Aggregate::Count,
                None,
                vec![("status".into(), json!("open"))]
            ),
            Some(2.0)
        );
        // Trend over 15 days: (15, 30] holds days 20 and 29; (0, 15] holds nothing (day 0 is on the edge).
        // Over 10 days: (20, 30] holds day 29 (n = 1) and (10, 20] holds day 20 (n = 7): (1 - 7) / 7.
        assert_eq!(v(Aggregate::Trend("n".into()), Some(15), vec![]), None);
        assert_eq!(
            v(Aggregate::Trend("n".into()), Some(10), vec![]),
            Some((1.0 - 7.0) / 7.0 * 100.0)
        );
    }

    #[test]
    fn records_after_as_of_are_ignored_and_stale_inputs_are_missing() {
        let d = data(vec![
            rec("1", 0, json!({"t": "2023-11-14T22:13:20Z"})),
            rec("2", 40, json!({})),
        ]);
        let m = metric(Aggregate::Count, None, vec![]);
        assert_eq!(compute_records(&m, &d, at(10)).value, Some(1.0));
        let mut stale = metric(Aggregate::DaysSince("t".into()), None, vec![]);
        stale.ttl_days = Some(5);
        assert!(compute_records(&stale, &d, at(10))
            .missing
            .unwrap()
            .starts_with("stale"));
        stale.ttl_days = None;
        assert_eq!(compute_records(&stale, &d, at(10)).value, Some(10.0));
    }

    #[test]
    fn cel_filters_maps_and_derived_values() {
        let d = data(vec![
            rec(
                "1",
                0,
                json!({"status": "open", "due": 1_700_000_000, "mood": "Green"}),
            ),
            rec(
                "2",
                5,
                json!({"status": "open", "due": 1_700_000_000 + 40 * 86_400}),
            ),
            rec(
                "3",
                6,
                json!({"status": "paid", "due": 1_700_000_000, "mood": "red"}),
            ),
        ]);
        let now = at(45);
        let cel = |src: &str| {
            let mut m = metric(Aggregate::Count, None, vec![]);
            if let MetricInput::Records { filter, .. } = &mut m.input {
                *filter = Filter::Cel(Expr::compile(src).unwrap());
            }
            compute_records(&m, &d, now).value
        };
        // Overdue by more than 30 days at day 45: only record 1 (due on day 0); record 2 is due on day 40.
        assert_eq!(
            cel("r.status == 'open' && double(r.due) < now - 2592000.0"),
            Some(1.0)
        );
        // A record without the field is not selected rather than failing the metric.
        assert_eq!(cel("r.mood == 'red'"), Some(1.0));
        assert_eq!(cel("has(r.mood)"), Some(2.0));

        let mut mood = metric(Aggregate::Latest("mood".into()), None, vec![]);
        if let MetricInput::Records { map, .. } = &mut mood.input {
            *map = Some([("green".to_string(), 100.0), ("red".to_string(), 1.0)].into());
        }
        assert_eq!(compute_records(&mood, &d, now).value, Some(1.0));
        assert_eq!(compute_records(&mood, &d, at(3)).value, Some(100.0));

        // Derived: count × 10 / open count, evaluated after the metrics it uses; missing propagates.
        let model_with = |expr: &str| {
            let mut all = metric(Aggregate::Count, None, vec![]);
            all.id = "all".into();
            let mut open = metric(
                Aggregate::Count,
                None,
                vec![("status".into(), json!("open"))],
            );
            open.id = "open".into();
            let mut ratio = metric(Aggregate::Count, None, vec![]);
            ratio.id = "derived".into();
            let e = Expr::compile(expr).unwrap();
            ratio.input = MetricInput::Derived {
                uses: e.members_of("m"),
                expr: e,
            };
            crate::config::Model {
                name: "t".into(),
                description: String::new(),
                hash: "h".into(),
                accounts: crate::config::AccountsSpec {
                    stream: StreamRef {
                        connector: "u".into(),
                        stream: "s".into(),
                    },
                    key: "k".into(),
                    name_field: "n".into(),
                    stage_field: None,
                    segment_field: None,
                    owner_field: None,
                    stages: vec![],
                    segments: vec![],
                    segment_bands: vec![],
                    links: vec![],
                },
                bands: crate::config::Bands {
                    red_below: 40.0,
                    green_from: 70.0,
                    margin: 5.0,
                },
                min_coverage: 0.5,
                metrics: vec![all, open, ratio],
                categories: vec![],
                overrides: vec![],
                risks: vec![],
                playbooks: vec![],
                outcomes: None,
            }
        };
        let v = compute(&model_with("m.all * 10.0 / m.open"), &d, now);
        assert_eq!(v["derived"].value, Some(15.0));
        let v = compute(&model_with("m.all + m.nothing"), &d, now);
        assert_eq!(v["derived"].missing.as_deref(), Some("nothing is missing"));
    }

    #[test]
    fn parses_vendor_times() {
        assert_eq!(as_time(&json!("2023-11-14T22:13:20Z")), Some(at(0)));
        assert_eq!(as_time(&json!(1_700_000_000)), Some(at(0)));
        assert_eq!(as_time(&json!("1700000000000")), Some(at(0)));
        assert_eq!(as_time(&json!("not a date")), None);
    }

    #[test]
    fn integer_division_by_zero_is_an_error_naming_the_expression_not_a_panic() {
        // cel-interpreter divides integers with Rust's `/`, which panics on zero (issue 25, case 3).
        let filter = Expr::compile("r.amount_due / r.attempt_count > 0").unwrap();
        let mut ctx = cel_interpreter::Context::default();
        ctx.add_variable_from_value(
            "r",
            fields_to_cel(
                json!({"amount_due": 500, "attempt_count": 0})
                    .as_object()
                    .unwrap(),
            ),
        );
        match eval_bool(&filter, &ctx) {
            Err(EvalError::Invalid(why)) => {
                assert!(why.contains("r.amount_due / r.attempt_count"), "{why}");
                assert!(why.contains("divide by zero"), "{why}");
            }
            other => panic!("expected an invalid-expression error, got {other:?}"),
        }
        let value = Expr::compile("7 % (3 - 3)").unwrap();
        let err = eval_number(&value, &cel_interpreter::Context::default()).unwrap_err();
        assert!(err.contains("7 % (3 - 3)"), "{err}");
        // The same expression on good data still evaluates.
        let mut ok = cel_interpreter::Context::default();
        ok.add_variable_from_value(
            "r",
            fields_to_cel(
                json!({"amount_due": 500, "attempt_count": 2})
                    .as_object()
                    .unwrap(),
            ),
        );
        assert_eq!(eval_bool(&filter, &ok), Ok(true));
    }
}
