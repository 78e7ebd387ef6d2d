//! `rampart demo`: two small HTTP backends on loopback and the proxy in front of
//! them, in one process, so a new user sees balancing with nothing to install.

use crate::config;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the demo backends: {0}")]
    Backend(#[source] std::io::Error),
    #[error("the demo config is invalid (a bug): {0}")]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Run(#[from] crate::supervisor::RunError),
}

/// Starts two backends on 127.0.0.1 (OS-assigned ports) on their own thread and
/// returns their addresses.
pub fn start_backends() -> Result<Vec<SocketAddr>, DemoError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DemoError::Backend)?;
    let listeners = rt
        .block_on(async {
            let a = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let b = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            Ok::<_, std::io::Error>(vec![a, b])
        })
        .map_err(DemoError::Backend)?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .map_err(DemoError::Backend)?;
    std::thread::Builder::new()
        .name("demo-backends".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for (i, l) in listeners.into_iter().enumerate() {
                    tasks.push(tokio::spawn(backend(l, format!("backend-{}", i + 1))));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
        .map_err(DemoError::Backend)?;
    Ok(addrs)
}

async fn backend(l: tokio::net::TcpListener, name: String) {
    let name: Arc<str> = Arc::from(name);
    let addr = l.local_addr().ok();
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = format!(
                    "hello from {} ({}) : {} {} via {}\n",
                    name,
                    addr.map_or_else(|| "?".into(), |a| a.to_string()),
                    req.method(),
                    req.uri(),
                    req.headers()
                        .get("x-forwarded-for")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-"),
                );
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The demo's config text: one HTTP listener, one round-robin pool of the backends.
pub fn config_text(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut s = format!(
        r#"[global]
threads = 1
shutdown_grace = "5s"
access_log = "text"

[admin]
bind = "{admin}"

[[listener]]
name = "demo"
bind = ["{listen}"]
mode = "http"
pool = "demo"

[[pool]]
name = "demo"
balance = "round_robin"
connect_timeout = "1s"
server_timeout = "10s"
"#
    );
    for b in backends {
        s.push_str(&format!("  [[pool.server]]\n  address = \"{b}\"\n"));
    }
    s
}

/// Runs the demo until Ctrl-C.
pub fn run(listen: SocketAddr, admin: SocketAddr) -> Result<(), DemoError> {
    let backends = start_backends()?;
    let cfg = config::parse(&config_text(listen, admin, &backends), "demo.toml")?;
    let on_ready = Arc::new(move |_: &crate::control::Shared| {
        println!("rampart demo is running.");
        for (i, b) in backends.iter().enumerate() {
            println!("  backend-{}:  http://{b}/", i + 1);
        }
        println!("  proxy:      http://{listen}/   (round robin over both backends)");
        println!("  stats:      http://{admin}/stats   (also /stats;csv, /stats;json, /metrics, /api/pools)");
        println!();
        println!("Try:");
        println!("  for i in 1 2 3 4; do curl -s http://{listen}/; done");
        println!("  rampart status --admin http://{admin}");
        println!(
            "  rampart server drain demo {} --admin http://{admin}",
            backends[0]
        );
        println!("Each request alternates between backend-1 and backend-2 (until one is drained); one access log line per request follows.");
        println!("Press Ctrl-C to stop.");
    });
    crate::supervisor::run(
        cfg,
        crate::supervisor::RunOptions {
            stop: None,
            config_path: None,
            on_ready: Some(on_ready),
            runtime: None,
        },
    )?;
    Ok(())
}
