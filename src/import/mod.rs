//! `rampart import haproxy|nginx FILE`: another proxy's config turned into a
//! rampart config, with a report of how faithful each directive's translation
//! is: mapped (and to what), approximated (and how it differs), or
//! unsupported (and why).
//!
//! The importers are pure: text in, TOML text and report out. The TOML is
//! built from small tables (`out`), so it is always well-formed; whether
//! rampart accepts it is checked by the caller (`rampart check`), and by the
//! tests over a corpus of real configs.

pub mod haproxy;
mod haproxy_cond;
pub mod nginx;
pub mod nginx_parse;
mod out;
pub mod verify;

use std::fmt;

/// How a source directive made it into the rampart config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    Mapped,
    Approximated,
    Unsupported,
}

impl fmt::Display for Fidelity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fidelity::Mapped => "mapped",
            Fidelity::Approximated => "approximated",
            Fidelity::Unsupported => "unsupported",
        })
    }
}

/// One line of the report: a source directive and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub directive: String,
    pub fidelity: Fidelity,
    pub note: String,
}

/// An import's result.
#[derive(Debug, Clone)]
pub struct Imported {
    pub toml: String,
    pub report: Vec<Entry>,
}

impl Imported {
    /// 0 when everything was mapped, 3 when anything was approximated or
    /// unsupported.
    pub fn exit_code(&self) -> u8 {
        if self.report.iter().all(|e| e.fidelity == Fidelity::Mapped) {
            0
        } else {
            3
        }
    }

    /// The report as text: one line per source directive, then the counts.
    pub fn report_text(&self, file: &str) -> String {
        let mut s = String::new();
        for e in &self.report {
            s.push_str(&format!(
                "{file}:{}: {}: {}: {}\n",
                e.line, e.fidelity, e.directive, e.note
            ));
        }
        let count = |f| self.report.iter().filter(|e| e.fidelity == f).count();
        s.push_str(&format!(
            "{file}: {} directives: {} mapped, {} approximated, {} unsupported\n",
            self.report.len(),
            count(Fidelity::Mapped),
            count(Fidelity::Approximated),
            count(Fidelity::Unsupported)
        ));
        s
    }
}
