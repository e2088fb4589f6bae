//! Export connector files (`role = "export"`): kind, `[params]` and the output folder, checked purely.
//!
//! An export has no base URL, auth or streams, so it has its own raw type and its own validated type
//! (`ExportConfig`). Whether the folder exists and is writable is an effect, not checked here: the
//! `validate` command asks `crate::pipeline::check_exports` for that after this pure pass.

use std::ops::Range;
use std::path::Path;

use super::{join, resolve_path, valid_id, Diagnostics, SourceFile};
use crate::config::{raw::RawExport, Catalog, ExportConfig, DEFAULT_FILE_STEM};
use crate::vocab::Role;

pub(super) fn check_export(
    f: &SourceFile,
    raw: RawExport,
    base: &Path,
    catalog: &Catalog,
    out: &mut Diagnostics,
) -> Option<ExportConfig> {
    let before = out.errors.len();
    let id = super::stem(&f.path);
    if !valid_id(&id) {
        out.file_error(
            &f.path,
            format!(
                "connector id `{id}` (the file name) must be lowercase letters, digits, `_` or `-`"
            ),
        );
    }
    let spec = catalog.get(raw.kind.get_ref());
    match spec {
        None => f.err(
            out,
            raw.kind.span(),
            format!(
                "unknown connector kind `{}`; export kinds: {}",
                raw.kind.get_ref(),
                join(catalog.names_with_role(Role::Export))
            ),
        ),
        Some(spec) if spec.role != Role::Export => f.err(
            out,
            raw.role.span(),
            format!("kind {} is a {}, not an export", spec.name, spec.role),
        ),
        Some(_) => {}
    }
    let params_span = raw.params.span();
    let params = raw.params.into_inner();
    if let Some(spec) = spec.filter(|s| s.role == Role::Export) {
        if let Err(e) = (spec.parse_params)(&params) {
            f.err(out, params_span.clone(), format!("[params]: {e}"));
        }
    }
    // The kind's `parse_params` has already reported a missing or malformed `directory`.
    let directory = match params.get("directory") {
        Some(toml::Value::String(d)) if !d.trim().is_empty() && !d.contains('\0') => {
            Some(resolve_path(base, d))
        }
        _ if out.errors.len() > before => None,
        _ => {
            f.err(
                out,
                params_span.clone(),
                "[params] needs `directory`, a folder path (absolute, or relative to the daemon config's folder)",
            );
            None
        }
    };
    if out.errors.len() > before {
        return None;
    }
    Some(ExportConfig {
        id,
        kind: spec?.name.to_string(),
        enabled: raw.enabled.unwrap_or(true),
        directory: directory?,
        directory_line: key_line(f, &params_span, "directory"),
        params,
        file: f.path.clone(),
    })
}

/// The line of `key = …` inside the `[params]` table's span: `toml::Table` keeps no spans of its own.
fn key_line(f: &SourceFile, span: &Range<usize>, key: &str) -> Option<usize> {
    let end = span.end.min(f.text.len());
    let start = span.start.min(end);
    let mut offset = start;
    for line in f.text[start..end].split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(f.line(offset));
            }
        }
        offset += line.len();
    }
    None
}

/// Two enabled exports writing the same files into the same folder would replace each other's files
/// and rotate each other's copies away: the second one is reported.
pub(super) fn check_distinct(exports: &[ExportConfig], out: &mut Diagnostics) {
    let mut seen: Vec<(&Path, String, &ExportConfig)> = Vec::new();
    for e in exports.iter().filter(|e| e.enabled) {
        let stem = match e.params.get("file_stem") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => DEFAULT_FILE_STEM.to_string(),
        };
        if let Some((_, _, first)) = seen
            .iter()
            .find(|(d, s, _)| *d == e.directory.as_path() && *s == stem)
        {
            out.push(crate::config::Diagnostic {
                file: e.file.clone(),
                line: e.directory_line,
                message: format!(
                    "export {} writes {stem}.* into {}, as export {} already does; give one of them another file_stem or directory",
                    e.id,
                    e.directory.display(),
                    first.id
                ),
            });
        }
        seen.push((e.directory.as_path(), stem, e));
    }
}
