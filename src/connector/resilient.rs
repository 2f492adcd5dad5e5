//! The resilience layer every connector is wrapped in (configured per connection by
//! [`Resilience`]):
//!
//! - every call has a deadline (`timeout`); a call that gets no answer in time (a stalled
//!   link) fails as a lost connection;
//! - a retryable failure (decided by [`ConnectorError::is_retryable`], the one place that
//!   says what is retryable) is tried again `retry_count` times with exponential backoff
//!   and jitter, the first wait being `retry_delay` (the `backon` crate);
//! - a lost connection (refused, reset, closed, timed out) also ends the session: before
//!   the next attempt the layer waits `reconnect_delay` and calls the connector's
//!   [`Connector::connect`], which drops every connection and opens a new session (the
//!   manual's recovery flow: "disconnect all connections, wait 30 seconds, retry
//!   connection"). Concurrent calls share one reconnection.
//!
//! Writes are retried as well: they are idempotent (upsert by key, delete by key set), so
//! a write whose reply was lost (the commit may or may not have landed) lands once.
//!
//! Every retry, reconnection and final give-up is written to a [`NetworkJournal`] with its
//! time and cause; the engine moves the entries into the run's audit record at each
//! checkpoint.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};

use super::{Capabilities, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page, Side};
pub use crate::config::Resilience;
use crate::model::{ColumnSchema, Key, KeyRange, Row, TableSchema, TableScope, Value};

/// What the resilience layer did about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkEventKind {
    /// The call failed with a retryable error and is tried again after a wait.
    Retry,
    /// The session was dropped and a new one opened after a lost connection.
    Reconnect,
    /// The retries ran out; the call's error stops the run (resumable).
    GaveUp,
}

impl NetworkEventKind {
    /// Lower-case name: `retry`, `reconnect`, `gave up`.
    pub fn name(self) -> &'static str {
        match self {
            NetworkEventKind::Retry => "retry",
            NetworkEventKind::Reconnect => "reconnect",
            NetworkEventKind::GaveUp => "gave up",
        }
    }
}

/// One retry, reconnection or give-up, as the audit record keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkEvent {
    /// When (milliseconds since the Unix epoch).
    pub at_ms: i64,
    /// What happened.
    pub kind: NetworkEventKind,
    /// `source` or `target`.
    pub side: String,
    /// The table the call was about: the database's table name as the layer saw it; the
    /// engine replaces it with the config's table name. `None` for calls about no table
    /// (connecting).
    pub table: Option<String>,
    /// The call, in words (`counting rows`, `writing rows`).
    pub operation: String,
    /// The error that caused it (no secrets: connector errors never hold them).
    pub cause: String,
    /// Which retry this is (1 for the first); for a give-up, the retries made.
    pub attempt: u32,
    /// Wait before the next attempt, in milliseconds (0 for a give-up).
    pub wait_ms: u64,
}

impl NetworkEvent {
    /// An event happening now: `kind` of `operation` on `side` (about `table`), caused by
    /// `cause`, at retry `attempt`, waiting `wait` before the next attempt.
    fn now(
        kind: NetworkEventKind,
        side: Side,
        table: Option<&str>,
        operation: &str,
        cause: String,
        attempt: u32,
        wait: Duration,
    ) -> NetworkEvent {
        NetworkEvent {
            at_ms: crate::checkpoint::now_ms(),
            kind,
            side: side.name().into(),
            table: table.map(str::to_string),
            operation: operation.into(),
            cause,
            attempt,
            wait_ms: wait.as_millis() as u64,
        }
    }
}

/// Where the resilience layers of a run write their [`NetworkEvent`]s until the engine
/// takes them. Shared by both sides; cheap when nothing fails.
#[derive(Debug, Default)]
pub struct NetworkJournal {
    events: Mutex<Vec<NetworkEvent>>,
}

impl NetworkJournal {
    /// Appends an event.
    pub fn record(&self, event: NetworkEvent) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    /// Takes every event recorded so far, oldest first.
    pub fn drain(&self) -> Vec<NetworkEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The session a call ran on, and whether it was lost.
#[derive(Debug, Default)]
struct Session {
    /// Increases with every reconnection.
    generation: u64,
    /// Why the current session is lost, once a call on it lost its connection.
    lost: Option<String>,
}

/// A connector behind the resilience layer.
pub struct Resilient {
    inner: Arc<dyn Connector>,
    /// `inner.describe_endpoint()`, named in timeout errors.
    endpoint: String,
    settings: Resilience,
    side: Side,
    journal: Arc<NetworkJournal>,
    session: Mutex<Session>,
    /// Fast check that `session.lost` is set.
    lost: AtomicBool,
    /// Serializes reconnections: concurrent calls on a lost session share one.
    reconnecting: tokio::sync::Mutex<()>,
    /// `debug_connection_change`: logs reconnections and the close.
    log: super::sql_log::SqlLog,
}

impl Resilient {
    /// Wraps `inner`, an open connector of `side`, recording into `journal`.
    pub fn new(inner: Arc<dyn Connector>, settings: Resilience, side: Side, journal: Arc<NetworkJournal>) -> Resilient {
        Resilient {
            endpoint: inner.describe_endpoint(),
            inner,
            settings,
            side,
            journal,
            session: Mutex::new(Session::default()),
            lost: AtomicBool::new(false),
            reconnecting: tokio::sync::Mutex::new(()),
            log: super::sql_log::SqlLog::default(),
        }
    }

    /// Logs connection changes as `log` asks (`debug_connection_change`).
    pub fn with_log(mut self, log: super::sql_log::SqlLog) -> Resilient {
        self.log = log;
        self
    }

    /// Opens a connector with `open`, retrying a refused or lost first connection as any
    /// other call (the first attempt included in `retry_count`). `described` names the
    /// endpoint in errors (`4d host:port`, as `Endpoint::describe` gives it).
    pub async fn open<F, Fut>(
        settings: Resilience,
        side: Side,
        described: &str,
        journal: Arc<NetworkJournal>,
        open: F,
    ) -> Result<Resilient, ConnectorError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<Arc<dyn Connector>, ConnectorError>> + Send,
    {
        // A server that accepts the connection and never answers must not hold the
        // first connection forever: each attempt has the same deadline as any call.
        let mut open = open;
        let endpoint = format!("{} {described}", side.name());
        let attempt = || deadline(settings.timeout, &endpoint, "connecting", open());
        let inner = retrying(&settings, side, &journal, "connecting", None, attempt).await?;
        Ok(Resilient::new(inner, settings, side, journal))
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation of a usable session: when the current one is lost, waits
    /// `reconnect_delay`, has the connector open a new session, and records it.
    async fn usable_session(&self, table: Option<&str>) -> Result<u64, ConnectorError> {
        if !self.lost.load(Ordering::Acquire) {
            return Ok(self.session().generation);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        let (generation, lost) = {
            let session = self.session();
            (session.generation, session.lost.clone())
        };
        let Some(cause) = lost else { return Ok(generation) };
        tracing::warn!(
            "{} connection lost ({cause}); connecting again in {}",
            self.side.name(),
            humantime::format_duration(self.settings.reconnect_delay)
        );
        let wait = self.settings.reconnect_delay;
        self.journal.record(NetworkEvent::now(
            NetworkEventKind::Reconnect,
            self.side,
            table,
            "connecting again",
            cause,
            0,
            wait,
        ));
        tokio::time::sleep(self.settings.reconnect_delay).await;
        self.log.connection(self.side, &self.endpoint, &format!("reconnecting (session {generation} lost)"));
        deadline(self.settings.timeout, &self.endpoint, "connecting again", self.inner.connect()).await?;
        self.log.connection(
            self.side,
            &self.endpoint,
            &format!("reconnected: session {} replaces {generation}", generation + 1),
        );
        let mut session = self.session();
        session.generation += 1;
        session.lost = None;
        self.lost.store(false, Ordering::Release);
        Ok(session.generation)
    }

    /// Marks session `generation` lost (a later session is left alone).
    fn lose(&self, generation: u64, cause: &ConnectorError) {
        let mut session = self.session();
        if session.generation == generation && session.lost.is_none() {
            session.lost = Some(cause.to_string());
            self.lost.store(true, Ordering::Release);
        }
    }

    /// Runs `op` on a usable session, with the deadline, the retries and reconnection.
    async fn call<T, F, Fut>(&self, what: &'static str, table: Option<&str>, mut op: F) -> Result<T, ConnectorError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ConnectorError>> + Send,
        T: Send,
    {
        let attempt = || {
            let call = op();
            async move {
                let generation = self.usable_session(table).await?;
                let result = deadline(self.settings.timeout, &self.endpoint, what, call).await;
                if let Err(e) = &result
                    && e.is_connection_loss()
                {
                    self.lose(generation, e);
                }
                result
            }
        };
        retrying(&self.settings, self.side, &self.journal, what, table, attempt).await
    }
}

/// `call` with a deadline: no answer within `timeout` is a lost connection.
async fn deadline<T>(
    timeout: Duration,
    endpoint: &str,
    what: &str,
    call: impl Future<Output = Result<T, ConnectorError>>,
) -> Result<T, ConnectorError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(ConnectorError::Connection {
            endpoint: endpoint.to_string(),
            message: format!("{what} got no answer within the timeout of {}", humantime::format_duration(timeout)),
        }),
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not retryable, or has
/// been retried `retry_count` times; records each retry and the give-up in `journal`.
async fn retrying<T, F, Fut>(
    settings: &Resilience,
    side: Side,
    journal: &NetworkJournal,
    what: &str,
    table: Option<&str>,
    attempt: F,
) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T, ConnectorError>> + Send,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(settings.retry_delay)
        .with_max_delay(settings.retry_delay.saturating_mul(16))
        .with_max_times(settings.retry_count as usize)
        .with_jitter();
    let retries = std::sync::atomic::AtomicU32::new(0);
    let event = |kind, cause: &ConnectorError, attempt, wait| {
        NetworkEvent::now(kind, side, table, what, cause.to_string(), attempt, wait)
    };
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(ConnectorError::is_retryable)
        .notify(|e, wait| {
            let n = retries.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                "{} {what} failed ({e}); retry {n} of {} in {}",
                side.name(),
                settings.retry_count,
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
            );
            journal.record(event(NetworkEventKind::Retry, e, n, wait));
        })
        .await;
    match result {
        Err(e) if e.is_retryable() => {
            let made = retries.load(Ordering::Relaxed);
            journal.record(event(NetworkEventKind::GaveUp, &e, made, Duration::ZERO));
            Err(e.gave_up(made))
        }
        other => other,
    }
}

#[async_trait]
impl Connector for Resilient {
    fn describe_endpoint(&self) -> String {
        self.endpoint.clone()
    }
    fn supports_scope(&self, scope: &TableScope) -> Result<(), String> {
        self.inner.supports_scope(scope)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn counters(&self) -> &IoCounters {
        self.inner.counters()
    }
    async fn connect(&self) -> Result<(), ConnectorError> {
        deadline(self.settings.timeout, &self.endpoint, "connecting", self.inner.connect()).await
    }
    async fn health_check(&self) -> Result<(), ConnectorError> {
        self.call("checking the connection", None, || self.inner.health_check()).await
    }
    async fn close(&self) {
        self.log.connection(self.side, &self.endpoint, "disconnecting");
        let closing = async {
            self.inner.close().await;
            Ok(())
        };
        if let Err(e) = deadline(self.settings.timeout, &self.endpoint, "closing the session", closing).await {
            tracing::warn!("{e}");
        }
    }
    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        self.call("describing a table", Some(table), || self.inner.describe(table)).await
    }
    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<KeyProblems, ConnectorError> {
        self.call("checking keys", Some(&scope.table), || self.inner.key_problems(scope, duplicates, limit)).await
    }
    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        self.call("counting rows", Some(&scope.table), || self.inner.count(scope, range)).await
    }
    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        self.call("finding a midpoint key", Some(&scope.table), || self.inner.key_at(scope, range, offset)).await
    }
    async fn count_ranges(&self, scope: &TableScope, ranges: &[KeyRange]) -> Result<Vec<u64>, ConnectorError> {
        self.call("counting rows", Some(&scope.table), || self.inner.count_ranges(scope, ranges)).await
    }
    async fn keys_at(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        offsets: &[u64],
    ) -> Result<Vec<Option<Key>>, ConnectorError> {
        let what = if offsets.len() == 1 { "finding a midpoint key" } else { "finding split keys" };
        self.call(what, Some(&scope.table), || self.inner.keys_at(scope, range, offsets)).await
    }
    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        self.call("reading keys", Some(&scope.table), || self.inner.read_keys(scope, range, limit)).await
    }
    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        self.call("reading rows", Some(&scope.table), || self.inner.read_rows(scope, range, limit)).await
    }
    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        self.call("reading rows by key", Some(&scope.table), || self.inner.read_rows_by_keys(scope, keys)).await
    }
    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        self.call("reading changed rows", Some(&scope.table), || self.inner.read_changed_since(scope, cursor, limit))
            .await
    }
    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        self.call("counting changed rows", Some(&scope.table), || self.inner.count_changed_since(scope, modify_id))
            .await
    }
    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        self.call("counting NULL modify ids", Some(&scope.table), || self.inner.count_null_modify(scope)).await
    }
    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        self.call("reading the largest modify id", Some(&scope.table), || self.inner.max_modify(scope)).await
    }
    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        self.call("writing rows", Some(&scope.table), || self.inner.upsert(scope, rows)).await
    }
    async fn create_table(&self, name: &str, columns: &[ColumnSchema], keys: &[String]) -> Result<(), ConnectorError> {
        self.call("creating a table", Some(name), || self.inner.create_table(name, columns, keys)).await
    }
    async fn foreign_keys(&self, tables: &[String]) -> Result<Vec<(String, String)>, ConnectorError> {
        self.call("reading foreign keys", None, || self.inner.foreign_keys(tables)).await
    }
    async fn insert_new(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        self.call("writing rows", Some(&scope.table), || self.inner.insert_new(scope, rows)).await
    }
    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        self.call("deleting rows", Some(&scope.table), || self.inner.delete(scope, keys)).await
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
        connects: AtomicU32,
        /// Every call fails until a new session is opened (a lost first session).
        lost_session: bool,
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
        async fn connect(&self) -> Result<(), ConnectorError> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
            self.inner.describe(table).await
        }
        async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
            let first_session = self.connects.load(Ordering::SeqCst) == 0;
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures || (self.lost_session && first_session) {
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
        Arc::new(Flaky {
            inner,
            failures,
            stall,
            calls: AtomicU32::new(0),
            connects: AtomicU32::new(0),
            lost_session: false,
        })
    }

    fn settings(retry_count: u32) -> Resilience {
        Resilience {
            timeout: Duration::from_secs(2),
            retry_count,
            retry_delay: Duration::from_millis(100),
            reconnect_delay: Duration::from_millis(500),
        }
    }

    fn wrap(db: Arc<Flaky>, settings: Resilience) -> (Resilient, Arc<NetworkJournal>) {
        let journal = Arc::new(NetworkJournal::default());
        (Resilient::new(db, settings, Side::Source, journal.clone()), journal)
    }

    /// Connection failures are retried `retry_count` times with backoff; the call then
    /// answers, or gives the last error once the retries are spent.
    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_then_given_up() {
        let db = flaky(3, false);
        let resilient = wrap(db.clone(), settings(3)).0;
        assert_eq!(resilient.count(&scope(), &KeyRange::all()).await.unwrap(), 5);
        assert_eq!(db.calls.load(Ordering::SeqCst), 4, "three failures, then the answer");

        let db = flaky(10, false);
        let resilient = wrap(db.clone(), settings(2)).0;
        let err = resilient.count(&scope(), &KeyRange::all()).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("connection reset"), "{err}");
        assert_eq!(db.calls.load(Ordering::SeqCst), 3, "one try and two retries");
    }

    /// A call that never answers (a stalled link) fails after `timeout` as a connection
    /// error, is retried, and the retry answers: the run does not hang.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_call_times_out_and_is_retried() {
        let db = flaky(1, true);
        let resilient = wrap(db.clone(), settings(1)).0;
        let started = tokio::time::Instant::now();
        assert_eq!(resilient.count(&scope(), &KeyRange::all()).await.unwrap(), 5);
        assert!(started.elapsed() >= Duration::from_secs(2), "waited for the timeout");
        assert!(started.elapsed() < Duration::from_secs(3), "then retried at once: {:?}", started.elapsed());

        let db = flaky(5, true);
        let err = wrap(db, settings(0)).0.count(&scope(), &KeyRange::all()).await.unwrap_err();
        assert!(err.to_string().contains("no answer within the timeout of 2s"), "{err}");
    }

    /// A lost connection ends the session: the next attempt waits `reconnect_delay`,
    /// opens a new session, and the journal records each retry and reconnection with its
    /// cause; when the retries run out, the give-up is recorded and the error says so.
    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_reconnects_and_is_recorded() {
        let db = flaky(2, false);
        let (resilient, journal) = wrap(db.clone(), settings(3));
        let started = tokio::time::Instant::now();
        assert_eq!(resilient.count(&scope(), &KeyRange::all()).await.unwrap(), 5);
        assert_eq!(db.connects.load(Ordering::SeqCst), 2, "one new session per lost one");
        assert!(started.elapsed() >= Duration::from_millis(2 * 500 + 100 + 200), "{:?}", started.elapsed());
        let events = journal.drain();
        let kinds: Vec<NetworkEventKind> = events.iter().map(|e| e.kind).collect();
        use NetworkEventKind::*;
        assert_eq!(kinds, [Retry, Reconnect, Retry, Reconnect]);
        assert!(events.iter().all(|e| e.cause.contains("connection reset") && e.table.as_deref() == Some("t")));
        assert_eq!((events[0].attempt, events[2].attempt), (1, 2));
        assert_eq!(events[1].wait_ms, 500);

        let db = flaky(10, false);
        let (resilient, journal) = wrap(db.clone(), settings(1));
        let err = resilient.count(&scope(), &KeyRange::all()).await.unwrap_err();
        assert!(err.to_string().contains("gave up after 1 retry"), "{err}");
        let kinds: Vec<NetworkEventKind> = journal.drain().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [Retry, Reconnect, GaveUp]);
    }

    /// Two calls that lose the same session share one reconnection: the second finds the
    /// session already re-opened and goes on with it.
    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_share_one_reconnection() {
        let mut db = flaky(0, false);
        Arc::get_mut(&mut db).unwrap().lost_session = true;
        let (resilient, journal) = wrap(db.clone(), settings(3));
        let (scope, all) = (scope(), KeyRange::all());
        let (a, b) = tokio::join!(resilient.count(&scope, &all), resilient.count(&scope, &all));
        assert_eq!((a.unwrap(), b.unwrap()), (5, 5));
        assert_eq!(db.connects.load(Ordering::SeqCst), 1, "one new session for both");
        let events = journal.drain();
        let reconnects = events.iter().filter(|e| e.kind == NetworkEventKind::Reconnect).count();
        let retries = events.iter().filter(|e| e.kind == NetworkEventKind::Retry).count();
        assert_eq!(reconnects, 1, "{events:?}");
        assert!(retries >= 1, "{events:?}");
    }

    /// Errors that retrying cannot mend (bad data, a missing table) are not retried.
    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let db = flaky(0, false);
        let resilient = wrap(db, settings(3)).0;
        let missing = TableScope { table: "nope".into(), ..scope() };
        let started = tokio::time::Instant::now();
        assert!(matches!(resilient.count(&missing, &KeyRange::all()).await, Err(ConnectorError::Schema(_))));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
