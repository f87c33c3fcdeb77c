//! A server-side SSH transport fed arbitrary bytes after a valid client identification line.
//!
//! Input: byte 0 sets the delivery chunk size (1..=256 bytes per `feed` + `process`), the rest
//! is what the client sends after `SSH-2.0-fuzz\r\n`. Packets are unencrypted until a NEWKEYS,
//! so the fuzzer can reach KEXINIT parsing, negotiation, ECDH_INIT and the strict-kex rules.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use portcullis::proto::ssh::transport::{Role, Transport, TransportConfig};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    // A fixed key: signing is deterministic, so runs differ only in our ephemeral key.
    let host_key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let now = Instant::now();
    let mut server = Transport::new(
        Role::Server { host_key },
        TransportConfig::default(),
        Box::new(SystemRandom::new()),
        now,
    )
    .unwrap();
    server.feed(b"SSH-2.0-fuzz\r\n");
    if server.process(now).is_err() {
        return;
    }
    for piece in rest.chunks(chunk) {
        server.feed(piece);
        let result = server.process(now);
        let n = server.pending_output().len();
        server.consume_output(n);
        if result.is_err() {
            // Sticky: the same error again, and nothing more to send.
            assert_eq!(server.process(now).err(), result.err());
            return;
        }
    }
    let _ = server.handle_timeout(now + Duration::from_secs(3600));
});
