//! Helpers for integration tests: real backends on loopback addresses, the real
//! `rampart` binary as a child process, an HTTP client, and polling with deadlines.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Polls an async `cond` (an admin API call, a connection attempt) every 20 ms
/// until it holds or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `addr` accepts TCP connections (a server just started).
pub async fn wait_listening(addr: SocketAddr, within: Duration) {
    wait_until(within, &format!("{addr} listening"), || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn wait_for<F: FnMut() -> bool>(within: Duration, what: &str, mut cond: F) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `child` (`what`) exits; its status.
pub async fn wait_child(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/api/pools/{name}` from the admin API at `admin` (Null if it cannot be read).
pub async fn pool_view(admin: SocketAddr, name: &str) -> serde_json::Value {
    let (_, body) = admin_get(admin, &format!("/api/pools/{name}")).await;
    serde_json::from_str(&body).unwrap_or_default()
}

/// The server with `id` (its name, else `ip:port`) in a pool's view (Null if none).
pub fn server_by_id<'a>(pool: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    pool["servers"]
        .as_array()
        .and_then(|ss| ss.iter().find(|s| s["id"] == id))
        .unwrap_or(&serde_json::Value::Null)
}

/// Ports handed out for listeners come from below the kernel's ephemeral range
/// (32768 and up on Linux): a port taken from `:0` could meanwhile become the
/// source port of one of the many client connections the tests make, and the
/// proxy that was told to listen there would then fail to start.
const PORTS: std::ops::Range<u32> = 12000..32000;
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The next candidate port: spread by process id (test binaries run one after
/// another, but a port may still be in TIME_WAIT from the previous one), then
/// stepping through the range.
fn next_port() -> u16 {
    let span = PORTS.end - PORTS.start;
    let start = (std::process::id() * 7919) % span;
    let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
    (PORTS.start + (start + n * 13) % span) as u16
}

/// Whether `port` is free on `ip` right now: bound, not listened on, with
/// SO_REUSEADDR. A listening socket would be a worse probe: a child process
/// that another test thread spawns at that moment holds a copy of it until
/// its exec (close-on-exec), and while that copy lives, the port cannot be
/// bound for listening, even with SO_REUSEADDR: the proxy started there next
/// fails with "Address already in use" and no holder is ever seen. A copy of
/// a socket that only bound does not stand in the way of one that listens.
fn port_free(ip: &str, port: u16) -> bool {
    let addr = SocketAddr::new(ip.parse().expect("an IP address"), port);
    let Ok(s) = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    ) else {
        return false;
    };
    s.set_reuse_address(true).is_ok() && s.bind(&addr.into()).is_ok()
}

/// A port that is free on every one of `ips` right now.
pub fn common_port(ips: &[&str]) -> u16 {
    for _ in 0..2000 {
        let port = next_port();
        if ips.iter().all(|ip| port_free(ip, port)) {
            return port;
        }
    }
    panic!("no common free port on {ips:?}");
}

pub fn free_addr(ip: &str) -> SocketAddr {
    for _ in 0..2000 {
        let port = next_port();
        if port_free(ip, port) {
            return SocketAddr::new(ip.parse().expect("an IP address"), port);
        }
    }
    panic!("no free port on {ip}");
}

/// Binds a test server's listener at `addr`, a port `free_addr` found free a moment
/// ago. The bind once failed rarely (about once in a few hundred CI tests) with
/// EADDRINUSE although the port was free just before, with no holder ever seen:
/// most likely a copy of `free_addr`'s listening probe in a child being spawned
/// (`port_free`, which no longer listens). This still retries for up to 3 s, and
/// if the port stays taken it fails with what `ss` says holds it, instead of a
/// bare "Address already in use".
pub async fn listen(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                eprintln!("bind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let ss = Command::new("ss")
                    .args([
                        "-tanpe",
                        &format!("( sport = :{} or dport = :{} )", addr.port(), addr.port()),
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("bind {addr}: {e}; ss says:\n{ss}");
            }
        }
    }
}

/// What an HTTP test backend saw.
#[derive(Default)]
pub struct BackendStats {
    pub requests: AtomicUsize,
    pub active: AtomicUsize,
    /// The most requests it has had in progress at once.
    pub max_active: AtomicUsize,
    pub connections: AtomicUsize,
    /// Connections that have ended (closed by either side).
    pub closed: AtomicUsize,
    pub last_headers: Mutex<Option<hyper::HeaderMap>>,
    pub last_version: Mutex<Option<hyper::Version>>,
    pub last_uri: Mutex<Option<String>>,
    /// Every request's URI, in the order the requests arrived.
    pub uris: Mutex<Vec<String>>,
    pub health_checks: AtomicUsize,
    /// What `/health` answers (200 unless a test changes it).
    pub health_status: std::sync::atomic::AtomicU16,
}

impl BackendStats {
    fn new() -> BackendStats {
        BackendStats {
            health_status: std::sync::atomic::AtomicU16::new(200),
            ..Default::default()
        }
    }
}

/// An HTTP/1.1 backend. Paths:
/// - `/` and anything else: `200` with body = the backend's name;
/// - `/slow?ms=N`: answers after N ms;
/// - `/big?bytes=N`: N bytes of body, streamed in 64 KiB chunks (with
///   `&chunked=1`, sent chunked: no Content-Length);
/// - `/upload`: reads the whole request body, answers with its length;
/// - `/digest?fail=N`: reads the whole request body, answers with its length
///   and its FNV-1a hash (`fnv1a`: each byte in its place), or with 503 from
///   the backend named `pod-N`;
/// - `/status?code=N`: answers with status N;
/// - `/set-cookie`: sets the cookies `SRV` and `session`;
/// - `/echo-upgrade`: 101, then echoes every byte on the upgraded connection.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    task: JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Backend {
    pub async fn start(name: &str, addr: SocketAddr) -> Backend {
        let listener = listen(addr).await;
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(BackendStats::new());
        let name_s: Arc<str> = Arc::from(name);
        let st = Arc::clone(&stats);
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let conns_in = Arc::clone(&conns);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                let st_done = Arc::clone(&st);
                let name = Arc::clone(&name_s);
                let h = tokio::spawn(async move {
                    let svc =
                        service_fn(move |req| handle(Arc::clone(&name), Arc::clone(&st), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                    st_done.closed.fetch_add(1, Ordering::SeqCst);
                });
                let mut list = conns_in.lock().unwrap();
                list.retain(|c| !c.is_finished());
                list.push(h.abort_handle());
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            stats,
            task,
            conns,
        }
    }

    /// Like a crashed pod: the listener and every open connection close at once.
    pub fn kill(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(
    name: Arc<str>,
    st: Arc<BackendStats>,
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    if req.uri().path() == "/health" {
        // health probes are not traffic: they do not count as requests
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        let mut r = text("ok");
        *r.status_mut() = StatusCode::from_u16(st.health_status.load(Ordering::SeqCst)).unwrap();
        return Ok(r);
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    let now_active = st.active.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_active.fetch_max(now_active, Ordering::SeqCst);
    *st.last_headers.lock().unwrap() = Some(req.headers().clone());
    *st.last_version.lock().unwrap() = Some(req.version());
    *st.last_uri.lock().unwrap() = Some(req.uri().to_string());
    st.uris.lock().unwrap().push(req.uri().to_string());
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
            text(&name)
        }
        "/big" => {
            let n = query(&req, "bytes").unwrap_or(0);
            if query(&req, "chunked") == Some(1) {
                Response::new(BodyExt::boxed(Pattern::untold(n)))
            } else {
                Response::new(BodyExt::boxed(Pattern::new(n)))
            }
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            let mut sum = 0u64;
            while let Some(f) = body.frame().await {
                if let Ok(d) = f.map(|f| f.into_data()) {
                    if let Ok(d) = d {
                        n += d.len() as u64;
                        sum = d.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
                    }
                } else {
                    break;
                }
            }
            text(&format!("{n} {sum}"))
        }
        "/digest" => {
            let fail = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("fail="))
                .is_some_and(|n| format!("pod-{n}") == *name);
            let mut body = req.into_body();
            let (mut n, mut hash) = (0u64, Fnv1a::default());
            while let Some(Ok(f)) = body.frame().await {
                if let Ok(d) = f.into_data() {
                    n += d.len() as u64;
                    hash.write(&d);
                }
            }
            let mut r = text(&format!("{n} {:016x}", hash.0));
            if fail {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
        "/stream-echo" => {
            // answers at once, then sends back each piece of the request body
            // as it comes (a bidirectional stream, as in gRPC)
            Response::new(BodyExt::boxed(StreamEcho(req.into_body())))
        }
        "/reject" => {
            // answers at once, without reading the (large) request body
            let mut r = text("rejected");
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            r
        }
        "/set-cookie" => {
            // a server that sets cookies of its own
            let mut r = text(&name);
            for c in ["SRV=set-by-the-server; Path=/", "session=abc"] {
                r.headers_mut()
                    .append(hyper::header::SET_COOKIE, c.parse().unwrap());
            }
            r
        }
        "/status" => {
            let mut r = text(&name);
            *r.status_mut() =
                StatusCode::from_u16(query(&req, "code").unwrap_or(200) as u16).unwrap();
            r
        }
        "/echo-upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r
        }
        _ => text(&name),
    };
    st.active.fetch_sub(1, Ordering::SeqCst);
    Ok(resp)
}

fn text(s: &str) -> Response<BoxBody> {
    full_answer(s.to_string())
}

/// A 200 answer of `body`, whole (for a server of `answering`).
pub fn full_answer(body: impl Into<Bytes>) -> Response<BoxReq> {
    Response::new(BodyExt::boxed(Full::new(body.into())))
}

/// A body of `n` bytes (byte i = i % 251), produced in 64 KiB chunks without holding it.
pub struct Pattern {
    left: u64,
    pos: u64,
    /// Whether it tells its length (an HTTP/1.1 server sends it chunked if not).
    sized: bool,
}

impl Pattern {
    pub fn new(n: u64) -> Pattern {
        Pattern {
            left: n,
            pos: 0,
            sized: true,
        }
    }
    /// The same body, its length untold.
    pub fn untold(n: u64) -> Pattern {
        Pattern {
            sized: false,
            ..Pattern::new(n)
        }
    }
    /// The checksum `/upload` reports for a pattern of `n` bytes.
    pub fn checksum(n: u64) -> u64 {
        (0..n).fold(0u64, |s, i| s.wrapping_add(i % 251))
    }
}

/// The 64-bit FNV-1a hash that `/digest` reports: unlike `/upload`'s sum, it
/// changes when bytes are reordered.
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a::default();
        h.write(bytes);
        h.0
    }
}

/// `/stream-echo`'s answer: the request body's data as it arrives; it ends
/// where the request body ends or fails.
struct StreamEcho(Incoming);

impl Body for StreamEcho {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            return match Pin::new(&mut self.0).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(_)) | None) => Poll::Ready(None),
            };
        }
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        // one table of 64 KiB + 251 bytes, sliced: a chunk costs no copy (a
        // debug build computing each byte kept the test's runtime busy for
        // seconds under the big responses of the hostile battery)
        static TABLE: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
        let table = TABLE.get_or_init(|| {
            Bytes::from(
                (0..64 * 1024 + 251)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            )
        });
        let n = self.left.min(64 * 1024);
        let off = (self.pos % 251) as usize;
        let chunk = table.slice(off..off + n as usize);
        self.left -= n;
        self.pos += n;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.sized {
            hyper::body::SizeHint::with_exact(self.left)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

/// A raw TCP echo server: reads until EOF, then writes everything back and closes
/// (so a client only gets its answer if half-close works end to end).
pub async fn start_echo_after_eof(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let l = listen(addr).await;
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut all = Vec::new();
                if s.read_to_end(&mut all).await.is_ok() {
                    let _ = s.write_all(&all).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    (addr, task)
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A new directory under the system's temporary directory, named after this
/// test process. The first call in a process removes the directories of test
/// processes that no longer run (a test's files outlive it only until the next
/// test binary starts; nothing piles up in /tmp run after run).
pub fn temp_dir(tag: &str) -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("rampart-test-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
    let d = std::env::temp_dir().join(format!(
        "rampart-test-{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn rampart_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rampart")
}

/// `rampart check -c PATH`: whether it passed, and its stdout then stderr.
pub fn rampart_check(path: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(rampart_bin())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run rampart check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Polls `/api/reload` until `reloads_failed` is `n`; what it said then.
pub async fn wait_reloads_failed(admin: SocketAddr, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = admin_get(admin, "/api/reload").await.1;
        let last: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if last["reloads_failed"] == n {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "reloads_failed is not {n}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `rampart ARGS --admin http://ADMIN` (the CLI against a running proxy),
/// which must succeed; its stdout.
pub fn rampart_cli(admin: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(rampart_bin())
        .args(args)
        .args(["--admin", &format!("http://{admin}")])
        .output()
        .expect("run rampart");
    assert!(
        out.status.success(),
        "rampart {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process that is killed (and reaped) when the guard goes out of
/// scope, so that a failed assertion does not leave it running after the
/// test. Derefs to the `Child` (id, try_wait, kill, ...).
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy (from PATH; scripts/test.sh installs it) in the foreground on
/// `cfg`, killed when the guard drops.
pub fn haproxy(cfg: &std::path::Path) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (scripts/test.sh installs it)"),
    )
}

/// `rampart import FORMAT source`, moved from the original's address `from`
/// to one of its own, with an admin address for the harness: the config,
/// that address and the import's report.
pub fn imported(
    format: &str,
    source: &std::path::Path,
    from: SocketAddr,
) -> (String, SocketAddr, String) {
    let out = source.with_extension("rampart.toml");
    let import = std::process::Command::new(rampart_bin())
        .args(["import", format])
        .arg(source)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&import.stderr).into_owned();
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let toml = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("{e}: {report}"))
        .replace(&format!("\"{from}\""), &format!("\"{listen}\""));
    assert!(toml.contains(&format!("\"{listen}\"")), "{toml}");
    (
        format!("{toml}\n[admin]\nbind = \"{admin}\"\n"),
        listen,
        report,
    )
}

/// A server on a free loopback port that answers each request (HTTP/1.1,
/// or HTTP/2 with prior knowledge) with what `answer` makes of it.
pub async fn answering<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxReq>> + Send + 'static,
{
    answering_counted(answer).await.0
}

/// [`answering`], and how many connections it has accepted.
pub async fn answering_counted<F, Fut>(answer: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxReq>> + Send + 'static,
{
    let addr = free_addr("127.0.0.1");
    let listener = listen(addr).await;
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

/// Writes `dir/nginx.conf`: one worker in the foreground, its files in
/// `dir`, and an `http` block of `http` (upstreams, servers); its path.
pub fn nginx_conf(dir: &std::path::Path, http: &str) -> PathBuf {
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n{http}\n}}\n"
        ),
    )
    .unwrap();
    conf
}

/// nginx (from PATH; scripts/test.sh installs it) with prefix `dir` on
/// `conf` (which says `daemon off`), killed when the guard drops.
pub fn nginx(dir: &std::path::Path, conf: &std::path::Path) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx (scripts/test.sh installs it)"),
    )
}

/// Runs `cmd` (stdout and stderr captured) and waits at most `within` for it
/// to exit, polling (a blocking call, for plain `#[test]`s); a process still
/// running then is killed and the test fails, instead of hanging the CI.
pub fn output_within(cmd: &mut Command, within: Duration, what: &str) -> std::process::Output {
    // (as `Command::output`: no stdin)
    let mut child = KillOnDrop(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}")),
    );
    // the pipes are drained as the process runs (a full pipe would block it)
    let out = read_to_end_in_thread(child.stdout.take());
    let err = read_to_end_in_thread(child.stderr.take());
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Reads `r` to its end on a thread of its own.
fn read_to_end_in_thread<R: Read + Send + 'static>(
    r: Option<R>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// The rampart binary running a config, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `[admin] bind`, read from the config: where its state is polled.
    pub admin: Option<SocketAddr>,
    /// Where it sends systemd's notifications (READY=1), unless the caller
    /// chose its own NOTIFY_SOCKET.
    notify: Option<std::os::unix::net::UnixDatagram>,
    /// Reads (and drops) the notifications after start-up, so that the
    /// socket's queue never fills; aborted on drop.
    notify_drain: Option<tokio::task::JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

/// `[admin] bind` of a config text.
fn admin_bind(config: &str) -> Option<SocketAddr> {
    let v: toml::Value = toml::from_str(config).ok()?;
    v.get("admin")?.get("bind")?.as_str()?.parse().ok()
}

impl Proxy {
    /// Writes `config` to a file, runs `rampart run -c` on it, and waits until every
    /// address in `wait_on` accepts connections.
    pub async fn start(config: &str, wait_on: &[SocketAddr]) -> Proxy {
        let log = std::env::var("TEST_RAMPART_LOG").unwrap_or_else(|_| "info".into());
        Proxy::start_logging(config, wait_on, &log).await
    }

    /// `start`, with RAMPART_LOG set to `log` (e.g. "info,rampart::upstream=debug").
    pub async fn start_logging(config: &str, wait_on: &[SocketAddr], log: &str) -> Proxy {
        Proxy::start_env(config, wait_on, log, &[]).await
    }

    /// `start_logging`, with more environment variables.
    pub async fn start_env(
        config: &str,
        wait_on: &[SocketAddr],
        log: &str,
        env: &[(&str, &str)],
    ) -> Proxy {
        let dir = temp_dir("proxy");
        let path = dir.join("rampart.toml");
        std::fs::write(&path, config).unwrap();
        let notify_path = dir.join("notify");
        let notify = (!env.iter().any(|(k, _)| *k == "NOTIFY_SOCKET")).then(|| {
            let s = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        });
        let mut cmd = Command::new(rampart_bin());
        if notify.is_some() {
            cmd.env("NOTIFY_SOCKET", &notify_path);
        }
        let child = cmd
            .args(["run", "-c"])
            .arg(&path)
            .env("RAMPART_LOG", log)
            .envs(env.iter().copied())
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("stdout")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr")).unwrap(),
            ))
            .spawn()
            .expect("spawn rampart");
        let mut p = Proxy {
            child,
            dir,
            config: path,
            admin: admin_bind(config),
            notify,
            notify_drain: None,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        // Sockets are bound (and the kernel queues connections) before start-up is
        // over: the admin API says "running" once everything runs, and so does
        // READY=1 on the notify socket (for a config without an open admin API).
        while !p.started().await {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("rampart exited early ({st}): {}", p.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "rampart did not start: {}",
                p.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(sock) = p.notify.take() {
            let sock = tokio::net::UnixDatagram::from_std(sock).unwrap();
            p.notify_drain = Some(tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while sock.recv(&mut buf).await.is_ok() {}
            }));
        }
        for addr in wait_on {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if let Ok(Some(st)) = p.child.try_wait() {
                    panic!("rampart exited early ({st}): {}", p.stderr());
                }
                assert!(
                    Instant::now() < deadline,
                    "rampart did not listen on {addr}: {}",
                    p.stderr()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Start-up is over: the phase the admin API reports has left "starting",
    /// or the proxy sent READY=1.
    async fn started(&self) -> bool {
        if let Some(admin) = self.admin {
            if let Ok(Ok((st, body))) = tokio::time::timeout(
                Duration::from_secs(1),
                try_get(&format!("http://{admin}/stats;json")),
            )
            .await
            {
                if st == StatusCode::OK {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    return v["phase"].as_str().is_some_and(|ph| ph != "starting");
                }
                if st != StatusCode::UNAUTHORIZED {
                    return false;
                }
            }
        }
        match &self.notify {
            Some(sock) => {
                let mut buf = [0u8; 512];
                while let Ok(n) = sock.recv(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                        return true;
                    }
                }
                false
            }
            // the caller listens on NOTIFY_SOCKET itself
            None => self.stderr().contains("rampart started"),
        }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the config has no [admin] bind")
    }

    /// `/stats;json`.
    pub async fn stats(&self) -> serde_json::Value {
        let (st, body) = admin_get(self.admin_addr(), "/stats;json").await;
        assert_eq!(st, StatusCode::OK, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// `/api/pools/{name}`.
    pub async fn pool(&self, name: &str) -> serde_json::Value {
        let (st, body) = admin_get(self.admin_addr(), &format!("/api/pools/{name}")).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        serde_json::from_str(&body).expect("pool JSON")
    }

    /// The status (UP, DOWN, UNKNOWN, EJECTED, ...) of the server at `addr` in
    /// `pool` ("" when the pool has no such server).
    pub async fn server_status(&self, pool: &str, addr: SocketAddr) -> String {
        let p = self.pool(pool).await;
        server_in(&p, addr)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the server at `addr` in `pool` has `status`.
    pub async fn wait_server(&self, within: Duration, pool: &str, addr: SocketAddr, status: &str) {
        let what = format!("{pool}/{addr} {status}");
        wait_until(within, &what, || async {
            self.server_status(pool, addr).await == status
        })
        .await;
    }

    /// Waits until `cond` holds of `/api/pools/{pool}`; returns that view.
    pub async fn wait_pool(
        &self,
        within: Duration,
        pool: &str,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.pool(pool).await;
            if cond(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for pool {pool}: {what}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `cond` holds of `/stats;json`; returns it.
    pub async fn wait_stats(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.stats().await;
            if cond(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for: {what}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the process reports `phase` (starting, running, draining, closing).
    pub async fn wait_phase(&self, within: Duration, phase: &str) {
        self.wait_stats(within, &format!("phase {phase}"), |s| s["phase"] == phase)
            .await;
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let st = wait_child(&mut self.child, within, "rampart").await;
        self.exited = Some(st);
        st
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let mut s = String::new();
        std::fs::File::open(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = &self.notify_drain {
            t.abort();
        }
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two "pods": backends named pod-a and pod-b on 127.0.0.2 and 127.0.0.3, with
/// the same port (as a headless service's endpoints).
pub async fn two_pods() -> (Backend, Backend) {
    let port = common_port(&["127.0.0.2", "127.0.0.3"]);
    let a = Backend::start("pod-a", SocketAddr::new(ip("127.0.0.2"), port)).await;
    let b = Backend::start("pod-b", SocketAddr::new(ip("127.0.0.3"), port)).await;
    (a, b)
}

/// `n` sequential GETs of `url`, each of which must be 200; their bodies.
pub async fn bodies(c: &Client, url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (st, body) = get(c, url).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        out.push(body);
    }
    out
}

/// A keep-alive HTTP client (hyper-util's pooled client).
pub type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, BoxReq>;
pub type BoxReq = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn empty() -> BoxReq {
    BodyExt::boxed(Full::new(Bytes::new()))
}

/// A body of one frame without a length: sent chunked over HTTP/1.1.
pub fn chunked(data: &'static [u8]) -> BoxReq {
    let frame = Ok(hyper::body::Frame::data(Bytes::from_static(data)));
    BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        vec![frame],
    )))
}

/// GET `url`; returns status and body text.
pub async fn get(c: &Client, url: &str) -> (StatusCode, String) {
    let resp = c
        .get(url.parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// GET `url` on a fresh connection; an error (nothing listening yet) instead of
/// a panic.
pub async fn try_get(url: &str) -> Result<(StatusCode, String), String> {
    let resp = client()
        .get(url.parse().map_err(|e| format!("{e}"))?)
        .await
        .map_err(|e| format!("{e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends a request and returns the response with its whole body.
pub async fn send(c: &Client, req: Request<BoxReq>) -> (Response<()>, Bytes) {
    let resp = c.request(req).await.expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (Response::from_parts(parts, ()), body)
}

/// Counts responses by body text.
pub fn tally(bodies: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for b in bodies {
        *m.entry(b.clone()).or_insert(0) += 1;
    }
    m
}

/// A minimal config with one HTTP listener and one pool.
pub fn http_config(listen: SocketAddr, pool_extra: &str, servers: &[(SocketAddr, u32)]) -> String {
    let global = "threads = 1\nshutdown_grace = \"10s\"\naccess_log = \"text\"\n";
    http_config_at(listen, free_addr("127.0.0.1"), global, pool_extra, servers)
}

/// The same, with the admin address and the `[global]` lines chosen by the caller.
pub fn http_config_at(
    listen: SocketAddr,
    admin: SocketAddr,
    global: &str,
    pool_extra: &str,
    servers: &[(SocketAddr, u32)],
) -> String {
    let mut s = format!(
        r#"[global]
{global}
[admin]
bind = "{admin}"

[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "api"

[[pool]]
name = "api"
{pool_extra}
"#
    );
    for (addr, w) in servers {
        s.push_str(&format!(
            "  [[pool.server]]\n  address = \"{addr}\"\n  weight = {w}\n"
        ));
    }
    s
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Opens an `Upgrade: echo` tunnel through the proxy to a `Backend`'s `/echo-upgrade`.
pub async fn open_echo_tunnel(proxy: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        b"GET /echo-upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed during the handshake: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s
}

/// Writes `msg` into an echo tunnel and checks it comes back.
pub async fn echo_roundtrip(s: &mut tokio::net::TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

/// What a one-shot backend saw: connections accepted, and requests it closed a
/// connection on without answering (each one a request that met a stale pooled
/// connection).
pub struct OneShot {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

/// A raw HTTP/1.1 backend that answers the first request on each connection with
/// `200 first` (keep-alive, with `extra_headers`), then reads the next request on
/// that connection and closes without answering: the server side of the keep-alive
/// race, made deterministic.
pub async fn start_one_shot_backend(addr: SocketAddr, extra_headers: &'static str) -> OneShot {
    let l = listen(addr).await;
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (c, r) = (Arc::clone(&conns), Arc::clone(&refused));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                let mut served = false;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    got.extend_from_slice(&buf[..n]);
                    if !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    if served {
                        // the second request: close without a word
                        r.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    served = true;
                    got.clear();
                    let resp =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n{extra_headers}\r\nfirst");
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    OneShot {
        addr,
        conns,
        refused,
    }
}

/// A request body fed chunk by chunk through a channel (a client that uploads at
/// its own pace, or stalls).
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub mod dns;
pub mod netns;
pub mod tls;

/// GET on the admin server.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    get(&client(), &format!("http://{admin}{path}")).await
}

/// Column `col` of `listener`'s FRONTEND row in `/stats;csv` (HAProxy's
/// order: 10 is dreq, 12 ereq).
pub async fn frontend_csv(admin: SocketAddr, listener: &str, col: usize) -> String {
    let (_, csv) = admin_get(admin, "/stats;csv").await;
    let row = csv
        .lines()
        .find(|l| l.starts_with(&format!("{listener},FRONTEND,")))
        .unwrap_or_else(|| panic!("no FRONTEND row for {listener}: {csv}"));
    row.split(',').nth(col).unwrap_or_default().to_string()
}

/// `/stats;json` of the admin server at `admin`.
pub async fn admin_stats(admin: SocketAddr) -> serde_json::Value {
    let (st, body) = admin_get(admin, "/stats;json").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("stats JSON")
}

/// POST with a JSON body on the admin server.
pub async fn admin_post(admin: SocketAddr, path: &str, body: &str) -> (StatusCode, String) {
    let req = Request::post(format!("http://{admin}{path}"))
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))))
        .unwrap();
    let (resp, body) = send(&client(), req).await;
    (resp.status(), String::from_utf8_lossy(&body).into_owned())
}

/// A raw HTTP/1.1 answer cut after its head: (head, body). Panics without one.
pub fn split_head(all: &[u8]) -> (&[u8], &[u8]) {
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    all.split_at(end)
}

/// The value of the first line of a Prometheus text that starts with
/// `line_start` (metric name and labels). Panics when there is none: a
/// renamed or relabelled series must not read as 0 (an assertion that
/// something is 0 would pass for it).
pub fn metric(text: &str, line_start: &str) -> f64 {
    find_metric(text, line_start)
        .unwrap_or_else(|| panic!("no metric line starts with {line_start:?} in:\n{text}"))
}

/// `metric`, or 0 while there is no such line: for a labelled series that
/// only appears with its first event (a TLS failure reason, a GOAWAY code).
pub fn metric_or_zero(text: &str, line_start: &str) -> f64 {
    find_metric(text, line_start).unwrap_or(0.0)
}

/// The value of the first line that starts with `line_start` (None: no such
/// line); a line without a number at its end panics.
fn find_metric(text: &str, line_start: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(line_start))?;
    let value = line.rsplit(' ').next().and_then(|v| v.parse().ok());
    Some(value.unwrap_or_else(|| panic!("metric line without a value: {line:?}")))
}

/// Polls the admin server's /metrics until the line reaches `min` (at most 5 s);
/// returns the text. Counters a connection's end bumps may trail what the client
/// saw (a refused handshake is counted just after its alert went out). A
/// series that is not there yet counts as 0 (labelled series appear with their
/// first event): it keeps polling, and times out if the series never comes.
pub async fn wait_metric(admin: SocketAddr, line_start: &str, min: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = admin_get(admin, "/metrics").await.1;
        if metric_or_zero(&m, line_start) >= min {
            return m;
        }
        assert!(Instant::now() < deadline, "{line_start} < {min}: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Open descriptors of a process (0 once it is gone).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of a process, KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A TCP server that echoes every byte back as it comes (a long-lived session).
pub async fn start_echo(addr: SocketAddr) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = listen(addr).await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A proxy whose POST /jobs counts against a quota of 100 a day per
/// `x-api-key` (limit "jobs"), with a state file or not.
pub fn quota_config(
    listen: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
    state: Option<&std::path::Path>,
) -> String {
    let state = state.map_or(String::new(), |p| {
        format!("state_file = \"{}\"\n", p.display())
    });
    format!(
        r#"[global]
threads = 1
{state}[admin]
bind = "{admin}"
[[rate_limit]]
name = "jobs"
key = "header:x-api-key"
quota = "100/day"
[[listener]]
name = "web"
bind = ["{listen}"]
mode = "http"
pool = "api"
  [[listener.rule]]
  method = ["POST"]
  path = "/jobs"
  rate_limit = "jobs"
[[pool]]
name = "api"
  [[pool.server]]
  address = "{backend}"
"#
    )
}

/// A process's CPU time so far (user + system), from /proc.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks as f64 / tick
}

/// Sends one request on an HTTP/2 connection of its own to `addr` (prior
/// knowledge): the URI's authority becomes `:authority`, whatever `addr` is.
pub async fn h2_request(addr: SocketAddr, req: Request<BoxReq>) -> Response<Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    send.send_request(req).await.unwrap()
}

/// The server at `addr` in a pool's view (`Null` when there is none).
pub fn server_in(pool: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    let a = addr.to_string();
    pool["servers"]
        .as_array()
        .and_then(|ss| ss.iter().find(|s| s["address"] == a.as_str()))
        .unwrap_or(&serde_json::Value::Null)
}

/// The pool `name` in `/stats;json` (Null if none).
pub fn pool_in<'a>(stats: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    stats["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// How many of a pool's servers have `status`.
pub fn count_status(pool: &serde_json::Value, status: &str) -> usize {
    pool["servers"]
        .as_array()
        .map_or(0, |ss| ss.iter().filter(|s| s["status"] == status).count())
}
