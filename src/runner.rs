//! Durable runs: ties the engine to the checkpoint store. Starts a run (refusing while an
//! unfinished one exists), resumes one from its checkpoint, turns SIGINT/SIGTERM into a
//! stop between batches, and records the outcome and history of every run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::checkpoint::{
    EventKind, RunMeta, RunRecord, RunStatus, Store, StoreError, StoreObserver, StoreWatermarks, format_ms, host_name,
    now_ms, watermark_identity,
};
use crate::cli::{engine_exit, exit};
use crate::config::Config;
use crate::engine::{Engine, EngineError, RunOptions, RunState, Task};
use crate::report::RunReport;

/// How the final report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The summary table.
    Text,
    /// The report as JSON.
    Json,
    /// Nothing (benchmarks, embedding).
    Quiet,
}

/// Where the runner's messages go. The library prints nothing itself: the CLI's
/// implementation writes notices to stderr and results to stdout, the daemon's does the
/// same through its own lines, and tests collect them.
pub trait RunSink: Send + Sync {
    /// A message on the run's life or a problem: `resuming run 3 at task 2/5 (...)`,
    /// `error: ...` (the CLI writes it to stderr).
    fn notice(&self, text: &str);
    /// A result line of a command (the CLI writes it to stdout).
    fn result(&self, text: &str);
    /// A run ended or stopped: its report (the CLI prints it as a table or JSON).
    fn finished(&self, run: &FinishedRun);
}

/// Opens the state store of a config, reporting the problem to `sink` on failure.
pub fn open_store(config: &Config, sink: &dyn RunSink) -> Result<Store, u8> {
    open_store_at(&config.run.state_dir, sink)
}

/// Opens the state store in `dir`, printing the problem on failure.
pub fn open_store_at(dir: &std::path::Path, sink: &dyn RunSink) -> Result<Store, u8> {
    let store = Store::open(dir).map_err(|e| {
        sink.notice(&format!("error: {e}"));
        store_exit(&e)
    })?;
    ready_store(store, sink)
}

/// A freshly opened store with the runs of dead processes marked interrupted, reporting
/// the problem to `sink` on failure.
pub fn ready_store(store: Store, sink: &dyn RunSink) -> Result<Store, u8> {
    store.recover_dead_runs().map_err(|e| {
        sink.notice(&format!("error: {e}"));
        store_exit(&e)
    })?;
    Ok(store)
}

/// The exit code for a state store error.
pub fn store_exit(e: &StoreError) -> u8 {
    match e {
        StoreError::NoSuchRun(_) => exit::CONFIG,
        _ => exit::STATE,
    }
}

/// How long a run may take to stop by itself after SIGINT/SIGTERM (it stops at the end of
/// the current batch) before its calls are abandoned.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Turns SIGINT and SIGTERM into a stop: the first sets the engine's `stop` flag (the run
/// stops after the current batch), cancels `shutdown` (a daemon's sleep ends at once) and,
/// if the run has not stopped [`STOP_GRACE`] later (a call stuck on a stalled link, a long
/// batch), cancels `abandon`; a second signal cancels it at once. Abandoning drops the
/// calls in flight: the last checkpoint stands, as after a crash, and `db-sync resume`
/// continues from it.
#[derive(Clone)]
pub struct Stopper {
    /// The engine's stop flag.
    pub stop: Arc<AtomicBool>,
    /// Cancelled when the calls in flight are to be abandoned.
    pub abandon: CancellationToken,
    /// Cancelled at the first signal: waits and sleeps end at once.
    pub shutdown: CancellationToken,
    /// Whether a run is in progress (a daemon between runs has none).
    pub running: Arc<AtomicBool>,
}

impl Stopper {
    /// A stopper that no signal reaches yet (see [`Stopper::listen`]); no run in progress.
    pub fn new(stop: Arc<AtomicBool>) -> Stopper {
        Stopper {
            stop,
            abandon: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A stopper for one run, listening for the signals (needs a tokio runtime).
    pub fn install(stop: Arc<AtomicBool>) -> Stopper {
        let stopper = Stopper::new(stop);
        stopper.running.store(true, Ordering::SeqCst);
        stopper.listen();
        stopper
    }

    /// Listens for SIGINT and SIGTERM for the rest of the process (needs a tokio runtime).
    pub fn listen(&self) {
        let stopper = self.clone();
        let mut signals = Signals::new();
        tokio::spawn(async move {
            loop {
                let signal = signals.next().await;
                stopper.signal(signal);
            }
        });
    }

    /// What a signal named `signal` does (see the type's documentation).
    pub fn signal(&self, signal: &str) {
        self.shutdown.cancel();
        if self.stop.swap(true, Ordering::SeqCst) {
            tracing::warn!("{signal} again: stopping now");
            self.abandon.cancel();
            return;
        }
        if !self.running.load(Ordering::SeqCst) {
            tracing::warn!("{signal}: stopping (no run in progress)");
            self.abandon.cancel();
            return;
        }
        tracing::warn!(
            "{signal}: stopping after the current batch (within {}; send it again to stop at once)",
            humantime::format_duration(STOP_GRACE)
        );
        let abandon = self.abandon.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            abandon.cancel();
        });
    }

    /// Runs `work` unless the calls in flight are abandoned first (`None`).
    pub async fn unless_abandoned<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            result = work => Some(result),
            _ = self.abandon.cancelled() => None,
        }
    }
}

/// SIGINT and SIGTERM as one stream (SIGINT only off Unix).
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening (needs a tokio runtime). If SIGTERM cannot be listened for, only
    /// SIGINT is, with a warning.
    pub fn new() -> Signals {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .inspect_err(|e| tracing::warn!("cannot listen for SIGTERM: {e}"))
                .ok(),
        }
    }

    /// The next signal's name: `SIGINT` or `SIGTERM`.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}

/// What `start` or `resume` did: the exit code and, once a run was recorded and executed,
/// the run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The process exit code ([`crate::cli::exit`]).
    pub code: u8,
    /// The run, when one was executed (not when it failed before it was recorded).
    pub run: Option<FinishedRun>,
}

impl From<u8> for RunOutcome {
    fn from(code: u8) -> RunOutcome {
        RunOutcome { code, run: None }
    }
}

/// A run after this process executed it (to its end, or until it stopped).
#[derive(Debug)]
pub struct FinishedRun {
    /// Run ID.
    pub id: u64,
    /// Its status when it stopped.
    pub status: RunStatus,
    /// Its report (counters include those of earlier attempts of a resumed run).
    pub report: RunReport,
    /// For a resumed run, its report when this process took it over (what earlier
    /// processes did); `None` for a run this process started.
    pub before: Option<RunReport>,
}

/// Exit for a signal that came before the run was recorded: nothing was written.
fn stopped_before_run(sink: &dyn RunSink) -> u8 {
    sink.notice("interrupted before the run started; nothing was written");
    exit::INTERRUPTED
}

/// What a run is doing, for other processes (`owner.json`): its position and its rows so
/// far, such as `task 3/8 (add step of customers, checkpoint ...); 1200 added, 3
/// modified, 0 deleted`.
pub fn describe_activity(state: &RunState) -> String {
    let (added, modified, deleted) = state
        .tables
        .iter()
        .fold((0, 0, 0), |(a, m, d), t| (a + t.report.added, m + t.report.modified, d + t.report.deleted));
    format!("{}; {added} added, {modified} modified, {deleted} deleted", describe_position(state))
}

fn describe_position(state: &RunState) -> String {
    let Some(task) = state.tasks.get(state.position) else { return "after the last task".into() };
    let name = |i: usize| state.tables.get(i).map_or("?".to_string(), |t| t.report.name.clone());
    let what = match task {
        Task::Step { table, kind, repair } => {
            format!("{}{kind} step of {}", if *repair { "repair " } else { "" }, name(*table))
        }
        Task::Verify { table } | Task::FinalVerify { table } => format!("verification of {}", name(*table)),
        Task::PlanRepairs => "repair planning".into(),
        Task::RepairAdd { table } => format!("repair add of {}", name(*table)),
    };
    let cursor = match &state.cursor {
        Some(c) => format!(", checkpoint {c}"),
        None => String::new(),
    };
    format!("task {}/{} ({what}{cursor})", state.position + 1, state.tasks.len())
}

/// `db-sync run`: plans a new run, stores it, executes it.
pub async fn start(
    config: Config,
    options: RunOptions,
    abandon: bool,
    sink: &dyn RunSink,
    stopper: &Stopper,
) -> RunOutcome {
    match open_store(&config, sink) {
        Ok(store) => start_in(store, config, options, abandon, sink, stopper).await,
        Err(code) => code.into(),
    }
}

/// [`start`] in a store the caller opened (the daemon's cycle, which looks for an
/// unfinished run first, opens it once).
pub async fn start_in(
    store: Store,
    config: Config,
    mut options: RunOptions,
    abandon: bool,
    sink: &dyn RunSink,
    stopper: &Stopper,
) -> RunOutcome {
    options.create_tables = true;
    options.stop = Arc::clone(&stopper.stop);
    match store.unfinished_run() {
        Ok(Some(mut run)) => {
            if !abandon {
                sink.notice(&format!(
                    "error: run {} is unfinished ({}, started {}, stopped at {}); continue it with `db-sync resume`, \
                     or give it up and start over with `db-sync run --abandon`",
                    run.meta.id,
                    run.meta.status.name(),
                    format_ms(run.meta.started_ms),
                    describe_position(&run.state)
                ));
                return exit::STATE.into();
            }
            run.meta.status = RunStatus::Abandoned;
            run.meta.ended_ms = Some(now_ms());
            run.meta.event(EventKind::Abandoned, "abandoned by `db-sync run --abandon`");
            if let Err(e) = store.save_run(&run.meta, &run.state) {
                sink.notice(&format!("error: {e}"));
                return exit::STATE.into();
            }
            sink.notice(&format!("run {} abandoned", run.meta.id));
        }
        Ok(None) => {}
        Err(e) => {
            sink.notice(&format!("error: {e}"));
            return store_exit(&e).into();
        }
    }
    let (source, target) = (config.source.describe(), config.target.describe());
    let config_path = config.path.display().to_string();
    let fingerprint = config.fingerprint;
    let engine = match stopper.unless_abandoned(Engine::connect(config, options)).await {
        None => return stopped_before_run(sink).into(),
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            sink.notice(&format!("error: {e}"));
            return engine_exit(&e).into();
        }
    };
    let mut finished = None;
    // Every way out below ends the connectors' sessions (a 4D REST session holds a
    // licence until it idles out), but one after a signal (see the end).
    let code = async {
        let started = Instant::now();
        let watermarks = StoreWatermarks { store: &store, source: source.clone(), target: target.clone() };
        let (jobs, state) = match stopper.unless_abandoned(engine.plan_run(&watermarks)).await {
            None => return stopped_before_run(sink),
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                let code = engine_exit(&e);
                sink.notice(&format!("error: {e}"));
                if code == exit::NETWORK {
                    sink.notice("no run was recorded (planning did not finish); `db-sync run` starts again once the link is back");
                }
                return code;
            }
        };
        let id = match store.next_run_id() {
            Ok(id) => id,
            Err(e) => {
                sink.notice(&format!("error: {e}"));
                return exit::STATE;
            }
        };
        let mut meta = RunMeta {
            id,
            config_path,
            config_fingerprint: fingerprint,
            source,
            target,
            started_ms: now_ms(),
            ended_ms: None,
            status: RunStatus::Running,
            host: host_name(),
            pid: std::process::id(),
            events: Vec::new(),
            last_error: None,
            active_ms: 0,
        };
        meta.event(EventKind::Started, format!("{} tables, {} tasks", state.tables.len(), state.tasks.len()));
        if let Err(e) = store.save_run(&meta, &state).and_then(|_| store.set_owner_run(id)) {
            sink.notice(&format!("error: {e}"));
            return exit::STATE;
        }
        tracing::info!(run = id, "run started");
        execute(&store, &engine, stopper, jobs, meta, state, started, sink, &mut finished).await
    }
    .await;
    RunOutcome { code: finish(&engine, code).await, run: finished }
}

/// `db-sync resume`: continues the newest unfinished run (or `run_id`) from its
/// checkpoint with the same plan, or re-plans it with `replan`.
pub async fn resume(
    config: Config,
    options: RunOptions,
    run_id: Option<u64>,
    replan: bool,
    sink: &dyn RunSink,
    stopper: &Stopper,
) -> RunOutcome {
    match open_store(&config, sink) {
        Ok(store) => resume_in(store, config, options, run_id, replan, sink, stopper).await,
        Err(code) => code.into(),
    }
}

/// [`resume`] in a store the caller opened.
pub async fn resume_in(
    store: Store,
    config: Config,
    mut options: RunOptions,
    run_id: Option<u64>,
    replan: bool,
    sink: &dyn RunSink,
    stopper: &Stopper,
) -> RunOutcome {
    options.create_tables = replan;
    options.stop = Arc::clone(&stopper.stop);
    let run = match run_id {
        Some(id) => store.load_run(id).map(Some),
        None => store.unfinished_run(),
    };
    let RunRecord { mut meta, mut state } = match run {
        Ok(Some(run)) => run,
        Ok(None) => {
            sink.result(&format!("nothing to resume: no unfinished run in {}", store.dir().display()));
            return exit::OK.into();
        }
        Err(e) => {
            sink.notice(&format!("error: {e}"));
            return store_exit(&e).into();
        }
    };
    if !meta.status.is_unfinished() {
        sink.notice(&format!(
            "error: run {} is {} and cannot be resumed; `db-sync run` starts a new run",
            meta.id,
            meta.status.name()
        ));
        return exit::CONFIG.into();
    }
    let fingerprint = config.fingerprint;
    let changed_config = meta.config_fingerprint != fingerprint;
    if changed_config && !replan {
        sink.notice(&format!(
            "error: the config changed since run {} was planned; its plan may not fit any more. \
             `db-sync resume --replan` re-plans the run with the new config (keeping its history and counters), \
             `db-sync run --abandon` starts a new run",
            meta.id
        ));
        return exit::CONFIG.into();
    }
    let (source, target) = (config.source.describe(), config.target.describe());
    let engine = match stopper.unless_abandoned(Engine::connect(config, options)).await {
        None => return stopped_before_run(sink).into(),
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            sink.notice(&format!("error: {e}"));
            return engine_exit(&e).into();
        }
    };
    let mut finished = None;
    // Every way out below ends the connectors' sessions (a 4D REST session holds a
    // licence until it idles out), but one after a signal (see the end).
    let code = async {
        let started = Instant::now();
        let jobs = if replan {
            let watermarks = StoreWatermarks { store: &store, source, target };
            match stopper.unless_abandoned(engine.plan_run(&watermarks)).await {
                None => return stopped_before_run(sink),
                Some(Ok((jobs, fresh))) => {
                    let detail = format!("re-planned at {}", describe_position(&state));
                    state = carry_over(state, fresh);
                    meta.config_fingerprint = fingerprint;
                    meta.event(EventKind::Replanned, detail);
                    jobs
                }
                Some(Err(e)) => {
                    sink.notice(&format!("error: {e}"));
                    return engine_exit(&e);
                }
            }
        } else {
            match stopper.unless_abandoned(engine.jobs_for(&state)).await {
                None => return stopped_before_run(sink),
                Some(Ok(jobs)) => jobs,
                Some(Err(EngineError::PlanInvalid(why))) => {
                    sink.notice(&format!(
                        "error: cannot resume run {} with its stored plan: {why}; `db-sync resume --replan` re-plans it, \
                         `db-sync run --abandon` starts over",
                        meta.id
                    ));
                    return exit::CONFIG;
                }
                Some(Err(e)) => {
                    sink.notice(&format!("error: {e}"));
                    return engine_exit(&e);
                }
            }
        };
        meta.status = RunStatus::Running;
        meta.pid = std::process::id();
        meta.host = host_name();
        meta.last_error = None;
        meta.event(EventKind::Resumed, format!("resumed at {}", describe_position(&state)));
        if let Err(e) = store.save_run(&meta, &state).and_then(|_| store.set_owner_run(meta.id)) {
            sink.notice(&format!("error: {e}"));
            return exit::STATE;
        }
        if replan && changed_config {
            sink.notice(&format!(
                "run {}: the config changed since it was planned; re-planned with the current config",
                meta.id
            ));
        }
        sink.notice(&format!("resuming run {} at {}", meta.id, describe_position(&state)));
        execute(&store, &engine, stopper, jobs, meta, state, started, sink, &mut finished).await
    }
    .await;
    RunOutcome { code: finish(&engine, code).await, run: finished }
}

/// Ends the connectors' sessions and passes `code` on. After a signal it does not: a run
/// that stopped in time closed them in `execute`, and an abandoned one is stuck on a link
/// where a logout would wait too.
async fn finish(engine: &Engine, code: u8) -> u8 {
    if code != exit::INTERRUPTED {
        engine.close().await;
    }
    code
}

/// A fresh plan that keeps the counters, errors and timers of the run it replaces.
fn carry_over(old: RunState, mut fresh: RunState) -> RunState {
    for table in &mut fresh.tables {
        if let Some(previous) = old.tables.iter().find(|t| t.report.name == table.report.name) {
            let (r, p) = (&mut table.report, &previous.report);
            r.source_before = p.source_before;
            r.target_before = p.target_before;
            r.added += p.added;
            r.modified += p.modified;
            r.deleted += p.deleted;
            r.skipped += p.skipped;
            r.errors += p.errors;
            r.duration_ms += p.duration_ms;
            r.retries += p.retries;
            r.reconnects += p.reconnects;
        }
    }
    fresh.errors = old.errors;
    fresh.network = old.network;
    fresh.timers = old.timers;
    fresh.queries_before = old.queries_before;
    fresh
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    store: &Store,
    engine: &Engine,
    stopper: &Stopper,
    jobs: Vec<crate::engine::TableJob>,
    mut meta: RunMeta,
    mut state: RunState,
    started: Instant,
    sink: &dyn RunSink,
    finished: &mut Option<FinishedRun>,
) -> u8 {
    // What earlier processes did, for a run taken over (its counters carry over).
    let before = meta
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Resumed))
        .then(|| Engine::report(&state, false, meta.active_ms));
    let identities = jobs.iter().map(|j| watermark_identity(&meta.source, &meta.target, j)).collect();
    let written = state.tables.iter().map(|t| t.verified).collect();
    let active_ms_before = meta.active_ms;
    let mut observer = StoreObserver {
        store,
        meta: &mut meta,
        identities,
        watermarks_written: written,
        active_ms_before,
        started,
        activity_written: None,
    };
    let result = match stopper.unless_abandoned(engine.execute(&jobs, &mut state, &mut observer)).await {
        Some(result) => {
            engine.close().await;
            result
        }
        None => {
            // The calls in flight were dropped, possibly halfway through changing the state
            // in memory: continue from the last checkpoint, as after a crash.
            match store.load_run(meta.id) {
                Ok(stored) => state = stored.state,
                Err(e) => {
                    sink.notice(&format!("error: {e}"));
                    return exit::STATE;
                }
            }
            engine.absorb_network(&jobs, &mut state);
            Err(EngineError::Interrupted)
        }
    };
    meta.active_ms = active_ms_before + started.elapsed().as_millis() as u64;
    let code = match &result {
        Ok(()) => {
            meta.status = if state.errors.is_empty() { RunStatus::Completed } else { RunStatus::CompletedWithErrors };
            meta.ended_ms = Some(now_ms());
            meta.event(EventKind::Finished, format!("{} errors", state.errors.len()));
            if state.errors.is_empty() { exit::OK } else { exit::COMPLETED_WITH_ERRORS }
        }
        Err(EngineError::Interrupted) => {
            meta.status = RunStatus::Interrupted;
            meta.event(EventKind::Interrupted, format!("stopped by a signal at {}", describe_position(&state)));
            exit::INTERRUPTED
        }
        Err(e) => {
            meta.status = RunStatus::Failed;
            meta.last_error = Some(e.to_string());
            meta.event(EventKind::Interrupted, format!("stopped by an error at {}: {e}", describe_position(&state)));
            engine_exit(e)
        }
    };
    if let Err(e) = store.save_run(&meta, &state) {
        sink.notice(&format!("error: {e}"));
    }
    if !meta.status.is_unfinished() {
        let keep = engine.config().run.keep_runs;
        match store.prune(keep) {
            Ok(0) => {}
            Ok(n) => tracing::info!("pruned {n} old runs (keep_runs = {keep})"),
            Err(e) => tracing::warn!("cannot prune old runs: {e}"),
        }
    }
    let mut report: RunReport = Engine::report(&state, false, meta.active_ms);
    report.stopped = match &result {
        Ok(()) => None,
        Err(EngineError::Interrupted) => Some(format!("interrupted by a signal at {}", describe_position(&state))),
        Err(e) => Some(e.to_string()),
    };
    let stopped_note = match &result {
        Ok(()) => None,
        Err(EngineError::Interrupted) => {
            Some(format!("run {} interrupted; `db-sync resume` continues it from its last checkpoint", meta.id))
        }
        Err(e) => {
            Some(format!("error: {e}\nrun {} stopped; fix the cause, then `db-sync resume` continues it", meta.id))
        }
    };
    let run = FinishedRun { id: meta.id, status: meta.status, report, before };
    sink.finished(&run);
    if let Some(note) = stopped_note {
        sink.notice(&note);
    }
    *finished = Some(run);
    code
}
