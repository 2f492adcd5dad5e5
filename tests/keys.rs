//! Keys that cannot identify rows are refused before anything is written: a NULL source
//! key, a key several source rows share, a key whose type differs between the sides.
//! `--skip-bad-keys` leaves such rows out instead, each counted as an error. Results are
//! read back with plain SQL.

mod common;

use common::{Workspace, dump, open, text};
use rusqlite::types::Value;

const CONFIG: &str = r#"{
  "source": {"type": "sqlite", "path": "source.sqlite"},
  "target": {"type": "sqlite", "path": "target.sqlite"},
  "tables": [{"name": "stock", "primary_key_field": "sku"}],
  "batch_size": 2,
  "max_delete_percent": 100
}"#;

/// A source whose `sku INT PRIMARY KEY` (not a rowid alias, so SQLite lets it be NULL)
/// holds a NULL, and a target holding 1–4.
fn null_key_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        "CREATE TABLE stock (sku INT PRIMARY KEY, qty INT);
         INSERT INTO stock VALUES (NULL, 9), (1, 10), (2, 20), (3, 30);",
    );
    ws.db(
        "target.sqlite",
        "CREATE TABLE stock (sku INT PRIMARY KEY, qty INT);
         INSERT INTO stock VALUES (1, 10), (2, 20), (3, 30), (4, 40);",
    );
    ws.config(CONFIG);
    ws
}

fn target_rows(ws: &Workspace) -> Vec<Vec<Value>> {
    dump(&open(&ws.path("target.sqlite")), "stock", "sku, qty", "")
}

fn row(sku: i64, qty: i64) -> Vec<Value> {
    vec![Value::Integer(sku), Value::Integer(qty)]
}

/// A NULL source key stops the run before anything is written (issue 10: the full
/// compare used to delete target row 1, which exists in the source), and `verify` refuses
/// to call such a table equal.
#[test]
fn null_source_key_is_refused_before_writing() {
    let ws = null_key_workspace();
    let before = std::fs::read(ws.path("target.sqlite")).unwrap();
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("table stock: 1 source row(s) have a NULL key `sku`"), "{}", text(&out));
    assert!(stderr.contains("--skip-bad-keys"), "{}", text(&out));
    assert_eq!(before, std::fs::read(ws.path("target.sqlite")).unwrap(), "nothing written");

    let verify = ws.run(&["verify"]);
    assert_ne!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("NULL key"), "{}", text(&verify));
}

/// `--skip-bad-keys` leaves the NULL-key row out (counted as an error) and syncs the rest:
/// row 4 goes, rows 1–3 stay; later runs say the same and write nothing again.
#[test]
fn skip_bad_keys_leaves_null_key_rows_out() {
    let ws = null_key_workspace();
    let out = ws.run(&["run", "--progress", "off", "--skip-bad-keys"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("NULL key `sku`") && stdout.contains("left out"), "{}", text(&out));
    assert_eq!(target_rows(&ws), vec![row(1, 10), row(2, 20), row(3, 30)]);
    let again = ws.run(&["run", "--progress", "off", "--skip-bad-keys", "--json"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let table = &report["tables"][0];
    assert_eq!(
        (table["added"].as_u64(), table["modified"].as_u64(), table["deleted"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(table["errors"].as_u64(), Some(1), "{table}");
}

/// A source table without a unique key that holds key 6 twice: refused, naming the key and
/// how many rows share it; with `--skip-bad-keys` key 6 is left alone on both sides and
/// the run does not claim to add it again and again.
#[test]
fn duplicate_source_key_is_refused_or_skipped() {
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        "CREATE TABLE stock (sku INT, qty INT);
         INSERT INTO stock VALUES (5, 50), (6, 60), (6, 61), (7, 70);",
    );
    ws.db(
        "target.sqlite",
        "CREATE TABLE stock (sku INT PRIMARY KEY, qty INT);
         INSERT INTO stock VALUES (6, 1);",
    );
    ws.config(CONFIG);
    let before = std::fs::read(ws.path("target.sqlite")).unwrap();
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("table stock: source key `sku` = 6 is shared by 2 rows"),
        "{}",
        text(&out)
    );
    assert_eq!(before, std::fs::read(ws.path("target.sqlite")).unwrap(), "nothing written");

    for _ in 0..2 {
        let out = ws.run(&["run", "--progress", "off", "--skip-bad-keys", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["errors"][0]["message"].as_str().unwrap().contains("= 6 is shared by 2 rows"), "{report}");
        assert_eq!(target_rows(&ws), vec![row(5, 50), row(6, 1), row(7, 70)]);
    }
}

/// Keys of different types on the two sides (text against integer) are a `check` error:
/// they would neither compare nor sort alike.
#[test]
fn key_types_must_match() {
    let ws = Workspace::new();
    ws.db("source.sqlite", "CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INT); INSERT INTO stock VALUES ('1', 1);");
    ws.db("target.sqlite", "CREATE TABLE stock (sku INTEGER PRIMARY KEY, qty INT);");
    ws.config(CONFIG);
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("key column `sku` is text (TEXT) in the source but `sku` is integer (INTEGER)"), "{all}");
}

/// A compound key shared by two source rows is named part by part and refused before
/// anything is written; `--skip-bad-keys` leaves it alone on both sides.
#[test]
fn duplicate_compound_key_is_refused() {
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        "CREATE TABLE lines (order_id INT, line TEXT, qty INT);
         INSERT INTO lines VALUES (1, 'a', 1), (1, 'A', 2), (1, 'a', 3), (2, 'a', 4);",
    );
    ws.db("target.sqlite", "CREATE TABLE lines (order_id INT, line TEXT, qty INT, PRIMARY KEY (order_id, line));");
    ws.config(
        r#"{"source": {"type": "sqlite", "path": "source.sqlite"}, "target": {"type": "sqlite", "path": "target.sqlite"},
            "tables": [{"name": "lines", "primary_key_field": ["order_id", "line"]}]}"#,
    );
    let before = std::fs::read(ws.path("target.sqlite")).unwrap();
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("source key `(order_id, line)` = (1, \"a\") is shared by 2 rows"),
        "{}",
        text(&out)
    );
    assert_eq!(before, std::fs::read(ws.path("target.sqlite")).unwrap(), "nothing written");
    let out = ws.run(&["run", "--progress", "off", "--skip-bad-keys"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = dump(&open(&ws.path("target.sqlite")), "lines", "order_id, line, qty", "");
    let expected = vec![
        vec![Value::Integer(1), Value::Text("A".into()), Value::Integer(2)],
        vec![Value::Integer(2), Value::Text("a".into()), Value::Integer(4)],
    ];
    assert_eq!(rows, expected);
}
