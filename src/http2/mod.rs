//! rampart's own HTTP/2 (RFC 9113): header compression (`hpack`), frames
//! (`frame`), and the server side of a client connection (`server`).
//!
//! Written for the proxy's path: a request's fields are decoded as slices and
//! kept without a copy where the client's dynamic table holds them, each
//! connection runs its streams on its own task, and the response head is
//! encoded straight from the `HeaderMap` a backend's answer became.

pub mod frame;
pub mod hpack;
mod huffman_table;
pub mod server;
