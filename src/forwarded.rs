//! X-Forwarded-*: the one place that decides what a backend is told about the
//! client, for both HTTP paths (the fast path writes wire bytes, the hyper path a
//! `HeaderMap`; both take the fields from here).
//!
//! - `X-Forwarded-For`: every earlier hop's value in order, then the client's IP,
//!   as one field.
//! - `X-Forwarded-Proto`: the scheme the client used on this listener (`http`,
//!   later `https`), whatever the client sent.
//! - `X-Forwarded-Host`: the Host the request came with (the authority for HTTP/2
//!   and absolute-form requests). A client's own value is never passed on, also
//!   when the request has no Host (HTTP/1.0).
//! - `Forwarded` (RFC 7239): a client's is dropped, never passed on. It carries
//!   the same claims (`for`, `host`, `proto`), and frameworks that read it before
//!   X-Forwarded-* (Rack, Spring's ForwardedHeaderFilter) would otherwise take a
//!   client's `host=` and `proto=` for the proxy's.

/// The fields one request gets.
#[derive(Debug)]
pub struct XForwarded<'a> {
    /// What earlier hops wrote in X-Forwarded-For, joined with ", " (None: the
    /// request had no such field).
    pub prior_for: Option<&'a [u8]>,
    /// The client's IP as text.
    pub client_ip: &'a [u8],
    pub proto: &'static str,
    pub host: Option<&'a [u8]>,
    /// The listener's `client_ip_header` (`x-real-ip`): the client's IP
    /// alone, in place of any such field the client sent.
    pub real_ip: Option<&'a http::HeaderName>,
}

/// `[listener.client_ip_from]`: a request that comes from a trusted proxy
/// (`from`) has the client that proxy names in `header` (nginx's realip
/// module: `set_real_ip_from`, `real_ip_header`, `real_ip_recursive`;
/// HAProxy's `http-request set-src hdr(x-forwarded-for)`). Rules' `src`, rate
/// limits, `hash_key = "client_ip"`, the access log, X-Forwarded-For's last
/// entry and `client_ip_header` see that client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientIpFrom {
    pub header: http::HeaderName,
    pub from: Vec<crate::proxy_protocol::Cidr>,
    /// Past the last entry, every one a trusted proxy wrote (nginx's
    /// `real_ip_recursive on`); else the last entry alone.
    pub recursive: bool,
}

impl ClientIpFrom {
    /// The client of a request from `peer` (the connection's client, after
    /// the PROXY protocol) whose fields are `fields` (name, value), in order,
    /// as nginx's realip finds it: the field's entries (X-Forwarded-For's
    /// every line, another field's first) are read from the end, an entry
    /// taken while the address before it (`peer` first) is a trusted
    /// proxy's; one that is not an address ends the walk (the first one:
    /// `peer` stays). Entries are split at commas and spaces; nothing is
    /// allocated.
    pub fn client<'a>(
        &self,
        peer: std::net::IpAddr,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> std::net::IpAddr {
        let trusted = |ip: std::net::IpAddr| self.from.iter().any(|c| c.contains(ip));
        let mut client = peer.to_canonical();
        if !trusted(client) {
            return client;
        }
        let name = self.header.as_str().as_bytes();
        let every_line = name == FOR.as_bytes();
        // the lines, kept by reference (more than 16: the last 16)
        let mut lines: [&[u8]; 16] = [&[]; 16];
        let mut n = 0usize;
        for (_, v) in fields.filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            lines[n % lines.len()] = v;
            n += 1;
            if !every_line {
                break;
            }
        }
        let kept = n.min(lines.len());
        let entries = (0..kept)
            .rev()
            .map(|i| lines[(n - kept + i) % lines.len()])
            .flat_map(|l| l.rsplit(|&b| b == b',' || b == b' '))
            .filter(|e| !e.is_empty());
        for e in entries {
            let Some(ip) = std::str::from_utf8(e)
                .ok()
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            else {
                break;
            };
            client = ip.to_canonical();
            if !self.recursive || !trusted(client) {
                break;
            }
        }
        client
    }
}

pub const FOR: &str = "x-forwarded-for";
pub const PROTO: &str = "x-forwarded-proto";
pub const HOST: &str = "x-forwarded-host";

/// How a request field the client sent is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// X-Forwarded-For: its value is kept, in front of the client's IP.
    Prior,
    /// X-Forwarded-Proto and -Host: dropped; this proxy writes its own.
    /// Forwarded: dropped.
    Replaced,
    /// Anything else.
    Other,
}

/// What becomes of a field named `name` that the client sent.
#[inline]
pub fn incoming(name: &[u8]) -> Incoming {
    // most fields are decided by their length alone
    if !(15..=17).contains(&name.len()) || !name[..12].eq_ignore_ascii_case(b"x-forwarded-") {
        if name.len() == 9 && name.eq_ignore_ascii_case(b"forwarded") {
            return Incoming::Replaced;
        }
        return Incoming::Other;
    }
    match &name[12..] {
        n if n.eq_ignore_ascii_case(b"for") => Incoming::Prior,
        n if n.eq_ignore_ascii_case(b"proto") || n.eq_ignore_ascii_case(b"host") => {
            Incoming::Replaced
        }
        _ => Incoming::Other,
    }
}

/// Whether a field the client sent named `name` gives way to the listener's
/// `client_ip_header` (`real_ip`), which rampart writes: in any case, and
/// with `_` for `-` (CGI, WSGI and Rack servers read `X_Real_IP` as
/// `HTTP_X_REAL_IP`, the field's own variable).
#[inline]
pub fn replaced_by(real_ip: Option<&http::HeaderName>, name: &[u8]) -> bool {
    real_ip.is_some_and(|n| {
        let n = n.as_str().as_bytes();
        n.len() == name.len()
            && n.iter().zip(name).all(|(&a, &b)| {
                let b = if b == b'_' { b'-' } else { b };
                a == b.to_ascii_lowercase()
            })
    })
}

impl XForwarded<'_> {
    /// The X-Forwarded-* fields to send, in order: `field(name, parts)`, the
    /// value being the concatenation of `parts` (`real_ip`'s, whose name is
    /// the operator's, is the caller's to add).
    #[inline]
    pub fn fields(&self, mut field: impl FnMut(&'static str, &[&[u8]])) {
        match self.prior_for {
            Some(prior) => field(FOR, &[prior, b", ", self.client_ip]),
            None => field(FOR, &[self.client_ip]),
        }
        field(PROTO, &[self.proto.as_bytes()]);
        if let Some(host) = self.host {
            field(HOST, &[host]);
        }
    }

    /// The fields as HTTP/1.1 wire lines (`name: value\r\n`), appended to `out`:
    /// the fast path's encoding of `fields`.
    #[inline]
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prior) = self.prior_for {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.client_ip);
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(host) = self.host {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(host);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(name) = self.real_ip {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(self.client_ip);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_read_from_the_end_while_proxies_are_trusted() {
        let cidr = |s: &str| crate::proxy_protocol::Cidr::parse(s).unwrap();
        let from = |recursive| ClientIpFrom {
            header: http::HeaderName::from_static("x-forwarded-for"),
            from: vec![cidr("10.0.0.0/8"), cidr("2001:db8::/32")],
            recursive,
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let run = |recursive, peer: &str, lines: &[&str]| {
            let fields = lines
                .iter()
                .map(|l| (&b"X-Forwarded-For"[..], l.as_bytes()))
                .chain([(&b"x-real-ip"[..], &b"192.0.2.99"[..])]);
            from(recursive).client(ip(peer), fields).to_string()
        };
        // an untrusted peer's header is not read
        assert_eq!(run(false, "192.0.2.1", &["203.0.113.9"]), "192.0.2.1");
        // a trusted one's last entry
        assert_eq!(
            run(false, "10.0.0.5", &["203.0.113.9, 10.0.0.7"]),
            "10.0.0.7"
        );
        assert_eq!(run(false, "10.0.0.5", &["203.0.113.9"]), "203.0.113.9");
        // recursive: past every trusted proxy, lines joined in order
        assert_eq!(
            run(
                true,
                "10.0.0.5",
                &["198.51.100.1, 203.0.113.9", "10.0.0.7 ,10.1.1.1"]
            ),
            "203.0.113.9"
        );
        // every entry trusted: the first
        assert_eq!(run(true, "10.0.0.5", &["10.0.0.9, 10.0.0.7"]), "10.0.0.9");
        // not an address: the walk ends (at the peer, if the last)
        assert_eq!(run(true, "10.0.0.5", &["203.0.113.9, unknown"]), "10.0.0.5");
        assert_eq!(run(true, "10.0.0.5", &["unknown, 10.0.0.7"]), "10.0.0.7");
        assert_eq!(run(false, "10.0.0.5", &[]), "10.0.0.5");
        assert_eq!(run(false, "10.0.0.5", &[" , "]), "10.0.0.5");
        // not addresses to nginx either: with a port, in brackets
        assert_eq!(run(false, "10.0.0.5", &["203.0.113.9:4711"]), "10.0.0.5");
        assert_eq!(run(false, "10.0.0.5", &["[2001:db8:1::9]"]), "10.0.0.5");
        // entries are split at spaces too
        assert_eq!(
            run(false, "10.0.0.5", &["203.0.113.9 198.51.100.2"]),
            "198.51.100.2"
        );
        // IPv6 and IPv4-mapped peers
        assert_eq!(
            run(false, "2001:db8::1", &["2001:db8:1::9"]),
            "2001:db8:1::9"
        );
        assert_eq!(
            run(false, "::ffff:10.0.0.5", &["203.0.113.9"]),
            "203.0.113.9"
        );
        assert_eq!(
            run(false, "10.0.0.5", &["::ffff:203.0.113.9"]),
            "203.0.113.9"
        );
        // more lines than are kept: the last ones
        let many: Vec<String> = (0..40).map(|i| format!("10.0.1.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(run(true, "10.0.0.5", &many), "10.0.1.24");
        // another field: its first line, as a list
        let real = ClientIpFrom {
            header: http::HeaderName::from_static("x-real-ip"),
            ..from(false)
        };
        let fields = [
            (&b"X-Real-IP"[..], &b"198.51.100.1, 203.0.113.9"[..]),
            (&b"x-real-ip"[..], &b"192.0.2.4"[..]),
        ];
        assert_eq!(
            real.client(ip("10.0.0.5"), fields.into_iter()).to_string(),
            "203.0.113.9"
        );
    }

    fn render(x: &XForwarded<'_>) -> String {
        let mut out = String::new();
        x.fields(|n, parts| {
            out.push_str(n);
            out.push_str(": ");
            for p in parts {
                out.push_str(std::str::from_utf8(p).unwrap());
            }
            out.push('\n');
        });
        out
    }

    #[test]
    fn the_wire_form_is_the_fields() {
        for x in [
            XForwarded {
                prior_for: Some(b"203.0.113.1"),
                client_ip: b"127.0.0.1",
                proto: "http",
                host: Some(b"a.example"),
                real_ip: None,
            },
            XForwarded {
                prior_for: None,
                client_ip: b"::1",
                proto: "https",
                host: None,
                real_ip: None,
            },
        ] {
            let mut wire = Vec::new();
            x.write_wire(&mut wire);
            let wire = String::from_utf8(wire).unwrap().replace("\r\n", "\n");
            assert_eq!(wire, render(&x));
        }
    }

    #[test]
    fn fields_and_what_the_client_sent() {
        let x = XForwarded {
            prior_for: Some(b"203.0.113.1, 203.0.113.2"),
            client_ip: b"127.0.0.1",
            proto: "http",
            host: Some(b"shop.example.com"),
            real_ip: None,
        };
        assert_eq!(
            render(&x),
            "x-forwarded-for: 203.0.113.1, 203.0.113.2, 127.0.0.1\nx-forwarded-proto: http\nx-forwarded-host: shop.example.com\n"
        );
        let x = XForwarded {
            prior_for: None,
            client_ip: b"::1",
            proto: "https",
            host: None,
            real_ip: None,
        };
        assert_eq!(
            render(&x),
            "x-forwarded-for: ::1\nx-forwarded-proto: https\n"
        );
        assert_eq!(incoming(b"X-Forwarded-For"), Incoming::Prior);
        assert_eq!(incoming(b"x-forwarded-HOST"), Incoming::Replaced);
        assert_eq!(incoming(b"x-forwarded-proto"), Incoming::Replaced);
        assert_eq!(incoming(b"x-forwarded-port"), Incoming::Other);
        assert_eq!(incoming(b"x-forwarded"), Incoming::Other);
        assert_eq!(incoming(b"host"), Incoming::Other);
    }

    #[test]
    fn the_client_ip_header_follows_on_the_wire_and_replaces_the_clients() {
        let name = http::HeaderName::from_static("x-real-ip");
        let x = XForwarded {
            prior_for: None,
            client_ip: b"192.0.2.7",
            proto: "http",
            host: None,
            real_ip: Some(&name),
        };
        let mut wire = Vec::new();
        x.write_wire(&mut wire);
        assert_eq!(
            wire,
            b"x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-real-ip: 192.0.2.7\r\n"
        );
        assert!(replaced_by(Some(&name), b"X-Real-IP"));
        assert!(replaced_by(Some(&name), b"X_Real_IP"));
        assert!(replaced_by(Some(&name), b"x-real_ip"));
        assert!(!replaced_by(Some(&name), b"x-real-ipv6"));
        assert!(!replaced_by(None, b"x-real-ip"));
    }
}
