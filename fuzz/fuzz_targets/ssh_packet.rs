//! The SSH packet opener (RFC 4253 §6) fed arbitrary bytes, for each cipher with fixed keys.
//!
//! Input: byte 0 picks the cipher (low 2 bits: none, chacha20-poly1305, aes256-gcm, aes128-gcm)
//! and the mode (bit 2): 0 = the rest is a received byte stream, opened packet by packet until
//! the opener wants more bytes or fails; 1 = the rest is a payload, sealed and then opened again,
//! which must give it back (a round trip past the tag check, where raw bytes rarely get).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::ssh::cipher::CipherAlgorithm;
use portcullis::proto::ssh::packet::{PacketOpener, PacketSealer, MAX_SEND_PAYLOAD};
use ring::rand::SystemRandom;

fn keyed(selector: u8) -> (PacketSealer, PacketOpener) {
    let cipher = match selector & 3 {
        0 => return (PacketSealer::new(), PacketOpener::new()),
        1 => CipherAlgorithm::ChaCha20Poly1305,
        2 => CipherAlgorithm::Aes256Gcm,
        _ => CipherAlgorithm::Aes128Gcm,
    };
    let key = vec![0x42; cipher.key_len()];
    let iv = vec![0x24; cipher.iv_len()];
    (
        PacketSealer::with_keys(cipher, &key, &iv).unwrap(),
        PacketOpener::with_keys(cipher, &key, &iv).unwrap(),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (mut sealer, mut opener) = keyed(selector);
    if selector & 4 == 0 {
        let mut buf = rest;
        while let Ok(Some(packet)) = opener.open(buf) {
            assert!(packet.consumed > 0 && packet.consumed <= buf.len());
            buf = &buf[packet.consumed..];
        }
    } else if rest.len() <= MAX_SEND_PAYLOAD {
        let mut wire = Vec::new();
        sealer.seal(rest, &SystemRandom::new(), &mut wire).unwrap();
        let packet = opener.open(&wire).unwrap().unwrap();
        assert_eq!(packet.payload, rest);
        assert_eq!(packet.consumed, wire.len());
    }
});
