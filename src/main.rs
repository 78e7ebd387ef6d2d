//! The `rampart` command line: run, check, demo. Errors become messages and exit
//! codes here and only here.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// glibc's malloc behind a cache per thread of the small and 128-byte-aligned
/// blocks freed last (see `rampart::heap`).
#[global_allocator]
static ALLOCATOR: rampart::heap::Allocator = rampart::heap::Allocator;

/// `rampart --version`: the version and the TLS crypto provider it was built with.
const VERSION: &str = if cfg!(feature = "aws-lc") {
    concat!(env!("CARGO_PKG_VERSION"), " (TLS: rustls with aws-lc-rs)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (TLS: rustls with ring)")
};

#[derive(Parser)]
#[command(
    name = "rampart",
    version = VERSION,
    about = "A high-availability TCP/HTTP load-balancing proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "/etc/rampart/rampart.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 with a summary, or non-zero with every error.
    Check {
        #[arg(short, long, default_value = "/etc/rampart/rampart.toml")]
        config: PathBuf,
    },
    /// Print pools and servers (from the admin API).
    Status {
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        /// Bearer token for the admin API (or RAMPART_ADMIN_TOKEN): reads need
        /// it when `[admin] read_auth` is set.
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Redraw the status every second until interrupted.
    Watch {
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        /// Bearer token for the admin API (or RAMPART_ADMIN_TOKEN): reads need
        /// it when `[admin] read_auth` is set.
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Set a server's state: drain (no new requests), ready, or maint (out and unchecked).
    Server {
        #[arg(value_parser = ["drain", "ready", "maint"])]
        state: String,
        pool: String,
        /// The server's name, or its ip:port.
        server: String,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        /// Bearer token for the admin API (or RAMPART_ADMIN_TOKEN).
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Show quota use (`show [KEY]`) or forget a key's use (`reset KEY`).
    Quota {
        #[arg(value_parser = ["show", "reset"])]
        action: String,
        /// The key as the limit counts it (an API key, a client IP, ...).
        key: Option<String>,
        /// Only this [[rate_limit]].
        #[arg(long)]
        limit: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Switch a listener to read-only (writes refused, reads served) or back to
    /// normal; kept across reloads and, with a state file, restarts.
    Mode {
        #[arg(value_parser = ["read-only", "normal"])]
        mode: String,
        listener: String,
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Re-reads the config file of the running proxy and applies it (exit 1 and
    /// every problem if it is refused; the running config keeps serving).
    Reload {
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Starts the binary at the running proxy's path, which takes over its
    /// sockets and state; the old process then drains and exits.
    Upgrade {
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Run every health check now and print the summary.
    CheckNow {
        #[arg(long, default_value = "http://127.0.0.1:8404", env = "RAMPART_ADMIN")]
        admin: String,
        #[arg(long, env = "RAMPART_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Convert another proxy's config: the rampart TOML goes to stdout (or -o),
    /// a report of every directive (mapped, approximated, unsupported) to
    /// stderr. Exit 0 when everything was mapped, 3 otherwise.
    Import {
        /// The format: haproxy or nginx.
        format: String,
        /// The file to convert.
        file: PathBuf,
        /// Write the config here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Then run the original (haproxy or nginx from PATH) and rampart with
        /// the result side by side in front of the same local backends, replay
        /// requests through both, and report every request whose pool, status
        /// or redirect differs. Exit 4 when one does, 5 when the comparison
        /// could not run.
        #[arg(long)]
        verify: bool,
        /// With --verify, more requests: `METHOD HOST PATH [NAME: VALUE]` per line.
        #[arg(long, requires = "verify")]
        requests: Option<PathBuf>,
    },
    /// Start two demo backends and the proxy in front of them.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The admin/stats address.
        #[arg(long, default_value = "127.0.0.1:8404")]
        admin: SocketAddr,
    },
}

/// Exit codes: 0 ok, 1 invalid config, 2 could not start or run, or a
/// command line that does not say what to do (as clap's own usage errors).
const EXIT_CONFIG: u8 = 1;
const EXIT_RUN: u8 = 2;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Check { config } => match rampart::config::load(&config) {
            Ok(c) => {
                for w in c.warnings.iter().chain(&unresolved_names(&c)) {
                    eprintln!("warning: {}: {w}", config.display());
                }
                println!(
                    "{}: configuration is valid: {}",
                    config.display(),
                    c.summary()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!("{}: configuration is NOT valid", config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let cfg = match rampart::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            for w in &cfg.warnings {
                tracing::warn!("{}: {w}", config.display());
            }
            let opts = rampart::RunOptions {
                config_path: Some(config.clone()),
                ..Default::default()
            };
            match rampart::run(cfg, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rampart: {e}");
                    ExitCode::from(EXIT_RUN)
                }
            }
        }
        Command::Status { admin, token } => admin_call(admin, token, |c| async move {
            Ok(rampart::admin::client::render_table(&c.stats().await?))
        }),
        Command::Watch { admin, token } => {
            let rt = match cli_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("rampart: {e}");
                    return ExitCode::from(EXIT_RUN);
                }
            };
            let client = match rampart::admin::client::AdminClient::new(&admin, token) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("rampart: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            rt.block_on(async {
                loop {
                    let screen = match client.stats().await {
                        Ok(s) => rampart::admin::client::render_table(&s),
                        Err(e) => format!("{e}\n(retrying every second)"),
                    };
                    print!("\x1b[2J\x1b[H{screen}");
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = tokio::signal::ctrl_c() => break,
                    }
                }
            });
            ExitCode::SUCCESS
        }
        Command::Server {
            state,
            pool,
            server,
            weight,
            admin,
            token,
        } => admin_call(admin, token, |c| async move {
            let v = c.set_server(&pool, &server, &state, weight).await?;
            Ok(format!(
                "{pool}/{}: {} (weight {})",
                v.id, v.status, v.weight
            ))
        }),
        Command::Quota {
            action,
            key,
            limit,
            admin,
            token,
        } => {
            let reset = action == "reset";
            if reset && key.is_none() {
                // a usage error: not a result on stdout with exit 0, which a
                // script would take for a reset
                eprintln!(
                    "rampart: quota reset needs the KEY whose use to forget: \
                     rampart quota reset KEY [--limit NAME]"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            admin_call(admin, token, |c| async move {
                if let (true, Some(key)) = (reset, key.as_deref()) {
                    let reset = c.reset_quota(key, limit.as_deref()).await?;
                    return Ok(if reset.is_empty() {
                        format!("{key}: no quota use to reset")
                    } else {
                        format!("{key}: reset in {}", reset.join(", "))
                    });
                }
                let list = c.quotas(key.as_deref(), limit.as_deref()).await?;
                let mut out = String::new();
                for q in &list {
                    out.push_str(&format!(
                        "{} {}: {}/{} used, {} left, resets in {}s\n",
                        q.limit, q.key, q.used, q.quota, q.remaining, q.resets_in
                    ));
                }
                if list.is_empty() {
                    out.push_str("no quota use\n");
                }
                Ok(out.trim_end().to_string())
            })
        }
        Command::Mode {
            mode,
            listener,
            admin,
            token,
        } => admin_call(admin, token, |c| async move {
            let v = c.set_mode(&listener, &mode).await?;
            Ok(format!(
                "{}: {} ({} writes refused so far)",
                v.name,
                if v.read_only_manual {
                    "read-only"
                } else {
                    "normal"
                },
                v.read_only_refused
            ))
        }),
        Command::Reload { admin, token } => admin_call(admin, token, |c| async move {
            let r = c.reload().await?;
            if !r.ok {
                let mut lines = r.errors.join("\n");
                lines.push_str(&format!(
                    "\nreload refused: generation {} keeps serving",
                    r.generation
                ));
                return Err(rampart::admin::client::ClientError::Refused(lines));
            }
            for w in &r.warnings {
                eprintln!("warning: {}", rampart::admin::client::shown(w.clone()));
            }
            Ok(format!(
                "reloaded: generation {}: {}",
                r.generation, r.summary
            ))
        }),
        Command::Upgrade { admin, token } => admin_call(admin, token, |c| async move {
            let pid = c.upgrade().await?;
            Ok(format!(
                "upgraded: process {pid} serves; the old one drains and exits"
            ))
        }),
        Command::CheckNow { admin, token } => admin_call(admin, token, |c| async move {
            let s = c.check_now().await?;
            let mut out = format!(
                "{} servers: {} online, {} offline, {} degraded",
                s.total, s.online, s.offline, s.degraded
            );
            for p in &s.pools {
                for sv in &p.servers {
                    out.push_str(&format!(
                        "\n  {}/{}: {} {}",
                        p.pool,
                        sv.server,
                        sv.status,
                        sv.detail.as_deref().unwrap_or("")
                    ));
                }
            }
            Ok(out)
        }),
        Command::Import {
            format,
            file,
            output,
            verify,
            requests,
        } => import(
            &format,
            &file,
            output.as_deref(),
            verify,
            requests.as_deref(),
        ),
        Command::Demo { listen, admin } => match rampart::demo::run(listen, admin) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rampart: {e}");
                ExitCode::from(EXIT_RUN)
            }
        },
    }
}

/// Runs one admin API call and prints its result; exit 2 if it fails.
fn admin_call<F, Fut>(admin: String, token: Option<String>, f: F) -> ExitCode
where
    F: FnOnce(rampart::admin::client::AdminClient) -> Fut,
    Fut: std::future::Future<Output = Result<String, rampart::admin::client::ClientError>>,
{
    let client = match rampart::admin::client::AdminClient::new(&admin, token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match cli_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart: {e}");
            return ExitCode::from(EXIT_RUN);
        }
    };
    // (servers' own text, a check's detail or a reload's error among it, is
    // shown without the terminal escapes it may carry)
    use rampart::admin::client::shown;
    match rt.block_on(f(client)) {
        Ok(out) => {
            println!("{}", shown(out));
            ExitCode::SUCCESS
        }
        Err(rampart::admin::client::ClientError::Refused(why)) => {
            eprintln!("{}", shown(why));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("rampart: {}", shown(e.to_string()));
            ExitCode::from(EXIT_RUN)
        }
    }
}

/// Names that do not resolve now: allowed (the pool starts empty and fills when
/// they appear), but worth a warning from `rampart check`.
fn unresolved_names(cfg: &rampart::config::Config) -> Vec<String> {
    use rampart::discovery;
    if discovery::targets(cfg).is_empty() {
        return Vec::new();
    }
    let rt = match cli_runtime() {
        Ok(rt) => rt,
        Err(e) => return vec![format!("cannot check DNS names: {e}")],
    };
    rt.block_on(async {
        let disc = match discovery::Discovery::new(&cfg.resolver) {
            Ok(d) => d,
            Err(e) => return vec![format!("cannot check DNS names: {e}")],
        };
        let registry = discovery::NameRegistry::default();
        discovery::initial_round(&disc, cfg, &registry).await;
        let reg = registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.values()
            .filter(|s| s.members.is_empty())
            .map(|s| {
                format!(
                    "pool {:?}: {} does not resolve now ({}); the pool serves without it until it does",
                    s.pool,
                    s.name,
                    s.last_error.as_deref().unwrap_or("no answer")
                )
            })
            .collect()
    })
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RAMPART_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// The small runtime the CLI commands run their I/O on.
fn cli_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `rampart import FORMAT FILE [-o OUT]`.
fn import(
    format: &str,
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    verify: bool,
    requests: Option<&std::path::Path>,
) -> ExitCode {
    let src = match std::fs::read(file) {
        // configs in the wild are not always UTF-8 (comments in Latin-1)
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let name = file.display().to_string();
    let imported = match format {
        "haproxy" => rampart::import::haproxy::import(&src, &name),
        "nginx" => rampart::import::nginx::import(&src, &name),
        other => {
            eprintln!("unknown format {other:?}: use haproxy or nginx");
            return ExitCode::from(2);
        }
    };
    eprint!("{}", imported.report_text(&name));
    match output {
        Some(out) => {
            if let Err(e) = std::fs::write(out, &imported.toml) {
                eprintln!("{}: {e}", out.display());
                return ExitCode::from(2);
            }
        }
        None => print!("{}", imported.toml),
    }
    if verify {
        match rampart::import::verify::run(format, &src, &imported, requests) {
            Ok(o) => {
                for d in &o.differences {
                    eprintln!("verify: DIFFERS: {d}");
                }
                if std::env::var_os("RAMPART_VERIFY_ALL").is_some() {
                    for l in &o.lines {
                        eprintln!("verify: {l}");
                    }
                }
                eprintln!(
                    "verify: {} requests compared, {} differ, {} answered \"not imported\" by rampart (left out of the comparison)",
                    o.compared,
                    o.differences.len(),
                    o.skipped
                );
                if !o.differences.is_empty() {
                    return ExitCode::from(4);
                }
            }
            Err(e) => {
                eprintln!("verify: not run: {e}");
                return ExitCode::from(5);
            }
        }
    }
    ExitCode::from(imported.exit_code())
}
