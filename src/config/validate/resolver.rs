//! `[resolver]`: how DNS discovery resolves.

use crate::config::file::*;
use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};

pub(super) fn resolver(rf: ResolverFile, rat: &KeyPath, p: &mut Problems<'_>) -> ResolverConfig {
    for (key, d) in [
        ("timeout", rf.timeout),
        ("min_ttl", rf.min_ttl),
        ("max_ttl", rf.max_ttl),
    ] {
        if d.0.is_zero() {
            p.add(&rat.key(key), "must be greater than zero");
        }
    }
    if rf.max_ttl.0 < rf.min_ttl.0 {
        p.add(&rat.key("max_ttl"), "must not be shorter than min_ttl");
    }
    if let Some(ns) = &rf.nameservers {
        if ns.is_empty() {
            p.add(
                &rat.key("nameservers"),
                "needs at least one address (or leave it out to use /etc/resolv.conf)",
            );
        }
    }

    ResolverConfig {
        nameservers: rf.nameservers.map(|v| v.into_iter().map(|a| a.0).collect()),
        timeout: rf.timeout.0,
        min_ttl: rf.min_ttl.0,
        max_ttl: rf.max_ttl.0,
        hold_on_failure: rf.hold_on_failure.0,
        on_empty: rf.on_empty,
        prefer: rf.prefer,
    }
}
