//! Format 2 of the state store, frozen: copies of every type a format-2 run record
//! (`StoredRun::V2`) and watermark record (`StoredWatermark::V2`) encode, exactly as
//! db-sync wrote them (same fields in the same order, same variants in the same order,
//! same serde attributes), and the migration of each into today's live type.
//!
//! bincode is not self-describing: a field added, removed or moved, or a variant moved,
//! changes how every stored byte is read. So these types never change, whatever happens
//! to the live types in `checkpoint`, `engine`, `model`, `plan`, `report` and `diff`; they
//! carry serde derives and, where the live type of format 2 had one, the same field
//! attribute (`TableReport::rows_compared` is `#[serde(default)]`, which bincode ignores:
//! the field is always encoded and always read).
//!
//! Format 1 ([`super::v1`]) migrates into these types, so every older format reaches the
//! live types through the migrations here. When a live struct gains a field, the compiler
//! points at its literal below, and the fix is one line: the field with the value a
//! format-2 record stands for (usually its default). A live enum that gains a variant
//! needs nothing here; one that loses or renames a variant gets its old variant mapped
//! onto what replaced it.

use serde::{Deserialize, Serialize};

use crate::checkpoint as live_checkpoint;
use crate::diff::bisect as live_bisect;
use crate::engine as live_engine;
use crate::model as live_model;
use crate::plan as live_plan;
use crate::report as live_report;

/// A run as stored. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Identity and history.
    pub meta: RunMeta,
    /// Plan, position, counters, errors.
    pub state: RunState,
}

/// Everything about a run except its state. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id.
    pub id: u64,
    /// Config file the run used.
    pub config_path: String,
    /// Fingerprint of that config.
    pub config_fingerprint: u64,
    /// Source description.
    pub source: String,
    /// Target description.
    pub target: String,
    /// Start time.
    pub started_ms: i64,
    /// End time, once finished.
    pub ended_ms: Option<i64>,
    /// Status.
    pub status: RunStatus,
    /// Host of the process running it (or last).
    pub host: String,
    /// Pid of that process.
    pub pid: u32,
    /// History.
    pub events: Vec<RunEvent>,
    /// Why it stopped, if it stopped on an error.
    pub last_error: Option<String>,
    /// Milliseconds spent running, over all processes.
    pub active_ms: u64,
}

/// Lifecycle of a run. Frozen: the layout of format 2; never change.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum RunStatus {
    /// Running, or its process died.
    Running,
    /// Stopped by a signal or a crash.
    Interrupted,
    /// Finished, every table verified.
    Completed,
    /// Finished with errors.
    CompletedWithErrors,
    /// Stopped by an error.
    Failed,
    /// Given up with `--abandon`.
    Abandoned,
}

/// Something that happened to a run. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunEvent {
    /// When.
    pub at_ms: i64,
    /// What.
    pub kind: EventKind,
    /// Process that recorded it.
    pub pid: u32,
    /// Host of that process.
    pub host: String,
    /// Free text.
    pub detail: String,
}

/// Kinds of [`RunEvent`]. Frozen: the layout of format 2; never change.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum EventKind {
    /// Planned and started.
    Started,
    /// Stopped before finishing.
    Interrupted,
    /// Continued by a process.
    Resumed,
    /// Re-planned on resume.
    Replanned,
    /// Finished.
    Finished,
    /// Abandoned.
    Abandoned,
}

/// Everything needed to continue a run. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    /// Tables in config order.
    pub tables: Vec<TableState>,
    /// The work, in order.
    pub tasks: Vec<Task>,
    /// Index of the task in progress.
    pub position: usize,
    /// Cursor inside the task in progress.
    pub cursor: Option<StepCursor>,
    /// Errors so far.
    pub errors: Vec<ErrorEntry>,
    /// Consecutive batches with errors.
    pub failing_batches_in_a_row: u64,
    /// Metric timers.
    pub timers: Timers,
    /// Binary-search totals.
    pub bisect: BisectTotals,
    /// Queries of earlier processes of this run.
    pub queries_before: u64,
    /// Tables whose counts differed at `Verify`: `(table, source, target)`.
    pub mismatched: Vec<(usize, u64, u64)>,
}

/// One table of a run. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableState {
    /// Counts and plan.
    pub survey: TableSurvey,
    /// Statistics so far.
    pub report: TableReport,
    /// Columns fingerprint when planned.
    pub mapping_fingerprint: u64,
    /// Counts matched after the steps and no row was refused or failed.
    pub verified: bool,
}

/// What the planner learnt about one table. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableSurvey {
    /// Source rows.
    pub source_count: u64,
    /// Target rows.
    pub target_count: u64,
    /// Where incremental reads start.
    pub watermark: Option<Value>,
    /// Largest source modify ID before the run.
    pub source_max_modify: Option<Value>,
    /// Source rows modified after the watermark.
    pub changed: Option<u64>,
    /// Source rows whose modify ID is NULL.
    pub null_modify: u64,
    /// The plan.
    pub plan: Plan,
}

/// Steps for one table and why. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Steps in execution order.
    pub steps: Vec<StepKind>,
    /// The reason string.
    pub reason: String,
}

/// One kind of work on a table. Frozen: the layout of format 2; never change.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum StepKind {
    /// Delete target rows missing from the source.
    Delete,
    /// Insert source rows missing from the target.
    Add,
    /// Copy rows modified after the watermark.
    Incremental,
    /// Compare every row.
    Changed,
}

/// Per-table statistics. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Repair steps.
    pub repair: Vec<StepKind>,
    /// Rows inserted.
    pub added: u64,
    /// Rows updated.
    pub modified: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Rows compared equal.
    pub skipped: u64,
    /// Errors recorded for this table.
    pub errors: u64,
    /// Wall time spent on the table.
    pub duration_ms: u64,
    /// Counts matched after the run.
    pub verified: Option<bool>,
    /// Every row was read and compared on both sides in this run. `default` as in the
    /// live type of format 2; bincode still encodes and reads it like any field.
    #[serde(default)]
    pub rows_compared: bool,
}

/// One unit of a run's work. Frozen: the layout of format 2; never change.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Task {
    /// A planned or repair step.
    Step {
        /// Table index.
        table: usize,
        /// The step.
        kind: StepKind,
        /// Scheduled by the verification.
        repair: bool,
    },
    /// Count both sides.
    Verify {
        /// Table index.
        table: usize,
    },
    /// Append repair tasks.
    PlanRepairs,
    /// Count again; add missing rows.
    RepairAdd {
        /// Table index.
        table: usize,
    },
    /// Last count.
    FinalVerify {
        /// Table index.
        table: usize,
    },
}

/// Where a step stands. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StepCursor {
    /// Key-ordered steps: keys up to `after` are done.
    Keys {
        /// Last key done.
        after: Option<Key>,
    },
    /// A binary search and how many found keys are applied.
    Bisect {
        /// The search.
        search: SearchState,
        /// Found keys already applied.
        written: usize,
    },
    /// `incremental`: rows up to `(modify_id, key)` are done.
    Modify {
        /// Modify ID of the last row done.
        modify_id: Option<Value>,
        /// Key of the last row done among those with `modify_id`.
        key: Option<Key>,
    },
    /// Plain copy into an empty table: keys up to `after` are done.
    Copy {
        /// Last key done.
        after: Option<Key>,
    },
}

/// A binary search in progress. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchState {
    /// Ranges still to search.
    pub stack: Vec<Frame>,
    /// Keys found so far.
    pub found: Vec<Key>,
    /// Differences to find.
    pub expected: u64,
    /// Rows of the whole table.
    pub total: u64,
    /// Frames processed.
    pub iterations: u64,
    /// Queries sent.
    pub queries: u64,
    /// Deepest frame processed.
    pub max_depth: u32,
    /// Rows read by direct comparisons.
    pub rows_read: u64,
}

/// One range still to search. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Frame {
    /// Keys of the range.
    pub range: KeyRange,
    /// Source rows in the range.
    pub source_count: u64,
    /// Target rows in the range.
    pub target_count: u64,
    /// Splits from the whole table to this range.
    pub depth: u32,
    /// Upper part of its parent.
    pub upper: bool,
}

/// A half-open key interval `(after, upto]`. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRange {
    /// Exclusive lower bound.
    pub after: Option<Key>,
    /// Inclusive upper bound.
    pub upto: Option<Key>,
}

/// A primary-key value. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
    /// A compound key: its parts in key-column order.
    Parts(Vec<Key>),
    /// A bytes key.
    Bytes(Vec<u8>),
}

/// A cell value. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// Text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// One recorded error. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Category.
    pub kind: ErrorKind,
    /// Table entry name.
    pub table: Option<String>,
    /// Description.
    pub message: String,
}

/// Class of an error. Frozen: the layout of format 2; never change.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Database unavailable, network issues.
    Connection,
    /// Missing tables, incompatible field types.
    Schema,
    /// Constraint violations, invalid values.
    Data,
    /// Unexpected conditions, failed verification.
    Logic,
}

/// Metric timers. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timers {
    /// Reading.
    pub read: Duration,
    /// Upserts.
    pub write: Duration,
    /// Deletes.
    pub delete: Duration,
    /// Comparison and conversion.
    pub compare: Duration,
    /// Binary searches.
    pub bisect: Duration,
}

/// A `std::time::Duration` as serde encodes it: a struct of seconds and nanoseconds.
/// Frozen: the layout of format 2; never change.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Duration {
    /// Whole seconds.
    pub secs: u64,
    /// Nanoseconds past `secs`.
    pub nanos: u32,
}

/// Totals of the binary searches of a run. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BisectTotals {
    /// Searches finished.
    pub searches: u64,
    /// Frames processed.
    pub iterations: u64,
    /// Queries sent.
    pub queries: u64,
    /// Deepest frame.
    pub max_depth: u32,
}

/// A stored watermark. Frozen: the layout of format 2; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatermarkRecord {
    /// What the watermark belongs to.
    pub identity: String,
    /// Largest source modify ID verified in the target.
    pub value: Value,
    /// Run that set it.
    pub run_id: u64,
    /// When.
    pub at_ms: i64,
}

// Migrations into the live types. Each live struct is built with a literal naming every
// field, so a field added to a live type fails to compile here until it gets the value a
// format-2 record stands for.

fn all<A, B: From<A>>(items: Vec<A>) -> Vec<B> {
    items.into_iter().map(B::from).collect()
}

impl From<RunRecord> for live_checkpoint::RunRecord {
    fn from(v: RunRecord) -> Self {
        live_checkpoint::RunRecord { meta: v.meta.into(), state: v.state.into() }
    }
}

impl From<RunMeta> for live_checkpoint::RunMeta {
    fn from(v: RunMeta) -> Self {
        live_checkpoint::RunMeta {
            id: v.id,
            config_path: v.config_path,
            config_fingerprint: v.config_fingerprint,
            source: v.source,
            target: v.target,
            started_ms: v.started_ms,
            ended_ms: v.ended_ms,
            status: v.status.into(),
            host: v.host,
            pid: v.pid,
            events: all(v.events),
            last_error: v.last_error,
            active_ms: v.active_ms,
        }
    }
}

impl From<RunStatus> for live_checkpoint::RunStatus {
    fn from(v: RunStatus) -> Self {
        use live_checkpoint::RunStatus as Live;
        match v {
            RunStatus::Running => Live::Running,
            RunStatus::Interrupted => Live::Interrupted,
            RunStatus::Completed => Live::Completed,
            RunStatus::CompletedWithErrors => Live::CompletedWithErrors,
            RunStatus::Failed => Live::Failed,
            RunStatus::Abandoned => Live::Abandoned,
        }
    }
}

impl From<RunEvent> for live_checkpoint::RunEvent {
    fn from(v: RunEvent) -> Self {
        live_checkpoint::RunEvent { at_ms: v.at_ms, kind: v.kind.into(), pid: v.pid, host: v.host, detail: v.detail }
    }
}

impl From<EventKind> for live_checkpoint::EventKind {
    fn from(v: EventKind) -> Self {
        use live_checkpoint::EventKind as Live;
        match v {
            EventKind::Started => Live::Started,
            EventKind::Interrupted => Live::Interrupted,
            EventKind::Resumed => Live::Resumed,
            EventKind::Replanned => Live::Replanned,
            EventKind::Finished => Live::Finished,
            EventKind::Abandoned => Live::Abandoned,
        }
    }
}

impl From<RunState> for live_engine::RunState {
    fn from(v: RunState) -> Self {
        live_engine::RunState {
            tables: all(v.tables),
            tasks: all(v.tasks),
            position: v.position,
            cursor: v.cursor.map(Into::into),
            errors: all(v.errors),
            failing_batches_in_a_row: v.failing_batches_in_a_row,
            timers: v.timers.into(),
            bisect: v.bisect.into(),
            queries_before: v.queries_before,
            mismatched: v.mismatched,
            // Format 2 did not record retries or reconnections.
            network: Vec::new(),
        }
    }
}

impl From<TableState> for live_engine::TableState {
    fn from(v: TableState) -> Self {
        live_engine::TableState {
            survey: v.survey.into(),
            report: v.report.into(),
            mapping_fingerprint: v.mapping_fingerprint,
            verified: v.verified,
        }
    }
}

impl From<TableSurvey> for live_engine::TableSurvey {
    fn from(v: TableSurvey) -> Self {
        live_engine::TableSurvey {
            source_count: v.source_count,
            target_count: v.target_count,
            watermark: v.watermark.map(Into::into),
            source_max_modify: v.source_max_modify.map(Into::into),
            changed: v.changed,
            null_modify: v.null_modify,
            plan: v.plan.into(),
        }
    }
}

impl From<Plan> for live_plan::Plan {
    fn from(v: Plan) -> Self {
        live_plan::Plan { steps: all(v.steps), reason: v.reason }
    }
}

impl From<StepKind> for live_plan::StepKind {
    fn from(v: StepKind) -> Self {
        use live_plan::StepKind as Live;
        match v {
            StepKind::Delete => Live::Delete,
            StepKind::Add => Live::Add,
            StepKind::Incremental => Live::Incremental,
            StepKind::Changed => Live::Changed,
        }
    }
}

impl From<TableReport> for live_report::TableReport {
    fn from(v: TableReport) -> Self {
        live_report::TableReport {
            name: v.name,
            source_before: v.source_before,
            target_before: v.target_before,
            source_after: v.source_after,
            target_after: v.target_after,
            changed: v.changed,
            plan: v.plan.map(Into::into),
            repair: all(v.repair),
            added: v.added,
            modified: v.modified,
            deleted: v.deleted,
            skipped: v.skipped,
            errors: v.errors,
            duration_ms: v.duration_ms,
            verified: v.verified,
            rows_compared: v.rows_compared,
            retries: 0,
            reconnects: 0,
        }
    }
}

impl From<Task> for live_engine::Task {
    fn from(v: Task) -> Self {
        use live_engine::Task as Live;
        match v {
            Task::Step { table, kind, repair } => Live::Step { table, kind: kind.into(), repair },
            Task::Verify { table } => Live::Verify { table },
            Task::PlanRepairs => Live::PlanRepairs,
            Task::RepairAdd { table } => Live::RepairAdd { table },
            Task::FinalVerify { table } => Live::FinalVerify { table },
        }
    }
}

impl From<StepCursor> for live_engine::StepCursor {
    fn from(v: StepCursor) -> Self {
        use live_engine::StepCursor as Live;
        match v {
            StepCursor::Keys { after } => Live::Keys { after: after.map(Into::into) },
            StepCursor::Bisect { search, written } => Live::Bisect { search: search.into(), written },
            StepCursor::Modify { modify_id, key } => {
                Live::Modify { modify_id: modify_id.map(Into::into), key: key.map(Into::into) }
            }
            StepCursor::Copy { after } => Live::Copy { after: after.map(Into::into) },
        }
    }
}

impl From<SearchState> for live_bisect::SearchState {
    fn from(v: SearchState) -> Self {
        live_bisect::SearchState {
            stack: all(v.stack),
            found: all(v.found),
            expected: v.expected,
            total: v.total,
            iterations: v.iterations,
            queries: v.queries,
            max_depth: v.max_depth,
            rows_read: v.rows_read,
        }
    }
}

impl From<Frame> for live_bisect::Frame {
    fn from(v: Frame) -> Self {
        live_bisect::Frame {
            range: v.range.into(),
            source_count: v.source_count,
            target_count: v.target_count,
            depth: v.depth,
            upper: v.upper,
        }
    }
}

impl From<KeyRange> for live_model::KeyRange {
    fn from(v: KeyRange) -> Self {
        live_model::KeyRange { after: v.after.map(Into::into), upto: v.upto.map(Into::into) }
    }
}

impl From<Key> for live_model::Key {
    fn from(v: Key) -> Self {
        use live_model::Key as Live;
        match v {
            Key::Int(i) => Live::Int(i),
            Key::Text(s) => Live::Text(s),
            Key::Parts(parts) => Live::Parts(all(parts)),
            Key::Bytes(b) => Live::Bytes(b),
        }
    }
}

impl From<Value> for live_model::Value {
    fn from(v: Value) -> Self {
        use live_model::Value as Live;
        match v {
            Value::Null => Live::Null,
            Value::Bool(b) => Live::Bool(b),
            Value::Int(i) => Live::Int(i),
            Value::Float(f) => Live::Float(f),
            Value::Text(s) => Live::Text(s),
            Value::Bytes(b) => Live::Bytes(b),
        }
    }
}

impl From<ErrorEntry> for live_report::ErrorEntry {
    fn from(v: ErrorEntry) -> Self {
        live_report::ErrorEntry { kind: v.kind.into(), table: v.table, message: v.message }
    }
}

impl From<ErrorKind> for live_report::ErrorKind {
    fn from(v: ErrorKind) -> Self {
        use live_report::ErrorKind as Live;
        match v {
            ErrorKind::Connection => Live::Connection,
            ErrorKind::Schema => Live::Schema,
            ErrorKind::Data => Live::Data,
            ErrorKind::Logic => Live::Logic,
        }
    }
}

impl From<Timers> for live_engine::Timers {
    fn from(v: Timers) -> Self {
        live_engine::Timers {
            read: v.read.into(),
            write: v.write.into(),
            delete: v.delete.into(),
            compare: v.compare.into(),
            bisect: v.bisect.into(),
        }
    }
}

impl From<Duration> for std::time::Duration {
    fn from(v: Duration) -> Self {
        // Whole seconds first, then the nanoseconds added with saturation: a stored
        // `nanos` past one second cannot make the conversion panic.
        std::time::Duration::from_secs(v.secs).saturating_add(std::time::Duration::from_nanos(u64::from(v.nanos)))
    }
}

impl From<BisectTotals> for live_engine::BisectTotals {
    fn from(v: BisectTotals) -> Self {
        live_engine::BisectTotals {
            searches: v.searches,
            iterations: v.iterations,
            queries: v.queries,
            max_depth: v.max_depth,
        }
    }
}

impl From<WatermarkRecord> for live_checkpoint::WatermarkRecord {
    fn from(v: WatermarkRecord) -> Self {
        live_checkpoint::WatermarkRecord {
            identity: v.identity,
            value: v.value.into(),
            run_id: v.run_id,
            at_ms: v.at_ms,
        }
    }
}
