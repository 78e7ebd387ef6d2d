//! Network namespaces a test creates and removes itself (needs root): hosts on a
//! private bridge or a veth pair, with documentation-range addresses. Traffic never
//! leaves these namespaces.

use std::process::Command;

/// Runs `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) is not installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named namespace, deleted on drop (with every process still in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Netns {
            name: name.to_string(),
        }
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // kill whatever still runs in it, then remove it
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(p) = pid.parse::<i32>() {
                    // SAFETY: kill(2) on a process in our own test namespace.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Connects two namespaces with a veth pair and gives each end an address (CIDR).
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str, tag: &str) {
    let (ea, eb) = (format!("va{tag}"), format!("vb{tag}"));
    ip(&[
        "link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns", &b.name,
    ]);
    ip(&["-n", &a.name, "addr", "add", a_addr, "dev", &ea]);
    ip(&["-n", &b.name, "addr", "add", b_addr, "dev", &eb]);
    ip(&["-n", &a.name, "link", "set", &ea, "up"]);
    ip(&["-n", &b.name, "link", "set", &eb, "up"]);
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
