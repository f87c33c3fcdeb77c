//! Startup-phase packets: a stream of them, as a client could send before and after SSLRequest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::pg::codec::{parse_startup, StartupRequest, MAX_STARTUP_PACKET};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some((request, used))) = parse_startup(buf) {
        assert!((8..=MAX_STARTUP_PACKET).contains(&used) && used <= buf.len());
        if let StartupRequest::Startup { params, .. } = &request {
            assert!(params.len() <= 64);
        }
        buf = &buf[used..];
    }
});
