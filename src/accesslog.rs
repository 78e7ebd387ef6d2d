//! One line per HTTP request or TCP session, as text (key=value) or JSON, written to
//! stdout by a dedicated thread so the data plane never blocks on the terminal/pipe.

use crate::clock::Rfc3339;
use crate::config::AccessLogFormat;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// How a request or session ended (HAProxy's termination state, in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Ok,
    ClientAbort,
    ServerAbort,
    ConnectError,
    ConnectTimeout,
    ServerTimeout,
    IdleTimeout,
    NoServer,
    QueueTimeout,
    /// Shed by priority: the pool was saturated.
    Shed,
    Upgraded,
    /// Something rampart does not do was asked (an upgrade to an HTTP/2 pool).
    Unsupported,
    /// Answered by a rule (deny or redirect) without reaching a pool.
    Rule,
    /// The pool's circuit was open: failed fast.
    CircuitOpen,
    /// A write refused in read-only mode.
    ReadOnly,
    /// Over a rate limit (429).
    RateLimited,
    /// Refused for what the client sent: a malformed or oversized request
    /// head, or a malformed body (400, 431).
    BadRequest,
    /// The client did not send its request head or body in time (408).
    ClientTimeout,
    /// A gRPC call's deadline (`grpc-timeout`) passed before the answer.
    Deadline,
    /// A tcp connection no route took, on a listener without a pool: closed.
    NoRoute,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Ok => "ok",
            End::ClientAbort => "client_abort",
            End::ServerAbort => "server_abort",
            End::ConnectError => "connect_error",
            End::Unsupported => "unsupported",
            End::Rule => "rule",
            End::CircuitOpen => "circuit_open",
            End::ReadOnly => "read_only",
            End::RateLimited => "rate_limited",
            End::BadRequest => "bad_request",
            End::ClientTimeout => "client_timeout",
            End::ConnectTimeout => "connect_timeout",
            End::ServerTimeout => "server_timeout",
            End::Deadline => "deadline",
            End::NoRoute => "no_route",
            End::IdleTimeout => "idle_timeout",
            End::NoServer => "no_server",
            End::QueueTimeout => "queue_timeout",
            End::Shed => "shed",
            End::Upgraded => "upgraded",
        }
    }
}

/// A request refused for what the client sent, before any pool saw it: the
/// proxy answers it itself and closes the connection (HAProxy counts these as
/// `ereq` and logs them as `<BADREQ>` or with a `c` state). Counted per
/// listener (`request_errors` in `/stats;json`, a `reason` label of
/// `rampart_listener_request_errors_total`) and access-logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    /// The request head is not valid HTTP/1.1: 400.
    MalformedHead,
    /// The request head is longer than the proxy reads (64 KiB) or has too
    /// many fields: 431.
    HeadTooLarge,
    /// Part of a request head came and the rest not within
    /// request_header_timeout: 408. (A connection that sent nothing is closed
    /// without an answer and not counted: browsers open spare connections.)
    HeadTimeout,
    /// The request body's framing is broken (a bad chunk size, chunk data
    /// not ended by CRLF): 400. A client that closes before its body's end
    /// left; it is not counted here (`client_abort` in the log).
    MalformedBody,
    /// The request body paused for longer than client_timeout: 408.
    BodyTimeout,
    /// The request body is longer than its max_request_body (the listener's or a rule's): 413.
    BodyTooLarge,
}

impl RequestFault {
    /// The names of the reasons, as counted, indexed by [`RequestFault::index`].
    pub const REASONS: [&'static str; 6] = [
        "malformed_head",
        "head_too_large",
        "head_timeout",
        "malformed_body",
        "body_timeout",
        "body_too_large",
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn status(self) -> http::StatusCode {
        match self {
            RequestFault::MalformedHead | RequestFault::MalformedBody => {
                http::StatusCode::BAD_REQUEST
            }
            RequestFault::HeadTooLarge => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestFault::HeadTimeout | RequestFault::BodyTimeout => {
                http::StatusCode::REQUEST_TIMEOUT
            }
            RequestFault::BodyTooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The answer's body.
    pub fn text(self) -> &'static str {
        match self {
            RequestFault::MalformedHead => "400 Bad Request\n",
            RequestFault::HeadTooLarge => "431 Request Header Fields Too Large\n",
            RequestFault::HeadTimeout => "408 Request Timeout\n",
            RequestFault::MalformedBody => "400 Bad Request: the request body is malformed\n",
            RequestFault::BodyTimeout => "408 Request Timeout: the request body stopped coming\n",
            RequestFault::BodyTooLarge => {
                "413 Content Too Large: the request body is over max_request_body\n"
            }
        }
    }

    /// Its access log end state.
    pub fn end(self) -> End {
        match self {
            RequestFault::HeadTimeout | RequestFault::BodyTimeout => End::ClientTimeout,
            _ => End::BadRequest,
        }
    }
}

/// Responses by status class, as HAProxy counts them (`hrsp_1xx` to
/// `hrsp_other`): what a server answered, or what a listener's clients got.
#[derive(Debug, Default)]
pub struct StatusCounts([std::sync::atomic::AtomicU64; 6]);

impl StatusCounts {
    /// The classes' names, in order.
    pub const CLASSES: [&'static str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

    #[inline]
    pub fn count(&self, status: u16) {
        let i = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.0[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counts, in the order of [`StatusCounts::CLASSES`].
    pub fn get(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.0[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets the counts (what an older process counted: a binary upgrade).
    pub fn set(&self, v: [u64; 6]) {
        for (a, n) in self.0.iter().zip(v) {
            a.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// By class name, for `/stats;json`.
    pub fn by_class(&self) -> std::collections::BTreeMap<String, u64> {
        Self::CLASSES
            .iter()
            .zip(self.get())
            .map(|(c, n)| (c.to_string(), n))
            .collect()
    }
}

/// Everything one log line says.
#[derive(Debug)]
pub struct Entry<'a> {
    pub client: SocketAddr,
    pub listener: &'a str,
    pub pool: &'a str,
    pub server: Option<&'a str>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect: Option<Duration>,
    /// None where it is not known (a request head hyper refused).
    pub total: Option<Duration>,
    pub end: End,
    /// The client connection's TLS (a TLS listener).
    pub tls: Option<&'a crate::tls::TlsInfo>,
    /// A gRPC call's status: the server's `grpc-status` (trailers, or the
    /// headers of a trailers-only answer), or the one rampart answered with.
    pub grpc_status: Option<u32>,
    /// The server name of the ClientHello a tcp listener passed through
    /// (routing by SNI), as ` sni=`: a TLS listener's is in `tls`.
    pub sni: Option<&'a str>,
}

enum Msg {
    Line(String),
    Flush(mpsc::SyncSender<()>),
}

/// Lines waiting for the writer thread at most; beyond, lines are dropped and
/// counted rather than letting memory grow while stdout is blocked.
const QUEUE_LINES: usize = 65_536;

#[derive(Debug)]
pub struct AccessLog {
    format: AccessLogFormat,
    tx: Option<mpsc::SyncSender<Msg>>,
    /// Lines dropped because the writer could not keep up.
    pub dropped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl AccessLog {
    pub fn new(format: AccessLogFormat) -> AccessLog {
        if format == AccessLogFormat::Off {
            return AccessLog {
                format,
                tx: None,
                dropped: Default::default(),
            };
        }
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name("rampart-log".into())
            .spawn(move || {
                // (it frees the lines the workers made: kept here, they
                // would serve nobody)
                crate::heap::hold_none();
                // Unlocked handle: stdout is locked per flush, not for the thread's
                // life, so println! elsewhere in the process never blocks.
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
                while let Ok(msg) = rx.recv() {
                    let mut next = Some(msg);
                    // Write everything queued, then flush once.
                    while let Some(m) = next.take() {
                        match m {
                            Msg::Line(l) => {
                                let _ = out.write_all(l.as_bytes());
                            }
                            Msg::Flush(ack) => {
                                let _ = out.flush();
                                let _ = ack.send(());
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    let _ = out.flush();
                }
            });
        match spawned {
            Ok(_) => AccessLog {
                format,
                tx: Some(tx),
                dropped: Default::default(),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access log thread; access log is off");
                AccessLog {
                    format: AccessLogFormat::Off,
                    tx: None,
                    dropped: Default::default(),
                }
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, e: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            AccessLogFormat::Json => format_json(e),
            _ => format_text(e),
        };
        if tx.try_send(Msg::Line(line)).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits (at most `within`) until every line sent so far is written out.
    pub fn flush(&self, within: Duration) {
        if let Some(tx) = &self.tx {
            let (ack_tx, ack_rx) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv_timeout(within);
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn format_text(e: &Entry<'_>) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{} client={} listener={} pool={} server={}",
        Rfc3339(SystemTime::now()),
        e.client,
        e.listener,
        e.pool,
        e.server.unwrap_or("-")
    );
    if let Some(m) = e.method {
        let _ = write!(s, " method={m} path={:?}", e.path.unwrap_or(""));
    }
    match e.status {
        Some(st) => {
            let _ = write!(s, " status={st}");
        }
        None => s.push_str(" status=-"),
    }
    let _ = write!(s, " bytes_in={} bytes_out={}", e.bytes_in, e.bytes_out);
    match e.connect {
        Some(c) => {
            let _ = write!(s, " connect_ms={}", ms(c));
        }
        None => s.push_str(" connect_ms=-"),
    }
    match e.total {
        Some(t) => {
            let _ = write!(s, " total_ms={}", ms(t));
        }
        None => s.push_str(" total_ms=-"),
    }
    let _ = write!(s, " end={}", e.end.as_str());
    if let Some(g) = e.grpc_status {
        let _ = write!(s, " grpc_status={g}");
    }
    if let Some(t) = e.tls {
        let _ = write!(
            s,
            " tls={} cipher={} sni={}",
            t.version,
            t.cipher,
            t.sni.as_deref().unwrap_or("-")
        );
        if let Some(sub) = &t.client_subject {
            let _ = write!(s, " client_cert={sub:?}");
        }
    } else if let Some(sni) = e.sni {
        let _ = write!(s, " sni={sni}");
    }
    s.push('\n');
    s
}

/// A JSON log line: borrowed from the entry, serialized in one pass.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: Rfc3339,
    client: SocketAddr,
    listener: &'a str,
    pool: &'a str,
    server: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    connect_ms: Option<f64>,
    total_ms: Option<f64>,
    end: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cipher: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert: Option<&'a str>,
}

fn format_json(e: &Entry<'_>) -> String {
    let line = JsonLine {
        time: Rfc3339(SystemTime::now()),
        client: e.client,
        listener: e.listener,
        pool: e.pool,
        server: e.server,
        method: e.method,
        path: e.path,
        status: e.status,
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        connect_ms: e.connect.map(ms),
        total_ms: e.total.map(ms),
        end: e.end.as_str(),
        grpc_status: e.grpc_status,
        tls: e.tls.map(|t| t.version),
        cipher: e.tls.map(|t| t.cipher),
        sni: e.tls.and_then(|t| t.sni.as_deref()).or(e.sni),
        client_cert: e.tls.and_then(|t| t.client_subject.as_deref()),
    };
    // Serializing plain fields cannot fail; an empty line would only be skipped.
    let mut s = serde_json::to_string(&line).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines() {
        let e = Entry {
            client: "127.0.0.1:5000".parse().unwrap(),
            listener: "web",
            pool: "api",
            server: Some("127.0.0.2:8000"),
            method: Some("GET"),
            path: Some("/x"),
            status: Some(200),
            bytes_in: 0,
            bytes_out: 12,
            connect: Some(Duration::from_micros(310)),
            total: Some(Duration::from_micros(1204)),
            end: End::Ok,
            tls: None,
            grpc_status: None,
            sni: None,
        };
        let t = format_text(&e);
        assert!(t.contains("client=127.0.0.1:5000 listener=web pool=api server=127.0.0.2:8000 method=GET path=\"/x\" status=200 bytes_in=0 bytes_out=12 connect_ms=0.31 total_ms=1.204 end=ok"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&format_json(&e)).unwrap();
        assert_eq!(j["status"], 200);
        assert_eq!(j["end"], "ok");
        assert_eq!(j["client"], "127.0.0.1:5000");
        assert_eq!(j["server"], "127.0.0.2:8000");
        assert_eq!(j["connect_ms"], 0.31);
        let time = j["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
        assert!(j.get("tls").is_none(), "{j}");
        // a TLS client connection adds its version, cipher, SNI and certificate
        let info = crate::tls::TlsInfo {
            version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
            sni: Some("api.example.com".into()),
            client_subject: Some("CN=alice, O=Example".into()),
            ..Default::default()
        };
        let e = Entry {
            tls: Some(&info),
            grpc_status: Some(14),
            sni: None,
            ..e
        };
        let t = format_text(&e);
        assert!(
            t.ends_with(" end=ok grpc_status=14 tls=TLSv1.3 cipher=TLS13_AES_128_GCM_SHA256 sni=api.example.com client_cert=\"CN=alice, O=Example\"\n"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&format_json(&e)).unwrap();
        assert_eq!(j["tls"], "TLSv1.3");
        assert_eq!(j["grpc_status"], 14);
        assert_eq!(j["cipher"], "TLS13_AES_128_GCM_SHA256");
        assert_eq!(j["sni"], "api.example.com");
        assert_eq!(j["client_cert"], "CN=alice, O=Example");

        // a request refused before any pool, how long it was awaited unknown
        let e = Entry {
            pool: "-",
            server: None,
            method: None,
            path: None,
            status: Some(400),
            connect: None,
            total: None,
            end: End::BadRequest,
            tls: None,
            grpc_status: None,
            sni: None,
            ..e
        };
        let t = format_text(&e);
        assert!(
            t.contains(" pool=- server=- status=400 bytes_in=0 bytes_out=12 connect_ms=- total_ms=- end=bad_request\n"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&format_json(&e)).unwrap();
        assert!(j["total_ms"].is_null(), "{j}");
        assert_eq!(j["end"], "bad_request");
        // a ClientHello passed through (routed by its name), and refused
        let e = Entry {
            status: None,
            end: End::NoRoute,
            sni: Some("db.example.com"),
            ..e
        };
        let t = format_text(&e);
        assert!(t.ends_with(" end=no_route sni=db.example.com\n"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&format_json(&e)).unwrap();
        assert_eq!(j["sni"], "db.example.com");
        assert!(j.get("tls").is_none(), "{j}");
    }
}
