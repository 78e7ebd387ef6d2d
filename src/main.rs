//! The `rampart` command line: run, check, demo. Errors become messages and exit
//! codes here and only here.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
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

/// Exit codes: 0 ok, 1 invalid config, 2 could not start or run.
const EXIT_CONFIG: u8 = 1;
const EXIT_RUN: u8 = 2;

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
        Command::Demo { listen, admin } => match rampart::demo::run(listen, admin) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rampart: {e}");
                ExitCode::from(EXIT_RUN)
            }
        },
    }
}

/// Names that do not resolve now: allowed (the pool starts empty and fills when
/// they appear), but worth a warning from `rampart check`.
fn unresolved_names(cfg: &rampart::config::Config) -> Vec<String> {
    use rampart::discovery;
    if discovery::targets(cfg).is_empty() {
        return Vec::new();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
