//! The binary search engine end to end on SQLite: chosen for add and delete steps of
//! large tables with few differences, its log lines and progress tokens, its metrics, a
//! search resumed after a crash, and differences hidden by cancelling counts.

mod common;

use common::{Workspace, assert_same_rows, dump, open, text};

const ITEMS: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, modify_id INTEGER);";

fn fill(ws: &Workspace, db: &str, n: u64) {
    ws.db(
        db,
        &format!(
            "{ITEMS}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
             INSERT INTO items SELECT x, 'item ' || x, x % 97, x FROM c;"
        ),
    );
}

fn config(ws: &Workspace, extra: &str) {
    ws.config(&format!(
        r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}},
            "target": {{"type": "sqlite", "path": "target.sqlite"}},
            "tables": [{{"name": "items", "modify_id_field": "modify_id"}}] {extra}}}"#
    ));
}

fn assert_equal(ws: &Workspace) {
    let cols = "id, name, qty, modify_id";
    let a = dump(&open(&ws.path("source.sqlite")), "items", cols, "");
    let b = dump(&open(&ws.path("target.sqlite")), "items", cols, "");
    assert_same_rows(&a, &b, "items");
}

fn run(ws: &Workspace, args: &[&str]) -> (serde_json::Value, String) {
    let out = ws.run(args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&out)));
    (report, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Five rows deleted from a 60,000-row source: the delete step uses the binary search,
/// logs the manual's lines, prints progress tokens and reads a tiny part of the table.
#[test]
fn binary_delete_finds_scattered_deletions() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 60_000);
    fill(&ws, "target.sqlite", 60_000);
    ws.db("source.sqlite", "DELETE FROM items WHERE id IN (7, 15000, 31337, 45000, 59999)");
    config(&ws, r#", "binary_search_read_batch": 100"#);
    let (report, stderr) = run(&ws, &["run", "--json", "--progress", "lines"]);
    assert!(stderr.contains("using binary search for deletes (from=60000, to=59995, diff=5)"), "{stderr}");
    assert!(stderr.contains("delete binary search 60000 records, need to find 5:"), "{stderr}");
    assert!(stderr.contains("%↑") && stderr.contains("%↓"), "{stderr}");
    assert_eq!(report["metrics"]["recordCountAllDeleted"], 5);
    assert_eq!(report["metrics"]["binarySearchCountAll"], 1);
    assert!(report["metrics"]["binarySearchIterationCount"].as_u64().unwrap() > 10);
    assert!(report["metrics"]["binarySearchMaxDepthAll"].as_u64().unwrap() >= 6);
    let queries = report["metrics"]["binarySearchQueryCount"].as_u64().unwrap();
    assert!(queries < 5 * 3 * 17, "O(k log n) queries, got {queries}");
    assert_equal(&ws);
}

/// Missing rows among the newest keys are found in the recent-first range; adds use the
/// binary search too.
#[test]
fn binary_add_with_recent_first() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 60_000);
    fill(&ws, "target.sqlite", 60_000);
    ws.db("target.sqlite", "DELETE FROM items WHERE id IN (59990, 59991, 59992, 12)");
    config(&ws, r#", "binary_search_recent_first": 5000, "binary_search_read_batch": 100"#);
    let (report, stderr) = run(&ws, &["run", "--json", "--progress", "lines"]);
    assert!(stderr.contains("using binary search for adds (from=60000, to=59996, diff=4)"), "{stderr}");
    assert!(stderr.contains("add binary search 60000 records, search 5000 recent first, need to find 4:"), "{stderr}");
    assert!(stderr.contains("8.3%↑5000"), "the recent range is searched first: {stderr}");
    assert_eq!(report["metrics"]["recordCountAllAdded"], 4);
    assert_equal(&ws);
}

/// A large difference, or a small table, uses the full compare and says why.
#[test]
fn full_compare_when_binary_search_does_not_pay() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 30_000);
    fill(&ws, "target.sqlite", 30_000);
    ws.db("target.sqlite", "DELETE FROM items WHERE id % 10 = 0");
    config(&ws, "");
    let (report, stderr) = run(&ws, &["run", "--json", "--progress", "lines"]);
    assert!(stderr.contains("using full compare for adds (reason=large difference)"), "{stderr}");
    assert_eq!(report["metrics"]["binarySearchCountAll"], 0);
    assert_equal(&ws);

    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 3_000);
    fill(&ws, "target.sqlite", 2_999);
    config(&ws, "");
    let (_, stderr) = run(&ws, &["run", "--json", "--progress", "lines"]);
    assert!(
        stderr.contains("using full compare for adds (reason=table smaller than binary_search_min_table_size)"),
        "{stderr}"
    );
    assert_equal(&ws);
}

/// A row added and another deleted leave the counts blind to one deletion: the binary
/// search stops at the count difference, the incremental step copies the new row, and
/// the verification sees the counts differ and repairs the table by a full compare.
#[test]
fn cancelling_counts_are_caught_by_verification() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 40_000);
    fill(&ws, "target.sqlite", 40_000);
    ws.db(
        "source.sqlite",
        "DELETE FROM items WHERE id IN (100, 20000, 30000); INSERT INTO items VALUES (50000, 'new', 1, 90000);",
    );
    config(&ws, r#", "trust_modify_id": true"#);
    let (report, stderr) = run(&ws, &["run", "--json", "--progress", "lines"]);
    assert!(stderr.contains("using binary search for deletes"), "{stderr}");
    assert!(stderr.contains("=> delete extras"), "{stderr}");
    assert_eq!(report["tables"][0]["repair"][0], "Delete", "{report}");
    assert_eq!(report["metrics"]["recordCountAllDeleted"], 3);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 1);
    assert_equal(&ws);
}

/// Killed in the middle of a binary search, the run resumes with the stored stack: one
/// search in all, not two, and the same result.
#[test]
fn search_resumes_from_its_checkpoint() {
    let ws = Workspace::new();
    fill(&ws, "source.sqlite", 80_000);
    fill(&ws, "target.sqlite", 80_000);
    ws.db("source.sqlite", "DELETE FROM items WHERE id IN (3, 9000, 41000, 77777)");
    config(&ws, "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["run", "--progress", "off"])
        .current_dir(ws.dir.path())
        .env("DB_SYNC_FAILPOINT", "after_checkpoint:3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let (report, stderr) = run(&ws, &["resume", "--json", "--progress", "lines"]);
    assert!(stderr.contains("checkpoint binary search with"), "resumed inside the search: {stderr}");
    assert!(!stderr.contains("using binary search"), "the search was not started again: {stderr}");
    assert_eq!(report["metrics"]["binarySearchCountAll"], 1);
    assert_eq!(report["metrics"]["recordCountAllDeleted"], 4);
    assert_equal(&ws);
}
