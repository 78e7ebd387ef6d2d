//! Validation: the serde structs of `config::file` in, the runtime types of
//! `config::model` out, a file per section. Every problem is collected (not only
//! the first), each naming its key and line; cross-references (a route naming a
//! pool) are checked here.

mod admin;
mod global;
mod ha;
mod health;
mod http2;
mod listener;
mod pages;
mod pool;
mod resolver;
mod rules;
mod tls;

pub use health::parse_status_ranges;
pub use pool::cookie_value;

use crate::config::file::FileConfig;
use crate::config::model::Config;
use crate::config::problems::{KeyPath, Problem, Problems};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

pub(super) fn validate(raw: FileConfig, src: &str, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::new(src);
    let mut warnings = Vec::new();
    let root = KeyPath::default();

    // [global]
    let global = global::global(&raw.global, &root.key("global"), &mut p, &mut warnings);

    // [[pool]]
    let mut pool_index: HashMap<&str, usize> = HashMap::new();
    // every pool by name, for keys that name other pools (read_only_when)
    let pool_names: HashMap<&str, usize> = raw
        .pools
        .iter()
        .enumerate()
        .map(|(i, pf)| (pf.name.as_str(), i))
        .collect();
    let mut pools = Vec::with_capacity(raw.pools.len());
    for (i, pf) in raw.pools.iter().enumerate() {
        let at = root.index("pool", i);
        if pf.name.trim().is_empty() {
            p.add(&at.key("name"), "must not be empty");
        } else if pool_index.insert(pf.name.as_str(), i).is_some() {
            p.add(
                &at.key("name"),
                format!("a pool named {:?} is already defined", pf.name),
            );
        }
        pools.push(pool::pool(
            pf,
            &at,
            base,
            &pool_names,
            &mut p,
            &mut warnings,
        ));
    }

    // [[rate_limit]]
    let rate_limits = rules::rate_limits(&raw.rate_limits, &raw.tiers, base, &root, &mut p);
    let limit_index: HashMap<&str, usize> = rate_limits
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();

    // [[listener]]
    if raw.listeners.is_empty() {
        p.add(
            &root.key("listener"),
            "no [[listener]] is defined: nothing would be served",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut bound: Vec<(SocketAddr, String)> = vec![(raw.admin.bind.0, "admin.bind".to_string())];
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut used_pools = vec![false; pools.len()];
    // `[global] error_pages`: every listener's, under its own
    let error_pages = pages::pages(
        &raw.global.error_pages,
        &root.key("global").key("error_pages"),
        base,
        &mut p,
        &mut warnings,
    );
    for (i, lf) in raw.listeners.iter().enumerate() {
        let at = root.index("listener", i);
        if lf.name.trim().is_empty() {
            p.add(&at.key("name"), "must not be empty");
        } else if names.insert(lf.name.as_str(), i).is_some() {
            p.add(
                &at.key("name"),
                format!("a listener named {:?} is already defined", lf.name),
            );
        }
        let cx = listener::Cx {
            base,
            error_pages: &error_pages,
            pool_index: &pool_index,
            limit_index: &limit_index,
            pools: &pools,
            bound: &mut bound,
            used_pools: &mut used_pools,
        };
        listeners.push(listener::listener(lf, &at, cx, &mut p, &mut warnings));
    }
    for (pc, used) in pools.iter().zip(&used_pools) {
        if !used {
            warnings.push(format!("pool {:?} is not used by any listener", pc.name));
        }
    }

    // [admin]
    let admin = admin::admin(&raw.admin, &root.key("admin"), &mut p, &mut warnings);

    // [resolver]
    let resolver = resolver::resolver(
        raw.resolver.unwrap_or_default(),
        &root.key("resolver"),
        &mut p,
    );

    // [ha]
    let ha = raw
        .ha
        .as_ref()
        .and_then(|h| ha::ha(h, &root.key("ha"), base, &pool_index, &mut p, &mut warnings));

    // [rate_limit_store]
    let rate_limit_store = raw
        .rate_limit_store
        .as_ref()
        .and_then(|f| rules::rate_limit_store(f, &root.key("rate_limit_store"), &mut p));

    if !p.list.is_empty() {
        return Err(p.list);
    }
    Ok(Config {
        ha,
        rate_limit_store,
        resolver,
        global,
        admin,
        listeners,
        pools,
        rate_limits,
        warnings,
    })
}
