//! The rampart config an importer builds, as tables of keys, rendered to TOML.

use std::fmt::Write;

/// A TOML value, rendered by the toml crate (quoting and escapes are its).
pub fn s(v: &str) -> String {
    toml::Value::String(v.to_string()).to_string()
}

pub fn list(vs: &[String]) -> String {
    let items: Vec<String> = vs.iter().map(|v| s(v)).collect();
    format!("[{}]", items.join(", "))
}

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
    pub rules: Vec<Table>,
}

#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub keys: Table,
    pub tls: Option<Table>,
    pub health: Option<Table>,
    pub breaker: Option<Table>,
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
            for sv in &p.servers {
                o.push_str("  [[pool.server]]\n");
                sv.render(&mut o, "  ");
            }
        }
        o
    }
}
