//! The server name of a TLS ClientHello, read from peeked bytes without
//! terminating TLS (SNI passthrough routing, HAProxy's `req.ssl_sni`). The
//! parser is total: any input gives an answer, never a panic.

use std::time::Duration;
use tokio::net::TcpStream;

/// The most ClientHello bytes looked at: one full TLS record and its header.
pub const MAX_PEEK: usize = 16 * 1024 + 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    /// The ClientHello is not complete yet.
    Incomplete,
    /// Not a TLS ClientHello.
    NotTls,
    /// A ClientHello, and the server name it asks for (lower case), if any.
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

/// Reads the SNI of the ClientHello at the start of `buf` (TLS records as they
/// came from the client). The handshake message may span several records.
pub fn parse(buf: &[u8]) -> Peeked {
    match buf {
        [] => return Peeked::Incomplete,
        [t, ..] if *t != 0x16 => return Peeked::NotTls,
        [_, v, ..] if *v != 0x03 => return Peeked::NotTls,
        _ => {}
    }
    // Gather the handshake bytes from the records there are.
    let mut hs = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            break;
        }
        if rest[0] != 0x16 || rest[1] != 0x03 {
            return Peeked::NotTls;
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if len == 0 || len > 16 * 1024 + 256 {
            return Peeked::NotTls;
        }
        if rest.len() < 5 + len {
            hs.extend_from_slice(&rest[5..]);
            break;
        }
        hs.extend_from_slice(&rest[5..5 + len]);
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
        return Peeked::NotTls;
    }
    let Some(body) = r.take(len) else {
        // Longer than what can be peeked: not a ClientHello we can read.
        return if len + 4 > MAX_PEEK {
            Peeked::NotTls
        } else {
            Peeked::Incomplete
        };
    };
    match hello_sni(body) {
        Some(sni) => Peeked::Hello(sni),
        None => Peeked::NotTls,
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
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return None;
                }
                return Some(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("the client closed the connection before its ClientHello")]
    Closed,
    #[error("not a TLS ClientHello")]
    NotTls,
}

/// Waits (within `timeout`) for the client's ClientHello, without consuming it,
/// and returns the name it asks for.
pub async fn peek(stream: &TcpStream, timeout: Duration) -> Result<Option<String>, PeekError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_PEEK];
    let mut backoff = Duration::from_millis(1);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| PeekError::Timeout(timeout))?
            .map_err(|_| PeekError::Closed)?;
        if n == 0 {
            return Err(PeekError::Closed);
        }
        match parse(&buf[..n]) {
            Peeked::Hello(sni) => return Ok(sni),
            Peeked::NotTls => return Err(PeekError::NotTls),
            Peeked::Incomplete if n == buf.len() => return Err(PeekError::NotTls),
            Peeked::Incomplete => {
                // the rest is on its way: peek again shortly (peek does not wait
                // for more than what is there)
                if tokio::time::Instant::now() + backoff > deadline {
                    return Err(PeekError::Timeout(timeout));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
        }
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
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Peeked::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n"), Peeked::NotTls);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0, 0]), Peeked::NotTls);
        // a handshake that is not a ClientHello
        assert_eq!(parse(&[0x16, 0x03, 0x03, 0, 4, 2, 0, 0, 0]), Peeked::NotTls);
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
            let _ = parse(&m);
            let junk: Vec<u8> = (0..rng.usize(..600)).map(|_| rng.u8(..)).collect();
            let _ = parse(&junk);
        }
    }
}
