//! Idle daemon cost: starts the real `healthsync run` binary with 20 source connectors whose schedules do
//! not fire during the measurement (plus the delivery job on its default five-minute schedule), lets it
//! settle, then reads its CPU time and resident memory from `/proc/<pid>` over a window and prints them.
//! Target (the production issue): under 0.5% of one core and under 50 MB RSS.
//!
//! Run: `cargo bench --bench idle -- 60` (window in seconds; default 60). Linux only (reads /proc).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONNECTORS: usize = 20;

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon is running");
    // The command name (field 2) may contain spaces; fields after it are space-separated.
    let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// A `/proc/<pid>/status` value in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("connectors")).expect("temp dir");
    std::fs::create_dir_all(dir.join("models")).expect("temp dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("config/models/starter.toml"),
        dir.join("models/starter.toml"),
    )
    .expect("starter model");
    std::fs::write(dir.join("token"), "idle-bench-token").expect("secret");
    // The shipped files, unchanged except for a schedule that does not fire now and a file secret; the
    // extra 16 are copies of the usage feed, as a large install would have one per product.
    let shipped = |name: &str| {
        let text = std::fs::read_to_string(root.join(format!("connectors/{name}.toml")))
            .expect("shipped connector");
        let mut t: toml::Table = toml::from_str(&text).expect("shipped connector parses");
        t.insert("schedule".into(), "0 0 3 1 1 *".into());
        if let Some(toml::Value::Table(auth)) = t.get_mut("auth") {
            for k in ["token", "username"] {
                if auth.contains_key(k) {
                    let secret = format!("file:{}", dir.join("token").display());
                    auth.insert(k.into(), secret.into());
                }
            }
        }
        toml::to_string(&t).expect("serializes")
    };
    for name in ["hubspot", "stripe", "usage", "vitally"] {
        std::fs::write(dir.join(format!("connectors/{name}.toml")), shipped(name)).expect("write");
    }
    for i in 0..CONNECTORS - 3 {
        std::fs::write(
            dir.join(format!("connectors/usage{i:02}.toml")),
            shipped("usage"),
        )
        .expect("write");
    }
    let config = dir.join("healthsync.toml");
    std::fs::write(
        &config,
        "version = 1\nstate_dir = \"state\"\nconnectors_dir = \"connectors\"\nmodel = \"models/starter.toml\"\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\n\n[scoring]\nschedule = \"0 0 3 1 1 *\"\n",
    )
    .expect("write config");
    config
}

fn main() {
    let window = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_healthsync"))
        .args(["run", "--config", config.to_str().expect("utf-8 path")])
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start healthsync run");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(5));
    if let Ok(Some(exit)) = child.try_wait() {
        panic!("healthsync run exited early: {exit}");
    }
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let start_ticks = cpu_ticks(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(window));
    let ticks = cpu_ticks(pid) - start_ticks;
    let elapsed = start.elapsed().as_secs_f64();
    let rss = status_kb(pid, "VmRSS:");
    let peak = status_kb(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    let cpu_pct = ticks as f64 / ticks_per_sec / elapsed * 100.0;
    println!(
        "idle daemon, {CONNECTORS} source connectors + 1 sink, {elapsed:.0} s window: cpu {cpu_pct:.3}% of one core ({ticks} ticks), rss {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
