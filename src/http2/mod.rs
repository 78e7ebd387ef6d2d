//! rampart's own HTTP/2 (RFC 9113): header compression (`hpack`), frames
//! (`frame`), the server side of a client connection (`server`), and the
//! client side of a connection to a server of an `h2` pool (`client`).
//!
//! Written for the proxy's path: a request's fields are decoded as slices and
//! kept without a copy where the client's dynamic table holds them, each
//! connection runs its streams on its own task, and a head is encoded straight
//! from the `HeaderMap` it is in (a backend's answer, or the request sent on).

pub mod client;
pub mod fields;
pub mod frame;
pub mod hpack;
mod huffman_table;
pub mod server;
