//! A small, fast gRPC server for the benchmarks (bench/h2.py): h2c, every call
//! is unary and answered with the request's message echoed back, then the
//! trailers `grpc-status: 0`. It speaks gRPC's wire format (length-prefixed
//! messages, status in trailers), so real gRPC clients (grpcio) can call it.
//!
//!     grpcecho 127.0.0.1:19700 [threads]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;

type Reply = http_body_util::combinators::WithTrailers<
    Full<Bytes>,
    std::future::Ready<Option<Result<http::HeaderMap, Infallible>>>,
>;

async fn call(req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    let msg = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Full::new(msg).with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:19700".parse().unwrap_or_else(|_| unreachable!()));
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1000)
                    .serve_connection(TokioIo::new(sock), hyper::service::service_fn(call))
                    .await;
            });
        }
    });
}
