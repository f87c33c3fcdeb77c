//! A client byte stream: frames split off one by one and decoded, including the 'p' sub-formats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::pg::codec::{
    decode_bind_names, decode_frontend, decode_password, decode_sasl_initial, split_frame,
    Frontend,
};

const MAX_BODY: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some(frame)) = split_frame(buf, MAX_BODY) {
        assert!(frame.len >= 5 && frame.len <= buf.len());
        assert_eq!(frame.body.len() + 5, frame.len);
        let decoded = decode_frontend(frame.tag, frame.body);
        if let Ok(Frontend::Password(body)) = decoded {
            let _ = decode_password(body);
            let _ = decode_sasl_initial(body);
        }
        // The relay's allocation-free Bind check accepts and refuses exactly what the decoder
        // does, with the same names.
        if frame.tag == b'B' {
            let full = decoded.map(|m| match m {
                Frontend::Bind {
                    portal, statement, ..
                } => (portal, statement),
                _ => unreachable!("a Bind body decoded as another message"),
            });
            assert_eq!(decode_bind_names(frame.body), full);
        }
        buf = &buf[frame.len..];
    }
});
