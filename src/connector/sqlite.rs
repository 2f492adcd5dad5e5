//! SQLite connector (rusqlite, bundled SQLite). All SQLite calls run on tokio's blocking
//! pool: rusqlite is synchronous and would otherwise stall the async executor. The source
//! is opened read-only, so a sync can never modify it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql, params_from_iter};

use super::sql_log::{Logged, Rows, StatementKind, rows_text, values_text};
use super::{
    Capabilities, ConnectOptions, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page, Side,
};
use crate::model::{ColumnSchema, ColumnType, Key, KeyRange, Row, Storage, TableSchema, TableScope, Value};

/// Most values bound in one statement (SQLite's limit is 32766 since 3.32).
const MAX_PARAMS: usize = 30_000;

/// A SQLite database file.
pub struct SqliteConnector {
    /// One connection, used by one blocking task at a time: rusqlite connections are not
    /// `Sync`, and the engine issues one operation at a time per side anyway.
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    side: Side,
    options: ConnectOptions,
    counters: IoCounters,
}

impl SqliteConnector {
    /// Opens an existing database file (read-only for the source).
    pub async fn open(path: PathBuf, side: Side, options: ConnectOptions) -> Result<SqliteConnector, ConnectorError> {
        let endpoint = format!("{} sqlite {}", side.name(), path.display());
        if !path.exists() {
            return Err(ConnectorError::Unavailable {
                endpoint,
                message: "the database file does not exist; check `path` in the config".into(),
            });
        }
        let open_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<Connection> {
            let flags = match side {
                Side::Source => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                Side::Target => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            };
            let conn = Connection::open_with_flags(&open_path, flags)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            // Touch the schema so an unreadable, encrypted or locked file fails here, not
            // in the middle of a run.
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
            Ok(conn)
        })
        .await
        .map_err(|e| ConnectorError::Other(format!("sqlite open task failed: {e}")))?
        .map_err(|e| classify(&endpoint, e))?;
        Ok(SqliteConnector { conn: Arc::new(Mutex::new(conn)), path, side, options, counters: IoCounters::default() })
    }

    fn endpoint(&self) -> String {
        format!("{} sqlite {}", self.side.name(), self.path.display())
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, ConnectorError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let endpoint = self.endpoint();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-statement; the connection itself is still
            // consistent (SQLite rolls back an unfinished transaction), so keep using it.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| ConnectorError::Other(format!("sqlite task failed: {e}")))?
        .map_err(|e| classify(&endpoint, e))
    }

    /// `count(*)` of the scope's table under `w` (logged and counted as one read).
    async fn count_where(&self, scope: &TableScope, w: Where) -> Result<u64, ConnectorError> {
        let sql = format!("SELECT count(*) FROM {}{}", quote_ident(&scope.table), w.sql);
        let logged = self.log_sql(StatementKind::Read, &sql, || values_text(&w.params));
        self.counters.record_read(1, 8);
        let n = self
            .with_conn(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let n: i64 = stmt.query_row(params_from_iter(w.params.iter().map(Bind)), |r| r.get(0))?;
                Ok(n as u64)
            })
            .await?;
        logged.done(Rows::Returned(1));
        Ok(n)
    }

    /// Logs `sql` as the debug switches ask (with `values()` under `show_sql_values`).
    fn log_sql(&self, kind: StatementKind, sql: &str, values: impl FnOnce() -> String) -> Logged {
        self.options.sql.statement(self.side, &self.endpoint(), kind, sql, values)
    }
}

/// Maps a rusqlite error onto the connector's classes.
fn classify(endpoint: &str, e: rusqlite::Error) -> ConnectorError {
    let message = e.to_string();
    if let rusqlite::Error::SqliteFailure(ref failure, _) = e {
        match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return ConnectorError::Busy {
                    endpoint: endpoint.to_string(),
                    message: format!("{message}; another process holds a lock on the file"),
                };
            }
            ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig => {
                return ConnectorError::Data(message);
            }
            ErrorCode::CannotOpen
            | ErrorCode::NotADatabase
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::DatabaseCorrupt => {
                // A file, not a link: trying again does not change it.
                return ConnectorError::Unavailable { endpoint: endpoint.to_string(), message };
            }
            _ => {}
        }
    }
    if let rusqlite::Error::ToSqlConversionFailure(_) = e {
        return ConnectorError::Data(message);
    }
    if message.contains("no such table") || message.contains("no such column") {
        return ConnectorError::Schema(format!("{endpoint}: {message}"));
    }
    ConnectorError::Other(format!("{endpoint}: {message}"))
}

pub use super::quote_ident;

/// The key columns of a scope as SQL: each compared in byte order whatever its declared
/// collation, so both sides agree on key order (the index is used when the column is
/// BINARY, the default); a compound key compares as a row value, part by part.
struct KeySql {
    /// Quoted key columns, in key order.
    columns: Vec<String>,
}

impl KeySql {
    fn of(scope: &TableScope) -> KeySql {
        KeySql { columns: scope.key_columns().into_iter().map(quote_ident).collect() }
    }

    fn compared(&self) -> Vec<String> {
        self.columns.iter().map(|c| format!("{c} COLLATE BINARY")).collect()
    }

    /// The key in a comparison: `k COLLATE BINARY` or `(a COLLATE BINARY, b COLLATE BINARY)`.
    fn tuple(&self) -> String {
        match self.compared().as_slice() {
            [one] => one.clone(),
            many => format!("({})", many.join(", ")),
        }
    }

    /// The key's ORDER BY list.
    fn order(&self) -> String {
        self.compared().join(", ")
    }

    /// The key columns as selected.
    fn select(&self) -> String {
        self.columns.join(", ")
    }

    /// Placeholders of one key value: `?` or `(?, ?)`.
    fn placeholder(&self) -> String {
        match self.columns.len() {
            1 => "?".into(),
            n => format!("({})", vec!["?"; n].join(", ")),
        }
    }

    /// The right side of `IN` for `n` keys: `(?, ?)` or `(VALUES (?, ?), (?, ?))`.
    fn list(&self, n: usize) -> String {
        match self.columns.len() {
            1 => format!("({})", vec!["?"; n].join(", ")),
            _ => format!("(VALUES {})", vec![self.placeholder(); n].join(", ")),
        }
    }

    fn width(&self) -> usize {
        self.columns.len()
    }

    fn any_null(&self) -> String {
        format!("({})", self.columns.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR "))
    }

    fn no_null(&self) -> String {
        self.columns.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ")
    }
}

struct Bind<'a>(&'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            // SQLite would store NaN as NULL; the transform refuses NaN for SQLite
            // columns, and this keeps any other path from writing it.
            Value::Float(f) if f.is_nan() => {
                return Err(rusqlite::Error::ToSqlConversionFailure("NaN cannot be stored in SQLite".into()));
            }
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// A SQLite value as db-sync holds it. Text that is not valid UTF-8 (SQLite stores what it
/// is given) comes back as its bytes, never with replacement characters: converting it
/// for a text column then fails and names the row and column.
fn read_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(text) => Value::Text(text.to_string()),
            Err(_) => Value::Bytes(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// The key held by the first `width` columns of `row`.
fn read_key(row: &rusqlite::Row<'_>, width: usize) -> rusqlite::Result<Key> {
    let values = (0..width).map(|i| Ok(read_value(row.get_ref(i)?))).collect::<rusqlite::Result<Vec<Value>>>()?;
    Key::from_values(values.iter())
        .ok_or_else(|| rusqlite::Error::InvalidColumnType(0, "key".into(), rusqlite::types::Type::Null))
}

/// A WHERE clause and its bound values, built from a scope's filter and a key range.
struct Where {
    sql: String,
    params: Vec<Value>,
}

impl Where {
    fn new(scope: &TableScope, range: &KeyRange) -> Where {
        let mut parts = Vec::new();
        let mut params = Vec::new();
        for (column, value) in &scope.filter {
            parts.push(format!("{} = ?", quote_ident(column)));
            params.push(value.clone());
        }
        let key = KeySql::of(scope);
        if scope.skip_null_keys {
            parts.push(key.no_null());
        }
        if !scope.skip_keys.is_empty() {
            parts.push(format!("{} NOT IN {}", key.tuple(), key.list(scope.skip_keys.len())));
            params.extend(scope.skip_keys.iter().flat_map(Key::values));
        }
        if let Some(after) = &range.after {
            parts.push(format!("{} > {}", key.tuple(), key.placeholder()));
            params.extend(after.values());
        }
        if let Some(upto) = &range.upto {
            parts.push(format!("{} <= {}", key.tuple(), key.placeholder()));
            params.extend(upto.values());
        }
        Where { sql: Self::join(parts), params }
    }

    fn join(parts: Vec<String>) -> String {
        if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) }
    }

    fn and(mut self, clause: String, params: impl IntoIterator<Item = Value>) -> Where {
        self.sql = if self.sql.is_empty() { format!(" WHERE {clause}") } else { format!("{} AND {clause}", self.sql) };
        self.params.extend(params);
        self
    }
}

fn column_list(scope: &TableScope) -> String {
    scope.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
}

fn query_rows(conn: &Connection, sql: &str, params: &[Value], width: usize) -> rusqlite::Result<(Vec<Row>, usize)> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter().map(Bind)))?;
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            let value = read_value(row.get_ref(i)?);
            bytes += value.wire_size();
            values.push(value);
        }
        out.push(values);
    }
    Ok((out, bytes))
}

fn query_keys(conn: &Connection, sql: &str, params: &[Value], width: usize) -> rusqlite::Result<Vec<Key>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter().map(Bind)))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read_key(row, width)?);
    }
    Ok(out)
}

/// Maps a declared SQLite type onto a type family (SQLite affinity rules plus the common
/// names for dates, booleans and JSON).
pub fn column_type(declared: &str) -> ColumnType {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        ColumnType::Integer
    } else if t.contains("BOOL") {
        ColumnType::Boolean
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        ColumnType::Text
    } else if t.contains("BLOB") || t.is_empty() {
        if t.is_empty() { ColumnType::Other } else { ColumnType::Blob }
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ColumnType::Float
    } else if t.contains("DATETIME") || t.contains("TIMESTAMP") {
        ColumnType::Timestamp
    } else if t.contains("DATE") {
        ColumnType::Date
    } else if t.contains("TIME") {
        ColumnType::Time
    } else if t.contains("JSON") {
        ColumnType::Json
    } else if t.contains("DEC") || t.contains("NUMERIC") {
        ColumnType::Decimal
    } else {
        ColumnType::Other
    }
}

/// What a column of a declared SQLite type holds exactly (SQLite's type affinity rules,
/// <https://www.sqlite.org/datatype3.html>): NaN is stored as NULL in any column; REAL and
/// NUMERIC affinity turn -0.0 into 0; NUMERIC affinity keeps a number only as a 64-bit
/// integer or a double (text with more digits loses them); text is kept as written, so
/// dates and times keep their offsets and fraction digits.
pub fn storage(declared: &str) -> Storage {
    let t = declared.to_ascii_uppercase();
    // The affinity rules in their order: INTEGER, TEXT, BLOB (or none), REAL, NUMERIC.
    let integer_text_or_blob = ["INT", "CHAR", "CLOB", "TEXT", "BLOB"].iter().any(|p| t.contains(p)) || t.is_empty();
    let real = !integer_text_or_blob && ["REAL", "FLOA", "DOUB"].iter().any(|p| t.contains(p));
    let numeric = !integer_text_or_blob && !real;
    Storage {
        numeric_affinity: numeric,
        time_zone: true,
        no_nan: true,
        no_negative_zero: real || numeric,
        ..Storage::default()
    }
}

#[async_trait]
impl Connector for SqliteConnector {
    fn describe_endpoint(&self) -> String {
        self.endpoint()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            offset_in_range: true,
            costly_round_trips: false,
            writable: self.side == Side::Target,
            transactional_batches: true,
            // One connection: writes queue behind each other anyway.
            concurrent_writes: 1,
        }
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        let table = table.to_string();
        self.counters.record_read(0, 0);
        self.with_conn(move |conn| {
            let exists: bool = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1",
                [&table],
                |r| r.get::<_, i64>(0),
            )? > 0;
            if !exists {
                return Ok(None);
            }
            let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote_ident(&table)))?;
            let mut columns = Vec::new();
            let mut pk = Vec::new();
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let name: String = row.get(1)?;
                let declared: String = row.get(2)?;
                let not_null: i64 = row.get(3)?;
                let default: Option<String> = row.get(4)?;
                let pk_pos: i64 = row.get(5)?;
                if pk_pos > 0 {
                    pk.push((pk_pos, name.clone()));
                }
                columns.push(ColumnSchema {
                    storage: storage(&declared),
                    column_type: column_type(&declared),
                    name,
                    declared_type: declared,
                    // SQLite lets an INTEGER PRIMARY KEY be NULL on insert (it assigns a
                    // rowid), but the sync always provides the key.
                    nullable: not_null == 0,
                    has_default: default.is_some(),
                });
            }
            let mut unique_keys: Vec<Vec<String>> = Vec::new();
            if !pk.is_empty() {
                pk.sort();
                unique_keys.push(pk.into_iter().map(|(_, name)| name).collect());
            }
            let mut stmt = conn.prepare(&format!("PRAGMA index_list({})", quote_ident(&table)))?;
            let indexes: Vec<(String, bool, bool)> = stmt
                .query_map([], |r| {
                    let partial: i64 = r.get(4).unwrap_or(0);
                    Ok((r.get::<_, String>(1)?, r.get::<_, i64>(2)? == 1, partial == 1))
                })?
                .collect::<Result<_, _>>()?;
            for (index, unique, partial) in indexes {
                if !unique || partial {
                    continue;
                }
                let mut stmt = conn.prepare(&format!("PRAGMA index_info({})", quote_ident(&index)))?;
                let cols: Vec<Option<String>> =
                    stmt.query_map([], |r| r.get::<_, Option<String>>(2))?.collect::<Result<_, _>>()?;
                // An index on an expression has a NULL column name: not a key.
                if let Some(cols) = cols.into_iter().collect::<Option<Vec<String>>>()
                    && !unique_keys.contains(&cols)
                {
                    unique_keys.push(cols);
                }
            }
            Ok(Some(TableSchema { name: table, columns, unique_keys }))
        })
        .await
    }

    async fn create_table(&self, name: &str, columns: &[ColumnSchema], keys: &[String]) -> Result<(), ConnectorError> {
        let type_name = |t: ColumnType| match t {
            ColumnType::Integer => "INTEGER",
            ColumnType::Float => "REAL",
            ColumnType::Decimal => "NUMERIC",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Blob => "BLOB",
            ColumnType::Date => "DATE",
            ColumnType::Time => "TIME",
            ColumnType::Timestamp => "DATETIME",
            ColumnType::Json => "JSON",
            ColumnType::Text | ColumnType::Other => "TEXT",
        };
        let sql =
            format!("CREATE TABLE {} ({})", quote_ident(name), super::column_definitions(columns, keys, type_name));
        let logged = self.log_sql(StatementKind::Write, &sql, String::new);
        self.with_conn(move |conn| conn.execute_batch(&sql)).await?;
        logged.done(Rows::Affected(0));
        Ok(())
    }

    async fn foreign_keys(&self, tables: &[String]) -> Result<Vec<(String, String)>, ConnectorError> {
        let tables = tables.to_vec();
        self.with_conn(move |conn| {
            let mut pairs = Vec::new();
            for table in &tables {
                let mut stmt = conn.prepare(&format!("PRAGMA foreign_key_list({})", quote_ident(table)))?;
                let parents: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(2))?.collect::<Result<_, _>>()?;
                for parent in parents {
                    if tables.contains(&parent) && &parent != table {
                        pairs.push((table.clone(), parent));
                    }
                }
            }
            Ok(pairs)
        })
        .await
    }

    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<KeyProblems, ConnectorError> {
        let raw = TableScope { skip_null_keys: false, skip_keys: Vec::new(), ..scope.clone() };
        let key = KeySql::of(&raw);
        let width = key.width();
        let table = quote_ident(&raw.table);
        let nulls = Where::new(&raw, &KeyRange::all()).and(key.any_null(), []);
        let nulls_sql = format!("SELECT count(*) FROM {table}{}", nulls.sql);
        let dups = Where::new(&raw, &KeyRange::all()).and(key.no_null(), []);
        let dups_sql = format!(
            "SELECT {}, count(*) FROM {table}{} GROUP BY {} HAVING count(*) > 1 ORDER BY {} LIMIT {limit}",
            key.select(),
            dups.sql,
            key.order(),
            key.order()
        );
        let logged_nulls = self.log_sql(StatementKind::Read, &nulls_sql, || values_text(&nulls.params));
        let logged_dups =
            duplicates.then(|| self.log_sql(StatementKind::Read, &dups_sql, || values_text(&dups.params)));
        self.counters.record_read(1, 8);
        let problems = self
            .with_conn(move |conn| {
                let mut stmt = conn.prepare_cached(&nulls_sql)?;
                let null_rows: i64 = stmt.query_row(params_from_iter(nulls.params.iter().map(Bind)), |r| r.get(0))?;
                let mut found = Vec::new();
                if duplicates {
                    let mut stmt = conn.prepare_cached(&dups_sql)?;
                    let mut rows = stmt.query(params_from_iter(dups.params.iter().map(Bind)))?;
                    while let Some(row) = rows.next()? {
                        found.push((read_key(row, width)?, row.get::<_, i64>(width)? as u64));
                    }
                }
                Ok(KeyProblems { null_rows: null_rows as u64, duplicates: found })
            })
            .await?;
        logged_nulls.done(Rows::Returned(1));
        if let Some(logged) = logged_dups {
            logged.done(Rows::Returned(problems.duplicates.len() as u64));
        }
        Ok(problems)
    }

    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        let w = Where::new(scope, range);
        self.count_where(scope, w).await
    }

    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        Ok(self.keys_at(scope, range, &[offset]).await?.pop().flatten())
    }

    /// One connection, so the offsets are walked in turn, each from the key found before
    /// it: the range is read once instead of once per offset.
    async fn keys_at(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        offsets: &[u64],
    ) -> Result<Vec<Option<Key>>, ConnectorError> {
        let (scope, range, offsets) = (scope.clone(), range.clone(), offsets.to_vec());
        self.counters.record_read(offsets.len(), 8 * offsets.len());
        let sql = |scope: &TableScope, range: &KeyRange, offset: u64| {
            let w = Where::new(scope, range);
            let key = KeySql::of(scope);
            let sql = format!(
                "SELECT {} FROM {}{} ORDER BY {} LIMIT 1 OFFSET {offset}",
                key.select(),
                quote_ident(&scope.table),
                w.sql,
                key.order()
            );
            (sql, w.params, key.width())
        };
        let (first_sql, first_params, _) = sql(&scope, &range, offsets.first().copied().unwrap_or(0));
        let logged = self.log_sql(StatementKind::Read, &first_sql, || values_text(&first_params));
        let found = offsets.len() as u64;
        let keys = self
            .with_conn(move |conn| {
                let mut out: Vec<Option<Key>> = Vec::with_capacity(offsets.len());
                // The last key found and its offset in `range`.
                let mut last: Option<(u64, Key)> = None;
                for offset in offsets {
                    let (from, skip) = match &last {
                        Some((at, key)) if offset == *at => {
                            out.push(Some(key.clone()));
                            continue;
                        }
                        Some((at, key)) if offset > *at => {
                            (KeyRange { after: Some(key.clone()), upto: range.upto.clone() }, offset - at - 1)
                        }
                        _ => (range.clone(), offset),
                    };
                    let (text, params, width) = sql(&scope, &from, skip);
                    let found = query_keys(conn, &text, &params, width)?.into_iter().next();
                    if let Some(key) = &found {
                        last = Some((offset, key.clone()));
                    }
                    out.push(found);
                }
                Ok(out)
            })
            .await?;
        logged.done(Rows::Returned(found));
        Ok(keys)
    }

    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        let w = Where::new(scope, range);
        let key = KeySql::of(scope);
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {} LIMIT {limit}",
            key.select(),
            quote_ident(&scope.table),
            w.sql,
            key.order()
        );
        let logged = self.log_sql(StatementKind::Read, &sql, || values_text(&w.params));
        let width = key.width();
        let keys = self.with_conn(move |conn| query_keys(conn, &sql, &w.params, width)).await?;
        logged.done(Rows::Returned(keys.len() as u64));
        self.counters.record_read(keys.len(), keys.len() * 8);
        Ok(Page::up_to(keys, limit))
    }

    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        let w = Where::new(scope, range);
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {} LIMIT {limit}",
            column_list(scope),
            quote_ident(&scope.table),
            w.sql,
            KeySql::of(scope).order()
        );
        let logged = self.log_sql(StatementKind::Read, &sql, || values_text(&w.params));
        let width = scope.columns.len();
        let (rows, bytes) = self.with_conn(move |conn| query_rows(conn, &sql, &w.params, width)).await?;
        logged.done(Rows::Returned(rows.len() as u64));
        self.counters.record_read(rows.len(), bytes);
        Ok(Page::up_to(rows, limit))
    }

    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        let mut out = Vec::with_capacity(keys.len());
        let key = KeySql::of(scope);
        let chunk_size = (MAX_PARAMS - scope.filter.len() - scope.skip_keys.len() * key.width()) / key.width();
        for chunk in keys.chunks(chunk_size) {
            let w = Where::new(scope, &KeyRange::all())
                .and(format!("{} IN {}", key.tuple(), key.list(chunk.len())), chunk.iter().flat_map(Key::values));
            let sql = format!("SELECT {} FROM {}{}", column_list(scope), quote_ident(&scope.table), w.sql);
            let logged = if self.options.sql.wants(StatementKind::Read) {
                let shown = format!(
                    "SELECT {} FROM {} WHERE ... IN ({} keys)",
                    column_list(scope),
                    quote_ident(&scope.table),
                    chunk.len()
                );
                self.log_sql(StatementKind::Read, &shown, || values_text(&w.params))
            } else {
                Logged::none()
            };
            let width = scope.columns.len();
            let (rows, bytes) = self.with_conn(move |conn| query_rows(conn, &sql, &w.params, width)).await?;
            logged.done(Rows::Returned(rows.len() as u64));
            self.counters.record_read(rows.len(), bytes);
            out.extend(rows);
        }
        Ok(out)
    }

    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        let modify = quote_ident(
            scope
                .modify_column()
                .ok_or_else(|| ConnectorError::Schema(format!("table {} has no modify_id_field", scope.table)))?,
        );
        let key = KeySql::of(scope);
        let mut w = Where::new(scope, &KeyRange::all()).and(format!("{modify} IS NOT NULL"), []);
        match (&cursor.modify_id, &cursor.key) {
            (Some(m), Some(k)) => {
                w = w.and(
                    format!("({modify} > ? OR ({modify} = ? AND {} > {}))", key.tuple(), key.placeholder()),
                    [m.clone(), m.clone()].into_iter().chain(k.values()),
                );
            }
            // No key yet: rows with exactly this modify ID may be only partly copied.
            (Some(m), None) => w = w.and(format!("{modify} >= ?"), [m.clone()]),
            (None, _) => {}
        }
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {modify}, {} LIMIT {limit}",
            column_list(scope),
            quote_ident(&scope.table),
            w.sql,
            key.order()
        );
        let logged = self.log_sql(StatementKind::Read, &sql, || values_text(&w.params));
        let width = scope.columns.len();
        let (rows, bytes) = self.with_conn(move |conn| query_rows(conn, &sql, &w.params, width)).await?;
        logged.done(Rows::Returned(rows.len() as u64));
        self.counters.record_read(rows.len(), bytes);
        Ok(Page::up_to(rows, limit))
    }

    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        let Some(column) = scope.modify_column() else { return Ok(0) };
        let modify = quote_ident(column);
        let w = Where::new(scope, &KeyRange::all());
        let w = match modify_id {
            Some(m) => w.and(format!("{modify} > ?"), [m.clone()]),
            None => w.and(format!("{modify} IS NOT NULL"), []),
        };
        self.count_where(scope, w).await
    }

    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        let Some(column) = scope.modify_column() else { return Ok(0) };
        let w = Where::new(scope, &KeyRange::all()).and(format!("{} IS NULL", quote_ident(column)), []);
        self.count_where(scope, w).await
    }

    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        let Some(column) = scope.modify_column() else { return Ok(None) };
        let w = Where::new(scope, &KeyRange::all());
        let sql = format!("SELECT max({}) FROM {}{}", quote_ident(column), quote_ident(&scope.table), w.sql);
        let logged = self.log_sql(StatementKind::Read, &sql, || values_text(&w.params));
        self.counters.record_read(1, 8);
        let max = self
            .with_conn(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let v =
                    stmt.query_row(params_from_iter(w.params.iter().map(Bind)), |r| Ok(read_value(r.get_ref(0)?)))?;
                Ok(if v.is_null() { None } else { Some(v) })
            })
            .await?;
        logged.done(Rows::Returned(1));
        Ok(max)
    }

    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        if self.side != Side::Target {
            return Err(ConnectorError::Other("refusing to write to the source".into()));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        let key = KeySql::of(scope).select();
        let placeholders = vec!["?"; scope.columns.len()].join(", ");
        let updates: Vec<String> = scope
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !scope.is_key(*i))
            .map(|(_, c)| format!("{0} = excluded.{0}", quote_ident(c)))
            .collect();
        let conflict =
            if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({placeholders}) ON CONFLICT({key}) {conflict}",
            quote_ident(&scope.table),
            column_list(scope),
        );
        let logged = self.log_sql(StatementKind::Write, &sql, || rows_text(rows));
        let rows = rows.to_vec();
        let n = rows.len() as u64;
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(&sql)?;
                for (i, row) in rows.iter().enumerate() {
                    if i == rows.len() / 2 {
                        crate::failpoint::hit("mid_write");
                    }
                    stmt.execute(params_from_iter(row.iter().map(Bind)))?;
                }
            }
            tx.commit()
        })
        .await?;
        logged.done(Rows::Affected(n));
        self.counters.rows_written.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        if self.side != Side::Target {
            return Err(ConnectorError::Other("refusing to delete from the source".into()));
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let key = KeySql::of(scope);
        let chunk_size = (MAX_PARAMS - scope.filter.len() - scope.skip_keys.len() * key.width()) / key.width();
        let mut statements = Vec::new();
        let mut logged = Vec::new();
        for chunk in keys.chunks(chunk_size) {
            let w = Where::new(scope, &KeyRange::all())
                .and(format!("{} IN {}", key.tuple(), key.list(chunk.len())), chunk.iter().flat_map(Key::values));
            let sql = format!("DELETE FROM {}{}", quote_ident(&scope.table), w.sql);
            let shown = format!("DELETE FROM {} WHERE ... IN ({} keys)", quote_ident(&scope.table), chunk.len());
            statements.push((sql, w.params));
            logged.push(self.log_sql(StatementKind::Write, &shown, || {
                values_text(statements.last().map(|(_, params)| params.as_slice()).unwrap_or_default())
            }));
        }
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let per_statement = self
            .with_conn(move |conn| {
                let tx = conn.transaction()?;
                let mut per_statement = Vec::with_capacity(statements.len());
                for (sql, params) in &statements {
                    per_statement.push(tx.execute(sql, params_from_iter(params.iter().map(Bind)))? as u64);
                    crate::failpoint::hit("mid_write");
                }
                tx.commit()?;
                Ok(per_statement)
            })
            .await?;
        for (logged, n) in logged.into_iter().zip(&per_statement) {
            logged.done(Rows::Affected(*n));
        }
        let deleted: u64 = per_statement.iter().sum();
        self.counters.rows_written.fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `keys_at` walks the offsets from key to key and finds what `key_at` finds one offset
    /// at a time: inside a range, with a record-type filter and skipped keys, for a
    /// compound key, for repeated offsets and past the end.
    #[tokio::test]
    async fn keys_at_agrees_with_key_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (a INTEGER, b TEXT, kind TEXT, PRIMARY KEY (a, b));
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300)
             INSERT INTO t SELECT x % 37, 'k' || x, CASE WHEN x % 3 = 0 THEN 'x' ELSE 'y' END FROM c;",
        )
        .unwrap();
        drop(conn);
        let db = SqliteConnector::open(path, Side::Source, ConnectOptions::default()).await.unwrap();
        let simple = TableScope {
            table: "t".into(),
            columns: vec!["b".into(), "a".into(), "kind".into()],
            key_indexes: vec![0],
            modify_index: None,
            filter: vec![],
            skip_null_keys: false,
            skip_keys: vec![],
        };
        let compound = TableScope {
            key_indexes: vec![1, 0],
            filter: vec![("kind".into(), Value::Text("y".into()))],
            skip_keys: vec![Key::Parts(vec![Key::Int(5), Key::Text("k5".into())])],
            ..simple.clone()
        };
        let ranges = [
            KeyRange::all(),
            KeyRange { after: Some(Key::Text("k150".into())), upto: None },
            KeyRange { after: None, upto: Some(Key::Parts(vec![Key::Int(20), Key::Text("k20".into())])) },
            KeyRange {
                after: Some(Key::Parts(vec![Key::Int(3), Key::Text("k3".into())])),
                upto: Some(Key::Parts(vec![Key::Int(30), Key::Text("k30".into())])),
            },
        ];
        let offsets = [0, 0, 1, 7, 8, 60, 150, 199, 250, 299, 300, 1000];
        for (scope, range) in
            [(&simple, &ranges[0]), (&simple, &ranges[1]), (&compound, &ranges[2]), (&compound, &ranges[3])]
        {
            let mut one_by_one = Vec::new();
            for &o in &offsets {
                one_by_one.push(db.key_at(scope, range, o).await.unwrap());
            }
            assert_eq!(db.keys_at(scope, range, &offsets).await.unwrap(), one_by_one, "{range:?}");
            assert!(one_by_one.iter().any(Option::is_some) && one_by_one.last().unwrap().is_none());
        }
    }
}
