//! A server byte stream: frames split off one by one and decoded; CommandComplete tags counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::pg::codec::{command_rows, decode_backend, split_frame, Backend};

const MAX_BODY: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some(frame)) = split_frame(buf, MAX_BODY) {
        assert!(frame.len >= 5 && frame.len <= buf.len());
        if let Ok(Backend::CommandComplete { tag }) = decode_backend(frame.tag, frame.body) {
            let _ = command_rows(tag);
        }
        buf = &buf[frame.len..];
    }
});
