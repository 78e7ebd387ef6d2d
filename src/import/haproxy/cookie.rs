//! Persistence by a cookie: `cookie NAME insert ...` (in a backend or
//! `defaults`) as `[pool.cookie]`, `dynamic-cookie-key` as its `key`, and a
//! server's `cookie VALUE` as its `[[pool.server]] cookie`. rampart only
//! inserts a cookie of its own (HAProxy's insert mode): `rewrite` and
//! `prefix`, which edit a cookie the servers set, are not imported.

use super::tokens::Line;
use super::{CookieLine, Importer, PoolCookie, COOKIE_NOTE};
use crate::import::out::{self, s, Table};
use crate::import::Fidelity;

impl Importer {
    /// The cookie settings a line sets: a pool's, or (None) `defaults`'.
    fn cookie_state(&mut self, pool: Option<usize>) -> &mut PoolCookie {
        match pool {
            Some(pi) => self.cookies.entry(pi).or_default(),
            None => &mut self.defaults.cookie,
        }
    }

    /// `cookie NAME ...`, in `defaults` (`pool` None) or a backend: it
    /// replaces what `defaults` said.
    pub(super) fn cookie_line(&mut self, l: &Line, pool: Option<usize>) {
        let line = self.cookie_insert(l, pool.is_none());
        let st = self.cookie_state(pool);
        st.seen = true;
        st.line = line;
    }

    /// `dynamic-cookie-key KEY`: `[pool.cookie] key`, once `finish` knows
    /// that the backend's cookie is imported.
    pub(super) fn dynamic_cookie_key(&mut self, l: &Line, pool: Option<usize>) {
        let key = match l.words.get(1) {
            Some(k) if !k.is_empty() => k.clone(),
            _ => {
                self.unsupported(l, "dynamic-cookie-key KEY expected");
                return;
            }
        };
        let entry = pool.map(|_| self.report.len());
        self.cookie_state(pool).key = Some((key, entry));
        if pool.is_some() {
            self.mapped(
                l,
                "[pool.cookie] key: hashed with each address into the values of the servers without one",
            );
        } else {
            self.mapped(l, "[pool.cookie] key of the backends that follow");
        }
    }

    /// `cookie NAME ...` as `[pool.cookie]`, reported; None when rampart
    /// cannot do what it says.
    fn cookie_insert(&mut self, l: &Line, defaults: bool) -> Option<CookieLine> {
        let w = &l.words;
        let Some(name) = w.get(1) else {
            self.unsupported(l, "cookie NAME expected");
            return None;
        };
        // HAProxy's switches are off unless written, as out::cookie's are
        let mut t = out::cookie(name);
        let (mut insert, mut other_mode, mut dynamic) = (false, None, false);
        let mut domains: Vec<&str> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut i = 2;
        while i < w.len() {
            match (w[i].as_str(), w.get(i + 1)) {
                ("insert", _) => insert = true,
                (m @ ("rewrite" | "prefix"), _) => other_mode = Some(m),
                (k @ ("indirect" | "nocache" | "httponly" | "secure"), _) => {
                    t.set(k, "true".into())
                }
                ("dynamic", _) => dynamic = true,
                ("domain", Some(d)) => {
                    domains.push(d);
                    i += 1;
                }
                ("attr", Some(a)) => {
                    if let Err(n) = attr(&mut t, a) {
                        notes.push(n);
                    }
                    i += 1;
                }
                (k @ ("maxidle" | "maxlife"), Some(_)) => {
                    notes.push(format!(
                        "{k}: rampart's cookie carries no date, a client keeps its server while that server is up (max_age, the browser's expiry, is another thing: not set)"
                    ));
                    i += 1;
                }
                ("preserve", _) => notes.push(
                    "preserve: rampart adds its cookie beside one of the same name that the server sets (HAProxy leaves the server's alone)".into(),
                ),
                ("postonly", _) => notes.push(
                    "postonly: rampart sets its cookie on the answer to any request, not only to a POST".into(),
                ),
                (k, _) => notes.push(format!("{k}: not imported")),
            }
            i += 1;
        }
        if let Some(m) = other_mode {
            self.unsupported(
                l,
                format!("{m}: the servers set this cookie and HAProxy edits it; rampart only inserts a cookie of its own ([pool.cookie], HAProxy's insert)"),
            );
            return None;
        }
        if !insert {
            self.unsupported(
                l,
                "without insert, HAProxy only reads a cookie the servers set; rampart only inserts a cookie of its own ([pool.cookie], HAProxy's insert)",
            );
            return None;
        }
        if let Some(d) = domains.first() {
            t.set("domain", s(d));
        }
        if domains.len() > 1 {
            notes.push(format!(
                "domain: rampart sets one cookie, for {}; HAProxy sets one per domain (not for {})",
                domains[0],
                domains[1..].join(", ")
            ));
        }
        if let Some(n) = out::lone_same_site_none(&mut t) {
            notes.push(n.into());
        }
        let mut note = if defaults {
            "[pool.cookie] of the backends that follow".to_string()
        } else {
            "[pool.cookie]".to_string()
        };
        note.push_str(" (indirect, nocache, httponly and secure as written)");
        if dynamic {
            note.push_str("; dynamic → each server without a value takes a hash of the key and its address, as in HAProxy, but not HAProxy's hash: clients that hold one of its dynamic cookies are balanced anew once");
        }
        let approx = !notes.is_empty();
        for n in notes {
            note.push_str("; ");
            note.push_str(&n);
        }
        if approx {
            self.approx(l, note);
        } else {
            self.mapped(l, note);
        }
        Some(CookieLine { table: t, dynamic })
    }

    /// Each pool's `[pool.cookie]` (with its key) and its servers' values;
    /// the report entries of what did not make it say so.
    pub(super) fn settle_cookies(&mut self) {
        for (pi, pc) in std::mem::take(&mut self.cookies) {
            let Some(line) = &pc.line else {
                self.cookie_left_out(&pc);
                continue;
            };
            let mut table = line.table.clone();
            if let Some((k, _)) = &pc.key {
                table.set("key", s(k));
            }
            // HAProxy's dynamic values need a key: without one, its servers
            // without a value get no cookie
            let hashed = line.dynamic && pc.key.is_some();
            for sc in &pc.servers {
                let problem = match &sc.value {
                    Some(v) if sc.dns => Some(format!(
                        "cookie {v} is not imported: each member of a DNS entry takes a hash of its address (its clients are balanced anew once)"
                    )),
                    Some(v) => match out::cookie_value_ok(v) {
                        Err(why) => Some(format!(
                            "cookie: {why}: not imported, the server takes a hash of its address"
                        )),
                        // (servers may share a value, a backup its normal
                        // server's: rampart sends its clients to the first
                        // that takes them, as HAProxy does)
                        Ok(()) => {
                            if let Some(sv) = self
                                .cfg
                                .pools
                                .get_mut(pi)
                                .and_then(|p| p.servers.get_mut(sc.server))
                            {
                                sv.set("cookie", s(v));
                            }
                            None
                        }
                    },
                    None if !hashed => Some(
                        "no cookie value: HAProxy clears the cookie of its clients (they are balanced each time), rampart sets one, a hash of its address, and keeps them on it".to_string(),
                    ),
                    None => None,
                };
                if let Some(p) = problem {
                    self.server_cookie_note(sc.entry, &p);
                }
            }
            if let Some(p) = self.cfg.pools.get_mut(pi) {
                p.cookie = Some(table);
            }
        }
    }

    /// A pool without a cookie rampart sets: its key and its servers' values
    /// are not imported either.
    fn cookie_left_out(&mut self, pc: &PoolCookie) {
        let why = if pc.seen {
            "this backend's cookie line is not imported (see it)"
        } else {
            "this backend has no cookie line (HAProxy ignores it too)"
        };
        if let Some((_, Some(entry))) = &pc.key {
            if let Some(e) = self.report.get_mut(*entry) {
                e.fidelity = if pc.seen {
                    Fidelity::Unsupported
                } else {
                    Fidelity::Approximated
                };
                e.note = format!("not imported: {why}");
            }
        }
        for sc in &pc.servers {
            if let Some(v) = &sc.value {
                self.server_cookie_note(sc.entry, &format!("cookie {v} is not imported: {why}"));
            }
        }
    }

    /// A server's report entry: its `cookie` did not make it, and why.
    fn server_cookie_note(&mut self, entry: usize, problem: &str) {
        let Some(e) = self.report.get_mut(entry) else {
            return;
        };
        if e.fidelity == Fidelity::Mapped {
            e.fidelity = Fidelity::Approximated;
        }
        e.note = e.note.replace(&format!("; {COOKIE_NOTE}"), "");
        e.note.push_str("; ");
        e.note.push_str(problem);
    }
}

/// `attr "SameSite=Lax"` → `same_site`; rampart sets no other attribute.
fn attr(t: &mut Table, a: &str) -> Result<(), String> {
    match a.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("samesite") => {
            let v = out::same_site(v.trim())
                .ok_or_else(|| format!("attr {a:?}: not a SameSite rampart sets: left out"))?;
            t.set("same_site", s(v));
            Ok(())
        }
        _ => Err(format!(
            "attr {a:?}: rampart sets no attribute but SameSite: left out"
        )),
    }
}
