//! Format 1 of the state store, frozen: copies of every type a format-1 run record
//! (`StoredRun::V1`) and watermark record (`StoredWatermark::V1`) encode, exactly as
//! db-sync wrote them (same fields in the same order, same variants in the same order),
//! and the migration of each into format 2's frozen type.
//!
//! bincode is not self-describing: a field added, removed or moved, or a variant moved,
//! changes how every stored byte is read. So these types never change, whatever happens
//! to the live types in `checkpoint`, `engine`, `model`, `plan`, `report` and `diff`;
//! they carry serde derives and nothing else (no `tag`, `untagged`, `flatten`, `skip` or
//! defaults).
//!
//! Migrations are plain `From` impls into format 2's frozen types ([`super::v2`]), which
//! migrate on into the live types: a format-1 record is read as `v1` → `v2` → live. Both
//! sides of these impls are frozen, so they never change either; when a live type
//! changes, only the migration from the newest frozen format (v2 → live) is edited, and
//! every older format follows through it. Format 2 is format 1 with more variants
//! (`Key::Parts`, `Key::Bytes`) and one more field (`TableReport::rows_compared`), so
//! each impl here is a plain copy except that field, which gets the value a format-1
//! record stands for.

use serde::{Deserialize, Serialize};

use super::v2;

/// A run as stored. Frozen: the layout of format 1; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Identity and history.
    pub meta: RunMeta,
    /// Plan, position, counters, errors.
    pub state: RunState,
}

/// Everything about a run except its state. Frozen: the layout of format 1; never change.
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

/// Lifecycle of a run. Frozen: the layout of format 1; never change.
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

/// Something that happened to a run. Frozen: the layout of format 1; never change.
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

/// Kinds of [`RunEvent`]. Frozen: the layout of format 1; never change.
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

/// Everything needed to continue a run. Frozen: the layout of format 1; never change.
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

/// One table of a run. Frozen: the layout of format 1; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableState {
    /// Counts and plan.
    pub survey: TableSurvey,
    /// Statistics so far.
    pub report: TableReport,
    /// Columns fingerprint when planned.
    pub mapping_fingerprint: u64,
    /// Counts matched after the steps.
    pub verified: bool,
}

/// What the planner learnt about one table. Frozen: the layout of format 1; never change.
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

/// Steps for one table and why. Frozen: the layout of format 1; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Steps in execution order.
    pub steps: Vec<StepKind>,
    /// The reason string.
    pub reason: String,
}

/// One kind of work on a table. Frozen: the layout of format 1; never change.
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

/// Per-table statistics. Frozen: the layout of format 1; never change.
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
}

/// One unit of a run's work. Frozen: the layout of format 1; never change.
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

/// Where a step stands. Frozen: the layout of format 1; never change.
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

/// A binary search in progress. Frozen: the layout of format 1; never change.
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

/// One range still to search. Frozen: the layout of format 1; never change.
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

/// A half-open key interval `(after, upto]`. Frozen: the layout of format 1; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRange {
    /// Exclusive lower bound.
    pub after: Option<Key>,
    /// Inclusive upper bound.
    pub upto: Option<Key>,
}

/// A primary-key value. Frozen: the layout of format 1; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
}

/// A cell value. Frozen: the layout of format 1; never change.
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

/// One recorded error. Frozen: the layout of format 1; never change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Category.
    pub kind: ErrorKind,
    /// Table entry name.
    pub table: Option<String>,
    /// Description.
    pub message: String,
}

/// Class of an error. Frozen: the layout of format 1; never change.
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

/// Metric timers. Frozen: the layout of format 1; never change.
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
/// Frozen: the layout of format 1; never change.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Duration {
    /// Whole seconds.
    pub secs: u64,
    /// Nanoseconds past `secs`.
    pub nanos: u32,
}

/// Totals of the binary searches of a run. Frozen: the layout of format 1; never change.
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

/// A stored watermark. Frozen: the layout of format 1; never change.
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

// Migrations into format 2's frozen types. Each struct is built with a literal naming
// every field.

fn all<A, B: From<A>>(items: Vec<A>) -> Vec<B> {
    items.into_iter().map(B::from).collect()
}

impl From<RunRecord> for v2::RunRecord {
    fn from(v: RunRecord) -> Self {
        v2::RunRecord { meta: v.meta.into(), state: v.state.into() }
    }
}

impl From<RunMeta> for v2::RunMeta {
    fn from(v: RunMeta) -> Self {
        v2::RunMeta {
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

impl From<RunStatus> for v2::RunStatus {
    fn from(v: RunStatus) -> Self {
        use v2::RunStatus as V2;
        match v {
            RunStatus::Running => V2::Running,
            RunStatus::Interrupted => V2::Interrupted,
            RunStatus::Completed => V2::Completed,
            RunStatus::CompletedWithErrors => V2::CompletedWithErrors,
            RunStatus::Failed => V2::Failed,
            RunStatus::Abandoned => V2::Abandoned,
        }
    }
}

impl From<RunEvent> for v2::RunEvent {
    fn from(v: RunEvent) -> Self {
        v2::RunEvent { at_ms: v.at_ms, kind: v.kind.into(), pid: v.pid, host: v.host, detail: v.detail }
    }
}

impl From<EventKind> for v2::EventKind {
    fn from(v: EventKind) -> Self {
        use v2::EventKind as V2;
        match v {
            EventKind::Started => V2::Started,
            EventKind::Interrupted => V2::Interrupted,
            EventKind::Resumed => V2::Resumed,
            EventKind::Replanned => V2::Replanned,
            EventKind::Finished => V2::Finished,
            EventKind::Abandoned => V2::Abandoned,
        }
    }
}

impl From<RunState> for v2::RunState {
    fn from(v: RunState) -> Self {
        v2::RunState {
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
        }
    }
}

impl From<TableState> for v2::TableState {
    fn from(v: TableState) -> Self {
        v2::TableState {
            survey: v.survey.into(),
            report: v.report.into(),
            mapping_fingerprint: v.mapping_fingerprint,
            verified: v.verified,
        }
    }
}

impl From<TableSurvey> for v2::TableSurvey {
    fn from(v: TableSurvey) -> Self {
        v2::TableSurvey {
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

impl From<Plan> for v2::Plan {
    fn from(v: Plan) -> Self {
        v2::Plan { steps: all(v.steps), reason: v.reason }
    }
}

impl From<StepKind> for v2::StepKind {
    fn from(v: StepKind) -> Self {
        use v2::StepKind as V2;
        match v {
            StepKind::Delete => V2::Delete,
            StepKind::Add => V2::Add,
            StepKind::Incremental => V2::Incremental,
            StepKind::Changed => V2::Changed,
        }
    }
}

impl From<TableReport> for v2::TableReport {
    fn from(v: TableReport) -> Self {
        v2::TableReport {
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
            // Format 1 did not record whether rows were compared: claim no more.
            rows_compared: false,
        }
    }
}

impl From<Task> for v2::Task {
    fn from(v: Task) -> Self {
        use v2::Task as V2;
        match v {
            Task::Step { table, kind, repair } => V2::Step { table, kind: kind.into(), repair },
            Task::Verify { table } => V2::Verify { table },
            Task::PlanRepairs => V2::PlanRepairs,
            Task::RepairAdd { table } => V2::RepairAdd { table },
            Task::FinalVerify { table } => V2::FinalVerify { table },
        }
    }
}

impl From<StepCursor> for v2::StepCursor {
    fn from(v: StepCursor) -> Self {
        use v2::StepCursor as V2;
        match v {
            StepCursor::Keys { after } => V2::Keys { after: after.map(Into::into) },
            StepCursor::Bisect { search, written } => V2::Bisect { search: search.into(), written },
            StepCursor::Modify { modify_id, key } => {
                V2::Modify { modify_id: modify_id.map(Into::into), key: key.map(Into::into) }
            }
            StepCursor::Copy { after } => V2::Copy { after: after.map(Into::into) },
        }
    }
}

impl From<SearchState> for v2::SearchState {
    fn from(v: SearchState) -> Self {
        v2::SearchState {
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

impl From<Frame> for v2::Frame {
    fn from(v: Frame) -> Self {
        v2::Frame {
            range: v.range.into(),
            source_count: v.source_count,
            target_count: v.target_count,
            depth: v.depth,
            upper: v.upper,
        }
    }
}

impl From<KeyRange> for v2::KeyRange {
    fn from(v: KeyRange) -> Self {
        v2::KeyRange { after: v.after.map(Into::into), upto: v.upto.map(Into::into) }
    }
}

impl From<Key> for v2::Key {
    fn from(v: Key) -> Self {
        match v {
            Key::Int(i) => v2::Key::Int(i),
            Key::Text(s) => v2::Key::Text(s),
        }
    }
}

impl From<Value> for v2::Value {
    fn from(v: Value) -> Self {
        use v2::Value as V2;
        match v {
            Value::Null => V2::Null,
            Value::Bool(b) => V2::Bool(b),
            Value::Int(i) => V2::Int(i),
            Value::Float(f) => V2::Float(f),
            Value::Text(s) => V2::Text(s),
            Value::Bytes(b) => V2::Bytes(b),
        }
    }
}

impl From<ErrorEntry> for v2::ErrorEntry {
    fn from(v: ErrorEntry) -> Self {
        v2::ErrorEntry { kind: v.kind.into(), table: v.table, message: v.message }
    }
}

impl From<ErrorKind> for v2::ErrorKind {
    fn from(v: ErrorKind) -> Self {
        use v2::ErrorKind as V2;
        match v {
            ErrorKind::Connection => V2::Connection,
            ErrorKind::Schema => V2::Schema,
            ErrorKind::Data => V2::Data,
            ErrorKind::Logic => V2::Logic,
        }
    }
}

impl From<Timers> for v2::Timers {
    fn from(v: Timers) -> Self {
        v2::Timers {
            read: v.read.into(),
            write: v.write.into(),
            delete: v.delete.into(),
            compare: v.compare.into(),
            bisect: v.bisect.into(),
        }
    }
}

impl From<Duration> for v2::Duration {
    fn from(v: Duration) -> Self {
        // Copied as stored; the conversion into `std::time::Duration` (v2 → live)
        // saturates a `nanos` past one second.
        v2::Duration { secs: v.secs, nanos: v.nanos }
    }
}

impl From<BisectTotals> for v2::BisectTotals {
    fn from(v: BisectTotals) -> Self {
        v2::BisectTotals { searches: v.searches, iterations: v.iterations, queries: v.queries, max_depth: v.max_depth }
    }
}

impl From<WatermarkRecord> for v2::WatermarkRecord {
    fn from(v: WatermarkRecord) -> Self {
        v2::WatermarkRecord { identity: v.identity, value: v.value.into(), run_id: v.run_id, at_ms: v.at_ms }
    }
}
