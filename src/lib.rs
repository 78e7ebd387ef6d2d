//! rampart: a high-availability TCP/HTTP load-balancing proxy.
//!
//! `main.rs` is a thin CLI over the entry points here; tests and benches use them too.

pub mod accesslog;
pub mod admin;
pub mod boxed;
pub mod bytehash;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod discovery;
pub mod forwarded;
pub mod h1;
pub mod ha;
pub mod health;
pub mod heap;
pub mod http2;
pub mod import;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod plane;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod rates;
pub mod relaybuf;
pub mod reload;
pub mod router;
pub mod rules;
pub mod sdnotify;
pub mod snapshot;
pub mod statefile;
pub mod supervisor;
pub mod tls;
pub mod upgrade;
pub mod upstream;

pub use supervisor::{run, RunError, RunOptions};
