//! Exact values across every pair of backends (SQLite → SQLite, SQLite → PostgreSQL,
//! PostgreSQL → SQLite, PostgreSQL → PostgreSQL): a table holding each type family's
//! edge values is synced, then read back by an independent reader (the databases' own
//! text through `psql`, raw SQLite values through rusqlite, float bit patterns) and
//! compared with the values written into the source; a second run rewrites nothing; and a
//! change of each value by its smallest step is seen by `verify` and by `run`.

mod common;

use std::path::Path;

use common::pg::{Cluster, cluster};
use common::{Workspace, text};

/// A logical value, written into either backend by the test itself.
#[derive(Clone, Debug, PartialEq)]
enum V {
    Null,
    I(i64),
    F(f64),
    T(&'static str),
    B(&'static [u8]),
    Bool(bool),
}

/// The columns: name, PostgreSQL type, SQLite type.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("i8", "bigint", "INTEGER"),
    ("f8", "double precision", "REAL"),
    ("f4", "real", "REAL"),
    ("dec", "numeric(30,2)", "TEXT"),
    ("big", "numeric", "TEXT"),
    ("num", "numeric", "NUMERIC"),
    ("txt", "text", "TEXT"),
    ("bin", "bytea", "BLOB"),
    ("flag", "boolean", "BOOLEAN"),
    ("d", "date", "DATE"),
    ("t", "time", "TIME"),
    ("ts", "timestamp", "DATETIME"),
    ("tstz", "timestamptz", "DATETIME"),
    ("u", "uuid", "TEXT"),
    ("j", "jsonb", "JSON"),
];

/// Edge values of each column, in `COLUMNS` order. Row `i` holds the `i`-th value of each
/// list (NULL past its end).
fn edge_values() -> Vec<Vec<V>> {
    use V::*;
    vec![
        vec![I(i64::MIN), I(i64::MAX), I(9_007_199_254_740_993), I(9_007_199_254_740_992), I(-1), I(0), Null],
        vec![
            F(0.1 + 0.2),
            F(0.3),
            F(5e-324),
            F(f64::MAX),
            F(-1e-7),
            F(0.123_456_789_012_345_68),
            F(f64::INFINITY),
            F(f64::NEG_INFINITY),
            F(1.0),
            F(123_456_789.125),
            Null,
        ],
        vec![F(0.1), F(f64::from(f32::MAX)), F(f64::from(f32::from_bits(1))), F(-2.5), F(1e30), Null],
        vec![T("12345678901234567.89"), T("0.00"), T("-1.50"), T("99999999999999999999999999.99"), Null],
        vec![
            T("12345678901234567890123456789012345678"),
            T("0.00000000000000000000000000000000000001"),
            T("-3.14159265358979323846264338327950288"),
            T("1.10"),
            Null,
        ],
        vec![I(42), F(0.1), F(12.5), I(-7), F(1e-7), Null],
        vec![
            T(""),
            T("plain"),
            T("tab\there"),
            T("line\nbreak\r\n"),
            T("back\\slash"),
            T("\\N"),
            T("non-BMP 𝄞😀"),
            T("quote ' \" `"),
            T("  trailing  "),
            T("e\u{301} (NFD) and é (NFC)"),
            Null,
        ],
        vec![B(b""), B(&[0]), B(&[0, 255, 10, 9, 92, 78]), Null],
        vec![Bool(true), Bool(false), Null],
        vec![T("2024-02-29"), T("1900-01-01"), T("9999-12-31"), T("0001-01-01"), Null],
        vec![T("00:00:00"), T("13:30:00.5"), T("23:59:59.999999"), Null],
        vec![
            T("2024-08-17 20:46:48.338617"),
            T("1900-01-01 00:00:00.000001"),
            T("9999-12-31 23:59:59.999999"),
            T("1969-12-31 23:59:59.5"),
            T("1970-01-01 00:00:00"),
            Null,
        ],
        vec![
            T("2024-03-01 10:00:00+00"),
            T("1900-01-01 00:00:00.000001+00"),
            T("9999-12-31 23:59:59.999999+00"),
            T("1969-07-20 20:17:40+00"),
            Null,
        ],
        vec![T("550e8400-e29b-41d4-a716-446655440000"), T("00000000-0000-0000-0000-000000000000"), Null],
        vec![
            T(r#"{"a": 1, "b": [1, 2]}"#),
            T(r#"{"n": 12345678901234567.89}"#),
            T("[]"),
            T(r#"{"x": null}"#),
            T(r#""s""#),
            Null,
        ],
    ]
}

/// One ordinary value per column, and the same value changed by its smallest step.
fn step_pairs() -> Vec<(V, V)> {
    use V::*;
    vec![
        (I(100), I(101)),
        (F(0.1), F(f64::from_bits(0.1f64.to_bits() + 1))),
        (F(0.5), F(f64::from(f32::from_bits(0.5f32.to_bits() + 1)))),
        (T("10.00"), T("10.01")),
        (T("1.0000000000000000000000000000000000001"), T("1.0000000000000000000000000000000000002")),
        (I(42), I(43)),
        (T("abc"), T("abC")),
        (B(&[1, 2]), B(&[1, 3])),
        (Bool(true), Bool(false)),
        (T("2024-01-01"), T("2024-01-02")),
        (T("10:00:00"), T("10:00:00.000001")),
        (T("2024-01-01 10:00:00"), T("2024-01-01 10:00:00.000001")),
        (T("2024-01-01 10:00:00+00"), T("2024-01-01 10:00:00.000001+00")),
        (T("00000000-0000-0000-0000-000000000001"), T("00000000-0000-0000-0000-000000000002")),
        (T(r#"{"a": 1}"#), T(r#"{"a": 2}"#)),
    ]
}

/// Rows `(id, values)`: the edge rows 1.., then the step rows 101.. holding the ordinary
/// values (`stepped`: row `101 + c` has column `c` changed by one step).
fn rows(stepped: bool) -> Vec<(i64, Vec<V>)> {
    let edges = edge_values();
    let height = edges.iter().map(Vec::len).max().unwrap();
    let mut out: Vec<(i64, Vec<V>)> = (0..height)
        .map(|i| (i as i64 + 1, edges.iter().map(|c| c.get(i).cloned().unwrap_or(V::Null)).collect()))
        .collect();
    let pairs = step_pairs();
    for c in 0..COLUMNS.len() {
        let values = pairs
            .iter()
            .enumerate()
            .map(|(k, (base, changed))| if stepped && k == c { changed.clone() } else { base.clone() })
            .collect();
        out.push((101 + c as i64, values));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the independent readers must see for a value of column `c`.
fn expected(c: usize, v: &V) -> String {
    let name = COLUMNS[c].0;
    match (name, v) {
        (_, V::Null) => "NULL".into(),
        ("f8", V::F(f)) => format!("{:016x}", f.to_bits()),
        ("f4", V::F(f)) => format!("{:08x}", (*f as f32).to_bits()),
        ("num", V::F(f)) => f.to_string(),
        ("txt", V::T(s)) => hex(s.as_bytes()),
        (_, V::I(i)) => i.to_string(),
        (_, V::T(s)) => s.to_string(),
        (_, V::B(b)) => hex(b),
        (_, V::Bool(b)) => if *b { "t" } else { "f" }.into(),
        (n, v) => panic!("no expected form for {n} {v:?}"),
    }
}

fn pg_literal(v: &V) -> String {
    match v {
        V::Null => "NULL".into(),
        V::I(i) => i.to_string(),
        V::F(f) if f.is_nan() => "'NaN'".into(),
        V::F(f) if f.is_infinite() => if *f > 0.0 { "'Infinity'" } else { "'-Infinity'" }.into(),
        V::F(f) => format!("'{f:?}'"),
        V::T(s) => format!("$v${s}$v$"),
        V::B(b) => format!("decode('{}', 'hex')", hex(b)),
        V::Bool(b) => b.to_string(),
    }
}

fn create_sql(pg: bool) -> String {
    let columns: Vec<String> = COLUMNS.iter().map(|(n, p, s)| format!("\"{n}\" {}", if pg { p } else { s })).collect();
    let id = if pg { "id bigint PRIMARY KEY" } else { "id INTEGER PRIMARY KEY" };
    format!("CREATE TABLE vals ({id}, {})", columns.join(", "))
}

fn pg_fill(pg: &Cluster, db: &str, rows: &[(i64, Vec<V>)]) {
    let values: Vec<String> = rows
        .iter()
        .map(|(id, vs)| format!("({id}, {})", vs.iter().map(pg_literal).collect::<Vec<_>>().join(", ")))
        .collect();
    pg.psql(db, &format!("INSERT INTO vals VALUES {}", values.join(", ")));
}

fn sqlite_fill(path: &Path, rows: &[(i64, Vec<V>)]) {
    use rusqlite::types::Value as S;
    let conn = rusqlite::Connection::open(path).unwrap();
    let marks = vec!["?"; COLUMNS.len() + 1].join(", ");
    let mut stmt = conn.prepare(&format!("INSERT OR REPLACE INTO vals VALUES ({marks})")).unwrap();
    for (id, vs) in rows {
        let mut params = vec![S::Integer(*id)];
        params.extend(vs.iter().map(|v| match v {
            V::Null => S::Null,
            V::I(i) => S::Integer(*i),
            V::F(f) => S::Real(*f),
            V::T(s) => S::Text(s.to_string()),
            V::B(b) => S::Blob(b.to_vec()),
            V::Bool(b) => S::Integer(i64::from(*b)),
        }));
        stmt.execute(rusqlite::params_from_iter(params)).unwrap();
    }
}

/// Every row of `vals` in PostgreSQL, each column in the reader's form (`expected`).
fn pg_read(pg: &Cluster, db: &str) -> Vec<Vec<String>> {
    let forms: Vec<String> = COLUMNS
        .iter()
        .map(|(n, ..)| {
            let e = match *n {
                "f8" => "encode(float8send(f8), 'hex')".to_string(),
                "f4" => "encode(float4send(f4), 'hex')".to_string(),
                "txt" => "encode(convert_to(txt, 'UTF8'), 'hex')".to_string(),
                "bin" => "encode(bin, 'hex')".to_string(),
                "flag" => "CASE WHEN flag THEN 't' WHEN NOT flag THEN 'f' END".to_string(),
                n => format!("\"{n}\"::text"),
            };
            format!("coalesce({e}, 'NULL')")
        })
        .collect();
    let sql = format!("SET TimeZone = 'UTC'; SELECT id, {} FROM vals ORDER BY id", forms.join(", "));
    pg.query(db, &sql).iter().map(|line| line.split('|').map(str::to_string).collect()).collect()
}

/// Every row of `vals` in SQLite, read raw through SQLite's own API.
fn sqlite_read(path: &Path) -> Vec<Vec<String>> {
    use rusqlite::types::ValueRef as R;
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT * FROM vals ORDER BY id").unwrap();
    stmt.query_map([], |r| {
        let mut out = vec![r.get::<_, i64>(0)?.to_string()];
        for (c, (name, ..)) in COLUMNS.iter().enumerate() {
            let cell = match (*name, r.get_ref(c + 1)?) {
                (_, R::Null) => "NULL".into(),
                ("f8", R::Real(f)) => format!("{:016x}", f.to_bits()),
                ("f4", R::Real(f)) => format!("{:08x}", (f as f32).to_bits()),
                ("txt", R::Text(t)) => hex(t),
                ("flag", R::Integer(i)) => if i == 1 { "t" } else { "f" }.into(),
                (_, R::Integer(i)) => i.to_string(),
                (_, R::Real(f)) => f.to_string(),
                (_, R::Text(t)) => String::from_utf8(t.to_vec()).unwrap(),
                (_, R::Blob(b)) => hex(b),
            };
            out.push(cell);
        }
        Ok(out)
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Asserts that the rows read hold exactly the values of `rows` (JSON by document).
fn assert_holds(read: &[Vec<String>], rows: &[(i64, Vec<V>)], side: &str) {
    assert_eq!(read.len(), rows.len(), "{side}: row count");
    for (got, (id, values)) in read.iter().zip(rows) {
        assert_eq!(got[0], id.to_string(), "{side}: row ids");
        for (c, v) in values.iter().enumerate() {
            let want = expected(c, v);
            let cell = &got[c + 1];
            if COLUMNS[c].0 == "j" && want != "NULL" {
                let (a, b): (serde_json::Value, serde_json::Value) =
                    (serde_json::from_str(&want).unwrap(), serde_json::from_str(cell).unwrap());
                assert_eq!(a, b, "{side}: row {id} column j");
            } else {
                assert_eq!(cell, &want, "{side}: row {id} column {}", COLUMNS[c].0);
            }
        }
    }
}

/// A backend for one side of the pair.
enum Side<'a> {
    Sqlite(&'a str),
    Pg(&'a Cluster, String),
}

impl Side<'_> {
    fn endpoint(&self) -> String {
        match self {
            Side::Sqlite(file) => format!(r#"{{"type": "sqlite", "path": "{file}"}}"#),
            Side::Pg(pg, db) => format!(r#"{{"type": "postgres", "url": "{}"}}"#, pg.url(db)),
        }
    }

    fn create(&self, ws: &Workspace) {
        match self {
            Side::Sqlite(file) => drop(ws.db(file, &create_sql(false))),
            Side::Pg(pg, db) => pg.psql(db, &create_sql(true)),
        }
    }

    fn fill(&self, ws: &Workspace, rows: &[(i64, Vec<V>)]) {
        match self {
            Side::Sqlite(file) => sqlite_fill(&ws.path(file), rows),
            Side::Pg(pg, db) => {
                pg.psql(db, "DELETE FROM vals");
                pg_fill(pg, db, rows)
            }
        }
    }

    fn read(&self, ws: &Workspace) -> Vec<Vec<String>> {
        match self {
            Side::Sqlite(file) => sqlite_read(&ws.path(file)),
            Side::Pg(pg, db) => pg_read(pg, db),
        }
    }
}

/// Runs `db-sync run --json` and returns the report's table entry.
fn run_json(ws: &Workspace, code: i32) -> serde_json::Value {
    let out = ws.run(&["run", "--progress", "off", "--json"]);
    assert_eq!(out.status.code(), Some(code), "db-sync run:\n{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    report["tables"][0].clone()
}

fn count(table: &serde_json::Value, field: &str) -> u64 {
    table[field].as_u64().unwrap_or_else(|| panic!("{field} in {table}"))
}

/// The matrix for one pair of backends.
fn matrix(source: Side, target: Side) {
    let ws = Workspace::new();
    source.create(&ws);
    target.create(&ws);
    let base = rows(false);
    source.fill(&ws, &base);
    assert_holds(&source.read(&ws), &base, "source (the test's own writing)");
    ws.config(&format!(
        r#"{{"source": {}, "target": {}, "tables": [{{"name": "vals"}}], "max_delete_percent": 100}}"#,
        source.endpoint(),
        target.endpoint()
    ));

    let first = run_json(&ws, 0);
    assert_eq!(count(&first, "added"), base.len() as u64, "{first}");
    assert_holds(&target.read(&ws), &base, "target after the first run");

    let second = run_json(&ws, 0);
    assert_eq!(count(&second, "modified"), 0, "a second run rewrites nothing: {second}");
    assert_eq!(count(&second, "skipped"), base.len() as u64, "{second}");

    // Each column changed by its smallest step, in a row of its own.
    let stepped = rows(true);
    source.fill(&ws, &stepped);
    let verify = ws.run(&["verify", "--json"]);
    assert_eq!(verify.status.code(), Some(1), "verify sees the changes:\n{}", text(&verify));
    let diffs: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(diffs[0]["differing"].as_u64(), Some(COLUMNS.len() as u64), "one row per column differs: {diffs}");
    let third = run_json(&ws, 0);
    assert_eq!(count(&third, "modified"), COLUMNS.len() as u64, "run sees each step: {third}");
    assert_holds(&target.read(&ws), &stepped, "target after the stepped run");
    let fourth = run_json(&ws, 0);
    assert_eq!(count(&fourth, "modified"), 0, "{fourth}");
}

macro_rules! need_pg {
    () => {
        match cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

/// SQLite → SQLite holds every edge value exactly.
#[test]
fn sqlite_to_sqlite_exact() {
    matrix(Side::Sqlite("source.sqlite"), Side::Sqlite("target.sqlite"));
}

/// SQLite → PostgreSQL holds every edge value exactly.
#[test]
fn sqlite_to_postgres_exact() {
    let pg = need_pg!();
    matrix(Side::Sqlite("source.sqlite"), Side::Pg(pg, pg.create_database()));
}

/// PostgreSQL → SQLite holds every edge value exactly.
#[test]
fn postgres_to_sqlite_exact() {
    let pg = need_pg!();
    matrix(Side::Pg(pg, pg.create_database()), Side::Sqlite("target.sqlite"));
}

/// PostgreSQL → PostgreSQL holds every edge value exactly.
#[test]
fn postgres_to_postgres_exact() {
    let pg = need_pg!();
    matrix(Side::Pg(pg, pg.create_database()), Side::Pg(pg, pg.create_database()));
}
