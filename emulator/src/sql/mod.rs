//! An emulator of 4D's SQL server (its TCP network protocol, port 19812 on a real server) on
//! loopback, backed by a SQLite file, for db-sync's tests. db-sync's `docs/4d-sql.md` is the
//! reference (from 4D's protocol note and five independent clients); where it marks a point
//! **Assumption**, the emulator does what it says there.
//!
//! Each connection is a session with its own SQLite connection (a 4D SQL connection is a
//! process of its own). Statements are 4D SQL run by SQLite: `[bracketed]` names and `?`
//! parameters are the same in both; `OFFSET n LIMIT m` (4D's order) is turned around; `START`
//! (`START TRANSACTION`), `COMMIT` and `ROLLBACK` nest as savepoints; the system tables
//! `_USER_TABLES`, `_USER_COLUMNS`, `_USER_INDEXES`, `_USER_CONSTRAINTS` and
//! `_USER_CONS_COLUMNS` are views over SQLite's catalog. A column's declared type names its 4D
//! type (first word: `INT`, `INT64`, `SMALLINT`, `REAL`, `VARCHAR`, `TEXT`, `BOOLEAN`,
//! `TIMESTAMP`, `DURATION`, `BLOB`, `PICTURE`, `UUID`, or the REST emulator's `long`, `long64`,
//! `word`, `number`, `string`, `bool`, `date`, `duration`, `blob`, `image`, `uuid`).
//!
//! Text is ordered as 4D's SQL engine orders it, linguistically, not by bytes (§9.7): an
//! `ORDER BY` on a text column sorts by the text with case and accents folded, ties by bytes
//! (so `a` < `B` < `b`, where bytes say `B` < `a`). Comparisons are case-sensitive, 4D's
//! default; [`SqlSettings::fold_text`] makes `=` and `IN` on text ignore case and accents, as
//! a database with "Case-sensitive String Comparison" unchecked does.
//! No column is flagged updateable, so rows carry no record ids (§4.5 allows both).

mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::types::{Value as SqlValue, ValueRef};
use tokio::io::{AsyncWriteExt, BufReader};

use wire::{Request, Val};

/// How the emulated SQL server behaves.
#[derive(Clone, Debug)]
pub struct SqlSettings {
    /// Users and passwords accepted by `LOGIN`.
    pub users: Vec<(String, String)>,
    /// Sessions logged in at once; one more is refused with -10514 (§3.2, Assumption).
    pub max_sessions: usize,
    /// `=` and `IN` on text columns ignore case and accents (4D's database option
    /// "Case-sensitive String Comparison" unchecked, §9.7). Default off, as in 4D.
    pub fold_text: bool,
}

impl Default for SqlSettings {
    fn default() -> Self {
        SqlSettings { users: vec![("sync".into(), "secret".into())], max_sessions: 3, fold_text: false }
    }
}

/// Counters since the start or the last [`SqlEmulator::reset_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SqlStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Requests read (every command).
    pub requests: u64,
    /// `EXECUTE-STATEMENT` requests.
    pub statements: u64,
    /// `FETCH-RESULT` requests.
    pub fetches: u64,
    /// Bytes of replies sent.
    pub bytes_out: u64,
    pub logins: u64,
    pub refused_logins: u64,
    pub logouts: u64,
    /// Sessions logged in now, and the most at once.
    pub open_sessions: usize,
    pub peak_sessions: usize,
}

struct Shared {
    path: PathBuf,
    settings: SqlSettings,
    stats: Mutex<SqlStats>,
    next_session: Mutex<i64>,
    /// Microseconds to wait before each reply (a slow link, for benchmarks).
    reply_delay_us: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, SqlStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running SQL server emulator. Dropping it stops the server.
pub struct SqlEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SqlEmulator {
    /// Serves the SQLite file (which must exist) on `127.0.0.1` on a free port, on a thread
    /// with its own tokio runtime.
    pub fn start(db: impl AsRef<Path>, settings: SqlSettings) -> std::io::Result<SqlEmulator> {
        Self::start_on(db, settings, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// As [`SqlEmulator::start`], on the given address.
    pub fn start_on(db: impl AsRef<Path>, settings: SqlSettings, addr: SocketAddr) -> std::io::Result<SqlEmulator> {
        let path = db.as_ref().to_path_buf();
        // Fails here, not in the first session, when the file is not a database.
        open(&path).map_err(std::io::Error::other)?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            path,
            settings,
            stats: Mutex::new(SqlStats::default()),
            next_session: Mutex::new(1),
            reply_delay_us: std::sync::atomic::AtomicU64::new(0),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fourd-sql-emulator")
            .enable_all()
            .build()?;
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("fourd-sql-emulator".into()).spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                let _ = stream.set_nodelay(true);
                                s.stats().connections += 1;
                                tokio::spawn(serve(stream, s.clone()));
                            }
                        }
                    }
                }
            });
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        })?;
        Ok(SqlEmulator { addr, shared, stop: Some(stop), thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits `delay` before every reply from now on (zero: off), as a distant server would.
    pub fn set_reply_delay(&self, delay: std::time::Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.reply_delay_us.store(us, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stats(&self) -> SqlStats {
        self.shared.stats().clone()
    }

    /// Zeroes the counters (sessions open now stay counted as open).
    pub fn reset_stats(&self) {
        let mut st = self.shared.stats();
        let open = st.open_sessions;
        *st = SqlStats { open_sessions: open, peak_sessions: open, ..SqlStats::default() };
    }
}

impl Drop for SqlEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    conn.create_collation("EMU_ICU", crate::fold::cmp_sort)?;
    conn.create_collation("EMU_FOLD", crate::fold::cmp_fold)?;
    Ok(conn)
}

/// A result kept for FETCH-RESULT until CLOSE-STATEMENT or LOGOUT.
struct Stored {
    /// Column names (the aliases, §4.3).
    names: Vec<String>,
    types: Vec<&'static str>,
    rows: Vec<Vec<Val>>,
}

struct Session {
    shared: Arc<Shared>,
    /// The SQLite connection of a logged-in session.
    conn: Option<rusqlite::Connection>,
    base64_text: bool,
    statements: HashMap<i64, Stored>,
    next_statement: i64,
    /// Open `START`s (savepoints).
    depth: usize,
}

impl Session {
    fn end(&mut self) {
        if let Some(conn) = self.conn.take() {
            // An open transaction is rolled back (Assumption, §8.3).
            if self.depth > 0 {
                let _ = conn.execute_batch("ROLLBACK");
            }
            self.depth = 0;
            self.statements.clear();
            let mut st = self.shared.stats();
            st.open_sessions = st.open_sessions.saturating_sub(1);
        }
    }
}

async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut session = Session {
        shared: shared.clone(),
        conn: None,
        base64_text: true,
        statements: HashMap::new(),
        next_statement: 1,
        depth: 0,
    };
    // Replies go out from their own task, each no earlier than the reply delay after its
    // request arrived: a delay on the link, so pipelined requests wait it once, together.
    let (replies, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>, bool)>();
    let writer = tokio::spawn(async move {
        while let Some((at, reply, close)) = outgoing.recv().await {
            tokio::time::sleep_until(at).await;
            if write.write_all(&reply).await.is_err() || close {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    loop {
        let request = wire::read_request(&mut read).await;
        let delay = shared.reply_delay_us.load(std::sync::atomic::Ordering::Relaxed);
        let at = tokio::time::Instant::now() + std::time::Duration::from_micros(delay);
        let (reply, close) = match request {
            Ok(None) => break,
            Ok(Some(request)) => {
                shared.stats().requests += 1;
                let close = request.command == "QUIT" && session.conn.is_none();
                (tokio::task::block_in_place(|| handle(&mut session, request)), close)
            }
            Err(bad) => (wire::error(&bad.id, bad.code, &bad.message), true),
        };
        shared.stats().bytes_out += reply.len() as u64;
        if replies.send((at, reply, close)).is_err() || close {
            break;
        }
    }
    drop(replies);
    let _ = writer.await;
    // A client that just closes the socket ends its session (Assumption, §8.3).
    session.end();
}

fn handle(s: &mut Session, r: Request) -> Vec<u8> {
    let id = r.id.as_str();
    match (r.command.as_str(), s.conn.is_some()) {
        ("LOGIN", true) => wire::error(id, 3002, "Already logged in"),
        ("LOGIN", false) => login(s, &r),
        ("QUIT", false) => wire::header(id, true, &[]),
        ("QUIT", true) => wire::error(id, 3007, "Still logged in: LOGOUT first"),
        (_, false) => wire::error(id, 3003, "Not logged in"),
        ("LOGOUT", true) => {
            s.end();
            s.shared.stats().logouts += 1;
            wire::header(id, true, &[])
        }
        ("EXECUTE-STATEMENT", true) => {
            s.shared.stats().statements += 1;
            execute(s, &r)
        }
        ("FETCH-RESULT", true) => {
            s.shared.stats().fetches += 1;
            fetch(s, &r)
        }
        ("CLOSE-STATEMENT", true) => match r.headers.get("STATEMENT-ID").and_then(|v| v.parse().ok()) {
            Some(n) if s.statements.remove(&n).is_some() => wire::header(id, true, &[]),
            _ => wire::error(id, 3005, "Invalid statement id"),
        },
        ("BULK-MODIFY" | "PREPARE-STATEMENT", true) => wire::error(id, 1203, "Functionality is not implemented"),
        (other, true) => wire::error(id, 3001, &format!("Unknown command {other}")),
    }
}

fn login(s: &mut Session, r: &Request) -> Vec<u8> {
    let id = r.id.as_str();
    let user = r.headers.get("USER-NAME").map(String::as_str).unwrap_or("");
    let password = r.headers.get("USER-PASSWORD").map(String::as_str).unwrap_or("");
    let known = s.shared.settings.users.iter().any(|(u, p)| u == user && p == password);
    if !known {
        s.shared.stats().refused_logins += 1;
        return wire::error(id, -10515, "Invalid user name or password");
    }
    {
        let mut st = s.shared.stats();
        if st.open_sessions >= s.shared.settings.max_sessions {
            st.refused_logins += 1;
            return wire::error(id, -10514, "Maximum number of concurrent users for your license has been reached");
        }
        st.open_sessions += 1;
        st.peak_sessions = st.peak_sessions.max(st.open_sessions);
        st.logins += 1;
    }
    match open(&s.shared.path).and_then(|c| install_catalog(&c).map(|()| c)) {
        Ok(conn) => s.conn = Some(conn),
        Err(e) => {
            s.shared.stats().open_sessions -= 1;
            return wire::error(id, 1401, &format!("Cannot open the database: {e}"));
        }
    }
    s.base64_text = r.headers.get("REPLY-WITH-BASE64-TEXT").is_none_or(|v| !v.eq_ignore_ascii_case("N"));
    let session = {
        let mut next = s.shared.next_session.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        *next - 1
    };
    wire::header(id, true, &[("Session-ID", session.to_string())])
}

/// The 4D type of a declared column type: its wire type and `_USER_COLUMNS.DATA_TYPE` (§6.3,
/// §9.6).
fn fourd_type(decl: &str) -> Option<(&'static str, i64)> {
    let word = decl.split(|c: char| !c.is_ascii_alphanumeric()).next()?.to_ascii_lowercase();
    Some(match word.as_str() {
        "boolean" | "bool" | "bit" => ("VK_BOOLEAN", 1),
        "smallint" | "int16" | "word" | "byte" => ("VK_WORD", 3),
        "int" | "int32" | "integer" | "long" => ("VK_LONG", 4),
        "int64" | "long64" | "bigint" | "numeric" => ("VK_LONG8", 5),
        "real" | "double" | "number" | "float" => ("VK_REAL", 6),
        "timestamp" | "date" => ("VK_TIMESTAMP", 8),
        "duration" | "interval" | "time" => ("VK_DURATION", 9),
        "varchar" | "alpha" | "string" | "char" => ("VK_STRING", 10),
        "text" | "clob" => ("VK_STRING", 14),
        "uuid" => ("VK_STRING", 13),
        "picture" | "image" => ("VK_IMAGE", 12),
        "blob" => ("VK_BLOB", 18),
        _ => return None,
    })
}

/// The system tables (§9.6) as temporary views over SQLite's catalog.
fn install_catalog(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "emu_4d_type",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let decl: Option<String> = ctx.get(0)?;
            Ok(decl.as_deref().and_then(fourd_type).map(|(_, code)| code))
        },
    )?;
    let user_tables =
        "m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name NOT LIKE '\\_\\_emu%' ESCAPE '\\'";
    conn.execute_batch(&format!(
        "CREATE TEMP VIEW _USER_TABLES AS
           SELECT m.name AS TABLE_NAME, 0 AS TEMPORARY, m.rowid AS TABLE_ID, 0 AS SCHEMA_ID, 1 AS REST_AVAILABLE, 0 AS LOGGED
           FROM sqlite_master m WHERE {user_tables};
         CREATE TEMP VIEW _USER_COLUMNS AS
           SELECT m.name AS TABLE_NAME, p.name AS COLUMN_NAME, emu_4d_type(p.type) AS DATA_TYPE, 0 AS DATA_LENGTH,
                  NOT p.\"notnull\" AS NULLABLE, m.rowid AS TABLE_ID, p.cid + 1 AS COLUMN_ID
           FROM sqlite_master m, pragma_table_info(m.name) p WHERE {user_tables} AND emu_4d_type(p.type) IS NOT NULL
             AND p.name NOT IN ('__STAMP', '__EMU_STAMP');
         CREATE TEMP VIEW _USER_INDEXES AS
           SELECT i.name AS INDEX_ID, i.name AS INDEX_NAME, 1 AS INDEX_TYPE, 0 AS KEYWORD, m.name AS TABLE_NAME,
                  i.\"unique\" AS UNIQUENESS, m.rowid AS TABLE_ID
           FROM sqlite_master m, pragma_index_list(m.name) i WHERE {user_tables};
         CREATE TEMP VIEW _USER_CONSTRAINTS AS
           SELECT 'PK_' || m.name AS CONSTRAINT_ID, 'PK_' || m.name AS CONSTRAINT_NAME, 'P' AS CONSTRAINT_TYPE,
                  m.name AS TABLE_NAME, m.rowid AS TABLE_ID
           FROM sqlite_master m WHERE {user_tables} AND EXISTS (SELECT 1 FROM pragma_table_info(m.name) p WHERE p.pk > 0);
         CREATE TEMP VIEW _USER_CONS_COLUMNS AS
           SELECT 'PK_' || m.name AS CONSTRAINT_ID, 'PK_' || m.name AS CONSTRAINT_NAME, m.name AS TABLE_NAME,
                  m.rowid AS TABLE_ID, p.name AS COLUMN_NAME, p.cid + 1 AS COLUMN_ID, p.pk AS COLUMN_POSITION
           FROM sqlite_master m, pragma_table_info(m.name) p WHERE {user_tables} AND p.pk > 0;"
    ))
}

/// What a statement is to SQLite.
enum Stmt {
    Sql(String),
    Start,
    Commit,
    Rollback,
}

/// 4D SQL to SQLite: transactions as savepoints, `OFFSET n LIMIT m` as `LIMIT m OFFSET n`.
fn translate(sql: &str) -> Stmt {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let words: Vec<String> = trimmed.split_whitespace().map(str::to_ascii_uppercase).collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["START"] | ["START", "TRANSACTION"] => return Stmt::Start,
        ["COMMIT"] | ["COMMIT", "TRANSACTION"] => return Stmt::Commit,
        ["ROLLBACK"] | ["ROLLBACK", "TRANSACTION"] => return Stmt::Rollback,
        _ => {}
    }
    // `… OFFSET x LIMIT y` at the end (outside quotes: the last four words).
    let parts: Vec<&str> = trimmed.split_whitespace().collect();
    let n = parts.len();
    if n >= 4 && parts[n - 4].eq_ignore_ascii_case("OFFSET") && parts[n - 2].eq_ignore_ascii_case("LIMIT") {
        let head = parts[..n - 4].join(" ");
        return Stmt::Sql(format!("{head} LIMIT {} OFFSET {}", parts[n - 1], parts[n - 3]));
    }
    Stmt::Sql(trimmed.to_string())
}

/// 4D's text semantics on a statement over one table (`FROM [T]`): every `ORDER BY` term on
/// a text column sorts linguistically (`COLLATE EMU_ICU`); with `fold`, `[c] = ?` and
/// `[c] IN (` on a text column compare folded (`COLLATE EMU_FOLD`).
fn text_semantics(conn: &rusqlite::Connection, sql: &str, fold: bool) -> String {
    let Some(table) = bracketed_after(sql, " FROM ") else { return sql.to_string() };
    let Ok(mut st) = conn.prepare(&format!("PRAGMA table_info({})", quote_sqlite(&table))) else {
        return sql.to_string();
    };
    let text_columns: Vec<String> = st
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .filter(|(_, decl)| decl.as_deref().and_then(fourd_type).is_some_and(|(vk, _)| vk == "VK_STRING"))
                .map(|(name, _)| format!("[{}]", name.replace(']', "]]")))
                .collect()
        })
        .unwrap_or_default();
    let mut out = sql.to_string();
    if let Some(at) = out.to_ascii_uppercase().find(" ORDER BY ") {
        let start = at + " ORDER BY ".len();
        let upper = out[start..].to_ascii_uppercase();
        let end = [" LIMIT ", " OFFSET "].iter().filter_map(|w| upper.find(w)).min().map_or(out.len(), |e| start + e);
        let terms: Vec<String> = out[start..end]
            .split(", ")
            .map(|term| match text_columns.iter().find(|c| term.starts_with(c.as_str())) {
                Some(c) => format!("{c} COLLATE EMU_ICU{}", &term[c.len()..]),
                None => term.to_string(),
            })
            .collect();
        out = format!("{}{}{}", &out[..start], terms.join(", "), &out[end..]);
    }
    if fold {
        for c in &text_columns {
            for op in [" = ?", " IN ("] {
                out = out.replace(&format!("{c}{op}"), &format!("{c} COLLATE EMU_FOLD{op}"));
            }
        }
    }
    out
}

/// With `fold_text`, a text primary key is unique as 4D compares text: an `INSERT INTO [T]
/// ([a], …) VALUES (?, …)` whose key equals a stored one ignoring case and accents fails
/// as a duplicate (1204), as 4D's unique index would refuse it.
fn folded_unique(conn: &rusqlite::Connection, sql: &str, params: &[Val]) -> Result<(), (i64, String)> {
    let upper = sql.trim_start().to_ascii_uppercase();
    if !upper.starts_with("INSERT INTO ") {
        return Ok(());
    }
    let Some(table) = bracketed_after(sql, "INSERT INTO ") else { return Ok(()) };
    let Some(open) = sql.find('(') else { return Ok(()) };
    let Some(close) = sql[open..].find(')') else { return Ok(()) };
    let columns: Vec<String> =
        sql[open + 1..open + close].split(',').map(|c| c.trim().trim_matches(['[', ']']).to_string()).collect();
    let key: Option<(String, Option<String>)> = conn
        .query_row(
            &format!("SELECT name, type FROM pragma_table_info({}) WHERE pk = 1", quote_sqlite_text(&table)),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    let Some((key, decl)) = key else { return Ok(()) };
    if decl.as_deref().and_then(fourd_type).is_none_or(|(vk, _)| vk != "VK_STRING") {
        return Ok(());
    }
    let Some(Val::Text(value)) = columns.iter().position(|c| *c == key).and_then(|i| params.get(i)) else {
        return Ok(());
    };
    let held: Option<String> = conn
        .query_row(
            &format!(
                "SELECT {k} FROM {t} WHERE {k} COLLATE EMU_FOLD = ?1 LIMIT 1",
                k = quote_sqlite(&key),
                t = quote_sqlite(&table)
            ),
            [value],
            |r| r.get(0),
        )
        .ok();
    match held {
        Some(held) => {
            Err((1204, format!("Failed to create new record: duplicate key {value:?} (the table holds {held:?})")))
        }
        None => Ok(()),
    }
}

fn quote_sqlite_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The bracketed name after the first `word` (`[a]]b]` is `a]b`).
fn bracketed_after(sql: &str, word: &str) -> Option<String> {
    let at = sql.to_ascii_uppercase().find(word)? + word.len();
    let rest = sql[at..].strip_prefix('[')?;
    let mut name = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ']' {
            if chars.peek() == Some(&']') {
                chars.next();
            } else {
                return Some(name);
            }
        }
        name.push(c);
    }
    None
}

fn quote_sqlite(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_error(e: &rusqlite::Error) -> (i64, String) {
    let text = e.to_string();
    let code = if text.contains("no such table") {
        1101
    } else if text.contains("no such column") {
        1102
    } else if text.contains("syntax error") || text.contains("incomplete input") {
        1301
    } else if text.contains("NOT NULL constraint") {
        1134
    } else if text.contains("UNIQUE constraint") || text.contains("PRIMARY KEY") {
        1204
    } else if text.contains("parameter") || text.contains("bind") {
        1110
    } else if text.contains("locked") || text.contains("busy") {
        1221
    } else {
        1203
    };
    (code, text)
}

fn bind(v: &Val) -> SqlValue {
    match v {
        Val::Null => SqlValue::Null,
        Val::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Val::Int(i) | Val::Duration(i) => SqlValue::Integer(*i),
        Val::Real(f) => SqlValue::Real(*f),
        Val::Text(t) => SqlValue::Text(t.clone()),
        Val::Bytes(b) => SqlValue::Blob(b.clone()),
        Val::Timestamp { year, month, day, millis } => SqlValue::Text(if *millis == 0 {
            format!("{year:04}-{month:02}-{day:02}")
        } else {
            let (h, m, s, ms) = (millis / 3_600_000, millis / 60_000 % 60, millis / 1000 % 60, millis % 1000);
            format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{ms:03}")
        }),
    }
}

/// `YYYY-MM-DD[ HH:MM:SS[.mmm]]` (or `T` between) as a timestamp cell.
fn timestamp(text: &str) -> Option<Val> {
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut d = date.splitn(3, '-');
    let (year, month, day) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let millis = match time {
        None => 0,
        Some(t) => {
            let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
            let mut p = hms.splitn(3, ':');
            let (h, m, s): (u32, u32, u32) =
                (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?);
            let frac = format!("{:0<3}", &frac[..frac.len().min(3)]).parse::<u32>().ok()?;
            ((h * 60 + m) * 60 + s) * 1000 + frac
        }
    };
    Some(Val::Timestamp { year, month, day, millis })
}

/// A stored value as the column's wire type wants it.
fn value(v: ValueRef<'_>, vk: &str) -> Val {
    match (v, vk) {
        (ValueRef::Null, _) => Val::Null,
        (ValueRef::Integer(i), "VK_BOOLEAN") => Val::Bool(i != 0),
        (ValueRef::Integer(i), _) if vk != "VK_STRING" => Val::Int(i),
        (ValueRef::Integer(i), _) => Val::Text(i.to_string()),
        (ValueRef::Real(f), "VK_STRING") => Val::Text(f.to_string()),
        (ValueRef::Real(f), _) => Val::Real(f),
        (ValueRef::Text(t), "VK_TIMESTAMP") => {
            let text = String::from_utf8_lossy(t);
            timestamp(&text).unwrap_or(Val::Text(text.into_owned()))
        }
        (ValueRef::Text(t), _) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        (ValueRef::Blob(b), _) => Val::Bytes(b.to_vec()),
    }
}

fn run(s: &mut Session, sql: &str, params: &[Val]) -> Result<Option<Stored>, (i64, String)> {
    let conn = s.conn.as_ref().expect("logged in");
    let savepoint =
        |verb: &str, depth: usize| conn.execute_batch(&format!("{verb} emu_tx{depth}")).map_err(|e| sql_error(&e));
    match translate(sql) {
        Stmt::Start => {
            s.depth += 1;
            savepoint("SAVEPOINT", s.depth)?;
            Ok(None)
        }
        Stmt::Commit | Stmt::Rollback if s.depth == 0 => Err((1203, "No transaction is open".into())),
        Stmt::Commit => {
            savepoint("RELEASE", s.depth)?;
            s.depth -= 1;
            Ok(None)
        }
        Stmt::Rollback => {
            savepoint("ROLLBACK TO", s.depth)?;
            savepoint("RELEASE", s.depth)?;
            s.depth -= 1;
            Ok(None)
        }
        Stmt::Sql(text) => {
            if s.shared.settings.fold_text {
                folded_unique(conn, &text, params)?;
            }
            let text = text_semantics(conn, &text, s.shared.settings.fold_text);
            let mut st = conn.prepare(&text).map_err(|e| sql_error(&e))?;
            if st.parameter_count() != params.len() {
                return Err((
                    1110,
                    format!("{} parameters given, the statement has {}", params.len(), st.parameter_count()),
                ));
            }
            let bound: Vec<SqlValue> = params.iter().map(bind).collect();
            if st.column_count() == 0 {
                let n = st.execute(rusqlite::params_from_iter(bound.iter())).map_err(|e| sql_error(&e))?;
                return Ok(Some(Stored { names: Vec::new(), types: Vec::new(), rows: vec![vec![Val::Int(n as i64)]] }));
            }
            let names: Vec<String> = st.column_names().into_iter().map(String::from).collect();
            let declared: Vec<Option<&'static str>> =
                st.columns().iter().map(|c| c.decl_type().and_then(fourd_type).map(|(vk, _)| vk)).collect();
            let width = declared.len();
            let mut raw: Vec<Vec<SqlValue>> = Vec::new();
            let mut rows = st.query(rusqlite::params_from_iter(bound.iter())).map_err(|e| sql_error(&e))?;
            while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
                raw.push(
                    (0..width)
                        .map(|i| row.get::<_, SqlValue>(i))
                        .collect::<Result<_, _>>()
                        .map_err(|e| sql_error(&e))?,
                );
            }
            // Expressions (`COUNT(*)`, `MAX(x)`) take the type of what they hold (§6.3: the
            // emulator sends counts as VK_LONG8).
            let types: Vec<&'static str> = (0..width)
                .map(|i| {
                    declared[i].unwrap_or_else(|| match raw.iter().map(|r| &r[i]).find(|v| **v != SqlValue::Null) {
                        Some(SqlValue::Real(_)) => "VK_REAL",
                        Some(SqlValue::Text(_)) => "VK_STRING",
                        Some(SqlValue::Blob(_)) => "VK_BLOB",
                        _ => "VK_LONG8",
                    })
                })
                .collect();
            let rows = raw
                .iter()
                .map(|r| r.iter().zip(&types).map(|(v, vk)| value(ValueRef::from(v), vk)).collect())
                .collect();
            Ok(Some(Stored { names, types, rows }))
        }
    }
}

fn execute(s: &mut Session, r: &Request) -> Vec<u8> {
    let id = r.id.as_str();
    let Some(sql) = r.headers.get("STATEMENT") else { return wire::error(id, 3000, "No STATEMENT header") };
    let page: usize = r.headers.get("FIRST-PAGE-SIZE").and_then(|v| v.parse().ok()).unwrap_or(100);
    let result = match run(s, sql, &r.params) {
        Ok(result) => result,
        Err((code, message)) => return wire::error(id, code, &message),
    };
    let statement = s.next_statement;
    s.next_statement += 1;
    match result {
        Some(stored) if !stored.types.is_empty() => result_set(s, id, statement, stored, page),
        other => {
            // An update count (§4.6, the emulator's form of the Assumption there).
            let n = match other.as_ref().and_then(|r| r.rows.first()).and_then(|r| r.first()) {
                Some(Val::Int(n)) => *n,
                _ => 0,
            };
            let mut out = wire::header(
                id,
                true,
                &[
                    ("Statement-ID", statement.to_string()),
                    ("Command-Count", "1".into()),
                    ("Result-Type", "Update-Count ".into()),
                    ("Column-Count", "1".into()),
                    ("Row-Count", n.to_string()),
                    ("Column-Types", "VK_LONG8 ".into()),
                    (alias_header(s), alias_value(s, &["Update Count".to_string()])),
                    ("Column-Updateability", " N".into()),
                    ("Row-Count-Sent", n.to_string()),
                ],
            );
            out.extend_from_slice(&n.to_le_bytes());
            out
        }
    }
}

fn result_set(s: &mut Session, id: &str, statement: i64, stored: Stored, page: usize) -> Vec<u8> {
    let sent = stored.rows.len().min(page);
    let mut headers = vec![
        ("Statement-ID", statement.to_string()),
        ("Command-Count", "1".into()),
        ("Result-Type", "Result-Set ".into()),
        ("Column-Count", stored.types.len().to_string()),
        ("Row-Count", stored.rows.len().to_string()),
        ("Column-Types", stored.types.iter().map(|t| format!("{t} ")).collect()),
    ];
    headers.push((alias_header(s), alias_value(s, &stored.names)));
    headers.push(("Column-Updateability", stored.types.iter().map(|_| " N").collect()));
    headers.push(("Row-Count-Sent", sent.to_string()));
    let mut out = wire::header(id, true, &headers);
    rows(&mut out, &stored, 0, sent);
    s.statements.insert(statement, stored);
    out
}

fn alias_header(s: &Session) -> &'static str {
    if s.base64_text { "Column-Aliases-Base64" } else { "Column-Aliases" }
}

fn alias_value(s: &Session, names: &[String]) -> String {
    let list: String = names.iter().map(|n| format!("[{}] ", n.replace(']', "]]"))).collect();
    if s.base64_text { wire::base64(&list) } else { list }
}

/// Rows `first..first + n` of a result; stops after a cell error (nothing follows one).
fn rows(out: &mut Vec<u8>, stored: &Stored, first: usize, n: usize) {
    for row in stored.rows.iter().skip(first).take(n) {
        for (v, vk) in row.iter().zip(&stored.types) {
            if wire::cell(out, vk, v).is_err() {
                return;
            }
        }
    }
}

fn fetch(s: &mut Session, r: &Request) -> Vec<u8> {
    let id = r.id.as_str();
    let number = |name: &str| r.headers.get(name).and_then(|v| v.trim().parse::<usize>().ok());
    let Some(stored) =
        r.headers.get("STATEMENT-ID").and_then(|v| v.trim().parse().ok()).and_then(|n: i64| s.statements.get(&n))
    else {
        return wire::error(id, 3005, "Invalid statement id");
    };
    let (Some(first), Some(last)) = (number("FIRST-ROW-INDEX"), number("LAST-ROW-INDEX")) else {
        return wire::error(id, 3000, "FIRST-ROW-INDEX and LAST-ROW-INDEX are needed");
    };
    // Clamped to the result; nothing left is RESULT EOF (Assumption, §8.1).
    let last = last.min(stored.rows.len().saturating_sub(1));
    if first > last || stored.rows.is_empty() {
        return wire::error(id, 1410, "Result EOF");
    }
    let mut out = wire::header(id, true, &[]);
    rows(&mut out, stored, first, last - first + 1);
    out
}
