//! HPACK (RFC 7541), the header compression of HTTP/2, written for rampart's own
//! HTTP/2 server and client: the decoder hands each field to a callback as
//! borrowed bytes (from the header block, the tables, one reused scratch buffer
//! or the memo of short literal values), with the name's `HeaderName` where a
//! table made it once (`Name`) and the value's `HeaderValue` where the memo
//! checked it once (`Value::Memo`), so a field is copied and checked only when
//! it is kept.
//!
//! The server's encoder never adds to a dynamic table: each field is a
//! static-table reference or a literal "without indexing" (RFC 7541 6.2.2), or
//! "never indexed" (6.2.3) for a value that came so, in plain octets, so it
//! keeps no state per client connection (as HAProxy encodes). The client's
//! (requests to a pool's HTTP/2 servers, one connection carrying many
//! clients' requests) keeps an `EncoderTable`: a field it sent before goes
//! as one index, which the server decodes without reading a string.

use super::huffman_table::{CODES, LENGTHS};
use crate::bytehash::{BuildByteHasher, BuildPremixed};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use std::collections::{HashMap, VecDeque};

/// Why a header block could not be decoded. Every one is a connection error of
/// type COMPRESSION_ERROR (RFC 9113 4.3): the decoder's table can no longer be
/// trusted to match the peer's.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum HpackError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer in the header block is too large")]
    IntegerOverflow,
    #[error("index {0} is in neither the static nor the dynamic table")]
    BadIndex(usize),
    #[error(
        "a Huffman-coded string is invalid (EOS, or padding that is not 1 bits or over 7 bits)"
    )]
    BadHuffman,
    #[error("a dynamic table size update to {0} bytes is over the {1} this side allows")]
    SizeUpdateOverLimit(usize, usize),
    #[error("a dynamic table size update after the first field of a header block")]
    LateSizeUpdate,
    #[error("a string of {0} bytes in a header block is over the limit")]
    StringTooLong(usize),
}

/// The static table (RFC 7541, Appendix A); index 1 is the first entry.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an entry costs in a dynamic table besides its bytes (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// No string in a header block may be longer than this (rampart's header lists
/// are limited far below it; the limit keeps a length from being believed
/// before the bytes are there).
const MAX_STRING: usize = 1 << 20;

/// One entry of a dynamic table: name and value in one allocation, which the
/// values handed out share (`Value::to_bytes`), and the name made a
/// `HeaderName` once, when the entry is added, for every field that refers
/// to it.
struct Entry {
    bytes: Bytes,
    name_len: usize,
    header: Option<HeaderName>,
}

/// A decoded field name: its bytes as the peer sent them, and the
/// `HeaderName` of a regular field of that name (`header_name`) where a table
/// holds one already, so the name is neither checked nor made again.
#[derive(Clone, Copy)]
pub struct Name<'a> {
    pub bytes: &'a [u8],
    pub header: Option<&'a HeaderName>,
}

impl<'a> Name<'a> {
    /// A name that no table holds: its bytes only.
    pub fn bare(bytes: &'a [u8]) -> Name<'a> {
        Name {
            bytes,
            header: None,
        }
    }
}

/// The static table's names as `HeaderName`s, at the same index (none for a
/// pseudo-header).
static STATIC_HEADERS: [Option<HeaderName>; 61] = {
    let mut t = [const { None }; 61];
    let mut i = 0;
    while i < STATIC.len() {
        let n = STATIC[i].0;
        if n.as_bytes()[0] != b':' {
            // (a `None` replaced: nothing to drop, but const code may not
            // drop a `HeaderName`-typed place)
            std::mem::forget(t[i].replace(HeaderName::from_static(n)));
        }
        i += 1;
    }
    t
};

/// A regular field's name (RFC 9113 8.2.1 asks lowercase token characters),
/// or `None` for any other name: uppercase, non-token, empty, or a
/// pseudo-header's.
pub fn header_name(name: &[u8]) -> Option<HeaderName> {
    if name.is_empty() || !name.iter().all(|&b| TOKEN_LOWER[b as usize]) {
        return None;
    }
    known(name).or_else(|| HeaderName::from_bytes(name).ok())
}

/// Names outside HTTP's standard set that requests and answers carry often:
/// `HeaderName::from_bytes` copies such a name into an allocation of its own
/// each time, one of these is static.
fn known(name: &[u8]) -> Option<HeaderName> {
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
    const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
    const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
    const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(crate::forwarded::FOR);
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(crate::forwarded::PROTO);
    const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(crate::forwarded::HOST);
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    Some(match name {
        b"grpc-status" => GRPC_STATUS,
        b"grpc-message" => GRPC_MESSAGE,
        b"grpc-encoding" => GRPC_ENCODING,
        b"grpc-accept-encoding" => GRPC_ACCEPT_ENCODING,
        b"grpc-timeout" => GRPC_TIMEOUT,
        b"x-forwarded-for" => X_FORWARDED_FOR,
        b"x-forwarded-proto" => X_FORWARDED_PROTO,
        b"x-forwarded-host" => X_FORWARDED_HOST,
        b"x-real-ip" => X_REAL_IP,
        b"x-request-id" => X_REQUEST_ID,
        _ => return None,
    })
}

/// Token characters (RFC 9110 5.6.2) other than uppercase letters.
static TOKEN_LOWER: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// A decoded field value: where it lives decides what keeping it costs.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    /// In the static table.
    Static(&'static [u8]),
    /// In a dynamic table entry (`.1`, a slice of `.0`): kept by sharing it.
    Shared(&'a Bytes, &'a [u8]),
    /// In the header block or the decoder's scratch buffer: kept by a copy.
    Scratch(&'a [u8]),
    /// Sent "never indexed" (RFC 7541 6.2.3), in the header block or the
    /// decoder's scratch buffer: kept by a copy, and marked sensitive so that
    /// it is sent on the same way (an intermediary must).
    Sensitive(&'a [u8]),
    /// In the decoder's memo of short literal values (`.0`), and as a
    /// `HeaderValue` checked once when it was kept (`.1`, the same bytes):
    /// kept by sharing it.
    Memo(&'a Bytes, &'a HeaderValue),
}

impl<'a> Value<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Value::Static(v) => v,
            Value::Shared(_, v) | Value::Scratch(v) | Value::Sensitive(v) => v,
            Value::Memo(b, _) => b,
        }
    }

    /// The value as `Bytes`; allocates only for a value not in a table.
    pub fn to_bytes(&self) -> Bytes {
        match *self {
            Value::Static(v) => Bytes::from_static(v),
            Value::Shared(b, v) => b.slice_ref(v),
            Value::Scratch(v) | Value::Sensitive(v) => Bytes::copy_from_slice(v),
            Value::Memo(b, _) => b.clone(),
        }
    }
}

impl Entry {
    fn name(&self) -> Name<'_> {
        Name {
            bytes: &self.bytes[..self.name_len],
            header: self.header.as_ref(),
        }
    }
    fn value(&self) -> &[u8] {
        &self.bytes[self.name_len..]
    }
    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// A decoder's dynamic table: the newest entry first (index 62).
struct Table {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
}

impl Table {
    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => break,
            }
        }
    }

    /// Adds an entry; one larger than the table empties it and is not kept
    /// (RFC 7541 4.4). Returns whether it was kept.
    fn insert(&mut self, e: Entry) -> bool {
        let size = e.size();
        if size > self.max {
            self.entries.clear();
            self.size = 0;
            return false;
        }
        self.evict_to(self.max - size);
        self.size += size;
        self.entries.push_front(e);
        true
    }

    /// The name and value at `index` (1-based over both tables).
    fn get(&self, index: usize) -> Result<(Name<'_>, Value<'_>), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                let name = Name {
                    bytes: n.as_bytes(),
                    header: STATIC_HEADERS[index - 1].as_ref(),
                };
                Ok((name, Value::Static(v.as_bytes())))
            }
            _ => self
                .entries
                .get(index - 62)
                .map(|e| (e.name(), Value::Shared(&e.bytes, e.value())))
                .ok_or(HpackError::BadIndex(index)),
        }
    }
}

/// The longest literal value `Memo` keeps.
const MEMO_MAX: usize = 48;
/// How many it keeps (one bit each in `Memo::used`).
const MEMO_SLOTS: usize = 8;
const _: () = assert!(MEMO_SLOTS <= u8::BITS as usize);

/// A short value in an allocation of its own that `Bytes` shares by a count.
struct Short {
    len: u8,
    buf: [u8; MEMO_MAX],
}

impl AsRef<[u8]> for Short {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// Short literal values sent "without indexing" that came lately, kept so a
/// field repeating one shares it (a count) instead of copying it into an
/// allocation of its own. A peer that never indexes its answers' fields, as
/// hyper's and tonic's HTTP/2 servers (the h2 crate) send `content-type`,
/// `content-length` and `grpc-status`, repeats the same few values on every
/// stream. At most `MEMO_SLOTS` values of up to `MEMO_MAX` bytes, replaced
/// by a clock (a value used since the hand last passed stays): about 900
/// bytes at most a connection direction. Values sent "never indexed" (RFC
/// 7541 6.2.3, sensitive ones) are not kept.
#[derive(Default)]
struct Memo {
    slots: Vec<(Bytes, HeaderValue)>,
    /// A bit a slot: used since the hand last passed it.
    used: u8,
    hand: usize,
}

impl Memo {
    /// The kept value equal to `v`, kept now if none is; `None` for bytes
    /// no `HeaderValue` may hold (a control byte: the message is malformed).
    fn get(&mut self, v: &[u8]) -> Option<&(Bytes, HeaderValue)> {
        debug_assert!(v.len() <= MEMO_MAX);
        if let Some(i) = self.slots.iter().position(|m| m.0.as_ref() == v) {
            self.used |= 1 << i;
            return Some(&self.slots[i]);
        }
        let mut short = Short {
            len: v.len() as u8,
            buf: [0; MEMO_MAX],
        };
        short.buf[..v.len()].copy_from_slice(v);
        let b = Bytes::from_owner(short);
        let b = (b.clone(), HeaderValue::from_maybe_shared(b).ok()?);
        let i = if self.slots.len() < MEMO_SLOTS {
            self.slots.push(b);
            self.slots.len() - 1
        } else {
            // (at most one turn: the bits passed are cleared)
            while self.used & (1 << self.hand) != 0 {
                self.used &= !(1 << self.hand);
                self.hand = (self.hand + 1) % MEMO_SLOTS;
            }
            let i = self.hand;
            self.hand = (self.hand + 1) % MEMO_SLOTS;
            self.slots[i] = b;
            i
        };
        Some(&self.slots[i])
    }
}

/// Decodes the header blocks of one direction of one connection (the table
/// lives from block to block).
pub struct Decoder {
    table: Table,
    memo: Memo,
    /// The largest table the peer may ask for: this side's
    /// `SETTINGS_HEADER_TABLE_SIZE`.
    limit: usize,
    /// Huffman-decoded names and values.
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Decoder {
    /// A decoder whose peer may use a dynamic table of up to `limit` bytes
    /// (4,096 unless this side's SETTINGS said otherwise).
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: Table {
                entries: VecDeque::new(),
                size: 0,
                max: limit,
            },
            limit,
            memo: Memo::default(),
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Lets go of the scratch room Huffman-coded strings took (an idle
    /// connection's); the table and the memo stay.
    pub fn shrink(&mut self) {
        self.name_buf = Vec::new();
        self.value_buf = Vec::new();
    }

    /// The bytes the dynamic table holds now, as RFC 7541 4.1 counts them.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decodes one whole header block (HEADERS and its CONTINUATIONs, joined),
    /// calling `field(name, value)` for each field in order. Names are as the
    /// peer sent them: checking them is the caller's work. The whole block is
    /// always decoded, so the table stays in step with the peer's; an error
    /// leaves it unusable (the connection must end).
    pub fn decode(
        &mut self,
        mut src: &[u8],
        mut field: impl FnMut(Name<'_>, Value<'_>),
    ) -> Result<(), HpackError> {
        let mut first = true;
        while let Some(&b) = src.first() {
            if b & 0x80 != 0 {
                // 6.1: an indexed field
                let index = integer(&mut src, 7)?;
                let (n, v) = self.table.get(index)?;
                field(n, v);
            } else if b & 0xe0 == 0x20 {
                // 6.3: a dynamic table size update, only before the first field
                if !first {
                    return Err(HpackError::LateSizeUpdate);
                }
                let size = integer(&mut src, 5)?;
                if size > self.limit {
                    return Err(HpackError::SizeUpdateOverLimit(size, self.limit));
                }
                self.table.max = size;
                self.table.evict_to(size);
                continue;
            } else {
                // 6.2: a literal, added to the table (01), or not (0000, 0001)
                let indexing = b & 0x40 != 0;
                let index = integer(&mut src, if indexing { 6 } else { 4 })?;
                let never_indexed = b & 0xf0 == 0x10;
                let Decoder {
                    table,
                    memo,
                    name_buf,
                    value_buf,
                    ..
                } = self;
                let name = if index == 0 {
                    Name::bare(string(&mut src, name_buf)?)
                } else {
                    table.get(index)?.0
                };
                let value = string(&mut src, value_buf)?;
                if indexing {
                    let mut bytes = Vec::with_capacity(name.bytes.len() + value.len());
                    bytes.extend_from_slice(name.bytes);
                    bytes.extend_from_slice(value);
                    let header = match name.header {
                        Some(h) => Some(h.clone()),
                        None => header_name(name.bytes),
                    };
                    let e = Entry {
                        bytes: Bytes::from(bytes),
                        name_len: name.bytes.len(),
                        header,
                    };
                    field(e.name(), Value::Shared(&e.bytes, e.value()));
                    table.insert(e);
                } else if never_indexed {
                    field(name, Value::Sensitive(value));
                } else if value.len() > MEMO_MAX {
                    field(name, Value::Scratch(value));
                } else {
                    match memo.get(value) {
                        Some((b, v)) => field(name, Value::Memo(b, v)),
                        None => field(name, Value::Scratch(value)),
                    }
                }
            }
            first = false;
        }
        Ok(())
    }
}

/// Reads an integer with an `n`-bit prefix (RFC 7541 5.1).
fn integer(src: &mut &[u8], n: u32) -> Result<usize, HpackError> {
    let mask = (1usize << n) - 1;
    let (&b, rest) = src.split_first().ok_or(HpackError::Truncated)?;
    *src = rest;
    let mut v = b as usize & mask;
    if v < mask {
        return Ok(v);
    }
    let mut shift = 0u32;
    loop {
        let (&b, rest) = src.split_first().ok_or(HpackError::Truncated)?;
        *src = rest;
        // 28 bits of continuation are more than any length or index here
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        v += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// Reads a string literal (RFC 7541 5.2): borrowed from the block, or Huffman-
/// decoded into `buf`.
fn string<'o, 's: 'o, 'b: 'o>(
    src: &mut &'s [u8],
    buf: &'b mut Vec<u8>,
) -> Result<&'o [u8], HpackError> {
    let huffman = src.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(src, 7)?;
    if len > MAX_STRING {
        return Err(HpackError::StringTooLong(len));
    }
    if len > src.len() {
        return Err(HpackError::Truncated);
    }
    let (s, rest) = src.split_at(len);
    *src = rest;
    if !huffman {
        return Ok(s);
    }
    buf.clear();
    huffman_decode(s, buf)?;
    Ok(buf)
}

/// Appends an integer with an `n`-bit prefix; `first` holds the bits of the
/// first byte above the prefix.
#[inline]
pub fn encode_integer(out: &mut Vec<u8>, first: u8, n: u32, v: usize) {
    let mask = (1usize << n) - 1;
    if v < mask {
        // (nearly every length, and an index under the prefix's: one
        // octet, inlined)
        out.push(first | v as u8);
    } else {
        encode_integer_long(out, first | mask as u8, v - mask);
    }
}

/// An integer past its prefix: the prefix's octet (all ones), then `v` in
/// 7-bit groups.
#[inline(never)]
fn encode_integer_long(out: &mut Vec<u8>, first: u8, mut v: usize) {
    out.push(first);
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a string literal in plain octets. (Huffman coding would save about
/// a fifth of a head's octets for more instructions than the rest of the
/// encoding; HAProxy does not use it either.)
#[inline]
pub fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Appends `:status` (a static-table reference for the seven codes it has).
pub fn encode_status(out: &mut Vec<u8>, status: u16) {
    let index = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if index != 0 {
        out.push(0x80 | index);
        return;
    }
    // literal without indexing, name :status (8); three digits
    out.push(0x08);
    out.push(3);
    let s = status.min(999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

/// Appends a field as a literal without indexing (RFC 7541 6.2.2), its name a
/// static-table reference when the table has it. `name` must be lowercase.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    encode_field_as(out, false, name, value);
}

/// The largest dynamic table an `EncoderTable` keeps, whatever the peer
/// allows (RFC 7541's initial size: what every decoder holds to begin with).
pub const ENCODER_TABLE_MAX: usize = 4096;

/// An encoder's dynamic table (RFC 7541 2.3.2, 4): a mirror of what the
/// peer's decoder holds of this side's header blocks, so that a field sent
/// before goes as one index. A gRPC server behind rampart (hyper and the h2
/// crate, under callgrind) spent 34% of its instructions in its HPACK
/// decoder when each call's fields came as literals (the `:path`,
/// `:authority`, `user-agent`, `content-type`, `te` and `X-Forwarded-*` alike
/// in every call); with the table it spends 20% fewer a call in all
/// (bench/grpc_server_cost.sh).
///
/// Entries are only ever evicted from the oldest end, so the entry added
/// `n`th of all is at dynamic index `62 + (added - 1 - n)`.
#[derive(Debug)]
pub struct EncoderTable {
    /// Each field's name and value, newest first, with its hash and its
    /// place in the order of additions.
    entries: VecDeque<Added>,
    /// A field's hash to the place of its addition (the last one added with
    /// that hash); a hit is checked against the entry's bytes, so a hash
    /// two fields share only costs a literal. Fields are what clients
    /// sent, but the table holds at most 128 entries.
    by_hash: HashMap<u64, u64, BuildPremixed>,
    added: u64,
    size: usize,
    max: usize,
    /// The smallest and the last size the peer's settings allowed since the
    /// last block: the next block signals them (RFC 7541 4.2, 6.3).
    update: Option<(usize, usize)>,
}

#[derive(Debug)]
struct Added {
    n: u64,
    hash: u64,
    name_len: usize,
    /// The name, then the value.
    bytes: Box<[u8]>,
}

impl Added {
    fn is(&self, name: &[u8], value: &[u8]) -> bool {
        self.name_len == name.len()
            && self.bytes.len() == name.len() + value.len()
            && self.bytes[..name.len()] == *name
            && self.bytes[name.len()..] == *value
    }

    /// RFC 7541 4.1.
    fn size(&self) -> usize {
        self.bytes.len() + 32
    }
}

impl Default for EncoderTable {
    fn default() -> EncoderTable {
        EncoderTable {
            entries: VecDeque::new(),
            by_hash: HashMap::default(),
            added: 0,
            size: 0,
            max: ENCODER_TABLE_MAX,
            update: None,
        }
    }
}

impl EncoderTable {
    /// The peer's `SETTINGS_HEADER_TABLE_SIZE`: the table keeps under it
    /// (and `ENCODER_TABLE_MAX`) from now on, and the next block says so.
    pub fn set_limit(&mut self, peer: u32) {
        let max = usize::try_from(peer)
            .unwrap_or(usize::MAX)
            .min(ENCODER_TABLE_MAX);
        self.max = max;
        self.evict_to(max);
        self.update = Some(match self.update {
            Some((smallest, _)) => (smallest.min(max), max),
            None => (max, max),
        });
    }

    /// Starts a header block: the size updates the peer's settings call
    /// for, if any (every block of the connection starts here, trailers'
    /// too).
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        if let Some((smallest, last)) = self.update.take() {
            if smallest < last {
                encode_integer(out, 0x20, 5, smallest);
            }
            encode_integer(out, 0x20, 5, last);
        }
    }

    /// Appends a field (`name` lowercase, `static_index` its name's place in
    /// the static table if it has one): an index when the table holds it;
    /// else a literal, added to the table when `index` and it takes at
    /// most a quarter of the table (a large one would push the others out).
    pub fn field(
        &mut self,
        out: &mut Vec<u8>,
        name: &[u8],
        static_index: Option<usize>,
        value: &[u8],
        index: bool,
    ) {
        self.field_with(out, name, value, index, |_| static_index);
    }

    /// `field`, with the name's static index found only for a literal.
    #[inline]
    fn field_with(
        &mut self,
        out: &mut Vec<u8>,
        name: &[u8],
        value: &[u8],
        index: bool,
        static_index: impl FnOnce(&[u8]) -> Option<usize>,
    ) {
        let size = name.len() + value.len() + 32;
        // (a field not to be added was never added: a literal, whatever
        // the table holds)
        if !index || size > self.max / 4 {
            return literal(out, 0, 4, name, static_index(name), value);
        }
        let hash = field_hash(name, value);
        if let Some(&n) = self.by_hash.get(&hash) {
            // (entries leave from the oldest end only: the nth added is
            // this far from the newest)
            let at = usize::try_from(self.added - 1 - n).unwrap_or(usize::MAX);
            if self.entries.get(at).is_some_and(|e| e.is(name, value)) {
                return encode_integer(out, 0x80, 7, 62 + at);
            }
        }
        literal(out, 0x40, 6, name, static_index(name), value);
        self.evict_to(self.max - size);
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        self.by_hash.insert(hash, self.added);
        self.entries.push_front(Added {
            n: self.added,
            hash,
            name_len: name.len(),
            bytes: bytes.into_boxed_slice(),
        });
        self.added += 1;
        self.size += size;
    }

    /// A map's field, as `field` writes it. "Never indexed" when its value
    /// is sensitive, and for credentials whoever the client (nghttp2's
    /// choice for `authorization` and a cookie under 20 bytes, a guessable
    /// one; RFC 7541 7.1.3): one connection carries many clients' requests,
    /// and what one client sent is no other's to be matched against. Not
    /// added to the table: any other cookie (a client's own, which would
    /// push the fields all clients share out of the table), and values
    /// likely to change from one request to the next (nghttp2's list,
    /// gRPC's deadline, the usual trace and request ids).
    pub fn header(&mut self, out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
        let n = name.as_str().as_bytes();
        let secret = matches!(n, b"authorization" | b"proxy-authorization")
            || (n == b"cookie" && value.len() < 20);
        if value.is_sensitive() || secret {
            return encode_field_as(out, true, n, value.as_bytes());
        }
        let changing = matches!(
            n,
            b"content-length"
                | b"grpc-timeout"
                | b"age"
                | b"date"
                | b"etag"
                | b"if-modified-since"
                | b"if-none-match"
                | b"last-modified"
                | b"location"
                | b"set-cookie"
                | b"link"
                | b"x-request-id"
                | b"traceparent"
                | b"tracestate"
                | b"x-b3-traceid"
                | b"x-b3-spanid"
                | b"x-b3-parentspanid"
                | b"b3"
                | b"grpc-trace-bin"
                | b"x-cloud-trace-context"
                | b"uber-trace-id"
                | b"baggage"
                | b"sentry-trace"
                | b"x-datadog-trace-id"
                | b"x-datadog-parent-id"
                | b"x-correlation-id"
                | b"x-amzn-trace-id"
                | b"cookie"
        );
        self.field_with(out, n, value.as_bytes(), !changing, static_name);
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.size();
            if self.by_hash.get(&e.hash) == Some(&e.n) {
                self.by_hash.remove(&e.hash);
            }
        }
    }
}

/// What `EncoderTable` keys a field by.
fn field_hash(name: &[u8], value: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = BuildByteHasher::default().build_hasher();
    h.write_usize(name.len());
    h.write(name);
    h.write(value);
    h.finish()
}

/// A literal field: `first` with the name's static index in a `prefix`-bit
/// integer, or 0 and the name; then the value.
#[inline]
fn literal(
    out: &mut Vec<u8>,
    first: u8,
    prefix: u32,
    name: &[u8],
    static_index: Option<usize>,
    value: &[u8],
) {
    out.reserve(name.len() + value.len() + 12);
    match static_index {
        Some(i) => encode_integer(out, first, prefix, i),
        None => {
            out.push(first);
            encode_string(out, name);
        }
    }
    encode_string(out, value);
}

/// A map's field as `encode_field_as` writes it, "never indexed" when its
/// value is sensitive.
pub fn encode_header(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    let name = name.as_str().as_bytes();
    encode_field_as(out, value.is_sensitive(), name, value.as_bytes());
}

/// `encode_field`, or the same literal "never indexed" (RFC 7541 6.2.3) for a
/// value that came that way (`HeaderValue::is_sensitive`): an intermediary
/// must send it on as it came, so no hop after it indexes it either.
#[inline]
pub fn encode_field_as(out: &mut Vec<u8>, never_indexed: bool, name: &[u8], value: &[u8]) {
    let first = if never_indexed { 0x10 } else { 0 };
    // room for the lot at once: the two lengths' octets and the index's
    out.reserve(name.len() + value.len() + 12);
    match static_name(name) {
        Some(i) => encode_integer(out, first, 4, i),
        None => {
            out.push(first);
            encode_string(out, name);
        }
    }
    encode_string(out, value);
}

/// A field whose name may have capitals (an HTTP/1.1 server's): HTTP/2
/// names are lowercase (RFC 9113 8.2.1).
pub fn encode_field_lowercase(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if !name.iter().any(u8::is_ascii_uppercase) {
        return encode_field(out, name, value);
    }
    let mut short = [0u8; 64];
    let mut long = Vec::new();
    let lower: &mut [u8] = match short.get_mut(..name.len()) {
        Some(s) => s,
        None => {
            long.resize(name.len(), 0);
            &mut long
        }
    };
    for (l, c) in lower.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    encode_field(out, lower, value);
}

/// The static table's index of a regular field's name (one entry a name from
/// 15 to 61; a `match` on the bytes compiles to a switch on the length and a
/// few comparisons).
fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// Huffman-codes `s` onto `out`, padded with 1 bits (RFC 7541 5.2): what a
/// peer's encoder does, for the decoder's tests.
#[cfg(test)]
fn huffman_encode(s: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in s {
        let len = LENGTHS[b as usize] as u32;
        acc = (acc << len) | CODES[b as usize] as u64;
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xffu8 >> bits));
    }
}

/// The symbol for end-of-string: 30 one bits. Never valid inside a string.
const EOS: u16 = 256;

/// Canonical decoding: for each code length, its first code and where its
/// symbols start in `SYMBOLS` (symbols ordered by code).
struct Canon {
    first: [u32; 31],
    count: [u16; 31],
    base: [u16; 31],
    symbols: [u16; 257],
    /// For the first 10 bits of input: (length << 9 | symbol) of a code no
    /// longer than 10 bits that they start with, or 0.
    fast: [u16; 1 << FAST_BITS],
}

const FAST_BITS: u32 = 10;

const fn length_of(sym: usize) -> u32 {
    if sym == 256 {
        30
    } else {
        LENGTHS[sym] as u32
    }
}

const fn code_of(sym: usize) -> u32 {
    if sym == 256 {
        0x3fff_ffff
    } else {
        CODES[sym]
    }
}

const fn canon() -> Canon {
    let mut c = Canon {
        first: [0; 31],
        count: [0; 31],
        base: [0; 31],
        symbols: [0; 257],
        fast: [0; 1 << FAST_BITS],
    };
    // symbols in order of (length, symbol): the code's order
    let mut n = 0;
    let mut len = 1;
    while len <= 30 {
        c.base[len] = n as u16;
        let mut sym = 0;
        while sym < 257 {
            if length_of(sym) == len as u32 {
                if c.count[len] == 0 {
                    c.first[len] = code_of(sym);
                }
                c.count[len] += 1;
                c.symbols[n] = sym as u16;
                n += 1;
                if len as u32 <= FAST_BITS {
                    let rem = FAST_BITS - len as u32;
                    let start = (code_of(sym) << rem) as usize;
                    let mut i = 0;
                    while i < (1 << rem) {
                        c.fast[start + i] = ((len as u16) << 9) | sym as u16;
                        i += 1;
                    }
                }
            }
            sym += 1;
        }
        len += 1;
    }
    c
}

static CANON: Canon = canon();

/// The symbol the 32 bits of `top` (left-aligned input) start with, and its
/// code's length. Every 30-bit pattern starts with some code (EOS included).
#[inline]
fn symbol(top: u32) -> (u16, u32) {
    let f = CANON.fast[(top >> (32 - FAST_BITS)) as usize];
    if f != 0 {
        return (f & 0x1ff, (f >> 9) as u32);
    }
    let mut len = FAST_BITS as usize + 1;
    while len <= 30 {
        let code = top >> (32 - len);
        let off = code.wrapping_sub(CANON.first[len]);
        if off < CANON.count[len] as u32 {
            return (
                CANON.symbols[CANON.base[len] as usize + off as usize],
                len as u32,
            );
        }
        len += 1;
    }
    (EOS, 30)
}

/// Decodes a Huffman-coded string onto `out`.
pub fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    out.reserve(src.len() * 8 / 5);
    // `acc` holds `bits` unread bits, left-aligned; below them, zeros
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut i = 0;
    loop {
        while bits <= 56 && i < src.len() {
            acc |= (src[i] as u64) << (56 - bits);
            bits += 8;
            i += 1;
        }
        if bits == 0 {
            return Ok(());
        }
        let (sym, len) = symbol((acc >> 32) as u32);
        if len > bits {
            // the end: what is left must be padding, under 8 bits of ones
            let ones = (1u64 << bits) - 1;
            if bits < 8 && acc >> (64 - bits) == ones {
                return Ok(());
            }
            return Err(HpackError::BadHuffman);
        }
        if sym == EOS {
            return Err(HpackError::BadHuffman);
        }
        out.push(sym as u8);
        acc <<= len;
        bits -= len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut v = Vec::new();
        d.decode(block, |n, val| {
            v.push((
                String::from_utf8(n.bytes.to_vec()).unwrap(),
                String::from_utf8(val.to_bytes().to_vec()).unwrap(),
            ))
        })?;
        Ok(v)
    }

    /// The encoder's table against this side's decoder, as a peer: random
    /// blocks of fields from a small vocabulary (names with and without a
    /// static index, values short and over a quarter of the table, some not
    /// to be added), and the peer's setting changed between blocks, more
    /// than once between two blocks now and then (RFC 7541 4.2: the
    /// smallest and then the last are signalled). Every block decodes to
    /// its fields; the two tables hold the same size after each; repeated
    /// fields go as indexes.
    #[test]
    fn the_encoder_table_mirrors_the_peers_decoder() {
        let names: [(&str, Option<usize>); 6] = [
            (":authority", Some(1)),
            (":path", Some(4)),
            ("user-agent", Some(58)),
            ("content-type", Some(31)),
            ("x-forwarded-for", None),
            ("x-long", None),
        ];
        let long = "v".repeat(1500);
        let values = [
            "a",
            "127.0.0.1",
            "application/grpc",
            "/bench.Echo/Call",
            long.as_str(),
        ];
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut rand = |n: usize| rng.usize(..n);
        let limits = [0u32, 40, 100, 256, 4096, 65_536];
        let (mut indexed, mut updates) = (0, 0);
        for case in 0..200 {
            let mut enc = EncoderTable::default();
            let mut dec = Decoder::new(4096);
            for block_no in 0..60 {
                if rand(8) == 0 {
                    // the peer's settings change, once or twice before
                    // the next block
                    for _ in 0..1 + rand(2) {
                        let l = limits[rand(limits.len())];
                        dec.limit = l as usize;
                        enc.set_limit(l);
                    }
                }
                let mut want = Vec::new();
                let mut block = Vec::new();
                enc.begin(&mut block);
                updates += usize::from(block.first().is_some_and(|b| b & 0xe0 == 0x20));
                for _ in 0..1 + rand(8) {
                    let (name, si) = names[rand(names.len())];
                    let value = values[rand(values.len())];
                    let before = block.len();
                    enc.field(
                        &mut block,
                        name.as_bytes(),
                        si,
                        value.as_bytes(),
                        rand(5) > 0,
                    );
                    indexed += usize::from(block.len() - before == 1 && block[before] & 0x80 != 0);
                    want.push((name.to_string(), value.to_string()));
                }
                let got = decode(&mut dec, &block)
                    .unwrap_or_else(|e| panic!("case {case} block {block_no}: {e}"));
                assert_eq!(got, want, "case {case} block {block_no}");
                assert_eq!(dec.table_size(), enc.size, "case {case} block {block_no}");
                assert!(enc.size <= enc.max);
                // (the map lets go of what the table evicts)
                assert!(enc.by_hash.len() <= enc.entries.len());
            }
        }
        assert!(indexed > 5_000, "only {indexed} fields went as an index");
        assert!(
            updates > 500,
            "only {updates} blocks began with a size update"
        );
    }

    /// A field whose hash is another's in the table goes as a literal (and
    /// is added), not as the other's index.
    #[test]
    fn a_field_that_shares_a_hash_is_not_taken_for_another() {
        let mut enc = EncoderTable::default();
        let mut dec = Decoder::new(4096);
        let mut block = Vec::new();
        enc.field(&mut block, b"x-a", None, b"1", true);
        // (as if "x-b: 2" hashed as "x-a: 1" did)
        enc.by_hash.insert(field_hash(b"x-b", b"2"), 0);
        enc.field(&mut block, b"x-b", None, b"2", true);
        enc.field(&mut block, b"x-b", None, b"2", true);
        assert_eq!(
            decode(&mut dec, &block).unwrap(),
            fields(&[("x-a", "1"), ("x-b", "2"), ("x-b", "2")])
        );
        assert_eq!(enc.entries.len(), 2);
        assert_eq!(block.last(), Some(&(0x80 | 62)));
    }

    /// What a map's fields become: a sensitive value and credentials never
    /// indexed (and never added), cookies and values likely to change not
    /// added, the rest added and then sent as an index.
    #[test]
    fn a_maps_fields_are_added_unless_sensitive_or_changing() {
        let mut enc = EncoderTable::default();
        let mut auth = HeaderValue::from_static("Bearer x");
        auth.set_sensitive(true);
        let map = [
            (HeaderName::from_static("authorization"), auth),
            (
                HeaderName::from_static("proxy-authorization"),
                HeaderValue::from_static("Basic eDp5"),
            ),
            (
                HeaderName::from_static("cookie"),
                HeaderValue::from_static("id=7"),
            ),
            (
                HeaderName::from_static("cookie"),
                HeaderValue::from_static("session=0123456789abcdef0123"),
            ),
            (
                HeaderName::from_static("grpc-timeout"),
                HeaderValue::from_static("99m"),
            ),
            (
                HeaderName::from_static("x-forwarded-proto"),
                HeaderValue::from_static("http"),
            ),
        ];
        // each field's representation (RFC 7541 6), the first time and
        // the second: never indexed, without indexing, added, an index
        let kind = |b: u8| match b {
            b if b & 0x80 != 0 => "index",
            b if b & 0xc0 == 0x40 => "added",
            b if b & 0xf0 == 0x10 => "never",
            _ => "literal",
        };
        let mut dec = Decoder::new(4096);
        let mut seen = Vec::new();
        for round in 0..2 {
            for (n, v) in &map {
                let mut block = Vec::new();
                enc.header(&mut block, n, v);
                let got = decode(&mut dec, &block).unwrap();
                assert_eq!(got, fields(&[(n.as_str(), v.to_str().unwrap())]), "{n}");
                seen.push((round, n.as_str(), kind(block[0])));
            }
        }
        let want: Vec<(i32, &str, &str)> = [0, 1]
            .iter()
            .flat_map(|&r| {
                [
                    (r, "authorization", "never"),
                    (r, "proxy-authorization", "never"),
                    (r, "cookie", "never"),
                    (r, "cookie", "literal"),
                    (r, "grpc-timeout", "literal"),
                    (
                        r,
                        "x-forwarded-proto",
                        if r == 0 { "added" } else { "index" },
                    ),
                ]
            })
            .collect();
        assert_eq!(seen, want);
        assert_eq!(enc.entries.len(), 1);
    }

    fn fields(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_code_is_canonical() {
        // codes of one length are consecutive, in symbol order, and each
        // length's first code follows the last of the shorter ones
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (length_of(s), s));
        for w in order.windows(2) {
            let (a, b) = (w[0], w[1]);
            let next = (code_of(a) + 1) << (length_of(b) - length_of(a));
            assert_eq!(code_of(b), next, "symbols {a} and {b}");
        }
    }

    #[test]
    fn rfc7541_c2_literals() {
        // C.2.1: literal with indexing
        let mut d = Decoder::new(4096);
        let b = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode(&mut d, &b).unwrap(),
            fields(&[("custom-key", "custom-header")])
        );
        assert_eq!(d.table_size(), 55);
        // C.2.2: without indexing
        let mut d = Decoder::new(4096);
        let b = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode(&mut d, &b).unwrap(),
            fields(&[(":path", "/sample/path")])
        );
        assert_eq!(d.table_size(), 0);
        // C.2.3: never indexed
        let b = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(
            decode(&mut d, &b).unwrap(),
            fields(&[("password", "secret")])
        );
        assert_eq!(d.table_size(), 0);
        // C.2.4: indexed
        assert_eq!(
            decode(&mut d, &[0x82]).unwrap(),
            fields(&[(":method", "GET")])
        );
    }

    /// RFC 7541 C.3 (plain) and C.4 (Huffman): three requests on one connection.
    fn three_requests(blocks: [&str; 3]) {
        let mut d = Decoder::new(4096);
        let r1 = decode(&mut d, &hex(blocks[0])).unwrap();
        assert_eq!(
            r1,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 57);
        let r2 = decode(&mut d, &hex(blocks[1])).unwrap();
        assert_eq!(
            r2,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(d.table_size(), 110);
        let r3 = decode(&mut d, &hex(blocks[2])).unwrap();
        assert_eq!(
            r3,
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.table_size(), 164);
    }

    #[test]
    fn rfc7541_c3_requests() {
        three_requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn rfc7541_c4_requests_huffman() {
        three_requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    /// RFC 7541 C.5 (plain) and C.6 (Huffman): three responses into a
    /// 256-byte table, with evictions.
    fn three_responses(blocks: [&str; 3]) {
        let mut d = Decoder::new(256);
        let r1 = decode(&mut d, &hex(blocks[0])).unwrap();
        assert_eq!(
            r1,
            fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 222);
        let r2 = decode(&mut d, &hex(blocks[1])).unwrap();
        assert_eq!(r2[0], (":status".to_string(), "307".to_string()));
        assert_eq!(r2.len(), 4);
        assert_eq!(d.table_size(), 222);
        let r3 = decode(&mut d, &hex(blocks[2])).unwrap();
        assert_eq!(
            r3,
            fields(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                (
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                )
            ])
        );
        assert_eq!(d.table_size(), 215);
    }

    #[test]
    fn rfc7541_c5_responses() {
        three_responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
             3d31",
        ]);
    }

    #[test]
    fn rfc7541_c6_responses_huffman() {
        three_responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    #[test]
    fn huffman_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        for s in [&all[..], b"", b"0", b"www.example.com", b"\xff\xfe\x00"] {
            let mut coded = Vec::new();
            huffman_encode(s, &mut coded);
            let mut back = Vec::new();
            huffman_decode(&coded, &mut back).unwrap();
            assert_eq!(back, s);
        }
        // each length of a run of one symbol, so each padding length is seen
        for b in [b'0', b'a', b'\x00', b'\xff'] {
            for n in 0..20 {
                let s = vec![b; n];
                let mut coded = Vec::new();
                huffman_encode(&s, &mut coded);
                let mut back = Vec::new();
                huffman_decode(&coded, &mut back).unwrap();
                assert_eq!(back, s);
            }
        }
    }

    #[test]
    fn bad_huffman_is_refused() {
        let mut out = Vec::new();
        // EOS (30 one bits) then padding
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HpackError::BadHuffman)
        );
        // 8 bits of padding
        assert_eq!(
            huffman_decode(&[0xff], &mut out),
            Err(HpackError::BadHuffman)
        );
        // padding that is not all ones: '0' (00000) then 000
        assert_eq!(
            huffman_decode(&[0x00], &mut out),
            Err(HpackError::BadHuffman)
        );
        // '0' then 111: fine
        out.clear();
        huffman_decode(&[0x07], &mut out).unwrap();
        assert_eq!(out, b"0");
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0x80]), Err(HpackError::BadIndex(0)));
        assert_eq!(decode(&mut d, &[0xbe]), Err(HpackError::BadIndex(62)));
        // a literal whose value runs past the block
        assert_eq!(
            decode(&mut d, &[0x04, 0x05, b'/', b'a']),
            Err(HpackError::Truncated)
        );
        // an integer that never ends, and one too large
        assert_eq!(decode(&mut d, &[0xff, 0x80]), Err(HpackError::Truncated));
        assert_eq!(
            decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::IntegerOverflow)
        );
        // size updates: over the limit, after a field
        assert_eq!(
            decode(&mut d, &[0x3f, 0xe2, 0x1f]),
            Err(HpackError::SizeUpdateOverLimit(4097, 4096))
        );
        assert_eq!(
            decode(&mut d, &[0x82, 0x20]),
            Err(HpackError::LateSizeUpdate)
        );
        // an update to 0 first is fine, and empties the table
        let mut d = Decoder::new(4096);
        decode(
            &mut d,
            &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
        )
        .unwrap();
        assert_eq!(d.table_size(), 55);
        decode(&mut d, &[0x20, 0x82]).unwrap();
        assert_eq!(d.table_size(), 0);
        assert_eq!(decode(&mut d, &[0xbe]), Err(HpackError::BadIndex(62)));
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(60);
        // custom-key: custom-header is 55 bytes: kept
        let b = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        decode(&mut d, &b).unwrap();
        assert_eq!(d.table_size(), 55);
        // a 70-byte entry: the field is still passed on; the table is empty
        let mut b = vec![0x40, 0x05];
        b.extend_from_slice(b"abcde");
        b.push(33);
        b.extend_from_slice(&[b'x'; 33]);
        assert_eq!(decode(&mut d, &b).unwrap().len(), 1);
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn what_the_encoder_writes_decodes_to_the_same_fields() {
        let mut out = Vec::new();
        for s in [200, 204, 206, 304, 400, 404, 500, 302, 503, 101] {
            encode_status(&mut out, s);
        }
        let fs = [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", "6"),
            ("x-custom", "a value with \u{7f} and spaces"),
            ("set-cookie", "id=1; HttpOnly"),
            ("server", ""),
            ("x-long", &"y".repeat(300)),
        ];
        for (n, v) in fs {
            encode_field(&mut out, n.as_bytes(), v.as_bytes());
        }
        let mut d = Decoder::new(4096);
        let got = decode(&mut d, &out).unwrap();
        let statuses: Vec<String> = got[..10].iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(
            statuses,
            ["200", "204", "206", "304", "400", "404", "500", "302", "503", "101"]
        );
        assert!(got[..10].iter().all(|(n, _)| n == ":status"));
        assert_eq!(got[10..], fields(&fs));
        // nothing was added to the decoder's table
        assert_eq!(d.table_size(), 0);
        // static names are referenced, not spelled out
        let mut one = Vec::new();
        encode_field(&mut one, b"content-length", b"6");
        assert_eq!(one, [0x0f, 0x0d, 0x01, b'6']);
    }

    #[test]
    fn names_with_capitals_are_encoded_lowercase_short_and_long() {
        let long = format!("X-{}", "Ab".repeat(40));
        let mut out = Vec::new();
        for n in ["Content-Type", "x-plain", long.as_str()] {
            encode_field_lowercase(&mut out, n.as_bytes(), b"v");
        }
        let got = decode(&mut Decoder::new(4096), &out).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "x-plain", long.to_lowercase().as_str()]
        );
        // the static name is found once lowercased
        let mut one = Vec::new();
        encode_field_lowercase(&mut one, b"Content-Length", b"6");
        assert_eq!(one, [0x0f, 0x0d, 0x01, b'6']);
    }

    #[test]
    fn a_known_name_is_the_name_from_bytes_would_give() {
        for n in [
            "grpc-status",
            "grpc-message",
            "grpc-encoding",
            "grpc-accept-encoding",
            "grpc-timeout",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "x-request-id",
        ] {
            let k = known(n.as_bytes()).unwrap_or_else(|| panic!("{n} not known"));
            assert_eq!(k, HeaderName::from_bytes(n.as_bytes()).unwrap());
            assert_eq!(k.as_str(), n);
            assert_eq!(header_name(n.as_bytes()), Some(k));
        }
        assert!(known(b"x-other").is_none());
        assert!(known(b"content-type").is_none());
        assert_eq!(header_name(b"x-other").unwrap().as_str(), "x-other");
        for bad in [
            &b""[..],
            b"X-Other",
            b":path",
            b"a b",
            b"a\x00",
            b"caf\xc3\xa9",
        ] {
            assert_eq!(header_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_static_name_is_its_header_name() {
        for (i, (n, _)) in STATIC.iter().enumerate() {
            let h = STATIC_HEADERS[i].as_ref();
            if n.starts_with(':') {
                assert!(h.is_none(), "{n}");
            } else {
                assert_eq!(h, HeaderName::from_bytes(n.as_bytes()).ok().as_ref(), "{n}");
                assert_eq!(h, header_name(n.as_bytes()).as_ref(), "{n}");
            }
        }
    }

    #[test]
    fn a_dynamic_entry_hands_out_the_name_it_made_once() {
        let mut d = Decoder::new(4096);
        let mut first = Vec::new();
        // literals with incremental indexing: a new name, an uppercase one,
        // a pseudo-header, and one named by the static table (content-type)
        let mut block = vec![0x40];
        encode_string(&mut block, b"x-custom");
        encode_string(&mut block, b"a");
        block.push(0x40);
        encode_string(&mut block, b"X-Up");
        encode_string(&mut block, b"b");
        block.push(0x44); // :path
        encode_string(&mut block, b"/p");
        block.push(0x40 | 31); // content-type
        encode_string(&mut block, b"text/x");
        d.decode(&block, |n, _| {
            first.push((n.bytes.to_vec(), n.header.cloned()));
        })
        .unwrap();
        let custom = HeaderName::from_static("x-custom");
        let want = vec![
            (b"x-custom".to_vec(), Some(custom.clone())),
            (b"X-Up".to_vec(), None),
            (b":path".to_vec(), None),
            (b"content-type".to_vec(), Some(http::header::CONTENT_TYPE)),
        ];
        assert_eq!(first, want);
        // the same four by index (newest first: 62 is content-type), twice:
        // each time the entry's own `HeaderName`, the same bytes in memory
        let mut at = Vec::new();
        for _ in 0..2 {
            let mut again = Vec::new();
            d.decode(&[0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62], |n, _| {
                again.push((n.bytes.to_vec(), n.header.cloned()));
                if n.bytes == b"x-custom" {
                    at.push(n.header.map(|h| h.as_str().as_ptr()));
                }
            })
            .unwrap();
            assert_eq!(again, want);
        }
        assert!(at[0].is_some() && at[0] == at[1], "{at:?}");
    }

    /// One literal field "without indexing" (name by static index), and
    /// one "never indexed".
    fn literal(index: usize, value: &[u8], never: bool) -> Vec<u8> {
        let mut b = Vec::new();
        encode_integer(&mut b, if never { 0x10 } else { 0x00 }, 4, index);
        encode_string(&mut b, value);
        b
    }

    #[test]
    fn a_short_literal_value_that_repeats_is_shared_not_copied() {
        let mut d = Decoder::new(4096);
        let mut got: Vec<(Bytes, bool)> = Vec::new();
        let long = [b'a'; MEMO_MAX + 1];
        for _ in 0..2 {
            let mut block = literal(31, b"application/grpc", false); // content-type
            block.extend(literal(28, b"7", true)); // content-length, never indexed
            block.extend(literal(28, &long, false));
            d.decode(&block, |_, v| {
                got.push((v.to_bytes(), matches!(v, Value::Memo(..))))
            })
            .unwrap();
        }
        let values: Vec<&[u8]> = got.iter().map(|(b, _)| b.as_ref()).collect();
        assert_eq!(
            values,
            [
                &b"application/grpc"[..],
                b"7",
                &long,
                b"application/grpc",
                b"7",
                &long
            ]
        );
        let shared: Vec<bool> = got.iter().map(|(_, s)| *s).collect();
        assert_eq!(shared, [true, false, false, true, false, false]);
        // the second block's value is the first's bytes, not a copy
        assert_eq!(got[0].0.as_ptr(), got[3].0.as_ptr());
        assert_ne!(got[1].0.as_ptr(), got[4].0.as_ptr());
    }

    #[test]
    fn a_never_indexed_field_comes_out_so_and_is_encoded_as_it_came() {
        let mut d = Decoder::new(4096);
        // authorization (23), by static name, and a name of its own
        let mut block = literal(23, b"Bearer t", true);
        encode_field_as(&mut block, true, b"x-token", b"t");
        let mut sensitive = Vec::new();
        d.decode(&block, |n, v| {
            sensitive.push((
                n.bytes.to_vec(),
                matches!(v, Value::Sensitive(b"Bearer t" | b"t")),
            ))
        })
        .unwrap();
        assert_eq!(
            sensitive,
            [
                (b"authorization".to_vec(), true),
                (b"x-token".to_vec(), true)
            ]
        );
        // the representation: 0001 and a 4-bit index, or 0001 0000 and the name
        assert_eq!(&block[..2], &[0x1f, 23 - 15]);
        let mut plain = Vec::new();
        encode_field_as(&mut plain, false, b"x-token", b"t");
        encode_field_as(&mut block, false, b"x-token", b"t");
        assert_eq!(plain[0], 0x00);
        assert_eq!(block[block.len() - plain.len()..], plain[..]);
    }

    #[test]
    fn the_memo_keeps_a_value_in_use_and_replaces_the_others_in_turn() {
        let mut m = Memo::default();
        let at = |m: &mut Memo, v: &[u8]| m.get(v).unwrap().0.clone();
        let first: Vec<Bytes> = (0..MEMO_SLOTS as u8)
            .map(|i| at(&mut m, &[b'v', b'0' + i]))
            .collect();
        // all found again, as they were
        for (i, b) in first.iter().enumerate() {
            assert_eq!(at(&mut m, &[b'v', b'0' + i as u8]).as_ptr(), b.as_ptr());
        }
        assert_eq!(m.slots.len(), MEMO_SLOTS);
        // v0 used again; the rest are not once new values start coming
        m.used = 0;
        assert_eq!(at(&mut m, b"v0").as_ptr(), first[0].as_ptr());
        let new: Vec<Bytes> = (1..MEMO_SLOTS as u8)
            .map(|i| at(&mut m, &[b'n', b'0' + i]))
            .collect();
        assert_eq!(
            at(&mut m, b"v0").as_ptr(),
            first[0].as_ptr(),
            "a value in use stays"
        );
        for i in 1..MEMO_SLOTS as u8 {
            assert!(
                m.slots.iter().all(|s| s.0.as_ref() != [b'v', b'0' + i]),
                "v{i} stays"
            );
        }
        // with no bit set, the hand's next slot goes: v0's
        m.used = 0;
        let _ = at(&mut m, b"n9");
        assert!(m.slots.iter().all(|s| s.0.as_ref() != b"v0"));
        assert_eq!(m.slots.len(), MEMO_SLOTS);
        // the value checked once is the same bytes
        for (b, v) in &m.slots {
            assert_eq!(b.as_ptr(), v.as_bytes().as_ptr());
        }
        // a value no HeaderValue may hold is not kept
        assert!(m.get(b"a\x01b").is_none());
        assert!(m.slots.iter().all(|s| s.0.as_ref() != b"a\x01b"));
        // what was handed out is intact after its slot was reused
        assert_eq!(first[3].as_ref(), b"v3");
        assert_eq!(new[0].as_ref(), b"n1");
    }

    #[test]
    fn every_static_name_is_found_at_its_index() {
        for (i, (n, _)) in STATIC.iter().enumerate().skip(14) {
            assert_eq!(static_name(n.as_bytes()), Some(i + 1), "{n}");
        }
        assert_eq!(static_name(b":status"), None);
        assert_eq!(static_name(b"x-custom"), None);
        assert_eq!(static_name(b"Content-Type"), None);
    }

    #[test]
    fn integers_round_trip_at_each_prefix() {
        for n in 1..=8u32 {
            for v in [0usize, 1, 30, 31, 127, 128, 255, 256, 1337, 65_535, 1 << 20] {
                let mut out = Vec::new();
                encode_integer(&mut out, 0, n, v);
                let mut s = &out[..];
                assert_eq!(integer(&mut s, n).unwrap(), v, "prefix {n}");
                assert!(s.is_empty());
            }
        }
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix
        let mut out = Vec::new();
        encode_integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }
}
