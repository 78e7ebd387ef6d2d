//! `error_page CODE ... URI`: the page nginx serves, from a file, in place of
//! an error answer of its own. rampart's `error_pages` are files too, read
//! when the config is, and a listener's: each server's error_page lines (its
//! own, else the http level's, as nginx inherits them: all or none) are
//! resolved to the file nginx would serve for the URI (the location the URI
//! reaches, its `alias` or `root`, else the server's or the http level's
//! `root`), and the default server's become its listener's `error_pages`.

use super::super::nginx_parse::Directive;
use super::super::out::string_table;
use super::super::{Entry, Fidelity};
use super::{Importer, LocKind, Server};

/// What an error_page line of a server came to.
struct Resolved {
    /// (status, file), in the line's order
    files: Vec<(String, String)>,
    /// how it differs from nginx, if it does
    approx: Vec<String>,
    /// report entries of the `root` or `alias` lines it read the file from
    dirs: Vec<usize>,
    /// whether it read the http level's `root`
    http_root: bool,
}

impl Importer {
    /// Resolves server `sv`'s error pages (`own`: its own error_page lines;
    /// without any, the http level's hold) into `sv.pages`, and reports
    /// each line: its own at once, the http level's once, from the first
    /// server that resolves it (`finish` reports those no server used).
    pub(super) fn server_pages(&mut self, sv: &mut Server, own: &[Directive]) {
        let lines: Vec<Directive> = if own.is_empty() {
            self.http_pages.clone()
        } else {
            own.to_vec()
        };
        for (i, d) in lines.iter().enumerate() {
            let (fidelity, note) = match self.resolve_page(d, sv) {
                Ok(r) => {
                    for i in &r.dirs {
                        if let Some(en) = self.report.get_mut(*i) {
                            en.fidelity = Fidelity::Mapped;
                            en.note = "the folder of error_page files (error_pages); rampart serves no other files".into();
                        }
                    }
                    self.http_root_used |= r.http_root;
                    let codes: Vec<String> = r.files.iter().map(|(c, _)| c.clone()).collect();
                    let file = r.files.first().map(|(_, f)| f.clone()).unwrap_or_default();
                    for (c, f) in r.files {
                        // nginx takes the first line that names a status
                        if !sv.pages.iter().any(|(k, _)| *k == c) {
                            sv.pages.push((c, f));
                        }
                    }
                    let mut note = format!(
                        "the listener's error_pages: {} = {file:?} (rampart's own answers, as nginx's without proxy_intercept_errors: a server's own error answer passes unchanged)",
                        codes.join(", ")
                    );
                    let mut approx = r.approx;
                    if self.intercept_errors {
                        approx.push("with proxy_intercept_errors on, nginx serves it in place of a server's own answer too; rampart does not".into());
                    }
                    if approx.is_empty() {
                        (Fidelity::Mapped, note)
                    } else {
                        note.push_str("; ");
                        note.push_str(&approx.join("; "));
                        (Fidelity::Approximated, note)
                    }
                }
                Err(why) => (Fidelity::Unsupported, why),
            };
            let entry = Entry {
                line: d.line,
                directive: d.text(),
                fidelity,
                note,
            };
            if own.is_empty() {
                self.http_page_notes.entry(i).or_insert(entry);
            } else {
                self.report.push(entry);
            }
        }
    }

    /// The file(s) of one error_page line in server `sv`, or why there is none.
    fn resolve_page(&self, d: &Directive, sv: &Server) -> Result<Resolved, String> {
        let Some((uri, codes)) = d.args.split_last() else {
            return Err("error_page CODE ... URI expected".into());
        };
        if codes.iter().any(|c| c.starts_with('=')) {
            return Err(
                "not imported: a page that changes the answer's status (=CODE) is not in rampart, whose pages keep the status of what went wrong".into(),
            );
        }
        let mut statuses = Vec::new();
        let mut approx = Vec::new();
        for c in codes {
            match c.parse::<u16>() {
                Ok(400..=599) => statuses.push(c.clone()),
                Ok(300..=399) => {
                    approx.push(format!("{c} left out: rampart's pages are for 400 to 599"))
                }
                _ => return Err(format!("{c:?} is not a status")),
            }
        }
        if statuses.is_empty() {
            return Err("not imported: no status from 400 to 599".into());
        }
        if uri.starts_with('@') {
            return Err(
                "not imported: a named location is not in rampart; its pages are files".into(),
            );
        }
        if !uri.starts_with('/') {
            return Err(
                "not imported: a redirect as an error page is not in rampart; its pages are files"
                    .into(),
            );
        }
        if uri.contains('$') {
            return Err("not imported: nginx variables in the page's URI".into());
        }
        let path = uri.split('?').next().unwrap_or(uri);
        // the location the URI reaches, in nginx's order: exact, the longest
        // prefix (^~ stops there), regexes in order, the longest prefix
        let exact = sv
            .locs
            .iter()
            .find(|l| l.kind == LocKind::Exact && l.pat == path);
        let prefix = sv
            .locs
            .iter()
            .filter(|l| matches!(l.kind, LocKind::Prefix | LocKind::PrefixStop))
            .filter(|l| path.starts_with(l.pat.as_str()))
            .max_by_key(|l| l.pat.len());
        let regex = || {
            sv.locs.iter().find(|l| {
                l.kind == LocKind::Regex
                    && regex::Regex::new(&l.pat).is_ok_and(|r| r.is_match(path))
            })
        };
        let loc = match (exact, prefix) {
            (Some(l), _) => Some(l),
            (None, Some(p)) if p.kind == LocKind::PrefixStop => Some(p),
            (None, p) => regex().or(p),
        };
        if let Some(l) = loc {
            // (a handler answers what try_files found too: `try_files $uri
            // =404; fastcgi_pass ...` runs the script)
            match (&l.try_uri, &l.handler) {
                (Some(Some(fallback)), None) => approx.push(format!(
                    "nginx serves the page from {fallback} when the file is missing (try_files); rampart's must be there"
                )),
                (Some(None), None) => {}
                (_, Some(h)) if h == "proxy_pass" => {
                    return Err(format!(
                        "not imported: {path} reaches a location that proxies (line {}); rampart's pages are files",
                        l.line
                    ))
                }
                (_, Some(h)) => {
                    return Err(format!(
                        "not imported: {path} reaches a location whose {h} answers it (line {}); rampart's pages are files",
                        l.line
                    ))
                }
                (None, None) => {}
            }
        }
        let mut dirs = Vec::new();
        let mut http_root = false;
        let file = match loc.and_then(|l| l.alias.as_ref().map(|a| (l, a))) {
            Some((l, _)) if l.kind == LocKind::Regex => {
                return Err("not imported: an alias in a regex location (its captures)".into())
            }
            Some((l, (alias, entry))) => {
                dirs.push(*entry);
                if l.kind == LocKind::Exact {
                    alias.clone()
                } else {
                    format!("{alias}{}", &path[l.pat.len()..])
                }
            }
            None => {
                let root = loc
                    .and_then(|l| l.root.clone())
                    .or_else(|| sv.root.clone())
                    .or_else(|| {
                        let r = self.http_root.clone()?;
                        http_root = true;
                        Some((r, usize::MAX))
                    });
                let root = match root {
                    Some((r, entry)) => {
                        if entry != usize::MAX {
                            dirs.push(entry);
                        }
                        r
                    }
                    // nginx's default, html under its prefix
                    None => "html".into(),
                };
                format!("{}{path}", root.trim_end_matches('/'))
            }
        };
        if file.contains('$') {
            return Err("not imported: nginx variables in the page's root or alias".into());
        }
        if !file.starts_with('/') {
            // (rampart would read it from its config file's folder, where it
            // is not: the imported config would not load)
            return Err(format!(
                "not imported: {file:?} is relative to nginx's prefix (`nginx -V`, --prefix): give error_pages its absolute path by hand"
            ));
        }
        Ok(Resolved {
            files: statuses.into_iter().map(|c| (c, file.clone())).collect(),
            approx,
            dirs,
            http_root,
        })
    }

    /// The report of the http level's error_page lines and root: what the
    /// first server that used each made of it.
    pub(super) fn report_http_pages(&mut self) {
        for (i, d) in std::mem::take(&mut self.http_pages).into_iter().enumerate() {
            let entry = self.http_page_notes.remove(&i).unwrap_or_else(|| Entry {
                line: d.line,
                directive: d.text(),
                fidelity: Fidelity::Approximated,
                note: "not imported: every server block has error_page lines of its own (or there is none)".into(),
            });
            self.report.push(entry);
        }
        if let Some(d) = self.http_root_line.take() {
            if self.http_root_used {
                self.mapped(
                    &d,
                    "the folder of error_page files (error_pages); rampart serves no other files",
                );
            } else {
                self.unsupported(&d, "rampart serves no files: put a file server behind it");
            }
        }
    }

    /// The `error_pages` of the listener of servers `members` (`def` the
    /// default): the default server's. A server of it whose pages differ is
    /// reported.
    pub(super) fn listener_pages(
        &mut self,
        def: usize,
        members: &[usize],
        name: &str,
    ) -> Option<String> {
        let pages = self.servers[def].pages.clone();
        for &i in members {
            let mut theirs = self.servers[i].pages.clone();
            let mut ours = pages.clone();
            theirs.sort();
            ours.sort();
            if i != def && theirs != ours {
                self.not_the_listeners(i, "error pages", "error_pages are", name);
            }
        }
        (!pages.is_empty()).then(|| string_table(pages.iter().map(|(c, f)| (c, f))))
    }
}
