//! A cheap hasher for maps keyed by bytes whose keys no client adds to at
//! will: the router's index (the config's hosts and paths) and an HTTP/2
//! encoder's table of the fields it sent (at most 128 entries). std's SipHash
//! is for maps a client can fill; with a bounded or operator-chosen key set,
//! a key a client makes to collide costs only its own lookup's comparisons.
//! The hash has no secret seed: a client who made one of its fields hash as
//! another field in an encoder's table would only have that field sent as a
//! literal and added again (the table checks the bytes of every hit).
//!
//! It folds 8 bytes at a time with a multiply and ends with murmur3's
//! finalizer, so that the low bits (a bucket) and the high bits (hashbrown's
//! tag) depend on every byte.

use std::hash::{BuildHasherDefault, Hasher};

/// `ByteHasher`'s builder, for `HashMap`'s third parameter.
pub type BuildByteHasher = BuildHasherDefault<ByteHasher>;

#[derive(Debug, Default, Clone, Copy)]
pub struct ByteHasher(u64);

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

impl ByteHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(MUL);
    }
}

impl Hasher for ByteHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // (the last bytes, padded with zeros, in a loop rather than a
            // copy of unknown length: no call to memcpy)
            let w = rest
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
            self.add(w);
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// For maps keyed by a `ByteHasher`'s output (already mixed): the key is
/// its own hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct Premixed(u64);

/// `Premixed`'s builder.
pub type BuildPremixed = BuildHasherDefault<Premixed>;

impl Hasher for Premixed {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = ByteHasher(self.0);
        h.write(bytes);
        self.0 = h.finish();
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hasher spreads keys that differ in one byte anywhere, as
    /// a config's numbered hosts and paths do, over the buckets (the low
    /// bits) and hashbrown's tags (the top seven): a hasher without a
    /// finalizer puts "/l1/" to "/l999/" in a few buckets.
    #[test]
    fn the_index_hasher_spreads_numbered_keys() {
        use std::hash::BuildHasher;
        let build = BuildByteHasher::default();
        let families: [fn(usize) -> String; 4] = [
            |i| format!("/l{i}/"),
            |i| format!("h{i}.example.com"),
            |i| format!("/api/v1/customers/{i:08}"),
            |i| format!("{i}"),
        ];
        for f in families {
            let hashes: Vec<u64> = (0..1024)
                .map(|i| build.hash_one(f(i).into_bytes().into_boxed_slice()))
                .collect();
            let distinct = |bits: fn(u64) -> u64| {
                let mut v: Vec<u64> = hashes.iter().map(|&h| bits(h)).collect();
                v.sort_unstable();
                v.dedup();
                v.len()
            };
            // (1024 keys thrown at random into 1024 buckets fill ~647)
            let low = distinct(|h| h & 1023);
            let tags = distinct(|h| h >> 57);
            assert!(low > 550, "{}: {low} buckets", f(0));
            assert!(tags > 120, "{}: {tags} tags", f(0));
        }
    }
}
