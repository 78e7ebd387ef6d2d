//! The crypto provider every TLS piece uses, and what they share.

use std::sync::{Arc, OnceLock};

/// The crypto provider everything TLS uses: aws-lc-rs, chosen by measurement
/// (README; with `--no-default-features --features ring`, ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(P.get_or_init(|| {
        #[cfg(feature = "aws-lc")]
        let p = rustls::crypto::aws_lc_rs::default_provider();
        #[cfg(all(feature = "ring", not(feature = "aws-lc")))]
        let p = rustls::crypto::ring::default_provider();
        Arc::new(p)
    }))
}

/// Session ticket keys: rotated every 6 hours by the provider's ticketer.
pub(crate) fn new_ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    #[cfg(feature = "aws-lc")]
    return rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(all(feature = "ring", not(feature = "aws-lc")))]
    return rustls::crypto::ring::Ticketer::new();
}

/// A value built from config fields that the config compares instead (a rustls
/// config is not comparable): always equal, so a config's equality is its fields'.
#[derive(Clone)]
pub struct Built<T>(pub Arc<T>);

impl<T> PartialEq for Built<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Built<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Built")
    }
}

/// TLS protocol version names as OpenSSL and HAProxy write them.
pub fn version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(_) => "other",
        None => "none",
    }
}
