//! HPACK decoding of client header blocks (src/http2/hpack.rs): no panic on any
//! input, two blocks through one decoder (its dynamic table carried over), and
//! what decodes comes out the same after the encoder's round trip. A name a
//! table hands out as a `HeaderName` is the one `header_name` makes of its
//! bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::http2::hpack::{encode_field, header_name, Decoder, Name};

fuzz_target!(|data: &[u8]| {
    let (cut, blocks) = match data.split_first() {
        Some((b, rest)) => (*b as usize, rest),
        None => return,
    };
    let cut = if blocks.is_empty() {
        0
    } else {
        cut % (blocks.len() + 1)
    };
    let mut d = Decoder::new(4096);
    for block in [&blocks[..cut], &blocks[cut..]] {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let ok = d
            .decode(block, |n, v| {
                check(n);
                fields.push((n.bytes.to_vec(), v.bytes().to_vec()))
            })
            .is_ok();
        assert!(d.table_size() <= 4096);
        if !ok {
            return;
        }
        let mut again = Vec::new();
        for (n, v) in &fields {
            encode_field(&mut again, n, v);
        }
        let mut back = Vec::new();
        Decoder::new(4096)
            .decode(&again, |n, v| {
                back.push((n.bytes.to_vec(), v.bytes().to_vec()))
            })
            .expect("what the encoder wrote decodes");
        assert_eq!(fields, back);
    }
});

fn check(n: Name<'_>) {
    if let Some(h) = n.header {
        assert_eq!(Some(h), header_name(n.bytes).as_ref(), "{:?}", n.bytes);
    }
}
