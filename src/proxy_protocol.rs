//! The PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 (text) and 2
//! (binary), on the accepting side: the header a load balancer in front of
//! rampart sends first on each connection, naming the original client. It sits
//! between accept and the protocol dispatch, so the HTTP fast path, hyper and tcp
//! mode all see the client it names.
//!
//! The parser is pure and never panics on any input; the reader peeks (so a
//! connection without a header loses nothing), then consumes exactly the header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// A v1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 header read (addresses plus TLVs); longer ones are refused.
const V2_MAX: usize = 16 + 1024;

/// What the start of a connection holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Could still become a header: wait for more bytes.
    Incomplete,
    /// No PROXY header: the protocol's own bytes start here.
    Absent,
    /// A header of `len` bytes; `source` is the client it names and
    /// `destination` the address that client reached (None for v2 LOCAL, v1
    /// UNKNOWN and address families without one: the connection's own peer
    /// and local address then stand).
    Header {
        len: usize,
        source: Option<SocketAddr>,
        destination: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PpError {
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("a PROXY header from {0}, which is not a trusted source")]
    Untrusted(IpAddr),
    #[error("no PROXY header (required on this listener) from {0}")]
    Missing(IpAddr),
    #[error("the PROXY header did not arrive in time")]
    Timeout,
    #[error("the connection closed before its PROXY header")]
    Closed,
}

impl PpError {
    /// The names of the refusal reasons, as counted per listener
    /// (`proxy_protocol_refused` in `/stats;json`, a `reason` label in metrics),
    /// indexed by [`PpError::reason`].
    pub const REASONS: [&'static str; 5] =
        ["malformed", "untrusted", "missing", "timeout", "closed"];

    /// This refusal's index in [`PpError::REASONS`].
    pub fn reason(&self) -> usize {
        match self {
            PpError::Malformed(_) => 0,
            PpError::Untrusted(_) => 1,
            PpError::Missing(_) => 2,
            PpError::Timeout => 3,
            PpError::Closed => 4,
        }
    }
}

/// Parses the start of a connection.
pub fn parse(buf: &[u8]) -> Result<Parsed, PpError> {
    let bad = PpError::Malformed;
    if buf.len() < V2_SIG.len() && V2_SIG.starts_with(buf) && !buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    if buf.starts_with(V2_SIG) {
        return parse_v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Ok(Parsed::Absent);
    }
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(bad("v1 line longer than 107 bytes"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end]).map_err(|_| bad("v1 not ASCII"))?;
    let mut f = line.split(' ');
    let proto = f.next().ok_or(bad("v1 without protocol"))?;
    if proto == "UNKNOWN" {
        return Ok(Parsed::Header {
            len: end + 2,
            source: None,
            destination: None,
        });
    }
    let (src, dst, sport, dport) = (f.next(), f.next(), f.next(), f.next());
    if f.next().is_some() {
        return Err(bad("v1 with extra fields"));
    }
    let ip = |s: Option<&str>| -> Result<IpAddr, PpError> {
        s.ok_or(bad("v1 missing address"))?
            .parse()
            .map_err(|_| bad("v1 invalid address"))
    };
    let port = |s: Option<&str>| -> Result<u16, PpError> {
        let s = s.ok_or(bad("v1 missing port"))?;
        // no sign, no leading zero (as the specification says)
        if s.is_empty()
            || s.len() > 5
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad("v1 invalid port"));
        }
        s.parse().map_err(|_| bad("v1 invalid port"))
    };
    let (src, dst) = (ip(src)?, ip(dst)?);
    let (sport, dport) = (port(sport)?, port(dport)?);
    match (proto, src, dst) {
        ("TCP4", IpAddr::V4(_), IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_), IpAddr::V6(_)) => {
            Ok(Parsed::Header {
                len: end + 2,
                source: Some(SocketAddr::new(src, sport)),
                destination: Some(SocketAddr::new(dst, dport)),
            })
        }
        ("TCP4" | "TCP6", _, _) => Err(bad("v1 address family does not match its protocol")),
        _ => Err(bad("v1 unknown protocol")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, PpError> {
    let bad = PpError::Malformed;
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(bad("v2 with a version other than 2"));
    }
    let len = 16 + body;
    if len > V2_MAX {
        return Err(bad("v2 header too long"));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let b = &buf[16..len];
    match ver_cmd & 0x0f {
        // LOCAL: the balancer's own connection (health checks): no client
        0 => Ok(Parsed::Header {
            len,
            source: None,
            destination: None,
        }),
        1 => {
            let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
            let ends = match fam {
                // TCP over IPv4
                0x11 => {
                    if b.len() < 12 {
                        return Err(bad("v2 IPv4 addresses truncated"));
                    }
                    let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                    let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
                    Some((
                        SocketAddr::new(src.into(), port(8)),
                        SocketAddr::new(dst.into(), port(10)),
                    ))
                }
                0x21 => {
                    if b.len() < 36 {
                        return Err(bad("v2 IPv6 addresses truncated"));
                    }
                    let ip = |at: usize| {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(&b[at..at + 16]);
                        IpAddr::from(Ipv6Addr::from(o))
                    };
                    Some((
                        SocketAddr::new(ip(0), port(32)),
                        SocketAddr::new(ip(16), port(34)),
                    ))
                }
                // UNSPEC, unix sockets: no address to believe; UDP: not
                // the stream this connection is; IPv4, IPv6 and unix with
                // an UNSPEC transport (0x10, 0x20, 0x30): not a TCP
                // address either. HAProxy keeps the connection's own
                // address for all of them; their address block, whatever
                // it holds, is skipped with the rest of the declared length
                0x00 | 0x10 | 0x20 | 0x30 | 0x12 | 0x22 | 0x31 | 0x32 => None,
                _ => return Err(bad("v2 unknown address family")),
            };
            Ok(Parsed::Header {
                len,
                source: ends.map(|e| e.0),
                destination: ends.map(|e| e.1),
            })
        }
        _ => Err(bad("v2 unknown command")),
    }
}

/// Which header a pool sends (`send_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The header that tells a server behind rampart who the client is: `src` the
/// client, `dst` the address it connected to.
pub fn header(
    version: Version,
    src: SocketAddr,
    dst: SocketAddr,
    tls: Option<&crate::tls::TlsInfo>,
) -> Vec<u8> {
    let (src_ip, dst_ip) = match (src.ip().to_canonical(), dst.ip().to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (IpAddr::V4(a), IpAddr::V4(b)),
        // one of each: both as IPv6 (v4-mapped)
        (a, b) => (IpAddr::V6(to_v6(a)), IpAddr::V6(to_v6(b))),
    };
    match version {
        Version::V1 => {
            let proto = if src_ip.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {proto} {src_ip} {dst_ip} {} {}\r\n",
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut h = V2_SIG.to_vec();
            h.push(0x21); // version 2, PROXY
            let mut body = Vec::with_capacity(36);
            match (src_ip, dst_ip) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    h.push(0x11);
                    body.extend_from_slice(&a.octets());
                    body.extend_from_slice(&b.octets());
                }
                (a, b) => {
                    h.push(0x21);
                    body.extend_from_slice(&to_v6(a).octets());
                    body.extend_from_slice(&to_v6(b).octets());
                }
            }
            body.extend_from_slice(&src.port().to_be_bytes());
            body.extend_from_slice(&dst.port().to_be_bytes());
            if let Some(t) = tls {
                let mut tlvs = Vec::with_capacity(128);
                ssl_tlvs(t, &mut tlvs);
                // The length is 16 bits: TLVs that would not fit are left
                // out, never sent under a length that wrapped (the header
                // would be garbage to the server)
                if body.len() + tlvs.len() <= usize::from(u16::MAX) {
                    body.extend_from_slice(&tlvs);
                }
            }
            h.extend_from_slice(&(body.len() as u16).to_be_bytes());
            h.extend_from_slice(&body);
            h
        }
    }
}

const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// The longest client certificate CN sent: X.509 bounds a CN at 64
/// characters (ub-common-name), at most 256 bytes in UTF-8. A longer one is
/// left out, not cut (a cut name could be someone else's): with it, the
/// header stays far within the 16 bits of its length, and within the 1 KiB
/// that receivers such as rampart read.
const CN_MAX: usize = 256;

fn tlv(kind: u8, value: &[u8], out: &mut Vec<u8>) {
    let len = value.len().min(u16::MAX as usize - 64);
    out.push(kind);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&value[..len]);
}

/// What HAProxy sends with `send-proxy-v2-ssl-cn`: the SNI as the authority,
/// then the SSL TLV (client flags, verify result, version, cipher and the
/// client certificate's CN as sub-TLVs).
fn ssl_tlvs(t: &crate::tls::TlsInfo, out: &mut Vec<u8>) {
    if let Some(sni) = &t.sni {
        tlv(PP2_TYPE_AUTHORITY, sni.as_bytes(), out);
    }
    let mut ssl = Vec::with_capacity(64);
    let mut client = PP2_CLIENT_SSL;
    if t.client_subject.is_some() {
        client |= PP2_CLIENT_CERT_CONN;
    }
    ssl.push(client);
    // verify: 0 = the client certificate (if any) was verified
    ssl.extend_from_slice(&0u32.to_be_bytes());
    tlv(PP2_SUBTYPE_SSL_VERSION, t.version.as_bytes(), &mut ssl);
    tlv(PP2_SUBTYPE_SSL_CIPHER, t.cipher.as_bytes(), &mut ssl);
    if let Some(cn) = t.client_cn.as_deref().filter(|cn| cn.len() <= CN_MAX) {
        tlv(PP2_SUBTYPE_SSL_CN, cn.as_bytes(), &mut ssl);
    }
    tlv(PP2_TYPE_SSL, &ssl, out);
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// An IP network: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip.trim().parse().map_err(|_| {
            format!(
                "invalid network {s:?}: write an address or ADDRESS/PREFIX, e.g. \"10.0.0.0/8\""
            )
        })?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix length in {s:?} (0 to {max})"))?,
        };
        Ok(Cidr { net, prefix })
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => Self::v4_contains(n, self.prefix, a),
            _ => self.contains_v6(ip),
        }
    }

    fn v4_contains(n: std::net::Ipv4Addr, prefix: u8, a: std::net::Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        u32::from(n) & mask == u32::from(a) & mask
    }

    /// `contains` where the network or the address is IPv6 (an IPv4-mapped
    /// address is the IPv4 one). Not inlined: where it was, the compiler
    /// worked out the mapped address of every client before it knew the
    /// address family, about 60 instructions a request for an IPv4 client
    /// before the first `src` rule.
    #[inline(never)]
    fn contains_v6(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => Self::v4_contains(n, self.prefix, a),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `proxy_protocol` of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every connection starts with a header, from a trusted source.
    Required,
    /// Trusted sources may send one; others must not.
    Optional,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Accept {
    pub mode: Mode,
    pub from: Vec<Cidr>,
    /// The header must arrive within this (the listener's request_header_timeout).
    pub timeout: Duration,
}

/// Reads the PROXY header of a new connection, if there is one, and returns the
/// client address the connection stands for, and the address that client
/// reached when the header names it (then a `send_proxy` pool passes it on, as
/// HAProxy's send-proxy does after accept-proxy). Nothing after the header is
/// read.
/// A header from a source not in `from` is refused (never believed); without a
/// header, `Required` refuses and `Optional` takes the connection's own peer.
pub async fn accept(
    stream: &mut TcpStream,
    peer: SocketAddr,
    cfg: &Accept,
) -> Result<(SocketAddr, Option<SocketAddr>), PpError> {
    let trusted = cfg.from.iter().any(|c| c.contains(peer.ip()));
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    let mut buf = [0u8; V2_MAX];
    let mut backoff = Duration::from_millis(1);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| PpError::Timeout)?
            .map_err(|_| PpError::Closed)?;
        if n == 0 {
            return Err(PpError::Closed);
        }
        match parse(&buf[..n])? {
            Parsed::Header {
                len,
                source,
                destination,
            } => {
                if !trusted {
                    return Err(PpError::Untrusted(peer.ip()));
                }
                // the bytes are there (peeked): consume exactly the header
                stream
                    .read_exact(&mut buf[..len])
                    .await
                    .map_err(|_| PpError::Closed)?;
                return Ok((source.unwrap_or(peer), destination));
            }
            Parsed::Absent if cfg.mode == Mode::Optional => return Ok((peer, None)),
            Parsed::Absent => return Err(PpError::Missing(peer.ip())),
            Parsed::Incomplete => {
                // a header split across segments (rare): peek again shortly
                if tokio::time::Instant::now() + backoff > deadline {
                    return Err(PpError::Timeout);
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

    /// The SNI reader refuses a client's own PROXY header by these
    /// signatures, kept there as a copy (see `tls::sni::PROXY_SIGNATURES`).
    #[test]
    fn the_sni_reader_knows_these_signatures() {
        assert_eq!(crate::tls::sni::PROXY_SIGNATURES, [V1_PREFIX, &V2_SIG[..]]);
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v1_and_v2_headers() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: 45,
                source: Some("192.0.2.7:51234".parse().unwrap()),
                destination: Some("198.51.100.1:443".parse().unwrap()),
            })
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
            Ok(Parsed::Header {
                len: 40,
                source: Some("[2001:db8::1]:1".parse().unwrap()),
                destination: Some("[2001:db8::2]:2".parse().unwrap()),
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                len: 15,
                source: None,
                destination: None,
            })
        );
        let mut body = vec![192, 0, 2, 9, 198, 51, 100, 1];
        body.extend_from_slice(&4000u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x20, 0, 1, 0xff]); // a TLV after the addresses
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len: h.len(),
                source: Some("192.0.2.9:4000".parse().unwrap()),
                destination: Some("198.51.100.1:443".parse().unwrap()),
            })
        );
        assert_eq!(
            parse(&v2(0, 0, &[])),
            Ok(Parsed::Header {
                len: 16,
                source: None,
                destination: None,
            })
        );
        // UDP over IPv4 and IPv6: not this stream's client
        for (fam, n) in [(0x12, 12), (0x22, 36)] {
            let h = v2(1, fam, &vec![1u8; n]);
            assert_eq!(
                parse(&h),
                Ok(Parsed::Header {
                    len: h.len(),
                    source: None,
                    destination: None,
                })
            );
        }
        // IPv4, IPv6 and unix with an UNSPEC transport: accepted without an
        // address (the connection's own stands), the address block skipped
        // by the declared length, whatever it holds
        for (fam, n) in [(0x10, 12), (0x20, 36), (0x30, 216), (0x10, 0), (0x20, 5)] {
            let mut h = v2(1, fam, &vec![7u8; n]);
            let len = h.len();
            h.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&h),
                Ok(Parsed::Header {
                    len,
                    source: None,
                    destination: None
                }),
                "family {fam:#04x}, {n} bytes"
            );
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Parsed::Absent));
        assert_eq!(parse(b"\x16\x03\x01"), Ok(Parsed::Absent));
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_end() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n".to_vec();
        let mut body = vec![0u8; 12];
        body[8..10].copy_from_slice(&7u16.to_be_bytes());
        let v2h = v2(1, 0x11, &body);
        for h in [v1, v2h] {
            for cut in 1..h.len() {
                assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
            }
            assert!(matches!(parse(&h), Ok(Parsed::Header { .. })));
        }
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        let cases: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 300.0.0.1 1.2.3.4 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 1.2.3.4 70000 2\r\n".to_vec(),
            b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(),
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4\r\n".to_vec(),
            b"PROXY \xff\xfe\r\n".to_vec(),
            long.into_bytes(),
            v2(1, 0x11, &[1, 2, 3]),
            v2(1, 0x21, &[0; 20]),
            v2(1, 0x99, &[0; 12]),
            v2(7, 0x11, &[0; 12]),
            {
                let mut h = v2(1, 0x11, &[0; 12]);
                h[12] = 0x31; // version 3
                h
            },
            {
                let mut h = V2_SIG.to_vec();
                h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]); // 65 KiB body
                h
            },
        ];
        for c in cases {
            assert!(
                matches!(parse(&c), Err(PpError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(&c),
                parse(&c)
            );
        }
        // and random bytes after either signature never panic
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let n = rng.usize(0..80);
            let mut v: Vec<u8> = if rng.bool() {
                V2_SIG.to_vec()
            } else {
                V1_PREFIX.to_vec()
            };
            v.extend((0..n).map(|_| rng.u8(..)));
            let _ = parse(&v);
        }
    }

    #[test]
    fn what_is_sent_parses_back() {
        let pairs = [
            ("192.0.2.7:51234", "198.51.100.1:443"),
            ("[2001:db8::1]:1", "[2001:db8::2]:2"),
            ("192.0.2.7:9", "[2001:db8::2]:2"),
        ];
        for (src, dst) in pairs {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            for v in [Version::V1, Version::V2] {
                let h = header(v, src, dst, None);
                match parse(&h) {
                    Ok(Parsed::Header {
                        len,
                        source: Some(s),
                        destination: Some(d),
                    }) => {
                        assert_eq!(len, h.len());
                        assert_eq!(s.port(), src.port());
                        assert_eq!(s.ip().to_canonical(), src.ip().to_canonical(), "{v:?}");
                        assert_eq!(d.port(), dst.port());
                        assert_eq!(d.ip().to_canonical(), dst.ip().to_canonical(), "{v:?}");
                    }
                    other => panic!("{v:?} {src} {dst}: {other:?}"),
                }
            }
        }
    }

    /// The TLVs in `b`, which must hold whole TLVs and nothing else.
    fn walk(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert!(b.len() >= 3, "a TLV cut short");
            let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
            assert!(b.len() >= 3 + len, "a TLV longer than what holds it");
            out.push((b[0], b[3..3 + len].to_vec()));
            b = &b[3 + len..];
        }
        out
    }

    #[test]
    fn the_v2_length_never_wraps_and_a_cn_too_long_for_x509_is_left_out() {
        let src: SocketAddr = "192.0.2.7:51234".parse().unwrap();
        let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let short_sni = "db.example.com".to_string();
        let long_sni = format!("{}.example.com", "s".repeat(240));
        for (cn, sni, kept) in [
            ("alice".to_string(), short_sni.clone(), true),
            ("\u{1F600}".repeat(64), short_sni.clone(), true),
            // a 64 KiB CN: with it the body was over 65535 bytes and its
            // length wrapped
            ("c".repeat(70_000), long_sni, false),
            ("c".repeat(CN_MAX + 1), short_sni, false),
        ] {
            let t = crate::tls::TlsInfo {
                version: "TLSv1.3",
                cipher: "TLS13_AES_128_GCM_SHA256",
                sni: Some(sni.as_str().into()),
                client_subject: Some(format!("CN={cn}").into()),
                client_cn: Some(cn.as_str().into()),
                ..Default::default()
            };
            let h = header(Version::V2, src, dst, Some(&t));
            let declared = usize::from(u16::from_be_bytes([h[14], h[15]]));
            assert_eq!(declared, h.len() - 16, "the declared length is the body's");
            assert_eq!(
                parse(&h),
                Ok(Parsed::Header {
                    len: h.len(),
                    source: Some(src),
                    destination: Some(dst),
                })
            );
            let tlvs = walk(&h[16 + 12..]);
            let authority = tlvs
                .iter()
                .find(|(k, _)| *k == PP2_TYPE_AUTHORITY)
                .map(|(_, v)| v.as_slice());
            assert_eq!(authority, Some(sni.as_bytes()));
            let ssl = &tlvs
                .iter()
                .find(|(k, _)| *k == PP2_TYPE_SSL)
                .expect("the SSL TLV")
                .1;
            assert_eq!(ssl[0], PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN);
            let sub = walk(&ssl[5..]);
            assert!(sub
                .iter()
                .any(|(k, v)| *k == PP2_SUBTYPE_SSL_VERSION && v == b"TLSv1.3"));
            let got = sub
                .iter()
                .find(|(k, _)| *k == PP2_SUBTYPE_SSL_CN)
                .map(|(_, v)| v.as_slice());
            assert_eq!(
                got,
                kept.then_some(cn.as_bytes()),
                "a CN of {} bytes",
                cn.len()
            );
        }
    }

    #[test]
    fn networks() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(
            one.contains("127.0.0.1".parse().unwrap())
                && !one.contains("127.0.0.2".parse().unwrap())
        );
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        // the families do not mix, but for an IPv4-mapped address
        assert!(!v6.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("2001:db8::a01:203".parse().unwrap()));
        assert!(!c.contains("::ffff:11.1.2.3".parse().unwrap()));
        let all6 = Cidr::parse("::/0").unwrap();
        assert!(
            all6.contains("::1".parse().unwrap()) && !all6.contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
    }
}
