//! PostgreSQL connector (sqlx, rustls). Reads page by key (`ORDER BY key` with text keys
//! in byte order, `COLLATE "C"`), counts and OFFSET midpoints use the key index. Writes
//! are idempotent and atomic per batch: rows the engine just saw missing go in with one
//! plain `COPY … FROM STDIN` (falling back to an upsert if a key exists after all); other
//! rows with one `INSERT … SELECT … FROM unnest($1, $2, …) ON CONFLICT (key) DO UPDATE`
//! statement with one array parameter per column; deletes with one
//! `DELETE … WHERE key = ANY($1)`.
//!
//! Values travel as text where PostgreSQL has types db-sync does not model (numeric,
//! dates, times, JSON, UUID): the SELECT casts them `::text` and parameters are cast back
//! to the column's type, so no precision is lost on the way.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{Arguments, AssertSqlSafe, Row as _};

use super::{
    Capabilities, ConnectOptions, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page, Side,
};
use crate::config::{Endpoint, redact_url};
use crate::model::{ColumnSchema, ColumnType, Key, KeyRange, Row, Storage, TableSchema, TableScope, Value};

pub use super::quote_ident;

/// How a column travels between PostgreSQL and db-sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Int,
    Float,
    Bool,
    Bytes,
    Text,
}

/// Type family of a PostgreSQL type name (`pg_type.typname`).
pub fn column_type(typname: &str) -> ColumnType {
    match typname {
        "int2" | "int4" | "int8" | "oid" => ColumnType::Integer,
        "float4" | "float8" => ColumnType::Float,
        "numeric" | "money" => ColumnType::Decimal,
        "bool" => ColumnType::Boolean,
        "text" | "varchar" | "bpchar" | "name" | "citext" | "uuid" => ColumnType::Text,
        "bytea" => ColumnType::Blob,
        "date" => ColumnType::Date,
        "time" | "timetz" => ColumnType::Time,
        "timestamp" | "timestamptz" => ColumnType::Timestamp,
        "json" | "jsonb" => ColumnType::Json,
        _ => ColumnType::Other,
    }
}

/// What a column of PostgreSQL type `typname`, declared as `declared` (`format_type`'s
/// spelling, such as `numeric(30,2)` or `timestamp(3) without time zone`), holds exactly
/// (PostgreSQL's manual, chapter 8 "Data Types"): integer and float widths, numeric
/// precision and scale, varchar/char lengths, fraction digits of times (6 unless
/// declared), time zones. Text types cannot hold U+0000.
pub fn storage(typname: &str, declared: &str) -> Storage {
    // The numbers in the declared type's parentheses: `numeric(30,2)` -> [30, 2].
    let args: Vec<u32> = declared
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inner, _)| inner.split(',').filter_map(|a| a.trim().parse().ok()).collect())
        .unwrap_or_default();
    let first = args.first().copied();
    let mut storage = Storage::default();
    match typname {
        "int2" => storage.int_bits = Some(16),
        "int4" => storage.int_bits = Some(32),
        "int8" => storage.int_bits = Some(64),
        "float4" => storage.float_bits = Some(32),
        "float8" => storage.float_bits = Some(64),
        "numeric" => {
            storage.precision = first;
            storage.scale = first.map(|_| args.get(1).copied().unwrap_or(0));
        }
        "varchar" => storage.max_chars = first,
        "bpchar" => {
            storage.max_chars = Some(first.unwrap_or(1));
            storage.padded = true;
        }
        "uuid" => storage.uuid = true,
        // A date keeps no time of day: text with one is refused, not cut.
        "date" => storage.fraction_digits = Some(0),
        "time" | "timestamp" => storage.fraction_digits = Some(first.unwrap_or(6).min(6) as u8),
        "timetz" | "timestamptz" => {
            storage.fraction_digits = Some(first.unwrap_or(6).min(6) as u8);
            storage.time_zone = true;
        }
        _ => {}
    }
    storage.no_nul = matches!(typname, "text" | "varchar" | "bpchar" | "name" | "citext" | "json" | "jsonb");
    storage
}

fn wire(t: ColumnType) -> Wire {
    match t {
        ColumnType::Integer => Wire::Int,
        ColumnType::Float => Wire::Float,
        ColumnType::Boolean => Wire::Bool,
        ColumnType::Blob => Wire::Bytes,
        _ => Wire::Text,
    }
}

/// A PostgreSQL schema reached through a connection pool.
pub struct PostgresConnector {
    pool: PgPool,
    schema: String,
    endpoint: String,
    side: Side,
    options: ConnectOptions,
    counters: IoCounters,
    /// Described tables, so SQL can cast each column right. Held only to clone out.
    tables: Mutex<HashMap<String, TableSchema>>,
}

/// Classifies a sqlx error. SQLSTATE classes: 08 connection, 21 cardinality (an upsert
/// that touches one key twice), 22 data and 23 integrity (bad rows: the batch is split to
/// isolate them), 28 authentication, 40 transaction rollback (retryable), 42 syntax or
/// undefined objects, 53 resources, 55 object state, 57 operator intervention. Every
/// message keeps the SQLSTATE; none holds a secret (sqlx never echoes the URL).
fn classify(endpoint: &str, e: sqlx::Error) -> ConnectorError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let message = db.message().to_string();
            let detail = format!("{message} (SQLSTATE {code})");
            match code.get(..2) {
                Some("08") | Some("57") | Some("53") => {
                    ConnectorError::Connection { endpoint: endpoint.to_string(), message: detail }
                }
                Some("40") | Some("55") => ConnectorError::Busy { endpoint: endpoint.to_string(), message: detail },
                Some("21") | Some("22") | Some("23") => ConnectorError::Data(detail),
                Some("42") => ConnectorError::Schema(format!("{endpoint}: {detail}")),
                Some("28") => ConnectorError::Config(format!(
                    "{endpoint}: authentication failed: {detail}; check the user and the password variable"
                )),
                _ => ConnectorError::Other(format!("{endpoint}: {detail}")),
            }
        }
        sqlx::Error::Io(io) => {
            // The cause in words a user searches for; the OS text stays in brackets.
            let message = if io.kind() == std::io::ErrorKind::ConnectionRefused {
                format!("connection refused; is the server running and accepting TCP connections? ({io})")
            } else if io.to_string().contains("failed to lookup address") {
                format!("no such host ({io})")
            } else {
                e.to_string()
            };
            ConnectorError::Connection { endpoint: endpoint.to_string(), message }
        }
        sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => {
            ConnectorError::Connection { endpoint: endpoint.to_string(), message: e.to_string() }
        }
        _ => ConnectorError::Other(format!("{endpoint}: {e}")),
    }
}

impl PostgresConnector {
    /// Connects to the endpoint's server and checks the connection.
    pub async fn open(endpoint: &Endpoint, side: Side, options: ConnectOptions) -> Result<Self, ConnectorError> {
        let raw = &endpoint.raw;
        let url = raw.url.as_deref().unwrap_or_default();
        let described = format!("{} postgres {}", side.name(), redact_url(url));
        let config_error = |message: String| ConnectorError::Config(format!("{described}: {message}"));
        // sqlx logs an unknown URL parameter with its value at warn level, so secret ones
        // it does not use (`pass`, `pwd`, `sslpassword`, `Password`) never reach it.
        let mut url = url.to_string();
        if let Ok(mut parsed) = url::Url::parse(&url) {
            let unused_secret = |key: &str| crate::config::is_secret_key(key) && key != "password";
            if parsed.query_pairs().any(|(key, _)| unused_secret(&key)) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .filter(|(key, _)| {
                        let unused = unused_secret(key);
                        if unused {
                            tracing::warn!("{described}: ignoring URL parameter `{key}`: db-sync does not use it");
                        }
                        !unused
                    })
                    .map(|(key, value)| (key.into_owned(), value.into_owned()))
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
                url = parsed.to_string();
            }
        }
        let mut connect: PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| config_error(format!("invalid url: {e}")))?;
        if let Some(user) = &raw.user {
            connect = connect.username(user);
        }
        if let Some(password) = &raw.password {
            connect = connect.password(password);
        }
        if let Some(database) = &raw.database {
            connect = connect.database(database);
        }
        if let Some(mode) = &raw.sslmode {
            let mode: PgSslMode = mode.parse().map_err(|_| {
                config_error(format!(
                    "sslmode `{mode}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            })?;
            connect = connect.ssl_mode(mode);
        }
        // Dates, times and intervals are read as text. sqlx opens every session with
        // TimeZone UTC and DateStyle ISO, so instants read in UTC whatever the server's
        // zone; intervals read in ISO 8601 so that other databases can parse them.
        connect = connect.options([("IntervalStyle", "iso_8601")]);
        if let Some(secs) = raw.statement_timeout_secs {
            connect = connect.options([("statement_timeout", format!("{}s", secs))]);
        }
        // The pool retries a refused connection until its acquire timeout and then reports
        // only "pool timed out". One plain connection first names the cause: connection
        // refused, no such host, or the server's authentication error.
        let timeout = if raw.timeout.is_some() { endpoint.resilience.timeout } else { Duration::from_secs(30) };
        let first = <sqlx::PgConnection as sqlx::Connection>::connect_with(&connect);
        match tokio::time::timeout(timeout, first).await {
            Ok(Ok(first)) => {
                let _ = sqlx::Connection::close(first).await;
            }
            Ok(Err(e)) => return Err(classify(&described, e)),
            Err(_) => {
                return Err(ConnectorError::Connection {
                    endpoint: described,
                    message: format!("no answer within {}s (`timeout`)", timeout.as_secs()),
                });
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(raw.pool_size.unwrap_or(4).max(1))
            .acquire_timeout(timeout)
            .connect_with(connect)
            .await
            .map_err(|e| classify(&described, e))?;
        let schema = raw.schema.clone().unwrap_or_else(|| "public".into());
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&schema)
            .fetch_one(&pool)
            .await
            .map_err(|e| classify(&described, e))?;
        if !exists {
            return Err(config_error(format!("schema `{schema}` does not exist")));
        }
        Ok(PostgresConnector {
            pool,
            schema,
            endpoint: described,
            side,
            options,
            counters: IoCounters::default(),
            tables: Mutex::new(HashMap::new()),
        })
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        move |e| classify(&self.endpoint, e)
    }

    fn table_ref(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    fn log_sql(&self, sql: &str) {
        if self.options.show_sql {
            tracing::info!(target: "db_sync::sql", side = self.side.name(), "{sql}");
        }
    }

    /// The table's schema, described once.
    async fn schema_of(&self, table: &str) -> Result<TableSchema, ConnectorError> {
        if let Some(t) = self.tables.lock().expect("lock").get(table) {
            return Ok(t.clone());
        }
        self.describe(table)
            .await?
            .ok_or_else(|| ConnectorError::Schema(format!("{}: no table {table}", self.endpoint)))
    }

    /// Column types of a scope, in its column order.
    async fn types(&self, scope: &TableScope) -> Result<Vec<(ColumnType, String)>, ConnectorError> {
        let schema = self.schema_of(&scope.table).await?;
        scope
            .columns
            .iter()
            .map(|c| {
                schema.column(c).map(|c| (c.column_type, c.declared_type.clone())).ok_or_else(|| {
                    ConnectorError::Schema(format!("{}: no column {c} in {}", self.endpoint, scope.table))
                })
            })
            .collect()
    }
}

/// SQL under construction with its bound parameters.
struct Sql {
    text: String,
    args: PgArguments,
    n: usize,
}

impl Sql {
    fn new(text: impl Into<String>) -> Sql {
        Sql { text: text.into(), args: PgArguments::default(), n: 0 }
    }

    /// Binds `value` and returns its placeholder, cast to `cast` when given.
    fn bind(&mut self, value: &Value, cast: Option<&str>) -> String {
        self.n += 1;
        let result = match value {
            Value::Null => self.args.add(Option::<String>::None),
            Value::Bool(b) => self.args.add(*b),
            Value::Int(i) => self.args.add(*i),
            Value::Float(f) => self.args.add(*f),
            Value::Text(s) => self.args.add(s.clone()),
            Value::Bytes(b) => self.args.add(b.clone()),
        };
        result.expect("binding a plain value cannot fail");
        match cast {
            Some(t) => format!("${}::{t}", self.n),
            None => format!("${}", self.n),
        }
    }

    /// Binds column `i` of `rows` as one array parameter, typed by what the values hold.
    /// Returns the placeholder and whether it went as text (to be cast to the column type).
    fn bind_column(&mut self, rows: &[Row], i: usize, t: ColumnType) -> (String, bool) {
        self.n += 1;
        let values = rows.iter().map(|r| &r[i]);
        let all = |f: fn(&Value) -> bool| rows.iter().all(|r| r[i].is_null() || f(&r[i]));
        let mut as_text = false;
        let result = if t == ColumnType::Integer && all(|v| matches!(v, Value::Int(_))) {
            self.args.add(values.map(|v| if let Value::Int(x) = v { Some(*x) } else { None }).collect::<Vec<_>>())
        } else if t == ColumnType::Float && all(|v| matches!(v, Value::Int(_) | Value::Float(_))) {
            self.args.add(
                values
                    .map(|v| match v {
                        Value::Int(x) => Some(*x as f64),
                        Value::Float(x) => Some(*x),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
        } else if t == ColumnType::Boolean && all(|v| matches!(v, Value::Bool(_))) {
            self.args.add(values.map(|v| if let Value::Bool(x) = v { Some(*x) } else { None }).collect::<Vec<_>>())
        } else if t == ColumnType::Blob && all(|v| matches!(v, Value::Bytes(_))) {
            self.args
                .add(values.map(|v| if let Value::Bytes(x) = v { Some(x.clone()) } else { None }).collect::<Vec<_>>())
        } else {
            as_text = true;
            self.args.add(values.map(text_of).collect::<Vec<Option<String>>>())
        };
        result.expect("binding an array cannot fail");
        (format!("${}", self.n), as_text)
    }

    /// Binds part `part` of every key as one array parameter: `bigint[]` when every part is
    /// an integer, `text[]` otherwise. Returns the placeholder.
    fn bind_key_part(&mut self, keys: &[Key], part: usize) -> String {
        self.n += 1;
        let parts = keys.iter().map(|k| &k.parts()[part]);
        let result = if keys.iter().all(|k| matches!(k.parts()[part], Key::Int(_))) {
            self.args.add(parts.map(|k| if let Key::Int(i) = k { *i } else { 0 }).collect::<Vec<i64>>())
        } else if keys.iter().all(|k| matches!(k.parts()[part], Key::Bytes(_))) {
            self.args.add(
                parts.map(|k| if let Key::Bytes(b) = k { b.clone() } else { Vec::new() }).collect::<Vec<Vec<u8>>>(),
            )
        } else {
            self.args.add(
                parts
                    .map(|k| match k {
                        Key::Int(i) => i.to_string(),
                        Key::Text(s) => s.clone(),
                        Key::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                        Key::Parts(_) => unreachable!("key parts are integers, text or bytes"),
                    })
                    .collect::<Vec<String>>(),
            )
        };
        result.expect("binding an array cannot fail");
        format!("${}", self.n)
    }
}

/// The key columns of a scope as PostgreSQL SQL. Each compares in db-sync's byte order:
/// integers as they are, text with `COLLATE "C"`, UUIDs natively (their byte order is the
/// order of their lower-case text); a compound key compares as a row value, part by part.
struct KeySql {
    /// Quoted column, type family and declared type of each key column, in key order.
    columns: Vec<(String, ColumnType, String)>,
}

impl KeySql {
    fn expr((column, t, declared): &(String, ColumnType, String)) -> String {
        if matches!(t, ColumnType::Integer | ColumnType::Blob) || declared == "uuid" {
            column.clone()
        } else {
            format!("{column} COLLATE \"C\"")
        }
    }

    /// The key in a comparison: `k`, `k COLLATE "C"`, or `(a, b COLLATE "C")`.
    fn tuple(&self) -> String {
        match self.columns.as_slice() {
            [one] => Self::expr(one),
            many => format!("({})", many.iter().map(Self::expr).collect::<Vec<_>>().join(", ")),
        }
    }

    /// The key's ORDER BY list.
    fn order(&self) -> String {
        self.columns.iter().map(Self::expr).collect::<Vec<_>>().join(", ")
    }

    /// The key columns as selected (integers as `int8`, the rest as text).
    fn select(&self) -> String {
        self.columns.iter().map(|(c, t, _)| select_expr_quoted(c, *t)).collect::<Vec<_>>().join(", ")
    }

    /// The key columns as a plain list (`ON CONFLICT`, `GROUP BY`).
    fn list(&self) -> String {
        self.columns.iter().map(|(c, ..)| c.clone()).collect::<Vec<_>>().join(", ")
    }

    fn cast(declared: &str) -> Option<&str> {
        (declared == "uuid").then_some("uuid")
    }

    /// Binds one key value: `$1` or `($1, $2)`.
    fn bind(&self, sql: &mut Sql, key: &Key) -> String {
        let placeholders: Vec<String> =
            key.values().zip(&self.columns).map(|(v, (_, _, declared))| sql.bind(&v, Self::cast(declared))).collect();
        match placeholders.as_slice() {
            [one] => one.clone(),
            many => format!("({})", many.join(", ")),
        }
    }

    /// A condition true for rows whose key is one of `keys`: `k = ANY($1)`, or
    /// `(a, b) IN (SELECT * FROM unnest($1::int8[], $2::text[]))`.
    fn one_of(&self, sql: &mut Sql, keys: &[Key]) -> String {
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, _, declared))| {
                let p = sql.bind_key_part(keys, i);
                match Self::cast(declared) {
                    Some(t) => format!("{p}::{t}[]"),
                    None => p,
                }
            })
            .collect();
        match (self.columns.as_slice(), arrays.as_slice()) {
            ([(column, ..)], [array]) => format!("{column} = ANY({array})"),
            _ => format!("({}) IN (SELECT * FROM unnest({}))", self.list(), arrays.join(", ")),
        }
    }

    fn any_null(&self) -> String {
        format!("({})", self.columns.iter().map(|(c, ..)| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR "))
    }

    fn no_null(&self) -> String {
        self.columns.iter().map(|(c, ..)| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ")
    }
}

/// A key from the first `width` columns of a row selected with [`KeySql::select`].
fn key_from_row(row: &PgRow, width: usize) -> Result<Key, sqlx::Error> {
    let mut parts = Vec::with_capacity(width);
    for i in 0..width {
        let null = || sqlx::Error::ColumnDecode { index: i.to_string(), source: "NULL key".into() };
        parts.push(match row.try_get::<Option<i64>, _>(i) {
            Ok(n) => Key::Int(n.ok_or_else(null)?),
            Err(_) => match row.try_get::<Option<String>, _>(i) {
                Ok(t) => Key::Text(t.ok_or_else(null)?),
                Err(_) => Key::Bytes(row.try_get::<Option<Vec<u8>>, _>(i)?.ok_or_else(null)?),
            },
        });
    }
    Ok(if width == 1 { parts.pop().expect("one part") } else { Key::Parts(parts) })
}

fn select_expr(column: &str, t: ColumnType) -> String {
    select_expr_quoted(&quote_ident(column), t)
}

/// [`select_expr`] of a quoted column.
fn select_expr_quoted(c: &str, t: ColumnType) -> String {
    let c = c.to_string();
    match wire(t) {
        Wire::Int => format!("{c}::int8"),
        Wire::Float => format!("{c}::float8"),
        Wire::Bool | Wire::Bytes => c,
        Wire::Text => format!("{c}::text"),
    }
}

/// The cast a text-bound parameter needs to compare with or fill a column.
fn cast_for(t: ColumnType, declared: &str) -> Option<String> {
    (wire(t) == Wire::Text && needs_cast(t, declared)).then(|| declared.to_string())
}

/// Whether text must be cast to fill a column of this type: every type but the text
/// ones. Never to `varchar(n)` or `char(n)`: an explicit cast would cut a long value
/// where assignment refuses it.
fn needs_cast(t: ColumnType, declared: &str) -> bool {
    t != ColumnType::Text || declared == "uuid"
}

/// Column `i` of a row read with [`select_expr`]: the SQL casts every column to the
/// type its wire form decodes, so the per-value type check is skipped (a value of
/// another type would still fail to decode, by its length or its UTF-8).
fn decode(row: &PgRow, i: usize, w: Wire) -> Result<Value, sqlx::Error> {
    Ok(match w {
        Wire::Int => row.try_get_unchecked::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Int),
        Wire::Float => row.try_get_unchecked::<Option<f64>, _>(i)?.map_or(Value::Null, Value::Float),
        Wire::Bool => row.try_get_unchecked::<Option<bool>, _>(i)?.map_or(Value::Null, Value::Bool),
        Wire::Bytes => row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?.map_or(Value::Null, Value::Bytes),
        Wire::Text => row.try_get_unchecked::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
    })
}

/// A value as PostgreSQL's text input of its column reads it.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) if f.is_nan() => Some("NaN".into()),
        Value::Float(f) if f.is_infinite() => Some(if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()),
        Value::Float(f) => Some(f.to_string()),
        Value::Text(s) => Some(s.clone()),
        Value::Bytes(b) => Some(b.iter().fold(String::from("\\x"), |mut s, byte| {
            let _ = write!(s, "{byte:02x}");
            s
        })),
    }
}

/// Size of the pieces a COPY's data is sent in.
const COPY_CHUNK: usize = 32 * 1024;

/// How a column travels in a binary COPY: the types whose binary form is plain (fixed
/// width numbers, a flag byte, or the bytes themselves). A table with any other column
/// type is copied in text format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binary {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    /// `text`, `varchar(n)`, `char(n)`: UTF-8 bytes; the server still applies the length.
    Text,
    Bytea,
}

/// The binary form of a column of type `declared` (`format_type`'s spelling).
fn binary_kind(declared: &str) -> Option<Binary> {
    Some(match declared {
        "smallint" => Binary::Int2,
        "integer" => Binary::Int4,
        "bigint" => Binary::Int8,
        "real" => Binary::Float4,
        "double precision" => Binary::Float8,
        "boolean" => Binary::Bool,
        "text" => Binary::Text,
        "bytea" => Binary::Bytea,
        d if d.starts_with("character varying") || d.starts_with("character(") || d == "character" => Binary::Text,
        _ => return None,
    })
}

/// Start of a binary COPY's data: signature, flags, header extension length.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// End of a binary COPY's data: a tuple of -1 fields.
const COPY_BINARY_TRAILER: &[u8] = &[0xff, 0xff];

/// Appends one row in COPY binary format. Returns false, leaving `out` partly written,
/// when a value has no exact binary form in its column (an integer out of the column's
/// range, a double out of `real`'s, a value of another family): such a batch goes in
/// text format, so that the server judges it as it would any other.
fn copy_row_binary(out: &mut Vec<u8>, row: &Row, kinds: &[Binary]) -> bool {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&(row.len() as i16).to_be_bytes());
    for (value, kind) in row.iter().zip(kinds) {
        match (value, kind) {
            (Value::Null, _) => out.extend_from_slice(&(-1i32).to_be_bytes()),
            (Value::Int(i), Binary::Int2) => match i16::try_from(*i) {
                Ok(x) => field(out, &x.to_be_bytes()),
                Err(_) => return false,
            },
            (Value::Int(i), Binary::Int4) => match i32::try_from(*i) {
                Ok(x) => field(out, &x.to_be_bytes()),
                Err(_) => return false,
            },
            (Value::Int(i), Binary::Int8) => field(out, &i.to_be_bytes()),
            (Value::Float(f), Binary::Float4) => {
                let x = *f as f32;
                // `real` refuses what overflows or underflows it; the cast would not.
                if f.is_finite() && (!x.is_finite() || (x == 0.0 && *f != 0.0)) {
                    return false;
                }
                field(out, &x.to_be_bytes())
            }
            (Value::Int(i), Binary::Float4) => field(out, &(*i as f32).to_be_bytes()),
            (Value::Float(f), Binary::Float8) => field(out, &f.to_be_bytes()),
            (Value::Int(i), Binary::Float8) => field(out, &(*i as f64).to_be_bytes()),
            (Value::Bool(b), Binary::Bool) => field(out, &[u8::from(*b)]),
            (Value::Text(s), Binary::Text) => field(out, s.as_bytes()),
            (Value::Bytes(b), Binary::Bytea) => field(out, b),
            _ => return false,
        }
    }
    true
}

/// Appends one row in COPY text format.
fn copy_row(out: &mut Vec<u8>, row: &Row) {
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        copy_value(out, value);
    }
    out.push(b'\n');
}

/// Appends one value in COPY text format.
fn copy_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => out.extend_from_slice(if *f > 0.0 { b"Infinity" } else { b"-Infinity" }),
        // The shortest text that reads back as the same double ("1.0", "1e-7", "1e16").
        Value::Float(f) => out.extend_from_slice(zmij::Buffer::new().format_finite(*f).as_bytes()),
        Value::Text(s) => {
            let mut rest = s.as_str();
            while let Some(at) = rest.find(['\\', '\t', '\n', '\r']) {
                out.extend_from_slice(&rest.as_bytes()[..at]);
                out.extend_from_slice(match rest.as_bytes()[at] {
                    b'\\' => b"\\\\",
                    b'\t' => b"\\t",
                    b'\n' => b"\\n",
                    _ => b"\\r",
                });
                rest = &rest[at + 1..];
            }
            out.extend_from_slice(rest.as_bytes());
        }
        Value::Bytes(b) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\\\x");
            for byte in b {
                out.extend_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
            }
        }
    }
}

impl PostgresConnector {
    /// WHERE clause for a scope's filter and a key range.
    async fn where_clause(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        sql: &mut Sql,
    ) -> Result<String, ConnectorError> {
        let schema = self.schema_of(&scope.table).await?;
        let key = self.key_sql_of(&schema, scope)?;
        let mut parts = Vec::new();
        for (column, value) in &scope.filter {
            let c = schema.column(column).ok_or_else(|| ConnectorError::Schema(format!("no column {column}")))?;
            let p = sql.bind(value, cast_for(c.column_type, &c.declared_type).as_deref());
            parts.push(format!("{} = {p}", quote_ident(column)));
        }
        if scope.skip_null_keys {
            parts.push(key.no_null());
        }
        if !scope.skip_keys.is_empty() {
            parts.push(format!("NOT ({})", key.one_of(sql, &scope.skip_keys)));
        }
        if let Some(after) = &range.after {
            let p = key.bind(sql, after);
            parts.push(format!("{} > {p}", key.tuple()));
        }
        if let Some(upto) = &range.upto {
            let p = key.bind(sql, upto);
            parts.push(format!("{} <= {p}", key.tuple()));
        }
        Ok(if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) })
    }

    /// COPYs `rows` into the scope's table, in binary format with the columns' `binary`
    /// forms, else in text. Returns false, having sent nothing that stays, when a value
    /// has no binary form in its column.
    async fn copy_in(&self, scope: &TableScope, rows: &[Row], binary: Option<&[Binary]>) -> Result<bool, sqlx::Error> {
        let columns = scope.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let format = if binary.is_some() { " (FORMAT binary)" } else { "" };
        let copy = format!("COPY {} ({columns}) FROM STDIN{format}", self.table_ref(&scope.table));
        self.log_sql(&copy);
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.pool.acquire().await?;
        let mut copy_in = conn.copy_in_raw(&copy).await?;
        // Rows go out in pieces of about COPY_CHUNK bytes as they are encoded, so the
        // server parses one piece while the next is being written; PostgreSQL also takes
        // pieces of its input buffer's size much faster than one large message.
        let mut data = Vec::with_capacity(COPY_CHUNK + 4096);
        if binary.is_some() {
            data.extend_from_slice(COPY_BINARY_HEADER);
        }
        for (i, row) in rows.iter().enumerate() {
            match binary {
                Some(kinds) => {
                    if !copy_row_binary(&mut data, row, kinds) {
                        copy_in.abort("a value has no binary form; sending the batch as text").await?;
                        return Ok(false);
                    }
                }
                None => copy_row(&mut data, row),
            }
            let last = i + 1 == rows.len();
            if last && binary.is_some() {
                data.extend_from_slice(COPY_BINARY_TRAILER);
            }
            if data.len() >= COPY_CHUNK || last {
                if let Err(e) = copy_in.send(data.as_slice()).await {
                    let _ = copy_in.abort("send failed").await;
                    return Err(e);
                }
                data.clear();
            }
        }
        crate::failpoint::hit("mid_write");
        copy_in.finish().await?;
        Ok(true)
    }

    /// The scope's key columns as SQL.
    async fn key_sql(&self, scope: &TableScope) -> Result<KeySql, ConnectorError> {
        let schema = self.schema_of(&scope.table).await?;
        self.key_sql_of(&schema, scope)
    }

    /// [`Self::key_sql`] from the table's schema at hand.
    fn key_sql_of(&self, schema: &TableSchema, scope: &TableScope) -> Result<KeySql, ConnectorError> {
        let columns = scope
            .key_columns()
            .into_iter()
            .map(|name| {
                let c = schema.column(name).ok_or_else(|| {
                    ConnectorError::Schema(format!("{}: no key column {name} in {}", self.endpoint, scope.table))
                })?;
                Ok((quote_ident(name), c.column_type, c.declared_type.clone()))
            })
            .collect::<Result<_, ConnectorError>>()?;
        Ok(KeySql { columns })
    }

    async fn fetch_keys(&self, sql: Sql, width: usize) -> Result<Vec<Key>, ConnectorError> {
        self.log_sql(&sql.text);
        let rows =
            sqlx::query_with(AssertSqlSafe(sql.text), sql.args).fetch_all(&self.pool).await.map_err(self.err())?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            keys.push(key_from_row(row, width).map_err(self.err())?);
        }
        self.counters.record_read(keys.len(), keys.len() * 8);
        Ok(keys)
    }

    async fn fetch_rows(&self, sql: Sql, wires: &[Wire]) -> Result<Vec<Row>, ConnectorError> {
        self.log_sql(&sql.text);
        let rows =
            sqlx::query_with(AssertSqlSafe(sql.text), sql.args).fetch_all(&self.pool).await.map_err(self.err())?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        for row in &rows {
            let mut values = Vec::with_capacity(wires.len());
            for (i, w) in wires.iter().enumerate() {
                let v = decode(row, i, *w).map_err(self.err())?;
                bytes += v.wire_size();
                values.push(v);
            }
            out.push(values);
        }
        self.counters.record_read(out.len(), bytes);
        Ok(out)
    }

    async fn fetch_count(&self, sql: Sql) -> Result<u64, ConnectorError> {
        self.log_sql(&sql.text);
        self.counters.record_read(1, 8);
        let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(sql.text), sql.args)
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(n as u64)
    }

    async fn select_list(&self, scope: &TableScope) -> Result<(String, Vec<Wire>), ConnectorError> {
        let types = self.types(scope).await?;
        let list =
            scope.columns.iter().zip(&types).map(|(c, (t, _))| select_expr(c, *t)).collect::<Vec<_>>().join(", ");
        Ok((list, types.iter().map(|(t, _)| wire(*t)).collect()))
    }
}

#[async_trait]
impl Connector for PostgresConnector {
    fn describe_endpoint(&self) -> String {
        self.endpoint.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            offset_in_range: true,
            writable: self.side == Side::Target,
            transactional_batches: true,
            // Two COPYs at once keep the server busy while the next batch is sent and
            // checkpointed; more only add contention on the same table and index.
            concurrent_writes: (self.pool.options().get_max_connections() as usize).clamp(1, 2),
        }
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        self.counters.record_read(0, 0);
        let columns = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text, a.attnotnull, a.atthasdef \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(&self.schema)
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        if columns.is_empty() {
            return Ok(None);
        }
        let mut schema = TableSchema { name: table.to_string(), columns: Vec::new(), unique_keys: Vec::new() };
        for row in &columns {
            let typname: String = row.try_get(2).map_err(self.err())?;
            let declared_type: String = row.try_get(1).map_err(self.err())?;
            schema.columns.push(ColumnSchema {
                name: row.try_get(0).map_err(self.err())?,
                storage: storage(&typname, &declared_type),
                declared_type,
                column_type: column_type(&typname),
                nullable: !row.try_get::<bool, _>(3).map_err(self.err())?,
                has_default: row.try_get(4).map_err(self.err())?,
            });
        }
        // Each unique index without a predicate, as its key columns in index order; an
        // index on an expression (attnum 0) joins no column and is left out.
        schema.unique_keys = sqlx::query_scalar(
            "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indpred IS NULL \
               AND k.ord <= i.indnkeyatts \
             GROUP BY i.indexrelid, i.indisprimary, i.indnkeyatts \
             HAVING count(*) = i.indnkeyatts \
             ORDER BY i.indisprimary DESC, i.indexrelid",
        )
        .bind(&self.schema)
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        self.tables.lock().expect("lock").insert(table.to_string(), schema.clone());
        Ok(Some(schema))
    }

    async fn create_table(&self, name: &str, columns: &[ColumnSchema], keys: &[String]) -> Result<(), ConnectorError> {
        let type_name = |t: ColumnType| match t {
            ColumnType::Integer => "bigint",
            ColumnType::Float => "double precision",
            ColumnType::Decimal => "numeric",
            ColumnType::Boolean => "boolean",
            ColumnType::Blob => "bytea",
            ColumnType::Date => "date",
            ColumnType::Time => "time",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "jsonb",
            ColumnType::Text | ColumnType::Other => "text",
        };
        let sql =
            format!("CREATE TABLE {} ({})", self.table_ref(name), super::column_definitions(columns, keys, type_name));
        self.log_sql(&sql);
        sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await.map_err(self.err())?;
        Ok(())
    }

    async fn foreign_keys(&self, tables: &[String]) -> Result<Vec<(String, String)>, ConnectorError> {
        let pairs: Vec<(String, String)> = sqlx::query_as(
            "SELECT child.relname::text, parent.relname::text FROM pg_constraint k \
             JOIN pg_class child ON child.oid = k.conrelid \
             JOIN pg_class parent ON parent.oid = k.confrelid \
             JOIN pg_namespace n ON n.oid = child.relnamespace \
             WHERE k.contype = 'f' AND n.nspname = $1 AND child.relname = ANY($2) AND parent.relname = ANY($2) \
               AND child.oid <> parent.oid",
        )
        .bind(&self.schema)
        .bind(tables)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(pairs)
    }

    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<KeyProblems, ConnectorError> {
        let raw = TableScope { skip_null_keys: false, skip_keys: Vec::new(), ..scope.clone() };
        let key = self.key_sql(&raw).await?;
        let width = raw.key_indexes.len();
        let table = self.table_ref(&raw.table);
        let mut sql = Sql::new("");
        let w = self.where_clause(&raw, &KeyRange::all(), &mut sql).await?;
        let and = if w.is_empty() { " WHERE" } else { " AND" };
        sql.text = format!("SELECT count(*) FROM {table}{w}{and} {}", key.any_null());
        let null_rows = self.fetch_count(sql).await?;
        let mut found = Vec::new();
        if duplicates {
            let mut sql = Sql::new("");
            let w = self.where_clause(&raw, &KeyRange::all(), &mut sql).await?;
            sql.text = format!(
                "SELECT {}, count(*)::int8 FROM {table}{w}{and} {} GROUP BY {} HAVING count(*) > 1 ORDER BY {} \
                 LIMIT {limit}",
                key.select(),
                key.no_null(),
                key.list(),
                key.order()
            );
            self.log_sql(&sql.text);
            let rows =
                sqlx::query_with(AssertSqlSafe(sql.text), sql.args).fetch_all(&self.pool).await.map_err(self.err())?;
            for row in &rows {
                let found_key = key_from_row(row, width).map_err(self.err())?;
                found.push((found_key, row.try_get::<i64, _>(width).map_err(self.err())? as u64));
            }
        }
        Ok(KeyProblems { null_rows, duplicates: found })
    }

    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, range, &mut sql).await?;
        sql.text = format!("SELECT count(*) FROM {}{w}", self.table_ref(&scope.table));
        self.fetch_count(sql).await
    }

    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        let key = self.key_sql(scope).await?;
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, range, &mut sql).await?;
        sql.text = format!(
            "SELECT {} FROM {}{w} ORDER BY {} LIMIT 1 OFFSET {offset}",
            key.select(),
            self.table_ref(&scope.table),
            key.order()
        );
        Ok(self.fetch_keys(sql, scope.key_indexes.len()).await?.into_iter().next())
    }

    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        let key = self.key_sql(scope).await?;
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, range, &mut sql).await?;
        sql.text = format!(
            "SELECT {} FROM {}{w} ORDER BY {} LIMIT {limit}",
            key.select(),
            self.table_ref(&scope.table),
            key.order()
        );
        Ok(Page::up_to(self.fetch_keys(sql, scope.key_indexes.len()).await?, limit))
    }

    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        let key = self.key_sql(scope).await?;
        let (list, wires) = self.select_list(scope).await?;
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, range, &mut sql).await?;
        sql.text =
            format!("SELECT {list} FROM {}{w} ORDER BY {} LIMIT {limit}", self.table_ref(&scope.table), key.order());
        Ok(Page::up_to(self.fetch_rows(sql, &wires).await?, limit))
    }

    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key_sql(scope).await?;
        let (list, wires) = self.select_list(scope).await?;
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, &KeyRange::all(), &mut sql).await?;
        let one_of = key.one_of(&mut sql, keys);
        let and = if w.is_empty() { " WHERE" } else { " AND" };
        sql.text = format!("SELECT {list} FROM {}{w}{and} {one_of}", self.table_ref(&scope.table));
        self.fetch_rows(sql, &wires).await
    }

    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        let m = scope.modify_index.ok_or_else(|| ConnectorError::Schema("no modify column".into()))?;
        let types = self.types(scope).await?;
        let (list, wires) = self.select_list(scope).await?;
        let modify = quote_ident(&scope.columns[m]);
        let cast = cast_for(types[m].0, &types[m].1);
        let key_sql = self.key_sql(scope).await?;
        let key = key_sql.order();
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, &KeyRange::all(), &mut sql).await?;
        let mut cond = vec![format!("{modify} IS NOT NULL")];
        match (&cursor.modify_id, &cursor.key) {
            (Some(v), Some(k)) => {
                let a = sql.bind(v, cast.as_deref());
                let b = sql.bind(v, cast.as_deref());
                let c = key_sql.bind(&mut sql, k);
                cond.push(format!("({modify} > {a} OR ({modify} = {b} AND {} > {c}))", key_sql.tuple()));
            }
            (Some(v), None) => {
                let a = sql.bind(v, cast.as_deref());
                cond.push(format!("{modify} >= {a}"));
            }
            (None, _) => {}
        }
        let and = if w.is_empty() { " WHERE " } else { " AND " };
        sql.text = format!(
            "SELECT {list} FROM {}{w}{and}{} ORDER BY {modify}, {key} LIMIT {limit}",
            self.table_ref(&scope.table),
            cond.join(" AND ")
        );
        Ok(Page::up_to(self.fetch_rows(sql, &wires).await?, limit))
    }

    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        let Some(m) = scope.modify_index else { return Ok(0) };
        let types = self.types(scope).await?;
        let modify = quote_ident(&scope.columns[m]);
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, &KeyRange::all(), &mut sql).await?;
        let cond = match modify_id {
            Some(v) => format!("{modify} > {}", sql.bind(v, cast_for(types[m].0, &types[m].1).as_deref())),
            None => format!("{modify} IS NOT NULL"),
        };
        let and = if w.is_empty() { " WHERE " } else { " AND " };
        sql.text = format!("SELECT count(*) FROM {}{w}{and}{cond}", self.table_ref(&scope.table));
        self.fetch_count(sql).await
    }

    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        let Some(m) = scope.modify_index else { return Ok(0) };
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, &KeyRange::all(), &mut sql).await?;
        let and = if w.is_empty() { " WHERE " } else { " AND " };
        sql.text = format!(
            "SELECT count(*) FROM {}{w}{and}{} IS NULL",
            self.table_ref(&scope.table),
            quote_ident(&scope.columns[m])
        );
        self.fetch_count(sql).await
    }

    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        let Some(m) = scope.modify_index else { return Ok(None) };
        let types = self.types(scope).await?;
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, &KeyRange::all(), &mut sql).await?;
        sql.text = format!(
            "SELECT {} FROM (SELECT max({}) AS {} FROM {}{w}) m",
            select_expr(&scope.columns[m], types[m].0),
            quote_ident(&scope.columns[m]),
            quote_ident(&scope.columns[m]),
            self.table_ref(&scope.table)
        );
        let rows = self.fetch_rows(sql, &[wire(types[m].0)]).await?;
        Ok(rows.into_iter().next().and_then(|r| r.into_iter().next()).filter(|v| !v.is_null()))
    }

    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        if self.side != Side::Target {
            return Err(ConnectorError::Other("refusing to write to the source".into()));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        // One statement, one round trip, atomic on its own: every column travels as one
        // array parameter and `unnest` turns them back into rows.
        let types = self.types(scope).await?;
        let mut sql = Sql::new("");
        let mut selects = Vec::with_capacity(scope.columns.len());
        let mut casts = Vec::with_capacity(scope.columns.len());
        for (i, (t, declared)) in types.iter().enumerate() {
            let (p, as_text) = sql.bind_column(rows, i, *t);
            selects.push(if as_text { format!("{p}::text[]") } else { p });
            // Text arrays are cast to the column's type; typed arrays assign as they are.
            casts.push(if as_text && needs_cast(*t, declared) { format!("c{i}::{declared}") } else { format!("c{i}") });
        }
        let names: Vec<String> = (0..scope.columns.len()).map(|i| format!("c{i}")).collect();
        let columns = scope.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let updates: Vec<String> = scope
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !scope.is_key(*i))
            .map(|(_, c)| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        let conflict =
            if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        sql.text = format!(
            "INSERT INTO {} ({columns}) SELECT {} FROM unnest({}) AS u({}) ON CONFLICT ({}) {conflict}",
            self.table_ref(&scope.table),
            casts.join(", "),
            selects.join(", "),
            names.join(", "),
            scope.key_columns().into_iter().map(quote_ident).collect::<Vec<_>>().join(", ")
        );
        self.log_sql(&sql.text);
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::failpoint::hit("mid_write");
        sqlx::query_with(AssertSqlSafe(sql.text), sql.args).execute(&self.pool).await.map_err(self.err())?;
        self.counters.rows_written.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(rows.len() as u64)
    }

    async fn insert_new(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        if self.side != Side::Target {
            return Err(ConnectorError::Other("refusing to write to the source".into()));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        // Straight COPY into the table, the fastest load PostgreSQL has; one COPY is atomic
        // on its own. A key that exists after all (unique violation, SQLSTATE 23505)
        // fails the whole COPY, and the batch is written again as an upsert. Tables of
        // plain column types go in binary format, which spares the server parsing text
        // (about a third of its time); a batch with a value that has no exact binary form
        // goes in text.
        let types = self.types(scope).await?;
        let binary: Option<Vec<Binary>> = types.iter().map(|(_, declared)| binary_kind(declared)).collect();
        let mut result = match &binary {
            Some(kinds) => self.copy_in(scope, rows, Some(kinds)).await,
            None => Ok(false),
        };
        if matches!(result, Ok(false)) {
            result = self.copy_in(scope, rows, None).await;
        }
        match result {
            Ok(_) => {
                self.counters.rows_written.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(rows.len() as u64)
            }
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => self.upsert(scope, rows).await,
            Err(e) => Err(self.err()(e)),
        }
    }

    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        if self.side != Side::Target {
            return Err(ConnectorError::Other("refusing to delete from the source".into()));
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let mut sql = Sql::new("");
        let w = self.where_clause(scope, &KeyRange::all(), &mut sql).await?;
        let one_of = self.key_sql(scope).await?.one_of(&mut sql, keys);
        let and = if w.is_empty() { " WHERE" } else { " AND" };
        sql.text = format!("DELETE FROM {}{w}{and} {one_of}", self.table_ref(&scope.table));
        self.log_sql(&sql.text);
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        let result = sqlx::query_with(AssertSqlSafe(sql.text), sql.args).execute(&mut *tx).await.map_err(self.err())?;
        crate::failpoint::hit("mid_write");
        tx.commit().await.map_err(self.err())?;
        let n = result.rows_affected();
        self.counters.rows_written.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as PostgreSQL's text input reads them (bytea in hex form).
    #[test]
    fn text_input_format() {
        assert_eq!(text_of(&Value::Bytes(vec![0, 255])).as_deref(), Some("\\x00ff"));
        assert_eq!(text_of(&Value::Float(f64::NAN)).as_deref(), Some("NaN"));
        assert_eq!(text_of(&Value::Null), None);
        assert_eq!(text_of(&Value::Bool(true)).as_deref(), Some("true"));
    }

    /// COPY text format escapes what it must and writes NULL and bytea as PostgreSQL reads them.
    #[test]
    fn copy_text_format() {
        let mut out = Vec::new();
        for v in [
            Value::Text("a\tb\\c\nd\ré".into()),
            Value::Null,
            Value::Bytes(vec![0, 255]),
            Value::Bool(true),
            Value::Float(f64::NAN),
        ] {
            copy_value(&mut out, &v);
            out.push(b'|');
        }
        assert_eq!(String::from_utf8(out).unwrap(), "a\\tb\\\\c\\nd\\ré|\\N|\\\\x00ff|t|NaN|");
    }

    /// Numbers go out as text that reads back as the same value.
    #[test]
    fn copy_numbers() {
        let text = |v: Value| {
            let mut out = Vec::new();
            copy_value(&mut out, &v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(Value::Int(i64::MIN)), "-9223372036854775808");
        for f in [0.1, -2.5, 1.0, 1e-7, 123456789.125, 1e300, f64::MIN_POSITIVE, -0.0] {
            let out = text(Value::Float(f));
            let back: f64 = out.parse().unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{f} went out as {out}");
        }
    }

    /// Binary COPY rows: field count, then each field's length and big-endian bytes (-1
    /// for NULL); a value without an exact binary form refuses the row.
    #[test]
    fn copy_binary_rows() {
        use Binary::*;
        let kinds = [Int2, Int4, Int8, Float4, Float8, Bool, Text, Bytea];
        let row = vec![
            Value::Int(-2),
            Value::Int(70000),
            Value::Null,
            Value::Float(1.5),
            Value::Int(3),
            Value::Bool(true),
            Value::Text("é".into()),
            Value::Bytes(vec![0, 255]),
        ];
        let mut out = Vec::new();
        assert!(copy_row_binary(&mut out, &row, &kinds));
        let mut expected = vec![0, 8];
        for field in [
            &[0xff, 0xfe][..],
            &70000i32.to_be_bytes(),
            &[],
            &1.5f32.to_be_bytes(),
            &3.0f64.to_be_bytes(),
            &[1],
            "é".as_bytes(),
            &[0, 255],
        ] {
            if field.is_empty() {
                expected.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                expected.extend_from_slice(&(field.len() as i32).to_be_bytes());
                expected.extend_from_slice(field);
            }
        }
        assert_eq!(out, expected);
        for (value, kind) in [
            (Value::Int(40000), Int2),
            (Value::Int(1 << 40), Int4),
            (Value::Float(1e300), Float4),
            (Value::Float(1e-50), Float4),
            (Value::Text("1".into()), Int8),
            (Value::Int(1), Text),
        ] {
            assert!(!copy_row_binary(&mut Vec::new(), &vec![value.clone()], &[kind]), "{value:?} as {kind:?}");
        }
        assert_eq!(binary_kind("character varying(5)"), Some(Text));
        assert_eq!(binary_kind("numeric(10,2)"), None);
        assert_eq!(COPY_BINARY_HEADER.len(), 19);
    }

    /// Type names map onto families; text keys sort with `COLLATE "C"`, integers without.
    #[test]
    fn types_and_key_order() {
        assert_eq!(column_type("int4"), ColumnType::Integer);
        assert_eq!(column_type("numeric"), ColumnType::Decimal);
        assert_eq!(column_type("timestamptz"), ColumnType::Timestamp);
        assert_eq!(column_type("jsonb"), ColumnType::Json);
        let key = |columns: &[(&str, ColumnType, &str)]| KeySql {
            columns: columns.iter().map(|(c, t, d)| (quote_ident(c), *t, d.to_string())).collect(),
        };
        assert_eq!(key(&[("k", ColumnType::Integer, "bigint")]).tuple(), "\"k\"");
        assert_eq!(key(&[("k", ColumnType::Text, "text")]).tuple(), "\"k\" COLLATE \"C\"");
        assert_eq!(key(&[("k", ColumnType::Text, "uuid")]).tuple(), "\"k\"");
        let compound = key(&[("a", ColumnType::Integer, "integer"), ("b", ColumnType::Text, "text")]);
        assert_eq!(compound.tuple(), "(\"a\", \"b\" COLLATE \"C\")");
        assert_eq!(compound.order(), "\"a\", \"b\" COLLATE \"C\"");
        let mut sql = Sql::new("");
        let keys = [Key::Parts(vec![Key::Int(1), Key::Text("x".into())])];
        assert_eq!(compound.one_of(&mut sql, &keys), "(\"a\", \"b\") IN (SELECT * FROM unnest($1, $2))");
        assert_eq!(compound.bind(&mut sql, &keys[0]), "($3, $4)");
    }
}
