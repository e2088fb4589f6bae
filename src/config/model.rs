//! The validated health model: metrics, their scoring functions, weighted categories, bands and playbooks.
//!
//! These types are what `crate::metrics`, `crate::scoring` and `crate::planner` consume. Weights are stored
//! normalized (they sum to 1 within a parent), cross-references are already resolved, and templates already
//! compile. Parsing and checking live in `validate.rs`.

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
    pub categories: Vec<Category>,
    pub playbooks: Vec<Playbook>,
}

impl Model {
    pub fn metric(&self, id: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.id == id)
    }

    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
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
    /// Scored metrics take part in categories; unscored ones only feed ratios.
    pub score: Option<ScoreFn>,
    pub ttl_days: Option<u32>,
    pub advice: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub enum MetricInput {
    /// An aggregate over one stream's records for the account.
    Records {
        stream: StreamRef,
        aggregate: Aggregate,
        /// Only records whose fields equal these values.
        filter: Vec<(String, Value)>,
        window_days: Option<u32>,
    },
    /// One metric's value divided by another's.
    Ratio {
        numerator: String,
        denominator: String,
    },
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
    ];
}

/// Maps a raw metric value onto 1–100.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ScoreFn {
    /// Points sorted by value; linear between them, flat outside.
    Linear(Vec<(f64, f64)>),
    /// Thresholds sorted by value; the score of the highest one reached, the first one's below all.
    Steps(Vec<(f64, f64)>),
}

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub id: String,
    pub label: String,
    /// Share of the overall score, 0–1.
    pub weight: f64,
    /// Metric id and its share of the category, 0–1.
    pub metrics: Vec<(String, f64)>,
}

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
}

#[derive(Debug, Clone, Serialize)]
pub struct Playbook {
    pub id: String,
    pub when: Target,
    pub enters: Band,
    pub cooldown_days: u32,
    /// minijinja sources, checked to compile and to use only known variables.
    pub project: String,
    pub description: String,
    pub tasks: Vec<TaskTemplate>,
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
