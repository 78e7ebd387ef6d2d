//! The server side of TLS on a listener: the rustls config built from
//! `[listener.tls]` when the config is read (so a reload that cannot build it is
//! refused like any bad config), certificate choice by SNI, and the handshake
//! done at accept time, under `handshake_timeout`, counted in the metrics.

use super::cert::{CaFile, CertFile};
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
    #[error("client_ca: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Session tickets are encrypted with keys that rotate every 6 hours (a ticket
/// stays valid for 12), shared by every listener and kept across reloads, so a
/// client resumes its session after a reload.
fn ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static T: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    T.get_or_init(|| {
        match super::crypto::new_ticketer() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot make session ticket keys; resumption uses the session cache only");
                None
            }
        }
    })
    .clone()
}

/// Server-side session cache (TLS 1.2 session ids; TLS 1.3 without tickets),
/// process-wide and kept across reloads like the ticket keys.
fn session_cache() -> Arc<dyn rustls::server::StoresServerSessions> {
    static C: OnceLock<Arc<rustls::server::ServerSessionMemoryCache>> = OnceLock::new();
    C.get_or_init(|| rustls::server::ServerSessionMemoryCache::new(20_000))
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
                builder.with_client_cert_verifier(v.build()?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut sc = builder.with_cert_resolver(Arc::new(ByName::new(&certs, strict_sni)));
        sc.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        sc.session_storage = session_cache();
        if session_tickets {
            if let Some(t) = ticketer() {
                sc.ticketer = t;
            }
        }
        Ok(ListenerTls {
            certs,
            alpn,
            tls13_only,
            client_ca,
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
        match hello.server_name() {
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
}

/// Why a handshake failed (the `reason` label of the failure metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    NoSniMatch,
    BadClientCert,
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
            Failure::ProtocolVersion => "protocol_version",
            Failure::ClientClosed => "client_closed",
            Failure::Handshake => "handshake_error",
        }
    }

    fn of(e: &std::io::Error) -> Failure {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return Failure::ClientClosed;
        };
        use rustls::PeerIncompatible as P;
        match tls {
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

fn info(c: &rustls::ServerConnection) -> TlsInfo {
    let (client_subject, client_cn) = match c.peer_certificates().and_then(|p| p.first()) {
        Some(der) => match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => (
                Some(cert.subject().to_string().into_boxed_str()),
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
        sni: c.server_name().map(Box::from),
        client_subject,
        client_cn,
        subject_header: None,
    }
}
