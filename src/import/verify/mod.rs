//! `rampart import FORMAT FILE --verify`: the differential check. The original
//! proxy (haproxy or nginx, from the machine) and rampart with the converted
//! config run side by side in front of the same local backends, one per pool,
//! each answering with its pool's name; a corpus of requests (the hosts,
//! paths, methods and headers the rules name, and some no rule names) goes
//! through both, and every request whose chosen pool, status or redirect
//! differs is reported.
//!
//! Both configs are moved into a local world first, the same way: every
//! listening address → a loopback port, every server of a pool → that pool's
//! local backend, certificates → a test certificate. What the comparison
//! cannot decide is taken out of both: health checks (the backends are plain
//! HTTP), TLS to servers, the PROXY protocol, and rate limits (timing would
//! decide them). Directives the import reported unsupported are taken out of
//! the original too, so the comparison covers what was mapped and
//! approximated.

mod haproxy;
mod local;
mod nginx;

pub use local::Local;

use super::Imported;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Setup(String),
    #[error("the original does not run here (after being moved to loopback): {0}")]
    Original(String),
    #[error("rampart does not run the converted config: {0}")]
    Rampart(String),
}

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub compared: usize,
    pub differences: Vec<String>,
    /// requests rampart answered "not imported" (a location or rule that the
    /// import left out on purpose)
    pub skipped: usize,
    pub lines: Vec<String>,
}

struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the comparison. `unsupported` are the source lines the import
/// reported unsupported.
pub fn run(
    format: &str,
    src: &str,
    imported: &Imported,
    extra: Option<&Path>,
) -> Result<Outcome, VerifyError> {
    let dir =
        std::env::temp_dir().join(format!("rampart-verify-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| VerifyError::Setup(format!("{}: {e}", dir.display())))?;
    let n = nanos() as u32 ^ std::process::id();
    let mut local = Local {
        dir: dir.clone(),
        ip: std::net::Ipv4Addr::new(
            127,
            100 + (n % 100) as u8,
            (n >> 8) as u8,
            1 + (n >> 16) as u8 % 250,
        ),
        binds: BTreeMap::new(),
        theirs: HashSet::new(),
        pools: BTreeMap::new(),
        pem: PathBuf::new(),
        cert: PathBuf::new(),
        key: PathBuf::new(),
    };
    test_certificate(&mut local)?;
    let unsupported: HashSet<usize> = imported
        .report
        .iter()
        .filter(|e| e.fidelity == super::Fidelity::Unsupported && e.line > 0)
        .map(|e| e.line)
        .collect();
    // the converted config, moved to the local world
    let mut cfg: toml::Table = toml::from_str(&imported.toml)
        .map_err(|e| VerifyError::Setup(format!("the converted config: {e}")))?;
    let listeners = rampart_local(&mut cfg, &mut local);
    // the original, moved the same way
    let (orig_path, mut orig_cmd) = match format {
        "haproxy" => {
            let text = haproxy::rewrite(src, &unsupported, &mut local);
            let p = dir.join("haproxy.cfg");
            std::fs::write(&p, text).map_err(|e| VerifyError::Setup(e.to_string()))?;
            let check = Command::new("haproxy").arg("-c").arg("-f").arg(&p).output();
            match check {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Err(VerifyError::Original(first_alert(
                        &String::from_utf8_lossy(&o.stdout),
                        &String::from_utf8_lossy(&o.stderr),
                    )))
                }
                Err(e) => {
                    return Err(VerifyError::Setup(format!(
                        "haproxy: {e} (install it: apt-get install haproxy)"
                    )))
                }
            }
            let mut c = Command::new("haproxy");
            c.arg("-db").arg("-f").arg(&p);
            (p, c)
        }
        _ => {
            let text = nginx::rewrite(src, &unsupported, &mut local);
            let p = dir.join("nginx.conf");
            std::fs::write(&p, text).map_err(|e| VerifyError::Setup(e.to_string()))?;
            let check = Command::new("nginx")
                .arg("-t")
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&p)
                .output();
            match check {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Err(VerifyError::Original(first_alert(
                        "",
                        &String::from_utf8_lossy(&o.stderr),
                    )))
                }
                Err(e) => {
                    return Err(VerifyError::Setup(format!(
                        "nginx: {e} (install it: apt-get install nginx)"
                    )))
                }
            }
            let mut c = Command::new("nginx");
            c.arg("-p").arg(&dir).arg("-c").arg(&p);
            (p, c)
        }
    };
    let _ = orig_path;
    let ours = dir.join("rampart.toml");
    std::fs::write(&ours, toml::to_string(&cfg).unwrap_or_default())
        .map_err(|e| VerifyError::Setup(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| VerifyError::Setup(e.to_string()))?;
    let check = Command::new(&exe)
        .arg("check")
        .arg("-c")
        .arg(&ours)
        .output();
    match check {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(VerifyError::Rampart(
                String::from_utf8_lossy(&o.stderr).trim().to_string(),
            ))
        }
        Err(e) => return Err(VerifyError::Setup(e.to_string())),
    }
    // the backends, then both proxies
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| VerifyError::Setup(e.to_string()))?;
    for (name, port) in &local.pools {
        let l = rt
            .block_on(tokio::net::TcpListener::bind((local.ip, *port)))
            .map_err(|e| VerifyError::Setup(format!("backend {name}: {e}")))?;
        rt.spawn(backend(l, name.clone()));
    }
    let log = |n: &str| {
        std::fs::File::create(dir.join(n))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    let mut procs = Procs(Vec::new());
    procs.0.push(
        orig_cmd
            .stdout(log("original.out"))
            .stderr(log("original.err"))
            .spawn()
            .map_err(|e| VerifyError::Setup(e.to_string()))?,
    );
    procs.0.push(
        Command::new(&exe)
            .arg("run")
            .arg("-c")
            .arg(&ours)
            .stdout(Stdio::null())
            .stderr(log("rampart.err"))
            .spawn()
            .map_err(|e| VerifyError::Setup(e.to_string()))?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let in_ours: HashSet<&String> = listeners.iter().flat_map(|l| l.binds.iter()).collect();
    for (addr, (ours, theirs)) in &local.binds {
        // an address only the original has: its frontend was left out
        // (reported); only rampart: a placeholder listener (reported)
        let ports: Vec<&u16> = [
            in_ours.contains(addr).then_some(ours),
            local.theirs.contains(addr).then_some(theirs),
        ]
        .into_iter()
        .flatten()
        .collect();
        for port in ports {
            while TcpStream::connect((local.ip, *port)).is_err() {
                if Instant::now() > deadline {
                    let which = if port == ours { "rampart" } else { format };
                    let err = std::fs::read_to_string(dir.join(if port == ours {
                        "rampart.err"
                    } else {
                        "original.err"
                    }))
                    .unwrap_or_default();
                    return Err(VerifyError::Setup(format!(
                        "{which} is not listening for {addr} ({}:{port}) after 10 s: {}",
                        local.ip,
                        err.lines().last().unwrap_or("")
                    )));
                }
                std::thread::sleep(Duration::from_millis(20)); // polling pace
            }
        }
    }
    let tls = crate::tls::client::PoolTls::build(None, None, None, &[b"http/1.1"])
        .map_err(|e| VerifyError::Setup(e.to_string()))?;
    let tls = Arc::clone(&tls.built.0);
    let mut outcome = Outcome::default();
    let extra_reqs = match extra {
        Some(p) => read_requests(p)?,
        None => Vec::new(),
    };
    // every host, path, method and header any rule names, at every listener
    let all = Listener {
        name: String::new(),
        binds: Vec::new(),
        tls: false,
        tcp: false,
        rules: listeners.iter().flat_map(|l| l.rules.clone()).collect(),
    };
    for l in &listeners {
        let mut reqs = if l.tcp {
            requests_for(l)
        } else {
            requests_for(&all)
        };
        reqs.extend(extra_reqs.iter().cloned());
        for addr in &l.binds {
            let Some(&(ours, theirs)) = local
                .binds
                .get(addr)
                .filter(|_| local.theirs.contains(addr))
            else {
                continue;
            };
            // both answer at all before anything is compared (a socket
            // accepts before its process serves)
            if let Some(r) = reqs.first() {
                let deadline = Instant::now() + Duration::from_secs(10);
                for port in [theirs, ours] {
                    while rt
                        .block_on(send(local.ip, port, l.tls.then_some(&tls), r, l.tcp))
                        .error
                        .is_some()
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(50)); // polling pace
                    }
                }
            }
            for r in &reqs {
                let mut a = rt.block_on(send(local.ip, theirs, l.tls.then_some(&tls), r, l.tcp));
                let mut b = rt.block_on(send(local.ip, ours, l.tls.then_some(&tls), r, l.tcp));
                if !a.same(&b) && (a.error.is_some() || b.error.is_some()) {
                    // a connection error is asked again once before it counts
                    a = rt.block_on(send(local.ip, theirs, l.tls.then_some(&tls), r, l.tcp));
                    b = rt.block_on(send(local.ip, ours, l.tls.then_some(&tls), r, l.tcp));
                }
                if b.not_imported {
                    outcome.skipped += 1;
                    continue;
                }
                outcome.compared += 1;
                let line = format!(
                    "{} {addr} {} {} {}{}: {format} {} | rampart {}",
                    l.name,
                    r.method,
                    r.host,
                    r.path,
                    r.header
                        .as_ref()
                        .map(|(n, v)| format!(" [{n}: {v}]"))
                        .unwrap_or_default(),
                    a.show(),
                    b.show()
                );
                if a.same(&b) {
                    outcome.lines.push(format!("same: {line}"));
                } else {
                    outcome.differences.push(line);
                }
            }
        }
    }
    drop(procs);
    if std::env::var_os("RAMPART_VERIFY_KEEP").is_some() {
        eprintln!("verify: both configs and logs are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(outcome)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0)
}

fn first_alert(out: &str, err: &str) -> String {
    err.lines()
        .chain(out.lines())
        .find(|l| l.contains("ALERT") || l.contains("emerg") || l.contains("[error]"))
        .unwrap_or_else(|| err.lines().next().unwrap_or("failed"))
        .trim()
        .to_string()
}

fn test_certificate(local: &mut Local) -> Result<(), VerifyError> {
    let cert = local.dir.join("cert.pem");
    let key = local.dir.join("key.pem");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=verify.invalid",
            "-addext",
            "subjectAltName=DNS:verify.invalid",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| {
            VerifyError::Setup(format!(
                "openssl: {e} (a test certificate for TLS listeners)"
            ))
        })?;
    if !o.status.success() {
        return Err(VerifyError::Setup(format!(
            "openssl: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    let mut pem = std::fs::read(&cert).map_err(|e| VerifyError::Setup(e.to_string()))?;
    pem.extend(std::fs::read(&key).map_err(|e| VerifyError::Setup(e.to_string()))?);
    let both = local.dir.join("both.pem");
    std::fs::write(&both, pem).map_err(|e| VerifyError::Setup(e.to_string()))?;
    local.pem = both;
    local.cert = cert;
    local.key = key;
    Ok(())
}

/// A listener of the converted config, as the request corpus needs it.
#[derive(Debug, Clone)]
struct Listener {
    name: String,
    binds: Vec<String>,
    tls: bool,
    tcp: bool,
    rules: Vec<toml::Table>,
}

/// The converted config moved to the local world; its listeners as they
/// were (for the request corpus).
fn rampart_local(cfg: &mut toml::Table, local: &mut Local) -> Vec<Listener> {
    use toml::Value;
    for k in [
        "admin",
        "resolver",
        "ha",
        "rate_limit_store",
        "rate_limit",
        "tier",
    ] {
        cfg.remove(k);
    }
    let g = cfg
        .entry("global")
        .or_insert_with(|| Value::Table(toml::Table::new()));
    if let Some(g) = g.as_table_mut() {
        g.insert("threads".into(), Value::Integer(1));
        g.remove("state_file");
    }
    let mut out = Vec::new();
    if let Some(ls) = cfg.get_mut("listener").and_then(Value::as_array_mut) {
        for l in ls.iter_mut().filter_map(Value::as_table_mut) {
            let binds: Vec<String> = l
                .get("bind")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let rules: Vec<toml::Table> = l
                .get("rule")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
                .unwrap_or_default();
            out.push(Listener {
                name: l
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                binds: binds.clone(),
                tls: l.contains_key("tls"),
                tcp: l.get("mode").and_then(Value::as_str) == Some("tcp"),
                rules,
            });
            let local_binds: Vec<Value> = binds
                .iter()
                .map(|b| {
                    let ip = local.ip;
                    Value::String(format!("{ip}:{}", local.bind(b).0))
                })
                .collect();
            l.insert("bind".into(), Value::Array(local_binds));
            l.remove("proxy_protocol");
            if let Some(t) = l.get_mut("tls").and_then(Value::as_table_mut) {
                t.insert(
                    "cert".into(),
                    Value::Array(vec![Value::String(local.pem.display().to_string())]),
                );
                t.remove("client_ca");
                t.remove("client_auth");
            }
            if let Some(rs) = l.get_mut("rule").and_then(Value::as_array_mut) {
                for r in rs.iter_mut().filter_map(Value::as_table_mut) {
                    r.remove("rate_limit");
                }
                const ACTIONS: [&str; 11] = [
                    "deny",
                    "redirect",
                    "pool",
                    "set_header",
                    "add_header",
                    "del_header",
                    "response_set_header",
                    "response_del_header",
                    "writes",
                    "priority",
                    "rate_limit",
                ];
                rs.retain(|r| {
                    r.as_table()
                        .is_some_and(|t| t.keys().any(|k| ACTIONS.contains(&k.as_str())))
                });
            }
        }
    }
    if let Some(ps) = cfg.get_mut("pool").and_then(Value::as_array_mut) {
        for p in ps.iter_mut().filter_map(Value::as_table_mut) {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let port = local.pool_port(&name);
            let mut sv = toml::Table::new();
            sv.insert(
                "address".into(),
                Value::String(format!("{}:{port}", local.ip)),
            );
            p.insert("server".into(), Value::Array(vec![Value::Table(sv)]));
            for k in ["health", "tls", "send_proxy", "circuit"] {
                p.remove(k);
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Req {
    method: String,
    host: String,
    path: String,
    header: Option<(String, String)>,
}

/// Requests for a listener: every host and path its rules name (and a
/// request outside each), each method and header they name.
fn requests_for(l: &Listener) -> Vec<Req> {
    let mut hosts: Vec<String> = vec!["unknown.example".into()];
    let mut paths: Vec<String> = vec!["/".into(), "/zz-unmatched/x".into()];
    let mut methods: Vec<String> = vec!["GET".into()];
    let mut headers: Vec<(String, String)> = Vec::new();
    for r in &l.rules {
        if let Some(h) = r.get("host").and_then(|v| v.as_str()) {
            let h = h
                .strip_prefix("*.")
                .map(|d| format!("www.{d}"))
                .unwrap_or_else(|| h.to_string());
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        if let Some(p) = r.get("path").and_then(|v| v.as_str()) {
            paths.push(p.to_string());
        }
        if let Some(p) = r.get("path_prefix").and_then(|v| v.as_str()) {
            paths.push(p.to_string());
            paths.push(format!("{}{}x", p, if p.ends_with('/') { "" } else { "/" }));
        }
        if let Some(re) = r.get("path_regex").and_then(|v| v.as_str()) {
            // a literal that matches the plainer regexes
            let lit: String = re
                .trim_start_matches("(?i)")
                .trim_start_matches('^')
                .replace("\\.", ".")
                .replace("\\/", "/")
                .chars()
                .filter(|c| c.is_alphanumeric() || "/._-".contains(*c))
                .collect();
            if !lit.is_empty() {
                paths.push(if lit.starts_with('/') {
                    lit
                } else {
                    format!("/x/{lit}")
                });
            }
        }
        if let Some(ms) = r.get("method").and_then(|v| v.as_array()) {
            for m in ms.iter().filter_map(|m| m.as_str()) {
                if !methods.iter().any(|x| x == m) {
                    methods.push(m.to_string());
                }
            }
        }
        if let Some(h) = r.get("header").and_then(|v| v.as_table()) {
            if let Some(n) = h.get("name").and_then(|v| v.as_str()) {
                let v = h.get("value").and_then(|v| v.as_str()).unwrap_or("1");
                headers.push((n.to_string(), v.to_string()));
            }
        }
    }
    paths.sort();
    paths.dedup();
    if l.tcp {
        return vec![Req {
            method: "GET".into(),
            host: "unknown.example".into(),
            path: "/".into(),
            header: None,
        }];
    }
    let mut out = Vec::new();
    for h in &hosts {
        for p in &paths {
            out.push(Req {
                method: "GET".into(),
                host: h.clone(),
                path: p.clone(),
                header: None,
            });
        }
    }
    for m in methods.iter().skip(1) {
        for p in &paths {
            out.push(Req {
                method: m.clone(),
                host: hosts.get(1).unwrap_or(&hosts[0]).clone(),
                path: p.clone(),
                header: None,
            });
        }
    }
    for hd in &headers {
        for p in &paths {
            out.push(Req {
                method: "GET".into(),
                host: hosts.get(1).unwrap_or(&hosts[0]).clone(),
                path: p.clone(),
                header: Some(hd.clone()),
            });
        }
    }
    out.truncate(400);
    out
}

/// `METHOD HOST PATH [NAME: VALUE]` per line; `#` comments.
fn read_requests(p: &Path) -> Result<Vec<Req>, VerifyError> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| VerifyError::Setup(format!("{}: {e}", p.display())))?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let mut w = l.splitn(4, ' ');
        let (Some(m), Some(h), Some(path)) = (w.next(), w.next(), w.next()) else {
            return Err(VerifyError::Setup(format!(
                "{}:{}: METHOD HOST PATH [NAME: VALUE] expected",
                p.display(),
                i + 1
            )));
        };
        let header = w
            .next()
            .and_then(|hv| hv.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()));
        out.push(Req {
            method: m.to_string(),
            host: h.to_string(),
            path: path.to_string(),
            header,
        });
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Answer {
    status: u16,
    location: Option<String>,
    pool: Option<String>,
    error: Option<String>,
    not_imported: bool,
}

impl Answer {
    fn show(&self) -> String {
        if let Some(e) = &self.error {
            return format!("error ({e})");
        }
        let mut s = format!("{}", self.status);
        if let Some(p) = &self.pool {
            s.push_str(&format!(" pool={p}"));
        }
        if let Some(l) = &self.location {
            s.push_str(&format!(" location={l}"));
        }
        s
    }
    fn same(&self, o: &Answer) -> bool {
        // a connection both close without an answer is the same answer
        if self.error.is_some() || o.error.is_some() {
            return self.error.is_some() && o.error.is_some();
        }
        self.status == o.status && self.pool == o.pool && self.location == o.location
    }
}

async fn backend(l: tokio::net::TcpListener, name: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nx-verify-pool: {name}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

async fn send(
    ip: std::net::Ipv4Addr,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
    r: &Req,
    tcp: bool,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        r.method, r.path, r.host
    );
    if let Some((n, v)) = &r.header {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if r.method == "POST" || r.method == "PUT" || r.method == "PATCH" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    let _ = tcp;
    let go = async {
        let s = tokio::net::TcpStream::connect(SocketAddr::from((ip, port))).await?;
        let mut buf = Vec::new();
        match tls {
            Some(cfg) => {
                let name =
                    rustls_pki_types::ServerName::try_from(r.host.clone()).unwrap_or_else(|_| {
                        rustls_pki_types::ServerName::try_from("verify.invalid".to_string())
                            .expect("a valid name")
                    });
                let mut t = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name, s)
                    .await?;
                t.write_all(head.as_bytes()).await?;
                let _ = t.read_to_end(&mut buf).await;
            }
            None => {
                let mut s = s;
                s.write_all(head.as_bytes()).await?;
                let _ = s.read_to_end(&mut buf).await;
            }
        }
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    let buf = match tokio::time::timeout(Duration::from_secs(5), go).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Answer {
                error: Some(e.kind().to_string()),
                ..Answer::default()
            }
        }
        Err(_) => {
            return Answer {
                error: Some("timeout".into()),
                ..Answer::default()
            }
        }
    };
    parse_answer(&buf)
}

fn parse_answer(buf: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Answer {
            error: Some(if buf.is_empty() {
                "closed".into()
            } else {
                "no complete answer".into()
            }),
            ..Answer::default()
        };
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut a = Answer {
        status,
        ..Answer::default()
    };
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            match n.trim().to_ascii_lowercase().as_str() {
                "location" => a.location = Some(v.trim().to_string()),
                "x-verify-pool" => a.pool = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    a.not_imported = status == 501 && body.starts_with("not imported");
    a
}
