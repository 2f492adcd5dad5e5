//! One run: connect → validate schemas → count and read modify IDs → plan → execute the
//! steps (deletes in reverse table order, then adds and changes in config order) →
//! verify counts → report. The engine owns the order of work and the error policy; the
//! steps themselves live in [`steps`], all database access behind [`Connector`].

pub mod steps;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::{Config, TableSpec};
use crate::connector::{self, ConnectOptions, Connector, ConnectorError, Side};
use crate::model::{KeyRange, Value};
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
    /// Only plan.
    pub plan_only: bool,
    /// Progress display.
    pub progress: ProgressMode,
    /// Set to stop between batches.
    pub stop: Arc<AtomicBool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            tables: Vec::new(),
            allow_mass_delete: false,
            plan_only: false,
            progress: ProgressMode::Auto,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Receives every committed unit of work, so it can be made durable. The engine calls it
/// after the target committed a batch and before it starts the next one.
pub trait Observer: Send {
    /// The step `step` of table `table` committed up to `cursor`.
    fn committed(
        &mut self,
        table: &str,
        step: StepKind,
        cursor: &StepCursor,
        report: &TableReport,
    ) -> Result<(), EngineError>;
}

/// An observer that keeps nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    fn committed(&mut self, _: &str, _: StepKind, _: &StepCursor, _: &TableReport) -> Result<(), EngineError> {
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

/// What the planner learnt about one table.
#[derive(Clone, Debug)]
pub struct TableSurvey {
    /// Source rows.
    pub source_count: u64,
    /// Target rows.
    pub target_count: u64,
    /// Largest modify ID in the target before the run: where incremental reads start.
    pub watermark: Option<Value>,
    /// Source rows modified after the watermark (`None` without a modify column).
    pub changed: Option<u64>,
    /// Source rows whose modify ID is NULL.
    pub null_modify: u64,
    /// The plan.
    pub plan: Plan,
}

/// Errors of a run and the policy that stops it.
#[derive(Debug)]
pub struct ErrorLog {
    entries: Vec<ErrorEntry>,
    max_error_count: usize,
    max_error_loop: usize,
    continue_on_error: bool,
    failing_batches_in_a_row: usize,
}

impl ErrorLog {
    fn new(config: &Config) -> ErrorLog {
        ErrorLog {
            entries: Vec::new(),
            max_error_count: config.run.max_error_count,
            max_error_loop: config.run.max_error_loop,
            continue_on_error: config.run.continue_on_error,
            failing_batches_in_a_row: 0,
        }
    }

    /// Records an error; returns `Err` when the run must stop because of it.
    pub fn record(&mut self, kind: ErrorKind, table: &str, message: String) -> Result<(), EngineError> {
        tracing::error!(table, kind = kind.name(), "{message}");
        self.entries.push(ErrorEntry { kind, table: Some(table.to_string()), message });
        if !self.continue_on_error {
            return Err(EngineError::TooManyErrors(
                "stopping at the first error because continue_on_error is false".into(),
            ));
        }
        if self.entries.len() >= self.max_error_count {
            return Err(EngineError::TooManyErrors(format!(
                "maximum error count {} was reached",
                self.max_error_count
            )));
        }
        Ok(())
    }

    /// Notes whether a batch had errors; too many failing batches in a row stop the run.
    pub fn batch_done(&mut self, had_errors: bool) -> Result<(), EngineError> {
        if had_errors {
            self.failing_batches_in_a_row += 1;
            if self.failing_batches_in_a_row >= self.max_error_loop {
                return Err(EngineError::TooManyErrors(format!(
                    "maximum error loop {} was reached: {} batches in a row had errors",
                    self.max_error_loop, self.failing_batches_in_a_row
                )));
            }
        } else {
            self.failing_batches_in_a_row = 0;
        }
        Ok(())
    }

    /// Errors so far.
    pub fn entries(&self) -> &[ErrorEntry] {
        &self.entries
    }
}

/// Timers behind the manual's `*TimeAll` metrics.
#[derive(Debug, Default, Clone)]
pub struct Timers {
    /// Reading (both sides).
    pub read: std::time::Duration,
    /// Upserts.
    pub write: std::time::Duration,
    /// Deletes.
    pub delete: std::time::Duration,
    /// In-memory comparison and conversion.
    pub compare: std::time::Duration,
}

/// A connected engine for one config.
pub struct Engine {
    config: Config,
    source: Arc<dyn Connector>,
    target: Arc<dyn Connector>,
    options: RunOptions,
}

fn db_error(context: impl Into<String>) -> impl FnOnce(ConnectorError) -> EngineError {
    let context = context.into();
    move |source| EngineError::Database { context, source }
}

impl Engine {
    /// Opens both sides.
    pub async fn connect(config: Config, options: RunOptions) -> Result<Engine, EngineError> {
        let connect_options = ConnectOptions { show_sql: config.run.show_sql };
        let source =
            connector::open(&config.source, Side::Source, connect_options).await.map_err(EngineError::Connect)?;
        let target =
            connector::open(&config.target, Side::Target, connect_options).await.map_err(EngineError::Connect)?;
        Ok(Engine { config, source, target, options })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The table entries this run covers, in config order.
    pub fn selected_tables(&self) -> Vec<&TableSpec> {
        let wanted = if self.options.tables.is_empty() { &self.config.run.sync_table } else { &self.options.tables };
        self.config.tables.iter().filter(|t| wanted.is_empty() || wanted.contains(&t.name)).collect()
    }

    /// Describes both sides of every selected table and builds the column mappings.
    /// Collects every problem before failing, so one `check` shows them all.
    pub async fn prepare(&self) -> Result<(Vec<TableJob>, Vec<String>), EngineError> {
        let mut jobs = Vec::new();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for spec in self.selected_tables() {
            let source = self
                .source
                .describe(&spec.source_table)
                .await
                .map_err(db_error(format!("describing source table {}", spec.source_table)))?;
            let target = self
                .target
                .describe(&spec.target_table)
                .await
                .map_err(db_error(format!("describing target table {}", spec.target_table)))?;
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
                    problems.push(format!(
                        "table {}: target table `{}` does not exist in {}; create it first",
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
                    jobs.push(TableJob { spec: spec.clone(), mapping });
                }
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() { Ok((jobs, warnings)) } else { Err(EngineError::Schema(problems)) }
    }

    /// Counts rows, reads modify IDs and plans one table.
    pub async fn survey(&self, job: &TableJob) -> Result<TableSurvey, EngineError> {
        let name = &job.spec.name;
        let all = KeyRange::all();
        let source_count = self
            .source
            .count(&job.mapping.source, &all)
            .await
            .map_err(db_error(format!("counting source rows of {name}")))?;
        let target_count = self
            .target
            .count(&job.mapping.target, &all)
            .await
            .map_err(db_error(format!("counting target rows of {name}")))?;
        let has_modify = job.mapping.source.modify_index.is_some() && job.mapping.target.modify_index.is_some();
        let (watermark, changed, null_modify) = if has_modify {
            let watermark = self
                .target
                .max_modify(&job.mapping.target)
                .await
                .map_err(db_error(format!("reading target modify id of {name}")))?;
            let changed = self
                .source
                .count_changed_since(&job.mapping.source, watermark.as_ref())
                .await
                .map_err(db_error(format!("counting changed rows of {name}")))?;
            let nulls = self
                .source
                .count_null_modify(&job.mapping.source)
                .await
                .map_err(db_error(format!("counting NULL modify ids of {name}")))?;
            (watermark, Some(changed), nulls)
        } else {
            (None, None, 0)
        };
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
        Ok(TableSurvey { source_count, target_count, watermark, changed, null_modify, plan })
    }

    /// Plans every selected table and, unless planning only, executes the plans.
    pub async fn run(&self, observer: &mut dyn Observer) -> Result<RunReport, (EngineError, RunReport)> {
        let started = Instant::now();
        let mut report =
            RunReport { plan_only: self.options.plan_only || self.config.run.only_sync_plan, ..RunReport::default() };
        let (jobs, warnings) = self.prepare().await.map_err(|e| (e, report.clone()))?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let mut surveys = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let survey = self.survey(job).await.map_err(|e| (e, report.clone()))?;
            tracing::info!(
                table = %job.spec.name,
                source = survey.source_count,
                target = survey.target_count,
                changed = ?survey.changed,
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
            report.tables.push(TableReport {
                name: job.spec.name.clone(),
                source_before: survey.source_count,
                target_before: survey.target_count,
                changed: survey.changed,
                plan: Some(survey.plan.clone()),
                ..TableReport::default()
            });
            surveys.push(survey);
        }
        if report.plan_only {
            report.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }

        let mut errors = ErrorLog::new(&self.config);
        let mut timers = Timers::default();
        let result = self.execute(&jobs, &surveys, &mut report, &mut errors, &mut timers, observer).await;
        report.errors = errors.entries().to_vec();
        self.fill_metrics(&mut report, &timers);
        report.duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => Ok(report),
            Err(e) => Err((e, report)),
        }
    }

    async fn execute(
        &self,
        jobs: &[TableJob],
        surveys: &[TableSurvey],
        report: &mut RunReport,
        errors: &mut ErrorLog,
        timers: &mut Timers,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        // Children before parents for deletes, parents before children for the rest.
        for i in (0..jobs.len()).rev() {
            if surveys[i].plan.steps.contains(&StepKind::Delete) {
                self.timed_step(
                    &jobs[i],
                    &surveys[i],
                    StepKind::Delete,
                    &mut report.tables[i],
                    errors,
                    timers,
                    observer,
                )
                .await?;
            }
        }
        let mut mismatched = Vec::new();
        for (i, (job, survey)) in jobs.iter().zip(surveys).enumerate() {
            for &kind in survey.plan.steps.iter().filter(|k| **k != StepKind::Delete) {
                self.timed_step(job, survey, kind, &mut report.tables[i], errors, timers, observer).await?;
            }
            if survey.plan.steps.is_empty() {
                report.tables[i].source_after = Some(survey.source_count);
                report.tables[i].target_after = Some(survey.target_count);
            } else if let Some((source, target)) = self.verify(job, &mut report.tables[i]).await? {
                mismatched.push((i, source, target));
            }
        }
        if mismatched.is_empty() {
            return Ok(());
        }

        // Counts alone cannot show rows deleted while others were added (the plan then has
        // no delete step), nor rows added and deleted in equal numbers. Repair what the
        // verification found, deletes children first, then adds parents first.
        for &(i, source, target) in mismatched.iter().rev() {
            if target > source {
                tracing::warn!(
                    table = %jobs[i].spec.name,
                    "counts mismatch after sync (source {source}, target {target}) => delete extras"
                );
                report.tables[i].repair.push(StepKind::Delete);
                self.timed_step(
                    &jobs[i],
                    &surveys[i],
                    StepKind::Delete,
                    &mut report.tables[i],
                    errors,
                    timers,
                    observer,
                )
                .await?;
            }
        }
        for &(i, source, target) in &mismatched {
            let mut counts = Some((source, target));
            if !report.tables[i].repair.is_empty() {
                counts = self.verify(&jobs[i], &mut report.tables[i]).await?;
            }
            if let Some((source, target)) = counts.filter(|(s, t)| s > t) {
                tracing::warn!(
                    table = %jobs[i].spec.name,
                    "counts mismatch after sync (source {source}, target {target}) => add missing"
                );
                report.tables[i].repair.push(StepKind::Add);
                self.timed_step(&jobs[i], &surveys[i], StepKind::Add, &mut report.tables[i], errors, timers, observer)
                    .await?;
                counts = self.verify(&jobs[i], &mut report.tables[i]).await?;
            }
            if let Some((source, target)) = counts {
                report.tables[i].errors += 1;
                errors.record(
                    ErrorKind::Logic,
                    &jobs[i].spec.name,
                    format!("counts mismatch after sync: source {source}, target {target}"),
                )?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn timed_step(
        &self,
        job: &TableJob,
        survey: &TableSurvey,
        kind: StepKind,
        table: &mut TableReport,
        errors: &mut ErrorLog,
        timers: &mut Timers,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        let started = Instant::now();
        let result = self.step(job, survey, kind, table, errors, timers, observer).await;
        table.duration_ms += started.elapsed().as_millis() as u64;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        job: &TableJob,
        survey: &TableSurvey,
        kind: StepKind,
        table: &mut TableReport,
        errors: &mut ErrorLog,
        timers: &mut Timers,
        observer: &mut dyn Observer,
    ) -> Result<(), EngineError> {
        let mut ctx = steps::StepContext {
            source: self.source.as_ref(),
            target: self.target.as_ref(),
            job,
            survey,
            report: table,
            errors,
            timers,
            observer,
            options: &self.options,
            source_is_4d: self.config.source.is_4d(),
            target_is_4d: self.config.target.is_4d(),
        };
        let cursor = StepCursor::start(kind, survey);
        steps::run_step(&mut ctx, kind, cursor).await
    }

    /// Counts both sides again. Returns `Some((source, target))` when they differ.
    async fn verify(&self, job: &TableJob, table: &mut TableReport) -> Result<Option<(u64, u64)>, EngineError> {
        let all = KeyRange::all();
        let name = &job.spec.name;
        let started = Instant::now();
        let source = self
            .source
            .count(&job.mapping.source, &all)
            .await
            .map_err(db_error(format!("verifying source count of {name}")))?;
        let target = self
            .target
            .count(&job.mapping.target, &all)
            .await
            .map_err(db_error(format!("verifying target count of {name}")))?;
        table.duration_ms += started.elapsed().as_millis() as u64;
        table.source_after = Some(source);
        table.target_after = Some(target);
        table.verified = Some(source == target);
        Ok((source != target).then_some((source, target)))
    }

    fn fill_metrics(&self, report: &mut RunReport, timers: &Timers) {
        let (sq, ..) = self.source.counters().snapshot();
        let (tq, ..) = self.target.counters().snapshot();
        let sum = |f: fn(&TableReport) -> u64| report.tables.iter().map(f).sum::<u64>();
        report.metrics = Metrics {
            readTimeAll: timers.read.as_millis() as u64,
            writeTimeAll: timers.write.as_millis() as u64,
            deleteTimeAll: timers.delete.as_millis() as u64,
            dataCompareTimeAll: timers.compare.as_millis() as u64,
            queryCountAll: sq + tq,
            recordCountAllTables: sum(|t| t.source_before),
            recordCountAllAdded: sum(|t| t.added),
            recordCountAllModified: sum(|t| t.modified),
            recordCountAllDeleted: sum(|t| t.deleted),
            recordCountAllSkipped: sum(|t| t.skipped),
        };
    }

    /// The source connector.
    pub fn source(&self) -> &Arc<dyn Connector> {
        &self.source
    }

    /// The target connector.
    pub fn target(&self) -> &Arc<dyn Connector> {
        &self.target
    }

    /// True once a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.options.stop.load(Ordering::Relaxed)
    }
}
