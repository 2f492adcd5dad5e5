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
//! 3. **Writing into 4D**: SQLite → an empty 4D table, `BENCH_WRITE_ROWS` rows (default
//!    200,000) without added latency, and a tenth of them with the latency of part 1.
//!
//! db-sync runs as its own process (the release binary), so its peak memory (`VmHWM`,
//! sampled every 20 ms) excludes the emulator's. Asserts only that each run succeeds and
//! ends with the right row count. `cargo bench --bench fourd_sql` (BENCH_ROWS sets the
//! size, BENCH_LATENCY_MS the added latency).

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

#[path = "common/fourd.rs"]
mod common;

use std::time::Duration;

use common::{SQLITE_TABLE, count, depth_text, fill, missing, step_seconds, sync};

use fourd_emulator::{SqlEmulator, SqlSettings};

const FOURD_TABLE: &str =
    "CREATE TABLE Items (ID INT64 PRIMARY KEY, name VARCHAR(40), qty INT, price REAL, note TEXT, stamp INT64);";
const PG_TABLE: &str = "CREATE TABLE \"Items\" (\"ID\" bigint PRIMARY KEY, name text, qty integer, \
                        price double precision, note text, stamp bigint)";

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let latency: u64 = std::env::var("BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let fourd = dir.path().join("fourd.sqlite");
    fill(&fourd, FOURD_TABLE, rows);
    let settings =
        || SqlSettings { users: vec![("bench".into(), "bench".into())], max_sessions: 4, ..SqlSettings::default() };
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
    let missing = missing(rows);
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
        let step = step_seconds(&stdout);
        let depth = depth_text(&stdout);
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

    // Part 3: SQLite → 4D (INSERTs pipelined in transactions).
    let write_rows: u64 = std::env::var("BENCH_WRITE_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    println!(
        "
writing into 4D (SQLite -> an empty 4D table):"
    );
    for (rows, delay) in [(write_rows, 0), (write_rows / 10, latency)] {
        let source_file = dir.path().join("write-source.sqlite");
        let into_file = dir.path().join("write-4d.sqlite");
        let _ = std::fs::remove_file(&source_file);
        let _ = std::fs::remove_file(&into_file);
        fill(&source_file, SQLITE_TABLE, rows);
        rusqlite::Connection::open(&into_file).unwrap().execute_batch(FOURD_TABLE).unwrap();
        let into = SqlEmulator::start(&into_file, settings()).unwrap();
        into.set_reply_delay(Duration::from_millis(delay));
        let target = format!(
            r#"{{"type": "4d", "protocol": "sql", "host": "127.0.0.1", "port": {}, "user": "bench",
                 "password": "${{FOURD_PASSWORD}}"}}"#,
            into.port()
        );
        let (seconds, peak, _) = sync(dir.path(), r#"{"type": "sqlite", "path": "write-source.sqlite"}"#, &target, "");
        assert_eq!(count(&into_file), rows);
        let stats = into.stats();
        println!(
            "  {rows:>8} rows, {delay:>2} ms a reply  {seconds:>7.2} s {:>10.0} rows/s  {} requests ({} statements)  peak memory {peak:.1} MiB",
            rows as f64 / seconds,
            stats.requests,
            stats.statements
        );
    }
}
