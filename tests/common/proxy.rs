//! A fault-injecting TCP proxy for the tests: it listens on 127.0.0.1 and a free port and
//! forwards every connection to one upstream address, byte for byte, whatever the protocol
//! (PostgreSQL, HTTP, anything over TCP). Faults are switched on and off while it runs and
//! apply at once to open and new connections alike: added latency, a bandwidth cap, resets
//! after a number of bytes or on demand, stalled (half-open) links, refused connections and
//! lost replies.
//!
//! It runs on plain threads (one acceptor, two forwarding threads per connection), so a
//! synchronous test can put it in front of a server and point the `db-sync` binary at it.
//! Data moves in chunks of up to 64 KiB; the threads wake at least every 50 ms (socket
//! timeouts) to notice new faults, cuts and the proxy's end.
//!
//! Byte counts that trigger faults ([`Proxy::cut_every`], [`Proxy::stall_after`],
//! [`Proxy::drop_replies_after`]) are per connection, counted from its start. A *reset*
//! closes both sides of a connection with `SO_LINGER` 0, so each peer gets an RST (a read
//! fails with "connection reset" rather than seeing a clean end of stream).
//!
//! Faults can also wait for a request: [`Proxy::on_request`] fires once a client sends a
//! chunk holding a byte pattern (an SQL keyword, an HTTP path), so a test can cut, stall or
//! lose the reply of exactly the call it means. A pattern must lie within one read chunk
//! (requests are small; a pattern is not looked for across chunk boundaries).
//!
//! Dropping the [`Proxy`] closes the listener, resets every connection and waits for all
//! its threads to end.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Largest chunk read and written at once.
const CHUNK: usize = 64 * 1024;
/// Read and write timeout of the sockets: how long a blocked thread may miss a change.
const TICK: Duration = Duration::from_millis(50);
/// Poll period while waiting (stalls, pacing, latency, the acceptor).
const NAP: Duration = Duration::from_millis(5);
/// "No limit" in the byte-count faults.
const NONE: u64 = u64::MAX;

/// A running proxy in front of one upstream address. Dropping it stops it.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Counters of a proxy, updated live. Obtained from [`Proxy::stats`]; it outlives the proxy.
#[derive(Default)]
pub struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    open: AtomicU64,
    threads: AtomicU64,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
    fired: AtomicU64,
}

impl Stats {
    /// Requests that fired an [`Proxy::on_request`] fault.
    pub fn fired(&self) -> u64 {
        self.fired.load(Relaxed)
    }

    /// Connections accepted on the listener, refused ones included.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// Connections reset right after accept because [`Proxy::refuse`] was on.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Connections reset by a fault: [`Proxy::cut_every`], [`Proxy::cut_all_now`] or
    /// [`Proxy::drop_replies_after`] (not resets coming from a peer, nor refused ones).
    pub fn cut(&self) -> u64 {
        self.cut.load(Relaxed)
    }

    /// Connections currently forwarding (connected upstream, not yet closed).
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Threads of the proxy still running (acceptor and forwarding threads).
    pub fn threads(&self) -> u64 {
        self.threads.load(Relaxed)
    }

    /// Bytes delivered from clients to the upstream server, all connections together.
    pub fn bytes_to_upstream(&self) -> u64 {
        self.to_upstream.load(Relaxed)
    }

    /// Bytes delivered from the upstream server to clients, all connections together.
    pub fn bytes_to_client(&self) -> u64 {
        self.to_client.load(Relaxed)
    }
}

/// What [`Proxy::on_request`] does to the connection whose request matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reset the connection before the request reaches the server.
    Cut,
    /// Hold the connection from the request on: nothing more moves on it, in either
    /// direction, and it stays open (a half-open link). Other connections are not held.
    Stall,
    /// Forward the request, then discard the server's reply and reset the connection: the
    /// server did the work (a commit landed), the client never hears back.
    LoseReply,
    /// Reset every open connection and refuse new ones for this long, then accept again.
    RefuseFor(Duration),
}

/// A fault waiting for a request.
struct Trigger {
    pattern: Vec<u8>,
    action: Action,
    /// Matching requests still to act on.
    remaining: u32,
    /// Matching requests to let through first.
    skip: u32,
}

/// The live fault set; `NONE` (or zero for latency) means off.
struct Faults {
    latency_us: AtomicU64,
    bandwidth: AtomicU64,
    cut_every: AtomicU64,
    stall: AtomicBool,
    stall_after: AtomicU64,
    refuse: AtomicBool,
    drop_replies_after: AtomicU64,
    triggers: Mutex<Vec<Trigger>>,
    /// Fast check that `triggers` is not empty.
    armed: AtomicBool,
}

impl Faults {
    fn new() -> Faults {
        Faults {
            latency_us: AtomicU64::new(0),
            bandwidth: AtomicU64::new(NONE),
            cut_every: AtomicU64::new(NONE),
            stall: AtomicBool::new(false),
            stall_after: AtomicU64::new(NONE),
            refuse: AtomicBool::new(false),
            drop_replies_after: AtomicU64::new(NONE),
            triggers: Mutex::new(Vec::new()),
            armed: AtomicBool::new(false),
        }
    }

    fn clear(&self) {
        self.latency_us.store(0, Relaxed);
        self.bandwidth.store(NONE, Relaxed);
        self.cut_every.store(NONE, Relaxed);
        self.stall.store(false, Relaxed);
        self.stall_after.store(NONE, Relaxed);
        self.refuse.store(false, Relaxed);
        self.drop_replies_after.store(NONE, Relaxed);
        self.triggers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.armed.store(false, Relaxed);
    }

    /// The action of the first armed trigger whose pattern `chunk` holds, counting it.
    fn fire(&self, chunk: &[u8]) -> Option<Action> {
        if !self.armed.load(Relaxed) {
            return None;
        }
        let mut triggers = self.triggers.lock().unwrap_or_else(|e| e.into_inner());
        let i = triggers.iter().position(|t| chunk.windows(t.pattern.len()).any(|w| w == t.pattern.as_slice()))?;
        let trigger = &mut triggers[i];
        if trigger.skip > 0 {
            trigger.skip -= 1;
            return None;
        }
        let action = trigger.action;
        trigger.remaining -= 1;
        if trigger.remaining == 0 {
            triggers.remove(i);
        }
        self.armed.store(!triggers.is_empty(), Relaxed);
        Some(action)
    }
}

/// State shared by the proxy handle and its threads.
struct Shared {
    upstream: SocketAddr,
    faults: Faults,
    stats: Arc<Stats>,
    shutdown: AtomicBool,
    conns: Mutex<Vec<Weak<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 and a free port that forwards to `upstream`, with no
    /// fault set.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("proxy: non-blocking listener");
        let addr = listener.local_addr().expect("proxy: local address");
        let shared = Arc::new(Shared {
            upstream,
            faults: Faults::new(),
            stats: Arc::new(Stats::default()),
            shutdown: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = Arc::clone(&shared);
        spawn(&shared, "proxy-accept", move || accept_loop(&acceptor, listener));
        Proxy { addr, shared }
    }

    /// Address clients connect to (127.0.0.1 and the proxy's port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Port clients connect to on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Delays every chunk by `delay` before forwarding it, in each direction (zero: off).
    /// A request and its reply thus take at least two delays more. As the delay is per
    /// chunk, it also caps throughput at 64 KiB per delay and direction.
    pub fn set_latency(&self, delay: Duration) {
        self.shared.faults.latency_us.store(u64::try_from(delay.as_micros()).unwrap_or(NONE), Relaxed);
    }

    /// Caps each connection at `bytes_per_sec` in each direction (`None`: no cap), by
    /// pacing writes in slices of 1/50 of the rate, without bursts after idle time.
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        assert_ne!(bytes_per_sec, Some(0), "proxy: a bandwidth of 0 bytes/s is a stall; use stall()");
        self.shared.faults.bandwidth.store(bytes_per_sec.unwrap_or(NONE), Relaxed);
    }

    /// Resets every connection once it has carried `bytes` (both directions added up),
    /// forwarding exactly that many bytes first (`None`: off). It applies to each
    /// connection, so a client that reconnects and resumes is cut again every `bytes`.
    pub fn cut_every(&self, bytes: Option<u64>) {
        self.shared.faults.cut_every.store(bytes.unwrap_or(NONE), Relaxed);
    }

    /// Resets every open connection, and returns once they are all closed (at most ~2 s).
    /// New connections are not affected.
    pub fn cut_all_now(&self) {
        let conns: Vec<Arc<Conn>> = self.shared.conns.lock().unwrap().iter().filter_map(Weak::upgrade).collect();
        for conn in &conns {
            conn.kill(true);
        }
        let closing: Vec<Weak<Conn>> = conns.iter().map(Arc::downgrade).collect();
        drop(conns);
        let deadline = Instant::now() + Duration::from_secs(2);
        while closing.iter().any(|c| c.strong_count() > 0) && Instant::now() < deadline {
            thread::sleep(NAP);
        }
    }

    /// While on, no byte moves on any connection in either direction, and none is closed
    /// (no FIN, no RST): a half-open link, as after a NAT timeout. The proxy stops reading,
    /// so peers can still write until the socket buffers fill up. New connections are
    /// accepted (and connected upstream) but pass nothing either. Off: bytes flow again.
    pub fn stall(&self, on: bool) {
        self.shared.faults.stall.store(on, Relaxed);
    }

    /// Stalls each connection, as [`Proxy::stall`] does, once it has carried `bytes` (both
    /// directions added up), forwarding exactly that many bytes first (`None`: off, and
    /// stalled connections resume).
    pub fn stall_after(&self, bytes: Option<u64>) {
        self.shared.faults.stall_after.store(bytes.unwrap_or(NONE), Relaxed);
    }

    /// While on, new connections are accepted and at once reset: `connect` succeeds, then
    /// the first read or write fails ("connection reset") or sees the end of stream. The
    /// listener stays open. Open connections are not affected.
    pub fn refuse(&self, on: bool) {
        self.shared.faults.refuse.store(on, Relaxed);
    }

    /// Loses replies: once a connection has passed `bytes` from upstream to the client,
    /// the next upstream bytes are discarded and the connection is reset. The server got
    /// the request and did the work, but the client never hears back (`None`: off). With
    /// `Some(0)` no reply byte at all reaches a client.
    pub fn drop_replies_after(&self, bytes: Option<u64>) {
        self.shared.faults.drop_replies_after.store(bytes.unwrap_or(NONE), Relaxed);
    }

    /// Acts on the connections of the next `times` client requests holding `pattern`,
    /// after letting `skip` matching requests through. Each request fires at most one
    /// trigger (the earliest armed that matches). Cleared by [`Proxy::reset`].
    pub fn on_request(&self, pattern: &str, action: Action, skip: u32, times: u32) {
        assert!(!pattern.is_empty() && times > 0, "proxy: on_request needs a pattern and times > 0");
        let mut triggers = self.shared.faults.triggers.lock().unwrap_or_else(|e| e.into_inner());
        triggers.push(Trigger { pattern: pattern.as_bytes().to_vec(), action, remaining: times, skip });
        self.shared.faults.armed.store(true, Relaxed);
    }

    /// The patterns of the request triggers that have not fired (all their times) yet.
    pub fn pending(&self) -> Vec<String> {
        let triggers = self.shared.faults.triggers.lock().unwrap_or_else(|e| e.into_inner());
        triggers.iter().map(|t| String::from_utf8_lossy(&t.pattern).into_owned()).collect()
    }

    /// Clears every fault (the counters stay).
    pub fn reset(&self) {
        self.shared.faults.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Relaxed);
        // Threads may start others until the acceptor has ended: join until none is left.
        loop {
            let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap_or_else(|e| e.into_inner()));
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

/// Starts a thread of the proxy, counted in [`Stats::threads`] and joined on drop.
fn spawn(shared: &Arc<Shared>, name: &str, body: impl FnOnce() + Send + 'static) {
    /// Counts the thread as ended once its body and everything it owned are gone.
    struct Running(Arc<Stats>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.threads.fetch_sub(1, Relaxed);
        }
    }
    shared.stats.threads.fetch_add(1, Relaxed);
    let running = Running(Arc::clone(&shared.stats));
    let handle = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _running = running;
            body();
        })
        .expect("proxy: spawn thread");
    let mut threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
    threads.retain(|t| !t.is_finished());
    threads.push(handle);
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    while !shared.shutdown.load(Relaxed) {
        match listener.accept() {
            Ok((client, _)) => admit(shared, client),
            // WouldBlock, or a transient error such as too many open files.
            Err(_) => thread::sleep(NAP),
        }
    }
}

/// Takes an accepted connection: resets it while refusing, else connects upstream and
/// starts forwarding.
fn admit(shared: &Arc<Shared>, client: TcpStream) {
    shared.stats.accepted.fetch_add(1, Relaxed);
    if shared.faults.refuse.load(Relaxed) {
        shared.stats.refused.fetch_add(1, Relaxed);
        set_reset(&client);
        return;
    }
    let for_thread = Arc::clone(shared);
    spawn(shared, "proxy-up", move || connect(&for_thread, client));
}

/// Connects upstream, then forwards client→upstream here and upstream→client on a new
/// thread. An upstream that cannot be reached resets the client.
fn connect(shared: &Arc<Shared>, client: TcpStream) {
    let streams = (|| {
        client.set_nonblocking(false)?;
        let server = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
        for s in [&client, &server] {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(TICK))?;
            s.set_write_timeout(Some(TICK))?;
        }
        Ok::<_, io::Error>((client.try_clone()?, server.try_clone()?, server))
    })();
    let Ok((client_w, server_w, server)) = streams else {
        set_reset(&client);
        return;
    };
    shared.stats.open.fetch_add(1, Relaxed);
    let conn = Arc::new(Conn {
        shared: Arc::clone(shared),
        dead: AtomicBool::new(false),
        reserved: AtomicU64::new(0),
        carried: AtomicU64::new(0),
        held: AtomicBool::new(false),
        lose_replies: AtomicBool::new(false),
    });
    {
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(&conn));
    }
    let down = Arc::clone(&conn);
    spawn(shared, "proxy-down", move || down.forward(Dir::ToClient, server, client_w));
    conn.forward(Dir::ToUpstream, client, server_w);
}

/// Makes closing the socket send an RST instead of a FIN.
fn set_reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// A socket error that only means "nothing yet": try again.
fn transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    ToUpstream,
    ToClient,
}

/// One proxied connection, shared by its two forwarding threads. The sockets belong to
/// the threads; the connection closes when both have ended.
struct Conn {
    shared: Arc<Shared>,
    /// Set once the connection must be reset.
    dead: AtomicBool,
    /// Bytes granted for writing, both directions (exact cut and stall points).
    reserved: AtomicU64,
    /// Bytes written, both directions.
    carried: AtomicU64,
    /// Held by an [`Action::Stall`] trigger: nothing moves any more.
    held: AtomicBool,
    /// An [`Action::LoseReply`] trigger fired: replies are discarded and the connection reset.
    lose_replies: AtomicBool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.stats.open.fetch_sub(1, Relaxed);
    }
}

/// Write pacing of one direction under a bandwidth cap.
struct Pacer {
    /// When the next slice may be written.
    next: Option<Instant>,
}

impl Conn {
    /// Marks the connection for reset; `fault` counts it in [`Stats::cut`] (once).
    fn kill(&self, fault: bool) {
        if !self.dead.swap(true, Relaxed) && fault {
            self.shared.stats.cut.fetch_add(1, Relaxed);
        }
    }

    /// Whether the connection must end now: reset, proxy stopping, or past `cut_every`.
    fn doomed(&self) -> bool {
        if self.dead.load(Relaxed) {
            return true;
        }
        if self.shared.shutdown.load(Relaxed) {
            self.kill(false);
            return true;
        }
        if self.carried.load(Relaxed) >= self.shared.faults.cut_every.load(Relaxed) {
            self.kill(true);
            return true;
        }
        false
    }

    fn stalled(&self) -> bool {
        let faults = &self.shared.faults;
        faults.stall.load(Relaxed)
            || self.held.load(Relaxed)
            || self.reserved.load(Relaxed) >= faults.stall_after.load(Relaxed)
    }

    /// Applies the trigger a client request fired; false when the request must not be
    /// forwarded (the connection is cut or held).
    fn act(&self, action: Action) -> bool {
        self.shared.stats.fired.fetch_add(1, Relaxed);
        match action {
            Action::Cut => {
                self.kill(true);
                false
            }
            Action::Stall => {
                self.held.store(true, Relaxed);
                false
            }
            Action::LoseReply => {
                self.lose_replies.store(true, Relaxed);
                true
            }
            Action::RefuseFor(period) => {
                let shared = Arc::clone(&self.shared);
                shared.faults.refuse.store(true, Relaxed);
                let conns: Vec<Arc<Conn>> =
                    shared.conns.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
                for conn in &conns {
                    conn.kill(true);
                }
                let waker = Arc::clone(&shared);
                spawn(&shared, "proxy-refuse", move || {
                    let until = Instant::now() + period;
                    while Instant::now() < until && !waker.shutdown.load(Relaxed) {
                        thread::sleep(NAP);
                    }
                    waker.faults.refuse.store(false, Relaxed);
                });
                false
            }
        }
    }

    /// Sleeps until `until`, or returns false as soon as the connection is doomed.
    fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.doomed() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            thread::sleep((until - now).min(NAP));
        }
    }

    /// Grants up to `want` more bytes without the connection's total passing `limit`.
    fn reserve(&self, want: u64, limit: u64) -> u64 {
        let mut current = self.reserved.load(Relaxed);
        loop {
            let granted = want.min(limit.saturating_sub(current));
            if granted == 0 {
                return 0;
            }
            match self.reserved.compare_exchange_weak(current, current + granted, Relaxed, Relaxed) {
                Ok(_) => return granted,
                Err(now) => current = now,
            }
        }
    }

    /// Copies `from` to `to` until end of stream (passed on as a FIN) or reset (both
    /// sockets closed with an RST).
    fn forward(&self, dir: Dir, mut from: TcpStream, mut to: TcpStream) {
        let mut buf = vec![0u8; CHUNK];
        let mut pacer = Pacer { next: None };
        let mut replies = 0u64;
        loop {
            if self.doomed() {
                break;
            }
            if self.stalled() {
                thread::sleep(NAP);
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if dir == Dir::ToUpstream {
                        if let Some(action) = self.shared.faults.fire(&buf[..n])
                            && !self.act(action)
                        {
                            if self.held.load(Relaxed) {
                                continue;
                            }
                            break;
                        }
                    } else if self.lose_replies.load(Relaxed) {
                        self.kill(true);
                        break;
                    }
                    if !self.send(dir, &buf[..n], &mut to, &mut pacer, &mut replies) {
                        break;
                    }
                }
                Err(e) if transient(&e) => {}
                // Reset (or other failure) from this side: reset the other side too.
                Err(_) => {
                    self.kill(false);
                    break;
                }
            }
        }
        set_reset(&from);
        set_reset(&to);
    }

    /// Forwards one chunk under the current faults; false when the connection must end.
    fn send(&self, dir: Dir, data: &[u8], to: &mut TcpStream, pacer: &mut Pacer, replies: &mut u64) -> bool {
        let faults = &self.shared.faults;
        let latency = faults.latency_us.load(Relaxed);
        if latency > 0 && !self.sleep_until(Instant::now() + Duration::from_micros(latency)) {
            return false;
        }
        let mut pos = 0;
        while pos < data.len() {
            if self.doomed() {
                return false;
            }
            if faults.stall.load(Relaxed) || self.held.load(Relaxed) {
                thread::sleep(NAP);
                continue;
            }
            let mut want = (data.len() - pos) as u64;
            if dir == Dir::ToClient {
                let limit = faults.drop_replies_after.load(Relaxed);
                if *replies + want > limit {
                    want = limit.saturating_sub(*replies);
                    if want == 0 {
                        self.kill(true);
                        return false;
                    }
                }
            }
            let rate = faults.bandwidth.load(Relaxed);
            if rate == NONE {
                pacer.next = None;
            } else {
                want = want.min((rate / 50).max(1));
                let ready = pacer.next.is_none_or(|next| self.sleep_until(next));
                if !ready {
                    return false;
                }
            }
            let limit = faults.cut_every.load(Relaxed).min(faults.stall_after.load(Relaxed));
            let granted = self.reserve(want, limit);
            if granted == 0 {
                // At the stall point (the cut point ends the connection in `doomed`).
                thread::sleep(NAP);
                continue;
            }
            let slice = &data[pos..pos + granted as usize];
            if !self.write_all(to, slice) {
                self.kill(false);
                return false;
            }
            pos += slice.len();
            let total = match dir {
                Dir::ToUpstream => &self.shared.stats.to_upstream,
                Dir::ToClient => &self.shared.stats.to_client,
            };
            // The totals first: a cut counted (off `carried`) comes after its bytes.
            total.fetch_add(granted, Relaxed);
            self.carried.fetch_add(granted, Relaxed);
            if dir == Dir::ToClient {
                *replies += granted;
            }
            if rate != NONE {
                let now = Instant::now();
                let from = pacer.next.map_or(now, |t| t.max(now));
                pacer.next = Some(from + Duration::from_secs_f64(granted as f64 / rate as f64));
            }
        }
        true
    }

    /// Writes all of `data`, retrying on timeouts; false on failure or when doomed.
    fn write_all(&self, to: &mut TcpStream, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            match to.write(data) {
                Ok(0) => return false,
                Ok(n) => data = &data[n..],
                Err(e) if transient(&e) => {
                    if self.doomed() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}
