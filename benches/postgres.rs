//! Benchmark: a full copy of 1,000,000 rows SQLite→PostgreSQL and PostgreSQL→PostgreSQL
//! through `db-sync run`'s own path (idempotent COPY-staged upserts, a flushed checkpoint
//! after every batch), beside a plain `psql COPY … TO STDOUT | psql COPY … FROM STDIN` of
//! the same table in the same run: the physical limit to approach. Starts its own
//! throwaway cluster (see tests/common/pg.rs; fsync off, as in the tests). Prints rows/s
//! and peak memory; asserts nothing about speed. Each measurement is repeated (the
//! machine's other load makes single runs vary by a third) and the fastest counts, for the
//! pipe as for db-sync.
//!
//! `cargo bench --bench postgres` (BENCH_ROWS sets the table size, BENCH_REPEAT the runs
//! per measurement, default 3; BENCH_PG_SOCKET=1 makes db-sync use the server's Unix
//! socket instead of TCP).

mod common;

use common::{peak_memory_mib, reset_peak_memory};

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::process::{Command, Stdio};
use std::time::Instant;

use db_sync::config::Config;
use db_sync::engine::RunOptions;
use db_sync::report::ProgressMode;

const PG_TABLE: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty integer, \
                        price double precision, note text, modify_id bigint NOT NULL)";

/// One `db-sync run`: (seconds, peak memory in MiB, time split).
fn sync(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    source: &str,
    target: &str,
    batch_size: Option<usize>,
) -> (f64, f64, String) {
    let path = dir.join("db-sync.json");
    let _ = std::fs::remove_dir_all(dir.join(".db-sync"));
    std::fs::write(
        &path,
        format!(
            r#"{{"source": {source}, "target": {target}, "batch_size": {},
                "tables": [{{"name": "items", "modify_id_field": "modify_id"}}]}}"#,
            batch_size.unwrap_or(db_sync::config::file::default_batch_size())
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    reset_peak_memory();
    let started = Instant::now();
    let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
    let code = runtime.block_on(async {
        let stopper = db_sync::runner::Stopper::install(std::sync::Arc::clone(&options.stop));
        db_sync::runner::start(
            config,
            options,
            false,
            &db_sync::cli::Terminal(db_sync::runner::Output::Quiet),
            &stopper,
        )
        .await
        .code
    });
    assert_eq!(code, 0);
    let seconds = started.elapsed().as_secs_f64();
    let store = db_sync::checkpoint::Store::open(&dir.join(".db-sync")).unwrap();
    let run = store.runs().unwrap().pop().unwrap();
    let m = db_sync::engine::Engine::report(&run.state, false, 0).metrics;
    let split = format!(
        "time split: read {:.2} s, write {:.2} s, compare and convert {:.2} s (read overlaps write)",
        m.readTimeAll as f64 / 1000.0,
        m.writeTimeAll as f64 / 1000.0,
        m.dataCompareTimeAll as f64 / 1000.0
    );
    (seconds, peak_memory_mib(), split)
}

fn main() {
    let rows: i64 = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let Some(cluster) = pg::cluster() else {
        eprintln!("no PostgreSQL server binaries: benchmark skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    let src = cluster.create_database();
    cluster.psql(&src, PG_TABLE);
    cluster.psql(
        &src,
        &format!(
            "INSERT INTO items SELECT x, 'item number ' || x, x % 1000, x * 0.01, 'note ' || (x % 77), x \
             FROM generate_series(1, {rows}) x"
        ),
    );
    let sqlite = dir.path().join("source.sqlite");
    let conn = rusqlite::Connection::open(&sqlite).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, note TEXT, modify_id INTEGER NOT NULL);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
         INSERT INTO items SELECT x, 'item number ' || x, x % 1000, x * 0.01, 'note ' || (x % 77), x FROM c;"
    ))
    .unwrap();
    drop(conn);
    println!("db-sync benchmark: full copy of {rows} rows into PostgreSQL (throwaway cluster, fsync off)");

    let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    // The physical limit: COPY out of one database straight into another.
    let mut pipe_times = Vec::new();
    for _ in 0..repeat {
        let dst = cluster.create_database();
        cluster.psql(&dst, PG_TABLE);
        let started = Instant::now();
        let pipe = format!(
            "psql -X -q -h 127.0.0.1 -p {port} -U postgres -d {src} -c 'COPY items TO STDOUT' | \
             psql -X -q -h 127.0.0.1 -p {port} -U postgres -d {dst} -c 'COPY items FROM STDIN'",
            port = cluster.port
        );
        let status = Command::new("sh").args(["-c", &pipe]).stdout(Stdio::null()).status().unwrap();
        assert!(status.success());
        pipe_times.push(started.elapsed().as_secs_f64());
    }
    let copy_seconds = pipe_times.iter().copied().fold(f64::INFINITY, f64::min);
    let copy_rate = rows as f64 / copy_seconds;
    println!(
        "{:<44} {copy_seconds:>7.2} s {copy_rate:>10.0} rows/s  (runs: {})",
        "psql COPY TO STDOUT | psql COPY FROM STDIN",
        seconds_list(&pipe_times)
    );

    // BENCH_PG_SOCKET=1: db-sync reaches the server through its Unix socket instead of TCP.
    let socket = std::env::var("BENCH_PG_SOCKET").is_ok_and(|v| v == "1");
    let url = |db: &str| {
        if socket {
            format!("postgres://postgres@localhost/{db}?host={}&port={}", cluster.socket_dir.display(), cluster.port)
        } else {
            cluster.url(db)
        }
    };
    let sqlite = r#"{"type": "sqlite", "path": "source.sqlite"}"#.to_string();
    let postgres = format!(r#"{{"type": "postgres", "url": "{}"}}"#, url(&src));
    for (name, source, batch) in [
        ("db-sync run SQLite -> PostgreSQL", &sqlite, None),
        ("db-sync run PostgreSQL -> PostgreSQL", &postgres, None),
        ("  SQLite -> PostgreSQL, batch_size 20000", &sqlite, Some(20000)),
        ("  PostgreSQL -> PostgreSQL, batch_size 20000", &postgres, Some(20000)),
    ] {
        let mut runs = Vec::new();
        for _ in 0..repeat {
            let dst = cluster.create_database();
            cluster.psql(&dst, PG_TABLE);
            let target = format!(r#"{{"type": "postgres", "url": "{}"}}"#, url(&dst));
            runs.push(sync(&runtime, dir.path(), source, &target, batch));
            let count = cluster.query(&dst, "SELECT count(*) FROM items");
            assert_eq!(count, vec![rows.to_string()]);
        }
        let times: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let (seconds, peak, split) = runs.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)).expect("one run at least");
        let rate = rows as f64 / seconds;
        println!(
            "{name:<44} {seconds:>7.2} s {rate:>10.0} rows/s  {:>5.1}% of the COPY pipe  peak memory {peak:.1} MiB  (runs: {})",
            100.0 * rate / copy_rate,
            seconds_list(&times)
        );
        println!("    {split}");
    }
}

fn seconds_list(times: &[f64]) -> String {
    times.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>().join(", ")
}
