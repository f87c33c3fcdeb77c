//! SCRAM server side on arbitrary messages. Input: client-first-message, a 0x00 byte, then the
//! client-final-message (seeds in fuzz/seeds/scram_server use that layout). The verifier is fixed
//! so no PBKDF2 runs per input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::pg::scram::{server_first, ScramVerifier};

const VERIFIER: ScramVerifier = ScramVerifier {
    stored_key: [0x11; 32],
    server_key: [0x22; 32],
};

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok((state, server_first_msg)) = server_first(first, b"salt", 4096, "c2VydmVy") {
        assert!(server_first_msg.starts_with(b"r="));
        // A random proof matching a fixed verifier would be a SHA-256 preimage.
        assert!(state.finish(last, &[VERIFIER]).is_err());
    }
});
