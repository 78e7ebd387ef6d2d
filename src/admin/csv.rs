//! `/stats;csv`: HAProxy's CSV stats format, so tools written for HAProxy read it.
//! The 45 columns (through hrsp_other) are HAProxy's, in HAProxy's order.

use super::model::Stats;
use std::fmt::Write;

/// HAProxy's column names, in order (through check_duration).
pub const COLUMNS: &[&str] = &[
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
];

/// hrsp_1xx to hrsp_other (columns 39 to 44) from counts by class.
fn hrsp(row: &mut [String], by_class: &std::collections::BTreeMap<String, u64>) {
    if by_class.is_empty() {
        return; // a TCP listener: empty, as HAProxy leaves them
    }
    let classes = crate::accesslog::StatusCounts::CLASSES;
    for (i, c) in classes.iter().enumerate() {
        row[39 + i] = by_class.get(*c).copied().unwrap_or(0).to_string();
    }
}

/// Commas and newlines cannot appear in a field; one that a spreadsheet
/// would run as a formula (`=`, `+`, `-`, `@` first) is quoted with `'`.
fn clean(s: &str) -> String {
    let s = s.replace([',', '\n', '\r'], " ");
    if s.starts_with(['=', '+', '-', '@', '\t']) {
        format!("'{s}")
    } else {
        s
    }
}

pub fn render(stats: &Stats) -> String {
    let mut out = String::new();
    out.push_str("# ");
    out.push_str(&COLUMNS.join(","));
    out.push_str(",\n");
    let pid = std::process::id();
    for (iid, l) in stats.listeners.iter().enumerate() {
        // frontend: type 0
        let mut row = vec![String::new(); COLUMNS.len()];
        row[0] = clean(&l.name);
        row[1] = "FRONTEND".into();
        row[4] = l.active.to_string();
        row[7] = l.total.to_string();
        // denied requests (HAProxy's http-request deny, rate limits included)
        row[10] = (l.denied + l.rate_limited + l.read_only_refused).to_string();
        // requests refused for what the client sent, as HAProxy counts them
        row[12] = l.request_errors.values().sum::<u64>().to_string();
        row[17] = "OPEN".into();
        row[26] = pid.to_string();
        row[27] = (iid + 1).to_string();
        row[28] = "0".into();
        row[32] = "0".into();
        hrsp(&mut row, &l.responses);
        push(&mut out, &row);
    }
    let base = stats.listeners.len();
    for (pi, p) in stats.pools.iter().enumerate() {
        let iid = (base + pi + 1).to_string();
        for (si, s) in p.servers.iter().enumerate() {
            let mut row = vec![String::new(); COLUMNS.len()];
            row[0] = clean(&p.name);
            row[1] = clean(&s.id);
            // (requests waiting for this server: persistent ones)
            row[2] = s.queued.to_string();
            row[3] = "0".into();
            row[4] = s.active.to_string();
            row[5] = s.max_active.to_string();
            row[6] = if s.limit > 0 {
                s.limit.to_string()
            } else {
                String::new()
            };
            row[7] = s.total.to_string();
            row[8] = s.bytes_in.to_string();
            row[9] = s.bytes_out.to_string();
            row[13] = s.connect_errors.to_string();
            row[14] = s.response_errors.to_string();
            // every retry goes to another server: a redispatch in HAProxy's words
            row[15] = "0".into();
            row[16] = s.retries.to_string();
            row[17] = match s.status.as_str() {
                "DRAIN" => "DRAIN".into(),
                "MAINT" => "MAINT".into(),
                // HAProxy shows a server not checked yet as DOWN
                "UNKNOWN" => "DOWN".into(),
                "EJECTED" => "DOWN".into(),
                "BACKUP" => "UP".into(),
                other => other.into(),
            };
            row[18] = s.weight.to_string();
            row[19] = u8::from(!s.backup).to_string();
            row[20] = u8::from(s.backup).to_string();
            row[21] = s.checks_failed.to_string();
            row[22] = s.went_down.to_string();
            row[23] = s.status_secs.to_string();
            row[24] = s.downtime_secs.to_string();
            row[26] = pid.to_string();
            row[27] = iid.clone();
            row[28] = (si + 1).to_string();
            row[30] = s.total.to_string();
            row[32] = "2".into();
            row[33] = format!("{:.0}", s.rate);
            if let Some(c) = &s.last_check {
                row[36] = if c.ok { "L7OK".into() } else { "L7STS".into() };
                row[38] = format!("{:.0}", c.duration_ms);
            }
            hrsp(&mut row, &s.responses);
            push(&mut out, &row);
        }
        // backend: type 1
        let mut row = vec![String::new(); COLUMNS.len()];
        row[0] = clean(&p.name);
        row[1] = "BACKEND".into();
        row[2] = p.queue.to_string();
        row[4] = p.active.to_string();
        row[7] = p.requests_total.to_string();
        row[8] = p.bytes_in.to_string();
        row[9] = p.bytes_out.to_string();
        row[13] = p.connect_errors.to_string();
        row[14] = p.response_errors.to_string();
        row[15] = "0".into();
        row[16] = p.retries.to_string();
        row[17] = if p.eligible > 0 {
            "UP".into()
        } else {
            "DOWN".into()
        };
        row[18] = p.servers.iter().map(|s| s.weight).sum::<u32>().to_string();
        row[19] = p
            .servers
            .iter()
            .filter(|s| !s.backup && s.status == "UP")
            .count()
            .to_string();
        row[20] = p
            .servers
            .iter()
            .filter(|s| s.backup && s.status == "BACKUP")
            .count()
            .to_string();
        row[26] = pid.to_string();
        row[27] = iid;
        row[28] = "0".into();
        row[30] = p.requests_total.to_string();
        row[32] = "1".into();
        row[33] = format!("{:.0}", p.rate);
        // its servers' answers (HAProxy also counts the proxy's own here)
        let mut sum = std::collections::BTreeMap::new();
        for s in &p.servers {
            for (c, n) in &s.responses {
                *sum.entry(c.clone()).or_insert(0) += n;
            }
        }
        hrsp(&mut row, &sum);
        push(&mut out, &row);
    }
    out
}

fn push(out: &mut String, row: &[String]) {
    for f in row {
        let _ = write!(out, "{f},");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn a_field_is_one_cell_and_never_a_formula() {
        assert_eq!(clean("api,v2\r\nx"), "api v2  x");
        assert_eq!(clean("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        for f in ["+1", "-1", "@SUM(A1)", "\tx"] {
            assert!(clean(f).starts_with('\''), "{f}");
        }
        assert_eq!(clean("10.0.0.1:80"), "10.0.0.1:80");
    }
}
