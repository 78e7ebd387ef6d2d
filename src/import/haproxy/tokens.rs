//! haproxy.cfg's lines and values: the tokenizer (quotes and escapes resolved,
//! line numbers kept), sections, and the parsers of durations, binds, stick
//! tables and rates that the translation reads them with.

/// One logical line: its number and its words (quotes and escapes resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) no: usize,
    pub(crate) words: Vec<String>,
}

/// The escape after a backslash, read from `chars` into `cur` (`\$` is one
/// inside double quotes only).
fn escape(chars: &mut std::str::Chars<'_>, cur: &mut String, in_quotes: bool) {
    match chars.next() {
        Some(c @ (' ' | '#' | '\\' | '"' | '\'')) => cur.push(c),
        Some('$') if in_quotes => cur.push('$'),
        Some('r') => cur.push('\r'),
        Some('n') => cur.push('\n'),
        Some('t') => cur.push('\t'),
        Some('x') => {
            let hex: String = chars.clone().take(2).collect();
            match u8::from_str_radix(&hex, 16) {
                // (a byte above ASCII stays as written: words are text; and
                // from_str_radix takes a sign, which is no hex digit)
                Ok(b)
                    if hex.len() == 2
                        && hex.chars().all(|c| c.is_ascii_hexdigit())
                        && b.is_ascii() =>
                {
                    chars.nth(1);
                    cur.push(char::from(b));
                }
                _ => cur.push_str("\\x"),
            }
        }
        Some(c) => {
            cur.push('\\');
            cur.push(c);
        }
        None => cur.push('\\'),
    }
}

/// Splits a line into words: `#` starts a comment outside quotes; "..." and
/// '...' group (no escapes inside single quotes); elsewhere a backslash
/// escapes as HAProxy's `parse_line` does: `\ `, `\#`, `\\`, `\"` and `\'`
/// are the character (`\$` too, in double quotes), `\r`, `\n`, `\t` and `\xNN`
/// control characters and bytes, and any other (a regex's `\d`) stays as
/// written.
pub(super) fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => escape(&mut chars, &mut cur, true),
            (Some(_), c) => cur.push(c),
            (None, '#') => break,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                escape(&mut chars, &mut cur, false);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    Resolvers,
    /// userlist, peers, mailers, cache, program, http-errors, ring, ...
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) kind: Kind,
    pub(crate) keyword: String,
    pub(crate) name: String,
    pub(crate) no: usize,
    pub(crate) lines: Vec<Line>,
    /// `frontend NAME ADDR`: the old syntax's address.
    pub(crate) bind_in_head: Option<String>,
}

pub(crate) fn sections(src: &str) -> (Vec<Section>, Vec<Line>) {
    let mut out: Vec<Section> = Vec::new();
    let mut orphans = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let w = words(raw);
        let Some(first) = w.first() else {
            continue;
        };
        let kind = match first.as_str() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            "resolvers" => Some(Kind::Resolvers),
            "userlist" | "peers" | "mailers" | "cache" | "program" | "http-errors" | "ring"
            | "crt-store" | "traces" | "log-forward" | "fcgi-app" => Some(Kind::Other),
            _ => None,
        };
        let line = Line {
            no: i + 1,
            words: w.clone(),
        };
        match kind {
            Some(kind) => out.push(Section {
                kind,
                keyword: first.clone(),
                name: w.get(1).cloned().unwrap_or_default(),
                no: i + 1,
                lines: Vec::new(),
                bind_in_head: w.get(2).filter(|a| a.contains(':')).cloned(),
            }),
            None => match out.last_mut() {
                Some(sec) => sec.lines.push(line),
                None => orphans.push(line),
            },
        }
    }
    (out, orphans)
}

/// A duration as HAProxy writes it (default unit: milliseconds) → rampart's.
pub(super) fn duration(v: &str) -> Option<String> {
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    // a value too large for milliseconds in a u64 is not a duration
    let ms = match unit {
        "" | "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        "us" => Some(n.div_ceil(1000)),
        _ => return None,
    }?;
    Some(if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// `*:80`, `:80`, `1.2.3.4:80`, `[::]:443`, `ipv4@...` → socket addresses.
pub(crate) fn bind_addrs(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in spec.split(',') {
        let a = a.strip_prefix("ipv4@").unwrap_or(a);
        if a.contains('@') {
            return Err(format!(
                "{a:?}: only TCP addresses are supported (no unix@, abns@, fd@)"
            ));
        }
        let (host, port) = a
            .rsplit_once(':')
            .ok_or_else(|| format!("{a:?}: no port"))?;
        if port.contains('-') {
            return Err(format!("{a:?}: port ranges are not supported"));
        }
        port.parse::<u16>()
            .map_err(|_| format!("{a:?}: not a port"))?;
        let host = match host {
            "" | "*" | "0.0.0.0" => "0.0.0.0".to_string(),
            "::" | "[::]" => "[::]".to_string(),
            h => h.to_string(),
        };
        let addr = format!("{host}:{port}");
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("{a:?}: rampart listens on IP addresses, not names"));
        }
        out.push(addr);
    }
    Ok(out)
}

/// A `stick-table` line: what a tracked `http_req_rate` limit needs.
#[derive(Debug, Clone)]
pub(super) struct Stick {
    /// `http_req_rate(PERIOD)`, seconds.
    pub(super) period: Option<u64>,
    pub(super) size: Option<u64>,
}

pub(super) fn stick(words: &[String]) -> Stick {
    let mut st = Stick {
        period: None,
        size: None,
    };
    let mut i = 1;
    while i < words.len() {
        match words[i].as_str() {
            "size" => {
                st.size = words.get(i + 1).and_then(|v| {
                    let (n, mul) = match v.to_ascii_lowercase().chars().last() {
                        Some('k') => (&v[..v.len() - 1], 1_000),
                        Some('m') => (&v[..v.len() - 1], 1_000_000),
                        Some('g') => (&v[..v.len() - 1], 1_000_000_000),
                        _ => (v.as_str(), 1),
                    };
                    n.parse::<u64>().ok().and_then(|n| n.checked_mul(mul))
                });
                i += 1;
            }
            "store" => {
                for item in words.get(i + 1).map(|v| v.split(',')).into_iter().flatten() {
                    if let Some(p) = item
                        .strip_prefix("http_req_rate(")
                        .and_then(|p| p.strip_suffix(')'))
                    {
                        st.period = duration(p).and_then(|d| secs(&d));
                    }
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    st
}

/// "10s" / "500ms" (as `duration` writes them) → whole seconds.
pub(super) fn secs(d: &str) -> Option<u64> {
    d.strip_suffix("ms")
        .and_then(|ms| ms.parse::<u64>().ok().map(|ms| ms / 1000))
        .or_else(|| d.strip_suffix('s').and_then(|x| x.parse().ok()))
        .filter(|&n| n > 0)
}

/// N requests per PERIOD seconds as rampart writes a rate, and whether it is
/// exact; None when N is too large to count (or PERIOD is 0).
pub(super) fn rate_text(n: u64, period: u64) -> Option<(String, bool)> {
    if period == 0 {
        return None;
    }
    for (unit, len) in [("s", 1u64), ("m", 60), ("h", 3600)] {
        let x = n.checked_mul(len)?;
        if x % period == 0 && x / period > 0 {
            return Some((format!("{}/{unit}", x / period), true));
        }
    }
    Some((
        format!("{}/h", n.checked_mul(3600)?.div_ceil(period)),
        false,
    ))
}

/// `frontend NAME ADDR` / `listen NAME ADDR` (the old syntax) as a bind line.
pub(crate) fn old_style_bind(sec: &Section) -> Option<Line> {
    sec.bind_in_head.as_ref().map(|a| Line {
        no: sec.no,
        words: vec!["bind".into(), a.clone()],
    })
}

/// The first `$NAME` / `${NAME}` in a directive.
pub(super) fn env_var(text: &str) -> Option<String> {
    let i = text.find('$')?;
    let rest = &text[i + 1..];
    let name: String = rest
        .trim_start_matches('{')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && !name.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .then(|| format!("${name}"))
}

/// A path with its `crt-base` / `ca-base`, when it is relative.
pub(super) fn with_base(base: &Option<String>, path: &str) -> String {
    match base {
        Some(b) if !path.starts_with('/') => format!("{}/{path}", b.trim_end_matches('/')),
        _ => path.to_string(),
    }
}

/// `timeout http-keep-alive`: what rampart does instead.
pub(super) const KEEP_ALIVE_NOTE: &str = "rampart waits for a keep-alive connection's next request for request_header_timeout (timeout http-request), as HAProxy does without this timeout";

pub(super) fn timeout_key(k: &str) -> &'static str {
    match k {
        "connect" => "each pool's connect_timeout",
        "server" => "each pool's server_timeout",
        "client" => "each listener's client_timeout",
        "queue" => "each pool's queue_timeout",
        "tunnel" => "each pool's tunnel_timeout",
        "check" => "the health check's timeout",
        _ => "",
    }
}

pub(super) fn timeout_key_name(k: &str) -> &'static str {
    match k {
        "connect" => "connect_timeout",
        "server" => "server_timeout",
        "queue" => "queue_timeout",
        _ => "tunnel_timeout",
    }
}

/// Whether a duration [`duration`] wrote is zero.
pub(super) fn zero(d: &str) -> bool {
    d.chars().take_while(char::is_ascii_digit).all(|c| c == '0')
}
