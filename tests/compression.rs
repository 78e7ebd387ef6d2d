//! `[listener.compression]`: a server's answer gzipped for a client that
//! accepts it (nginx's `gzip`, HAProxy's `compression`), over HTTP/1.1 and
//! HTTP/2: only listed types, statuses and answers not encoded already or
//! too short; the fields say so (Content-Encoding, Vary, a weak ETag, no
//! Content-Length); a streamed answer goes on part by part, not held back.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use hyper::{Request, Response, StatusCode};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const PAGE: &str = "<p>the same words again and again, which compress well</p>\n";

type Parts = tokio::sync::mpsc::Receiver<Bytes>;

/// A server answering by path; `/stream` sends what the test puts in `parts`.
async fn server(parts: Arc<Mutex<Option<Parts>>>) -> SocketAddr {
    answering(move |req: Request<hyper::body::Incoming>| {
        let parts = Arc::clone(&parts);
        async move {
            let page = PAGE.repeat(50);
            let (status, ctype, extra, body): (u16, &str, &[(&str, &str)], BoxReq) =
                match req.uri().path() {
                    "/page" => (
                        200,
                        "text/html; charset=utf-8",
                        &[("etag", "\"v1\"")],
                        full(page),
                    ),
                    "/json" => (200, "application/json", &[], full(page)),
                    "/missing" => (404, "text/html", &[], full(page)),
                    "/created" => (201, "text/html", &[], full(page)),
                    "/png" => (200, "image/png", &[], full(page)),
                    "/small" => (200, "text/html", &[], full("tiny".into())),
                    "/encoded" => (200, "text/html", &[("content-encoding", "br")], full(page)),
                    "/stream" => {
                        let rx = parts.lock().unwrap().take().expect("one stream");
                        let s = futures_util::stream::unfold(rx, |mut rx| async move {
                            rx.recv().await.map(|b| {
                                (
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                                    rx,
                                )
                            })
                        });
                        (
                            200,
                            "text/html",
                            &[],
                            BodyExt::boxed(http_body_util::StreamBody::new(s)),
                        )
                    }
                    _ => (200, "text/plain", &[], full(page)),
                };
            let mut r = Response::new(body);
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            r.headers_mut()
                .insert("content-type", ctype.parse().unwrap());
            for (n, v) in extra {
                r.headers_mut().insert(*n, v.parse().unwrap());
            }
            r
        }
    })
    .await
}

fn full(s: String) -> BoxReq {
    BodyExt::boxed(http_body_util::Full::new(Bytes::from(s)))
}

fn gunzip(b: &[u8]) -> String {
    let mut d = flate2::write::GzDecoder::new(Vec::new());
    d.write_all(b).unwrap();
    String::from_utf8(d.finish().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_gzipped_for_clients_that_take_it() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let backend = server(Arc::new(Mutex::new(Some(rx)))).await;
    let (listen, admin) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let cfg = format!(
        "[global]\nthreads = 1\n[admin]\nbind = \"{admin}\"\n\
         [[listener]]\nname = \"web\"\nbind = [\"{listen}\"]\nmode = \"http\"\npool = \"a\"\n\
         compression = {{ types = [\"text/html\", \"application/*\"] }}\n\
         [[pool]]\nname = \"a\"\n  [[pool.server]]\n  address = \"{backend}\"\n"
    );
    let p = Proxy::start(&cfg, &[listen]).await;
    let page = PAGE.repeat(50);
    let ask = |c: Client, method: &'static str, path: &'static str, ae: Option<&'static str>| async move {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{listen}{path}"));
        if let Some(v) = ae {
            b = b.header("accept-encoding", v);
        }
        let (resp, body) = send(&c, b.body(empty()).unwrap()).await;
        (resp, body)
    };
    for (what, c) in [("HTTP/1.1", client()), ("HTTP/2", h2c_client())] {
        let (resp, body) = ask(c.clone(), "GET", "/page", Some("br, gzip")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{what}");
        let h = resp.headers();
        assert_eq!(h["content-encoding"], "gzip", "{what}");
        assert!(h.get("content-length").is_none(), "{what}: {h:?}");
        assert_eq!(h["vary"], "Accept-Encoding", "{what}");
        assert_eq!(h["etag"], "W/\"v1\"", "{what}");
        assert!(body.len() < page.len() / 4, "{what}: {} bytes", body.len());
        assert_eq!(gunzip(&body), page, "{what}");
        for (path, ae, gz) in [
            ("/json", Some("gzip"), true),
            ("/missing", Some("gzip"), true),
            ("/page", None, false),
            ("/page", Some("gzip;q=0, br"), false),
            ("/png", Some("gzip"), false),
            ("/small", Some("gzip"), false),
            ("/created", Some("gzip"), false),
        ] {
            let (resp, body) = ask(c.clone(), "GET", path, ae).await;
            let enc = resp
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_string());
            if gz {
                assert_eq!(enc.as_deref(), Some("gzip"), "{what} {path}");
                assert_eq!(gunzip(&body), page, "{what} {path}");
            } else {
                assert_eq!(enc, None, "{what} {path} {ae:?}");
                // an answer gzipped for others says it varies (a cache keeps both)
                let varies = resp.headers().get("vary").is_some();
                assert_eq!(varies, path == "/page", "{what} {path} {ae:?}");
                let want = if path == "/small" {
                    "tiny".to_string()
                } else {
                    page.clone()
                };
                assert_eq!(String::from_utf8_lossy(&body), want, "{what} {path}");
            }
        }
        // a server's own encoding is left alone
        let (resp, body) = ask(c.clone(), "GET", "/encoded", Some("gzip")).await;
        assert_eq!(resp.headers()["content-encoding"], "br", "{what}");
        assert_eq!(String::from_utf8_lossy(&body), page, "{what}");
        // a HEAD's fields are the server's
        let (resp, _) = ask(c.clone(), "HEAD", "/page", Some("gzip")).await;
        assert!(resp.headers().get("content-encoding").is_none(), "{what}");
    }
    // nor to HTTP/1.0, as nginx and HAProxy (its caches ignore Vary)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        s.write_all(b"GET /page HTTP/1.0\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(
            text.starts_with("http/1.") && text.contains(" 200 "),
            "{text}"
        );
        assert!(!text.contains("content-encoding"), "{text}");
        assert!(text.contains("vary: accept-encoding"), "{text}");
        assert!(text.ends_with(&page.to_ascii_lowercase()), "{text}");
    }
    // a streamed answer goes on as it comes: the first part reaches the
    // client, whole and decodable, before the server sends the second
    let c = client();
    let req = Request::get(format!("http://{listen}/stream"))
        .header("accept-encoding", "gzip")
        .body(empty())
        .unwrap();
    tx.send(Bytes::from_static(b"first part\n")).await.unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut d = flate2::write::GzDecoder::new(Vec::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d.get_ref().as_slice() != b"first part\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the first part was held back"
        );
        let f = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("the first part was held back")
            .unwrap()
            .unwrap();
        if let Ok(data) = f.into_data() {
            d.write_all(&data).unwrap();
            d.flush().unwrap();
        }
    }
    tx.send(Bytes::from_static(b"second part\n")).await.unwrap();
    drop(tx);
    while let Some(f) = body.frame().await {
        if let Ok(data) = f.unwrap().into_data() {
            d.write_all(&data).unwrap();
        }
    }
    assert_eq!(d.finish().unwrap(), b"first part\nsecond part\n");
    // a reload without it: answers as the server sent them
    std::fs::write(
        &p.config,
        cfg.replace(
            "compression = { types = [\"text/html\", \"application/*\"] }\n",
            "",
        ),
    )
    .unwrap();
    let (st, body) = admin_post(admin, "/api/reload", "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (resp, body) = ask(client(), "GET", "/page", Some("gzip")).await;
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(String::from_utf8_lossy(&body), page);
}
