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
    /// certificate and key in one file, and each alone
    pub pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A free port on `ip` (0 when there is none: the run then fails to bind it,
/// and says so).
fn free_port(ip: std::net::Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
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
        let p = (free_port(self.ip), free_port(self.ip));
        self.binds.insert(addr.to_string(), p);
        p
    }
    /// The local backend's port for a pool (by its name in rampart's config).
    pub fn pool_port(&mut self, name: &str) -> u16 {
        if let Some(p) = self.pools.get(name) {
            return *p;
        }
        let p = free_port(self.ip);
        self.pools.insert(name.to_string(), p);
        p
    }
}
