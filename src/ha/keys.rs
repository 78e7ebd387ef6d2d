//! The keys a node accepts heartbeats under, so that the pair's key can be
//! rotated without a failover.
//!
//! A node signs with `auth_key_file` only. It accepts, in this order:
//! - `auth_key_file`'s key (`current`);
//! - `auth_previous_key_file`'s (`previous`): the old key, kept for as long as
//!   the operator leaves it in the config;
//! - for `auth_key_grace` (60 s by default, none with "0s") after a reload
//!   that changed `auth_key_file`, the key it held before (`grace`), so that
//!   two nodes reloaded one after the other with a new key keep hearing each
//!   other in between.
//!
//! Once the peer's heartbeats verify with the current key only, for
//! [`PREVIOUS_UNUSED_AFTER`] of them in a row, `auth_previous_key_file` is no
//! longer used ([`PreviousUse`]): the rotation is over, and the key, still
//! accepted, can be removed. Only a MASTER sends heartbeats, so it is the
//! BACKUP that can tell.
//!
//! Which key verified a heartbeat does not bear on replay protection: the
//! replay guard runs after the tag is checked, on the sender's (boot, sequence),
//! whatever the key, and it is kept across reloads. An advert signed with the
//! old key and captured before the rotation is therefore as old as it ever was
//! (its sequence already heard, or its timestamp stale).

use super::wire::{Advert, Reject};
use crate::config::HaKey;
use std::net::IpAddr;

/// How many heartbeats in a row, all verified with the current key, show that
/// the peer no longer signs with `auth_previous_key_file`'s (a minute at the
/// default `advert_interval`).
pub const PREVIOUS_UNUSED_AFTER: u32 = 60;

/// Which of a node's keys verified a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    /// `auth_key_file`: the one this node signs with.
    Current,
    /// `auth_previous_key_file`.
    Previous,
    /// What `auth_key_file` held before the last reload, within `auth_key_grace`
    /// of it.
    Grace,
}

impl KeyUsed {
    pub const ALL: [KeyUsed; 3] = [KeyUsed::Current, KeyUsed::Previous, KeyUsed::Grace];

    /// As `/metrics` (`rampart_ha_peer_key{key}`) and `/stats;json` show it.
    pub fn label(self) -> &'static str {
        match self {
            KeyUsed::Current => "current",
            KeyUsed::Previous => "previous",
            KeyUsed::Grace => "grace",
        }
    }
}

/// The keys in force, with the time (ms on the caller's monotonic clock) a
/// reload's grace ends.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRing {
    /// None: `auth = "none"`; nothing is verified.
    current: Option<Vec<u8>>,
    previous: Option<Vec<u8>>,
    /// The key signed with before the last reload that changed it, and until
    /// when it is accepted.
    grace: Option<(Vec<u8>, u64)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the keys themselves
        f.debug_struct("KeyRing")
            .field("authenticated", &self.current.is_some())
            .field("previous", &self.previous.is_some())
            .field("grace_until", &self.grace.as_ref().map(|(_, until)| *until))
            .finish()
    }
}

impl KeyRing {
    /// The keys of a config, as at start: no grace.
    pub fn new(key: &HaKey) -> KeyRing {
        KeyRing {
            current: key.hmac().map(<[u8]>::to_vec),
            previous: key.previous().map(<[u8]>::to_vec),
            grace: None,
        }
    }

    /// The keys after a reload at `now` to `key`, with a grace of `grace_ms`
    /// (`auth_key_grace`). When the signing key changed, the one it replaces
    /// is accepted until `now + grace_ms` (with 0, not at all), unless the new
    /// config accepts it anyway (as `auth_previous_key_file`). A grace running
    /// since an earlier reload goes on if this one did not change the signing
    /// key, and ends if it did (one grace key at a time); it ends by
    /// `now + grace_ms` at the latest (a grace shortened after a leak cuts the
    /// running one, a longer one does not stretch it). Between
    /// `auth = "none"` and a key there is no grace: an unauthenticated node's
    /// messages are never accepted by one that wants a key.
    pub fn reloaded(&self, key: &HaKey, grace_ms: u64, now: u64) -> KeyRing {
        let mut next = KeyRing::new(key);
        let until = now.saturating_add(grace_ms);
        let running = self.grace.as_ref();
        let grace = match (&self.current, &next.current) {
            (Some(old), Some(new)) if old != new => Some((old.clone(), until)),
            (Some(_), Some(_)) => running.map(|(k, end)| (k.clone(), until.min(*end))),
            _ => None,
        };
        next.grace = grace
            .filter(|(_, end)| now < *end)
            .filter(|(k, _)| next.current.as_ref() != Some(k) && next.previous.as_ref() != Some(k));
        next
    }

    /// The key that signs (None: `auth = "none"`).
    pub fn signing(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }

    /// Whether `other` signs and accepts as `auth_previous_key_file` the
    /// same keys (graces aside).
    pub fn same_keys(&self, other: &KeyRing) -> bool {
        self.current == other.current && self.previous == other.previous
    }

    /// Whether `auth_previous_key_file` is set.
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// How long the key the last reload replaced is still accepted (ms; 0:
    /// it is not).
    pub fn grace_left(&self, now: u64) -> u64 {
        self.grace
            .as_ref()
            .map_or(0, |(_, until)| until.saturating_sub(now))
    }

    fn grace_key(&self, now: u64) -> Option<&[u8]> {
        self.grace
            .as_ref()
            .filter(|(_, end)| now < *end)
            .map(|(k, _)| k.as_slice())
    }

    /// The key a label stands for at `now`.
    fn key(&self, used: KeyUsed, now: u64) -> Option<&[u8]> {
        match used {
            KeyUsed::Current => self.current.as_deref(),
            KeyUsed::Previous => self.previous.as_deref(),
            KeyUsed::Grace => self.grace_key(now),
        }
    }

    /// What a heartbeat verified with `used` under `old` would be verified
    /// with under this ring at `now` (None: it would be refused). A reload
    /// that changed the keys relabels what is known of the peers with it.
    pub fn relabel(&self, old: &KeyRing, used: KeyUsed, now: u64) -> Option<KeyUsed> {
        let k = old.key(used, now)?;
        KeyUsed::ALL
            .into_iter()
            .find(|u| self.key(*u, now) == Some(k))
    }

    /// Ends a grace that ran out by `now`; true once, when it does.
    pub fn expire(&mut self, now: u64) -> bool {
        if self.grace.as_ref().is_some_and(|(_, until)| now >= *until) {
            self.grace = None;
            return true;
        }
        false
    }

    /// Parses and verifies a message that arrived from `from` at `to` under
    /// the keys accepted at `now`, the signing key first; returns it with the
    /// key that verified it (None with `auth = "none"`, where nothing is).
    pub fn open(
        &self,
        buf: &[u8],
        from: IpAddr,
        to: IpAddr,
        now: u64,
    ) -> Result<(Advert, Option<KeyUsed>), Reject> {
        let Some(current) = self.current.as_deref() else {
            return Advert::decode(buf, None, from, to).map(|a| (a, None));
        };
        let mut keys: [&[u8]; 3] = [current; 3];
        let mut labels = [KeyUsed::Current; 3];
        let mut n = 1;
        for used in [KeyUsed::Previous, KeyUsed::Grace] {
            if let Some(k) = self.key(used, now) {
                keys[n] = k;
                labels[n] = used;
                n += 1;
            }
        }
        let (advert, i) = Advert::decode_any(buf, &keys[..n], from, to)?;
        Ok((advert, labels.get(i).copied()))
    }
}

/// Whether `auth_previous_key_file`'s key is still used: it is not once
/// [`PREVIOUS_UNUSED_AFTER`] heartbeats in a row, from any peer, verified with
/// the current key. A new one (a reload that changes the keys) starts over.
#[derive(Debug, Default)]
pub struct PreviousUse {
    /// Accepted heartbeats in a row verified with the current key.
    current_run: u32,
}

impl PreviousUse {
    /// Records an accepted heartbeat, verified with `used` under `ring` (None:
    /// `auth = "none"`). True when it is the one that shows `ring`'s previous
    /// key unused: once, until a heartbeat under another key starts over.
    /// `peers`: how many the node has. Of several, only the MASTER is heard:
    /// a BACKUP that still signs with the previous key is not, and removing
    /// the key would cut it off; nothing is said then.
    pub fn heard(&mut self, ring: &KeyRing, used: Option<KeyUsed>, peers: usize) -> bool {
        let before = self.unused(ring);
        self.current_run = match used {
            Some(KeyUsed::Current) if peers == 1 => self.current_run.saturating_add(1),
            _ => 0,
        };
        !before && self.unused(ring)
    }

    /// This node is MASTER now, and hears no heartbeats: what it heard as a
    /// BACKUP says nothing any more. True when that changed what is shown.
    pub fn mastering(&mut self, ring: &KeyRing) -> bool {
        let was = self.unused(ring);
        self.current_run = 0;
        was
    }

    /// Whether `ring` has a previous key, and the peers no longer sign with it.
    pub fn unused(&self, ring: &KeyRing) -> bool {
        ring.has_previous() && self.current_run >= PREVIOUS_UNUSED_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::tests::advert;
    use super::super::wire::ReplayGuard;
    use super::*;

    const OLD: &[u8] = &[1u8; 32];
    const NEW: &[u8] = &[2u8; 32];
    const OTHER: &[u8] = &[3u8; 32];
    /// `auth_key_grace`'s default, in ms.
    const GRACE_MS: u64 = 60_000;

    fn a() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }
    fn b() -> IpAddr {
        "192.0.2.2".parse().unwrap()
    }

    fn hmac(key: &[u8], previous: Option<&[u8]>) -> HaKey {
        HaKey::Hmac {
            key: key.to_vec(),
            previous: previous.map(<[u8]>::to_vec),
        }
    }

    /// A's advert to B, signed with `key`, as B's `ring` sees it at `now`.
    fn heard(ring: &KeyRing, key: &[u8], now: u64) -> Result<Option<KeyUsed>, Reject> {
        let m = advert(7);
        let bytes = m.encode(Some(key), a(), b());
        ring.open(&bytes, a(), b(), now).map(|(got, used)| {
            assert_eq!(got, m);
            used
        })
    }

    #[test]
    fn the_previous_key_is_accepted_only_when_configured() {
        let with = KeyRing::new(&hmac(NEW, Some(OLD)));
        assert_eq!(heard(&with, NEW, 0), Ok(Some(KeyUsed::Current)));
        assert_eq!(heard(&with, OLD, 0), Ok(Some(KeyUsed::Previous)));
        assert_eq!(heard(&with, OTHER, 0), Err(Reject::Auth));
        let without = KeyRing::new(&hmac(NEW, None));
        assert_eq!(heard(&without, NEW, 0), Ok(Some(KeyUsed::Current)));
        assert_eq!(heard(&without, OLD, 0), Err(Reject::Auth));
        // the previous key never signs
        assert_eq!(with.signing(), Some(NEW));
    }

    #[test]
    fn the_current_key_is_tried_first() {
        // the same key as both: it is the current one that verified it
        let ring = KeyRing::new(&hmac(NEW, Some(NEW)));
        assert_eq!(heard(&ring, NEW, 0), Ok(Some(KeyUsed::Current)));
        // and a grace key equal to the previous one is not kept twice
        let r = KeyRing::new(&hmac(OLD, None)).reloaded(&hmac(NEW, Some(OLD)), GRACE_MS, 0);
        assert_eq!(heard(&r, OLD, 0), Ok(Some(KeyUsed::Previous)));
        assert_eq!(r.grace, None);
    }

    #[test]
    fn the_address_binding_holds_for_every_key() {
        let ring = KeyRing::new(&hmac(NEW, Some(OLD)));
        let bytes = advert(7).encode(Some(OLD), a(), b());
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(ring.open(&bytes, c, b(), 0), Err(Reject::Auth));
        assert_eq!(ring.open(&bytes, a(), c, 0), Err(Reject::Auth));
        // an unsigned message to a node that wants a key
        let unsigned = advert(7).encode(None, a(), b());
        assert_eq!(ring.open(&unsigned, a(), b(), 0), Err(Reject::Auth));
        // the checks before the tag's come first, as in decode
        assert_eq!(ring.open(&bytes[..50], a(), b(), 0), Err(Reject::Size));
    }

    #[test]
    fn a_reload_that_changes_the_key_accepts_the_old_one_for_the_grace() {
        let before = KeyRing::new(&hmac(OLD, None));
        let t = 5_000;
        let after = before.reloaded(&hmac(NEW, None), GRACE_MS, t);
        assert_eq!(after.signing(), Some(NEW));
        assert_eq!(after.grace_left(t + 1_000), GRACE_MS - 1_000);
        assert_eq!(after.grace_left(t + GRACE_MS + 1), 0);
        assert_eq!(heard(&after, NEW, t), Ok(Some(KeyUsed::Current)));
        assert_eq!(heard(&after, OLD, t), Ok(Some(KeyUsed::Grace)));
        assert_eq!(
            heard(&after, OLD, t + GRACE_MS - 1),
            Ok(Some(KeyUsed::Grace))
        );
        // over: refused, even before `expire` ran
        assert_eq!(heard(&after, OLD, t + GRACE_MS), Err(Reject::Auth));
        let mut ended = after.clone();
        assert!(!ended.expire(t + GRACE_MS - 1));
        assert!(ended.expire(t + GRACE_MS));
        assert!(!ended.expire(t + GRACE_MS + 1), "once");
        assert_eq!(heard(&ended, OLD, t), Err(Reject::Auth));
    }

    /// `auth_key_grace = "0s"` (a leaked key): the replaced key is refused
    /// from the reload on, and nothing else is taken away.
    #[test]
    fn a_grace_of_zero_refuses_the_replaced_key_at_once() {
        let before = KeyRing::new(&hmac(OLD, None));
        let t = 5_000;
        let after = before.reloaded(&hmac(NEW, None), 0, t);
        assert_eq!(after.grace, None);
        assert_eq!(after.grace_left(t), 0);
        assert_eq!(heard(&after, NEW, t), Ok(Some(KeyUsed::Current)));
        assert_eq!(heard(&after, OLD, t), Err(Reject::Auth));
        // a peer last heard under the replaced key is heard under none now
        assert_eq!(after.relabel(&before, KeyUsed::Current, t), None);
        // auth_previous_key_file is still accepted: the grace is not about it
        let kept = before.reloaded(&hmac(NEW, Some(OLD)), 0, t);
        assert_eq!(heard(&kept, OLD, t), Ok(Some(KeyUsed::Previous)));
    }

    #[test]
    fn a_custom_grace_accepts_the_replaced_key_until_it_ends() {
        let (grace, t) = (5_000, 1_000);
        let mut after = KeyRing::new(&hmac(OLD, None)).reloaded(&hmac(NEW, None), grace, t);
        assert_eq!(after.grace_left(t), grace);
        assert_eq!(heard(&after, OLD, t), Ok(Some(KeyUsed::Grace)));
        assert_eq!(heard(&after, OLD, t + grace - 1), Ok(Some(KeyUsed::Grace)));
        assert_eq!(heard(&after, OLD, t + grace), Err(Reject::Auth));
        assert!(after.expire(t + grace));
    }

    /// A leak found after the reload that replaced the key: a second reload
    /// with a shorter grace cuts the running one; a longer one does not
    /// stretch it.
    #[test]
    fn a_reload_with_a_shorter_grace_cuts_a_running_one() {
        let r1 = KeyRing::new(&hmac(OLD, None)).reloaded(&hmac(NEW, None), GRACE_MS, 0);
        let t = 10_000;
        let cut = r1.reloaded(&hmac(NEW, None), 0, t);
        assert_eq!(cut.grace, None);
        assert_eq!(heard(&cut, OLD, t), Err(Reject::Auth));
        assert_eq!(cut.relabel(&r1, KeyUsed::Grace, t), None);
        let shorter = r1.reloaded(&hmac(NEW, None), 5_000, t);
        assert_eq!(shorter.grace_left(t), 5_000);
        assert_eq!(heard(&shorter, OLD, t + 5_000), Err(Reject::Auth));
        let longer = r1.reloaded(&hmac(NEW, None), 2 * GRACE_MS, t);
        assert_eq!(longer.grace_left(t), GRACE_MS - t);
    }

    #[test]
    fn a_grace_survives_other_reloads_and_ends_with_the_next_key_change() {
        let r1 = KeyRing::new(&hmac(OLD, None)).reloaded(&hmac(NEW, None), GRACE_MS, 0);
        // a reload that changes something else: the grace runs on, not anew
        let r2 = r1.reloaded(&hmac(NEW, None), GRACE_MS, 10_000);
        assert_eq!(heard(&r2, OLD, 10_000), Ok(Some(KeyUsed::Grace)));
        assert_eq!(heard(&r2, OLD, GRACE_MS), Err(Reject::Auth));
        // a reload back to the old key: the one it replaces is in grace now
        let back = r1.reloaded(&hmac(OLD, None), GRACE_MS, 1_000);
        assert_eq!(heard(&back, OLD, 1_000), Ok(Some(KeyUsed::Current)));
        assert_eq!(heard(&back, NEW, 1_000), Ok(Some(KeyUsed::Grace)));
        // a third key: only the last one replaced is in grace
        let third = r1.reloaded(&hmac(OTHER, None), GRACE_MS, 1_000);
        assert_eq!(heard(&third, NEW, 1_000), Ok(Some(KeyUsed::Grace)));
        assert_eq!(heard(&third, OLD, 1_000), Err(Reject::Auth));
        // an unchanged config after the grace ended: nothing comes back
        let late = r1.reloaded(&hmac(NEW, None), GRACE_MS, GRACE_MS + 1);
        assert_eq!(late.grace, None);
    }

    #[test]
    fn no_grace_to_or_from_no_authentication() {
        let to_key = KeyRing::new(&HaKey::None).reloaded(&hmac(NEW, None), GRACE_MS, 0);
        assert_eq!(to_key.grace, None);
        let unsigned = advert(7).encode(None, a(), b());
        assert_eq!(to_key.open(&unsigned, a(), b(), 0), Err(Reject::Auth));
        let to_none = KeyRing::new(&hmac(OLD, None)).reloaded(&HaKey::None, GRACE_MS, 0);
        assert_eq!(to_none.signing(), None);
        assert_eq!(
            to_none.open(&unsigned, a(), b(), 0).map(|(_, k)| k),
            Ok(None)
        );
    }

    /// The grace widens no replay window: the guard runs after the tag, on
    /// (boot, sequence) whatever the key, and outlives the reload.
    #[test]
    fn an_old_key_advert_replayed_in_the_grace_is_still_a_replay() {
        let mut guard = ReplayGuard::default();
        let before = KeyRing::new(&hmac(OLD, None));
        let captured = advert(7).encode(Some(OLD), a(), b());
        let (m, _) = before.open(&captured, a(), b(), 0).unwrap();
        assert_eq!(guard.accept(&m), Ok(()));
        let after = before.reloaded(&hmac(NEW, None), GRACE_MS, 1_000);
        // authentic under the grace key, and refused as heard before
        let (m, used) = after.open(&captured, a(), b(), 1_000).unwrap();
        assert_eq!(used, Some(KeyUsed::Grace));
        assert_eq!(guard.accept(&m), Err(Reject::Replay));
        // the peer's next advert, still under the old key, is heard
        let next = advert(8).encode(Some(OLD), a(), b());
        let (m, _) = after.open(&next, a(), b(), 2_000).unwrap();
        assert_eq!(guard.accept(&m), Ok(()));
        // and once the peer signs with the new key, the old capture stays refused
        let switched = advert(9).encode(Some(NEW), a(), b());
        let (m, used) = after.open(&switched, a(), b(), 3_000).unwrap();
        assert_eq!(used, Some(KeyUsed::Current));
        assert_eq!(guard.accept(&m), Ok(()));
        let (m, _) = after.open(&next, a(), b(), 4_000).unwrap();
        assert_eq!(guard.accept(&m), Err(Reject::Replay));
    }

    /// `n` heartbeats verified with `used` under `ring`: how many of them
    /// showed the previous key unused.
    fn hear(usage: &mut PreviousUse, ring: &KeyRing, used: KeyUsed, n: u32) -> usize {
        (0..n).filter(|_| usage.heard(ring, Some(used), 1)).count()
    }

    #[test]
    fn the_previous_key_is_unused_once_the_peer_signs_with_the_current_one_for_a_while() {
        const N: u32 = PREVIOUS_UNUSED_AFTER;
        let ring = KeyRing::new(&hmac(NEW, Some(OLD)));
        let mut usage = PreviousUse::default();
        // the peer still signs with the old key
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Previous, 2 * N), 0);
        assert!(!usage.unused(&ring));
        // then with the new one: not until the span is over, and said once
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Current, N - 1), 0);
        assert!(!usage.unused(&ring));
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Current, 1), 1);
        assert!(usage.unused(&ring));
        // (once)
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Current, 2 * N), 0);
        assert!(usage.unused(&ring));
        // the previous key again (a peer's rotation undone): in use, and the
        // span starts over
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Previous, 1), 0);
        assert!(!usage.unused(&ring));
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Current, N - 1), 0);
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Current, 1), 1, "again");
        // a heartbeat under the key in grace breaks the span as well
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Grace, 1), 0);
        assert!(!usage.unused(&ring));
        // without auth_previous_key_file there is nothing to say
        let without = KeyRing::new(&hmac(NEW, None));
        let mut usage = PreviousUse::default();
        assert_eq!(hear(&mut usage, &without, KeyUsed::Current, 2 * N), 0);
        assert!(!usage.unused(&without));
    }

    /// Of several peers only the MASTER is heard: a BACKUP still signing
    /// with the previous key is not, so nothing is said. And a node that
    /// takes over hears none: what it heard before is forgotten.
    #[test]
    fn the_previous_key_is_said_unused_only_of_one_peer_and_not_by_a_master() {
        const N: u32 = PREVIOUS_UNUSED_AFTER;
        let ring = KeyRing::new(&hmac(NEW, Some(OLD)));
        let mut usage = PreviousUse::default();
        let said = (0..2 * N)
            .filter(|_| usage.heard(&ring, Some(KeyUsed::Current), 2))
            .count();
        assert_eq!(said, 0);
        assert!(!usage.unused(&ring));
        assert_eq!(hear(&mut usage, &ring, KeyUsed::Current, N), 1);
        assert!(usage.mastering(&ring), "shown until it took over");
        assert!(!usage.unused(&ring));
        assert!(!usage.mastering(&ring), "(nothing to change)");
    }

    #[test]
    fn relabelling_follows_the_key_not_the_name() {
        let old = KeyRing::new(&hmac(OLD, None));
        // rotated with the old key as the previous one
        let new = old.reloaded(&hmac(NEW, Some(OLD)), GRACE_MS, 0);
        assert_eq!(
            new.relabel(&old, KeyUsed::Current, 0),
            Some(KeyUsed::Previous)
        );
        // rotated by a plain change: the old key is in grace
        let plain = old.reloaded(&hmac(NEW, None), GRACE_MS, 0);
        assert_eq!(
            plain.relabel(&old, KeyUsed::Current, 0),
            Some(KeyUsed::Grace)
        );
        // the previous key removed: a peer last heard under it is not any more
        let done = new.reloaded(&hmac(NEW, None), GRACE_MS, 1);
        assert_eq!(done.relabel(&new, KeyUsed::Previous, 1), None);
        assert_eq!(
            done.relabel(&new, KeyUsed::Current, 1),
            Some(KeyUsed::Current)
        );
    }
}
