//! Tidy checks over the source tree (rust-analyzer style): every Rust file opens with a `//!` paragraph,
//! the layers of ARCHITECTURE.md hold (no module imports one on its own floor or above), and the
//! dependency rules hold (sled only in the store, reqwest clients and exposed secrets only in http).
//!
//! Every file is read whole. Test code is set apart precisely rather than by cutting a file at its first
//! `#[cfg(test)]`: an item under `#[cfg(test)]` (an inline `mod tests { … }`, a `use`, a function) is
//! removed by matching its braces, and a file declared with `#[cfg(test)] mod name;` is test-only as a
//! whole. Comments and string literals are blanked before any rule looks for a path, so a doc comment
//! that names a module is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn sources(dirs: &[&str]) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&crate::support::repo().join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect()
}

/// `text` with every comment removed and every string and char literal emptied, lengths kept apart from
/// that (newlines stay, so nothing shifts lines). Handles nested block comments, raw strings with any
/// number of `#`, byte strings, escapes, and tells a char literal from a lifetime.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r')))
            && !prev_is_ident(b, i)
            && raw_string_start(b, if c == b'b' { i + 1 } else { i }).is_some()
        {
            let r = if c == b'b' { i + 1 } else { i };
            let hashes = raw_string_start(b, r).unwrap_or(0);
            i = r + 1 + hashes + 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while i < b.len() && !b[i..].starts_with(&close) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if b.get(i) == Some(&b'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal closes within a few bytes ('a', '\n', '\u{1F600}'); a lifetime does not.
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                let ch_len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + ch_len]);
            i += ch_len;
        }
    }
    out
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// At `r`, an `r"`, `r#"`, `r##"`… raw string opener: its number of `#`.
fn raw_string_start(b: &[u8], r: usize) -> Option<usize> {
    let hashes = b[r + 1..].iter().take_while(|&&x| x == b'#').count();
    (b.get(r + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// What a file's code looks like with its `#[cfg(test)]` items removed, and the names of the child
/// modules it declares test-only (`#[cfg(test)] mod name;`).
struct Split {
    code: String,
    test_children: Vec<String>,
}

fn without_test_items(code: &str) -> Split {
    let mut out = String::with_capacity(code.len());
    let mut test_children = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at the first `;` before any `{`, or at the `}` matching its first `{`.
        let semi = item.find(';');
        let brace = item.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (Some(s), None) => s + 1,
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (j, ch) in item[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => item.len(),
        };
        let decl = item[..end].trim();
        let decl = decl.strip_prefix("pub ").unwrap_or(decl);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
            test_children.push(name.trim().to_string());
        }
        // Keep the line count: later rules report nothing by line, but a reader of a failure might.
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    Split {
        code: out,
        test_children,
    }
}

/// Where a child module `name` declared in `file` lives: beside a `mod.rs`/`lib.rs`/`main.rs`, or in the
/// folder named after any other file.
fn child_paths(file: &Path, name: &str) -> [PathBuf; 2] {
    let dir = file.parent().unwrap_or(Path::new(""));
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let base = if matches!(stem, "mod" | "lib" | "main") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
}

/// Every file of `dirs` with its non-test code (comments and literals blanked, test items and test-only
/// files removed), by path relative to the repository.
fn non_test_code(dirs: &[&str]) -> BTreeMap<String, String> {
    let files = sources(dirs);
    let mut split: BTreeMap<PathBuf, Split> = files
        .iter()
        .map(|(p, t)| (p.clone(), without_test_items(&code_only(t))))
        .collect();
    let mut test_only: BTreeSet<PathBuf> = split
        .iter()
        .flat_map(|(p, s)| {
            s.test_children
                .iter()
                .flat_map(|c| child_paths(p, c))
                .collect::<Vec<_>>()
        })
        .collect();
    for (p, text) in &files {
        let dir = p.parent().unwrap_or(Path::new(""));
        test_only.extend(test_path_children(text).into_iter().map(|c| dir.join(c)));
    }
    // A test-only file's own children are test-only too.
    let mut test_only_all = test_only;
    loop {
        let more: Vec<PathBuf> = split
            .iter()
            .filter(|(p, _)| test_only_all.contains(*p))
            .flat_map(|(p, s)| {
                let code = &s.code;
                mod_decls(code)
                    .into_iter()
                    .flat_map(|c| child_paths(p, &c))
                    .collect::<Vec<_>>()
            })
            .filter(|c| !test_only_all.contains(c))
            .collect();
        if more.is_empty() {
            break;
        }
        test_only_all.extend(more);
    }
    let root = crate::support::repo();
    std::mem::take(&mut split)
        .into_iter()
        .filter(|(p, _)| !test_only_all.contains(p))
        .map(|(p, s)| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, s.code)
        })
        .collect()
}

/// The files named by `#[cfg(test)] #[path = "…"] mod name;` in `text` (read before literals are blanked,
/// since the path is one), relative to the file's folder.
fn test_path_children(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("#[path = \"") {
        if !text[..at].trim_end().ends_with("#[cfg(test)]") {
            continue;
        }
        let rest = &text[at + "#[path = \"".len()..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// The names of `mod name;` declarations in `code`.
fn mod_decls(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(|n| n.trim().to_string())
        })
        .collect()
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let missing: Vec<String> = sources(&["src", "tests", "benches"])
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! paragraph: {missing:?}"
    );
}

#[test]
fn dependency_rules_hold() {
    let mut broken = Vec::new();
    for (rel, code) in non_test_code(&["src"]) {
        if !rel.starts_with("src/store/") && code.contains("sled::") {
            broken.push(format!("{rel} uses sled; only src/store/ may"));
        }
        if !rel.starts_with("src/http/") {
            if code.contains("reqwest::Client::builder") || code.contains("ClientBuilder") {
                broken.push(format!("{rel} builds a reqwest client; only src/http/ may"));
            }
            if code.contains(".expose_secret()") {
                broken.push(format!("{rel} exposes a secret; only src/http/ may"));
            }
        }
        if !rel.starts_with("src/store/run_file.rs") && code.contains("memmap2::") {
            broken.push(format!("{rel} maps a file; only src/store/run_file.rs may"));
        }
        let edge = rel.starts_with("src/cli/") || rel.starts_with("src/daemon/");
        if !edge && (code.contains("anyhow::") || code.contains("anyhow!")) {
            broken.push(format!("{rel} uses anyhow; only cli and daemon may"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The floors of ARCHITECTURE.md's "Layers" section, bottom first: each numbered line names the top-level
/// modules on that floor.
fn floors() -> BTreeMap<String, usize> {
    let arch = std::fs::read_to_string(crate::support::repo().join("ARCHITECTURE.md")).unwrap();
    let section = arch
        .split("\n## Layers\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a ## Layers section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut out = BTreeMap::new();
    for line in section.lines() {
        let Some((n, rest)) = line.trim().split_once(". ") else {
            continue;
        };
        let Ok(floor) = n.parse::<usize>() else {
            continue;
        };
        let names = rest.split(" — ").next().unwrap_or(rest);
        for name in names.split(',') {
            let name = name.trim().trim_matches('`');
            if !name.is_empty() {
                assert!(
                    out.insert(name.to_string(), floor).is_none(),
                    "{name} is on two floors"
                );
            }
        }
    }
    out
}

/// The top-level module a `src/` file belongs to.
fn module_of(rel: &str) -> Option<String> {
    let first = rel.strip_prefix("src/")?.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The top-level modules `code` names through `crate::`: `crate::a::…` and `crate::{a, b::…}`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 {
            let before = code.as_bytes()[at - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue; // `healthsync::crate` never occurs; `foo_crate::` is not ours
            }
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            out.insert(first_ident(&item));
        } else {
            out.insert(first_ident(rest));
        }
    }
    out.remove("");
    out
}

fn first_ident(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_module_imports_its_own_floor_or_above() {
    let floors = floors();
    let code = non_test_code(&["src"]);
    let mut unplaced = BTreeSet::new();
    let mut upward = Vec::new();
    for (rel, text) in &code {
        let Some(module) = module_of(rel) else {
            continue;
        };
        let Some(&own) = floors.get(&module) else {
            unplaced.insert(module);
            continue;
        };
        for import in crate_imports(text) {
            if import == module || import == "self" {
                continue;
            }
            match floors.get(&import) {
                Some(&floor) if floor < own => {}
                Some(&floor) => upward.push(format!(
                    "{rel}: {module} (floor {own}) imports {import} (floor {floor})"
                )),
                None => {
                    unplaced.insert(import);
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from ARCHITECTURE.md's Layers: {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports that point up or sideways:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_must() {
    // The rules above are only as good as the reading: check it on text made to trip each case.
    let text = r##"//! doc naming crate::daemon
use crate::vocab::Record; // crate::cli in a comment
const S: &str = "crate::pipeline in a string";
const R: &str = r#"crate::sim "quoted" in a raw string"#;
fn f<'a>(x: &'a str) -> char { let _ = crate::{store::Store, config}; '}' }
/* block crate::report /* nested */ still comment */
#[cfg(test)]
mod tests {
    use crate::cli::demo;
    fn g() { let _ = "}"; }
}
#[cfg(test)]
mod testkit;
fn after() { let _ = crate::metrics::lookup; }
"##;
    let split = without_test_items(&code_only(text));
    let imports = crate_imports(&split.code);
    assert_eq!(
        imports,
        ["config", "metrics", "store", "vocab"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(split.test_children, vec!["testkit".to_string()]);
    assert_eq!(
        split.code.lines().count(),
        text.lines().count(),
        "lines are kept"
    );
    // Every floor is read, and the crate's modules all have one.
    let floors = floors();
    assert!(floors.get("vocab") < floors.get("config"));
    assert!(floors.get("config") < floors.get("connector"));
    assert!(floors.get("pipeline") < floors.get("cli"));
}
