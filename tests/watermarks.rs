//! Watermarks and trust: the stored last modify ID advances only past a table whose rows
//! all landed, and `incremental_lookback` re-reads rows just below it to catch changes
//! committed late with a lower modify ID. Results are read back with plain SQL.

mod common;

use common::{Workspace, assert_same_rows, dump, open, text};

const ITEMS: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, modify_id INTEGER);";

fn workspace(target_ddl: &str, extra: &str) -> Workspace {
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        &format!(
            "{ITEMS}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100)
             INSERT INTO items SELECT x, 'item ' || x, x, x FROM c;"
        ),
    );
    ws.db("target.sqlite", target_ddl);
    ws.config(&format!(
        r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}},
            "target": {{"type": "sqlite", "path": "target.sqlite"}},
            "tables": [{{"name": "items", "modify_id_field": "modify_id"}}],
            "trust_modify_id": true, "batch_size": 10 {extra}}}"#
    ));
    ws
}

fn rows(ws: &Workspace, db: &str) -> Vec<Vec<rusqlite::types::Value>> {
    dump(&open(&ws.path(db)), "items", "id, name, qty, modify_id", "")
}

fn report(ws: &Workspace, code: i32) -> serde_json::Value {
    let out = ws.run(&["run", "--progress", "off", "--json"]);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["tables"][0].clone()
}

/// A change committed late (modify ID 50, below the watermark 100) is missed by a trusted
/// run without lookback (as the README says; `verify` finds it) and caught with
/// `incremental_lookback` covering it.
#[test]
fn lookback_catches_late_commits() {
    let ws = workspace(ITEMS, "");
    report(&ws, 0);
    ws.db(
        "source.sqlite",
        "UPDATE items SET name = 'late' WHERE id = 7; UPDATE items SET modify_id = 50 WHERE id = 7;",
    );
    ws.db("source.sqlite", "INSERT INTO items VALUES (101, 'new', 1, 101);");
    let trusted = report(&ws, 0);
    assert_eq!(trusted["modified"].as_u64(), Some(0), "{trusted}");
    let verify = ws.run(&["verify"]);
    assert_eq!(verify.status.code(), Some(1), "verify sees the missed row:\n{}", text(&verify));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("differs 7"), "{}", text(&verify));

    let config = std::fs::read_to_string(ws.path("db-sync.json")).unwrap();
    ws.config(&config.replace(r#""batch_size": 10"#, r#""batch_size": 10, "incremental_lookback": 60"#));
    let with_lookback = report(&ws, 0);
    assert_eq!(with_lookback["modified"].as_u64(), Some(1), "{with_lookback}");
    assert_same_rows(&rows(&ws, "source.sqlite"), &rows(&ws, "target.sqlite"), "items");
}

/// A row the target refuses is read again next run: the watermark stays where it was
/// while any row of the table failed, and advances once every row landed.
#[test]
fn watermark_holds_while_rows_are_refused() {
    let checked = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER CHECK (qty >= 0), \
                   modify_id INTEGER);";
    let ws = workspace(checked, "");
    report(&ws, 0);
    ws.db("source.sqlite", "UPDATE items SET qty = -1, modify_id = 200 WHERE id = 3; UPDATE items SET qty = 99, modify_id = 201 WHERE id = 4;");
    let refused = report(&ws, 1);
    assert_eq!(refused["errors"].as_u64(), Some(1), "{refused}");
    // The refused row comes back every run until the target takes it.
    let again = report(&ws, 1);
    assert_eq!(again["errors"].as_u64(), Some(1), "the refused row is read again: {again}");
    ws.db("source.sqlite", "UPDATE items SET qty = 1 WHERE id = 3;");
    let fixed = report(&ws, 0);
    assert_eq!(fixed["modified"].as_u64(), Some(1), "{fixed}");
    assert_same_rows(&rows(&ws, "source.sqlite"), &rows(&ws, "target.sqlite"), "items");
    let after = report(&ws, 0);
    assert_eq!(after["changed"].as_u64(), Some(0), "the watermark advanced once every row landed: {after}");
}

/// A timestamp lookback is a duration, and a lookback that is neither a number nor a
/// duration is a config error naming the key.
#[test]
fn lookback_config_is_checked() {
    let ws = workspace(ITEMS, r#", "incremental_lookback": "ten minutes please""#);
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("incremental_lookback"), "{}", text(&out));
    let ws = workspace(ITEMS, r#", "incremental_lookback": "1h 30m""#);
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A duration cannot be taken from an integer modify ID: once there is a watermark to
    // look back from, the run stops before it writes anything, rather than silently read
    // without a lookback.
    report(&ws, 0);
    ws.db("source.sqlite", "UPDATE items SET name = 'changed', modify_id = 500 WHERE id = 1;");
    let before = ws.file_hash("target.sqlite");
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("incremental_lookback 1h 30m cannot be taken"), "{}", text(&out));
    assert_eq!(before, ws.file_hash("target.sqlite"), "nothing written");
}
