//! Tidy checks over the source tree (rust-analyzer style): every Rust file opens with a `//!` paragraph,
//! and the layering rules of ARCHITECTURE.md hold (sled only in the store, reqwest clients only in http).

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

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for dir in ["src", "tests"] {
        rust_files(&crate::support::repo().join(dir), &mut files);
    }
    files
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect()
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let missing: Vec<String> = sources()
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
fn layering_rules_hold() {
    for (path, text) in sources() {
        let rel = path
            .strip_prefix(crate::support::repo())
            .unwrap()
            .display()
            .to_string();
        // Unit tests may look at a secret they made up; the rules are about the code they test.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        if rel.starts_with("src/") && !rel.starts_with("src/store/") {
            assert!(
                !text.contains("sled::"),
                "{rel} uses sled; only src/store/ may"
            );
        }
        if rel.starts_with("src/") && !rel.starts_with("src/http") {
            assert!(
                !text.contains("reqwest::Client::builder") && !text.contains("ClientBuilder"),
                "{rel} builds a reqwest client; only src/http may"
            );
            assert!(
                !text.contains(".expose_secret()"),
                "{rel} exposes a secret; only src/http may"
            );
        }
    }
}
