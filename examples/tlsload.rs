//! A TLS load generator for bench/tls.py: N concurrent loops, each opening a
//! new TLS connection per request (a full handshake, or a resumed one with
//! `--resume`), sending one `GET /` with `Connection: close` and reading the
//! answer to its end. Each loop is a client of its own (its own session
//! cache). Prints one JSON line: requests, errors, resumed, seconds.
//! The server's certificate is not verified (its cost would be the client's,
//! on the load generator's CPU).
//!
//!   tlsload ADDR SNI CONNECTIONS SECONDS [--resume]

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct Anything;

impl ServerCertVerifier for Anything {
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
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rampart::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: tlsload ADDR SNI CONNECTIONS SECONDS [--resume]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let sni = ServerName::try_from(args[2].clone()).expect("SNI");
    let conns: usize = args[3].parse().expect("CONNECTIONS");
    let secs: f64 = args[4].parse().expect("SECONDS");
    let resume = args.iter().any(|a| a == "--resume");
    let mut cfg = rustls::ClientConfig::builder_with_provider(rampart::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    // each loop is one client with its own session cache (rustls keeps at most 8
    // TLS 1.3 tickets per server name in a cache: 50 loops sharing one would
    // starve each other of tickets, which no real client does)
    let connector_for = move || {
        let mut c = cfg.clone();
        if resume {
            c.resumption = rustls::client::Resumption::in_memory_sessions(8);
        }
        tokio_rustls::TlsConnector::from(Arc::new(c))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (ok, errors, resumed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (connector, sni) = (connector_for(), sni.clone());
            let (ok, errors, resumed) = (ok.clone(), errors.clone(), resumed.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while Instant::now() < end {
                    let one = async {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        tcp.set_nodelay(true)?;
                        let mut s = connector.connect(sni.clone(), tcp).await?;
                        if s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                            .await?;
                        let mut got = Vec::new();
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) => break,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                                // a server that closes without close_notify
                                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                                Err(e) => return Err(e),
                            }
                        }
                        Ok::<bool, std::io::Error>(got.starts_with(b"HTTP/1.1 200"))
                    };
                    match one.await {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    println!(
        "{{\"requests\": {}, \"errors\": {}, \"resumed\": {}, \"seconds\": {:.3}}}",
        ok.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}
