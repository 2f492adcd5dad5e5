//! Exact values across every pair of backends (SQLite → SQLite, SQLite → PostgreSQL,
//! PostgreSQL → SQLite, PostgreSQL → PostgreSQL): a table holding each type family's
//! edge values is synced, then read back by an independent reader (the databases' own
//! text through `psql`, raw SQLite values through rusqlite, float bit patterns) and
//! compared with the values written into the source; a second run rewrites nothing; and a
//! change of each value by its smallest step is seen by `verify` and by `run`.
//!
//! Single cases follow, each on a small table `t`: special floats between PostgreSQL
//! databases; values a target column cannot hold (NaN and -0.0 in SQLite, too many
//! digits, invalid UTF-8, lengths and integer widths, non-UUIDs), each a data error naming
//! the row's key and the column, with nothing changed written instead; issue 10's
//! regressions; and the `timezone` setting.

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

// Single cases: one small table `t` (key `id`) per test, the values the contract singles
// out (special floats, what a column cannot hold, issue 10's regressions, UUIDs, zones).

impl Side<'_> {
    /// Runs `sql` on this side.
    fn exec(&self, ws: &Workspace, sql: &str) {
        match self {
            Side::Sqlite(file) => drop(ws.db(file, sql)),
            Side::Pg(pg, db) => pg.psql(db, sql),
        }
    }

    /// Row `id`'s `column` of table `t`, read independently of db-sync. SQLite: the raw
    /// value with its storage class (`integer 42`, `real <bits in hex>`, `text …`, text
    /// that is not UTF-8 as `text x'<hex>'`, `blob <hex>`, `NULL`), or `absent` when the
    /// row does not exist. PostgreSQL: the server's own text of `pg_form`, where `{c}`
    /// stands for the column (read with `TimeZone` UTC), or `absent`.
    fn cell(&self, ws: &Workspace, id: i64, column: &str, pg_form: &str) -> String {
        match self {
            Side::Sqlite(file) => {
                use rusqlite::types::ValueRef as R;
                let conn = rusqlite::Connection::open(ws.path(file)).unwrap();
                let mut stmt = conn.prepare(&format!("SELECT \"{column}\" FROM t WHERE id = ?1")).unwrap();
                let mut rows = stmt.query([id]).unwrap();
                let Some(row) = rows.next().unwrap() else { return "absent".into() };
                match row.get_ref(0).unwrap() {
                    R::Null => "NULL".into(),
                    R::Integer(i) => format!("integer {i}"),
                    R::Real(f) => format!("real {:016x}", f.to_bits()),
                    R::Text(t) => match std::str::from_utf8(t) {
                        Ok(s) => format!("text {s}"),
                        Err(_) => format!("text x'{}'", hex(t)),
                    },
                    R::Blob(b) => format!("blob {}", hex(b)),
                }
            }
            Side::Pg(pg, db) => {
                let form = pg_form.replace("{c}", &format!("\"{column}\""));
                let sql = format!("SET TimeZone = 'UTC'; SELECT coalesce({form}, 'NULL') FROM t WHERE id = {id}");
                pg.query(db, &sql).into_iter().next().unwrap_or_else(|| "absent".into())
            }
        }
    }

    /// The ids of table `t`, in order.
    fn ids(&self, ws: &Workspace) -> Vec<i64> {
        match self {
            Side::Sqlite(file) => {
                let conn = rusqlite::Connection::open(ws.path(file)).unwrap();
                let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
                stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
            }
            Side::Pg(pg, db) => {
                pg.query(db, "SELECT id FROM t ORDER BY id").iter().map(|l| l.parse().unwrap()).collect()
            }
        }
    }
}

/// A PostgreSQL double's bit pattern, in the form `Side::cell` gives SQLite reals.
const PG_FLOAT8: &str = "'real ' || encode(float8send({c}), 'hex')";
/// A PostgreSQL value's own text.
const PG_TEXT: &str = "{c}::text";

/// Writes a config that syncs table `t` from `source` to `target`; `extra` adds top-level
/// keys (starting with a comma).
fn config_t(ws: &Workspace, source: &Side, target: &Side, extra: &str) {
    ws.config(&format!(
        r#"{{"source": {}, "target": {}, "tables": [{{"name": "t"}}], "max_delete_percent": 100 {extra}}}"#,
        source.endpoint(),
        target.endpoint()
    ));
}

/// Runs `db-sync run --json`, asserts the exit code and returns the whole report.
fn run_report(ws: &Workspace, code: i32) -> serde_json::Value {
    let out = ws.run(&["run", "--progress", "off", "--json"]);
    assert_eq!(out.status.code(), Some(code), "db-sync run:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// The distinct messages of the run's data errors, all of table `t`, sorted. A row the
/// `add` step refuses is tried again by the repair that follows the count check, which
/// reports it again; the count check itself (`counts mismatch after sync`) is the only
/// other error allowed.
fn data_errors(report: &serde_json::Value) -> Vec<String> {
    let errors = report["errors"].as_array().unwrap_or_else(|| panic!("errors in {report}"));
    let mut data = std::collections::BTreeSet::new();
    for e in errors {
        assert_eq!(e["table"], "t", "the error names the table: {e}");
        let message = e["message"].as_str().unwrap().to_string();
        match e["kind"].as_str() {
            Some("Data") => drop(data.insert(message)),
            Some("Logic") if message.starts_with("counts mismatch after sync") => {}
            _ => panic!("unexpected error {e}"),
        }
    }
    data.into_iter().collect()
}

/// Asserts that exactly one of `errors` is about row `key`, and that it names `column` and
/// says `cause`.
fn assert_error(errors: &[String], key: &str, column: &str, cause: &str) {
    let about: Vec<&String> = errors.iter().filter(|m| m.starts_with(&format!("row {key} "))).collect();
    assert_eq!(about.len(), 1, "one error about row {key}: {errors:?}");
    assert!(about[0].contains(&format!("column `{column}`")), "names column {column}: {}", about[0]);
    assert!(about[0].contains(cause), "says {cause:?}: {}", about[0]);
}

/// Runs `db-sync verify --json`, asserts the exit code and returns the first table's entry.
fn verify_t(ws: &Workspace, code: i32) -> serde_json::Value {
    let out = ws.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(code), "db-sync verify:\n{}", text(&out));
    let diffs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON verify");
    diffs[0].clone()
}

/// PostgreSQL → PostgreSQL carries NaN, -0.0, ±Infinity and the subnormals bit for bit in
/// `double precision` and `real` columns, and NaN and ±Infinity in `numeric`: into an
/// empty target (a table of plain types goes by binary COPY, one with `numeric` by text
/// COPY) and over rows the target holds otherwise (upsert); a run after each rewrites
/// nothing.
#[test]
fn postgres_special_floats_are_bit_exact() {
    let pg = need_pg!();
    for with_numeric in [false, true] {
        let ws = Workspace::new();
        let (source, target) = (Side::Pg(pg, pg.create_database()), Side::Pg(pg, pg.create_database()));
        let numeric = if with_numeric { ", n numeric" } else { "" };
        let ddl = format!("CREATE TABLE t (id bigint PRIMARY KEY, f8 double precision, f4 real{numeric})");
        source.exec(&ws, &ddl);
        target.exec(&ws, &ddl);
        source.exec(
            &ws,
            "INSERT INTO t (id, f8, f4) VALUES
             (1, 'NaN', 'NaN'),
             (2, '-0', '-0'),
             (3, 'Infinity', 'Infinity'),
             (4, '-Infinity', '-Infinity'),
             (5, '4.9406564584124654e-324', '1.4e-45')",
        );
        if with_numeric {
            source.exec(
                &ws,
                "UPDATE t SET n = CASE id
                 WHEN 1 THEN 'NaN' WHEN 2 THEN 'Infinity' WHEN 3 THEN '-Infinity' WHEN 4 THEN '0' END::numeric",
            );
        }
        let f4 = "'real ' || encode(float4send({c}), 'hex')";
        let want: Vec<(&str, &str, &str)> = vec![
            ("real 7ff8000000000000", "real 7fc00000", "NaN"),
            ("real 8000000000000000", "real 80000000", "Infinity"),
            ("real 7ff0000000000000", "real 7f800000", "-Infinity"),
            ("real fff0000000000000", "real ff800000", "0"),
            ("real 0000000000000001", "real 00000001", "NULL"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), if with_numeric { c.to_string() } else { "-".into() }))
            .collect();
        let read = |side: &Side| -> Vec<(String, String, String)> {
            (1..=5)
                .map(|id| {
                    let n = if with_numeric { side.cell(&ws, id, "n", PG_TEXT) } else { "-".into() };
                    (side.cell(&ws, id, "f8", PG_FLOAT8), side.cell(&ws, id, "f4", f4), n)
                })
                .collect()
        };
        assert_eq!(read(&source), want, "the source holds the values (the test's own writing)");
        config_t(&ws, &source, &target, "");
        let first = run_report(&ws, 0);
        assert_eq!(first["tables"][0]["added"], 5, "{first}");
        assert_eq!(read(&target), want, "the copy holds the same bits (numeric column: {with_numeric})");
        let second = run_report(&ws, 0);
        assert_eq!(second["tables"][0]["modified"], 0, "a second run rewrites nothing: {second}");
        assert_eq!(second["tables"][0]["skipped"], 5, "{second}");

        let reset = if with_numeric { "UPDATE t SET f8 = 1, f4 = 1, n = 1" } else { "UPDATE t SET f8 = 1, f4 = 1" };
        target.exec(&ws, reset);
        let upsert = run_report(&ws, 0);
        assert_eq!(upsert["tables"][0]["modified"], 5, "{upsert}");
        assert_eq!(read(&target), want, "the upserts hold the same bits (numeric column: {with_numeric})");
        let after = run_report(&ws, 0);
        assert_eq!(after["tables"][0]["modified"], 0, "{after}");
    }
}

/// PostgreSQL → SQLite: a double NaN (SQLite would read it back as NULL) and a -0.0
/// (SQLite REAL reads it back as 0) are data errors naming the table, the row's key and
/// the column, and those rows are not written at all; a numeric of 20 significant digits
/// is refused by a NUMERIC column (the message points to TEXT) and lands digit for digit
/// in a TEXT column; the other rows land exactly and the run exits 1.
#[test]
fn postgres_to_sqlite_refuses_what_sqlite_would_change() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let (source, target) = (Side::Pg(pg, pg.create_database()), Side::Sqlite("target.sqlite"));
    source.exec(
        &ws,
        "CREATE TABLE t (id bigint PRIMARY KEY, f8 double precision, n numeric, digits numeric);
         INSERT INTO t VALUES
         (1, '0.30000000000000004', 1.5, NULL),
         (2, 'NaN', NULL, NULL),
         (3, '-0', NULL, NULL),
         (4, 1, 12345678901234567.891, NULL),
         (5, NULL, NULL, 12345678901234567.891)",
    );
    target.exec(&ws, "CREATE TABLE t (id INTEGER PRIMARY KEY, f8 REAL, n NUMERIC, digits TEXT)");
    config_t(&ws, &source, &target, "");
    let report = run_report(&ws, 1);
    let errors = data_errors(&report);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_error(&errors, "2", "f8", "NaN cannot be stored in this column (the target would read it back as NULL)");
    assert_error(&errors, "3", "f8", "-0.0 cannot be stored in this column (the target reads it back as 0)");
    assert_error(&errors, "4", "n", "declare the column TEXT to keep every digit");
    assert_eq!(target.ids(&ws), vec![1, 5], "the refused rows are not written (no NULL, no 0)");
    assert_eq!(target.cell(&ws, 1, "f8", ""), format!("real {:016x}", (0.1f64 + 0.2).to_bits()));
    assert_eq!(target.cell(&ws, 1, "n", ""), format!("real {:016x}", 1.5f64.to_bits()));
    assert_eq!(target.cell(&ws, 5, "digits", ""), "text 12345678901234567.891");
}

/// Issue 10: the full compare took a SQLite REAL 0.1 + 0.2 for the 0.3 the target held
/// (same key), so the row was never repaired. `verify` reports it and `run` rewrites it
/// with the source's bits.
#[test]
fn issue_10_float_differing_in_last_bit_is_repaired() {
    let ws = Workspace::new();
    let (source, target) = (Side::Sqlite("source.sqlite"), Side::Sqlite("target.sqlite"));
    source.exec(&ws, "CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL); INSERT INTO t VALUES (1, 0.1 + 0.2);");
    target.exec(&ws, "CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL); INSERT INTO t VALUES (1, 0.3);");
    let source_bits = source.cell(&ws, 1, "x", "");
    assert_eq!(source_bits, format!("real {:016x}", (0.1f64 + 0.2).to_bits()), "the source holds 0.1 + 0.2");
    assert_stale_row_repaired(&ws, &source, &target, "x", "", &source_bits);
}

/// Issue 10's shape: the target's row 1 holds a value one step from the source's. Asserts
/// that `verify` reports row 1 differing, that `run` rewrites that row, that the target
/// then reads `want` (read independently, `pg_form` for PostgreSQL), and that a second
/// run rewrites nothing.
fn assert_stale_row_repaired(ws: &Workspace, source: &Side, target: &Side, column: &str, pg_form: &str, want: &str) {
    assert_ne!(target.cell(ws, 1, column, pg_form), want, "the target holds another value to begin with");
    config_t(ws, source, target, "");
    let diff = verify_t(ws, 1);
    assert_eq!(diff["differing"], 1, "{diff}");
    assert_eq!(diff["sample"][0], "differs 1", "{diff}");
    let report = run_report(ws, 0);
    assert_eq!(report["tables"][0]["modified"], 1, "{report}");
    assert_eq!(target.cell(ws, 1, column, pg_form), want, "the target holds the source's value");
    verify_t(ws, 0);
    let again = run_report(ws, 0);
    assert_eq!(again["tables"][0]["modified"], 0, "{again}");
}

/// Issue 10: SQLite → SQLite, a bigint 2^53 + 1 against the target's 2^53 (equal once
/// both pass through a double) is seen and repaired.
#[test]
fn issue_10_bigint_above_2_pow_53_is_repaired_sqlite_to_sqlite() {
    let ws = Workspace::new();
    let (source, target) = (Side::Sqlite("source.sqlite"), Side::Sqlite("target.sqlite"));
    source.exec(&ws, "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO t VALUES (1, 9007199254740993);");
    target.exec(&ws, "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO t VALUES (1, 9007199254740992);");
    assert_eq!(source.cell(&ws, 1, "n", ""), "integer 9007199254740993");
    assert_stale_row_repaired(&ws, &source, &target, "n", "", "integer 9007199254740993");
}

/// Issue 10: SQLite → PostgreSQL, a bigint 2^53 + 1 against the target's 2^53 is seen and
/// repaired.
#[test]
fn issue_10_bigint_above_2_pow_53_is_repaired_sqlite_to_postgres() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let (source, target) = (Side::Sqlite("source.sqlite"), Side::Pg(pg, pg.create_database()));
    source.exec(&ws, "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO t VALUES (1, 9007199254740993);");
    target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, n bigint); INSERT INTO t VALUES (1, 9007199254740992);");
    assert_eq!(source.cell(&ws, 1, "n", ""), "integer 9007199254740993");
    assert_stale_row_repaired(&ws, &source, &target, "n", PG_TEXT, "9007199254740993");
}

/// Issue 10: PostgreSQL → PostgreSQL, a numeric(30,2) 12345678901234567.89 against the
/// target's …88 (equal as doubles) is seen and repaired.
#[test]
fn issue_10_numeric_last_digit_is_repaired() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let (source, target) = (Side::Pg(pg, pg.create_database()), Side::Pg(pg, pg.create_database()));
    source.exec(
        &ws,
        "CREATE TABLE t (id bigint PRIMARY KEY, n numeric(30,2)); INSERT INTO t VALUES (1, 12345678901234567.89);",
    );
    target.exec(
        &ws,
        "CREATE TABLE t (id bigint PRIMARY KEY, n numeric(30,2)); INSERT INTO t VALUES (1, 12345678901234567.88);",
    );
    assert_stale_row_repaired(&ws, &source, &target, "n", PG_TEXT, "12345678901234567.89");
}

/// Issue 10: a PostgreSQL → PostgreSQL copy of numeric(30,2) 12345678901234567.89 lands
/// with every digit, and a second run rewrites nothing.
#[test]
fn issue_10_numeric_copy_keeps_every_digit() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let (source, target) = (Side::Pg(pg, pg.create_database()), Side::Pg(pg, pg.create_database()));
    source.exec(
        &ws,
        "CREATE TABLE t (id bigint PRIMARY KEY, n numeric(30,2)); INSERT INTO t VALUES (1, 12345678901234567.89);",
    );
    target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, n numeric(30,2))");
    config_t(&ws, &source, &target, "");
    assert_eq!(run_report(&ws, 0)["tables"][0]["added"], 1);
    assert_eq!(target.cell(&ws, 1, "n", PG_TEXT), "12345678901234567.89");
    assert_eq!(run_report(&ws, 0)["tables"][0]["modified"], 0);
}

/// Issue 10: SQLite text with 7 fraction digits lands in a PostgreSQL `timestamp(6)`
/// rounded to 6, and is not rewritten on every later run (it compares at 6 digits).
#[test]
fn issue_10_seven_fraction_digits_round_once() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let (source, target) = (Side::Sqlite("source.sqlite"), Side::Pg(pg, pg.create_database()));
    source.exec(
        &ws,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT); INSERT INTO t VALUES (1, '2024-08-17 20:46:48.3386171');",
    );
    target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, ts timestamp(6))");
    config_t(&ws, &source, &target, "");
    assert_eq!(run_report(&ws, 0)["tables"][0]["added"], 1);
    assert_eq!(target.cell(&ws, 1, "ts", PG_TEXT), "2024-08-17 20:46:48.338617");
    let second = run_report(&ws, 0);
    assert_eq!(second["tables"][0]["modified"], 0, "{second}");
    assert_eq!(second["tables"][0]["skipped"], 1, "{second}");
}

/// Issue 10: SQLite text "12.5" lands in a PostgreSQL numeric(10,2) as 12.50 and is not
/// rewritten on every later run (12.5 equals 12.50 at the column's scale).
#[test]
fn issue_10_decimal_text_at_column_scale() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let (source, target) = (Side::Sqlite("source.sqlite"), Side::Pg(pg, pg.create_database()));
    source.exec(&ws, "CREATE TABLE t (id INTEGER PRIMARY KEY, n TEXT); INSERT INTO t VALUES (1, '12.5');");
    target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, n numeric(10,2))");
    config_t(&ws, &source, &target, "");
    assert_eq!(run_report(&ws, 0)["tables"][0]["added"], 1);
    assert_eq!(target.cell(&ws, 1, "n", PG_TEXT), "12.50");
    let second = run_report(&ws, 0);
    assert_eq!(second["tables"][0]["modified"], 0, "{second}");
    assert_eq!(second["tables"][0]["skipped"], 1, "{second}");
}

/// Text SQLite holds but that is not UTF-8 (bytes FF 61 cast to TEXT) is a data error
/// naming its key and column, for a SQLite and a PostgreSQL TEXT column alike: the row is
/// not written (no replacement characters), the other rows land.
#[test]
fn invalid_utf8_text_is_refused() {
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
            "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT);
             INSERT INTO t VALUES (1, 'before'), (2, CAST(X'FF61' AS TEXT)), (3, 'after');",
        );
        assert_eq!(source.cell(&ws, 2, "s", ""), "text x'ff61'", "the source holds invalid UTF-8 as TEXT");
        target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, s text)");
        config_t(&ws, &source, &target, "");
        let errors = data_errors(&run_report(&ws, 1));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_error(&errors, "2", "s", "not valid UTF-8");
        assert_eq!(target.ids(&ws), vec![1, 3], "row 2 is not written");
        let form = "'text ' || {c}";
        assert_eq!(target.cell(&ws, 1, "s", form), "text before");
        assert_eq!(target.cell(&ws, 3, "s", form), "text after");
    }
}

/// PostgreSQL targets refuse, as data errors naming key and column, a text longer than a
/// `varchar(3)`, 40000 for an `int2` and 2^40 for an `int4`, from a SQLite and from a
/// PostgreSQL source; nothing is truncated or wrapped, and the rows that fit land exactly.
#[test]
fn postgres_column_limits_are_data_errors() {
    let pg = need_pg!();
    let sources = [
        (Side::Sqlite("source.sqlite"), "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, i2 INTEGER, i4 INTEGER)"),
        (Side::Pg(pg, pg.create_database()), "CREATE TABLE t (id bigint PRIMARY KEY, s text, i2 bigint, i4 bigint)"),
    ];
    for (source, ddl) in sources {
        let ws = Workspace::new();
        let db = pg.create_database();
        let target = Side::Pg(pg, db.clone());
        source.exec(
            &ws,
            &format!(
                "{ddl}; INSERT INTO t VALUES
                 (1, 'abc', 32767, 2147483647),
                 (2, 'abcd', 1, 1),
                 (3, 'x', 40000, 1),
                 (4, 'y', 1, 1099511627776),
                 (5, 'éèà', -32768, -2147483648)"
            ),
        );
        target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, s varchar(3), i2 int2, i4 int4)");
        config_t(&ws, &source, &target, "");
        let errors = data_errors(&run_report(&ws, 1));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_error(&errors, "2", "s", "longer than the column's 3");
        assert_error(&errors, "3", "i2", "40000 does not fit in a 16-bit integer column");
        assert_error(&errors, "4", "i4", "1099511627776 does not fit in a 32-bit integer column");
        let rows = pg.query(&db, "SELECT id, s, i2, i4 FROM t ORDER BY id");
        assert_eq!(rows, vec!["1|abc|32767|2147483647", "5|éèà|-32768|-2147483648"], "only the rows that fit");
    }
}

/// A UUID written as 32 upper-case hex digits in SQLite TEXT lands in a PostgreSQL `uuid`
/// column as the same UUID and is not rewritten on the next run; a text that is not a
/// UUID is a data error naming key and column.
#[test]
fn uuid_text_into_postgres_uuid() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let (source, target) = (Side::Sqlite("source.sqlite"), Side::Pg(pg, pg.create_database()));
    source.exec(
        &ws,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT);
         INSERT INTO t VALUES (1, '550E8400E29B41D4A716446655440000'), (2, 'not-a-uuid');",
    );
    target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, u uuid)");
    config_t(&ws, &source, &target, "");
    let first = run_report(&ws, 1);
    let errors = data_errors(&first);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_error(&errors, "2", "u", "is not a UUID");
    assert_eq!(target.ids(&ws), vec![1]);
    assert_eq!(target.cell(&ws, 1, "u", PG_TEXT), "550e8400-e29b-41d4-a716-446655440000");
    let second = run_report(&ws, 1);
    assert_eq!(second["tables"][0]["modified"], 0, "{second}");
    assert_eq!(data_errors(&second).len(), 1, "row 2 is refused again: {second}");
}

/// With `"timezone": "Europe/Paris"`, an instant (`…T12:00:00Z`) going into a PostgreSQL
/// `timestamp` lands as Paris wall-clock time (14:00 in July), and a wall-clock time
/// going into a `timestamptz` is read in Paris (12:00 UTC); the server's own zone
/// (New York here) plays no part, and a second run rewrites nothing.
#[test]
fn timezone_setting_reads_wall_clock_times() {
    let pg = need_pg!();
    let ws = Workspace::new();
    let db = pg.create_database();
    pg.psql(&db, &format!("ALTER DATABASE {db} SET TimeZone = 'America/New_York'"));
    let (source, target) = (Side::Sqlite("source.sqlite"), Side::Pg(pg, db));
    source.exec(
        &ws,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT, tz TEXT);
         INSERT INTO t VALUES (1, '2024-07-01T12:00:00Z', '2024-07-01 14:00:00');",
    );
    target.exec(&ws, "CREATE TABLE t (id bigint PRIMARY KEY, ts timestamp, tz timestamptz)");
    config_t(&ws, &source, &target, r#", "timezone": "Europe/Paris""#);
    assert_eq!(run_report(&ws, 0)["tables"][0]["added"], 1);
    assert_eq!(target.cell(&ws, 1, "ts", PG_TEXT), "2024-07-01 14:00:00");
    assert_eq!(target.cell(&ws, 1, "tz", PG_TEXT), "2024-07-01 12:00:00+00");
    let second = run_report(&ws, 0);
    assert_eq!(second["tables"][0]["modified"], 0, "{second}");
    assert_eq!(second["tables"][0]["skipped"], 1, "{second}");
}
