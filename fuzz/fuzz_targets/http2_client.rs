//! rampart's HTTP/2 client (src/http2/client.rs) against whatever bytes a
//! server sends: no panic, no hang, and the request ends in a response (read
//! to its end or its error) or an error, whatever the frames.
#![no_main]
use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Empty};
use libfuzzer_sys::fuzz_target;
use rampart::http2::client::{Config, Connection, RequestHead, SendBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let cfg = Config {
            stream_window: 65_535,
            conn_window: 65_535,
            max_header_list: 16 * 1024,
            // (the runtime has no timer: no keepalive PINGs)
            keepalive_interval: None,
            keepalive_timeout: std::time::Duration::from_secs(5),
        };
        let (conn, task) = Connection::new(client, cfg);
        let headers = HeaderMap::new();
        let head = RequestHead {
            method: &Method::POST,
            scheme: "http",
            authority: b"fuzz",
            path: b"/",
            headers: &headers,
            after: &[],
        };
        let body = SendBody::<Empty<Bytes>>::Whole(Bytes::from_static(b"request body"));
        let sent = conn.send(&head, body);
        // the server's side: all its bytes, then its end; what the client
        // writes is read and dropped
        let serve = async move {
            let _ = server.write_all(data).await;
            let _ = server.shutdown().await;
            let mut sink = [0u8; 4096];
            while matches!(server.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let exchange = async {
            let Ok((response, _)) = sent else {
                return;
            };
            if let Ok(resp) = response.await {
                let mut body = resp.into_body();
                while let Some(f) = body.frame().await {
                    if f.is_err() {
                        break;
                    }
                }
            }
        };
        let _ = tokio::join!(task, serve, exchange);
        drop(conn);
    });
});
