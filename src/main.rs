//! The `healthsync` binary: parse the command line, set up logging, run, map the outcome to an exit code.

use clap::Parser;
use healthsync::cli::{self, Cli, Command};
use healthsync::config::LogFormat;

fn main() {
    healthsync::decline_transparent_huge_pages();
    healthsync::telemetry::quiet_caught_expression_panics();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run) {
        die_quietly_on_closed_pipe();
    }
    // Interactive commands keep stderr for warnings and progress. The daemon sets up logging itself, from
    // its config's [log] section, once it has read it.
    if !matches!(cli.command, Command::Run) {
        let level = match cli.global.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        };
        healthsync::telemetry::init(level, LogFormat::Auto);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            match &e {
                // Config problems were already printed one per line.
                cli::CliError::Config(errors) => {
                    for d in &errors.0 {
                        eprintln!("error: {d}");
                    }
                }
                cli::CliError::Runtime(err) => eprintln!("error: {err:#}"),
                cli::CliError::Reported(_) => {}
                other => eprintln!("error: {other}"),
            }
            e.exit_code()
        }
    };
    // Don't wait for background tasks (signal listeners, a served simulator) to notice.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

/// `healthsync status --json | head` must end quietly when `head` closes the pipe, as Unix tools do, not
/// panic in `println!`. Rust ignores SIGPIPE by default; restore the default action for the short-lived
/// commands. The daemon keeps ignoring it: a write to a restarted journal must not kill it.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called at the start of `main`, before any other thread exists; setting a signal's action to
    // its default has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
