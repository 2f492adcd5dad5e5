//! The HTTP side: routing, sessions and licences, faults, and the request handlers.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use crate::db::Db;
use crate::error::{self, ApiError};
use crate::filter::{self, SqlFilter, Translator};
use crate::{Fault, FaultKind, Settings, Stats};

struct Session {
    /// Logged-in user; `None` for a guest session (only without force login).
    user: Option<String>,
    last: Instant,
    idle: Duration,
}

struct FaultState {
    fault: Fault,
    seen: usize,
    fired: usize,
}

pub(crate) struct Shared {
    settings: Settings,
    db: Mutex<Db>,
    sessions: Mutex<HashMap<String, Session>>,
    stats: Mutex<Stats>,
    faults: Mutex<Vec<FaultState>>,
    /// Locked entities: dataclass → `__KEY` texts.
    locks: Mutex<HashMap<String, HashSet<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn new(settings: Settings, db: Db) -> Shared {
        Shared {
            settings,
            db: Mutex::new(db),
            sessions: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
            faults: Mutex::new(Vec::new()),
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn sweep(sessions: &mut HashMap<String, Session>) {
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.last) < s.idle);
    }

    pub fn stats(&self) -> Stats {
        let open = {
            let mut s = lock(&self.sessions);
            Self::sweep(&mut s);
            s.len()
        };
        let mut st = lock(&self.stats).clone();
        st.open_sessions = open;
        st
    }

    pub fn reset_stats(&self) {
        let open = self.stats().open_sessions;
        *lock(&self.stats) = Stats { peak_sessions: open, ..Stats::default() };
    }

    pub fn expire_sessions(&self) {
        lock(&self.sessions).clear();
    }

    pub fn inject(&self, fault: Fault) {
        lock(&self.faults).push(FaultState { fault, seen: 0, fired: 0 });
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn lock_entity(&self, dataclass: &str, key: &str) {
        lock(&self.locks).entry(dataclass.to_string()).or_default().insert(key.to_string());
    }

    pub fn unlock_all(&self) {
        lock(&self.locks).clear();
    }

    fn locks_of(&self, dataclass: &str) -> HashSet<String> {
        lock(&self.locks).get(dataclass).cloned().unwrap_or_default()
    }

    /// Faults that fire on this request, in the order they were injected.
    fn firing(&self, raw: &str, decoded: &str) -> Vec<FaultKind> {
        let mut out = Vec::new();
        for f in lock(&self.faults).iter_mut() {
            let p = &f.fault.path_contains;
            if raw.contains(p.as_str()) || decoded.contains(p.as_str()) {
                f.seen += 1;
                if f.seen > f.fault.skip && f.fired < f.fault.times {
                    f.fired += 1;
                    out.push(f.fault.kind.clone());
                }
            }
        }
        out
    }
}

/// Accepts connections until `stop` fires.
pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            acc = listener.accept() => {
                let Ok((stream, _)) = acc else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

/// An error that makes hyper close the connection without an answer (the `Drop` fault).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

struct Answer {
    status: u16,
    body: Option<Value>,
    cookie: Option<String>,
}

impl Answer {
    fn json(body: Value) -> Answer {
        Answer { status: 200, body: Some(body), cookie: None }
    }

    fn error(e: ApiError) -> Answer {
        Answer { status: e.status, body: Some(e.body), cookie: None }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    Logout,
    Authentify,
    Catalog,
    Read,
    Update,
    Delete,
    Compute,
    Other,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Login | Kind::Authentify => "login",
            Kind::Logout => "logout",
            Kind::Catalog => "catalog",
            Kind::Read => "read",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Compute => "compute",
            Kind::Other => "other",
        }
    }

    fn is_data(self) -> bool {
        matches!(self, Kind::Read | Kind::Update | Kind::Delete | Kind::Compute)
    }
}

/// A parsed request.
struct Req {
    method: Method,
    segments: Vec<String>,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.param(name).is_some_and(|v| v.trim_matches(|c| c == '"' || c == '\'').eq_ignore_ascii_case("true"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn kind(&self) -> Kind {
        let s: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        match s.as_slice() {
            ["$directory", "login"] => Kind::Login,
            ["$directory", "logout"] => Kind::Logout,
            ["$catalog", "authentify"] => Kind::Authentify,
            ["$catalog", ..] => Kind::Catalog,
            [first, ..] if !first.starts_with('$') => match self.param("$method").map(|m| m.trim_matches('"')) {
                Some("update") => Kind::Update,
                Some("delete") => Kind::Delete,
                _ if self.param("$compute").is_some() => Kind::Compute,
                _ => Kind::Read,
            },
            _ => Kind::Other,
        }
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let path = decode(&raw_path);
    let params: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect();
    let segments: Vec<String> =
        path.strip_prefix("/rest").unwrap_or("").split('/').filter(|s| !s.is_empty()).map(String::from).collect();
    let r = Req { method: parts.method, segments, params, headers: parts.headers, body };
    let kind = if path == "/rest" || path.starts_with("/rest/") { r.kind() } else { Kind::Other };
    {
        let mut st = lock(&shared.stats);
        st.requests += 1;
        *st.requests_by_kind.entry(kind.name().to_string()).or_default() += 1;
        st.bytes_in += r.body.len() as u64;
    }

    let raw_full = format!("{raw_path}?{raw_query}");
    let decoded_full = format!("{path}?{}", decode(&raw_query));
    let mut answer = None;
    for f in shared.firing(&raw_full, &decoded_full) {
        match f {
            FaultKind::Delay(d) => tokio::time::sleep(d).await,
            FaultKind::ExpireSession => {
                if let Some(id) = session_cookie(&r.headers, &shared.settings.app_name) {
                    lock(&shared.sessions).remove(&id);
                }
            }
            FaultKind::Drop => return Err(Dropped),
            FaultKind::Status(s) if answer.is_none() => {
                answer = Some(Answer {
                    status: s,
                    ..Answer::error(ApiError::one(s, error::INJECTED, format!("injected fault: HTTP {s}")))
                })
            }
            FaultKind::EmptyStatus(s) if answer.is_none() => {
                answer = Some(Answer { status: s, body: None, cookie: None })
            }
            _ => {}
        }
    }
    let answer = match answer {
        Some(a) => a,
        None => dispatch(shared.clone(), r, kind).await,
    };

    let bytes = match &answer.body {
        Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        None => Bytes::new(),
    };
    lock(&shared.stats).bytes_out += bytes.len() as u64;
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = hyper::StatusCode::from_u16(answer.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if answer.body.is_some() {
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    }
    if let Some(id) = answer.cookie {
        // Both cookie names, same value (docs/REST/authUsers.md, docs/WebServer/sessions.md).
        for name in [format!("4DSID_{}", shared.settings.app_name), "WASID4D".to_string()] {
            if let Ok(v) = HeaderValue::from_str(&format!("{name}={id}; Path=/; HttpOnly")) {
                resp.headers_mut().append("set-cookie", v);
            }
        }
    }
    Ok(resp)
}

/// The session id from `4DSID_<app>` or `WASID4D`.
fn session_cookie(headers: &HeaderMap, app: &str) -> Option<String> {
    let own = format!("4DSID_{app}");
    let mut wasid = None;
    for h in headers.get_all("cookie") {
        let Ok(h) = h.to_str() else { continue };
        for pair in h.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == own {
                    return Some(v.to_string());
                }
                if k == "WASID4D" {
                    wasid = Some(v.to_string());
                }
            }
        }
    }
    wasid
}

enum Auth {
    Ok,
    /// A new session was opened: set its cookie.
    New(String),
}

impl Shared {
    /// The valid session of this request, touched.
    fn current_session(&self, headers: &HeaderMap) -> Option<(String, bool)> {
        let id = session_cookie(headers, &self.settings.app_name)?;
        let mut s = lock(&self.sessions);
        Self::sweep(&mut s);
        let sess = s.get_mut(&id)?;
        sess.last = Instant::now();
        Some((id, sess.user.is_some()))
    }

    /// Opens a session if a licence is free; 402 otherwise (`docs/REST/configuration.md`).
    fn open_session(&self, user: Option<String>, idle: Duration) -> Result<String, ApiError> {
        let mut s = lock(&self.sessions);
        Self::sweep(&mut s);
        if s.len() >= self.settings.max_sessions {
            drop(s);
            lock(&self.stats).refused_402 += 1;
            return Err(ApiError::one(
                402,
                error::NO_LICENCE,
                format!("Maximum number of sessions reached ({}): no free licence", self.settings.max_sessions),
            ));
        }
        let id = crate::random_hex();
        s.insert(id.clone(), Session { user, last: Instant::now(), idle });
        let n = s.len();
        drop(s);
        let mut st = lock(&self.stats);
        st.peak_sessions = st.peak_sessions.max(n);
        Ok(id)
    }

    fn check_user(&self, user: &str, password: &str) -> bool {
        self.settings.users.iter().any(|(u, p)| u == user && p == password)
    }

    /// Logs `user` in: the request's session gets the user, or a new session opens.
    fn login(&self, r: &Req, user: &str, minutes: Option<u64>) -> Result<String, ApiError> {
        // session-4D-length (minutes, at least 60, docs/REST/$directory.md) scales the idle time:
        // the default 60 minutes gives `session_idle`, 120 twice that.
        let idle = self.settings.session_idle.mul_f64(minutes.map_or(1.0, |m| m.max(60) as f64 / 60.0));
        lock(&self.stats).logins += 1;
        if let Some((id, _)) = self.current_session(&r.headers) {
            if let Some(s) = lock(&self.sessions).get_mut(&id) {
                s.user = Some(user.to_string());
                s.idle = idle;
                return Ok(id);
            }
        }
        self.open_session(Some(user.to_string()), idle)
    }

    /// Data requests need a logged-in session with force login; without it a guest session opens.
    fn authorize(&self, r: &Req) -> Result<Auth, ApiError> {
        match self.current_session(&r.headers) {
            Some((_, true)) => Ok(Auth::Ok),
            Some((_, false)) if !self.settings.force_login => Ok(Auth::Ok),
            _ if self.settings.force_login => Err(ApiError::one(
                401,
                error::NOT_AUTHENTICATED,
                "This request needs an authenticated session: log in with $directory/login or $catalog/authentify",
            )),
            _ => Ok(Auth::New(self.open_session(None, self.settings.session_idle)?)),
        }
    }
}

async fn dispatch(shared: Arc<Shared>, r: Req, kind: Kind) -> Answer {
    let mut cookie = None;
    if kind.is_data() {
        match shared.authorize(&r) {
            Ok(Auth::Ok) => {}
            Ok(Auth::New(id)) => cookie = Some(id),
            Err(e) => return Answer::error(e),
        }
    } else if kind == Kind::Catalog {
        let _ = shared.current_session(&r.headers);
    }
    let mut a = match kind {
        Kind::Login => login(&shared, &r),
        Kind::Authentify => authentify(&shared, &r),
        Kind::Logout => {
            let ok = match shared.current_session(&r.headers) {
                Some((id, _)) => lock(&shared.sessions).remove(&id).is_some(),
                None => false,
            };
            lock(&shared.stats).logouts += 1;
            Answer::json(json!({"result": ok}))
        }
        Kind::Other => Answer::error(ApiError::one(
            404,
            error::UNKNOWN_RESOURCE,
            format!("unknown resource /rest/{}", r.segments.join("/")),
        )),
        _ => {
            let s = shared.clone();
            match tokio::task::spawn_blocking(move || data(&s, &r, kind)).await {
                Ok(Ok(v)) => Answer::json(v),
                Ok(Err(e)) => Answer::error(e),
                Err(e) => Answer::error(ApiError::one(500, error::DATABASE, format!("handler failed: {e}"))),
            }
        }
    };
    if a.cookie.is_none() {
        a.cookie = cookie;
    }
    a
}

/// `POST /rest/$directory/login` (`docs/REST/$directory.md`).
fn login(shared: &Shared, r: &Req) -> Answer {
    if r.method != Method::POST {
        return Answer::error(ApiError::one(500, error::BAD_PARAMETER, "$directory/login takes POST"));
    }
    let user = r.header("username-4D").unwrap_or_default();
    let password = r.header("password-4D").unwrap_or_default();
    let minutes = r.header("session-4D-length").and_then(|m| m.trim().parse().ok());
    if !shared.check_user(user, password) {
        return Answer { status: 401, body: Some(json!({"result": false})), cookie: None };
    }
    match shared.login(r, user, minutes) {
        Ok(id) => Answer { status: 200, body: Some(json!({"result": true})), cookie: Some(id) },
        Err(e) => Answer::error(e),
    }
}

/// `POST /rest/$catalog/authentify` with `[{"name": …, "password": …}]`
/// (`versioned_docs/version-21/REST/authUsers.md`). The function is the application's own; the
/// emulator's checks the users, and a refusal returns `false` as such a function would.
fn authentify(shared: &Shared, r: &Req) -> Answer {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let arg = match &body {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let field =
        |names: &[&str]| names.iter().find_map(|n| arg.get(n).and_then(Value::as_str)).unwrap_or_default().to_string();
    let user = field(&["name", "user", "username", "login"]);
    let password = field(&["password", "pass", "pwd"]);
    if !shared.check_user(&user, &password) {
        return Answer::json(json!({"result": false}));
    }
    match shared.login(r, &user, None) {
        Ok(id) => Answer { status: 200, body: Some(json!({"result": true})), cookie: Some(id) },
        Err(e) => Answer::error(e),
    }
}

fn unknown_dataclass(name: &str) -> ApiError {
    ApiError::one(404, error::UNKNOWN_DATACLASS, format!("The dataclass \"{name}\" does not exist or is not exposed"))
}

/// `T` or `T(key)` from the first path segment.
fn split_key(seg: &str) -> (&str, Option<&str>) {
    match seg.find('(') {
        Some(i) if seg.ends_with(')') => (&seg[..i], Some(&seg[i + 1..seg.len() - 1])),
        _ => (seg, None),
    }
}

fn usize_param(r: &Req, names: &[&str]) -> Result<Option<usize>, ApiError> {
    for n in names {
        if let Some(v) = r.param(n) {
            let v = v.trim().trim_matches('"');
            return v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::one(500, error::BAD_PARAMETER, format!("{n}={v} is not a whole number")));
        }
    }
    Ok(None)
}

fn filter_of(db: &Db, dc: &crate::db::Dataclass, r: &Req) -> Result<SqlFilter, ApiError> {
    let Some(text) = r.param("$filter").filter(|f| !f.trim().is_empty()) else { return Ok(SqlFilter::default()) };
    let to_api = |e: filter::FilterError| match e.unknown_attribute {
        Some(a) => ApiError::unknown_attribute(&a, &dc.name),
        None => ApiError::one(500, error::BAD_FILTER, format!("$filter {text}: {}", e.message)),
    };
    let params = match r.param("$params") {
        Some(p) => filter::parse_params(p).map_err(to_api)?,
        None => Vec::new(),
    };
    let expr = filter::parse(text).map_err(to_api)?;
    Translator { dc, params: &params, byte_order: db.byte_order, time_unit: db.time_unit }
        .translate(&expr)
        .map_err(to_api)
}

/// Catalog, reads, computes, updates and deletes: everything that touches SQLite.
fn data(shared: &Shared, r: &Req, kind: Kind) -> Result<Value, ApiError> {
    let mut db = lock(&shared.db);
    if kind == Kind::Catalog {
        return catalog(&db, shared.settings.default_top, r);
    }
    let (name, key) = split_key(&r.segments[0]);
    let dc = db.dataclass(name).cloned().ok_or_else(|| unknown_dataclass(name))?;
    let attrs: Vec<usize> = match r.segments.get(1) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| dc.attr_index(a).ok_or_else(|| ApiError::unknown_attribute(a, &dc.name)))
            .collect::<Result<_, _>>()?,
        None => (0..dc.attrs.len()).collect(),
    };
    let f = match key {
        Some(k) => db.key_filter(&dc, k).unwrap_or(SqlFilter { sql: "0".into(), args: vec![] }),
        None => filter_of(&db, &dc, r)?,
    };
    let not_found = |k: &str| {
        ApiError::one(
            404,
            error::ENTITY_NOT_FOUND,
            format!("Cannot find entity with \"{k}\" key in the \"{}\" dataclass", dc.name),
        )
    };
    match kind {
        Kind::Compute => {
            let what = r.param("$compute").unwrap_or_default().trim().trim_matches('"');
            let [attr] = attrs.as_slice() else {
                return Err(ApiError::one(
                    500,
                    error::BAD_PARAMETER,
                    "$compute needs one attribute: /rest/T/attribute/?$compute=…",
                ));
            };
            if r.segments.get(1).is_none() {
                return Err(ApiError::one(
                    500,
                    error::BAD_PARAMETER,
                    "$compute needs one attribute: /rest/T/attribute/?$compute=…",
                ));
            }
            db.compute(&dc, *attr, what, &f)
        }
        Kind::Read => {
            if let Some(k) = key {
                let mut rows = db.read(&dc, &f, "", &attrs, 1, 0)?;
                return rows.pop().ok_or_else(|| not_found(k));
            }
            let order = db.order_by(&dc, r.param("$orderby"))?;
            let mut top = usize_param(r, &["$top", "$limit"])?.unwrap_or(shared.settings.default_top);
            if let Some(cap) = shared.settings.max_top {
                top = top.min(cap);
            }
            let skip = usize_param(r, &["$skip"])?.unwrap_or(0);
            let count = db.count(&dc, &f)?;
            let rows = if top == 0 { Vec::new() } else { db.read(&dc, &f, &order, &attrs, top, skip)? };
            Ok(json!({
                "__entityModel": dc.name,
                "__GlobalStamp": db.global_stamp()?,
                "__COUNT": count,
                "__SENT": rows.len(),
                "__FIRST": skip,
                "__ENTITIES": rows,
            }))
        }
        Kind::Update => {
            if r.method != Method::POST {
                return Err(ApiError::one(500, error::BAD_PARAMETER, "$method=update takes POST"));
            }
            let body: Value = serde_json::from_slice(&r.body)
                .map_err(|e| ApiError::one(500, error::BAD_BODY, format!("the body is not JSON: {e}")))?;
            let atomic = r.flag("$atomic") || r.flag("$atonce");
            let locks = shared.locks_of(&dc.name);
            match body {
                Value::Array(items) => {
                    let out = db.save(&dc, &items, atomic, &locks)?;
                    Ok(json!({ "__ENTITIES": out }))
                }
                Value::Object(_) => {
                    let mut out = db.save(&dc, std::slice::from_ref(&body), atomic, &locks)?;
                    Ok(out.pop().unwrap_or(Value::Null))
                }
                _ => Err(ApiError::one(500, error::BAD_BODY, "the body must be an entity object or an array of them")),
            }
        }
        Kind::Delete => {
            if r.method != Method::POST {
                return Err(ApiError::one(500, error::BAD_PARAMETER, "$method=delete takes POST"));
            }
            if let Some(k) = key {
                if db.count(&dc, &f)? == 0 {
                    return Err(not_found(k));
                }
            }
            let locks = shared.locks_of(&dc.name);
            db.delete(&dc, &f, &locks)
        }
        _ => Err(ApiError::one(404, error::UNKNOWN_RESOURCE, "unknown request")),
    }
}

/// `$catalog`, `$catalog/$all`, `$catalog/{T}` (`versioned_docs/version-21/REST/$catalog.md`).
fn catalog(db: &Db, default_top: usize, r: &Req) -> Result<Value, ApiError> {
    let uniq = "00000000000000000000000000000001";
    match r.segments.get(1).map(String::as_str) {
        None => {
            let list: Vec<Value> = db
                .dcs
                .iter()
                .map(|d| json!({"name": d.name, "uri": format!("/rest/$catalog/{}", d.name), "dataURI": format!("/rest/{}", d.name)}))
                .collect();
            Ok(json!({"__UNIQID": uniq, "dataClasses": list}))
        }
        Some("$all") => {
            let list: Vec<Value> = db.dcs.iter().map(|d| d.catalog(default_top)).collect();
            Ok(json!({"__UNIQID": uniq, "dataClasses": list}))
        }
        Some(name) => db.dataclass(name).map(|d| d.catalog(default_top)).ok_or_else(|| unknown_dataclass(name)),
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_iso() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send + Sync>() {}
    is_send::<Shared>();
    let _: Option<Infallible> = None;
}
