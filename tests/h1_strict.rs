//! HTTP/1 strictness and request smuggling: raw bytes through both HTTP paths
//! (the fast path, and hyper's, taken here because the pool sends the PROXY
//! protocol), asserting what the client got and exactly what the backend
//! received. Every ambiguous request gets 400 (or 501 for a transfer coding
//! rampart does not pass) and its connection closes, and the backend never sees
//! a request it could split differently.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request as the backend read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// the head's raw bytes (line ends as sent)
    raw_head: Vec<u8>,
}

impl Seen {
    fn header(&self, n: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Record {
    requests: Vec<Seen>,
    bytes: usize,
    errors: Vec<String>,
}

/// A backend that parses what it gets strictly (CRLF, Content-Length or
/// chunked), records it, and answers 200 to each request.
async fn recorder() -> (SocketAddr, Arc<Mutex<Record>>) {
    let addr = free_addr("127.0.0.1");
    let l = listen(addr).await;
    let rec: Arc<Mutex<Record>> = Arc::default();
    let r = Arc::clone(&rec);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                if let Err(e) = serve(s, &r).await {
                    r.lock().unwrap().errors.push(e);
                }
            });
        }
    });
    (addr, rec)
}

async fn serve(mut s: tokio::net::TcpStream, rec: &Mutex<Record>) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        // a head
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            rec.lock().unwrap().bytes += n;
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut head: Vec<u8> = buf.drain(..end).collect();
        if first && head.starts_with(b"PROXY ") {
            let nl = find(&head, b"\r\n").unwrap() + 2;
            head.drain(..nl);
            first = false;
            if find(&head, b"\r\n\r\n").is_none() {
                // the PROXY line was all: put the rest back
                let mut rest = head;
                rest.extend_from_slice(&buf);
                buf = rest;
                continue;
            }
        }
        first = false;
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let rl: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
        if rl.len() != 3 {
            return Err(format!("request line {:?}", rl));
        }
        let mut headers = Vec::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':').ok_or(format!("header {l:?}"))?;
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut seen = Seen {
            method: rl[0].into(),
            target: rl[1].into(),
            headers,
            body: Vec::new(),
            raw_head: head.clone(),
        };
        let chunked = seen
            .header("transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"));
        let cl: Option<usize> = seen
            .header("content-length")
            .first()
            .and_then(|v| v.parse().ok());
        if chunked {
            // raw chunked bytes up to and including the last chunk and trailers
            loop {
                if let Some(i) = find(&buf, b"0\r\n\r\n") {
                    if i == 0 || buf[..i].ends_with(b"\r\n") {
                        seen.body = buf.drain(..i + 5).collect();
                        break;
                    }
                }
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("chunked body cut short".into());
                }
                rec.lock().unwrap().bytes += n;
                buf.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = cl {
            while buf.len() < n {
                let mut chunk = [0u8; 8192];
                let k = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if k == 0 {
                    return Err("body cut short".into());
                }
                rec.lock().unwrap().bytes += k;
                buf.extend_from_slice(&chunk[..k]);
            }
            seen.body = buf.drain(..n).collect();
        }
        rec.lock().unwrap().requests.push(seen);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .map_err(|e| e.to_string())?;
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// What a client got: the statuses of the responses it read, and whether the
/// connection was closed after them.
#[derive(Debug)]
struct Got {
    statuses: Vec<u16>,
    closed: bool,
}

/// The final answers' statuses in what a client read (a 100 Continue is not
/// one).
fn final_statuses(all: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(all);
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text[i..].split(' ').nth(1)?.get(..3)?.parse().ok())
        .filter(|s: &u16| *s >= 200)
        .collect()
}

/// `send_expecting` one answer.
async fn send(addr: SocketAddr, bytes: &[u8]) -> Got {
    send_expecting(addr, bytes, 1).await
}

/// Sends `bytes` on a new connection and reads until the peer closes or,
/// once `want` final answers have come, until nothing more comes for 700 ms
/// (kept open). Until they have come, silence is a slow server, not an end:
/// it is waited for, up to 4 s (below HAProxy's 5 s client timeout here).
async fn send_expecting(addr: SocketAddr, bytes: &[u8], want: usize) -> Got {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    loop {
        let until = if final_statuses(&all).len() >= want {
            tokio::time::Instant::now() + Duration::from_millis(700)
        } else {
            deadline
        };
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(until, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    Got {
        statuses: final_statuses(&all),
        closed,
    }
}

enum Want {
    /// this status, the connection closed, and nothing reached the backend
    Refused(u16),
    /// 200, and the backend's one request passes the check
    Forwarded(fn(&Seen) -> Result<(), String>),
}

struct Case {
    name: &'static str,
    bytes: &'static [u8],
    want: Want,
}

fn cases() -> Vec<Case> {
    use Want::*;
    fn ok(_: &Seen) -> Result<(), String> {
        Ok(())
    }
    fn crlf_only(s: &Seen) -> Result<(), String> {
        let bare = s
            .raw_head
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || s.raw_head[i - 1] != b'\r'));
        if bare {
            Err("a bare LF reached the backend".into())
        } else {
            Ok(())
        }
    }
    fn chunked_hello(s: &Seen) -> Result<(), String> {
        if s.header("transfer-encoding") != ["chunked"] || !s.header("content-length").is_empty() {
            return Err(format!("framing: {:?}", s.headers));
        }
        let body = String::from_utf8_lossy(&s.body);
        if !body.contains("hello") || !body.ends_with("0\r\n\r\n") {
            return Err(format!("body {body:?}"));
        }
        Ok(())
    }
    vec![
        // ---- Host (RFC 9112 3.2)
        Case { name: "HTTP/1.1 without Host", bytes: b"GET / HTTP/1.1\r\n\r\n", want: Refused(400) },
        Case { name: "two Host fields", bytes: b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", want: Refused(400) },
        Case { name: "HTTP/1.0 without Host", bytes: b"GET / HTTP/1.0\r\n\r\n", want: Forwarded(|s| {
            if s.header("host").len() == 1 { Ok(()) } else { Err(format!("{:?}", s.headers)) }
        }) },
        Case {
            name: "absolute-form target with another Host",
            bytes: b"GET http://b.example/p HTTP/1.1\r\nHost: a.example\r\n\r\n",
            want: Forwarded(|s| {
                // RFC 9112 3.2.2: the target's authority replaces Host
                if s.header("host") == ["b.example"] && s.target == "/p" { Ok(()) } else { Err(format!("{} {:?}", s.target, s.header("host"))) }
            }),
        },
        Case {
            name: "absolute-form target with a query and no path",
            bytes: b"GET http://b.example?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n",
            // RFC 9112 3.2.1: an empty path is sent as "/"
            want: Forwarded(|s| if s.target == "/?q=1" { Ok(()) } else { Err(s.target.clone()) }),
        },
        Case {
            name: "absolute-form target with userinfo",
            bytes: b"GET http://user:pw@b.example/p HTTP/1.1\r\nHost: b.example\r\n\r\n",
            // RFC 9110 4.2.4: a recipient treats userinfo in a target as an error
            want: Refused(400),
        },
        // ---- request targets (RFC 9112 3.2): origin form, absolute form, or `*`
        // for OPTIONS; authority form is CONNECT's
        Case { name: "asterisk-form target on GET", bytes: b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        Case {
            name: "asterisk-form target on OPTIONS",
            bytes: b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            want: Forwarded(|s| if s.target == "*" { Ok(()) } else { Err(s.target.clone()) }),
        },
        Case { name: "a target without a slash", bytes: b"GET admin HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        Case { name: "a target of a query alone", bytes: b"GET ?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        Case { name: "authority-form target on GET", bytes: b"GET b.example:80 HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        // ---- Content-Length and Transfer-Encoding (RFC 9112 6.1, 6.3)
        Case {
            name: "Content-Length with Transfer-Encoding",
            bytes: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            want: Refused(400),
        },
        Case {
            name: "Content-Length with Transfer-Encoding on GET",
            bytes: b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            want: Refused(400),
        },
        Case { name: "conflicting Content-Length", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", want: Refused(400) },
        Case { name: "duplicate Content-Length", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", want: Refused(400) },
        Case { name: "Content-Length list", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", want: Refused(400) },
        Case { name: "Content-Length with a sign", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", want: Refused(400) },
        Case {
            name: "Transfer-Encoding in another case",
            bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            want: Forwarded(chunked_hello),
        },
        Case { name: "Transfer-Encoding chunked, identity", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "Transfer-Encoding with a vertical tab", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "Transfer-Encoding with a trailing comma", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "two Transfer-Encoding fields", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "a coding other than chunked", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: Refused(501) },
        Case { name: "Transfer-Encoding on HTTP/1.0", bytes: b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        // ---- chunk sizes and extensions
        Case {
            name: "chunk size with leading zeros",
            bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00005\r\nhello\r\n0\r\n\r\n",
            want: Forwarded(chunked_hello),
        },
        Case { name: "chunk size ZZZ", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "chunk size with a space before", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 1\r\nh\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "chunk size that overflows", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "chunk size with a sign", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "chunk size with 0x", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "chunk extension ended by a bare LF", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n", want: Refused(400) },
        Case { name: "chunk data not ended by CRLF", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", want: Refused(400) },
        Case { name: "a bad second chunk size", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nx\r\n0\r\n\r\n", want: Refused(400) },
        // a bare LF in the trailer section: httparse ends the trailers at an
        // empty line made of one, and the request behind it went unseen
        Case { name: "an empty trailer line of a bare LF", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        Case { name: "a trailer line ended by a bare LF", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\n\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        // ---- line ends, folding, field syntax
        Case { name: "bare LF line ends", bytes: b"GET / HTTP/1.1\nHost: a\n\n", want: Forwarded(crlf_only) },
        Case { name: "bare CR line ends", bytes: b"GET / HTTP/1.1\rHost: a\r\r\n", want: Refused(400) },
        Case { name: "obs-fold", bytes: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", want: Refused(400) },
        Case { name: "space before the colon", bytes: b"GET / HTTP/1.1\r\nHost: a\r\nX-A : a\r\n\r\n", want: Refused(400) },
        Case { name: "space before the colon of Transfer-Encoding", bytes: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello", want: Refused(400) },
        Case { name: "NUL in a value", bytes: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", want: Refused(400) },
        Case { name: "a control byte in a name", bytes: b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: a\r\n\r\n", want: Refused(400) },
        Case { name: "a control byte in a value", bytes: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x07b\r\n\r\n", want: Refused(400) },
        Case { name: "a space in the target", bytes: b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        // ---- versions
        Case { name: "HTTP/0.9", bytes: b"GET /\r\n\r\n", want: Refused(400) },
        Case { name: "HTTP/2.0 on an HTTP/1 connection", bytes: b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", want: Refused(400) },
        Case { name: "HTTP/1.0 keep-alive", bytes: b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", want: Forwarded(ok) },
        // ---- Expect: 100-continue (the body follows at once here)
        Case {
            name: "Expect: 100-continue",
            bytes: b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            // rampart answered the 100 itself and sends the body with the
            // head: the server is not asked again
            want: Forwarded(|s| {
                if s.body != b"hello" {
                    Err(format!("{:?}", s.body))
                } else if !s.header("expect").is_empty() {
                    Err(format!("Expect passed on: {:?}", s.header("expect")))
                } else {
                    Ok(())
                }
            }),
        },
        // ---- Connection naming an end-to-end field: Host stays
        Case {
            name: "Connection naming Host",
            bytes: b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
            want: Forwarded(|s| if s.header("host") == ["a"] { Ok(()) } else { Err(format!("host {:?}", s.header("host"))) }),
        },
        // ---- one connection after an error
        Case { name: "a request after a bad one", bytes: b"GET / HTTP/1.1\r\nHost : a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n", want: Refused(400) },
        // ---- Upgrade then a body (Pingora CVE-2026-2833 class): the body is a
        // body, not a second request
        Case {
            name: "Upgrade with a body",
            bytes: b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            want: Forwarded(|s| {
                if s.method == "POST" && s.target == "/up" && s.body.starts_with(b"GET /smuggled") { Ok(()) } else { Err(format!("{} {:?}", s.target, String::from_utf8_lossy(&s.body))) }
            }),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_are_refused_on_both_paths_and_never_reach_the_backend() {
    let (backend, rec) = recorder().await;
    let fast = free_addr("127.0.0.1");
    let hyper = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = format!(
        r#"[global]
threads = 1
access_log = "text"
[admin]
bind = "{admin}"
[[listener]]
name = "fast"
bind = ["{fast}"]
mode = "http"
pool = "plain"
[[listener]]
name = "hyper"
bind = ["{hyper}"]
mode = "http"
pool = "proxied"
[[pool]]
name = "plain"
retries = 0
  [[pool.server]]
  address = "{backend}"
[[pool]]
name = "proxied"
retries = 0
send_proxy = "v1"
  [[pool.server]]
  address = "{backend}"
"#
    );
    let _p = Proxy::start(&cfg, &[fast, hyper]).await;
    let mut failures = Vec::new();
    for case in cases() {
        for (path, addr) in [("fast path", fast), ("hyper", hyper)] {
            {
                let mut r = rec.lock().unwrap();
                r.requests.clear();
                r.bytes = 0;
                r.errors.clear();
            }
            let got = send(addr, case.bytes).await;
            // what reached the backend has arrived by the time the client has
            // its answer (rampart answers after the backend did)
            let r = rec.lock().unwrap();
            let verdict = match &case.want {
                Want::Refused(st) => {
                    if got.statuses.first() != Some(st) {
                        Err(format!("client got {:?}, want {st}", got.statuses))
                    } else if !got.closed {
                        Err("the connection stayed open".into())
                    } else if got.statuses.len() > 1 {
                        Err(format!(
                            "more answers after the refusal: {:?}",
                            got.statuses
                        ))
                    } else if !r.requests.is_empty() || r.bytes > 0 {
                        Err(format!(
                            "the backend received {} bytes: {:?}",
                            r.bytes,
                            r.requests
                                .iter()
                                .map(|s| String::from_utf8_lossy(&s.raw_head).into_owned())
                                .collect::<Vec<_>>()
                        ))
                    } else {
                        Ok(())
                    }
                }
                Want::Forwarded(check) => {
                    if got.statuses.first() != Some(&200) {
                        Err(format!("client got {:?}, want 200", got.statuses))
                    } else if r.requests.len() != 1 {
                        Err(format!(
                            "the backend read {} requests ({:?})",
                            r.requests.len(),
                            r.errors
                        ))
                    } else {
                        check(&r.requests[0])
                    }
                }
            };
            if let Err(e) = verdict {
                failures.push(format!("{path}: {}: {e}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A body that breaks its framing after its first bytes went on (they came
/// later than the head): the client gets 400, the connection closes, and the
/// server's request is cut off, never completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_malformed_later_is_cut_off_at_the_server() {
    let (backend, rec) = recorder().await;
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nretries = 0\n  [[pool.server]]\n  address = \"{backend}\"\n"
    );
    let _p = Proxy::start(&cfg, &[listen]).await;
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    // the first chunk reaches the server before the rest is sent
    wait_for(Duration::from_secs(5), "bytes at the server", || {
        rec.lock().unwrap().bytes > 0
    })
    .await;
    s.write_all(b"ZZ\r\nsmuggled\r\n0\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    wait_for(
        Duration::from_secs(5),
        "the server's connection cut",
        || !rec.lock().unwrap().errors.is_empty(),
    )
    .await;
    {
        let r = rec.lock().unwrap();
        assert!(r.requests.is_empty(), "the server read a complete request");
        assert!(r.errors[0].contains("cut short"), "{:?}", r.errors);
    }
    // a refusal for what the client sent, counted as such
    let v = admin_stats(admin).await;
    let e = &v["listeners"][0]["request_errors"];
    assert_eq!(e["malformed_body"], 1, "{v}");
    assert_eq!(e["body_timeout"], 0, "{v}");
}

/// Sends `bytes` and reads until the peer closes or nothing came for 700 ms:
/// for the table against HAProxy and nginx, which may answer a case in a
/// way of their own (or not at all) and pass a request on after answering,
/// so that what reached the backend is all in before the next case.
async fn send_until_quiet(addr: SocketAddr, bytes: &[u8]) -> Got {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    let mut closed = false;
    loop {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_millis(700), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    Got {
        statuses: final_statuses(&all),
        closed,
    }
}

/// What one proxy did with a case, in a few words.
async fn outcome(addr: SocketAddr, bytes: &[u8], rec: &Mutex<Record>) -> String {
    {
        let mut r = rec.lock().unwrap();
        r.requests.clear();
        r.bytes = 0;
        r.errors.clear();
    }
    let got = send_until_quiet(addr, bytes).await;
    let r = rec.lock().unwrap();
    let backend = if !r.requests.is_empty() {
        format!("{} request(s)", r.requests.len())
    } else if r.bytes > 0 {
        "cut off".to_string()
    } else {
        "nothing".to_string()
    };
    format!(
        "{}{} / backend: {backend}",
        got.statuses
            .first()
            .map_or("no answer".to_string(), |s| s.to_string()),
        if got.closed { " closed" } else { "" }
    )
}

/// Where rampart, HAProxy and nginx (from apt) differ on the same table, each
/// difference with why. A difference without a note fails: it has to be looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_against_haproxy_and_nginx() {
    let notes: &[(&str, &str)] = &[
        ("HTTP/1.1 without Host", "RFC 9112 3.2 requires 400: rampart and nginx answer it; HAProxy 2.6 passes the request on"),
        ("absolute-form target with userinfo", "RFC 9110 4.2.4: userinfo in a target is treated as an error; rampart and nginx answer 400, HAProxy 2.6 passes the request on"),
        ("absolute-form target with another Host", "RFC 9112 3.2.2: the target's authority replaces Host, which rampart and nginx do; HAProxy 2.6 refuses the mismatch"),
        ("absolute-form target with a query and no path", "RFC 9112 3.2.1: an empty path is sent as \"/\"; rampart sends \"/?q=1\" and nginx passes it on, HAProxy 2.6 answers 400"),
        ("asterisk-form target on GET", "RFC 9112 3.2.4: `*` is only for a server-wide OPTIONS; rampart and nginx answer 400, HAProxy 2.6 passes `GET *` on"),
        ("asterisk-form target on OPTIONS", "RFC 9112 3.2.4 defines `OPTIONS *`; rampart and HAProxy pass it on, nginx 1.22 answers 400"),
        ("Content-Length with Transfer-Encoding", "RFC 9112 6.1 allows refusing or processing by Transfer-Encoding then closing; rampart and nginx refuse, HAProxy processes and closes"),
        ("Content-Length with Transfer-Encoding on GET", "as above"),
        ("duplicate Content-Length", "RFC 9112 6.3 allows refusing or using one; rampart and nginx refuse, HAProxy merges them"),
        ("Content-Length list", "as above"),
        ("Transfer-Encoding chunked, identity", "all three refuse; nginx answers 501 (an unknown coding), rampart and HAProxy 400 (chunked is not last)"),
        ("Transfer-Encoding with a vertical tab", "all three refuse; nginx answers 501"),
        ("Transfer-Encoding with a trailing comma", "RFC 9110 5.6.1 lets a recipient ignore empty list elements, as HAProxy does; rampart refuses an ambiguous framing field, nginx answers 501"),
        ("a coding other than chunked", "RFC 9112 6.1: 501 for a coding a server does not understand (rampart, nginx); HAProxy answers 422"),
        ("Transfer-Encoding on HTTP/1.0", "RFC 9112 6.1: a server MUST treat it as faulty framing and close; rampart and nginx refuse, HAProxy processes it and closes"),
        ("chunk extension ended by a bare LF", "the CVE-2025-55315 class: rampart refuses, HAProxy 2.6 and nginx 1.22 accept it (a server that reads the bare LF differently could be desynchronised)"),
        ("an empty trailer line of a bare LF", "HAProxy 2.6 and nginx 1.22 take the bare LF as a line end and pass on two requests; hyper's decoder (before rampart's patch) took it as trailer bytes and its trailer parser then ended there, swallowing the second request unseen: rampart refuses"),
        ("a trailer line ended by a bare LF", "nginx passes on two requests, HAProxy 2.6 cuts the connection; rampart refuses, as above"),
        ("obs-fold", "RFC 9112 5.2 allows 400 or replacing the fold by spaces; rampart and nginx refuse, HAProxy unfolds"),
        ("NUL in a value", "RFC 9110 5.5: NUL is never valid; rampart and nginx refuse, HAProxy 2.6 passes it on"),
        ("a control byte in a value", "RFC 9110 5.5: control bytes are not field content; rampart refuses, HAProxy and nginx pass it on"),
        ("HTTP/0.9", "rampart and HAProxy refuse it; nginx serves HTTP/0.9 (a body without a status line)"),
        ("HTTP/2.0 on an HTTP/1 connection", "rampart refuses (400), nginx answers 505, HAProxy passes it on as HTTP/1.1"),
    ];
    let (backend, rec) = recorder().await;
    let ours = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"web\"\nbind = [\"{ours}\"]\nmode = \"http\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nretries = 0\n  [[pool.server]]\n  address = \"{backend}\"\n"
    );
    let _p = Proxy::start(&cfg, &[ours]).await;
    let dir = temp_dir("strict-others");
    // HAProxy
    let ha = free_addr("127.0.0.1");
    let ha_cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &ha_cfg,
        format!("global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\nfrontend f\n    bind {ha}\n    default_backend b\nbackend b\n    server s {backend}\n"),
    )
    .unwrap();
    // (both killed on drop: a failed assertion does not leave them running)
    let haproxy = haproxy(&ha_cfg);
    // nginx
    let ng = free_addr("127.0.0.1");
    let nd = dir.join("nginx");
    std::fs::create_dir_all(&nd).unwrap();
    let conf = nginx_conf(
        &nd,
        &format!("  server {{ listen {ng}; location / {{ proxy_pass http://{backend}; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"),
    );
    let nginx = nginx(&nd, &conf);
    for a in [ha, ng] {
        wait_listening(a, Duration::from_secs(10)).await;
    }
    let mut unexplained = Vec::new();
    let mut rows = Vec::new();
    for case in cases() {
        let r = outcome(ours, case.bytes, &rec).await;
        let h = outcome(ha, case.bytes, &rec).await;
        let n = outcome(ng, case.bytes, &rec).await;
        if r != h || r != n {
            let note = notes.iter().find(|(k, _)| *k == case.name).map(|(_, v)| *v);
            rows.push(format!(
                "{}\n    rampart: {r}\n    haproxy: {h}\n    nginx:   {n}\n    note: {}",
                case.name,
                note.unwrap_or("(none)")
            ));
            if note.is_none() {
                unexplained.push(case.name);
            }
        }
    }
    drop(haproxy);
    drop(nginx);
    eprintln!(
        "where rampart, HAProxy and nginx differ:\n{}",
        rows.join("\n")
    );
    assert!(
        unexplained.is_empty(),
        "differences without a note: {unexplained:?}\n{}",
        rows.join("\n")
    );
}

/// The head size limit is the fast path's (64 KiB) on a connection that went
/// to hyper's path (a chunked upload first) too: hyper's own default let
/// heads of 400 KiB through there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_served_by_hyper_keeps_the_head_size_limit() {
    let (backend, _rec) = recorder().await;
    let listen = free_addr("127.0.0.1");
    let _p = Proxy::start(&http_config(listen, "", &[(backend, 1)]), &[listen]).await;
    let big = "b".repeat(100 * 1024);
    // alone, on the fast path: 431
    let got = send(
        listen,
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(got.statuses, vec![431]);
    // after a chunked upload, which hyper serves with the rest of the connection
    let bytes = format!(
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"
    );
    let got = send_expecting(listen, bytes.as_bytes(), 2).await;
    assert_eq!(got.statuses, vec![200, 431], "{got:?}");
}
