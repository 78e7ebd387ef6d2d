//! `[global]`: threads, connection limit, and how a stop's time is split.

use crate::config::file::*;
use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};
use std::time::Duration;

pub(super) fn global(
    g: &GlobalFile,
    gpath: &KeyPath,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Global {
    if g.threads > 1024 {
        p.add(
            &gpath.key("threads"),
            "must be between 0 (one per core) and 1024",
        );
    }
    if g.max_connections == 0 || g.max_connections > MAX_CONNECTIONS {
        p.add(
            &gpath.key("max_connections"),
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        );
    }
    let threads = match g.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if !g.reuse_port && threads > 1 {
        p.add(
            &gpath.key("reuse_port"),
            format!("false needs threads = 1: each of the {threads} worker threads listens on a socket of its own, which share their port by SO_REUSEPORT"),
        );
    }
    let drain = match drain_split(
        g.drain_budget.map(|d| d.0),
        g.drain_delay.map(|d| d.0),
        g.shutdown_grace.map(|d| d.0),
    ) {
        Ok(d) => d,
        Err((key, e)) => {
            p.add(&gpath.key(key), e);
            DrainSplit::default()
        }
    };
    if let Some(w) = &drain.warning {
        warnings.push(w.clone());
    }
    Global {
        threads,
        reuse_port: g.reuse_port,
        max_connections: g.max_connections,
        shutdown_grace: drain.shutdown_grace,
        drain_delay: drain.drain_delay,
        drain_budget: drain.budget,
        access_log: g.access_log,
        state_file: g.state_file.clone(),
        watch_config: g.watch_config,
    }
}

/// How a stop's time is spent: the wait for endpoints to notice /ready's 503
/// (`drain_delay`), the connection drain (`shutdown_grace`), and, with a
/// `drain_budget`, the margin kept before the hard stop.
#[derive(Debug, Clone, PartialEq)]
struct DrainSplit {
    drain_delay: Duration,
    shutdown_grace: Duration,
    budget: Option<(Duration, Duration)>,
    warning: Option<String>,
}

impl Default for DrainSplit {
    fn default() -> DrainSplit {
        DrainSplit {
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            budget: None,
            warning: None,
        }
    }
}

/// Splits `drain_budget`: a tenth (at least 1 s, at most half) is kept as a
/// margin before the hard stop, a fifth (at most 10 s) waits for endpoints to
/// notice, the rest drains connections. An explicit `drain_delay` or
/// `shutdown_grace` takes its part; the other gets what is left. Err: (key, why).
fn drain_split(
    budget: Option<Duration>,
    delay: Option<Duration>,
    grace: Option<Duration>,
) -> Result<DrainSplit, (&'static str, String)> {
    let Some(b) = budget else {
        let d = DrainSplit::default();
        return Ok(DrainSplit {
            drain_delay: delay.unwrap_or(d.drain_delay),
            shutdown_grace: grace.unwrap_or(d.shutdown_grace),
            ..d
        });
    };
    if b < Duration::from_secs(2) {
        return Err(("drain_budget", "must be at least 2s".into()));
    }
    let margin = (b / 10).max(Duration::from_secs(1)).min(b / 2);
    let usable = b - margin;
    let delay = delay.unwrap_or_else(|| (b / 5).min(Duration::from_secs(10)));
    let grace = match grace {
        Some(g) => g,
        None if delay < usable => usable - delay,
        None => {
            return Err((
                "drain_delay",
                format!(
                    "{delay:?} leaves nothing of drain_budget ({b:?}, of which {margin:?} is kept before the hard stop) for connections to finish"
                ),
            ))
        }
    };
    let warning = (delay + grace > usable).then(|| {
        format!(
            "global: drain_delay ({delay:?}) + shutdown_grace ({grace:?}) exceed drain_budget ({b:?}) less its {margin:?} margin: the stop can run into the hard kill"
        )
    });
    Ok(DrainSplit {
        drain_delay: delay,
        shutdown_grace: grace,
        budget: Some((b, margin)),
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_budget_splits_by_itself_and_explicit_parts_win() {
        let s = |b: u64, d: Option<u64>, g: Option<u64>| {
            drain_split(
                Some(Duration::from_secs(b)),
                d.map(Duration::from_secs),
                g.map(Duration::from_secs),
            )
        };
        let x = s(30, None, None).unwrap();
        assert_eq!(
            (x.drain_delay, x.shutdown_grace, x.budget),
            (
                Duration::from_secs(6),
                Duration::from_secs(21),
                Some((Duration::from_secs(30), Duration::from_secs(3)))
            )
        );
        // long budgets: the propagation wait stops at 10 s
        let x = s(120, None, None).unwrap();
        assert_eq!(
            (x.drain_delay, x.shutdown_grace),
            (Duration::from_secs(10), Duration::from_secs(98))
        );
        // explicit parts win; the other gets the rest
        let x = s(30, Some(10), None).unwrap();
        assert_eq!(x.shutdown_grace, Duration::from_secs(17));
        let x = s(30, Some(10), Some(60)).unwrap();
        assert!(x.warning.is_some(), "over budget: warned");
        assert_eq!(s(30, Some(27), None).unwrap_err().0, "drain_delay");
        assert_eq!(s(1, None, None).unwrap_err().0, "drain_budget");
        // without a budget, the defaults
        let x = drain_split(None, None, None).unwrap();
        assert_eq!(
            (x.drain_delay, x.shutdown_grace),
            (Duration::ZERO, Duration::from_secs(30))
        );
    }
}
