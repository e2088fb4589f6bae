//! Logging setup: human-readable on a terminal, journald fields when stderr is the systemd journal, JSON
//! lines otherwise.
//!
//! Only sets up the tracing subscriber; what gets logged is decided where the work happens. Logs go to
//! stderr (or the journal socket) so that command output on stdout stays clean for pipes and `--json`.
//! Spans carry the context (`sync_run{connector, kind, run_id}`, `deliver{sink, key}`); with journald each
//! span field becomes a journal field, so `journalctl -u healthsync CONNECTOR=hubspot` works.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set.
pub fn init(level: &str, format: LogFormat) {
    // The scheduler crate narrates every job it creates at info; only its warnings are news to an operator.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},tokio_cron_scheduler=warn")));
    let format = match format {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Json,
        chosen => chosen,
    };
    if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(journald) => {
                // A second init (tests, a re-init) is harmless: the first subscriber stays.
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(journald.with_syslog_identifier("healthsync".into()))
                    .try_init();
                return;
            }
            Err(e) => eprintln!("warning: cannot reach the journal ({e}); logging JSON to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == LogFormat::Text {
        builder.with_target(false).try_init()
    } else {
        builder.json().with_current_span(true).try_init()
    };
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the stream
/// it gave us, and a child that redirected stderr elsewhere no longer matches.
fn stderr_is_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(expected) = std::env::var("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
            return false;
        };
        expected == format!("{}:{}", meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Keeps the panics that expression evaluation catches (`metrics`: cel-interpreter's integer division
/// by zero) off stderr, where the default hook would print one per account and run; each is reported as
/// that account's missing value with its reason instead. Every other panic prints as before.
pub fn quiet_caught_expression_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| l.file().contains("cel-interpreter"))
        {
            return;
        }
        default(info)
    }));
}
