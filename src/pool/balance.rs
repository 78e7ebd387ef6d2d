//! Balancing algorithms as pure code over a `Members` view.
//!
//! Per-pick state is a single atomic cursor, so picking never locks. The view tells
//! which members are eligible right now (health, admin state, connection limit) and
//! how busy they are; the pool owns those atomics.

use crate::config::Balance;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What an algorithm needs to know about the members at pick time.
pub trait Members {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// May this member take one more request/connection now?
    fn eligible(&self, i: usize) -> bool;
    /// Static weight, 0..=256.
    fn weight(&self, i: usize) -> u32;
    /// Requests/connections in flight.
    fn active(&self, i: usize) -> u32;
}

#[derive(Debug, PartialEq)]
enum Algo {
    /// Smooth weighted round robin (nginx's), unrolled into a cyclic schedule;
    /// `Uniform`: every member has this weight, and the schedule is 0, 1, .., n-1
    /// (not stored, so that a change of members does not rebuild it).
    RoundRobin(Vec<u32>),
    Uniform(u32),
    LeastConn,
    RandomTwo,
    /// Consistent hash ring.
    Hash(Ring),
    First,
}

#[derive(Debug)]
pub struct Balancer {
    algo: Algo,
    cursor: AtomicUsize,
}

impl Balancer {
    /// `weights[i]` and `ids[i]` (a stable identity, e.g. the address, used to place
    /// ring points so they do not move when other members come and go).
    pub fn new(kind: Balance, weights: &[u32], ids: &[String]) -> Balancer {
        let algo = match kind {
            Balance::RoundRobin => match weights.split_first() {
                Some((&w, rest)) if w > 0 && rest.iter().all(|&x| x == w) => Algo::Uniform(w),
                _ => Algo::RoundRobin(smooth_wrr_schedule(weights)),
            },
            Balance::LeastConn => Algo::LeastConn,
            Balance::RandomTwo => Algo::RandomTwo,
            Balance::Hash => Algo::Hash(Ring::build(weights, ids)),
            Balance::First => Algo::First,
        };
        Balancer {
            algo,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks an eligible member, or `None` if there is none. `key` is only used by
    /// the hash algorithm.
    pub fn pick<M: Members + ?Sized>(&self, m: &M, key: u64) -> Option<usize> {
        let n = m.len();
        if n == 0 {
            return None;
        }
        match &self.algo {
            Algo::RoundRobin(schedule) => {
                if schedule.is_empty() {
                    return None;
                }
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                // Walk the schedule a little; if the scheduled members are all out,
                // fall back to a linear scan so an all-down pool costs O(n).
                for k in 0..schedule.len().min(2 * n + 1) {
                    let i = schedule[(start.wrapping_add(k)) % schedule.len()] as usize;
                    if m.eligible(i) {
                        return Some(i);
                    }
                }
                (0..n)
                    .map(|k| (start.wrapping_add(k)) % n)
                    .find(|&i| m.weight(i) > 0 && m.eligible(i))
            }
            Algo::Uniform(_) => {
                // the walk of the schedule 0, 1, .., n-1, then, as above, one
                // more look at each (a ramping server's second chance)
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..2 * n)
                    .map(|k| (start.wrapping_add(k)) % n)
                    .find(|&i| m.eligible(i))
            }
            Algo::LeastConn => {
                let mut best = None;
                // a rotating start, so that equally loaded members take turns
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
                if n > LEAST_CONN_EXACT {
                    // a large pool: the least loaded of a few members (Envoy's
                    // least_request), O(1) instead of O(n). The first is the
                    // member at the cursor, and it wins ties: while it is as
                    // idle as the others, the members take turns as in round
                    // robin, so that each server's connection is used again at
                    // an even pace. Drawn at random, one in seven requests found a
                    // connection idle long enough for the kernel to have sent a
                    // delayed ACK (TcpExtDelayedACKs, 1,000 servers, 50 clients):
                    // a segment more each way, and 3 to 4 µs more of system time
                    // a request than HAProxy's leastconn. The others are drawn at random, so that members
                    // that are busy together (next to each other in the list)
                    // cannot fill the sample.
                    consider(m, start, &mut best);
                    let mut rng = fastrand::Rng::new();
                    for _ in 1..LEAST_CONN_DRAWS {
                        consider(m, rng.usize(..n), &mut best);
                    }
                    if let Some((i, ..)) = best {
                        return Some(i);
                    }
                    // every member looked at is out: look at them all
                }
                let mut i = start;
                for _ in 0..n {
                    consider(m, i, &mut best);
                    i = if i + 1 == n { 0 } else { i + 1 };
                }
                best.map(|(i, ..)| i)
            }
            Algo::RandomTwo => {
                let first = scan_eligible(m, fastrand::usize(..n))?;
                let mut second_start = fastrand::usize(..n);
                if second_start == first {
                    second_start = (second_start + 1) % n;
                }
                match scan_eligible(m, second_start) {
                    Some(second) if second != first && less_loaded(m, second, first) => {
                        Some(second)
                    }
                    _ => Some(first),
                }
            }
            Algo::Hash(Ring { points: ring, .. }) if ring.is_empty() => None,
            Algo::Hash(r) => {
                let ring = &r.points;
                let at = r.first_at_or_after(key);
                (0..ring.len())
                    .map(|k| ring[(at + k) % ring.len()].1 as usize)
                    .find(|&i| m.eligible(i))
            }
            Algo::First => (0..n).find(|&i| m.weight(i) > 0 && m.eligible(i)),
        }
    }
}

impl PartialEq for Balancer {
    /// The same algorithm over the same members (the cursor aside).
    fn eq(&self, other: &Balancer) -> bool {
        self.algo == other.algo
    }
}

/// How a pool's members changed since its balancer was built: see
/// [`Balancer::next`].
pub struct Delta<'a> {
    /// How many members the pool has now.
    pub len: usize,
    /// Members that are new, or whose weight or backup flag changed: (new
    /// index, weight, address). Their ring points are placed by address, as
    /// [`Balancer::new`] places them when given the addresses as ids.
    pub fresh: &'a [(u32, u32, std::net::SocketAddr)],
    /// The weights of the members that left or changed.
    pub gone: &'a [u32],
    /// For each old member, its new index, or [`GONE`] if it left or changed.
    /// Read only by the hash balancer (so only filled for it).
    pub moved: &'a [u32],
}

/// In [`Delta::moved`]: this old member has no points in the new ring.
pub const GONE: u32 = u32::MAX;

impl Balancer {
    /// The balancer of the pool after `d`, built from this one in time
    /// proportional to the change where the algorithm allows: round robin over
    /// equal weights, least_conn, random_two and first keep no per-member state
    /// (first relies on the members keeping their order); the hash ring loses the
    /// points of the members that left and gains those of the new ones, without
    /// hashing or sorting the others. None: build it anew with
    /// [`Balancer::new`]: round robin over unequal weights (its schedule
    /// interleaves every member), or a pool left empty; a ring whose heaviest
    /// members all left, or that gains a member heavier than them (every
    /// member's points are scaled by the heaviest weight).
    pub fn next(&self, d: &Delta<'_>) -> Option<Balancer> {
        let algo = match &self.algo {
            Algo::Uniform(w) if d.len > 0 && d.fresh.iter().all(|f| f.1 == *w) => Algo::Uniform(*w),
            Algo::Uniform(_) | Algo::RoundRobin(_) => return None,
            Algo::LeastConn => Algo::LeastConn,
            Algo::RandomTwo => Algo::RandomTwo,
            Algo::First => Algo::First,
            Algo::Hash(r) => Algo::Hash(r.next(d)?),
        };
        Some(Balancer {
            algo,
            cursor: AtomicUsize::new(self.cursor.load(Ordering::Relaxed)),
        })
    }
}

/// least_conn compares every member of a pool up to this size; above it, the
/// least loaded of [`LEAST_CONN_DRAWS`] members: the one at the cursor and the
/// others drawn at random.
pub const LEAST_CONN_EXACT: usize = 64;
/// With 15 members drawn at random the pick is, 99.7% of the time, among the
/// least loaded third of the eligible members (0.67^15 < 0.003), whatever the
/// pool's size.
pub const LEAST_CONN_DRAWS: usize = 16;

/// least_conn: makes member `i` the `best` so far, (member, active + 1, weight),
/// if it is less loaded and eligible. The load is compared first, and the
/// eligibility (health, admin state, breaker, connection limit, exclusion: the
/// costly part) is looked at only for a member that would become the best:
/// checked for every member of a pool of 64, it cost more than the rest of the
/// request (23,596 instructions a proxied request against round robin's 15,032).
fn consider<M: Members + ?Sized>(m: &M, i: usize, best: &mut Option<(usize, u64, u64)>) {
    let w = u64::from(m.weight(i));
    if w == 0 {
        return;
    }
    let load = u64::from(m.active(i)) + 1;
    // less loaded: load / w < the best's load / the best's weight
    if best.is_some_and(|(_, bl, bw)| load * bw >= bl * w) {
        return;
    }
    if m.eligible(i) {
        *best = Some((i, load, w));
    }
}

/// Is `a` less loaded than `b`, comparing (active + 1) / weight without division.
fn less_loaded<M: Members + ?Sized>(m: &M, a: usize, b: usize) -> bool {
    let la = (u64::from(m.active(a)) + 1) * u64::from(m.weight(b));
    let lb = (u64::from(m.active(b)) + 1) * u64::from(m.weight(a));
    la < lb
}

fn scan_eligible<M: Members + ?Sized>(m: &M, start: usize) -> Option<usize> {
    let n = m.len();
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| m.weight(i) > 0 && m.eligible(i))
}

/// nginx's smooth weighted round robin, unrolled over one full cycle, run over
/// weight classes: the members of equal weight form one class, of weight
/// (their weight × their number), and a class's turns rotate through its members
/// in order. Weights are divided by their gcd first. With all weights equal this
/// is 0, 1, .., n-1, and with all weights different it is nginx's sequence; in
/// between, each member's turns are spread through the cycle as nginx spreads
/// them. Built in O(C · Σw/g) for C distinct weights: nginx's own loop over the
/// members took O(n · Σw/g), 10^8 steps for 10,000 servers of equal weight, and a
/// pool's schedule is rebuilt on every change of its DNS members.
pub fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    // (weight, members) in the order of each weight's first member
    let mut classes: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut class_of: std::collections::HashMap<u32, usize> = Default::default();
    for (i, &w) in weights.iter().enumerate().filter(|(_, &w)| w > 0) {
        let c = *class_of.entry(w).or_insert_with(|| {
            classes.push((w, Vec::new()));
            classes.len() - 1
        });
        classes[c].1.push(i as u32);
    }
    let w: Vec<i64> = classes
        .iter()
        .map(|(w, m)| i64::from(w / g) * m.len() as i64)
        .collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut turn = vec![0usize; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for c in 0..w.len() {
            current[c] += w[c];
            if current[c] > current[best] {
                best = c;
            }
        }
        current[best] -= total;
        let members = &classes[best].1;
        out.push(members[turn[best]]);
        turn[best] = (turn[best] + 1) % members.len();
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

const RING_POINTS: u64 = 160;

/// A consistent hash ring: (point, member) sorted by point, and where each
/// range of points starts, so that a lookup is one table read and a search of
/// about one entry, not a binary search of the whole ring (21 steps, each a
/// cache miss, for 10,000 servers × 160 points).
#[derive(Debug, PartialEq)]
struct Ring {
    points: Vec<(u64, u32)>,
    /// The heaviest weight, which every member's number of points is scaled by,
    /// and how many members have it.
    max: u32,
    at_max: usize,
    /// `starts[j]`: the first point whose top `bits` bits are >= j.
    starts: Vec<u32>,
    bits: u32,
}

impl Ring {
    fn build(weights: &[u32], ids: &[String]) -> Ring {
        let max = weights.iter().copied().max().unwrap_or(0);
        let at_max = weights.iter().filter(|&&w| w == max).count();
        Ring::new(build_ring(weights, ids), max, at_max)
    }

    /// This ring after `d`: the points of the members that stay are kept (and
    /// renumbered), those of the members that left are dropped, and the new
    /// members' points merged in. O(points) copying, no hashing or sorting of
    /// the members that stay.
    fn next(&self, d: &Delta<'_>) -> Option<Ring> {
        let max = self.max;
        if max == 0 || d.fresh.iter().any(|f| f.1 > max) {
            return None;
        }
        let at_max = (self.at_max + d.fresh.iter().filter(|f| f.1 == max).count())
            .checked_sub(d.gone.iter().filter(|&&w| w == max).count())
            .filter(|&n| n > 0)?;
        let mut add = Vec::new();
        for &(i, w, addr) in d.fresh {
            member_points(&mut add, i, w, max, addr.to_string().as_bytes());
        }
        add.sort_unstable();
        let moved = d.moved;
        let mut points = Vec::with_capacity(self.points.len() + add.len());
        let mut add = add.into_iter().peekable();
        for &(h, i) in &self.points {
            let Some(&to) = moved.get(i as usize) else {
                continue;
            };
            if to == GONE {
                continue;
            }
            while let Some(a) = add.next_if(|a| *a < (h, to)) {
                points.push(a);
            }
            points.push((h, to));
        }
        points.extend(add);
        Some(Ring::new(points, max, at_max))
    }

    fn new(points: Vec<(u64, u32)>, max: u32, at_max: usize) -> Ring {
        // about one point per range
        let bits = points.len().max(1).next_power_of_two().trailing_zeros();
        // one pass over the points: the ranges up to a point's own start there
        let ranges = 1usize << bits;
        let mut starts = Vec::with_capacity(ranges + 1);
        for (at, p) in points.iter().enumerate() {
            let t = top(p.0, bits) as usize;
            starts.resize(starts.len().max(t + 1), at as u32);
        }
        starts.resize(ranges + 1, points.len() as u32);
        Ring {
            points,
            max,
            at_max,
            starts,
            bits,
        }
    }

    /// The index of the first point >= key (`points.len()` if none).
    fn first_at_or_after(&self, key: u64) -> usize {
        let j = top(key, self.bits) as usize;
        let (from, to) = (self.starts[j] as usize, self.starts[j + 1] as usize);
        from + self.points[from..to].partition_point(|p| p.0 < key)
    }
}

/// The top `bits` bits of `x` (0 when bits = 0).
fn top(x: u64, bits: u32) -> u64 {
    x.checked_shr(64 - bits).unwrap_or(0)
}

fn build_ring(weights: &[u32], ids: &[String]) -> Vec<(u64, u32)> {
    let max = weights.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return Vec::new();
    }
    let mut ring = Vec::new();
    for (i, (&w, id)) in weights.iter().zip(ids).enumerate() {
        member_points(&mut ring, i as u32, w, max, id.as_bytes());
    }
    ring.sort_unstable();
    ring
}

/// The ring points of member `i` (weight `w`, the heaviest being `max`),
/// placed by its id.
fn member_points(ring: &mut Vec<(u64, u32)>, i: u32, w: u32, max: u32, id: &[u8]) {
    if w == 0 {
        return;
    }
    let points = (RING_POINTS * u64::from(w)).div_ceil(u64::from(max)).max(1);
    for p in 0..points {
        ring.push((hash_parts(&[id, b"#", &p.to_le_bytes()]), i));
    }
}

/// FNV-1a over the parts followed by a splitmix64 finalizer: stable across runs and
/// builds (the ring must not move when the binary is upgraded), well mixed.
pub fn hash_parts(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct View {
        weights: Vec<u32>,
        active: RefCell<Vec<u32>>,
        down: Vec<bool>,
        /// calls of `eligible`
        checked: std::cell::Cell<usize>,
    }

    impl View {
        fn new(weights: &[u32]) -> View {
            View {
                weights: weights.to_vec(),
                active: RefCell::new(vec![0; weights.len()]),
                down: vec![false; weights.len()],
                checked: std::cell::Cell::new(0),
            }
        }
    }

    impl Members for View {
        fn len(&self) -> usize {
            self.weights.len()
        }
        fn eligible(&self, i: usize) -> bool {
            self.checked.set(self.checked.get() + 1);
            !self.down[i]
        }
        fn weight(&self, i: usize) -> u32 {
            self.weights[i]
        }
        fn active(&self, i: usize) -> u32 {
            self.active.borrow()[i]
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn counts(b: &Balancer, v: &View, picks: usize) -> Vec<usize> {
        let mut c = vec![0; v.len()];
        for k in 0..picks {
            let key = hash_parts(&[&k.to_le_bytes()]);
            c[b.pick(v, key).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_honours_weights_exactly_and_smoothly() {
        let v = View::new(&[1, 3, 0, 2]);
        let b = Balancer::new(Balance::RoundRobin, &v.weights, &ids(4));
        assert_eq!(counts(&b, &v, 600), vec![100, 300, 0, 200]);
        // smooth: the heaviest server is never picked 3 times in a row with 1:3:2
        let seq: Vec<_> = (0..12).map(|_| b.pick(&v, 0).unwrap()).collect();
        assert!(
            !seq.windows(3).any(|w| w.iter().all(|&x| x == 1)),
            "{seq:?}"
        );
    }

    #[test]
    fn round_robin_schedules_keep_nginx_order_for_equal_weights_and_spread_unequal_ones() {
        // equal weights: 0, 1, .., n-1, as nginx's smooth round robin gives
        let s = smooth_wrr_schedule(&vec![7; 10_000]);
        assert!(s.iter().enumerate().all(|(k, &i)| i as usize == k));
        // all weights different: nginx's own sequence, as nginx's loop over the
        // members (the code this replaced) gives it
        let nginx = |w: &[u32]| {
            let g = w.iter().copied().fold(0, gcd);
            let w: Vec<u32> = w.iter().map(|x| x / g).collect();
            let total: i64 = w.iter().map(|&x| i64::from(x)).sum();
            let mut current = vec![0i64; w.len()];
            let mut out = Vec::new();
            for _ in 0..total {
                let mut best = 0;
                for i in 0..w.len() {
                    current[i] += i64::from(w[i]);
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                out.push(best as u32);
            }
            out
        };
        assert_eq!(smooth_wrr_schedule(&[5, 1, 2]), [0, 2, 0, 0, 1, 0, 2, 0]);
        for _ in 0..200 {
            let mut w: Vec<u32> = (1..=40).collect();
            fastrand::shuffle(&mut w);
            w.truncate(fastrand::usize(1..12));
            assert_eq!(smooth_wrr_schedule(&w), nginx(&w), "{w:?}");
        }
        // 5:1:1 (nginx's example gives a a b a c a a): as smooth
        assert_eq!(smooth_wrr_schedule(&[5, 1, 1]), [0, 1, 0, 0, 0, 2, 0]);
        // a member of weight 100 among 999 of weight 1: its 100 picks are spread,
        // at most one of them in any 11 consecutive slots
        let mut w = vec![1; 1000];
        w[500] = 100;
        let s = smooth_wrr_schedule(&w);
        assert_eq!(s.len(), 1099);
        assert_eq!(s.iter().filter(|&&i| i == 500).count(), 100);
        let at: Vec<_> = (0..s.len()).filter(|&k| s[k] == 500).collect();
        assert!(at.windows(2).all(|p| p[1] - p[0] >= 10), "{at:?}");
    }

    #[test]
    fn least_conn_on_a_large_pool_picks_among_the_least_loaded() {
        let n = 1000;
        let v = View::new(&vec![1; n]);
        // member i has i requests in flight
        *v.active.borrow_mut() = (0..n as u32).collect();
        let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(n));
        let picks: Vec<_> = (0..2000).map(|_| b.pick(&v, 0).unwrap()).collect();
        let in_third = picks.iter().filter(|&&i| i < n / 3).count();
        assert!(
            in_third >= 1990,
            "{in_third} of 2000 in the least loaded third"
        );
        // not one member for everything: the draws spread the load
        let mut distinct = picks.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 20, "{}", distinct.len());
        // with one member left eligible, the draws miss it and the scan finds it
        let mut v = View::new(&vec![1; n]);
        v.down = vec![true; n];
        v.down[777] = false;
        assert!((0..50).all(|_| b.pick(&v, 0) == Some(777)));
        v.down[777] = true;
        assert_eq!(b.pick(&v, 0), None);
    }

    #[test]
    fn least_conn_checks_only_a_member_that_would_be_picked() {
        // equally loaded: the first member looked at is the one picked, and the
        // only one whose eligibility is checked (exact scan and random draws)
        for n in [LEAST_CONN_EXACT, 1000] {
            let v = View::new(&vec![1; n]);
            let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(n));
            for _ in 0..100 {
                assert!(b.pick(&v, 0).is_some());
            }
            assert_eq!(v.checked.get(), 100, "{n} members");
        }
        // all idle, on a pool too large to scan: the members take turns (each
        // server's connection is used at an even pace)
        let n = 1000;
        let v = View::new(&vec![1; n]);
        let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(n));
        let mut c = vec![0; n];
        for _ in 0..2 * n {
            c[b.pick(&v, 0).unwrap()] += 1;
        }
        assert!(c.iter().all(|&x| x == 2), "{:?}", &c[..20]);
        // the member at the cursor is out: another is picked; all out but one:
        // the scan behind the draws finds it
        let mut v = View::new(&vec![1; n]);
        v.down[0] = true;
        let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(n));
        assert!((0..50).all(|_| b.pick(&v, 0).is_some_and(|i| i != 0)));
        v.down = vec![true; n];
        v.down[999] = false;
        assert!((0..50).all(|_| b.pick(&v, 0) == Some(999)));
        // the least loaded is out: the next least loaded is picked
        let mut v = View::new(&[1, 1, 1, 1]);
        *v.active.borrow_mut() = vec![3, 0, 1, 2];
        v.down[1] = true;
        let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(4));
        for _ in 0..8 {
            assert_eq!(b.pick(&v, 0), Some(2));
        }
        // a weight of 0 is never picked, even when idle
        let v = View::new(&[0, 1]);
        *v.active.borrow_mut() = vec![0, 9];
        let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(2));
        assert_eq!(b.pick(&v, 0), Some(1));
    }

    #[test]
    fn round_robin_skips_ineligible() {
        let mut v = View::new(&[1, 1, 1]);
        v.down[1] = true;
        let b = Balancer::new(Balance::RoundRobin, &v.weights, &ids(3));
        let c = counts(&b, &v, 300);
        assert_eq!(c[1], 0);
        assert!(c[0] >= 100 && c[2] >= 100, "{c:?}");
        v.down = vec![true; 3];
        assert_eq!(b.pick(&v, 0), None);
    }

    #[test]
    fn least_conn_prefers_idle_and_weights() {
        let v = View::new(&[1, 1, 1]);
        *v.active.borrow_mut() = vec![5, 0, 3];
        let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(3));
        for _ in 0..10 {
            assert_eq!(b.pick(&v, 0), Some(1));
        }
        // ties are broken round robin
        *v.active.borrow_mut() = vec![0, 0, 0];
        let c = counts(&b, &v, 300);
        assert_eq!(c, vec![100, 100, 100]);
        // weighted: 2 active on weight 4 beats 1 active on weight 1
        let v = View::new(&[1, 4]);
        *v.active.borrow_mut() = vec![1, 2];
        let b = Balancer::new(Balance::LeastConn, &v.weights, &ids(2));
        assert_eq!(b.pick(&v, 0), Some(1));
    }

    #[test]
    fn random_two_avoids_the_busy_server() {
        let v = View::new(&[1, 1]);
        *v.active.borrow_mut() = vec![10, 0];
        let b = Balancer::new(Balance::RandomTwo, &v.weights, &ids(2));
        let c = counts(&b, &v, 1000);
        assert_eq!(c[1], 1000, "with two members both are always compared");
        let v = View::new(&[1, 1, 1, 1]);
        let c = counts(
            &Balancer::new(Balance::RandomTwo, &v.weights, &ids(4)),
            &v,
            8000,
        );
        for x in &c {
            assert!((1600..=2400).contains(x), "{c:?}");
        }
    }

    #[test]
    fn hash_is_consistent_when_a_member_leaves() {
        let ids5 = ids(5);
        let v5 = View::new(&[1; 5]);
        let b5 = Balancer::new(Balance::Hash, &v5.weights, &ids5);
        // the same members without #2 (the remaining keep their identities)
        let ids4: Vec<String> = ids5
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, s)| s.clone())
            .collect();
        let v4 = View::new(&[1; 4]);
        let b4 = Balancer::new(Balance::Hash, &v4.weights, &ids4);
        let mut moved = 0;
        let keys = 20_000u64;
        let mut per = [0usize; 5];
        for k in 0..keys {
            let key = hash_parts(&[&k.to_le_bytes()]);
            let before = &ids5[b5.pick(&v5, key).unwrap()];
            let after = &ids4[b4.pick(&v4, key).unwrap()];
            per[b5.pick(&v5, key).unwrap()] += 1;
            if before != after {
                moved += 1;
                assert_eq!(before, &ids5[2], "only the removed member's keys may move");
            }
        }
        // distribution within a few percent of 1/5 each, and only ~1/5 moved
        for x in per {
            assert!((3000..=5000).contains(&x), "{per:?}");
        }
        assert!(moved > 3000 && moved < 5000, "{moved}");
        // the same key always lands on the same member
        let key = hash_parts(&[b"client-1"]);
        assert_eq!(b5.pick(&v5, key), b5.pick(&v5, key));
    }

    #[test]
    fn the_ring_index_finds_what_a_binary_search_finds() {
        for n in [1, 2, 3, 10, 257, 1000] {
            let ring = Ring::build(&vec![1; n], &ids(n));
            let mut keys: Vec<u64> = (0..2000).map(|_| fastrand::u64(..)).collect();
            // the edges: every point itself, one either side, and the ends
            for p in ring.points.iter().take(300) {
                keys.extend([p.0, p.0.wrapping_sub(1), p.0.wrapping_add(1)]);
            }
            keys.extend([0, u64::MAX]);
            for key in keys {
                let want = ring.points.partition_point(|p| p.0 < key);
                assert_eq!(ring.first_at_or_after(key), want, "n={n} key={key}");
            }
        }
    }

    #[test]
    fn hash_skips_down_member_without_moving_others() {
        let mut v = View::new(&[1; 4]);
        let b = Balancer::new(Balance::Hash, &v.weights, &ids(4));
        let keys: Vec<u64> = (0..2000u64)
            .map(|k| hash_parts(&[&k.to_le_bytes()]))
            .collect();
        let before: Vec<_> = keys.iter().map(|&k| b.pick(&v, k).unwrap()).collect();
        v.down[3] = true;
        for (k, &was) in keys.iter().zip(&before) {
            let now = b.pick(&v, *k).unwrap();
            assert_ne!(now, 3);
            if was != 3 {
                assert_eq!(now, was);
            }
        }
    }

    #[test]
    fn weighted_hash_distribution() {
        let v = View::new(&[1, 3]);
        let b = Balancer::new(Balance::Hash, &v.weights, &ids(2));
        let c = counts(&b, &v, 20_000);
        let share = c[1] as f64 / 20_000.0;
        assert!((0.68..=0.82).contains(&share), "{c:?}");
    }

    #[test]
    fn first_fills_in_order() {
        let mut v = View::new(&[1, 1, 1]);
        let b = Balancer::new(Balance::First, &v.weights, &ids(3));
        assert_eq!(b.pick(&v, 0), Some(0));
        v.down[0] = true;
        assert_eq!(b.pick(&v, 0), Some(1));
    }
}
