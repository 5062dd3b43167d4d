//! Arbitrary bytes, decoded under every context: never a panic, and whatever decodes
//! re-encodes to exactly the input (decoding loses nothing and accepts nothing extra).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use walrelay_proto::{decode, encode, DecodeContext};

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    for (in_stream, parallel_abort) in [(false, false), (true, false), (false, true), (true, true)] {
        let ctx = DecodeContext { in_stream, parallel_abort };
        if let Ok(message) = decode(&data, ctx) {
            assert_eq!(encode(&message), data, "re-encoding {message:?}");
        }
    }
});
