//! `db-sync daemon`: runs the sync on the config's schedule for as long as the process
//! lives (the manual's scheduling chapter; see [`crate::schedule`]).
//!
//! Each cycle first resumes an unfinished run (one a crash, a signal or a failure left),
//! else starts a new one; a failed run (a database down) is logged and retried at the next
//! scheduled time. Between runs the state store is closed, so `db-sync runs` and `show`
//! work while the daemon sleeps. SIGINT or SIGTERM during a sleep ends the daemon at once
//! (exit 0); during a run the run stops after its current batch, with its checkpoint
//! written, and the daemon exits 130. SIGHUP reads the config again at the next wake-up;
//! a config that does not load is reported and the old one kept.
//!
//! The loop ([`serve`]) neither prints nor exits: it reports through [`Events`], runs
//! through [`Cycle`] and tells time through a [`Clock`], which the CLI, the tests and the
//! metrics exporter each implement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use crate::cli::exit;
use crate::config::{Config, ConfigError};
use crate::runner::{RunOutcome, Stopper};
use crate::schedule::{Clock, Schedule, next_chunk, remaining_text};

/// What the daemon reports. Lines are the manual's ("Sync complete. Sleeping 3600
/// seconds until next run...").
pub trait Events: Send + Sync {
    /// One line for the user.
    fn say(&self, line: &str);
    /// A run starts at `at`.
    fn run_started(&self, _at: Timestamp) {}
    /// A run that started at `started` ended after `took` with `outcome`.
    fn run_ended(&self, _outcome: &RunOutcome, _started: Timestamp, _took: Duration) {}
    /// The next run starts at `at` (`None`: no further run).
    fn next_run(&self, _at: Option<Timestamp>) {}
}

/// One sync cycle: resume an unfinished run, else start a new one.
#[async_trait::async_trait(?Send)]
pub trait Cycle {
    /// Runs one cycle with `config`; a signal reaches it through `stopper`.
    async fn run(&mut self, config: &Config, stopper: &Stopper) -> RunOutcome;
}

/// How the daemon is stopped and told to reload.
#[derive(Clone)]
pub struct Control {
    /// SIGINT/SIGTERM handling, shared with the runs.
    pub stopper: Stopper,
    /// Set by SIGHUP: read the config again at the next wake-up.
    pub reload: Arc<AtomicBool>,
}

impl Control {
    /// A control no signal reaches (see [`Control::listen`]).
    pub fn new() -> Control {
        Control { stopper: Stopper::new(Arc::new(AtomicBool::new(false))), reload: Arc::new(AtomicBool::new(false)) }
    }

    /// Listens for SIGINT, SIGTERM and (on Unix) SIGHUP for the rest of the process.
    pub fn listen(&self) {
        self.stopper.listen();
        #[cfg(unix)]
        {
            let reload = Arc::clone(&self.reload);
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(mut hangup) => {
                    tokio::spawn(async move {
                        while hangup.recv().await.is_some() {
                            reload.store(true, Ordering::SeqCst);
                            tracing::warn!("SIGHUP: the config is read again at the next wake-up");
                        }
                    });
                }
                Err(e) => tracing::warn!("cannot listen for SIGHUP (config reloads): {e}"),
            }
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Control::new()
    }
}

/// Runs cycles on `config`'s schedule until a signal; `load` reads the config again after
/// a SIGHUP. Returns the process exit code: 0 when stopped while sleeping, 130 when a run
/// was interrupted, and with no schedule ([`Schedule::Once`]) the one run's code.
pub async fn serve(
    mut config: Config,
    load: &(dyn Fn() -> Result<Config, ConfigError> + Send + Sync),
    cycle: &mut dyn Cycle,
    clock: &dyn Clock,
    control: &Control,
    events: &dyn Events,
) -> u8 {
    let stopper = &control.stopper;
    let mut first = true;
    loop {
        reload_if_asked(&mut config, load, control, events);
        if stopper.stop.load(Ordering::SeqCst) {
            return exit::OK;
        }
        let started = clock.now();
        events.run_started(started);
        stopper.running.store(true, Ordering::SeqCst);
        let outcome = cycle.run(&config, stopper).await;
        stopper.running.store(false, Ordering::SeqCst);
        let ended = clock.now();
        let took = ended.duration_since(started).unsigned_abs();
        events.run_ended(&outcome, started, took);
        let summary = summarize(&outcome, took);
        if outcome.code == exit::INTERRUPTED {
            events.say(&format!("{summary}. Daemon stopped."));
            return exit::INTERRUPTED;
        }
        if stopper.stop.load(Ordering::SeqCst) {
            events.say(&format!("{summary}. Daemon stopped."));
            return exit::OK;
        }
        // A config or schema the first run refuses will not mend by waiting: say so and
        // stop, as `db-sync run` would. Later, the same errors (a table dropped, a config
        // edited badly and reloaded) are retried like any failure.
        if first && outcome.run.is_none() && matches!(outcome.code, exit::CONFIG | exit::SCHEMA) {
            events.say(&format!("{summary}. Fix it and start the daemon again."));
            return outcome.code;
        }
        first = false;
        events.say(&format!("{summary}."));
        crate::release_freed_memory();
        let head = if matches!(outcome.code, exit::OK | exit::COMPLETED_WITH_ERRORS) {
            "Sync complete."
        } else {
            "Sync failed; the next run retries it."
        };
        // Sleep until the next start; a SIGHUP during the run or the sleep reloads the
        // config (now, or at the end of the current chunk) and the next start follows the
        // new schedule.
        let mut head = head.to_string();
        loop {
            reload_if_asked(&mut config, load, control, events);
            let Some(next) = config.run.schedule.next_start(ended) else {
                // Only a config loaded before the daemon checked it can lack a schedule.
                events.say(&format!("{head} No schedule (sleep_seconds or run_at_time): daemon done."));
                events.next_run(None);
                return outcome.code;
            };
            events.next_run(Some(next));
            match sleep_until(next, &config, clock, control, events, &head).await {
                Woke::Due => break,
                Woke::Stopped => {
                    events.say("Stopped while sleeping; no run was in progress.");
                    return exit::OK;
                }
                // Reloaded at the top of this loop; the sleep goes on without "Sync complete."
                Woke::Reload => head = "Sleep goes on.".to_string(),
            }
        }
    }
}

/// Reads the config again when a SIGHUP asked for it. A config that does not load, or
/// has no schedule, is reported and the old one kept.
fn reload_if_asked(
    config: &mut Config,
    load: &(dyn Fn() -> Result<Config, ConfigError> + Send + Sync),
    control: &Control,
    events: &dyn Events,
) {
    if !control.reload.swap(false, Ordering::SeqCst) {
        return;
    }
    match load() {
        Ok(fresh) if matches!(fresh.run.schedule, Schedule::Once) => events.say(&format!(
            "Config not reloaded, the previous one stays in effect: {} sets neither sleep_seconds nor run_at_time; \
             the daemon needs one",
            fresh.path.display()
        )),
        Ok(fresh) => {
            if fresh.run.metrics_listen != config.run.metrics_listen {
                events.say("metrics_listen changed: the listener moves when the daemon starts again.");
            }
            events.say(&format!("Config {} read again.", fresh.path.display()));
            *config = fresh;
        }
        Err(e) => events.say(&format!("Config not reloaded, the previous one stays in effect: {e}")),
    }
}

/// Why a sleep ended.
enum Woke {
    /// The next start is due.
    Due,
    /// A signal asked the daemon to stop.
    Stopped,
    /// A SIGHUP asked for the config to be read again.
    Reload,
}

/// One line on a cycle's outcome: `run 12 completed (3 added, 1 modified, 0 deleted) in
/// 2.1 s`, or why it failed.
fn summarize(outcome: &RunOutcome, took: Duration) -> String {
    let took = humantime::format_duration(Duration::from_millis(took.as_millis() as u64));
    match &outcome.run {
        Some(run) => {
            let (a, m, d) =
                run.report.tables.iter().fold((0, 0, 0), |(a, m, d), t| (a + t.added, m + t.modified, d + t.deleted));
            format!("Run {} {} ({a} added, {m} modified, {d} deleted) in {took}", run.id, run.status.name())
        }
        None => {
            format!("Run failed before it was recorded (exit {}: {})", outcome.code, exit::describe(outcome.code))
        }
    }
}

/// Sleeps until `next` in chunks, with the manual's lines; ends early for a signal or,
/// at the end of a chunk, for a SIGHUP.
async fn sleep_until(
    next: Timestamp,
    config: &Config,
    clock: &dyn Clock,
    control: &Control,
    events: &dyn Events,
    head: &str,
) -> Woke {
    let stopper = &control.stopper;
    let max_chunk = config.run.max_sleep_chunk;
    let remaining = |now: Timestamp| if next > now { next.duration_since(now).unsigned_abs() } else { Duration::ZERO };
    let schedule = &config.run.schedule;
    match schedule {
        Schedule::Daily { zone, .. } => {
            let target = schedule.time_of_day().unwrap_or_default();
            events.say(&format!("{head} Waiting until {target} for next run..."));
            let now = clock.now();
            let hhmm = |t: Timestamp| t.to_zoned_datetime(zone.clone()).strftime("%H:%M").to_string();
            // A day whose clocks jump over the time runs at the jump (crate::schedule).
            let shifted = if hhmm(next) == target {
                String::new()
            } else {
                format!("; {target} does not exist that day, the run starts at {}", hhmm(next))
            };
            events.say(&format!(
                "Current time: {}, target: {target} ({:.1} hours remaining{shifted})",
                hhmm(now),
                remaining(now).as_secs_f64() / 3600.0
            ));
        }
        _ => {
            let secs = remaining(clock.now()).as_secs_f64().round() as u64;
            events.say(&format!("{head} Sleeping {secs} seconds until next run..."));
        }
    }
    loop {
        let left = remaining(clock.now());
        if left.is_zero() {
            break;
        }
        let chunk = next_chunk(left, max_chunk);
        tokio::select! {
            biased;
            _ = stopper.shutdown.cancelled() => return Woke::Stopped,
            _ = clock.sleep(chunk) => {}
        }
        let left = remaining(clock.now());
        if left >= Duration::from_millis(500) {
            events.say(&format!("Sleep progress: {}", remaining_text(left)));
            if control.reload.load(Ordering::SeqCst) {
                return Woke::Reload;
            }
        }
    }
    if stopper.shutdown.is_cancelled() {
        return Woke::Stopped;
    }
    match schedule.time_of_day() {
        Some(target) => events.say(&format!("Target time reached. Starting sync at {target}...")),
        None => events.say("Sleep complete. Starting next sync cycle..."),
    }
    Woke::Due
}

/// The real cycle: the runner's `resume` for an unfinished run (re-planned when the config
/// changed since it was planned, or when its stored plan no longer fits), else `start`.
pub struct RunnerCycle {
    /// `--allow-mass-delete`.
    pub allow_mass_delete: bool,
    /// `--skip-bad-keys`.
    pub skip_bad_keys: bool,
    /// Progress display.
    pub progress: crate::report::ProgressMode,
    /// Where progress is shown.
    pub progress_output: Arc<dyn crate::report::ProgressOutput>,
    /// Where each run's messages and report go.
    pub sink: Arc<dyn crate::runner::RunSink>,
    /// Re-plan the unfinished run at the next resume (its stored plan was refused).
    pub replan_next: bool,
}

#[async_trait::async_trait(?Send)]
impl Cycle for RunnerCycle {
    async fn run(&mut self, config: &Config, stopper: &Stopper) -> RunOutcome {
        let options = crate::engine::RunOptions {
            allow_mass_delete: self.allow_mass_delete,
            skip_bad_keys: self.skip_bad_keys,
            progress: self.progress,
            progress_output: Arc::clone(&self.progress_output),
            stop: Arc::clone(&stopper.stop),
            ..crate::engine::RunOptions::default()
        };
        let store = match crate::runner::open_store(config, &*self.sink) {
            Ok(store) => store,
            Err(code) => return code.into(),
        };
        let unfinished = match store.unfinished_run() {
            Ok(run) => run.map(|r| (r.meta.id, r.meta.config_fingerprint)),
            Err(e) => {
                self.sink.notice(&format!("error: {e}"));
                return crate::runner::store_exit(&e).into();
            }
        };
        let sink = &*self.sink;
        match unfinished {
            Some((id, fingerprint)) => {
                let replan = self.replan_next || fingerprint != config.fingerprint;
                self.replan_next = false;
                let outcome =
                    crate::runner::resume_in(store, config.clone(), options, Some(id), replan, sink, stopper).await;
                if outcome.code == exit::CONFIG && !replan {
                    self.replan_next = true;
                }
                outcome
            }
            None => crate::runner::start_in(store, config.clone(), options, false, sink, stopper).await,
        }
    }
}

#[cfg(test)]
mod tests;
