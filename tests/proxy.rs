//! The fault-injecting test proxy itself, against small loopback servers: bytes pass
//! unchanged, and every fault (latency, bandwidth, cuts, stalls, refusals, lost replies)
//! does what it promises, as does dropping the proxy.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Action, Proxy};

/// An echo server that counts the bytes it received.
struct Echo {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
}

/// Starts an echo server on 127.0.0.1 (its threads live as long as the test binary).
fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = Arc::clone(&counter);
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            let _ = stream.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => {
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    Echo { addr, received }
}

/// Starts a server that sends `pattern(len)` to every connection, then closes it.
fn source_server(len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data = Arc::new(pattern(len));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let data = Arc::clone(&data);
            // Write errors are expected once the proxy resets the connection.
            thread::spawn(move || {
                let _ = stream.write_all(&data);
            });
        }
    });
    addr
}

/// `len` pseudo-random bytes (xorshift), the same on every call.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A client connection through the proxy, with a 5 s read timeout so no test hangs.
fn connect(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
}

/// Reads until end of stream or an error; returns the bytes and the error, if any.
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Sends `msg` and asserts it comes back unchanged.
fn roundtrip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

/// Asserts that the connection is over: end of stream or an error, but no data and no
/// timeout.
fn assert_closed(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected a closed connection, read {n} bytes"),
        Err(e) => assert!(!is_timeout(&e), "expected a closed connection, the read timed out"),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Waits up to 3 s for `cond`.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn bytes_pass_unchanged_both_ways() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let stats = proxy.stats();
    let data = pattern(4 << 20);
    let mut client = connect(&proxy);
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let (back, err) = read_to_end(&mut client);
    writing.join().unwrap();
    assert!(err.is_none(), "the echo ended with {err:?}");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the bytes came back changed");
    assert_eq!(echo.received.load(Ordering::SeqCst), data.len() as u64);
    assert_eq!(stats.bytes_to_upstream(), data.len() as u64);
    assert_eq!(stats.bytes_to_client(), data.len() as u64);
    assert_eq!((stats.accepted(), stats.cut()), (1, 0));
    drop(client);
    wait_until("the connection to close", || stats.open() == 0);
}

#[test]
fn latency_delays_each_direction_of_an_open_connection() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let mut client = connect(&proxy);
    roundtrip(&mut client, b"warm");
    proxy.set_latency(Duration::from_millis(150));
    let start = Instant::now();
    roundtrip(&mut client, b"ping");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "a round trip took {took:?}, expected two delays of 150 ms");
}

#[test]
fn bandwidth_cap_slows_a_transfer() {
    let data = pattern(600_000);
    let proxy = Proxy::start(source_server(data.len()));
    proxy.set_bandwidth(Some(1_000_000));
    let start = Instant::now();
    let mut client = connect(&proxy);
    let (got, err) = read_to_end(&mut client);
    let took = start.elapsed();
    assert!(err.is_none(), "the transfer ended with {err:?}");
    assert!(got == data, "the bytes arrived changed ({} of {})", got.len(), data.len());
    // 600 kB at 1 MB/s, less the first slice that goes out at once.
    assert!(took >= Duration::from_millis(500), "600 kB at 1 MB/s took only {took:?}");
}

#[test]
fn cut_every_resets_each_connection_after_its_bytes() {
    let data = pattern(4 << 20);
    let proxy = Proxy::start(source_server(data.len()));
    let stats = proxy.stats();
    proxy.cut_every(Some(1_000_000));
    for round in 1..=2 {
        let mut client = connect(&proxy);
        let (got, err) = read_to_end(&mut client);
        assert!(
            matches!(&err, Some(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "round {round}: expected a reset, got {err:?} after {} bytes",
            got.len()
        );
        assert!(got.len() <= 1_000_000, "round {round}: {} bytes passed a cut at 1000000", got.len());
        assert!(got[..] == data[..got.len()], "round {round}: the bytes before the cut changed");
        wait_until("the cut to be counted", || stats.cut() == round);
    }
    assert_eq!(stats.bytes_to_client(), 2_000_000, "the proxy forwards exactly up to the cut");
}

#[test]
fn stall_holds_bytes_on_open_connections_until_cleared() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let stats = proxy.stats();
    let mut old = connect(&proxy);
    roundtrip(&mut old, b"warm");
    proxy.stall(true);
    let mut new = connect(&proxy);
    for (client, msg) in [(&mut old, b"ping"), (&mut new, b"pong")] {
        client.write_all(msg).unwrap();
        client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 4];
        match client.read(&mut buf) {
            Err(e) if is_timeout(&e) => {}
            other => panic!("a stalled connection must pass nothing and stay open, got {other:?}"),
        }
    }
    assert_eq!(echo.received.load(Ordering::SeqCst), 4, "bytes reached the server during the stall");
    wait_until("both connections to be open", || stats.open() == 2);
    assert_eq!((stats.accepted(), stats.cut()), (2, 0));
    proxy.stall(false);
    for (client, msg) in [(&mut old, b"ping"), (&mut new, b"pong")] {
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).expect("the held bytes after the stall");
        assert_eq!(&buf, msg);
    }
}

#[test]
fn stall_after_stops_a_transfer_midway_and_resumes() {
    let data = pattern(1_000_000);
    let proxy = Proxy::start(source_server(data.len()));
    proxy.stall_after(Some(100_000));
    let mut client = connect(&proxy);
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let (got, err) = read_to_end(&mut client);
    assert!(matches!(&err, Some(e) if is_timeout(e)), "expected a read timeout, got {err:?}");
    assert_eq!(got.len(), 100_000, "bytes passed before the stall");
    proxy.stall_after(None);
    client.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (rest, err) = read_to_end(&mut client);
    assert!(err.is_none(), "the resumed transfer ended with {err:?}");
    assert!([got, rest].concat() == data, "the bytes arrived changed");
}

#[test]
fn refuse_resets_new_connections_and_spares_open_ones() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let stats = proxy.stats();
    let mut old = connect(&proxy);
    roundtrip(&mut old, b"warm");
    proxy.refuse(true);
    let mut refused = connect(&proxy);
    let _ = refused.write_all(b"lost");
    assert_closed(&mut refused);
    roundtrip(&mut old, b"ping");
    proxy.refuse(false);
    let mut later = connect(&proxy);
    roundtrip(&mut later, b"back");
    assert_eq!(echo.received.load(Ordering::SeqCst), 12, "only the spared and later connections reach the server");
    assert_eq!((stats.accepted(), stats.refused(), stats.cut()), (3, 1, 0));
}

#[test]
fn cut_all_now_resets_every_open_connection() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let stats = proxy.stats();
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    roundtrip(&mut a, b"aaaa");
    roundtrip(&mut b, b"bbbb");
    proxy.cut_all_now();
    assert_eq!((stats.cut(), stats.open()), (2, 0));
    assert_closed(&mut a);
    assert_closed(&mut b);
    let mut c = connect(&proxy);
    roundtrip(&mut c, b"cccc");
}

#[test]
fn drop_replies_after_loses_the_reply_the_server_sent() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let stats = proxy.stats();
    proxy.drop_replies_after(Some(10));
    let mut client = connect(&proxy);
    roundtrip(&mut client, b"abcd");
    client.write_all(&[7u8; 20]).unwrap();
    let (got, err) = read_to_end(&mut client);
    assert!(err.as_ref().is_none_or(|e| !is_timeout(e)), "expected a closed connection, got {err:?}");
    assert_eq!(got, [7u8; 6], "only the reply bytes up to the limit arrive");
    assert_eq!(echo.received.load(Ordering::SeqCst), 24, "the server got the whole request");
    wait_until("the cut to be counted", || stats.cut() == 1);
    assert_eq!(stats.bytes_to_client(), 10);
}

#[test]
fn dropping_the_proxy_closes_everything_and_ends_its_threads() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let stats = proxy.stats();
    let addr = proxy.addr();
    let mut client = connect(&proxy);
    roundtrip(&mut client, b"ping");
    let mut stalled = connect(&proxy);
    proxy.stall(true);
    // An acceptor and two threads per connection.
    wait_until("two connections on five threads", || stats.open() == 2 && stats.threads() == 5);
    let start = Instant::now();
    drop(proxy);
    assert!(start.elapsed() < Duration::from_secs(1), "dropping took {:?}", start.elapsed());
    assert_eq!((stats.threads(), stats.open()), (0, 0));
    assert_closed(&mut client);
    assert_closed(&mut stalled);
    assert!(TcpStream::connect(addr).is_err(), "the listener still accepts");
}

/// Request triggers act on exactly the connection whose request holds the pattern, after
/// the requests they let through: a cut stops the request before the server, a stall holds
/// only that connection, a lost reply reaches the server but not the client, and a refusal
/// cuts all connections and refuses new ones for its period.
#[test]
fn request_triggers_act_on_the_matching_request() {
    let echo = echo_server();
    let proxy = Proxy::start(echo.addr);
    let stats = proxy.stats();

    proxy.on_request("COMMIT", Action::Cut, 1, 1);
    let mut client = connect(&proxy);
    roundtrip(&mut client, b"SELECT 1");
    roundtrip(&mut client, b"COMMIT one");
    client.write_all(b"COMMIT two").unwrap();
    assert_closed(&mut client);
    assert_eq!(echo.received.load(Ordering::SeqCst), 18, "the cut request never reached the server");
    let mut client = connect(&proxy);
    roundtrip(&mut client, b"COMMIT three");

    proxy.on_request("COPY", Action::Stall, 0, 1);
    let mut held = connect(&proxy);
    roundtrip(&mut held, b"hello");
    held.write_all(b"COPY items").unwrap();
    held.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let err = held.read(&mut [0u8; 16]).unwrap_err();
    assert!(is_timeout(&err), "the held connection stays open and silent: {err}");
    roundtrip(&mut client, b"COPY on another connection passes");

    let before = echo.received.load(Ordering::SeqCst);
    proxy.on_request("UPDATE", Action::LoseReply, 0, 1);
    client.write_all(b"UPDATE x").unwrap();
    assert_closed(&mut client);
    wait_until("the server to get the request", || echo.received.load(Ordering::SeqCst) == before + 8);

    let mut open = connect(&proxy);
    roundtrip(&mut open, b"ping");
    proxy.on_request("LOCK", Action::RefuseFor(Duration::from_millis(500)), 0, 1);
    open.write_all(b"LOCK").unwrap();
    assert_closed(&mut open);
    let mut refused = connect(&proxy);
    let _ = refused.write_all(b"x");
    assert_closed(&mut refused);
    thread::sleep(Duration::from_millis(600));
    let mut later = connect(&proxy);
    roundtrip(&mut later, b"accepted again");
    assert_eq!(stats.fired(), 4);
}
