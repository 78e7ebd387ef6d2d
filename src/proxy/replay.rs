//! A request body before a server is chosen: read whole when the request may be
//! retried on another server and is small enough (`retry_buffer`), else its
//! first frames read ahead (a body malformed there never reaches a server); and
//! the request kept for a replay.

use super::headers::Forwarded;
use crate::pool::Pool;
use crate::upstream::ClientBody;
use crate::upstream::ReqBody;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::time::Duration;

pub(super) enum Buffered {
    Bytes(Bytes),
    /// the body, and the frames read from it already
    Stream(ClientBody, std::collections::VecDeque<Frame<Bytes>>),
}

/// A body read whole, as sent on. An empty one that the client gave no length,
/// on a method that defines no meaning for content (a GET that ended with its
/// HEADERS frame), is no body at all: not "Content-Length: 0" to an HTTP/1
/// server, nor an empty DATA frame to an HTTP/2 one. POST, PUT and PATCH keep
/// their length of 0, as RFC 9110 8.6 asks of a user agent.
pub(super) fn full(body: Bytes, method: &Method, headers: &HeaderMap) -> ReqBody {
    ReqBody::Full(body_or_none(body, method, headers))
}

fn body_or_none(body: Bytes, method: &Method, headers: &HeaderMap) -> Option<Bytes> {
    let none = body.is_empty()
        && !headers.contains_key(http::header::CONTENT_LENGTH)
        && ![Method::POST, Method::PUT, Method::PATCH].contains(method);
    (!none).then_some(body)
}

/// Why a client's body could not be read before the request went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFault {
    /// Its framing is broken: 400.
    Malformed,
    /// It paused for the listener's client_timeout: 408.
    Stalled,
    /// The client went away (or reset its stream) mid-body.
    Gone,
    /// It went over its max_request_body: 413.
    TooLarge,
}

impl BodyFault {
    fn of(e: &crate::upstream::ClientBodyError) -> BodyFault {
        if e.is_incomplete() {
            BodyFault::Gone
        } else if e.is_too_large() {
            BodyFault::TooLarge
        } else {
            BodyFault::Malformed
        }
    }
}

/// Reads the whole body when the request may be replayed and its size is known and
/// within `retry_buffer`; otherwise leaves it streaming. Each wait for the
/// client's bytes is bounded by `pause` (the listener's client_timeout, as on
/// the fast path and for the body streamed on): a pause, not a total.
pub(super) async fn buffer_if_small(
    body: ClientBody,
    replayable: bool,
    pool: &Pool,
    pause: Duration,
) -> Result<Buffered, BodyFault> {
    if !replayable {
        return first_frame(body, pause).await;
    }
    if body.is_end_stream() {
        return Ok(Buffered::Bytes(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= pool.retry.buffer => match whole(body, pause).await {
            Ok(b) => Ok(Buffered::Bytes(b)),
            Err(Some(e)) => Err(BodyFault::of(&e)),
            Err(None) => Err(BodyFault::Stalled),
        },
        _ => first_frame(body, pause).await,
    }
}

/// A body's bytes, read to its end (trailers dropped, as `Collected::to_bytes`
/// drops them). One frame's data is kept as it came: no queue of frames and
/// no copy for the usual body of one frame. Err(None): no frame came for
/// `pause`.
async fn whole<B: Body<Data = Bytes> + Unpin>(
    mut body: B,
    pause: Duration,
) -> Result<Bytes, Option<B::Error>> {
    let mut first = Bytes::new();
    let mut more: Option<BytesMut> = None;
    loop {
        let Some(f) = tokio::time::timeout(pause, body.frame())
            .await
            .map_err(|_| None)?
        else {
            break;
        };
        let Ok(d) = f.map_err(Some)?.into_data() else {
            continue;
        };
        if d.is_empty() {
            continue;
        }
        match &mut more {
            None if first.is_empty() => first = d,
            None => {
                let mut all = BytesMut::with_capacity(first.len() + d.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&d);
                more = Some(all);
            }
            Some(all) => all.extend_from_slice(&d),
        }
    }
    Ok(more.map_or(first, BytesMut::freeze))
}

/// A streaming body, its first frame read before any server is chosen, and
/// with it every frame that had already arrived (up to 64 KiB): a body
/// malformed within what came with the head (a bad chunk size, chunk data not
/// ended by CRLF) is refused by rampart and never reaches a server.
pub(super) async fn first_frame(
    mut body: ClientBody,
    pause: Duration,
) -> Result<Buffered, BodyFault> {
    let mut ahead = std::collections::VecDeque::new();
    if body.is_end_stream() {
        return Ok(Buffered::Stream(body, ahead));
    }
    match tokio::time::timeout(pause, body.frame()).await {
        Ok(Some(Ok(f))) => ahead.push_back(f),
        Ok(None) => return Ok(Buffered::Stream(body, ahead)),
        Ok(Some(Err(e))) => return Err(BodyFault::of(&e)),
        Err(_) => return Err(BodyFault::Stalled),
    }
    let mut size = 0;
    while !body.is_end_stream() && size < 64 * 1024 && ahead.len() < 64 {
        // a zero timeout polls the frame once: ready only if it had arrived
        match tokio::time::timeout(Duration::ZERO, body.frame()).await {
            Ok(Some(Ok(f))) => {
                size += f.data_ref().map_or(0, |d| d.len());
                ahead.push_back(f);
            }
            Ok(None) | Err(_) => break,
            Ok(Some(Err(e))) => return Err(BodyFault::of(&e)),
        }
    }
    Ok(Buffered::Stream(body, ahead))
}

/// A request kept for replay on another server.
pub(super) struct Replay {
    parts: Parts,
    /// As `full` has it: None for no body at all.
    body: Option<Bytes>,
    /// Fields that go after the map's (`headers::forwarded`).
    after: Forwarded,
}

impl Replay {
    /// A copy of the request (it is sent as it is, and this one kept).
    pub(super) fn new(parts: &Parts, body: Bytes) -> Replay {
        Replay::keep(parts.clone(), body, Forwarded::new())
    }

    /// The request itself, kept: it is sent from here (to an HTTP/2 server,
    /// whose client encodes the head without taking it), with `after`'s
    /// fields after the map's.
    pub(super) fn keep(parts: Parts, body: Bytes, after: Forwarded) -> Replay {
        let body = body_or_none(body, &parts.method, &parts.headers);
        Replay { parts, body, after }
    }

    pub(super) fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The fields that go after `parts`' map.
    pub(super) fn after(&self) -> &[(HeaderName, HeaderValue)] {
        &self.after
    }

    pub(super) fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// A copy of the request, with every field in its map.
    pub(super) fn request(&self) -> Request<ReqBody> {
        let mut parts = self.parts.clone();
        for (n, v) in &self.after {
            parts.headers.append(n.clone(), v.clone());
        }
        Request::from_parts(parts, ReqBody::Full(self.body.clone()))
    }
}

impl Drop for Replay {
    /// The request is over: its map serves a later one.
    fn drop(&mut self) {
        crate::http2::fields::recycle(std::mem::take(&mut self.parts.headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    const LONG: Duration = Duration::from_secs(30);

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

    fn body(
        frames: Frames,
    ) -> StreamBody<futures_util::stream::Iter<<Frames as IntoIterator>::IntoIter>> {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_read_whole_keeps_one_frame_as_it_came_and_joins_several() {
        let one = Bytes::from(vec![7u8; 100]);
        let got = whole(body(vec![Ok(Frame::data(one.clone()))]), LONG)
            .await
            .unwrap();
        assert_eq!(got, one);
        assert_eq!(got.as_ptr(), one.as_ptr(), "one frame: not copied");

        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let got = whole(
            body(vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::new())),
                Ok(Frame::data(Bytes::from_static(b"cd"))),
                Ok(Frame::data(Bytes::from_static(b"e"))),
                Ok(Frame::trailers(trailers)),
            ]),
            LONG,
        )
        .await
        .unwrap();
        assert_eq!(got, "abcde");

        let got = whole(
            body(vec![
                Ok(Frame::data(Bytes::new())),
                Ok(Frame::data(Bytes::from_static(b"x"))),
            ]),
            LONG,
        )
        .await
        .unwrap();
        assert_eq!(got, "x");
        assert_eq!(whole(body(vec![]), LONG).await.unwrap(), "");

        let broken = whole(
            body(vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Err(std::io::Error::other("reset")),
            ]),
            LONG,
        )
        .await;
        assert!(matches!(broken, Err(Some(_))));

        // a body that pauses longer than `pause` is stalled, not broken
        let never = futures_util::stream::pending::<Result<Frame<Bytes>, std::io::Error>>();
        let paused = whole(StreamBody::new(never), Duration::from_millis(20)).await;
        assert!(matches!(paused, Err(None)));
    }
}
