//! TLS on listeners (certificates by SNI, ALPN, versions, client certificates,
//! certificate reload, resumption), TLS to backends, and SNI passthrough, with
//! real clients: rustls, `openssl s_client` and `curl`.

mod common;

use common::tls::{self as t, client_hello, Issued, Key, Pki};
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `[global]` and `[admin]`, then `body`.
fn config(admin: SocketAddr, global: &str, body: &str) -> String {
    format!("[global]\nthreads = 1\naccess_log = \"text\"\n{global}\n[admin]\nbind = \"{admin}\"\n{body}")
}

/// An http listener `name` on `bind` for pool `pool`, with `[listener.tls]` = `tls`.
fn tls_listener(name: &str, bind: SocketAddr, pool: &str, tls: &str) -> String {
    format!(
        "\n[[listener]]\nname = \"{name}\"\nbind = [\"{bind}\"]\nmode = \"http\"\npool = \"{pool}\"\n  [listener.tls]\n{tls}\n"
    )
}

fn pool(name: &str, extra: &str, server: SocketAddr) -> String {
    format!("\n[[pool]]\nname = \"{name}\"\n{extra}\n  [[pool.server]]\n  address = \"{server}\"\n")
}

/// A plain http listener `name` on `bind` for the pool of the same name.
fn listener(name: &str, bind: SocketAddr) -> String {
    format!("\n[[listener]]\nname = \"{name}\"\nbind = [\"{bind}\"]\nmode = \"http\"\npool = \"{name}\"\n")
}

/// A `[pool.health]` http check every 200 ms that decides at once.
const HEALTH: &str = "  [pool.health]\n  kind = \"http\"\n  path = \"/health\"\n  interval = \"200ms\"\n  rise = 1\n  fall = 1\n";

fn certs(list: &[&Issued]) -> String {
    let files: Vec<String> = list
        .iter()
        .map(|i| format!("{:?}", i.pem.display().to_string()))
        .collect();
    format!("  cert = [{}]\n", files.join(", "))
}

fn resolve(name: &str, addr: SocketAddr) -> String {
    format!("{name}:{}:{}", addr.port(), addr.ip())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_chosen_by_sni_with_a_default_and_any_key_type() {
    let pki = Pki::new("Rampart Test CA");
    let default = pki.issue(
        "default",
        "default.example.com",
        &["default.example.com"],
        Key::Ecdsa,
        30,
    );
    let exact = pki.issue("exact", "a.example.com", &["a.example.com"], Key::Rsa, 30);
    let wild = pki.issue("wild", "b wildcard", &["*.b.example.com"], Key::Ed25519, 30);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web, strict) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let body = tls_listener("web", web, "api", &certs(&[&default, &exact, &wild]))
        + &tls_listener(
            "strict",
            strict,
            "api",
            &(certs(&[&default, &exact]) + "  strict_sni = true\n"),
        )
        + &pool("api", "", backend.addr);
    let _p = Proxy::start(&config(admin, "", &body), &[web, strict]).await;

    let cfg = || t::client_config(&pki, &["http/1.1"]);
    // exact name (RSA), wildcard (Ed25519), no SNI (the default, ECDSA)
    let (_, seen) = t::connect(cfg(), web, Some("a.example.com"), "")
        .await
        .unwrap();
    assert_eq!(seen.cert, exact.der(), "exact name");
    let (_, seen) = t::connect(cfg(), web, Some("x.b.example.com"), "")
        .await
        .unwrap();
    assert_eq!(seen.cert, wild.der(), "wildcard");
    // a wildcard covers one label only
    assert!(t::connect(cfg(), web, Some("y.x.b.example.com"), "")
        .await
        .is_err());
    let (s, seen) = t::connect(cfg(), web, None, "default.example.com")
        .await
        .unwrap();
    assert_eq!(seen.cert, default.der(), "no SNI");
    assert_eq!(seen.version, Some(rustls::ProtocolVersion::TLSv1_3));
    // and the request goes through, marked https for the backend
    let (st, body) = t::get_over(s, "default.example.com", "/").await.unwrap();
    assert_eq!((st, body.as_str()), (200, "pod"));
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-proto"], "https");

    // openssl s_client: an unknown name gets the default certificate
    let (ok, out) = t::s_client(
        web,
        &[
            "-servername",
            "nobody.example.org",
            "-CAfile",
            pki.ca().to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "{out}");
    assert!(out.contains("subject=CN = default.example.com"), "{out}");
    // ... unless the listener is strict, where it is refused and counted
    let (ok, out) = t::s_client(strict, &["-servername", "nobody.example.org"], b"");
    assert!(!ok || !out.contains("subject="), "{out}");
    let (ok, _) = t::s_client(strict, &["-servername", "a.example.com"], b"");
    assert!(ok);
    // a strict listener does not give a client without SNI the default either
    // (HAProxy's strict-sni: "the default certificate is not used")
    let (ok, out) = t::s_client(strict, &["-noservername"], b"");
    assert!(!ok || !out.contains("subject="), "{out}");
    // a name with the root's dot is the same name (openssl sends the dot)
    for (at, name, cn) in [
        (strict, "a.example.com.", "a.example.com"),
        (web, "a.example.com.", "a.example.com"),
        (web, "x.b.example.com.", "b wildcard"),
    ] {
        let (ok, out) = t::s_client(at, &["-servername", name], b"");
        assert!(ok, "{name}: {out}");
        assert!(out.contains(&format!("subject=CN = {cn}")), "{name}: {out}");
    }
    wait_metric(
        admin,
        "rampart_tls_handshake_failures_total{listener=\"strict\",reason=\"no_sni_match\"}",
        2.0,
    )
    .await;
    let m = wait_metric(
        admin,
        "rampart_tls_handshakes_total{listener=\"web\",result=\"ok\",version=\"TLSv1.3\"}",
        4.0,
    )
    .await;
    // the expiry of every certificate is exported
    let exp = t::cert_not_after(&exact);
    assert!(
        m.contains(&format!(
            "rampart_tls_cert_expiry_timestamp_seconds{{cert={:?},listener=\"web\"}} {exp}",
            exact.pem.display().to_string()
        )),
        "{m}"
    );

    // curl: the right certificate by name, verified against the CA
    let url = format!("https://a.example.com:{}/", web.port());
    let (ok, out, err) = t::curl(&[
        "--cacert",
        pki.ca().to_str().unwrap(),
        "--resolve",
        &resolve("a.example.com", web),
        &url,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_h2_or_http1_and_min_version_refuses_tls12() {
    let pki = Pki::new("ALPN CA");
    let site = pki.server("site", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web, only13) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let body = tls_listener("web", web, "api", &certs(&[&site]))
        + &tls_listener(
            "only13",
            only13,
            "api",
            &(certs(&[&site]) + "  min_version = \"1.3\"\n"),
        )
        + &pool("api", "", backend.addr);
    let _p = Proxy::start(&config(admin, "", &body), &[web, only13]).await;

    // rustls: h2 chosen, and a request over HTTP/2 on it
    let (s, seen) = t::connect(
        t::client_config(&pki, &["h2", "http/1.1"]),
        web,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        t::get_over_h2(s, "site.example.com", "/").await.unwrap(),
        (200, "pod".into())
    );
    assert_eq!(
        *backend.stats.last_version.lock().unwrap(),
        Some(hyper::Version::HTTP_11)
    );
    let (s, seen) = t::connect(
        t::client_config(&pki, &["http/1.1"]),
        web,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(
        t::get_over(s, "site.example.com", "/").await.unwrap(),
        (200, "pod".into())
    );
    // a client that offers only http/1.0 (curl --http1.0) is served, not
    // refused in the handshake (no protocol in common)
    let (s, seen) = t::connect(
        t::client_config(&pki, &["http/1.0"]),
        web,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.0"[..]));
    assert_eq!(
        t::get_over(s, "site.example.com", "/").await.unwrap(),
        (200, "pod".into())
    );
    // HTTP/2's preface where ALPN chose http/1.1: not HTTP/2 (RFC 9113 3.2),
    // an HTTP/1.1 refusal
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = t::connect(
            t::client_config(&pki, &["http/1.1"]),
            web,
            Some("site.example.com"),
            "",
        )
        .await
        .unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(
            got.starts_with(b"HTTP/1.1 4") || got.starts_with(b"HTTP/1.1 5"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // openssl s_client
    for proto in ["h2", "http/1.1"] {
        let (ok, out) = t::s_client(
            web,
            &["-servername", "site.example.com", "-alpn", proto],
            b"",
        );
        assert!(ok, "{out}");
        assert!(out.contains(&format!("ALPN protocol: {proto}")), "{out}");
    }
    // curl over HTTP/2 and HTTP/1.1
    let url = format!("https://site.example.com:{}/", web.port());
    let ca = pki.ca();
    let r = resolve("site.example.com", web);
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (ok, out, err) = t::curl(&[
            flag,
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &r,
            "-w",
            " %{http_version}",
            &url,
        ]);
        assert!(ok, "{err}");
        assert_eq!(out, format!("pod {version}"));
    }

    // TLS 1.2: served by default, refused with min_version = "1.3"
    let (ok, out) = t::s_client(web, &["-tls1_2", "-servername", "site.example.com"], b"");
    assert!(ok && out.contains("TLSv1.2"), "{out}");
    let (ok, out) = t::s_client(only13, &["-tls1_2", "-servername", "site.example.com"], b"");
    assert!(!ok, "TLS 1.2 accepted: {out}");
    let (ok, out) = t::s_client(only13, &["-tls1_3", "-servername", "site.example.com"], b"");
    assert!(ok && out.contains("TLSv1.3"), "{out}");
    let url13 = format!("https://site.example.com:{}/", only13.port());
    let (ok, _, _) = t::curl(&[
        "--tls-max",
        "1.2",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve("site.example.com", only13),
        &url13,
    ]);
    assert!(!ok, "curl with TLS 1.2 at most got through");
    wait_metric(
        admin,
        "rampart_tls_handshake_failures_total{listener=\"only13\",reason=\"protocol_version\"}",
        2.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_verified_logged_and_passed_on() {
    let pki = Pki::new("Client CA");
    let other = Pki::new("Other CA");
    let site = pki.server("site", &["site.example.com"]);
    let alice = pki.issue("alice", "alice", &[], Key::Ecdsa, 30);
    let mallory = other.issue("mallory", "mallory", &[], Key::Ecdsa, 30);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web, opt) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let mtls = format!(
        "  client_ca = {:?}\n  client_subject_header = \"X-Client-Subject\"\n",
        pki.ca().display().to_string()
    );
    let body = tls_listener("web", web, "api", &(certs(&[&site]) + &mtls))
        + &tls_listener(
            "opt",
            opt,
            "api",
            &(certs(&[&site]) + &mtls + "  client_auth = \"optional\"\n"),
        )
        + &pool("api", "", backend.addr);
    let p = Proxy::start(&config(admin, "", &body), &[web, opt]).await;
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let call = |addr: SocketAddr, cert: Option<&Issued>, extra: &[&str]| {
        let url = format!("https://site.example.com:{}/", addr.port());
        let r = resolve("site.example.com", addr);
        let mut args: Vec<String> = vec!["--cacert".into(), ca.into(), "--resolve".into(), r, url];
        if let Some(c) = cert {
            args.extend([
                "--cert".into(),
                c.crt.display().to_string(),
                "--key".into(),
                c.key.display().to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        t::curl(&args)
    };
    // a good certificate: served; its subject reaches the backend (a forged
    // header from the client is replaced) and the access log
    let (ok, out, err) = call(web, Some(&alice), &["-H", "X-Client-Subject: CN=admin"]);
    assert!(ok, "{err}");
    assert_eq!(out, "pod");
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    let subject = h["x-client-subject"].to_str().unwrap().to_string();
    assert!(subject.contains("CN=alice"), "{subject}");
    assert_eq!(h.get_all("x-client-subject").iter().count(), 1);
    wait_for(
        Duration::from_secs(5),
        "the access log line with the client certificate",
        || {
            p.stdout()
                .lines()
                .any(|l| l.contains("listener=web") && l.contains("client_cert=\"CN=alice"))
        },
    )
    .await;
    // no certificate, or one from another CA: refused
    let before = backend.requests();
    let (ok, _, _) = call(web, None, &[]);
    assert!(!ok, "served without a client certificate");
    let (ok, _, _) = call(web, Some(&mallory), &[]);
    assert!(!ok, "served with a certificate of another CA");
    // openssl s_client without a certificate: refused too
    let (_, out) = t::s_client(
        web,
        &["-servername", "site.example.com"],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(
        backend.requests(),
        before,
        "a refused client reached the backend"
    );
    wait_metric(
        admin,
        "rampart_tls_handshake_failures_total{listener=\"web\",reason=\"bad_client_cert\"}",
        3.0,
    )
    .await;
    // optional: served without a certificate, and no subject header then
    let (ok, out, err) = call(opt, None, &["-H", "X-Client-Subject: CN=admin"]);
    assert!(ok, "{err}");
    assert_eq!(out, "pod");
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert!(h.get("x-client-subject").is_none(), "{h:?}");
    // nor the same name with `_` for `-`, which CGI-style servers read as it
    let (ok, out, err) = call(opt, None, &["-H", "X_Client_Subject: CN=admin"]);
    assert!(ok && out == "pod", "{err}");
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert!(h.get("x_client_subject").is_none(), "{h:?}");
    // ... but a certificate it shows must still verify
    let (ok, _, _) = call(opt, Some(&mallory), &[]);
    assert!(!ok);
    // a subject value holding a comma stays one value (RFC 4514 escaping)
    let bob = pki.issue("bob", "bob, CN=admin", &[], Key::Ecdsa, 30);
    let (ok, out, err) = call(web, Some(&bob), &[]);
    assert!(ok && out == "pod", "{err}");
    let h = backend.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(
        h["x-client-subject"].to_str().unwrap(),
        "CN=bob\\, CN=admin, O=Rampart Tests"
    );
}

/// `client_crl`: a revoked client certificate is refused in the handshake,
/// counted apart, before the backend sees anything; a CA with no CRL refuses
/// what it issued (as OpenSSL's CRL_CHECK_ALL in nginx and HAProxy); a new CRL
/// file is read on the file watch without a restart, and a stale one is
/// refused while the CRL before it keeps holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificates_are_refused_and_a_new_crl_is_read_on_the_fly() {
    let pki = Pki::new("CRL CA");
    let other = Pki::new("CRL Other CA");
    let site = pki.server("site", &["site.example.com"]);
    let alice = pki.issue("alice", "alice", &[], Key::Ecdsa, 30);
    let bob = pki.issue("bob", "bob", &[], Key::Ecdsa, 30);
    let carol = pki.issue("carol", "carol", &[], Key::Ecdsa, 30);
    let dir = temp_dir("crl");
    let live = dir.join("clients.crl");
    let tmp = dir.join("clients.crl.tmp");
    std::fs::copy(pki.crl("bob.crl", &[&bob], false), &live).unwrap();
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web, unknown) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let ca = pki.ca().display().to_string();
    let mtls = |crl: &std::path::Path| {
        certs(&[&site])
            + &format!(
                "  client_ca = {ca:?}\n  client_crl = {:?}\n",
                crl.display().to_string()
            )
    };
    let body = tls_listener("web", web, "api", &mtls(&live))
        + &tls_listener(
            "unknown",
            unknown,
            "api",
            &mtls(&other.crl("none.crl", &[], false)),
        )
        + &pool("api", "", backend.addr);
    let p = Proxy::start(
        &config(admin, "watch_config = true", &body),
        &[web, unknown],
    )
    .await;
    let call = |addr: SocketAddr, cert: &Issued| {
        let url = format!("https://site.example.com:{}/", addr.port());
        let r = resolve("site.example.com", addr);
        let (crt, key) = (
            cert.crt.display().to_string(),
            cert.key.display().to_string(),
        );
        t::curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &r,
            &url,
            "--cert",
            &crt,
            "--key",
            &key,
        ])
    };
    // alice is served; bob, revoked, never reaches the backend
    let (ok, out, err) = call(web, &alice);
    assert!(ok && out == "pod", "{err}");
    let before = backend.requests();
    let (ok, _, _) = call(web, &bob);
    assert!(!ok, "served a revoked client certificate");
    assert_eq!(
        backend.requests(),
        before,
        "a revoked client reached the backend"
    );
    wait_metric(
        admin,
        "rampart_tls_handshake_failures_total{listener=\"web\",reason=\"revoked_client_cert\"}",
        1.0,
    )
    .await;
    // when the CRL goes stale, for alerting: the week openssl gave it
    let m = admin_get(admin, "/metrics").await.1;
    let next = metric(
        &m,
        &format!(
            "rampart_tls_crl_next_update_timestamp_seconds{{crl={:?},listener=\"web\"}}",
            live.display().to_string()
        ),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now + 6.9 * 86400.0..now + 7.1 * 86400.0).contains(&next),
        "{next} (now {now})"
    );
    // a CRL of another CA only: what client_ca issued has no known status
    let (ok, _, _) = call(unknown, &alice);
    assert!(!ok, "served a certificate no CRL speaks for");
    wait_metric(
        admin,
        "rampart_tls_handshake_failures_total{listener=\"unknown\",reason=\"client_cert_revocation_unknown\"}",
        1.0,
    )
    .await;
    assert_eq!(backend.requests(), before);

    // alice's sessions, TLS 1.3 and 1.2, resumable while the CRL stands
    let request = b"GET / HTTP/1.1\r\nHost: site.example.com\r\nConnection: close\r\n\r\n";
    let (crt, key) = (
        alice.crt.display().to_string(),
        alice.key.display().to_string(),
    );
    let alice_args = |version: &'static str| {
        [
            "-servername",
            "site.example.com",
            version,
            "-ign_eof",
            "-cert",
            &crt,
            "-key",
            &key,
        ]
        .map(String::from)
    };
    let sessions = ["-tls1_3", "-tls1_2"].map(|v| (v, dir.join(format!("alice{v}.pem"))));
    for (version, sess) in &sessions {
        let sess = sess.display().to_string();
        let args = alice_args(version);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = t::s_client(web, &[&args[..], &["-sess_out", &sess]].concat(), request);
        assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
        let (ok, out) = t::s_client(web, &[&args[..], &["-sess_in", &sess]].concat(), request);
        assert!(
            ok && out.contains("HTTP/1.1 200") && out.contains("Reused,"),
            "{version}: not resumed under the same CRL: {out}"
        );
    }

    // a new CRL, revoking alice too, swapped in as a CA's tooling would:
    // read on the file watch
    std::fs::copy(pki.crl("both.crl", &[&alice, &bob], false), &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    wait_for(
        Duration::from_secs(10),
        "alice refused under the new CRL",
        || !call(web, &alice).0,
    )
    .await;
    // ... and her sessions from before it do not resume
    let before = backend.requests();
    for (version, sess) in &sessions {
        let sess = sess.display().to_string();
        let args = alice_args(version);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, out) = t::s_client(web, &[&args[..], &["-sess_in", &sess]].concat(), request);
        assert!(
            !out.contains("HTTP/1.1 200") && !out.contains("Reused,"),
            "{version}: a revoked client resumed a session from before the CRL: {out}"
        );
    }
    assert_eq!(
        backend.requests(),
        before,
        "a revoked client reached the backend"
    );
    let (ok, out, err) = call(web, &carol);
    assert!(ok && out == "pod", "{err}");
    assert!(!call(web, &bob).0, "bob served under the new CRL");

    // a stale CRL: loaded, with a warning naming it (as nginx and HAProxy
    // load it: an unrelated reload is not refused for it), and every full
    // handshake it covers is refused, as they refuse them
    std::fs::copy(pki.crl("stale.crl", &[], true), &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let last = loop {
        let last: serde_json::Value =
            serde_json::from_str(&admin_get(admin, "/api/reload").await.1).unwrap_or_default();
        if last["last_reload"]["warnings"]
            .to_string()
            .contains("went stale")
        {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stale CRL not loaded: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let warnings = last["last_reload"]["warnings"].to_string();
    assert!(
        warnings.contains("clients.crl") && warnings.contains("listener[0].tls.client_crl"),
        "{last}"
    );
    assert_eq!(last["last_reload"]["ok"], true, "{last}");
    let before = metric_or_zero(
        &admin_get(admin, "/metrics").await.1,
        "rampart_tls_handshake_failures_total{listener=\"web\",reason=\"client_cert_revocation_unknown\"}",
    );
    assert!(!call(web, &carol).0, "carol served under a stale CRL");
    wait_metric(
        admin,
        "rampart_tls_handshake_failures_total{listener=\"web\",reason=\"client_cert_revocation_unknown\"}",
        before + 1.0,
    )
    .await;
    drop(p);
}

/// `[pool.tls] crl`: a server whose certificate is on the pool's CRL is
/// refused like one that does not verify, and a health check finds it so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_refuses_a_server_whose_certificate_its_crl_revokes() {
    let pki = Pki::new("Pool CRL CA");
    let fine = pki.issue("fine", "api.internal", &["api.internal"], Key::Ecdsa, 30);
    let revoked = pki.issue("revoked", "api.internal", &["api.internal"], Key::Ecdsa, 30);
    let crl = pki.crl("pool.crl", &[&revoked], false);
    let good = t::tls_backend("fine-pod", &fine, false).await;
    let bad = t::tls_backend("revoked-pod", &revoked, false).await;
    // a new connection, so a new handshake, for each request
    let later = t::tls_backend("later-pod", &fine, true).await;
    let [admin, l_good, l_bad, l_checked, l_later] = [(); 5].map(|_| free_addr("127.0.0.1"));
    let dir = temp_dir("pool-crl");
    let live = dir.join("pool.crl");
    let tmp = dir.join("pool.crl.tmp");
    std::fs::copy(pki.crl("empty.crl", &[], false), &live).unwrap();
    let tls = |crl: &std::path::Path| {
        format!(
            "  [pool.tls]\n  ca = {:?}\n  crl = {:?}\n  server_name = \"api.internal\"\n",
            pki.ca().display().to_string(),
            crl.display().to_string()
        )
    };
    let body = listener("good", l_good)
        + &pool("good", &format!("retries = 0\n{}", tls(&crl)), good.addr)
        + &listener("bad", l_bad)
        + &pool("bad", &format!("retries = 0\n{}", tls(&crl)), bad.addr)
        + &listener("checked", l_checked)
        + &pool("checked", &format!("{}{HEALTH}", tls(&crl)), bad.addr)
        + &listener("later", l_later)
        + &pool("later", &format!("retries = 0\n{}", tls(&live)), later.addr);
    let p = Proxy::start(
        &config(admin, "watch_config = true", &body),
        &[l_good, l_bad, l_checked, l_later],
    )
    .await;
    let c = client();
    let (st, b) = get(&c, &format!("http://{l_good}/")).await;
    assert_eq!((st.as_u16(), b.as_str()), (200, "fine-pod"));
    let (st, _) = get(&c, &format!("http://{l_bad}/")).await;
    assert_eq!(st.as_u16(), 502);
    wait_for(
        Duration::from_secs(5),
        "the refusal logged with its reason",
        || p.stderr().contains("invalid peer certificate: Revoked"),
    )
    .await;
    p.wait_pool(Duration::from_secs(10), "checked", "its server DOWN", |v| {
        v["servers"][0]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("DOWN"))
    })
    .await;
    let m = admin_get(admin, "/metrics").await.1;
    assert!(
        metric(
            &m,
            &format!(
                "rampart_pool_tls_crl_next_update_timestamp_seconds{{crl={:?},pool=\"bad\"}}",
                crl.display().to_string()
            )
        ) > 0.0
    );
    // a server whose sessions resume while its CRL stands...
    for _ in 0..2 {
        let (st, b) = get(&c, &format!("http://{l_later}/")).await;
        assert_eq!((st.as_u16(), b.as_str()), (200, "later-pod"));
    }
    assert!(
        later.resumed.load(Ordering::Relaxed) >= 1,
        "no session resumed"
    );
    // ... is refused once a new CRL revokes it: no session from before the
    // CRL resumes past it (rustls resumes only under the verifier a session
    // was made with, and a reload builds a new one)
    std::fs::copy(pki.crl("fine.crl", &[&fine], false), &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _) = get(&c, &format!("http://{l_later}/")).await;
        if st.as_u16() == 502 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a server its new CRL revokes still served: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Loops of new TLS connections, each with one request, over h2 or http/1.1:
/// counts successes, failures, and connections that saw each certificate.
struct TlsLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicUsize>,
    seen_new: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl TlsLoad {
    fn start(pki: &Pki, addr: SocketAddr, new_cert: Vec<u8>) -> TlsLoad {
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let ok: Arc<AtomicUsize> = Arc::default();
        let seen_new: Arc<AtomicUsize> = Arc::default();
        let mut tasks = Vec::new();
        for (i, alpn) in ["h2", "http/1.1", "h2", "http/1.1"].into_iter().enumerate() {
            let mut cfg = t::client_config(pki, &[alpn]);
            // full handshakes: a resumed session shows the certificate of its first
            cfg.resumption = rustls::client::Resumption::disabled();
            let (stop, ok, seen_new, new_cert) =
                (stop.clone(), ok.clone(), seen_new.clone(), new_cert.clone());
            tasks.push(tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = match t::connect(cfg.clone(), addr, Some("site.example.com"), "").await
                    {
                        Ok((s, seen)) => {
                            if seen.cert == new_cert {
                                seen_new.fetch_add(1, Ordering::SeqCst);
                            }
                            if alpn == "h2" {
                                t::get_over_h2(s, "site.example.com", "/").await
                            } else {
                                t::get_over(s, "site.example.com", "/").await
                            }
                        }
                        Err(e) => Err(format!("handshake: {e}")),
                    };
                    match r {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => errors.push(format!("loop {i} ({alpn}): {other:?}")),
                    }
                }
                errors
            }));
        }
        TlsLoad {
            stop,
            ok,
            seen_new,
            tasks,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (self.ok.load(Ordering::SeqCst), errors)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_is_served_without_a_failed_handshake() {
    let pki = Pki::new("Reload CA");
    let old = pki.server("old", &["site.example.com"]);
    let new = pki.server("new", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let dir = temp_dir("certs");
    let live = dir.join("site.pem");
    std::fs::copy(&old.pem, &live).unwrap();
    let body = tls_listener(
        "web",
        web,
        "api",
        &format!("  cert = [{:?}]\n", live.display().to_string()),
    ) + &pool("api", "", backend.addr);
    let p = Proxy::start(&config(admin, "watch_config = true", &body), &[web]).await;
    let _p = &p;

    let load = TlsLoad::start(&pki, web, new.der());
    wait_for(Duration::from_secs(10), "requests over TLS", || {
        load.ok.load(Ordering::SeqCst) >= 20
    })
    .await;
    // an atomic swap, as a certificate manager does it
    let tmp = dir.join("site.pem.tmp");
    std::fs::copy(&new.pem, &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while load.seen_new.load(Ordering::SeqCst) < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "new connections do not get the new certificate ({} requests): {}",
            load.ok.load(Ordering::SeqCst),
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, errors) = load.finish().await;
    assert!(errors.is_empty(), "failed around the swap: {errors:?}");
    assert!(ok > 40);
    let (_, seen) = t::connect(
        t::client_config(&pki, &["http/1.1"]),
        web,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(seen.cert, new.der());
    let r: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/api/reload").await.1).unwrap();
    assert_eq!(r["last_reload"]["ok"], true, "{r}");
    assert_eq!(r["last_reload"]["trigger"], "file watch", "{r}");

    // a broken replacement (a key that is not the certificate's): refused with
    // the reason, and the last good certificate keeps serving
    let mut broken = std::fs::read(&new.crt).unwrap();
    broken.extend(std::fs::read(&old.key).unwrap());
    std::fs::write(&tmp, broken).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    let last = wait_reloads_failed(admin, 1).await;
    let errors = last["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("does not match the certificate") && errors.contains("site.pem"),
        "{last}"
    );
    let (s, seen) = t::connect(
        t::client_config(&pki, &["http/1.1"]),
        web,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(seen.cert, new.der());
    assert_eq!(
        t::get_over(s, "site.example.com", "/").await.unwrap().0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ticket_issued_before_a_reload_resumes_after_it() {
    let pki = Pki::new("Resume CA");
    let site = pki.server("site", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let body = tls_listener("web", web, "api", &certs(&[&site])) + &pool("api", "", backend.addr);
    let p = Proxy::start(&config(admin, "", &body), &[web]).await;
    let sess = temp_dir("sess").join("session.pem");
    let sess = sess.to_str().unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: site.example.com\r\nConnection: close\r\n\r\n";
    let original = std::fs::read_to_string(&p.config).unwrap();
    for version in ["-tls1_3", "-tls1_2"] {
        let args = ["-servername", "site.example.com", version, "-ign_eof"];
        let (ok, out) = t::s_client(web, &[&args[..], &["-sess_out", sess]].concat(), request);
        assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
        assert!(out.contains("New,"), "{out}");
        // a reload that changes the listener
        let changed = original.replace(
            "mode = \"http\"",
            &format!(
                "mode = \"http\"\nclient_timeout = \"{}s\"",
                20 + version.len()
            ),
        );
        std::fs::write(&p.config, changed).unwrap();
        let (st, r) = admin_post(admin, "/api/reload", "").await;
        assert_eq!(st, 200, "{r}");
        let (ok, out) = t::s_client(web, &[&args[..], &["-sess_in", sess]].concat(), request);
        assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
        assert!(
            out.contains("Reused,"),
            "{version}: not resumed after the reload: {out}"
        );
    }
}

/// A TLS session resumes only under the client-certificate policy it was made
/// under (rustls takes the session's certificate, or its lack of one, as the
/// resumed connection's): one made without a certificate where one is
/// optional resumes on another listener with the same policy, never on one
/// that requires a certificate, nor after a reload made the first require
/// one. `session_tickets = false` resumes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_only_where_its_client_certificate_policy_holds() {
    let pki = Pki::new("Policy CA");
    let site = pki.server("site", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let [admin, opt, opt2, web, nosess] = [(); 5].map(|_| free_addr("127.0.0.1"));
    let mtls = format!("  client_ca = {:?}\n", pki.ca().display().to_string());
    let optional = certs(&[&site]) + &mtls + "  client_auth = \"optional\"\n";
    let body = tls_listener("opt", opt, "api", &optional)
        + &tls_listener("opt2", opt2, "api", &optional)
        + &tls_listener("web", web, "api", &(certs(&[&site]) + &mtls))
        + &tls_listener(
            "nosess",
            nosess,
            "api",
            &(certs(&[&site]) + "  session_tickets = false\n"),
        )
        + &pool("api", "", backend.addr);
    let p = Proxy::start(&config(admin, "", &body), &[opt, opt2, web, nosess]).await;
    let dir = temp_dir("policy-sess");
    let request = b"GET / HTTP/1.1\r\nHost: site.example.com\r\nConnection: close\r\n\r\n";
    let original = std::fs::read_to_string(&p.config).unwrap();
    for version in ["-tls1_3", "-tls1_2"] {
        let sess = dir.join(format!("s{version}.pem"));
        let sess = sess.to_str().unwrap();
        let args = ["-servername", "site.example.com", version, "-ign_eof"];
        let (ok, out) = t::s_client(opt, &[&args[..], &["-sess_out", sess]].concat(), request);
        assert!(
            ok && out.contains("HTTP/1.1 200") && out.contains("New,"),
            "{out}"
        );
        // the same policy on another listener: resumed
        let (ok, out) = t::s_client(opt2, &[&args[..], &["-sess_in", sess]].concat(), request);
        assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
        assert!(
            out.contains("Reused,"),
            "{version}: not resumed under the same policy: {out}"
        );
        // a listener that requires a certificate: not resumed, not served
        let (_, out) = t::s_client(web, &[&args[..], &["-sess_in", sess]].concat(), request);
        assert!(
            !out.contains("Reused,"),
            "{version}: resumed into a listener that requires a certificate: {out}"
        );
        assert!(
            !out.contains("HTTP/1.1 200"),
            "{version}: served without a certificate: {out}"
        );
        // a reload that makes `opt` require a certificate: its old
        // sessions no longer pass
        let required = original.replacen("  client_auth = \"optional\"\n", "", 1);
        std::fs::write(&p.config, required).unwrap();
        let (st, r) = admin_post(admin, "/api/reload", "").await;
        assert_eq!(st, 200, "{r}");
        let (_, out) = t::s_client(opt, &[&args[..], &["-sess_in", sess]].concat(), request);
        assert!(
            !out.contains("HTTP/1.1 200"),
            "{version}: an old session passed after the reload: {out}"
        );
        std::fs::write(&p.config, &original).unwrap();
        let (st, r) = admin_post(admin, "/api/reload", "").await;
        assert_eq!(st, 200, "{r}");
        // session_tickets = false: nothing resumes
        let s2 = dir.join(format!("n{version}.pem"));
        let s2 = s2.to_str().unwrap();
        let (ok, out) = t::s_client(nosess, &[&args[..], &["-sess_out", s2]].concat(), request);
        assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
        // no ticket (TLS 1.3) nor session id (TLS 1.2) came: openssl has
        // no session to write
        assert!(
            !std::path::Path::new(s2).exists(),
            "{version}: a session to resume with session_tickets = false"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_backends_is_verified_pooled_resumed_and_health_checked() {
    let pki = Pki::new("Backend CA");
    let other = Pki::new("Wrong CA");
    let cert = pki.issue(
        "api",
        "api.internal",
        &["api.internal", "127.0.0.1"],
        Key::Ecdsa,
        30,
    );
    let good = t::tls_backend("secure-pod", &cert, true).await;
    let (admin, ok_l, by_ip, wrong_ca, wrong_name, checked) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let ca = format!("{:?}", pki.ca().display().to_string());
    let body = listener("good", ok_l)
        + &pool("good", &format!("retries = 0\n  [pool.tls]\n  ca = {ca}\n  server_name = \"api.internal\"\n{HEALTH}"), good.addr)
        + &listener("byip", by_ip)
        + &pool("byip", &format!("  [pool.tls]\n  ca = {ca}\n"), good.addr)
        + &listener("wrongca", wrong_ca)
        + &pool("wrongca", &format!("retries = 0\n  [pool.tls]\n  ca = {:?}\n  server_name = \"api.internal\"\n", other.ca().display().to_string()), good.addr)
        + &listener("checked", checked)
        + &pool("checked", &format!("  [pool.tls]\n  ca = {:?}\n  server_name = \"api.internal\"\n{HEALTH}", other.ca().display().to_string()), good.addr)
        + &listener("wrongname", wrong_name)
        + &pool("wrongname", &format!("retries = 0\n  [pool.tls]\n  ca = {ca}\n  server_name = \"other.internal\"\n"), good.addr);
    let p = Proxy::start(
        &config(admin, "", &body),
        &[ok_l, by_ip, wrong_ca, wrong_name],
    )
    .await;
    // health checks go over TLS too: the good pool's server comes UP (it takes
    // no traffic before its first check passes), while one whose pool does not
    // trust the server's CA goes DOWN
    p.wait_server(Duration::from_secs(10), "good", good.addr, "UP")
        .await;
    p.wait_pool(Duration::from_secs(10), "checked", "its server DOWN", |v| {
        v["servers"][0]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("DOWN"))
    })
    .await;
    let c = client();
    // verified by name, and by the IP address SAN when no name is given
    let (st, b) = get(&c, &format!("http://{ok_l}/")).await;
    assert_eq!((st.as_u16(), b.as_str()), (200, "secure-pod"));
    let (st, b) = get(&c, &format!("http://{by_ip}/")).await;
    assert_eq!((st.as_u16(), b.as_str()), (200, "secure-pod"));
    assert!(good
        .sni
        .lock()
        .unwrap()
        .contains(&Some("api.internal".into())));
    // the backend closes after each answer: later connections resume their session
    for _ in 0..5 {
        assert_eq!(get(&c, &format!("http://{ok_l}/")).await.0, 200);
    }
    assert!(
        good.resumed.load(Ordering::SeqCst) >= 4,
        "resumed {}",
        good.resumed.load(Ordering::SeqCst)
    );
    // a certificate that does not verify: 502, never sent in the clear
    let (st, _) = get(&c, &format!("http://{wrong_ca}/")).await;
    assert_eq!(st, 502);
    let (st, _) = get(&c, &format!("http://{wrong_name}/")).await;
    assert_eq!(st, 502);
    // each with its reason, on the server it was made to
    for (pool, why) in [
        ("wrongca", "UnknownIssuer"),
        ("wrongname", "not valid for name"),
    ] {
        let v = p.pool(pool).await;
        let err = v["servers"][0]["last_error"]["error"]
            .as_str()
            .unwrap_or("");
        assert!(
            err.contains("TLS handshake") && err.contains(why),
            "{pool}: {v}"
        );
        assert_eq!(v["servers"][0]["connect_errors"], 1, "{pool}: {v}");
    }
}

/// A reload that changes how a pool's backend connections are made (here its
/// `[pool.tls]` server name, then its CA) leaves no request on a connection
/// made the old way: the next one makes a new handshake under the new
/// settings (SNI the new name; refused by a CA that does not trust the
/// server) instead of reusing the kept-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_pools_tls_does_not_reuse_its_old_connections() {
    let pki = Pki::new("Reload backend CA");
    let other = Pki::new("Reload other CA");
    let cert = pki.issue(
        "api",
        "api.internal",
        &["api.internal", "api2.internal"],
        Key::Ecdsa,
        30,
    );
    // keeps its connections alive
    let backend = t::tls_backend("secure-pod", &cert, false).await;
    let (admin, web) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let listener = format!(
        "\n[[listener]]\nname = \"web\"\nbind = [\"{web}\"]\nmode = \"http\"\npool = \"api\"\n"
    );
    let text = |ca: &Pki, name: &str| {
        let tls = format!(
            "retries = 0\n  [pool.tls]\n  ca = {:?}\n  server_name = \"{name}\"\n",
            ca.ca().display().to_string()
        );
        let body = format!("{listener}{}", pool("api", &tls, backend.addr));
        config(admin, "", &body)
    };
    let p = Proxy::start(&text(&pki, "api.internal"), &[web, admin]).await;
    let url = format!("http://{web}/");
    let c = client();
    let handshakes = || backend.handshakes.load(Ordering::SeqCst);
    let last_sni = || backend.sni.lock().unwrap().last().cloned().flatten();
    for _ in 0..3 {
        let (st, b) = get(&c, &url).await;
        assert_eq!((st.as_u16(), b.as_str()), (200, "secure-pod"));
    }
    // the backend connection is kept alive and reused: no more handshakes
    let before = handshakes();
    for _ in 0..5 {
        assert_eq!(get(&c, &url).await.0, 200);
    }
    assert_eq!(handshakes(), before, "the connection was not reused");
    assert_eq!(last_sni().as_deref(), Some("api.internal"));

    // another server name: the next request is made on a new connection,
    // which asks for the new name
    std::fs::write(&p.config, text(&pki, "api2.internal")).unwrap();
    let (st, r) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{r}");
    let (st, b) = get(&c, &url).await;
    assert_eq!((st.as_u16(), b.as_str()), (200, "secure-pod"));
    assert_eq!(handshakes(), before + 1, "no new handshake");
    assert_eq!(last_sni().as_deref(), Some("api2.internal"));
    // ... and that one is kept alive in turn
    for _ in 0..5 {
        assert_eq!(get(&c, &url).await.0, 200);
    }
    assert_eq!(handshakes(), before + 1);

    // a CA that does not trust the server: refused, never sent over the
    // connection the old CA verified
    std::fs::write(&p.config, text(&other, "api2.internal")).unwrap();
    let (st, r) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(get(&c, &url).await.0, 502);
    let v = p.pool("api").await;
    let err = v["servers"][0]["last_error"]["error"]
        .as_str()
        .unwrap_or("");
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer"),
        "{v}"
    );
    // back to the trusted CA: served again, on a new connection
    std::fs::write(&p.config, text(&pki, "api.internal")).unwrap();
    let (st, r) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{r}");
    let (st, b) = get(&c, &url).await;
    assert_eq!((st.as_u16(), b.as_str()), (200, "secure-pod"));
    assert_eq!(last_sni().as_deref(), Some("api.internal"));
}

/// A reload that leaves a pool's TLS as it was keeps its sessions: the next
/// connection to a server resumes, where a full handshake would cost the
/// server (and rampart) an asymmetric signature per connection after every
/// reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_keeps_a_pools_tls_resumes_its_sessions() {
    let pki = Pki::new("Resume CA");
    let cert = pki.issue("api", "api.internal", &["api.internal"], Key::Ecdsa, 30);
    // a new connection, so a new handshake, for each request
    let backend = t::tls_backend("secure-pod", &cert, true).await;
    let (admin, web) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let text = |retries: u32| {
        let tls = format!(
            "retries = {retries}\n  [pool.tls]\n  ca = {:?}\n  server_name = \"api.internal\"\n",
            pki.ca().display().to_string()
        );
        config(
            admin,
            "",
            &(listener("api", web) + &pool("api", &tls, backend.addr)),
        )
    };
    let p = Proxy::start(&text(0), &[web, admin]).await;
    let url = format!("http://{web}/");
    let c = client();
    let resumed = || backend.resumed.load(Ordering::SeqCst);
    for _ in 0..2 {
        let (st, b) = get(&c, &url).await;
        assert_eq!((st.as_u16(), b.as_str()), (200, "secure-pod"));
    }
    assert_eq!(resumed(), 1, "the second connection did not resume");
    // a reload that changes something else of the pool
    std::fs::write(&p.config, text(1)).unwrap();
    let (st, r) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, 200, "{r}");
    let (st, b) = get(&c, &url).await;
    assert_eq!((st.as_u16(), b.as_str()), (200, "secure-pod"));
    assert_eq!(resumed(), 2, "a session did not resume after the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_routes_tls_by_sni_without_terminating_it() {
    let pki = Pki::new("Passthrough CA");
    let a_cert = pki.server("a", &["db.example.com"]);
    let b_cert = pki.server("b", &["*.apps.example.com"]);
    let a = t::tls_backend("a", &a_cert, false).await;
    let b = t::tls_backend("b", &b_cert, false).await;
    let (admin, edge) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let body = format!(
        "\n[[listener]]\nname = \"edge\"\nbind = [\"{edge}\"]\nmode = \"tcp\"\npool = \"b\"\n  [[listener.route]]\n  sni = \"db.example.com\"\n  pool = \"a\"\n  [[listener.route]]\n  sni = \"*.apps.example.com\"\n  pool = \"b\"\n"
    ) + &pool("a", "", a.addr)
        + &pool("b", "", b.addr);
    let _p = Proxy::start(&config(admin, "", &body), &[edge]).await;
    let cfg = || t::client_config(&pki, &["http/1.1"]);
    // each backend's own certificate reaches the client, end to end
    let (s, seen) = t::connect(cfg(), edge, Some("db.example.com"), "")
        .await
        .unwrap();
    assert_eq!(seen.cert, a_cert.der());
    assert_eq!(
        t::get_over(s, "db.example.com", "/").await.unwrap(),
        (200, "a".into())
    );
    let (s, seen) = t::connect(cfg(), edge, Some("shop.apps.example.com"), "")
        .await
        .unwrap();
    assert_eq!(seen.cert, b_cert.der());
    assert_eq!(
        t::get_over(s, "shop.apps.example.com", "/").await.unwrap(),
        (200, "b".into())
    );
    // openssl s_client sees the same
    let (ok, out) = t::s_client(edge, &["-servername", "db.example.com"], b"");
    assert!(ok && out.contains("subject=CN = db.example.com"), "{out}");
    assert_eq!(
        a.sni.lock().unwrap().first().cloned(),
        Some(Some("db.example.com".into()))
    );
    // TLS records that are not a ClientHello to route by: closed without
    // reaching a backend, though the listener has a default pool (what is
    // not TLS at all goes there: a_passthrough_route_reads_the_server_name_as_rustls_does)
    let before = (
        a.handshakes.load(Ordering::SeqCst),
        b.handshakes.load(Ordering::SeqCst),
    );
    // (another handshake message; a warning alert ahead of a hello for
    // db.example.com, which TLS stacks skip and read the name after; and a
    // record longer than TLS allows with 40 KB behind it, more than the
    // proxy reads to look for a ClientHello, the rest of which it reads
    // before closing: five times, as whether the proxy reads before all of
    // it has come varies)
    let not_hello = &[0x16u8, 3, 3, 0, 4, 2, 0, 0, 0][..];
    let alert_first = [
        &[0x15u8, 3, 3, 0, 2, 1, 0x5a][..],
        &client_hello("db.example.com"),
    ]
    .concat();
    let long = [&[0x16u8, 3, 1, 0x40, 0x01][..], &[b'x'; 40_000]].concat();
    for sent in [not_hello, &alert_first, &long, &long, &long, &long, &long] {
        let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, sent)
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .unwrap();
        // closed after what it sent was read: a FIN, not a reset
        assert!(matches!(n, Ok(0)), "{} bytes sent: {n:?}", sent.len());
        assert!(s.take_error().unwrap().is_none());
    }
    assert_eq!(
        before,
        (
            a.handshakes.load(Ordering::SeqCst),
            b.handshakes.load(Ordering::SeqCst)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_route_reads_the_server_name_as_rustls_does() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = start_echo(free_addr("127.0.0.1")).await;
    let d = start_echo(free_addr("127.0.0.1")).await;
    let (admin, edge) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let body = format!(
        "\n[[listener]]\nname = \"edge\"\nbind = [\"{edge}\"]\nmode = \"tcp\"\npool = \"d\"\n  [[listener.route]]\n  sni = \"db.example.com\"\n  pool = \"a\"\n  [[listener.route]]\n  sni = \"192.0.2.1\"\n  pool = \"a\"\n"
    ) + &pool("a", "max_connections_per_server = 1", a)
        + &pool("d", "", d);
    let _p = Proxy::start(&config(admin, "", &body), &[edge]).await;
    let totals = || async {
        let mut out = Vec::new();
        for (name, addr) in [("a", a), ("d", d)] {
            let v = pool_view(admin, name).await;
            out.push(server_in(&v, addr)["total"].as_u64().unwrap());
        }
        out
    };
    // sends `hello`: Some(bytes echoed back) where a backend took it, None
    // where the proxy closed the connection
    let send = |hello: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
        s.write_all(&hello).await.unwrap();
        let mut got = vec![0u8; hello.len()];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await;
        match r.expect("neither echoed nor closed within 5 s") {
            Ok(_) => {
                assert_eq!(got, hello);
                true
            }
            Err(_) => false,
        }
    };
    assert!(send(client_hello("db.example.com")).await);
    assert!(send(client_hello("DB.Example.COM.")).await);
    assert!(send(client_hello("other.example.com")).await);
    // a client that does not speak TLS: routed as one without a name (to the
    // default pool), what it sent passed on, as nginx and HAProxy pass it
    assert!(send(b"GET / HTTP/1.0\r\n\r\n".to_vec()).await);
    assert_eq!(totals().await, [2, 2]);
    // a hello in pieces, with what the client sends after it in the last one:
    // the proxy reads the hello to route by, and all of it reaches the server,
    // once and in order (whether the proxy reads the pieces apart or some of
    // them together varies; src/tls/sni.rs's tests read them apart)
    // It waits in pool a's queue (one connection a server) behind a session
    // held open, holding what it sent without its relay buffer meanwhile.
    let mut held = tokio::net::TcpStream::connect(edge).await.unwrap();
    let h = client_hello("db.example.com");
    held.write_all(&h).await.unwrap();
    let mut echo = vec![0u8; h.len()];
    held.read_exact(&mut echo).await.unwrap();
    let mut sent = client_hello("db.example.com");
    sent.extend_from_slice(b"and what came after it");
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    s.set_nodelay(true).unwrap();
    for piece in [&sent[..3], &sent[3..200], &sent[200..]] {
        s.write_all(piece).await.unwrap();
    }
    wait_until(
        Duration::from_secs(10),
        "a session queued in pool a",
        || async {
            pool_view(admin, "a").await["priority"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["queued"] == 1))
        },
    )
    .await;
    drop(held);
    let mut got = vec![0u8; sent.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("not echoed within 5 s")
        .unwrap();
    assert_eq!(got, sent);
    drop(s);
    assert_eq!(totals().await, [4, 2]);

    // The same hello with its one name entry rewritten in place into two: one
    // of an unknown name type, whose length has no defined encoding (RFC 6066
    // 3), then a host name db.example.com. rustls stops at the unknown entry
    // and refuses the hello (no host name); rampart used to skip it and route
    // by the name after it, to a backend that reads no such name.
    let mut h = client_hello("abcdefghijklmnopq");
    let at = h
        .windows(17)
        .position(|w| w == b"abcdefghijklmnopq")
        .unwrap();
    assert_eq!(h[at - 3..at], [0, 0, 17]);
    let spliced = [&[1u8, 0, 0, 0, 0, 14][..], b"db.example.com"].concat();
    h.splice(at - 3..at + 17, spliced);
    assert!(!send(h).await, "routed on a name after an unknown entry");
    // a PROXY header where the listener reads none, with a hello behind it:
    // refused, not passed to the default pool as not TLS (a server there
    // that takes such a header would read the hello behind it)
    let proxied = [
        &b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 443\r\n"[..],
        &client_hello("db.example.com"),
    ]
    .concat();
    assert!(
        !send(proxied).await,
        "a client's own PROXY header passed on"
    );
    // and a TLS record that is not a hello at all: refused too, though the
    // listener has a default pool (what is not TLS goes there)
    assert!(!send(vec![0x16, 0x03, 0x03, 0, 4, 2, 0, 0, 0]).await);
    // an IP address as the name (RFC 6066 forbids it, some clients send it):
    // routed as sent, as HAProxy's req.ssl_sni reads it
    let mut h = client_hello("abcdefghi");
    let at = h.windows(9).position(|w| w == b"abcdefghi").unwrap();
    h.splice(at..at + 9, b"192.0.2.1".iter().copied());
    assert!(send(h).await);
    assert_eq!(totals().await, [5, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_shows_its_client_certificate_to_a_backend_that_requires_one() {
    let pki = Pki::new("mTLS backend CA");
    let cert = pki.server("api", &["api.internal"]);
    let me = pki.issue("rampart", "rampart-edge", &[], Key::Ecdsa, 30);
    let backend = t::mtls_backend("needs-a-cert", &cert, &pki).await;
    let (admin, with, without) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let ca = format!("{:?}", pki.ca().display().to_string());
    let body = listener("with", with)
        + &pool(
            "with",
            &format!(
                "  [pool.tls]\n  ca = {ca}\n  server_name = \"api.internal\"\n  cert = {:?}\n  key = {:?}\n",
                me.crt.display().to_string(),
                me.key.display().to_string()
            ),
            backend.addr,
        )
        + &listener("without", without)
        + &pool("without", &format!("retries = 0\n  [pool.tls]\n  ca = {ca}\n  server_name = \"api.internal\"\n"), backend.addr);
    let _p = Proxy::start(&config(admin, "", &body), &[with, without]).await;
    let c = client();
    let (st, b) = get(&c, &format!("http://{with}/")).await;
    assert_eq!((st.as_u16(), b.as_str()), (200, "needs-a-cert"));
    let (st, _) = get(&c, &format!("http://{without}/")).await;
    assert_eq!(st, 502);
}

#[test]
fn check_validates_certificates_and_keys() {
    let pki = Pki::new("Check CA");
    let good = pki.server("good", &["good.example.com"]);
    let expired = pki.issue(
        "expired",
        "expired.example.com",
        &["expired.example.com"],
        Key::Ecdsa,
        -1,
    );
    let soon = pki.issue(
        "soon",
        "soon.example.com",
        &["soon.example.com"],
        Key::Ecdsa,
        5,
    );
    let other = pki.server("other", &["other.example.com"]);
    let dir = temp_dir("check");
    let mismatched = dir.join("mismatch.pem");
    let mut m = std::fs::read(&good.crt).unwrap();
    m.extend(std::fs::read(&other.key).unwrap());
    std::fs::write(&mismatched, m).unwrap();
    let nokey = dir.join("nokey.pem");
    std::fs::copy(&good.crt, &nokey).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    // `tls` is the body of [listener.tls]
    let check = |tls: &str| {
        let listen = free_addr("127.0.0.1");
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"api\"\n  [listener.tls]\n{tls}\n\n[[pool]]\nname = \"api\"\n  [[pool.server]]\n  address = \"127.0.0.1:9\"\n"
        );
        let path = dir.join("rampart.toml");
        std::fs::write(&path, text).unwrap();
        rampart_check(&path)
    };
    let run =
        |cert: &std::path::Path| check(&format!("  cert = [{:?}]", cert.display().to_string()));
    let (ok, out) = run(&good.pem);
    assert!(ok, "{out}");
    assert!(!out.contains("warning"), "{out}");
    // a certificate and its key in two files, as [[listener.tls.cert]] path/key
    let pair = |key: &std::path::Path| {
        check(&format!(
            "  [[listener.tls.cert]]\n  path = {:?}\n  key = {:?}",
            good.crt.display().to_string(),
            key.display().to_string()
        ))
    };
    let (ok, out) = pair(&good.key);
    assert!(ok, "{out}");
    let (ok, out) = pair(&other.key);
    assert!(
        !ok && out.contains("does not match the certificate")
            && out.contains(&other.key.display().to_string()),
        "{out}"
    );
    let (ok, out) = run(&soon.pem);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning") && out.contains("expires on") && out.contains("soon.pem"),
        "{out}"
    );
    for (file, why) in [
        (&expired.pem, "expired on"),
        (&mismatched, "does not match the certificate"),
        (&nokey, "no PEM private key"),
        (&garbage, "not valid PEM"),
        (&dir.join("missing.pem"), "cannot read"),
    ] {
        let (ok, out) = run(file);
        assert!(!ok, "{file:?} accepted: {out}");
        assert!(
            out.contains(why)
                && out.contains(&file.display().to_string())
                && out.contains("listener[0].tls.cert[0]"),
            "{file:?}: {out}"
        );
    }
}

/// `rampart check` on CRLs: a stale or broken one, one without the CA it
/// belongs with, one its CA's key does not verify, or one where nothing is
/// verified, is refused with its key; one of another CA is a warning, and so
/// is a delta CRL, left out (a file of delta CRLs only is refused).
#[test]
fn check_validates_crls() {
    let pki = Pki::new("Check CRL CA");
    let other = Pki::new("Check CRL Other CA");
    // the same name with another key: a CA re-keyed, its CRL signed anew
    let rekeyed = Pki::new("Check CRL CA");
    let site = pki.server("site", &["site.example.com"]);
    let fresh = pki.crl("fresh.crl", &[], false);
    let stale = pki.crl("stale.crl", &[], true);
    let foreign = other.crl("foreign.crl", &[], false);
    let delta = pki.delta_crl("delta.crl");
    let resigned = rekeyed.crl("resigned.crl", &[], false);
    // an old and a new CRL of one CA in one file (`cat old.crl new.crl`)
    let twice = pki.dir.join("twice.crl");
    let mut both = std::fs::read(&stale).unwrap();
    both.extend(std::fs::read(&fresh).unwrap());
    std::fs::write(&twice, both).unwrap();
    // a full CRL and its delta, as a CA publishes them (`cat full.crl delta.crl`)
    let with_delta = pki.dir.join("with-delta.crl");
    let mut both = std::fs::read(&fresh).unwrap();
    both.extend(std::fs::read(&delta).unwrap());
    std::fs::write(&with_delta, both).unwrap();
    let dir = temp_dir("check-crl");
    let garbage = dir.join("garbage.crl");
    std::fs::write(
        &garbage,
        "-----BEGIN X509 CRL-----\nMAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let ca = format!("{:?}", pki.ca().display().to_string());
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    // `tls` is the body of [listener.tls], `pool_tls` of [pool.tls]
    let check = |tls: &str, pool_tls: &str| {
        let listen = free_addr("127.0.0.1");
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"api\"\n  [listener.tls]\n  cert = [{}]\n{tls}\n\n[[pool]]\nname = \"api\"\n  [[pool.server]]\n  address = \"127.0.0.1:9\"\n  [pool.tls]\n{pool_tls}\n",
            q(&site.pem)
        );
        let path = dir.join("rampart.toml");
        std::fs::write(&path, text).unwrap();
        rampart_check(&path)
    };
    // signed by the key of ca.pem's certificate of its issuer's name
    let (ok, out) = check(
        &format!("  client_ca = {ca}\n  client_crl = {}", q(&fresh)),
        &format!("  ca = {ca}\n  crl = {}", q(&fresh)),
    );
    assert!(ok && !out.contains("warning"), "{out}");
    // a CA file in a rollover holds the old and the new certificate of one
    // name: a CRL signed by one of the keys is loaded, and what the other
    // key issued is said to be refused
    let rollover = dir.join("rollover.pem");
    let mut both = std::fs::read(pki.ca()).unwrap();
    both.extend(std::fs::read(rekeyed.ca()).unwrap());
    std::fs::write(&rollover, both).unwrap();
    let (ok, out) = check(
        &format!(
            "  client_ca = {}\n  client_crl = {}",
            q(&rollover),
            q(&fresh)
        ),
        "",
    );
    assert!(
        ok && out.contains("warning")
            && out.contains("not by 1 other: what the other key issued is refused"),
        "{out}"
    );
    for (tls, pool_tls, key, why) in [
        (
            format!("  client_ca = {ca}\n  client_crl = {}", q(&twice)),
            String::new(),
            "listener[0].tls.client_crl",
            "two CRLs of CN=Check CRL CA",
        ),
        (
            format!("  client_crl = {}", q(&fresh)),
            String::new(),
            "listener[0].tls.client_crl",
            "needs client_ca",
        ),
        (
            format!("  client_ca = {ca}\n  client_crl = {}", q(&garbage)),
            String::new(),
            "listener[0].tls.client_crl",
            "garbage.crl",
        ),
        (
            format!("  client_ca = {ca}\n  client_crl = {}", q(&pki.ca())),
            String::new(),
            "listener[0].tls.client_crl",
            "no PEM CRL",
        ),
        (
            format!("  client_ca = {ca}\n  client_crl = {}", q(&delta)),
            String::new(),
            "listener[0].tls.client_crl",
            "delta.crl: no usable CRL in it: delta CRLs only",
        ),
        (
            format!("  client_ca = {ca}\n  client_crl = {}", q(&resigned)),
            String::new(),
            "listener[0].tls.client_crl",
            "resigned.crl: the CRL of CN=Check CRL CA is not signed by the key of any",
        ),
        (
            String::new(),
            format!("  ca = {ca}\n  crl = {}", q(&resigned)),
            "pool[0].tls.crl",
            "resigned.crl: the CRL of CN=Check CRL CA is not signed by the key of any",
        ),
        (
            String::new(),
            format!("  verify = false\n  insecure = true\n  crl = {}", q(&fresh)),
            "pool[0].tls.crl",
            "verify = false",
        ),
    ] {
        let (ok, out) = check(&tls, &pool_tls);
        assert!(!ok, "{tls} / {pool_tls} accepted: {out}");
        assert!(
            out.contains(key) && out.contains(why),
            "{tls} / {pool_tls}: {out}"
        );
    }
    // a stale CRL is loaded, as nginx and HAProxy load it, with a warning
    for (tls, pool_tls) in [
        (
            format!("  client_ca = {ca}\n  client_crl = {}", q(&stale)),
            String::new(),
        ),
        (String::new(), format!("  ca = {ca}\n  crl = {}", q(&stale))),
    ] {
        let (ok, out) = check(&tls, &pool_tls);
        assert!(ok, "{out}");
        assert!(
            out.contains("warning") && out.contains("went stale on 2025-01-02"),
            "{out}"
        );
    }
    // a pool's CRL with the OS trust store: a warning
    let (ok, out) = check("", &format!("  crl = {}", q(&fresh)));
    assert!(ok && out.contains("OS trust store"), "{out}");
    // a CRL of a CA that client_ca does not hold revokes nothing, and
    // client_ca's CA is left with none: both said
    let (ok, out) = check(
        &format!("  client_ca = {ca}\n  client_crl = {}", q(&foreign)),
        "",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("warning")
            && out.contains("issued by no certificate of")
            && out.contains("no CRL of CN=Check CRL CA"),
        "{out}"
    );
    // a delta CRL beside its full CRL: left out with a warning, as nginx and
    // HAProxy leave it out; the full CRL is read (not two CRLs of one CA)
    for (tls, pool_tls, key) in [
        (
            format!("  client_ca = {ca}\n  client_crl = {}", q(&with_delta)),
            String::new(),
            "listener[0].tls.client_crl",
        ),
        (
            String::new(),
            format!("  ca = {ca}\n  crl = {}", q(&with_delta)),
            "pool[0].tls.crl",
        ),
    ] {
        let (ok, out) = check(&tls, &pool_tls);
        assert!(ok, "{out}");
        assert!(
            out.contains("warning")
                && out.contains(key)
                && out.contains("with-delta.crl: CRL 1 (of CN=Check CRL CA) is a delta CRL")
                && !out.contains("no CRL of"),
            "{out}"
        );
    }
}

/// GET `path` with `Connection: close` on `s`; the answer's head and body.
async fn get_closing<S>(mut s: S, path: &str) -> (String, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: site.example.com\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    // a TLS server may end without close_notify after the last record: what
    // came is what is checked
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all))
        .await
        .expect("the answer, then the end");
    let (head, body) = split_head(&all);
    (String::from_utf8_lossy(head).into_owned(), body.to_vec())
}

/// A long body to a TLS client goes through rustls, never spliced (splice would
/// send the server's plaintext): it arrives whole and the spliced-bytes counter
/// does not move. The same body to a plain listener of the same proxy is
/// spliced, so the counter is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_to_a_tls_client_is_encrypted_not_spliced() {
    const SPLICED: &str = "rampart_http_spliced_bytes_total";
    let pki = Pki::new("Splice CA");
    let site = pki.server("site", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web, plain) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let body = tls_listener("web", web, "api", &certs(&[&site]))
        + &format!("\n[[listener]]\nname = \"plain\"\nbind = [\"{plain}\"]\nmode = \"http\"\npool = \"api\"\n")
        + &pool("api", "", backend.addr);
    let _p = Proxy::start(&config(admin, "", &body), &[web, plain]).await;
    let n: usize = 4 << 20;
    let want: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let path = format!("/big?bytes={n}");

    let (s, _) = t::connect(
        t::client_config(&pki, &["http/1.1"]),
        web,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    let (head, got) = get_closing(s, &path).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        got == want,
        "TLS: {} body bytes, content differs",
        got.len()
    );
    let m = admin_get(admin, "/metrics").await.1;
    assert!(m.contains(SPLICED), "{m}");
    assert_eq!(
        metric(&m, SPLICED),
        0.0,
        "nothing spliced to the TLS client"
    );

    let s = tokio::net::TcpStream::connect(plain).await.unwrap();
    let (head, got) = get_closing(s, &path).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        got == want,
        "plain: {} body bytes, content differs",
        got.len()
    );
    wait_metric(admin, SPLICED, (n / 2) as f64).await;
}

/// A TCP listener that ends TLS relays a server's answer whole to a client
/// that reads it slowly, while the server then waits for the client. (The
/// relay flushes its writer whenever its reader waits, so that what rustls
/// holds goes out; `what_a_writer_holds_is_flushed_when_the_reader_waits` in
/// src/proxy/tcp.rs tests that with a writer that sends only when flushed.
/// Here, with tokio-rustls, the answer also arrived whole before that fix.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_tcp_relay_delivers_a_long_answer_to_a_slow_reader() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // more than the proxy's socket can hold (tcp_wmem's 4 MiB at most)
    const N: usize = 16 << 20;
    let pki = Pki::new("Relay CA");
    let site = pki.server("site", &["site.example.com"]);
    // the server: N bytes, then it waits for the client's word before closing
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let data: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
                if s.write_all(&data).await.is_err() {
                    return;
                }
                let mut word = [0u8; 1];
                let _ = s.read(&mut word).await;
            });
        }
    });
    let (admin, edge) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let body = format!(
        "\n[[listener]]\nname = \"edge\"\nbind = [\"{edge}\"]\nmode = \"tcp\"\npool = \"raw\"\n  [listener.tls]\n{}\n",
        certs(&[&site])
    ) + &pool("raw", "", baddr);
    let _p = Proxy::start(&config(admin, "", &body), &[edge]).await;
    // a client with a small receive buffer: the proxy's writes wait often
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(edge).await.unwrap();
    let cfg = Arc::new(t::client_config(&pki, &[]));
    let name = rustls_pki_types::ServerName::try_from("site.example.com").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    // a slow reader: 64 KiB, then a pause (the scenario: the proxy's socket
    // to it stays full, so rustls holds what the proxy writes last)
    let mut got = Vec::with_capacity(N);
    let read = async {
        let mut piece = vec![0u8; 65536];
        while got.len() < N {
            let n = s.read(&mut piece).await.unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&piece[..n]);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .is_err()
    {
        panic!("the answer stopped short of {N} bytes: held in the proxy");
    }
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    s.write_all(b"k").await.unwrap();
}

/// A TLS session that breaks mid-body (a record that fails to decrypt) is the
/// client leaving, as a reset is: logged `client_abort`, not counted as a
/// malformed body (tokio-rustls reports every TLS error as `InvalidData`, the
/// kind hyper's decoder gives broken framing). `Expect: 100-continue` makes
/// the proxy say when it reads the body, so the bad record comes after the
/// head was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_session_that_breaks_mid_body_is_a_client_abort() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("Break CA");
    let site = pki.server("site", &["site.example.com"]);
    let backend = Backend::start("pod", free_addr("127.0.0.1")).await;
    let (admin, web) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let body = tls_listener("web", web, "api", &certs(&[&site])) + &pool("api", "", backend.addr);
    let p = Proxy::start(&config(admin, "", &body), &[web]).await;
    let (mut s, _) = t::connect(
        t::client_config(&pki, &["http/1.1"]),
        web,
        Some("site.example.com"),
        "",
    )
    .await
    .unwrap();
    // a PUT, read whole before a server is chosen
    s.write_all(
        b"PUT /broken HTTP/1.1\r\nHost: site.example.com\r\nContent-Length: 20000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 100 Continue\r\n"), "{got:?}");
    s.write_all(&[b'y'; 100]).await.unwrap();
    s.flush().await.unwrap();
    // an application data record of 32 bytes that no key made
    let tcp = &mut s.get_mut().0;
    let mut bad = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    bad.extend_from_slice(&[0x5a; 32]);
    tcp.write_all(&bad).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("the proxy kept the broken session open");
    wait_for(Duration::from_secs(5), "the client abort's line", || {
        p.stdout()
            .lines()
            .any(|l| l.contains("path=\"/broken\"") && l.contains("end=client_abort"))
    })
    .await;
    let v = p.stats().await;
    assert_eq!(
        v["listeners"][0]["request_errors"]["malformed_body"], 0,
        "{v}"
    );
    assert_eq!(backend.requests(), 0);
}

/// An answer whose end is the connection's end (no length, not chunked) that
/// breaks off because its server failed reaches a TLS client without
/// close_notify: the client sees it cut short (RFC 9112 9.8), never whole. An
/// answer that ends as it should still gets close_notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_short_by_its_server_ends_without_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("Cut CA");
    let site = pki.server("site", &["site.example.com"]);
    // a server that answers with no length, then ends: with a reset
    // (/cut) or with its FIN (/whole)
    let server = listen(free_addr("127.0.0.1")).await;
    let backend = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = server.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    req.push(b[0]);
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\npart").await;
                if req.starts_with(b"GET /cut ") {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
            });
        }
    });
    let (admin, web) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let body = tls_listener("web", web, "api", &certs(&[&site])) + &pool("api", "", backend);
    let _p = Proxy::start(&config(admin, "", &body), &[web]).await;
    for (path, whole) in [("/whole", true), ("/cut", false)] {
        let (mut s, _) = t::connect(
            t::client_config(&pki, &["http/1.1"]),
            web,
            Some("site.example.com"),
            "",
        )
        .await
        .unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: site.example.com\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .expect("the connection ends");
        assert!(
            got.ends_with(b"part"),
            "{path}: {:?}",
            String::from_utf8_lossy(&got)
        );
        match (whole, end) {
            (true, Ok(_)) => {}
            (false, Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            (_, end) => panic!("{path}: {end:?}"),
        }
    }
}

/// A passthrough listener with routes and no pool (nginx's map of
/// `$ssl_preread_server_name` without a default, HAProxy's use_backend by
/// `req.ssl_sni` without a default_backend): a name no route takes is closed
/// after its ClientHello is read (a FIN, not a reset), logged as `no_route`
/// and counted as denied; `sni = ""` takes a ClientHello without a name, and
/// a client that does not speak TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_listener_without_a_pool_closes_what_no_route_takes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = start_echo(free_addr("127.0.0.1")).await;
    let nameless = start_echo(free_addr("127.0.0.1")).await;
    let (admin, edge) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let body = format!(
        "\n[[listener]]\nname = \"edge\"\nbind = [\"{edge}\"]\nmode = \"tcp\"\n  [[listener.route]]\n  sni = \"db.example.com\"\n  pool = \"a\"\n  [[listener.route]]\n  sni = \"\"\n  pool = \"nameless\"\n"
    ) + &pool("a", "", a)
        + &pool("nameless", "", nameless);
    let p = Proxy::start(&config(admin, "", &body), &[edge]).await;
    // Ok(true): echoed by a backend; Ok(false): closed with a FIN before
    // any byte came back; Err: reset
    let send = |hello: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
        s.write_all(&hello).await.unwrap();
        let mut got = vec![0u8; hello.len()];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            let mut n = 0;
            while n < got.len() {
                match s.read(&mut got[n..]).await? {
                    // (a socket closed with unread bytes sends a reset
                    // after its FIN: EPIPE here)
                    0 => return s.take_error()?.map_or(Ok(false), Err),
                    k => n += k,
                }
            }
            Ok::<_, std::io::Error>(true)
        })
        .await
        .expect("neither echoed nor closed within 5 s");
        if let Ok(true) = r {
            assert_eq!(got, hello);
        }
        r.map_err(|e| e.kind())
    };
    assert_eq!(send(client_hello("db.example.com")).await, Ok(true));
    // rustls sends no server name for an IP address
    assert_eq!(send(client_hello("127.0.0.1")).await, Ok(true));
    // what is not TLS is routed as no name (nginx's `""`, HAProxy's
    // `!{ req.ssl_sni -m found }`)
    assert_eq!(send(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()).await, Ok(true));
    assert_eq!(send(client_hello("other.example.com")).await, Ok(false));
    // the same with 40 KB after the hello in one write: more than the hello's
    // read takes, the rest read too before closing (a FIN, not a reset)
    // (five times: whether the proxy reads before all of it has come varies)
    let mut more = client_hello("other.example.com");
    more.extend(std::iter::repeat_n(b'x', 40_000));
    for _ in 0..5 {
        assert_eq!(send(more.clone()).await, Ok(false));
    }
    let totals = || async {
        let mut out = Vec::new();
        for (name, addr) in [("a", a), ("nameless", nameless)] {
            let v = pool_view(admin, name).await;
            out.push(server_in(&v, addr)["total"].as_u64().unwrap());
        }
        out
    };
    assert_eq!(totals().await, [1, 2]);
    let v = admin_stats(admin).await;
    assert_eq!(v["listeners"][0]["denied"], 6, "{v}");
    assert_eq!(v["listeners"][0]["pool"], "-", "{v}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !p.stdout().contains("end=no_route") {
        assert!(
            std::time::Instant::now() < deadline,
            "no no_route line: {}",
            p.stdout()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        p.stdout()
            .lines()
            .any(|l| l.contains("listener=edge pool=- ")
                && l.ends_with(" end=no_route sni=other.example.com")),
        "{}",
        p.stdout()
    );
}
