//! 4D over its SQL server, end to end through the real `db-sync` binary against the SQL
//! server emulator (`fourd_emulator::SqlEmulator`, a 4D SQL-protocol server on loopback
//! backed by a SQLite file), for tables keyed by one integer column:
//!
//! - 4D → PostgreSQL with every column type db-sync syncs over SQL (Int16, Int32, Int64,
//!   Real, Alpha, Text, Boolean, Date, Time, BLOB, UUID): a full copy, then every step kind
//!   (added, deleted, changed) and the incremental step by a modify ID column; then
//!   PostgreSQL → a second, pre-created 4D table, changes, and a run that changes nothing.
//! - Crashes: SQLite → 4D killed by the `DB_SYNC_FAILPOINT` crash points (`mid_write`,
//!   `after_commit`, `after_checkpoint`) and by a SIGKILL while a 4D write transaction is
//!   open (its COMMIT held by the fault proxy); 4D → SQLite killed inside the target's write
//!   in a plain copy and after a checkpoint in the middle of a binary search; `db-sync
//!   resume` finishes each.
//! - The binary search between 4D and PostgreSQL on 20,000 rows, both ways round (rows
//!   missing from PostgreSQL, rows deleted in 4D), with its depth and query counts.
//!
//! Results are never checked through db-sync: the emulator's SQLite file and plain SQLite
//! files are read with rusqlite, PostgreSQL with psql's text output, and 4D's storage forms
//! (Time as milliseconds, UUID as 32 hex digits, Boolean as 0/1) are converted to one
//! canonical text form by this file's own code (`file_rows`, `pg_rows`), then compared row
//! by row. Run counts come from the report's `recordCountAll…` metrics, parsed exactly.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::pg::{Cluster, cluster};
use common::proxy::{Action, Proxy};
use common::{Workspace, text};
use fourd_emulator::{SqlEmulator, SqlSettings};

macro_rules! need_pg {
    () => {
        match cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

const PASSWORD: &str = "e2e-4d-sql-pw";

/// The table in the emulator: a declared type's first word is the 4D type (`UUID TEXT`
/// gives the SQLite column text affinity, so the 32 hex digits stay text).
const FOURD_ITEMS: &str = "CREATE TABLE Items (ID INT64 PRIMARY KEY, name VARCHAR(60), note TEXT, qty INT,
    small SMALLINT, big INT64, price REAL, born TIMESTAMP, span DURATION, ok BOOLEAN, data BLOB,
    code UUID TEXT, stamp INT64)";

/// The same table in a plain SQLite file.
const SQLITE_ITEMS: &str = "CREATE TABLE Items (ID INTEGER PRIMARY KEY, name TEXT, note TEXT, qty INTEGER,
    small INTEGER, big INTEGER, price REAL, born TEXT, span TEXT, ok INTEGER, data BLOB, code TEXT, stamp INTEGER)";

/// The same table in PostgreSQL.
const PG_ITEMS: &str = "CREATE TABLE \"Items\" (\"ID\" bigint PRIMARY KEY, name text, note text, qty integer, \
    small smallint, big bigint, price double precision, born date, span time(3), ok boolean, data bytea, \
    code uuid, stamp bigint)";

const COLUMNS: &str = "ID, name, note, qty, small, big, price, born, span, ok, data, code, stamp";

/// A row in the canonical text form, one string per column of [`COLUMNS`]: integers in
/// decimal, reals by their bits, dates `YYYY-MM-DD`, times `HH:MM:SS.mmm`, booleans 0/1,
/// BLOBs `\x` and lower-case hex, UUIDs dashed lower case, text with `\` and newlines
/// escaped (psql prints one row a line), NULL as `NULL`.
type Canon = Vec<String>;

/// Inserts rows `from..=to` into `Items` of `conn`, in 4D's storage forms (`fourd`) or in
/// a plain SQLite table's (Time as text, UUID dashed): the same values either way. NULLs,
/// empty text and BLOBs, quotes, backslashes, newlines, emoji, the i64 extremes, a
/// subnormal and a huge real are among them.
fn fill(conn: &rusqlite::Connection, from: i64, to: i64, fourd: bool) {
    let ms = "((x * 7654321) % 86400000)";
    let (span, code) = if fourd {
        (ms.to_string(), "printf('%08X%024X', x, x * 7919)".to_string())
    } else {
        (
            format!("printf('%02d:%02d:%02d.%03d', {ms} / 3600000, {ms} / 60000 % 60, {ms} / 1000 % 60, {ms} % 1000)"),
            "printf('%08x-0000-0000-0000-%012x', x, x * 7919)".to_string(),
        )
    };
    conn.execute_batch(&format!(
        "WITH RECURSIVE c(x) AS (SELECT {from} UNION ALL SELECT x + 1 FROM c WHERE x < {to})
         INSERT INTO Items ({COLUMNS}) SELECT x,
           CASE WHEN x % 11 = 0 THEN NULL WHEN x % 7 = 0 THEN ''
                ELSE 'näme ' || x || CASE x % 5 WHEN 1 THEN ' ''q'' \"d\"' WHEN 2 THEN ' 😀' WHEN 3 THEN ' a\\b' ELSE '' END
           END,
           CASE WHEN x % 9 = 0 THEN NULL WHEN x % 100 = 3 THEN 'line one' || char(10) || 'line two'
                ELSE 'note ' || (x * 31 % 1000) END,
           CASE WHEN x % 13 = 0 THEN NULL ELSE (x * 7919) % 2000000 - 1000000 END,
           CASE WHEN x % 14 = 0 THEN NULL ELSE x % 65536 - 32768 END,
           CASE WHEN x = 1 THEN 9223372036854775807 WHEN x = 2 THEN -9223372036854775807 - 1 WHEN x % 41 = 0 THEN NULL
                ELSE x * 1000000007 END,
           CASE WHEN x % 17 = 0 THEN NULL WHEN x = 3 THEN 1e300 WHEN x = 4 THEN 5e-324 ELSE x * 0.1 - 7 END,
           CASE WHEN x % 19 = 0 THEN NULL ELSE date('1900-03-01', '+' || (x * 37 % 70000) || ' days') END,
           CASE WHEN x % 23 = 0 THEN NULL ELSE {span} END,
           CASE WHEN x % 29 = 0 THEN NULL ELSE x % 2 END,
           CASE WHEN x % 31 = 0 THEN NULL WHEN x % 31 = 1 THEN x'' ELSE unhex(printf('%02X00FF%08X', x % 256, x)) END,
           CASE WHEN x % 37 = 0 THEN NULL ELSE {code} END,
           x
         FROM c;"
    ))
    .unwrap();
}

fn escape(t: &str) -> String {
    t.replace('\\', "\\\\").replace('\n', "\\n")
}

fn bytes_text(b: &[u8]) -> String {
    let mut out = String::from("\\x");
    for byte in b {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn ms_text(ms: i64) -> String {
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn uuid_text(hex: &str) -> String {
    let h = hex.to_ascii_lowercase();
    assert_eq!(h.len(), 32, "4D stores a UUID as 32 hex digits: {hex}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn real_text(f: f64) -> String {
    format!("{:016x}", f.to_bits())
}

/// `Items` of a SQLite file in the canonical form: the emulator's file (`fourd`: 4D's
/// storage forms, converted here) or a plain SQLite table.
fn file_rows(path: &Path, fourd: bool) -> Vec<Canon> {
    use rusqlite::types::Value as V;
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM Items ORDER BY ID")).unwrap();
    stmt.query_map([], |r| {
        (0..13)
            .map(|i| {
                Ok(match (i, r.get::<_, V>(i)?) {
                    (_, V::Null) => "NULL".to_string(),
                    (1 | 2, V::Text(t)) => escape(&t),
                    (6, V::Real(f)) => real_text(f),
                    (8, V::Integer(ms)) if fourd => ms_text(ms),
                    (10, V::Blob(b)) => bytes_text(&b),
                    (11, V::Text(t)) if fourd => uuid_text(&t),
                    (0 | 3 | 4 | 5 | 9 | 12, V::Integer(n)) => n.to_string(),
                    (7 | 8 | 11, V::Text(t)) => t,
                    (i, other) => panic!("{}: column {i} holds {other:?}", path.display()),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// PostgreSQL's `Items` in the canonical form, from psql's text output.
fn pg_rows(pg: &Cluster, db: &str) -> Vec<Canon> {
    let esc = |c: &str| format!(r"coalesce(replace(replace({c}, '\', '\\'), E'\n', '\n'), 'NULL')");
    let text = |c: &str| format!("coalesce({c}::text, 'NULL')");
    let sql = format!(
        "SELECT concat_ws(E'\\x1f', \"ID\", {}, {}, {}, {}, {}, {}, coalesce(to_char(born, 'YYYY-MM-DD'), 'NULL'), \
         coalesce(to_char(span, 'HH24:MI:SS.MS'), 'NULL'), {}, {}, {}, {}) FROM \"Items\" ORDER BY \"ID\"",
        esc("name"),
        esc("note"),
        text("qty"),
        text("small"),
        text("big"),
        text("price"),
        text("ok::int"),
        text("data"),
        text("code"),
        text("stamp"),
    );
    pg.query(db, &sql)
        .into_iter()
        .map(|line| {
            let mut row: Canon = line.split('\u{1f}').map(str::to_string).collect();
            assert_eq!(row.len(), 13, "{line}");
            if row[6] != "NULL" {
                row[6] = real_text(row[6].parse().unwrap());
            }
            row
        })
        .collect()
}

/// Equal row lists, or the first row that differs.
fn assert_rows(a: &[Canon], b: &[Canon], what: &str) {
    if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
        panic!("{what}: first differing row:\n  {x:?}\n  {y:?}");
    }
    assert_eq!(a.len(), b.len(), "{what}: row counts differ");
}

fn settings() -> SqlSettings {
    SqlSettings { users: vec![("sync".into(), PASSWORD.into())], max_sessions: 4, ..SqlSettings::default() }
}

/// A workspace whose `fourd.sqlite` holds the empty 4D table, and its emulator.
fn fourd_workspace() -> (Workspace, SqlEmulator) {
    let ws = Workspace::new();
    ws.db("fourd.sqlite", FOURD_ITEMS);
    let emulator = SqlEmulator::start(ws.path("fourd.sqlite"), settings()).expect("start the SQL emulator");
    (ws, emulator)
}

fn fourd_sql(port: u16) -> String {
    format!(
        r#"{{"type": "4d", "protocol": "sql", "host": "127.0.0.1", "port": {port}, "user": "sync",
             "password": "${{FOURD_PASSWORD}}", "retry_count": 2, "retry_delay": 50, "reconnect_delay": "100ms",
             "timeout": 10}}"#
    )
}

fn postgres(pg: &Cluster, db: &str) -> String {
    format!(r#"{{"type": "postgres", "url": "{}"}}"#, pg.url(db))
}

fn sqlite(file: &str) -> String {
    format!(r#"{{"type": "sqlite", "path": "{file}"}}"#)
}

fn config(ws: &Workspace, source: &str, target: &str, extra: &str) {
    ws.config(&format!(
        r#"{{"source": {source}, "target": {target},
             "tables": [{{"name": "Items", "primary_key_field": "ID", "modify_id_field": "stamp"}}] {extra}}}"#
    ));
}

fn run(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec![("FOURD_PASSWORD", PASSWORD), ("DB_SYNC_LOG", "info")];
    all.extend_from_slice(env);
    ws.run_env(args, &all)
}

/// `db-sync run`, which must exit 0; its stdout and stderr.
fn sync(ws: &Workspace) -> String {
    let out = run(ws, &["run", "--progress", "off"], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "db-sync run:\n{all}");
    all
}

/// The value of a report metric (`recordCountAllAdded=N`), parsed whole.
fn metric(all: &str, name: &str) -> u64 {
    let at = all.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in\n{all}")) + name.len() + 1;
    all[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// Added, modified and deleted rows of a run's report.
fn counts(all: &str) -> (u64, u64, u64) {
    (metric(all, "recordCountAllAdded"), metric(all, "recordCountAllModified"), metric(all, "recordCountAllDeleted"))
}

fn count(path: &Path) -> i64 {
    rusqlite::Connection::open(path).unwrap().query_row("SELECT count(*) FROM Items", [], |r| r.get(0)).unwrap()
}

/// The fixture's two forms hold the same values: the converters of this file agree with
/// each other before they judge db-sync.
#[test]
fn the_fixture_forms_agree() {
    let ws = Workspace::new();
    fill(&ws.db("fourd.sqlite", FOURD_ITEMS), 1, 400, true);
    fill(&ws.db("plain.sqlite", SQLITE_ITEMS), 1, 400, false);
    let (a, b) = (file_rows(&ws.path("fourd.sqlite"), true), file_rows(&ws.path("plain.sqlite"), false));
    assert_eq!(a.len(), 400);
    assert_rows(&a, &b, "4D forms and SQLite forms");
    let row = |id: usize| &a[id - 1];
    assert_eq!(row(1)[5], i64::MAX.to_string());
    assert_eq!(row(2)[5], i64::MIN.to_string());
    assert_eq!(row(4)[6], real_text(5e-324));
    assert_eq!(row(103)[2], "line one\\nline two");
    assert_eq!(row(32)[10], "\\x");
    assert!(a.iter().all(|r| r.len() == 13));
    for column in 1..12 {
        assert!(a.iter().any(|r| r[column] == "NULL"), "column {column} has NULLs");
        assert!(a.iter().any(|r| r[column] != "NULL"), "column {column} has values");
    }
}

/// 4D (SQL) → PostgreSQL: a full copy of 3,000 rows of every type; changes in 4D found by
/// the delete, add and changed steps (modify IDs not trusted), then by the incremental
/// step (trusted); then PostgreSQL → a second, pre-created empty 4D table, changes in
/// PostgreSQL, and a run that changes nothing. Every result compared row by row.
#[test]
fn postgres_both_ways_through_the_sql_server() {
    let pg = need_pg!();
    let started = Instant::now();
    let (ws, emulator) = fourd_workspace();
    let fourd = ws.path("fourd.sqlite");
    let conn = rusqlite::Connection::open(&fourd).unwrap();
    fill(&conn, 1, 3000, true);
    let db = pg.create_database();
    pg.psql(&db, PG_ITEMS);
    let source = fourd_sql(emulator.port());
    config(&ws, &source, &postgres(pg, &db), "");
    let same = |what: &str| assert_rows(&file_rows(&fourd, true), &pg_rows(pg, &db), what);

    let all = sync(&ws);
    assert_eq!(counts(&all), (3000, 0, 0), "{all}");
    same("4D → PostgreSQL, full copy");

    // Deletes, inserts and updates in 4D (the emulator moves no stamps: the test does).
    conn.execute_batch(
        "DELETE FROM Items WHERE ID IN (5, 1000, 1001, 2999, 3000);
         UPDATE Items SET name = 'changed ''x''', price = -0.5, span = 86399999, data = x'00', code = upper(hex(randomblob(16))),
                stamp = stamp + 100000 WHERE ID % 250 = 7;
         UPDATE Items SET born = NULL, ok = NULL, small = -32768, stamp = stamp + 100000 WHERE ID = 100;
         UPDATE Items SET note = 'was NULL', qty = 2147483647, stamp = stamp + 100000 WHERE ID = 9;",
    )
    .unwrap();
    fill(&conn, 3001, 3003, true);
    let all = sync(&ws);
    assert!(all.contains(r#"plan=["delete", "add", "changed"]"#), "the untrusted plan:\n{all}");
    assert_eq!(counts(&all), (3, 14, 5), "added, modified, deleted:\n{all}");
    same("4D → PostgreSQL, every step kind");

    // Trusted modify IDs: the incremental step reads only rows past the watermark.
    config(&ws, &source, &postgres(pg, &db), r#", "trust_modify_id": true"#);
    conn.execute_batch("UPDATE Items SET qty = -1, stamp = 200000 + ID WHERE ID % 500 = 11").unwrap();
    fill(&conn, 3004, 3010, true);
    let all = sync(&ws);
    assert!(all.contains(r#"plan=["add", "incremental"]"#), "the trusted plan:\n{all}");
    assert_eq!(counts(&all), (7, 6, 0), "added, modified, deleted:\n{all}");
    same("4D → PostgreSQL, incremental");
    assert_eq!(emulator.stats().open_sessions, 0, "every run logs out");

    // PostgreSQL → a second 4D table, created beforehand (db-sync never creates 4D tables).
    let (back, into) = fourd_workspace();
    let target = back.path("fourd.sqlite");
    config(&back, &postgres(pg, &db), &fourd_sql(into.port()), "");
    let same_back = |what: &str| assert_rows(&pg_rows(pg, &db), &file_rows(&target, true), what);
    let all = sync(&back);
    assert_eq!(counts(&all), (3005, 0, 0), "{all}");
    same_back("PostgreSQL → 4D, copy into an empty table");

    pg.psql(
        &db,
        "UPDATE \"Items\" SET name = 'from pg', span = '23:59:59.999', born = '2024-02-29', data = '\\x00ff00'::bytea, \
         ok = NOT ok, price = 0.1 + 0.2, code = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', stamp = stamp + 1000000 \
         WHERE \"ID\" % 400 = 0;
         DELETE FROM \"Items\" WHERE \"ID\" > 3006;
         INSERT INTO \"Items\" VALUES (5000, 'new in pg', NULL, 1, 2, 3, 4.5, '0001-01-01', '00:00:00', true, '', \
             '00000000-0000-0000-0000-000000000000', 5000), (5001, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL);",
    );
    let all = sync(&back);
    assert_eq!(counts(&all), (2, 7, 4), "added, modified, deleted:\n{all}");
    same_back("PostgreSQL → 4D, changes");
    let all = sync(&back);
    assert_eq!(counts(&all), (0, 0, 0), "a run with nothing to do:\n{all}");
    same_back("PostgreSQL → 4D, nothing to do");
    assert_eq!(into.stats().open_sessions, 0, "every run logs out");
    eprintln!("postgres_both_ways_through_the_sql_server: {:?}", started.elapsed());
}

/// SQLite → 4D (SQL), killed at each crash point by `DB_SYNC_FAILPOINT` during a copy of
/// 1,500 rows in batches of 200: the crashed run leaves whole batches only, and `db-sync
/// resume` finishes with 4D holding exactly the source's rows.
#[test]
fn crash_and_resume_with_the_sql_server() {
    let started = Instant::now();
    // `mid_write` (inside a target transaction) last: the other points are checked even
    // while the 4D SQL connector lacks it (see the assertion message).
    for failpoint in ["after_checkpoint:4", "after_commit:2", "mid_write:3"] {
        let (ws, emulator) = fourd_workspace();
        fill(&ws.db("source.sqlite", SQLITE_ITEMS), 1, 1500, false);
        config(&ws, &sqlite("source.sqlite"), &fourd_sql(emulator.port()), r#", "batch_size_4d": 200"#);
        let out = run(&ws, &["run", "--progress", "off"], &[("DB_SYNC_FAILPOINT", failpoint)]);
        let all = text(&out);
        assert!(
            !out.status.success() && all.contains(&format!("failpoint {failpoint} reached")),
            "{failpoint}: the run should crash at this point (for `mid_write`: the 4D SQL connector's write \
             transaction, `FourDSql::in_transaction`, must pass `failpoint::hit(\"mid_write\")` as the other \
             connectors' writes do)\n{all}"
        );
        let landed = count(&ws.path("fourd.sqlite"));
        assert!(landed > 0 && landed < 1500 && landed % 200 == 0, "{failpoint}: {landed} rows, whole batches only");
        let out = run(&ws, &["resume", "--progress", "off"], &[]);
        assert_eq!(out.status.code(), Some(0), "{failpoint}: resume\n{}", text(&out));
        assert_rows(
            &file_rows(&ws.path("source.sqlite"), false),
            &file_rows(&ws.path("fourd.sqlite"), true),
            failpoint,
        );
        assert_eq!(emulator.stats().open_sessions, 0, "{failpoint}: the resume logs out");
    }
    eprintln!("crash_and_resume_with_the_sql_server: {:?}", started.elapsed());
}

/// `debug_connection_change` shows the 4D SQL sessions' life at the default log level: each
/// login (naming the user, counting the pool's open sessions) and the close (LOGOUT, QUIT),
/// never the password; without the switch none of these lines appear.
#[test]
fn debug_connection_change_shows_the_sql_sessions() {
    let (ws, emulator) = fourd_workspace();
    fill(&rusqlite::Connection::open(ws.path("fourd.sqlite")).unwrap(), 1, 300, true);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let switch = r#", "debug_connection_change": true"#;
    config(&ws, &fourd_sql(emulator.port()), &sqlite("target.sqlite"), switch);
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(counts(&log), (300, 0, 0), "{log}");
    let source: Vec<&str> = log.lines().filter(|l| l.contains("side=\"source\"")).collect();
    let position = |needle: &str| {
        source.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}`:\n{log}"))
    };
    let opened = position("4D SQL session opened (login of user `sync`; 1 open)");
    let closed = position("closed (LOGOUT, QUIT)");
    assert!(opened < closed, "{log}");
    assert!(source.iter().all(|l| l.contains("endpoint=4d 127.0.0.1:")), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert_eq!(emulator.stats().open_sessions, 0, "every session logged out");

    config(&ws, &fourd_sql(emulator.port()), &sqlite("target.sqlite"), "");
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("4D SQL session"), "{}", text(&out));
}

/// SIGKILL while a 4D SQL write transaction is open: the proxy in front of the emulator
/// holds the COMMIT of the second batch of 200 (its INSERTs ran), the test kills db-sync,
/// the proxy resets its connection so 4D rolls back; 4D keeps exactly the first batch,
/// and `db-sync resume` through the proxy finishes the copy.
#[test]
fn sigkill_inside_a_fourd_sql_transaction() {
    use base64::Engine;
    let started = Instant::now();
    let (ws, emulator) = fourd_workspace();
    fill(&ws.db("source.sqlite", SQLITE_ITEMS), 1, 1500, false);
    let proxy = Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], emulator.port())));
    config(&ws, &sqlite("source.sqlite"), &fourd_sql(proxy.port()), r#", "batch_size_4d": 200"#);
    // The second batch's COMMIT (statements travel in base64) is held: its START and its
    // 200 INSERTs have run, the transaction is open.
    let commit = base64::engine::general_purpose::STANDARD.encode("COMMIT");
    proxy.on_request(&commit, Action::Stall, 1, 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
        .args(["run", "--progress", "off"])
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .env("FOURD_PASSWORD", PASSWORD)
        .env_remove("DB_SYNC_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.stats().fired() == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("db-sync ended ({status}) before the proxy held a COMMIT");
        }
        assert!(Instant::now() < deadline, "the proxy never held a COMMIT");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.cut_all_now();
    assert_eq!(count(&ws.path("fourd.sqlite")), 200, "only the committed batch: the open transaction left nothing");
    let out = run(&ws, &["resume", "--progress", "off"], &[]);
    assert_eq!(out.status.code(), Some(0), "resume\n{}", text(&out));
    assert_rows(&file_rows(&ws.path("source.sqlite"), false), &file_rows(&ws.path("fourd.sqlite"), true), "SIGKILL");
    drop(proxy);
    let deadline = Instant::now() + Duration::from_secs(10);
    while emulator.stats().open_sessions > 0 {
        assert!(Instant::now() < deadline, "a session stayed open: {:?}", emulator.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("sigkill_inside_a_fourd_sql_transaction: {:?}", started.elapsed());
}

/// 4D (SQL) as the source: killed inside the SQLite target's write transaction during a
/// plain copy, then after a checkpoint in the middle of a binary search; `resume` finishes
/// each, the search continuing from its checkpointed stack.
#[test]
fn crash_and_resume_from_the_sql_server() {
    let started = Instant::now();
    let (ws, emulator) = fourd_workspace();
    fill(&rusqlite::Connection::open(ws.path("fourd.sqlite")).unwrap(), 1, 5000, true);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let extra = r#", "batch_size_4d": 500, "binary_search_min_table_size": 1000, "binary_search_read_batch": 20"#;
    config(&ws, &fourd_sql(emulator.port()), &sqlite("target.sqlite"), extra);
    let same = |what: &str| {
        assert_rows(&file_rows(&ws.path("fourd.sqlite"), true), &file_rows(&ws.path("target.sqlite"), false), what)
    };

    let out = run(&ws, &["run", "--progress", "off"], &[("DB_SYNC_FAILPOINT", "mid_write:4")]);
    assert!(!out.status.success() && text(&out).contains("failpoint mid_write:4 reached"), "{}", text(&out));
    let landed = count(&ws.path("target.sqlite"));
    assert!(landed > 0 && landed < 5000 && landed % 500 == 0, "{landed} rows, whole batches only");
    let out = run(&ws, &["resume", "--progress", "off"], &[]);
    assert_eq!(out.status.code(), Some(0), "resume\n{}", text(&out));
    same("4D → SQLite, copy killed mid-write");

    // Five rows missing from the target: the add step searches; killed after its second
    // checkpoint, the search is under way (its header printed, no result yet).
    ws.db("target.sqlite", "DELETE FROM Items WHERE ID IN (3, 1500, 1501, 3333, 5000)");
    let out = run(&ws, &["run", "--progress", "lines"], &[("DB_SYNC_FAILPOINT", "after_checkpoint:2")]);
    let all = text(&out);
    assert!(!out.status.success() && all.contains("failpoint after_checkpoint:2 reached"), "{all}");
    assert!(all.contains("using binary search for adds") && all.contains("need to find 5"), "{all}");
    assert!(!all.contains("found 5 in"), "the crash came after the search: {all}");
    assert_eq!(count(&ws.path("target.sqlite")), 4995, "nothing written yet");
    let out = run(&ws, &["resume", "--progress", "lines"], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "resume\n{all}");
    assert!(all.contains("found 5 in"), "the search finished: {all}");
    assert!(all.contains("checkpoint binary search with") && all.contains("ranges left"), "resumed mid-search: {all}");
    assert_eq!(metric(&all, "recordCountAllAdded"), 5, "{all}");
    same("4D → SQLite, search killed after a checkpoint");
    assert_eq!(emulator.stats().open_sessions, 0);
    eprintln!("crash_and_resume_from_the_sql_server: {:?}", started.elapsed());
}

/// 20,000 rows from 4D (SQL) in PostgreSQL; ten rows deleted in PostgreSQL are found by
/// the binary search of the add step, ten deleted in 4D by that of the delete step. Each
/// search stays within its depth and query bounds and the tables end equal; the delete
/// run, which has nothing else to do, sends 4D few statements.
#[test]
fn binary_search_into_postgres() {
    let pg = need_pg!();
    let started = Instant::now();
    let (ws, emulator) = fourd_workspace();
    let fourd = ws.path("fourd.sqlite");
    let conn = rusqlite::Connection::open(&fourd).unwrap();
    fill(&conn, 1, 20_000, true);
    let db = pg.create_database();
    pg.psql(&db, PG_ITEMS);
    config(&ws, &fourd_sql(emulator.port()), &postgres(pg, &db), r#", "binary_search_read_batch": 20"#);
    let all = sync(&ws);
    assert_eq!(counts(&all), (20_000, 0, 0), "{all}");
    let same = |what: &str| assert_rows(&file_rows(&fourd, true), &pg_rows(pg, &db), what);
    same("4D → PostgreSQL, copy");

    // Four parts a split (4D is a costly round trip): 1,000 read batches of 20 rows are
    // ceil(log4(1000)) = 5 levels deep; about 2·log2(N/read_batch) + 4 queries per
    // difference at most, the upper levels shared.
    let bound = 10 * (2 * ((20_000f64 / 20.0).log2().ceil() as u64) + 4);
    let check_search = |all: &str, direction: &str| {
        assert!(all.contains(&format!("using binary search for {direction}")), "{all}");
        assert_eq!(metric(all, "binarySearchCountAll"), 1, "{all}");
        let depth = metric(all, "binarySearchMaxDepthAll");
        assert!((1..=5).contains(&depth), "depth {depth}\n{all}");
        let queries = metric(all, "binarySearchQueryCount");
        assert!(queries <= bound, "{queries} search queries for 10 differences (bound {bound})\n{all}");
        assert!(queries <= metric(all, "queryCountAll"), "{all}");
    };

    pg.psql(&db, "DELETE FROM \"Items\" WHERE \"ID\" IN (1, 2, 4444, 4445, 9999, 10000, 10001, 15555, 19998, 20000)");
    let all = sync(&ws);
    check_search(&all, "adds");
    assert_eq!(metric(&all, "recordCountAllAdded"), 10, "{all}");
    same("rows missing from PostgreSQL");

    conn.execute_batch("DELETE FROM Items WHERE ID IN (7, 8, 3000, 6001, 6002, 6003, 12345, 17000, 18888, 19999)")
        .unwrap();
    emulator.reset_stats();
    let all = sync(&ws);
    check_search(&all, "deletes");
    assert_eq!(counts(&all), (0, 0, 10), "{all}");
    same("rows deleted in 4D");
    // Login, catalog, planning counts, the search, a count after the deletes, logout: few
    // statements, and far fewer bytes than the 19,990 keys of a full compare (8 bytes each).
    let stats = emulator.stats();
    assert!(stats.statements <= bound, "{} statements to 4D for 10 differences (bound {bound})", stats.statements);
    assert!(stats.bytes_out < 80_000, "{} bytes from 4D: the keys were read, not searched", stats.bytes_out);
    eprintln!("binary_search_into_postgres: {:?}", started.elapsed());
}
