//! The boundary to databases. [`Connector`] is the only way the engine reads or writes
//! rows; one module per backend implements it and holds all of that backend's SQL or HTTP.
//! Connectors never decide what to sync: they count, read in key order, upsert and delete.

pub mod fourd;
pub mod fourd_sql;
pub mod http;
pub mod key_list;
pub mod link;
pub mod memory;
pub mod postgres;
pub mod resilient;
pub mod sql_log;
pub mod sqlite;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::config::{ConnectionKind, Endpoint};
use crate::model::{ColumnSchema, ColumnType, Key, KeyRange, Row, TableSchema, TableScope, Value};

/// A connector failure, classified the way the manual's error handling needs it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The database cannot be reached, or the connection broke. Retryable.
    #[error("connection error on {endpoint}: {message}")]
    Connection {
        /// Which database (no secrets).
        endpoint: String,
        /// What happened.
        message: String,
    },
    /// The database cannot be used and trying again will not change it: a missing or
    /// unreadable file, a file that is not a database, a full disk. Not retryable.
    #[error("cannot use {endpoint}: {message}")]
    Unavailable {
        /// Which database (no secrets).
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The database is busy or locked by another process. Retryable.
    #[error("{endpoint} is busy or locked: {message}")]
    Busy {
        /// Which database.
        endpoint: String,
        /// What happened.
        message: String,
    },
    /// A table or column is missing or unusable.
    #[error("schema error: {0}")]
    Schema(String),
    /// Rows were refused (constraint, conversion). The batch can be split to isolate them.
    #[error("data error: {0}")]
    Data(String),
    /// A read broke the key contract: a row without a usable key (NULL), or keys not
    /// strictly ascending in db-sync's order. Not retryable; the step stops before it acts
    /// on the page.
    #[error("{0}")]
    KeyOrder(String),
    /// The backend cannot do this.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// The operation.
        operation: &'static str,
    },
    /// The connection settings ask for something db-sync cannot do.
    #[error("{0}")]
    Config(String),
    /// Anything else: a bug or an unexpected answer.
    #[error("{0}")]
    Other(String),
}

impl ConnectorError {
    /// Whether retrying the same operation later may succeed. Decided here only.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectorError::Connection { .. } | ConnectorError::Busy { .. })
    }

    /// Whether the session is lost (refused, reset, closed or silent past its deadline):
    /// the resilience layer opens a new one before trying again. A busy database keeps
    /// its session.
    pub fn is_connection_loss(&self) -> bool {
        matches!(self, ConnectorError::Connection { .. })
    }

    /// The error after `retries` retries that all failed: the same kind, saying so.
    pub fn gave_up(self, retries: u32) -> ConnectorError {
        let note = |message: String| match retries {
            0 => format!("{message} (no retries configured: retry_count is 0)"),
            1 => format!("{message} (gave up after 1 retry)"),
            n => format!("{message} (gave up after {n} retries)"),
        };
        match self {
            ConnectorError::Connection { endpoint, message } => {
                ConnectorError::Connection { endpoint, message: note(message) }
            }
            ConnectorError::Busy { endpoint, message } => ConnectorError::Busy { endpoint, message: note(message) },
            other => other,
        }
    }
}

/// What a backend can do; the planner checks these before a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `key_at` (OFFSET within a key range) is efficient, so binary search may be used.
    pub offset_in_range: bool,
    /// Each request is a round trip that costs far more than the server's work on a small
    /// query (an HTTP service such as 4D's REST server): the binary search splits a range
    /// into more parts per round of concurrent requests (`binary_search_fanout`), so it
    /// needs fewer rounds.
    pub costly_round_trips: bool,
    /// The backend can be written to.
    pub writable: bool,
    /// Writes of one batch are atomic.
    pub transactional_batches: bool,
    /// Batches worth writing at once (each in its own transaction, on its own
    /// connection) when their keys are known to be disjoint and new; 1 = one at a time.
    pub concurrent_writes: usize,
}

/// Counters every connector keeps, for the report's metrics.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Statements or requests sent.
    pub queries: AtomicU64,
    /// Rows (or keys) read.
    pub rows_read: AtomicU64,
    /// Approximate bytes of values read.
    pub bytes_read: AtomicU64,
    /// Rows written or deleted.
    pub rows_written: AtomicU64,
}

impl IoCounters {
    /// Adds one query that returned `rows` rows of `bytes` bytes.
    pub fn record_read(&self, rows: usize, bytes: usize) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.rows_read.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A snapshot `(queries, rows_read, bytes_read, rows_written)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.queries.load(Ordering::Relaxed),
            self.rows_read.load(Ordering::Relaxed),
            self.bytes_read.load(Ordering::Relaxed),
            self.rows_written.load(Ordering::Relaxed),
        )
    }
}

/// Position of an incremental read: rows after `(modify_id, key)` in that order.
#[derive(Clone, Debug, PartialEq)]
pub struct ModifyCursor {
    /// Last modify ID read, or `None` to start from the beginning.
    pub modify_id: Option<Value>,
    /// Last key read among rows with that modify ID; `None` reads rows with exactly
    /// `modify_id` again (from the first key).
    pub key: Option<Key>,
}

/// One page of a read in key order (or `(modify_id, key)` order), with an explicit
/// continuation. A page shorter than the limit asked for is not the end by itself: a
/// server may cap its pages (4D's REST answers 100 entities unless told otherwise); only
/// `more: false` ends a read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page<T> {
    /// The items, in the read's order.
    pub items: Vec<T>,
    /// More items may follow the last one: read again after it.
    pub more: bool,
}

impl<T> Page<T> {
    /// A page from a backend that returns every item up to the limit asked for: it is
    /// full exactly when more may follow (SQL `LIMIT`).
    pub fn up_to(items: Vec<T>, limit: usize) -> Page<T> {
        let more = items.len() >= limit;
        Page { items, more }
    }
}

/// Source rows that a key cannot identify, found by [`Connector::key_problems`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyProblems {
    /// Rows whose key is NULL.
    pub null_rows: u64,
    /// Keys that several rows share, ascending, each with the number of rows sharing it
    /// (at most the `limit` asked for).
    pub duplicates: Vec<(Key, u64)>,
}

/// A database the engine can read from and write to. Object-safe: the engine holds
/// `Arc<dyn Connector>`. Reads are in ascending key order (see [`Key`]'s ordering).
#[async_trait]
pub trait Connector: Send + Sync {
    /// Printable description (no secrets).
    fn describe_endpoint(&self) -> String;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// I/O counters.
    fn counters(&self) -> &IoCounters;

    /// Opens a new session, replacing the current one: drops every connection (a lost one
    /// may hang or be half-open) and connects again. The resilience layer calls it after
    /// a lost connection; the constructor opens the first session. Default: nothing to do.
    async fn connect(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// One cheap round trip that proves the session answers. Default: nothing to check.
    async fn health_check(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Ends the session at the end of a run (logs out, closes connections). Errors are
    /// the backend's to log; the run's outcome does not depend on them.
    async fn close(&self) {}

    /// Whether this backend can serve `scope` (its key's shape, say); the reason when it
    /// cannot, reported by `check` before anything runs. Default: every scope.
    fn supports_scope(&self, scope: &TableScope) -> Result<(), String> {
        let _ = scope;
        Ok(())
    }

    /// The table's schema, or `None` when it does not exist.
    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError>;

    /// Rows of the scope inside `range`.
    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError>;

    /// Rows of the scope inside each of `ranges`: the binary search's counts of a split. By
    /// default one [`Connector::count`] per range, all at once; a backend that can send
    /// them together (4D's SQL protocol pipelines requests) overrides it.
    async fn count_ranges(&self, scope: &TableScope, ranges: &[KeyRange]) -> Result<Vec<u64>, ConnectorError> {
        futures::future::join_all(ranges.iter().map(|r| self.count(scope, r))).await.into_iter().collect()
    }

    /// The key at zero-based `offset` in key order inside `range`, if there is one.
    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        let _ = (scope, range, offset);
        Err(ConnectorError::Unsupported { backend: "this backend", operation: "key_at" })
    }

    /// The keys at several zero-based `offsets` (ascending) in key order inside `range`:
    /// one entry per offset, `None` past the end. The binary search's split points. By
    /// default one [`Connector::key_at`] per offset, all at once (one round of requests);
    /// a backend that reads faster in one pass overrides it.
    async fn keys_at(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        offsets: &[u64],
    ) -> Result<Vec<Option<Key>>, ConnectorError> {
        futures::future::join_all(offsets.iter().map(|&o| self.key_at(scope, range, o))).await.into_iter().collect()
    }

    /// Rows of the scope whose key is NULL and, when `duplicates`, up to `limit` keys held
    /// by more than one row (a table or view without a unique key). Keys compare as db-sync
    /// orders them (text byte for byte, whatever the column's collation).
    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<KeyProblems, ConnectorError> {
        let _ = (scope, duplicates, limit);
        Err(ConnectorError::Unsupported { backend: "this backend", operation: "key checks" })
    }

    /// Up to `limit` keys inside `range`, ascending; [`Page::more`] says whether keys may
    /// follow the last one.
    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError>;

    /// Up to `limit` rows inside `range`, ascending by key; [`Page::more`] says whether
    /// rows may follow the last one.
    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError>;

    /// Every row with these keys (any order; missing keys are simply absent). A backend
    /// whose server caps its answers pages through them itself.
    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError>;

    /// Up to `limit` rows after `cursor` in `(modify_id, key)` order; [`Page::more`] says
    /// whether rows may follow the last one. Rows whose modify ID is NULL are not returned
    /// (see [`Connector::count_null_modify`]).
    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError>;

    /// Rows whose modify ID is greater than `modify_id` (all non-NULL ones when `None`).
    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError>;

    /// Rows whose modify ID is NULL.
    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError>;

    /// The largest modify ID of the scope.
    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError>;

    /// Inserts or updates `rows` by key, in one transaction. Returns rows written.
    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        let _ = (scope, rows);
        Err(ConnectorError::Unsupported { backend: "this backend", operation: "writes" })
    }

    /// Creates a table with these columns (their type families translated to the
    /// backend's types) and a primary key on the `keys` columns.
    async fn create_table(&self, name: &str, columns: &[ColumnSchema], keys: &[String]) -> Result<(), ConnectorError> {
        let _ = (name, columns, keys);
        Err(ConnectorError::Unsupported { backend: "this backend", operation: "creating tables" })
    }

    /// Foreign keys among `tables`, as `(child, parent)` pairs.
    async fn foreign_keys(&self, tables: &[String]) -> Result<Vec<(String, String)>, ConnectorError> {
        let _ = tables;
        Ok(Vec::new())
    }

    /// Inserts rows whose keys the caller has just seen missing from the target, in one
    /// transaction. A backend may skip conflict handling for speed, but must fall back to
    /// an upsert when a key turns out to exist (a concurrent writer, another record type),
    /// so the call stays idempotent.
    async fn insert_new(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        self.upsert(scope, rows).await
    }

    /// Deletes the rows of the scope with these keys, in one transaction. Returns rows
    /// deleted.
    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        let _ = (scope, keys);
        Err(ConnectorError::Unsupported { backend: "this backend", operation: "deletes" })
    }
}

/// Quotes an SQL identifier (the same rule in SQLite and PostgreSQL).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The column list of a `CREATE TABLE`: each column with the backend's name for its type
/// family, NOT NULL kept, and the key as primary key (on its column, or as a table
/// constraint for a compound key).
pub fn column_definitions(
    columns: &[ColumnSchema],
    keys: &[String],
    type_name: fn(ColumnType) -> &'static str,
) -> String {
    let mut definitions: Vec<String> = columns
        .iter()
        .map(|c| {
            let is_key = keys.contains(&c.name);
            let simple_key = is_key && keys.len() == 1;
            let pk = if simple_key { " PRIMARY KEY" } else { "" };
            // SQLite lets a primary key that is not a rowid hold NULL: say NOT NULL.
            let null = if !simple_key && (is_key || !c.nullable) { " NOT NULL" } else { "" };
            format!("{} {}{pk}{null}", quote_ident(&c.name), type_name(c.column_type))
        })
        .collect();
    if keys.len() > 1 {
        definitions
            .push(format!("PRIMARY KEY ({})", keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")));
    }
    definitions.join(", ")
}

/// Which side a connector serves; SQLite opens the source read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Rows come from here.
    Source,
    /// Rows go here.
    Target,
}

impl Side {
    /// `source` or `target`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// Options that change how a connector behaves but not what it returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectOptions {
    /// Which statements and connection changes to log (the config's debug switches).
    pub sql: sql_log::SqlLog,
}

/// Opens the connector for an endpoint, behind the resilience layer (its first connection
/// is retried like any call); retries and reconnections are recorded in `journal`.
pub async fn open(
    endpoint: &Endpoint,
    side: Side,
    options: ConnectOptions,
    journal: Arc<resilient::NetworkJournal>,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    let supported = match endpoint.kind {
        ConnectionKind::Sqlite | ConnectionKind::Postgres => true,
        ConnectionKind::FourD => true,
        ConnectionKind::Rest => false,
    };
    if !supported {
        return Err(ConnectorError::Config(format!(
            "{} connection type `{}` is not supported yet; db-sync syncs sqlite, postgres and 4d (over REST with \
             `url`, over its SQL server with `host`)",
            side.name(),
            endpoint.kind.name(),
        )));
    }
    let open = || async move {
        let connector: Arc<dyn Connector> = match endpoint.kind {
            ConnectionKind::Sqlite => {
                let path = endpoint.path.clone().expect("validated sqlite endpoint has a path");
                Arc::new(sqlite::SqliteConnector::open(path, side, options).await?)
            }
            ConnectionKind::FourD if endpoint.is_4d_rest() => {
                Arc::new(fourd::FourDRest::open(endpoint, side, options).await?)
            }
            ConnectionKind::FourD => Arc::new(fourd_sql::FourDSql::open(endpoint, side, options).await?),
            _ => Arc::new(postgres::PostgresConnector::open(endpoint, side, options).await?),
        };
        Ok(connector)
    };
    let described = endpoint.describe();
    options.sql.connection(side, &described, "connecting");
    let resilient = resilient::Resilient::open(endpoint.resilience, side, &described, journal, open).await?;
    options.sql.connection(side, &described, "connected");
    Ok(Arc::new(resilient.with_log(options.sql)))
}
