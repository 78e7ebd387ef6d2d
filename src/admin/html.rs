//! `/stats`: the page an operator keeps open during an incident. Server-rendered,
//! readable without JavaScript, refreshing itself (`?refresh=N`).

use super::model::{PoolView, ServerView, Stats};
use std::fmt::Write;

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A small inline SVG line of the pool's request rate.
pub fn sparkline(values: &[f64]) -> String {
    let (w, h) = (180.0, 28.0);
    if values.len() < 2 {
        return format!("<svg class=\"spark\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"no data yet\"></svg>");
    }
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let step = w / (values.len() - 1) as f64;
    let mut pts = String::new();
    for (i, v) in values.iter().enumerate() {
        let _ = write!(
            pts,
            "{:.1},{:.1} ",
            i as f64 * step,
            h - 2.0 - (v / max) * (h - 4.0)
        );
    }
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"request rate, last {n}s, peak {max:.0}/s\"><polyline fill=\"none\" stroke=\"#2b7bb9\" stroke-width=\"1.5\" points=\"{pts}\"/></svg>",
        n = values.len()
    )
}

const CSS: &str = r#"
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d2129}
header{background:#1d2b3a;color:#fff;padding:10px 16px;display:flex;flex-wrap:wrap;gap:6px 24px;align-items:baseline}
header h1{font-size:18px;margin:0 12px 0 0}
header span{opacity:.85}
main{padding:12px 16px}
section{background:#fff;border:1px solid #d8dce2;border-radius:6px;margin:0 0 14px;overflow-x:auto}
h2{font-size:14px;margin:0;padding:8px 10px;background:#eef1f5;border-bottom:1px solid #d8dce2;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
h2 small{font-weight:normal;color:#555}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;text-align:right;border-bottom:1px solid #eceef1;white-space:nowrap}
th{background:#fafbfc;color:#444;font-weight:600}
th:first-child,td:first-child,td.l{text-align:left}
tr.total td{font-weight:600;background:#fafbfc}
.st{display:inline-block;min-width:64px;text-align:center;border-radius:3px;padding:1px 6px;color:#fff;font-weight:600;font-size:12px}
.UP{background:#2e9e44}.DOWN{background:#d0312d}.UNKNOWN{background:#8a8f98}.DRAIN{background:#e08a00}
.MAINT{background:#4a6fa5}.EJECTED{background:#8e44ad}.BACKUP{background:#138d90}
tr.row-DOWN td{background:#fdecea}tr.row-EJECTED td{background:#f5eefa}tr.row-DRAIN td,tr.row-MAINT td{background:#fff6e5}
.err{color:#c0392b;font-weight:600}.muted{color:#777}
.spark{vertical-align:middle;background:#f7fafd;border:1px solid #e1e8f0}
footer{color:#777;padding:0 16px 16px}
"#;

pub fn render(s: &Stats, refresh: u32) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
    );
    if refresh > 0 {
        let _ = write!(o, "<meta http-equiv=\"refresh\" content=\"{refresh}\">");
    }
    let _ = write!(
        o,
        "<meta name=\"viewport\" content=\"width=device-width\"><title>rampart stats</title><style>{CSS}</style></head><body>"
    );
    let _ = write!(
        o,
        "<header><h1>rampart {ver}</h1><span>uptime {up}</span><span>config {cfg}</span><span>started {started}</span><span>ready: {ready}</span>",
        ver = esc(&s.version),
        up = human_secs(s.uptime_secs),
        cfg = esc(s.config_file.as_deref().unwrap_or("(built in)")),
        started = esc(&s.started_at),
        ready = if s.ready { "yes" } else { "NO" },
    );
    let _ = write!(
        o,
        "<span>generation <b id=\"generation\">{}</b></span>",
        s.config.generation
    );
    if let Some(r) = &s.config.last_reload {
        let _ = write!(
            o,
            "<span id=\"last-reload\" class=\"{}\" title=\"{}\">last reload {} ({}): {}</span>",
            if r.ok { "" } else { "err" },
            esc(&r.errors.join("\n")),
            esc(&r.time),
            esc(&r.trigger),
            esc(&if r.ok {
                r.summary.clone()
            } else {
                format!("FAILED: {}", r.summary)
            }),
        );
    }
    if let Some(ha) = &s.ha {
        let state = ha.get("state").and_then(|v| v.as_str()).unwrap_or("?");
        let _ = write!(o, "<span>HA: <b id=\"ha-state\">{}</b></span>", esc(state));
    }
    let _ = write!(
        o,
        "<span class=\"muted\">{}</span></header><main>",
        esc(&s.now)
    );

    // listeners
    let _ = write!(
        o,
        "<section id=\"listeners\"><h2>Listeners</h2><table><tr><th>listener</th><th>mode</th><th>default pool</th><th>open conns</th><th>total conns</th><th>denied</th><th>request errors</th></tr>"
    );
    for l in &s.listeners {
        // read-only mode shows next to the mode, with the writes it refused
        let ro = match (l.read_only_manual, l.read_only) {
            (true, _) => format!(
                " <b class=\"down\">READ-ONLY (by hand)</b> {} writes refused",
                l.read_only_refused
            ),
            (false, true) => format!(
                " <b class=\"down\">READ-ONLY</b> {} writes refused",
                l.read_only_refused
            ),
            _ => String::new(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}{ro}</td><td>{}</td><td>{}</td><td>{}</td><td title=\"by rules: {}, by rate limits: {}\">{}</td><td title=\"{}\">{}</td></tr>",
            esc(&l.name),
            esc(&l.mode),
            esc(&l.pool),
            l.active,
            l.total,
            l.denied,
            l.rate_limited,
            l.denied + l.rate_limited,
            // by reason, on hover
            esc(&l
                .request_errors
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("{r}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")),
            l.request_errors.values().sum::<u64>()
        );
    }
    o.push_str("</table></section>");

    for p in &s.pools {
        pool_section(&mut o, p);
    }

    if !s.dns.is_empty() {
        let _ = write!(o, "<section id=\"dns\"><h2>DNS names</h2><table><tr><th>pool</th><th>name</th><th>members</th><th>TTL</th><th>last lookup</th><th>last change</th><th>lookups</th><th>errors</th><th>last error</th></tr>");
        for d in &s.dns {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"l\">{}</td></tr>",
                esc(&d.pool),
                esc(&d.name),
                d.members.len(),
                d.ttl_secs.map_or("-".into(), |t| format!("{t:.0}s")),
                esc(d.last_lookup.as_deref().unwrap_or("-")),
                esc(d.last_change.as_deref().unwrap_or("-")),
                d.lookups,
                if d.errors > 0 { "err" } else { "" },
                d.errors,
                esc(d.last_error.as_deref().unwrap_or("")),
            );
        }
        o.push_str("</table></section>");
    }
    let _ = write!(
        o,
        "</main><footer>Also: <a href=\"/stats;csv\">CSV</a> · <a href=\"/stats;json\">JSON</a> · <a href=\"/metrics\">metrics</a> · <a href=\"/api/health/summary\">health summary</a>. Refresh: {refresh}s (<a href=\"/stats?refresh=0\">off</a>).</footer></body></html>"
    );
    o
}

fn pool_section(o: &mut String, p: &PoolView) {
    let _ = write!(
        o,
        "<section class=\"pool\" id=\"pool-{id}\"><h2>Pool {name} <small>{bal}</small> <small>{eligible}/{total} servers eligible</small> <small>{rate:.1} req/s</small>{spark}</h2>",
        id = esc(&p.name),
        name = esc(&p.name),
        bal = esc(&p.balance),
        eligible = p.eligible,
        total = p.servers.len(),
        rate = p.rate,
        spark = sparkline(&p.history),
    );
    o.push_str("<table><tr><th>server</th><th>status</th><th>since</th><th>last check</th><th>weight</th><th>active / limit</th><th>queue</th><th>req/s</th><th>total</th><th>bytes in</th><th>bytes out</th><th>conn err</th><th>resp err</th><th>retries</th><th>downtime</th><th>source</th></tr>");
    for s in &p.servers {
        server_row(o, s);
    }
    let _ = write!(
        o,
        "<tr class=\"total\"><td>total</td><td></td><td></td><td></td><td></td><td>{active}</td><td>{queue}</td><td>{rate:.1}</td><td>{total}</td><td>{bin}</td><td>{bout}</td><td class=\"{ce}\">{econ}</td><td class=\"{re}\">{eresp}</td><td>{retries}</td><td></td><td>errors {errors}</td></tr></table>",
        active = p.active,
        queue = p.queue,
        rate = p.rate,
        total = p.requests_total,
        bin = human_bytes(p.bytes_in),
        bout = human_bytes(p.bytes_out),
        ce = if p.connect_errors > 0 { "err" } else { "" },
        econ = p.connect_errors,
        re = if p.response_errors > 0 { "err" } else { "" },
        eresp = p.response_errors,
        retries = p.retries,
        errors = p.errors,
    );
    if !p.priority.is_empty() {
        o.push_str("<p class=\"prio\">queue by priority:");
        for c in &p.priority {
            let _ = write!(
                o,
                " <b>{}</b> {} waiting, {} admitted, <span class=\"{}\">{} shed</span> ·",
                esc(&c.class),
                c.queued,
                c.admitted,
                if c.shed > 0 { "err" } else { "" },
                c.shed,
            );
        }
        o.pop();
        o.push_str("</p>");
    }
    o.push_str("</section>");
}

fn server_row(o: &mut String, s: &ServerView) {
    let check = match &s.last_check {
        Some(c) => format!(
            "<span class=\"{}\">{}</span> <span class=\"muted\">{:.0} ms, {:.0}s ago</span>",
            if c.ok { "" } else { "err" },
            esc(&c.detail),
            c.duration_ms,
            c.age_secs
        ),
        None => "<span class=\"muted\">-</span>".into(),
    };
    let weight = if s.effective_weight != s.weight {
        format!(
            "{} <span class=\"muted\">(slow start {})</span>",
            s.weight, s.effective_weight
        )
    } else {
        s.weight.to_string()
    };
    let limit = if s.limit > 0 {
        s.limit.to_string()
    } else {
        "-".into()
    };
    let _ = write!(
        o,
        "<tr class=\"server row-{st}\" data-server=\"{id}\"><td>{id}{bk}</td><td><span class=\"st {st}\">{st}</span></td><td>{since}</td><td class=\"l\">{check}</td><td>{weight}</td><td>{active} / {limit} <span class=\"muted\">(peak {maxa})</span></td><td>0</td><td>{rate:.1}</td><td>{total}</td><td>{bin}</td><td>{bout}</td><td class=\"{ce}\">{econ}</td><td class=\"{re}\">{eresp}</td><td>{retries}</td><td>{down}</td><td class=\"l\">{src}</td></tr>",
        id = esc(&s.id),
        bk = if s.backup { " <span class=\"muted\">(backup)</span>" } else { "" },
        st = esc(&s.status),
        since = human_secs(s.status_secs),
        active = s.active,
        maxa = s.max_active,
        rate = s.rate,
        total = s.total,
        bin = human_bytes(s.bytes_in),
        bout = human_bytes(s.bytes_out),
        ce = if s.connect_errors > 0 { "err" } else { "" },
        econ = s.connect_errors,
        re = if s.response_errors > 0 { "err" } else { "" },
        eresp = s.response_errors,
        retries = s.retries,
        down = human_secs(s.downtime_secs),
        src = esc(&s.source),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_secs(75), "1m15s");
        assert!(sparkline(&[0.0, 5.0, 10.0]).contains("<polyline"));
    }
}
