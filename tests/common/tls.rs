//! Certificates for TLS tests, made with the real `openssl` command line: a CA,
//! server certificates with SANs (ECDSA P-256, RSA-2048 or Ed25519 keys), client
//! certificates, expired ones. And a rustls client that reports what it saw.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Ecdsa,
    Rsa,
    Ed25519,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn genkey(dir: &Path, file: &str, key: Key) {
    match key {
        Key::Ecdsa => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                file,
            ],
        ),
        Key::Rsa => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                file,
            ],
        ),
        Key::Ed25519 => openssl(dir, &["genpkey", "-algorithm", "ED25519", "-out", file]),
    }
}

/// A certificate authority in its own folder.
pub struct Pki {
    pub dir: PathBuf,
    pub name: String,
}

/// A certificate made by a Pki: its files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate, chain (the CA) and key in one PEM file, as rampart takes it.
    pub pem: PathBuf,
    pub crt: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// The leaf certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::pem_file_iter(&self.crt)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = super::temp_dir(&format!("pki-{}", name.replace(' ', "_")));
        genkey(&dir, "ca.key", Key::Ecdsa);
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                &format!("/CN={name}"),
                "-days",
                "30",
                "-out",
                "ca.pem",
            ],
        );
        Pki {
            dir,
            name: name.into(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `cn` with these DNS names, valid for `days` (negative:
    /// expired that many days ago... or rather, its notAfter is before now).
    pub fn issue(&self, file: &str, cn: &str, dns: &[&str], key: Key, days: i32) -> Issued {
        let dir = &self.dir;
        let k = format!("{file}.key");
        genkey(dir, &k, key);
        let csr = format!("{file}.csr");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &k,
                "-subj",
                &format!("/CN={cn}/O=Rampart Tests"),
                "-out",
                &csr,
            ],
        );
        let mut ext =
            String::from("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n");
        if !dns.is_empty() {
            let names: Vec<String> = dns
                .iter()
                .map(|d| match d.parse::<std::net::IpAddr>() {
                    Ok(_) => format!("IP:{d}"),
                    Err(_) => format!("DNS:{d}"),
                })
                .collect();
            ext.push_str(&format!("subjectAltName={}\n", names.join(",")));
        }
        let extf = format!("{file}.ext");
        std::fs::write(dir.join(&extf), ext).unwrap();
        let crt = format!("{file}.crt");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                &days.to_string(),
                "-extfile",
                &extf,
                "-out",
                &crt,
            ],
        );
        let pem = dir.join(format!("{file}.pem"));
        let mut all = std::fs::read(dir.join(&crt)).unwrap();
        all.extend(std::fs::read(self.ca()).unwrap());
        all.extend(std::fs::read(dir.join(&k)).unwrap());
        std::fs::write(&pem, all).unwrap();
        Issued {
            pem,
            crt: dir.join(crt),
            key: dir.join(k),
        }
    }

    /// A CRL of this CA, in `file` (PEM) of its folder, revoking `revoked`;
    /// `stale`: its nextUpdate has passed (a day in 2025), else it is a week
    /// from now. Its path.
    pub fn crl(&self, file: &str, revoked: &[&Issued], stale: bool) -> PathBuf {
        self.make_crl(file, revoked, stale, false)
    }

    /// A delta CRL of this CA (CRL number 2, its Delta CRL Indicator naming
    /// base CRL 1, what `crl` makes), revoking nothing, in `file`. Its path.
    pub fn delta_crl(&self, file: &str) -> PathBuf {
        self.make_crl(file, &[], false, true)
    }

    fn make_crl(&self, file: &str, revoked: &[&Issued], stale: bool, delta: bool) -> PathBuf {
        let dir = &self.dir;
        let (cnf, index, number) = (
            format!("{file}.cnf"),
            format!("{file}.index"),
            format!("{file}.crlnumber"),
        );
        // OpenSSL's config reads no value for deltaCRL: it is given as DER
        // (INTEGER 1, the base CRL's number)
        std::fs::write(
            dir.join(&cnf),
            format!("[ca]\ndefault_ca = d\n[d]\ndatabase = {index}\ncrlnumber = {number}\ndefault_md = sha256\ndefault_crl_days = 7\n[delta]\ndeltaCRL = critical,DER:02:01:01\n"),
        )
        .unwrap();
        std::fs::write(dir.join(&index), "").unwrap();
        std::fs::write(dir.join(&number), if delta { "02\n" } else { "01\n" }).unwrap();
        let ca = ["-config", &cnf, "-keyfile", "ca.key", "-cert", "ca.pem"];
        for r in revoked {
            let crt = r.crt.display().to_string();
            openssl(dir, &[&["ca"][..], &ca, &["-revoke", &crt]].concat());
        }
        let mut args = [&["ca"][..], &ca, &["-gencrl", "-out", file]].concat();
        if delta {
            args.extend(["-crlexts", "delta"]);
        }
        if stale {
            args.extend([
                "-crl_lastupdate",
                "250101000000Z",
                "-crl_nextupdate",
                "250102000000Z",
            ]);
        }
        openssl(dir, &args);
        dir.join(file)
    }

    pub fn server(&self, file: &str, dns: &[&str]) -> Issued {
        self.issue(
            file,
            dns.first().copied().unwrap_or(file),
            dns,
            Key::Ecdsa,
            30,
        )
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        use rustls_pki_types::pem::PemObject;
        let mut r = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(self.ca()).unwrap() {
            r.add(c.unwrap()).unwrap();
        }
        r
    }
}

/// A rustls client config trusting `pki`, offering `alpn`.
pub fn client_config(pki: &Pki, alpn: &[&str]) -> rustls::ClientConfig {
    let mut c = rustls::ClientConfig::builder_with_provider(rampart::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    c
}

/// What a handshake gave the client.
#[derive(Debug)]
pub struct Seen {
    /// The server's leaf certificate, DER.
    pub cert: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
}

/// Connects to `addr` with TLS, SNI `sni` (None: no SNI; the name verified is
/// `verify_as` then), and returns the stream and what the client saw.
pub async fn connect(
    cfg: rustls::ClientConfig,
    addr: std::net::SocketAddr,
    sni: Option<&str>,
    verify_as: &str,
) -> std::io::Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Seen)> {
    let mut cfg = cfg;
    cfg.enable_sni = sni.is_some();
    let name =
        rustls_pki_types::ServerName::try_from(sni.unwrap_or(verify_as).to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    let c = s.get_ref().1;
    let seen = Seen {
        cert: c.peer_certificates().unwrap()[0].to_vec(),
        alpn: c.alpn_protocol().map(<[u8]>::to_vec),
        version: c.protocol_version(),
    };
    Ok((s, seen))
}

/// Runs `openssl s_client` with `args`, stdin from `input`; returns its output
/// (stdout and stderr) and whether it succeeded.
pub fn s_client(addr: std::net::SocketAddr, args: &[&str], input: &[u8]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs curl with `args`; returns (exit status success, stdout, stderr).
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP/1.1 server over TLS (rustls) with one certificate: answers every
/// request with its name (and `connection: close` when `close_each`), and
/// counts handshakes, resumed ones, and the SNI it was asked for.
pub struct TlsBackend {
    pub addr: std::net::SocketAddr,
    pub handshakes: Arc<std::sync::atomic::AtomicUsize>,
    pub resumed: Arc<std::sync::atomic::AtomicUsize>,
    pub sni: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn server_config(cert: &Issued) -> rustls::ServerConfig {
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&cert.pem)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    rustls::ServerConfig::builder_with_provider(rampart::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}

pub async fn tls_backend(name: &str, cert: &Issued, close_each: bool) -> TlsBackend {
    tls_backend_with(name, server_config(cert), close_each).await
}

/// A TLS backend that requires a client certificate issued by `clients`.
pub async fn mtls_backend(name: &str, cert: &Issued, clients: &Pki) -> TlsBackend {
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&cert.pem)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let provider = rampart::tls::provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(clients.roots()),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    tls_backend_with(name, cfg, false).await
}

async fn tls_backend_with(name: &str, cfg: rustls::ServerConfig, close_each: bool) -> TlsBackend {
    use std::sync::atomic::Ordering;
    let listener = super::listen(super::free_addr("127.0.0.1")).await;
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let handshakes: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let resumed: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let sni: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let (h, r, s) = (handshakes.clone(), resumed.clone(), sni.clone());
    let name: Arc<str> = Arc::from(name);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, h, r, s, name) = (
                acceptor.clone(),
                h.clone(),
                r.clone(),
                s.clone(),
                name.clone(),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let c = tls.get_ref().1;
                if c.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    r.fetch_add(1, Ordering::SeqCst);
                }
                s.lock().unwrap().push(c.server_name().map(str::to_string));
                let svc = hyper::service::service_fn(move |_req| {
                    let name = name.clone();
                    async move {
                        let mut resp = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(name.to_string()),
                        ));
                        if close_each {
                            resp.headers_mut().insert(
                                hyper::header::CONNECTION,
                                hyper::header::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsBackend {
        addr,
        handshakes,
        resumed,
        sni,
        task,
    }
}

/// One HTTP/1.1 GET over an established TLS stream; (status, body).
pub async fn get_over<S>(stream: S, host: &str, path: &str) -> Result<(u16, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The same over HTTP/2 (the stream negotiated h2 by ALPN).
pub async fn get_over_h2<S>(stream: S, host: &str, path: &str) -> Result<(u16, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://{host}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A certificate's notAfter, seconds since the epoch (by `openssl x509`).
pub fn cert_not_after(cert: &Issued) -> i64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(&cert.crt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text.trim().trim_start_matches("notAfter=");
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// rustls's ClientHello for `name`, as a client sends it (an IP address:
/// one without a server name).
pub fn client_hello(name: &str) -> Vec<u8> {
    // (no certificate is verified: it never gets that far)
    let cfg = rustls::ClientConfig::builder_with_provider(rampart::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}
