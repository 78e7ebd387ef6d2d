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

mod error;
mod exchange;
mod haproxy;
mod local;
mod nginx;

pub use error::VerifyError;
pub use local::Local;

use exchange::{backend, read_requests, requests_for, send, Listener};

use super::Imported;
use std::collections::{BTreeMap, HashSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        admin: 0,
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
    let tls = crate::tls::client::PoolTls::build(None, None, None, None, &[b"http/1.1"])
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
    let (cert, key) = crate::tls::cert::self_signed(&local.dir, "verify.invalid").map_err(|e| {
        VerifyError::Setup(format!(
            "openssl: {e} (a test certificate for TLS listeners)"
        ))
    })?;
    let mut pem = std::fs::read(&cert).map_err(|e| VerifyError::Setup(e.to_string()))?;
    pem.extend(std::fs::read(&key).map_err(|e| VerifyError::Setup(e.to_string()))?);
    let both = local.dir.join("both.pem");
    std::fs::write(&both, pem).map_err(|e| VerifyError::Setup(e.to_string()))?;
    local.pem = both;
    local.cert = cert;
    local.key = key;
    Ok(())
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
    let mut admin = toml::Table::new();
    let port = local.admin_port();
    admin.insert("bind".into(), Value::String(format!("{}:{port}", local.ip)));
    cfg.insert("admin".into(), Value::Table(admin));
    let g = cfg
        .entry("global")
        .or_insert_with(|| Value::Table(toml::Table::new()));
    if let Some(g) = g.as_table_mut() {
        g.insert("threads".into(), Value::Integer(1));
        g.remove("state_file");
        g.remove("error_pages");
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
            // pages change no status: their files need not be here
            l.remove("error_pages");
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
                const ACTIONS: [&str; 12] = [
                    "deny",
                    "redirect",
                    "respond",
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
