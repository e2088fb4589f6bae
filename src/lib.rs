//! healthsync: a customer-health engine for Customer Success teams.
//!
//! It pulls account data from the systems where it already lives (CRM, billing, product usage), caches it in
//! sled, scores each account with a health model that admins edit as TOML, and writes health fields and
//! templated projects back into the CS platform, through a durable outbox.
//!
//! # Layout
//!
//! - [`vocab`]: the shared vocabulary (records, cursors, writes, roles, auth schemes, budgets); imports nothing.
//! - [`config`]: raw TOML types → pure validation (all problems at once, with file and line) → validated types.
//! - [`secrets`]: secret references (`env:`, `file:`, `credential:`) resolved into `SecretString`.
//! - [`store`]: the only module that touches sled; typed trees for records, cursors, scores, outbox.
//! - [`http`]: the only builder of reqwest clients: auth, rate limiting, retry, pagination helpers.
//! - [`connector`]: the source and sink contracts, the kind registry, and one module per kind.
//! - [`sync`]: drives a source page by page, committing records with their cursor.
//! - [`identity`], [`metrics`], [`scoring`]: records → one account across sources → metric values → scores.
//! - [`planner`], [`outbox`]: diff scores against what the platform confirmed, plan writes, deliver them.
//! - [`report`]: the HTML report (charts, project impact) from the stored scores, history and projects.
//! - [`pipeline`]: sync → score → plan → push as library calls shared by the CLI, the daemon and the demo.
//! - [`sim`]: simulated vendor APIs used by `healthsync demo`, `healthsync sim` and the tests.
//! - [`cli`] (with the demo), [`daemon`], [`telemetry`]: the edges.

/// The process allocator for every binary that links healthsync (the daemon, the benches, the tests):
/// syncing decodes and frees millions of small JSON values, which glibc's malloc handled with a
/// fragmentation cost that grew with the heap (BENCHMARKS.md, sources).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Asks Linux not to back this process's memory with transparent huge pages. mimalloc requests them for
/// its arenas, and the first touch of each 2 MiB page then zeroes all of it: that zeroing
/// was 8-20 % of the CPU in profiles of a long sync, and it kept about 40 MiB more resident. Call
/// it first thing in `main`, as the binary and the benches do.
pub fn decline_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

pub mod atomic_file;
pub mod backtest;
pub mod book;
pub mod cli;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod observe;
pub mod outbox;
pub mod pipeline;
pub mod planner;
pub mod report;
pub mod scoring;
pub mod secrets;
pub mod sim;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod vocab;
