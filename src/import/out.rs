//! The rampart config an importer builds, as tables of keys, rendered to TOML.

use std::fmt::Write;

/// A TOML value, rendered by the toml crate (quoting and escapes are its).
pub fn s(v: &str) -> String {
    toml::Value::String(v.to_string()).to_string()
}

/// A media type rampart's `compression.types` takes: `type/subtype`,
/// `type/*` or `*` (as its config check reads them).
pub fn media_type_ok(t: &str) -> bool {
    crate::config::media_type_ok(t)
}

pub fn list(vs: &[String]) -> String {
    let items: Vec<String> = vs.iter().map(|v| s(v)).collect();
    format!("[{}]", items.join(", "))
}

/// An inline table of strings: `{ "502" = "/srv/502.html" }`.
pub fn string_table<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let items: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{} = {}", s(k), s(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// The match keys of a rule (`[[listener.rule]]`'s conditions).
const MATCH_KEYS: [&str; 8] = [
    "host",
    "path_prefix",
    "path",
    "path_regex",
    "method",
    "header",
    "src",
    "not",
];

/// Keys of one table, in order; a key set twice keeps its last value.
#[derive(Debug, Clone, Default)]
pub struct Table(pub Vec<(String, String)>);

impl Table {
    pub fn set(&mut self, k: &str, v: String) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_string(), v)),
        }
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    /// A rule table with no match key: it applies to every request.
    pub fn matches_everything(&self) -> bool {
        !self.0.iter().any(|(k, _)| MATCH_KEYS.contains(&k.as_str()))
    }
    fn render(&self, o: &mut String, indent: &str) {
        for (k, v) in &self.0 {
            let _ = writeln!(o, "{indent}{k} = {v}");
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Listener {
    pub keys: Table,
    pub tls: Option<Table>,
    /// `[[listener.route]]`: a tcp listener's routes by SNI.
    pub routes: Vec<Table>,
    pub rules: Vec<Table>,
}

#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub keys: Table,
    pub tls: Option<Table>,
    pub health: Option<Table>,
    pub breaker: Option<Table>,
    pub cookie: Option<Table>,
    pub servers: Vec<Table>,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub header: Vec<String>,
    pub global: Table,
    pub admin: Table,
    pub resolver: Table,
    pub rate_limits: Vec<Table>,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
}

impl Config {
    /// `base`, or `base-2`, `base-3`, ...: the first no listener has yet.
    pub fn unused_listener_name(&self, base: &str) -> String {
        let taken = |n: &str| {
            self.listeners
                .iter()
                .any(|x| x.keys.get("name") == Some(&s(n)))
        };
        let mut name = base.to_string();
        let mut k = 2;
        while taken(&name) {
            name = format!("{base}-{k}");
            k += 1;
        }
        name
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        for h in &self.header {
            let _ = writeln!(o, "# {h}");
        }
        if !self.global.0.is_empty() {
            o.push_str("\n[global]\n");
            self.global.render(&mut o, "");
        }
        if !self.admin.0.is_empty() {
            o.push_str("\n[admin]\n");
            self.admin.render(&mut o, "");
        }
        if !self.resolver.0.is_empty() {
            o.push_str("\n[resolver]\n");
            self.resolver.render(&mut o, "");
        }
        for r in &self.rate_limits {
            o.push_str("\n[[rate_limit]]\n");
            r.render(&mut o, "");
        }
        for l in &self.listeners {
            o.push_str("\n[[listener]]\n");
            l.keys.render(&mut o, "");
            if let Some(t) = &l.tls {
                o.push_str("  [listener.tls]\n");
                t.render(&mut o, "  ");
            }
            for r in &l.routes {
                o.push_str("  [[listener.route]]\n");
                r.render(&mut o, "  ");
            }
            for r in &l.rules {
                o.push_str("  [[listener.rule]]\n");
                r.render(&mut o, "  ");
            }
        }
        for p in &self.pools {
            o.push_str("\n[[pool]]\n");
            p.keys.render(&mut o, "");
            if let Some(t) = &p.tls {
                o.push_str("  [pool.tls]\n");
                t.render(&mut o, "  ");
            }
            if let Some(b) = &p.breaker {
                o.push_str("  [pool.breaker]\n");
                b.render(&mut o, "  ");
            }
            if let Some(h) = &p.health {
                o.push_str("  [pool.health]\n");
                h.render(&mut o, "  ");
            }
            // before the servers, as the other tables of the pool
            if let Some(c) = &p.cookie {
                o.push_str("  [pool.cookie]\n");
                c.render(&mut o, "  ");
            }
            for sv in &p.servers {
                o.push_str("  [[pool.server]]\n");
                sv.render(&mut o, "  ");
            }
        }
        o
    }
}

/// Whether rampart's loader takes this as a `[[pool.server]] address`.
pub fn address_ok(a: &str) -> Result<(), String> {
    crate::config::ServerAddr::parse(a).map(|_| ())
}

/// Whether rampart's loader takes this as a `[[pool.server]] cookie`.
pub fn cookie_value_ok(v: &str) -> Result<(), String> {
    crate::config::cookie_value(v)
}

/// A `[pool.cookie]` named `name`, with `indirect`, `nocache`, `httponly`
/// and `secure` off: rampart's defaults turn the first three on, and neither
/// HAProxy nor nginx does unless told, so each importer turns on what the
/// original says.
pub fn cookie(name: &str) -> Table {
    let mut t = Table::default();
    t.set("name", s(name));
    for k in ["indirect", "nocache", "httponly", "secure"] {
        t.set(k, "false".into());
    }
    t
}

/// A cookie's `SameSite` value (any case) as `[pool.cookie] same_site`.
pub fn same_site(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "strict" => Some("Strict"),
        "lax" => Some("Lax"),
        "none" => Some("None"),
        _ => None,
    }
}

/// `same_site = "None"` without `secure = true` is left out of a
/// `[pool.cookie]` (browsers refuse such a cookie, rampart such a config):
/// the note that says so, when it was.
pub fn lone_same_site_none(t: &mut Table) -> Option<&'static str> {
    if t.get("same_site") != Some("\"None\"") || t.get("secure") == Some("true") {
        return None;
    }
    t.0.retain(|(k, _)| k != "same_site");
    Some("SameSite=None without secure is left out (browsers refuse it, and rampart)")
}

/// Whether a header edit's name and value are valid HTTP.
/// A `response_replace_header` entry: `{ name = ..., regex = ..., to = ... }`.
pub fn replace_entry(name: &str, regex: &str, to: &str) -> String {
    format!(
        "{{ name = {}, regex = {}, to = {} }}",
        s(name),
        s(regex),
        s(to)
    )
}

pub fn header_ok(name: &str, value: Option<&str>) -> Result<(), String> {
    hyper::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if let Some(v) = value {
        hyper::header::HeaderValue::from_str(v)
            .map_err(|_| format!("{v:?} is not a valid header value"))?;
    }
    Ok(())
}

/// One segment of a config key path: `pool[2]` → ("pool", Some(2)).
fn segments(key: &str) -> Vec<(&str, Option<usize>)> {
    key.split('.')
        .map(|seg| match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse().ok()),
            None => (seg, None),
        })
        .collect()
}

/// Keys a table cannot be without: a problem there takes the whole table.
const REQUIRED: [&str; 5] = ["name", "bind", "pool", "address", "mode"];

impl Config {
    /// Removes what the named problem is about: the key, or the element it
    /// belongs to when the key is required. Whether something was removed.
    fn remove_at(&mut self, key: &str) -> bool {
        let segs = segments(key);
        let drop_key = |t: &mut Table, k: &str| {
            let before = t.0.len();
            t.0.retain(|(x, _)| x != k);
            t.0.len() != before
        };
        match segs.as_slice() {
            [("listener", Some(i)), ("rule", Some(j)), ..] => {
                let Some(l) = self.listeners.get_mut(*i) else {
                    return false;
                };
                (*j < l.rules.len()).then(|| l.rules.remove(*j)).is_some()
            }
            [("listener", Some(i)), ("route", Some(j)), ..] => {
                let Some(l) = self.listeners.get_mut(*i) else {
                    return false;
                };
                (*j < l.routes.len()).then(|| l.routes.remove(*j)).is_some()
            }
            // a listener whose TLS is refused goes whole (never plain instead)
            [("listener", Some(i)), (k, _), ..] if *k == "tls" || REQUIRED.contains(k) => (*i
                < self.listeners.len())
            .then(|| self.listeners.remove(*i))
            .is_some(),
            [("listener", Some(i)), (k, _), ..] => self
                .listeners
                .get_mut(*i)
                .is_some_and(|l| drop_key(&mut l.keys, k)),
            [("pool", Some(i)), ("server", Some(j)), (k @ ("name" | "cookie"), _)] => self
                .pools
                .get_mut(*i)
                .and_then(|p| p.servers.get_mut(*j))
                .is_some_and(|sv| drop_key(sv, k)),
            [("pool", Some(i)), ("server", Some(j)), ..] => {
                let Some(p) = self.pools.get_mut(*i) else {
                    return false;
                };
                (*j < p.servers.len())
                    .then(|| p.servers.remove(*j))
                    .is_some()
            }
            [("pool", Some(i)), ("health", _), ..] => self
                .pools
                .get_mut(*i)
                .is_some_and(|p| p.health.take().is_some()),
            [("pool", Some(i)), ("breaker", _), ..] => self
                .pools
                .get_mut(*i)
                .is_some_and(|p| p.breaker.take().is_some()),
            [("pool", Some(i)), ("tls", _), ..] => self
                .pools
                .get_mut(*i)
                .is_some_and(|p| p.tls.take().is_some()),
            // a cookie's attribute goes alone; with its name, the cookie goes
            // whole, and the servers' values (which need it) with it
            [("pool", Some(i)), ("cookie", _), (k, _), ..] if *k != "name" => self
                .pools
                .get_mut(*i)
                .and_then(|p| p.cookie.as_mut())
                .is_some_and(|c| drop_key(c, k)),
            [("pool", Some(i)), ("cookie", _), ..] => {
                let Some(p) = self.pools.get_mut(*i) else {
                    return false;
                };
                for sv in &mut p.servers {
                    drop_key(sv, "cookie");
                }
                p.cookie.take().is_some()
            }
            [("pool", Some(i)), (k, _), ..] if REQUIRED.contains(k) || *k == "server" => (*i
                < self.pools.len())
            .then(|| self.pools.remove(*i))
            .is_some(),
            [("pool", Some(i)), (k, _), ..] => self
                .pools
                .get_mut(*i)
                .is_some_and(|p| drop_key(&mut p.keys, k)),
            [("rate_limit", Some(i)), ..] => (*i < self.rate_limits.len())
                .then(|| self.rate_limits.remove(*i))
                .is_some(),
            [("resolver", _), (k, _), ..] => drop_key(&mut self.resolver, k),
            [("global", _), (k, _), ..] => drop_key(&mut self.global, k),
            [("admin", _), ..] => {
                let had = !self.admin.0.is_empty();
                self.admin = Table::default();
                had
            }
            _ => false,
        }
    }

    /// Whatever rampart's loader still refuses (not for a missing file: a
    /// certificate the original names and this machine lacks) is left out,
    /// one problem at a time, each reported; a listener or pool that named
    /// what went is fixed up after. The importers' last step, so that the
    /// output is a config rampart runs.
    pub fn repair(&mut self, report: &mut Vec<super::Entry>) {
        let base = std::path::Path::new("/nonexistent-rampart-import-base");
        for _ in 0..64 {
            let text = self.render();
            let problems = match crate::config::parse_in(&text, "imported.toml", base) {
                Ok(_) => return,
                Err(crate::config::ConfigError::Invalid { problems, .. }) => problems,
                Err(_) => return,
            };
            let Some(p) = problems.iter().find(|p| !p.message.contains("cannot read")) else {
                return;
            };
            let removed = self.remove_at(&p.key);
            report.push(super::Entry {
                line: 0,
                directive: "(check)".into(),
                fidelity: super::Fidelity::Unsupported,
                note: format!(
                    "{}: {}: {}",
                    p.key,
                    p.message,
                    if removed {
                        "left out"
                    } else {
                        "could not be left out"
                    }
                ),
            });
            if !removed {
                return;
            }
            self.fix_references();
        }
    }

    /// A placeholder pool when there is none: a config must have one to run.
    /// Whether one was added.
    pub fn placeholder_pool(&mut self) -> bool {
        if !self.pools.is_empty() {
            return false;
        }
        let mut p = Pool::default();
        p.keys.set("name", s("imported"));
        let mut sv = Table::default();
        sv.set("address", s("127.0.0.1:8000"));
        p.servers.push(sv);
        self.pools.push(p);
        true
    }

    /// A placeholder listener (to the first pool) when there is none.
    pub fn placeholder_listener(&mut self, mode: &str) -> bool {
        if !self.listeners.is_empty() || self.pools.is_empty() {
            return false;
        }
        let mut l = Listener::default();
        l.keys.set("name", s("imported"));
        l.keys.set("bind", list(&["127.0.0.1:8080".to_string()]));
        l.keys.set("mode", s(mode));
        let first = self.pools[0]
            .keys
            .get("name")
            .unwrap_or("\"imported\"")
            .to_string();
        l.keys.set("pool", first);
        self.listeners.push(l);
        true
    }

    /// `[[rate_limit]]`s no rule names are left out.
    pub fn drop_unused_rate_limits(&mut self) {
        let used: Vec<String> = self
            .listeners
            .iter()
            .flat_map(|l| {
                l.rules
                    .iter()
                    .filter_map(|r| r.get("rate_limit").map(String::from))
            })
            .collect();
        self.rate_limits
            .retain(|r| r.get("name").is_some_and(|n| used.iter().any(|u| u == n)));
    }

    /// Rules and listeners that name pools that are gone; placeholders when
    /// nothing is left to run.
    fn fix_references(&mut self) {
        let names: Vec<String> = self
            .pools
            .iter()
            .filter(|p| !p.servers.is_empty())
            .filter_map(|p| p.keys.get("name").map(String::from))
            .collect();
        self.pools.retain(|p| !p.servers.is_empty());
        let known = |v: Option<&str>| v.is_none_or(|p| names.iter().any(|n| n == p));
        for l in &mut self.listeners {
            l.rules.retain(|r| known(r.get("pool")));
            l.routes.retain(|r| known(r.get("pool")));
        }
        // (a tcp listener with routes may have no pool)
        self.listeners.retain(|l| match l.keys.get("pool") {
            Some(p) => names.iter().any(|n| n == p),
            None => !l.routes.is_empty(),
        });
        let limits: Vec<String> = self
            .rate_limits
            .iter()
            .filter_map(|r| r.get("name").map(String::from))
            .collect();
        for l in &mut self.listeners {
            l.rules.retain(|r| {
                r.get("rate_limit")
                    .is_none_or(|n| limits.iter().any(|x| x == n))
            });
        }
        self.placeholder_pool();
        self.placeholder_listener("http");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repair keeps a tcp listener with routes and no pool: a route the
    /// loader refuses goes alone, and so does one whose pool went.
    #[test]
    fn a_repair_keeps_a_listener_of_routes_without_a_pool() {
        let table = |kv: &[(&str, &str)]| {
            let mut t = Table::default();
            for (k, v) in kv {
                t.set(k, s(v));
            }
            t
        };
        let pool = |name: &str, address: &str| Pool {
            keys: table(&[("name", name)]),
            servers: vec![table(&[("address", address)])],
            ..Default::default()
        };
        let mut cfg = Config {
            listeners: vec![Listener {
                keys: table(&[("name", "edge"), ("mode", "tcp")]),
                routes: vec![
                    table(&[("sni", "db.example.com"), ("pool", "a")]),
                    table(&[("sni", "bad..name"), ("pool", "a")]),
                    table(&[("sni", "b.example.com"), ("pool", "b")]),
                ],
                ..Default::default()
            }],
            pools: vec![pool("a", "127.0.0.1:9001"), pool("b", "not an address")],
            ..Default::default()
        };
        cfg.listeners[0]
            .keys
            .set("bind", list(&["127.0.0.1:5443".to_string()]));
        let mut report = Vec::new();
        cfg.repair(&mut report);
        let text = cfg.render();
        let parsed =
            crate::config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed.listeners.len(), 1, "{text}");
        assert_eq!(parsed.listeners[0].pool, None);
        assert_eq!(parsed.listeners[0].routes.len(), 1, "{text}");
        assert_eq!(report.len(), 2, "{report:#?}");
    }
}
