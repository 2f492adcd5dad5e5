//! The HTTP layer shared by the connectors that speak to a server over HTTP (4D's REST
//! server today, generic REST APIs next): one `reqwest` client per session with its own
//! cookie jar (so a session cookie is sent back on every request and a new session starts
//! with none), TLS by rustls, transport failures classified as [`ConnectorError`]s the
//! resilience layer retries, request and byte counters, and JSON decoding that keeps every
//! digit of a number (`serde_json` with `arbitrary_precision`).
//!
//! Deadlines and retries are not here: the resilience layer (`connector::resilient`) puts a
//! deadline on every connector call and retries it; this layer only bounds connecting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::cookie::Jar;
use url::Url;

use super::ConnectorError;

/// Characters escaped in a query value: all but the unreserved ones of RFC 3986.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Characters escaped in one path segment (a dataclass or attribute name): as for query
/// values, keeping `$` and `,` which 4D's paths use literally (`$catalog`, `a,b`).
const PATH_SEGMENT: &AsciiSet = &QUERY_VALUE.remove(b'$').remove(b',');

/// Percent-encodes a query value.
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Percent-encodes a path segment (`,` and `$` kept).
pub fn encode_path_segment(segment: &str) -> String {
    utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

/// A query string built parameter by parameter: `name=value&…`, each value
/// percent-encoded; names are written as given (`$filter`, `$top`).
#[derive(Clone, Debug, Default)]
pub struct Query {
    text: String,
}

impl Query {
    /// An empty query.
    pub fn new() -> Query {
        Query::default()
    }

    /// Adds `name=value` (value percent-encoded).
    pub fn param(mut self, name: &str, value: impl AsRef<str>) -> Query {
        if !self.text.is_empty() {
            self.text.push('&');
        }
        self.text.push_str(name);
        self.text.push('=');
        self.text.push_str(&encode_query_value(value.as_ref()));
        self
    }

    /// The query text, without the leading `?`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// An HTTP answer: status and body. Bodies are read whole (pages are bounded by `$top`).
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body's bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (numbers keep every digit), or `None` when it is empty or not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }

    /// The body's first 200 characters on one line, for an error message.
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match text.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        }
    }
}

/// Requests and bytes sent through one [`HttpClient`], for benchmarks and reports.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Requests sent (answered or not).
    pub requests: AtomicU64,
    /// Request body bytes plus URL bytes sent.
    pub bytes_sent: AtomicU64,
    /// Response body bytes received.
    pub bytes_received: AtomicU64,
}

/// One HTTP server: a base URL and the current session's client and cookie jar.
pub struct HttpClient {
    base: Url,
    endpoint: String,
    connect_timeout: Duration,
    /// The current client and its cookie jar (the session's cookies).
    session: RwLock<(Arc<reqwest::Client>, Arc<Jar>)>,
    counters: HttpCounters,
    /// Requests in flight at once, at most [`MAX_IN_FLIGHT`].
    in_flight: tokio::sync::Semaphore,
}

/// Requests one client sends at once; more wait for a free slot. A search splitting many
/// ranges at once must not flood one server (a 4D server answers each request in a
/// process of its own).
pub const MAX_IN_FLIGHT: usize = 32;

impl HttpClient {
    /// A client for the server at `base` (scheme, host, port; a path is kept as a prefix).
    /// `endpoint` names the server in errors (no secrets); connecting gives up after
    /// `connect_timeout`.
    pub fn new(base: Url, endpoint: String, connect_timeout: Duration) -> Result<HttpClient, ConnectorError> {
        let jar = Arc::new(Jar::default());
        let client = build_client(connect_timeout, &endpoint, Arc::clone(&jar))?;
        Ok(HttpClient {
            base,
            endpoint,
            connect_timeout,
            session: RwLock::new((Arc::new(client), jar)),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            counters: HttpCounters::default(),
        })
    }

    /// The server's description for errors.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Requests and bytes so far.
    pub fn counters(&self) -> &HttpCounters {
        &self.counters
    }

    /// Starts a new session: a new client with an empty cookie jar and no pooled
    /// connections.
    pub fn reset_session(&self) -> Result<(), ConnectorError> {
        let jar = Arc::new(Jar::default());
        let client = build_client(self.connect_timeout, &self.endpoint, Arc::clone(&jar))?;
        *self.session.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(client), jar);
        Ok(())
    }

    /// Drops every pooled connection (one of a lost link may be half-open) but keeps the
    /// cookies: the server's session outlives its TCP connections.
    pub fn reset_connections(&self) -> Result<(), ConnectorError> {
        let mut session = self.session.write().unwrap_or_else(|p| p.into_inner());
        let client = build_client(self.connect_timeout, &self.endpoint, Arc::clone(&session.1))?;
        session.0 = Arc::new(client);
        Ok(())
    }

    /// The URL of `path_and_query` (relative to the base URL's path, which ends with `/`).
    fn url(&self, path: &str, query: &Query) -> Result<Url, ConnectorError> {
        let mut text = self.base.as_str().trim_end_matches('/').to_string();
        text.push_str(path);
        if !query.as_str().is_empty() {
            text.push('?');
            text.push_str(query.as_str());
        }
        Url::parse(&text).map_err(|e| ConnectorError::Other(format!("{}: bad request URL: {e}", self.endpoint)))
    }

    /// Sends one request: `GET` without a body, `POST` with one (JSON), with `headers`
    /// (their values are never logged). Transport failures are [`ConnectorError::Connection`].
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &Query,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ConnectorError> {
        let url = self.url(path, query)?;
        let client = Arc::clone(&self.session.read().unwrap_or_else(|p| p.into_inner()).0);
        let sent = url.as_str().len() + body.as_ref().map_or(0, Vec::len);
        let mut request = client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        // The semaphore is never closed, so acquiring only waits.
        let _slot = self.in_flight.acquire().await;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| self.transport_error(e))?.to_vec();
        self.counters.bytes_received.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(Response { status, body })
    }

    /// A transport failure as a lost connection, naming its cause without the URL (which
    /// may carry a filter's values).
    fn transport_error(&self, e: reqwest::Error) -> ConnectorError {
        let cause = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out"
        } else if e.is_body() || e.is_decode() {
            "the answer broke off"
        } else {
            "the request failed"
        };
        let mut detail = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        let message = if detail.is_empty() { cause.to_string() } else { format!("{cause}: {detail}") };
        ConnectorError::Connection { endpoint: self.endpoint.clone(), message }
    }
}

fn build_client(connect_timeout: Duration, endpoint: &str, jar: Arc<Jar>) -> Result<reqwest::Client, ConnectorError> {
    reqwest::Client::builder()
        .cookie_provider(jar)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(50))
        .build()
        .map_err(|e| ConnectorError::Config(format!("{endpoint}: cannot set up the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        let q = Query::new().param("$filter", "\"ID > :1 AND name === :2\"").param("$params", "'[1,\"a&b\"]'");
        assert_eq!(
            q.as_str(),
            "$filter=%22ID%20%3E%20%3A1%20AND%20name%20%3D%3D%3D%20%3A2%22&$params=%27%5B1%2C%22a%26b%22%5D%27"
        );
        assert_eq!(encode_path_segment("ID,name"), "ID,name");
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn response_json_keeps_digits() {
        let r = Response { status: 200, body: br#"{"n": 9007199254740993}"#.to_vec() };
        assert_eq!(r.json().unwrap()["n"].to_string(), "9007199254740993");
        assert!(Response { status: 500, body: b"  ".to_vec() }.json().is_none());
    }
}
