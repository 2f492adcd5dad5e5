//! The audit view of the state store: `db-sync runs` (one line per run) and
//! `db-sync show RUN_ID` (plan, results, metrics, errors and history of one run), as text
//! for people or JSON for scripts. Reads only.

use std::fmt::Write as _;

use serde::Serialize;

use crate::checkpoint::{EventKind, RunMeta, RunRecord, RunStatus, format_ms};
use crate::engine::Engine;
use crate::report::{ErrorEntry, Metrics, TableReport};

/// One line of `db-sync runs`.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: u64,
    /// Start, local time.
    pub started: String,
    /// Start, milliseconds since the epoch.
    pub started_ms: i64,
    /// Time spent running, over all processes.
    pub duration_ms: u64,
    /// Status.
    pub status: String,
    /// Table entries.
    pub tables: usize,
    /// Rows added.
    pub added: u64,
    /// Rows modified.
    pub modified: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Rows compared equal.
    pub skipped: u64,
    /// Errors recorded.
    pub errors: usize,
    /// Times the run was interrupted.
    pub interruptions: usize,
}

impl RunSummary {
    /// Summary of a stored run.
    pub fn of(run: &RunRecord) -> RunSummary {
        let sum = |f: fn(&TableReport) -> u64| run.state.tables.iter().map(|t| f(&t.report)).sum::<u64>();
        RunSummary {
            id: run.meta.id,
            started: format_ms(run.meta.started_ms),
            started_ms: run.meta.started_ms,
            duration_ms: run.meta.active_ms,
            status: run.meta.status.name().to_string(),
            tables: run.state.tables.len(),
            added: sum(|t| t.added),
            modified: sum(|t| t.modified),
            deleted: sum(|t| t.deleted),
            skipped: sum(|t| t.skipped),
            errors: run.state.errors.len(),
            interruptions: run.meta.interruptions(),
        }
    }
}

/// `db-sync runs` as text.
pub fn render_runs(runs: &[RunRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:<19}  {:>9}  {:<21}  {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>6}  {:>13}",
        "run",
        "started",
        "duration",
        "status",
        "tables",
        "added",
        "modified",
        "deleted",
        "skipped",
        "errors",
        "interruptions"
    );
    for run in runs {
        let s = RunSummary::of(run);
        let _ = writeln!(
            out,
            "{:>5}  {:<19}  {:>8.1}s  {:<21}  {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>6}  {:>13}",
            s.id,
            s.started,
            s.duration_ms as f64 / 1000.0,
            s.status,
            s.tables,
            s.added,
            s.modified,
            s.deleted,
            s.skipped,
            s.errors,
            s.interruptions
        );
    }
    if runs.is_empty() {
        let _ = writeln!(out, "(no runs yet)");
    }
    out
}

/// One history entry of `db-sync show`.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    /// When, local time.
    pub at: String,
    /// Event kind.
    pub event: String,
    /// Process.
    pub pid: u32,
    /// Host.
    pub host: String,
    /// Details.
    pub detail: String,
}

/// `db-sync show --json`.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    /// Summary line.
    #[serde(rename = "run")]
    pub summary: RunSummary,
    /// Config file.
    pub config: String,
    /// Source (no secrets).
    pub source: String,
    /// Target (no secrets).
    pub target: String,
    /// End, local time.
    pub ended: Option<String>,
    /// Last error, when the run stopped on one.
    pub last_error: Option<String>,
    /// Per-table plan, counts and results.
    #[serde(serialize_with = "crate::report::serialize_tables")]
    pub tables: Vec<TableReport>,
    /// The manual's metrics.
    pub metrics: Metrics,
    /// Errors.
    pub errors: Vec<ErrorEntry>,
    /// Started, interrupted, resumed, finished.
    pub history: Vec<HistoryEntry>,
    /// Tasks done / total.
    pub progress: String,
    /// Every retry, reconnection and give-up of the resilience layer, with time (`at_ms`,
    /// milliseconds since the Unix epoch), side, table, call and cause.
    pub network: Vec<crate::connector::resilient::NetworkEvent>,
}

impl RunDetail {
    /// Detail of a stored run.
    pub fn of(run: &RunRecord) -> RunDetail {
        let report = Engine::report(&run.state, false, run.meta.active_ms);
        RunDetail {
            summary: RunSummary::of(run),
            config: run.meta.config_path.clone(),
            source: run.meta.source.clone(),
            target: run.meta.target.clone(),
            ended: run.meta.ended_ms.map(format_ms),
            last_error: run.meta.last_error.clone(),
            tables: report.tables,
            metrics: report.metrics,
            errors: report.errors,
            history: run
                .meta
                .events
                .iter()
                .map(|e| HistoryEntry {
                    at: format_ms(e.at_ms),
                    event: format!("{:?}", e.kind).to_lowercase(),
                    pid: e.pid,
                    host: e.host.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
            progress: format!("{}/{} tasks", run.state.position.min(run.state.tasks.len()), run.state.tasks.len()),
            network: report.network,
        }
    }
}

/// Why a stored run is not finished, in the words of the summary's last line (`None`
/// for a finished run).
fn stopped_reason(meta: &RunMeta) -> Option<String> {
    let last_interruption =
        || meta.events.iter().rev().find(|e| e.kind == EventKind::Interrupted).map(|e| e.detail.clone());
    match meta.status {
        RunStatus::Completed | RunStatus::CompletedWithErrors => None,
        RunStatus::Failed => meta.last_error.clone().or_else(last_interruption).or(Some("failed".into())),
        RunStatus::Interrupted => Some(last_interruption().unwrap_or_else(|| "interrupted".into())),
        RunStatus::Running => Some("still running".into()),
        RunStatus::Abandoned => Some("abandoned with `db-sync run --abandon`".into()),
    }
}

/// `db-sync show` as text.
pub fn render_run(run: &RunRecord) -> String {
    let detail = RunDetail::of(run);
    let s = &detail.summary;
    let mut out = String::new();
    let _ = writeln!(out, "run {}: {}", s.id, s.status);
    let _ = writeln!(out, "  config:   {}", detail.config);
    let _ = writeln!(out, "  source:   {}", detail.source);
    let _ = writeln!(out, "  target:   {}", detail.target);
    let _ = writeln!(out, "  started:  {}", s.started);
    let _ = writeln!(out, "  ended:    {}", detail.ended.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "  running:  {:.1}s over {} process(es)",
        s.duration_ms as f64 / 1000.0,
        1 + run.meta.events.iter().filter(|e| e.kind == EventKind::Resumed).count()
    );
    let _ = writeln!(out, "  progress: {}", detail.progress);
    if let Some(e) = &detail.last_error {
        let _ = writeln!(out, "  stopped by: {e}");
    }
    let _ = writeln!(out, "\nplan:");
    for t in &run.state.tables {
        let changed = t.survey.changed.map_or("-".into(), |c| c.to_string());
        let _ = writeln!(
            out,
            "  {:<20} source {:>9}  target {:>9}  changed {:>8}  {}  {}",
            t.report.name,
            t.survey.source_count,
            t.survey.target_count,
            changed,
            t.survey.plan.steps_text(),
            t.survey.plan.reason
        );
    }
    let mut report = Engine::report(&run.state, false, run.meta.active_ms);
    report.stopped = stopped_reason(&run.meta);
    let _ = writeln!(out, "\nresults:");
    for line in report.render().lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "\nhistory:");
    for h in &detail.history {
        let _ = writeln!(out, "  {}  {:<11} pid {} on {}  {}", h.at, h.event, h.pid, h.host, h.detail);
    }
    let _ = writeln!(out, "  interruptions: {}", s.interruptions);
    out
}
