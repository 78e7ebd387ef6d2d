//! The heartbeat message: fixed size, versioned, HMAC-SHA256 tagged.
//!
//! ```text
//! 0   magic "RMPT"        4
//! 4   version (1)         1
//! 5   state               1   (0 init, 1 backup, 2 master, 3 fault)
//! 6   priority            1   (0 = "I am leaving, take over now")
//! 7   reserved (0)        1
//! 8   advert interval ms  4   big endian
//! 12  node id             32  UTF-8, zero padded
//! 44  boot id             8   increases on every start
//! 52  sequence            8   increases on every message of a boot
//! 60  timestamp ms        8   sender's wall clock (informational)
//! 68  HMAC-SHA256 tag     32  over bytes 0..68 || sender IP || receiver IP
//! ```
//! Binding the tag to both addresses stops a captured message from being replayed
//! from, or reflected to, another node. Parsing never panics on any input.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

pub const MAGIC: &[u8; 4] = b"RMPT";
pub const VERSION: u8 = 1;
pub const BODY_LEN: usize = 68;
pub const TAG_LEN: usize = 32;
pub const LEN: usize = BODY_LEN + TAG_LEN;
pub const NODE_ID_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WireState {
    Init = 0,
    Backup = 1,
    Master = 2,
    Fault = 3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub state: WireState,
    pub priority: u8,
    pub interval_ms: u32,
    pub node_id: String,
    pub boot_id: u64,
    pub seq: u64,
    pub timestamp_ms: u64,
}

/// Why a message was dropped (each has its own counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("wrong size")]
    Size,
    #[error("bad magic")]
    Magic,
    #[error("unsupported version")]
    Version,
    #[error("malformed field")]
    Malformed,
    #[error("bad or missing authentication tag")]
    Auth,
    #[error("replayed or old sequence")]
    Replay,
    #[error("a first advert (or a new boot's) whose timestamp is over 5 minutes from this clock")]
    Stale,
    #[error("from a node that is not a configured peer")]
    UnknownPeer,
}

impl Reject {
    pub fn label(self) -> &'static str {
        match self {
            Reject::Size => "size",
            Reject::Magic => "magic",
            Reject::Version => "version",
            Reject::Malformed => "malformed",
            Reject::Auth => "auth",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
            Reject::UnknownPeer => "unknown_peer",
        }
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn tag(key: &[u8], body: &[u8], from: IpAddr, to: IpAddr) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(body);
    mac.update(&ip_bytes(from));
    mac.update(&ip_bytes(to));
    Some(mac)
}

impl Advert {
    /// Encodes the message for the path `from` -> `to`, signed with `key` (HMAC-SHA256)
    /// unless it is None (`auth = "none"`).
    pub fn encode(&self, key: Option<&[u8]>, from: IpAddr, to: IpAddr) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = self.state as u8;
        b[6] = self.priority;
        b[8..12].copy_from_slice(&self.interval_ms.to_be_bytes());
        let id = self.node_id.as_bytes();
        let n = id.len().min(NODE_ID_LEN);
        b[12..12 + n].copy_from_slice(&id[..n]);
        b[44..52].copy_from_slice(&self.boot_id.to_be_bytes());
        b[52..60].copy_from_slice(&self.seq.to_be_bytes());
        b[60..68].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        if let Some(k) = key {
            if let Some(mac) = tag(k, &b[..BODY_LEN], from, to) {
                b[BODY_LEN..].copy_from_slice(&mac.finalize().into_bytes());
            }
        }
        b
    }

    /// Parses and verifies a message that arrived from `from` at `to`.
    pub fn decode(
        buf: &[u8],
        key: Option<&[u8]>,
        from: IpAddr,
        to: IpAddr,
    ) -> Result<Advert, Reject> {
        match key {
            Some(k) => Advert::decode_any(buf, &[k], from, to).map(|(a, _)| a),
            None => {
                frame(buf)?;
                parse(buf)
            }
        }
    }

    /// Parses a message that arrived from `from` at `to` and verifies it under
    /// the first of `keys` whose tag it carries (each compared in constant
    /// time), returned with that key's index. None of them (or no keys at
    /// all): refused as `Auth`.
    pub fn decode_any(
        buf: &[u8],
        keys: &[&[u8]],
        from: IpAddr,
        to: IpAddr,
    ) -> Result<(Advert, usize), Reject> {
        frame(buf)?;
        let i = keys
            .iter()
            .position(|k| {
                tag(k, &buf[..BODY_LEN], from, to)
                    .is_some_and(|mac| mac.verify_slice(&buf[BODY_LEN..]).is_ok())
            })
            .ok_or(Reject::Auth)?;
        Ok((parse(buf)?, i))
    }
}

/// The checks that come before the tag's: size, magic and version.
fn frame(buf: &[u8]) -> Result<(), Reject> {
    if buf.len() != LEN {
        return Err(Reject::Size);
    }
    if &buf[0..4] != MAGIC {
        return Err(Reject::Magic);
    }
    if buf[4] != VERSION {
        return Err(Reject::Version);
    }
    Ok(())
}

/// The fields of a message `frame` accepted (`LEN` bytes).
fn parse(buf: &[u8]) -> Result<Advert, Reject> {
    let state = match buf[5] {
        0 => WireState::Init,
        1 => WireState::Backup,
        2 => WireState::Master,
        3 => WireState::Fault,
        _ => return Err(Reject::Malformed),
    };
    let id = &buf[12..44];
    let end = id.iter().position(|&c| c == 0).unwrap_or(NODE_ID_LEN);
    let node_id = std::str::from_utf8(&id[..end]).map_err(|_| Reject::Malformed)?;
    if node_id.is_empty() || id[end..].iter().any(|&c| c != 0) {
        return Err(Reject::Malformed);
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&buf[i..i + 8]);
        u64::from_be_bytes(a)
    };
    let mut iv = [0u8; 4];
    iv.copy_from_slice(&buf[8..12]);
    Ok(Advert {
        state,
        priority: buf[6],
        interval_ms: u32::from_be_bytes(iv),
        node_id: node_id.to_string(),
        boot_id: u64_at(44),
        seq: u64_at(52),
        timestamp_ms: u64_at(60),
    })
}

/// Per-peer replay protection: only (boot_id, seq) newer than the last accepted.
///
/// Within a boot, only a higher sequence is accepted. A message from a new boot (or
/// the first one heard) must carry a timestamp within `fresh` of our wall clock, so
/// an old capture replayed later is refused. boot_id is the sender's wall clock at
/// start, so a node restarted with its clock behind (a VM before NTP) has a smaller
/// boot_id: it is accepted once the peer has been silent for `restart_after`.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    /// node id -> ((boot_id, seq), when accepted in ms on the caller's clock)
    last: std::collections::HashMap<String, ((u64, u64), u64)>,
}

impl ReplayGuard {
    #[cfg(test)]
    pub fn accept(&mut self, a: &Advert) -> Result<(), Reject> {
        self.accept_at(a, 0, u64::MAX, 0, u64::MAX)
    }

    /// `now` is the local monotonic ms, `wall_ms` the local wall clock.
    pub fn accept_at(
        &mut self,
        a: &Advert,
        now: u64,
        restart_after: u64,
        wall_ms: u64,
        fresh: u64,
    ) -> Result<(), Reject> {
        let key = (a.boot_id, a.seq);
        let fresh_ts = a.timestamp_ms.abs_diff(wall_ms) <= fresh;
        let ok = match self.last.get(&a.node_id) {
            // a first message, or a new boot, must be recent: old captures are not
            None => fresh_ts,
            Some(((prev_boot, prev_seq), _)) if a.boot_id == *prev_boot => a.seq > *prev_seq,
            // a later boot; or an earlier one (a clock stepped back) once the peer
            // has been silent long enough to have really restarted
            Some(((prev_boot, _), at)) => {
                fresh_ts && (a.boot_id > *prev_boot || now.saturating_sub(*at) >= restart_after)
            }
        };
        if !ok {
            // a capture from long ago, or a peer whose clock is that far
            // from this one: told apart for the operator (the second is a
            // split brain until the clocks agree)
            let first = !matches!(self.last.get(&a.node_id), Some(((b, _), _)) if *b == a.boot_id);
            return Err(if first && !fresh_ts {
                Reject::Stale
            } else {
                Reject::Replay
            });
        }
        self.last.insert(a.node_id.clone(), (key, now));
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn sample() -> Advert {
        advert(42)
    }

    /// A MASTER's advert of sequence number `seq` (for the key ring's tests too).
    pub(in crate::ha) fn advert(seq: u64) -> Advert {
        Advert {
            state: WireState::Master,
            priority: 150,
            interval_ms: 1000,
            node_id: "lb-a".into(),
            boot_id: 1_700_000_000_000,
            seq,
            timestamp_ms: 1_700_000_000_123,
        }
    }

    fn a() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }
    fn b() -> IpAddr {
        "192.0.2.2".parse().unwrap()
    }

    #[test]
    fn round_trip() {
        let key = Some(&[7u8; 32][..]);
        let m = sample();
        let bytes = m.encode(key, a(), b());
        assert_eq!(bytes.len(), LEN);
        assert_eq!(Advert::decode(&bytes, key, a(), b()), Ok(m.clone()));
        let none = m.encode(None, a(), b());
        assert_eq!(Advert::decode(&none, None, a(), b()), Ok(m));
    }

    #[test]
    fn tampering_wrong_key_wrong_path_and_truncation_are_rejected() {
        let key = Some(&[7u8; 32][..]);
        let bytes = sample().encode(key, a(), b());
        // every single-byte change of the body or tag
        for i in 0..LEN {
            let mut t = bytes;
            t[i] ^= 0x01;
            assert!(
                Advert::decode(&t, key, a(), b()).is_err(),
                "byte {i} flipped was accepted"
            );
        }
        assert_eq!(
            Advert::decode(&bytes, Some(&[8u8; 32][..]), a(), b()),
            Err(Reject::Auth)
        );
        // reflected to another receiver, or claimed from another sender
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(Advert::decode(&bytes, key, a(), c), Err(Reject::Auth));
        assert_eq!(Advert::decode(&bytes, key, c, b()), Err(Reject::Auth));
        // unsigned message to a node that wants a key
        let unsigned = sample().encode(None, a(), b());
        assert_eq!(Advert::decode(&unsigned, key, a(), b()), Err(Reject::Auth));
        for n in [0, 1, 4, 67, 99, 101] {
            let mut v = bytes.to_vec();
            v.resize(n, 0);
            assert_eq!(Advert::decode(&v, key, a(), b()), Err(Reject::Size));
        }
    }

    #[test]
    fn decode_any_names_the_first_key_that_verifies() {
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let m = sample();
        let bytes = m.encode(Some(&k2[..]), a(), b());
        assert_eq!(
            Advert::decode_any(&bytes, &[&k1[..], &k2[..]], a(), b()),
            Ok((m.clone(), 1))
        );
        assert_eq!(
            Advert::decode_any(&bytes, &[&k2[..], &k2[..]], a(), b()),
            Ok((m, 0))
        );
        assert_eq!(
            Advert::decode_any(&bytes, &[&k1[..], &k3[..]], a(), b()),
            Err(Reject::Auth)
        );
        // no key at all verifies nothing (auth = "none" is `decode(.., None, ..)`)
        assert_eq!(Advert::decode_any(&bytes, &[], a(), b()), Err(Reject::Auth));
        // the frame is checked before any key
        assert_eq!(
            Advert::decode_any(&bytes[..10], &[&k2[..]], a(), b()),
            Err(Reject::Size)
        );
    }

    #[test]
    fn replays_are_refused() {
        let mut g = ReplayGuard::default();
        let mut m = sample();
        assert_eq!(g.accept(&m), Ok(()));
        assert_eq!(g.accept(&m), Err(Reject::Replay));
        m.seq -= 1;
        assert_eq!(g.accept(&m), Err(Reject::Replay));
        m.seq += 2;
        assert_eq!(g.accept(&m), Ok(()));
        // a restart: a newer boot id with a small sequence is fine
        m.boot_id += 1;
        m.seq = 1;
        assert_eq!(g.accept(&m), Ok(()));
    }

    #[test]
    fn a_restart_with_an_earlier_clock_is_heard_after_silence_but_old_captures_are_not() {
        let mut g = ReplayGuard::default();
        let mut m = sample();
        let wall = 1_700_000_100_000;
        m.timestamp_ms = wall;
        assert_eq!(g.accept_at(&m, 1000, 3000, wall, 60_000), Ok(()));
        // restarted with its clock 10 s behind: a smaller boot id
        let mut r = m.clone();
        r.boot_id -= 10_000;
        r.seq = 1;
        // still talking a moment ago: refused
        assert_eq!(
            g.accept_at(&r, 2000, 3000, wall, 60_000),
            Err(Reject::Replay)
        );
        // after it was silent past the master-down time, with a fresh timestamp: heard
        assert_eq!(g.accept_at(&r, 5000, 3000, wall + 4000, 60_000), Ok(()));
        // an old capture of the first boot, replayed after a silence, is refused: stale
        let mut g2 = ReplayGuard::default();
        assert_eq!(g2.accept_at(&r, 0, 3000, wall, 60_000), Ok(()));
        let mut old = m.clone();
        old.timestamp_ms = wall - 3_600_000;
        assert_eq!(
            g2.accept_at(&old, 100_000, 3000, wall, 60_000),
            Err(Reject::Stale)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let key = Some(&[1u8; 32][..]);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200_000 {
            let n = rng.usize(0..=120);
            let mut v: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if n >= 5 && rng.bool() {
                v[..4].copy_from_slice(MAGIC);
                v[4] = VERSION;
            }
            let _ = Advert::decode(&v, key, a(), b());
            let _ = Advert::decode(&v, None, a(), b());
        }
        // with auth off, random bodies still must not panic in field parsing
        for _ in 0..50_000 {
            let mut v: Vec<u8> = (0..LEN).map(|_| rng.u8(..)).collect();
            v[..4].copy_from_slice(MAGIC);
            v[4] = VERSION;
            let _ = Advert::decode(&v, None, a(), b());
        }
    }
}
