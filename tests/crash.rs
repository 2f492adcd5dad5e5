//! Crash-exact resume. Deterministic crash points (through `DB_SYNC_FAILPOINT`, which
//! aborts the process like SIGKILL) in every step kind: inside a target transaction,
//! after a target commit but before its checkpoint, and right after a checkpoint. Each
//! crash is followed by `db-sync resume` and a row-by-row comparison; the audit counters
//! show how much work the resume redid. Also: signals, one run at a time, a lock left by
//! a dead process, config changes on resume, retention.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Workspace, assert_same_rows, dump, open, text};

const ITEMS: &str = "CREATE TABLE items (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, modify_id INTEGER
);";
const BATCH: u64 = 100;

fn fill(ws: &Workspace, db: &str, n: u64) {
    ws.db(
        db,
        &format!(
            "{ITEMS}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
             INSERT INTO items SELECT x, 'item ' || x, x % 97, x * 0.25, x FROM c;"
        ),
    );
}

fn config(ws: &Workspace, trust: bool) {
    ws.config(&format!(
        r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}},
            "target": {{"type": "sqlite", "path": "target.sqlite"}},
            "tables": [{{"name": "items", "modify_id_field": "modify_id"}}],
            "batch_size": {BATCH}, "delete_batch_size": {BATCH}, "id_array_batch_size": 700,
            "trust_modify_id": {trust}, "max_delete_percent": 100}}"#
    ));
}

fn assert_equal(ws: &Workspace) {
    let cols = "id, name, qty, price, modify_id";
    let a = dump(&open(&ws.path("source.sqlite")), "items", cols, "");
    let b = dump(&open(&ws.path("target.sqlite")), "items", cols, "");
    assert_same_rows(&a, &b, "items");
}

/// The kinds of step, each set up so the plan is exactly that step, with the number of
/// rows it must change.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Into an empty target table: a plain copy.
    Add,
    /// Into a target table that has some of the rows: key windows compared.
    Fill,
    Delete,
    Incremental,
    Changed,
}

fn setup(kind: Kind) -> (Workspace, &'static str, u64) {
    let ws = Workspace::new();
    match kind {
        Kind::Add => {
            fill(&ws, "source.sqlite", 2000);
            ws.db("target.sqlite", ITEMS);
            config(&ws, false);
            (ws, "added", 2000)
        }
        Kind::Fill => {
            fill(&ws, "source.sqlite", 2000);
            fill(&ws, "target.sqlite", 2000);
            ws.db("target.sqlite", "DELETE FROM items WHERE id % 4 = 0");
            config(&ws, false);
            (ws, "added", 500)
        }
        Kind::Delete => {
            fill(&ws, "source.sqlite", 2000);
            fill(&ws, "target.sqlite", 2000);
            ws.db("source.sqlite", "DELETE FROM items WHERE id % 4 = 0");
            config(&ws, false);
            (ws, "deleted", 500)
        }
        Kind::Incremental => {
            fill(&ws, "source.sqlite", 2000);
            fill(&ws, "target.sqlite", 2000);
            ws.db("source.sqlite", "UPDATE items SET name = name || ' v2', modify_id = 5000 + id WHERE id % 3 = 0");
            config(&ws, true);
            (ws, "modified", 666)
        }
        Kind::Changed => {
            fill(&ws, "source.sqlite", 2000);
            fill(&ws, "target.sqlite", 2000);
            ws.db("source.sqlite", "UPDATE items SET qty = -1 WHERE id % 3 = 0");
            config(&ws, false);
            (ws, "modified", 666)
        }
    }
}

fn run_json(ws: &Workspace, args: &[&str], failpoint: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_db-sync"));
    cmd.args(args).current_dir(ws.dir.path()).env("NO_COLOR", "1");
    match failpoint {
        Some(f) => cmd.env("DB_SYNC_FAILPOINT", f),
        None => cmd.env_remove("DB_SYNC_FAILPOINT"),
    };
    cmd.output().expect("run db-sync")
}

fn show(ws: &Workspace, run: u64) -> serde_json::Value {
    let out = ws.run(&["show", &run.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("show --json")
}

/// Crashes `kind` at `failpoint`, resumes, and checks the result, the audit counter and
/// the history. Returns the rows the resume redid (counter shortfall).
fn crash_and_resume(kind: Kind, failpoint: &str) -> u64 {
    let (ws, counter, expected) = setup(kind);
    let out = run_json(&ws, &["run", "--progress", "off"], Some(failpoint));
    assert!(!out.status.success(), "{kind:?} {failpoint}: run should have crashed\n{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"), "{}", text(&out));

    let out = run_json(&ws, &["resume", "--progress", "off"], None);
    assert_eq!(out.status.code(), Some(0), "{kind:?} {failpoint}: resume\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming run 1 at task 1/"), "{kind:?} {failpoint}: {stderr}");
    if failpoint.starts_with("after_checkpoint") {
        assert!(stderr.contains("checkpoint after"), "resumed from a cursor: {stderr}");
    }
    assert_equal(&ws);

    let detail = show(&ws, 1);
    assert_eq!(detail["run"]["status"], "completed", "{detail}");
    assert_eq!(detail["run"]["interruptions"], 1, "{detail}");
    let done = detail["tables"][0][counter].as_u64().unwrap();
    assert!(done <= expected, "{kind:?} {failpoint}: {counter} {done} > {expected}");
    let redone = expected - done;
    match failpoint.split(':').next().unwrap() {
        // The batch in flight rolled back, or its checkpoint was written: exact counters.
        "mid_write" | "after_checkpoint" => assert_eq!(redone, 0, "{kind:?} {failpoint}: {detail}"),
        // A plain copy writes the batch again (as an upsert) and counts it.
        _ if kind == Kind::Add => assert_eq!(redone, 0, "{kind:?} {failpoint}: {detail}"),
        // The batch committed but its checkpoint was lost: the resume finds it already
        // applied. At most one batch.
        _ => assert!(redone <= BATCH, "{kind:?} {failpoint}: {redone} rows redone"),
    }
    let runs = ws.run(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "one run, resumed: {runs}");
    redone
}

/// Every step kind, killed inside a target transaction, after a commit before its
/// checkpoint, and after a checkpoint, resumes to a target equal to the source.
#[test]
fn every_step_kind_resumes_from_every_crash_point() {
    let mut report = Vec::new();
    for kind in [Kind::Add, Kind::Fill, Kind::Delete, Kind::Incremental, Kind::Changed] {
        for point in ["mid_write:3", "after_commit:3", "after_checkpoint:3"] {
            let redone = crash_and_resume(kind, point);
            report.push(format!("{kind:?}/{point}: {redone} rows redone"));
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// A crash inside the very first batch (nothing checkpointed after the plan) resumes
/// from the start of the first step.
#[test]
fn crash_in_the_first_batch_resumes() {
    let (ws, ..) = setup(Kind::Add);
    let out = run_json(&ws, &["run", "--progress", "off"], Some("mid_write:1"));
    assert!(!out.status.success());
    let out = run_json(&ws, &["resume", "--progress", "off"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_equal(&ws);
}

/// SIGTERM stops the run between batches with exit code 130; the run is recorded as
/// interrupted and `resume` finishes it.
#[test]
fn sigterm_interrupts_and_resume_finishes() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 200_000);
    ws.db("target.sqlite", ITEMS);
    config(&ws, false);
    let child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["run", "--progress", "off"])
        .current_dir(ws.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_run_started(&ws);
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(0) {
        panic!("the run finished before SIGTERM arrived; make the table larger\n{}", text(&out));
    }
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIGTERM: stopping after the current batch"),
        "{}",
        text(&out)
    );
    assert_eq!(show(&ws, 1)["run"]["status"], "interrupted");

    let out = ws.run(&["resume", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_equal(&ws);
    let detail = show(&ws, 1);
    assert_eq!(detail["run"]["status"], "completed");
    assert_eq!(detail["tables"][0]["added"], 200_000, "nothing lost or counted twice: {detail}");
}

fn wait_for_run_started(ws: &Workspace) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let owner = std::fs::read_to_string(ws.path(".db-sync/owner.json")).unwrap_or_default();
        if owner.contains("\"run_id\":1") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("run did not start");
}

/// While a run is in progress a second process is told who holds it; once that process
/// is dead its lock is taken over and the run resumed.
#[test]
fn one_run_at_a_time_and_dead_lock_takeover() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 200_000);
    ws.db("target.sqlite", ITEMS);
    config(&ws, false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["run", "--progress", "off"])
        .current_dir(ws.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_run_started(&ws);
    let pid = child.id().to_string();
    // Freeze it so it cannot finish while we look.
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run 1 is in progress since"), "{stderr}");
    assert!(stderr.contains(&format!("(pid {pid} on host")), "{stderr}");
    // `runs` says what holds the store instead of the history.
    let out = ws.run(&["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("run 1 is in progress since"), "{}", text(&out));

    child.kill().unwrap();
    child.wait().unwrap();
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(6), "an unfinished run blocks a new one: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run 1 is unfinished (interrupted"), "{}", text(&out));
    let out = ws.run(&["resume", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_equal(&ws);
    let detail = show(&ws, 1);
    let history = detail["history"].to_string();
    assert!(history.contains("ended without finishing"), "{history}");
}

/// A config change since the run was planned makes `resume` refuse and explain;
/// `--replan` re-plans and finishes; `--abandon` gives a run up.
#[test]
fn changed_config_needs_replan() {
    let (ws, ..) = setup(Kind::Add);
    let out = run_json(&ws, &["run", "--progress", "off"], Some("after_checkpoint:4"));
    assert!(!out.status.success());
    ws.config(
        &std::fs::read_to_string(ws.path("db-sync.json"))
            .unwrap()
            .replace("\"batch_size\": 100", "\"batch_size\": 150"),
    );
    let out = ws.run(&["resume", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replan"), "{}", text(&out));
    let out = ws.run(&["resume", "--replan", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_equal(&ws);
    let detail = show(&ws, 1);
    assert!(detail["history"].to_string().contains("replanned"), "{detail}");
    assert_eq!(detail["tables"][0]["added"], 2000, "counters carried over: {detail}");

    // --abandon: crash a second run, then start over.
    ws.db("source.sqlite", "UPDATE items SET qty = -2 WHERE id < 500");
    let out = run_json(&ws, &["run", "--progress", "off"], Some("after_checkpoint:2"));
    assert!(!out.status.success());
    let out = ws.run(&["run", "--abandon", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_equal(&ws);
    assert_eq!(show(&ws, 2)["run"]["status"], "abandoned");
}

/// `keep_runs` prunes the oldest finished runs.
#[test]
fn retention_prunes_old_runs() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 10);
    fill(&ws, "target.sqlite", 10);
    ws.config(
        r#"{"source": {"type": "sqlite", "path": "source.sqlite"},
            "target": {"type": "sqlite", "path": "target.sqlite"},
            "tables": [{"name": "items"}], "keep_runs": 3}"#,
    );
    for _ in 0..5 {
        ws.sync_expect(0);
    }
    let out = ws.run(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u64> = runs.as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![3, 4, 5]);
}
