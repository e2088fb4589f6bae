//! Loading and validation: files → raw types → every problem found, or the validated `Config`.
//!
//! Pure apart from reading the config files themselves and checking whether secret references resolve on this
//! machine (which only warns: under systemd the credentials exist only at run time). No network, and no
//! secret value is ever read into a message. Each check names its file and line.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use toml::Spanned;

mod categories;
mod export;
mod model;
mod oauth2;
mod rules;

use super::raw::*;
use super::*;
use crate::secrets::SecretRef;
use crate::vocab::{AuthScheme, Role};

/// Loads and validates everything reachable from the daemon config at `path`.
/// `catalog` is every kind a connector file may name (`connector::kinds::catalog()`).
pub fn load(path: &Path, catalog: &Catalog) -> Result<Config, ConfigErrors> {
    load_with_model(path, None, catalog)
}

/// Like [`load`], with the health model read from `model` instead of the file the config names: a
/// candidate (shadow) model is validated against the same connectors and field maps.
pub fn load_with_model(
    path: &Path,
    model: Option<&Path>,
    catalog: &Catalog,
) -> Result<Config, ConfigErrors> {
    load_inner(path, model, true, catalog)
}

/// A candidate model for reading only (a backtest): validated against the same sources, but the sinks'
/// field maps are not held against its categories, and every sink is disabled, so nothing can be written
/// with a model whose categories the sinks were not set up for.
pub fn load_for_reading(
    path: &Path,
    model: &Path,
    catalog: &Catalog,
) -> Result<Config, ConfigErrors> {
    let mut config = load_inner(path, Some(model), false, catalog)?;
    for c in &mut config.connectors {
        if c.role == Role::Sink {
            c.enabled = false;
        }
    }
    Ok(config)
}

fn load_inner(
    path: &Path,
    model: Option<&Path>,
    check_sink_fields: bool,
    catalog: &Catalog,
) -> Result<Config, ConfigErrors> {
    let mut out = Diagnostics::default();
    let daemon_file = SourceFile::read(path).map_err(|d| ConfigErrors(vec![d]))?;
    let raw: RawDaemon = daemon_file.parse().map_err(|d| ConfigErrors(vec![d]))?;
    let mut daemon = check_daemon(&daemon_file, raw, &mut out);
    if let Some(m) = model {
        daemon.model_path = m.to_path_buf();
    }

    let mut connectors = Vec::new();
    let mut exports = Vec::new();
    let export_base = daemon
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut field_refs = Vec::new();
    // Connectors whose files exist but are broken: the model's references to them are not reported again.
    let mut broken = BTreeSet::new();
    match list_toml_files(&daemon.connectors_dir) {
        Ok(files) => {
            if files.is_empty() {
                out.file_error(
                    &daemon.connectors_dir,
                    "no connector files (*.toml) in this folder",
                );
            }
            for file in files {
                // An export file has no base_url or auth: it is read as its own type.
                if let Ok(f) = SourceFile::read(&file) {
                    let head = f.parse::<RawRole>().ok();
                    let role = head.as_ref().and_then(|r| r.role.as_deref());
                    let kind = head.as_ref().and_then(|r| r.kind.as_ref());
                    if let Some(k) = kind.filter(|k| {
                        role != Some("export")
                            && catalog
                                .get(k.get_ref())
                                .is_some_and(|s| s.role == Role::Export)
                    }) {
                        f.err(
                            &mut out,
                            k.span(),
                            format!(
                                "kind {} writes files after each scoring run: set role = \"export\" (an export has no base_url or auth)",
                                k.get_ref()
                            ),
                        );
                        broken.insert(stem(&file));
                        continue;
                    }
                    if role == Some("export") {
                        match f.parse::<RawExport>() {
                            Ok(raw) => {
                                if let Some(e) =
                                    export::check_export(&f, raw, &export_base, catalog, &mut out)
                                {
                                    exports.push(e);
                                }
                            }
                            Err(d) => out.push(d),
                        }
                        continue;
                    }
                }
                match SourceFile::read(&file)
                    .and_then(|f| f.parse::<RawConnector>().map(|r| (f, r)))
                {
                    Ok((f, raw)) => {
                        match check_connector(&f, raw, catalog, &mut out, &mut field_refs) {
                            Some(c) => connectors.push(c),
                            None => {
                                broken.insert(stem(&file));
                            }
                        }
                    }
                    Err(d) => {
                        broken.insert(stem(&file));
                        out.push(d)
                    }
                }
            }
        }
        Err(d) => out.push(d),
    }

    let model = match SourceFile::read(&daemon.model_path)
        .and_then(|f| f.parse::<RawModel>().map(|r| (f, r)))
    {
        Ok((f, raw)) => model::check_model(&f, raw, &connectors, &broken, &mut out),
        Err(d) => {
            out.push(d);
            None
        }
    };

    export::check_distinct(&exports, &mut out);
    if let Some(model) = model.as_ref().filter(|_| check_sink_fields) {
        for r in field_refs {
            if model.category(&r.category).is_none() {
                out.push(Diagnostic {
                    file: r.file,
                    line: Some(r.line),
                    message: format!(
                        "fields.{}.{} names a category the health model does not have; known: {}",
                        r.table,
                        r.category,
                        join(model.categories.iter().map(|c| c.id.as_str()))
                    ),
                });
            }
        }
    }
    if !connectors.iter().any(|c| c.role == Role::Sink && c.enabled)
        && !exports.iter().any(|e: &ExportConfig| e.enabled)
        && out.errors.is_empty()
    {
        out.warn(
            &daemon.connectors_dir,
            None,
            "no enabled sink: scores are computed but written nowhere",
        );
    }

    out.errors
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    match (out.errors.is_empty(), model) {
        (true, Some(model)) => Ok(Config {
            daemon,
            connectors,
            exports,
            model,
            warnings: out.warnings,
        }),
        _ => Err(ConfigErrors(out.errors)),
    }
}

/// Checks a six-field cron expression (seconds first), as tokio-cron-scheduler runs them.
pub fn check_cron(expr: &str) -> Result<(), String> {
    let with_seconds = CronParser::builder().seconds(Seconds::Required).build();
    match with_seconds.parse(expr) {
        Ok(_) => Ok(()),
        Err(e) => {
            let five = CronParser::builder().seconds(Seconds::Disallowed).build();
            if five.parse(expr).is_ok() {
                Err(format!(
                    "cron expression `{expr}` has 5 fields, but schedules need 6 with seconds first, e.g. `0 {expr}`"
                ))
            } else {
                Err(format!("bad cron expression `{expr}`: {e}"))
            }
        }
    }
}

/// Three intervals of the schedule (a source may miss two runs before it is stale), or a day for a
/// connector that only runs on demand or whose schedule does not parse (already reported).
fn default_max_age(schedule: Option<&str>) -> Duration {
    let day = Duration::from_secs(24 * 3600);
    let Some(expr) = schedule else {
        return day;
    };
    let parser = CronParser::builder().seconds(Seconds::Required).build();
    let Ok(cron) = parser.parse(expr) else {
        return day;
    };
    // Any fixed start works: the interval between two consecutive runs is what matters.
    let start = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
    let first = cron.find_next_occurrence(&start, false);
    let second = first
        .as_ref()
        .ok()
        .and_then(|t| cron.find_next_occurrence(t, false).ok());
    match (first, second) {
        (Ok(a), Some(b)) => (b - a).to_std().map(|d| d * 3).unwrap_or(day),
        _ => day,
    }
}

#[derive(Default)]
pub(super) struct Diagnostics {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    fn push(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }

    fn file_error(&mut self, file: &Path, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        });
    }

    fn warn(&mut self, file: &Path, line: Option<usize>, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        });
    }
}

/// A config file's text, kept so spans can be turned into line numbers.
pub(super) struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    fn read(path: &Path) -> Result<SourceFile, Diagnostic> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(SourceFile {
                path: path.to_path_buf(),
                text,
            }),
            Err(e) => Err(Diagnostic {
                file: path.to_path_buf(),
                line: None,
                message: format!("cannot read file: {}", io_reason(&e)),
            }),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        toml::from_str(&self.text).map_err(|e| Diagnostic {
            file: self.path.clone(),
            line: e.span().map(|s| self.line(s.start)),
            message: e.message().trim_end_matches('\n').replace('\n', "; "),
        })
    }

    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn err(&self, out: &mut Diagnostics, span: Range<usize>, message: impl Into<String>) {
        out.push(Diagnostic {
            file: self.path.clone(),
            line: Some(self.line(span.start)),
            message: message.into(),
        });
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

fn list_toml_files(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let entries = std::fs::read_dir(dir).map_err(|e| Diagnostic {
        file: dir.to_path_buf(),
        line: None,
        message: format!("cannot read connectors folder: {}", io_reason(&e)),
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        // A FIFO or device named *.toml would block the read (or never end): refuse it by name.
        // `metadata` follows symlinks, so a link to a regular file is fine.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(_) => {
                return Err(Diagnostic {
                    file: path,
                    line: None,
                    message: "is not a regular file; a connector file must be one".into(),
                })
            }
            Err(e) => {
                return Err(Diagnostic {
                    file: path,
                    line: None,
                    message: format!("cannot read connector file: {}", io_reason(&e)),
                })
            }
        }
    }
    files.sort();
    Ok(files)
}

pub(super) fn join<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    let joined = if p.is_absolute() { p } else { base.join(p) };
    // Lexical clean-up of `a/../b` so messages name `connectors/x.toml`, not `config/../connectors/x.toml`.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir
                if out.file_name().is_some() && !out.ends_with("..") =>
            {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

fn check_daemon(f: &SourceFile, raw: RawDaemon, out: &mut Diagnostics) -> DaemonConfig {
    if *raw.version.get_ref() != 1 {
        f.err(
            out,
            raw.version.span(),
            format!(
                "unsupported version {}; this healthsync reads version 1",
                raw.version.get_ref()
            ),
        );
    }
    let base = f.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let listen = raw.listen.and_then(|l| match l.get_ref().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            f.err(
                out,
                l.span(),
                format!(
                    "listen = `{}` is not an address like 127.0.0.1:9464",
                    l.get_ref()
                ),
            );
            None
        }
    });
    let log_format = match raw.log.format.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("auto") => LogFormat::Auto,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some("journald") => LogFormat::Journald,
        Some(other) => {
            let span = raw
                .log
                .format
                .as_ref()
                .map(|s| s.span())
                .unwrap_or_default();
            f.err(
                out,
                span,
                format!("unknown log format `{other}`; use auto, text, json or journald"),
            );
            LogFormat::Auto
        }
    };
    let log_level = raw
        .log
        .level
        .map(|l| l.into_inner())
        .unwrap_or_else(|| "info".into());
    let mut schedule = |job: RawJob, default: &str| match job.schedule {
        Some(s) => {
            if let Err(e) = check_cron(s.get_ref()) {
                f.err(out, s.span(), e);
            }
            s.into_inner()
        }
        None => default.to_string(),
    };
    let scoring_schedule = schedule(raw.scoring, "0 */15 * * * *");
    let delivery_schedule = schedule(raw.delivery, "30 */5 * * * *");
    let mut seconds = |v: Option<Spanned<i64>>, key: &str, max: i64, default: u64| match v {
        Some(v) if !(0..=max).contains(v.get_ref()) => {
            f.err(out, v.span(), format!("{key} must be between 0 and {max}"));
            Duration::from_secs(default)
        }
        Some(v) => Duration::from_secs(*v.get_ref() as u64),
        None => Duration::from_secs(default),
    };
    let jitter = seconds(raw.jitter_secs, "jitter_secs", 3600, 10);
    let shutdown_grace = seconds(raw.shutdown_grace_secs, "shutdown_grace_secs", 600, 20);
    DaemonConfig {
        path: f.path.clone(),
        state_dir: resolve_path(&base, raw.state_dir.get_ref()),
        connectors_dir: resolve_path(&base, raw.connectors_dir.get_ref()),
        model_path: resolve_path(&base, raw.model.get_ref()),
        listen,
        log_format,
        log_level,
        scoring_schedule,
        delivery_schedule,
        jitter,
        shutdown_grace,
    }
}

struct FieldRef {
    file: PathBuf,
    line: usize,
    /// `categories` or `category_bands`.
    table: &'static str,
    category: String,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn check_connector(
    f: &SourceFile,
    raw: RawConnector,
    catalog: &Catalog,
    out: &mut Diagnostics,
    field_refs: &mut Vec<FieldRef>,
) -> Option<ConnectorConfig> {
    let before = out.errors.len();
    let id = f
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    if !valid_id(&id) {
        out.file_error(
            &f.path,
            format!(
                "connector id `{id}` (the file name) must be lowercase letters, digits, `_` or `-`"
            ),
        );
    }
    let spec: Option<&KindSpec> = catalog.get(raw.kind.get_ref());
    if spec.is_none() {
        f.err(
            out,
            raw.kind.span(),
            format!(
                "unknown connector kind `{}`; known kinds: {}",
                raw.kind.get_ref(),
                join(catalog.iter().map(|k| k.name))
            ),
        );
    }
    let role = match raw.role.get_ref().as_str() {
        "source" => Some(Role::Source),
        "sink" => Some(Role::Sink),
        other => {
            f.err(
                out,
                raw.role.span(),
                format!("unknown role `{other}`; use source, sink or export"),
            );
            None
        }
    };
    if let (Some(spec), Some(role)) = (spec, role) {
        if spec.role != role {
            f.err(
                out,
                raw.role.span(),
                format!("kind {} is a {}, not a {role}", spec.name, spec.role),
            );
        }
    }
    if let Some(s) = &raw.schedule {
        if let Err(e) = check_cron(s.get_ref()) {
            f.err(out, s.span(), e);
        }
    }
    let base_url = match reqwest::Url::parse(raw.base_url.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            f.err(
                out,
                raw.base_url.span(),
                "base_url must be an http or https URL with a host",
            );
            None
        }
        Err(e) => {
            f.err(
                out,
                raw.base_url.span(),
                format!("base_url is not a URL: {e}"),
            );
            None
        }
    };
    let auth = check_auth(f, raw.auth, spec, out);
    let rate_limit = match &raw.rate_limit {
        Some(rl) => {
            let (req, per) = (
                *rl.get_ref().requests.get_ref(),
                *rl.get_ref().per_secs.get_ref(),
            );
            if !(1..=1_000_000).contains(&req) || !(1..=86_400).contains(&per) {
                f.err(out, rl.span(), "rate_limit needs requests between 1 and 1000000 and per_secs between 1 and 86400");
            }
            RateLimit::per_secs(req.clamp(1, 1_000_000) as u32, per.clamp(1, 86_400) as u64)
        }
        None => spec
            .map(|s| s.default_rate_limit)
            .unwrap_or(RateLimit::per_secs(1, 1)),
    };
    let streams = check_streams(f, raw.streams.as_ref(), spec, role, out);
    let page_size = raw.page_size.as_ref().map(|p| {
        if !(1..=10_000).contains(p.get_ref()) {
            f.err(out, p.span(), "page_size must be between 1 and 10000");
        }
        (*p.get_ref()).clamp(1, 10_000) as u32
    });
    let timeout = match &raw.timeout_secs {
        Some(t) => {
            if !(1..=600).contains(t.get_ref()) {
                f.err(out, t.span(), "timeout_secs must be between 1 and 600");
            }
            Duration::from_secs((*t.get_ref()).clamp(1, 600) as u64)
        }
        None => Duration::from_secs(30),
    };
    let max_age = match &raw.max_age_mins {
        Some(m) => {
            if !(1..=525_600).contains(m.get_ref()) {
                f.err(
                    out,
                    m.span(),
                    "max_age_mins must be between 1 and 525600 (a year)",
                );
            }
            Duration::from_secs((*m.get_ref()).clamp(1, 525_600) as u64 * 60)
        }
        None => default_max_age(raw.schedule.as_ref().map(|s| s.get_ref().as_str())),
    };
    let params = spec.and_then(|spec| check_params(f, raw.params, spec, out));
    let fields = check_fields(f, raw.fields, role, field_refs, out);
    if let Some(auth) = &auth {
        for (_, r) in auth.secret_refs() {
            if let Err(e) = r.resolve() {
                out.warn(
                    &f.path,
                    None,
                    format!("{e} (needed when this connector runs)"),
                );
            }
        }
    }
    if out.errors.len() > before {
        return None;
    }
    Some(ConnectorConfig {
        id,
        kind: spec?.name.to_string(),
        role: role?,
        enabled: raw.enabled.unwrap_or(true),
        schedule: raw.schedule.map(Spanned::into_inner),
        base_url: base_url?,
        auth: auth?,
        rate_limit,
        streams,
        page_size,
        timeout,
        max_age,
        params: params?,
        fields,
        file: f.path.clone(),
    })
}

impl SourceFile {
    fn file_error_line(&self, out: &mut Diagnostics, line: Option<usize>, message: String) {
        out.push(Diagnostic {
            file: self.path.clone(),
            line,
            message,
        });
    }
}

/// A connector's `streams`: each one the kind has, none twice, the kind's defaults when left out; a sink
/// has none.
fn check_streams(
    f: &SourceFile,
    raw_streams: Option<&Spanned<Vec<Spanned<String>>>>,
    spec: Option<&KindSpec>,
    role: Option<Role>,
    out: &mut Diagnostics,
) -> Vec<String> {
    let mut streams = Vec::new();
    if let Some(list) = raw_streams {
        if list.get_ref().is_empty() {
            f.err(
                out,
                list.span(),
                "streams is empty; leave it out to sync the kind's default streams",
            );
        }
        for s in list.get_ref() {
            if let Some(spec) = spec {
                if !spec.streams.contains(&s.get_ref().as_str()) {
                    f.err(
                        out,
                        s.span(),
                        format!(
                            "kind {} has no stream `{}`; it has: {}",
                            spec.name,
                            s.get_ref(),
                            join(spec.streams.iter().copied())
                        ),
                    );
                }
            }
            if streams.contains(s.get_ref()) {
                f.err(
                    out,
                    s.span(),
                    format!("stream `{}` is listed twice", s.get_ref()),
                );
            }
            streams.push(s.get_ref().clone());
        }
    } else if let Some(spec) = spec {
        streams = spec.default_streams.iter().map(|s| s.to_string()).collect();
    }
    if role == Some(Role::Sink) && raw_streams.is_some() {
        f.err(
            out,
            raw_streams.map(|s| s.span()).unwrap_or_default(),
            "a sink has no streams",
        );
    }
    streams
}

/// A connector's `[params]`, parsed once by its kind; the kind's message names what is wrong.
fn check_params(
    f: &SourceFile,
    raw_params: Option<Spanned<toml::Table>>,
    spec: &KindSpec,
    out: &mut Diagnostics,
) -> Option<Params> {
    let (span, table) = match raw_params {
        Some(p) => (Some(p.span()), p.into_inner()),
        None => (None, toml::Table::new()),
    };
    match (spec.parse_params)(&table) {
        Ok(params) => Some(params),
        Err(e) => {
            let message = format!("[params]: {e}");
            match span {
                Some(span) => f.err(out, span, message),
                None => f.file_error_line(out, None, message),
            }
            None
        }
    }
}

/// A sink's `[fields]`: which platform field receives which health output. Category references are
/// collected in `field_refs`, to be held against the model once it is loaded.
fn check_fields(
    f: &SourceFile,
    raw_fields: Option<Spanned<RawFieldMap>>,
    role: Option<Role>,
    field_refs: &mut Vec<FieldRef>,
    out: &mut Diagnostics,
) -> FieldMap {
    match raw_fields {
        Some(fm) => {
            if role == Some(Role::Source) {
                f.err(
                    out,
                    fm.span(),
                    "[fields] maps health outputs to platform fields; only sinks have it",
                );
            }
            let fm = fm.into_inner();
            for (table, map) in [
                ("categories", &fm.categories),
                ("category_bands", &fm.category_bands),
            ] {
                for (cat, target) in map {
                    field_refs.push(FieldRef {
                        file: f.path.clone(),
                        line: f.line(target.span().start),
                        table,
                        category: cat.clone(),
                    });
                }
            }
            FieldMap {
                score: fm.score.map(Spanned::into_inner),
                band: fm.band.map(Spanned::into_inner),
                coverage: fm.coverage.map(Spanned::into_inner),
                top_risk: fm.top_risk.map(Spanned::into_inner),
                trend: fm.trend.map(Spanned::into_inner),
                computed_at: fm.computed_at.map(Spanned::into_inner),
                categories: fm
                    .categories
                    .into_iter()
                    .map(|(k, v)| (k, v.into_inner()))
                    .collect(),
                category_bands: fm
                    .category_bands
                    .into_iter()
                    .map(|(k, v)| (k, v.into_inner()))
                    .collect(),
            }
        }
        None => FieldMap::default(),
    }
}

fn check_auth(
    f: &SourceFile,
    raw: Spanned<RawAuth>,
    spec: Option<&KindSpec>,
    out: &mut Diagnostics,
) -> Option<AuthConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let before = out.errors.len();
    let scheme = AuthScheme::ALL
        .iter()
        .find(|(n, _)| n == raw.scheme.get_ref())
        .map(|(_, s)| *s);
    match (scheme, spec) {
        (None, _) => f.err(
            out,
            raw.scheme.span(),
            format!(
                "unknown auth scheme `{}`; use {}",
                raw.scheme.get_ref(),
                join(AuthScheme::ALL.iter().map(|(n, _)| *n))
            ),
        ),
        (Some(s), Some(spec)) if !spec.auth.contains(&s) => f.err(
            out,
            raw.scheme.span(),
            format!(
                "kind {} does not take auth scheme {}; it takes: {}",
                spec.name,
                s.name(),
                join(spec.auth.iter().map(|s| s.name()))
            ),
        ),
        _ => {}
    }
    let mut secret = |name: &str, v: &Option<Spanned<String>>| -> Option<SecretRef> {
        let v = v.as_ref()?;
        match SecretRef::parse(v.get_ref()) {
            Ok(r) => Some(r),
            Err(e) => {
                f.err(out, v.span(), format!("auth.{name}: {e}"));
                None
            }
        }
    };
    let token = secret("token", &raw.token);
    let username = secret("username", &raw.username);
    let password = secret("password", &raw.password);
    let needs = |present: bool, key: &str, example: &str, out: &mut Diagnostics| {
        if !present {
            f.err(
                out,
                span.clone(),
                format!(
                    "auth scheme {} needs `{key}`, a secret reference such as {example}",
                    raw.scheme.get_ref()
                ),
            );
        }
    };
    match scheme {
        Some(AuthScheme::Bearer) => needs(raw.token.is_some(), "token", "env:API_TOKEN", out),
        Some(AuthScheme::Basic) => needs(raw.username.is_some(), "username", "env:API_KEY", out),
        Some(AuthScheme::ApiKeyHeader) => {
            needs(raw.token.is_some(), "token", "env:API_KEY", out);
            if raw.header.is_none() {
                f.err(out, span.clone(), "auth scheme api_key_header needs `header`, the header name that carries the key");
            }
        }
        Some(AuthScheme::ApiKeyQuery) => {
            needs(raw.token.is_some(), "token", "env:API_KEY", out);
            if raw.param.is_none() {
                f.err(out, span.clone(), "auth scheme api_key_query needs `param`, the query parameter that carries the key");
            }
        }
        Some(AuthScheme::OAuth2ClientCredentials | AuthScheme::OAuth2RefreshToken) => {}
        None => {}
    }
    let oauth2 = oauth2::check_oauth2(f, &raw, scheme, span.clone(), out);
    if out.errors.len() > before {
        return None;
    }
    Some(AuthConfig {
        scheme: scheme?,
        token,
        username,
        password,
        header: raw.header.map(Spanned::into_inner),
        param: raw.param.map(Spanned::into_inner),
        oauth2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_max_age_is_three_schedule_intervals() {
        assert_eq!(
            default_max_age(Some("0 */30 * * * *")),
            Duration::from_secs(90 * 60)
        );
        assert_eq!(
            default_max_age(Some("*/3 * * * * *")),
            Duration::from_secs(9)
        );
        assert_eq!(
            default_max_age(Some("0 0 6 * * *")),
            Duration::from_secs(3 * 24 * 3600)
        );
        // On demand, or a schedule already reported as broken: a day.
        assert_eq!(default_max_age(None), Duration::from_secs(24 * 3600));
        assert_eq!(
            default_max_age(Some("nope")),
            Duration::from_secs(24 * 3600)
        );
    }
}
