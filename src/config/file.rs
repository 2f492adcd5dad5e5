//! The serde model of `db-sync.json`, exactly as a user writes it. Every struct denies
//! unknown keys; defaults are named `default_*` functions so the reference config in
//! `fixtures/db-sync.reference.json` and this file can be read side by side. Nothing here
//! validates meaning or touches the file system: see `config::validate`.

use serde::Deserialize;
use serde_json::Map;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where rows come from.
    pub source: ConnectionFile,
    /// Where rows go to.
    pub target: ConnectionFile,
    /// Tables to sync, in dependency order (parents first).
    pub tables: Vec<TableFile>,

    /// Rows per read and per write transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `batch_size` when the side is a 4D database.
    #[serde(default = "default_batch_size_4d")]
    pub batch_size_4d: usize,
    /// Keys per delete transaction.
    #[serde(default = "default_delete_batch_size")]
    pub delete_batch_size: usize,
    /// `delete_batch_size` when the target is a 4D database.
    #[serde(default = "default_delete_batch_size_4d")]
    pub delete_batch_size_4d: usize,
    /// Keys read per query when comparing key lists.
    #[serde(default = "default_id_array_batch_size")]
    pub id_array_batch_size: usize,
    /// Trust modify IDs: copy only rows modified since the last run.
    #[serde(default)]
    pub trust_modify_id: bool,
    /// Incremental reads start this far below the stored watermark, to catch rows whose
    /// change committed late with a lower modify ID: a whole number (modify-ID distance)
    /// or, for timestamp modify IDs, a duration such as `"10m"` or `"1h 30m"`. Default 0.
    #[serde(default)]
    pub incremental_lookback: Option<serde_json::Value>,
    /// Skip tables whose counts match and that have fewer changed rows than this (0 = never skip).
    #[serde(default)]
    pub min_rows_to_sync: u64,
    /// Print the plan and stop; write nothing.
    #[serde(default)]
    pub only_sync_plan: bool,
    /// Check every table even when `min_rows_to_sync` would skip it.
    #[serde(default)]
    pub check_all_tables: bool,
    /// Sync only these tables (by `name`); empty means all.
    #[serde(default)]
    pub sync_table: Vec<String>,
    /// Stop the run once this many errors were recorded.
    #[serde(default = "default_max_error_count")]
    pub max_error_count: usize,
    /// Stop after this many consecutive batches failed.
    #[serde(default = "default_max_error_loop")]
    pub max_error_loop: usize,
    /// Keep going after a data error (isolating the bad rows) until `max_error_count`.
    #[serde(default = "default_true")]
    pub continue_on_error: bool,
    /// Fill NOT NULL target columns that have no source value with a type default.
    #[serde(default)]
    pub set_default_value: bool,
    /// JSON objects: `false` keeps the keys only the target's document has (they are
    /// neither compared nor overwritten); `true` makes the target's document the source's.
    #[serde(default)]
    pub copy_all_json_keys: bool,
    /// Log every SQL statement and 4D REST request (values only with `show_sql_values`).
    #[serde(default)]
    pub show_sql: bool,
    /// Log every statement as `show_sql` does, then its duration, rows and connection.
    #[serde(default)]
    pub debug_sql: bool,
    /// Log write statements only (INSERT, UPDATE, DELETE, upserts, 4D REST writes).
    #[serde(default)]
    pub show_save_sql: bool,
    /// Log the bound values (row values included) with each logged statement.
    #[serde(default)]
    pub show_sql_values: bool,
    /// Log each connect, disconnect, reconnect and session change (endpoints redacted).
    #[serde(default)]
    pub debug_connection_change: bool,
    /// Largest share (percent) of a target table a run may delete without `--allow-mass-delete`.
    #[serde(default = "default_max_delete_percent")]
    pub max_delete_percent: f64,
    /// Use the binary search for `add` steps as well as `delete` steps.
    #[serde(default = "default_true")]
    pub binary_search_for_add: bool,
    /// Tables with fewer rows than this use a full compare.
    #[serde(default = "default_binary_search_min_table_size")]
    pub binary_search_min_table_size: u64,
    /// Ranges of at most this many rows are read and compared directly.
    #[serde(default = "default_binary_search_read_batch")]
    pub binary_search_read_batch: u64,
    /// Search the newest N keys first (0 = off).
    #[serde(default)]
    pub binary_search_recent_first: u64,
    /// Parts the binary search splits a range into at once (2 to 64), per difference the
    /// range holds up to 32 when above 2; absent: 2, or 4 when a side pays a round trip
    /// per request (4D over REST).
    #[serde(default)]
    pub binary_search_fanout: Option<u64>,
    /// When counts still differ after a binary search, fall back to a full compare.
    #[serde(default)]
    pub fallback_full_compare_on_mismatch: bool,
    /// Daemon: pause between the end of a run and the start of the next: seconds, or a
    /// duration such as `"1h"`.
    #[serde(default)]
    pub sleep_seconds: Option<serde_json::Value>,
    /// Daemon: run every day at this wall-clock time (`HH:MM`) in `timezone`.
    #[serde(default)]
    pub run_at_time: Option<String>,
    /// Daemon: longest single sleep, progress is printed between chunks: seconds, or a
    /// duration such as `"30m"` (default 3600).
    #[serde(default)]
    pub max_sleep_chunk_seconds: Option<serde_json::Value>,
    /// Daemon: `host:port` on which to serve `/metrics` (Prometheus text format) and
    /// `/healthz`, such as `"127.0.0.1:9187"`; absent: no listener.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Folder of the checkpoint and audit store (default `.db-sync` beside the config).
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Create target tables that do not exist, from the source schema (off: a typo in a
    /// table name must not create a table).
    #[serde(default)]
    pub create_missing_tables: bool,
    /// Table order: `foreign_keys` (parents first, from the target's foreign keys) or
    /// `config` (as listed).
    #[serde(default = "default_table_order")]
    pub table_order: TableOrder,
    /// Keep this many finished runs in the audit store (0 = keep all).
    #[serde(default = "default_keep_runs")]
    pub keep_runs: usize,
    /// IANA time zone (such as `Europe/Paris`) in which wall-clock times are read: a
    /// timestamp with an offset written into a column without time zone becomes the
    /// wall-clock time of this zone, and a wall-clock time written into a column with time
    /// zone is read in it. Default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// One side of the sync. Which keys apply depends on `type` (and for 4D on `protocol`);
/// `config::endpoint` refuses the others, naming them. Its `Debug` output hides the
/// password and the URL's secrets.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionFile {
    /// Backend: `sqlite`, `postgres`, `4d` or `rest`.
    #[serde(rename = "type")]
    pub kind: ConnectionKind,
    /// SQLite: database file (relative to the config file's folder).
    #[serde(default)]
    pub path: Option<String>,
    /// PostgreSQL, 4D REST and REST: server URL.
    #[serde(default)]
    pub url: Option<String>,
    /// 4D: `rest` (the REST/ORDA server at `url`, the default when `url` is set) or `sql`
    /// (the SQL server at `host`/`port`).
    #[serde(default)]
    pub protocol: Option<String>,
    /// 4D REST: unit of Time (`duration`) attributes on the wire, `ms` (default) or `s`.
    #[serde(default)]
    pub time_unit: Option<String>,
    /// PostgreSQL: schema holding the tables.
    #[serde(default)]
    pub schema: Option<String>,
    /// 4D over SQL: host name of the SQL server.
    #[serde(default)]
    pub host: Option<String>,
    /// 4D over SQL: TCP port of the SQL server.
    #[serde(default)]
    pub port: Option<u16>,
    /// PostgreSQL and 4D: user name.
    #[serde(default)]
    pub user: Option<String>,
    /// PostgreSQL and 4D: password; write `${ENV_VAR}` so the secret stays out of the file.
    #[serde(default)]
    pub password: Option<String>,
    /// PostgreSQL: database name (overrides the URL's).
    #[serde(default)]
    pub database: Option<String>,
    /// PostgreSQL and 4D over SQL: connections in the pool.
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// PostgreSQL: the server's `statement_timeout`: seconds, or a duration such as
    /// `"5m"`; 0 lifts it (default: `timeout`). Refused for other backends.
    #[serde(default)]
    pub statement_timeout_secs: Option<serde_json::Value>,
    /// PostgreSQL: `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full`.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// Longest one database call may take before it fails as a connection error and is
    /// retried: seconds, or a duration such as `"90s"` (default 300; see
    /// [`crate::config::Resilience`]).
    #[serde(default)]
    pub timeout: Option<serde_json::Value>,
    /// Retries of a call that failed with a retryable error: 0 to 100 (default 3).
    #[serde(default)]
    pub retry_count: Option<serde_json::Value>,
    /// Wait before the first retry, doubling with jitter: milliseconds (as in the manual's
    /// example, `5000`), or a duration such as `"5s"` (default 5 s).
    #[serde(default)]
    pub retry_delay: Option<serde_json::Value>,
    /// Wait after a lost connection before connecting again: seconds, or a duration such as
    /// `"30s"` (default 30, the manual's recovery flow).
    #[serde(default)]
    pub reconnect_delay: Option<serde_json::Value>,
}

impl std::fmt::Debug for ConnectionFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionFile")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(super::redact_url))
            .field("protocol", &self.protocol)
            .field("time_unit", &self.time_unit)
            .field("schema", &self.schema)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| super::REDACTED))
            .field("database", &self.database)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout_secs", &self.statement_timeout_secs)
            .field("sslmode", &self.sslmode)
            .field("timeout", &self.timeout)
            .field("retry_count", &self.retry_count)
            .field("retry_delay", &self.retry_delay)
            .field("reconnect_delay", &self.reconnect_delay)
            .finish()
    }
}

/// How tables are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TableOrder {
    /// Parents before children, from the target's foreign keys; config order otherwise.
    #[serde(rename = "foreign_keys")]
    ForeignKeys,
    /// Exactly as listed in `tables`.
    #[serde(rename = "config")]
    Config,
}

/// Default `table_order`.
pub const fn default_table_order() -> TableOrder {
    TableOrder::ForeignKeys
}

/// Supported connection types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ConnectionKind {
    /// A SQLite database file.
    #[serde(rename = "sqlite")]
    Sqlite,
    /// A PostgreSQL server.
    #[serde(rename = "postgres", alias = "postgresql")]
    Postgres,
    /// A 4D server.
    #[serde(rename = "4d")]
    FourD,
    /// A REST API.
    #[serde(rename = "rest")]
    Rest,
}

impl ConnectionKind {
    /// The name used in `type`.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionKind::Sqlite => "sqlite",
            ConnectionKind::Postgres => "postgres",
            ConnectionKind::FourD => "4d",
            ConnectionKind::Rest => "rest",
        }
    }
}

/// One synced table (or one record type of a table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFile {
    /// Name of this sync entry; also the table name on both sides unless overridden.
    pub name: String,
    /// Table name in the source, when it differs from `name`.
    #[serde(default)]
    pub source_table: Option<String>,
    /// Table name in the target, when it differs from `name`.
    #[serde(default)]
    pub target_table: Option<String>,
    /// Source primary-key column (default `id`), or the columns of a compound key in key
    /// order (`["order_id", "line_no"]`).
    #[serde(default)]
    pub primary_key_field: Option<serde_json::Value>,
    /// Source column that grows on every change (a modify counter or timestamp).
    #[serde(default)]
    pub modify_id_field: Option<String>,
    /// Record type: only source rows with these column values are synced, and only target
    /// rows with them are deleted.
    #[serde(default, rename = "where")]
    pub where_filter: Option<Map<String, serde_json::Value>>,
    /// Source column -> target column renames.
    #[serde(default)]
    pub field_mapping: Option<Map<String, serde_json::Value>>,
    /// Source columns not to sync.
    #[serde(default)]
    pub exclude_fields: Vec<String>,

    /// Overrides the global `batch_size`, and `batch_size_4d` when a side is 4D.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Overrides the global `delete_batch_size`, and `delete_batch_size_4d` when the
    /// target is 4D.
    #[serde(default)]
    pub delete_batch_size: Option<usize>,
    /// Overrides the global `id_array_batch_size`.
    #[serde(default)]
    pub id_array_batch_size: Option<usize>,
    /// Overrides the global `trust_modify_id`.
    #[serde(default)]
    pub trust_modify_id: Option<bool>,
    /// Overrides the global `min_rows_to_sync`.
    #[serde(default)]
    pub min_rows_to_sync: Option<u64>,
    /// Overrides the global `max_delete_percent`.
    #[serde(default)]
    pub max_delete_percent: Option<f64>,
    /// Overrides the global `set_default_value`.
    #[serde(default)]
    pub set_default_value: Option<bool>,
    /// Overrides the global `copy_all_json_keys`.
    #[serde(default)]
    pub copy_all_json_keys: Option<bool>,
    /// Overrides the global `binary_search_for_add`.
    #[serde(default)]
    pub binary_search_for_add: Option<bool>,
    /// Overrides the global `binary_search_min_table_size`.
    #[serde(default)]
    pub binary_search_min_table_size: Option<u64>,
    /// Overrides the global `binary_search_read_batch`.
    #[serde(default)]
    pub binary_search_read_batch: Option<u64>,
    /// Overrides the global `binary_search_recent_first`.
    #[serde(default)]
    pub binary_search_recent_first: Option<u64>,
    /// Overrides the global `binary_search_fanout`.
    #[serde(default)]
    pub binary_search_fanout: Option<u64>,
    /// Overrides the global `fallback_full_compare_on_mismatch`.
    #[serde(default)]
    pub fallback_full_compare_on_mismatch: Option<bool>,
}

/// Default `batch_size`.
pub const fn default_batch_size() -> usize {
    5000
}
/// Default `batch_size_4d`.
pub const fn default_batch_size_4d() -> usize {
    1000
}
/// Default `delete_batch_size`.
pub const fn default_delete_batch_size() -> usize {
    1000
}
/// Default `delete_batch_size_4d`.
pub const fn default_delete_batch_size_4d() -> usize {
    500
}
/// Default `id_array_batch_size`.
pub const fn default_id_array_batch_size() -> usize {
    25000
}
/// Default `max_error_count`.
pub const fn default_max_error_count() -> usize {
    25
}
/// Default `max_error_loop`.
pub const fn default_max_error_loop() -> usize {
    5
}
/// Default `max_delete_percent`.
pub const fn default_max_delete_percent() -> f64 {
    50.0
}
/// Default `binary_search_min_table_size`.
pub const fn default_binary_search_min_table_size() -> u64 {
    10_000
}
/// Default `binary_search_read_batch`.
pub const fn default_binary_search_read_batch() -> u64 {
    500
}
/// Default `max_sleep_chunk_seconds`.
pub const fn default_max_sleep_chunk_seconds() -> u64 {
    3600
}
/// Default `keep_runs`.
pub const fn default_keep_runs() -> usize {
    1000
}
const fn default_true() -> bool {
    true
}
