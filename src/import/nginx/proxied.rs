//! What nginx sends a server and makes of its answer's redirects where a
//! location proxies: the Host (`proxy_set_header Host`, `$proxy_host` by
//! default) and `proxy_redirect`, inherited from the nearest level that has
//! any of its lines.

use crate::import::nginx_parse::Directive;
use crate::import::out::replace_entry;

/// What a level (http, server, location) says of the Host a server gets
/// and of the rewrites of its redirects. nginx inherits `proxy_set_header`
/// and `proxy_redirect` lines from the nearest level that has any, none
/// from further up.
#[derive(Debug, Clone, Default)]
pub(super) struct Inherit {
    /// None: no proxy_set_header here; else whether one sets Host (to
    /// anything but nginx's default, `$proxy_host`)
    pub(super) host: Option<bool>,
    /// the level that decides the Host has an `include` (not followed),
    /// which may set it: taken as setting it (the client's Host is passed)
    pub(super) host_unsure: bool,
    /// None: no proxy_redirect here; else its lines
    pub(super) redirects: Option<Vec<Directive>>,
}

impl Inherit {
    /// `http`: the http level, whose globbed includes (`conf.d/*.conf`,
    /// `sites-enabled/*`) are taken to hold server blocks. An include of
    /// MIME types sets nothing here either.
    pub(super) fn of(ds: &[Directive], http: bool) -> Inherit {
        let includes = ds.iter().any(|d| {
            d.name == "include"
                && d.args
                    .first()
                    .is_some_and(|f| !(f.ends_with(".types") || http && f.contains('*')))
        });
        let sets_host = ds.iter().any(|d| {
            d.name == "proxy_set_header"
                && d.args
                    .first()
                    .is_some_and(|n| n.eq_ignore_ascii_case("host"))
                && d.args.get(1).map(String::as_str) != Some("$proxy_host")
        });
        let redirects: Vec<Directive> = ds
            .iter()
            .filter(|d| d.name == "proxy_redirect")
            .cloned()
            .collect();
        Inherit {
            host: (includes || ds.iter().any(|d| d.name == "proxy_set_header"))
                .then_some(sets_host || includes),
            host_unsure: includes && !sets_host,
            redirects: (!redirects.is_empty()).then_some(redirects),
        }
    }

    /// This level's, else `outer`'s.
    pub(super) fn or(&self, outer: &Inherit) -> Inherit {
        let (host, host_unsure) = match self.host {
            Some(h) => (Some(h), self.host_unsure),
            None => (outer.host, outer.host_unsure),
        };
        Inherit {
            host,
            host_unsure,
            redirects: self.redirects.clone().or_else(|| outer.redirects.clone()),
        }
    }
}

/// `$proxy_host` of a `proxy_pass` URL: its host, and its port unless the
/// scheme's own.
pub(super) fn proxy_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let default: u16 = if scheme == "https" { 443 } else { 80 };
    Some(match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>() == Ok(default) && !h.ends_with(':') => h.to_string(),
        _ => host.to_string(),
    })
}

/// The `response_replace_header` entries (TOML inline tables) of the
/// `proxy_redirect` lines that hold for a location proxying to `url`
/// (`loc_name`: its path, for a prefix or exact location); None: nginx's
/// default.
pub(super) fn redirect_replaces(
    lines: Option<&[Directive]>,
    url: &str,
    loc_name: Option<&str>,
) -> Vec<String> {
    let read: Vec<Redirect> = match lines {
        None => vec![Redirect::Default],
        Some(ls) => ls.iter().filter_map(|d| redirect_line(d).ok()).collect(),
    };
    let mut out = Vec::new();
    let text = |from: &str, to: &str, out: &mut Vec<String>| {
        // `$` is a `$` in nginx's text, and in rampart's `$$`
        let to = to.replace('$', "$$");
        let from = regex::escape(from);
        out.push(replace_entry(
            "Location",
            &format!("^{from}(.*)$"),
            &format!("{to}${{1}}"),
        ));
        out.push(replace_entry(
            "Refresh",
            &format!("^(.*?(?i:url=)){from}(.*)$"),
            &format!("${{1}}{to}${{2}}"),
        ));
    };
    for r in read {
        match r {
            Redirect::Off => return Vec::new(),
            Redirect::Default => {
                if url.contains('$') {
                    continue;
                }
                let has_uri = url
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.contains('/'));
                match (has_uri, loc_name) {
                    (false, _) => text(&format!("{url}/"), "/", &mut out),
                    (true, Some(name)) => text(url, name, &mut out),
                    (true, None) => {}
                }
            }
            Redirect::Text { from, to } => text(&from, &to, &mut out),
            Redirect::Regex { re, to } => {
                out.push(replace_entry("Location", &re, &to));
                if let Some((re, to)) = refresh_regex(&re, &to) {
                    out.push(replace_entry("Refresh", &re, &to));
                }
            }
        }
    }
    out
}

/// A `proxy_redirect ~REGEX TO` on a Refresh field: nginx matches the
/// regex against what follows its `url=`, and replaces all of that. The
/// regex (`(?i)` first for `~*`) and `to` (its groups as `${N}`) of a
/// Location's, for the whole field: one group before them, so theirs move
/// up by one. None: a `^` that does not only anchor it.
fn refresh_regex(re: &str, to: &str) -> Option<(String, String)> {
    let (flags, body) = re.strip_prefix("(?i)").map_or(("", re), |b| ("(?i)", b));
    // the `^` and `|` that are operators: not escaped, not in a class
    let (mut carets, mut bars) = (Vec::new(), false);
    let (mut escaped, mut class) = (false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' if !class => class = true,
            ']' if class => class = false,
            '^' if !class => carets.push(i),
            '|' if !class => bars = true,
            _ => {}
        }
    }
    let anchored = carets == [0] && !bars;
    if !(anchored || carets.is_empty()) {
        return None;
    }
    let inner = if anchored { &body[1..] } else { body };
    let skip = if anchored { "" } else { "(?s:.*?)" };
    let regex = format!("^(.*?(?i:url=)){skip}(?:{flags}{inner})(?s:.*)$");
    let mut shifted = String::from("${1}");
    let mut rest = to;
    while let Some(i) = rest.find("${") {
        shifted.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}')?;
        match after[..end].parse::<usize>() {
            Ok(n) => shifted.push_str(&format!("${{{}}}", n + 1)),
            Err(_) => shifted.push_str(&rest[i..i + 3 + end]),
        }
        rest = &after[end + 1..];
    }
    shifted.push_str(rest);
    Some((regex, shifted))
}

/// A `proxy_redirect` line, read.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Redirect {
    Off,
    /// proxy_pass's URL (with `/` when it has no URI part) becomes the
    /// location's path (`/` then)
    Default,
    /// a Location that starts with `from` has it replaced by `to`
    Text {
        from: String,
        to: String,
    },
    /// a Location `re` matches becomes `to` (captures as `${N}`)
    Regex {
        re: String,
        to: String,
    },
}

/// `proxy_redirect off|default|FROM TO|~REGEX TO|~*REGEX TO`: what rampart
/// can do of it, or why not.
pub(super) fn redirect_line(d: &Directive) -> Result<Redirect, String> {
    match d.args.as_slice() {
        [a] if a == "off" => Ok(Redirect::Off),
        [a] if a == "default" => Ok(Redirect::Default),
        [from, to] => {
            let (re, ci) = match from.strip_prefix("~*") {
                Some(r) => (Some(r), true),
                None => (from.strip_prefix('~'), false),
            };
            match re {
                Some(re) => {
                    let compiled = regex::Regex::new(re)
                        .map_err(|_| "a regex rampart's regex crate refuses".to_string())?;
                    let to = captures_as_rampart(to, &compiled).map_err(|name| {
                        format!(
                            "${name}: only the regex's captures are mapped, not nginx variables"
                        )
                    })?;
                    let re = if ci {
                        format!("(?i){re}")
                    } else {
                        re.to_string()
                    };
                    Ok(Redirect::Regex { re, to })
                }
                None if from.contains('$') || to.contains('$') => {
                    Err("a text with nginx variables is not mapped".into())
                }
                None => Ok(Redirect::Text {
                    from: from.clone(),
                    to: to.clone(),
                }),
            }
        }
        _ => Err("off, default, or FROM TO expected".into()),
    }
}

/// nginx's replacement text with its `$1`..`$9` (one digit: `$1a` is $1
/// and "a") and named captures as rampart writes them (`${1}`, `${name}`);
/// Err: the name of a variable that is not one of `compiled`'s captures
/// (or an unclosed `${`).
pub(super) fn captures_as_rampart(rep: &str, compiled: &regex::Regex) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut to = String::new();
    let mut rest = rep;
    while let Some(i) = rest.find('$') {
        to.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, used) = match after.strip_prefix('{') {
            Some(b) => match b.find('}') {
                Some(end) => (&b[..end], end + 2),
                None => return Err("{".into()),
            },
            None if after.starts_with(|c: char| c.is_ascii_digit()) => (&after[..1], 1),
            None => {
                let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let group = match name.parse::<usize>() {
            Ok(n) => n < compiled.captures_len(),
            Err(_) => compiled.capture_names().flatten().any(|g| g == name),
        };
        if !group {
            return Err(name.to_string());
        }
        to.push_str("${");
        to.push_str(name);
        to.push('}');
        rest = &after[used..];
    }
    to.push_str(rest);
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_host_drops_only_the_schemes_own_port() {
        for (url, want) in [
            ("http://app", "app"),
            ("http://app/x/", "app"),
            ("http://10.0.0.1:8080/", "10.0.0.1:8080"),
            ("http://h:80", "h"),
            ("https://h:443/a", "h"),
            ("https://h:80", "h:80"),
            ("http://[::1]:8080", "[::1]:8080"),
            ("http://[::1]:80", "[::1]"),
            ("http://h:080", "h"),
        ] {
            assert_eq!(proxy_host(url).as_deref(), Some(want), "{url}");
        }
        assert_eq!(proxy_host("app"), None);
    }

    /// nginx matches a Refresh's regex against what follows `url=` and
    /// replaces all of it: the whole-field regex gives the same.
    #[test]
    fn a_regex_on_refresh_works_on_what_follows_url() {
        let apply = |(re, to): (String, String), v: &str| {
            let re = regex::Regex::new(&re).unwrap();
            re.captures(v).map(|c| {
                let mut out = String::new();
                c.expand(&to, &mut out);
                out
            })
        };
        let r = refresh_regex("^http://app/(.*)$", "/x/${1}").unwrap();
        assert_eq!(
            apply(r.clone(), "5; URL=http://app/a?b").as_deref(),
            Some("5; URL=/x/a?b")
        );
        assert_eq!(apply(r, "5; url=https://app/a"), None);
        let r = refresh_regex("(?i)APP/(?P<rest>.*)", "/y/${rest}").unwrap();
        assert_eq!(
            apply(r, "0;url=http://app/z").as_deref(),
            Some("0;url=/y/z")
        );
        // a `^` that is not the regex's anchor; one in a class or escaped is
        // no anchor
        assert_eq!(refresh_regex("a|^b", "/"), None);
        let r = refresh_regex("^http://app/([^/]+)/\\^(.*)$", "/${1}/${2}").unwrap();
        assert_eq!(
            apply(r, "1; url=http://app/a/^b").as_deref(),
            Some("1; url=/a/b")
        );
    }

    #[test]
    fn proxy_redirect_lines_are_read_or_refused() {
        let line = |args: &[&str]| Directive {
            name: "proxy_redirect".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            line: 1,
            block: None,
        };
        assert_eq!(redirect_line(&line(&["off"])), Ok(Redirect::Off));
        assert_eq!(
            redirect_line(&line(&["~*^http://a/(.*)$", "/b/$1x"])),
            Ok(Redirect::Regex {
                re: "(?i)^http://a/(.*)$".into(),
                to: "/b/${1}x".into()
            })
        );
        assert!(redirect_line(&line(&["http://$host/", "/"])).is_err());
        assert!(redirect_line(&line(&["~^/(.*)$", "$scheme://x/$1"])).is_err());
        assert!(redirect_line(&line(&["a", "b", "c"])).is_err());
    }
}
