//! A plain client socket is registered with tokio's reactor only once it has to
//! wait (`rampart::proxy::io::ClientSocket`): what it reads and writes before
//! and after that, on real loopback sockets.

use rampart::proxy::io::{ClientIo, ClientSocket, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

/// A connected pair: the accepted side non-blocking (as the accept loop hands
/// it over) and the client side.
async fn pair() -> (std::net::TcpStream, tokio::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = l.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (server, client)
}

/// Waits (polling, with a deadline) until `n` bytes are waiting on `sock`.
fn wait_queued(sock: &std::net::TcpStream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; n];
    loop {
        match sock.peek(&mut buf) {
            Ok(k) if k >= n => return,
            _ if Instant::now() > deadline => panic!("{n} bytes never arrived"),
            _ => std::thread::yield_now(),
        }
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn bytes_read_before_registering_are_the_bytes_sent() {
    let (server, mut client) = pair().await;
    let sent = pattern(3000, 7);
    client.write_all(&sent).await.unwrap();
    wait_queued(&server, sent.len());
    let mut sock = ClientSocket::new(server);
    // read into memory that was never initialized (the buffer's spare capacity)
    let mut got = bytes::BytesMut::with_capacity(8192);
    while got.len() < sent.len() {
        let n = sock.read_buf(&mut got).await.unwrap();
        assert!(n > 0);
    }
    assert_eq!(&got[..], &sent[..]);
    assert!(
        !sock.is_registered(),
        "bytes that were there were read at once"
    );
}

#[tokio::test]
async fn a_read_that_finds_nothing_registers_and_wakes_when_bytes_come() {
    let (server, mut client) = pair().await;
    let mut sock = ClientSocket::new(server);
    let mut buf = [0u8; 64];
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // the first read of a new connection does not wait: it says WouldBlock
    // (the fast path then lets its buffer go and waits for readiness)
    {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut sock).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            other => panic!("{other:?}"),
        }
    }
    assert!(!sock.is_registered());
    // a later one waits, through the reactor
    {
        let mut rb = ReadBuf::new(&mut buf);
        assert!(Pin::new(&mut sock).poll_read(&mut cx, &mut rb).is_pending());
    }
    assert!(sock.is_registered(), "it waits through the reactor");
    let later = pattern(40, 3);
    client.write_all(&later).await.unwrap();
    let mut got = Vec::new();
    while got.len() < later.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("woken by the reactor")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, later);
    // and the end of the stream
    drop(client);
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn the_first_wait_reads_at_once_and_a_later_one_registers() {
    let (server, _client) = pair().await;
    let mut sock = ClientSocket::new(server);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // a new connection: read at once, whatever its readiness
    assert!(matches!(sock.poll_readable(&mut cx), Poll::Ready(Ok(()))));
    assert!(!sock.is_registered());
    let mut buf = [0u8; 16];
    let mut rb = ReadBuf::new(&mut buf);
    assert!(matches!(
        Pin::new(&mut sock).poll_read(&mut cx, &mut rb),
        Poll::Ready(Err(_))
    ));
    // after that, a wait is the reactor's (nothing has come)
    assert!(sock.poll_readable(&mut cx).is_pending());
    assert!(sock.is_registered());
}

#[tokio::test]
async fn writes_before_and_after_registering_reach_the_client() {
    let (server, mut client) = pair().await;
    let mut sock = ClientSocket::new(server);
    let small = pattern(100, 1);
    assert_eq!(sock.write_now(&small).unwrap(), small.len());
    assert!(!sock.is_registered(), "a write that fits needs no reactor");
    // more than the socket buffers hold: the write waits for the reader
    let big = pattern(16 << 20, 9);
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        all
    });
    sock.send_all(&big).await.unwrap();
    assert!(
        sock.is_registered(),
        "a write that had to wait registered it"
    );
    drop(sock);
    let all = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), small.len() + big.len());
    assert_eq!(&all[..small.len()], &small[..]);
    assert!(all[small.len()..] == big[..], "the bytes differ");
}

#[tokio::test]
async fn a_socket_taken_out_for_parking_is_the_same_connection() {
    let (server, mut client) = pair().await;
    let local = server.local_addr().unwrap();
    // never registered: handed over as it is
    let sock = ClientSocket::new(server);
    assert_eq!(sock.local_addr().unwrap(), local);
    let std = sock.into_std().unwrap();
    // registered: taken out of the reactor
    let sock = ClientSocket::from_registered(tokio::net::TcpStream::from_std(std).unwrap());
    assert!(sock.is_registered());
    assert_eq!(sock.local_addr().unwrap(), local);
    let std = sock.into_std().unwrap();
    client.write_all(b"ping").await.unwrap();
    wait_queued(&std, 4);
    let mut sock = ClientSocket::new(std);
    let mut buf = [0u8; 4];
    sock.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn a_client_socket_is_no_larger_than_a_tokio_socket() {
    // the fast path's future holds one for every connection, idle ones too
    assert!(
        std::mem::size_of::<ClientSocket>() <= std::mem::size_of::<tokio::net::TcpStream>(),
        "{} bytes",
        std::mem::size_of::<ClientSocket>()
    );
}

#[tokio::test]
async fn the_last_bytes_go_with_the_end_whole_or_in_part() {
    // all taken at once: the client reads them and then the end, while the
    // socket is still open on this side (the FIN went with them)
    let (server, mut client) = pair().await;
    let mut sock = ClientSocket::new(server);
    let last = pattern(300, 4);
    assert_eq!(sock.write_last(&last).unwrap(), last.len());
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut all))
        .await
        .expect("the end before the socket is dropped")
        .unwrap();
    assert_eq!(all, last);
    drop(sock);

    // more than the socket takes: the part taken is held (MSG_MORE) and the
    // rest follows through send_all, which pushes it all; nothing is lost and
    // the end comes when the socket is dropped
    let (server, client) = pair().await;
    let mut sock = ClientSocket::new(server);
    let big = pattern(16 << 20, 5);
    let n = sock.write_last(&big).unwrap();
    assert!(n < big.len(), "16 MiB fit in the socket at once");
    let reader = tokio::spawn(async move {
        let mut client = client;
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        all
    });
    sock.send_all(&big[n..]).await.unwrap();
    drop(sock);
    let all = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the whole of it, then the end")
        .unwrap();
    assert_eq!(all.len(), big.len());
    assert!(all == big);
}

/// Reads everything until the end, within `secs`.
async fn read_all(mut client: tokio::net::TcpStream, secs: u64) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(secs), client.read_to_end(&mut all))
        .await
        .expect("everything, then the end")
        .unwrap();
    all
}

/// A head and the body bytes after it, written from where they lie
/// (`write_two`: one sendmsg): taken whole, they reach the client in order;
/// taken in part (within the first part or within the second), the rest
/// written after it completes them; the last ones carry the end.
#[tokio::test]
async fn two_parts_go_out_in_order_whole_or_in_part() {
    // taken whole, as the last bytes: the end comes while the socket is open
    let (server, client) = pair().await;
    let mut sock = ClientSocket::new(server);
    let (head, body) = (pattern(200, 1), pattern(3000, 2));
    let n = sock.write_two([&head, &body], Write::Last).unwrap();
    assert_eq!(n, head.len() + body.len());
    assert!(!sock.is_registered(), "a write that fits needs no reactor");
    let all = read_all(client, 5).await;
    assert_eq!(all, [&head[..], &body[..]].concat());
    drop(sock);

    // taken whole, then more (held back, MSG_MORE) and the rest at once
    let (server, client) = pair().await;
    let mut sock = ClientSocket::new(server);
    assert_eq!(
        sock.write_two([&head, &body], Write::More).unwrap(),
        head.len() + body.len()
    );
    let tail = pattern(500, 3);
    assert_eq!(
        sock.write_two([&tail, &[]], Write::Now).unwrap(),
        tail.len()
    );
    drop(sock);
    let all = read_all(client, 5).await;
    assert_eq!(all, [&head[..], &body[..], &tail[..]].concat());

    // more than the socket takes, cut within the second part, then within
    // the first
    for (a, b) in [(200, 16 << 20), (16 << 20, 1 << 20)] {
        let (server, client) = pair().await;
        let mut sock = ClientSocket::new(server);
        let (head, body) = (pattern(a, 4), pattern(b, 5));
        let n = sock.write_two([&head, &body], Write::Now).unwrap();
        assert!(n < a + b, "{} bytes fit in the socket at once", a + b);
        let reader = tokio::spawn(read_all(client, 30));
        if n < a {
            sock.send_all(&head[n..]).await.unwrap();
            sock.send_all(&body).await.unwrap();
        } else {
            sock.send_all(&body[n - a..]).await.unwrap();
        }
        drop(sock);
        let all = reader.await.unwrap();
        assert_eq!(all.len(), a + b);
        assert!(
            all[..a] == head[..] && all[a..] == body[..],
            "the bytes differ"
        );
    }
}
