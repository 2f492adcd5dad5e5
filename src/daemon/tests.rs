//! The daemon's loop with a manual clock and a scripted cycle: what it prints, when runs
//! start, how it sleeps, stops and reloads. No test sleeps in real time.

use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::runner::{FinishedRun, RunOutcome};
use crate::schedule::ManualClock;

fn config(schedule: &str) -> Config {
    let text = format!(
        r#"{{
  "source": {{"type": "sqlite", "path": "source.sqlite"}},
  "target": {{"type": "sqlite", "path": "target.sqlite"}},
  "tables": [{{"name": "items"}}],
  "timezone": "Europe/Paris"{schedule}
}}"#
    );
    Config::from_str_at(&text, Path::new("/cfg/db-sync.json"), &|_| None).expect("test config")
}

fn at(text: &str) -> Timestamp {
    text.parse::<jiff::ZonedDateTime>().expect("zoned").timestamp()
}

/// What a test does when a line is said.
type OnLine = Box<dyn Fn(&str) + Send + Sync>;

/// Collects lines; may act on a line (a signal, a reload, a clock jump).
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
    on_line: Option<OnLine>,
    ended: Mutex<Vec<u8>>,
    next: Mutex<Vec<Option<Timestamp>>>,
}

impl Events for Recorder {
    fn say(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_string());
        if let Some(f) = &self.on_line {
            f(line);
        }
    }
    fn run_ended(&self, outcome: &RunOutcome, _started: Timestamp, _took: Duration) {
        self.ended.lock().unwrap().push(outcome.code);
    }
    fn next_run(&self, at: Option<Timestamp>) {
        self.next.lock().unwrap().push(at);
    }
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A cycle that records when it ran (by the clock), takes `took` of clock time, returns
/// the scripted codes in turn and, after `runs` runs, stops the daemon as a SIGTERM that
/// comes while the last run finishes would.
struct Script<'a> {
    clock: &'a ManualClock,
    took: Duration,
    codes: Vec<u8>,
    runs: usize,
    starts: Vec<Timestamp>,
    schedules: Vec<String>,
}

impl<'a> Script<'a> {
    fn new(clock: &'a ManualClock, runs: usize) -> Script<'a> {
        Script { clock, took: Duration::ZERO, codes: Vec::new(), runs, starts: Vec::new(), schedules: Vec::new() }
    }
}

#[async_trait::async_trait(?Send)]
impl Cycle for Script<'_> {
    async fn run(&mut self, config: &Config, stopper: &Stopper) -> RunOutcome {
        self.starts.push(self.clock.now());
        self.schedules.push(format!("{:?}", config.run.schedule));
        self.clock.advance(self.took);
        let code = self.codes.get(self.starts.len() - 1).copied().unwrap_or(exit::OK);
        if self.starts.len() >= self.runs {
            stopper.stop.store(true, Ordering::SeqCst);
        }
        let run = (code <= exit::COMPLETED_WITH_ERRORS).then(|| FinishedRun {
            id: self.starts.len() as u64,
            status: crate::checkpoint::RunStatus::Completed,
            report: crate::report::RunReport::default(),
            before: None,
        });
        RunOutcome { code, run }
    }
}

async fn serve_with(config: Config, script: &mut Script<'_>, clock: &ManualClock, events: &Recorder) -> u8 {
    let control = Control::new();
    serve(
        config,
        &|| Err(ConfigError::Invalid { path: "/x".into(), location: "x".into(), message: "no".into() }),
        script,
        clock,
        &control,
        events,
    )
    .await
}

#[tokio::test]
async fn hourly_in_half_hour_chunks() {
    let clock = ManualClock::new(at("2026-06-01T10:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 3);
    script.took = Duration::from_secs(125);
    let events = Recorder::default();
    let config = config(r#", "sleep_seconds": "1h", "max_sleep_chunk_seconds": 1800"#);
    let code = serve_with(config, &mut script, &clock, &events).await;
    assert_eq!(code, exit::OK);
    // Each run starts an hour after the previous ended.
    let starts: Vec<String> = script.starts.iter().map(|t| t.to_string()).collect();
    assert_eq!(starts, ["2026-06-01T08:00:00Z", "2026-06-01T09:02:05Z", "2026-06-01T10:04:10Z"]);
    assert_eq!(clock.sleeps(), [Duration::from_secs(1800), Duration::from_secs(1800)].repeat(2));
    let lines = events.lines();
    assert_eq!(
        lines[1..4],
        [
            "Sync complete. Sleeping 3600 seconds until next run...",
            "Sleep progress: 1800 seconds remaining (0.5 hours)",
            "Sleep complete. Starting next sync cycle...",
        ]
    );
    assert!(lines.last().unwrap().ends_with("Daemon stopped."), "{lines:?}");
}

/// The manual's "Time-based Progress" lines, to the letter, and the run at 02:00 sharp.
#[tokio::test]
async fn daily_at_two_from_half_past_ten() {
    let clock = ManualClock::new(at("2026-06-01T22:30:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 2);
    let events = Recorder::default();
    let config = config(r#", "run_at_time": "02:00", "max_sleep_chunk_seconds": 3600"#);
    serve_with(config, &mut script, &clock, &events).await;
    assert_eq!(
        events.lines()[1..7],
        [
            "Sync complete. Waiting until 02:00 for next run...",
            "Current time: 22:30, target: 02:00 (3.5 hours remaining)",
            "Sleep progress: 10800 seconds remaining (3.0 hours)",
            "Sleep progress: 7200 seconds remaining (2.0 hours)",
            "Sleep progress: 3600 seconds remaining (1.0 hours)",
            "Target time reached. Starting sync at 02:00...",
        ]
    );
    assert_eq!(script.starts[1], at("2026-06-02T02:00:00+02:00[Europe/Paris]"));
    assert_eq!(*events.next.lock().unwrap(), [Some(at("2026-06-02T02:00:00+02:00[Europe/Paris]"))]);
}

/// The manual's "Sleep Progress Display": 24 h in 1 h chunks.
#[tokio::test]
async fn a_day_in_hour_chunks() {
    let clock = ManualClock::new(at("2026-06-01T00:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 2);
    let events = Recorder::default();
    serve_with(config(r#", "sleep_seconds": 86400"#), &mut script, &clock, &events).await;
    let lines = events.lines();
    assert_eq!(lines[0], "Run 1 completed (0 added, 0 modified, 0 deleted) in 0s.");
    assert_eq!(lines[1], "Sync complete. Sleeping 86400 seconds until next run...");
    for (i, hours) in (1..=23).rev().enumerate() {
        assert_eq!(lines[2 + i], format!("Sleep progress: {} seconds remaining ({hours}.0 hours)", hours * 3600));
    }
    assert_eq!(lines[25], "Sleep complete. Starting next sync cycle...");
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(3600); 24]);
}

/// A clock that jumps two hours during a chunk (a suspended machine): the next chunk is
/// measured anew and the run starts at the target instant, not a chunk late.
#[tokio::test]
async fn wakes_at_the_target_instant() {
    let clock = Arc::new(ManualClock::new(at("2026-06-01T22:30:00+02:00[Europe/Paris]")));
    let mut script = Script::new(&clock, 2);
    let jumper = Arc::clone(&clock);
    let jumped = AtomicBool::new(false);
    let events = Recorder {
        on_line: Some(Box::new(move |line: &str| {
            if line.starts_with("Sleep progress") && !jumped.swap(true, Ordering::SeqCst) {
                jumper.advance(Duration::from_secs(2 * 3600 + 1234));
            }
        })),
        ..Recorder::default()
    };
    let config = config(r#", "run_at_time": "02:00""#);
    serve_with(config, &mut script, &clock, &events).await;
    assert_eq!(script.starts[1], at("2026-06-02T02:00:00+02:00[Europe/Paris]"));
    let sleeps = clock.sleeps();
    assert_eq!(sleeps[0], Duration::from_secs(1800));
    assert_eq!(sleeps[1], Duration::from_secs(3600 - 1234), "the rest of the broken chunk: {sleeps:?}");
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
}

/// Both of 2026's changes in Europe/Paris with `run_at_time` 02:30: on 29 March 02:30
/// does not exist and the run starts at the jump (03:00 CEST); on 25 October it occurs
/// twice and runs once, at the first.
#[tokio::test]
async fn both_dst_days_in_paris() {
    let spring = ManualClock::new(at("2026-03-28T22:00:00+01:00[Europe/Paris]"));
    let mut script = Script::new(&spring, 3);
    let events = Recorder::default();
    serve_with(config(r#", "run_at_time": "02:30""#), &mut script, &spring, &events).await;
    let starts: Vec<String> = script.starts.iter().map(|t| t.to_string()).collect();
    assert_eq!(starts, ["2026-03-28T21:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]);
    assert!(events.lines().contains(&"Current time: 22:00, target: 02:30 (4.0 hours remaining; 02:30 does not exist that day, the run starts at 03:00)".to_string()));

    let autumn = ManualClock::new(at("2026-10-24T22:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&autumn, 3);
    script.took = Duration::from_secs(600);
    let events = Recorder::default();
    serve_with(config(r#", "run_at_time": "02:30""#), &mut script, &autumn, &events).await;
    let starts: Vec<String> = script.starts.iter().map(|t| t.to_string()).collect();
    assert_eq!(starts, ["2026-10-24T20:00:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
}

/// A failed cycle (a database down) is reported and retried at the next scheduled time.
#[tokio::test]
async fn failures_are_retried_on_schedule() {
    let clock = ManualClock::new(at("2026-06-01T10:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 3);
    script.codes = vec![exit::CONNECTION, exit::NETWORK, exit::OK];
    let events = Recorder::default();
    let code = serve_with(config(r#", "sleep_seconds": 60"#), &mut script, &clock, &events).await;
    assert_eq!(code, exit::OK);
    assert_eq!(script.starts.len(), 3);
    assert_eq!(*events.ended.lock().unwrap(), [exit::CONNECTION, exit::NETWORK, exit::OK]);
    let lines = events.lines();
    assert_eq!(lines[0], "Run failed before it was recorded (exit 3: a database could not be reached).");
    assert_eq!(lines[1], "Sync failed; the next run retries it. Sleeping 60 seconds until next run...");
    assert_eq!(lines[3], "Run failed before it was recorded (exit 7: connection lost and retries ran out).");
    assert_eq!(lines[6], "Run 3 completed (0 added, 0 modified, 0 deleted) in 0s. Daemon stopped.");
}

/// SIGTERM while sleeping ends the daemon at once with 0; no further run.
#[tokio::test]
async fn a_signal_during_a_sleep_stops_at_once() {
    let clock = ManualClock::new(at("2026-06-01T10:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 100);
    let control = Control::new();
    let stopper = control.stopper.clone();
    let events = Recorder {
        on_line: Some(Box::new(move |line: &str| {
            if line.starts_with("Sleep progress: 7200") {
                stopper.signal("SIGTERM");
            }
        })),
        ..Recorder::default()
    };
    let config = config(r#", "sleep_seconds": "3h""#);
    let load = || -> Result<Config, ConfigError> { Ok(config.clone()) };
    let code = serve(config.clone(), &load, &mut script, &clock, &control, &events).await;
    assert_eq!(code, exit::OK);
    assert_eq!(script.starts.len(), 1, "no run after the signal");
    assert_eq!(clock.sleeps().len(), 1, "no sleep after the signal");
    assert_eq!(events.lines().last().unwrap(), "Stopped while sleeping; no run was in progress.");
}

/// A signal during a run: the run stops (the cycle returns 130) and the daemon exits 130.
#[tokio::test]
async fn a_signal_during_a_run_exits_130() {
    let clock = ManualClock::new(at("2026-06-01T10:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 100);
    script.codes = vec![exit::OK, exit::INTERRUPTED];
    let events = Recorder::default();
    let code = serve_with(config(r#", "sleep_seconds": 60"#), &mut script, &clock, &events).await;
    assert_eq!(code, exit::INTERRUPTED);
    assert_eq!(script.starts.len(), 2);
}

/// SIGHUP: a config that loads replaces the old one at the next wake-up; one that does not
/// is reported and the old one stays.
#[tokio::test]
async fn sighup_reloads_at_the_next_wake_up() {
    let clock = ManualClock::new(at("2026-06-01T10:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 4);
    let control = Control::new();
    let reload = Arc::clone(&control.reload);
    let events = Recorder {
        on_line: Some(Box::new(move |line: &str| {
            if line.starts_with("Sleep complete") {
                reload.store(true, Ordering::SeqCst);
            }
        })),
        ..Recorder::default()
    };
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let load = || match attempts.fetch_add(1, Ordering::SeqCst) {
        0 => Ok(config(r#", "sleep_seconds": 120"#)),
        _ => Config::from_str_at("{ not json", Path::new("/cfg/db-sync.json"), &|_| None),
    };
    let code = serve(config(r#", "sleep_seconds": 60"#), &load, &mut script, &clock, &control, &events).await;
    assert_eq!(code, exit::OK);
    assert_eq!(clock.sleeps(), [60, 120, 120].map(Duration::from_secs), "the reloaded schedule, then kept");
    let lines = events.lines();
    assert!(lines.iter().any(|l| l == "Config /cfg/db-sync.json read again."), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("Config not reloaded, the previous one stays in effect:")), "{lines:?}");
}

/// A SIGHUP during a long sleep takes effect at the end of the current chunk: the next
/// start follows the new schedule, counted from the end of the last run. A reloaded
/// config without a schedule is refused and the old one kept.
#[tokio::test]
async fn sighup_during_a_sleep_reschedules_at_the_chunk_end() {
    let clock = ManualClock::new(at("2026-06-01T22:30:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 3);
    let control = Control::new();
    let reload = Arc::clone(&control.reload);
    let events = Recorder {
        on_line: Some(Box::new(move |line: &str| {
            if line.starts_with("Sleep progress: 10800") || line.starts_with("Run 2 completed") {
                reload.store(true, Ordering::SeqCst);
            }
        })),
        ..Recorder::default()
    };
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let load = || match attempts.fetch_add(1, Ordering::SeqCst) {
        0 => Ok(config(r#", "sleep_seconds": "2h""#)),
        _ => Ok(config("")),
    };
    serve(config(r#", "run_at_time": "02:00""#), &load, &mut script, &clock, &control, &events).await;
    // Ran at 22:30; the reload at 23:00 made the next start 00:30 (22:30 + 2 h).
    assert_eq!(script.starts[1], at("2026-06-02T00:30:00+02:00[Europe/Paris]"));
    let lines = events.lines();
    assert!(lines.contains(&"Config /cfg/db-sync.json read again.".to_string()), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("sets neither sleep_seconds nor run_at_time")), "{lines:?}");
    // The schedule-less config was refused: the third run is 2 h after the second.
    assert_eq!(script.starts[2], at("2026-06-02T02:30:00+02:00[Europe/Paris]"));
}

/// A config or schema error on the first cycle ends the daemon with its code (it will not
/// mend by waiting); the same error later is retried like any failure.
#[tokio::test]
async fn a_first_run_refused_by_config_or_schema_ends_the_daemon() {
    let clock = ManualClock::new(at("2026-06-01T10:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 100);
    script.codes = vec![exit::SCHEMA];
    let events = Recorder::default();
    let code = serve_with(config(r#", "sleep_seconds": 60"#), &mut script, &clock, &events).await;
    assert_eq!(code, exit::SCHEMA);
    assert_eq!(script.starts.len(), 1);
    assert!(events.lines()[0].ends_with("Fix it and start the daemon again."), "{:?}", events.lines());

    let mut script = Script::new(&clock, 3);
    script.codes = vec![exit::OK, exit::CONFIG, exit::OK];
    let events = Recorder::default();
    let code = serve_with(config(r#", "sleep_seconds": 60"#), &mut script, &clock, &events).await;
    assert_eq!((code, script.starts.len()), (exit::OK, 3));
}

/// A SIGHUP that comes during a run (before the sleep begins) sets the sleep after that
/// run: the next start is counted from the run's end with the new schedule.
#[tokio::test]
async fn sighup_during_a_run_sets_the_following_sleep() {
    let clock = ManualClock::new(at("2026-06-01T10:00:00+02:00[Europe/Paris]"));
    let mut script = Script::new(&clock, 2);
    script.took = Duration::from_secs(30);
    let control = Control::new();
    let reload = Arc::clone(&control.reload);
    let events = Recorder {
        on_line: Some(Box::new(move |line: &str| {
            if line.starts_with("Run 1 completed") {
                reload.store(true, Ordering::SeqCst);
            }
        })),
        ..Recorder::default()
    };
    let load = || Ok(config(r#", "sleep_seconds": "9s""#));
    serve(config(r#", "sleep_seconds": "4s""#), &load, &mut script, &clock, &control, &events).await;
    assert_eq!(script.starts[1], at("2026-06-01T10:00:39+02:00[Europe/Paris]"), "30 s run + 9 s");
    assert_eq!(events.lines()[1], "Config /cfg/db-sync.json read again.");
}
