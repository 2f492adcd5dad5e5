//! Stored state survives upgrades. `tests/fixtures/store-v1/` holds a state store written
//! by the release of store format 1, with the SQLite source and target it synced: one
//! completed run (which stored the watermark of `items`) and one run killed inside the
//! incremental step of `items`. The current db-sync opens a copy of it: the history
//! reads, the old watermark still drives the plan, the killed run resumes to a target
//! equal to the source (checked with plain SQL), and the next run uses the watermark the
//! resumed run wrote in the current format.

mod common;

use std::path::Path;

use common::{Workspace, text};
use rusqlite::Connection;

/// Copies a folder recursively (the fixture holds `.db-sync/db/…`).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read fixture folder") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// A workspace holding a copy of the format-1 fixture.
fn fixture_workspace() -> Workspace {
    let ws = Workspace::new();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1"), ws.dir.path());
    ws
}

fn json(ws: &Workspace, args: &[&str]) -> serde_json::Value {
    let out = ws.run(args);
    assert_eq!(out.status.code(), Some(0), "db-sync {args:?}:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("db-sync {args:?}: not JSON ({e}):\n{}", text(&out)))
}

/// Every row of a table, every column, in key order, as SQLite returns them.
fn rows(db: &Path, table: &str, key: &str) -> Vec<Vec<rusqlite::types::Value>> {
    let conn = Connection::open(db).expect("open sqlite");
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {key}")).expect("select");
    let columns = stmt.column_count();
    stmt.query_map([], |row| (0..columns).map(|i| row.get(i)).collect())
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn assert_target_equals_source(ws: &Workspace) {
    for (table, key) in [("items", "id"), ("notes", "code")] {
        let source = rows(&ws.path("source.sqlite"), table, key);
        let target = rows(&ws.path("target.sqlite"), table, key);
        assert!(!source.is_empty(), "{table}: the source has rows");
        assert_eq!(source.len(), target.len(), "{table}: row counts");
        for (s, t) in source.iter().zip(&target) {
            assert_eq!(s, t, "{table}: first differing row");
        }
    }
}

/// `changed` column of a table's line in `db-sync plan`.
fn planned_changes(ws: &Workspace, table: &str) -> String {
    let out = ws.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "db-sync plan:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(table)).expect("table in plan");
    line.split_whitespace().nth(3).expect("changed column").to_string()
}

/// The history of a format-1 store lists both runs with their counters and plans.
#[test]
fn history_of_a_format_1_store_reads() {
    let ws = fixture_workspace();
    let runs = json(&ws, &["runs", "--json"]);
    let runs = runs.as_array().expect("array of runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0]["id"].as_u64(), runs[0]["status"].as_str()), (Some(1), Some("completed")));
    assert_eq!(runs[0]["added"], 500);
    // Killed by the failpoint: the first process to open the store marks it interrupted.
    assert_eq!((runs[1]["id"].as_u64(), runs[1]["status"].as_str()), (Some(2), Some("interrupted")));
    assert_eq!(runs[1]["interruptions"], 1);

    let first = json(&ws, &["show", "1", "--json"]);
    assert_eq!(first["tables"][0]["name"], "items");
    assert_eq!(first["tables"][0]["added"], 300);
    assert_eq!(first["tables"][1]["name"], "notes");
    assert_eq!(first["tables"][1]["counts_match"], true);
    let second = json(&ws, &["show", "2", "--json"]);
    assert_eq!(second["tables"][0]["changed"], 100, "run 2 planned from run 1's watermark: {second}");
    assert_eq!(second["history"][0]["event"], "started");
    assert_eq!(second["history"][1]["event"], "interrupted");
    assert_eq!(second["progress"], "1/7 tasks");
}

/// After the upgrade the watermark stored by the format-1 run still applies, the killed
/// run resumes from its cursor and finishes with the target equal to the source, and
/// the next run reads the watermark that the resumed run wrote.
#[test]
fn interrupted_format_1_run_resumes_after_upgrade() {
    let ws = fixture_workspace();
    // Run 1's watermark (modify_id 300) is what makes 100 rows count as changed; without
    // it the planner would start at the target's largest modify_id (2340) and see none.
    assert_eq!(planned_changes(&ws, "items"), "100");

    let out = ws.run(&["resume", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "resume:\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "resuming run 2 at task 2/7 (incremental step of items, checkpoint after modify id 1100, key 100)"
        ),
        "resumed from the stored cursor:\n{}",
        text(&out)
    );
    assert_target_equals_source(&ws);

    let runs = json(&ws, &["runs", "--json"]);
    let runs = runs.as_array().expect("array of runs");
    assert_eq!(runs.len(), 2, "resumed, not restarted: {runs:?}");
    assert_eq!(runs[1]["status"], "completed");
    assert_eq!(runs[1]["interruptions"], 1);
    // Counters carried over from the first process: every update counted exactly once.
    let second = json(&ws, &["show", "2", "--json"]);
    assert_eq!(second["tables"][0]["modified"], 60, "{second}");
    assert_eq!(second["tables"][0]["added"], 40, "{second}");

    // The resumed run stored the watermark 2340 in the current format.
    assert_eq!(planned_changes(&ws, "items"), "0");
    ws.db("source.sqlite", "UPDATE items SET qty = qty + 10, modify_id = 3000 + id WHERE id IN (7, 8, 9)");
    assert_eq!(planned_changes(&ws, "items"), "3");
    ws.sync_expect(0);
    assert_target_equals_source(&ws);
    let runs = json(&ws, &["runs", "--json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(3), "{runs}");
    assert_eq!(runs[2]["status"], "completed");
}
