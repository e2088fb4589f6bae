//! Validation of the health model file: stream references, metrics and their scoring functions,
//! category weights, bands and playbook templates. Pure: it reads nothing but the parsed file and the
//! already-validated connectors, and reports into the same `Diagnostics` as the rest of `validate`.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::{join, Diagnostics, SourceFile};
use crate::config::raw::*;
use crate::config::*;
use crate::connector::Role;

fn parse_stream_ref(s: &str) -> Option<StreamRef> {
    let (c, st) = s.split_once('.')?;
    (!c.is_empty() && !st.is_empty()).then(|| StreamRef {
        connector: c.into(),
        stream: st.into(),
    })
}

/// What the model may refer to: valid connectors, and the ids of broken ones (already reported).
#[derive(Clone, Copy)]
struct Refs<'a> {
    connectors: &'a [ConnectorConfig],
    broken: &'a BTreeSet<String>,
}

fn check_stream_ref(
    f: &SourceFile,
    s: &Spanned<String>,
    refs: Refs<'_>,
    out: &mut Diagnostics,
) -> Option<StreamRef> {
    let connectors = refs.connectors;
    let Some(r) = parse_stream_ref(s.get_ref()) else {
        f.err(
            out,
            s.span(),
            format!(
                "`{}` is not a stream reference like hubspot.companies (connector id, dot, stream)",
                s.get_ref()
            ),
        );
        return None;
    };
    let sources: Vec<&ConnectorConfig> = connectors
        .iter()
        .filter(|c| c.role == Role::Source)
        .collect();
    match sources.iter().find(|c| c.id == r.connector) {
        None if refs.broken.contains(&r.connector) => {}
        None => f.err(
            out,
            s.span(),
            format!(
                "no source connector `{}`; configured sources: {}",
                r.connector,
                join(sources.iter().map(|c| c.id.as_str()))
            ),
        ),
        Some(c) if !c.streams.contains(&r.stream) => f.err(
            out,
            s.span(),
            format!(
                "connector {} does not sync stream `{}`; it syncs: {}",
                c.id,
                r.stream,
                join(c.streams.iter().map(String::as_str))
            ),
        ),
        Some(_) => return Some(r),
    }
    None
}

/// FNV-1a: a stable, dependency-free fingerprint of the model text (not a security hash).
fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

const WEIGHT_TOLERANCE: f64 = 0.01;

pub(super) fn check_model(
    f: &SourceFile,
    raw: RawModel,
    connectors: &[ConnectorConfig],
    broken: &BTreeSet<String>,
    out: &mut Diagnostics,
) -> Option<Model> {
    let refs = Refs { connectors, broken };
    let before = out.errors.len();
    if *raw.version.get_ref() != 1 {
        f.err(
            out,
            raw.version.span(),
            format!(
                "unsupported model version {}; this healthsync reads version 1",
                raw.version.get_ref()
            ),
        );
    }
    let acc = raw.accounts.get_ref();
    let accounts_stream = check_stream_ref(f, &acc.stream, refs, out);

    let bands = check_bands(f, &raw.bands, 3.0, "bands", out);
    let margin = bands.map(|b| b.margin).unwrap_or(3.0);
    let stages = acc
        .stages
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    let segments = acc
        .segments
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    let mut links = Vec::new();
    if let Some(l) = &acc.links {
        for (from, to) in l.get_ref() {
            match from.split_once(':') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() && !to.is_empty() => {
                    links.push((k.to_string(), v.to_string(), to.clone()))
                }
                _ => f.err(
                    out,
                    l.span(),
                    format!("accounts.links: `{from}` = `{to}` must be \"key:value\" = \"account id\", e.g. \"domain:acme.co.uk\" = \"123\""),
                ),
            }
        }
    }
    if !stages.is_empty() && acc.stage_field.is_none() {
        f.err(
            out,
            acc.stages.as_ref().map(|s| s.span()).unwrap_or_default(),
            "accounts.stages needs accounts.stage_field, the account field that holds the stage",
        );
    }
    if !segments.is_empty() && acc.segment_field.is_none() {
        f.err(
            out,
            acc.segments.as_ref().map(|s| s.span()).unwrap_or_default(),
            "accounts.segments needs accounts.segment_field, the account field that holds the segment",
        );
    }
    let min_coverage = raw
        .min_coverage
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(0.5);
    if !(0.0..=1.0).contains(&min_coverage) {
        f.err(
            out,
            raw.min_coverage
                .as_ref()
                .map(|m| m.span())
                .unwrap_or_default(),
            "min_coverage is a share between 0 and 1",
        );
    }

    let metric_ids: BTreeSet<&str> = raw.metrics.keys().map(String::as_str).collect();
    let mut metrics = Vec::new();
    for (id, m) in &raw.metrics {
        if let Some(metric) = check_metric(f, id, m, &metric_ids, &raw.metrics, refs, margin, out) {
            metrics.push(metric);
        }
    }

    let cats = &raw.categories;
    let categories = check_categories(f, &raw, margin, out);
    let overrides = raw
        .overrides
        .iter()
        .filter_map(|(id, o)| check_override(f, id, o, &raw, &stages, &segments, margin, out))
        .collect();
    let risks = raw
        .risks
        .iter()
        .filter_map(|(id, r)| check_risk(f, id, r, &metric_ids, out))
        .collect();

    let mut playbooks = Vec::new();
    for (id, p) in &raw.playbooks {
        if let Some(pb) = check_playbook(f, id, p, cats, out) {
            playbooks.push(pb);
        }
    }

    if out.errors.len() > before {
        return None;
    }
    Some(Model {
        name: raw.name.into_inner(),
        description: raw.description.unwrap_or_default(),
        hash: fingerprint(&f.text),
        accounts: AccountsSpec {
            stream: accounts_stream?,
            key: acc.key.get_ref().clone(),
            name_field: acc.name_field.get_ref().clone(),
            stage_field: acc.stage_field.as_ref().map(|s| s.get_ref().clone()),
            segment_field: acc.segment_field.as_ref().map(|s| s.get_ref().clone()),
            owner_field: acc.owner_field.as_ref().map(|s| s.get_ref().clone()),
            stages,
            segments,
            links,
        },
        bands: bands?,
        min_coverage,
        metrics,
        categories,
        overrides,
        risks,
        playbooks,
    })
}

#[allow(clippy::too_many_arguments)]
fn check_metric(
    f: &SourceFile,
    id: &str,
    m: &Spanned<RawMetric>,
    ids: &BTreeSet<&str>,
    all: &BTreeMap<String, Spanned<RawMetric>>,
    refs: Refs<'_>,
    margin: f64,
    out: &mut Diagnostics,
) -> Option<Metric> {
    let before = out.errors.len();
    let r = m.get_ref();
    let agg = r.aggregate.get_ref().as_str();
    if !Aggregate::NAMES.contains(&agg) {
        f.err(
            out,
            r.aggregate.span(),
            format!(
                "metric {id}: unknown aggregate `{agg}`; use {}",
                join(Aggregate::NAMES.iter().copied())
            ),
        );
        return None;
    }
    let field = || -> Option<String> { r.field.as_ref().map(|v| v.get_ref().clone()) };
    let need_field = |out: &mut Diagnostics| -> Option<String> {
        let v = field();
        if v.is_none() {
            f.err(
                out,
                m.span(),
                format!("metric {id}: aggregate {agg} needs `field`"),
            );
        }
        v
    };
    let window_days = r.window_days.as_ref().and_then(|w| {
        if (1..=3650).contains(w.get_ref()) {
            Some(*w.get_ref() as u32)
        } else {
            f.err(
                out,
                w.span(),
                format!("metric {id}: window_days must be between 1 and 3650"),
            );
            None
        }
    });
    let not_here = |out: &mut Diagnostics, key: &str, span: std::ops::Range<usize>| {
        f.err(
            out,
            span,
            format!("metric {id}: `{key}` does not apply to aggregate {agg}"),
        )
    };
    if agg != "expr" {
        if let Some(e) = &r.expr {
            not_here(out, "expr", e.span());
        }
    }
    if matches!(agg, "ratio" | "expr") {
        if let Some(x) = &r.filter {
            not_here(out, "filter", x.span());
        }
        if let Some(x) = &r.map {
            not_here(out, "map", x.span());
        }
        if let Some(x) = &r.stream {
            not_here(out, "stream", x.span());
        }
    } else if let (Some(x), false) = (&r.map, agg == "latest") {
        not_here(out, "map", x.span());
    }
    let input = if agg == "expr" {
        let Some(src) = &r.expr else {
            f.err(
                out,
                m.span(),
                format!("metric {id}: aggregate expr needs `expr`, CEL over other metrics such as \"m.active_users / m.seats\""),
            );
            return None;
        };
        let expr = check_cel(f, out, &format!("metric {id}: expr"), src, RULE_VARIABLES)?;
        let mut uses = Vec::new();
        for used in expr.members_of("m") {
            let derived = all
                .get(&used)
                .is_some_and(|t| t.get_ref().aggregate.get_ref() == "expr");
            if !ids.contains(used.as_str()) {
                f.err(
                    out,
                    src.span(),
                    format!(
                        "metric {id}: expr uses unknown metric `m.{used}`; known metrics: {}",
                        join(ids.iter().copied())
                    ),
                );
            } else if derived {
                f.err(
                    out,
                    src.span(),
                    format!("metric {id}: expr may use metrics over records and ratios, not another expr (`m.{used}`)"),
                );
            } else if !uses.contains(&used) {
                uses.push(used);
            }
        }
        MetricInput::Derived { expr, uses }
    } else if agg == "ratio" {
        let mut side = |name: &str, v: &Option<Spanned<String>>| -> Option<String> {
            let Some(v) = v else {
                f.err(
                    out,
                    m.span(),
                    format!("metric {id}: a ratio needs `{name}`, the id of another metric"),
                );
                return None;
            };
            let target = v.get_ref().as_str();
            if !ids.contains(target) {
                f.err(
                    out,
                    v.span(),
                    format!(
                        "metric {id}: {name} names unknown metric `{target}`; known metrics: {}",
                        join(ids.iter().copied())
                    ),
                );
            } else if target == id
                || all.get(target).is_some_and(|t| {
                    matches!(t.get_ref().aggregate.get_ref().as_str(), "ratio" | "expr")
                })
            {
                f.err(
                    out,
                    v.span(),
                    format!("metric {id}: {name} must be a metric over records, not a ratio"),
                );
            }
            Some(target.to_string())
        };
        let numerator = side("numerator", &r.numerator);
        let denominator = side("denominator", &r.denominator);
        MetricInput::Ratio {
            numerator: numerator?,
            denominator: denominator?,
        }
    } else {
        let stream = match &r.stream {
            Some(s) => check_stream_ref(f, s, refs, out),
            None => {
                f.err(
                    out,
                    m.span(),
                    format!("metric {id}: needs `stream`, e.g. stripe.invoices"),
                );
                None
            }
        };
        let aggregate = match agg {
            "count" => Some(Aggregate::Count),
            "sum" => need_field(out).map(Aggregate::Sum),
            "avg" => need_field(out).map(Aggregate::Avg),
            "latest" => need_field(out).map(Aggregate::Latest),
            "distinct" => need_field(out).map(Aggregate::Distinct),
            "days_since" => need_field(out).map(Aggregate::DaysSince),
            _ => need_field(out).map(Aggregate::Trend),
        };
        if agg == "trend" && window_days.is_none() {
            f.err(
                out,
                m.span(),
                format!("metric {id}: a trend compares two windows, so it needs window_days"),
            );
        }
        let filter = match r.filter.as_ref() {
            None => Filter::Equals(Vec::new()),
            Some(fl) => match fl.get_ref() {
                RawFilter::Cel(src) => {
                    let spanned = Spanned::new(fl.span(), src.clone());
                    check_cel(
                        f,
                        out,
                        &format!("metric {id}: filter"),
                        &spanned,
                        FILTER_VARIABLES,
                    )
                    .map(Filter::Cel)
                    .unwrap_or(Filter::Equals(Vec::new()))
                }
                RawFilter::Equals(map) => Filter::Equals(
                    map.iter()
                        .filter_map(|(k, v)| match serde_json::to_value(v) {
                            Ok(v) => Some((k.clone(), v)),
                            Err(_) => {
                                f.err(out, fl.span(), format!("metric {id}: filter value for `{k}` must be a string, number or boolean"));
                                None
                            }
                        })
                        .collect(),
                ),
            },
        };
        let map = r.map.as_ref().map(|mp| {
            if mp.get_ref().values().any(|v| !v.is_finite()) {
                f.err(
                    out,
                    mp.span(),
                    format!("metric {id}: map values must be numbers"),
                );
            }
            mp.get_ref()
                .iter()
                .map(|(k, v)| (k.to_lowercase(), *v))
                .collect()
        });
        MetricInput::Records {
            stream: stream?,
            aggregate: aggregate?,
            filter,
            window_days,
            map,
        }
    };
    let score = r.score.as_ref().and_then(|s| check_score(f, id, s, out));
    let bands = r
        .bands
        .as_ref()
        .and_then(|b| check_bands(f, b, margin, &format!("metric {id}: bands"), out));
    let ttl_days = r.ttl_days.as_ref().and_then(|t| {
        if (1..=3650).contains(t.get_ref()) {
            Some(*t.get_ref() as u32)
        } else {
            f.err(
                out,
                t.span(),
                format!("metric {id}: ttl_days must be between 1 and 3650"),
            );
            None
        }
    });
    if out.errors.len() > before {
        return None;
    }
    Some(Metric {
        id: id.to_string(),
        label: r.label.clone().unwrap_or_else(|| id.to_string()),
        input,
        score,
        bands,
        ttl_days,
        advice: r.advice.clone(),
    })
}

fn check_score(
    f: &SourceFile,
    id: &str,
    s: &Spanned<RawScore>,
    out: &mut Diagnostics,
) -> Option<ScoreFn> {
    let r = s.get_ref();
    let (points, linear) = match (&r.linear, &r.steps, &r.percentile) {
        (Some(p), None, None) => (p, true),
        (None, Some(p), None) => (p, false),
        (None, None, Some(p)) => {
            return match p.get_ref().as_str() {
                "higher" => Some(ScoreFn::Percentile {
                    higher_is_better: true,
                }),
                "lower" => Some(ScoreFn::Percentile {
                    higher_is_better: false,
                }),
                other => {
                    f.err(
                        out,
                        p.span(),
                        format!("metric {id}: percentile = `{other}`; use higher or lower (which values are better)"),
                    );
                    None
                }
            };
        }
        _ => {
            f.err(
                out,
                s.span(),
                format!(
                    "metric {id}: score needs exactly one of `linear`, `steps` or `percentile`"
                ),
            );
            return None;
        }
    };
    let min = if linear { 2 } else { 1 };
    if points.len() < min {
        f.err(
            out,
            s.span(),
            format!("metric {id}: score needs at least {min} [value, score] point(s)"),
        );
        return None;
    }
    let mut ok = true;
    for w in points.windows(2) {
        if w[1][0] <= w[0][0] {
            ok = false;
        }
    }
    if !ok {
        f.err(
            out,
            s.span(),
            format!("metric {id}: score points must be in strictly increasing order of value"),
        );
    }
    if points
        .iter()
        .any(|p| !(1.0..=100.0).contains(&p[1]) || !p[0].is_finite())
    {
        f.err(
            out,
            s.span(),
            format!("metric {id}: scores must be between 1 and 100"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let pts = points.iter().map(|p| (p[0], p[1])).collect();
    Some(if linear {
        ScoreFn::Linear(pts)
    } else {
        ScoreFn::Steps(pts)
    })
}

fn check_template(f: &SourceFile, out: &mut Diagnostics, what: &str, src: &Spanned<String>) {
    let env = minijinja::Environment::new();
    match env.template_from_str(src.get_ref()) {
        Ok(t) => {
            let unknown: BTreeSet<String> = t
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !TEMPLATE_VARIABLES.contains(&v.as_str()))
                .collect();
            if !unknown.is_empty() {
                f.err(
                    out,
                    src.span(),
                    format!(
                        "{what}: unknown template variable(s) {}; templates can use {}",
                        join(unknown.iter().map(String::as_str)),
                        join(TEMPLATE_VARIABLES.iter().copied())
                    ),
                );
            }
        }
        Err(e) => f.err(
            out,
            src.span(),
            format!("{what}: template does not compile: {e}"),
        ),
    }
}

fn check_playbook(
    f: &SourceFile,
    id: &str,
    p: &Spanned<RawPlaybook>,
    cats: &BTreeMap<String, Spanned<RawCategory>>,
    out: &mut Diagnostics,
) -> Option<Playbook> {
    let before = out.errors.len();
    let r = p.get_ref();
    let when = match r.when.get_ref().as_str() {
        "overall" => Some(Target::Overall),
        c if cats.contains_key(c) => Some(Target::Category(c.to_string())),
        c => {
            f.err(
                out,
                r.when.span(),
                format!(
                    "playbook {id}: when = `{c}` is neither overall nor a category; categories: {}",
                    join(cats.keys().map(String::as_str))
                ),
            );
            None
        }
    };
    let enters = match r.enters.as_ref().map(|e| e.get_ref().as_str()) {
        None | Some("red") => Some(Band::Red),
        Some("amber") => Some(Band::Amber),
        Some(other) => {
            f.err(
                out,
                r.enters.as_ref().map(|e| e.span()).unwrap_or_default(),
                format!("playbook {id}: enters = `{other}`; use red or amber"),
            );
            None
        }
    };
    let cooldown_days = match &r.cooldown_days {
        Some(c) if !(0..=3650).contains(c.get_ref()) => {
            f.err(
                out,
                c.span(),
                format!("playbook {id}: cooldown_days must be between 0 and 3650"),
            );
            0
        }
        Some(c) => *c.get_ref() as u32,
        None => 30,
    };
    check_template(f, out, &format!("playbook {id} project"), &r.project);
    if let Some(d) = &r.description {
        check_template(f, out, &format!("playbook {id} description"), d);
    }
    let mut tasks = Vec::new();
    for (i, t) in r.tasks.iter().enumerate() {
        let t = t.get_ref();
        let what = format!("playbook {id} task {}", i + 1);
        check_template(f, out, &what, &t.name);
        if let Some(d) = &t.description {
            check_template(f, out, &what, d);
        }
        let for_each = match t.for_each.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("once") => ForEach::Once,
            Some("failing_metric") => ForEach::FailingMetric,
            Some(other) => {
                f.err(
                    out,
                    t.for_each.as_ref().map(|s| s.span()).unwrap_or_default(),
                    format!("{what}: for_each = `{other}`; use once or failing_metric"),
                );
                ForEach::Once
            }
        };
        let due_days = match &t.due_days {
            Some(d) if !(0..=365).contains(d.get_ref()) => {
                f.err(
                    out,
                    d.span(),
                    format!("{what}: due_days must be between 0 and 365"),
                );
                0
            }
            Some(d) => *d.get_ref() as u32,
            None => 7,
        };
        tasks.push(TaskTemplate {
            name: t.name.get_ref().clone(),
            description: t
                .description
                .as_ref()
                .map(|d| d.get_ref().clone())
                .unwrap_or_default(),
            for_each,
            due_days,
        });
    }
    if out.errors.len() > before {
        return None;
    }
    Some(Playbook {
        id: id.to_string(),
        when: when?,
        enters: enters?,
        cooldown_days,
        project: r.project.get_ref().clone(),
        description: r
            .description
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default(),
        tasks,
    })
}

/// `{ red_below, green_from, margin }`; the margin defaults to `default_margin` (the model's).
fn check_bands(
    f: &SourceFile,
    b: &Spanned<RawBands>,
    default_margin: f64,
    what: &str,
    out: &mut Diagnostics,
) -> Option<Bands> {
    let r = b.get_ref();
    let (red, green) = (*r.red_below.get_ref(), *r.green_from.get_ref());
    let mut ok = true;
    if !(1.0 < red && red < green && green <= 100.0) {
        f.err(out, b.span(), format!("{what} need 1 < red_below < green_from <= 100 (got red_below = {red}, green_from = {green})"));
        ok = false;
    }
    let margin = r
        .margin
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(default_margin);
    if !(0.0..=20.0).contains(&margin) {
        f.err(
            out,
            r.margin.as_ref().map(|m| m.span()).unwrap_or(b.span()),
            format!("{what}: margin must be between 0 and 20 points"),
        );
        ok = false;
    }
    ok.then_some(Bands {
        red_below: red,
        green_from: green,
        margin,
    })
}

/// Compiles a CEL expression and checks it only uses the given top-level variables.
fn check_cel(
    f: &SourceFile,
    out: &mut Diagnostics,
    what: &str,
    src: &Spanned<String>,
    allowed: &[&str],
) -> Option<Expr> {
    match Expr::compile(src.get_ref()) {
        Err(e) => {
            f.err(out, src.span(), format!("{what}: {e}"));
            None
        }
        Ok(expr) => {
            let unknown: Vec<String> = expr
                .variables()
                .into_iter()
                .filter(|v| !allowed.contains(&v.as_str()))
                .collect();
            if unknown.is_empty() {
                Some(expr)
            } else {
                f.err(
                    out,
                    src.span(),
                    format!(
                        "{what}: unknown variable(s) {}; this expression can use {}",
                        join(unknown.iter().map(String::as_str)),
                        join(allowed.iter().copied())
                    ),
                );
                None
            }
        }
    }
}

/// Categories nest through `parent`; each category's metrics and sub-categories weigh 100 together, and
/// top-level categories weigh 100 together. Returned depth first, a parent before its children.
fn check_categories(
    f: &SourceFile,
    raw: &RawModel,
    margin: f64,
    out: &mut Diagnostics,
) -> Vec<Category> {
    let cats = &raw.categories;
    // Whole-table problems point at the first category (the implicit [categories] table has no span).
    let cats_span = cats
        .values()
        .next()
        .map(|c| c.span())
        .unwrap_or_else(|| raw.name.span());
    if cats.is_empty() {
        f.err(
            out,
            cats_span.clone(),
            "the model needs at least one category",
        );
        return Vec::new();
    }
    let metric_ids: BTreeSet<&str> = raw.metrics.keys().map(String::as_str).collect();
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (id, c) in cats {
        let c_ref = c.get_ref();
        if *c_ref.weight.get_ref() <= 0.0 {
            f.err(
                out,
                c_ref.weight.span(),
                format!("category {id}: weight must be above 0"),
            );
        }
        match &c_ref.parent {
            None => roots.push(id.as_str()),
            Some(p) if p.get_ref() == id => f.err(
                out,
                p.span(),
                format!("category {id} cannot be its own parent"),
            ),
            Some(p) if !cats.contains_key(p.get_ref()) => f.err(
                out,
                p.span(),
                format!(
                    "category {id}: parent `{}` is not a category; categories: {}",
                    p.get_ref(),
                    join(cats.keys().map(String::as_str))
                ),
            ),
            Some(p) => children.entry(p.get_ref().as_str()).or_default().push(id),
        }
    }
    // Reachability from the roots finds cycles (a → b → a): such categories are never reached.
    let mut order: Vec<(&str, usize)> = Vec::new();
    let mut stack: Vec<(&str, usize)> = roots.iter().rev().map(|r| (*r, 0)).collect();
    while let Some((id, depth)) = stack.pop() {
        order.push((id, depth));
        if let Some(kids) = children.get(id) {
            for k in kids.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
    }
    let reached: BTreeSet<&str> = order.iter().map(|(id, _)| *id).collect();
    for (id, c) in cats {
        if !reached.contains(id.as_str())
            && c.get_ref()
                .parent
                .as_ref()
                .is_some_and(|p| cats.contains_key(p.get_ref()) && p.get_ref() != id)
        {
            f.err(
                out,
                c.span(),
                format!("category {id} is part of a parent cycle; every chain of parents must end at a top-level category"),
            );
        }
    }
    let root_total: f64 = roots
        .iter()
        .map(|r| *cats[*r].get_ref().weight.get_ref())
        .sum();
    if (root_total - 100.0).abs() > WEIGHT_TOLERANCE && !roots.is_empty() {
        f.err(
            out,
            cats_span.clone(),
            format!("top-level category weights add up to {root_total}, they must add up to 100"),
        );
    }
    let mut result = Vec::new();
    for (id, depth) in order {
        let c = &cats[id];
        let c_ref = c.get_ref();
        let empty = BTreeMap::new();
        let metrics = c_ref
            .metrics
            .as_ref()
            .map(|m| m.get_ref())
            .unwrap_or(&empty);
        let kids = children.get(id).cloned().unwrap_or_default();
        let mut members: Vec<(Node, f64)> = Vec::new();
        for (mid, w) in metrics {
            match raw.metrics.get(mid) {
                None => f.err(
                    out,
                    w.span(),
                    format!(
                        "category {id} uses unknown metric `{mid}`; known metrics: {}",
                        join(metric_ids.iter().copied())
                    ),
                ),
                Some(m) if m.get_ref().score.is_none() => f.err(
                    out,
                    w.span(),
                    format!("metric {mid} has no score, so category {id} cannot weigh it"),
                ),
                Some(_) => {}
            }
            if *w.get_ref() <= 0.0 {
                f.err(
                    out,
                    w.span(),
                    format!("weight of {mid} in category {id} must be above 0"),
                );
            }
            members.push((Node::Metric(mid.clone()), *w.get_ref()));
        }
        for k in &kids {
            members.push((
                Node::Category(k.to_string()),
                *cats[*k].get_ref().weight.get_ref(),
            ));
        }
        let sum: f64 = members.iter().map(|(_, w)| w).sum();
        let span = c_ref.metrics.as_ref().map(|m| m.span()).unwrap_or(c.span());
        if members.is_empty() {
            f.err(
                out,
                span,
                format!("category {id} has no metrics and no sub-categories"),
            );
        } else if (sum - 100.0).abs() > WEIGHT_TOLERANCE {
            let what = if kids.is_empty() {
                "metric weights".to_string()
            } else {
                format!(
                    "weights of metrics and sub-categories ({})",
                    kids.join(", ")
                )
            };
            f.err(
                out,
                span,
                format!("{what} in category {id} add up to {sum}, they must add up to 100"),
            );
        }
        for m in &mut members {
            m.1 /= sum.max(f64::MIN_POSITIVE);
        }
        let parent_total = if c_ref.parent.is_none() {
            root_total
        } else {
            100.0
        };
        result.push(Category {
            id: id.to_string(),
            label: c_ref.label.clone().unwrap_or_else(|| id.to_string()),
            weight: *c_ref.weight.get_ref() / parent_total.max(f64::MIN_POSITIVE),
            parent: c_ref.parent.as_ref().map(|p| p.get_ref().clone()),
            depth,
            children: members,
            bands: c_ref
                .bands
                .as_ref()
                .and_then(|b| check_bands(f, b, margin, &format!("category {id}: bands"), out)),
        });
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn check_override(
    f: &SourceFile,
    id: &str,
    o: &Spanned<RawOverride>,
    raw: &RawModel,
    stages: &[String],
    segments: &[String],
    margin: f64,
    out: &mut Diagnostics,
) -> Option<Override> {
    let before = out.errors.len();
    let r = o.get_ref();
    if r.stage.is_none() && r.segment.is_none() {
        f.err(
            out,
            o.span(),
            format!("override {id} needs `stage`, `segment` or both, to say which accounts it applies to"),
        );
    }
    let acc = raw.accounts.get_ref();
    for (what, value, known, field) in [
        ("stage", &r.stage, stages, &acc.stage_field),
        ("segment", &r.segment, segments, &acc.segment_field),
    ] {
        let Some(v) = value else { continue };
        if field.is_none() {
            f.err(
                out,
                v.span(),
                format!("override {id}: {what} needs accounts.{what}_field, the account field that holds it"),
            );
        } else if !known.is_empty() && !known.iter().any(|k| k.eq_ignore_ascii_case(v.get_ref())) {
            f.err(
                out,
                v.span(),
                format!(
                    "override {id}: {what} `{}` is not one of accounts.{what}s: {}",
                    v.get_ref(),
                    join(known.iter().map(String::as_str))
                ),
            );
        }
    }
    let mut weights = BTreeMap::new();
    if let Some(w) = &r.weights {
        for (node, value) in w.get_ref() {
            if !raw.categories.contains_key(node) && !raw.metrics.contains_key(node) {
                f.err(
                    out,
                    value.span(),
                    format!("override {id}: weights name `{node}`, which is neither a category nor a metric"),
                );
            } else if raw.metrics.contains_key(node)
                && !raw.categories.values().any(|c| {
                    c.get_ref()
                        .metrics
                        .as_ref()
                        .is_some_and(|m| m.get_ref().contains_key(node))
                })
            {
                f.err(
                    out,
                    value.span(),
                    format!("override {id}: metric {node} is in no category, so it has no weight to override"),
                );
            }
            if !(*value.get_ref() >= 0.0 && value.get_ref().is_finite()) {
                f.err(
                    out,
                    value.span(),
                    format!("override {id}: weight of {node} must be 0 or more (0 leaves it out)"),
                );
            }
            weights.insert(node.clone(), *value.get_ref());
        }
    }
    let mut scores = BTreeMap::new();
    for (mid, s) in &r.scores {
        if !raw.metrics.contains_key(mid) {
            f.err(
                out,
                s.span(),
                format!("override {id}: scores names unknown metric `{mid}`"),
            );
            continue;
        }
        if let Some(sf) = check_score(f, &format!("{mid} (override {id})"), s, out) {
            scores.insert(mid.clone(), sf);
        }
    }
    let bands = r
        .bands
        .as_ref()
        .and_then(|b| check_bands(f, b, margin, &format!("override {id}: bands"), out));
    let benchmark = r.benchmark.as_ref().map(|b| {
        if !(1.0..=100.0).contains(b.get_ref()) {
            f.err(
                out,
                b.span(),
                format!("override {id}: benchmark is a score between 1 and 100"),
            );
        }
        *b.get_ref()
    });
    if out.errors.len() > before {
        return None;
    }
    Some(Override {
        id: id.to_string(),
        stage: r.stage.as_ref().map(|s| s.get_ref().clone()),
        segment: r.segment.as_ref().map(|s| s.get_ref().clone()),
        weights,
        scores,
        bands,
        benchmark,
    })
}

fn check_risk(
    f: &SourceFile,
    id: &str,
    r: &Spanned<RawRisk>,
    metric_ids: &BTreeSet<&str>,
    out: &mut Diagnostics,
) -> Option<RiskRule> {
    let raw = r.get_ref();
    let kind = match raw.kind.get_ref().as_str() {
        "hard" => Some(RiskKind::Hard),
        "soft" => Some(RiskKind::Soft),
        "advocacy" => Some(RiskKind::Advocacy),
        other => {
            f.err(
                out,
                raw.kind.span(),
                format!(
                    "risk {id}: kind `{other}`; use {}",
                    join(RiskKind::NAMES.iter().copied())
                ),
            );
            None
        }
    };
    let mut check = |what: &str, src: &Spanned<String>| -> Option<Expr> {
        let e = check_cel(f, out, &format!("risk {id}: {what}"), src, RULE_VARIABLES)?;
        let unknown: Vec<String> = e
            .members_of("m")
            .into_iter()
            .filter(|m| !metric_ids.contains(m.as_str()))
            .collect();
        if !unknown.is_empty() {
            f.err(
                out,
                src.span(),
                format!(
                    "risk {id}: {what} uses unknown metric(s) {}; known metrics: {}",
                    join(unknown.iter().map(String::as_str)),
                    join(metric_ids.iter().copied())
                ),
            );
            return None;
        }
        Some(e)
    };
    let when = check("when", &raw.when);
    let clear_when = match &raw.clear_when {
        Some(c) => Some(check("clear_when", c)?),
        None => None,
    };
    Some(RiskRule {
        id: id.to_string(),
        label: raw.label.clone().unwrap_or_else(|| id.to_string()),
        kind: kind?,
        when: when?,
        clear_when,
        advice: raw.advice.clone(),
    })
}
