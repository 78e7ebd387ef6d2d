//! Certificates and keys from PEM files, checked when the config is read: the key
//! matches its certificate, every certificate of the chain parses, and none has
//! expired (one expiring within `EXPIRY_WARNING` is a warning). What is kept is
//! the ready-to-serve `CertifiedKey` plus what the rest of rampart reads from it
//! (names for SNI, expiry for the metrics, the file for messages).

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A throwaway self-signed ECDSA P-256 certificate for `name` (its subject
/// and its one DNS name, not a CA), valid two days, made in `dir` with the
/// openssl CLI: the paths of the certificate and of its key, PEM. For
/// `import --verify`'s TLS listeners and for tests.
pub fn self_signed(dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let o = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .args(["-addext", "basicConstraints=CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    if !o.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    Ok((cert, key))
}

/// A certificate that expires sooner than this is served, with a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What is wrong with a certificate or key file; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: String },
    #[error(
        "{path}: no PEM private key in it (put the key in the same file, or give key = \"...\")"
    )]
    NoKey { path: String },
    #[error("{path}: {what} is not valid PEM: {reason}")]
    Pem {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: certificate {index} of the chain does not parse: {reason}")]
    Parse {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("{path}: the private key is not usable: {reason}")]
    Key { path: String, reason: String },
    #[error("{path}: the private key does not match the certificate")]
    KeyMismatch { path: String },
    #[error("{path}: no PEM CRL (-----BEGIN X509 CRL-----) in it")]
    NoCrl { path: String },
    #[error("{path}: CRL {index} does not parse: {reason}")]
    CrlParse {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("{path}: two CRLs of {issuer}: only the first would be read (rustls takes the first of an issuer, where OpenSSL takes the newest); keep the newest alone")]
    CrlTwice { path: String, issuer: String },
    #[error("{path}: the CRL of {issuer} {why}: rustls would refuse every certificate it covers")]
    CrlSignature {
        path: String,
        issuer: String,
        why: String,
    },
    #[error("{path}: no usable CRL in it: delta CRLs only (Delta CRL Indicator), which are not read (as nginx and HAProxy do not read them); give the full CRL of each CA")]
    OnlyDeltaCrls { path: String },
    #[error("{path}: the certificate ({subject}) expired on {expired}")]
    Expired {
        path: String,
        subject: String,
        expired: String,
    },
}

/// One served certificate: its chain and key, loaded and checked.
pub struct CertFile {
    pub path: PathBuf,
    pub key_path: Option<PathBuf>,
    /// The file contents, for telling whether a reload changed anything.
    bytes: Vec<u8>,
    pub key: Arc<CertifiedKey>,
    /// DNS names it serves, lower case (subjectAltName, or the CN without one);
    /// wildcards as `*.example.com`.
    pub names: Vec<String>,
    pub subject: String,
    /// Seconds since the epoch.
    pub not_after: i64,
}

impl PartialEq for CertFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.key_path == other.key_path && self.bytes == other.bytes
    }
}

impl std::fmt::Debug for CertFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFile")
            .field("path", &self.path)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file, in order.
pub fn read_certs(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), CertError> {
    let bytes = read(path)?;
    let certs = parse_certs(path, &bytes)?;
    Ok((bytes, certs))
}

fn parse_certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let p = || path.display().to_string();
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem {
            path: p(),
            what: "a certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate { path: p() });
    }
    for (index, c) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c) {
            return Err(CertError::Parse {
                path: p(),
                index,
                reason: e.to_string(),
            });
        }
    }
    Ok(certs)
}

/// What the first certificate of a chain says about itself.
pub struct Leaf {
    pub names: Vec<String>,
    pub subject: String,
    pub not_after: i64,
}

/// Reads the names, subject and expiry of a certificate (already known to parse).
pub fn leaf(der: &[u8]) -> Option<Leaf> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    names.push(d.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let ip = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert.subject().iter_common_name().next() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    Some(Leaf {
        names,
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// A UNIX time as `2026-11-30T12:00:00.000Z`.
pub fn utc(t: i64) -> String {
    crate::clock::rfc3339(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl CertFile {
    /// Loads a chain and its key (from `key_path`, or from the same file) and
    /// checks them. Ok carries a warning when the certificate expires soon.
    pub fn load(
        path: &Path,
        key_path: Option<&Path>,
    ) -> Result<(CertFile, Option<String>), CertError> {
        let (mut bytes, chain) = read_certs(path)?;
        let key_file = key_path.unwrap_or(path);
        let key_bytes = match key_path {
            Some(k) => {
                let b = read(k)?;
                bytes.extend_from_slice(&b);
                b
            }
            None => bytes.clone(),
        };
        let kp = || key_file.display().to_string();
        let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
            Ok(k) => k,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(CertError::NoKey { path: kp() })
            }
            Err(e) => {
                return Err(CertError::Pem {
                    path: kp(),
                    what: "the private key",
                    reason: e.to_string(),
                })
            }
        };
        let signer = super::crypto::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::Key {
                path: kp(),
                reason: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertError::KeyMismatch { path: kp() })
            }
            // Unknown: the provider cannot tell for this key type; rustls then
            // finds out at the first handshake, as before keys_match existed.
            Err(_) => {}
        }
        let p = || path.display().to_string();
        let leaf = leaf(&certified.cert[0]).ok_or_else(|| CertError::Parse {
            path: p(),
            index: 0,
            reason: "unreadable".into(),
        })?;
        let now = now();
        if leaf.not_after < now {
            return Err(CertError::Expired {
                path: p(),
                subject: leaf.subject,
                expired: utc(leaf.not_after),
            });
        }
        let warning = (leaf.not_after - now < EXPIRY_WARNING.as_secs() as i64).then(|| {
            format!(
                "{}: the certificate ({}) expires on {}, in less than 14 days",
                p(),
                leaf.subject,
                utc(leaf.not_after)
            )
        });
        Ok((
            CertFile {
                path: path.to_path_buf(),
                key_path: key_path.map(Path::to_path_buf),
                bytes,
                key: Arc::new(certified),
                names: leaf.names,
                subject: leaf.subject,
                not_after: leaf.not_after,
            },
            warning,
        ))
    }
}

/// A set of CA certificates (client_ca, a pool's ca), with its file contents for
/// telling whether a reload changed it.
#[derive(Clone)]
pub struct CaFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
    /// The OS trust store's roots, hashed (0 for a file, whose bytes say it):
    /// a reload that finds them changed (a root distrusted by an update)
    /// builds the TLS config anew.
    system: u64,
    pub roots: Arc<rustls::RootCertStore>,
}

impl CaFile {
    /// The file's bytes as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for CaFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.bytes == other.bytes && self.system == other.system
    }
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl CaFile {
    /// Read from a file (not the system's store).
    pub fn from_file(&self) -> bool {
        !self.bytes.is_empty()
    }

    pub fn load(path: &Path) -> Result<CaFile, CertError> {
        let (bytes, certs) = read_certs(path)?;
        let mut roots = rustls::RootCertStore::empty();
        for (index, c) in certs.into_iter().enumerate() {
            roots.add(c).map_err(|e| CertError::Parse {
                path: path.display().to_string(),
                index,
                reason: e.to_string(),
            })?;
        }
        Ok(CaFile {
            path: path.to_path_buf(),
            bytes,
            system: 0,
            roots: Arc::new(roots),
        })
    }

    /// The system's trusted roots (/etc/ssl/certs and the like).
    pub fn system() -> Result<CaFile, CertError> {
        let found = rustls_native_certs::load_native_certs();
        let system = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for c in &found.certs {
                c.as_ref().hash(&mut h);
            }
            h.finish()
        };
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(CertError::Read {
                path: "system trust store".into(),
                reason: match found.errors.first() {
                    Some(e) => e.to_string(),
                    None => "no certificates found".into(),
                },
            });
        }
        Ok(CaFile {
            path: PathBuf::from("system"),
            bytes: Vec::new(),
            system,
            roots: Arc::new(roots),
        })
    }
}

/// A PEM file of certificate revocation lists (a listener's `client_crl`, a
/// pool's `crl`), checked when the config is read: every CRL parses, no two
/// are of one issuer (and issuing distribution point), and (`against`) each
/// CRL of a CA of the CA file is signed by that CA's key. A CRL past its
/// nextUpdate is loaded with a warning: as in nginx and HAProxy, every
/// certificate it covers is then refused, and an unrelated reload is not.
/// A delta CRL is left out, with a warning, as nginx and HAProxy leave it out
/// (OpenSSL without `X509_V_FLAG_USE_DELTAS`), where rustls would refuse the
/// file.
/// Cloned with the pool's or listener's TLS config (a DNS refresh clones
/// it): its contents are shared.
#[derive(Clone)]
pub struct CrlFile {
    pub path: PathBuf,
    bytes: Arc<[u8]>,
    pub crls: Arc<[rustls_pki_types::CertificateRevocationListDer<'static>]>,
    /// Each CRL's issuer, DER (its distinguished name), then as text.
    pub issuers: Arc<[(Vec<u8>, String)]>,
    /// The earliest nextUpdate of the file's CRLs, seconds since the epoch
    /// (None when no CRL has one: then it never goes stale), and the issuer
    /// of that CRL.
    pub next_update: Option<i64>,
    stalest: String,
}

impl PartialEq for CrlFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.bytes == other.bytes
    }
}

impl std::fmt::Debug for CrlFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlFile")
            .field("path", &self.path)
            .field("crls", &self.crls.len())
            .field("next_update", &self.next_update)
            .finish()
    }
}

impl CrlFile {
    /// The file's bytes as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Loads and checks the file. Ok carries warnings: the delta CRLs left out.
    pub fn load(path: &Path) -> Result<(CrlFile, Vec<String>), CertError> {
        use rustls_pki_types::CertificateRevocationListDer as Der;
        use x509_parser::oid_registry::OID_X509_EXT_DELTA_CRL_INDICATOR;
        let p = || path.display().to_string();
        let bytes = read(path)?;
        let all: Vec<Der<'static>> = Der::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::Pem {
                path: p(),
                what: "a CRL",
                reason: e.to_string(),
            })?;
        if all.is_empty() {
            return Err(CertError::NoCrl { path: p() });
        }
        let mut crls = Vec::with_capacity(all.len());
        let mut issuers = Vec::with_capacity(all.len());
        let mut skipped = Vec::new();
        // (issuer, issuing distribution point) of each, to find one twice
        let mut scopes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(all.len());
        let mut next_update: Option<i64> = None;
        let mut stalest = String::new();
        for (index, der) in all.into_iter().enumerate() {
            let bad = |reason: String| CertError::CrlParse {
                path: p(),
                index,
                reason,
            };
            let (_, crl) =
                x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| bad(e.to_string()))?;
            let issuer = crl.issuer();
            if crl
                .extensions()
                .iter()
                .any(|e| e.oid == OID_X509_EXT_DELTA_CRL_INDICATOR)
            {
                skipped.push(format!(
                    "{}: CRL {index} (of {issuer}) is a delta CRL: left out, as nginx and HAProxy leave it out; only full CRLs are read, and what only the delta revokes is not refused until the next full CRL",
                    p()
                ));
                continue;
            }
            // what rustls will check signatures and serials against
            webpki::OwnedCertRevocationList::from_der(der.as_ref())
                .map_err(|e| bad(format!("{e:?}")))?;
            let idp = crl
                .extensions()
                .iter()
                .find(|e| {
                    e.oid == x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT
                })
                .map(|e| e.value.to_vec());
            let scope = (issuer.as_raw().to_vec(), idp);
            if scopes.contains(&scope) {
                return Err(CertError::CrlTwice {
                    path: p(),
                    issuer: issuer.to_string(),
                });
            }
            scopes.push(scope);
            if let Some(next) = crl.next_update().map(|t| t.timestamp()) {
                if next_update.is_none_or(|n| next < n) {
                    next_update = Some(next);
                    stalest = issuer.to_string();
                }
            }
            issuers.push((issuer.as_raw().to_vec(), issuer.to_string()));
            crls.push(der);
        }
        if crls.is_empty() {
            return Err(CertError::OnlyDeltaCrls { path: p() });
        }
        Ok((
            CrlFile {
                path: path.to_path_buf(),
                bytes: bytes.into(),
                crls: crls.into(),
                issuers: issuers.into(),
                next_update,
                stalest,
            },
            skipped,
        ))
    }

    /// Whether a CRL of the file is past its nextUpdate, as a warning.
    pub fn stale(&self) -> Option<String> {
        let next = self.next_update.filter(|&n| n < now())?;
        Some(format!(
            "{}: the CRL of {} went stale on {} (its nextUpdate): every certificate it covers is refused until a fresh one is given (as nginx and HAProxy refuse them)",
            self.path.display(),
            self.stalest,
            utc(next)
        ))
    }

    /// What a CA file and this CRL file say to each other. Refused: a CRL of
    /// a CA of the file that no certificate of the file with that name
    /// verifies (a CA re-keyed under its old name: rustls would refuse every
    /// certificate the CRL covers, in the handshake). Warnings: a CRL issued
    /// by no certificate of the CA file (it revokes nothing: a typo, or a CRL
    /// of an intermediate the clients send), and a certificate of the CA file
    /// with no CRL (what it issued has no revocation status, and is refused,
    /// as OpenSSL's CRL_CHECK_ALL refuses it in nginx and HAProxy).
    pub fn against(&self, ca: &CaFile) -> Result<Vec<String>, CertError> {
        let mut out = Vec::new();
        // each certificate's subject, DER then as text, and its
        // SubjectPublicKeyInfo, DER
        let certs: Vec<(Vec<u8>, String, Vec<u8>)> = match parse_certs(&ca.path, ca.bytes()) {
            Ok(certs) => certs
                .iter()
                .filter_map(|c| {
                    let (_, c) = x509_parser::parse_x509_certificate(c).ok()?;
                    let subject = c.subject();
                    Some((
                        subject.as_raw().to_vec(),
                        subject.to_string(),
                        c.public_key().raw.to_vec(),
                    ))
                })
                .collect(),
            Err(_) => return Ok(out),
        };
        // issuers and crls are in step (load pushes both or neither)
        for ((raw, name), der) in self.issuers.iter().zip(self.crls.iter()) {
            let keys: Vec<&[u8]> = certs
                .iter()
                .filter(|(s, _, _)| s == raw)
                .map(|(_, _, k)| k.as_slice())
                .collect();
            if keys.is_empty() {
                out.push(format!(
                    "{}: the CRL of {name} was issued by no certificate of {}: it revokes nothing unless clients send that CA as an intermediate",
                    self.path.display(),
                    ca.path.display()
                ));
            } else {
                let why = |why: String| CertError::CrlSignature {
                    path: self.path.display().to_string(),
                    issuer: name.clone(),
                    why,
                };
                match signed_by(der.as_ref(), &keys) {
                    Signed::Unparsed => return Err(why("does not parse".into())),
                    // (as rustls does in a handshake that needs the CRL; a
                    // root's, under an intermediate of the file, is not)
                    Signed::Unsupported => out.push(format!(
                        "{}: the CRL of {name} is signed with an algorithm rustls does not verify: a handshake that needs it fails",
                        self.path.display()
                    )),
                    Signed::By(v) if !v.contains(&true) => return Err(why(format!(
                        "is not signed by the key of any certificate of {} named so (a CA re-keyed under the same name?)",
                        ca.path.display()
                    ))),
                    // a CA being re-keyed: the handshake checks the CRL with
                    // the key that verified the client's chain
                    Signed::By(v) if v.contains(&false) => out.push(format!(
                        "{}: the CRL of {name} is signed by one key of that name in {} and not by {} other: what the other key issued is refused (its revocation status cannot be read)",
                        self.path.display(),
                        ca.path.display(),
                        v.iter().filter(|ok| !**ok).count()
                    )),
                    Signed::By(_) => {}
                }
            }
        }
        for (raw, name, _) in &certs {
            if !self.issuers.iter().any(|(s, _)| s == raw) {
                out.push(format!(
                    "{}: no CRL of {name} (a certificate of {}): every certificate it issued is refused, its revocation status being unknown",
                    self.path.display(),
                    ca.path.display()
                ));
            }
        }
        Ok(out)
    }
}

/// What the keys named as a CRL's issuer say of its signature.
#[derive(Debug, PartialEq)]
enum Signed {
    Unparsed,
    /// No signature algorithm of the crypto provider is the CRL's.
    Unsupported,
    /// Whether each distinct key verifies it.
    By(Vec<bool>),
}

/// Checks the signature of a CRL (`der`) with the keys of the certificates
/// named as its issuer (`keys`, SubjectPublicKeyInfos, DER), as rustls checks
/// it in a handshake: with the crypto provider's signature algorithms,
/// matched to the CRL's signature algorithm and to the key's algorithm byte
/// for byte, as webpki matches them (`verify_signed_data`). A key given
/// twice (a cross-signed CA) is one.
fn signed_by(der: &[u8], keys: &[&[u8]]) -> Signed {
    let Some((tbs, alg, signature)) = signed_parts(der) else {
        return Signed::Unparsed;
    };
    let provider = super::crypto::provider();
    let algs: Vec<_> = provider
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|a| a.signature_alg_id().as_ref() == alg)
        .collect();
    if algs.is_empty() {
        return Signed::Unsupported;
    }
    let mut distinct: Vec<&[u8]> = keys.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    Signed::By(
        distinct
            .iter()
            .map(|k| {
                alg_and_bits(contents(k).unwrap_or_default()).is_some_and(|(key_alg, key)| {
                    algs.iter().any(|a| {
                        a.public_key_alg_id().as_ref() == key_alg
                            && a.verify_signature(key, tbs, signature).is_ok()
                    })
                })
            })
            .collect(),
    )
}

/// A signed X.509 structure (a CRL, a certificate: SEQUENCE { tbs,
/// AlgorithmIdentifier, BIT STRING }) in the pieces webpki verifies: the
/// signed bytes (the tbs whole, its tag and length too), the signature
/// algorithm and the signature (as `alg_and_bits` gives them).
fn signed_parts(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    use x509_parser::asn1_rs::{Any, FromDer};
    let signed = contents(der)?;
    let (rest, _) = Any::from_der(signed).ok()?;
    let tbs = signed.strip_suffix(rest)?;
    let (alg, signature) = alg_and_bits(rest)?;
    Some((tbs, alg, signature))
}

/// The contents of the DER element `der` starts with.
fn contents(der: &[u8]) -> Option<&[u8]> {
    use x509_parser::asn1_rs::{Any, FromDer};
    Any::from_der(der).ok().map(|(_, any)| any.data)
}

/// An AlgorithmIdentifier then a BIT STRING (what ends a signed structure;
/// a SubjectPublicKeyInfo's contents), as rustls's signature algorithms take
/// them: the AlgorithmIdentifier's contents (the form of their ids) and the
/// bits, which must fill their last byte.
fn alg_and_bits(der: &[u8]) -> Option<(&[u8], &[u8])> {
    use x509_parser::asn1_rs::{Any, FromDer, Tag};
    let (rest, alg) = Any::from_der(der).ok()?;
    let (_, bits) = Any::from_der(rest).ok()?;
    if alg.tag() != Tag::Sequence || bits.tag() != Tag::BitString {
        return None;
    }
    Some((alg.data, bits.data.strip_prefix(&[0u8])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate is signed as a CRL is (tbs, AlgorithmIdentifier, BIT
    /// STRING): a self-signed one verifies with its own key, found among
    /// others, and not with the key of another of the same name (a CA
    /// re-keyed).
    #[test]
    fn a_signature_verifies_with_its_signers_key_only() {
        fn first(path: &Path) -> Vec<u8> {
            read_certs(path).unwrap().1.remove(0).to_vec()
        }
        fn key(cert: &[u8]) -> Vec<u8> {
            let (_, c) = x509_parser::parse_x509_certificate(cert).unwrap();
            c.public_key().raw.to_vec()
        }
        let dir = std::env::temp_dir().join(format!("rampart-cert-sig-{}", std::process::id()));
        let (one, two) = (dir.join("one"), dir.join("two"));
        std::fs::create_dir_all(&one).unwrap();
        std::fs::create_dir_all(&two).unwrap();
        let signed = first(&self_signed(&one, "sig.test").unwrap().0);
        let other = first(&self_signed(&two, "sig.test").unwrap().0);
        let _ = std::fs::remove_dir_all(&dir);
        let (own, rekeyed) = (key(&signed), key(&other));
        assert_eq!(
            signed_by(&signed, &[own.as_slice()]),
            Signed::By(vec![true])
        );
        // a CA re-keyed under its name: each key says, and one given twice
        // (cross-signed) is one
        let both = signed_by(
            &signed,
            &[rekeyed.as_slice(), own.as_slice(), own.as_slice()],
        );
        let Signed::By(v) = both else {
            panic!("{both:?}")
        };
        assert_eq!((v.len(), v.iter().filter(|ok| **ok).count()), (2, 1));
        assert_eq!(
            signed_by(&signed, &[rekeyed.as_slice()]),
            Signed::By(vec![false])
        );
        assert_eq!(signed_by(b"junk", &[own.as_slice()]), Signed::Unparsed);
        // the pieces are x509-parser's: the tbs whole (tag and length too),
        // the signature without the BIT STRING's unused-bits byte
        let (tbs, _, signature) = signed_parts(&signed).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&signed).unwrap();
        let raw: &[u8] = c.tbs_certificate.as_ref();
        assert_eq!(tbs, raw);
        assert_eq!(signature, &*c.signature_value.data);
    }
}
