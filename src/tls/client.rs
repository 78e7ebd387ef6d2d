//! TLS from rampart to a pool's servers (`[pool.tls]`): the rustls client config
//! built when the config is read, the name each server is verified against,
//! and the handshake on a new backend connection. Sessions are resumed: every
//! pool shares one client session cache, kept across reloads.

use super::cert::{CaFile, CertFile, CrlFile};
use super::crypto::Built;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;

/// `[pool.tls]`, validated, with its rustls config built.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolTls {
    /// None: not verified (`verify = false` with `insecure = true`).
    pub ca: Option<CaFile>,
    /// The revocation lists servers' certificates are checked against.
    pub crl: Option<CrlFile>,
    /// SNI and the name verified; None: the server's DNS name, or its IP address.
    pub server_name: Option<String>,
    pub cert: Option<Arc<CertFile>>,
    pub built: Built<rustls::ClientConfig>,
}

/// One client session cache for every pool. rustls resumes a session only
/// with the verifier it was made under (each build of a pool's TLS makes a new
/// one), so a session made before a reload that changed the CA or the CRL
/// never skips the new verification.
fn sessions() -> Arc<dyn rustls::client::ClientSessionStore> {
    static S: OnceLock<Arc<rustls::client::ClientSessionMemoryCache>> = OnceLock::new();
    S.get_or_init(|| Arc::new(rustls::client::ClientSessionMemoryCache::new(4096)))
        .clone()
}

impl PoolTls {
    pub fn build(
        ca: Option<CaFile>,
        crl: Option<CrlFile>,
        server_name: Option<String>,
        cert: Option<Arc<CertFile>>,
        alpn: &[&[u8]],
    ) -> Result<PoolTls, BuildError> {
        let provider = super::crypto::provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match &ca {
            Some(ca) => match &crl {
                None => builder.with_root_certificates(Arc::clone(&ca.roots)),
                // every certificate of the chain, an unknown status refused,
                // a stale CRL refused (as OpenSSL's CRL_CHECK_ALL in HAProxy)
                Some(crl) => builder.with_webpki_verifier(
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::clone(&ca.roots),
                        Arc::clone(&provider),
                    )
                    .with_crls(crl.crls.iter().cloned())
                    .enforce_revocation_expiration()
                    .build()?,
                ),
            },
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Insecure(provider))),
        };
        let mut cc = match &cert {
            Some(c) => builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::clone(&c.key)))),
            None => builder.with_no_client_auth(),
        };
        cc.resumption = rustls::client::Resumption::store(sessions());
        cc.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(PoolTls {
            ca,
            crl,
            server_name,
            cert,
            built: Built(Arc::new(cc)),
        })
    }

    /// The name a server is reached and verified under: `server_name`, else the
    /// DNS name it was found under (`source`, "host:port"), else its address.
    pub fn name_for(
        &self,
        source: Option<&str>,
        addr: std::net::SocketAddr,
    ) -> ServerName<'static> {
        let dns = self.server_name.as_deref().or_else(|| {
            source
                .filter(|s| !s.starts_with('_'))
                .and_then(|s| s.rsplit_once(':').map(|(h, _)| h))
        });
        if let Some(n) = dns {
            if let Ok(n) = ServerName::try_from(n.trim_end_matches('.').to_string()) {
                return n;
            }
        }
        ServerName::IpAddress(addr.ip().into())
    }

    /// The TLS handshake on a new connection to a server.
    pub async fn connect(
        &self,
        name: ServerName<'static>,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.built.0))
            .connect(name, stream)
            .await
    }
}

/// Why a pool's ClientConfig could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("ca or crl: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify = false, insecure = true` (and a postgres check's `ssl = "prefer"`
/// or `"require"`): any certificate is accepted, though the handshake
/// signatures are still checked (the peer holds the key of the certificate it
/// shows).
#[derive(Debug)]
pub(super) struct Insecure(pub(super) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
