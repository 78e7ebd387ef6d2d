//! TLS with rustls: the certificates of listeners and pools (checked when the
//! config is read, see `cert`), the server side of a listener (`server`: SNI,
//! ALPN, client certificates, tickets, the handshake at accept time), the client
//! side towards backends (`client`), the TLS a postgres health check asks for
//! inside the Postgres protocol (`postgres`) and the SNI peek of passthrough
//! routing (`sni`); the crypto provider they share (`crypto`).

pub mod cert;
pub mod client;
mod crypto;
pub mod postgres;
pub mod server;
pub mod sni;

pub use cert::{CaFile, CertError, CertFile};
pub use client::PoolTls;
pub use crypto::{provider, version_name, Built};
pub use postgres::{PgSslMode, PgTls};
pub use server::{ListenerTls, ServerTls, TlsInfo};

#[cfg(not(any(feature = "aws-lc", feature = "ring")))]
compile_error!("rampart needs a TLS crypto provider: the feature \"aws-lc\" (default) or \"ring\"");
