//! Benchmark: binary search against full compare for the `delete` step of a
//! 1,000,000-row SQLite table with k rows deleted from the source (k = 1, 10, 100, 1000;
//! scattered over the table, and clustered at the newest keys). Each scenario runs the
//! real engine on a fresh copy of the target and prints queries, rows and bytes read,
//! wall time and peak memory side by side, twice: on local files, and with both
//! databases behind a modeled link (2 ms round trip, 100 Mbit/s; see
//! `connector::link`), the setting db-sync is built for. Asserts nothing about speed.
//!
//! `cargo bench --bench bisect` (BENCH_ROWS sets the table size).

mod common;

use common::{peak_memory_mib, reset_peak_memory};

use std::path::Path;
use std::time::Instant;

use std::sync::Arc;
use std::time::Duration;

use db_sync::config::Config;
use db_sync::connector::link::{LinkModel, ModeledLink};
use db_sync::connector::sqlite::SqliteConnector;
use db_sync::connector::{ConnectOptions, Connector, Side};
use db_sync::engine::{Engine, NoObserver, RunOptions};
use db_sync::report::ProgressMode;

const SCHEMA: &str =
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, modify_id INTEGER NOT NULL);";

struct Figures {
    queries: u64,
    rows_read: u64,
    bytes_read: u64,
    seconds: f64,
    step_seconds: f64,
    peak_mib: f64,
    deleted: u64,
}

async fn run(dir: &Path, binary: bool, link: Option<LinkModel>) -> Figures {
    let min_size = if binary { 10_000u64 } else { u64::MAX / 4 };
    let config_path = dir.join("bench.json");
    std::fs::write(
        &config_path,
        format!(
            r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}},
                "target": {{"type": "sqlite", "path": "target.sqlite"}},
                "tables": [{{"name": "items", "modify_id_field": "modify_id"}}],
                "binary_search_min_table_size": {min_size}, "max_delete_percent": 100,
                "binary_search_for_add": true}}"#
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    reset_peak_memory();
    let started = Instant::now();
    let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
    let engine = match link {
        None => Engine::connect(config, options).await.unwrap(),
        Some(model) => {
            let open = |path: &str, side| SqliteConnector::open(dir.join(path), side, ConnectOptions::default());
            let source: Arc<dyn Connector> = Arc::new(open("source.sqlite", Side::Source).await.unwrap());
            let target: Arc<dyn Connector> = Arc::new(open("target.sqlite", Side::Target).await.unwrap());
            let source = Arc::new(ModeledLink { inner: source, model });
            let target = Arc::new(ModeledLink { inner: target, model });
            Engine::with_connectors(config, source, target, options)
        }
    };
    let report = engine.run(&mut NoObserver).await.map_err(|(e, _)| e).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.tables[0].verified, Some(true));
    let (_, sr, sb, _) = engine.source().counters().snapshot();
    let (_, tr, tb, _) = engine.target().counters().snapshot();
    Figures {
        queries: report.metrics.queryCountAll,
        rows_read: sr + tr,
        bytes_read: sb + tb,
        seconds,
        step_seconds: report.tables[0].duration_ms as f64 / 1000.0,
        peak_mib: peak_memory_mib(),
        deleted: report.metrics.recordCountAllDeleted,
    }
}

fn main() {
    let rows: i64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.sqlite");
    let conn = rusqlite::Connection::open(&base).unwrap();
    conn.execute_batch(&format!(
        "{SCHEMA}
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
         INSERT INTO items SELECT x, 'item number ' || x, x % 1000, x FROM c;"
    ))
    .unwrap();
    drop(conn);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let link = LinkModel { round_trip: Duration::from_millis(2), bytes_per_second: 100e6 / 8.0 };
    for (title, model) in [("local files", None), ("modeled link: 2 ms round trip, 100 Mbit/s", Some(link))] {
        println!("\ndb-sync benchmark: delete step, {rows}-row SQLite table, k rows deleted from the source; {title}");
        scenarios(&runtime, dir.path(), &base, rows, model);
    }
}

fn scenarios(runtime: &tokio::runtime::Runtime, dir: &Path, base: &Path, rows: i64, link: Option<LinkModel>) {
    println!(
        "{:<22} {:<14} {:>8} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8}",
        "scenario", "strategy", "queries", "rows read", "MiB read", "run s", "step s", "peak MiB", "deleted"
    );
    for k in [1i64, 10, 100, 1000] {
        for clustered in [false, true] {
            let keys: Vec<i64> =
                if clustered { (rows - k + 1..=rows).collect() } else { (0..k).map(|i| i * (rows / k) + 7).collect() };
            let mut results = Vec::new();
            for binary in [true, false] {
                std::fs::copy(base, dir.join("source.sqlite")).unwrap();
                std::fs::copy(base, dir.join("target.sqlite")).unwrap();
                let source = rusqlite::Connection::open(dir.join("source.sqlite")).unwrap();
                let list: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                source.execute_batch(&format!("DELETE FROM items WHERE id IN ({})", list.join(","))).unwrap();
                drop(source);
                let figures = runtime.block_on(run(dir, binary, link));
                assert_eq!(figures.deleted, k as u64);
                results.push(figures);
            }
            let name = format!("k={k} {}", if clustered { "newest" } else { "scattered" });
            for (figures, strategy) in results.iter().zip(["binary search", "full compare"]) {
                println!(
                    "{name:<22} {strategy:<14} {:>8} {:>10} {:>10.2} {:>8.3} {:>8.3} {:>9.1} {:>8}",
                    figures.queries,
                    figures.rows_read,
                    figures.bytes_read as f64 / 1048576.0,
                    figures.seconds,
                    figures.step_seconds,
                    figures.peak_mib,
                    figures.deleted
                );
            }
            let (b, f) = (&results[0], &results[1]);
            println!(
                "{:<22} binary search reads {:.3}% of the rows; run {:.1}x, delete step {:.1}x faster{}",
                "",
                100.0 * b.rows_read as f64 / f.rows_read as f64,
                f.seconds / b.seconds,
                f.step_seconds / b.step_seconds,
                if b.queries == f.queries { " (the engine chose the full compare: large difference)" } else { "" }
            );
        }
    }
}
