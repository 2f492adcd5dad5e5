//! End-to-end syncs between SQLite files through the real binary: every step kind, record
//! types, text keys, small windows, the delete guard and data-error isolation. Each test
//! ends with a row-by-row comparison of source and target.

mod common;

use common::{Workspace, assert_same_rows, dump, open, text};

const ITEMS: &str = "CREATE TABLE items (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, data BLOB, modify_id INTEGER
);";

fn fill_items(ws: &Workspace, db: &str, n: u64) {
    ws.db(
        db,
        &format!(
            "{ITEMS}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
             INSERT INTO items SELECT x, 'item ' || x, x % 97, x * 0.25, CAST(x AS BLOB), x FROM c;"
        ),
    );
}

fn items_config(ws: &Workspace, extra: &str) {
    ws.config(&format!(
        r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}},
            "target": {{"type": "sqlite", "path": "target.sqlite"}},
            "tables": [{{"name": "items", "modify_id_field": "modify_id"}}] {extra}}}"#
    ));
}

fn assert_items_equal(ws: &Workspace) {
    let cols = "id, name, qty, price, data, modify_id";
    let a = dump(&open(&ws.path("source.sqlite")), "items", cols, "");
    let b = dump(&open(&ws.path("target.sqlite")), "items", cols, "");
    assert_same_rows(&a, &b, "items");
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An empty target gets every row with plan `["add"]`; a second run finds nothing to add.
#[test]
fn add_all_into_empty_target() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 12_345);
    ws.db("target.sqlite", ITEMS);
    items_config(&ws, "");
    let out = ws.sync_expect(0);
    let report = stdout(&out);
    assert!(report.contains("[\"add\"]"), "{report}");
    assert!(report.contains("recordCountAllAdded=12345"), "{report}");
    assert!(report.contains("Sync completed without errors."), "{report}");
    // A copy compares no rows: the table is not called verified on its counts alone.
    let line = report.lines().find(|l| l.starts_with("items ")).unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains("counts match") && !line.contains("verified"), "{report}");
    assert_items_equal(&ws);

    // Same counts, untrusted modify IDs: a full compare that changes nothing.
    let out = ws.sync_expect(0);
    let report = stdout(&out);
    assert!(report.contains("[\"changed\"]"), "{report}");
    let line = report.lines().find(|l| l.starts_with("items ")).unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains("verified"), "{report}");
    // `show --json` says the same of both runs.
    for (run, check) in [("1", "counts match"), ("2", "verified")] {
        let out = ws.run(&["show", run, "--json"]);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert_eq!(json["tables"][0]["check"], check, "{json}");
        assert_eq!(json["tables"][0]["counts_match"], true, "{json}");
    }
    assert!(report.contains("recordCountAllSkipped=12345"), "{report}");
    assert!(report.contains("recordCountAllModified=0"), "{report}");
}

/// Rows deleted from the source are deleted from the target with plan `["delete"]`.
#[test]
fn delete_extras() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 5_000);
    fill_items(&ws, "target.sqlite", 5_000);
    ws.db("source.sqlite", "DELETE FROM items WHERE id % 50 = 0 OR id > 4990");
    items_config(&ws, "");
    let report = stdout(&ws.sync_expect(0));
    assert!(report.contains("[\"delete\"]"), "{report}");
    assert!(report.contains("recordCountAllDeleted=109"), "{report}");
    assert_items_equal(&ws);
}

/// With trusted modify IDs, updates and inserts arrive through `["add", "incremental"]`,
/// including several rows that share one modify ID across a batch boundary.
#[test]
fn trusted_incremental_copies_changes() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 3_000);
    fill_items(&ws, "target.sqlite", 3_000);
    // 30 updates all with modify ID 5000 (batch_size 7 splits them), and 10 inserts.
    ws.db(
        "source.sqlite",
        "UPDATE items SET name = name || ' v2', modify_id = 5000 WHERE id % 100 = 1;
         INSERT INTO items SELECT 3000 + id, 'new', 1, 1.0, NULL, 5001 + id FROM items WHERE id <= 10;",
    );
    items_config(&ws, r#", "trust_modify_id": true, "batch_size": 7"#);
    let report = stdout(&ws.sync_expect(0));
    assert!(report.contains("[\"add\", \"incremental\"]"), "{report}");
    assert!(report.contains("recordCountAllAdded=10"), "{report}");
    assert!(report.contains("recordCountAllModified=30"), "{report}");
    assert_items_equal(&ws);
}

/// Untrusted modify IDs with equal counts: the full compare finds updates that did not
/// bump the modify ID, and an add and a delete that cancel in the counts.
#[test]
fn full_compare_finds_silent_changes() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 4_000);
    fill_items(&ws, "target.sqlite", 4_000);
    ws.db(
        "source.sqlite",
        "UPDATE items SET qty = -1 WHERE id IN (5, 1500, 3999);
         UPDATE items SET price = NULL WHERE id = 77;
         DELETE FROM items WHERE id = 2000;
         INSERT INTO items VALUES (9999, 'late', 1, 2.0, X'00FF', 1);",
    );
    items_config(&ws, r#", "batch_size": 64"#);
    let report = stdout(&ws.sync_expect(0));
    assert!(report.contains("[\"changed\"]"), "{report}");
    assert!(report.contains("recordCountAllModified=4"), "{report}");
    assert!(report.contains("recordCountAllAdded=1"), "{report}");
    assert!(report.contains("recordCountAllDeleted=1"), "{report}");
    assert_items_equal(&ws);
}

/// Scenario 4 of the manual: source has more rows and untrusted modify IDs run add,
/// incremental and changed; the verification repairs deletes hidden behind added rows.
#[test]
fn untrusted_add_incremental_changed_and_repair() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 2_000);
    fill_items(&ws, "target.sqlite", 2_000);
    ws.db(
        "source.sqlite",
        "INSERT INTO items SELECT 5000 + id, 'new', 1, 1.0, NULL, 3000 + id FROM items WHERE id <= 30;
         DELETE FROM items WHERE id IN (10, 20, 30);
         UPDATE items SET name = 'silent' WHERE id = 1999;",
    );
    items_config(&ws, r#", "batch_size": 100, "id_array_batch_size": 333"#);
    let report = stdout(&ws.sync_expect(0));
    assert!(report.contains("[\"add\", \"incremental\", \"changed\"]"), "{report}");
    assert!(report.contains("recordCountAllDeleted=3"), "{report}");
    assert!(report.contains("recordCountAllAdded=30"), "{report}");
    assert_items_equal(&ws);
}

/// Small windows on both sides (keys and rows) with differences scattered everywhere,
/// including runs of target-only keys longer than a window.
#[test]
fn small_windows_with_scattered_differences() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 3_000);
    fill_items(&ws, "target.sqlite", 3_000);
    ws.db("source.sqlite", "DELETE FROM items WHERE id % 7 = 0 OR id BETWEEN 1000 AND 1100; UPDATE items SET qty = qty + 1, modify_id = modify_id + 10000 WHERE id % 11 = 0;");
    ws.db("target.sqlite", "DELETE FROM items WHERE id % 13 = 0 OR id BETWEEN 2000 AND 2200;");
    items_config(
        &ws,
        r#", "batch_size": 9, "delete_batch_size": 4, "id_array_batch_size": 17, "max_delete_percent": 100"#,
    );
    ws.sync_expect(0);
    assert_items_equal(&ws);
}

/// Record types: an entry with `where` syncs only its rows and deletes only its rows on
/// the target; a row that moves to another type is rewritten, not deleted; renamed
/// columns follow `field_mapping`.
#[test]
fn record_types_and_field_mapping() {
    let ws = Workspace::new();
    let source_schema =
        "CREATE TABLE product (id INTEGER PRIMARY KEY, product_type TEXT NOT NULL, descr TEXT, modify_id INTEGER);";
    let target_schema = "CREATE TABLE product (id INTEGER PRIMARY KEY, product_type TEXT NOT NULL, description TEXT, modify_id INTEGER);";
    ws.db(
        "source.sqlite",
        &format!(
            "{source_schema}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300)
             INSERT INTO product SELECT x, CASE x % 3 WHEN 0 THEN 'work' WHEN 1 THEN 'material' ELSE 'service' END,
                                       'd' || x, x FROM c;"
        ),
    );
    // The target already holds service rows db-sync must not touch (not configured).
    ws.db("target.sqlite", &format!("{target_schema} INSERT INTO product VALUES (9001, 'service', 'keep me', 1);"));
    ws.config(
        r#"{"source": {"type": "sqlite", "path": "source.sqlite"},
            "target": {"type": "sqlite", "path": "target.sqlite"},
            "tables": [
              {"name": "product-work", "source_table": "product", "target_table": "product", "modify_id_field": "modify_id",
               "where": {"product_type": "work"}, "field_mapping": {"descr": "description"}},
              {"name": "product-material", "source_table": "product", "target_table": "product", "modify_id_field": "modify_id",
               "where": {"product_type": "material"}, "field_mapping": {"descr": "description"}}
            ]}"#,
    );
    ws.sync_expect(0);
    let target = open(&ws.path("target.sqlite"));
    let work = |conn: &rusqlite::Connection, col: &str, t: &str| {
        dump(conn, "product", &format!("id, product_type, {col}, modify_id"), &format!("WHERE product_type = '{t}'"))
    };
    let source = open(&ws.path("source.sqlite"));
    for t in ["work", "material"] {
        assert_same_rows(&work(&source, "descr", t), &work(&target, "description", t), t);
    }
    assert_eq!(work(&target, "description", "service").len(), 1, "unconfigured record type left alone");

    // Move a work row to material and delete a material row.
    ws.db("source.sqlite", "UPDATE product SET product_type = 'material', modify_id = 1000 WHERE id = 3; DELETE FROM product WHERE id = 4;");
    let report = stdout(&ws.sync_expect(0));
    for t in ["work", "material"] {
        assert_same_rows(&work(&source, "descr", t), &work(&target, "description", t), t);
    }
    assert!(report.contains("recordCountAllDeleted=1"), "{report}");
    assert_eq!(work(&target, "description", "service").len(), 1, "unconfigured record type left alone");
}

/// Text keys are compared by bytes on both sides (upper case before lower case, accents
/// after ASCII), across window boundaries, even when the target column sorts without
/// regard to case.
#[test]
fn text_keys() {
    let ws = Workspace::new();
    let schema = "CREATE TABLE tags (code TEXT PRIMARY KEY, label TEXT);";
    let target_schema = "CREATE TABLE tags (code TEXT COLLATE NOCASE PRIMARY KEY, label TEXT);";
    let rows = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500)
                INSERT INTO tags SELECT printf('%s%03d', CASE x % 4 WHEN 0 THEN 'a' WHEN 1 THEN 'B' WHEN 2 THEN 'é' ELSE 'Z' END, x), 'l' || x FROM c;";
    ws.db("source.sqlite", &format!("{schema} {rows} INSERT INTO tags VALUES ('', 'empty'), ('ü', 'umlaut');"));
    ws.db(
        "target.sqlite",
        &format!(
            "{target_schema} {rows} DELETE FROM tags WHERE rowid % 9 = 0; INSERT INTO tags VALUES ('zzz', 'extra');"
        ),
    );
    ws.config(
        r#"{"source": {"type": "sqlite", "path": "source.sqlite"},
            "target": {"type": "sqlite", "path": "target.sqlite"},
            "tables": [{"name": "tags", "primary_key_field": "code"}],
            "id_array_batch_size": 16, "batch_size": 10}"#,
    );
    ws.sync_expect(0);
    let a = dump(&open(&ws.path("source.sqlite")), "tags", "code, label", "");
    let b = dump(&open(&ws.path("target.sqlite")), "tags", "code, label", "");
    assert_same_rows(&a, &b, "tags");
}

/// A source that lost most of its rows looks like a failed read: the delete guard refuses
/// and writes nothing; `--allow-mass-delete` lets it through.
#[test]
fn delete_guard() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 1_000);
    fill_items(&ws, "target.sqlite", 1_000);
    ws.db("source.sqlite", "DELETE FROM items WHERE id > 100");
    items_config(&ws, "");
    let before = ws.file_hash("target.sqlite");
    let out = ws.sync_expect(5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to delete 900 of 1000"), "{}", text(&out));
    assert!(stderr.contains("--allow-mass-delete"), "{}", text(&out));
    assert_eq!(before, ws.file_hash("target.sqlite"), "target unchanged");

    // The refused run is kept, unfinished: a new run must say so.
    let out = ws.run(&["run", "--progress", "off", "--allow-mass-delete"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("db-sync resume"), "{}", text(&out));

    let out = ws.run(&["resume", "--progress", "off", "--allow-mass-delete"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_items_equal(&ws);
}

/// Rows the target refuses (a CHECK constraint) are isolated by splitting the batch: they
/// are reported as data errors, every other row lands, the exit code is 1.
#[test]
fn bad_rows_are_isolated() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 2_000);
    ws.db("source.sqlite", "UPDATE items SET qty = -5 WHERE id IN (17, 1234, 1999)");
    ws.db(
        "target.sqlite",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER CHECK (qty >= 0), price REAL, data BLOB, modify_id INTEGER);",
    );
    items_config(&ws, r#", "batch_size": 500"#);
    let out = ws.sync_expect(1);
    let report = stdout(&out);
    assert!(report.contains("Sync completed with"), "{report}");
    for id in [17, 1234, 1999] {
        assert!(report.contains(&format!("row {id} was refused")), "{report}");
    }
    assert!(report.contains("recordCountAllAdded=1997"), "{report}");
    let target = dump(&open(&ws.path("target.sqlite")), "items", "id", "");
    assert_eq!(target.len(), 1997);
}

/// `max_error_count` stops the run once reached, with the manual's message.
#[test]
fn max_error_count_stops_the_run() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 500);
    ws.db("source.sqlite", "UPDATE items SET qty = -5 WHERE id % 10 = 0");
    ws.db(
        "target.sqlite",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER CHECK (qty >= 0), price REAL, data BLOB, modify_id INTEGER);",
    );
    items_config(&ws, r#", "batch_size": 100, "max_error_count": 3"#);
    let out = ws.sync_expect(5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("maximum error count 3 was reached"), "{}", text(&out));

    // The summary says the run stopped, why, and lists the errors so far; it never claims
    // to have completed (regression: "Sync completed without errors." then "failed").
    let report = stdout(&out);
    assert!(!report.contains("Sync completed"), "{report}");
    let lines: Vec<&str> = report.lines().collect();
    let stop = lines.iter().position(|l| l.starts_with("Sync stopped: ")).unwrap_or_else(|| panic!("{report}"));
    assert!(lines[stop].contains("maximum error count 3 was reached"), "{report}");
    assert_eq!(lines[stop + 1], "3 errors before it stopped:", "{report}");
    assert!(lines[stop + 2].starts_with("  1. [data] items: "), "{report}");
    assert!(report.trim_end().ends_with("failed"), "{report}");
}

/// `db-sync plan` prints counts, plans and reasons and writes nothing.
#[test]
fn plan_writes_nothing() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 100);
    ws.db("target.sqlite", ITEMS);
    items_config(&ws, "");
    let before = ws.file_hash("target.sqlite");
    let out = ws.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = stdout(&out);
    assert!(report.contains("items") && report.contains("target empty => add all"), "{report}");
    assert_eq!(before, ws.file_hash("target.sqlite"));
}

/// The demo data set at a small scale: first sync, business changes, second sync, every
/// row equal afterwards (the demo compares them itself and says so).
#[test]
fn demo_end_to_end() {
    let ws = Workspace::new();
    let out = ws.run(&["demo", "--dir", "demo", "--scale", "0.05"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = stdout(&out);
    assert!(report.contains("target empty => add all"), "{report}");
    assert!(report.contains("same row count & untrusted modify id => full compare"), "{report}");
    assert!(report.contains("== verified: all"), "{report}");
}

/// `db-sync verify` compares every row read-only: equal tables exit 0; a changed, a
/// missing and an extra target row are each reported by key, with exit code 1.
#[test]
fn verify_reports_differences() {
    let ws = Workspace::new();
    fill_items(&ws, "source.sqlite", 3_000);
    fill_items(&ws, "target.sqlite", 3_000);
    items_config(&ws, r#", "batch_size": 700"#);
    let out = ws.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("equal"), "{}", text(&out));
    ws.db("target.sqlite", "UPDATE items SET name = 'x' WHERE id = 1400; DELETE FROM items WHERE id = 2100; INSERT INTO items VALUES (9000, 'e', 1, 1.0, NULL, 1);");
    let before = ws.file_hash("target.sqlite");
    let out = ws.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let diffs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diffs[0]["differing"], 1);
    assert_eq!(diffs[0]["missing"], 1);
    assert_eq!(diffs[0]["extra"], 1);
    assert_eq!(diffs[0]["sample"].to_string(), r#"["differs 1400","missing 2100","extra 9000"]"#);
    assert_eq!(before, ws.file_hash("target.sqlite"), "verify writes nothing");
}

/// Counters name what landed: in a full compare where the target refuses a new row and
/// takes an update, the run reports 0 added and 1 modified (the refused row is the new
/// one), and one error.
#[test]
fn refused_rows_come_off_their_own_counter() {
    let ws = Workspace::new();
    let checked = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER CHECK (qty >= 0), \
                   price REAL, data BLOB, modify_id INTEGER);";
    ws.db("source.sqlite", ITEMS);
    ws.db("target.sqlite", checked);
    for db in ["source.sqlite", "target.sqlite"] {
        ws.db(
            db,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 9)
             INSERT INTO items SELECT x, 'item ' || x, x, 1.0, NULL, x FROM c;",
        );
    }
    // Equal counts: the new row 10 (refused) replaces the target's extra row 20.
    ws.db(
        "source.sqlite",
        "INSERT INTO items VALUES (10, 'new', -1, 1.0, NULL, 10); UPDATE items SET qty = 40 WHERE id = 4;",
    );
    ws.db("target.sqlite", "INSERT INTO items VALUES (20, 'extra', 1, 1.0, NULL, 20);");
    items_config(&ws, r#", "max_delete_percent": 100, "max_error_count": 100"#);
    let out = ws.run(&["run", "--progress", "off", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &report["tables"][0];
    assert_eq!(table["plan"]["steps"][0], "Changed", "{table}");
    assert_eq!(
        (table["added"].as_u64(), table["modified"].as_u64(), table["deleted"].as_u64()),
        (Some(0), Some(1), Some(1)),
        "{table}"
    );
    assert!(report["errors"].to_string().contains("row 10 was refused"), "{report}");
}
