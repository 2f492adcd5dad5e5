//! Soak benchmark: `db-sync daemon` with `sleep_seconds: 1` on the ERP demo (SQLite to
//! SQLite) whose source changes between runs (a day of business each time: new, edited,
//! cancelled and moved rows), for 100 cycles. Every 10 cycles it prints the daemon's
//! resident memory (VmRSS and VmHWM from /proc) and the state store's size on disk; the
//! goal is flat figures. At the end the daemon gets SIGTERM (exit 0 expected) and
//! `db-sync verify` compares every row. Run with `cargo bench --bench daemon_soak`
//! (BENCH_CYCLES sets the cycle count, BENCH_SCALE the demo's scale, default 0.1;
//! BENCH_MUTATE=0 leaves the source unchanged, to tell growth of the data from growth of
//! the process).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Rows of every table of the demo source.
fn source_rows(conn: &rusqlite::Connection) -> u64 {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables
        .iter()
        .map(|t| conn.query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get::<_, i64>(0)).unwrap() as u64)
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    let cycles: usize = env_or("BENCH_CYCLES", 100);
    let scale: f64 = env_or("BENCH_SCALE", 0.1);
    let mutate: u8 = env_or("BENCH_MUTATE", 1);
    let dir = tempfile::tempdir().unwrap();
    let (config, rows) = db_sync::demo::build(dir.path(), scale).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("\"max_delete_percent\": 10", "\"max_delete_percent\": 100").replacen(
        '{',
        "{\n  \"sleep_seconds\": 1, \"keep_runs\": 50,",
        1,
    );
    std::fs::write(&config, text).unwrap();
    println!("daemon soak: demo scale {scale} ({rows} source rows), {cycles} cycles, sleep_seconds 1, keep_runs 50");

    let out_path = dir.path().join("daemon.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["daemon", "--progress", "off", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(dir.path().join("daemon.err")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let store = dir.path().join(".db-sync");
    let mut source = rusqlite::Connection::open(dir.path().join("source.sqlite")).unwrap();
    source.busy_timeout(Duration::from_secs(30)).unwrap();
    let started = Instant::now();
    let mut done = 0;
    println!(
        "{:>6} {:>12} {:>10} {:>10} {:>12} {:>9}",
        "cycle", "source rows", "rss KiB", "hwm KiB", "store bytes", "elapsed"
    );
    while done < cycles {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        let completed = out.matches("Sync complete.").count();
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited ({status}) after {completed} cycles:\n{out}");
        }
        if completed > done {
            done = completed;
            // The daemon sleeps a second now: change the source for the next run.
            if mutate != 0 {
                db_sync::demo::mutate_source(&mut source, done as u64).unwrap();
            }
            if done % 10 == 0 {
                println!(
                    "{done:>6} {:>12} {:>10} {:>10} {:>12} {:>8.1}s",
                    source_rows(&source),
                    status_kib(pid, "VmRSS:"),
                    status_kib(pid, "VmHWM:"),
                    dir_bytes(&store),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = std::fs::read_to_string(&out_path).unwrap();
    let failed = out.lines().filter(|l| l.starts_with("Sync failed")).count();
    println!("failed cycles: {failed}");
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let code = child.wait().unwrap().code();
    println!("daemon exit after SIGTERM: {code:?}");
    // The last change may have come after the last run started: one more run, then verify.
    let run = Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["run", "--progress", "off", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let verify =
        Command::new(env!("CARGO_BIN_EXE_db-sync")).args(["verify", "--config"]).arg(&config).output().unwrap();
    println!("final run exit {:?}, verify exit {:?} (0 = every row equal)", run.status.code(), verify.status.code());
}
