//! Benchmark: db-sync against 4D's SQL server (the `fourd-emulator` crate's `SqlEmulator` on
//! loopback, backed by SQLite), in two parts.
//!
//! 1. **Finding ten rows deleted in 4D** in a 1,000,000-row table, the emulator waiting 20 ms
//!    before every reply: the binary search (range counts and `OFFSET` split points, four
//!    or more parts a split) against the full compare (every key read, `FETCH-RESULT` pages)
//!    and against halving (`binary_search_fanout: 2`). Prints statements, bytes sent by the
//!    server and wall time of each.
//! 2. **A full copy** 4D → PostgreSQL (a throwaway cluster; skipped without PostgreSQL's
//!    binaries) and 4D → SQLite, without added latency: rows/s and db-sync's peak memory.
//!
//! db-sync runs as its own process (the release binary), so its peak memory (`VmHWM`,
//! sampled every 20 ms) excludes the emulator's. Asserts only that each run succeeds and
//! ends with the right row count. `cargo bench --bench fourd_sql` (BENCH_ROWS sets the
//! size, BENCH_LATENCY_MS the added latency).

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fourd_emulator::{SqlEmulator, SqlSettings};

const FOURD_TABLE: &str =
    "CREATE TABLE Items (ID INT64 PRIMARY KEY, name VARCHAR(40), qty INT, price REAL, note TEXT, stamp INT64);";
const SQLITE_TABLE: &str =
    "CREATE TABLE Items (ID INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT, stamp INTEGER);";
const PG_TABLE: &str = "CREATE TABLE \"Items\" (\"ID\" bigint PRIMARY KEY, name text, qty integer, \
                        price double precision, note text, stamp bigint)";
const MISSING: [u64; 10] = [7, 99_999, 123_456, 250_000, 250_001, 480_000, 500_000, 777_777, 900_001, 999_990];

fn fill(path: &Path, create: &str, rows: u64) {
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
fn sync(dir: &Path, source: &str, target: &str, extra: &str) -> (f64, f64, String) {
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

fn count(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM Items", [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let latency: u64 = std::env::var("BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let fourd = dir.path().join("fourd.sqlite");
    fill(&fourd, FOURD_TABLE, rows);
    let settings = || SqlSettings { users: vec![("bench".into(), "bench".into())], max_sessions: 4 };
    let emulator = SqlEmulator::start(&fourd, settings()).unwrap();
    let source = format!(
        r#"{{"type": "4d", "protocol": "sql", "host": "127.0.0.1", "port": {}, "user": "bench",
             "password": "${{FOURD_PASSWORD}}"}}"#,
        emulator.port()
    );
    let target = r#"{"type": "sqlite", "path": "target.sqlite"}"#;
    let target_file = dir.path().join("target.sqlite");
    println!("db-sync benchmark: 4D SQL server (emulator) with {rows} rows");

    // Part 1: ten rows deleted in 4D, 20 ms before every reply.
    let mut missing: Vec<u64> = MISSING.iter().map(|m| m * rows / 1_000_000).map(|m| m.max(1)).collect();
    missing.dedup();
    {
        let conn = rusqlite::Connection::open(&fourd).unwrap();
        for id in &missing {
            conn.execute("DELETE FROM Items WHERE ID = ?1", [*id as i64]).unwrap();
        }
    }
    emulator.set_reply_delay(Duration::from_millis(latency));
    println!("\nten rows deleted in 4D, found in a {rows}-row target, {latency} ms before every reply:");
    let mut results = Vec::new();
    for (name, extra) in [
        ("binary search", ""),
        ("full compare", r#", "binary_search_min_table_size": 1000000000000"#),
        ("halves only", r#", "binary_search_fanout": 2"#),
    ] {
        let _ = std::fs::remove_file(&target_file);
        fill(&target_file, SQLITE_TABLE, rows);
        emulator.reset_stats();
        let (seconds, peak, stdout) = sync(dir.path(), &source, target, extra);
        assert!(stdout.contains(&format!("recordCountAllDeleted={}", missing.len())), "{stdout}");
        assert_eq!(count(&target_file), rows - missing.len() as u64);
        let stats = emulator.stats();
        let step = stdout
            .lines()
            .find(|l| l.starts_with("Items "))
            .and_then(|l| l.split_whitespace().find_map(|t| t.strip_suffix('s')?.parse::<f64>().ok()))
            .unwrap_or(f64::NAN);
        let depth = stdout
            .split("binarySearchMaxDepthAll=")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .map(|d| format!(", {d} levels"))
            .filter(|d| d != ", 0 levels")
            .unwrap_or_default();
        println!(
            "  {name:<14} {:>6} requests ({} statements) {:>12} bytes from 4D  {seconds:>7.2} s (the step {step:.2} s{depth})  peak memory {peak:.1} MiB",
            stats.requests, stats.statements, stats.bytes_out
        );
        results.push((stats.requests, seconds, step));
    }
    let goal = 2.0 * (rows as f64 / 500.0).log2() + 4.0;
    println!(
        "  binary search: {:.1} requests per difference (2·log2(N/500) + 4 = {goal:.1}); {:.1}x faster than the full compare \
         (the step alone: {:.1}x)",
        results[0].0 as f64 / missing.len() as f64,
        results[1].1 / results[0].1,
        results[1].2 / results[0].2
    );

    // Part 2: full copies without added latency.
    emulator.set_reply_delay(Duration::ZERO);
    let rows = rows - missing.len() as u64;
    println!("\nfull copy, no added latency:");
    std::fs::remove_file(&target_file).unwrap();
    rusqlite::Connection::open(&target_file).unwrap().execute_batch(SQLITE_TABLE).unwrap();
    emulator.reset_stats();
    let (seconds, peak, _) = sync(dir.path(), &source, target, "");
    assert_eq!(count(&target_file), rows);
    println!(
        "  4D -> SQLite      {seconds:>7.2} s {:>10.0} rows/s  {} requests  peak memory {peak:.1} MiB",
        rows as f64 / seconds,
        emulator.stats().requests
    );
    match pg::cluster() {
        Some(cluster) => {
            let db = cluster.create_database();
            cluster.psql(&db, PG_TABLE);
            let target = format!(r#"{{"type": "postgres", "url": "{}"}}"#, cluster.url(&db));
            emulator.reset_stats();
            let (seconds, peak, _) = sync(dir.path(), &source, &target, "");
            assert_eq!(cluster.query(&db, "SELECT count(*) FROM \"Items\""), vec![rows.to_string()]);
            println!(
                "  4D -> PostgreSQL  {seconds:>7.2} s {:>10.0} rows/s  {} requests  peak memory {peak:.1} MiB",
                rows as f64 / seconds,
                emulator.stats().requests
            );
        }
        None => println!("  4D -> PostgreSQL  skipped: no PostgreSQL server binaries"),
    }
}
