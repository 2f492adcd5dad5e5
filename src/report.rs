//! What a run tells its user: per-table statistics, the manual's metrics, the error list,
//! and live progress. Progress goes to stderr (a bar on a terminal, a plain line every few
//! seconds otherwise); the final summary goes to stdout.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::connector::resilient::{NetworkEvent, NetworkEventKind};
use crate::plan::Plan;

/// Class of an error, as in the manual's "Error Categories".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Database unavailable, network issues.
    Connection,
    /// Missing tables, incompatible field types.
    Schema,
    /// Constraint violations, invalid values.
    Data,
    /// Unexpected conditions, algorithm failures, failed verification.
    Logic,
}

impl ErrorKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Schema => "schema",
            ErrorKind::Data => "data",
            ErrorKind::Logic => "logic",
        }
    }
}

/// One recorded error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Category.
    pub kind: ErrorKind,
    /// Table entry name, when the error belongs to one.
    pub table: Option<String>,
    /// Description (never contains secrets or row values beyond the key).
    pub message: String,
}

/// Per-table statistics of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TableReport {
    /// Table entry name.
    pub name: String,
    /// Source rows before the run.
    pub source_before: u64,
    /// Target rows before the run.
    pub target_before: u64,
    /// Source rows after the run.
    pub source_after: Option<u64>,
    /// Target rows after the run.
    pub target_after: Option<u64>,
    /// Changed rows the planner saw.
    pub changed: Option<u64>,
    /// The plan.
    pub plan: Option<Plan>,
    /// Steps run after the plan because the verification found counts that differ.
    pub repair: Vec<crate::plan::StepKind>,
    /// Rows inserted.
    pub added: u64,
    /// Rows updated.
    pub modified: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Rows compared and found equal (not rewritten).
    pub skipped: u64,
    /// Errors recorded for this table.
    pub errors: u64,
    /// Wall time spent on the table.
    pub duration_ms: u64,
    /// Counts matched after the run (`None`: not counted yet). Matching counts alone do
    /// not make a table verified: see [`TableReport::check`].
    pub verified: Option<bool>,
    /// Every row was read and compared on both sides in this run (a `changed` step over
    /// the whole key range), not only the counts, the keys or the changed rows.
    #[serde(default)]
    pub rows_compared: bool,
    /// Calls about this table that failed and were tried again (resilience layer).
    #[serde(default)]
    pub retries: u64,
    /// Lost connections during calls about this table, each followed by a new session.
    #[serde(default)]
    pub reconnects: u64,
}

/// What a run established about a table, as the summary names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableCheck {
    /// Every row was compared, no row was refused, and the counts match afterwards.
    Verified,
    /// The counts match afterwards, but not every row was compared (or a row was refused).
    CountsMatch,
    /// The counts still differ afterwards.
    CountMismatch,
    /// Not counted afterwards: the run stopped before.
    NotChecked,
}

impl TableCheck {
    /// The words the summary prints.
    pub fn name(self) -> &'static str {
        match self {
            TableCheck::Verified => "verified",
            TableCheck::CountsMatch => "counts match",
            TableCheck::CountMismatch => "COUNT MISMATCH",
            TableCheck::NotChecked => "not checked",
        }
    }
}

impl TableReport {
    /// Whether the table is verified, or only its counts match.
    pub fn check(&self) -> TableCheck {
        match self.verified {
            None => TableCheck::NotChecked,
            Some(false) => TableCheck::CountMismatch,
            Some(true) if self.rows_compared && self.errors == 0 => TableCheck::Verified,
            Some(true) => TableCheck::CountsMatch,
        }
    }
}

/// Serializes table reports for people and scripts (`run --json`, `show --json`): the
/// stored `verified` flag appears as `counts_match`, followed by `check` with the
/// summary's words, so no table is called verified on its counts alone.
pub fn serialize_tables<S: serde::Serializer>(tables: &[TableReport], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let serde_json::Value::Object(fields) = serde_json::to_value(table).map_err(S::Error::custom)? else {
            return Err(S::Error::custom("a table report serializes to an object"));
        };
        let mut shown = serde_json::Map::new();
        for (key, value) in fields {
            if key == "verified" {
                shown.insert("counts_match".into(), value);
                shown.insert("check".into(), table.check().name().to_lowercase().into());
            } else {
                shown.insert(key, value);
            }
        }
        out.push(serde_json::Value::Object(shown));
    }
    serializer.collect_seq(out)
}

/// The manual's metrics (times in milliseconds).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Metrics {
    /// Total time reading data.
    pub readTimeAll: u64,
    /// Total time writing data.
    pub writeTimeAll: u64,
    /// Total time deleting data.
    pub deleteTimeAll: u64,
    /// Total time comparing data.
    pub dataCompareTimeAll: u64,
    /// Total database queries.
    pub queryCountAll: u64,
    /// Total records processed (source rows of every checked table).
    pub recordCountAllTables: u64,
    /// Total records added.
    pub recordCountAllAdded: u64,
    /// Total records modified.
    pub recordCountAllModified: u64,
    /// Total records deleted.
    pub recordCountAllDeleted: u64,
    /// Total records skipped (compared equal).
    pub recordCountAllSkipped: u64,
    /// Number of binary searches.
    pub binarySearchCountAll: u64,
    /// Total search iterations (ranges processed).
    pub binarySearchIterationCount: u64,
    /// Queries used in binary search.
    pub binarySearchQueryCount: u64,
    /// Maximum search depth reached.
    pub binarySearchMaxDepthAll: u64,
    /// Total time in binary search.
    pub binarySearchTimeAll: u64,
}

impl Metrics {
    /// `(name, value)` pairs in the manual's order.
    pub fn pairs(&self) -> [(&'static str, u64); 15] {
        [
            ("readTimeAll", self.readTimeAll),
            ("writeTimeAll", self.writeTimeAll),
            ("deleteTimeAll", self.deleteTimeAll),
            ("dataCompareTimeAll", self.dataCompareTimeAll),
            ("queryCountAll", self.queryCountAll),
            ("recordCountAllTables", self.recordCountAllTables),
            ("recordCountAllAdded", self.recordCountAllAdded),
            ("recordCountAllModified", self.recordCountAllModified),
            ("recordCountAllDeleted", self.recordCountAllDeleted),
            ("recordCountAllSkipped", self.recordCountAllSkipped),
            ("binarySearchTimeAll", self.binarySearchTimeAll),
            ("binarySearchCountAll", self.binarySearchCountAll),
            ("binarySearchIterationCount", self.binarySearchIterationCount),
            ("binarySearchQueryCount", self.binarySearchQueryCount),
            ("binarySearchMaxDepthAll", self.binarySearchMaxDepthAll),
        ]
    }
}

/// Everything a run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// Tables in config order.
    #[serde(serialize_with = "serialize_tables")]
    pub tables: Vec<TableReport>,
    /// Aggregated metrics.
    pub metrics: Metrics,
    /// Errors in the order they happened.
    pub errors: Vec<ErrorEntry>,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// Only planned; nothing written.
    pub plan_only: bool,
    /// Why the run stopped before its end (`None`: it ran to the end).
    #[serde(default)]
    pub stopped: Option<String>,
    /// Every retry, reconnection and give-up of the resilience layer, oldest first.
    #[serde(default)]
    pub network: Vec<NetworkEvent>,
}

/// `text` with its control characters other than newline and tab written as `\x1b`-style
/// escapes, so text that came from a database (an error message, a key, a value) cannot
/// put terminal escape codes into the summary, a log file or a terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let is_control = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_control(c) {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How many of the last network events the text summary lists (JSON has them all).
const NETWORK_EVENTS_SHOWN: usize = 20;

/// `1 retry`, `2 retries` and the like.
fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

/// `1 error`, `2 errors`.
fn errors_text(n: usize) -> String {
    if n == 1 { "1 error".to_string() } else { format!("{n} errors") }
}

fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

impl RunReport {
    /// The network section of the summary: retries and reconnections in total and per
    /// table, then the last events with time and cause. Nothing when nothing failed.
    fn render_network(&self, out: &mut String) {
        if self.network.is_empty() {
            return;
        }
        let count = |kind| self.network.iter().filter(|e| e.kind == kind).count() as u64;
        let _ = writeln!(
            out,
            "network: {}, {}",
            plural(count(NetworkEventKind::Retry), "retry", "retries"),
            plural(count(NetworkEventKind::Reconnect), "reconnect", "reconnects")
        );
        for t in self.tables.iter().filter(|t| t.retries + t.reconnects > 0) {
            let _ = writeln!(
                out,
                "  {}: {}, {}",
                t.name,
                plural(t.retries, "retry", "retries"),
                plural(t.reconnects, "reconnect", "reconnects")
            );
        }
        let skip = self.network.len().saturating_sub(NETWORK_EVENTS_SHOWN);
        if skip > 0 {
            let _ = writeln!(out, "  ({skip} earlier events: `db-sync show RUN --json` lists them all)");
        }
        for e in &self.network[skip..] {
            let table = e.table.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
            let wait = if e.wait_ms > 0 { format!(", waiting {}", seconds(e.wait_ms)) } else { String::new() };
            let _ = writeln!(
                out,
                "  {} {} {}{table}, {}: {}{wait}",
                crate::checkpoint::format_ms(e.at_ms),
                e.kind.name(),
                e.side,
                e.operation,
                escape_controls(&e.cause)
            );
        }
    }

    /// The summary printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = self.tables.iter().map(|t| t.name.len()).max().unwrap_or(5).max(5);
        if self.plan_only {
            let _ =
                writeln!(out, "{:<width$}  {:>10} {:>10} {:>9}  plan / reason", "table", "source", "target", "changed");
            for t in &self.tables {
                let changed = t.changed.map_or("-".to_string(), |c| c.to_string());
                let (steps, reason) =
                    t.plan.as_ref().map_or(("[]".into(), ""), |p| (p.steps_text(), p.reason.as_str()));
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>10} {:>10} {:>9}  {steps}  {reason}",
                    t.name, t.source_before, t.target_before, changed
                );
            }
            return out;
        }
        let _ = writeln!(
            out,
            "{:<width$}  {:>19} {:>19} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8}  {:<14}  plan",
            "table",
            "source before>after",
            "target before>after",
            "added",
            "modified",
            "deleted",
            "skipped",
            "errors",
            "time",
            "check"
        );
        for t in &self.tables {
            let after = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
            let mut steps = t.plan.as_ref().map_or("[]".into(), |p| p.steps_text());
            if !t.repair.is_empty() {
                let repair: Vec<&str> = t.repair.iter().map(|s| s.name()).collect();
                steps.push_str(&format!(" + repair {}", repair.join(", ")));
            }
            let _ = writeln!(
                out,
                "{:<width$}  {:>19} {:>19} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8}  {:<14}  {steps}",
                t.name,
                format!("{}>{}", t.source_before, after(t.source_after)),
                format!("{}>{}", t.target_before, after(t.target_after)),
                t.added,
                t.modified,
                t.deleted,
                t.skipped,
                t.errors,
                seconds(t.duration_ms),
                t.check().name(),
            );
        }
        let _ = writeln!(out);
        let metrics: Vec<String> = self
            .metrics
            .pairs()
            .iter()
            .map(|(k, v)| if k.ends_with("TimeAll") { format!("{k}={}", seconds(*v)) } else { format!("{k}={v}") })
            .collect();
        let _ = writeln!(out, "metrics: {}", metrics[..5].join(" "));
        let _ = writeln!(out, "         {}", metrics[5..10].join(" "));
        let _ = writeln!(out, "         {}", metrics[10..].join(" "));
        let _ = writeln!(out, "run time: {}", seconds(self.duration_ms));
        self.render_network(&mut out);
        match (&self.stopped, self.errors.len()) {
            (Some(reason), 0) => {
                let _ = writeln!(out, "Sync stopped: {}", escape_controls(reason));
            }
            (Some(reason), n) => {
                let _ = writeln!(out, "Sync stopped: {}", escape_controls(reason));
                let _ = writeln!(out, "{} before it stopped:", errors_text(n));
            }
            (None, 0) => {
                let _ = writeln!(out, "Sync completed without errors.");
            }
            (None, n) => {
                let _ = writeln!(out, "Sync completed with {}:", errors_text(n));
            }
        }
        for (i, e) in self.errors.iter().enumerate() {
            let table = e.table.as_deref().map(|t| format!("{t}: ")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}. [{}] {}{}",
                i + 1,
                e.kind.name(),
                escape_controls(&table),
                escape_controls(&e.message)
            );
        }
        out
    }
}

/// How live progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines every few seconds.
    Lines,
    /// Nothing.
    Off,
}

/// Whether progress may be shown at all; `--log-format json` turns it off, so that every
/// stderr line of a run is a JSON log object (the same news is in the `info` log events).
static PROGRESS_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns every progress display (bars, plain lines, the binary-search line, step notes)
/// off for the rest of the process, whatever `--progress` says.
pub fn disable_progress() {
    PROGRESS_ALLOWED.store(false, std::sync::atomic::Ordering::Relaxed);
}

impl ProgressMode {
    /// This mode, or [`ProgressMode::Off`] after [`disable_progress`].
    pub fn effective(self) -> ProgressMode {
        if PROGRESS_ALLOWED.load(std::sync::atomic::Ordering::Relaxed) { self } else { ProgressMode::Off }
    }
}

/// Where a run's live progress goes: plain progress lines, step notes ("using binary
/// search for adds ..."), the binary-search line. The library writes none of it itself:
/// the CLI passes a display that writes to stderr, everything else gets [`NoProgress`].
/// Bars (a terminal with `--progress auto`) are drawn by `indicatif` when
/// [`ProgressOutput::is_terminal`] says the output is a terminal.
pub trait ProgressOutput: Send + Sync + std::fmt::Debug {
    /// A whole line.
    fn line(&self, text: &str);
    /// A token of a line being built, shown at once (a range of the binary-search line).
    fn token(&self, text: &str);
    /// Ends a line of tokens.
    fn end_tokens(&self);
    /// Whether the output is an interactive terminal (bars, one-line binary search).
    fn is_terminal(&self) -> bool;
}

/// Progress shown nowhere (benchmarks, tests, embedding).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressOutput for NoProgress {
    fn line(&self, _text: &str) {}
    fn token(&self, _text: &str) {}
    fn end_tokens(&self) {}
    fn is_terminal(&self) -> bool {
        false
    }
}

/// Progress of one step of one table.
pub struct StepProgress {
    output: std::sync::Arc<dyn ProgressOutput>,
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    lines: bool,
}

/// Seconds between plain progress lines.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl StepProgress {
    /// Starts progress for `label` with an expected `total` (rows or keys).
    pub fn start(
        mode: ProgressMode,
        output: std::sync::Arc<dyn ProgressOutput>,
        label: String,
        total: u64,
    ) -> StepProgress {
        let mode = mode.effective();
        let terminal = output.is_terminal();
        let bar = (mode == ProgressMode::Auto && terminal).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg:30} [{bar:30}] {pos:>9}/{len:9} {per_sec:>12} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(label.clone());
            bar
        });
        let now = Instant::now();
        StepProgress {
            output,
            lines: bar.is_none() && mode != ProgressMode::Off,
            bar,
            label,
            total,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    /// Advances by `n` rows.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            if self.done > bar.length().unwrap_or(0) {
                bar.set_length(self.done);
            }
            bar.set_position(self.done);
        } else if self.lines && self.last_line.elapsed() >= LINE_INTERVAL {
            self.last_line = Instant::now();
            self.output.line(&self.line());
        }
    }

    fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / elapsed;
        let pct = if self.total == 0 { 100.0 } else { 100.0 * self.done as f64 / self.total as f64 };
        let eta = if rate > 0.0 && self.total > self.done {
            format!(", ETA {:.0}s", (self.total - self.done) as f64 / rate)
        } else {
            String::new()
        };
        format!("{}: {}/{} rows ({pct:.1}%), {rate:.0} rows/s{eta}", self.label, self.done, self.total)
    }

    /// Ends the step's progress display.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, verified: Option<bool>, rows_compared: bool, errors: u64) -> TableReport {
        TableReport { name: name.into(), verified, rows_compared, errors, ..TableReport::default() }
    }

    fn error(message: &str) -> ErrorEntry {
        ErrorEntry { kind: ErrorKind::Data, table: Some("items".into()), message: message.into() }
    }

    fn last_lines(report: &RunReport, n: usize) -> Vec<String> {
        let text = report.render();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[lines.len() - n..].to_vec()
    }

    /// A table is "verified" only when its rows were compared, its counts match and no row
    /// was refused; matching counts alone say "counts match".
    #[test]
    fn verified_only_when_rows_were_compared() {
        assert_eq!(table("a", Some(true), true, 0).check(), TableCheck::Verified);
        assert_eq!(table("a", Some(true), false, 0).check(), TableCheck::CountsMatch);
        assert_eq!(table("a", Some(true), true, 2).check(), TableCheck::CountsMatch);
        assert_eq!(table("a", Some(false), true, 0).check(), TableCheck::CountMismatch);
        assert_eq!(table("a", None, false, 0).check(), TableCheck::NotChecked);
        let report = RunReport {
            tables: vec![table("compared", Some(true), true, 0), table("counted", Some(true), false, 0)],
            ..RunReport::default()
        };
        let text = report.render();
        let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        assert!(line("compared").contains("  verified  "), "{text}");
        assert!(line("counted").contains("  counts match  ") && !line("counted").contains("verified"), "{text}");
    }

    /// The JSON of a table says `check` with the same words and shows the stored flag as
    /// `counts_match`, never as `verified`.
    #[test]
    fn json_tables_say_what_was_checked() {
        let report = RunReport {
            tables: vec![table("compared", Some(true), true, 0), table("counted", Some(true), false, 0)],
            ..RunReport::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["tables"][0]["check"], "verified");
        assert_eq!(json["tables"][1]["check"], "counts match");
        assert_eq!(json["tables"][1]["counts_match"], true);
        assert_eq!(json["tables"][1]["rows_compared"], false);
        assert!(json["tables"][1].get("verified").is_none(), "{json}");
    }

    /// Control characters from a database (an ESC in an error message) are written as
    /// visible escapes, never as raw bytes; newlines and tabs stay.
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(escape_controls("key \u{1b}[31mred\u{7}"), "key \\x1b[31mred\\x07");
        let report = RunReport { errors: vec![error("bad \u{1b}[2J row")], ..RunReport::default() };
        let text = report.render();
        assert!(!text.contains('\u{1b}') && text.contains("bad \\x1b[2J row"), "{text}");
    }

    /// The last line matches the outcome: a clean finish, a finish with errors (listed), or
    /// a stop (with its reason, and the errors so far).
    #[test]
    fn final_line_matches_the_outcome() {
        let clean = RunReport::default();
        assert_eq!(last_lines(&clean, 1), ["Sync completed without errors."]);

        let with_errors = RunReport { errors: vec![error("bad row 7"), error("bad row 9")], ..RunReport::default() };
        assert_eq!(
            last_lines(&with_errors, 3),
            ["Sync completed with 2 errors:", "  1. [data] items: bad row 7", "  2. [data] items: bad row 9"]
        );

        let stopped = RunReport { stopped: Some("maximum error count 1 was reached".into()), ..RunReport::default() };
        assert_eq!(last_lines(&stopped, 1), ["Sync stopped: maximum error count 1 was reached"]);
        assert!(!stopped.render().contains("Sync completed"));

        let stopped_with_errors = RunReport {
            stopped: Some("maximum error count 1 was reached".into()),
            errors: vec![error("bad row 7")],
            ..RunReport::default()
        };
        assert_eq!(
            last_lines(&stopped_with_errors, 3),
            [
                "Sync stopped: maximum error count 1 was reached",
                "1 error before it stopped:",
                "  1. [data] items: bad row 7"
            ]
        );
    }

    /// The summary's network section: totals, per-table counts, and the last events with
    /// time, side, table, call, cause and wait; nothing when nothing failed.
    #[test]
    fn network_section_lists_retries_and_reconnects() {
        let mut report = RunReport { tables: vec![table("items", Some(true), true, 0)], ..RunReport::default() };
        assert!(!report.render().contains("network:"));
        report.tables[0].retries = 2;
        report.tables[0].reconnects = 1;
        let event = |kind, wait_ms| NetworkEvent {
            at_ms: 1_767_225_600_000,
            kind,
            side: "target".into(),
            table: Some("items".into()),
            operation: "writing rows".into(),
            cause: "connection reset".into(),
            attempt: 1,
            wait_ms,
        };
        report.network = vec![
            event(NetworkEventKind::Retry, 5_000),
            event(NetworkEventKind::Reconnect, 30_000),
            event(NetworkEventKind::Retry, 10_000),
        ];
        let text = report.render();
        let lines: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("network:")).take(6).collect();
        assert_eq!(lines[0], "network: 2 retries, 1 reconnect");
        assert_eq!(lines[1], "  items: 2 retries, 1 reconnect");
        assert!(lines[2].ends_with(" retry target items, writing rows: connection reset, waiting 5.00s"), "{text}");
        assert!(lines[3].contains(" reconnect target items, "), "{text}");
        assert!(lines[4].ends_with(", waiting 10.00s"), "{text}");
        assert_eq!(lines[5], "Sync completed without errors.");
    }
}
