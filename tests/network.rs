//! Unreliable networks: db-sync against a real PostgreSQL behind the fault-injecting proxy
//! (`common::proxy`), 200,000-row tables with adds, deletes and updates. Connections are
//! cut every few megabytes, cut or stalled in a chosen phase (planning counts, the binary
//! search, COPY, row reads, deletes), the server refuses connections for 10 s, and commit
//! replies are lost. Every run must end with the tables equal row by row (read with psql
//! and rusqlite, not with db-sync), the counters exact, and the retries and reconnections
//! in `db-sync show --json`. SIGTERM during a stall ends the run within 5 s (exit 130) and
//! `db-sync resume` finishes it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::{Cluster, cluster};
use common::proxy::{Action, Proxy};
use common::{Workspace, text};

macro_rules! need_pg {
    () => {
        match cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

const ROWS: u64 = 200_000;

const PG_ITEMS: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty integer, \
                        price numeric(12,2), note text, modify_id bigint)";

/// Fills `items` with rows `1..=n` (about 60 bytes each).
fn pg_fill(pg: &Cluster, db: &str, n: u64) {
    pg.psql(db, PG_ITEMS);
    pg.psql(
        db,
        &format!(
            "INSERT INTO items SELECT x, 'item ' || x, x % 97, x * 0.25, repeat(md5(x::text), 1), x \
             FROM generate_series(1, {n}) x"
        ),
    );
}

fn sqlite_fill(ws: &Workspace, n: u64) {
    ws.db(
        "source.sqlite",
        &format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price NUMERIC,
                                 note TEXT, modify_id INTEGER);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
             INSERT INTO items SELECT x, 'item ' || x, x % 97, x * 0.25, hex(randomblob(16)), x FROM c;"
        ),
    );
}

/// PostgreSQL rows as text: `id|name|qty|price|note|modify_id`.
fn pg_rows(pg: &Cluster, db: &str) -> Vec<String> {
    pg.query(
        db,
        "SELECT id || '|' || name || '|' || coalesce(qty::text, '') || '|' || coalesce(price::text, '') || '|' || \
         coalesce(note, '') || '|' || modify_id FROM items ORDER BY id",
    )
}

/// SQLite rows in the same text form (prices with two decimals, as `numeric(12,2)` keeps
/// them).
fn sqlite_rows(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id || '|' || name || '|' || coalesce(qty, '') || '|' || coalesce(printf('%.2f', price), '') \
             || '|' || coalesce(note, '') || '|' || modify_id FROM items ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

fn assert_rows(a: &[String], b: &[String]) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "first differing row");
    }
    assert_eq!(a.len(), b.len(), "row counts");
}

/// A proxy in front of the cluster.
fn proxy(pg: &Cluster) -> Proxy {
    Proxy::start(SocketAddr::from(([127, 0, 0, 1], pg.port)))
}

/// A PostgreSQL endpoint through `proxy`, with short test timings: a call may take
/// `timeout`; retries start at 200 ms (up to 3.2 s apart, enough to outlast a 10 s
/// refusal); a lost connection is re-opened after 100 ms.
fn endpoint(pg: &Cluster, proxy: &Proxy, db: &str, timeout: &str) -> String {
    let url = pg.url(db).replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port()));
    format!(
        r#"{{"type": "postgres", "url": "{url}", "pool_size": 2, "timeout": "{timeout}", "retry_count": 10,
            "retry_delay": "200ms", "reconnect_delay": "100ms"}}"#
    )
}

fn write_config(ws: &Workspace, source: &str, target: &str) {
    ws.config(&format!(
        r#"{{"source": {source}, "target": {target},
            "tables": [{{"name": "items", "modify_id_field": "modify_id"}}],
            "batch_size": 2000, "binary_search_read_batch": 200, "max_delete_percent": 100}}"#
    ));
}

/// Runs `db-sync run --json`, expects exit 0, returns the report.
fn run_ok(ws: &Workspace) -> serde_json::Value {
    let out = ws.run(&["run", "--json", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&out)))
}

/// `db-sync show RUN --json` of the newest run.
fn show_last(ws: &Workspace) -> serde_json::Value {
    let out = ws.run(&["runs", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = runs.as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).max().unwrap();
    let out = ws.run(&["show", &id.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The network events of a shown run: `(kind, side, operation)` of each.
fn events(shown: &serde_json::Value) -> Vec<(String, String, String)> {
    shown["network"]
        .as_array()
        .expect("network events in show --json")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["side"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts `shown` lists a retry of `operation` on `side` and a reconnection, each with a
/// time and a cause, and that the per-table counters agree with the list.
fn assert_recovered(shown: &serde_json::Value, side: &str, operation: &str) {
    let list = events(shown);
    assert!(
        list.iter().any(|(k, s, o)| k == "Retry" && s == side && o == operation),
        "no retry of {side} `{operation}` in {list:?}"
    );
    assert!(list.iter().any(|(k, s, _)| k == "Reconnect" && s == side), "no {side} reconnect in {list:?}");
    for e in shown["network"].as_array().unwrap() {
        assert!(e["at_ms"].as_i64().unwrap() > 1_700_000_000_000, "{e}");
        assert!(!e["cause"].as_str().unwrap().is_empty(), "{e}");
    }
    let table = &shown["tables"][0];
    let retries = list.iter().filter(|(k, ..)| k == "Retry").count() as u64;
    let about_no_table = shown["network"].as_array().unwrap().iter().filter(|e| e["table"].is_null()).count() as u64;
    assert!(table["retries"].as_u64().unwrap() + about_no_table >= retries, "{table}");
    assert!(table["retries"].as_u64().unwrap() > 0, "{table}");
}

/// PostgreSQL → PostgreSQL, 200,000 rows, both sides behind one proxy that cuts every
/// connection after 2 MB: the first copy, then a sync of deletes, inserts and silent
/// updates (binary search and a full row compare), each cut many times, then the server
/// refusing every connection for 10 s in the middle of a run. Tables equal row by row,
/// counters exact, retries and reconnections in the audit record.
#[test]
fn postgres_to_postgres_through_cuts_and_a_refusal() {
    let pg = need_pg!();
    let (src, dst) = (pg.create_database(), pg.create_database());
    pg_fill(pg, &src, ROWS);
    pg.psql(&dst, PG_ITEMS);
    let proxy = proxy(pg);
    let stats = proxy.stats();
    let ws = Workspace::new();
    write_config(&ws, &endpoint(pg, &proxy, &src, "5s"), &endpoint(pg, &proxy, &dst, "5s"));

    proxy.cut_every(Some(2 << 20));
    let started = Instant::now();
    let report = run_ok(&ws);
    eprintln!("figure: 200,000-row copy PG->PG cut every 2 MB: {} cuts, {:?}", stats.cut(), started.elapsed());
    assert_eq!(report["metrics"]["recordCountAllAdded"], ROWS);
    assert_rows(&pg_rows(pg, &src), &pg_rows(pg, &dst));
    assert!(stats.cut() >= 5, "the copy was cut {} times", stats.cut());
    let shown = show_last(&ws);
    assert_recovered(&shown, "source", "reading rows");
    assert!(events(&shown).iter().all(|(k, ..)| k != "GaveUp"), "{:?}", events(&shown));

    // Deletes, inserts and silent updates (same modify IDs: only a row compare finds them);
    // few enough deletes for the binary search.
    pg.psql(
        &src,
        "DELETE FROM items WHERE id % 20000 = 7; \
         INSERT INTO items SELECT x, 'new ' || x, 1, 2.5, 'n', x FROM generate_series(300001, 300005) x; \
         UPDATE items SET note = 'silently changed' WHERE id % 400 = 3",
    );
    let cuts_before = stats.cut();
    let report = run_ok(&ws);
    assert_rows(&pg_rows(pg, &src), &pg_rows(pg, &dst));
    assert!(stats.cut() > cuts_before + 5, "the compare was cut too ({} cuts)", stats.cut() - cuts_before);
    assert_eq!(report["metrics"]["recordCountAllDeleted"], 10);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 5);
    assert_eq!(report["metrics"]["recordCountAllModified"], 500);
    assert!(report["metrics"]["binarySearchCountAll"].as_u64().unwrap() >= 1, "{}", report["metrics"]);

    // The server refuses every connection for 10 s, starting at the 5th row read.
    proxy.cut_every(None);
    pg.psql(&src, "UPDATE items SET qty = -1 WHERE id % 5000 = 11");
    proxy.on_request("ORDER BY", Action::RefuseFor(Duration::from_secs(10)), 5, 1);
    let started = Instant::now();
    let report = run_ok(&ws);
    eprintln!("figure: sync through a 10 s refusal: {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(10), "the run waited out the refusal");
    assert_eq!(stats.fired(), 1, "the refusal happened");
    assert!(stats.refused() > 0, "connections were refused");
    assert_eq!(report["metrics"]["recordCountAllModified"], 40);
    assert_rows(&pg_rows(pg, &src), &pg_rows(pg, &dst));
    let shown = show_last(&ws);
    assert!(
        events(&shown).iter().filter(|(k, ..)| k == "Retry").count() >= 3,
        "several retries during the refusal: {:?}",
        events(&shown)
    );
    assert!(events(&shown).iter().any(|(k, ..)| k == "Reconnect"), "{:?}", events(&shown));
}

/// SQLite → PostgreSQL, 200,000 rows, the target behind the proxy with a fault in each
/// phase: a cut and a stall (longer than the 2 s `timeout`) in planning, stalls during
/// COPY, the binary search, row reads and deletes, and lost replies of an upsert and of a
/// delete's COMMIT (both landed on the server). Every run finishes, the tables are equal
/// row by row, and each lost reply is counted once.
#[test]
fn sqlite_to_postgres_with_a_fault_in_each_phase() {
    let pg = need_pg!();
    let dst = pg.create_database();
    pg.psql(&dst, PG_ITEMS);
    let proxy = proxy(pg);
    let stats = proxy.stats();
    let ws = Workspace::new();
    sqlite_fill(&ws, ROWS);
    write_config(&ws, r#"{"type": "sqlite", "path": "source.sqlite"}"#, &endpoint(pg, &proxy, &dst, "2s"));

    // First copy: planning is cut, then stalled; two COPY batches stall.
    proxy.on_request("SELECT count(*)", Action::Cut, 0, 1);
    proxy.on_request("SELECT count(*)", Action::Stall, 0, 1);
    proxy.on_request("COPY ", Action::Stall, 3, 1);
    proxy.on_request("COPY ", Action::Stall, 40, 1);
    let report = run_ok(&ws);
    assert_eq!(proxy.pending(), Vec::<String>::new(), "every fault happened");
    assert_eq!(stats.fired(), 4);
    assert_eq!(report["metrics"]["recordCountAllAdded"], ROWS);
    assert_rows(&sqlite_rows(&ws.path("source.sqlite")), &pg_rows(pg, &dst));
    let shown = show_last(&ws);
    assert_recovered(&shown, "target", "writing rows");
    let list = events(&shown);
    assert!(list.iter().any(|(k, _, o)| k == "Retry" && o == "counting rows"), "planning retried: {list:?}");
    let timed_out = shown["network"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cause"].as_str().unwrap().contains("no answer within the timeout of 2s"));
    assert!(timed_out.count() >= 3, "the stalls ended by the timeout: {}", shown["network"]);

    // Then deletes, inserts and updates: stalls in the binary search, a row read and a
    // delete; the replies of an upsert and of a delete's COMMIT are lost after the server
    // did the work.
    ws.db(
        "source.sqlite",
        "DELETE FROM items WHERE id % 6661 = 5;
         INSERT INTO items SELECT id + 400000, name, qty, price, note, modify_id + 400000 FROM items WHERE id <= 10;
         UPDATE items SET name = name || ' v2', modify_id = modify_id + 500000 WHERE id % 300 = 1;",
    );
    let deleted = (1..=ROWS).filter(|id| id % 6661 == 5).count() as u64;
    let updated = (1..=ROWS).filter(|id| id % 300 == 1 && id % 6661 != 5).count() as u64;
    let fired_before = stats.fired();
    proxy.on_request("LIMIT 1 OFFSET", Action::Stall, 0, 1);
    proxy.on_request("ORDER BY", Action::Stall, 10, 1);
    proxy.on_request("DELETE FROM", Action::Stall, 0, 1);
    proxy.on_request("COMMIT", Action::LoseReply, 0, 1);
    proxy.on_request("INSERT INTO", Action::LoseReply, 0, 1);
    let report = run_ok(&ws);
    assert_eq!(proxy.pending(), Vec::<String>::new(), "every fault happened: {}", report["tables"][0]);
    assert_eq!(stats.fired() - fired_before, 5);
    assert_rows(&sqlite_rows(&ws.path("source.sqlite")), &pg_rows(pg, &dst));
    assert_eq!(report["metrics"]["recordCountAllDeleted"], deleted, "a delete whose reply was lost counts once");
    assert_eq!(report["metrics"]["recordCountAllAdded"], 9, "rows 1 to 10 copied, less row 5 (deleted)");
    assert_eq!(report["metrics"]["recordCountAllModified"], updated, "an upsert whose reply was lost counts once");
    let shown = show_last(&ws);
    let list = events(&shown);
    for operation in ["finding a midpoint key", "deleting rows", "writing rows"] {
        assert!(list.iter().any(|(k, _, o)| k == "Retry" && o == operation), "no retry of `{operation}`: {list:?}");
    }
    assert_eq!(shown["tables"][0]["reconnects"].as_u64().unwrap(), 5, "{}", shown["tables"][0]);
}

/// SIGTERM while a write is stuck on a stalled link (a `timeout` far away): db-sync stops
/// within 5 s with exit 130, the run is resumable, and `db-sync resume` finishes it with
/// the tables equal.
#[test]
fn sigterm_during_a_stall_stops_within_seconds_and_resumes() {
    let pg = need_pg!();
    let dst = pg.create_database();
    pg.psql(&dst, PG_ITEMS);
    let proxy = proxy(pg);
    let stats = proxy.stats();
    let ws = Workspace::new();
    sqlite_fill(&ws, ROWS);
    write_config(&ws, r#"{"type": "sqlite", "path": "source.sqlite"}"#, &endpoint(pg, &proxy, &dst, "120s"));

    proxy.on_request("COPY ", Action::Stall, 10, 1);
    let child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["run", "--progress", "off"])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.fired() == 0 {
        assert!(Instant::now() < deadline, "the stall never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(took < Duration::from_secs(5), "stopped {took:?} after SIGTERM");
    eprintln!("figure: exit 130 {took:?} after SIGTERM during a stalled COPY");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("db-sync resume"), "{stderr}");
    let landed: u64 = pg.query(&dst, "SELECT count(*) FROM items")[0].parse().unwrap();
    assert!(landed > 0 && landed < ROWS, "part of the copy landed: {landed}");

    let shown = show_last(&ws);
    assert_eq!(shown["run"]["status"], "interrupted", "{}", shown["run"]);
    proxy.reset();
    let out = ws.run(&["resume", "--json", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_rows(&sqlite_rows(&ws.path("source.sqlite")), &pg_rows(pg, &dst));
    let shown = show_last(&ws);
    assert_eq!(shown["tables"][0]["added"], ROWS, "every row counted once over both processes");
}

/// A link that stays down longer than the retries last: the run stops with exit 7,
/// resumable, the give-up in its record; once the link is back, `db-sync resume`
/// finishes it with the tables equal and every row counted once.
#[test]
fn retries_running_out_stop_the_run_resumable() {
    let pg = need_pg!();
    let dst = pg.create_database();
    pg.psql(&dst, PG_ITEMS);
    let proxy = proxy(pg);
    let ws = Workspace::new();
    sqlite_fill(&ws, 30_000);
    let target = endpoint(pg, &proxy, &dst, "2s").replace(r#""retry_count": 10"#, r#""retry_count": 2"#);
    write_config(&ws, r#"{"type": "sqlite", "path": "source.sqlite"}"#, &target);

    proxy.on_request("COPY ", Action::RefuseFor(Duration::from_secs(600)), 4, 1);
    let started = Instant::now();
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Each reconnection tries one plain connection first: a refusing server fails it at
    // once with its own cause, not after the pool's wait with "pool timed out".
    assert!(!stderr.contains("pool timed out"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "gave up after {:?}", started.elapsed());
    assert!(stderr.contains("gave up after 2 retries") && stderr.contains("db-sync resume"), "{stderr}");
    let shown = show_last(&ws);
    assert_eq!(shown["run"]["status"], "failed", "{}", shown["run"]);
    let list = events(&shown);
    // A write was retried twice, then given up; the other write in flight (two run at
    // once) had up to two retries when the run stopped.
    let gave_up = list.iter().filter(|(k, s, o)| k == "GaveUp" && s == "target" && o == "writing rows").count();
    assert!((1..=2).contains(&gave_up), "{list:?}");
    let retries = list.iter().filter(|(k, ..)| k == "Retry").count();
    assert!((2..=4).contains(&retries), "{list:?}");

    proxy.reset();
    let out = ws.run(&["resume", "--json", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_rows(&sqlite_rows(&ws.path("source.sqlite")), &pg_rows(pg, &dst));
    assert_eq!(show_last(&ws)["tables"][0]["added"], 30_000);
}

/// A write that waits on a lock past `timeout` is abandoned by db-sync and cancelled by
/// the server too (`statement_timeout` follows `timeout`): it does not run on and commit
/// behind db-sync's back once the lock is released.
#[test]
fn a_statement_given_up_is_cancelled_on_the_server() {
    let pg = need_pg!();
    let dst = pg.create_database();
    pg_fill(pg, &dst, 1000);
    pg.psql(&dst, "UPDATE items SET name = 'old ' || id");
    let ws = Workspace::new();
    sqlite_fill(&ws, 1000);
    let target = format!(r#"{{"type": "postgres", "url": "{}", "timeout": "2s", "retry_count": 0}}"#, pg.url(&dst));
    write_config(&ws, r#"{"type": "sqlite", "path": "source.sqlite"}"#, &target);

    let mut holder =
        pg.psql_spawn(&dst, "BEGIN; SELECT id FROM items WHERE id = 500 FOR UPDATE; SELECT pg_sleep(8); COMMIT;");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pg.query(&dst, "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND granted")[0] == "0" {
        assert!(Instant::now() < deadline, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO%' AND state = 'active'";
    let deadline = Instant::now() + Duration::from_secs(2);
    while pg.query(&dst, waiting)[0] != "0" {
        assert!(Instant::now() < deadline, "the abandoned upsert still waits on the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    holder.wait().unwrap();
    let renamed = pg.query(&dst, "SELECT count(*) FROM items WHERE name LIKE 'old %'");
    assert_eq!(renamed, ["1000"], "nothing committed behind db-sync's back");
}
