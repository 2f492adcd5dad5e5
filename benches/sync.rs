//! Benchmark: full copy and full compare of a large SQLite table through the real engine,
//! with and without checkpoints, and the state store's size after 100 runs. Prints rows/s,
//! queries, bytes read and peak memory per scenario; asserts nothing about speed. Run
//! with `cargo bench --bench sync` (BENCH_ROWS sets the table size, default 1,000,000).

mod common;

use common::{peak_memory_mib, reset_peak_memory};

use std::path::Path;
use std::time::Instant;

use db_sync::config::Config;
use db_sync::engine::{Engine, NoObserver, RunOptions};
use db_sync::report::ProgressMode;

const SCHEMA: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, note TEXT, modify_id INTEGER NOT NULL);
                      CREATE INDEX items_modify ON items (modify_id);";

fn create(path: &Path, rows: u64) {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    if rows > 0 {
        conn.execute_batch(&format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
             INSERT INTO items SELECT x, 'item number ' || x, x % 1000, x * 0.01, 'note ' || (x % 77), x FROM c;"
        ))
        .unwrap();
    }
}

/// A full copy through `db-sync run`'s own code path: checkpoint store, a flushed
/// checkpoint after every batch.
async fn durable_copy(name: &str, config_path: &Path, rows: u64) -> f64 {
    let config = Config::load(config_path).unwrap();
    reset_peak_memory();
    let started = Instant::now();
    let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
    let stopper = db_sync::runner::Stopper::install(std::sync::Arc::clone(&options.stop));
    let code = db_sync::runner::start(
        config.clone(),
        options,
        false,
        &db_sync::cli::Terminal(db_sync::runner::Output::Quiet),
        &stopper,
    )
    .await
    .code;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(code, 0);
    let store = db_sync::checkpoint::Store::open(&config.run.state_dir).unwrap();
    let run = store.runs().unwrap().pop().unwrap();
    let checkpoints = run.state.tasks.len();
    println!(
        "{name:<28} {:<14} {rows:>9} rows {seconds:>7.2} s {:>10.0} rows/s  tasks {checkpoints:>3}  store {:>6.1} MiB  peak memory {:>6.1} MiB",
        run.state.tables[0].survey.plan.steps_text(),
        rows as f64 / seconds,
        store.size_on_disk() as f64 / 1048576.0,
        peak_memory_mib()
    );
    seconds
}

async fn scenario(name: &str, config_path: &Path, rows: u64) -> f64 {
    let config = Config::load(config_path).unwrap();
    reset_peak_memory();
    let started = Instant::now();
    let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
    let engine = Engine::connect(config, options).await.unwrap();
    let report = engine.run(&mut NoObserver).await.map_err(|(e, _)| e).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (_, sr, sb, _) = engine.source().counters().snapshot();
    let (_, tr, tb, tw) = engine.target().counters().snapshot();
    let plan = report.tables[0].plan.as_ref().map(|p| p.steps_text()).unwrap_or_default();
    println!(
        "{name:<28} {plan:<14} {rows:>9} rows {seconds:>7.2} s {:>10.0} rows/s  queries {:>6}  rows read {:>9}  bytes read {:>6.1} MiB  rows written {:>8}  peak memory {:>6.1} MiB",
        rows as f64 / seconds,
        report.metrics.queryCountAll,
        sr + tr,
        (sb + tb) as f64 / 1048576.0,
        tw,
        peak_memory_mib()
    );
    seconds
}

/// Runs 100 small syncs (10 changed rows each) through the store and reports its size.
async fn store_after_100_runs(dir: &Path) {
    let source = dir.join("small-source.sqlite");
    let target = dir.join("small-target.sqlite");
    create(&source, 10_000);
    create(&target, 0);
    let config_path = dir.join("small.json");
    std::fs::write(
        &config_path,
        r#"{"source": {"type": "sqlite", "path": "small-source.sqlite"},
            "target": {"type": "sqlite", "path": "small-target.sqlite"},
            "tables": [{"name": "items", "modify_id_field": "modify_id"}],
            "trust_modify_id": true, "state_dir": "small-state", "keep_runs": 0}"#,
    )
    .unwrap();
    let started = Instant::now();
    for i in 0..100 {
        let conn = rusqlite::Connection::open(&source).unwrap();
        conn.execute("UPDATE items SET qty = qty + 1, modify_id = modify_id + 100000 WHERE id % 1000 = ?1", [i % 1000])
            .unwrap();
        drop(conn);
        let config = Config::load(&config_path).unwrap();
        let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
        let stopper = db_sync::runner::Stopper::install(std::sync::Arc::clone(&options.stop));
        let outcome = db_sync::runner::start(
            config,
            options,
            false,
            &db_sync::cli::Terminal(db_sync::runner::Output::Quiet),
            &stopper,
        )
        .await;
        assert_eq!(outcome.code, 0);
    }
    let store = db_sync::checkpoint::Store::open(&dir.join("small-state")).unwrap();
    let runs = store.runs().unwrap().len();
    let files: u64 = walk_size(&dir.join("small-state"));
    println!(
        "state store after {runs} runs of a 10,000-row table: sled size_on_disk {:.1} MiB, files on disk {:.1} MiB ({:.2} s for the 100 runs)",
        store.size_on_disk() as f64 / 1048576.0,
        files as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
}

fn walk_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() { walk_size(&e.path()) } else { meta.len() }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let rows: u64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.sqlite");
    let target = dir.path().join("target.sqlite");
    let config = dir.path().join("db-sync.json");
    std::fs::write(
        &config,
        r#"{"source": {"type": "sqlite", "path": "source.sqlite"},
            "target": {"type": "sqlite", "path": "target.sqlite"},
            "tables": [{"name": "items", "modify_id_field": "modify_id"}]}"#,
    )
    .unwrap();
    let build = Instant::now();
    create(&source, rows);
    create(&target, 0);
    println!("db-sync benchmark: SQLite -> SQLite, {rows} rows (built in {:.1} s)", build.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let off = scenario("full copy, no checkpoints", &config, rows).await;
        create(&target, 0);
        let on = durable_copy("full copy, checkpointed", &config, rows).await;
        println!("checkpointing cost: {:+.1}% wall time", 100.0 * (on - off) / off);
        create(&target, 0);
        scenario("full copy (empty target)", &config, rows).await;
        scenario("full compare (equal tables)", &config, rows).await;
        // 0.1% of rows changed without a new modify ID: found by the full compare.
        let conn = rusqlite::Connection::open(&source).unwrap();
        conn.execute_batch("UPDATE items SET qty = -1 WHERE id % 1000 = 0").unwrap();
        drop(conn);
        scenario("full compare (0.1% changed)", &config, rows).await;
        store_after_100_runs(dir.path()).await;
    });
}
