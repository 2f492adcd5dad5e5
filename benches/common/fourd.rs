//! What the 4D benchmarks (`fourd`, over REST; `fourd_sql`, over the SQL server) share:
//! the `Items` fixture, the ten deleted rows, one `db-sync run` as a process with its peak
//! memory, and the figures read from its report.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `Items` table of the SQLite target.
pub const SQLITE_TABLE: &str =
    "CREATE TABLE Items (ID INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT, stamp INTEGER);";

const MISSING: [u64; 10] = [7, 99_999, 123_456, 250_000, 250_001, 480_000, 500_000, 777_777, 900_001, 999_990];

/// The keys deleted in 4D for the search, scaled to `rows` (fewer than ten when small
/// tables make two of them meet).
pub fn missing(rows: u64) -> Vec<u64> {
    let mut missing: Vec<u64> = MISSING.iter().map(|m| m * rows / 1_000_000).map(|m| m.max(1)).collect();
    missing.dedup();
    missing
}

/// Creates `Items` with `create` and fills it with rows `1..=rows`.
pub fn fill(path: &Path, create: &str, rows: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "{create}
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
         INSERT INTO Items SELECT x, 'item number ' || x, x % 1000, x * 0.01, 'note ' || (x % 77), x FROM c;
         CREATE INDEX Items_stamp ON Items (stamp);"
    ))
    .unwrap();
}

/// One `db-sync run` as a process: (seconds, peak memory in MiB, stdout).
pub fn sync(dir: &Path, source: &str, target: &str, extra: &str) -> (f64, f64, String) {
    std::fs::write(
        dir.join("db-sync.json"),
        format!(
            r#"{{"source": {source}, "target": {target}, "tables": [{{"name": "Items", "primary_key_field": "ID",
                  "modify_id_field": "stamp", "trust_modify_id": true}}] {extra}}}"#
        ),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(dir.join(".db-sync"));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["run", "--progress", "off"])
        .current_dir(dir)
        .env("FOURD_PASSWORD", "bench")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0f64;
    loop {
        if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        }) {
            peak_kb = f64::max(peak_kb, kb);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "db-sync run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    (seconds, peak_kb / 1024.0, stdout)
}

pub fn count(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM Items", [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// The table's own time in the report (the step: finding and deleting the rows), without
/// the process start, login, planning and logout.
pub fn step_seconds(stdout: &str) -> f64 {
    stdout
        .lines()
        .find(|l| l.starts_with("Items "))
        .and_then(|l| l.split_whitespace().find_map(|t| t.strip_suffix('s')?.parse::<f64>().ok()))
        .unwrap_or(f64::NAN)
}

/// `, N levels` for a run whose binary search went N splits deep; empty without a search.
pub fn depth_text(stdout: &str) -> String {
    stdout
        .split("binarySearchMaxDepthAll=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .map(|d| format!(", {d} levels"))
        .filter(|d| d != ", 0 levels")
        .unwrap_or_default()
}
