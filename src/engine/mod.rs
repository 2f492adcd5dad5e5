//! One run: connect → validate schemas → count and read modify IDs → plan → execute a
//! list of tasks (deletes in reverse table order, then adds and changes in config order,
//! each table verified, then repairs) → report.
//!
//! Everything a run needs to continue after a crash lives in [`RunState`]: the plan, the
//! task list, the position in it, the cursor inside the current step, the counters and
//! the errors. The engine hands the state to an [`Observer`] after every committed batch
//! and every finished task; the checkpoint store makes it durable, and
//! [`Engine::execute`] continues from any state it was given.

pub mod steps;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Lookback, TableSpec};
use crate::connector::resilient::{NetworkEvent, NetworkEventKind, NetworkJournal};
use crate::connector::{self, ConnectOptions, Connector, ConnectorError, Side};
use crate::model::{ColumnSchema, Key, KeyRange, TableSchema, TableScope, Value};
use crate::plan::{self, Plan, PlanInput, StepKind};
use crate::report::{ErrorEntry, ErrorKind, Metrics, ProgressMode, RunReport, TableReport};
use crate::transform::TableMapping;

pub use steps::StepCursor;

/// Why a run stopped before finishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A database could not be opened or reached.
    #[error("cannot connect: {0}")]
    Connect(#[source] ConnectorError),
    /// Tables or columns do not fit the config; every problem is listed.
    #[error("schema check failed:\n  - {}", .0.join("\n  - "))]
    Schema(Vec<String>),
    /// A database operation failed in a way the run cannot continue from.
    #[error("{context}: {source}")]
    Database {
        /// What the engine was doing.
        context: String,
        /// The failure.
        #[source]
        source: ConnectorError,
    },
    /// `max_error_count`, `max_error_loop` or `continue_on_error: false` stopped the run.
    #[error("{0}")]
    TooManyErrors(String),
    /// A delete would remove more of a table than `max_delete_percent` allows.
    #[error("{0}")]
    DeleteGuard(String),
    /// Source keys that cannot identify rows (NULL, or shared by several rows); nothing
    /// was written. Each entry names the table, the key and how many rows share it.
    #[error("source keys cannot identify rows, nothing was written:\n  - {}", .0.join("\n  - "))]
    BadKeys(Vec<String>),
    /// A stored plan no longer fits the tables (resume without `--replan`).
    #[error("{0}")]
    PlanInvalid(String),
    /// The checkpoint store failed; the run stops rather than continue unrecorded.
    #[error("checkpoint store: {0}")]
    Checkpoint(String),
    /// The run was asked to stop (signal); it stopped between batches.
    #[error("interrupted")]
    Interrupted,
}

/// Options of one run that do not come from the config file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Table names from `--table`; empty = the config's `sync_table`, or all.
    pub tables: Vec<String>,
    /// Allow deletes beyond `max_delete_percent`.
    pub allow_mass_delete: bool,
    /// Leave out source rows with NULL or shared keys (counted as errors) instead of
    /// refusing their tables.
    pub skip_bad_keys: bool,
    /// Only plan.
    pub plan_only: bool,
    /// Progress display.
    pub progress: ProgressMode,
    /// Where progress is shown (the CLI's stderr display; default nowhere).
    pub progress_output: std::sync::Arc<dyn crate::report::ProgressOutput>,
    /// Set to stop between batches.
    pub stop: Arc<AtomicBool>,
    /// Create missing target tables when the config allows it (runs only; `plan` and
    /// `check` write nothing).
    pub create_tables: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            tables: Vec::new(),
            allow_mass_delete: false,
            skip_bad_keys: false,
            plan_only: false,
            progress: ProgressMode::Auto,
            progress_output: std::sync::Arc::new(crate::report::NoProgress),
            stop: Arc::new(AtomicBool::new(false)),
            create_tables: false,
        }
    }
}

/// Receives the run state after every committed unit of work, so it can be made durable
/// before the next one starts.
pub trait Observer: Send {
    /// The state after a commit or a finished task.
    fn checkpoint(&mut self, state: &RunState) -> Result<(), EngineError>;
}

/// An observer that keeps nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    fn checkpoint(&mut self, _: &RunState) -> Result<(), EngineError> {
        Ok(())
    }
}

/// A table entry ready to sync: its config and its column mapping.
#[derive(Clone, Debug)]
pub struct TableJob {
    /// Config of the entry.
    pub spec: TableSpec,
    /// Column mapping between the two sides.
    pub mapping: TableMapping,
}

impl TableJob {
    /// Fingerprint of the columns on both sides; a resumed run needs the same.
    pub fn mapping_fingerprint(&self) -> u64 {
        let text = format!(
            "{}|{}|{:?}|{:?}|{:?}",
            self.mapping.source.table,
            self.mapping.target.table,
            self.mapping.source.columns,
            self.mapping.target.columns,
            self.mapping.source.filter
        );
        crate::checkpoint::fnv1a(text.as_bytes())
    }
}

/// What the planner learnt about one table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableSurvey {
    /// Source rows.
    pub source_count: u64,
    /// Target rows.
    pub target_count: u64,
    /// Where incremental reads start: the stored watermark, or the target's largest
    /// modify ID when there is none.
    pub watermark: Option<Value>,
    /// Largest source modify ID before the run: the next watermark once the table is
    /// verified.
    pub source_max_modify: Option<Value>,
    /// Source rows modified after the watermark (`None` without a modify column).
    pub changed: Option<u64>,
    /// Source rows whose modify ID is NULL.
    pub null_modify: u64,
    /// The plan.
    pub plan: Plan,
}

/// One table of a run: what was planned and what happened.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableState {
    /// Counts and plan.
    pub survey: TableSurvey,
    /// Statistics so far.
    pub report: TableReport,
    /// Columns fingerprint when planned.
    pub mapping_fingerprint: u64,
    /// Counts matched after the steps and no row was refused or failed: the watermark
    /// may advance.
    pub verified: bool,
}

/// One unit of a run's work, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// A planned step (or, with `repair`, a delete the verification asked for).
    Step {
        /// Index into [`RunState::tables`].
        table: usize,
        /// The step.
        kind: StepKind,
        /// Scheduled by the verification, not the planner.
        repair: bool,
    },
    /// Count both sides; a difference schedules repairs.
    Verify {
        /// Table index.
        table: usize,
    },
    /// Append repair tasks for the tables whose counts differ.
    PlanRepairs,
    /// Count again; add missing rows when the source still has more.
    RepairAdd {
        /// Table index.
        table: usize,
    },
    /// Last count; a difference is an error.
    FinalVerify {
        /// Table index.
        table: usize,
    },
}

/// Metric timers, kept in the run state so a resumed run adds to them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timers {
    /// Reading (both sides).
    pub read: Duration,
    /// Upserts.
    pub write: Duration,
    /// Deletes.
    pub delete: Duration,
    /// In-memory comparison and conversion.
    pub compare: Duration,
    /// Binary searches.
    pub bisect: Duration,
}

/// Totals of the binary searches of a run (the manual's binary-search metrics).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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

/// Everything needed to continue a run: the checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    /// Tables in config order.
    pub tables: Vec<TableState>,
    /// The work, in order.
    pub tasks: Vec<Task>,
    /// Index of the task in progress (`tasks.len()` when done).
    pub position: usize,
    /// Cursor inside the task in progress, once it committed something.
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
    /// Every retry, reconnection and give-up of the resilience layer, oldest first, each
    /// attributed to its table entry where the call was about one.
    pub network: Vec<NetworkEvent>,
}

impl RunState {
    /// True once every task ran.
    pub fn is_finished(&self) -> bool {
        self.position >= self.tasks.len()
    }

    /// Table names, in order.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.report.name.clone()).collect()
    }

    /// Builds the task list of a fresh plan.
    fn initial_tasks(tables: &[TableState]) -> Vec<Task> {
        let mut tasks = Vec::new();
        // Children before parents for deletes, parents before children for the rest.
        for (i, t) in tables.iter().enumerate().rev() {
            if t.survey.plan.steps.contains(&StepKind::Delete) {
                tasks.push(Task::Step { table: i, kind: StepKind::Delete, repair: false });
            }
        }
        for (i, t) in tables.iter().enumerate() {
            for &kind in t.survey.plan.steps.iter().filter(|k| **k != StepKind::Delete) {
                tasks.push(Task::Step { table: i, kind, repair: false });
            }
            tasks.push(Task::Verify { table: i });
        }
        tasks.push(Task::PlanRepairs);
        tasks
    }
}

/// Error policy of a run (from the config).
#[derive(Clone, Copy, Debug)]
pub struct ErrorPolicy {
    max_error_count: usize,
    max_error_loop: u64,
    continue_on_error: bool,
}

impl ErrorPolicy {
    fn new(config: &Config) -> ErrorPolicy {
        ErrorPolicy {
            max_error_count: config.run.max_error_count,
            max_error_loop: config.run.max_error_loop as u64,
            continue_on_error: config.run.continue_on_error,
        }
    }

    /// Records an error of table `table` in `state` and counts it in the table's report;
    /// returns `Err` when the run must stop because of it. The same error again in one run
    /// (a repair re-reads a row the step could not write) is one error, not two: it counts
    /// once against `max_error_count`.
    pub fn record(
        &self,
        state: &mut RunState,
        kind: ErrorKind,
        table: usize,
        message: String,
    ) -> Result<(), EngineError> {
        let name = state.tables[table].report.name.clone();
        if state.errors.iter().any(|e| e.kind == kind && e.table.as_ref() == Some(&name) && e.message == message) {
            tracing::debug!(table = %name, "{message} (again)");
            return Ok(());
        }
        tracing::error!(table = %name, kind = kind.name(), "{message}");
        state.tables[table].report.errors += 1;
        state.errors.push(ErrorEntry { kind, table: Some(name), message });
        if !self.continue_on_error {
            return Err(EngineError::TooManyErrors(
                "stopping at the first error because continue_on_error is false".into(),
            ));
        }
        if state.errors.len() >= self.max_error_count {
            return Err(EngineError::TooManyErrors(format!(
                "maximum error count {} was reached",
                self.max_error_count
            )));
        }
        Ok(())
    }

    /// Notes whether a batch had errors; too many failing batches in a row stop the run.
    pub fn batch_done(&self, state: &mut RunState, had_errors: bool) -> Result<(), EngineError> {
        if had_errors {
            state.failing_batches_in_a_row += 1;
            if state.failing_batches_in_a_row >= self.max_error_loop {
                return Err(EngineError::TooManyErrors(format!(
                    "maximum error loop {} was reached: {} batches in a row had errors",
                    self.max_error_loop, state.failing_batches_in_a_row
                )));
            }
        } else {
            state.failing_batches_in_a_row = 0;
        }
        Ok(())
    }
}

/// Stored watermarks; the engine asks before planning each table.
pub trait Watermarks {
    /// The last verified modify ID of a table entry.
    fn watermark(&self, job: &TableJob) -> Result<Option<Value>, EngineError>;
}

/// No stored watermarks: plans fall back to the target's largest modify ID.
pub struct NoWatermarks;

impl Watermarks for NoWatermarks {
    fn watermark(&self, _: &TableJob) -> Result<Option<Value>, EngineError> {
        Ok(None)
    }
}

/// A connected engine for one config.
pub struct Engine {
    config: Config,
    source: Arc<dyn Connector>,
    target: Arc<dyn Connector>,
    options: RunOptions,
    policy: ErrorPolicy,
    journal: Arc<NetworkJournal>,
    /// Both sides' row counts of tables counted with nothing written since (by table index,
    /// with when they were taken); never checkpointed. See [`Engine::take_fresh_counts`].
    fresh_counts: std::sync::Mutex<std::collections::HashMap<usize, (u64, u64, Instant)>>,
    /// Set by the first [`Engine::close`]; later calls do nothing.
    closed: std::sync::atomic::AtomicBool,
}

/// How long row counts taken with nothing written since stand in for a new count at the
/// start of the next step or verification (over a slow link each count is a round trip).
pub const FRESH_COUNTS: Duration = Duration::from_secs(5);

/// Moves the events of `journal` into `state`: each event about a table of `jobs` (its
/// source table on the source side, its target table on the target side) is named by the
/// table entry and counted in that table's report.
pub fn absorb_network(journal: &NetworkJournal, jobs: &[TableJob], state: &mut RunState) {
    for mut event in journal.drain() {
        let source = event.side == Side::Source.name();
        let index = event.table.as_ref().and_then(|t| {
            jobs.iter().position(|job| if source { &job.spec.source_table == t } else { &job.spec.target_table == t })
        });
        if let Some(i) = index {
            let report = &mut state.tables[i].report;
            event.table = Some(report.name.clone());
            match event.kind {
                NetworkEventKind::Retry => report.retries += 1,
                NetworkEventKind::Reconnect => report.reconnects += 1,
                NetworkEventKind::GaveUp => {}
            }
        }
        state.network.push(event);
    }
}

/// The modify ID incremental reads start after: `watermark` lowered by
/// `incremental_lookback` (a distance for numbers, a span of time for timestamps written
/// as text, keeping their spelling so that text comparisons still order them). A lookback
/// that does not fit the modify ID's type (a distance for a timestamp, a duration for a
/// number) or goes out of range is a schema error naming the table: ignoring it would
/// leave the user believing late commits are caught.
pub fn look_back(watermark: Value, lookback: Lookback, table: &str) -> Result<Value, EngineError> {
    use crate::transform::exact::TimeText;
    let lowered = match (&watermark, lookback) {
        (_, Lookback::None) => return Ok(watermark),
        (Value::Int(i), Lookback::Distance(d)) => Some(Value::Int(i.saturating_sub(d))),
        (Value::Float(f), Lookback::Distance(d)) => Some(Value::Float(f - d as f64)),
        (Value::Text(t), Lookback::Distance(d)) => t
            .trim()
            .parse::<bigdecimal::BigDecimal>()
            .ok()
            .map(|n| Value::Text((n - bigdecimal::BigDecimal::from(d)).to_plain_string())),
        (Value::Text(t), Lookback::Duration(span)) => TimeText::parse(t).and_then(|parsed| {
            let date = parsed.date?;
            let dt = date.to_datetime(parsed.time.unwrap_or(jiff::civil::Time::midnight())).checked_sub(span).ok()?;
            // Before year 1 there is no date both backends read.
            if dt.year() < 1 {
                return None;
            }
            let separator = if t.trim().as_bytes().get(10) == Some(&b'T') { "T" } else { " " };
            let offset = parsed.offset.map(|o| o.to_string()).unwrap_or_default();
            Some(Value::Text(format!("{}{separator}{}{offset}", dt.date(), dt.time().strftime("%H:%M:%S%.f"))))
        }),
        _ => None,
    };
    match lowered {
        Some(lowered) => {
            tracing::info!(
                table,
                "incremental reads start at {lowered}, below the watermark {watermark} (incremental_lookback)"
            );
            Ok(lowered)
        }
        None => Err(EngineError::Schema(vec![format!(
            "table {table}: incremental_lookback {} cannot be taken from the modify ID {watermark}: use a whole \
             number for numeric modify IDs and a duration such as \"10m\" for timestamps, within their range",
            match lookback {
                Lookback::Distance(d) => d.to_string(),
                Lookback::Duration(d) => format!("{d:#}"),
                Lookback::None => "0".into(),
            }
        )])),
    }
}

fn db_error(context: impl Into<String>) -> impl FnOnce(ConnectorError) -> EngineError {
    let context = context.into();
    move |source| EngineError::Database { context, source }
}

/// Longest [`Engine::close`] waits for the connectors to end their sessions.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Engine {
    /// Opens both sides.
    pub async fn connect(config: Config, options: RunOptions) -> Result<Engine, EngineError> {
        let sql_log = config.run.sql_log;
        if sql_log.show_sql_values {
            if sql_log.any_statement() {
                tracing::warn!("show_sql_values is on: row values are being logged with the SQL statements");
            } else {
                tracing::warn!("show_sql_values logs nothing without show_sql, debug_sql or show_save_sql");
            }
        }
        let connect_options = ConnectOptions { sql: sql_log };
        let journal = Arc::new(NetworkJournal::default());
        let source = connector::open(&config.source, Side::Source, connect_options, journal.clone())
            .await
            .map_err(EngineError::Connect)?;
        let target = match connector::open(&config.target, Side::Target, connect_options, journal.clone()).await {
            Ok(target) => target,
            Err(e) => {
                // The source's session ends here too (a 4D REST session holds a licence).
                source.close().await;
                return Err(EngineError::Connect(e));
            }
        };
        let policy = ErrorPolicy::new(&config);
        Ok(Engine {
            config,
            source,
            target,
            options,
            policy,
            journal,
            fresh_counts: Default::default(),
            closed: Default::default(),
        })
    }

    /// An engine over connectors opened elsewhere (tests, embedding).
    pub fn with_connectors(
        config: Config,
        source: Arc<dyn Connector>,
        target: Arc<dyn Connector>,
        options: RunOptions,
    ) -> Engine {
        let policy = ErrorPolicy::new(&config);
        Engine {
            config,
            source,
            target,
            options,
            policy,
            journal: Arc::new(NetworkJournal::default()),
            fresh_counts: Default::default(),
            closed: Default::default(),
        }
    }

    /// Records both sides' counts of `table`, taken with nothing written since.
    fn keep_fresh_counts(&self, table: usize, source: u64, target: u64) {
        self.fresh_counts.lock().unwrap_or_else(|p| p.into_inner()).insert(table, (source, target, Instant::now()));
    }

    /// The counts of `table` kept by [`Engine::keep_fresh_counts`] if younger than
    /// [`FRESH_COUNTS`], removed. With `writes`, every other table's counts are dropped too:
    /// a step may write rows another table entry counts (record types sharing a table).
    fn take_fresh_counts(&self, table: usize, writes: bool) -> Option<(u64, u64)> {
        let mut kept = self.fresh_counts.lock().unwrap_or_else(|p| p.into_inner());
        let counts = kept.remove(&table);
        if writes {
            kept.clear();
        }
        counts.filter(|(.., at)| at.elapsed() < FRESH_COUNTS).map(|(s, t, _)| (s, t))
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The run options.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// The table entries this run covers, in config order.
    pub fn selected_tables(&self) -> Vec<&TableSpec> {
        let wanted = if self.options.tables.is_empty() { &self.config.run.sync_table } else { &self.options.tables };
        self.config.tables.iter().filter(|t| wanted.is_empty() || wanted.contains(&t.name)).collect()
    }

    /// Describes both sides of `specs` and builds the column mappings. Collects every
    /// problem before failing, so one `check` shows them all.
    pub async fn prepare_tables(&self, specs: &[&TableSpec]) -> Result<(Vec<TableJob>, Vec<String>), EngineError> {
        let mut jobs = Vec::new();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for spec in specs {
            let source = self
                .source
                .describe(&spec.source_table)
                .await
                .map_err(db_error(format!("describing source table {}", spec.source_table)))?;
            let mut target = self
                .target
                .describe(&spec.target_table)
                .await
                .map_err(db_error(format!("describing target table {}", spec.target_table)))?;
            if let (Some(source), None) = (&source, &target) {
                // A table the source cannot sync is refused before anything is created.
                let columns: Vec<String> = source.columns.iter().map(|c| c.name.clone()).collect();
                let key_indexes: Option<Vec<usize>> =
                    spec.key_fields.iter().map(|k| columns.iter().position(|c| c == k)).collect();
                let refused = key_indexes.and_then(|key_indexes| {
                    let scope = TableScope {
                        table: spec.source_table.clone(),
                        columns: columns.clone(),
                        key_indexes,
                        modify_index: None,
                        filter: Vec::new(),
                        skip_null_keys: false,
                        skip_keys: Vec::new(),
                    };
                    self.source.supports_scope(&scope).err()
                });
                if let Some(why) = refused {
                    problems.push(format!("table {}: source: {why}", spec.name));
                    continue;
                }
                if self.config.run.create_missing_tables && self.options.create_tables && !self.config.target.is_4d() {
                    target = Some(self.create_target_table(spec, source).await?);
                }
            }
            let (Some(source), Some(target)) = (&source, &target) else {
                if source.is_none() {
                    problems.push(format!(
                        "table {}: source table `{}` does not exist in {}",
                        spec.name,
                        spec.source_table,
                        self.source.describe_endpoint()
                    ));
                }
                if target.is_none() {
                    let way_out = if self.config.target.is_4d() {
                        "db-sync does not create 4D tables: create it in 4D"
                    } else if self.config.run.create_missing_tables {
                        "`db-sync run` creates it (create_missing_tables is on); until then `check` and `plan` \
                         cannot plan it"
                    } else {
                        "create it, or set \"create_missing_tables\": true"
                    };
                    problems.push(format!(
                        "table {}: target table `{}` does not exist in {}; {way_out}",
                        spec.name,
                        spec.target_table,
                        self.target.describe_endpoint()
                    ));
                }
                continue;
            };
            match TableMapping::build(spec, source, target) {
                Ok(mapping) => {
                    warnings.extend(mapping.warnings.iter().cloned());
                    for (side, connector, scope) in
                        [("source", &self.source, &mapping.source), ("target", &self.target, &mapping.target)]
                    {
                        if let Err(why) = connector.supports_scope(scope) {
                            problems.push(format!("table {}: {side}: {why}", spec.name));
                        }
                    }
                    jobs.push(TableJob { spec: (*spec).clone(), mapping });
                }
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() { Ok((jobs, warnings)) } else { Err(EngineError::Schema(problems)) }
    }

    /// Most shared keys listed per table.
    const DUPLICATES_LISTED: usize = 1000;

    /// Checks the source keys of `jobs` before anything is written: a row whose key is
    /// NULL, or a key several rows share (a view or a table without a unique key), cannot
    /// be synced by key. Without `--skip-bad-keys` that is [`EngineError::BadKeys`],
    /// listing every problem; with it, such rows are left out of the jobs' scopes (a shared
    /// key on both sides: its target row stays as it is) and returned as
    /// `(table, message)` to be recorded as data errors. The duplicate check reads the
    /// whole key column, so it runs only when the source has no unique index on the key.
    pub async fn check_keys(&self, jobs: &mut [TableJob]) -> Result<Vec<(String, String)>, EngineError> {
        let mut problems = Vec::new();
        let mut skipped = Vec::new();
        for job in jobs.iter_mut() {
            let promise = job.mapping.source_key;
            if !promise.nullable && promise.unique {
                continue;
            }
            let name = job.spec.name.clone();
            let key = job.spec.key_text();
            let found =
                match self.source.key_problems(&job.mapping.source, !promise.unique, Self::DUPLICATES_LISTED).await {
                    Ok(found) => found,
                    Err(ConnectorError::Unsupported { .. }) => {
                        tracing::warn!(table = %name, "the source cannot check its keys for NULL or shared values");
                        continue;
                    }
                    Err(e) => return Err(db_error(format!("checking source keys of {name}"))(e)),
                };
            let mut messages = Vec::new();
            if found.null_rows > 0 {
                messages.push(format!(
                    "table {name}: {} source row(s) have a NULL key `{key}`; a row without a key cannot be synced",
                    found.null_rows
                ));
            }
            for (value, rows) in &found.duplicates {
                messages.push(format!("table {name}: source key `{key}` = {value} is shared by {rows} rows"));
            }
            if messages.is_empty() {
                continue;
            }
            if self.options.skip_bad_keys {
                job.mapping.source.skip_null_keys = found.null_rows > 0;
                let keys: Vec<Key> = found.duplicates.iter().map(|(k, _)| k.clone()).collect();
                job.mapping.source.skip_keys = keys.clone();
                job.mapping.target.skip_keys = keys;
                for message in messages {
                    tracing::warn!(table = %name, "{message}; left out (--skip-bad-keys)");
                    skipped.push((name.clone(), format!("{message}; left out (--skip-bad-keys)")));
                }
            } else {
                problems.extend(messages);
            }
        }
        if !problems.is_empty() {
            problems.push(
                "give every source row a unique, non-NULL key (or leave such rows out with a `where` filter), \
                 or rerun with --skip-bad-keys to leave them out, each counted as an error"
                    .into(),
            );
            return Err(EngineError::BadKeys(problems));
        }
        Ok(skipped)
    }

    /// [`Engine::prepare_tables`] for the selected tables, in dependency order.
    pub async fn prepare(&self) -> Result<(Vec<TableJob>, Vec<String>), EngineError> {
        let ordered = self.ordered_tables().await?;
        self.prepare_tables(&ordered).await
    }

    /// Creates a missing target table from the source schema: the synced columns under
    /// their target names, their types translated, the key as primary key.
    async fn create_target_table(&self, spec: &TableSpec, source: &TableSchema) -> Result<TableSchema, EngineError> {
        let columns: Vec<ColumnSchema> = source
            .columns
            .iter()
            .filter(|c| !spec.exclude_fields.contains(&c.name))
            .map(|c| ColumnSchema { name: spec.target_column(&c.name).to_string(), ..c.clone() })
            .collect();
        let keys: Vec<String> = spec.key_fields.iter().map(|k| spec.target_column(k).to_string()).collect();
        let context = format!("creating target table {}", spec.target_table);
        self.target.create_table(&spec.target_table, &columns, &keys).await.map_err(db_error(context.clone()))?;
        tracing::warn!(table = %spec.name, "created target table `{}` from the source schema", spec.target_table);
        self.target
            .describe(&spec.target_table)
            .await
            .map_err(db_error(context.clone()))?
            .ok_or_else(|| EngineError::Schema(vec![format!("{context}: the table is still missing")]))
    }

    /// The selected tables, parents before children when `table_order` is
    /// `foreign_keys` and the target knows foreign keys between them; config order
    /// otherwise, and for tables in a cycle (reported).
    pub async fn ordered_tables(&self) -> Result<Vec<&TableSpec>, EngineError> {
        let selected = self.selected_tables();
        if self.config.run.table_order == crate::config::TableOrder::Config || selected.len() < 2 {
            return Ok(selected);
        }
        let mut names: Vec<String> = selected.iter().map(|t| t.target_table.clone()).collect();
        names.dedup();
        let foreign_keys =
            self.target.foreign_keys(&names).await.map_err(db_error("reading the target's foreign keys"))?;
        if foreign_keys.is_empty() {
            return Ok(selected);
        }
        let mut placed: Vec<&TableSpec> = Vec::with_capacity(selected.len());
        let mut left = selected.clone();
        while !left.is_empty() {
            // The first remaining entry (in config order) whose parents are all placed.
            let ready = left.iter().position(|t| {
                foreign_keys.iter().filter(|(child, _)| *child == t.target_table).all(|(_, parent)| {
                    !left.iter().any(|o| &o.target_table == parent && o.target_table != t.target_table)
                })
            });
            match ready {
                Some(i) => placed.push(left.remove(i)),
                None => {
                    let cycle: Vec<&str> = left.iter().map(|t| t.name.as_str()).collect();
                    tracing::warn!(
                        "foreign keys form a cycle among {}; these tables keep their config order",
                        cycle.join(", ")
                    );
                    placed.append(&mut left);
                }
            }
        }
        let order: Vec<&str> = placed.iter().map(|t| t.name.as_str()).collect();
        let config_order: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
        if order != config_order {
            tracing::info!("table order from foreign keys: {}", order.join(", "));
        }
        Ok(placed)
    }

    /// Counts rows, reads modify IDs and plans one table.
    pub async fn survey(&self, job: &TableJob, stored_watermark: Option<Value>) -> Result<TableSurvey, EngineError> {
        let name = &job.spec.name;
        let all = KeyRange::all();
        let has_modify = job.mapping.source.modify_index.is_some() && job.mapping.target.modify_index.is_some();
        // Each of these may scan a table, and over a slow link each is a round trip: all run
        // at once (on backends with a pool, on separate connections); only the changed
        // rows' count waits, for the watermark it counts from.
        let watermark_and_changed = async {
            if !has_modify {
                return Ok((None, None));
            }
            let watermark = match stored_watermark {
                Some(w) => Some(w),
                None => self
                    .target
                    .max_modify(&job.mapping.target)
                    .await
                    .map_err(db_error(format!("reading target modify id of {name}")))?,
            };
            let watermark =
                watermark.map(|w| look_back(w, job.spec.settings.incremental_lookback, name)).transpose()?;
            let changed = self
                .source
                .count_changed_since(&job.mapping.source, watermark.as_ref())
                .await
                .map_err(db_error(format!("counting changed rows of {name}")))?;
            Ok::<_, EngineError>((watermark, Some(changed)))
        };
        let (source_count, target_count, watermark_and_changed, source_max, nulls) = tokio::join!(
            self.source.count(&job.mapping.source, &all),
            self.target.count(&job.mapping.target, &all),
            watermark_and_changed,
            async { if has_modify { self.source.max_modify(&job.mapping.source).await } else { Ok(None) } },
            async { if has_modify { self.source.count_null_modify(&job.mapping.source).await } else { Ok(0) } },
        );
        let source_count = source_count.map_err(db_error(format!("counting source rows of {name}")))?;
        let target_count = target_count.map_err(db_error(format!("counting target rows of {name}")))?;
        let (watermark, changed) = watermark_and_changed?;
        let source_max_modify = source_max.map_err(db_error(format!("reading source modify id of {name}")))?;
        let null_modify = nulls.map_err(db_error(format!("counting NULL modify ids of {name}")))?;
        let settings = &job.spec.settings;
        let plan = plan::decide(PlanInput {
            source_count,
            target_count,
            changed_count: changed,
            trust_modify_id: settings.trust_modify_id,
            has_previous_modify_id: watermark.is_some(),
            min_rows_to_sync: settings.min_rows_to_sync,
            check_all_tables: self.config.run.check_all_tables,
        });
        Ok(TableSurvey { source_count, target_count, watermark, source_max_modify, changed, null_modify, plan })
    }

    /// Describes, counts and plans every selected table: a fresh run state.
    pub async fn plan_run(&self, watermarks: &dyn Watermarks) -> Result<(Vec<TableJob>, RunState), EngineError> {
        let (mut jobs, warnings) = self.prepare().await?;
        let skipped = self.check_keys(&mut jobs).await?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        for n in jobs.iter().flat_map(|job| &job.mapping.narrowing) {
            tracing::info!("{n}");
        }
        let mut tables = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let survey = self.survey(job, watermarks.watermark(job)?).await?;
            tracing::info!(
                table = %job.spec.name,
                source_rows = survey.source_count,
                target_rows = survey.target_count,
                changed = survey.changed.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
                plan = %survey.plan.steps_text(),
                "plan: {}",
                survey.plan.reason
            );
            if survey.null_modify > 0 && survey.plan.steps.contains(&StepKind::Incremental) {
                tracing::warn!(
                    table = %job.spec.name,
                    "{} source rows have a NULL {}; incremental reads cannot see them, the `changed` step \
                     (trust_modify_id: false) compares them",
                    survey.null_modify,
                    job.spec.modify_field.as_deref().unwrap_or("modify id")
                );
            }
            let report = TableReport {
                name: job.spec.name.clone(),
                source_before: survey.source_count,
                target_before: survey.target_count,
                changed: survey.changed,
                plan: Some(survey.plan.clone()),
                ..TableReport::default()
            };
            self.keep_fresh_counts(tables.len(), survey.source_count, survey.target_count);
            tables.push(TableState { survey, report, mapping_fingerprint: job.mapping_fingerprint(), verified: false });
        }
        let mut errors = Vec::new();
        for (table, message) in skipped {
            if let Some(t) = tables.iter_mut().find(|t| t.report.name == table) {
                t.report.errors += 1;
            }
            errors.push(ErrorEntry { kind: ErrorKind::Data, table: Some(table), message });
        }
        let tasks = RunState::initial_tasks(&tables);
        let state = RunState {
            tables,
            tasks,
            position: 0,
            cursor: None,
            errors,
            failing_batches_in_a_row: 0,
            timers: Timers::default(),
            bisect: BisectTotals::default(),
            queries_before: 0,
            mismatched: Vec::new(),
            network: Vec::new(),
        };
        Ok((jobs, state))
    }

    /// The table jobs of a stored run, checked against the current schemas: a resumed run
    /// must see the same columns it planned with.
    pub async fn jobs_for(&self, state: &RunState) -> Result<Vec<TableJob>, EngineError> {
        let names = state.table_names();
        let mut specs = Vec::new();
        for name in &names {
            let spec = self.config.tables.iter().find(|t| &t.name == name).ok_or_else(|| {
                EngineError::PlanInvalid(format!("table entry `{name}` of the stored plan is no longer in the config"))
            })?;
            specs.push(spec);
        }
        let (mut jobs, _) = self.prepare_tables(&specs).await?;
        // Checked again: the rows left out must be the same ones (their errors were
        // recorded when the run was planned), and new bad keys stop the run unwritten.
        self.check_keys(&mut jobs).await?;
        for (job, table) in jobs.iter().zip(&state.tables) {
            if job.mapping_fingerprint() != table.mapping_fingerprint {
                return Err(EngineError::PlanInvalid(format!(
                    "the columns of table {} changed since the run was planned",
                    job.spec.name
                )));
            }
        }
        Ok(jobs)
    }

    /// Runs the tasks of `state` from its position to the end, checkpointing through
    /// `observer` after every commit and every task.
    pub async fn execute(
        &self,
        jobs: &[TableJob],
        state: &mut RunState,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        let result = self.execute_tasks(jobs, state, observer).await;
        absorb_network(&self.journal, jobs, state);
        state.queries_before += self.queries();
        self.source.counters().queries.store(0, Ordering::Relaxed);
        self.target.counters().queries.store(0, Ordering::Relaxed);
        result
    }

    fn queries(&self) -> u64 {
        self.source.counters().snapshot().0 + self.target.counters().snapshot().0
    }

    async fn execute_tasks(
        &self,
        jobs: &[TableJob],
        state: &mut RunState,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        while let Some(&task) = state.tasks.get(state.position) {
            if self.options.stop.load(Ordering::Relaxed) {
                return Err(EngineError::Interrupted);
            }
            let started = Instant::now();
            let table = match task {
                Task::Step { table, kind, repair } => {
                    if repair && state.cursor.is_none() && !state.tables[table].report.repair.contains(&kind) {
                        state.tables[table].report.repair.push(kind);
                    }
                    self.run_step(jobs, state, observer, table, kind, repair).await?;
                    if kind == StepKind::Changed {
                        // Only this step reads and compares every row of the key range; the
                        // others compare keys (add, delete) or the changed rows (incremental).
                        state.tables[table].report.rows_compared = true;
                    }
                    Some(table)
                }
                Task::Verify { table } => {
                    if let Some((source, target)) = self.verify(&jobs[table], state, table).await? {
                        state.mismatched.push((table, source, target));
                    } else {
                        // A refused or failed row is read again next run: the watermark
                        // advances only past a table whose rows all landed.
                        state.tables[table].verified = state.tables[table].report.errors == 0;
                    }
                    Some(table)
                }
                Task::PlanRepairs => {
                    // Counts alone cannot show rows deleted while others were added (the
                    // plan then has no delete step), nor adds and deletes in equal numbers.
                    let mut repairs = Vec::new();
                    for &(table, source, target) in state.mismatched.iter().rev() {
                        if target > source {
                            tracing::warn!(
                                table = %jobs[table].spec.name,
                                "counts mismatch after sync (source {source}, target {target}) => delete extras"
                            );
                            repairs.push(Task::Step { table, kind: StepKind::Delete, repair: true });
                        }
                    }
                    for &(table, ..) in &state.mismatched {
                        repairs.push(Task::RepairAdd { table });
                        repairs.push(Task::FinalVerify { table });
                    }
                    state.tasks.extend(repairs);
                    None
                }
                Task::RepairAdd { table } => {
                    let needed = match state.cursor {
                        Some(_) => true,
                        None => match self.verify(&jobs[table], state, table).await? {
                            Some((source, target)) if source > target => {
                                tracing::warn!(
                                    table = %jobs[table].spec.name,
                                    "counts mismatch after sync (source {source}, target {target}) => add missing"
                                );
                                state.tables[table].report.repair.push(StepKind::Add);
                                true
                            }
                            _ => false,
                        },
                    };
                    if needed {
                        self.run_step(jobs, state, observer, table, StepKind::Add, true).await?;
                    }
                    Some(table)
                }
                Task::FinalVerify { table } => {
                    match self.verify(&jobs[table], state, table).await? {
                        Some((source, target)) => {
                            self.policy.record(
                                state,
                                ErrorKind::Logic,
                                table,
                                format!("counts mismatch after sync: source {source}, target {target}"),
                            )?;
                        }
                        None => state.tables[table].verified = state.tables[table].report.errors == 0,
                    }
                    Some(table)
                }
            };
            if let Some(table) = table {
                state.tables[table].report.duration_ms += started.elapsed().as_millis() as u64;
            }
            state.position += 1;
            state.cursor = None;
            absorb_network(&self.journal, jobs, state);
            observer.checkpoint(state)?;
        }
        for table in &mut state.tables {
            if table.survey.plan.steps.is_empty() {
                table.report.source_after = Some(table.survey.source_count);
                table.report.target_after = Some(table.survey.target_count);
                table.verified = table.report.errors == 0;
            }
        }
        Ok(())
    }

    async fn run_step(
        &self,
        jobs: &[TableJob],
        state: &mut RunState,
        observer: &mut dyn Observer,
        table: usize,
        kind: StepKind,
        repair: bool,
    ) -> Result<(), EngineError> {
        let cursor = match state.cursor.clone() {
            Some(cursor) => {
                tracing::info!(table = %jobs[table].spec.name, step = %kind, ?cursor, "resuming step from checkpoint");
                cursor
            }
            None => StepCursor::start(kind, &state.tables[table].survey),
        };
        let mut ctx = steps::StepContext {
            source: self.source.as_ref(),
            target: self.target.as_ref(),
            job: &jobs[table],
            jobs,
            journal: &self.journal,
            table,
            state,
            policy: self.policy,
            observer,
            options: &self.options,
            source_is_4d: self.config.source.is_4d(),
            target_is_4d: self.config.target.is_4d(),
            refused_keys: Vec::new(),
            fresh_counts: self.take_fresh_counts(table, true),
            counts_after: None,
        };
        steps::run_step(&mut ctx, kind, cursor, repair).await?;
        if let Some((source, target)) = ctx.counts_after {
            self.keep_fresh_counts(table, source, target);
        }
        Ok(())
    }

    /// Counts both sides again. Returns `Some((source, target))` when they differ.
    async fn verify(
        &self,
        job: &TableJob,
        state: &mut RunState,
        table: usize,
    ) -> Result<Option<(u64, u64)>, EngineError> {
        let all = KeyRange::all();
        let name = &job.spec.name;
        let (source, target) = match self.take_fresh_counts(table, false) {
            Some(counts) => counts,
            None => {
                let (source, target) = tokio::join!(
                    self.source.count(&job.mapping.source, &all),
                    self.target.count(&job.mapping.target, &all)
                );
                (
                    source.map_err(db_error(format!("verifying source count of {name}")))?,
                    target.map_err(db_error(format!("verifying target count of {name}")))?,
                )
            }
        };
        let report = &mut state.tables[table].report;
        report.source_after = Some(source);
        report.target_after = Some(target);
        report.verified = Some(source == target);
        Ok((source != target).then_some((source, target)))
    }

    /// The report of a run state (as if it ran to its end; set `stopped` otherwise).
    pub fn report(state: &RunState, plan_only: bool, duration_ms: u64) -> RunReport {
        let tables: Vec<TableReport> = state.tables.iter().map(|t| t.report.clone()).collect();
        let sum = |f: fn(&TableReport) -> u64| tables.iter().map(f).sum::<u64>();
        let metrics = Metrics {
            readTimeAll: state.timers.read.as_millis() as u64,
            writeTimeAll: state.timers.write.as_millis() as u64,
            deleteTimeAll: state.timers.delete.as_millis() as u64,
            dataCompareTimeAll: state.timers.compare.as_millis() as u64,
            queryCountAll: state.queries_before,
            recordCountAllTables: sum(|t| t.source_before),
            recordCountAllAdded: sum(|t| t.added),
            recordCountAllModified: sum(|t| t.modified),
            recordCountAllDeleted: sum(|t| t.deleted),
            recordCountAllSkipped: sum(|t| t.skipped),
            binarySearchCountAll: state.bisect.searches,
            binarySearchIterationCount: state.bisect.iterations,
            binarySearchQueryCount: state.bisect.queries,
            binarySearchMaxDepthAll: u64::from(state.bisect.max_depth),
            binarySearchTimeAll: state.timers.bisect.as_millis() as u64,
        };
        RunReport {
            metrics,
            errors: state.errors.clone(),
            tables,
            duration_ms,
            plan_only,
            stopped: None,
            network: state.network.clone(),
        }
    }

    /// Moves the retries and reconnections recorded since the last checkpoint into
    /// `state` (see [`absorb_network`]).
    pub fn absorb_network(&self, jobs: &[TableJob], state: &mut RunState) {
        absorb_network(&self.journal, jobs, state);
    }

    /// Ends both sessions (each within its connection's `timeout`).
    ///
    /// Bounded by [`CLOSE_GRACE`]: a connection stuck on a stalled link (a pool waits for it
    /// to come back) must not hold the exit after a signal; the server ends such sessions
    /// itself. Once: a second call (the runner closes after the run and again on its way
    /// out) does nothing.
    pub async fn close(&self) {
        if self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let both = async { futures::join!(self.source.close(), self.target.close()) };
        if tokio::time::timeout(CLOSE_GRACE, both).await.is_err() {
            tracing::debug!("closing the connections took longer than {CLOSE_GRACE:?}; left to the servers");
        }
    }

    /// The source connector.
    pub fn source(&self) -> &Arc<dyn Connector> {
        &self.source
    }

    /// The target connector.
    pub fn target(&self) -> &Arc<dyn Connector> {
        &self.target
    }

    /// Plans and executes in one go without a checkpoint store (benchmarks, library use).
    pub async fn run(&self, observer: &mut dyn Observer) -> Result<RunReport, (EngineError, RunReport)> {
        let started = Instant::now();
        let plan_only = self.options.plan_only || self.config.run.only_sync_plan;
        let (jobs, mut state) = self.plan_run(&NoWatermarks).await.map_err(|e| (e, RunReport::default()))?;
        if plan_only {
            return Ok(Engine::report(&state, true, started.elapsed().as_millis() as u64));
        }
        let result = self.execute(&jobs, &mut state, observer).await;
        let mut report = Engine::report(&state, false, started.elapsed().as_millis() as u64);
        match result {
            Ok(()) => Ok(report),
            Err(e) => {
                report.stopped = Some(e.to_string());
                Err((e, report))
            }
        }
    }
}

#[cfg(test)]
mod tests;
