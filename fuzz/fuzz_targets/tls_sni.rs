//! The SNI parser (`tls::sni::parse`, which routes TLS passthrough and TCP
//! listeners by name) against rustls, the TLS stack rampart terminates with.
//!
//! - Never a panic.
//! - Bytes that arrive in pieces give the same answer: every prefix of an input
//!   reads as `Incomplete` or as the whole input's answer (`read_hello` decides on the
//!   first answer that is not `Incomplete`).
//! - Where rustls reads a ClientHello from the input, rampart reads the same one:
//!   the same server name, or none where rustls finds none (but an IP address,
//!   which rampart keeps as sent, as HAProxy does). rustls stands for the TLS
//!   stack of the backend behind a passthrough route, which must not be served
//!   a hello it reads for another name than the one it was routed by.
//! - What rampart reads as not TLS at all (`NotTls`, routed as a hello without
//!   a name: the first byte is no TLS record's content type) is input rustls
//!   reads no ClientHello from (the first arm below).
//! - Where rampart reads a hello, rustls does not ask for more bytes, and does
//!   not refuse its server_name extension (no valid host name first, two, or a
//!   second extension) while rampart routes by a name in it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::tls::sni::{parse, Peeked, MAX_PEEK};

/// What rustls makes of the input.
#[derive(Debug)]
enum Rustls {
    /// A ClientHello, and the name it carries.
    Hello(Option<String>),
    /// The input ends before a whole ClientHello.
    NeedsMore,
    /// Not a ClientHello rustls accepts, and why.
    Refused(String),
}

fn rustls_view(mut data: &[u8]) -> Rustls {
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        if data.is_empty() {
            return Rustls::NeedsMore;
        }
        match acceptor.read_tls(&mut data) {
            Ok(0) => return Rustls::NeedsMore,
            Ok(_) => {}
            Err(e) => return Rustls::Refused(e.to_string()),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return Rustls::Hello(accepted.client_hello().server_name().map(str::to_owned))
            }
            Ok(None) => {}
            Err((e, _)) => return Rustls::Refused(format!("{e:?}")),
        }
    }
}

/// A name as both sides compare it: lower case, without the root's dot.
fn norm(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fuzz_target!(|data: &[u8]| {
    // what `read_hello` reads at most
    let data = &data[..data.len().min(MAX_PEEK)];
    let whole = parse(data);

    // the same answer, however the bytes are split
    let cuts: Vec<usize> = if data.len() <= 700 {
        (0..data.len()).collect()
    } else {
        (0..64).map(|i| i * data.len() / 64).collect()
    };
    for cut in cuts {
        let part = parse(&data[..cut]);
        assert!(
            part == Peeked::Incomplete || part == whole,
            "the first {cut} of {} bytes read as {part:?}, all of them as {whole:?}",
            data.len()
        );
    }

    match (rustls_view(data), &whole) {
        (Rustls::Hello(theirs), ours) => {
            let Peeked::Hello(ours) = ours else {
                panic!("rustls reads a ClientHello for {theirs:?}; rampart: {ours:?}");
            };
            let ip = ours
                .as_deref()
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok());
            if !(ip && theirs.is_none()) {
                assert_eq!(
                    ours.as_deref().map(norm),
                    theirs.as_deref().map(norm),
                    "the server name rampart routes by is not the one rustls reads"
                );
            }
        }
        (Rustls::NeedsMore, Peeked::Hello(ours)) => {
            panic!("rampart reads a ClientHello for {ours:?} where rustls waits for more bytes")
        }
        // rustls names its reasons; those about the name are ServerName's, and
        // a second server_name extension (type 0)
        (Rustls::Refused(why), Peeked::Hello(Some(ours)))
            if why.contains("ServerName") || why.contains("DuplicateExtension(0)") =>
        {
            panic!("rampart routes by {ours:?} where rustls refuses the name: {why}")
        }
        _ => {}
    }
});
