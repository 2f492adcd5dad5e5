//! The daemon's monitoring endpoint: run outcomes turned into Prometheus metrics
//! (`GET /metrics`, OpenMetrics 1.0 text) and a liveness check (`GET /healthz`, JSON).
//!
//! It owns the accumulation of run reports into counters that only grow over the
//! daemon's life, including the rule that a resumed run adds only what it did since it
//! was last recorded. It must not run syncs, read the state store or print: the daemon
//! hands it [`RunSample`]s and the schedule, and it only counts and serves them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::report::RunReport;

/// `Content-Type` of [`Exporter::render`]'s text: OpenMetrics 1.0, which Prometheus
/// scrapes natively (it is what `prometheus-client` encodes: counters end in `_total`,
/// units get a `# UNIT` line, the text ends with `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every metric name (`db_sync_…`).
const PREFIX: &str = "db_sync";

/// How many run ids the exporter remembers the last counters of, to count a resumed run
/// only by its difference. A daemon resumes the run of its previous cycle, so a few
/// suffice; the oldest (smallest) id is forgotten first.
const RUNS_REMEMBERED: usize = 64;

/// How long [`serve`] waits after a failed `accept` (for example out of file
/// descriptors) before it accepts again, so a lasting failure does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`serve`] lets open requests finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One run's outcome as the daemon saw it, passed to [`Exporter::record_run`].
#[derive(Clone, Copy, Debug)]
pub struct RunSample<'a> {
    /// The run's id in the state store; `None` when the run failed before it was
    /// recorded (for example the database was down at connect).
    pub run_id: Option<u64>,
    /// How the run ended, as a label value: `completed`, `completed with errors`,
    /// `failed`, `interrupted`, … (the daemon's words; any text is accepted).
    pub status: &'a str,
    /// When the run started, in milliseconds since the Unix epoch.
    pub started_unix_ms: i64,
    /// How long the run took, in milliseconds.
    pub duration_ms: u64,
    /// The run's report (counters since the run first started, as a resumed run carries
    /// them over); `None` when the run stopped before it had one.
    pub report: Option<&'a RunReport>,
}

/// Row counters of one table in one run (the run's totals so far, or a difference).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TableCounts {
    /// Source rows at the run's start (the table's share of `recordCountAllTables`).
    processed: u64,
    added: u64,
    modified: u64,
    deleted: u64,
    skipped: u64,
    errors: u64,
    retries: u64,
    reconnects: u64,
}

impl TableCounts {
    fn of(table: &crate::report::TableReport) -> TableCounts {
        TableCounts {
            processed: table.source_before,
            added: table.added,
            modified: table.modified,
            deleted: table.deleted,
            skipped: table.skipped,
            errors: table.errors,
            retries: table.retries,
            reconnects: table.reconnects,
        }
    }

    /// Applies `f` to each pair of fields.
    fn zip(self, other: TableCounts, f: impl Fn(u64, u64) -> u64) -> TableCounts {
        TableCounts {
            processed: f(self.processed, other.processed),
            added: f(self.added, other.added),
            modified: f(self.modified, other.modified),
            deleted: f(self.deleted, other.deleted),
            skipped: f(self.skipped, other.skipped),
            errors: f(self.errors, other.errors),
            retries: f(self.retries, other.retries),
            reconnects: f(self.reconnects, other.reconnects),
        }
    }
}

/// Run-wide counters of one run (the manual's metrics that only grow), times in ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RunCounts {
    read_ms: u64,
    write_ms: u64,
    delete_ms: u64,
    compare_ms: u64,
    binary_search_ms: u64,
    queries: u64,
    binary_searches: u64,
    binary_search_iterations: u64,
    binary_search_queries: u64,
}

impl RunCounts {
    fn of(report: &RunReport) -> RunCounts {
        let m = &report.metrics;
        RunCounts {
            read_ms: m.readTimeAll,
            write_ms: m.writeTimeAll,
            delete_ms: m.deleteTimeAll,
            compare_ms: m.dataCompareTimeAll,
            binary_search_ms: m.binarySearchTimeAll,
            queries: m.queryCountAll,
            binary_searches: m.binarySearchCountAll,
            binary_search_iterations: m.binarySearchIterationCount,
            binary_search_queries: m.binarySearchQueryCount,
        }
    }

    /// Applies `f` to each pair of fields.
    fn zip(self, other: RunCounts, f: impl Fn(u64, u64) -> u64) -> RunCounts {
        RunCounts {
            read_ms: f(self.read_ms, other.read_ms),
            write_ms: f(self.write_ms, other.write_ms),
            delete_ms: f(self.delete_ms, other.delete_ms),
            compare_ms: f(self.compare_ms, other.compare_ms),
            binary_search_ms: f(self.binary_search_ms, other.binary_search_ms),
            queries: f(self.queries, other.queries),
            binary_searches: f(self.binary_searches, other.binary_searches),
            binary_search_iterations: f(self.binary_search_iterations, other.binary_search_iterations),
            binary_search_queries: f(self.binary_search_queries, other.binary_search_queries),
        }
    }
}

/// What one run has contributed to the totals so far.
#[derive(Clone, Debug, Default)]
struct RunContribution {
    tables: BTreeMap<String, TableCounts>,
    run: RunCounts,
}

/// The last recorded run, for the `last_run_*` gauges and `/healthz`.
#[derive(Clone, Debug)]
struct LastRun {
    id: Option<u64>,
    status: String,
    started_unix_ms: i64,
    duration_ms: u64,
}

/// Everything the exporter knows; read whole on each scrape.
#[derive(Debug, Default)]
struct State {
    /// Per-table totals over the daemon's life, by table name (sorted, so the text is
    /// stable from one scrape to the next).
    tables: BTreeMap<String, TableCounts>,
    /// Run-wide totals over the daemon's life.
    run: RunCounts,
    /// Recorded runs by status.
    runs_by_status: BTreeMap<String, u64>,
    /// What each of the last [`RUNS_REMEMBERED`] run ids has contributed.
    contributions: BTreeMap<u64, RunContribution>,
    last_run: Option<LastRun>,
    /// `binarySearchMaxDepthAll` of the last run that had a report.
    binary_search_max_depth: Option<u64>,
    next_run_unix_ms: Option<i64>,
    in_progress_since_unix_ms: Option<i64>,
}

impl State {
    /// Marks `report` as already counted for `run_id` (work an earlier process did).
    fn baseline(&mut self, run_id: u64, report: &RunReport) {
        let contribution = self.contributions.entry(run_id).or_default();
        contribution.run = contribution.run.zip(RunCounts::of(report), u64::max);
        for table in &report.tables {
            let seen = contribution.tables.entry(table.name.clone()).or_default();
            *seen = seen.zip(TableCounts::of(table), u64::max);
        }
        while self.contributions.len() > RUNS_REMEMBERED {
            self.contributions.pop_first();
        }
    }

    fn record(&mut self, sample: &RunSample<'_>) {
        *self.runs_by_status.entry(sample.status.to_string()).or_default() += 1;
        self.last_run = Some(LastRun {
            id: sample.run_id,
            status: sample.status.to_string(),
            started_unix_ms: sample.started_unix_ms,
            duration_ms: sample.duration_ms,
        });
        let Some(report) = sample.report else { return };
        self.binary_search_max_depth = Some(report.metrics.binarySearchMaxDepthAll);
        let Some(run_id) = sample.run_id else {
            // Without an id a later sample of the same run cannot be recognised, so its
            // counters could be counted twice; such a run stopped before it did anything.
            return;
        };
        let contribution = self.contributions.entry(run_id).or_default();
        // A run's contribution is, field by field, the largest value any of its samples
        // reported: a resumed run carries its counters over, and one resumed from an
        // earlier checkpoint may report less than its previous attempt (rows written
        // after that checkpoint are written, and counted, again).
        let run = RunCounts::of(report);
        self.run = self.run.zip(run.zip(contribution.run, u64::saturating_sub), u64::saturating_add);
        contribution.run = contribution.run.zip(run, u64::max);
        for table in &report.tables {
            let counts = TableCounts::of(table);
            let seen = contribution.tables.entry(table.name.clone()).or_default();
            let total = self.tables.entry(table.name.clone()).or_default();
            *total = total.zip(counts.zip(*seen, u64::saturating_sub), u64::saturating_add);
            *seen = seen.zip(counts, u64::max);
        }
        while self.contributions.len() > RUNS_REMEMBERED {
            self.contributions.pop_first();
        }
    }
}

/// Encodes [`State`] on each scrape (registered with the registry as a collector, so the
/// whole exposition is read under one lock and never shows half of a recorded run).
#[derive(Debug)]
struct StateCollector(Arc<Mutex<State>>);

/// Milliseconds to seconds.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Milliseconds since the epoch to seconds since the epoch.
fn timestamp_seconds(unix_ms: i64) -> f64 {
    unix_ms as f64 / 1000.0
}

/// Writes one metric family without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// Writes one counter family with a `table` label, one sample per table.
fn per_table(
    encoder: &mut DescriptorEncoder,
    tables: &BTreeMap<String, TableCounts>,
    name: &str,
    help: &str,
    field: fn(&TableCounts) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, ConstCounter::<u64>::default().metric_type())?;
    for (table, counts) in tables {
        let labels = [("table", table.as_str())];
        ConstCounter::new(field(counts)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = lock(&self.0);
        let e = &mut encoder;
        let tables = &state.tables;
        per_table(e, tables, "record_count_added", "recordCountAllAdded: rows added, per table", |t| t.added)?;
        per_table(e, tables, "record_count_modified", "recordCountAllModified: rows updated, per table", |t| {
            t.modified
        })?;
        per_table(e, tables, "record_count_deleted", "recordCountAllDeleted: rows deleted, per table", |t| t.deleted)?;
        per_table(
            e,
            tables,
            "record_count_skipped",
            "recordCountAllSkipped: rows compared equal and not rewritten, per table",
            |t| t.skipped,
        )?;
        per_table(
            e,
            tables,
            "record_count_processed",
            "recordCountAllTables: source rows at each run's start, per table",
            |t| t.processed,
        )?;
        per_table(e, tables, "table_errors", "errors recorded for the table (a run's error list), per table", |t| {
            t.errors
        })?;
        per_table(e, tables, "table_retries", "calls about the table that failed and were tried again", |t| t.retries)?;
        per_table(e, tables, "table_reconnects", "lost connections during calls about the table", |t| t.reconnects)?;

        let run = &state.run;
        let secs = Some(&Unit::Seconds);
        single(e, "queries", "queryCountAll: database queries", None, &ConstCounter::new(run.queries))?;
        single(e, "read_time", "readTimeAll: time reading data", secs, &ConstCounter::new(seconds(run.read_ms)))?;
        single(e, "write_time", "writeTimeAll: time writing data", secs, &ConstCounter::new(seconds(run.write_ms)))?;
        single(
            e,
            "delete_time",
            "deleteTimeAll: time deleting data",
            secs,
            &ConstCounter::new(seconds(run.delete_ms)),
        )?;
        single(
            e,
            "data_compare_time",
            "dataCompareTimeAll: time comparing data",
            secs,
            &ConstCounter::new(seconds(run.compare_ms)),
        )?;
        single(
            e,
            "binary_search_time",
            "binarySearchTimeAll: time in binary search",
            secs,
            &ConstCounter::new(seconds(run.binary_search_ms)),
        )?;
        single(
            e,
            "binary_searches",
            "binarySearchCountAll: binary searches",
            None,
            &ConstCounter::new(run.binary_searches),
        )?;
        single(
            e,
            "binary_search_iterations",
            "binarySearchIterationCount: binary search iterations (ranges processed)",
            None,
            &ConstCounter::new(run.binary_search_iterations),
        )?;
        single(
            e,
            "binary_search_queries",
            "binarySearchQueryCount: queries used in binary search",
            None,
            &ConstCounter::new(run.binary_search_queries),
        )?;
        if let Some(depth) = state.binary_search_max_depth {
            single(
                e,
                "binary_search_max_depth",
                "binarySearchMaxDepthAll: deepest binary search level of the last run with a report",
                None,
                &ConstGauge::new(depth as i64),
            )?;
        }

        let mut runs = e.encode_descriptor(
            "runs",
            "runs recorded, by how they ended (a resumed run counts each time)",
            None,
            ConstCounter::<u64>::default().metric_type(),
        )?;
        for (status, count) in &state.runs_by_status {
            ConstCounter::new(*count).encode(runs.encode_family(&[("status", status.as_str())])?)?;
        }
        if let Some(last) = &state.last_run {
            let mut status = e.encode_descriptor(
                "last_run_status",
                "1 for how the last run ended, 0 for the other statuses seen",
                None,
                ConstGauge::<i64>::default().metric_type(),
            )?;
            for seen in state.runs_by_status.keys() {
                let value = i64::from(*seen == last.status);
                ConstGauge::new(value).encode(status.encode_family(&[("status", seen.as_str())])?)?;
            }
            if let Some(id) = last.id {
                single(
                    e,
                    "last_run_id",
                    "id of the last run (absent when it failed before it was recorded)",
                    None,
                    &ConstGauge::new(id as i64),
                )?;
            }
            single(
                e,
                "last_run_start_timestamp",
                "when the last run started, since the Unix epoch",
                secs,
                &ConstGauge::new(timestamp_seconds(last.started_unix_ms)),
            )?;
            single(
                e,
                "last_run_duration",
                "how long the last run took",
                secs,
                &ConstGauge::new(seconds(last.duration_ms)),
            )?;
        }
        if let Some(next) = state.next_run_unix_ms {
            single(
                e,
                "next_run_start_timestamp",
                "when the next run is scheduled to start, since the Unix epoch (absent: none scheduled)",
                secs,
                &ConstGauge::new(timestamp_seconds(next)),
            )?;
        }
        single(
            e,
            "run_in_progress",
            "1 while a run is in progress, 0 when idle",
            None,
            &ConstGauge::new(i64::from(state.in_progress_since_unix_ms.is_some())),
        )?;
        if let Some(since) = state.in_progress_since_unix_ms {
            single(
                e,
                "run_in_progress_start_timestamp",
                "when the run in progress started, since the Unix epoch (absent when idle)",
                secs,
                &ConstGauge::new(timestamp_seconds(since)),
            )?;
        }
        Ok(())
    }
}

/// Locks the state. A panic while it was held cannot leave it torn in a way that matters
/// more than losing the metrics, so a poisoned lock is used as it is.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The daemon's metrics: fed by the daemon's loop, read by [`serve`]'s requests.
///
/// `Send + Sync`; share it as `Arc<Exporter>`. Counters accumulate over the exporter's
/// life (Prometheus sees a reset when the daemon restarts, as it expects).
#[derive(Debug)]
pub struct Exporter {
    /// Every number, behind a std mutex: held only to update or encode a few hundred
    /// bytes, never across an `.await`, so an async lock would buy nothing.
    state: Arc<Mutex<State>>,
    /// The registry that encodes [`State`] (through [`StateCollector`]).
    registry: Registry,
}

impl Default for Exporter {
    fn default() -> Exporter {
        Exporter::new()
    }
}

impl Exporter {
    /// An exporter with no run recorded, idle, nothing scheduled.
    pub fn new() -> Exporter {
        let state = Arc::new(Mutex::new(State::default()));
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(StateCollector(Arc::clone(&state))));
        Exporter { state, registry }
    }

    /// Records one run's outcome.
    ///
    /// Always counts the run in `db_sync_runs_total{status}` and makes it the last run.
    /// Its report's counters are added to the totals only when it has a `run_id`; when
    /// that id was recorded before (a run that stopped half-way and was resumed, whose
    /// report carries the earlier counters over), only what exceeds the earlier samples
    /// of that run is added, field by field, so nothing is counted twice. The last
    /// 64 run ids are remembered (a run resumed after 64 newer ones counts in full).
    pub fn record_run(&self, sample: &RunSample<'_>) {
        lock(&self.state).record(sample);
    }

    /// Tells the exporter that run `run_id` had done `report` before this process took it
    /// over (a run resumed from an earlier process): a later [`Exporter::record_run`] of that
    /// run adds only what goes beyond it.
    pub fn baseline(&self, run_id: u64, report: &RunReport) {
        lock(&self.state).baseline(run_id, report);
    }

    /// Sets when the next run is scheduled to start, in milliseconds since the Unix
    /// epoch (`None`: none scheduled; the gauge is then absent).
    pub fn set_next_run(&self, unix_ms: Option<i64>) {
        lock(&self.state).next_run_unix_ms = unix_ms;
    }

    /// Sets whether a run is in progress: `Some(start)` with its start in milliseconds
    /// since the Unix epoch, `None` when idle.
    pub fn set_in_progress(&self, started_unix_ms: Option<i64>) {
        lock(&self.state).in_progress_since_unix_ms = started_unix_ms;
    }

    /// The metrics as OpenMetrics 1.0 text (serve it with [`METRICS_CONTENT_TYPE`]),
    /// ending with `# EOF`. Metric names start with `db_sync_`; times are in seconds.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail, and the collector returns no other errors.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        text
    }

    /// The `/healthz` body: one line of JSON,
    /// `{"status":"ok","last_run_id":7|null,"last_run_status":"completed"|null,
    /// "last_run_start":RFC 3339|null,"next_run":RFC 3339|null,"run_in_progress":bool}`.
    pub fn health(&self) -> String {
        let state = lock(&self.state);
        let rfc3339 =
            |ms: Option<i64>| ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()).map(|t| t.to_string());
        let last = state.last_run.as_ref();
        serde_json::json!({
            "status": "ok",
            "last_run_id": last.and_then(|l| l.id),
            "last_run_status": last.map(|l| l.status.as_str()),
            "last_run_start": rfc3339(last.map(|l| l.started_unix_ms)),
            "next_run": rfc3339(state.next_run_unix_ms),
            "run_in_progress": state.in_progress_since_unix_ms.is_some(),
        })
        .to_string()
    }
}

/// A response with a body and its content type.
fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Answers one request: `/metrics` and `/healthz` to GET and HEAD, 405 to other methods
/// on them, 404 elsewhere.
fn respond(exporter: &Exporter, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    enum Page {
        Metrics,
        Health,
    }
    let page = match request.uri().path() {
        "/metrics" => Page::Metrics,
        "/healthz" => Page::Health,
        _ => return response(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n".into()),
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut refused =
            response(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "method not allowed\n".into());
        refused.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    match page {
        Page::Metrics => response(StatusCode::OK, METRICS_CONTENT_TYPE, exporter.render()),
        Page::Health => response(StatusCode::OK, "application/json", exporter.health()),
    }
}

/// Serves `GET /metrics` (the [`Exporter::render`] text, [`METRICS_CONTENT_TYPE`]) and
/// `GET /healthz` (the [`Exporter::health`] JSON) over HTTP/1.1 on `listener`; other
/// paths get 404.
///
/// Returns once `shutdown` is cancelled: it stops accepting at once, lets requests in
/// flight finish for up to 5 seconds and closes idle keep-alive connections. A failed
/// `accept` (for example no file descriptor left) is logged and retried after a pause
/// rather than ending the endpoint; errors of single connections are logged at debug.
///
/// # Errors
///
/// An error reading the listener's local address (logged at start); nothing after.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>, shutdown: CancellationToken) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving metrics on /metrics and /healthz");
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accepting a connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let exporter = Arc::clone(&exporter);
        let service = service_fn(move |request: Request<Incoming>| {
            let answer = respond(&exporter, &request);
            async move { Ok::<_, Infallible>(answer) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "metrics endpoint: connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::debug!("metrics endpoint: connections still open after the grace period were dropped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Metrics, TableReport};

    /// Reads exposition text as Prometheus would, independently of the encoder: every
    /// line is `# HELP name text`, `# TYPE name type`, `# UNIT name unit`, the final
    /// `# EOF`, or a sample `name{label="value",...} value` whose name belongs to the
    /// family declared last. Returns the samples keyed by `name{labels}` as written;
    /// panics with the line on anything else.
    fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
        let valid_name = |name: &str| {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        assert!(text.ends_with("# EOF\n"), "no EOF marker at the end:\n{text}");
        let mut samples = BTreeMap::new();
        let mut family: Option<(String, String)> = None;
        for line in text.lines().take_while(|l| *l != "# EOF") {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                let (keyword, name, rest) = (words.next().unwrap(), words.next(), words.next());
                let name = name.unwrap_or_else(|| panic!("comment without a name: {line}"));
                assert!(valid_name(name), "bad metric name in {line}");
                let rest = rest.unwrap_or_else(|| panic!("comment without text: {line}"));
                match keyword {
                    "HELP" => assert!(!rest.is_empty(), "empty help: {line}"),
                    "TYPE" => {
                        assert!(["counter", "gauge"].contains(&rest), "unexpected type: {line}");
                        family = Some((name.to_string(), rest.to_string()));
                    }
                    "UNIT" => assert!(name.ends_with(&format!("_{rest}")), "unit not in the name: {line}"),
                    _ => panic!("unknown comment: {line}"),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value is not a number: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, Some(labels)),
                None => (series, None),
            };
            assert!(valid_name(name), "bad metric name: {line}");
            let (declared, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before a TYPE: {line}"));
            let expected = if kind == "counter" { format!("{declared}_total") } else { declared.clone() };
            assert_eq!(name, expected, "sample outside its family: {line}");
            if let Some(labels) = labels {
                let mut rest = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(valid_name(key) && !key.contains(':'), "bad label name: {line}");
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => {
                                let escaped = chars.next().map(|(_, c)| c);
                                assert!(matches!(escaped, Some('\\' | '"' | 'n')), "bad escape: {line}");
                            }
                            Some((i, '"')) => break i,
                            Some(_) => {}
                            None => panic!("unterminated label value: {line}"),
                        }
                    };
                    rest = &after[end + 1..];
                    if !rest.is_empty() {
                        rest = rest.strip_prefix(',').unwrap_or_else(|| panic!("labels not comma separated: {line}"));
                    }
                }
            }
            assert!(samples.insert(series.to_string(), value).is_none(), "repeated series: {line}");
        }
        samples
    }

    /// The value of one series, which must be present.
    fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
        *samples.get(series).unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
    }

    fn table(name: &str, source_before: u64, added: u64, modified: u64, deleted: u64, skipped: u64) -> TableReport {
        TableReport { name: name.into(), source_before, added, modified, deleted, skipped, ..TableReport::default() }
    }

    fn sample<'a>(run_id: Option<u64>, status: &'a str, report: Option<&'a RunReport>) -> RunSample<'a> {
        RunSample { run_id, status, started_unix_ms: 1_767_225_600_000, duration_ms: 1_500, report }
    }

    /// A run recorded twice (failed half-way, then resumed with its counters carried
    /// over) counts once, at its larger values; a run without an id counts in runs_total
    /// only; a second run adds to the totals; the gauges describe the last run.
    #[test]
    fn render_sums_runs_and_counts_a_resumed_run_once() {
        let exporter = Exporter::new();
        let mut customers = table("customers", 100, 10, 2, 1, 5);
        customers.errors = 1;
        let failed = RunReport {
            tables: vec![customers.clone()],
            metrics: Metrics {
                readTimeAll: 1_500,
                writeTimeAll: 250,
                queryCountAll: 40,
                binarySearchCountAll: 1,
                binarySearchIterationCount: 6,
                binarySearchQueryCount: 12,
                binarySearchMaxDepthAll: 3,
                binarySearchTimeAll: 500,
                ..Metrics::default()
            },
            ..RunReport::default()
        };
        exporter.record_run(&sample(Some(7), "failed", Some(&failed)));

        // Resumed: the earlier 10 added rows are carried over into 25, a new table appears.
        customers.added = 25;
        customers.deleted = 4;
        let mut weird = table("we\"ird", 3, 3, 0, 0, 0);
        weird.retries = 2;
        let resumed = RunReport {
            tables: vec![customers, weird],
            metrics: Metrics {
                readTimeAll: 2_000,
                writeTimeAll: 1_000,
                queryCountAll: 70,
                binarySearchCountAll: 1,
                binarySearchIterationCount: 6,
                binarySearchQueryCount: 12,
                binarySearchMaxDepthAll: 3,
                binarySearchTimeAll: 500,
                ..Metrics::default()
            },
            ..RunReport::default()
        };
        exporter.record_run(&sample(Some(7), "completed", Some(&resumed)));
        exporter.record_run(&sample(None, "failed", None));

        let next = RunReport {
            tables: vec![table("customers", 101, 1, 0, 0, 100)],
            metrics: Metrics { readTimeAll: 250, queryCountAll: 5, binarySearchMaxDepthAll: 1, ..Metrics::default() },
            ..RunReport::default()
        };
        exporter.record_run(&RunSample {
            started_unix_ms: 1_767_229_200_500,
            duration_ms: 2_250,
            ..sample(Some(8), "completed", Some(&next))
        });

        let text = exporter.render();
        let samples = parse_exposition(&text);
        let v = |series: &str| value(&samples, series);
        // customers: run 7 counted at its resumed values, plus run 8.
        assert_eq!(v(r#"db_sync_record_count_added_total{table="customers"}"#), 26.0, "{text}");
        assert_eq!(v(r#"db_sync_record_count_modified_total{table="customers"}"#), 2.0);
        assert_eq!(v(r#"db_sync_record_count_deleted_total{table="customers"}"#), 4.0);
        assert_eq!(v(r#"db_sync_record_count_skipped_total{table="customers"}"#), 105.0);
        assert_eq!(v(r#"db_sync_record_count_processed_total{table="customers"}"#), 201.0);
        assert_eq!(v(r#"db_sync_table_errors_total{table="customers"}"#), 1.0);
        assert_eq!(v(r#"db_sync_record_count_added_total{table="we\"ird"}"#), 3.0);
        assert_eq!(v(r#"db_sync_table_retries_total{table="we\"ird"}"#), 2.0);
        assert_eq!(v("db_sync_queries_total"), 75.0);
        assert_eq!(v("db_sync_read_time_seconds_total"), 2.25);
        assert_eq!(v("db_sync_write_time_seconds_total"), 1.0);
        assert_eq!(v("db_sync_delete_time_seconds_total"), 0.0);
        assert_eq!(v("db_sync_binary_search_time_seconds_total"), 0.5);
        assert_eq!(v("db_sync_binary_searches_total"), 1.0);
        assert_eq!(v("db_sync_binary_search_iterations_total"), 6.0);
        assert_eq!(v("db_sync_binary_search_queries_total"), 12.0);
        assert_eq!(v("db_sync_binary_search_max_depth"), 1.0);
        assert_eq!(v(r#"db_sync_runs_total{status="failed"}"#), 2.0);
        assert_eq!(v(r#"db_sync_runs_total{status="completed"}"#), 2.0);
        assert_eq!(v(r#"db_sync_last_run_status{status="completed"}"#), 1.0);
        assert_eq!(v(r#"db_sync_last_run_status{status="failed"}"#), 0.0);
        assert_eq!(v("db_sync_last_run_id"), 8.0);
        assert_eq!(v("db_sync_last_run_start_timestamp_seconds"), 1_767_229_200.5);
        assert_eq!(v("db_sync_last_run_duration_seconds"), 2.25);
        assert_eq!(v("db_sync_run_in_progress"), 0.0);
        assert!(!samples.contains_key("db_sync_next_run_start_timestamp_seconds"), "{text}");
        assert!(text.contains("# HELP db_sync_record_count_added recordCountAllAdded: rows added, per table\n"));
    }

    /// A run resumed from a checkpoint earlier than its previous attempt reached reports
    /// less than that attempt: nothing is subtracted, and a later attempt adds only what
    /// exceeds the largest value seen, so the run counts once at its largest values.
    #[test]
    fn a_resumed_run_reporting_less_is_not_counted_twice() {
        let exporter = Exporter::new();
        let report = |added| RunReport { tables: vec![table("items", 0, added, 0, 0, 0)], ..RunReport::default() };
        for added in [50, 40, 60] {
            exporter.record_run(&sample(Some(9), "interrupted", Some(&report(added))));
        }
        let samples = parse_exposition(&exporter.render());
        assert_eq!(value(&samples, r#"db_sync_record_count_added_total{table="items"}"#), 60.0);
        assert_eq!(value(&samples, r#"db_sync_runs_total{status="interrupted"}"#), 3.0);
    }

    /// The last run's id is absent when it failed before it was recorded; the schedule
    /// and in-progress gauges follow their setters, absent when unset.
    #[test]
    fn schedule_and_in_progress_gauges() {
        let exporter = Exporter::new();
        let samples = parse_exposition(&exporter.render());
        assert_eq!(value(&samples, "db_sync_run_in_progress"), 0.0);
        assert!(!samples.keys().any(|k| k.starts_with("db_sync_last_run")), "{samples:?}");

        exporter.record_run(&sample(Some(3), "completed", None));
        exporter.record_run(&sample(None, "failed", None));
        exporter.set_next_run(Some(1_767_229_200_000));
        exporter.set_in_progress(Some(1_767_225_600_250));
        let samples = parse_exposition(&exporter.render());
        assert!(!samples.contains_key("db_sync_last_run_id"), "{samples:?}");
        assert_eq!(value(&samples, r#"db_sync_last_run_status{status="failed"}"#), 1.0);
        assert_eq!(value(&samples, "db_sync_next_run_start_timestamp_seconds"), 1_767_229_200.0);
        assert_eq!(value(&samples, "db_sync_run_in_progress"), 1.0);
        assert_eq!(value(&samples, "db_sync_run_in_progress_start_timestamp_seconds"), 1_767_225_600.25);

        exporter.set_next_run(None);
        exporter.set_in_progress(None);
        let samples = parse_exposition(&exporter.render());
        assert!(!samples.contains_key("db_sync_next_run_start_timestamp_seconds"));
        assert!(!samples.contains_key("db_sync_run_in_progress_start_timestamp_seconds"));
        assert_eq!(value(&samples, "db_sync_run_in_progress"), 0.0);
    }

    /// Over real HTTP: /metrics answers 200 with the OpenMetrics type and the recorded
    /// counters, /healthz 200 with JSON naming the last run, other paths 404, a POST to
    /// /metrics 405; cancelling the token ends `serve` although the client still holds
    /// a keep-alive connection, and the port is then closed.
    #[tokio::test]
    async fn serves_metrics_healthz_and_404_until_cancelled() {
        let exporter = Arc::new(Exporter::new());
        let report = RunReport { tables: vec![table("customers", 10, 4, 0, 0, 6)], ..RunReport::default() };
        exporter.record_run(&sample(Some(12), "completed with errors", Some(&report)));
        exporter.set_next_run(Some(1_767_229_200_000));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::clone(&exporter), shutdown.clone()));
        let client = reqwest::Client::new();
        let url = |path: &str| format!("http://{address}{path}");

        let metrics = client.get(url("/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        assert_eq!(metrics.headers()[CONTENT_TYPE.as_str()], METRICS_CONTENT_TYPE);
        let samples = parse_exposition(&metrics.text().await.unwrap());
        assert_eq!(value(&samples, r#"db_sync_record_count_added_total{table="customers"}"#), 4.0);
        assert_eq!(value(&samples, r#"db_sync_last_run_status{status="completed with errors"}"#), 1.0);

        let health = client.get(url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.headers()[CONTENT_TYPE.as_str()], "application/json");
        let health: serde_json::Value = serde_json::from_str(&health.text().await.unwrap()).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["last_run_status"], "completed with errors");
        assert_eq!(health["last_run_id"], 12);
        assert_eq!(health["next_run"], "2026-01-01T01:00:00Z");
        assert_eq!(health["run_in_progress"], false);

        assert_eq!(client.get(url("/nothing")).send().await.unwrap().status(), 404);
        let post = client.post(url("/metrics")).send().await.unwrap();
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()[ALLOW.as_str()], "GET, HEAD");

        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(3), server).await;
        ended.expect("serve did not return after cancel").unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(address).await.is_err(), "still accepting after shutdown");
        drop(client);
    }
}
