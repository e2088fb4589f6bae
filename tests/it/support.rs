//! Shared helpers: a temporary copy of the shipped config, and running the binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_healthsync"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary copy of `config/` and `connectors/`, laid out as in the repository.
pub struct ConfigCopy {
    pub dir: tempfile::TempDir,
}

impl ConfigCopy {
    pub fn new() -> ConfigCopy {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("config"), &dir.path().join("config"));
        copy_dir(&repo().join("connectors"), &dir.path().join("connectors"));
        ConfigCopy { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn daemon(&self) -> PathBuf {
        self.path("config/healthsync.toml")
    }

    /// Replaces `from` with `to` in a file, failing the test if `from` is not there.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.path(rel);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    pub fn validate(&self) -> Output {
        run(&["validate", "--config", self.daemon().to_str().unwrap()])
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

pub fn run(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .env_remove("HEALTHSYNC_CONFIG")
        .env_remove("HEALTHSYNC_STATE_DIR")
        .output()
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `healthsync sim` in a child process, with the config it wrote for its APIs.
pub struct Sim {
    pub child: Child,
    pub addr: String,
    pub config: PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the simulator for 300 accounts and waits until its config is written into `dir`.
pub fn start_sim(dir: &Path, seed: &str) -> Sim {
    let mut child = Command::new(bin())
        .args([
            "sim",
            "--accounts",
            "300",
            // The vendors' real quotas would make every run wait out Vitally's minute; these tests are
            // about crashes, signals and endpoints, not throttling (the kinds' own tests cover that).
            "--fast",
            "--seed",
            seed,
            "--config-out",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.rsplit("http://").next().unwrap().trim().to_string();
    // Wait until the config is written (the line after the vendor list says so).
    for line in lines.by_ref() {
        if line.unwrap().starts_with("config written") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Sim {
        child,
        addr,
        config: dir.join("healthsync.toml"),
    }
}
