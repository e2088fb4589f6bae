//! The validated health model: metrics, their scoring functions, nested weighted categories, stage and
//! segment overrides, risk and advocacy rules, bands and playbooks.
//!
//! These types are what `crate::metrics`, `crate::scoring` and `crate::planner` consume. Weights are stored
//! normalized (they sum to 1 within a parent), cross-references are already resolved, CEL expressions and
//! templates already compile. Parsing and checking live in `validate/model.rs`; evaluating is not done here
//! beyond the thin `Expr` wrapper.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

/// `connector.stream`, e.g. `hubspot.companies`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StreamRef {
    pub connector: String,
    pub stream: String,
}

impl std::fmt::Display for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.connector, self.stream)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub name: String,
    pub description: String,
    /// Hash of the model file's text, stored with each score so model changes are told apart from
    /// behaviour changes.
    pub hash: String,
    pub accounts: AccountsSpec,
    pub bands: Bands,
    /// Below this share of present weight the score is N/A.
    pub min_coverage: f64,
    /// In file order of their ids (sorted), so iteration is deterministic.
    pub metrics: Vec<Metric>,
    /// Every category, depth first in file order of ids: a parent comes before its children.
    pub categories: Vec<Category>,
    /// Stage and segment overrides, in file order of ids; later matches win.
    pub overrides: Vec<Override>,
    /// Risk events and positive signals.
    pub risks: Vec<RiskRule>,
    pub playbooks: Vec<Playbook>,
    /// Where churn and revenue outcomes come from; `None` when the model has no `[outcomes]`.
    pub outcomes: Option<OutcomesSpec>,
}

/// How outcomes are read from billing data: an account churned when it went longer than
/// `renewal_grace_days` with no subscription running (see `crate::backtest::outcomes`).
#[derive(Debug, Clone, Serialize)]
pub struct OutcomesSpec {
    pub subscriptions: StreamRef,
    /// Field with the subscription's start time (unix seconds or RFC 3339).
    pub start_field: String,
    /// Field with the time the subscription ended; absent or null while it runs.
    pub end_field: String,
    /// Monthly recurring revenue of one subscription record, over `r` (its fields).
    pub mrr: Expr,
    pub renewal_grace_days: u32,
}

impl Model {
    pub fn metric(&self, id: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.id == id)
    }

    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// Top-level categories (those without a parent).
    pub fn roots(&self) -> impl Iterator<Item = &Category> {
        self.categories.iter().filter(|c| c.parent.is_none())
    }
}

/// A compiled CEL expression with its source text. Compiled once at validate time.
#[derive(Clone)]
pub struct Expr {
    pub source: String,
    pub program: Arc<cel_interpreter::Program>,
}

impl Expr {
    /// Compiles `source`; the error names the column where parsing failed.
    pub fn compile(source: &str) -> Result<Expr, String> {
        match cel_interpreter::Program::compile(source) {
            Ok(p) => Ok(Expr {
                source: source.to_string(),
                program: Arc::new(p),
            }),
            Err(e) => {
                let col = e.span.start.map(|l| l.column + 1).unwrap_or(1);
                Err(format!("CEL does not parse at column {col}: {}", e.msg))
            }
        }
    }

    /// Variables the expression refers to at the top level (`m`, `r`, `account`, `now`…).
    pub fn variables(&self) -> Vec<String> {
        self.program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Names used as `var.name` in the source, for checking metric references at validate time.
    pub fn members_of(&self, var: &str) -> Vec<String> {
        let b = self.source.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let pat = format!("{var}.");
        let mut out = Vec::new();
        let mut i = 0;
        let mut in_str: Option<u8> = None;
        while i < b.len() {
            let c = b[i];
            if let Some(q) = in_str {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    in_str = None;
                }
                i += 1;
                continue;
            }
            if c == b'\'' || c == b'"' {
                in_str = Some(c);
                i += 1;
                continue;
            }
            if self.source[i..].starts_with(&pat) && (i == 0 || !ident(b[i - 1])) {
                let start = i + pat.len();
                let mut end = start;
                while end < b.len() && ident(b[end]) {
                    end += 1;
                }
                if end > start {
                    out.push(self.source[start..end].to_string());
                }
                i = end;
                continue;
            }
            i += 1;
        }
        out
    }
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Where accounts come from and which record fields describe them.
#[derive(Debug, Clone, Serialize)]
pub struct AccountsSpec {
    pub stream: StreamRef,
    pub key: String,
    pub name_field: String,
    pub stage_field: Option<String>,
    pub segment_field: Option<String>,
    pub owner_field: Option<String>,
    /// Known lifecycle stages and segments, if the model lists them (overrides are checked against them).
    pub stages: Vec<String>,
    pub segments: Vec<String>,
    /// Thresholds (ascending) and labels that turn a numeric segment field into a band, if given.
    pub segment_bands: Vec<(f64, String)>,
    /// Explicit mapping: (account key, value) → account id, e.g. (`domain`, `acme.co.uk`) → `123`.
    pub links: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bands {
    pub red_below: f64,
    pub green_from: f64,
    pub margin: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub id: String,
    pub label: String,
    pub input: MetricInput,
    /// Scored metrics take part in categories; unscored ones only feed ratios, derived values and rules.
    pub score: Option<ScoreFn>,
    /// Red/amber/green for this metric, if it differs from the model's.
    pub bands: Option<Bands>,
    pub ttl_days: Option<u32>,
    pub advice: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub enum MetricInput {
    /// An aggregate over one stream's records for the account.
    Records {
        stream: StreamRef,
        aggregate: Aggregate,
        filter: Filter,
        window_days: Option<u32>,
        /// Text values mapped onto numbers (manual inputs: CSM sentiment `green` → 100).
        map: Option<BTreeMap<String, f64>>,
    },
    /// One metric's value divided by another's.
    Ratio {
        numerator: String,
        denominator: String,
    },
    /// A CEL expression over other metrics' values (`m.active_users / m.seats`).
    Derived { expr: Expr, uses: Vec<String> },
}

/// Which records a metric counts.
#[derive(Debug, Clone, Serialize)]
pub enum Filter {
    /// Records whose fields equal these values (empty: all records).
    Equals(Vec<(String, Value)>),
    /// Records for which the CEL expression over `r` (the record's fields) and `now` is true.
    Cel(Expr),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Aggregate {
    Count,
    Sum(String),
    Avg(String),
    /// The field's value on the most recently updated record.
    Latest(String),
    Distinct(String),
    /// Days since the latest timestamp in the field.
    DaysSince(String),
    /// Percent change of the field's sum over the window against the window before it.
    Trend(String),
}

impl Aggregate {
    pub const NAMES: &'static [&'static str] = &[
        "count",
        "sum",
        "avg",
        "latest",
        "distinct",
        "days_since",
        "trend",
        "ratio",
        "expr",
    ];
}

/// Maps a raw metric value onto 1–100.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ScoreFn {
    /// Points sorted by value; linear between them, flat outside.
    Linear(Vec<(f64, f64)>),
    /// Thresholds sorted by value; the score of the highest one reached, the first one's below all.
    Steps(Vec<(f64, f64)>),
    /// The account's percentile rank among accounts of its segment (1–100); `higher_is_better = false`
    /// ranks the lowest values best.
    Percentile { higher_is_better: bool },
}

impl ScoreFn {
    /// True when the score cannot decrease as the value grows (used by property tests).
    pub fn is_non_decreasing(&self) -> bool {
        match self {
            ScoreFn::Linear(p) | ScoreFn::Steps(p) => p.windows(2).all(|w| w[1].1 >= w[0].1),
            ScoreFn::Percentile { higher_is_better } => *higher_is_better,
        }
    }
}

/// What a category weighs: a metric or a sub-category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Node {
    Metric(String),
    Category(String),
}

impl Node {
    pub fn id(&self) -> &str {
        match self {
            Node::Metric(id) | Node::Category(id) => id,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub id: String,
    pub label: String,
    /// Share of its parent (or of the overall score for a top-level category), 0–1.
    pub weight: f64,
    pub parent: Option<String>,
    /// 0 for top-level categories.
    pub depth: usize,
    /// Metrics and sub-categories with their share of this category, 0–1, summing to 1.
    pub children: Vec<(Node, f64)>,
    pub bands: Option<Bands>,
}

impl Category {
    /// Ids of the metrics weighed directly by this category.
    pub fn metric_ids(&self) -> impl Iterator<Item = &str> {
        self.children.iter().filter_map(|(n, _)| match n {
            Node::Metric(id) => Some(id.as_str()),
            Node::Category(_) => None,
        })
    }
}

/// Weights, scoring functions and bands that apply to accounts of one lifecycle stage and/or segment.
#[derive(Debug, Clone, Serialize)]
pub struct Override {
    pub id: String,
    /// Matched case-insensitively against the account's stage; `None` matches any stage.
    pub stage: Option<String>,
    pub segment: Option<String>,
    /// Category or metric id → raw weight within its parent; siblings are normalized again after.
    pub weights: BTreeMap<String, f64>,
    /// Metric id → replacement scoring function (other thresholds for this stage or segment).
    pub scores: BTreeMap<String, ScoreFn>,
    pub bands: Option<Bands>,
    /// Where an account of this stage/segment should be ("at the end of Onboard, 75").
    pub benchmark: Option<f64>,
}

impl Override {
    pub fn matches(&self, stage: Option<&str>, segment: Option<&str>) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| match want {
            None => true,
            Some(w) => have.is_some_and(|h| h.eq_ignore_ascii_case(w)),
        };
        eq(&self.stage, stage) && eq(&self.segment, segment)
    }
}

/// Hard risks, soft risks and positive (advocacy) signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskKind {
    Hard,
    Soft,
    Advocacy,
}

impl RiskKind {
    pub const NAMES: &'static [&'static str] = &["hard", "soft", "advocacy"];

    pub fn name(self) -> &'static str {
        match self {
            RiskKind::Hard => "hard",
            RiskKind::Soft => "soft",
            RiskKind::Advocacy => "advocacy",
        }
    }
}

/// A rule that fires a discrete event and says how the account comes off it.
#[derive(Debug, Clone, Serialize)]
pub struct RiskRule {
    pub id: String,
    pub label: String,
    pub kind: RiskKind,
    /// CEL over `m` (present metric values) and `account` (stage, segment): true fires the event.
    pub when: Expr,
    /// CEL: true takes an active event off. `None`: it clears as soon as `when` is false.
    pub clear_when: Option<Expr>,
    pub advice: Option<String>,
}

/// Variables rules and derived metrics may use.
pub const RULE_VARIABLES: &[&str] = &["m", "account"];
/// Variables record filters may use.
pub const FILTER_VARIABLES: &[&str] = &["r", "now"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Red,
    Amber,
    Green,
}

impl Band {
    pub fn name(self) -> &'static str {
        match self {
            Band::Red => "red",
            Band::Amber => "amber",
            Band::Green => "green",
        }
    }
}

impl std::fmt::Display for Band {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a playbook watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Target {
    Overall,
    Category(String),
    /// A risk event or signal: the playbook opens while it is active (`when = "risk:<id>"`).
    Risk(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Playbook {
    pub id: String,
    pub when: Target,
    pub enters: Band,
    pub cooldown_days: u32,
    /// At most this many openings per account in a rolling window.
    pub limit: Option<OpenLimit>,
    /// Trigger when the watched score falls this far below its high of the window, instead of on a band.
    pub drop: Option<ScoreDrop>,
    /// Trigger when the watched score has been green for this many days in a row (an advocate
    /// candidate); the project closes when it leaves green.
    pub thriving_days: Option<u32>,
    /// minijinja sources, checked to compile and to use only known variables.
    pub project: String,
    pub description: String,
    pub tasks: Vec<TaskTemplate>,
}

/// "The score dropped by `points` within `days` days": the playbook opens when the watched score is at
/// least `points` below its highest value in the last `days` days of history, and the account counts as
/// recovered once it is back within half of that (the hysteresis that keeps it from flapping).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoreDrop {
    pub points: f64,
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OpenLimit {
    pub times: u32,
    pub days: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskTemplate {
    pub name: String,
    pub description: String,
    pub for_each: ForEach,
    pub due_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ForEach {
    Once,
    FailingMetric,
}

/// Variables a playbook template may use; `validate` rejects any other.
pub const TEMPLATE_VARIABLES: &[&str] = &["account", "target", "score", "band", "metric"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_compile_and_name_what_they_use() {
        let e =
            Expr::compile("m.usage > 1.0 && account.stage == 'm.not_a_metric' || xm.y > m.seats")
                .unwrap();
        assert_eq!(e.members_of("m"), ["usage", "seats"]);
        let mut vars = e.variables();
        vars.sort();
        assert_eq!(vars, ["account", "m", "xm"]);
        let err = Expr::compile("m.usage >").unwrap_err();
        assert!(err.starts_with("CEL does not parse at column 10"), "{err}");
    }
}
