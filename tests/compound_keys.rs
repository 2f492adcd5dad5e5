//! Compound keys (`"primary_key_field": ["order_id", "line"]`): every step kind, the
//! binary search for adds and deletes, and a crash-resume, on SQLite → SQLite, SQLite →
//! PostgreSQL and PostgreSQL → SQLite. The second key part is text, including values that
//! differ only by case, so byte order is exercised part by part. Each stage ends with a
//! row-by-row comparison through plain SQL.

mod common;

use std::path::Path;

use common::pg::{Cluster, cluster};
use common::{Workspace, text};

const SQLITE_DDL: &str = "CREATE TABLE order_row (order_id INTEGER NOT NULL, line TEXT NOT NULL, qty INTEGER, \
                          modify_id INTEGER, PRIMARY KEY (order_id, line));";
const PG_DDL: &str = "CREATE TABLE order_row (order_id bigint NOT NULL, line text NOT NULL, qty integer, \
                      modify_id bigint, PRIMARY KEY (order_id, line))";

/// Rows `order_id 1..=orders`, lines `L01`..`L10` plus `a` and `B` (byte order: `B` < `L..` < `a`).
fn rows_sql(orders: u64) -> String {
    format!(
        "WITH RECURSIVE o(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM o WHERE x < {orders}),
              l(y) AS (SELECT 1 UNION ALL SELECT y + 1 FROM l WHERE y < 12)
         INSERT INTO order_row SELECT x, CASE WHEN y = 11 THEN 'a' WHEN y = 12 THEN 'B' WHEN y < 10 THEN 'L0' || y
                                      ELSE 'L' || y END,
                                      x * 100 + y, x * 100 + y FROM o, l;"
    )
}

/// A side of the sync.
enum Side<'a> {
    Sqlite(&'static str),
    Pg(&'a Cluster, String),
}

impl Side<'_> {
    fn endpoint(&self) -> String {
        match self {
            Side::Sqlite(file) => format!(r#"{{"type": "sqlite", "path": "{file}"}}"#),
            Side::Pg(pg, db) => format!(r#"{{"type": "postgres", "url": "{}", "pool_size": 2}}"#, pg.url(db)),
        }
    }

    fn exec(&self, ws: &Workspace, sql: &str) {
        match self {
            Side::Sqlite(file) => drop(ws.db(file, sql)),
            Side::Pg(pg, db) => pg.psql(db, sql),
        }
    }

    /// Every row as `order_id|line|qty|modify_id`, in byte order of the key.
    fn rows(&self, ws: &Workspace) -> Vec<String> {
        match self {
            Side::Sqlite(file) => sqlite_rows(&ws.path(file)),
            Side::Pg(pg, db) => pg.query(
                db,
                "SELECT order_id, line, coalesce(qty::text, ''), modify_id FROM order_row \
                 ORDER BY order_id, line COLLATE \"C\"",
            ),
        }
    }
}

fn sqlite_rows(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT order_id, line, qty, modify_id FROM order_row ORDER BY order_id, line COLLATE BINARY")
        .unwrap();
    stmt.query_map([], |r| {
        let qty: Option<i64> = r.get(2)?;
        Ok(format!(
            "{}|{}|{}|{}",
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            qty.map(|q| q.to_string()).unwrap_or_default(),
            r.get::<_, i64>(3)?
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn assert_equal(ws: &Workspace, source: &Side, target: &Side, stage: &str) {
    let (a, b) = (source.rows(ws), target.rows(ws));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "{stage}: first differing row");
    }
    assert_eq!(a.len(), b.len(), "{stage}: row counts");
}

fn config(ws: &Workspace, source: &Side, target: &Side, trust: bool) {
    ws.config(&format!(
        r#"{{"source": {}, "target": {},
            "tables": [{{"name": "order_row", "primary_key_field": ["order_id", "line"], "modify_id_field": "modify_id"}}],
            "batch_size": 100, "id_array_batch_size": 250, "binary_search_min_table_size": 100,
            "binary_search_read_batch": 10, "trust_modify_id": {trust}, "max_delete_percent": 100}}"#,
        source.endpoint(),
        target.endpoint()
    ));
}

fn run(ws: &Workspace) -> (serde_json::Value, String) {
    let out = ws.run(&["run", "--progress", "lines", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (report["tables"][0].clone(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The stages, on any pair of backends.
fn stages(source: Side, target: Side) {
    let ws = Workspace::new();
    let sql_of = |side: &Side| if matches!(side, Side::Pg(..)) { PG_DDL } else { SQLITE_DDL };
    source.exec(&ws, sql_of(&source));
    target.exec(&ws, sql_of(&target));
    source.exec(&ws, &rows_sql(300));
    config(&ws, &source, &target, false);

    let (table, log) = run(&ws);
    assert_eq!(table["added"], 3600, "{table}");
    assert!(log.contains("plain copy"), "{log}");
    assert_equal(&ws, &source, &target, "copy");

    // Deletes scattered over the key space, found by the binary search.
    source.exec(&ws, "DELETE FROM order_row WHERE (order_id, line) IN (VALUES (3, 'B'), (50, 'a'), (51, 'L01'), (200, 'L07'), (299, 'B'), (300, 'L10'))");
    let (table, log) = run(&ws);
    assert!(log.contains("using binary search for deletes"), "{log}");
    assert_eq!(table["deleted"], 6, "{table}");
    assert_equal(&ws, &source, &target, "deletes");

    // New lines inside existing orders, found by the binary search.
    source.exec(
        &ws,
        "INSERT INTO order_row VALUES (7, 'L11', 1, 90001), (7, 'A', 2, 90002), (150, 'b', 3, 90003), \
         (150, 'L00', 4, 90004), (301, 'L01', 5, 90005)",
    );
    let (table, log) = run(&ws);
    assert!(log.contains("using binary search for adds"), "{log}");
    assert_eq!(table["added"], 5, "{table}");
    assert_equal(&ws, &source, &target, "adds");

    // Changes with a new modify ID, read incrementally by (modify_id, order_id, line).
    source.exec(&ws, "UPDATE order_row SET qty = qty + 1, modify_id = 100000 WHERE order_id IN (10, 20) AND line IN ('a', 'B', 'L05')");
    config(&ws, &source, &target, true);
    let (table, _) = run(&ws);
    assert_eq!(table["modified"], 6, "{table}");
    assert_equal(&ws, &source, &target, "incremental");

    // Changes that did not bump the modify ID: the full compare finds them.
    source.exec(&ws, "UPDATE order_row SET qty = -1 WHERE order_id = 123 AND line IN ('a', 'L02')");
    config(&ws, &source, &target, false);
    let (table, _) = run(&ws);
    assert_eq!(table["modified"], 2, "{table}");
    assert_equal(&ws, &source, &target, "full compare");
    let (table, _) = run(&ws);
    assert_eq!(table["modified"], 0, "{table}");
}

macro_rules! need_pg {
    () => {
        match cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

/// SQLite → SQLite with a compound key through every step kind and the binary search.
#[test]
fn sqlite_to_sqlite() {
    stages(Side::Sqlite("source.sqlite"), Side::Sqlite("target.sqlite"));
}

/// SQLite → PostgreSQL with a compound key.
#[test]
fn sqlite_to_postgres() {
    let pg = need_pg!();
    stages(Side::Sqlite("source.sqlite"), Side::Pg(pg, pg.create_database()));
}

/// PostgreSQL → SQLite with a compound key.
#[test]
fn postgres_to_sqlite() {
    let pg = need_pg!();
    stages(Side::Pg(pg, pg.create_database()), Side::Sqlite("target.sqlite"));
}

/// A crash at each crash point of a plain copy and of a full compare on a compound-key
/// table resumes from its checkpoint: every row lands once, the target equals the source.
#[test]
fn crash_resume_with_a_compound_key() {
    for point in ["mid_write:5", "after_commit:5", "after_checkpoint:5"] {
        let ws = Workspace::new();
        let (source, target) = (Side::Sqlite("source.sqlite"), Side::Sqlite("target.sqlite"));
        source.exec(&ws, SQLITE_DDL);
        target.exec(&ws, SQLITE_DDL);
        source.exec(&ws, &rows_sql(100));
        config(&ws, &source, &target, false);
        let crash = |ws: &Workspace| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_db-sync"))
                .args(["run", "--progress", "off"])
                .current_dir(ws.dir.path())
                .env("DB_SYNC_FAILPOINT", point)
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"), "{point}: {}", text(&out));
            let out = ws.run(&["resume", "--progress", "off"]);
            assert_eq!(out.status.code(), Some(0), "{point}: {}", text(&out));
        };
        crash(&ws);
        assert_equal(&ws, &source, &target, point);
        // Every other row changed: a full compare, crashed and resumed.
        source.exec(&ws, "UPDATE order_row SET qty = qty * 2 WHERE (order_id + length(line)) % 2 = 0");
        crash(&ws);
        assert_equal(&ws, &source, &target, point);
    }
}

/// Bytes keys (`BLOB`, `bytea`) compare byte by byte (a prefix first, 0x00 and 0xff
/// included), alone and as a part of a compound key, SQLite → SQLite and SQLite →
/// PostgreSQL: a copy, then a delete and an update found by the full compare.
#[test]
fn bytes_keys() {
    let pg = cluster();
    let mut targets = vec![Side::Sqlite("target.sqlite")];
    if let Some(pg) = pg {
        targets.push(Side::Pg(pg, pg.create_database()));
    }
    for target in targets {
        let ws = Workspace::new();
        let source = Side::Sqlite("source.sqlite");
        source.exec(
            &ws,
            "CREATE TABLE blobs (k BLOB PRIMARY KEY, n INTEGER, v TEXT);
             INSERT INTO blobs VALUES (x'01', 1, 'a'), (x'0100', 2, 'b'), (x'00', 3, 'c'), (x'ff', 4, 'd'),
                                      (x'', 5, 'e'), (x'7f80', 6, 'f');",
        );
        let ddl = match target {
            Side::Pg(..) => "CREATE TABLE blobs (k bytea PRIMARY KEY, n bigint, v text)",
            Side::Sqlite(_) => "CREATE TABLE blobs (k BLOB PRIMARY KEY, n INTEGER, v TEXT);",
        };
        target.exec(&ws, ddl);
        ws.config(&format!(
            r#"{{"source": {}, "target": {}, "tables": [{{"name": "blobs", "primary_key_field": "k"}}],
                "batch_size": 2, "id_array_batch_size": 2, "max_delete_percent": 100}}"#,
            source.endpoint(),
            target.endpoint()
        ));
        let rows = |side: &Side| -> Vec<String> {
            match side {
                Side::Sqlite(file) => {
                    let conn = rusqlite::Connection::open(ws.path(file)).unwrap();
                    let mut stmt = conn.prepare("SELECT hex(k), n, v FROM blobs ORDER BY k").unwrap();
                    stmt.query_map([], |r| {
                        Ok(format!(
                            "{}|{}|{}",
                            r.get::<_, String>(0)?.to_lowercase(),
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?
                        ))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
                }
                Side::Pg(pg, db) => pg.query(db, "SELECT encode(k, 'hex'), n, v FROM blobs ORDER BY k"),
            }
        };
        let (table, _) = run(&ws);
        assert_eq!(table["added"], 6, "{table}");
        assert_eq!(rows(&source), rows(&target));
        source.exec(&ws, "DELETE FROM blobs WHERE k = x'0100'; UPDATE blobs SET v = 'z' WHERE k IN (x'', x'ff');");
        let (table, _) = run(&ws);
        assert_eq!((table["deleted"].as_u64(), table["modified"].as_u64()), (Some(1), Some(2)), "{table}");
        assert_eq!(rows(&source), rows(&target));
    }
}

/// A text key cannot feed a PostgreSQL `uuid` key: the target rewrites its spellings
/// (case, braces, hyphens), so the keys would never compare equal and every run would
/// delete and add the same rows. `check` refuses it; a `uuid` key into a text key is fine.
#[test]
fn text_key_into_uuid_key_is_refused() {
    let pg = need_pg!();
    let db = pg.create_database();
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        "CREATE TABLE u (id TEXT PRIMARY KEY, v TEXT);
         INSERT INTO u VALUES ('{00000000-0000-0000-0000-000000000001}', 'a'), ('FFFFFFFF-0000-0000-0000-000000000000', 'b');",
    );
    pg.psql(&db, "CREATE TABLE u (id uuid PRIMARY KEY, v text)");
    let pg_side = Side::Pg(pg, db.clone());
    ws.config(&format!(
        r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}}, "target": {}, "tables": [{{"name": "u"}}]}}"#,
        pg_side.endpoint()
    ));
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("key column `id` (TEXT) feeds the uuid key `id`"), "{}", text(&out));
    // Whatever SQLite calls the column (UUID, or no type at all), it holds text.
    for declared in ["UUID", ""] {
        let ws = Workspace::new();
        ws.db("source.sqlite", &format!("CREATE TABLE u (id {declared} PRIMARY KEY, v TEXT);"));
        ws.config(&format!(
            r#"{{"source": {{"type": "sqlite", "path": "source.sqlite"}}, "target": {}, "tables": [{{"name": "u"}}]}}"#,
            pg_side.endpoint()
        ));
        let out = ws.run(&["check"]);
        assert_eq!(out.status.code(), Some(4), "{declared}: {}", text(&out));
        assert!(text(&out).contains("feeds the uuid key `id`"), "{}", text(&out));
    }

    // The other way: PostgreSQL reads a uuid as canonical text, which a text key holds.
    pg.psql(&db, "INSERT INTO u VALUES ('{00000000-0000-0000-0000-000000000001}', 'a'), ('FFFFFFFF-0000-0000-0000-000000000000', 'b')");
    let ws = Workspace::new();
    ws.db("target.sqlite", "CREATE TABLE u (id TEXT PRIMARY KEY, v TEXT);");
    ws.config(&format!(
        r#"{{"source": {}, "target": {{"type": "sqlite", "path": "target.sqlite"}}, "tables": [{{"name": "u"}}]}}"#,
        pg_side.endpoint()
    ));
    let (first, _) = run(&ws);
    assert_eq!(first["added"], 2, "{first}");
    let (second, _) = run(&ws);
    assert_eq!(
        (second["added"].as_u64(), second["deleted"].as_u64(), second["modified"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
}

/// SQLite gives a column declared JSON (or DATE, BOOLEAN, …) NUMERIC affinity, which
/// turns text that reads as a number into an integer or a double: such a value goes in as
/// that number exactly, or is a data error; a second run rewrites nothing.
#[test]
fn sqlite_numeric_affinity_keeps_json_numbers_exact() {
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        r#"CREATE TABLE j (id INTEGER PRIMARY KEY, doc TEXT);
           INSERT INTO j VALUES (1, '1'), (2, '1.5'), (3, '12345678901234567.89'), (4, '{"a": 12345678901234567.89}'),
                                (5, '9007199254740993');"#,
    );
    ws.db("target.sqlite", "CREATE TABLE j (id INTEGER PRIMARY KEY, doc JSON);");
    ws.config(
        r#"{"source": {"type": "sqlite", "path": "source.sqlite"}, "target": {"type": "sqlite", "path": "target.sqlite"},
            "tables": [{"name": "j"}]}"#,
    );
    let out = ws.run(&["run", "--progress", "off", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["errors"].to_string().contains("row 3 cannot be converted: column `doc`"), "{report}");
    let conn = rusqlite::Connection::open(ws.path("target.sqlite")).unwrap();
    let rows: Vec<String> = conn
        .prepare("SELECT id || ':' || typeof(doc) || ':' || quote(doc) FROM j ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec!["1:integer:1", "2:real:1.5", r#"4:text:'{"a": 12345678901234567.89}'"#, "5:integer:9007199254740993"]
    );
    let out = ws.run(&["run", "--progress", "off", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tables"][0]["modified"], 0, "{report}");
}
