//! 4D over its SQL network protocol against the SQL server emulator
//! (`fourd_emulator::SqlEmulator`) over loopback TCP: db-sync's codec and the emulator's,
//! written apart, each checking the other; the emulator's sessions, paging, parameters,
//! transactions, system tables and errors; the session layer; and `db-sync run` end to end
//! in both directions. Results are checked against the SQLite files read directly.

mod common;

use common::proxy;

use std::time::Duration;

use db_sync::connector::ConnectorError;
use db_sync::connector::fourd_sql::session::{Answer, SqlSession};
use db_sync::connector::fourd_sql::wire::{Cell, ReplyHeader, ReplyReader, Request, ResultHeader, VkType};
use fourd_emulator::{SqlEmulator, SqlSettings};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::tcp::OwnedWriteHalf;

const ITEMS: &str = "CREATE TABLE Items (ID INT64 PRIMARY KEY, name VARCHAR(40), price REAL, born TIMESTAMP,
                       span DURATION, ok BOOLEAN, data BLOB, note TEXT);
    INSERT INTO Items VALUES (1, 'Zoë', 1.5, '2024-02-29 13:45:30.250', 3723004, 1, x'DEADBEEF', 'first');
    INSERT INTO Items VALUES (2, NULL, -0.1, '1999-12-31', 0, 0, x'', NULL);
    INSERT INTO Items VALUES (3, 'a😀', 0.0, NULL, NULL, NULL, NULL, '');
    INSERT INTO Items VALUES (4, 'four', 4.0, '2000-01-01', 1, 1, NULL, 'x');
    INSERT INTO Items VALUES (5, 'five', 5.0, '2000-01-02', 2, 0, NULL, 'y');";

struct Client {
    reader: ReplyReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next: u32,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, writer) = stream.into_split();
        Client { reader: ReplyReader::new(read), writer, next: 1 }
    }

    fn id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    async fn send(&mut self, request: Request) -> ReplyHeader {
        self.writer.write_all(&request.encode().unwrap()).await.unwrap();
        let header = self.reader.header().await.unwrap();
        assert_eq!(header.id, request.id(), "the reply echoes the command id");
        header
    }

    async fn login(&mut self, user: &str, password: &str) -> ReplyHeader {
        let id = self.id();
        self.send(Request::login(id, user, password)).await
    }

    /// Runs a statement; all rows (paged with FETCH-RESULT, `page` at a time), or the update count.
    async fn run(&mut self, sql: &str, page: u64, params: Vec<(VkType, Cell)>) -> Result<Outcome, (i64, String)> {
        let id = self.id();
        let header = self.send(Request::execute(id, sql, page, params)).await;
        if !header.ok {
            return Err(header.error());
        }
        match header.result().unwrap() {
            ResultHeader::UpdateCount { .. } => Ok(Outcome::Count(self.reader.update_count().await.unwrap())),
            ResultHeader::ResultSet { statement, layout, aliases, rows, sent } => {
                let mut out = Vec::new();
                self.reader.rows(&layout, sent, &mut out).await.unwrap();
                while (out.len() as u64) < rows {
                    let first = out.len() as u64;
                    let last = (first + page - 1).min(rows - 1);
                    let id = self.id();
                    let reply = self.send(Request::fetch(id, statement, first, last)).await;
                    assert!(reply.ok, "{:?}", reply.error());
                    self.reader.rows(&layout, last - first + 1, &mut out).await.unwrap();
                }
                let id = self.id();
                assert!(self.send(Request::close(id, statement)).await.ok);
                Ok(Outcome::Rows { aliases, types: layout.types, rows: out })
            }
        }
    }

    async fn count(&mut self) -> Cell {
        self.rows("SELECT COUNT(*) FROM [Items]", vec![]).await[0][0].clone()
    }

    async fn rows(&mut self, sql: &str, params: Vec<(VkType, Cell)>) -> Vec<Vec<Cell>> {
        match self.run(sql, 2, params).await.unwrap() {
            Outcome::Rows { rows, .. } => rows,
            Outcome::Count(n) => panic!("rows expected, got a count of {n}"),
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Rows { aliases: Vec<String>, types: Vec<VkType>, rows: Vec<Vec<Cell>> },
    Count(i64),
}

fn text(s: &str) -> Cell {
    Cell::Text(s.into())
}

fn setup(settings: SqlSettings) -> (tempfile::TempDir, std::path::PathBuf, SqlEmulator) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fourd.sqlite");
    rusqlite::Connection::open(&path).unwrap().execute_batch(ITEMS).unwrap();
    let emulator = SqlEmulator::start(&path, settings).unwrap();
    (dir, path, emulator)
}

/// A session: login refused and accepted, a query paged two rows at a time with every
/// value type, parameters, the reversed OFFSET/LIMIT, counts, system tables, errors,
/// logout and quit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_every_type_in_pages() {
    let (_dir, _path, emulator) = setup(SqlSettings::default());
    let mut c = Client::connect(emulator.port()).await;
    let refused = c.login("sync", "wrong").await;
    assert!(!refused.ok);
    assert_eq!(refused.error().0, -10515);
    assert!(c.login("sync", "secret").await.ok);
    assert_eq!(c.login("sync", "secret").await.error().0, 3002, "one login per session");

    let Outcome::Rows { aliases, types, rows } = c
        .run("SELECT [ID], [name], [price], [born], [span], [ok], [data], [note] FROM [Items] ORDER BY [ID]", 2, vec![])
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(aliases, ["ID", "name", "price", "born", "span", "ok", "data", "note"]);
    use VkType::*;
    assert_eq!(types, [Long8, String, Real, Timestamp, Duration, Boolean, Blob, String]);
    let ts = |year, month, day, millis| Cell::Timestamp { year, month, day, millis };
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0],
        [
            Cell::I64(1),
            text("Zoë"),
            Cell::Real(1.5),
            ts(2024, 2, 29, 49_530_250),
            Cell::Duration(3_723_004),
            Cell::Bool(true),
            Cell::Bytes(vec![0xDE, 0xAD, 0xBE, 0xEF]),
            text("first")
        ]
    );
    assert_eq!(
        rows[1],
        [
            Cell::I64(2),
            Cell::Null,
            Cell::Real(-0.1),
            ts(1999, 12, 31, 0),
            Cell::Duration(0),
            Cell::Bool(false),
            Cell::Bytes(vec![]),
            Cell::Null
        ]
    );
    assert_eq!(rows[2][1], text("a😀"));
    assert_eq!(rows[2][7], text(""), "empty text is not NULL");
    assert!(rows[2][3..7].iter().all(|c| *c == Cell::Null));

    // Parameters of several types; 4D's OFFSET-before-LIMIT order.
    let ids = c
        .rows(
            "SELECT [ID] FROM [Items] WHERE [ID] > ? AND [name] <> ? AND [price] < ? ORDER BY [ID] OFFSET 1 LIMIT 2",
            vec![(Long8, Cell::I64(0)), (String, text("four")), (Real, Cell::Real(100.0))],
        )
        .await;
    assert_eq!(ids, [[Cell::I64(3)], [Cell::I64(5)]]);
    let count = c.rows("SELECT COUNT(*) FROM [Items] WHERE [note] IS NULL", vec![]).await;
    assert_eq!(count, [[Cell::I64(1)]]);

    // System tables (docs/4d-sql.md §9.6).
    let columns = c
        .rows(
            "SELECT COLUMN_NAME, DATA_TYPE FROM _USER_COLUMNS WHERE TABLE_NAME = ? ORDER BY COLUMN_ID",
            vec![(String, text("Items"))],
        )
        .await;
    let codes: Vec<(std::string::String, i64)> = columns
        .iter()
        .map(|r| match (&r[0], &r[1]) {
            (Cell::Text(n), Cell::I64(t)) => (n.clone(), *t),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected =
        [("ID", 5), ("name", 10), ("price", 6), ("born", 8), ("span", 9), ("ok", 1), ("data", 18), ("note", 14)];
    assert_eq!(codes, expected.map(|(n, t)| (n.to_string(), t)));
    let key = c
        .rows(
            "SELECT c.COLUMN_NAME FROM _USER_CONSTRAINTS k, _USER_CONS_COLUMNS c
             WHERE k.CONSTRAINT_ID = c.CONSTRAINT_ID AND k.CONSTRAINT_TYPE = 'P' AND k.TABLE_NAME = ?",
            vec![(String, text("Items"))],
        )
        .await;
    assert_eq!(key, [[text("ID")]]);

    // Errors (§7.2) leave the session usable.
    assert_eq!(c.run("SELECT * FROM [Nope]", 10, vec![]).await.unwrap_err().0, 1101);
    assert_eq!(c.run("SELECT [nope] FROM [Items]", 10, vec![]).await.unwrap_err().0, 1102);
    assert_eq!(c.run("SELEKT 1", 10, vec![]).await.unwrap_err().0, 1301);
    assert_eq!(c.run("SELECT [ID] FROM [Items] WHERE [ID] = ?", 10, vec![]).await.unwrap_err().0, 1110);
    let id = c.id();
    assert_eq!(c.send(Request::fetch(id, 999, 0, 1)).await.error().0, 3005);
    assert_eq!(c.rows("SELECT COUNT(*) FROM [Items]", vec![]).await, [[Cell::I64(5)]]);

    let id = c.id();
    assert_eq!(c.send(Request::quit(id)).await.error().0, 3007, "QUIT needs LOGOUT first");
    let id = c.id();
    assert!(c.send(Request::logout(id)).await.ok);
    let id = c.id();
    assert!(c.send(Request::quit(id)).await.ok);
    let stats = emulator.stats();
    assert_eq!((stats.logins, stats.logouts, stats.refused_logins, stats.open_sessions), (1, 1, 1, 0));
}

/// Writes with bound values inside transactions: a rollback leaves nothing, a nested
/// commit inside a rolled-back transaction leaves nothing, a commit lands; read back from
/// the SQLite file directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_bound_writes() {
    let (_dir, path, emulator) = setup(SqlSettings::default());
    let mut c = Client::connect(emulator.port()).await;
    assert!(c.login("sync", "secret").await.ok);
    let insert = "INSERT INTO [Items] ([ID], [name], [price], [born], [span], [ok], [data], [note]) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    let row = |id: i64| {
        use VkType::*;
        vec![
            (Long8, Cell::I64(id)),
            (String, text("it's \"quoted\" 😀")),
            (Real, Cell::Real(0.1 + 0.2)),
            (Timestamp, Cell::Timestamp { year: 2026, month: 11, day: 30, millis: 1 }),
            (Duration, Cell::Duration(-5)),
            (Boolean, Cell::Bool(true)),
            (Blob, Cell::Bytes(vec![0, 1, 2])),
            (Text, Cell::Null),
        ]
    };
    assert!(matches!(c.run("START", 1, vec![]).await, Ok(Outcome::Count(0))));
    assert!(matches!(c.run(insert, 1, row(10)).await, Ok(Outcome::Count(1))));
    assert_eq!(c.count().await, Cell::I64(6), "the session sees its own write");
    assert!(matches!(c.run("ROLLBACK", 1, vec![]).await, Ok(Outcome::Count(0))));
    assert_eq!(c.count().await, Cell::I64(5));

    c.run("START TRANSACTION", 1, vec![]).await.unwrap();
    c.run("START", 1, vec![]).await.unwrap();
    c.run(insert, 1, row(11)).await.unwrap();
    c.run("COMMIT", 1, vec![]).await.unwrap();
    c.run("ROLLBACK", 1, vec![]).await.unwrap();
    assert_eq!(c.count().await, Cell::I64(5), "an outer rollback cancels an inner commit");

    c.run("START", 1, vec![]).await.unwrap();
    c.run(insert, 1, row(12)).await.unwrap();
    assert!(matches!(
        c.run(
            "UPDATE [Items] SET [note] = ? WHERE [ID] >= ?",
            1,
            vec![(VkType::Text, text("n")), (VkType::Long8, Cell::I64(4))]
        )
        .await,
        Ok(Outcome::Count(3))
    ));
    c.run("COMMIT", 1, vec![]).await.unwrap();
    assert_eq!(c.run("COMMIT", 1, vec![]).await.unwrap_err().0, 1203, "no transaction left");
    assert!(matches!(
        c.run("DELETE FROM [Items] WHERE [ID] = ?", 1, vec![(VkType::Long, Cell::I32(5))]).await,
        Ok(Outcome::Count(1))
    ));

    let db = rusqlite::Connection::open(&path).unwrap();
    let stored: (std::string::String, f64, std::string::String, i64, i64, Vec<u8>, Option<std::string::String>) = db
        .query_row("SELECT name, price, born, span, ok, data, note FROM Items WHERE ID = 12", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })
        .unwrap();
    assert_eq!(
        stored,
        (
            "it's \"quoted\" 😀".into(),
            0.1 + 0.2,
            "2026-11-30 00:00:00.001".into(),
            -5,
            1,
            vec![0, 1, 2],
            Some("n".into())
        )
    );
    let ids: Vec<i64> = db
        .prepare("SELECT ID FROM Items ORDER BY ID")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 12]);
}

/// The session limit (§3.2): one more login is refused until a session ends, by LOGOUT or
/// by a client that just closes its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_limited_and_freed() {
    let (_dir, _path, emulator) = setup(SqlSettings { max_sessions: 1, ..SqlSettings::default() });
    let mut first = Client::connect(emulator.port()).await;
    assert!(first.login("sync", "secret").await.ok);
    let mut second = Client::connect(emulator.port()).await;
    assert_eq!(second.login("sync", "secret").await.error().0, -10514);
    let id = first.id();
    assert!(first.send(Request::logout(id)).await.ok);
    assert!(second.login("sync", "secret").await.ok);
    drop(second);
    let mut third = Client::connect(emulator.port()).await;
    // The server notices the closed socket on its own time.
    let mut tries = 0;
    while !third.login("sync", "secret").await.ok {
        tries += 1;
        assert!(tries < 50, "a closed connection never freed its session");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(emulator.stats().peak_sessions, 1);
}

async fn open(port: u16, password: &str) -> Result<SqlSession, ConnectorError> {
    SqlSession::open("127.0.0.1", port, "sync", password, "source 4d sql", Duration::from_secs(5)).await
}

/// The emulator sorts text as 4D's SQL engine does, not by bytes, and compares it
/// case-sensitively unless set to fold (§9.7): what the connector's client-side key order
/// is there for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_order_and_comparison_are_4ds() {
    for fold in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fourd.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(FOURD_NAMES).unwrap();
        conn.execute_batch(
            "INSERT INTO Names VALUES ('b', '', 1), ('B', '', 1), ('a', '', 1), ('é', '', 1), ('f', '', 1)",
        )
        .unwrap();
        let emulator = SqlEmulator::start(&path, SqlSettings { fold_text: fold, ..SqlSettings::default() }).unwrap();
        let mut session = open(emulator.port(), "secret").await.unwrap();
        let Answer::Rows { rows, .. } =
            session.run("SELECT [code] FROM [Names] ORDER BY [code]", vec![], 100, "t").await.unwrap()
        else {
            panic!("rows")
        };
        assert_eq!(rows.concat(), ["a", "B", "b", "é", "f"].map(text), "linguistic order");
        let Answer::Rows { rows, .. } = session
            .run(
                "SELECT [code] FROM [Names] WHERE [code] IN (?, ?) ORDER BY [code] DESC",
                vec![(VkType::String, text("A")), (VkType::String, text("e"))],
                100,
                "t",
            )
            .await
            .unwrap()
        else {
            panic!("rows")
        };
        let expected: Vec<Cell> = if fold { vec![text("é"), text("a")] } else { vec![] };
        assert_eq!(rows.into_iter().flatten().collect::<Vec<_>>(), expected, "fold_text {fold}");
        session.close().await;
    }
}

/// The session layer: a refused login names the user and never the password, the licence
/// limit is `Busy`, results come whole through small pages, server errors map to the
/// engine's kinds, and closing logs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_layer() {
    let (_dir, _path, emulator) = setup(SqlSettings { max_sessions: 1, ..SqlSettings::default() });
    let port = emulator.port();
    let Err(ConnectorError::Config(message)) = open(port, "hunter2").await else { panic!("a refused login") };
    assert!(message.contains("`sync`") && !message.contains("hunter2"), "{message}");

    let mut session = open(port, "secret").await.unwrap();
    assert!(matches!(open(port, "secret").await, Err(ConnectorError::Busy { .. })), "licence limit");
    let answer = session.run("SELECT [ID], [name] FROM [Items] ORDER BY [ID]", vec![], 2, "reading").await.unwrap();
    let Answer::Rows { aliases, rows, .. } = answer else { panic!("rows") };
    assert_eq!(aliases, ["ID", "name"]);
    assert_eq!(rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), (1..=5).map(Cell::I64).collect::<Vec<_>>());
    assert_eq!(emulator.stats().fetches, 2, "5 rows, 2 a page: the first page and two fetches");

    let schema = session.run("SELECT * FROM [Missing]", vec![], 10, "reading").await.unwrap_err();
    assert!(matches!(&schema, ConnectorError::Schema(m) if m.contains("1101") && m.contains("reading")), "{schema}");
    let duplicate = session
        .run("INSERT INTO [Items] ([ID]) VALUES (?)", vec![(VkType::Long8, Cell::I64(1))], 10, "writing")
        .await
        .unwrap_err();
    assert!(matches!(&duplicate, ConnectorError::Data(m) if m.contains("1204")), "{duplicate}");
    assert!(session.usable(), "server errors leave the stream in step");
    let answer =
        session.run("DELETE FROM [Items] WHERE [ID] > ?", vec![(VkType::Long8, Cell::I64(3))], 10, "deleting").await;
    assert_eq!(answer.unwrap(), Answer::Count(2));

    session.close().await;
    let stats = emulator.stats();
    assert_eq!((stats.logouts, stats.open_sessions), (1, 0));
    open(port, "secret").await.unwrap().close().await;
}

/// A connection cut in the middle of a result is a `Connection` error, and the session is
/// not used again (the stream cannot be resynchronised).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_given_up() {
    let (_dir, path, emulator) = setup(SqlSettings::default());
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "WITH RECURSIVE c(x) AS (SELECT 100 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
         INSERT INTO Items (ID, name) SELECT x, 'name ' || x FROM c;",
    )
    .unwrap();
    let proxy = proxy::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], emulator.port())));
    let mut session = open(proxy.port(), "secret").await.unwrap();
    proxy.cut_every(Some(50_000));
    let error = session.run("SELECT [ID], [name] FROM [Items]", vec![], 10_000, "reading").await.unwrap_err();
    assert!(matches!(error, ConnectorError::Connection { .. }), "{error}");
    assert!(!session.usable());
    let again = session.run("SELECT 1", vec![], 1, "reading").await.unwrap_err();
    assert!(matches!(again, ConnectorError::Connection { .. }), "{again}");
    proxy.cut_every(None);
    // The server ends the abandoned session; a new one reads everything.
    let mut fresh = open(proxy.port(), "secret").await.unwrap();
    let Answer::Rows { rows, .. } = fresh.run("SELECT [ID] FROM [Items]", vec![], 10_000, "reading").await.unwrap()
    else {
        panic!()
    };
    assert_eq!(rows.len(), 5 + 19_901);
}

/// A table's schema from the emulator's system tables, and db-sync values written with
/// bound parameters and read back through the protocol unchanged (checked in the file too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_and_values_through_the_protocol() {
    use db_sync::connector::fourd_sql::values::{self, COLUMNS_SQL, KEY_SQL, SqlType, quote};
    use db_sync::model::{ColumnType, Value};
    let (_dir, path, emulator) = setup(SqlSettings::default());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE [All Types] (k INT64 PRIMARY KEY, b BOOLEAN, s SMALLINT, i INT, r REAL, d TIMESTAMP,
                        t DURATION, v VARCHAR(20), u UUID, x BLOB, p PICTURE NOT NULL DEFAULT x'')",
        )
        .unwrap();
    let mut session = open(emulator.port(), "secret").await.unwrap();
    let name = || vec![(VkType::String, text("All Types"))];
    let Answer::Rows { rows: columns, .. } = session.run(COLUMNS_SQL, name(), 100, "describing").await.unwrap() else {
        panic!()
    };
    let Answer::Rows { rows: key, .. } = session.run(KEY_SQL, name(), 100, "describing").await.unwrap() else {
        panic!()
    };
    let (schema, types, left_out) = values::schema_of("All Types", &columns, &key).unwrap().unwrap();
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["k", "b", "s", "i", "r", "d", "t", "v", "u", "x"]);
    assert_eq!(schema.unique_keys, vec![vec!["k".to_string()]]);
    assert_eq!(left_out.len(), 1, "the picture is left out: {left_out:?}");
    assert_eq!(types["t"], SqlType::Time);
    assert_eq!(schema.column("u").unwrap().column_type, ColumnType::Text);
    assert!(schema.column("u").unwrap().storage.uuid);

    let row = [
        Value::Int(i64::MAX),
        Value::Bool(false),
        Value::Int(-7),
        Value::Int(123_456),
        Value::Float(5e-324),
        Value::Text("1970-01-01".into()),
        Value::Text("100:00:00.250".into()),
        Value::Text("naïve 😀".into()),
        Value::Text("01234567-89ab-cdef-0123-456789abcdef".into()),
        Value::Bytes(vec![0, 255]),
    ];
    let params: Vec<(VkType, Cell)> =
        names.iter().zip(&row).map(|(n, v)| values::write(v, types[*n]).unwrap()).collect();
    let list = names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(", ");
    let marks = vec!["?"; names.len()].join(", ");
    let insert = format!("INSERT INTO {} ({list}) VALUES ({marks})", quote("All Types"));
    assert_eq!(session.run(&insert, params, 1, "writing").await.unwrap(), Answer::Count(1));
    let select = format!("SELECT {list} FROM {}", quote("All Types"));
    let Answer::Rows { rows, .. } = session.run(&select, vec![], 10, "reading").await.unwrap() else { panic!() };
    let back: Vec<Value> = names.iter().zip(&rows[0]).map(|(n, c)| values::read(c, types[*n]).unwrap()).collect();
    assert_eq!(back.len(), row.len());
    for (got, want) in back.iter().zip(&row) {
        match (got, want) {
            (Value::Float(a), Value::Float(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            _ => assert_eq!(got, want),
        }
    }
    // The file holds 4D's forms: 32 hex digits, milliseconds, the date as text.
    let stored: (String, i64, String) = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT u, t, d FROM [All Types]", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(stored, ("0123456789ABCDEF0123456789ABCDEF".to_string(), 360_000_250, "1970-01-01".to_string()));
    session.close().await;
}

const FOURD_TABLE: &str =
    "CREATE TABLE Items (ID INT64 PRIMARY KEY, name VARCHAR(40), qty INT, price REAL, born TIMESTAMP,
                             span DURATION, code UUID TEXT, ok BOOLEAN, stamp INT64)";
const SQLITE_TABLE: &str = "CREATE TABLE Items (ID INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, born TEXT,
                             span TEXT, code TEXT, ok INTEGER, stamp INTEGER)";
const PASSWORD: &str = "pw-4d-sql";

/// Rows `from..=to` in the 4D file's forms (durations in milliseconds, UUIDs as 32 hex digits).
fn fill_fourd(conn: &rusqlite::Connection, from: i64, to: i64) {
    conn.execute_batch(&format!(
        "WITH RECURSIVE c(x) AS (SELECT {from} UNION ALL SELECT x + 1 FROM c WHERE x < {to})
         INSERT INTO Items SELECT x, CASE WHEN x % 11 = 0 THEN NULL ELSE 'näme ' || x END, x % 1000, x * 0.1,
           CASE WHEN x % 13 = 0 THEN NULL ELSE date('2000-01-01', '+' || (x % 5000) || ' days') END,
           x * 1001, printf('%032X', x * 7919), x % 2, x FROM c;"
    ))
    .unwrap();
}

/// `Items` of either file as text rows, 4D's storage forms converted by the test's own code.
fn canonical(path: &std::path::Path, fourd: bool) -> Vec<Vec<String>> {
    use rusqlite::types::Value as V;
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt =
        conn.prepare("SELECT ID, name, qty, price, born, span, code, ok, stamp FROM Items ORDER BY ID").unwrap();
    stmt.query_map([], |r| {
        (0..9)
            .map(|i| {
                Ok(match (i, r.get::<_, V>(i)?) {
                    (_, V::Null) => "NULL".to_string(),
                    (5, V::Integer(ms)) if fourd => {
                        format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
                    }
                    (6, V::Text(hex)) if fourd => {
                        let h = hex.to_ascii_lowercase();
                        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
                    }
                    (3, V::Real(f)) => format!("{:x}", f.to_bits()),
                    (_, V::Integer(n)) => n.to_string(),
                    (_, V::Text(t)) => t,
                    (_, other) => format!("{other:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Equal row lists, or the first row that differs.
fn assert_same(a: &[Vec<String>], b: &[Vec<String>], what: &str) {
    if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
        panic!("{what}: first differing row:\n  {x:?}\n  {y:?}");
    }
    assert_eq!(a.len(), b.len(), "{what}: row counts differ");
}

fn sql_config(ws: &common::Workspace, source: &str, target: &str, extra: &str) {
    ws.config(&format!(
        r#"{{"source": {source}, "target": {target},
             "tables": [{{"name": "Items", "primary_key_field": "ID", "modify_id_field": "stamp"}}],
             "binary_search_min_table_size": 1000, "binary_search_read_batch": 20 {extra}}}"#
    ));
}

fn fourd_sql(port: u16) -> String {
    format!(
        r#"{{"type": "4d", "protocol": "sql", "host": "127.0.0.1", "port": {port}, "user": "sync",
             "password": "${{FOURD_PASSWORD}}", "retry_count": 2, "retry_delay": 50, "reconnect_delay": "100ms",
             "timeout": 10}}"#
    )
}

fn run_sync(ws: &common::Workspace) -> String {
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD), ("DB_SYNC_LOG", "info")]);
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "db-sync run:\n{all}");
    all
}

/// `db-sync run` from 4D (SQL) into SQLite and back: a full copy, then deletes, updates and
/// inserts found by the binary search and the changed step, then incremental by the modify
/// ID; SQLite into an empty 4D table and a second run that changes nothing; every result
/// compared row by row with both files read directly.
#[test]
fn run_both_ways_through_the_sql_server() {
    let ws = common::Workspace::new();
    let fourd = ws.db("fourd.sqlite", FOURD_TABLE);
    fill_fourd(&fourd, 1, 5000);
    ws.db("target.sqlite", SQLITE_TABLE);
    let settings =
        SqlSettings { users: vec![("sync".into(), PASSWORD.into())], max_sessions: 4, ..SqlSettings::default() };
    let emulator = SqlEmulator::start(ws.path("fourd.sqlite"), settings.clone()).unwrap();
    let target = r#"{"type": "sqlite", "path": "target.sqlite"}"#;
    sql_config(&ws, &fourd_sql(emulator.port()), target, "");
    run_sync(&ws);
    let same = |what: &str| {
        assert_same(&canonical(&ws.path("fourd.sqlite"), true), &canonical(&ws.path("target.sqlite"), false), what);
    };
    same("4D → SQLite, full copy");

    fourd
        .execute_batch(
            "DELETE FROM Items WHERE ID IN (5, 777, 1500, 1501, 2999);
             UPDATE Items SET name = 'changed', stamp = stamp + 10000 WHERE ID IN (10, 2000);",
        )
        .unwrap();
    let log = run_sync(&ws);
    assert!(log.contains("using binary search for deletes"), "{log}");
    // The 4D default fan-out: 5000 rows reach 20-row ranges in a few levels (halving: 8).
    let depth: u32 = log.split("binarySearchMaxDepthAll=").nth(1).unwrap()[..1].parse().unwrap();
    assert!((1..=4).contains(&depth), "depth {depth}: {log}");
    same("4D → SQLite, deletes and updates");

    fill_fourd(&fourd, 5001, 5010);
    fourd.execute_batch("UPDATE Items SET qty = -1, stamp = 50000 WHERE ID = 42").unwrap();
    let log = {
        sql_config(&ws, &fourd_sql(emulator.port()), target, r#", "trust_modify_id": true"#);
        run_sync(&ws)
    };
    assert!(log.contains("recordCountAllAdded=10"), "{log}");
    same("4D → SQLite, incremental");
    assert_eq!(emulator.stats().open_sessions, 0, "every run logs out");

    // SQLite → an empty 4D table.
    let back = common::Workspace::new();
    back.db("fourd.sqlite", FOURD_TABLE);
    std::fs::copy(ws.path("target.sqlite"), back.path("source.sqlite")).unwrap();
    let into = SqlEmulator::start(back.path("fourd.sqlite"), settings).unwrap();
    sql_config(&back, r#"{"type": "sqlite", "path": "source.sqlite"}"#, &fourd_sql(into.port()), "");
    run_sync(&back);
    let same_back = |what: &str| {
        assert_same(&canonical(&back.path("source.sqlite"), false), &canonical(&back.path("fourd.sqlite"), true), what);
    };
    same_back("SQLite → 4D");
    let source = rusqlite::Connection::open(back.path("source.sqlite")).unwrap();
    source
        .execute_batch(
            "DELETE FROM Items WHERE ID IN (100, 2500); UPDATE Items SET span = '23:59:59.999', price = 0.3, stamp = 99999 WHERE ID = 7;",
        )
        .unwrap();
    let log = run_sync(&back);
    assert!(log.contains("recordCountAllDeleted=2"), "{log}");
    same_back("SQLite → 4D, changes");
    let log = run_sync(&back);
    assert!(log.contains("recordCountAllModified=0") && log.contains("recordCountAllAdded=0"), "{log}");

    // A value 4D's Time cannot take from this text (hours past 24 are not read back): a data
    // error naming the row, and the target's row stays as it was (it is no extra).
    source.execute_batch("UPDATE Items SET span = '25:00:00.001', stamp = 123456 WHERE ID = 8").unwrap();
    let out = back.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    let all = common::text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("row 8 cannot be converted") && all.contains("duration outside a day"), "{all}");
    let kept: i64 = rusqlite::Connection::open(back.path("fourd.sqlite"))
        .unwrap()
        .query_row("SELECT span FROM Items WHERE ID = 8", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 8008, "the target row keeps its old value");
    let counts = |p: &std::path::Path| {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM Items", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(counts(&back.path("fourd.sqlite")), counts(&back.path("source.sqlite")), "nothing deleted in its place");
    assert_eq!(into.stats().open_sessions, 0);
}

/// A key db-sync cannot use (a REAL) is refused before anything is read or written, naming
/// the key; a wrong password is one clear error without the password.
#[test]
fn refusals_are_clear() {
    let ws = common::Workspace::new();
    let fourd = ws.db("fourd.sqlite", "CREATE TABLE Items (ID REAL PRIMARY KEY, stamp INT64)");
    fourd.execute_batch("INSERT INTO Items VALUES (1.5, 1), (2.5, 2)").unwrap();
    ws.db("target.sqlite", "CREATE TABLE Items (ID REAL PRIMARY KEY, stamp INTEGER)");
    let emulator = SqlEmulator::start(
        ws.path("fourd.sqlite"),
        SqlSettings { users: vec![("sync".into(), PASSWORD.into())], max_sessions: 2, ..SqlSettings::default() },
    )
    .unwrap();
    sql_config(&ws, &fourd_sql(emulator.port()), r#"{"type": "sqlite", "path": "target.sqlite"}"#, "");
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    let all = common::text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("key column `ID` (REAL)") && all.contains("use a key of"), "{all}");
    let target = rusqlite::Connection::open(ws.path("target.sqlite")).unwrap();
    assert_eq!(target.query_row("SELECT count(*) FROM Items", [], |r| r.get::<_, i64>(0)).unwrap(), 0);

    // Nor is a target table created for it.
    drop(target);
    std::fs::remove_file(ws.path("target.sqlite")).unwrap();
    rusqlite::Connection::open(ws.path("target.sqlite")).unwrap();
    sql_config(
        &ws,
        &fourd_sql(emulator.port()),
        r#"{"type": "sqlite", "path": "target.sqlite"}"#,
        r#", "create_missing_tables": true"#,
    );
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    assert_ne!(out.status.code(), Some(0), "{}", common::text(&out));
    let tables: i64 = rusqlite::Connection::open(ws.path("target.sqlite"))
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0, "no table created for a refused entry");

    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", "wrong-pw")]);
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("refused the login of user `sync`") && !all.contains("wrong-pw"), "{all}");
}

const FOURD_NAMES: &str = "CREATE TABLE Names (code VARCHAR(20) PRIMARY KEY, label VARCHAR(40), stamp INT64)";
const SQLITE_NAMES: &str = "CREATE TABLE Names (code TEXT PRIMARY KEY, label TEXT, stamp INTEGER)";

/// Rows `from..=to` of `Names`: keys whose byte order and linguistic order differ
/// (`B1` < `a2` < `b3` < `É4` by bytes; 4D sorts `a2`, `B1`, `b3`, `É4`).
fn fill_names(conn: &rusqlite::Connection, from: i64, to: i64) {
    conn.execute_batch(&format!(
        "WITH RECURSIVE c(x) AS (SELECT {from} UNION ALL SELECT x + 1 FROM c WHERE x < {to})
         INSERT INTO Names SELECT CASE x % 4 WHEN 0 THEN 'a' WHEN 1 THEN 'B' WHEN 2 THEN 'b' ELSE 'É' END || x,
           'label ' || x, x FROM c;"
    ))
    .unwrap();
}

/// `Names` of a file, ordered by key bytes.
fn names(path: &std::path::Path) -> Vec<(String, Option<String>, Option<i64>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT code, label, stamp FROM Names ORDER BY CAST(code AS BLOB)").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// The same `Names` in both files, or the first row that differs.
fn same_names(a: &std::path::Path, b: &std::path::Path, what: &str) {
    let text = |p| names(p).into_iter().map(|r| vec![r.0, format!("{:?}", r.1), format!("{:?}", r.2)]).collect();
    let (a, b): (Vec<Vec<String>>, Vec<Vec<String>>) = (text(a), text(b));
    assert_same(&a, &b, what);
}

fn names_config(ws: &common::Workspace, source: &str, target: &str, extra: &str) {
    ws.config(&format!(
        r#"{{"source": {source}, "target": {target},
             "tables": [{{"name": "Names", "primary_key_field": "code", "modify_id_field": "stamp"}}],
             "binary_search_min_table_size": 1000, "binary_search_read_batch": 20 {extra}}}"#
    ));
}

/// Text keys, which 4D orders linguistically (the emulator too): 4D → SQLite with a full
/// copy, deletes found by the binary search, updates and incremental reads with shared
/// modify IDs; SQLite → 4D with inserts, updates and deletes and a no-op second run; each
/// compared with both files read directly.
#[test]
fn text_keys_both_ways() {
    let ws = common::Workspace::new();
    let fourd = ws.db("fourd.sqlite", FOURD_NAMES);
    fill_names(&fourd, 1, 4000);
    ws.db("target.sqlite", SQLITE_NAMES);
    let settings = SqlSettings { users: vec![("sync".into(), PASSWORD.into())], ..SqlSettings::default() };
    let emulator = SqlEmulator::start(ws.path("fourd.sqlite"), settings.clone()).unwrap();
    let target = r#"{"type": "sqlite", "path": "target.sqlite"}"#;
    names_config(&ws, &fourd_sql(emulator.port()), target, "");
    run_sync(&ws);
    let same = |what: &str| same_names(&ws.path("fourd.sqlite"), &ws.path("target.sqlite"), what);
    same("4D → SQLite, full copy");

    fourd
        .execute_batch(
            "DELETE FROM Names WHERE code IN ('B5', 'a8', 'b2002', 'É3999', 'a1000');
             UPDATE Names SET label = 'changed', stamp = 80000 WHERE code IN ('b10', 'B9', 'É7');",
        )
        .unwrap();
    let log = run_sync(&ws);
    assert!(log.contains("using binary search for deletes"), "{log}");
    assert!(log.contains("recordCountAllDeleted=5"), "{log}");
    same("4D → SQLite, deletes and updates");

    // Incremental: new rows and changes sharing one modify ID, read in pages of 2.
    fourd
        .execute_batch(
            "INSERT INTO Names VALUES ('zz', 'new', 90000), ('ZZ', 'new', 90000), ('Ä', 'new', 90000);
             UPDATE Names SET label = 'again', stamp = 90000 WHERE code IN ('a4', 'B1', 'É3');",
        )
        .unwrap();
    names_config(&ws, &fourd_sql(emulator.port()), target, r#", "trust_modify_id": true, "batch_size": 2"#);
    let log = run_sync(&ws);
    assert!(log.contains("recordCountAllAdded=3"), "{log}");
    same("4D → SQLite, incremental");

    // SQLite → an empty 4D table, then changes.
    let back = common::Workspace::new();
    back.db("fourd.sqlite", FOURD_NAMES);
    std::fs::copy(ws.path("target.sqlite"), back.path("source.sqlite")).unwrap();
    let into = SqlEmulator::start(back.path("fourd.sqlite"), settings).unwrap();
    names_config(&back, r#"{"type": "sqlite", "path": "source.sqlite"}"#, &fourd_sql(into.port()), "");
    run_sync(&back);
    let same_back = |what: &str| same_names(&back.path("source.sqlite"), &back.path("fourd.sqlite"), what);
    same_back("SQLite → 4D");
    rusqlite::Connection::open(back.path("source.sqlite"))
        .unwrap()
        .execute_batch(
            "DELETE FROM Names WHERE code IN ('a12', 'B13', 'zz');
             UPDATE Names SET label = 'from sqlite', stamp = 95000 WHERE code IN ('b14', 'ZZ');
             INSERT INTO Names VALUES ('ab', 'x', 1), ('AB', 'y', 1), ('e', 'z', 1);",
        )
        .unwrap();
    let log = run_sync(&back);
    assert!(log.contains("recordCountAllDeleted=3") && log.contains("recordCountAllAdded=3"), "{log}");
    same_back("SQLite → 4D, changes");
    let log = run_sync(&back);
    assert!(log.contains("recordCountAllModified=0") && log.contains("recordCountAllAdded=0"), "{log}");
}

/// A UUID key (32 hex digits in 4D, dashed lower case in db-sync): 4D → SQLite copies and
/// finds a deleted row; a key 4D lists but cannot find by itself (the emulator's file holding
/// it in lower case) stops the read with an error naming it, never a row silently missing.
#[test]
fn uuid_keys() {
    let ws = common::Workspace::new();
    let fourd = ws.db("fourd.sqlite", "CREATE TABLE Tokens (id UUID TEXT PRIMARY KEY, label VARCHAR(20), stamp INT64)");
    fourd
        .execute_batch(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500)
             INSERT INTO Tokens SELECT printf('%032X', x * 104729 * 7919), 'token ' || x, x FROM c;",
        )
        .unwrap();
    ws.db("target.sqlite", "CREATE TABLE Tokens (id TEXT PRIMARY KEY, label TEXT, stamp INTEGER)");
    let emulator = SqlEmulator::start(
        ws.path("fourd.sqlite"),
        SqlSettings { users: vec![("sync".into(), PASSWORD.into())], ..SqlSettings::default() },
    )
    .unwrap();
    ws.config(&format!(
        r#"{{"source": {}, "target": {{"type": "sqlite", "path": "target.sqlite"}},
             "tables": [{{"name": "Tokens", "primary_key_field": "id"}}],
             "binary_search_min_table_size": 1000, "binary_search_read_batch": 20}}"#,
        fourd_sql(emulator.port())
    ));
    let rows = |path: &std::path::Path, fourd: bool| -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT id, label FROM Tokens").unwrap();
        let mut rows: Vec<(String, String)> = stmt
            .query_map([], |r| {
                let id: String = r.get(0)?;
                let id = if fourd {
                    let h = id.to_ascii_lowercase();
                    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
                } else {
                    id
                };
                Ok((id, r.get(1)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        rows
    };
    run_sync(&ws);
    assert_eq!(rows(&ws.path("fourd.sqlite"), true), rows(&ws.path("target.sqlite"), false), "copy");
    fourd.execute_batch("DELETE FROM Tokens WHERE stamp IN (3, 700, 1499)").unwrap();
    let log = run_sync(&ws);
    assert!(log.contains("recordCountAllDeleted=3"), "{log}");
    assert_eq!(rows(&ws.path("fourd.sqlite"), true), rows(&ws.path("target.sqlite"), false), "deletes");

    fourd.execute_batch("UPDATE Tokens SET id = lower(id), label = 'moved' WHERE stamp = 10").unwrap();
    fourd.execute_batch("UPDATE Tokens SET label = 'changed' WHERE stamp = 11").unwrap();
    ws.config(&format!(
        r#"{{"source": {}, "target": {{"type": "sqlite", "path": "target.sqlite"}},
             "tables": [{{"name": "Tokens", "primary_key_field": "id"}}], "binary_search_min_table_size": 1000000}}"#,
        fourd_sql(emulator.port())
    ));
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    let all = common::text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    let id = rows(&ws.path("fourd.sqlite"), true).into_iter().find(|r| r.1 == "moved").unwrap().0;
    assert!(all.contains("found none for") && all.contains(&id), "{all}");
    let target = rows(&ws.path("target.sqlite"), false);
    assert!(target.iter().any(|r| r.0 == id), "the target keeps the row: {target:?}");
}

/// Syncs `source.sqlite`'s Names into the emulated 4D of `ws` with `extra` settings, expects
/// the run to finish with errors (exit 1), and returns its output.
fn into_fourd_with_errors(ws: &common::Workspace, emulator: &SqlEmulator, extra: &str) -> String {
    names_config(ws, r#"{"type": "sqlite", "path": "source.sqlite"}"#, &fourd_sql(emulator.port()), extra);
    let out = ws.run_env(&["run", "--progress", "off"], &[("FOURD_PASSWORD", PASSWORD)]);
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "completed with errors: {all}");
    all
}

/// A 4D database set to compare text ignoring case (the emulator's `fold_text`): reading
/// keeps `abc` and `ABC` apart (rows are matched byte for byte), and a write or delete of a
/// key 4D would take for another is a data error naming it, while the rest still syncs.
#[test]
fn keys_a_case_insensitive_database_cannot_tell_apart() {
    let ws = common::Workspace::new();
    let fourd = ws.db("fourd.sqlite", FOURD_NAMES);
    fourd.execute_batch("INSERT INTO Names VALUES ('abc', 'lower', 1), ('ABC', 'upper', 2), ('x', 'x', 3)").unwrap();
    ws.db("target.sqlite", SQLITE_NAMES);
    let settings =
        SqlSettings { users: vec![("sync".into(), PASSWORD.into())], fold_text: true, ..SqlSettings::default() };
    let emulator = SqlEmulator::start(ws.path("fourd.sqlite"), settings.clone()).unwrap();
    names_config(&ws, &fourd_sql(emulator.port()), r#"{"type": "sqlite", "path": "target.sqlite"}"#, "");
    run_sync(&ws);
    same_names(&ws.path("fourd.sqlite"), &ws.path("target.sqlite"), "4D → SQLite");

    // Into 4D, which holds keys it cannot tell apart: `abc` and `e` are extras, but deleting
    // them would delete `ABC` and `é` too, and writing `ABC` or `é` would write the others.
    let back = common::Workspace::new();
    let into = back.db("fourd.sqlite", FOURD_NAMES);
    into.execute_batch(
        "INSERT INTO Names VALUES ('abc', 't', 1), ('ABC', 't', 1), ('e', 't', 1), ('é', 't', 1),
           ('x', 'old', 1), ('y', 'extra', 1)",
    )
    .unwrap();
    let source = back.db("source.sqlite", SQLITE_NAMES);
    source.execute_batch("INSERT INTO Names VALUES ('ABC', 'new', 2), ('é', 'new', 2), ('x', 'new', 2)").unwrap();
    let emulator = SqlEmulator::start(back.path("fourd.sqlite"), settings.clone()).unwrap();
    let all = into_fourd_with_errors(&back, &emulator, r#", "max_delete_percent": 100"#);
    assert!(all.contains("ignoring case or accents"), "{all}");
    let left: Vec<String> =
        names(&back.path("fourd.sqlite")).into_iter().map(|r| format!("{}={}", r.0, r.1.unwrap())).collect();
    assert!(!left.contains(&"y=extra".to_string()), "the extra row is deleted: {left:?}");
    assert!(left.contains(&"x=new".to_string()), "the changed row is updated: {left:?}");
    for kept in ["abc=t", "ABC=t", "e=t", "é=t"] {
        assert!(left.contains(&kept.to_string()), "{kept} is neither deleted nor overwritten: {left:?}");
    }

    // Keys 4D cannot tell apart within one batch, into an empty table: 4D's unique key refuses
    // the second of each pair, the batch is split, and that row is named; each row 4D holds
    // is the source's row of its key.
    let pairs = common::Workspace::new();
    pairs.db("fourd.sqlite", FOURD_NAMES);
    let source = pairs.db("source.sqlite", SQLITE_NAMES);
    source
        .execute_batch(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30)
             INSERT INTO Names SELECT printf('key%02dA', x), 'upper ' || x, 1 FROM c
             UNION ALL SELECT printf('key%02da', x), 'lower ' || x, 1 FROM c
             UNION ALL SELECT printf('solo%02d', x), 'solo', 1 FROM c;",
        )
        .unwrap();
    let emulator = SqlEmulator::start(pairs.path("fourd.sqlite"), settings).unwrap();
    let all = into_fourd_with_errors(&pairs, &emulator, r#", "max_error_count": 100"#);
    for x in 1..=30 {
        let named = format!("row \"key{x:02}a\" was refused");
        assert!(all.contains(&named) && all.contains(&format!("takes the key(s) \"key{x:02}A\"")), "{named}: {all}");
    }
    let held = names(&pairs.path("fourd.sqlite"));
    let expected: std::collections::HashMap<String, String> =
        names(&pairs.path("source.sqlite")).into_iter().map(|r| (r.0, r.1.unwrap())).collect();
    for (code, label, _) in &held {
        assert_eq!(expected.get(code), label.as_ref(), "4D's row {code} is the source's");
    }
    for x in 1..=30 {
        let pair = [format!("key{x:02}A"), format!("key{x:02}a")];
        assert_eq!(held.iter().filter(|r| pair.contains(&r.0)).count(), 1, "one of {pair:?}: {held:?}");
        assert!(held.iter().any(|r| r.0 == format!("solo{x:02}")), "solo{x:02} is written");
    }
}

/// The SQL server behind the fault proxy: every connection cut after 300 KB, and one
/// statement stalled past the 2 s timeout (its session is given up mid-reply, never
/// reused); both runs complete with the tables equal and report reconnections.
#[test]
fn cuts_and_a_stall_through_the_proxy() {
    let ws = common::Workspace::new();
    let fourd = ws.db("fourd.sqlite", FOURD_TABLE);
    fill_fourd(&fourd, 1, 6000);
    ws.db("target.sqlite", SQLITE_TABLE);
    let settings =
        SqlSettings { users: vec![("sync".into(), PASSWORD.into())], max_sessions: 8, ..SqlSettings::default() };
    let emulator = SqlEmulator::start(ws.path("fourd.sqlite"), settings).unwrap();
    let proxy = proxy::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], emulator.port())));
    proxy.cut_every(Some(300_000));
    let source = fourd_sql(proxy.port())
        .replace("\"timeout\": 10", "\"timeout\": 2")
        .replace("\"retry_count\": 2", "\"retry_count\": 5");
    sql_config(&ws, &source, r#"{"type": "sqlite", "path": "target.sqlite"}"#, r#", "batch_size_4d": 500"#);
    run_sync(&ws);
    ws.db("target.sqlite", "DELETE FROM Items WHERE ID % 1000 = 5");
    proxy.on_request("EXECUTE-STATEMENT", proxy::Action::Stall, 3, 1);
    run_sync(&ws);
    assert!(proxy.stats().cut() > 0, "the proxy cut connections");
    assert_eq!(proxy.stats().fired(), 1, "the stall happened");
    assert_same(&canonical(&ws.path("fourd.sqlite"), true), &canonical(&ws.path("target.sqlite"), false), "proxy");
    let mut reconnects = 0;
    for run in ["1", "2"] {
        let out = ws.run(&["show", run, "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        reconnects += json["tables"][0]["reconnects"].as_u64().unwrap();
    }
    assert!(reconnects > 0, "cuts led to reconnections");
}

/// A server with one licence: the pool (two sessions by default) keeps to the one it got
/// instead of failing on its own second login.
#[test]
fn one_licence_is_enough() {
    let ws = common::Workspace::new();
    let fourd = ws.db("fourd.sqlite", FOURD_TABLE);
    fill_fourd(&fourd, 1, 5000);
    ws.db("target.sqlite", SQLITE_TABLE);
    let settings =
        SqlSettings { users: vec![("sync".into(), PASSWORD.into())], max_sessions: 1, ..SqlSettings::default() };
    let emulator = SqlEmulator::start(ws.path("fourd.sqlite"), settings).unwrap();
    let source = fourd_sql(emulator.port()).replace("\"retry_count\": 2", "\"retry_count\": 0");
    sql_config(&ws, &source, r#"{"type": "sqlite", "path": "target.sqlite"}"#, "");
    run_sync(&ws);
    fourd.execute_batch("DELETE FROM Items WHERE ID IN (10, 2000, 4000)").unwrap();
    run_sync(&ws);
    assert_same(
        &canonical(&ws.path("fourd.sqlite"), true),
        &canonical(&ws.path("target.sqlite"), false),
        "one licence",
    );
    assert_eq!(emulator.stats().peak_sessions, 1);
}
