//! The server side of TLS on a listener: the rustls config built from
//! `[listener.tls]` when the config is read (so a reload that cannot build it is
//! refused like any bad config), certificate choice by SNI, and the handshake
//! done at accept time, under `handshake_timeout`, counted in the metrics.

use super::cert::{CaFile, CertFile, CrlFile};
use super::crypto::Built;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// `[listener.tls]`, validated, with its rustls config built.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// The first is the default: served without SNI, or (unless `strict_sni`)
    /// when no certificate has the name asked for.
    pub certs: Vec<Arc<CertFile>>,
    pub alpn: Vec<String>,
    /// Only TLS 1.3.
    pub tls13_only: bool,
    pub client_ca: Option<CaFile>,
    /// The revocation lists client certificates are checked against.
    pub client_crl: Option<CrlFile>,
    pub client_auth_required: bool,
    pub session_tickets: bool,
    pub handshake_timeout: Duration,
    /// Refuse a client whose SNI no certificate has (HAProxy's strict-sni).
    pub strict_sni: bool,
    /// Pass the client certificate's subject to backends in this header.
    pub client_subject_header: Option<http::HeaderName>,
    pub built: Built<rustls::ServerConfig>,
}

/// Why a ServerConfig could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client_ca or client_crl: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Where sessions are kept for resumption: the server-side cache (TLS 1.2
/// session ids; TLS 1.3 without tickets) and the ticket keys, which rotate
/// every 6 hours (a ticket stays valid for 12).
type Resumption = (
    Arc<dyn rustls::server::StoresServerSessions>,
    Option<Arc<dyn rustls::server::ProducesTickets>>,
);

/// The session cache and ticket keys of one client-certificate policy (the
/// client CA's and CRL's bytes, and whether a certificate is required), process-wide
/// and kept across reloads, so a client resumes its session after a reload
/// or on another listener with the same policy. A session resumes nowhere
/// else: rustls checks neither on resumption and takes the certificate the
/// session was made with (or none) as this connection's, so a session made
/// where a certificate was optional, or under another CA, would pass a
/// listener that requires one (RFC 8446 4.6.1 wants a PSK used only where it
/// fits; nginx binds sessions to the CA list the same way). A new CRL is a
/// new policy too: a client whose certificate it revokes does not resume a
/// session made before.
fn resumption(client_ca: Option<&CaFile>, crl: Option<&CrlFile>, required: bool) -> Resumption {
    resumption_for((
        client_ca.map(|c| c.bytes().to_vec()),
        crl.map(|c| c.bytes().to_vec()),
        required && client_ca.is_some(),
    ))
}

/// A client-certificate policy: the client CA file's bytes, the CRL file's,
/// and whether a certificate is required.
type Policy = (Option<Vec<u8>>, Option<Vec<u8>>, bool);

static BY_POLICY: OnceLock<std::sync::Mutex<HashMap<Policy, Resumption>>> = OnceLock::new();

fn resumption_for(policy: Policy) -> Resumption {
    let mut all = BY_POLICY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // a policy no config holds any more (a client CA file replaced, a
    // listener gone) is let go of, so reloads do not pile caches up
    all.retain(|_, (cache, _)| Arc::strong_count(cache) > 1);
    all.entry(policy)
        .or_insert_with(|| {
            let cache: Arc<dyn rustls::server::StoresServerSessions> =
                rustls::server::ServerSessionMemoryCache::new(20_000);
            let tickets = match super::crypto::new_ticketer() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(error = %e, "cannot make session ticket keys; resumption uses the session cache only");
                    None
                }
            };
            (cache, tickets)
        })
        .clone()
}

impl ListenerTls {
    /// Builds the rustls config of these settings.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        certs: Vec<Arc<CertFile>>,
        alpn: Vec<String>,
        tls13_only: bool,
        client_ca: Option<CaFile>,
        client_crl: Option<CrlFile>,
        client_auth_required: bool,
        session_tickets: bool,
        handshake_timeout: Duration,
        strict_sni: bool,
        client_subject_header: Option<http::HeaderName>,
    ) -> Result<ListenerTls, BuildError> {
        let provider = super::crypto::provider();
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)?;
        let builder = match &client_ca {
            Some(ca) => {
                let mut v = WebPkiClientVerifier::builder_with_provider(
                    Arc::clone(&ca.roots),
                    Arc::clone(&provider),
                );
                if !client_auth_required {
                    v = v.allow_unauthenticated();
                }
                if let Some(crl) = &client_crl {
                    // every certificate of the chain (OpenSSL's
                    // CRL_CHECK_ALL, as nginx and HAProxy set it), an
                    // unknown status refused, a stale CRL refused
                    v = v
                        .with_crls(crl.crls.iter().cloned())
                        .enforce_revocation_expiration();
                }
                builder.with_client_cert_verifier(v.build()?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut sc = builder.with_cert_resolver(Arc::new(ByName::new(&certs, strict_sni)));
        sc.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        if session_tickets {
            let (cache, tickets) = resumption(
                client_ca.as_ref(),
                client_crl.as_ref(),
                client_auth_required,
            );
            sc.session_storage = cache;
            if let Some(t) = tickets {
                sc.ticketer = t;
            }
        } else {
            // no resumption at all (rustls keeps a session cache by default)
            sc.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
        Ok(ListenerTls {
            certs,
            alpn,
            tls13_only,
            client_ca,
            client_crl,
            client_auth_required,
            session_tickets,
            handshake_timeout,
            strict_sni,
            client_subject_header,
            built: Built(Arc::new(sc)),
        })
    }
}

/// Picks the certificate for a ClientHello: exact names first, then wildcards
/// (`*.example.com` covers one label), then the default. Among certificates for
/// the same name (RSA and ECDSA side by side) the first whose key can sign with a
/// scheme the client offers.
#[derive(Debug)]
struct ByName {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    default: Vec<Arc<CertifiedKey>>,
    strict: bool,
}

impl ByName {
    fn new(certs: &[Arc<CertFile>], strict: bool) -> ByName {
        let mut exact: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        for c in certs {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_string()).or_default(),
                    None => exact.entry(n.clone()).or_default(),
                }
                .push(Arc::clone(&c.key));
            }
        }
        // The default: the first certificate, and the others with its names
        // (its RSA/ECDSA twin).
        let default = match certs.first() {
            Some(first) => certs
                .iter()
                .filter(|c| c.names == first.names)
                .map(|c| Arc::clone(&c.key))
                .collect(),
            None => Vec::new(),
        };
        ByName {
            exact,
            wildcard,
            default,
            strict,
        }
    }

    fn pick(
        keys: &[Arc<CertifiedKey>],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        keys.iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or(keys.first())
            .cloned()
    }

    fn lookup(&self, name: &str) -> Option<&Vec<Arc<CertifiedKey>>> {
        if let Some(k) = self.exact.get(name) {
            return Some(k);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        // a name with the root's dot (rustls keeps it) is the same name
        let sni = hello
            .server_name()
            .map(|n| n.strip_suffix('.').filter(|n| !n.is_empty()).unwrap_or(n));
        match sni {
            Some(name) => {
                let lower;
                let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    lower = name.to_ascii_lowercase();
                    &lower
                } else {
                    name
                };
                match self.lookup(name) {
                    Some(keys) => Self::pick(keys, schemes),
                    None if self.strict => None,
                    None => Self::pick(&self.default, schemes),
                }
            }
            // HAProxy's strict-sni: "the default certificate is not used",
            // for a client without SNI either (it would show a scanner the
            // names the default certificate holds)
            None if self.strict => None,
            None => Self::pick(&self.default, schemes),
        }
    }
}

/// What a TLS client connection negotiated, for the access log, headers and
/// the PROXY protocol.
#[derive(Debug, Default)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher: &'static str,
    pub sni: Option<Box<str>>,
    /// The client certificate's subject (verified), e.g. `CN=alice, O=Example`.
    pub client_subject: Option<Box<str>>,
    pub client_cn: Option<Box<str>>,
    /// The listener passes `client_subject` to backends in this header.
    pub subject_header: Option<http::HeaderName>,
    /// ALPN chose `h2`: over TLS, HTTP/2 is spoken only so (RFC 9113 3.2).
    pub alpn_h2: bool,
}

/// Why a handshake failed (the `reason` label of the failure metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    NoSniMatch,
    BadClientCert,
    /// The client certificate (or a CA of its chain) is on a CRL.
    RevokedClientCert,
    /// No CRL says whether the client certificate is revoked, or the one
    /// that does is past its nextUpdate.
    ClientCertRevocationUnknown,
    ProtocolVersion,
    /// The client closed or reset the connection during the handshake.
    ClientClosed,
    /// Anything else: not TLS, no cipher in common, a client alert...
    Handshake,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::NoSniMatch => "no_sni_match",
            Failure::BadClientCert => "bad_client_cert",
            Failure::RevokedClientCert => "revoked_client_cert",
            Failure::ClientCertRevocationUnknown => "client_cert_revocation_unknown",
            Failure::ProtocolVersion => "protocol_version",
            Failure::ClientClosed => "client_closed",
            Failure::Handshake => "handshake_error",
        }
    }

    fn of(e: &std::io::Error) -> Failure {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return Failure::ClientClosed;
        };
        use rustls::CertificateError as C;
        use rustls::PeerIncompatible as P;
        match tls {
            rustls::Error::InvalidCertificate(C::Revoked) => Failure::RevokedClientCert,
            rustls::Error::InvalidCertificate(
                C::UnknownRevocationStatus
                | C::ExpiredRevocationList
                | C::ExpiredRevocationListContext { .. },
            ) => Failure::ClientCertRevocationUnknown,
            rustls::Error::General(m) if m.contains("no server certificate") => Failure::NoSniMatch,
            rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertificate(_)
            | rustls::Error::InvalidCertRevocationList(_) => Failure::BadClientCert,
            rustls::Error::PeerIncompatible(
                P::SupportedVersionsExtensionRequired
                | P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
                | P::ServerDoesNotSupportTls12Or13,
            ) => Failure::ProtocolVersion,
            _ => Failure::Handshake,
        }
    }
}

/// A listener's TLS at accept time.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    pub timeout: Duration,
    pub subject_header: Option<http::HeaderName>,
    /// (file, notAfter) of each certificate, for the expiry metric.
    pub certs: Vec<(String, i64)>,
    /// (file, earliest nextUpdate) of the client CRL, for its metric.
    pub crl: Option<(String, i64)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("timeout", &self.timeout)
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    pub fn new(cfg: &ListenerTls) -> ServerTls {
        ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(&cfg.built.0)),
            timeout: cfg.handshake_timeout,
            subject_header: cfg.client_subject_header.clone(),
            certs: cfg
                .certs
                .iter()
                .map(|c| (c.path.display().to_string(), c.not_after))
                .collect(),
            crl: cfg
                .client_crl
                .as_ref()
                .and_then(|c| Some((c.path.display().to_string(), c.next_update?))),
        }
    }

    /// The handshake of a new connection, within the handshake timeout. A failure
    /// is logged at debug; the caller counts either outcome in its metrics.
    pub async fn accept(
        &self,
        stream: TcpStream,
        listener: &str,
        peer: std::net::SocketAddr,
    ) -> Result<(TlsStream<TcpStream>, TlsInfo), Failure> {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                let mut info = info(s.get_ref().1);
                info.subject_header = self.subject_header.clone();
                Ok((s, info))
            }
            Ok(Err(e)) => {
                let f = Failure::of(&e);
                tracing::debug!(%listener, %peer, reason = f.as_str(), error = %e, "TLS handshake failed");
                Err(f)
            }
            Err(_) => {
                tracing::debug!(%listener, %peer, timeout = ?self.timeout, "TLS handshake timed out");
                Err(Failure::Timeout)
            }
        }
    }
}

/// A certificate's subject as text: its attributes in the certificate's
/// order, `TYPE=value`, joined by `, ` (and ` + ` within one RDN), each value
/// escaped as RFC 4514 2.4 says, so that a value holding `, CN=admin` stays
/// one value for a server that splits the text; bytes outside printable
/// ASCII as `\XX`, so the text is always a valid header value. A value of no
/// string type is `#` and the hex of its DER.
fn subject_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    use std::fmt::Write;
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for (i, rdn) in name.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(a) => out.push_str(a),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr_text(attr) {
                Some(v) => {
                    let last = v.len().saturating_sub(1);
                    for (k, b) in v.bytes().enumerate() {
                        match b {
                            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                                out.push('\\');
                                out.push(b as char);
                            }
                            b' ' | b'#' if k == 0 => {
                                out.push('\\');
                                out.push(b as char);
                            }
                            b' ' if k == last => out.push_str("\\ "),
                            0x21..=0x7e | b' ' => out.push(b as char),
                            _ => {
                                let _ = write!(out, "\\{b:02X}");
                            }
                        }
                    }
                }
                None => {
                    // RFC 4514 2.4: `#` and the hex of the value's DER
                    out.push('#');
                    let v = attr.attr_value();
                    let der =
                        x509_parser::der_parser::asn1_rs::ToDer::to_der_vec(v).unwrap_or_default();
                    for b in der {
                        let _ = write!(out, "{b:02X}");
                    }
                }
            }
        }
    }
    out
}

/// An attribute's value as text, for every string type a name may use (as
/// x509-parser shows them: BMPString as UTF-16, the other 8-bit ones as
/// UTF-8); None for a value of no string type.
fn attr_text(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let v = attr.attr_value();
    match v.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = v
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::NumericString
        | Tag::VisibleString
        | Tag::PrintableString
        | Tag::GeneralString
        | Tag::ObjectDescriptor
        | Tag::GraphicString
        | Tag::T61String
        | Tag::VideotexString
        | Tag::Utf8String
        | Tag::Ia5String => std::str::from_utf8(v.data).ok().map(str::to_owned),
        _ => None,
    }
}

fn info(c: &rustls::ServerConnection) -> TlsInfo {
    let (client_subject, client_cn) = match c.peer_certificates().and_then(|p| p.first()) {
        Some(der) => match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => (
                Some(subject_text(cert.subject()).into_boxed_str()),
                cert.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .map(Box::from),
            ),
            Err(_) => (None, None),
        },
        None => (None, None),
    };
    TlsInfo {
        version: super::crypto::version_name(c.protocol_version()),
        cipher: c
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown"),
        sni: c
            .server_name()
            .map(|n| n.strip_suffix('.').filter(|n| !n.is_empty()).unwrap_or(n))
            .map(Box::from),
        client_subject,
        client_cn,
        subject_header: None,
        alpn_h2: c.alpn_protocol() == Some(b"h2"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One session cache and ticket key per policy, shared while a config
    /// holds it, let go of once none does (a CA file replaced on reload).
    #[test]
    fn a_policy_no_config_holds_is_let_go_of() {
        let a = resumption_for((Some(b"ca one".to_vec()), None, true));
        let again = resumption_for((Some(b"ca one".to_vec()), None, true));
        assert!(Arc::ptr_eq(&a.0, &again.0), "one cache per policy");
        let other = resumption_for((Some(b"ca one".to_vec()), None, false));
        assert!(!Arc::ptr_eq(&a.0, &other.0), "optional and required apart");
        let revoking = resumption_for((Some(b"ca one".to_vec()), Some(b"crl".to_vec()), true));
        assert!(
            !Arc::ptr_eq(&a.0, &revoking.0),
            "a CRL is a policy of its own"
        );
        drop((a, again, other, revoking));
        // the next build lets both go (other tests' policies may come and go
        // meanwhile: only these two are looked at)
        let b = resumption_for((Some(b"ca two".to_vec()), None, true));
        let map = BY_POLICY.get().unwrap().lock().unwrap();
        assert!(!map.contains_key(&(Some(b"ca one".to_vec()), None, true)));
        assert!(!map.contains_key(&(Some(b"ca one".to_vec()), None, false)));
        assert!(map.contains_key(&(Some(b"ca two".to_vec()), None, true)));
        drop(map);
        drop(b);
    }
}
