//! A client byte stream: frames split off one by one and decoded, including the 'p' sub-formats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::pg::codec::{
    decode_frontend, decode_password, decode_sasl_initial, split_frame, Frontend,
};

const MAX_BODY: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some(frame)) = split_frame(buf, MAX_BODY) {
        assert!(frame.len >= 5 && frame.len <= buf.len());
        assert_eq!(frame.body.len() + 5, frame.len);
        if let Ok(Frontend::Password(body)) = decode_frontend(frame.tag, frame.body) {
            let _ = decode_password(body);
            let _ = decode_sasl_initial(body);
        }
        buf = &buf[frame.len..];
    }
});
