//! 4D over REST, end to end through the real binary against the 4D REST emulator
//! (`fourd-emulator`, a server on loopback backed by a SQLite file): 4D → SQLite,
//! SQLite → 4D, 4D → PostgreSQL and PostgreSQL → 4D with every step kind, incremental by
//! `__GlobalStamp`, the binary search, text keys that differ only in case or accent,
//! sessions (one login per run, re-login after expiry, licence limit, wrong password),
//! server page caps, crash and resume, and cuts and a stall through the fault proxy.
//!
//! Results are checked by reading the emulator's SQLite file and the other side directly
//! (rusqlite, psql), never through db-sync; 4D's value forms are converted by the test's
//! own code (`canonical`).

mod common;

use common::pg::{Cluster, cluster};
use common::proxy::Proxy;
use common::{Workspace, assert_secret_absent, text};
use fourd_emulator::{Emulator, Fault, FaultKind, Settings};
use std::path::Path;

macro_rules! need_pg {
    () => {
        match cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

const PASSWORD: &str = "s3cret-4D-pw";

/// The dataclass in the emulator: declared types are 4D attribute types.
/// (A declared type's first word is the 4D type; `text` after it gives the SQLite column
/// text affinity, so text that looks like a number stays text.)
const FOURD_ITEMS: &str = "CREATE TABLE Items (ID long PRIMARY KEY, name string text, qty long, price number real,
    born date text, span duration, code uuid text, meta object text, active bool, big long64, __GlobalStamp long64);";

/// The same table in SQLite.
const SQLITE_ITEMS: &str = "CREATE TABLE Items (ID INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL,
    born TEXT, span TEXT, code TEXT, meta TEXT, active BOOLEAN, big INTEGER, __GlobalStamp INTEGER);";

/// The same table in PostgreSQL.
const PG_ITEMS: &str = "CREATE TABLE \"Items\" (\"ID\" integer PRIMARY KEY, name text, qty integer, \
    price double precision, born date, span time(3), code uuid, meta jsonb, active boolean, big bigint, \
    \"__GlobalStamp\" bigint)";

const COLUMNS: &str = "ID, name, qty, price, born, span, code, meta, active, big, __GlobalStamp";

/// Rows `from..=to` in 4D's storage forms (uuid as 32 hex digits, duration in ms).
fn fill_fourd(path: &Path, from: u64, to: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "WITH RECURSIVE c(x) AS (SELECT {from} UNION ALL SELECT x + 1 FROM c WHERE x < {to})
         INSERT INTO Items (ID, name, qty, price, born, span, code, meta, active, big)
         SELECT x, 'item ' || x || CASE x % 5 WHEN 0 THEN ' é' WHEN 1 THEN ' ''q''' ELSE '' END,
                CASE WHEN x % 13 = 0 THEN NULL ELSE x % 97 END, x * 0.1,
                CASE WHEN x % 17 = 0 THEN NULL ELSE date('2000-01-01', '+' || x || ' days') END,
                (x * 1234) % 86400000,
                upper(printf('%08X%024X', x, x * 7919)),
                '{{\"n\":' || x || ',\"tags\":[\"a\",\"b\"]}}', x % 2, 9007199254740993 + x FROM c;"
    ))
    .unwrap();
}

/// A row as comparable text, one string per column of [`COLUMNS`], from any backend:
/// integers in decimal, reals by their bits, dates `YYYY-MM-DD`, times `HH:MM:SS.mmm`,
/// UUIDs lower case with dashes, JSON re-read (key order kept), booleans 0/1.
type Canon = Vec<String>;

fn uuid_text(hex: &str) -> String {
    let h: String = hex.chars().filter(|c| *c != '-').collect::<String>().to_lowercase();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn ms_text(ms: i64) -> String {
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn json_text(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    // Keys sorted: PostgreSQL's jsonb orders them its own way.
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut pairs: Vec<_> = m.into_iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            other => other,
        }
    }
    sorted(value).to_string()
}

/// `Items` rows of a SQLite file, the emulator's or a plain one, in the canonical form: 4D's
/// storage forms (a duration as an integer of milliseconds, a UUID of 32 hex digits) are
/// converted by this test; a plain SQLite table holds those columns as text already.
fn sqlite_rows(path: &Path, skip_stamp: bool) -> Vec<Canon> {
    use rusqlite::types::Value as V;
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM Items ORDER BY ID")).unwrap();
    stmt.query_map([], |r| {
        let mut out = Vec::new();
        for i in 0..11 {
            let v: V = r.get(i)?;
            out.push(match (i, v) {
                (10, _) if skip_stamp => "-".to_string(),
                (_, V::Null) => "NULL".to_string(),
                (5, V::Integer(ms)) => ms_text(ms),
                (6, V::Text(t)) => uuid_text(&t),
                (7, V::Text(t)) => json_text(&t),
                (3, V::Real(f)) => format!("{:x}", f.to_bits()),
                (_, V::Integer(n)) => n.to_string(),
                (_, V::Text(t)) => t,
                (_, other) => format!("{other:?}"),
            });
        }
        Ok(out)
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

/// The emulator's rows.
fn fourd_rows(path: &Path, skip_stamp: bool) -> Vec<Canon> {
    sqlite_rows(path, skip_stamp)
}

/// PostgreSQL's rows, from psql's text output.
fn pg_rows(pg: &Cluster, db: &str, skip_stamp: bool) -> Vec<Canon> {
    let stamp = if skip_stamp { "'-'" } else { "coalesce(\"__GlobalStamp\"::text, 'NULL')" };
    pg.query(
        db,
        &format!(
            "SELECT concat_ws(E'\\x1f', \"ID\", coalesce(name, 'NULL'), coalesce(qty::text, 'NULL'), \
             coalesce(price::text, 'NULL'), coalesce(born::text, 'NULL'), \
             coalesce(to_char(span, 'HH24:MI:SS.MS'), 'NULL'), coalesce(code::text, 'NULL'), \
             coalesce(meta::text, 'NULL'), coalesce((active::int)::text, 'NULL'), coalesce(big::text, 'NULL'), {stamp}) \
             FROM \"Items\" ORDER BY \"ID\""
        ),
    )
    .into_iter()
    .map(|line| {
        let mut row: Vec<String> = line.split('\u{1f}').map(str::to_string).collect();
        if row[7] != "NULL" {
            row[7] = json_text(&row[7]);
        }
        if row[3] != "NULL" {
            row[3] = format!("{:x}", row[3].parse::<f64>().unwrap().to_bits());
        }
        row
    })
    .collect()
}

fn assert_rows(a: &[Canon], b: &[Canon], what: &str) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "{what}: first differing row");
    }
    assert_eq!(a.len(), b.len(), "{what}: row counts differ");
}

/// A workspace with the emulator's database file `fourd.sqlite` holding `Items` with rows
/// `1..=rows`. The emulator is started once first, so its triggers (stamps, the global
/// stamp) are in the file before the rows arrive, as in a 4D database with change tracking.
fn fourd_workspace(rows: u64) -> Workspace {
    let ws = Workspace::new();
    ws.db("fourd.sqlite", FOURD_ITEMS);
    drop(start(&ws, settings()));
    if rows > 0 {
        fill_fourd(&ws.path("fourd.sqlite"), 1, rows);
    }
    ws
}

fn start(ws: &Workspace, settings: Settings) -> Emulator {
    Emulator::start(ws.path("fourd.sqlite"), settings).expect("start the 4D emulator")
}

fn settings() -> Settings {
    Settings { users: vec![("sync".into(), PASSWORD.into())], ..Settings::default() }
}

fn fourd_connection(url: &str) -> String {
    format!(
        r#"{{"type": "4d", "protocol": "rest", "url": "{url}", "user": "sync", "password": "${{FOURD_PASSWORD}}",
             "retry_count": 3, "retry_delay": 50, "reconnect_delay": "100ms", "timeout": 5}}"#
    )
}

fn run(ws: &Workspace, args: &[&str]) -> std::process::Output {
    ws.run_env(args, &[("FOURD_PASSWORD", PASSWORD)])
}

fn sync(ws: &Workspace, code: i32) -> String {
    let out = run(ws, &["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(code), "db-sync run:\n{}", text(&out));
    text(&out)
}

fn config(ws: &Workspace, source: &str, target: &str, table: &str, extra: &str) {
    ws.config(&format!(r#"{{"source": {source}, "target": {target}, "tables": [{table}] {extra}}}"#));
}

fn sqlite_connection(file: &str) -> String {
    format!(r#"{{"type": "sqlite", "path": "{file}"}}"#)
}

/// `source.sqlite` in the workspace: `Items` with rows `1..=rows` holding the values the 4D
/// fixture holds, in SQLite's forms (dates and times as text, UUIDs with dashes).
fn sqlite_source(ws: &Workspace, rows: u64) {
    let source = fourd_workspace(rows);
    let source_rows = fourd_rows(&source.path("fourd.sqlite"), true);
    let conn = ws.db("source.sqlite", SQLITE_ITEMS);
    for row in &source_rows {
        let value = |i: usize| if row[i] == "NULL" { None } else { Some(row[i].clone()) };
        let price = value(3).map(|bits| f64::from_bits(u64::from_str_radix(&bits, 16).unwrap()));
        conn.execute(
            "INSERT INTO Items VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)",
            rusqlite::params![
                value(0).map(|v| v.parse::<i64>().unwrap()),
                value(1),
                value(2).map(|v| v.parse::<i64>().unwrap()),
                price,
                value(4),
                value(5),
                value(6),
                value(7),
                value(8).map(|v| v.parse::<i64>().unwrap()),
                value(9).map(|v| v.parse::<i64>().unwrap()),
            ],
        )
        .unwrap();
    }
    drop(conn);
}

/// 4D → SQLite: a copy, incremental steps by `__GlobalStamp` (updates, inserts, deletes
/// made by 4D itself keep the stamp), a full compare when modify IDs are not trusted, and
/// runs that find nothing to do. One login per run, and the session closed at the end.
#[test]
fn fourd_to_sqlite_every_step() {
    let ws = fourd_workspace(3_000);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let emu = start(&ws, settings());
    let table =
        r#"{"name": "Items", "primary_key_field": "ID", "modify_id_field": "__GlobalStamp", "trust_modify_id": true}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), table, r#", "batch_size_4d": 400"#);

    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllAdded=3000"), "{report}");
    let fourd = ws.path("fourd.sqlite");
    assert_rows(&fourd_rows(&fourd, false), &sqlite_rows(&ws.path("target.sqlite"), false), "copy");
    let stats = emu.stats();
    assert_eq!(stats.logins, 1, "one login for the run: {stats:?}");
    assert_eq!(stats.logouts, 1, "the session is closed at the end: {stats:?}");

    // Changes made in 4D: the triggers move __GlobalStamp as 4D does.
    let conn = rusqlite::Connection::open(&fourd).unwrap();
    conn.execute_batch(
        "UPDATE Items SET name = name || ' v2', price = price * 3 WHERE ID % 100 = 7;
         INSERT INTO Items (ID, name, qty) VALUES (5001, 'new one', 1), (5002, 'new two', NULL);
         DELETE FROM Items WHERE ID IN (10, 20, 2999);",
    )
    .unwrap();
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=30"), "{report}");
    assert!(report.contains("recordCountAllAdded=2"), "{report}");
    assert!(report.contains("recordCountAllDeleted=3"), "{report}");
    assert_rows(&fourd_rows(&fourd, false), &sqlite_rows(&ws.path("target.sqlite"), false), "incremental");

    // Untrusted: a full compare finds a change that did not move the stamp.
    ws.db("target.sqlite", "UPDATE Items SET qty = -5 WHERE ID = 1234");
    let table = r#"{"name": "Items", "primary_key_field": "ID", "modify_id_field": "__GlobalStamp"}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), table, r#", "batch_size_4d": 400"#);
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=1"), "{report}");
    assert_rows(&fourd_rows(&fourd, false), &sqlite_rows(&ws.path("target.sqlite"), false), "full compare");
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=0"), "a second run changes nothing: {report}");
}

/// SQLite → 4D: a copy into an empty dataclass, then updates, inserts and deletes; 4D's
/// stored values (read from its file) equal the source's, and a second run writes nothing.
#[test]
fn sqlite_to_fourd_every_step() {
    let ws = fourd_workspace(0);
    sqlite_source(&ws, 2_500);
    let emu = start(&ws, settings());
    let table = r#"{"name": "Items", "primary_key_field": "ID", "exclude_fields": ["__GlobalStamp"]}"#;
    config(&ws, &sqlite_connection("source.sqlite"), &fourd_connection(&emu.url()), table, r#", "batch_size_4d": 300"#);
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllAdded=2500"), "{report}");
    let fourd = ws.path("fourd.sqlite");
    assert_rows(&sqlite_rows(&ws.path("source.sqlite"), true), &fourd_rows(&fourd, true), "copy into 4D");

    ws.db(
        "source.sqlite",
        "UPDATE Items SET name = 'changed', born = '1999-12-31', span = '23:59:59.999' WHERE ID % 250 = 3;
         DELETE FROM Items WHERE ID BETWEEN 100 AND 104;
         INSERT INTO Items (ID, name, meta) VALUES (9000, 'late', '{\"k\": [1, 2.5, null]}');",
    );
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllDeleted=5"), "{report}");
    assert_rows(&sqlite_rows(&ws.path("source.sqlite"), true), &fourd_rows(&fourd, true), "changes into 4D");
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=0"), "a second run writes nothing: {report}");
}

/// 4D → PostgreSQL and PostgreSQL → 4D, every column type, compared with psql's text.
#[test]
fn postgres_both_ways() {
    let pg = need_pg!();
    let ws = fourd_workspace(2_000);
    let db = pg.create_database();
    pg.psql(&db, PG_ITEMS);
    let emu = start(&ws, settings());
    let table =
        r#"{"name": "Items", "primary_key_field": "ID", "modify_id_field": "__GlobalStamp", "trust_modify_id": true}"#;
    let pg_conn = format!(r#"{{"type": "postgres", "url": "{}"}}"#, pg.url(&db));
    config(&ws, &fourd_connection(&emu.url()), &pg_conn, table, "");
    sync(&ws, 0);
    let fourd = ws.path("fourd.sqlite");
    assert_rows(&fourd_rows(&fourd, false), &pg_rows(pg, &db, false), "4D → PostgreSQL");
    rusqlite::Connection::open(&fourd)
        .unwrap()
        .execute_batch("UPDATE Items SET qty = 4242 WHERE ID % 500 = 1")
        .unwrap();
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=4"), "{report}");
    assert_rows(&fourd_rows(&fourd, false), &pg_rows(pg, &db, false), "4D → PostgreSQL, incremental");

    // Back: PostgreSQL (changed) → a second, empty 4D dataclass file.
    pg.psql(&db, "UPDATE \"Items\" SET name = 'from pg', span = '01:02:03.456' WHERE \"ID\" % 400 = 0; DELETE FROM \"Items\" WHERE \"ID\" > 1990");
    let back = fourd_workspace(0);
    let emu_back = start(&back, settings());
    let table = r#"{"name": "Items", "primary_key_field": "ID", "exclude_fields": ["__GlobalStamp"]}"#;
    config(&ws, &pg_conn, &fourd_connection(&emu_back.url()), table, "");
    sync(&ws, 0);
    assert_rows(&pg_rows(pg, &db, true), &fourd_rows(&back.path("fourd.sqlite"), true), "PostgreSQL → 4D");
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=0"), "{report}");
}

/// Ten rows missing from a 20,000-row target: the binary search finds them with range
/// counts and `$skip` midpoints against 4D, in far fewer requests than reading every key,
/// splitting ranges four ways at once (4D pays a round trip per request).
#[test]
fn binary_search_against_fourd() {
    let ws = fourd_workspace(20_000);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let emu = start(&ws, settings());
    let table = r#"{"name": "Items", "primary_key_field": "ID"}"#;
    let extra = r#", "binary_search_read_batch": 20"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), table, extra);
    sync(&ws, 0);
    ws.db(
        "target.sqlite",
        "DELETE FROM Items WHERE ID IN (3, 1999, 5000, 5001, 7777, 10000, 12345, 15000, 19999, 20000)",
    );
    emu.reset_stats();
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD), ("DB_SYNC_LOG", "info")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("using binary search for adds"), "{all}");
    assert!(all.contains("recordCountAllAdded=10"), "{all}");
    let metric = |name: &str| -> u64 {
        let at = all.find(&format!("{name}=")).unwrap_or_else(|| panic!("{name} in {all}")) + name.len() + 1;
        all[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert_eq!(metric("binarySearchCountAll"), 1, "{all}");
    // Count queries and `$skip` midpoints of the search (both sides): about
    // 2·log2(N/read_batch) + 4 per difference at most, upper levels shared.
    let queries = metric("binarySearchQueryCount");
    // The search's queries are statements and requests sent, part of the run's.
    assert!(queries <= metric("queryCountAll"), "{all}");
    let bound = 10 * (2 * ((20_000f64 / 20.0).log2().ceil() as u64) + 4);
    assert!(queries <= bound, "{queries} search queries for 10 differences (bound {bound})\n{all}");
    // What 4D sees for the whole run (login, catalog, planning, the search, the ten rows,
    // logout) stays within the same bound.
    let requests = emu.stats().requests;
    assert!(requests <= bound, "{requests} requests to 4D for 10 differences (bound {bound})");
    // Four parts a split: 1000 read batches take ceil(log4(1000)) = 5 levels, not 10.
    let depth = metric("binarySearchMaxDepthAll");
    assert!(depth <= 5, "depth {depth}\n{all}");
    assert_rows(&fourd_rows(&ws.path("fourd.sqlite"), false), &sqlite_rows(&ws.path("target.sqlite"), false), "search");
}

const FOURD_NAMES: &str = "CREATE TABLE Names (code string text PRIMARY KEY, label string text, n long);";
const SQLITE_NAMES: &str = "CREATE TABLE Names (code TEXT PRIMARY KEY, label TEXT, n INTEGER);";

fn names(path: &Path) -> Vec<(String, Option<String>, Option<i64>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT code, label, n FROM Names ORDER BY code COLLATE BINARY").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Text keys that 4D's comparison treats as equal (case, accents) but db-sync orders by
/// bytes: read from 4D they all arrive, in byte order, through the binary search and the
/// full compare; written to 4D, keys 4D cannot tell apart are refused by name, the rest
/// arrive.
#[test]
fn text_keys_that_differ_only_by_case_or_accent() {
    let ws = Workspace::new();
    let keys = ["abc", "ABC", "Abc", "e", "é", "É", "E", "b", "B", "z", "Z", "ß", "ss", "o@x", "a'b", "a\"b"];
    let conn = ws.db("fourd.sqlite", FOURD_NAMES);
    for (i, k) in keys.iter().enumerate() {
        conn.execute("INSERT INTO Names VALUES (?1, ?2, ?3)", rusqlite::params![k, format!("label {i}"), i as i64])
            .unwrap();
    }
    for i in 0..600 {
        conn.execute("INSERT INTO Names VALUES (?1, 'bulk', ?2)", rusqlite::params![format!("k{i:04}"), i]).unwrap();
    }
    drop(conn);
    ws.db("target.sqlite", SQLITE_NAMES);
    let emu = start(&ws, settings());
    let table = r#"{"name": "Names", "primary_key_field": "code"}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), table, r#", "batch_size_4d": 50"#);
    sync(&ws, 0);
    assert_eq!(names(&ws.path("fourd.sqlite")), names(&ws.path("target.sqlite")), "4D → SQLite");
    // A few keys missing on the target: the search on the byte-sorted key list.
    ws.db(
        "target.sqlite",
        "DELETE FROM Names WHERE code IN ('ABC', 'é', 'k0300'); UPDATE Names SET label = 'x' WHERE code = 'E'",
    );
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllAdded=3"), "{report}");
    assert_eq!(names(&ws.path("fourd.sqlite")), names(&ws.path("target.sqlite")), "4D → SQLite again");
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=1") || report.contains("recordCountAllModified=0"), "{report}");
    assert_eq!(names(&ws.path("fourd.sqlite")), names(&ws.path("target.sqlite")), "4D → SQLite, full compare");

    // SQLite → 4D: an empty dataclass gets every key 4D can tell apart; "abc"/"ABC"/"Abc"
    // and the like are data errors naming the keys.
    let back = Workspace::new();
    back.db("fourd.sqlite", FOURD_NAMES);
    let emu_back = start(&back, settings());
    let fourd = ws.path("fourd.sqlite");
    ws.db(
        "source.sqlite",
        &format!(
            "{SQLITE_NAMES} ATTACH DATABASE '{}' AS f; INSERT INTO Names SELECT code, label, n FROM f.Names;",
            fourd.display()
        ),
    );
    config(
        &ws,
        &sqlite_connection("source.sqlite"),
        &fourd_connection(&emu_back.url()),
        table,
        r#", "continue_on_error": true, "max_error_count": 100"#,
    );
    let out = run(&ws, &["run", "--progress", "off"]);
    let all = text(&out);
    assert!(all.contains("cannot tell apart"), "{all}");
    let written = names(&back.path("fourd.sqlite"));
    let codes: Vec<&str> = written.iter().map(|r| r.0.as_str()).collect();
    assert!(codes.contains(&"k0000") && codes.contains(&"o@x") && codes.contains(&"a'b"), "{codes:?}");
    // Of each group 4D folds together, at most one key was written.
    for group in [["abc", "ABC", "Abc"].as_slice(), &["e", "é", "É", "E"], &["b", "B"], &["z", "Z"]] {
        let n = group.iter().filter(|k| codes.contains(k)).count();
        assert!(n <= 1, "{group:?} → {codes:?}");
    }
}

/// Sessions: a wrong password is one clear error (exit 2) that never shows the password; an
/// expired session logs in again and the run completes; a server without a free licence
/// answers 402, retried, then exit 7 naming it; a server cap on entities per answer never
/// ends a read early.
#[test]
fn sessions_licences_and_page_caps() {
    let ws = fourd_workspace(1_000);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let emu = start(&ws, Settings { max_top: Some(70), ..settings() });
    let table = r#"{"name": "Items", "primary_key_field": "ID"}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), table, "");

    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", "wrong-password-xyz")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("4D refused the login of user `sync`"), "{}", text(&out));
    assert_secret_absent("wrong-password-xyz", &[&out], &ws.path(".db-sync"));

    // The session expires on the 5th read: one more login, nothing lost.
    emu.reset_stats();
    emu.inject(Fault { path_contains: "/rest/Items".into(), kind: FaultKind::ExpireSession, skip: 4, times: 1 });
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllAdded=1000"), "{report}");
    assert_eq!(emu.stats().logins, 2, "{:?}", emu.stats());
    assert_rows(&fourd_rows(&ws.path("fourd.sqlite"), false), &sqlite_rows(&ws.path("target.sqlite"), false), "cap 70");
    let out = run(&ws, &["run", "--progress", "off"]);
    assert_secret_absent(PASSWORD, &[&out], &ws.path(".db-sync"));

    // Every licence taken by other clients.
    let busy = start(&ws, Settings { max_sessions: 0, ..settings() });
    config(&ws, &fourd_connection(&busy.url()), &sqlite_connection("target.sqlite"), table, "");
    let out = run(&ws, &["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(3), "cannot connect: {}", text(&out));
    assert!(text(&out).contains("no free REST licence"), "{}", text(&out));
    assert!(busy.stats().refused_402 >= 4, "retried: {:?}", busy.stats());
}

/// `debug_connection_change` shows the 4D REST session's life at the default log level: the
/// login (naming the user), the new login after a 401, the logout; never the password or
/// the session cookie. Without the switch none of these lines appear.
#[test]
fn debug_connection_change_shows_the_rest_session() {
    let ws = fourd_workspace(300);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let emu = start(&ws, settings());
    let table = r#"{"name": "Items", "primary_key_field": "ID"}"#;
    let source = fourd_connection(&emu.url());
    config(&ws, &source, &sqlite_connection("target.sqlite"), table, r#", "debug_connection_change": true"#);
    // The session expires at the second read of Items: one new login mid-run.
    emu.inject(Fault { path_contains: "/rest/Items".into(), kind: FaultKind::ExpireSession, skip: 1, times: 1 });
    let out = run(&ws, &["run", "--progress", "off"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("recordCountAllAdded=300"), "{log}");
    let source_lines: Vec<&str> = log.lines().filter(|l| l.contains("side=\"source\"")).collect();
    let position = |needle: &str| {
        source_lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}`:\n{log}"))
    };
    let opened = position("4D REST session opened (login of user `sync`)");
    let expired = position("4D REST session expired (HTTP 401); logging in again");
    let closed = position("4D REST session closed (logout)");
    assert!(opened < expired && expired < closed, "{log}");
    assert_eq!(source_lines.iter().filter(|l| l.contains("4D REST session opened")).count(), 2, "{log}");
    assert!(!log.contains("4DSID") && !log.contains("WASID4D"), "a session cookie was logged:\n{log}");
    assert_secret_absent(PASSWORD, &[&out], &ws.path(".db-sync"));

    config(&ws, &source, &sqlite_connection("target.sqlite"), table, "");
    let quiet = sync(&ws, 0);
    assert!(!quiet.contains("4D REST session"), "{quiet}");

    // The cookie jar's own debug lines would quote the session cookie: never at any level.
    for env in [("DB_SYNC_LOG", "trace"), ("DB_SYNC_LOG", "debug,cookie_store=trace")] {
        let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD), env]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("TRACE") || text(&out).contains("DEBUG"), "{env:?}: no debug lines at all");
        assert!(!text(&out).contains("4DSID") && !text(&out).contains("WASID4D"), "{env:?}: cookie logged");
    }
    let out = ws.run_env(&["-vv", "run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    assert!(!text(&out).contains("4DSID") && !text(&out).contains("WASID4D"), "-vv: cookie logged");
}

/// Killed inside a write to 4D and after a checkpoint, `db-sync resume` finishes the run and
/// 4D holds exactly the source's rows.
#[test]
fn crash_and_resume_into_fourd() {
    for failpoint in ["mid_write:3", "after_checkpoint:4", "after_commit:2"] {
        let ws = fourd_workspace(0);
        sqlite_source(&ws, 1_500);
        let emu = start(&ws, settings());
        let table = r#"{"name": "Items", "primary_key_field": "ID", "exclude_fields": ["__GlobalStamp"]}"#;
        config(
            &ws,
            &sqlite_connection("source.sqlite"),
            &fourd_connection(&emu.url()),
            table,
            r#", "batch_size_4d": 200"#,
        );
        let out = ws
            .run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD), ("DB_SYNC_FAILPOINT", failpoint)]);
        assert!(!out.status.success(), "{failpoint}: should crash\n{}", text(&out));
        let out = run(&ws, &["resume", "--progress", "off"]);
        assert_eq!(out.status.code(), Some(0), "{failpoint}: resume\n{}", text(&out));
        let (a, b) = (sqlite_rows(&ws.path("source.sqlite"), true), fourd_rows(&ws.path("fourd.sqlite"), true));
        assert_rows(&a, &b, failpoint);
    }
}

/// The emulator behind the fault proxy: every connection cut after 1 MB and one stall
/// longer than the timeout; the run completes with the tables equal and reports its
/// reconnections.
#[test]
fn cuts_and_a_stall_through_the_proxy() {
    let ws = fourd_workspace(6_000);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let emu = start(&ws, settings());
    let proxy = Proxy::start(format!("127.0.0.1:{}", emu.port()).parse().unwrap());
    proxy.cut_every(Some(1_000_000));
    let url = format!("http://127.0.0.1:{}", proxy.port());
    let table = r#"{"name": "Items", "primary_key_field": "ID"}"#;
    let source = fourd_connection(&url).replace("\"timeout\": 5", "\"timeout\": 2");
    config(&ws, &source, &sqlite_connection("target.sqlite"), table, "");
    sync(&ws, 0);
    ws.db("target.sqlite", "DELETE FROM Items WHERE ID % 1000 = 5");
    // The fourth read of the second run stalls: the 2 s timeout ends it, a retry follows.
    proxy.on_request("GET /rest/Items/", common::proxy::Action::Stall, 3, 1);
    sync(&ws, 0);
    assert!(proxy.stats().cut() > 0, "the proxy cut connections");
    assert_rows(&fourd_rows(&ws.path("fourd.sqlite"), false), &sqlite_rows(&ws.path("target.sqlite"), false), "proxy");
    let mut reconnects = 0;
    for run in ["1", "2"] {
        let out = ws.run(&["show", run, "--json"]);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        reconnects += json["tables"][0]["reconnects"].as_u64().unwrap_or_else(|| panic!("{json}"));
    }
    assert!(reconnects >= proxy.stats().cut(), "every cut led to a reconnection: {reconnects}");
    assert_eq!(proxy.stats().fired(), 1, "the stall happened");
}

/// Incremental reads on a text key whose rows share modify IDs: 4D orders ties by folded
/// text, db-sync by bytes, and small pages cut groups of equal modify IDs; every changed
/// row still arrives exactly once.
#[test]
fn incremental_on_text_keys_with_shared_modify_ids() {
    let ws = Workspace::new();
    let conn =
        ws.db("fourd.sqlite", "CREATE TABLE Tags (code string text PRIMARY KEY, label string text, stamp long);");
    for i in 0..200 {
        let code = match i % 4 {
            0 => format!("k{i:03}"),
            1 => format!("K{i:03}"),
            2 => format!("é{i:03}"),
            _ => format!("E{i:03}"),
        };
        conn.execute("INSERT INTO Tags VALUES (?1, ?2, ?3)", rusqlite::params![code, format!("v1 {i}"), i / 20])
            .unwrap();
    }
    drop(conn);
    ws.db("target.sqlite", "CREATE TABLE Tags (code TEXT PRIMARY KEY, label TEXT, stamp INTEGER);");
    let emu = start(&ws, settings());
    let table = r#"{"name": "Tags", "primary_key_field": "code", "modify_id_field": "stamp", "trust_modify_id": true}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), table, r#", "batch_size_4d": 7"#);
    sync(&ws, 0);
    let rows = |file: &str| -> Vec<(String, String, i64)> {
        let conn = rusqlite::Connection::open(ws.path(file)).unwrap();
        let mut stmt = conn.prepare("SELECT code, label, stamp FROM Tags ORDER BY code COLLATE BINARY").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(rows("fourd.sqlite"), rows("target.sqlite"), "copy");
    // 30 rows move to one new modify ID (a group larger than a page), 10 to another.
    ws.db(
        "fourd.sqlite",
        "UPDATE Tags SET label = 'v2 ' || code, stamp = 100 WHERE rowid % 7 = 0 AND rowid <= 210;
         UPDATE Tags SET label = 'v3 ' || code, stamp = 101 WHERE rowid % 19 = 1;",
    );
    let report = sync(&ws, 0);
    let changed: i64 = rusqlite::Connection::open(ws.path("fourd.sqlite"))
        .unwrap()
        .query_row("SELECT count(*) FROM Tags WHERE stamp >= 100", [], |r| r.get(0))
        .unwrap();
    assert!(report.contains(&format!("recordCountAllModified={changed}")), "{changed} changed: {report}");
    assert_eq!(rows("fourd.sqlite"), rows("target.sqlite"), "incremental");
}

/// Every command ends its 4D session, whatever its outcome (a session holds a licence):
/// with one licence, `check`, `plan`, `verify`, a run stopped by a schema error and a run
/// that completes follow each other without HTTP 402, and no session stays open. A server
/// that accepts connections and never answers fails the first connection within its
/// `timeout` (exit 3) instead of hanging.
#[test]
fn every_command_ends_its_session_and_silent_servers_time_out() {
    let ws = fourd_workspace(500);
    ws.db("target.sqlite", SQLITE_ITEMS);
    let emu = start(&ws, Settings { max_sessions: 1, ..settings() });
    let table = r#"{"name": "Items", "primary_key_field": "ID"}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), table, "");
    for args in [&["check"][..], &["plan"], &["verify"], &["run", "--progress", "off"], &["verify"]] {
        let out = run(&ws, args);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{args:?}: {}", text(&out));
        assert_eq!(emu.stats().open_sessions, 0, "{args:?} left its session open: {:?}", emu.stats());
    }
    let bad = r#"{"name": "Items", "primary_key_field": "ID", "field_mapping": {"name": "no_such_column"}}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), bad, "");
    for _ in 0..2 {
        let out = run(&ws, &["run", "--progress", "off"]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert_eq!(emu.stats().open_sessions, 0, "a failed run left its session open: {:?}", emu.stats());
    }
    assert_eq!(emu.stats().refused_402, 0, "{:?}", emu.stats());

    // A listener that never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let source = fourd_connection(&url)
        .replace("\"timeout\": 5", "\"timeout\": 1")
        .replace("\"retry_count\": 3", "\"retry_count\": 1");
    config(&ws, &source, &sqlite_connection("target.sqlite"), table, "");
    let started = std::time::Instant::now();
    let out = run(&ws, &["check"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no answer within the timeout of 1s"), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
}

/// 4D → 4D: the target's `__GlobalStamp` is 4D's own (it moves on every save), so it is no
/// target column: `check` warns that the source's is not synced, the rows arrive, `verify`
/// finds them equal and a second run rewrites nothing.
#[test]
fn global_stamp_is_not_a_target_column() {
    let ws = fourd_workspace(300);
    let back = fourd_workspace(0);
    let source = start(&ws, settings());
    let target = start(&back, settings());
    let table = r#"{"name": "Items", "primary_key_field": "ID", "modify_id_field": "__GlobalStamp"}"#;
    config(&ws, &fourd_connection(&source.url()), &fourd_connection(&target.url()), table, "");
    let out = run(&ws, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("source column `__GlobalStamp` has no target column"), "{}", text(&out));
    sync(&ws, 0);
    assert_rows(&fourd_rows(&ws.path("fourd.sqlite"), true), &fourd_rows(&back.path("fourd.sqlite"), true), "4D → 4D");
    let out = run(&ws, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = sync(&ws, 0);
    assert!(report.contains("recordCountAllModified=0"), "{report}");
}

/// Deletes on a 4D target whose text keys 4D cannot tell apart: the ambiguous keys are
/// data errors naming them, and the rest of the table still syncs (an extra row deleted,
/// a changed row updated).
#[test]
fn ambiguous_keys_on_a_fourd_target_are_set_aside() {
    let ws = Workspace::new();
    let conn = ws.db("fourd.sqlite", FOURD_NAMES);
    for (code, label) in [("abc", "t"), ("ABC", "t"), ("e", "t"), ("é", "t"), ("x", "old"), ("y", "t")] {
        conn.execute("INSERT INTO Names VALUES (?1, ?2, 1)", rusqlite::params![code, label]).unwrap();
    }
    drop(conn);
    let conn = ws.db("source.sqlite", SQLITE_NAMES);
    for (code, label) in [("ABC", "t"), ("é", "t"), ("x", "new")] {
        conn.execute("INSERT INTO Names VALUES (?1, ?2, 1)", rusqlite::params![code, label]).unwrap();
    }
    drop(conn);
    let emu = start(&ws, settings());
    let table = r#"{"name": "Names", "primary_key_field": "code"}"#;
    config(
        &ws,
        &sqlite_connection("source.sqlite"),
        &fourd_connection(&emu.url()),
        table,
        r#", "max_delete_percent": 100"#,
    );
    let out = run(&ws, &["run", "--progress", "off"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "completed with errors: {all}");
    assert!(all.contains("cannot tell apart"), "{all}");
    let left: Vec<String> =
        names(&ws.path("fourd.sqlite")).into_iter().map(|r| format!("{}={}", r.0, r.1.unwrap())).collect();
    assert!(!left.contains(&"y=t".to_string()), "the extra row is deleted: {left:?}");
    assert!(left.contains(&"x=new".to_string()), "the changed row is updated: {left:?}");
    assert!(left.contains(&"abc=t".to_string()) && left.contains(&"e=t".to_string()), "ambiguous rows stay: {left:?}");
}

/// A compound key cannot address a 4D entity: `check` says so before anything runs, and
/// the default key `id` gets a hint towards 4D's `ID`.
#[test]
fn check_refuses_compound_keys_and_hints_at_id() {
    let ws = fourd_workspace(10);
    ws.db("target.sqlite", SQLITE_ITEMS);
    ws.db(
        "compound.sqlite",
        &SQLITE_ITEMS.replace("ID INTEGER PRIMARY KEY", "ID INTEGER").replace(");", ", PRIMARY KEY (ID, name));"),
    );
    let emu = start(&ws, settings());
    let table = r#"{"name": "Items", "primary_key_field": ["ID", "name"]}"#;
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("compound.sqlite"), table, "");
    let out = run(&ws, &["check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("a 4D key is one attribute"), "{}", text(&out));
    config(&ws, &fourd_connection(&emu.url()), &sqlite_connection("target.sqlite"), r#"{"name": "Items"}"#, "");
    let out = run(&ws, &["check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("did you mean `ID`?"), "{}", text(&out));
}
