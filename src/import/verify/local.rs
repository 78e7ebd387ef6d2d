//! The loopback ports of one verification run.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// Loopback ports: the listening addresses (by the address rampart's config
/// names them), each with a port for rampart and one for the original; and a
/// backend per pool.
#[derive(Debug)]
pub struct Local {
    pub dir: PathBuf,
    /// The loopback address of this run (127.x.y.z, its own: runs side by
    /// side never share a port).
    pub ip: std::net::Ipv4Addr,
    pub binds: BTreeMap<String, (u16, u16)>,
    /// the addresses the original listens on
    pub theirs: HashSet<String>,
    pub pools: BTreeMap<String, u16>,
    /// rampart's admin port (0: not chosen yet): its own, so that runs side
    /// by side do not both take the default 8404
    pub admin: u16,
    /// certificate and key in one file, and each alone
    pub pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A free port on `ip`, below the kernel's ephemeral range (32768 and up by
/// default): a port the kernel hands out could be taken as the source port
/// of a connection to `ip` (rampart's to the local backends) before the
/// original server binds it, which CI once saw as HAProxy failing to start
/// its listener. 0 when none is found: the run then fails to bind it, and
/// says so. Not one this run has handed out already, nor one of `also`.
fn free_port(local: &Local, also: &[u16]) -> u16 {
    let given = |p: u16| {
        also.contains(&p)
            || local.binds.values().any(|&(a, b)| a == p || b == p)
            || local.pools.values().any(|&a| a == p)
            || local.admin == p
    };
    (0..200)
        .map(|_| fastrand::u16(10_000..32_768))
        .find(|&p| !given(p) && std::net::TcpListener::bind((local.ip, p)).is_ok())
        .unwrap_or(0)
}

impl Local {
    /// The original's port for a listening address.
    pub fn original_port(&mut self, addr: &str) -> u16 {
        self.theirs.insert(addr.to_string());
        self.bind(addr).1
    }
    pub(super) fn bind(&mut self, addr: &str) -> (u16, u16) {
        if let Some(p) = self.binds.get(addr) {
            return *p;
        }
        let ours = free_port(self, &[]);
        let p = (ours, free_port(self, &[ours]));
        self.binds.insert(addr.to_string(), p);
        p
    }
    /// rampart's admin port.
    pub fn admin_port(&mut self) -> u16 {
        if self.admin == 0 {
            self.admin = free_port(self, &[]);
        }
        self.admin
    }
    /// The local backend's port for a pool (by its name in rampart's config).
    pub fn pool_port(&mut self, name: &str) -> u16 {
        if let Some(p) = self.pools.get(name) {
            return *p;
        }
        let p = free_port(self, &[]);
        self.pools.insert(name.to_string(), p);
        p
    }
}
