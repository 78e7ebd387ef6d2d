//! The `stream` level: TCP listeners and upstreams.

use super::{cert_list, duration, listen_addr, Importer};
use crate::import::nginx_parse::Directive;
use crate::import::out::{s, Table};
use crate::import::Entry;
use crate::import::Fidelity;

impl Importer {
    pub(super) fn stream_level(&mut self, ds: &[Directive]) {
        for d in ds {
            if d.name == "upstream" {
                self.upstream(d, true);
            } else if d.name == "resolver" {
                self.resolver(d);
            }
        }
        let mut inherited = Table::default();
        for d in ds {
            match d.name.as_str() {
                "upstream" | "resolver" => {}
                "server" => {
                    self.mapped(d, "a tcp [[listener]]");
                    let mut binds = Vec::new();
                    let mut pool = None;
                    let mut tls = Table::default();
                    let mut certs = (Vec::new(), Vec::new());
                    let mut pp = false;
                    let mut local = inherited.clone();
                    for e in d.block.iter().flatten() {
                        let a0 = e.args.first().cloned().unwrap_or_default();
                        match e.name.as_str() {
                            "listen" => match listen_addr(&a0) {
                                Ok(a) => {
                                    binds.push(a);
                                    let opts: Vec<&String> = e.args[1..].iter().collect();
                                    if opts.iter().any(|o| *o == "udp") {
                                        binds.pop();
                                        self.unsupported(e, "UDP is not proxied by rampart");
                                        continue;
                                    }
                                    if opts.iter().any(|o| *o == "proxy_protocol") {
                                        pp = true;
                                    }
                                    if opts.iter().any(|o| *o == "ssl") {
                                        tls.set("__ssl", "true".into());
                                    }
                                    self.mapped(e, "bind");
                                }
                                Err(er) => self.unsupported(e, er),
                            },
                            "proxy_pass" => pool = self.proxy_pass(e, None).map(|(p, _)| p),
                            "proxy_timeout" => {
                                match duration(&a0) {
                                    Some(t) => {
                                        local.set("server_timeout", s(&t));
                                        self.mapped(e, "the pool's server_timeout (a tcp session's idle timeout)");
                                    }
                                    None => self.unsupported(e, "not a duration"),
                                }
                            }
                            "proxy_connect_timeout" => match duration(&a0) {
                                Some(t) => {
                                    local.set("connect_timeout", s(&t));
                                    self.mapped(e, "the pool's connect_timeout");
                                }
                                None => self.unsupported(e, "not a duration"),
                            },
                            "proxy_next_upstream" | "proxy_next_upstream_tries" => {
                                self.mapped(e, "rampart retries a failed connect on another server")
                            }
                            "proxy_protocol" if a0 == "on" => {
                                local.set("send_proxy", s("v1"));
                                self.mapped(e, "the pool's send_proxy = \"v1\"");
                            }
                            "ssl_certificate" => {
                                certs.0.push(a0);
                                self.mapped(e, "[listener.tls] cert");
                            }
                            "ssl_certificate_key" => {
                                certs.1.push(a0);
                                self.mapped(e, "[listener.tls] cert's key");
                            }
                            "ssl_preread" => self.approx(
                                e,
                                "rampart peeks the SNI itself for routes with sni (none imported)",
                            ),
                            _ => self.unsupported(e, "no rampart equivalent is mapped"),
                        }
                    }
                    let Some(pool) = pool else {
                        self.report.push(Entry {
                            line: d.line,
                            directive: "server".into(),
                            fidelity: Fidelity::Unsupported,
                            note: "no proxy_pass rampart can use: the listener is left out".into(),
                        });
                        continue;
                    };
                    let mut t = Table::default();
                    if tls.get("__ssl").is_some() {
                        if certs.0.is_empty() {
                            self.report.push(Entry {
                                line: d.line,
                                directive: "server".into(),
                                fidelity: Fidelity::Unsupported,
                                note: "listen ... ssl without an ssl_certificate in this server (stream-level certificates are not imported): the listener is left out".into(),
                            });
                            continue;
                        }
                        t.set("cert", cert_list(&certs.0, &certs.1));
                    }
                    self.pool_settings.push((pool.clone(), local));
                    self.streams.push((binds, pool, t, pp));
                }
                "proxy_timeout" | "proxy_connect_timeout" => {
                    match d.args.first().and_then(|a| duration(a)) {
                        Some(t) => {
                            let k = if d.name == "proxy_timeout" {
                                "server_timeout"
                            } else {
                                "connect_timeout"
                            };
                            inherited.set(k, s(&t));
                            self.mapped(d, format!("the pools' {k}"));
                        }
                        None => self.unsupported(d, "not a duration"),
                    }
                }
                "log_format" | "access_log" | "error_log" => {
                    self.approx(d, "rampart logs tcp sessions in its access log")
                }
                _ => self.unsupported(d, "no rampart equivalent is mapped"),
            }
        }
    }
}
