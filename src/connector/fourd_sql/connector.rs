//! The [`Connector`] over 4D's SQL server. Every call is one or a few statements on a leased
//! session from a small pool (`pool_size`, default 2: 4D licences are scarce); values always
//! travel as bound parameters (`docs/4d-sql.md` §4.2, §9.2) and names in brackets (§9.1).
//!
//! | call | statement |
//! |---|---|
//! | `describe` | `_USER_COLUMNS` and the primary-key constraint (§9.6) |
//! | `count` | `SELECT COUNT(*) FROM [T] WHERE …` |
//! | `key_at` | `SELECT [K] FROM [T] WHERE … ORDER BY [K] OFFSET n LIMIT 1` (4D's order, §9.3) |
//! | `read_keys`, `read_rows` | keyset pages `WHERE [K] > ? … ORDER BY [K] LIMIT n` |
//! | `read_rows_by_keys`, `delete` | `[K] IN (?, …)` in chunks |
//! | `upsert` | the existing keys, then `START`, `UPDATE`/`INSERT` per row, `COMMIT` (§9.4), pipelined |
//!
//! **Keys** are one column: an integer, text or UUID. 4D's SQL engine orders text
//! linguistically and may compare it ignoring case (§9.7) while db-sync orders keys by
//! bytes, so for a text or UUID key the connector reads the table's keys once and answers
//! counts, offsets and key pages from that byte-sorted list ([`KeyLists`]); rows are then
//! read by key (`IN`), keeping only rows whose key is byte-equal to one asked for. Before a
//! write or delete it looks the keys up: a key 4D answers that was not asked for is one 4D
//! cannot tell apart from an asked one (a database set to compare text ignoring case), and
//! the batch is refused as a data error naming both, never written to the wrong row.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::session::{Answer, SqlSession};
use super::values::{self, COLUMNS_SQL, KEY_SQL, SqlType, quote};
use super::wire::{Cell, VkType};
use crate::config::Endpoint;
use crate::connector::key_list::{self, KeyLists};
use crate::connector::sql_log::{Logged, Rows, StatementKind, values_text};
use crate::connector::{
    Capabilities, ConnectOptions, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page, Side,
};
use crate::model::{ColumnSchema, Key, KeyRange, Row, TableSchema, TableScope, Value};

/// 4D's SQL server port when the connection gives none.
pub const DEFAULT_PORT: u16 = 19812;

/// Keys per `IN (…)` list.
const IN_CHUNK: usize = 500;

/// Write statements sent before their replies are read (one round trip for each this many).
/// Their replies are a few dozen bytes each, so the server never waits on a full socket.
const PIPELINE: usize = 200;

/// Rows per page of a result read without a limit (counts, key lists).
const PAGE: u64 = 10_000;

/// A table's 4D column types.
type Types = Arc<HashMap<String, SqlType>>;

/// 4D over its SQL network protocol.
pub struct FourDSql {
    host: String,
    port: u16,
    user: String,
    password: String,
    endpoint: String,
    side: Side,
    options: ConnectOptions,
    connect_timeout: Duration,
    idle: Mutex<Vec<SqlSession>>,
    slots: tokio::sync::Semaphore,
    /// Sessions logged in now (idle or leased).
    open: std::sync::atomic::AtomicUsize,
    counters: IoCounters,
    tables: Mutex<HashMap<String, Types>>,
    /// Byte-sorted keys of scopes with a text or UUID key.
    key_lists: KeyLists,
}

/// `1 4D SQL session`, `2 idle 4D SQL sessions`.
fn sessions_text(count: usize, kind: &str) -> String {
    format!("{count} {kind}4D SQL session{}", if count == 1 { "" } else { "s" })
}

/// A session taken from the pool; back to the pool when dropped after its exchange
/// finished with the stream in step. A lease dropped mid-exchange (a call cancelled by its
/// deadline) drops its session: the rest of that reply would come first on the stream.
struct Lease<'a> {
    pool: &'a FourDSql,
    session: Option<SqlSession>,
    finished: bool,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        match self.session.take() {
            Some(session) if self.finished && session.usable() => {
                self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(session);
            }
            Some(_) => {
                let open = self.pool.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) - 1;
                self.pool.event(&format!("4D SQL session dropped: its exchange did not finish in step ({open} open)"));
            }
            None => {}
        }
    }
}

impl Lease<'_> {
    fn session(&mut self) -> &mut SqlSession {
        self.session.as_mut().expect("a lease holds its session until dropped")
    }
}

/// A statement's `WHERE` text and its parameters.
#[derive(Default)]
struct Where {
    parts: Vec<String>,
    params: Vec<(VkType, Cell)>,
}

impl Where {
    fn sql(&self) -> String {
        if self.parts.is_empty() { String::new() } else { format!(" WHERE {}", self.parts.join(" AND ")) }
    }
}

impl FourDSql {
    /// A connector for `endpoint` (`host`, `port`, `user`, `password`, `pool_size`); logs in
    /// once to check the credentials.
    pub async fn open(endpoint: &Endpoint, side: Side, options: ConnectOptions) -> Result<FourDSql, ConnectorError> {
        let raw = &endpoint.raw;
        let described = format!("{} {}", side.name(), endpoint.describe());
        let host = raw.host.clone().ok_or_else(|| {
            ConnectorError::Config(format!("{described}: a 4D SQL connection needs `host` (and `port`, default 19812)"))
        })?;
        let connector = FourDSql {
            host,
            port: raw.port.unwrap_or(DEFAULT_PORT),
            user: raw.user.clone().unwrap_or_default(),
            password: raw.password.clone().unwrap_or_default(),
            endpoint: described,
            side,
            options,
            connect_timeout: endpoint.resilience.timeout.min(Duration::from_secs(30)),
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(raw.pool_size.unwrap_or(2).max(1) as usize),
            open: std::sync::atomic::AtomicUsize::new(0),
            counters: IoCounters::default(),
            tables: Mutex::new(HashMap::new()),
            key_lists: KeyLists::default(),
        };
        connector.connect().await?;
        Ok(connector)
    }

    /// A session: an idle one, or a new login. When 4D refuses a new login for want of a
    /// licence while this pool holds a session, the pool shrinks by one for the rest of
    /// the run and waits for a session of its own instead.
    async fn lease(&self) -> Result<Lease<'_>, ConnectorError> {
        use std::sync::atomic::Ordering;
        loop {
            let slot = self.slots.acquire().await.expect("the pool's semaphore is never closed");
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let session = match idle {
                Some(session) => session,
                None => {
                    let opened = SqlSession::open(
                        &self.host,
                        self.port,
                        &self.user,
                        &self.password,
                        &self.endpoint,
                        self.connect_timeout,
                    )
                    .await;
                    match opened {
                        Ok(session) => {
                            let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
                            self.event(&format!("4D SQL session opened (login of user `{}`; {open} open)", self.user));
                            session
                        }
                        Err(ConnectorError::Busy { .. }) if self.open.load(Ordering::SeqCst) > 0 => {
                            tracing::info!(endpoint = %self.endpoint, "4D has no licence for another SQL session; using fewer");
                            self.event("4D has no licence for another SQL session; the pool shrinks by one");
                            slot.forget();
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            return Ok(Lease { pool: self, session: Some(session), finished: false, _slot: slot });
        }
    }

    /// A connection line (`debug_connection_change`) about this pool's sessions.
    fn event(&self, event: &str) {
        self.options.sql.connection(self.side, &self.endpoint, event);
    }

    /// One statement on a leased session.
    async fn run(
        &self,
        sql: &str,
        params: Vec<(VkType, Cell)>,
        page: u64,
        what: &str,
    ) -> Result<Answer, ConnectorError> {
        let mut answers = self.batch(vec![(sql.to_string(), params)], page, what).await?;
        Ok(answers.pop().expect("one answer per statement"))
    }

    async fn rows(
        &self,
        sql: &str,
        params: Vec<(VkType, Cell)>,
        page: u64,
        what: &str,
    ) -> Result<Vec<Vec<Cell>>, ConnectorError> {
        match self.run(sql, params, page, what).await? {
            Answer::Rows { rows, .. } => Ok(rows),
            Answer::Count(_) => {
                Err(ConnectorError::Other(format!("{}: {what}: 4D answered a count, not rows", self.endpoint)))
            }
        }
    }

    async fn single_count(&self, sql: &str, params: Vec<(VkType, Cell)>, what: &str) -> Result<u64, ConnectorError> {
        let answer = self.run(sql, params, 1, what).await?;
        count_of(&answer, &self.endpoint, what)
    }

    /// Statements pipelined on one leased session (one round trip); the first refusal is
    /// the error.
    async fn batch(
        &self,
        statements: Vec<(String, Vec<(VkType, Cell)>)>,
        page: u64,
        what: &str,
    ) -> Result<Vec<Answer>, ConnectorError> {
        let logged: Vec<Logged> = statements.iter().map(|(sql, params)| self.log_sql(sql, params)).collect();
        let mut lease = self.lease().await?;
        let answers = lease.session().run_batch(statements, page, what).await;
        lease.finished = true;
        let answers = answers?.into_iter().collect::<Result<Vec<_>, _>>()?;
        for (logged, answer) in logged.into_iter().zip(&answers) {
            logged.done(rows_of(answer));
        }
        for answer in &answers {
            match answer {
                Answer::Rows { rows, .. } => self.counters.record_read(rows.len(), rows.len() * 16),
                Answer::Count(_) => self.counters.record_read(0, 0),
            }
        }
        Ok(answers)
    }

    /// Logs a statement as the debug switches ask (its parameters under `show_sql_values`).
    fn log_sql(&self, sql: &str, params: &[(VkType, Cell)]) -> Logged {
        let first = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let kind = if first == "SELECT" { StatementKind::Read } else { StatementKind::Write };
        self.options
            .sql
            .statement(self.side, &self.endpoint, kind, sql, || values_text(params.iter().map(|(_, cell)| cell)))
    }

    async fn types(&self, table: &str) -> Result<Types, ConnectorError> {
        if let Some(types) = self.tables.lock().unwrap_or_else(|p| p.into_inner()).get(table) {
            return Ok(types.clone());
        }
        self.describe(table).await?;
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
            .cloned()
            .ok_or_else(|| ConnectorError::Schema(format!("{}: table `{table}` does not exist", self.endpoint)))
    }

    fn column_type(&self, types: &Types, scope: &TableScope, column: &str) -> Result<SqlType, ConnectorError> {
        types.get(column).copied().ok_or_else(|| {
            ConnectorError::Schema(format!(
                "{}: `{}`.`{column}` is not a column db-sync can read",
                self.endpoint, scope.table
            ))
        })
    }

    fn param(
        &self,
        value: &Value,
        t: SqlType,
        scope: &TableScope,
        column: &str,
    ) -> Result<(VkType, Cell), ConnectorError> {
        values::write(value, t)
            .map_err(|e| ConnectorError::Data(format!("{}: `{}`.`{column}`: {e}", self.endpoint, scope.table)))
    }

    fn key_param(&self, key: &Key, t: SqlType, scope: &TableScope) -> Result<(VkType, Cell), ConnectorError> {
        let value = key.values().next().unwrap_or(Value::Null);
        self.param(&value, t, scope, scope.key_columns()[0])
    }

    /// The scope's filter (record type, skipped keys) and `range` on the key.
    fn scope_where(&self, types: &Types, scope: &TableScope, range: &KeyRange) -> Result<Where, ConnectorError> {
        let key = scope.key_columns()[0];
        let kt = self.column_type(types, scope, key)?;
        let mut w = Where::default();
        for (column, value) in &scope.filter {
            let t = self.column_type(types, scope, column)?;
            w.parts.push(format!("{} = ?", quote(column)));
            w.params.push(self.param(value, t, scope, column)?);
        }
        if scope.skip_null_keys {
            w.parts.push(format!("{} IS NOT NULL", quote(key)));
        }
        if !scope.skip_keys.is_empty() {
            w.parts.push(format!("{} NOT IN ({})", quote(key), vec!["?"; scope.skip_keys.len()].join(", ")));
            for k in &scope.skip_keys {
                w.params.push(self.key_param(k, kt, scope)?);
            }
        }
        if let Some(after) = &range.after {
            w.parts.push(format!("{} > ?", quote(key)));
            w.params.push(self.key_param(after, kt, scope)?);
        }
        if let Some(upto) = &range.upto {
            w.parts.push(format!("{} <= ?", quote(key)));
            w.params.push(self.key_param(upto, kt, scope)?);
        }
        Ok(w)
    }

    fn select_list(scope: &TableScope) -> String {
        scope.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
    }

    fn row_of(&self, types: &Types, scope: &TableScope, cells: &[Cell]) -> Result<Row, ConnectorError> {
        let key = || {
            let i = scope.key_indexes[0];
            let kt = types.get(&scope.columns[i]).copied();
            cells
                .get(i)
                .zip(kt)
                .and_then(|(c, kt)| self.key_of_cell(c, kt).ok())
                .map_or("?".to_string(), |k| k.to_string())
        };
        scope
            .columns
            .iter()
            .zip(cells)
            .map(|(column, cell)| {
                let t = self.column_type(types, scope, column)?;
                values::read(cell, t).map_err(|e| {
                    ConnectorError::Data(format!(
                        "{}: `{}` row {}, column `{column}`: {e}",
                        self.endpoint,
                        scope.table,
                        key()
                    ))
                })
            })
            .collect()
    }

    /// The key in a cell of the key column (type `kt`).
    fn key_of_cell(&self, cell: &Cell, kt: SqlType) -> Result<Key, ConnectorError> {
        let value = values::read(cell, kt)
            .map_err(|e| ConnectorError::Data(format!("{}: a key 4D sent: {e}", self.endpoint)))?;
        Key::from_value(&value)
            .ok_or_else(|| ConnectorError::Data(format!("{}: 4D sent {cell:?} as a key", self.endpoint)))
    }

    /// The type of the scope's key column.
    async fn key_type(&self, scope: &TableScope) -> Result<(Types, SqlType), ConnectorError> {
        let types = self.types(&scope.table).await?;
        let kt = self.column_type(&types, scope, scope.key_columns()[0])?;
        Ok((types, kt))
    }

    /// The scope's keys sorted by bytes (text and UUID keys), NULL keys left out; the
    /// scope's skipped keys are in the list ([`key_list::listed`] leaves them out).
    async fn key_list(&self, scope: &TableScope) -> Result<Arc<Vec<Key>>, ConnectorError> {
        self.key_lists
            .get(scope, || async {
                let (types, kt) = self.key_type(scope).await?;
                let all = TableScope { skip_keys: Vec::new(), ..scope.clone() };
                let mut w = self.scope_where(&types, &all, &KeyRange::all())?;
                let key = quote(scope.key_columns()[0]);
                w.parts.push(format!("{key} IS NOT NULL"));
                let sql = format!("SELECT {key} FROM {}{}", quote(&scope.table), w.sql());
                let rows = self.rows(&sql, w.params, PAGE, "reading the keys").await?;
                rows.iter().filter_map(|r| r.first()).map(|c| self.key_of_cell(c, kt)).collect()
            })
            .await
    }

    /// The keys of `keys` that 4D finds (`IN`, the scope's filter, skipped keys included)
    /// and the keys 4D answered that were not asked for: keys it compares as equal to an
    /// asked one (§9.7). Integer keys have none.
    async fn probe(&self, scope: &TableScope, keys: &[Key]) -> Result<(HashSet<Key>, Vec<Key>), ConnectorError> {
        let only_key = TableScope {
            columns: vec![scope.key_columns()[0].to_string()],
            key_indexes: vec![0],
            modify_index: None,
            skip_keys: Vec::new(),
            ..scope.clone()
        };
        let found = self.lookup(&only_key, keys, "finding existing keys").await?;
        let wanted: HashSet<&Key> = keys.iter().collect();
        let (exact, mut others): (Vec<Key>, Vec<Key>) =
            found.into_iter().filter_map(|r| Key::from_value(&r[0])).partition(|k| wanted.contains(k));
        others.sort();
        others.dedup();
        Ok((exact.into_iter().collect(), others))
    }

    /// The error for keys 4D cannot tell apart from the keys of a write.
    fn twins_error(&self, scope: &TableScope, what: &str, twins: &[Key]) -> ConnectorError {
        let shown: Vec<String> = twins.iter().take(5).map(Key::to_string).collect();
        ConnectorError::Data(format!(
            "{}: cannot {what} `{}` by key: 4D's SQL engine takes the key(s) {} it holds for one of the keys \
             asked for (the database compares text ignoring case or accents: 4D's \"Case-sensitive String \
             Comparison\" option is off); rename them in 4D or in the source",
            self.endpoint,
            scope.table,
            shown.join(", ")
        ))
    }

    /// Rows of the scope (every column of `scope`) whose key 4D finds `IN` `keys`, as 4D
    /// compares them (§9.7: maybe ignoring case).
    async fn lookup(&self, scope: &TableScope, keys: &[Key], what: &str) -> Result<Vec<Row>, ConnectorError> {
        let (types, kt) = self.key_type(scope).await?;
        let key = scope.key_columns()[0];
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(IN_CHUNK) {
            let mut w = self.scope_where(&types, scope, &KeyRange::all())?;
            w.parts.push(format!("{} IN ({})", quote(key), vec!["?"; chunk.len()].join(", ")));
            for k in chunk {
                w.params.push(self.key_param(k, kt, scope)?);
            }
            let sql = format!("SELECT {} FROM {}{}", Self::select_list(scope), quote(&scope.table), w.sql());
            for r in self.rows(&sql, w.params, PAGE, what).await? {
                out.push(self.row_of(&types, scope, &r)?);
            }
        }
        Ok(out)
    }

    async fn read_page(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        limit: usize,
        columns: &str,
    ) -> Result<Vec<Vec<Cell>>, ConnectorError> {
        let types = self.types(&scope.table).await?;
        let w = self.scope_where(&types, scope, range)?;
        let key = quote(scope.key_columns()[0]);
        let sql = format!("SELECT {columns} FROM {}{} ORDER BY {key} LIMIT {limit}", quote(&scope.table), w.sql());
        self.rows(&sql, w.params, limit.max(1) as u64, "reading rows").await
    }

    /// Runs `statements` in one transaction on one session: `START`, each, `COMMIT`;
    /// `ROLLBACK` when one fails. Returns the rows each affected.
    async fn transaction(
        &self,
        statements: Vec<(String, Vec<(VkType, Cell)>)>,
        what: &str,
    ) -> Result<Vec<i64>, ConnectorError> {
        let mut lease = self.lease().await?;
        let result = Self::in_transaction(lease.session(), statements, what, self).await;
        lease.finished = true;
        result
    }

    /// `START` alone (statements pipelined after a refused `START` would run outside any
    /// transaction), the statements pipelined [`PIPELINE`] at a time, then `COMMIT` alone
    /// once every one succeeded, or `ROLLBACK`.
    async fn in_transaction(
        session: &mut SqlSession,
        statements: Vec<(String, Vec<(VkType, Cell)>)>,
        what: &str,
        this: &FourDSql,
    ) -> Result<Vec<i64>, ConnectorError> {
        session.run("START", Vec::new(), 1, what).await?;
        let mut counts = Vec::with_capacity(statements.len());
        let mut statements = statements.into_iter().peekable();
        let mut failed = None;
        while statements.peek().is_some() && failed.is_none() {
            let chunk: Vec<_> = statements.by_ref().take(PIPELINE).collect();
            let mut logged: std::collections::VecDeque<Logged> =
                chunk.iter().map(|(sql, params)| this.log_sql(sql, params)).collect();
            let n = chunk.len() as u64;
            for answer in session.run_batch(chunk, 1, what).await? {
                if let (Some(logged), Ok(answer)) = (logged.pop_front(), &answer) {
                    logged.done(rows_of(answer));
                }
                match answer {
                    Ok(Answer::Count(n)) => counts.push(n),
                    Ok(Answer::Rows { .. }) => counts.push(0),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            this.counters.queries.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(e) = failed {
            if session.usable() {
                let _ = session.run("ROLLBACK", Vec::new(), 1, what).await;
            }
            return Err(e);
        }
        // A crash here leaves the transaction open: 4D rolls it back when the connection
        // drops, so nothing of the batch is saved.
        crate::failpoint::hit("mid_write");
        session.run("COMMIT", Vec::new(), 1, what).await?;
        Ok(counts)
    }
}

#[async_trait]
impl Connector for FourDSql {
    fn describe_endpoint(&self) -> String {
        self.endpoint.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            offset_in_range: true,
            costly_round_trips: true,
            writable: self.side == Side::Target,
            transactional_batches: true,
            concurrent_writes: 1,
        }
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    fn supports_scope(&self, scope: &TableScope) -> Result<(), String> {
        let keys = scope.key_columns();
        let [key] = keys.as_slice() else {
            return Err(format!("a 4D key is one column here, but primary_key_field lists {}", keys.len()));
        };
        let types = self.tables.lock().unwrap_or_else(|p| p.into_inner()).get(&scope.table).cloned();
        match types.and_then(|t| t.get(*key).copied()) {
            Some(t) if !(t.is_integer() || matches!(t, SqlType::Text | SqlType::Uuid)) => {
                Err(format!("the key `{key}` is {}: a 4D key over SQL is an integer, text or UUID column", t.name()))
            }
            _ => Ok(()),
        }
    }

    async fn connect(&self) -> Result<(), ConnectorError> {
        // Sessions from before a lost connection are not trusted again.
        let old: Vec<SqlSession> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        self.open.fetch_sub(old.len(), std::sync::atomic::Ordering::SeqCst);
        if !old.is_empty() {
            self.event(&format!("{} from before the lost connection dropped", sessions_text(old.len(), "idle ")));
        }
        drop(old);
        let mut lease = self.lease().await?;
        lease.finished = true;
        Ok(())
    }

    async fn health_check(&self) -> Result<(), ConnectorError> {
        self.rows("SELECT COUNT(*) FROM _USER_TABLES", Vec::new(), 1, "checking the connection").await.map(|_| ())
    }

    async fn close(&self) {
        let sessions: Vec<SqlSession> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        self.open.fetch_sub(sessions.len(), std::sync::atomic::Ordering::SeqCst);
        let count = sessions.len();
        futures::future::join_all(sessions.into_iter().map(SqlSession::close)).await;
        self.event(&format!("{} closed (LOGOUT, QUIT)", sessions_text(count, "")));
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        let name = || vec![(VkType::String, Cell::Text(table.to_string()))];
        let columns = self.rows(COLUMNS_SQL, name(), PAGE, "describing the table").await?;
        let key = self.rows(KEY_SQL, name(), PAGE, "reading the primary key").await?;
        let described = values::schema_of(table, &columns, &key)
            .map_err(|e| ConnectorError::Schema(format!("{}: {e}", self.endpoint)))?;
        let Some((schema, types, left_out)) = described else { return Ok(None) };
        for reason in left_out {
            tracing::warn!(endpoint = %self.endpoint, "{reason}; left out of the sync");
        }
        self.tables.lock().unwrap_or_else(|p| p.into_inner()).insert(table.to_string(), Arc::new(types));
        Ok(Some(schema))
    }

    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        let (types, kt) = self.key_type(scope).await?;
        if !kt.is_integer() {
            let list = self.key_list(scope).await?;
            return Ok(key_list::listed(&list, scope, range).count() as u64);
        }
        let w = self.scope_where(&types, scope, range)?;
        let sql = format!("SELECT COUNT(*) FROM {}{}", quote(&scope.table), w.sql());
        self.single_count(&sql, w.params, "counting rows").await
    }

    /// The split counts as one pipelined batch on one session: one round trip.
    async fn count_ranges(&self, scope: &TableScope, ranges: &[KeyRange]) -> Result<Vec<u64>, ConnectorError> {
        let (types, kt) = self.key_type(scope).await?;
        if !kt.is_integer() {
            let list = self.key_list(scope).await?;
            return Ok(ranges.iter().map(|r| key_list::listed(&list, scope, r).count() as u64).collect());
        }
        let mut statements = Vec::with_capacity(ranges.len());
        for range in ranges {
            let w = self.scope_where(&types, scope, range)?;
            statements.push((format!("SELECT COUNT(*) FROM {}{}", quote(&scope.table), w.sql()), w.params));
        }
        let answers = self.batch(statements, 1, "counting rows").await?;
        answers.into_iter().map(|a| count_of(&a, &self.endpoint, "counting rows")).collect()
    }

    /// The split points as one pipelined batch on one session: one round trip.
    async fn keys_at(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        offsets: &[u64],
    ) -> Result<Vec<Option<Key>>, ConnectorError> {
        let (types, kt) = self.key_type(scope).await?;
        if !kt.is_integer() {
            let list = self.key_list(scope).await?;
            let keys: Vec<&Key> = key_list::listed(&list, scope, range).collect();
            return Ok(offsets.iter().map(|&o| keys.get(o as usize).map(|k| (*k).clone())).collect());
        }
        let key = quote(scope.key_columns()[0]);
        let mut statements = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let w = self.scope_where(&types, scope, range)?;
            let sql =
                format!("SELECT {key} FROM {}{} ORDER BY {key} OFFSET {offset} LIMIT 1", quote(&scope.table), w.sql());
            statements.push((sql, w.params));
        }
        let answers = self.batch(statements, 1, "finding split keys").await?;
        answers
            .into_iter()
            .map(|a| match a {
                Answer::Rows { rows, .. } => {
                    rows.first().and_then(|r| r.first()).map(|c| self.key_of_cell(c, kt)).transpose()
                }
                Answer::Count(_) => {
                    Err(ConnectorError::Other(format!("{}: a count where a key was expected", self.endpoint)))
                }
            })
            .collect()
    }

    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        Ok(self.keys_at(scope, range, &[offset]).await?.pop().flatten())
    }

    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<KeyProblems, ConnectorError> {
        let (types, kt) = self.key_type(scope).await?;
        let key = quote(scope.key_columns()[0]);
        let mut w =
            self.scope_where(&types, &TableScope { skip_null_keys: false, ..scope.clone() }, &KeyRange::all())?;
        let null_where = {
            let mut parts = w.parts.clone();
            parts.push(format!("{key} IS NULL"));
            format!(" WHERE {}", parts.join(" AND "))
        };
        let sql = format!("SELECT COUNT(*) FROM {}{null_where}", quote(&scope.table));
        let null_rows = self.single_count(&sql, w.params.clone(), "counting NULL keys").await?;
        let mut problems = KeyProblems { null_rows, duplicates: Vec::new() };
        if duplicates && !kt.is_integer() {
            // 4D may group text ignoring case: duplicates are byte-equal keys of the list.
            let list = self.key_list(scope).await?;
            problems.duplicates = key_list::duplicates(&list, scope, limit);
        } else if duplicates {
            w.parts.push(format!("{key} IS NOT NULL"));
            let sql = format!(
                "SELECT {key}, COUNT(*) FROM {}{} GROUP BY {key} HAVING COUNT(*) > 1 ORDER BY {key} LIMIT {limit}",
                quote(&scope.table),
                w.sql()
            );
            for row in self.rows(&sql, w.params, PAGE, "finding duplicate keys").await? {
                if let [k, n] = row.as_slice() {
                    let n = match n {
                        Cell::I64(n) => *n as u64,
                        Cell::I32(n) => *n as u64,
                        _ => 2,
                    };
                    problems.duplicates.push((self.key_of_cell(k, kt)?, n));
                }
            }
        }
        Ok(problems)
    }

    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        let (_, kt) = self.key_type(scope).await?;
        if !kt.is_integer() {
            let list = self.key_list(scope).await?;
            return Ok(key_list::key_page(&list, scope, range, limit));
        }
        let key = quote(scope.key_columns()[0]);
        let rows = self.read_page(scope, range, limit, &key).await?;
        let keys =
            rows.iter().filter_map(|r| r.first()).map(|c| self.key_of_cell(c, kt)).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::up_to(keys, limit))
    }

    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        let (types, kt) = self.key_type(scope).await?;
        if !kt.is_integer() {
            let keys = self.read_keys(scope, range, limit).await?;
            let rows = self.read_rows_by_keys(scope, &keys.items).await?;
            return key_list::rows_page(&self.endpoint, scope, keys, rows);
        }
        let rows = self.read_page(scope, range, limit, &Self::select_list(scope)).await?;
        let rows = rows.iter().map(|r| self.row_of(&types, scope, r)).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::up_to(rows, limit))
    }

    /// Rows of `keys`, matched byte for byte: rows of other keys that 4D's comparison
    /// answers too (§9.7) are dropped.
    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        let mut rows = self.lookup(scope, keys, "reading rows by key").await?;
        let wanted: HashSet<&Key> = keys.iter().collect();
        rows.retain(|r| scope.key_of(r).is_some_and(|k| wanted.contains(&k)));
        Ok(rows)
    }

    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        let types = self.types(&scope.table).await?;
        let modify = scope.modify_column().ok_or_else(|| ConnectorError::Schema("no modify ID column".into()))?;
        let mt = self.column_type(&types, scope, modify)?;
        let key = scope.key_columns()[0];
        let kt = self.column_type(&types, scope, key)?;
        let (m, k) = (quote(modify), quote(key));
        if !kt.is_integer() {
            // 4D orders ties of the modify ID its own way (§9.7); db-sync by key bytes.
            let m_index = scope.modify_index.ok_or_else(|| ConnectorError::Schema("no modify ID column".into()))?;
            let (types, m) = (&types, &m);
            let select = |w: Where, order: &str, limit: Option<usize>| {
                let sql = format!(
                    "SELECT {} FROM {}{}{order}{}",
                    Self::select_list(scope),
                    quote(&scope.table),
                    w.sql(),
                    limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default()
                );
                async move {
                    let page = limit.map_or(PAGE, |n| n.max(1) as u64);
                    let rows = self.rows(&sql, w.params, page, "reading changed rows").await?;
                    rows.iter().map(|r| self.row_of(types, scope, r)).collect::<Result<Vec<_>, _>>()
                }
            };
            let select = &select;
            return key_list::changed_since(
                scope,
                cursor,
                m_index,
                |floor| async move {
                    let mut w = self.scope_where(types, scope, &KeyRange::all())?;
                    match &floor {
                        None => w.parts.push(format!("{m} IS NOT NULL")),
                        Some((id, inclusive)) => {
                            w.parts.push(format!("{m} {} ?", if *inclusive { ">=" } else { ">" }));
                            w.params.push(self.param(id, mt, scope, modify)?);
                        }
                    }
                    let rows = select(w, &format!(" ORDER BY {m}"), Some(limit)).await?;
                    let more = rows.len() >= limit;
                    Ok((rows, more))
                },
                |id| async move {
                    let mut w = self.scope_where(types, scope, &KeyRange::all())?;
                    w.parts.push(format!("{m} = ?"));
                    w.params.push(self.param(&id, mt, scope, modify)?);
                    select(w, "", None).await
                },
            )
            .await;
        }
        let mut w = self.scope_where(&types, scope, &KeyRange::all())?;
        match (&cursor.modify_id, &cursor.key) {
            (None, _) => w.parts.push(format!("{m} IS NOT NULL")),
            (Some(id), Some(last)) => {
                w.parts.push(format!("({m} > ? OR ({m} = ? AND {k} > ?))"));
                w.params.push(self.param(id, mt, scope, modify)?);
                w.params.push(self.param(id, mt, scope, modify)?);
                w.params.push(self.key_param(last, kt, scope)?);
            }
            (Some(id), None) => {
                w.parts.push(format!("{m} >= ?"));
                w.params.push(self.param(id, mt, scope, modify)?);
            }
        }
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {m}, {k} LIMIT {limit}",
            Self::select_list(scope),
            quote(&scope.table),
            w.sql()
        );
        let rows = self.rows(&sql, w.params, limit.max(1) as u64, "reading changed rows").await?;
        let rows = rows.iter().map(|r| self.row_of(&types, scope, r)).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::up_to(rows, limit))
    }

    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        let types = self.types(&scope.table).await?;
        let modify = scope.modify_column().ok_or_else(|| ConnectorError::Schema("no modify ID column".into()))?;
        let mt = self.column_type(&types, scope, modify)?;
        let mut w = self.scope_where(&types, scope, &KeyRange::all())?;
        match modify_id {
            Some(id) => {
                w.parts.push(format!("{} > ?", quote(modify)));
                w.params.push(self.param(id, mt, scope, modify)?);
            }
            None => w.parts.push(format!("{} IS NOT NULL", quote(modify))),
        }
        let sql = format!("SELECT COUNT(*) FROM {}{}", quote(&scope.table), w.sql());
        self.single_count(&sql, w.params, "counting changed rows").await
    }

    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        let types = self.types(&scope.table).await?;
        let modify = scope.modify_column().ok_or_else(|| ConnectorError::Schema("no modify ID column".into()))?;
        let mut w = self.scope_where(&types, scope, &KeyRange::all())?;
        w.parts.push(format!("{} IS NULL", quote(modify)));
        let sql = format!("SELECT COUNT(*) FROM {}{}", quote(&scope.table), w.sql());
        self.single_count(&sql, w.params, "counting rows without a modify ID").await
    }

    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        let types = self.types(&scope.table).await?;
        let modify = scope.modify_column().ok_or_else(|| ConnectorError::Schema("no modify ID column".into()))?;
        let mt = self.column_type(&types, scope, modify)?;
        let mut w = self.scope_where(&types, scope, &KeyRange::all())?;
        let m = quote(modify);
        w.parts.push(format!("{m} IS NOT NULL"));
        // The column itself, not MAX(): the answer keeps the column's wire type.
        let sql = format!("SELECT {m} FROM {}{} ORDER BY {m} DESC LIMIT 1", quote(&scope.table), w.sql());
        let rows = self.rows(&sql, w.params, 1, "reading the largest modify ID").await?;
        match rows.first().and_then(|r| r.first()) {
            Some(cell) => values::read(cell, mt)
                .map(|v| (!v.is_null()).then_some(v))
                .map_err(|e| ConnectorError::Data(format!("{}: `{modify}`: {e}", self.endpoint))),
            None => Ok(None),
        }
    }

    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let types = self.types(&scope.table).await?;
        let key = scope.key_columns()[0];
        let keys: Vec<Key> = rows.iter().filter_map(|r| scope.key_of(r)).collect();
        let (existing, twins) = self.probe(scope, &keys).await?;
        if !twins.is_empty() {
            return Err(self.twins_error(scope, "write to", &twins));
        }
        let table = quote(&scope.table);
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            Self::select_list(scope),
            vec!["?"; scope.columns.len()].join(", ")
        );
        let others: Vec<usize> = (0..scope.columns.len()).filter(|i| !scope.key_indexes.contains(i)).collect();
        let update = format!(
            "UPDATE {table} SET {} WHERE {} = ?",
            others.iter().map(|&i| format!("{} = ?", quote(&scope.columns[i]))).collect::<Vec<_>>().join(", "),
            quote(key)
        );
        let mut statements = Vec::with_capacity(rows.len());
        for row in rows {
            let k = scope
                .key_of(row)
                .ok_or_else(|| ConnectorError::Data(format!("{}: a row without a key", self.endpoint)))?;
            let param = |i: usize| {
                let column = &scope.columns[i];
                self.param(&row[i], self.column_type(&types, scope, column)?, scope, column)
                    .map_err(|e| key_error(e, &scope.table, &k))
            };
            if existing.contains(&k) {
                if others.is_empty() {
                    continue;
                }
                let mut params = others.iter().map(|&i| param(i)).collect::<Result<Vec<_>, _>>()?;
                params.push(param(scope.key_indexes[0])?);
                statements.push((update.clone(), params));
            } else {
                let params = (0..scope.columns.len()).map(param).collect::<Result<Vec<_>, _>>()?;
                statements.push((insert.clone(), params));
            }
        }
        if let Err(e) = self.transaction(statements, "writing rows").await {
            // 4D refuses a key its unique index takes for one it holds, or for another of
            // the same batch: a database comparing text ignoring case (§9.7).
            return Err(match e {
                ConnectorError::Data(m)
                    if !types.get(key).is_some_and(|t| t.is_integer()) && m.contains("error 1204") =>
                {
                    ConnectorError::Data(format!(
                        "{m} (a duplicate key where db-sync found none: 4D may compare text ignoring case or accents, \
                         and take this key for another it holds or another written with it; rename one in the source)"
                    ))
                }
                e => e,
            });
        }
        self.key_lists.update(&scope.table, &keys, &[]);
        self.counters.rows_written.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(rows.len() as u64)
    }

    async fn create_table(&self, name: &str, _: &[ColumnSchema], _: &[String]) -> Result<(), ConnectorError> {
        Err(ConnectorError::Schema(format!(
            "{}: table `{name}` does not exist, and db-sync does not create 4D tables: create it in 4D",
            self.endpoint
        )))
    }

    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let (types, kt) = self.key_type(scope).await?;
        if !kt.is_integer() {
            let (_, twins) = self.probe(scope, keys).await?;
            if !twins.is_empty() {
                return Err(self.twins_error(scope, "delete from", &twins));
            }
        }
        let key = scope.key_columns()[0];
        let mut statements = Vec::new();
        for chunk in keys.chunks(IN_CHUNK) {
            let mut w = self.scope_where(&types, scope, &KeyRange::all())?;
            w.parts.push(format!("{} IN ({})", quote(key), vec!["?"; chunk.len()].join(", ")));
            for k in chunk {
                w.params.push(self.key_param(k, kt, scope)?);
            }
            statements.push((format!("DELETE FROM {}{}", quote(&scope.table), w.sql()), w.params));
        }
        let deleted: i64 = self.transaction(statements, "deleting rows").await?.iter().sum();
        self.key_lists.update(&scope.table, &[], keys);
        self.counters.rows_written.fetch_add(deleted as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(deleted as u64)
    }
}

/// The number in a one-row, one-column answer (`SELECT COUNT(*)`).
fn count_of(answer: &Answer, endpoint: &str, what: &str) -> Result<u64, ConnectorError> {
    let cell = match answer {
        Answer::Rows { rows, .. } => rows.first().and_then(|r| r.first()),
        Answer::Count(_) => None,
    };
    match cell {
        Some(Cell::I64(n)) => Ok(*n as u64),
        Some(Cell::I32(n)) => Ok(*n as u64),
        Some(Cell::I16(n)) => Ok(*n as u64),
        other => Err(ConnectorError::Other(format!("{endpoint}: {what}: 4D answered {other:?}"))),
    }
}

/// A value error of one row, naming its table and key.
fn key_error(e: ConnectorError, table: &str, key: &Key) -> ConnectorError {
    match e {
        ConnectorError::Data(message) => ConnectorError::Data(format!("{message} (table `{table}`, key {key:?})")),
        other => other,
    }
}

/// What `debug_sql` reports of a 4D SQL answer.
fn rows_of(answer: &Answer) -> Rows {
    match answer {
        Answer::Rows { rows, .. } => Rows::Returned(rows.len() as u64),
        Answer::Count(n) => Rows::Affected((*n).max(0) as u64),
    }
}
