//! db-sync keeps tables of a target database equal to those of a source database.
//!
//! Layout (pure core, I/O at the edges):
//!
//! - [`config`]    `db-sync.json`: serde model, `${ENV}` secrets, validation into typed values
//! - [`model`]     keys, values, rows, key ranges, table scopes and schemas; no I/O
//! - [`connector`] the [`connector::Connector`] trait and one module per backend; all SQL lives here
//! - [`plan`]      the manual's decision matrix: counts and modify IDs to steps and a reason
//! - [`diff`]      key-list differences and the count-based binary search
//! - [`transform`] column mapping and type conversion between unlike schemas
//! - [`engine`]    one run: discover, plan, execute the resumable steps, verify
//! - [`checkpoint`] the sled state store: run records, checkpoints, watermarks, audit
//! - [`report`]    per-table statistics, the manual's metrics, progress display
//! - [`failpoint`] crash points used by the crash tests
//! - [`metrics_export`] the daemon's `/metrics` (Prometheus/OpenMetrics text) and `/healthz` endpoint
//! - [`runner`]    durable runs: start, resume, signals, outcome (engine + checkpoint store)
//! - [`schedule`]  the daemon's schedule: next start, chunked sleeps, the clock
//! - [`daemon`]    `db-sync daemon`: runs on a schedule, signals, reloads, status
//! - [`audit`]     `runs` and `show`: the run history as text or JSON
//! - [`verify`]    `verify`: a read-only comparison of every row
//! - [`cli`]       clap commands and exit codes
//! - [`demo`]      the ERP-like demo data set used by `db-sync demo`, the tests and the benchmark

pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod demo;
pub mod diff;
pub mod engine;
pub mod failpoint;
pub mod metrics_export;
pub mod model;
pub mod plan;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod transform;
pub mod verify;

/// Rows are many small allocations (a `Vec` and a `String` or two each); mimalloc serves
/// them with a fifth less CPU than the system allocator. Set here rather than in `main`
/// so the tests and benchmarks measure the allocator the binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the memory a run freed back to the operating system (mimalloc's `mi_collect` with
/// `force`). mimalloc purges freed pages some milliseconds after they are freed, on a later
/// allocation; a daemon that goes to sleep right after a run makes none, so without this its
/// resident memory between runs stays near the run's peak. Purging at once during runs
/// instead (`MIMALLOC_PURGE_DELAY=0`) cost a quarter of the copy rate in `cargo bench
/// --bench sync`.
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
