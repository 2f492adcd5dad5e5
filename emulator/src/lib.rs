//! An emulator of 4D's REST (ORDA) server on loopback, backed by a SQLite file, for db-sync's
//! integration tests and benchmarks. No 4D server can run in CI, so the emulator follows 4D's
//! public documentation (the `4d/docs` repository); `docs/4d-rest.md` in db-sync is the design
//! reference and `emulator/README.md` lists each behaviour with its source page.
//!
//! ```no_run
//! use fourd_emulator::{Emulator, Settings};
//! let emu = Emulator::start("/tmp/data.sqlite", Settings::default()).unwrap();
//! println!("4D REST at {}/rest/", emu.url());
//! ```

mod db;
mod error;
mod filter;
mod fold;
mod server;
pub mod sql;
mod values;

pub use sql::{SqlEmulator, SqlSettings, SqlStats};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What a `duration` attribute's number counts (docs/4d-rest.md §6, "Times"). The number on the
/// wire is the number stored in SQLite; the unit only matters when a duration is given as
/// `"HH:MM:SS"` text in a write or a filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeUnit {
    #[default]
    Millis,
    Seconds,
}

/// How the emulated server behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The application name in the `4DSID_<app>` cookie (`docs/WebServer/sessions.md`).
    pub app_name: String,
    /// Users and passwords accepted by `$directory/login` and `$catalog/authentify`.
    pub users: Vec<(String, String)>,
    /// Data requests need a logged-in session (4D 20 R6 "force login"); `$catalog` stays open.
    /// When false, a request without a session opens a guest session that takes a licence.
    pub force_login: bool,
    /// Licence limit: sessions open at once; one more answers 402 (`docs/REST/configuration.md`).
    pub max_sessions: usize,
    /// Idle time after which a session closes (`docs/WebServer/sessions.md`).
    pub session_idle: Duration,
    /// Entities per answer without `$top`, and the catalog's `defaultTopSize` (`docs/REST/$top_$limit.md`).
    pub default_top: usize,
    /// A server cap on entities per answer, below the `$top` asked for.
    pub max_top: Option<usize>,
    /// Compare and sort text by UTF-8 bytes instead of 4D's case- and accent-folding order.
    pub byte_order: bool,
    pub time_unit: TimeUnit,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            app_name: "DbSyncTest".into(),
            users: vec![("sync".into(), "secret".into())],
            force_login: true,
            max_sessions: 3,
            session_idle: Duration::from_secs(3600),
            default_top: 100,
            max_top: None,
            byte_order: false,
            time_unit: TimeUnit::Millis,
        }
    }
}

/// Counters since the start or the last [`Emulator::reset_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    /// Keys: `login`, `logout`, `catalog`, `read`, `update`, `delete`, `compute`, `other`.
    pub requests_by_kind: BTreeMap<String, u64>,
    /// Request and answer body bytes.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub logins: u64,
    pub logouts: u64,
    /// Sessions open now (expired ones excluded).
    pub open_sessions: usize,
    pub peak_sessions: usize,
    /// Requests refused with 402 (no free licence).
    pub refused_402: u64,
}

/// A fault applied to matching requests: the first `skip` matches pass, the next `times` get it.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Matched against path + `?` + query, raw and percent-decoded; `""` matches every request.
    pub path_contains: String,
    pub kind: FaultKind,
    pub skip: usize,
    pub times: usize,
}

impl Fault {
    /// The fault on the next matching request only.
    pub fn once(path_contains: impl Into<String>, kind: FaultKind) -> Fault {
        Fault { path_contains: path_contains.into(), kind, skip: 0, times: 1 }
    }

    /// The fault on every matching request.
    pub fn always(path_contains: impl Into<String>, kind: FaultKind) -> Fault {
        Fault { path_contains: path_contains.into(), kind, skip: 0, times: usize::MAX }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status with an `__ERROR` body (errCode 9008) instead of handling the request.
    Status(u16),
    /// Answer this status with an empty body.
    EmptyStatus(u16),
    /// Close the connection without an answer.
    Drop,
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// The request's session expires just before the request is handled.
    ExpireSession,
}

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Emulator {
    /// Opens (or creates) the SQLite file, installs the stamp column and triggers, and serves on
    /// `127.0.0.1` on a free port, on a thread with its own tokio runtime.
    pub fn start(db: impl AsRef<Path>, settings: Settings) -> std::io::Result<Emulator> {
        Self::start_on(db, settings, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// As [`Emulator::start`], on the given address.
    pub fn start_on(db: impl AsRef<Path>, settings: Settings, addr: SocketAddr) -> std::io::Result<Emulator> {
        let started = server::now_iso();
        let db = db::Db::open(db.as_ref(), settings.byte_order, settings.time_unit, started).map_err(io_err)?;
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(server::Shared::new(settings, db));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(4)
            .thread_name("fourd-emulator")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new().name("fourd-emulator".into()).spawn(move || {
            rt.block_on(server::serve(listener, s, stopped));
            rt.shutdown_timeout(Duration::from_secs(2));
        })?;
        Ok(Emulator { addr, shared, stop: Some(stop), thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn reset_stats(&self) {
        self.shared.reset_stats()
    }

    /// Every session closes now; the next request with an old cookie is a guest.
    pub fn expire_sessions(&self) {
        self.shared.expire_sessions()
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.inject(fault)
    }

    /// Removes every injected fault, fired or not.
    pub fn clear_faults(&self) {
        self.shared.clear_faults()
    }

    /// Locks an entity as another session would (`docs/REST/$lock.md`): updates and deletes of
    /// it fail with status 3 until [`Emulator::unlock_all`]. `key` is its `__KEY` text.
    pub fn lock_entity(&self, dataclass: &str, key: &str) {
        self.shared.lock_entity(dataclass, key)
    }

    pub fn unlock_all(&self) {
        self.shared.unlock_all()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 32 uppercase hexadecimal digits, as 4D writes UUIDs and session ids.
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut parts = [0u64; 2];
    for (i, p) in parts.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(t);
        h.write_usize(i);
        *p = h.finish();
    }
    format!("{:016X}{:016X}", parts[0], parts[1])
}
