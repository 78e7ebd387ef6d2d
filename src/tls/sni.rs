//! The server name of a TLS ClientHello, read from the client's first bytes without
//! terminating TLS (SNI passthrough routing, HAProxy's `req.ssl_sni`). The
//! parser is total: any input gives an answer, never a panic.
//!
//! The backend behind a passthrough route reads the same hello with its own
//! TLS stack, so a hello whose server name stacks could read differently (two
//! `server_name` extensions, two host names, a host name after an entry of
//! another type) is refused, not routed by one reading of it. rustls is the
//! reference: fuzz/fuzz_targets/tls_sni.rs checks that where rustls reads a
//! hello, this reads the same name, and that it routes by no name in a
//! `server_name` extension rustls refuses.

use crate::relaybuf::Filled;
use std::time::Duration;
use tokio::net::TcpStream;

/// The most ClientHello bytes looked at: one full TLS record and its header
/// (a hello longer than about 16 KiB is refused).
pub const MAX_PEEK: usize = 16 * 1024 + 5;
// (the hello is read into a relay buffer)
const _: () = assert!(MAX_PEEK <= crate::relaybuf::RELAY_BUF);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    /// The ClientHello is not complete yet.
    Incomplete,
    /// Not TLS: the first byte is not a TLS record's content type (a client
    /// of another protocol, or SSL 2's hello, which carries no server name).
    /// Routed as a hello without a name, as nginx's `ssl_preread` (an empty
    /// `$ssl_preread_server_name`) and HAProxy's `req.ssl_sni` (not found)
    /// pass it on.
    NotTls,
    /// A TLS record that is not a ClientHello to route by: another record or
    /// handshake message first (a TLS stack may skip an alert and read a
    /// hello after it), a malformed hello, one whose server name stacks
    /// could read differently, or one longer than [`MAX_PEEK`]; or a PROXY
    /// header (see [`PROXY_SIGNATURES`]). Refused, not routed by one reading
    /// of it.
    Refused,
    /// A ClientHello, and the server name it asks for (lower case, without a
    /// trailing dot), if it has a `server_name` extension.
    Hello(Option<String>),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The PROXY protocol's signatures (v1, v2). A client that sends one to a
/// listener that does not read the header is refused, not routed as not TLS:
/// a server behind the nameless route that takes the header where one may
/// come would take it off and read a ClientHello behind it. (proxy_protocol's
/// own, which a test there holds these equal to: that module uses `tls`, so
/// `tls` cannot use it.)
pub(crate) const PROXY_SIGNATURES: [&[u8]; 2] = [b"PROXY ", b"\r\n\r\n\0\r\nQUIT\n"];

/// Reads the SNI of the ClientHello at the start of `buf` (TLS records as they
/// came from the client). The handshake message may span several records.
pub fn parse(buf: &[u8]) -> Peeked {
    for sig in PROXY_SIGNATURES {
        let n = buf.len().min(sig.len());
        if n > 0 && buf[..n] == sig[..n] {
            return if n == sig.len() {
                Peeked::Refused
            } else {
                Peeked::Incomplete
            };
        }
    }
    match buf {
        [] => return Peeked::Incomplete,
        // not a TLS record's content type (20 to 24): no TLS stack reads a
        // ClientHello from it (SSL 2's hello, 0x80, has no server name)
        [t, ..] if !(0x14..=0x18).contains(t) => return Peeked::NotTls,
        // A record, but not a hello's: refused, not routed as not TLS. TLS
        // stacks skip a warning alert ahead of the hello (rustls, OpenSSL
        // and Go) and read the name after it.
        [t, ..] if *t != 0x16 => return Peeked::Refused,
        // (rustls and Go read some records whose version is not 3.x)
        [_, v, ..] if *v != 0x03 => return Peeked::Refused,
        _ => {}
    }
    // Gather the handshake bytes from the records there are (borrowed while
    // they are in one record, as a hello usually is: no allocation).
    let mut hs: std::borrow::Cow<'_, [u8]> = std::borrow::Cow::Borrowed(&[]);
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            break;
        }
        if rest[0] != 0x16 || rest[1] != 0x03 {
            return Peeked::Refused;
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        // RFC 8446 5.1: a record of plaintext is at most 2^14 bytes
        if len == 0 || len > 16 * 1024 {
            return Peeked::Refused;
        }
        if rest.len() < 5 + len {
            // only whole records are read, as a TLS stack reads them: a hello
            // that ends inside a record that has not all come yet waits for it
            break;
        }
        let record = &rest[5..5 + len];
        if hs.is_empty() {
            hs = std::borrow::Cow::Borrowed(record);
        } else {
            hs.to_mut().extend_from_slice(record);
        }
        rest = &rest[5 + len..];
        if hs.len() >= 4 {
            let need = 4 + ((hs[1] as usize) << 16 | (hs[2] as usize) << 8 | hs[3] as usize);
            if hs.len() >= need {
                break;
            }
        }
    }
    let mut r = Reader(&hs);
    let (Some(kind), Some(len)) = (r.u8(), r.u24()) else {
        return Peeked::Incomplete;
    };
    if kind != 1 {
        return Peeked::Refused;
    }
    let Some(body) = r.take(len) else {
        // Longer than what is read: not a ClientHello we can read.
        return if len + 4 > MAX_PEEK {
            Peeked::Refused
        } else {
            Peeked::Incomplete
        };
    };
    match hello_sni(body) {
        Some(sni) => Peeked::Hello(sni),
        None => Peeked::Refused,
    }
}

/// Some(None): a valid ClientHello without SNI. None: malformed.
fn hello_sni(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.0.is_empty() {
        return Some(None); // no extensions
    }
    let mut exts = Reader(r.vec16()?);
    let mut sni = None;
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        // one server_name extension (RFC 8446 4.2), its list and nothing after
        let mut data = Reader(data);
        let list = data.vec16()?;
        if sni.is_some() || !data.0.is_empty() {
            return None;
        }
        sni = Some(server_name(list)?);
    }
    Some(sni)
}

/// The name in a `server_name` extension's list, read as rustls reads it:
/// - The list names one host name (RFC 6066 3), first.
/// - An entry of another type ends the list: its length has no defined
///   encoding, so what follows it cannot be read.
/// - A host name that is not a valid DNS name or IP address is refused.
/// - An IP address (RFC 6066 forbids it; some clients send one) is kept as
///   sent, as HAProxy's `req.ssl_sni` and OpenSSL keep it (rustls reads no
///   name there).
///
/// None: malformed.
fn server_name(list: &[u8]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    let mut list = Reader(list);
    let mut found = None;
    while !list.0.is_empty() {
        if list.u8()? != 0 {
            break;
        }
        let name = list.vec16()?;
        if name.is_empty() || found.is_some() {
            return None;
        }
        use rustls_pki_types::ServerName;
        found = Some(match ServerName::try_from(name).ok()? {
            // (as text already, without its trailing dot: not checked as
            // UTF-8 a second time, about 125 instructions a connection)
            ServerName::DnsName(d) => d.as_ref().to_ascii_lowercase(),
            // (an IP address has no trailing dot)
            ServerName::IpAddress(_) => std::str::from_utf8(name).ok()?.to_ascii_lowercase(),
            _ => return None,
        });
    }
    found
}

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("the client closed the connection before its ClientHello")]
    Closed,
    #[error(
        "no ClientHello to route by: a TLS record that is not one (malformed, ambiguous, over 16 KiB), or a PROXY header this listener does not read"
    )]
    Refused,
}

/// A client's ClientHello, read to route by, and what its server name is; or
/// the first bytes of a client that does not speak TLS, routed as a hello
/// without a name (see [`Peeked::NotTls`]).
pub struct Hello {
    /// The server name it asks for (see [`Peeked::Hello`]).
    pub name: Option<String>,
    /// The bytes read from the client (the ClientHello, and whatever came with
    /// it): the relay sends them on to the server first.
    pub read: Filled,
}

/// What the client has sent already, read from its socket before the socket
/// is registered with the reactor (as an HTTP connection's first request is):
/// a ClientHello usually comes right behind the TCP handshake, and one that is
/// there costs no wait for readiness, no timer and no wake-up. None: nothing
/// has come yet.
pub fn read_now(stream: &std::net::TcpStream) -> Result<Option<Filled>, HelloError> {
    use std::io::Read;
    let mut got = Filled::empty();
    match (&*stream).read(got.room(MAX_PEEK)) {
        Ok(0) => Err(HelloError::Closed),
        Ok(n) => {
            got.grew(n);
            Ok(Some(got))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(_) => Err(HelloError::Closed),
    }
}

/// Reads (within `timeout`) the client's ClientHello and the name it asks for,
/// after what [`read_now`] got, if anything.
/// The bytes are read, not peeked, into a relay buffer that the relay then
/// starts from, as HAProxy keeps them in its buffer: the kernel hands them over
/// once, and a hello that comes in several segments (a post-quantum key share
/// makes one longer than a 1,500-byte packet) is read as each arrives, not
/// peeked again on a timer.
///
/// `timer` is the session's (the relay goes on with it: `clock::by`).
pub async fn read_hello_by(
    stream: &mut TcpStream,
    timeout: Duration,
    got: Option<Filled>,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<Hello, HelloError> {
    // a hello that came whole before the socket was registered is routed
    // with no timer
    let got = match got {
        Some(read) => match judge(read)? {
            Judged::Hello(hello) => return Ok(hello),
            Judged::More(read) => Some(read),
        },
        None => None,
    };
    let at = tokio::time::Instant::now() + timeout;
    crate::clock::by(read_rest(stream, got), timer, at)
        .await
        .unwrap_or_else(|_| Err(HelloError::Timeout(timeout)))
}

/// [`read_hello_by`] with a timer of its own.
#[cfg(test)]
pub async fn read_hello(
    stream: &mut TcpStream,
    timeout: Duration,
    got: Option<Filled>,
) -> Result<Hello, HelloError> {
    let timer = crate::clock::timer();
    tokio::pin!(timer);
    read_hello_by(stream, timeout, got, timer).await
}

/// What was read so far: a whole hello, or part of one with more to come.
enum Judged {
    Hello(Hello),
    /// (shorter than [`MAX_PEEK`]: there is room to read more)
    More(Filled),
}

/// A hello (or what is not TLS, as one without a name), part of one, or an
/// error: a TLS record that is not a hello to route by, or what fills
/// [`MAX_PEEK`] without being a whole one.
fn judge(read: Filled) -> Result<Judged, HelloError> {
    match parse(read.bytes()) {
        Peeked::Hello(name) => Ok(Judged::Hello(Hello { name, read })),
        Peeked::NotTls => Ok(Judged::Hello(Hello { name: None, read })),
        Peeked::Refused => Err(HelloError::Refused),
        Peeked::Incomplete if read.len() >= MAX_PEEK => Err(HelloError::Refused),
        Peeked::Incomplete => Ok(Judged::More(read)),
    }
}

/// [`read_hello`]'s reads, under its one timer.
async fn read_rest(stream: &mut TcpStream, got: Option<Filled>) -> Result<Hello, HelloError> {
    use tokio::io::AsyncReadExt;
    let mut read = match got {
        Some(got) => got,
        None => {
            // a buffer only once the client sent something (one that stays
            // silent holds none), and a relay buffer: no 16 KiB zeroed for
            // each connection
            stream.readable().await.map_err(|_| HelloError::Closed)?;
            Filled::empty()
        }
    };
    loop {
        // Read through tokio's `AsyncRead`, not `try_read`: a read that fills
        // less than it was given has drained the socket, and it clears the
        // readiness, so the relay's first read of the client waits for more
        // instead of asking the kernel for nothing (one system call a
        // connection).
        match stream.read(read.room(MAX_PEEK)).await {
            Ok(0) | Err(_) => return Err(HelloError::Closed),
            Ok(n) => read.grew(n),
        }
        read = match judge(read)? {
            Judged::Hello(hello) => return Ok(hello),
            Judged::More(read) => read,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello made by rustls itself, for `name` (None: no SNI).
    fn hello(name: Option<&str>) -> Vec<u8> {
        let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut cfg = cfg;
        cfg.enable_sni = name.is_some();
        let sn = rustls_pki_types::ServerName::try_from(name.unwrap_or("x.invalid").to_string())
            .unwrap();
        let mut c = rustls::ClientConnection::new(std::sync::Arc::new(cfg), sn).unwrap();
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn reads_the_name_of_a_real_client_hello() {
        let h = hello(Some("DB.Example.com"));
        assert_eq!(parse(&h), Peeked::Hello(Some("db.example.com".into())));
        assert_eq!(parse(&hello(None)), Peeked::Hello(None));
        // every prefix is incomplete, never a wrong answer
        for cut in 1..h.len() {
            assert_eq!(parse(&h[..cut]), Peeked::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_split_into_two_records_is_read() {
        let h = hello(Some("a.example.com"));
        let body = &h[5..];
        let (x, y) = body.split_at(40);
        let mut two = Vec::new();
        for part in [x, y] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(parse(&two), Peeked::Hello(Some("a.example.com".into())));
    }

    #[test]
    fn not_tls_and_garbage() {
        // not TLS, told by the first byte (routed as no name)
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Peeked::NotTls);
        assert_eq!(parse(b"G"), Peeked::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n"), Peeked::NotTls);
        // SSL 2's hello, which has no extensions (so no server name)
        assert_eq!(parse(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Peeked::NotTls);
        assert_eq!(parse(&[0x13]), Peeked::NotTls);
        assert_eq!(parse(&[0x19]), Peeked::NotTls);
        assert_eq!(parse(&[0x16]), Peeked::Incomplete);
        // a PROXY header the listener does not read: refused once its
        // signature is whole (a server could take it off and read a hello)
        let v1 = [
            &b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"[..],
            &hello(Some("a.example")),
        ]
        .concat();
        let v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c";
        for sent in [&v1[..], &v2[..]] {
            for cut in 1..sent.len() {
                let want = if cut < 6 || (sent[0] == b'\r' && cut < 12) {
                    Peeked::Incomplete
                } else {
                    Peeked::Refused
                };
                assert_eq!(parse(&sent[..cut]), want, "{cut}");
            }
        }
        assert_eq!(parse(b"POST / HTTP/1.1\r\n"), Peeked::NotTls);
        assert_eq!(parse(b"\r\nGET / HTTP/1.1\r\n"), Peeked::NotTls);
        // a TLS record that is no hello to route by (refused, from the byte
        // that tells): a warning alert ahead of a hello (which TLS stacks
        // skip, reading the name after it), a record of another version
        // (rustls reads SSL 2's and DTLS's, Go any below 0x1000), and
        // another content type
        let alert_first = [
            &[0x15u8, 3, 3, 0, 2, 1, 0x5a][..],
            &hello(Some("a.example")),
        ]
        .concat();
        assert_eq!(parse(&alert_first), Peeked::Refused);
        assert_eq!(parse(&alert_first[..1]), Peeked::Refused);
        let mut v2 = hello(Some("a.example"));
        v2[1..3].copy_from_slice(&[0x00, 0x02]);
        assert_eq!(parse(&v2), Peeked::Refused);
        assert_eq!(parse(&[0x16, 0x02]), Peeked::Refused);
        for t in [0x14, 0x17, 0x18] {
            assert_eq!(parse(&[t, 3, 3, 0, 1, 0]), Peeked::Refused);
        }
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0, 0]), Peeked::Refused);
        // a handshake that is not a ClientHello
        assert_eq!(
            parse(&[0x16, 0x03, 0x03, 0, 4, 2, 0, 0, 0]),
            Peeked::Refused
        );
        // random bytes, and random mutations of a real hello: never a panic
        let h = hello(Some("x.example.com"));
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut m = h.clone();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..m.len());
                m[i] = rng.u8(..);
            }
            m.truncate(rng.usize(..=m.len()));
            let junk: Vec<u8> = (0..rng.usize(..600)).map(|_| rng.u8(..)).collect();
            for bytes in [&m, &junk] {
                // what is routed as not TLS never starts a TLS record, and
                // no TLS stack reads a hello from it
                if parse(bytes) == Peeked::NotTls {
                    assert!(!(0x14..=0x18).contains(&bytes[0]), "{bytes:?}");
                    assert_eq!(rustls_reads(bytes), None, "{bytes:?}");
                }
            }
        }
    }

    /// A minimal ClientHello whose server_name extension holds `list` (the
    /// entries as they go on the wire), in one record.
    fn hello_with_names(list: &[u8]) -> Vec<u8> {
        let mut sn = (list.len() as u16).to_be_bytes().to_vec();
        sn.extend_from_slice(list);
        hello_with_exts(&[(0, sn)])
    }

    /// A minimal ClientHello with the extensions `exts` (type, data) before
    /// signature_algorithms and supported_groups, in one record.
    fn hello_with_exts(first: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // no session id
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2f]); // cipher suites
        body.extend_from_slice(&[1, 0]); // null compression
        let mut exts = Vec::new();
        let rest = [
            (0x000d, vec![0, 2, 0x08, 0x04]), // signature_algorithms
            (0x000a, vec![0, 2, 0x00, 0x1d]), // supported_groups
        ];
        for (kind, data) in first.iter().chain(&rest) {
            exts.extend_from_slice(&kind.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(data);
        }
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn host_name(name: &[u8]) -> Vec<u8> {
        let mut e = vec![0];
        e.extend_from_slice(&(name.len() as u16).to_be_bytes());
        e.extend_from_slice(name);
        e
    }

    /// What rustls, which terminates rampart's TLS, reads: Some(name) where it
    /// accepts the hello, None where it refuses it or wants more.
    fn rustls_reads(mut buf: &[u8]) -> Option<Option<String>> {
        let mut acceptor = rustls::server::Acceptor::default();
        while !buf.is_empty() {
            acceptor.read_tls(&mut buf).ok()?;
            if let Some(a) = acceptor.accept().ok()? {
                return Some(a.client_hello().server_name().map(str::to_ascii_lowercase));
            }
        }
        None
    }

    #[test]
    fn the_name_is_the_one_rustls_reads() {
        let cases: [(&str, Vec<u8>, Peeked); 5] = [
            (
                "one host name",
                host_name(b"A.Example.com."),
                Peeked::Hello(Some("a.example.com".into())),
            ),
            // an entry of an unknown type cannot be skipped: rustls stops there
            // and finds no host name (rampart used to route by b.example)
            (
                "a host name after an entry of another type",
                [&[1u8, 0, 1, b'x'][..], &host_name(b"b.example")].concat(),
                Peeked::Refused,
            ),
            // used to be routed as "a", every trailing dot trimmed
            ("not a DNS name", host_name(b"a.."), Peeked::Refused),
            (
                "a name with a space",
                host_name(b"a b.example"),
                Peeked::Refused,
            ),
            (
                "two host names (RFC 6066 3)",
                [host_name(b"a.example"), host_name(b"b.example")].concat(),
                Peeked::Refused,
            ),
        ];
        for (what, list, want) in cases {
            let h = hello_with_names(&list);
            assert_eq!(parse(&h), want, "{what}");
            match (&want, rustls_reads(&h)) {
                (Peeked::Hello(ours), Some(theirs)) => {
                    assert_eq!(
                        ours,
                        &theirs.map(|n| n.trim_end_matches('.').to_string()),
                        "{what}"
                    )
                }
                (Peeked::Refused, None) => {}
                (_, theirs) => panic!("{what}: rustls reads {theirs:?}, rampart {want:?}"),
            }
        }
        // an empty list is malformed for both
        assert_eq!(parse(&hello_with_names(&[])), Peeked::Refused);
        assert_eq!(rustls_reads(&hello_with_names(&[])), None);
        // so are two server_name extensions (rampart used to read the first)
        // and bytes after the list in one
        let a = [&[0u8, 12][..], &host_name(b"a.example")].concat();
        let b = [&[0u8, 12][..], &host_name(b"b.example")].concat();
        for exts in [
            vec![(0, a.clone()), (0, b)],
            vec![(0, [&a[..], b"x"].concat())],
        ] {
            let h = hello_with_exts(&exts);
            assert_eq!(parse(&h), Peeked::Refused, "{exts:?}");
            assert_eq!(rustls_reads(&h), None, "{exts:?}");
        }
        // an IP address is kept as sent (rustls reads no name there)
        let h = hello_with_names(&host_name(b"192.0.2.1"));
        assert_eq!(parse(&h), Peeked::Hello(Some("192.0.2.1".into())));
        assert_eq!(rustls_reads(&h), Some(None));
    }

    #[test]
    fn a_hello_is_read_only_from_whole_records() {
        // the hello ends inside its record, and the record's rest has not come
        let mut h = hello_with_names(&host_name(b"a.example"));
        let grown = u16::from_be_bytes([h[3], h[4]]) + 10;
        h[3..5].copy_from_slice(&grown.to_be_bytes());
        assert_eq!(parse(&h), Peeked::Incomplete);
        assert_eq!(rustls_reads(&h), None);
        h.extend_from_slice(&[0; 10]);
        assert_eq!(parse(&h), Peeked::Hello(Some("a.example".into())));
        // a record longer than TLS allows (2^14 bytes)
        assert_eq!(parse(&[0x16, 3, 1, 0x40, 0x01]), Peeked::Refused);
    }

    /// Bytes waiting in `s`'s receive queue, unread.
    fn queued(fd: std::os::fd::RawFd) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int to the pointer, which is to `n`
        let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        n as usize
    }

    async fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nodelay(true).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (c, TcpStream::from_std(s).unwrap())
    }

    /// A hello that comes in pieces is read as each piece comes (each taken
    /// from the socket before the next is sent), and what it gives is every
    /// byte the client sent, in order: the hello and what followed it.
    #[tokio::test]
    async fn a_hello_in_pieces_is_read_as_they_come_and_kept_whole() {
        use std::future::Future;
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::task::Poll;
        let (mut c, mut s) = pair().await;
        let mut sent = hello(Some("db.example.com"));
        sent.extend_from_slice(b"what came with it");
        // (the read borrows the socket: its queue is asked by its descriptor)
        let fd = s.as_raw_fd();
        let mut read = Box::pin(read_hello(&mut s, Duration::from_secs(30), None));
        for piece in [&sent[..3], &sent[3..100]] {
            c.write_all(piece).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            // the piece has come; then polled until it is taken from the socket
            while queued(fd) < piece.len() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the piece did not come"
                );
                tokio::task::yield_now().await;
            }
            while queued(fd) > 0 {
                let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
                assert!(polled.is_pending(), "done before the hello was whole");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the piece was not read"
                );
                tokio::task::yield_now().await;
            }
        }
        c.write_all(&sent[100..]).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name.as_deref(), Some("db.example.com"));
        assert_eq!(got.read.bytes(), &sent[..]);
        // The last read drained the socket and cleared its readiness, so the
        // relay's first read of the client waits for more, not asking the
        // kernel for nothing (with `try_read` the readiness stayed).
        let ready = std::future::poll_fn(|cx| Poll::Ready(s.poll_read_ready(cx))).await;
        assert!(ready.is_pending(), "a drained socket was left ready");
        c.write_all(b"more").unwrap();
        tokio::time::timeout(Duration::from_secs(10), s.readable())
            .await
            .expect("more came and the socket was not readable")
            .unwrap();
    }

    /// What has come is read before the socket is registered: nothing yet,
    /// a whole hello (then routed without waiting), or a piece of one that
    /// `read_hello` goes on from, whether the rest comes after the socket is
    /// registered or before (then its readiness is there at registration).
    #[tokio::test]
    async fn what_has_come_is_read_before_registering() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let h = hello(Some("db.example.com"));
        for (cut, rest_first) in [(h.len(), false), (50, false), (50, true)] {
            let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            c.set_nodelay(true).unwrap();
            let (s, _) = l.accept().unwrap();
            s.set_nonblocking(true).unwrap();
            assert!(matches!(read_now(&s), Ok(None)));
            c.write_all(&h[..cut]).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let got = loop {
                if let Some(got) = read_now(&s).unwrap() {
                    break got;
                }
                assert!(std::time::Instant::now() < deadline, "nothing read");
                std::thread::yield_now();
            };
            assert_eq!(got.bytes(), &h[..cut]);
            if rest_first {
                c.write_all(&h[cut..]).unwrap();
                while queued(s.as_raw_fd()) < h.len() - cut {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the rest did not come"
                    );
                    std::thread::yield_now();
                }
            }
            let mut s = TcpStream::from_std(s).unwrap();
            if !rest_first {
                c.write_all(&h[cut..]).unwrap();
            }
            let r = read_hello(&mut s, Duration::from_secs(10), Some(got))
                .await
                .unwrap();
            assert_eq!(
                (r.name.as_deref(), r.read.bytes()),
                (Some("db.example.com"), &h[..])
            );
        }
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        drop(c);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match read_now(&s) {
                Ok(None) => assert!(std::time::Instant::now() < deadline, "no EOF"),
                r => break assert!(matches!(r, Err(HelloError::Closed)), "{:?}", r.err()),
            }
            std::thread::yield_now();
        }
    }

    /// What is not a hello, a client gone before its hello, and a silent one.
    #[tokio::test]
    async fn no_hello_is_an_error_that_says_why() {
        use std::io::Write;
        let (mut c, mut s) = pair().await;
        // what is not TLS is no error: routed as a hello without a name, with
        // what was read to send on
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let r = read_hello(&mut s, Duration::from_secs(30), None).await;
        let r = r.expect("not TLS is routed as no name");
        assert_eq!(
            (r.name, r.read.bytes()),
            (None, &b"GET / HTTP/1.1\r\n\r\n"[..])
        );
        // a TLS record that is not a hello is refused
        let (mut c, mut s) = pair().await;
        c.write_all(&[0x16, 0x03, 0x03, 0, 4, 2, 0, 0, 0]).unwrap();
        let r = read_hello(&mut s, Duration::from_secs(30), None).await;
        assert!(matches!(r, Err(HelloError::Refused)), "{:?}", r.err());
        let (mut c, mut s) = pair().await;
        c.write_all(&hello(Some("a.example"))[..20]).unwrap();
        drop(c);
        let r = read_hello(&mut s, Duration::from_secs(30), None).await;
        assert!(matches!(r, Err(HelloError::Closed)), "{:?}", r.err());
        let (_c, mut s) = pair().await;
        let r = read_hello(&mut s, Duration::from_millis(50), None).await;
        assert!(matches!(r, Err(HelloError::Timeout(_))), "{:?}", r.err());
        // part of a hello read before registering, then silence: the rest is
        // waited for under the same timeout
        let (_c, mut s) = pair().await;
        let got = Filled::copied(&hello(Some("a.example"))[..50]);
        let r = read_hello(&mut s, Duration::from_millis(50), Some(got)).await;
        assert!(matches!(r, Err(HelloError::Timeout(_))), "{:?}", r.err());
        // a hello in one-byte records: MAX_PEEK bytes without a whole one
        let (mut c, mut s) = pair().await;
        let mut sent = vec![0x16, 3, 1, 0, 4, 1, 0, 0x3e, 0x80];
        while sent.len() <= MAX_PEEK {
            sent.extend_from_slice(&[0x16, 3, 1, 0, 1, 0]);
        }
        assert_eq!(parse(&sent[..MAX_PEEK]), Peeked::Incomplete);
        c.write_all(&sent).unwrap();
        let r = read_hello(&mut s, Duration::from_secs(30), None).await;
        assert!(matches!(r, Err(HelloError::Refused)), "{:?}", r.err());
    }
}
