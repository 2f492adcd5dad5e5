//! Bad input gets one clear error, a documented exit code, and writes nothing.

mod common;

use common::{Workspace, assert_secret_absent, text};

const SCHEMA: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, modify_id INTEGER);
                      INSERT INTO items VALUES (1, 'a', 1, 1), (2, 'b', 2, 2);";

const CONFIG: &str = r#"{
  "source": {"type": "sqlite", "path": "source.sqlite"},
  "target": {"type": "sqlite", "path": "target.sqlite"},
  "tables": [{"name": "items", "modify_id_field": "modify_id"}]
}"#;

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.db("source.sqlite", SCHEMA);
    ws.db("target.sqlite", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, modify_id INTEGER);");
    ws
}

/// Runs `db-sync run`, expects `code`, a message containing every `needle`, and an
/// untouched target.
fn expect_error(ws: &Workspace, args: &[&str], code: i32, needles: &[&str]) {
    let before = std::fs::read(ws.path("target.sqlite")).ok();
    let out = ws.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{}", text(&out));
    }
    assert_eq!(before, std::fs::read(ws.path("target.sqlite")).ok(), "target must be untouched");
}

/// No config file: exit 2, naming the file and the way out.
#[test]
fn missing_config() {
    let ws = workspace();
    expect_error(&ws, &["run"], 2, &["cannot read config file db-sync.json", "--config"]);
}

/// Malformed JSON: exit 2 with line and column.
#[test]
fn malformed_json() {
    let ws = workspace();
    ws.config("{\n  \"source\": {\"type\": \"sqlite\", \"path\": \"source.sqlite\"},\n  \"target\": [,\n}");
    expect_error(&ws, &["run"], 2, &["not valid JSON at line 3, column"]);
}

/// Unknown key: exit 2 naming the key and the closest valid one.
#[test]
fn unknown_key() {
    let ws = workspace();
    ws.config(&CONFIG.replace("\"modify_id_field\"", "\"modify_field\""));
    expect_error(&ws, &["run"], 2, &["unknown key `modify_field`", "did you mean `modify_id_field`"]);
}

/// An unset `${VAR}`: exit 2 naming the variable.
#[test]
fn unset_environment_variable() {
    let ws = workspace();
    ws.config(&CONFIG.replace("target.sqlite", "${DB_SYNC_TEST_UNSET_VAR}"));
    expect_error(&ws, &["run"], 2, &["DB_SYNC_TEST_UNSET_VAR", "not set"]);
}

/// A connection type that does not sync yet: exit 2, saying so.
#[test]
fn unsupported_connection_type() {
    let ws = workspace();
    ws.config(
        &CONFIG.replace(
            r#"{"type": "sqlite", "path": "source.sqlite"}"#,
            r#"{"type": "rest", "url": "http://127.0.0.1:9"}"#,
        ),
    );
    expect_error(&ws, &["run"], 2, &["`rest` is not supported yet"]);
}

/// A connection key that would have no effect for its backend (`statement_timeout_secs`
/// on SQLite) is refused by every command, naming the key; nothing is written.
#[test]
fn connection_key_without_effect_is_refused() {
    let ws = workspace();
    ws.config(&CONFIG.replace(
        r#"{"type": "sqlite", "path": "target.sqlite"}"#,
        r#"{"type": "sqlite", "path": "target.sqlite", "statement_timeout_secs": "30s"}"#,
    ));
    for command in ["run", "check", "plan", "verify"] {
        expect_error(
            &ws,
            &[command],
            2,
            &["`target.statement_timeout_secs`", "`statement_timeout_secs` is not supported yet for sqlite"],
        );
    }
}

/// `--table` with a name not in the config: exit 2 with a suggestion.
#[test]
fn unknown_table_argument() {
    let ws = workspace();
    ws.config(CONFIG);
    expect_error(&ws, &["run", "--table", "itemz"], 2, &["--table itemz", "did you mean `items`"]);
}

/// A missing table on either side: exit 4, naming the table and the side.
#[test]
fn missing_table() {
    let ws = workspace();
    ws.config(
        &CONFIG.replace(
            r#"{"name": "items", "modify_id_field": "modify_id"}"#,
            r#"{"name": "items"}, {"name": "orders"}"#,
        ),
    );
    expect_error(&ws, &["run"], 4, &["source table `orders` does not exist", "target table `orders` does not exist"]);
}

/// A missing column named by the config: exit 4 with a suggestion.
#[test]
fn missing_column() {
    let ws = workspace();
    ws.config(&CONFIG.replace("\"modify_id\"", "\"modify_idd\""));
    expect_error(
        &ws,
        &["run"],
        4,
        &["`modify_idd` is not a column of source table `items`", "did you mean `modify_id`"],
    );
}

/// A mapped column whose types cannot convert (text into integer): exit 4 before any
/// write; `check` reports the same problem.
#[test]
fn column_types_that_cannot_convert() {
    let ws = workspace();
    ws.config(
        &CONFIG.replace(r#""modify_id_field": "modify_id""#, r#""field_mapping": {"name": "qty", "qty": "name"}"#),
    );
    expect_error(&ws, &["run"], 4, &["source column `name` (TEXT) cannot convert to target column `qty` (INTEGER)"]);
    expect_error(&ws, &["check"], 4, &["cannot convert"]);
}

/// A target without a primary key on the key column cannot take idempotent upserts.
#[test]
fn target_without_key() {
    let ws = Workspace::new();
    ws.db("source.sqlite", SCHEMA);
    ws.db("target.sqlite", "CREATE TABLE items (id INTEGER, name TEXT, qty INTEGER, modify_id INTEGER);");
    ws.config(CONFIG);
    expect_error(&ws, &["run"], 4, &["needs a primary key or unique index on `id`"]);
}

/// A database file that does not exist, or is not a database: exit 3.
#[test]
fn unreadable_database_files() {
    let ws = workspace();
    ws.config(&CONFIG.replace("source.sqlite", "nowhere.sqlite"));
    expect_error(&ws, &["run"], 3, &["nowhere.sqlite", "does not exist"]);

    std::fs::write(ws.path("garbage.sqlite"), vec![0x42u8; 8192]).unwrap();
    ws.config(&CONFIG.replace("source.sqlite", "garbage.sqlite"));
    expect_error(&ws, &["run"], 3, &["garbage.sqlite", "not a database"]);
}

/// A target locked by another process: exit 3 after the busy timeout, naming the lock.
#[test]
fn locked_database() {
    let ws = workspace();
    // One quick retry: the lock does not go away while this test holds it.
    ws.config(&CONFIG.replace(
        r#""target": {"type": "sqlite", "path": "target.sqlite"}"#,
        r#""target": {"type": "sqlite", "path": "target.sqlite", "retry_count": 1, "retry_delay": 10}"#,
    ));
    let holder = rusqlite::Connection::open(ws.path("target.sqlite")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE; INSERT INTO items VALUES (99, 'x', 1, 1);").unwrap();
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"), "{}", text(&out));
    holder.execute_batch("ROLLBACK").unwrap();
    let rows: i64 = holder.query_row("SELECT count(*) FROM items", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "nothing written");
}

/// `check` on a good config reports both connections and each table.
#[test]
fn check_passes_on_good_config() {
    let ws = workspace();
    ws.config(CONFIG);
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("table items: items -> items (4 columns) ok"), "{stdout}");
    assert!(stdout.contains("check passed"), "{stdout}");
}

/// One quick retry: the first connection is retried like any call, and the retry's log
/// line must not show the password either.
const RETRY: &str = r#""retry_count": 1, "retry_delay": 10"#;

/// The password of every test below; it must show up nowhere.
const SECRET: &str = "Hunter2SecretPw";

/// A PostgreSQL target at `host:port` with the password in each of the forms a config can
/// hold it: in the URL's userinfo, as `?password=`, as a `password` key read from the
/// environment, and in parameters db-sync does not use (`sslpassword`, `Pwd`).
fn password_forms(host_port: &str) -> Vec<String> {
    vec![
        format!(r#"{{"type": "postgres", "url": "postgres://sync:{SECRET}@{host_port}/erp", {RETRY}}}"#),
        format!(
            r#"{{"type": "postgres", "url": "postgres://sync@{host_port}/erp?sslmode=disable&password={SECRET}", {RETRY}}}"#
        ),
        format!(
            r#"{{"type": "postgres", "url": "postgres://sync@{host_port}/erp", "password": "${{DB_SYNC_TEST_PGPW}}", {RETRY}}}"#
        ),
        format!(
            r#"{{"type": "postgres", "url": "postgres://sync:{SECRET}@{host_port}/erp?sslpassword={SECRET}&Pwd={SECRET}", {RETRY}}}"#
        ),
    ]
}

/// Runs `run`, `check` and `plan` against each password form with every log level on,
/// expects exit 3 and `cause` in the error, and finds the secret in no output and no file
/// of the state store.
fn connection_failure_hides_the_password(host_port: &str, cause: &str) {
    for target in password_forms(host_port) {
        let ws = workspace();
        ws.config(&CONFIG.replace(r#"{"type": "sqlite", "path": "target.sqlite"}"#, &target));
        let env = [("DB_SYNC_LOG", "trace"), ("DB_SYNC_TEST_PGPW", SECRET)];
        let mut outputs = Vec::new();
        for args in [&["run", "--progress", "off"][..], &["check"], &["plan"], &["run", "-vv", "--json"]] {
            let out = ws.run_env(args, &env);
            assert_eq!(out.status.code(), Some(3), "{args:?} with {target}:\n{}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(cause), "expected {cause:?} for {target}:\n{}", text(&out));
            assert!(stderr.contains(host_port), "the error names the server:\n{}", text(&out));
            assert!(!stderr.contains("pool timed out"), "{}", text(&out));
            outputs.push(out);
        }
        let outputs: Vec<&std::process::Output> = outputs.iter().collect();
        assert_secret_absent(SECRET, &outputs, &ws.path(".db-sync"));
    }
}

/// A closed port fails at once with "connection refused" (not a pool timeout after 30 s),
/// and the password, in any form, appears in no output, log line or stored file.
#[test]
fn refused_connection_names_the_cause_and_hides_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    connection_failure_hides_the_password(&format!("127.0.0.1:{port}"), "connection refused");
    assert!(started.elapsed().as_secs() < 60, "every refused connection failed at once");
}

/// An unknown host fails with "no such host", and the password appears nowhere.
#[test]
fn unknown_host_names_the_cause_and_hides_the_password() {
    connection_failure_hides_the_password("no-such-host.invalid:5432", "no such host");
}

/// `runs` and `show` read only the state store: they work without the environment
/// variables the connections need, while `run` names the missing one.
#[test]
fn runs_and_show_need_no_secrets() {
    let ws = workspace();
    ws.config(CONFIG);
    assert_eq!(ws.run(&["run", "--progress", "off"]).status.code(), Some(0));
    ws.config(&CONFIG.replace(
        r#""target": {"type": "sqlite", "path": "target.sqlite"}"#,
        r#""target": {"type": "postgres", "url": "postgres://sync@db.example/erp", "password": "${DB_SYNC_TEST_UNSET_PW}"}"#,
    ));
    let out = ws.run(&["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed"), "{}", text(&out));
    let out = ws.run(&["show", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DB_SYNC_TEST_UNSET_PW"), "{}", text(&out));
}
