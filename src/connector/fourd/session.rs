//! One 4D REST session: login with `POST /rest/$directory/login` (`username-4D` and
//! `password-4D` headers, `REST/$directory.md`), the session cookie (`4DSID_<app>` or
//! `WASID4D`, `WebServer/sessions.md`, `REST/authUsers.md`) sent back on every request by
//! the HTTP layer's cookie jar, one new login when a request answers 401 (an expired
//! session), logout at the end (`REST/$directory_logout.md`), and 4D's answers mapped to
//! [`ConnectorError`]s (`docs/4d-rest.md` §5). With `debug_connection_change`, each login,
//! new login after a 401, reconnection and logout is a connection line
//! ([`SqlLog::connection`]); the cookie and the password never are.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Method;
use serde_json::Value as Json;
use tokio::sync::Mutex;

use crate::connector::http::{HttpClient, Query, Response};
use crate::connector::sql_log::SqlLog;
use crate::connector::{ConnectorError, Side};

/// 4D's error codes that say an attribute or dataclass is unknown (1500 then 1804, as 4D's
/// ORDA engine reports an unknown attribute; `docs/4d-rest.md` §5).
const SCHEMA_CODES: [i64; 2] = [1500, 1804];

/// The session of one 4D REST connection.
pub struct Session {
    http: HttpClient,
    user: Option<String>,
    password: Option<String>,
    /// Serializes logins; holds the number of logins so far, so concurrent requests that
    /// all met a 401 log in once.
    logins: Mutex<u64>,
    generation: AtomicU64,
    /// Set once the session is logged out.
    closed: std::sync::atomic::AtomicBool,
    /// The debug switches (`debug_connection_change` logs the session's changes).
    log: SqlLog,
    side: Side,
}

/// One error of an `__ERROR` array.
#[derive(Clone, Debug, PartialEq)]
pub struct FourDError {
    /// `errCode`.
    pub code: i64,
    /// `message`.
    pub message: String,
}

/// The `__ERROR` items of an answer (top level or one entity), in order.
pub fn errors_of(json: &Json) -> Vec<FourDError> {
    json.get("__ERROR")
        .and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .map(|e| FourDError {
                    code: e.get("errCode").and_then(Json::as_i64).unwrap_or(0),
                    message: e.get("message").and_then(Json::as_str).unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `message (errCode n); …` of a list of errors.
pub fn describe_errors(errors: &[FourDError]) -> String {
    errors.iter().map(|e| format!("{} (4D error {})", e.message, e.code)).collect::<Vec<_>>().join("; ")
}

impl Session {
    /// A session on `http` for `user` (no login when `None`: a guest session); `log` and
    /// `side` say whether and how its changes are logged.
    pub fn new(http: HttpClient, user: Option<String>, password: Option<String>, log: SqlLog, side: Side) -> Session {
        Session {
            http,
            user,
            password,
            logins: Mutex::new(0),
            generation: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            log,
            side,
        }
    }

    /// A connection line (`debug_connection_change`) about this session.
    fn event(&self, event: &str) {
        self.log.connection(self.side, &self.endpoint(), event);
    }

    /// The HTTP layer (for its counters).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    fn endpoint(&self) -> String {
        self.http.endpoint().to_string()
    }

    /// After a lost connection: new TCP connections, same session (its cookie). A 4D
    /// session lives on the server until it idles out; logging in again would take one more
    /// licence each time the link drops (HTTP 402 once they run out). A session that did
    /// expire answers 401 and [`Session::call`] logs in again.
    pub async fn reconnect(&self) -> Result<(), ConnectorError> {
        if *self.logins.lock().await == 0 {
            return self.login().await;
        }
        self.http.reset_connections()?;
        self.event("new connections, same 4D REST session (its cookie)");
        Ok(())
    }

    /// Starts a new session: empty cookie jar, then a login when a user is configured.
    pub async fn login(&self) -> Result<(), ConnectorError> {
        let mut logins = self.logins.lock().await;
        self.login_locked().await?;
        *logins += 1;
        self.generation.store(*logins, Ordering::SeqCst);
        Ok(())
    }

    /// The connection line of a session just opened.
    fn opened(&self) {
        match &self.user {
            Some(user) => self.event(&format!("4D REST session opened (login of user `{user}`)")),
            None => self.event("4D REST guest session (no login: no `user` configured)"),
        }
    }

    /// True when the connection has a user, so [`Session::login`] opens a session.
    pub fn logs_in(&self) -> bool {
        self.user.is_some()
    }

    async fn login_locked(&self) -> Result<(), ConnectorError> {
        self.http.reset_session()?;
        self.closed.store(false, Ordering::SeqCst);
        let Some(user) = &self.user else {
            self.opened();
            return Ok(());
        };
        let password = self.password.as_deref().unwrap_or("");
        let headers = [("username-4D", user.as_str()), ("password-4D", password)];
        let answer = self.http.send(Method::POST, "/rest/$directory/login", &Query::new(), &headers, None).await?;
        let accepted =
            answer.status == 200 && answer.json().and_then(|j| j.get("result").and_then(Json::as_bool)) == Some(true);
        if accepted {
            self.opened();
            return Ok(());
        }
        match answer.status {
            404 => Err(ConnectorError::Config(format!(
                "{}: no 4D REST server answers at this URL (HTTP 404 for /rest/$directory/login); check `url` \
                 (http://host:port of 4D's web server, with REST enabled)",
                self.endpoint()
            ))),
            200 | 401 | 403 => Err(ConnectorError::Config(format!(
                "{}: 4D refused the login of user `{user}`; check `user` and the password (the environment \
                 variable its `password` names), and that the user may use REST",
                self.endpoint()
            ))),
            _ => Err(self.classify(answer, "login")),
        }
    }

    /// Ends the session (`GET /rest/$directory/logout`); failures are logged, not returned.
    /// Once only, and for at most five seconds: a stalled server must not hold the end of
    /// a run.
    pub async fn logout(&self) {
        if self.user.is_none() || self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let query = Query::new();
        let logout = self.http.send(Method::GET, "/rest/$directory/logout", &query, &[], None);
        let event = match tokio::time::timeout(std::time::Duration::from_secs(5), logout).await {
            Ok(Ok(r)) if r.status == 200 => "4D REST session closed (logout)".to_string(),
            Ok(Ok(r)) => format!("4D REST logout refused (HTTP {}); the session idles out on the server", r.status),
            Ok(Err(e)) => format!("4D REST logout failed ({e}); the session idles out on the server"),
            Err(_) => "4D REST logout got no answer within 5 s; the session idles out on the server".to_string(),
        };
        tracing::debug!(endpoint = %self.endpoint(), "{event}");
        self.event(&event);
    }

    /// Sends one request and returns its JSON answer (`Null` for an empty body). A 401
    /// logs in once more (the session expired) and sends the request again; every other
    /// failure is classified (`docs/4d-rest.md` §5). `what` names the operation in errors.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Json>,
        what: &str,
    ) -> Result<Json, ConnectorError> {
        self.call_sized(method, path, query, body, what).await.map(|(json, _)| json)
    }

    /// [`Session::call`], also returning the answer body's size in bytes.
    pub async fn call_sized(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Json>,
        what: &str,
    ) -> Result<(Json, usize), ConnectorError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let generation = self.generation.load(Ordering::SeqCst);
        let mut answer = self.http.send(method.clone(), path, query, &[], body.clone()).await?;
        if answer.status == 401 && self.user.is_some() {
            {
                let mut logins = self.logins.lock().await;
                // Another request may have logged in meanwhile: then just send again.
                if *logins == generation {
                    tracing::info!(endpoint = %self.endpoint(), "4D session expired (HTTP 401); logging in again");
                    self.event("4D REST session expired (HTTP 401); logging in again");
                    self.login_locked().await?;
                    *logins += 1;
                    self.generation.store(*logins, Ordering::SeqCst);
                }
            }
            answer = self.http.send(method, path, query, &[], body).await?;
        }
        if (200..300).contains(&answer.status) {
            let json = answer.json().unwrap_or(Json::Null);
            let size = answer.body.len();
            // An error may come alone or together with data (`REST/REST_requests.md`).
            if json.get("__ENTITIES").is_none() && json.get("__ERROR").is_some() && json.get("ok").is_none() {
                return Err(self.error_answer(&json, what));
            }
            return Ok((json, size));
        }
        Err(self.classify(answer, what))
    }

    /// A 200 answer that is an error only: by its codes.
    fn error_answer(&self, json: &Json, what: &str) -> ConnectorError {
        let errors = errors_of(json);
        if errors.iter().any(|e| SCHEMA_CODES.contains(&e.code)) {
            return ConnectorError::Schema(format!("{}: {what}: {}", self.endpoint(), describe_errors(&errors)));
        }
        ConnectorError::Other(format!("{}: {what}: 4D answered {}", self.endpoint(), describe_errors(&errors)))
    }

    /// An HTTP status other than 2xx as an error (`REST/REST_requests.md` lists 401, 402,
    /// 404 and 500).
    fn classify(&self, answer: Response, what: &str) -> ConnectorError {
        let endpoint = self.endpoint();
        let json = answer.json();
        let errors = json.as_ref().map(errors_of).unwrap_or_default();
        let detail = if errors.is_empty() { answer.excerpt() } else { describe_errors(&errors) };
        match answer.status {
            401 => ConnectorError::Config(format!(
                "{endpoint}: {what}: 4D refused the request (HTTP 401) after a new login: the user lacks the \
                 privilege, or REST access is restricted to a group ({detail})"
            )),
            402 => ConnectorError::Busy {
                endpoint,
                message: format!(
                    "{what}: 4D has no free REST licence (HTTP 402: its session limit is reached); close other REST \
                     clients or add licences ({detail})"
                ),
            },
            404 => ConnectorError::Schema(format!(
                "{endpoint}: {what}: 4D does not expose it (HTTP 404); check the dataclass name and that it is \
                 \"Exposed as REST resource\" ({detail})"
            )),
            500 if errors.iter().any(|e| SCHEMA_CODES.contains(&e.code)) => {
                ConnectorError::Schema(format!("{endpoint}: {what}: {detail}"))
            }
            500 if !errors.is_empty() => ConnectorError::Other(format!("{endpoint}: {what}: 4D answered {detail}")),
            0 | 500 | 502 | 503 | 504 => ConnectorError::Connection {
                endpoint,
                message: format!("{what}: HTTP {} without an answer 4D could give ({detail})", answer.status),
            },
            status => ConnectorError::Other(format!("{endpoint}: {what}: unexpected HTTP {status} ({detail})")),
        }
    }
}
