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
//!
//! The parts: `types.rs` maps PostgreSQL types onto db-sync's and decodes rows; `sql.rs`
//! builds statements with bound parameters, key SQL and WHERE clauses; `copy.rs` encodes
//! rows for COPY and streams them in. This file opens the pool, classifies errors and
//! implements [`Connector`] from those parts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::sql_log::{Logged, Rows, StatementKind, rows_text, values_text};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{AssertSqlSafe, Row as _};

use super::{
    Capabilities, ConnectOptions, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page, Side,
};
use crate::config::{Endpoint, redact_url};
use crate::model::{ColumnSchema, ColumnType, Key, KeyRange, Row, TableSchema, TableScope, Value};

mod copy;
mod sql;
mod types;

use copy::{Binary, binary_kind};
use sql::Sql;
use types::{Wire, cast_for, decode, key_from_row, needs_cast, select_expr, wire};
pub use types::{column_type, storage};

pub use super::quote_ident;

/// A PostgreSQL schema reached through a connection pool.
pub struct PostgresConnector {
    /// The session: a pool of connections, replaced as a whole by [`Connector::connect`].
    pool: std::sync::RwLock<PgPool>,
    /// How to open a new pool (holds the password; never printed).
    pool_options: (PgConnectOptions, u32, Duration),
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
/// isolate them), 28 authentication, 40 transaction rollback (serialization failures,
/// deadlocks: busy, retried), 42 syntax or undefined objects, 53 resources (53300 too many
/// connections: busy), 55 object state, 57 operator intervention. Every
/// message keeps the SQLSTATE; none holds a secret (sqlx never echoes the URL).
fn classify(endpoint: &str, e: sqlx::Error) -> ConnectorError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let message = db.message().to_string();
            let detail = format!("{message} (SQLSTATE {code})");
            match code.get(..2) {
                // Too many connections: the session is fine, the server is busy.
                _ if code == "53300" => ConnectorError::Busy { endpoint: endpoint.to_string(), message: detail },
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

/// One plain connection, closed again: it names why a server cannot be reached
/// (connection refused, no such host, the server's authentication error) where a pool
/// would only report "pool timed out" after its acquire timeout.
async fn first_connection(options: &PgConnectOptions, timeout: Duration, endpoint: &str) -> Result<(), ConnectorError> {
    let first = <sqlx::PgConnection as sqlx::Connection>::connect_with(options);
    match tokio::time::timeout(timeout, first).await {
        Ok(Ok(first)) => {
            let _ = sqlx::Connection::close(first).await;
            Ok(())
        }
        Ok(Err(e)) => Err(classify(endpoint, e)),
        Err(_) => Err(ConnectorError::Connection {
            endpoint: endpoint.to_string(),
            message: format!("no answer within {} (`timeout`)", humantime::format_duration(timeout)),
        }),
    }
}

/// A pool of `size` connections made with `options`, each acquire waiting at most
/// `timeout`. sqlx has no TCP keepalive setting; a stalled connection is ended by the
/// resilience layer's deadline on each call, which then replaces the pool.
async fn new_pool((options, size, timeout): &(PgConnectOptions, u32, Duration)) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new().max_connections(*size).acquire_timeout(*timeout).connect_with(options.clone()).await
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
        // The server gives up on a statement when db-sync does (`timeout`), so a call
        // abandoned at its deadline (a lock wait, a slow link) does not run on and commit
        // behind a retry; `statement_timeout_secs` overrides it. An abandoned transaction is
        // ended the same way.
        let deadline = endpoint.resilience.timeout;
        let statement_timeout = endpoint.statement_timeout.unwrap_or(deadline);
        connect = connect.options([
            ("statement_timeout", format!("{}ms", statement_timeout.as_millis())),
            ("idle_in_transaction_session_timeout", format!("{}ms", deadline.as_millis())),
        ]);
        // sqlx's own warnings would repeat each failure the resilience layer reports, and
        // slow statements (any call over a second on a slow link) in full.
        connect = sqlx::ConnectOptions::log_slow_statements(connect, log::LevelFilter::Off, Duration::from_secs(1));
        let timeout = if raw.timeout.is_some() { deadline } else { Duration::from_secs(30) };
        first_connection(&connect, timeout, &described).await?;
        let pool_options = (connect, raw.pool_size.unwrap_or(4).max(1), timeout);
        let pool = new_pool(&pool_options).await.map_err(|e| classify(&described, e))?;
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
            pool: std::sync::RwLock::new(pool),
            pool_options,
            schema,
            endpoint: described,
            side,
            options,
            counters: IoCounters::default(),
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// The current pool (a handle: cheap to clone).
    fn pool(&self) -> PgPool {
        self.pool.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        move |e| classify(&self.endpoint, e)
    }

    fn table_ref(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    /// Logs `sql` as the debug switches ask; `values()` (under `show_sql_values`) names the
    /// bound values where this connector still has them (rows and keys of writes).
    fn log_sql(&self, kind: StatementKind, sql: &str, values: impl FnOnce() -> String) -> Logged {
        self.options.sql.statement(self.side, &format!("{} pool", self.endpoint), kind, sql, values)
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

    async fn fetch_keys(&self, sql: Sql, width: usize) -> Result<Vec<Key>, ConnectorError> {
        let logged = self.log_sql(StatementKind::Read, &sql.text, || NOT_KEPT.to_string());
        let rows =
            sqlx::query_with(AssertSqlSafe(sql.text), sql.args).fetch_all(&self.pool()).await.map_err(self.err())?;
        logged.done(Rows::Returned(rows.len() as u64));
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            keys.push(key_from_row(row, width).map_err(self.err())?);
        }
        self.counters.record_read(keys.len(), keys.len() * 8);
        Ok(keys)
    }

    async fn fetch_rows(&self, sql: Sql, wires: &[Wire]) -> Result<Vec<Row>, ConnectorError> {
        let logged = self.log_sql(StatementKind::Read, &sql.text, || NOT_KEPT.to_string());
        let rows =
            sqlx::query_with(AssertSqlSafe(sql.text), sql.args).fetch_all(&self.pool()).await.map_err(self.err())?;
        logged.done(Rows::Returned(rows.len() as u64));
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
        let logged = self.log_sql(StatementKind::Read, &sql.text, || NOT_KEPT.to_string());
        self.counters.record_read(1, 8);
        let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(sql.text), sql.args)
            .fetch_one(&self.pool())
            .await
            .map_err(self.err())?;
        logged.done(Rows::Returned(1));
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
            costly_round_trips: false,
            writable: self.side == Side::Target,
            transactional_batches: true,
            // Two COPYs at once keep the server busy while the next batch is sent and
            // checkpointed; more only add contention on the same table and index.
            concurrent_writes: (self.pool().options().get_max_connections() as usize).clamp(1, 2),
        }
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    /// A new pool replaces the old one, which is closed in the background: its
    /// connections may be broken or stalled, and calls still holding one fail on their own.
    async fn connect(&self) -> Result<(), ConnectorError> {
        let (options, _, timeout) = &self.pool_options;
        first_connection(options, *timeout, &self.endpoint).await?;
        let pool = new_pool(&self.pool_options).await.map_err(self.err())?;
        sqlx::query("SELECT 1").execute(&pool).await.map_err(self.err())?;
        let old = std::mem::replace(&mut *self.pool.write().unwrap_or_else(|e| e.into_inner()), pool);
        tokio::spawn(async move { old.close().await });
        Ok(())
    }

    async fn health_check(&self) -> Result<(), ConnectorError> {
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sqlx::query("SELECT 1").execute(&self.pool()).await.map_err(self.err())?;
        Ok(())
    }

    async fn close(&self) {
        self.pool().close().await;
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
        .fetch_all(&self.pool())
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
        .fetch_all(&self.pool())
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
        let logged = self.log_sql(StatementKind::Write, &sql, String::new);
        sqlx::query(AssertSqlSafe(sql)).execute(&self.pool()).await.map_err(self.err())?;
        logged.done(Rows::Affected(0));
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
        .fetch_all(&self.pool())
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
            let logged = self.log_sql(StatementKind::Read, &sql.text, || NOT_KEPT.to_string());
            let rows = sqlx::query_with(AssertSqlSafe(sql.text), sql.args)
                .fetch_all(&self.pool())
                .await
                .map_err(self.err())?;
            logged.done(Rows::Returned(rows.len() as u64));
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
        let logged = self.log_sql(StatementKind::Write, &sql.text, || rows_text(rows));
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::failpoint::hit("mid_write");
        let result =
            sqlx::query_with(AssertSqlSafe(sql.text), sql.args).execute(&self.pool()).await.map_err(self.err())?;
        logged.done(Rows::Affected(result.rows_affected()));
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
        let logged = self.log_sql(StatementKind::Write, &sql.text, || values_text(keys));
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tx = self.pool().begin().await.map_err(self.err())?;
        let result = sqlx::query_with(AssertSqlSafe(sql.text), sql.args).execute(&mut *tx).await.map_err(self.err())?;
        crate::failpoint::hit("mid_write");
        tx.commit().await.map_err(self.err())?;
        logged.done(Rows::Affected(result.rows_affected()));
        let n = result.rows_affected();
        self.counters.rows_written.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// What `show_sql_values` shows for a read: its bound values live only in sqlx's encoded
/// arguments, which this connector does not keep.
const NOT_KEPT: &str = "(bound values of reads are not kept by the PostgreSQL connector)";
