//! `db-sync daemon` as a child process on real SQLite files: stopping while it sleeps and
//! while it runs, `runs` and `show` during both, and a restart that resumes the run a
//! signal interrupted. The schedule's timing itself is tested with a manual clock in
//! `src/daemon/tests.rs`; nothing here waits for a schedule (the sleeps are an hour).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Workspace, text};

const ROWS: usize = 3000;

fn workspace(extra: &str) -> Workspace {
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        &format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC, modify_id INTEGER);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS})
             INSERT INTO items SELECT x, 'item ' || x, x * 1.25, x FROM c;"
        ),
    );
    ws.db(
        "target.sqlite",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC, modify_id INTEGER);",
    );
    ws.config(&format!(
        r#"{{
  "source": {{"type": "sqlite", "path": "source.sqlite"}},
  "target": {{"type": "sqlite", "path": "target.sqlite"}},
  "tables": [{{"name": "items", "modify_id_field": "modify_id"}}],
  "batch_size": 100,
  "binary_search_min_table_size": 1000000,
  "sleep_seconds": "1h"{extra}
}}"#
    ));
    ws
}

/// A daemon child writing its stdout and stderr to files in the workspace.
struct Daemon {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Daemon {
    fn start(ws: &Workspace, name: &str, env: &[(&str, &str)]) -> Daemon {
        let (out, err) = (ws.path(&format!("{name}.out")), ws.path(&format!("{name}.err")));
        let child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
            .args(["daemon", "--progress", "off"])
            .current_dir(ws.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("DB_SYNC_LOG")
            .env_remove("DB_SYNC_FAILPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start db-sync daemon");
        Daemon { child, out, err }
    }

    fn output(&self) -> (String, String) {
        (std::fs::read_to_string(&self.out).unwrap_or_default(), std::fs::read_to_string(&self.err).unwrap_or_default())
    }

    /// Waits (at most 60 s) until stdout or stderr contains `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (out, err) = self.output();
            if out.contains(needle) || err.contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the daemon exited ({status}) before saying {needle:?}:\n{out}\n{err}");
            }
            assert!(Instant::now() < deadline, "no {needle:?} within 60 s:\n{out}\n{err}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits (at most `within`) for the exit and returns its code.
    fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                let (out, err) = self.output();
                panic!("the daemon did not exit within {within:?}:\n{out}\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runs(ws: &Workspace) -> Vec<serde_json::Value> {
    let out = ws.run(&["runs", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// Rows of `items` read with plain SQL.
fn items(ws: &Workspace, db: &str) -> Vec<(i64, String, String)> {
    let conn = common::open(&ws.path(db));
    let mut stmt = conn.prepare("SELECT id, name, CAST(price AS TEXT) FROM items ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

/// A daemon that finished its run and sleeps: `runs` and `show` read the store, SIGTERM
/// ends it at once with 0.
#[test]
fn sleeping_daemon_leaves_the_store_readable_and_stops_at_once() {
    let ws = workspace(r#", "max_sleep_chunk_seconds": "10m""#);
    let mut daemon = Daemon::start(&ws, "d", &[]);
    daemon.wait_for("Sync complete. Sleeping 3600 seconds until next run...");
    let listed = runs(&ws);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "completed", "{listed:?}");
    let show = ws.run(&["show", "1", "--json"]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert_eq!(items(&ws, "target.sqlite"), items(&ws, "source.sqlite"));
    // A second daemon on the same state store is refused, naming the first.
    let second = ws.run(&["daemon"]);
    assert_eq!(second.status.code(), Some(6), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("another db-sync daemon (pid {})", daemon.child.id())),
        "{}",
        text(&second)
    );

    let asked = Instant::now();
    daemon.signal("TERM");
    assert_eq!(daemon.exit_within(Duration::from_secs(5)), Some(0));
    assert!(asked.elapsed() < Duration::from_secs(3), "stopped at once: {:?}", asked.elapsed());
    let (out, err) = daemon.output();
    assert!(out.contains("Stopped while sleeping"), "{out}");
    assert!(err.contains("SIGTERM: stopping (no run in progress)"), "{err}");
    assert_eq!(runs(&ws).len(), 1, "no second run");
}

/// SIGTERM in the middle of a run (held for 6 s at its fifth checkpoint): `runs` and `show` say
/// which run is in progress and what it does; the run stops after its batch with its
/// checkpoint written and the daemon exits 130; a new daemon resumes that run first.
#[test]
fn a_signal_during_a_run_checkpoints_and_the_next_daemon_resumes_it() {
    let ws = workspace("");
    let mut daemon = Daemon::start(&ws, "first", &[("DB_SYNC_FAILPOINT", "after_checkpoint:5:pause=6000")]);
    daemon.wait_for("failpoint after_checkpoint:5 reached, pausing");

    let during = ws.run(&["runs"]);
    assert_eq!(during.status.code(), Some(0), "{}", text(&during));
    let said = String::from_utf8_lossy(&during.stdout).to_string();
    assert!(said.contains("run 1 is in progress since") && said.contains("task "), "{said}");
    assert!(said.contains("added"), "with its rows so far: {said}");
    let show = ws.run(&["show", "1", "--json"]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["in_progress"]["run_id"], 1, "{shown}");
    let other = ws.run(&["show", "7"]);
    assert_eq!(other.status.code(), Some(6), "another run cannot be read now: {}", text(&other));

    daemon.signal("TERM");
    assert_eq!(daemon.exit_within(Duration::from_secs(15)), Some(130));
    let (_, err) = daemon.output();
    assert!(err.contains("SIGTERM: stopping after the current batch"), "{err}");
    let listed = runs(&ws);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "interrupted", "{listed:?}");
    let copied = items(&ws, "target.sqlite").len();
    assert!((500..ROWS).contains(&copied), "stopped half-way: {copied} rows");

    // The next daemon serves metrics: they count what it did, not the first one's rows.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = std::fs::read_to_string(ws.path("db-sync.json")).unwrap();
    ws.config(&config.replacen('{', &format!("{{\n  \"metrics_listen\": \"127.0.0.1:{port}\","), 1));
    let mut second = Daemon::start(&ws, "second", &[]);
    second.wait_for("Sync complete. Sleeping 3600 seconds until next run...");
    let metrics = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap()
    });
    let added = metrics
        .lines()
        .find_map(|l| l.strip_prefix("db_sync_record_count_added_total{table=\"items\"} "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(added.parse::<usize>().unwrap(), ROWS - copied, "{metrics}");
    let (out, err) = second.output();
    assert!(err.contains("resuming run 1"), "{out}\n{err}");
    let listed = runs(&ws);
    assert_eq!(listed.len(), 1, "the interrupted run was resumed, not replaced: {listed:?}");
    assert_eq!(listed[0]["status"], "completed", "{listed:?}");
    assert_eq!(items(&ws, "target.sqlite"), items(&ws, "source.sqlite"));
    second.signal("INT");
    assert_eq!(second.exit_within(Duration::from_secs(5)), Some(0));
}

/// A config without a schedule is refused by the daemon, naming both keys.
#[test]
fn a_daemon_needs_a_schedule() {
    let ws = workspace("");
    let text_config = std::fs::read_to_string(ws.path("db-sync.json"))
        .unwrap()
        .replace(r#""sleep_seconds": "1h""#, r#""keep_runs": 10"#);
    ws.config(&text_config);
    let out = ws.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("sleep_seconds") && all.contains("run_at_time"), "{all}");

    let bad = text_config.replace(r#""keep_runs": 10"#, r#""sleep_seconds": "an hour""#);
    ws.config(&bad);
    let out = ws.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("sleep_seconds"), "{}", text(&out));
}

/// `/metrics` after two runs (the second after a SIGHUP that lengthened the sleep): the
/// counters equal the sums of `show --json` of both runs; `/healthz` answers.
#[test]
fn metrics_after_two_runs_match_show() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ws = workspace(&format!(r#", "metrics_listen": "127.0.0.1:{port}""#));
    let config = std::fs::read_to_string(ws.path("db-sync.json")).unwrap();
    ws.config(&config.replace(r#""sleep_seconds": "1h""#, r#""sleep_seconds": 2"#));
    let mut daemon = Daemon::start(&ws, "m", &[]);
    daemon.wait_for("Sync complete. Sleeping 2 seconds until next run...");
    // Change the source for the second run, and make the sleep after it long.
    let source = common::open(&ws.path("source.sqlite"));
    source
        .execute_batch(&format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50)
             INSERT INTO items SELECT {ROWS} + x, 'new ' || x, x, {ROWS} + x FROM c;
             UPDATE items SET name = 'changed', modify_id = modify_id + 10000 WHERE id <= 10;
             DELETE FROM items WHERE id BETWEEN 100 AND 104;"
        ))
        .unwrap();
    ws.config(&config);
    daemon.signal("HUP");
    daemon.wait_for("Sync complete. Sleeping 3600 seconds until next run...");
    let (out, _) = daemon.output();
    assert!(out.contains("Config ") && out.contains(" read again."), "{out}");

    let shows: Vec<serde_json::Value> = (1..=2)
        .map(|id| {
            let show = ws.run(&["show", &id.to_string(), "--json"]);
            assert_eq!(show.status.code(), Some(0), "{}", text(&show));
            serde_json::from_slice(&show.stdout).unwrap()
        })
        .collect();
    let table = |i: usize, key: &str| shows[i]["tables"][0][key].as_u64().unwrap();
    assert_eq!((table(1, "added"), table(1, "modified"), table(1, "deleted")), (50, 10, 5), "{}", shows[1]);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let get = |path: &str| {
        runtime.block_on(async {
            let response = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    for (metric, key) in [("added", "added"), ("modified", "modified"), ("deleted", "deleted"), ("skipped", "skipped")]
    {
        assert_eq!(
            value(&format!("db_sync_record_count_{metric}_total{{table=\"items\"}}")) as u64,
            table(0, key) + table(1, key),
            "{metric}"
        );
    }
    let queries: u64 = shows.iter().map(|s| s["metrics"]["queryCountAll"].as_u64().unwrap()).sum();
    assert_eq!(value("db_sync_queries_total") as u64, queries);
    assert_eq!(value("db_sync_runs_total{status=\"completed\"}") as u64, 2);
    assert_eq!(value("db_sync_last_run_id") as u64, 2);
    assert_eq!(value("db_sync_run_in_progress") as u64, 0);
    let next = value("db_sync_next_run_start_timestamp_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((next - now - 3600.0).abs() < 120.0, "the next run in an hour: {next} vs now {now}");
    let (status, health) = get("/healthz");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["last_run_status"], "completed", "{health}");
    daemon.signal("TERM");
    assert_eq!(daemon.exit_within(Duration::from_secs(5)), Some(0));
}
