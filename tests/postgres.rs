//! PostgreSQL against a real throwaway server: the connector conformance suite (the same
//! checks on SQLite and PostgreSQL), and end-to-end syncs SQLite→PostgreSQL,
//! PostgreSQL→SQLite and PostgreSQL→PostgreSQL with every step kind and the binary
//! search, each ending with a row-by-row comparison.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::pg::{Cluster, cluster};
use common::{Workspace, assert_secret_absent, text};
use db_sync::config::Config;
use db_sync::connector::{self, Connector, ModifyCursor, Side};
use db_sync::model::{Key, KeyRange, TableScope, Value};

macro_rules! need_pg {
    () => {
        match cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

const PG_ITEMS: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty integer, \
                        price double precision, modify_id bigint)";
const SQLITE_ITEMS: &str =
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, modify_id INTEGER);";

fn pg_fill(pg: &Cluster, db: &str, n: u64) {
    pg.psql(db, PG_ITEMS);
    pg.psql(
        db,
        &format!(
            "INSERT INTO items SELECT x, 'item ' || x, x % 97, x * 0.25, x FROM generate_series(1, {n}) x; \
             CREATE INDEX items_modify ON items (modify_id)"
        ),
    );
}

fn sqlite_fill(ws: &Workspace, file: &str, n: u64) {
    ws.db(
        file,
        &format!(
            "{SQLITE_ITEMS}
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
             INSERT INTO items SELECT x, 'item ' || x, x % 97, x * 0.25, x FROM c;"
        ),
    );
}

/// Rows as text, the same way for both backends: `id|name|qty|price|modify_id`.
fn pg_rows(pg: &Cluster, db: &str) -> Vec<String> {
    pg.query(
        db,
        "SELECT id, name, coalesce(qty::text, ''), coalesce(price::text, ''), modify_id FROM items ORDER BY id",
    )
}

fn sqlite_rows(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT id, name, qty, price, modify_id FROM items ORDER BY id").unwrap();
    stmt.query_map([], |r| {
        let qty: Option<i64> = r.get(2)?;
        let price: Option<f64> = r.get(3)?;
        Ok(format!(
            "{}|{}|{}|{}|{}",
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            qty.map(|q| q.to_string()).unwrap_or_default(),
            price.map(|p| p.to_string()).unwrap_or_default(),
            r.get::<_, i64>(4)?
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Rows of any SQLite query as `|`-separated text (NULL as empty).
fn sqlite_rows_of(path: &Path, sql: &str) -> Vec<String> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        let cells = (0..n).map(|i| {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => String::new(),
                ValueRef::Integer(v) => v.to_string(),
                ValueRef::Real(v) => v.to_string(),
                ValueRef::Text(v) | ValueRef::Blob(v) => String::from_utf8_lossy(v).into_owned(),
            })
        });
        Ok(cells.collect::<rusqlite::Result<Vec<_>>>()?.join("|"))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn assert_rows(a: &[String], b: &[String]) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "first differing row");
    }
    assert_eq!(a.len(), b.len(), "row counts");
}

fn write_config(ws: &Workspace, source: &str, target: &str, extra: &str) {
    ws.config(&format!(
        r#"{{"source": {source}, "target": {target},
            "tables": [{{"name": "items", "modify_id_field": "modify_id"}}],
            "max_delete_percent": 100 {extra}}}"#
    ));
}

fn pg_endpoint(pg: &Cluster, db: &str) -> String {
    format!(r#"{{"type": "postgres", "url": "{}", "pool_size": 2}}"#, pg.url(db))
}

const SQLITE_SOURCE: &str = r#"{"type": "sqlite", "path": "source.sqlite"}"#;
const SQLITE_TARGET: &str = r#"{"type": "sqlite", "path": "target.sqlite"}"#;

fn run_ok(ws: &Workspace, args: &[&str]) -> serde_json::Value {
    let out = ws.run(args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&out)))
}

/// Runs the sync again and asserts it rewrote no row; returns the report.
fn rerun_rewrites_nothing(ws: &Workspace) -> serde_json::Value {
    let report = run_ok(ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllModified"], 0, "nothing rewritten: {report}");
    report
}

/// SQLite → PostgreSQL: a full copy, then deletes, updates (trusted and silent) and
/// inserts through every step kind, each time compared row by row.
#[test]
fn sqlite_to_postgres_every_step() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(&db, PG_ITEMS);
    let ws = Workspace::new();
    sqlite_fill(&ws, "source.sqlite", 20_000);
    write_config(&ws, SQLITE_SOURCE, &pg_endpoint(pg, &db), r#", "batch_size": 1000"#);
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 20_000);
    assert_rows(&sqlite_rows(&ws.path("source.sqlite")), &pg_rows(pg, &db));

    // Deletes (delete step), trusted updates and inserts (incremental), silent updates
    // (changed: untrusted full compare).
    ws.db(
        "source.sqlite",
        "DELETE FROM items WHERE id % 500 = 0;
         UPDATE items SET name = name || ' v2', modify_id = 30000 + id WHERE id % 333 = 1;
         UPDATE items SET qty = NULL WHERE id % 777 = 3;
         INSERT INTO items VALUES (25000, 'new', 1, 1.5, 40000);",
    );
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    let plan = report["tables"][0]["plan"]["steps"].to_string();
    assert!(plan.contains("Delete") && plan.contains("Changed"), "{plan}");
    assert_eq!(report["metrics"]["recordCountAllDeleted"], 40);
    assert_rows(&sqlite_rows(&ws.path("source.sqlite")), &pg_rows(pg, &db));
}

/// PostgreSQL → SQLite, with trusted modify IDs (incremental) after the first copy.
#[test]
fn postgres_to_sqlite() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg_fill(pg, &db, 15_000);
    let ws = Workspace::new();
    ws.db("target.sqlite", SQLITE_ITEMS);
    write_config(&ws, &pg_endpoint(pg, &db), SQLITE_TARGET, r#", "trust_modify_id": true"#);
    run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_rows(&pg_rows(pg, &db), &sqlite_rows(&ws.path("target.sqlite")));

    pg.psql(
        &db,
        "UPDATE items SET price = price + 1, modify_id = 20000 + id WHERE id % 100 = 0; \
         INSERT INTO items VALUES (99999, 'late', 3, 0.5, 50000)",
    );
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["tables"][0]["plan"]["reason"], "source has more rows & trusted modify id");
    assert_eq!(report["metrics"]["recordCountAllModified"], 150);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 1);
    assert_rows(&pg_rows(pg, &db), &sqlite_rows(&ws.path("target.sqlite")));
}

/// PostgreSQL → PostgreSQL on a 60,000-row table: the binary search finds a few deleted
/// rows; then a full copy into an empty table.
#[test]
fn postgres_to_postgres_with_binary_search() {
    let pg = need_pg!();
    let (src, dst) = (pg.create_database(), pg.create_database());
    pg_fill(pg, &src, 60_000);
    pg_fill(pg, &dst, 60_000);
    pg.psql(&src, "DELETE FROM items WHERE id IN (5, 12345, 40000, 59999)");
    let ws = Workspace::new();
    write_config(&ws, &pg_endpoint(pg, &src), &pg_endpoint(pg, &dst), r#", "binary_search_read_batch": 100"#);
    let out = ws.run(&["run", "--json", "--progress", "lines"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("using binary search for deletes (from=60000, to=59996, diff=4)"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["metrics"]["binarySearchCountAll"], 1);
    assert_eq!(report["metrics"]["recordCountAllDeleted"], 4);
    assert_rows(&pg_rows(pg, &src), &pg_rows(pg, &dst));

    pg.psql(&dst, "TRUNCATE items");
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 59_996);
    assert_rows(&pg_rows(pg, &src), &pg_rows(pg, &dst));
}

/// A row the target refuses (a CHECK constraint) is isolated; the rest lands.
#[test]
fn postgres_isolates_bad_rows() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(&db, &PG_ITEMS.replace("qty integer", "qty integer CHECK (qty >= 0)"));
    let ws = Workspace::new();
    sqlite_fill(&ws, "source.sqlite", 3000);
    ws.db("source.sqlite", "UPDATE items SET qty = -1 WHERE id IN (10, 2999)");
    write_config(&ws, SQLITE_SOURCE, &pg_endpoint(pg, &db), r#", "batch_size": 500"#);
    let out = ws.run(&["run", "--json", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["metrics"]["recordCountAllAdded"], 2998);
    let errors = report["errors"].to_string();
    assert!(errors.contains("row 10 was refused") && errors.contains("row 2999 was refused"), "{errors}");
    assert!(errors.contains("23514"), "SQLSTATE of a check violation: {errors}");
}

/// An unreachable server and a wrong schema give clear errors and exit codes.
#[test]
fn postgres_connection_errors() {
    let pg = need_pg!();
    let ws = Workspace::new();
    sqlite_fill(&ws, "source.sqlite", 10);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    write_config(
        &ws,
        SQLITE_SOURCE,
        &format!(
            r#"{{"type": "postgres", "url": "postgres://postgres@127.0.0.1:{closed}/x", "timeout": 2,
                 "retry_count": 1, "retry_delay": 10}}"#
        ),
        "",
    );
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connection error"), "{}", text(&out));

    let db = pg.create_database();
    write_config(
        &ws,
        SQLITE_SOURCE,
        &format!(r#"{{"type": "postgres", "url": "{}", "schema": "nope"}}"#, pg.url(&db)),
        "",
    );
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schema `nope` does not exist"), "{}", text(&out));
}

/// The role and password of the tests that authenticate with a password.
const PW_ROLE: &str = "dbsync_pw";
const PW_SECRET: &str = "Hunter2SecretPw";

/// A workspace syncing `rows` SQLite rows into a new PostgreSQL database owned by the
/// password role, its target given in password form `form` of [`password_endpoints`],
/// with `extra` config keys; returns it and the target's config text.
fn password_workspace(pg: &Cluster, form: usize, rows: u64, extra: &str) -> (Workspace, String) {
    let db = pg.create_database();
    pg.psql(&db, &format!("{PG_ITEMS}; ALTER TABLE items OWNER TO {PW_ROLE}"));
    let target = password_endpoints(pg, &db, PW_ROLE, PW_SECRET).swap_remove(form);
    let ws = Workspace::new();
    sqlite_fill(&ws, "source.sqlite", rows);
    write_config(&ws, SQLITE_SOURCE, &target, extra);
    (ws, target)
}

/// A target endpoint for `role` with `password` in each form a config can hold it: the
/// URL's userinfo, `?password=`, a `password` key read from `${DB_SYNC_TEST_PGPW}`, and
/// the userinfo beside parameters db-sync does not use (`sslpassword`, `Pwd`).
fn password_endpoints(pg: &Cluster, db: &str, role: &str, password: &str) -> Vec<String> {
    let server = format!("127.0.0.1:{}/{db}", pg.port);
    vec![
        format!(r#"{{"type": "postgres", "url": "postgres://{role}:{password}@{server}"}}"#),
        format!(r#"{{"type": "postgres", "url": "postgres://{role}@{server}?sslmode=disable&password={password}"}}"#),
        format!(r#"{{"type": "postgres", "url": "postgres://{role}@{server}", "password": "${{DB_SYNC_TEST_PGPW}}"}}"#),
        format!(
            r#"{{"type": "postgres", "url": "postgres://{role}:{password}@{server}?sslpassword={password}&Pwd={password}"}}"#
        ),
    ]
}

/// A wrong password fails with the server's "password authentication failed for user …"
/// (exit 2, not a pool timeout), and the wrong password, in any form, appears in no
/// output, no log line at any level and no file of the state store.
#[test]
fn wrong_password_names_the_cause_and_hides_it() {
    let pg = need_pg!();
    pg.password_role(PW_ROLE, PW_SECRET);
    let db = pg.create_database();
    let wrong = "WrongSecretPw7";
    for target in password_endpoints(pg, &db, PW_ROLE, wrong) {
        let ws = Workspace::new();
        sqlite_fill(&ws, "source.sqlite", 10);
        write_config(&ws, SQLITE_SOURCE, &target, "");
        let env = [("DB_SYNC_LOG", "trace"), ("DB_SYNC_TEST_PGPW", wrong)];
        let mut outputs = Vec::new();
        for args in [&["run", "--progress", "off"][..], &["check"], &["plan"], &["verify"]] {
            let out = ws.run_env(args, &env);
            assert_eq!(out.status.code(), Some(2), "{args:?} with {target}:\n{}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let cause = format!("password authentication failed for user \"{PW_ROLE}\"");
            assert!(stderr.contains(&cause) && stderr.contains("28P01"), "{target}:\n{}", text(&out));
            assert!(!stderr.contains("pool timed out"), "{}", text(&out));
            outputs.push(out);
        }
        let outputs: Vec<&std::process::Output> = outputs.iter().collect();
        assert_secret_absent(wrong, &outputs, &ws.path(".db-sync"));
    }
}

/// A password that works, in each form, stays out of everything a run leaves behind: the
/// output and trace logs of `run` (a copy, then a full compare), `check`, `plan`,
/// `verify`, `runs` and `show` (text and JSON), and every file of the state store.
#[test]
fn password_stays_out_of_output_logs_and_state() {
    let pg = need_pg!();
    pg.password_role(PW_ROLE, PW_SECRET);
    for form in 0..4 {
        let (ws, target) = password_workspace(pg, form, 300, "");
        let env = [("DB_SYNC_LOG", "trace"), ("DB_SYNC_TEST_PGPW", PW_SECRET)];
        let mut outputs = Vec::new();
        for args in [
            &["check"][..],
            &["plan"],
            &["run", "--progress", "lines"],
            &["run", "--json", "--progress", "lines"],
            &["verify"],
            &["runs"],
            &["runs", "--json"],
            &["show", "2"],
            &["show", "2", "--json"],
        ] {
            let out = ws.run_env(args, &env);
            assert_eq!(out.status.code(), Some(0), "{args:?} with {target}:\n{}", text(&out));
            outputs.push(out);
        }
        let show = String::from_utf8_lossy(&outputs[7].stdout).into_owned();
        assert!(show.contains(&format!("postgres://{PW_ROLE}")), "the target stays readable:\n{show}");
        let outputs: Vec<&std::process::Output> = outputs.iter().collect();
        let files = assert_secret_absent(PW_SECRET, &outputs, &ws.path(".db-sync"));
        assert!(files > 0, "the state store was searched");
    }
}

/// An upsert that touches one key twice (SQLSTATE 21000, cardinality violation) is a data
/// error that keeps its SQLSTATE, like classes 22 and 23: the engine splits the batch
/// around it instead of stopping the run.
#[test]
fn cardinality_violation_is_a_data_error() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(&db, "CREATE TABLE tags (code text PRIMARY KEY, kind text, modify_id bigint)");
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let c = open_target(dir.path(), &pg_endpoint(pg, &db)).await;
        let scope = scope(false);
        c.describe("tags").await.unwrap();
        let row = |kind: &str| vec![Value::Text("k".into()), Value::Text(kind.into()), Value::Int(1)];
        let e = c.upsert(&scope, &[row("a"), row("b")]).await.unwrap_err();
        assert!(matches!(e, connector::ConnectorError::Data(_)), "{e:?}");
        assert!(e.to_string().contains("SQLSTATE 21000"), "{e}");
    });
}

// ---------------------------------------------------------------------------------------
// Conformance: the same checks against every connector that can run here.

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

/// Opens a target connector from a one-table config.
async fn open_target(dir: &Path, target: &str) -> Arc<dyn Connector> {
    let text = format!(
        r#"{{"source": {{"type": "sqlite", "path": "unused"}}, "target": {target}, "tables": [{{"name": "tags"}}]}}"#
    );
    let config = Config::from_str_at(&text, &dir.join("c.json"), &|_| None).unwrap();
    connector::open(&config.target, Side::Target, Default::default(), Default::default()).await.unwrap()
}

fn scope(filter: bool) -> TableScope {
    TableScope {
        table: "tags".into(),
        columns: vec!["code".into(), "kind".into(), "modify_id".into()],
        key_indexes: vec![0],
        modify_index: Some(2),
        filter: if filter { vec![("kind".into(), Value::Text("a".into()))] } else { vec![] },
        skip_null_keys: false,
        skip_keys: vec![],
    }
}

fn text_key(s: &str) -> Key {
    Key::Text(s.into())
}

/// The connector contract: byte order of text keys, ranges and offsets, filters,
/// idempotent upserts, deletes within the filter, `(modify_id, key)` paging with shared
/// modify IDs, NULL modify IDs counted apart.
async fn conformance(c: Arc<dyn Connector>) {
    let all = scope(false);
    let keys = ["b", "B", "a", "é", "Z", "ab", "a b", ""];
    let rows: Vec<Vec<Value>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            vec![
                Value::Text(k.to_string()),
                Value::Text(if i % 2 == 0 { "a".into() } else { "b".into() }),
                if i == 7 { Value::Null } else { Value::Int(10 + (i as i64 % 3)) },
            ]
        })
        .collect();
    assert_eq!(c.upsert(&all, &rows).await.unwrap(), 8);
    // Idempotent: the same batch again changes nothing.
    c.upsert(&all, &rows).await.unwrap();
    assert_eq!(c.count(&all, &KeyRange::all()).await.unwrap(), 8);

    let mut sorted: Vec<Key> = keys.iter().map(|k| text_key(k)).collect();
    sorted.sort();
    let page = c.read_keys(&all, &KeyRange::all(), 100).await.unwrap();
    assert_eq!((page.items, page.more), (sorted.clone(), false), "byte order, and nothing follows");
    let page = c.read_keys(&all, &KeyRange::all(), 7).await.unwrap();
    assert!(page.more && page.items.len() == 7, "a page cut short by its limit says more follow");
    let range = KeyRange { after: Some(text_key("B")), upto: Some(text_key("ab")) };
    assert_eq!(
        c.read_keys(&all, &range, 100).await.unwrap().items,
        vec![text_key("Z"), text_key("a"), text_key("a b"), text_key("ab")]
    );
    assert_eq!(c.count(&all, &range).await.unwrap(), 4);
    assert_eq!(c.key_at(&all, &range, 2).await.unwrap(), Some(text_key("a b")));
    assert_eq!(c.key_at(&all, &range, 4).await.unwrap(), None);

    let filtered = scope(true);
    assert_eq!(c.count(&filtered, &KeyRange::all()).await.unwrap(), 4);
    let by_keys = c.read_rows_by_keys(&filtered, &[text_key("b"), text_key("B")]).await.unwrap();
    assert_eq!(by_keys.len(), 1, "only rows of the filter: {by_keys:?}");
    // A delete inside the filter leaves other record types alone.
    assert_eq!(c.delete(&filtered, &[text_key("b"), text_key("B")]).await.unwrap(), 1);
    assert_eq!(c.count(&all, &KeyRange::all()).await.unwrap(), 7);

    // (modify_id, key) paging: ties on modify_id are not skipped; NULLs are counted apart.
    let mut seen = Vec::new();
    let mut cursor = ModifyCursor { modify_id: None, key: None };
    loop {
        let page = c.read_changed_since(&all, &cursor, 2).await.unwrap();
        if page.items.is_empty() {
            assert!(!page.more, "an empty page ends the read");
            break;
        }
        let last = page.items.last().unwrap();
        cursor = ModifyCursor { modify_id: Some(last[2].clone()), key: all.key_of(last) };
        seen.extend(page.items.iter().map(|r| all.key_of(r).unwrap()));
    }
    assert_eq!(seen.len(), 6, "every non-NULL row once: {seen:?}");
    assert_eq!(c.count_null_modify(&all).await.unwrap(), 1);
    assert_eq!(c.max_modify(&all).await.unwrap(), Some(Value::Int(12)));
    assert_eq!(c.count_changed_since(&all, Some(&Value::Int(10))).await.unwrap(), 4);
}

/// SQLite meets the connector contract.
#[test]
fn conformance_sqlite() {
    let ws = Workspace::new();
    ws.db("t.sqlite", "CREATE TABLE tags (code TEXT PRIMARY KEY, kind TEXT, modify_id INTEGER);");
    block_on(async {
        let c = open_target(ws.dir.path(), r#"{"type": "sqlite", "path": "t.sqlite"}"#).await;
        conformance(c).await;
    });
}

/// PostgreSQL meets the connector contract (text keys in byte order whatever the
/// database collation).
#[test]
fn conformance_postgres() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(&db, "CREATE TABLE tags (code text PRIMARY KEY, kind text, modify_id bigint)");
    let ws = Workspace::new();
    block_on(async {
        let c = open_target(ws.dir.path(), &pg_endpoint(pg, &db)).await;
        c.describe("tags").await.unwrap();
        conformance(c).await;
    });
}

/// The in-memory connector used by the algorithm tests meets the same contract.
#[test]
fn conformance_memory() {
    block_on(async {
        let m = db_sync::connector::memory::MemoryConnector::new();
        m.create_table("tags", &["code", "kind", "modify_id"], 0);
        conformance(Arc::new(m)).await;
    });
}

const SQLITE_TYPED: &str = "CREATE TABLE typed (
    id INTEGER PRIMARY KEY, amount NUMERIC(12,2), day DATE, at DATETIME, flag BOOLEAN, payload BLOB,
    doc TEXT, note TEXT, small INTEGER, modify_id INTEGER);";

/// Unlike schemas both ways: SQLite's loose types into PostgreSQL's numeric, date,
/// timestamp, boolean, bytea, jsonb and varchar columns (a NOT NULL column filled by
/// `set_default_value`), and back. A second run finds nothing to change: values that
/// round-trip in another representation are not rewritten.
#[test]
fn schema_translation_both_ways() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(
        &db,
        "CREATE TABLE typed (id bigint PRIMARY KEY, amount numeric(12,2), day date, at timestamp, flag boolean, \
         payload bytea, doc jsonb, note varchar(50), small smallint, modify_id bigint, audit_user text NOT NULL)",
    );
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        &format!(
            "{SQLITE_TYPED}
             INSERT INTO typed VALUES (1, 12.5, '2024-02-29', '2024-01-01 10:00:00', 1, X'00FF10', '{{\"a\": [1, 2]}}', 'n1', 7, 1);
             INSERT INTO typed VALUES (2, 0.1, '1999-12-31', '1999-12-31 23:59:59', 0, NULL, NULL, NULL, NULL, 2);
             INSERT INTO typed VALUES (3, 1234567890.12, NULL, NULL, NULL, X'', '[]', 'tab\there', -32768, 3);"
        ),
    );
    ws.config(&format!(
        r#"{{"source": {SQLITE_SOURCE}, "target": {},
            "tables": [{{"name": "typed", "modify_id_field": "modify_id"}}], "set_default_value": true}}"#,
        pg_endpoint(pg, &db)
    ));
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("`doc` (TEXT) -> target `doc` (jsonb) may lose data"),
        "{}",
        text(&out)
    );
    // Narrower columns of the same family are reported too.
    for narrowed in [
        "`small` (INTEGER) -> target `small` (smallint) may lose data: integers wider than 16 bits do not fit",
        "`note` (TEXT) -> target `note` (character varying(50)) may lose data: text longer than 50 characters",
    ] {
        assert!(String::from_utf8_lossy(&out.stdout).contains(narrowed), "{narrowed}\n{}", text(&out));
    }
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 3, "{report}");
    let rows = pg.query(
        &db,
        "SELECT id, amount, day, at, flag, encode(payload, 'hex'), doc, note, small, audit_user FROM typed ORDER BY id",
    );
    assert_eq!(
        rows,
        vec![
            "1|12.50|2024-02-29|2024-01-01 10:00:00|t|00ff10|{\"a\": [1, 2]}|n1|7|",
            "2|0.10|1999-12-31|1999-12-31 23:59:59|f|||||",
            "3|1234567890.12|||||[]|tab\there|-32768|",
        ]
    );
    let report = rerun_rewrites_nothing(&ws);
    assert_eq!(report["metrics"]["recordCountAllSkipped"], 3, "{report}");

    // And back: PostgreSQL into a SQLite table of the same loose types.
    let back = Workspace::new();
    back.db("target.sqlite", SQLITE_TYPED);
    back.config(&format!(
        r#"{{"source": {}, "target": {SQLITE_TARGET},
            "tables": [{{"name": "typed", "modify_id_field": "modify_id", "exclude_fields": ["audit_user"]}}]}}"#,
        pg_endpoint(pg, &db)
    ));
    run_ok(&back, &["run", "--json", "--progress", "off"]);
    rerun_rewrites_nothing(&back);
    let conn = rusqlite::Connection::open(back.path("target.sqlite")).unwrap();
    let (amount, day, flag, payload): (f64, String, i64, Vec<u8>) = conn
        .query_row("SELECT amount, day, flag, payload FROM typed WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((amount, day.as_str(), flag, payload), (12.5, "2024-02-29", 1, vec![0, 255, 16]));
}

const PG_MOMENTS: &str = "CREATE TABLE moments (id bigint PRIMARY KEY, at_zone timestamptz, at_local timestamp, \
                          day date, clock time, clock_zone timetz, span interval, modify_id bigint)";
const SQLITE_MOMENTS: &str = "CREATE TABLE moments (id INTEGER PRIMARY KEY, at_zone TEXT, at_local TEXT, day TEXT, \
                              clock TEXT, clock_zone TEXT, span TEXT, modify_id INTEGER);";

fn moments_config(ws: &Workspace, source: &str, target: &str) {
    ws.config(&format!(
        r#"{{"source": {source}, "target": {target}, "tables": [{{"name": "moments", "modify_id_field": "modify_id"}}]}}"#
    ));
}

/// Dates, times, timestamps with and without time zone, and intervals, out of and into
/// databases whose time zone is not UTC. PostgreSQL → SQLite stores the instants in UTC,
/// PostgreSQL → PostgreSQL with the two timestamp kinds swapped keeps each instant (a
/// timestamp without zone is taken as UTC), and SQLite text with offsets lands in
/// `timestamptz` as the same instants. Every second run changes nothing.
#[test]
fn dates_times_and_zones() {
    let pg = need_pg!();
    let src = pg.create_database();
    pg.psql(&src, &format!("ALTER DATABASE {src} SET timezone TO 'America/New_York'"));
    pg.psql(&src, PG_MOMENTS);
    pg.psql(
        &src,
        "INSERT INTO moments VALUES
           (1, '2024-03-01 12:00:00+02', '2024-03-01 12:00:00', '2024-02-29', '13:30:00.5', '13:30:00+02', '1 day 02:00:00', 1),
           (2, '1999-12-31 23:59:59.123456+00', '2000-01-01 00:00:00', '1999-12-31', '00:00:00', '23:59:59-05', '-3 mons 4 days', 2),
           (3, NULL, NULL, NULL, NULL, NULL, NULL, 3)",
    );
    let pg_source = pg_endpoint(pg, &src);

    // PostgreSQL → SQLite: text in UTC, whatever the server's zone.
    let ws = Workspace::new();
    ws.db("target.sqlite", SQLITE_MOMENTS);
    moments_config(&ws, &pg_source, SQLITE_TARGET);
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 3, "{report}");
    let rows = sqlite_rows_of(&ws.path("target.sqlite"), "SELECT * FROM moments ORDER BY id");
    assert_eq!(
        rows,
        vec![
            "1|2024-03-01 10:00:00+00|2024-03-01 12:00:00|2024-02-29|13:30:00.5|13:30:00+02|P1DT2H|1",
            "2|1999-12-31 23:59:59.123456+00|2000-01-01 00:00:00|1999-12-31|00:00:00|23:59:59-05|P-3M4D|2",
            "3|||||||3",
        ]
    );
    rerun_rewrites_nothing(&ws);

    // PostgreSQL → PostgreSQL, the timestamp kinds swapped, into yet another zone.
    let dst = pg.create_database();
    pg.psql(&dst, &format!("ALTER DATABASE {dst} SET timezone TO 'Asia/Kolkata'"));
    pg.psql(
        &dst,
        &PG_MOMENTS.replace("at_zone timestamptz, at_local timestamp", "at_zone timestamp, at_local timestamptz"),
    );
    let ws = Workspace::new();
    moments_config(&ws, &pg_source, &pg_endpoint(pg, &dst));
    run_ok(&ws, &["run", "--json", "--progress", "off"]);
    let utc = "SET timezone TO 'UTC'; SELECT * FROM moments ORDER BY id";
    assert_eq!(
        pg.query(&dst, utc),
        vec![
            "1|2024-03-01 10:00:00|2024-03-01 12:00:00+00|2024-02-29|13:30:00.5|13:30:00+02|1 day 02:00:00|1",
            "2|1999-12-31 23:59:59.123456|2000-01-01 00:00:00+00|1999-12-31|00:00:00|23:59:59-05|-3 mons +4 days|2",
            "3|||||||3",
        ]
    );
    let report = rerun_rewrites_nothing(&ws);
    assert_eq!(report["metrics"]["recordCountAllSkipped"], 3, "{report}");

    // SQLite text with offsets → timestamptz: the same instants.
    let dst = pg.create_database();
    pg.psql(&dst, PG_MOMENTS);
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        &format!(
            "{SQLITE_MOMENTS}
             INSERT INTO moments VALUES (1, '2024-03-01T12:00:00+02:00', '2024-03-01T12:00:00', '2024-02-29', '13:30:00.500', NULL, 'P1D', 1);
             INSERT INTO moments VALUES (2, '2024-03-01 10:00:00.250Z', '2024-03-01 10:00:00.000', NULL, NULL, NULL, NULL, 2);"
        ),
    );
    moments_config(&ws, SQLITE_SOURCE, &pg_endpoint(pg, &dst));
    run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(
        pg.query(&dst, "SET timezone TO 'UTC'; SELECT id, at_zone, at_local, clock, span FROM moments ORDER BY id"),
        vec![
            "1|2024-03-01 10:00:00+00|2024-03-01 12:00:00|13:30:00.5|1 day",
            "2|2024-03-01 10:00:00.25+00|2024-03-01 10:00:00||"
        ]
    );
    rerun_rewrites_nothing(&ws);
}

/// JSON objects into `jsonb`: keys another application adds to the target's copy are
/// kept through later changes (compared and updated by the changed and the incremental
/// step), until `copy_all_json_keys` makes every target document the source's again.
#[test]
fn json_keys_kept_or_copied_all() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(&db, "CREATE TABLE docs (id bigint PRIMARY KEY, doc jsonb, modify_id bigint)");
    let ws = Workspace::new();
    let source = ws.db(
        "source.sqlite",
        r#"CREATE TABLE docs (id INTEGER PRIMARY KEY, doc TEXT, modify_id INTEGER);
           INSERT INTO docs VALUES (1, '{"a": 1, "b": [2]}', 1), (2, '{"a": 1}', 2), (3, '[1, 2]', 3);"#,
    );
    let config = |extra: &str| {
        ws.config(&format!(
            r#"{{"source": {SQLITE_SOURCE}, "target": {},
                "tables": [{{"name": "docs", "modify_id_field": "modify_id"}}] {extra}}}"#,
            pg_endpoint(pg, &db)
        ))
    };
    let docs = || pg.query(&db, "SELECT id, doc FROM docs ORDER BY id");
    config("");
    run_ok(&ws, &["run", "--json", "--progress", "off"]);
    // Another application keeps its own key in the target's documents.
    pg.psql(&db, r#"UPDATE docs SET doc = doc || '{"seen": true}' WHERE id IN (1, 2)"#);
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllModified"], 0, "the target's own keys are no difference: {report}");

    // A silent edit (changed step) and a trusted one (incremental step) keep the key.
    source.execute_batch(r#"UPDATE docs SET doc = '{"a": 5, "b": [2]}' WHERE id = 1;"#).unwrap();
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllModified"], 1, "{report}");
    source.execute_batch(r#"UPDATE docs SET doc = '{"a": 6}', modify_id = 10 WHERE id = 2;"#).unwrap();
    config(r#", "trust_modify_id": true"#);
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["tables"][0]["plan"]["steps"], serde_json::json!(["Incremental"]), "{report}");
    assert_eq!(report["metrics"]["recordCountAllModified"], 1, "{report}");
    assert_eq!(docs(), vec![r#"1|{"a": 5, "b": [2], "seen": true}"#, r#"2|{"a": 6, "seen": true}"#, "3|[1, 2]"]);

    // copy_all_json_keys: the target's documents become the source's.
    config(r#", "copy_all_json_keys": true"#);
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllModified"], 2, "{report}");
    assert_eq!(docs(), vec![r#"1|{"a": 5, "b": [2]}"#, r#"2|{"a": 6}"#, "3|[1, 2]"]);
}

/// A missing target table: `check` lists it, `plan` creates nothing, and a run with
/// `create_missing_tables` creates it from the source schema (translated types, primary
/// key, renamed and excluded columns) and fills it.
#[test]
fn missing_target_tables_are_created_on_request() {
    let pg = need_pg!();
    let db = pg.create_database();
    let ws = Workspace::new();
    sqlite_fill(&ws, "source.sqlite", 500);
    let config = |create: bool| {
        ws.config(&format!(
            r#"{{"source": {SQLITE_SOURCE}, "target": {},
                "tables": [{{"name": "items", "modify_id_field": "modify_id", "field_mapping": {{"qty": "quantity"}},
                            "exclude_fields": ["price"]}}],
                "create_missing_tables": {create}}}"#,
            pg_endpoint(pg, &db)
        ))
    };
    config(false);
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("target table `items` does not exist"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("create_missing_tables"), "{}", text(&out));
    let out = ws.run(&["run", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(4), "off by default: {}", text(&out));

    config(true);
    let out = ws.run(&["plan"]);
    assert_eq!(out.status.code(), Some(4), "plan writes nothing: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`db-sync run` creates it"), "{}", text(&out));
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 500);
    let columns = pg.query(
        &db,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position",
    );
    assert_eq!(columns, vec!["id|bigint", "name|text", "quantity|bigint", "modify_id|bigint"]);
    let pk = pg.query(&db, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = 'items'::regclass AND i.indisprimary");
    assert_eq!(pk, vec!["id"]);
    assert_eq!(pg.query(&db, "SELECT count(*), sum(quantity) FROM items"), pg_sum_check(&ws));
}

fn pg_sum_check(ws: &Workspace) -> Vec<String> {
    let conn = rusqlite::Connection::open(ws.path("source.sqlite")).unwrap();
    let (n, sum): (i64, i64) =
        conn.query_row("SELECT count(*), sum(qty) FROM items", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    vec![format!("{n}|{sum}")]
}

/// With a PostgreSQL target, table order follows its foreign keys (parents first for
/// adds, children first for deletes) even when the config lists a child first;
/// `table_order: "config"` keeps the listed order, and the child rows are refused.
#[test]
fn foreign_keys_order_the_tables() {
    let pg = need_pg!();
    let schema = "CREATE TABLE parent (id bigint PRIMARY KEY, name text); \
                  CREATE TABLE child (id bigint PRIMARY KEY, parent_id bigint NOT NULL REFERENCES parent (id), note text)";
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL, note TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100)
         INSERT INTO parent SELECT x, 'p' || x FROM c;
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300)
         INSERT INTO child SELECT x, 1 + x % 100, 'c' || x FROM c;",
    );
    let config = |db: &str, order: &str| {
        ws.config(&format!(
            r#"{{"source": {SQLITE_SOURCE}, "target": {},
                "tables": [{{"name": "child"}}, {{"name": "parent"}}], "table_order": "{order}",
                "max_delete_percent": 100}}"#,
            pg_endpoint(pg, db)
        ))
    };
    let db = pg.create_database();
    pg.psql(&db, schema);
    config(&db, "foreign_keys");
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["tables"][0]["name"], "parent", "parents first: {report}");
    assert_eq!(report["metrics"]["recordCountAllAdded"], 400);
    // Deletes run children first: removing a parent and its children works.
    ws.db("source.sqlite", "DELETE FROM child WHERE parent_id = 7; DELETE FROM parent WHERE id = 7;");
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllDeleted"], 4, "{report}");

    let db = pg.create_database();
    pg.psql(&db, schema);
    config(&db, "config");
    let out = ws.run(&["run", "--json", "--progress", "off"]);
    assert_ne!(out.status.code(), Some(0), "children before parents must fail: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("23503"), "foreign key violation: {}", text(&out));
}

/// A plain copy writes two batches at once; a row whose parent (same table) is in the
/// batch before may be refused while that batch is uncommitted. Such a batch is written
/// again once its predecessors landed: every row arrives and no error is recorded.
#[test]
fn self_referencing_rows_copy_in_key_order() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(&db, "CREATE TABLE nodes (id bigint PRIMARY KEY, parent_id bigint REFERENCES nodes (id), name text)");
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        "CREATE TABLE nodes (id INTEGER PRIMARY KEY, parent_id INTEGER, name TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000)
         INSERT INTO nodes SELECT x, nullif(x - 1, 0), 'node ' || x FROM c;",
    );
    ws.config(&format!(
        r#"{{"source": {SQLITE_SOURCE}, "target": {}, "tables": [{{"name": "nodes"}}], "batch_size": 50}}"#,
        pg_endpoint(pg, &db)
    ));
    let report = run_ok(&ws, &["run", "--json", "--progress", "off"]);
    assert_eq!(report["metrics"]["recordCountAllAdded"], 5000, "{report}");
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0), "{report}");
    let rows = "SELECT id, coalesce(parent_id::text, ''), name FROM nodes ORDER BY id";
    let sql = "SELECT id, coalesce(CAST(parent_id AS TEXT), ''), name FROM nodes ORDER BY id";
    assert_rows(&sqlite_rows_of(&ws.path("source.sqlite"), sql), &pg.query(&db, rows));
}

/// A plain copy into PostgreSQL (two batches in flight) killed inside a COPY, or after a
/// commit before its checkpoint, resumes to equal tables with exact counters: batches
/// committed out of order are written again as upserts and counted once.
#[test]
fn plain_copy_resumes_exactly_after_a_crash() {
    let pg = need_pg!();
    for point in ["mid_write:7", "after_commit:7"] {
        let db = pg.create_database();
        pg.psql(&db, PG_ITEMS);
        let ws = Workspace::new();
        sqlite_fill(&ws, "source.sqlite", 3000);
        write_config(&ws, SQLITE_SOURCE, &pg_endpoint(pg, &db), r#", "batch_size": 100"#);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_db-sync"))
            .args(["run", "--progress", "off"])
            .current_dir(ws.dir.path())
            .env("DB_SYNC_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"), "{point}: {}", text(&out));
        let landed: u64 = pg.query(&db, "SELECT count(*) FROM items")[0].parse().unwrap();
        assert!(landed < 3000, "{point}: the crash left work to do ({landed} rows)");
        let out = ws.run(&["resume", "--progress", "off"]);
        assert_eq!(out.status.code(), Some(0), "{point}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("(plain copy)"), "{point}: {}", text(&out));
        assert_rows(&sqlite_rows(&ws.path("source.sqlite")), &pg_rows(pg, &db));
        let detail = run_ok(&ws, &["show", "1", "--json"]);
        assert_eq!(detail["run"]["status"], "completed", "{point}: {detail}");
        assert_eq!(detail["tables"][0]["added"], 3000, "{point}: every row counted once: {detail}");
    }
}

/// Tables of plain column types are copied in binary format. Values the columns cannot
/// hold (out of `smallint`'s or `real`'s range, a text too long for its `varchar`) are
/// data errors naming row and column; everything else lands exactly, and a second run
/// rewrites nothing.
#[test]
fn binary_copy_of_plain_types() {
    let pg = need_pg!();
    let db = pg.create_database();
    pg.psql(
        &db,
        "CREATE TABLE plain (id bigint PRIMARY KEY, small smallint, r real, d double precision, flag boolean, \
         name text, code varchar(5), data bytea, modify_id bigint)",
    );
    let ws = Workspace::new();
    ws.db(
        "source.sqlite",
        "CREATE TABLE plain (id INTEGER PRIMARY KEY, small INTEGER, r REAL, d REAL, flag INTEGER, name TEXT, \
         code TEXT, data BLOB, modify_id INTEGER);
         INSERT INTO plain VALUES (1, 7, 1.5, 0.1, 1, 'tab\there', 'abc', X'00FF', 1);
         INSERT INTO plain VALUES (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2);
         INSERT INTO plain VALUES (3, 40000, 1.0, 2.0, 0, 'x', 'a', X'', 3);
         INSERT INTO plain VALUES (4, 1, 1e300, 1.0, 0, 'y', 'b', X'01', 4);
         INSERT INTO plain VALUES (5, 1, 1.0, 1.0, 0, 'z', 'toolong', X'01', 5);
         INSERT INTO plain VALUES (6, -32768, 0.25, 9e999, 1, 'émoji ✓', '', X'', 6);",
    );
    ws.config(&format!(
        r#"{{"source": {SQLITE_SOURCE}, "target": {}, "batch_size": 4,
            "tables": [{{"name": "plain", "modify_id_field": "modify_id"}}]}}"#,
        pg_endpoint(pg, &db)
    ));
    let out = ws.run(&["run", "--json", "--progress", "off"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["metrics"]["recordCountAllAdded"], 3, "{report}");
    let errors = report["errors"].to_string();
    // Values the columns cannot hold are refused before they are sent, each naming its
    // row and column.
    for refused in [
        "row 3 cannot be converted: column `small`: 40000 does not fit in a 16-bit integer column",
        "row 4 cannot be converted: column `r`: 1e300 is too large for a real",
        "row 5 cannot be converted: column `code`: text of 7 characters is longer than the column's 5",
    ] {
        assert!(errors.contains(refused), "{refused}: {errors}");
    }
    let rows = pg
        .query(&db, "SELECT id, small, r, d, flag, name, code, encode(data, 'hex'), modify_id FROM plain ORDER BY id");
    assert_eq!(rows, vec!["1|7|1.5|0.1|t|tab\there|abc|00ff|1", "2||||||||2", "6|-32768|0.25|Infinity|t|émoji ✓|||6"],);
    let out = ws.run(&["run", "--json", "--progress", "off"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["metrics"]["recordCountAllModified"], 0, "nothing rewritten: {report}");
    assert_eq!(report["metrics"]["recordCountAllAdded"], 0, "{report}");
}

/// The demo into PostgreSQL: schema from migrations/ (sqlx::migrate!), both syncs, and
/// every row verified.
#[test]
fn demo_into_postgres() {
    let pg = need_pg!();
    let db = pg.create_database();
    let ws = Workspace::new();
    let out = ws.run(&["demo", "--dir", "demo", "--scale", "0.05", "--target-url", &pg.url(&db)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("== verified: all"), "{stdout}");
    assert!(stdout.contains("target empty => add all"), "{stdout}");
    let config = std::fs::read_to_string(ws.path("demo/db-sync.json")).unwrap();
    assert!(config.contains("${DB_SYNC_DEMO_TARGET_URL}"), "no URL in the file: {config}");
}

/// With every debug switch on (`debug_sql`, `show_sql_values`, `debug_connection_change`),
/// SQLite → PostgreSQL at the default log level: the PostgreSQL statements (COPY or upsert)
/// and its connection lines appear, and the password, in each form a config can hold it,
/// appears in no log line.
#[test]
fn debug_switches_show_statements_and_hide_the_password() {
    let pg = need_pg!();
    pg.password_role(PW_ROLE, PW_SECRET);
    for form in 0..4 {
        let switches = r#", "debug_sql": true, "show_sql_values": true, "debug_connection_change": true"#;
        let (ws, target) = password_workspace(pg, form, 50, switches);
        let out = ws.run_env(&["run", "--progress", "off"], &[("DB_SYNC_TEST_PGPW", PW_SECRET)]);
        assert_eq!(out.status.code(), Some(0), "{target}:\n{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let target_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("side=\"target\"")).collect();
        assert!(target_lines.iter().any(|l| l.contains("COPY ") || l.contains("INSERT INTO ")), "{stderr}");
        assert!(target_lines.iter().any(|l| l.contains("SELECT ")), "{stderr}");
        assert!(stderr.lines().any(|l| l.contains("statement done") && l.contains("pool")), "{stderr}");
        assert!(target_lines.iter().any(|l| l.contains(" connected ") && l.contains("127.0.0.1")), "{stderr}");
        assert!(!out.stderr.contains(&0x1b), "{stderr}");
        assert_secret_absent(PW_SECRET, &[&out], &ws.path(".db-sync"));
    }
}
