//! The resilience layer every connector is wrapped in: each call has a deadline (the
//! connection's `timeout`), and a retryable failure (decided by
//! [`ConnectorError::is_retryable`], the one place that says what is retryable) is tried
//! again `retry_count` times with exponential backoff and jitter, the first wait being
//! `retry_delay` (the `backon` crate). Writes are retried as well: they are idempotent
//! (upsert by key, delete by key set), so a write whose reply was lost lands once.
//!
//! The manual's recovery flow ("Disconnect All Connections, Wait 30 seconds, Retry
//! Connection") is the backoff here; dropping and re-opening connections is the backend's
//! pool's job (sqlx re-opens a closed connection on the next acquire).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};

use super::{Capabilities, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page};
use crate::config::ConnectionFile;
use crate::model::{ColumnSchema, Key, KeyRange, Row, TableSchema, TableScope, Value};

/// Deadline and retries of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resilience {
    /// Longest a single call may take before it counts as a failed connection (config
    /// `timeout`, seconds; default 300, as the manual's example).
    pub timeout: Duration,
    /// Retries of a call that failed with a retryable error (config `retry_count`; default 3).
    pub retry_count: u32,
    /// Wait before the first retry, doubling (with jitter) after each (config
    /// `retry_delay`, milliseconds as in the manual's example; default 5000).
    pub retry_delay: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience { timeout: Duration::from_secs(300), retry_count: 3, retry_delay: Duration::from_millis(5000) }
    }
}

impl Resilience {
    /// The settings of a connection entry, defaults where it says nothing.
    pub fn of(raw: &ConnectionFile) -> Resilience {
        let default = Resilience::default();
        Resilience {
            timeout: raw.timeout.map_or(default.timeout, Duration::from_secs),
            retry_count: raw.retry_count.unwrap_or(default.retry_count),
            retry_delay: raw.retry_delay.map_or(default.retry_delay, Duration::from_millis),
        }
    }
}

/// A connector behind the resilience layer.
pub struct Resilient {
    inner: Arc<dyn Connector>,
    settings: Resilience,
}

impl Resilient {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Connector>, settings: Resilience) -> Resilient {
        Resilient { inner, settings }
    }

    /// Runs `op` with the deadline and the retries.
    async fn call<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T, ConnectorError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ConnectorError>> + Send,
        T: Send,
    {
        let timeout = self.settings.timeout;
        let endpoint = self.inner.describe_endpoint();
        let attempt = || {
            let call = op();
            let endpoint = endpoint.clone();
            async move {
                match tokio::time::timeout(timeout, call).await {
                    Ok(result) => result,
                    Err(_) => Err(ConnectorError::Connection {
                        endpoint,
                        message: format!("{what} got no answer within the timeout of {}", humane(timeout)),
                    }),
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_delay)
            .with_max_delay(self.settings.retry_delay.saturating_mul(16))
            .with_max_times(self.settings.retry_count as usize)
            .with_jitter();
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(ConnectorError::is_retryable)
            .notify(|e, wait| tracing::warn!("{what} failed ({e}); retrying in {}", humane(wait)))
            .await
    }
}

/// A duration as people read it: `300s`, `1.5s`, `250ms`.
fn humane(d: Duration) -> String {
    if d < Duration::from_secs(1) { format!("{}ms", d.as_millis()) } else { format!("{}s", d.as_secs_f64()) }
}

#[async_trait]
impl Connector for Resilient {
    fn describe_endpoint(&self) -> String {
        self.inner.describe_endpoint()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn counters(&self) -> &IoCounters {
        self.inner.counters()
    }
    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        self.call("describing a table", || self.inner.describe(table)).await
    }
    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<KeyProblems, ConnectorError> {
        self.call("checking keys", || self.inner.key_problems(scope, duplicates, limit)).await
    }
    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        self.call("counting rows", || self.inner.count(scope, range)).await
    }
    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        self.call("finding a midpoint key", || self.inner.key_at(scope, range, offset)).await
    }
    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        self.call("reading keys", || self.inner.read_keys(scope, range, limit)).await
    }
    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        self.call("reading rows", || self.inner.read_rows(scope, range, limit)).await
    }
    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        self.call("reading rows by key", || self.inner.read_rows_by_keys(scope, keys)).await
    }
    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        self.call("reading changed rows", || self.inner.read_changed_since(scope, cursor, limit)).await
    }
    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        self.call("counting changed rows", || self.inner.count_changed_since(scope, modify_id)).await
    }
    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        self.call("counting NULL modify ids", || self.inner.count_null_modify(scope)).await
    }
    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        self.call("reading the largest modify id", || self.inner.max_modify(scope)).await
    }
    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        self.call("writing rows", || self.inner.upsert(scope, rows)).await
    }
    async fn create_table(&self, name: &str, columns: &[ColumnSchema], keys: &[String]) -> Result<(), ConnectorError> {
        self.call("creating a table", || self.inner.create_table(name, columns, keys)).await
    }
    async fn foreign_keys(&self, tables: &[String]) -> Result<Vec<(String, String)>, ConnectorError> {
        self.call("reading foreign keys", || self.inner.foreign_keys(tables)).await
    }
    async fn insert_new(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        self.call("writing rows", || self.inner.insert_new(scope, rows)).await
    }
    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        self.call("deleting rows", || self.inner.delete(scope, keys)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::connector::memory::MemoryConnector;

    /// A database that fails its first `failures` counts with a connection error, or
    /// never answers them (`stall`).
    struct Flaky {
        inner: MemoryConnector,
        failures: u32,
        stall: bool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Connector for Flaky {
        fn describe_endpoint(&self) -> String {
            "flaky".into()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn counters(&self) -> &IoCounters {
            self.inner.counters()
        }
        async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
            self.inner.describe(table).await
        }
        async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                if self.stall {
                    std::future::pending::<()>().await;
                }
                return Err(ConnectorError::Connection {
                    endpoint: "flaky".into(),
                    message: "connection reset".into(),
                });
            }
            self.inner.count(scope, range).await
        }
        async fn read_keys(&self, s: &TableScope, r: &KeyRange, l: usize) -> Result<Page<Key>, ConnectorError> {
            self.inner.read_keys(s, r, l).await
        }
        async fn read_rows(&self, s: &TableScope, r: &KeyRange, l: usize) -> Result<Page<Row>, ConnectorError> {
            self.inner.read_rows(s, r, l).await
        }
        async fn read_rows_by_keys(&self, s: &TableScope, k: &[Key]) -> Result<Vec<Row>, ConnectorError> {
            self.inner.read_rows_by_keys(s, k).await
        }
        async fn read_changed_since(
            &self,
            s: &TableScope,
            c: &ModifyCursor,
            l: usize,
        ) -> Result<Page<Row>, ConnectorError> {
            self.inner.read_changed_since(s, c, l).await
        }
        async fn count_changed_since(&self, s: &TableScope, m: Option<&Value>) -> Result<u64, ConnectorError> {
            self.inner.count_changed_since(s, m).await
        }
        async fn count_null_modify(&self, s: &TableScope) -> Result<u64, ConnectorError> {
            self.inner.count_null_modify(s).await
        }
        async fn max_modify(&self, s: &TableScope) -> Result<Option<Value>, ConnectorError> {
            self.inner.max_modify(s).await
        }
    }

    fn scope() -> TableScope {
        TableScope {
            table: "t".into(),
            columns: vec!["id".into()],
            key_indexes: vec![0],
            modify_index: None,
            filter: vec![],
            skip_null_keys: false,
            skip_keys: vec![],
        }
    }

    fn flaky(failures: u32, stall: bool) -> Arc<Flaky> {
        let inner = MemoryConnector::new();
        inner.create_table("t", &["id"], 0);
        inner.insert("t", (1..=5).map(|i| vec![Value::Int(i)]));
        Arc::new(Flaky { inner, failures, stall, calls: AtomicU32::new(0) })
    }

    fn settings(retry_count: u32) -> Resilience {
        Resilience { timeout: Duration::from_secs(2), retry_count, retry_delay: Duration::from_millis(100) }
    }

    /// Connection failures are retried `retry_count` times with backoff; the call then
    /// answers, or gives the last error once the retries are spent.
    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_then_given_up() {
        let db = flaky(3, false);
        let resilient = Resilient::new(db.clone(), settings(3));
        assert_eq!(resilient.count(&scope(), &KeyRange::all()).await.unwrap(), 5);
        assert_eq!(db.calls.load(Ordering::SeqCst), 4, "three failures, then the answer");

        let db = flaky(10, false);
        let resilient = Resilient::new(db.clone(), settings(2));
        let err = resilient.count(&scope(), &KeyRange::all()).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("connection reset"), "{err}");
        assert_eq!(db.calls.load(Ordering::SeqCst), 3, "one try and two retries");
    }

    /// A call that never answers (a stalled link) fails after `timeout` as a connection
    /// error, is retried, and the retry answers: the run does not hang.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_call_times_out_and_is_retried() {
        let db = flaky(1, true);
        let resilient = Resilient::new(db.clone(), settings(1));
        let started = tokio::time::Instant::now();
        assert_eq!(resilient.count(&scope(), &KeyRange::all()).await.unwrap(), 5);
        assert!(started.elapsed() >= Duration::from_secs(2), "waited for the timeout");
        assert!(started.elapsed() < Duration::from_secs(3), "then retried at once: {:?}", started.elapsed());

        let db = flaky(5, true);
        let err = Resilient::new(db, settings(0)).count(&scope(), &KeyRange::all()).await.unwrap_err();
        assert!(err.to_string().contains("no answer within the timeout of 2s"), "{err}");
    }

    /// Errors that retrying cannot mend (bad data, a missing table) are not retried.
    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let db = flaky(0, false);
        let resilient = Resilient::new(db, settings(3));
        let missing = TableScope { table: "nope".into(), ..scope() };
        let started = tokio::time::Instant::now();
        assert!(matches!(resilient.count(&missing, &KeyRange::all()).await, Err(ConnectorError::Schema(_))));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
