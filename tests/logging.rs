//! The config's debug switches and the log output, through the real binary with stdout and
//! stderr redirected (never a terminal): which statements each switch shows at the default
//! log level, that row values stay out unless `show_sql_values` asks, that
//! `--log-format json` writes only JSON lines, and that no ANSI escape byte reaches a file.

mod common;

use common::{Workspace, text};

/// A value only a row holds: it must appear in no log line unless values are asked for.
const ROW_VALUE: &str = "RowValue-5c1e";

/// Source with 20 rows (one holding [`ROW_VALUE`] and an ESC byte), target with 10 of them
/// plus 3 the source lacks: a run reads, inserts and deletes.
fn workspace(switches: &str) -> Workspace {
    let ws = Workspace::new();
    let table = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, modify_id INTEGER);";
    ws.db(
        "source.sqlite",
        &format!(
            "{table}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)
             INSERT INTO items SELECT x, 'item ' || x, x FROM c;
             UPDATE items SET name = '{ROW_VALUE} ' || char(27) || '[31mred' WHERE id = 15;"
        ),
    );
    ws.db(
        "target.sqlite",
        &format!(
            "{table}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10)
             INSERT INTO items SELECT x, 'item ' || x, x FROM c;
             INSERT INTO items VALUES (101, 'gone 101', 1), (102, 'gone 102', 1), (103, 'gone 103', 1);"
        ),
    );
    ws.config(&format!(
        r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}},
            "target": {{"type": "sqlite", "path": "target.sqlite"}},
            "tables": [{{"name": "items", "modify_id_field": "modify_id"}}] {switches}}}"#
    ));
    ws
}

/// Runs `db-sync run` at the default log level and returns stderr, asserting success.
fn run(ws: &Workspace, extra: &[&str]) -> (String, String) {
    let mut args = vec!["run", "--progress", "lines"];
    args.extend_from_slice(extra);
    let out = ws.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_escape_byte(&out);
    (String::from_utf8_lossy(&out.stderr).into_owned(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// No raw ESC byte in redirected stdout or stderr.
fn assert_no_escape_byte(out: &std::process::Output) {
    assert!(!out.stdout.contains(&0x1b), "ESC byte in stdout:\n{}", text(out));
    assert!(!out.stderr.contains(&0x1b), "ESC byte in stderr:\n{}", text(out));
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// Without a switch no statement is logged; `show_sql` logs reads and writes (the
/// statement texts the run sent), at the default level, without row values.
#[test]
fn show_sql_logs_every_statement_without_values() {
    let (quiet, _) = run(&workspace(""), &[]);
    assert!(lines_with(&quiet, "SELECT").is_empty() && lines_with(&quiet, "INSERT").is_empty(), "{quiet}");

    let (log, _) = run(&workspace(r#", "show_sql": true"#), &[]);
    assert!(!lines_with(&log, "SELECT count(*) FROM \"items\"").is_empty(), "{log}");
    assert!(!lines_with(&log, "INSERT INTO \"items\"").is_empty(), "{log}");
    assert!(!lines_with(&log, "DELETE FROM \"items\"").is_empty(), "{log}");
    assert!(!log.contains(ROW_VALUE), "a row value was logged without show_sql_values:\n{log}");
    assert!(lines_with(&log, "statement done").is_empty(), "details without debug_sql:\n{log}");
}

/// `show_save_sql` logs the writes and no read.
#[test]
fn show_save_sql_logs_only_writes() {
    let (log, _) = run(&workspace(r#", "show_save_sql": true"#), &[]);
    assert!(!lines_with(&log, "INSERT INTO \"items\"").is_empty(), "{log}");
    assert!(!lines_with(&log, "DELETE FROM \"items\"").is_empty(), "{log}");
    assert!(lines_with(&log, "SELECT").is_empty(), "a read was logged under show_save_sql:\n{log}");
    assert!(!log.contains(ROW_VALUE), "{log}");
}

/// `debug_sql` adds each statement's duration, rows and connection; the write of 10 rows
/// reports 10 rows affected and the delete of the 3 extra rows 3.
#[test]
fn debug_sql_logs_execution_details() {
    let (log, _) = run(&workspace(r#", "debug_sql": true"#), &[]);
    assert!(!lines_with(&log, "SELECT").is_empty(), "{log}");
    let done = lines_with(&log, "statement done");
    assert!(done.iter().any(|l| l.contains("rows returned") && l.contains(" ms")), "{log}");
    assert!(done.iter().any(|l| l.contains("10 rows affected")), "{log}");
    assert!(done.iter().any(|l| l.contains("3 rows affected")), "{log}");
    assert!(
        done.iter().all(|l| l.contains("connection=target sqlite") || l.contains("connection=source sqlite")),
        "{log}"
    );
    assert!(!log.contains(ROW_VALUE), "{log}");
}

/// `show_sql_values` shows the bound values (the row value, its ESC byte written as an
/// escape) and warns once that it does.
#[test]
fn show_sql_values_logs_values_and_warns() {
    let (log, stdout) = run(&workspace(r#", "show_sql": true, "show_sql_values": true"#), &[]);
    assert!(log.contains("row values are being logged"), "{log}");
    let inserts = lines_with(&log, "INSERT INTO \"items\"");
    assert!(inserts.iter().any(|l| l.contains(ROW_VALUE) && l.contains("\\u{1b}[31mred")), "{log}");
    assert!(!stdout.contains(ROW_VALUE), "{stdout}");
}

/// `debug_connection_change` logs connecting, connected and disconnecting for both sides.
#[test]
fn debug_connection_change_logs_connections() {
    let (log, _) = run(&workspace(r#", "debug_connection_change": true"#), &[]);
    for side in ["source", "target"] {
        for event in ["connecting", "connected", "disconnecting"] {
            assert!(
                log.lines().any(|l| l.contains(event) && l.contains(&format!("side=\"{side}\""))),
                "no `{event}` for the {side}:\n{log}"
            );
        }
    }
    assert!(lines_with(&log, "SELECT").is_empty(), "{log}");
}

/// `--log-format json` (and `DB_SYNC_LOG_FORMAT=json`): every stderr line is a JSON object
/// with timestamp, level and message, even with `--progress lines` and `-v`; the statement
/// lines carry their fields.
#[test]
fn json_log_format_writes_only_json_lines() {
    let ws = workspace(r#", "show_sql": true"#);
    for (args, env) in [
        (&["--log-format", "json", "-v", "run", "--progress", "lines"][..], &[][..]),
        (&["run", "--progress", "lines"][..], &[("DB_SYNC_LOG_FORMAT", "json")][..]),
    ] {
        let out = ws.run_env(args, env);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_no_escape_byte(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut statements = 0;
        for line in stderr.lines() {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{stderr}"));
            for key in ["timestamp", "level", "message"] {
                assert!(event.get(key).is_some(), "no {key}: {line}");
            }
            if event["message"].as_str().is_some_and(|m| m.starts_with("plan:")) {
                // Row counts do not share the key `target` with the event's logger name.
                assert!(event["target_rows"].is_u64() && event["source_rows"].is_u64(), "{line}");
                assert_eq!(event["target"], "db_sync::engine", "{line}");
            }
            if event["target"] == "db_sync::sql" {
                assert_eq!(event["side"].as_str().map(|s| s == "source" || s == "target"), Some(true), "{line}");
                statements += 1;
            }
        }
        assert!(statements > 3, "{stderr}");
        ws.run(&["runs"]);
    }
}

/// Redirected output holds no ESC byte at any verbosity, with every switch on, even when a
/// row value holds one; a run that ends with a data error does not either.
#[test]
fn redirected_output_has_no_escape_codes() {
    let all = r#", "debug_sql": true, "show_sql_values": true, "debug_connection_change": true"#;
    let ws = workspace(all);
    for v in [&[][..], &["-v"], &["-vv"]] {
        let mut args = v.to_vec();
        args.extend(["run", "--progress", "lines", "--abandon"]);
        let out = ws.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_no_escape_byte(&out);
    }
    // A NOT NULL target column the source leaves NULL: refused rows, errors in the report.
    let ws = workspace("");
    ws.db("target.sqlite", "DROP TABLE items; CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL CHECK (name NOT LIKE '%red'), modify_id INTEGER);");
    let out = ws.run(&["-vv", "run", "--progress", "lines"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[data]"), "{}", text(&out));
    assert_no_escape_byte(&out);
}

/// With JSON logs, the command's own messages are JSON log events too: a second `run`
/// refused while a run is unfinished says so as an error event, and `resume` announces
/// itself as an event.
#[test]
fn json_log_format_makes_notices_events() {
    let ws = workspace("");
    let stopped = ws.run_env(&["run", "--progress", "off"], &[("DB_SYNC_FAILPOINT", "after_checkpoint:1")]);
    assert_ne!(stopped.status.code(), Some(0), "{}", text(&stopped));
    for (args, level, needle) in
        [(&["run"][..], "ERROR", "is unfinished"), (&["resume", "--progress", "off"][..], "WARN", "resuming run 1")]
    {
        let mut all = vec!["--log-format", "json"];
        all.extend_from_slice(args);
        let out = ws.run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let events: Vec<serde_json::Value> = stderr
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{stderr}")))
            .collect();
        assert!(
            events.iter().any(|e| e["level"] == level && e["message"].as_str().is_some_and(|m| m.contains(needle))),
            "{level} {needle:?} in {stderr}"
        );
    }
}
