//! Moving the VIP: add/remove the address with rtnetlink, announce it with
//! gratuitous ARP (IPv4, raw AF_PACKET) or an unsolicited neighbour advertisement
//! (IPv6, raw ICMPv6). Linux only; every call returns an io::Error, never panics.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;

/// The interface's index.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name:?}"),
        ))
    } else {
        Ok(i)
    }
}

/// The interface's MAC address.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a MAC address",
        ));
    }
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not a MAC address"))?;
    }
    Ok(m)
}

/// Is the link up (operstate up, or unknown on interfaces that do not report it)?
pub fn link_up(name: &str) -> bool {
    let op =
        std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")).unwrap_or_default();
    let carrier =
        std::fs::read_to_string(format!("/sys/class/net/{name}/carrier")).unwrap_or_default();
    matches!(op.trim(), "up" | "unknown") && carrier.trim() != "0"
}

fn netlink_addr(msg_type: u16, flags: u16, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (family, bytes, ifa_flags) = match addr {
        IpAddr::V4(v) => (libc::AF_INET as u8, v.octets().to_vec(), 0u8),
        IpAddr::V6(v) => (libc::AF_INET6 as u8, v.octets().to_vec(), IFA_F_NODAD),
    };
    let attr_len = 4 + bytes.len();
    let attr_space = (attr_len + 3) & !3;
    let total = 16 + 8 + 2 * attr_space;
    let mut b: Vec<u8> = Vec::with_capacity(total);
    b.extend_from_slice(&(total as u32).to_ne_bytes());
    b.extend_from_slice(&msg_type.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes()); // seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
    b.extend_from_slice(&[family, prefix, ifa_flags, 0 /* RT_SCOPE_UNIVERSE */]);
    b.extend_from_slice(&index.to_ne_bytes());
    for kind in [IFA_LOCAL, IFA_ADDRESS] {
        b.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&bytes);
        b.resize(b.len() + attr_space - attr_len, 0);
    }
    nl_send(&fd, &b)?;
    let mut resp = [0u8; 4096];
    let n = nl_recv(&fd, &mut resp)?;
    if n >= 20 && u16::from_ne_bytes([resp[4], resp[5]]) == NLMSG_ERROR {
        let err = i32::from_ne_bytes([resp[16], resp[17], resp[18], resp[19]]);
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
    }
    Ok(())
}

/// Adds `addr/prefix` to the interface; already present counts as success.
pub fn add(index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    reinstate(index, addr, prefix).map(drop)
}

/// Adds `addr/prefix` if it is not on the interface: Ok(true) if it was
/// missing (someone removed it: `ip addr flush`, a network manager that
/// restarted) and is back, Ok(false) if it was there.
pub fn reinstate(index: u32, addr: IpAddr, prefix: u8) -> io::Result<bool> {
    match netlink_addr(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        index,
        addr,
        prefix,
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `addr/prefix`; absent counts as success.
pub fn remove(index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    match netlink_addr(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, index, addr, prefix) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT) | Some(libc::ESRCH)
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// One gratuitous ARP request: "who has VIP? tell VIP (at this MAC)", broadcast.
pub fn gratuitous_arp(index: u32, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    // SAFETY: sockaddr_ll is plain data.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = index as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: buffer and address are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            f.as_ptr().cast(),
            f.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One unsolicited neighbour advertisement for `ip` (override flag set) to all nodes.
pub fn unsolicited_na(index: u32, mac: [u8; 6], ip: Ipv6Addr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.set_multicast_hops_v6(255)?;
    s.set_multicast_if_v6(index)?;
    s.bind(&SocketAddrV6::new(ip, 0, 0, index).into())?;
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&[136, 0, 0, 0]); // NA; the kernel fills the checksum
    p.extend_from_slice(&[0x20, 0, 0, 0]); // Override
    p.extend_from_slice(&ip.octets());
    p.extend_from_slice(&[2, 1]); // target link-layer address option, 8 bytes
    p.extend_from_slice(&mac);
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
    s.send_to(&p, &all_nodes.into())?;
    Ok(())
}

/// Announces `ip` once on the interface.
pub fn announce(index: u32, mac: [u8; 6], ip: IpAddr) -> io::Result<()> {
    match ip {
        IpAddr::V4(v) => gratuitous_arp(index, mac, v),
        IpAddr::V6(v) => unsolicited_na(index, mac, v),
    }
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
/// Every TCP state but LISTEN (TCP_LISTEN = 10).
const TCP_NOT_LISTEN: u32 = 0xFFF & !(1 << 10);

/// Resets every TCP connection (not listener) of this network namespace whose
/// local address is `addr`, as `ss -K src ADDR` does (SOCK_DESTROY: the kernel
/// sends the peer a RST and the owner sees ECONNABORTED). Run before the VIP
/// leaves: once it is gone, what this node would send on those connections
/// (answers, FIN) can no longer leave it, and their clients, waiting, would be
/// told nothing until their own timeouts. The number reset.
pub fn reset_connections(addr: IpAddr) -> io::Result<usize> {
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut found: Vec<(u8, [u8; 48])> = Vec::new();
    let families: &[u8] = match addr {
        // an IPv4 VIP is also reached through dual-stack sockets (::ffff:a.b.c.d)
        IpAddr::V4(_) => &[libc::AF_INET as u8, libc::AF_INET6 as u8],
        IpAddr::V6(_) => &[libc::AF_INET6 as u8],
    };
    for &family in families {
        nl_send(
            &fd,
            &diag_req(
                SOCK_DIAG_BY_FAMILY,
                NLM_F_DUMP,
                family,
                TCP_NOT_LISTEN,
                &[0; 48],
            ),
        )?;
        let mut buf = vec![0u8; 32 * 1024];
        'dump: loop {
            let n = nl_recv(&fd, &mut buf)?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                if len < 16 || off + len > n {
                    break 'dump;
                }
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => {
                        let err = buf
                            .get(off + 16..off + 20)
                            .map_or(0, |e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        // inet_diag_msg: family, state, timer, retrans, then the id
                        if let Some(m) = buf.get(off + 16..off + 16 + 52) {
                            let mut id = [0u8; 48];
                            id.copy_from_slice(&m[4..52]);
                            if local_is(m[0], &id, addr) {
                                found.push((m[0], id));
                            }
                        }
                    }
                    _ => {}
                }
                off += (len + 3) & !3;
            }
        }
    }
    let mut reset = 0;
    for (family, id) in &found {
        nl_send(
            &fd,
            &diag_req(SOCK_DESTROY, NLM_F_ACK, *family, u32::MAX, id),
        )?;
        let mut ack = [0u8; 256];
        let n = nl_recv(&fd, &mut ack)?;
        if n >= 20 && u16::from_ne_bytes([ack[4], ack[5]]) == NLMSG_ERROR {
            match i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]) {
                0 => reset += 1,
                // closed meanwhile
                e if -e == libc::ENOENT => {}
                e => return Err(io::Error::from_raw_os_error(-e)),
            }
        }
    }
    Ok(reset)
}

/// Whether a socket id's source address (16 bytes at offset 4) is `addr`.
fn local_is(family: u8, id: &[u8; 48], addr: IpAddr) -> bool {
    let src = &id[4..20];
    match addr {
        IpAddr::V4(v) if family == libc::AF_INET as u8 => src[..4] == v.octets(),
        IpAddr::V4(v) => src == v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => family == libc::AF_INET6 as u8 && src == v.octets(),
    }
}

/// An inet_diag_req_v2 for TCP, in a netlink message.
fn diag_req(kind: u16, flags: u16, family: u8, states: u32, id: &[u8; 48]) -> Vec<u8> {
    let total: u32 = 16 + 56;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&total.to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes()); // seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid
    b.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    b.extend_from_slice(&states.to_ne_bytes());
    b.extend_from_slice(id);
    b
}

fn nl_send(fd: &OwnedFd, b: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid "to the kernel" address.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: buffer and address are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            b.as_ptr().cast(),
            b.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn nl_recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable buffer of that length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
