//! TLS of a postgres health check (`ssl` in `[pool.health]`, libpq's
//! `sslmode`). Postgres asks for TLS inside its own protocol: the client
//! sends an SSLRequest, the server answers `S` (or `N`), and the handshake
//! follows on the same connection, so `[pool.tls]`'s handshake at connect
//! would not do. The rustls config is built when the config is read; the
//! handshake is tokio-postgres's `TlsConnect`, implemented here over
//! tokio-rustls (as the `tokio-postgres-rustls` crate does, without the crate).

use super::cert::{CaFile, CrlFile};
use super::client::{Insecure, PoolTls};
use super::crypto::Built;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a postgres check uses TLS: libpq's `sslmode` values but `disable`
/// (no TLS: the check has no `PgTls`) and `allow` (plain first: nothing a
/// check needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// TLS when the server agrees to it, else plain; a session over TLS
    /// that fails is tried again without, as libpq does. The certificate is
    /// not verified.
    Prefer,
    /// TLS, or the check fails; the certificate is not verified.
    Require,
    /// TLS, with a certificate that chains to the CA, whatever name it is for.
    VerifyCa,
    /// TLS, with a certificate that chains to the CA and is for the server's
    /// name.
    VerifyFull,
}

impl PgSslMode {
    /// As written in the config (and in libpq's `sslmode`).
    pub fn name(self) -> &'static str {
        match self {
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is verified against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, PgSslMode::VerifyCa | PgSslMode::VerifyFull)
    }
}

/// A postgres check's TLS, validated, with its rustls config built.
#[derive(Debug, Clone, PartialEq)]
pub struct PgTls {
    pub mode: PgSslMode,
    /// The CA (and CRL) the certificate is verified against (None unless
    /// `mode` verifies) and the name it is verified under, as a pool's TLS
    /// has them: `name_for` finds a server's name as for `[pool.tls]`. Its
    /// config offers ALPN "postgresql", as libpq 17 does (PostgreSQL 17
    /// refuses a handshake whose ALPN names only other protocols; older
    /// servers ignore ALPN), and resumes nothing (each check is a new
    /// session, and PostgreSQL's server turns session resumption off).
    pub tls: PoolTls,
}

/// Why a postgres check's rustls config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("ca or crl: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error(
        "ssl = \"{0}\" verifies the server's certificate, and no CA is given to verify it against"
    )]
    NoCa(&'static str),
}

impl PgTls {
    /// `ca` (with `crl`, its revocation lists) is needed when `mode`
    /// verifies, and not used otherwise; `server_name`: the name verified
    /// and sent as SNI (None: a server's DNS name, or its address).
    pub fn build(
        mode: PgSslMode,
        ca: Option<CaFile>,
        crl: Option<CrlFile>,
        server_name: Option<String>,
    ) -> Result<PgTls, PgTlsError> {
        let provider = super::crypto::provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let (ca, crl) = if mode.verifies() {
            (ca, crl)
        } else {
            (None, None)
        };
        let verifier: Arc<dyn ServerCertVerifier> = match &ca {
            None if mode.verifies() => return Err(PgTlsError::NoCa(mode.name())),
            // prefer and require: any certificate (libpq's, without a root
            // certificate file), the handshake signature still checked
            None => Arc::new(Insecure(Arc::clone(&provider))),
            Some(ca) => {
                let mut b = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::clone(&ca.roots),
                    Arc::clone(&provider),
                );
                if let Some(crl) = &crl {
                    // as [pool.tls]'s: an unknown status or a stale CRL refused
                    b = b
                        .with_crls(crl.crls.iter().cloned())
                        .enforce_revocation_expiration();
                }
                let webpki = b.build()?;
                if mode == PgSslMode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        let mut cc = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        cc.alpn_protocols = vec![b"postgresql".to_vec()];
        cc.resumption = rustls::client::Resumption::disabled();
        Ok(PgTls {
            mode,
            tls: PoolTls {
                ca,
                crl,
                server_name,
                cert: None,
                built: Built(Arc::new(cc)),
            },
        })
    }

    /// The handshake for one check's connection to the server named `name`
    /// (`tls.name_for`); `agreed` is set when the server agrees to TLS.
    pub fn connector(&self, name: ServerName<'static>, agreed: Arc<AtomicBool>) -> PgTlsConnect {
        PgTlsConnect {
            connector: tokio_rustls::TlsConnector::from(Arc::clone(&self.tls.built.0)),
            name,
            agreed,
        }
    }
}

/// `verify-ca`: the chain must verify against the CA (and its CRL), the name
/// the certificate is for is not looked at. rustls's WebPkiServerVerifier
/// checks the name last, once the chain, its validity and revocation have
/// passed, so the one failure let through here comes only after all of them.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS handshake of one check's connection, which tokio-postgres starts
/// once the server has answered the SSLRequest with `S`.
pub struct PgTlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    /// Set when the handshake starts: the server agreed to TLS (a failure
    /// after that is one that `prefer` tries again without TLS).
    agreed: Arc<AtomicBool>,
}

/// The handshake in progress.
type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

impl<S> tokio_postgres::tls::TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Self::Future {
        let PgTlsConnect {
            connector,
            name,
            agreed,
        } = self;
        agreed.store(true, Ordering::Relaxed);
        Box::pin(async move {
            let tls = connector.connect(name, stream).await?;
            Ok(PgTlsStream(tls))
        })
    }
}

/// A check's connection over TLS, as tokio-postgres takes it.
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::TlsStream for PgTlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// None: SCRAM authentication goes without channel binding
    /// (SCRAM-SHA-256, not SCRAM-SHA-256-PLUS, which every server that offers
    /// the latter offers too). The binding would tie the password exchange
    /// to this TLS session against a man in the middle, which `verify-full`
    /// keeps out already; tls-server-end-point needs the hash the server's
    /// certificate is signed with, read from the certificate.
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl<S> AsyncRead for PgTlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for PgTlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
