//! The SFTP session on arbitrary interleavings of client and server bytes, in both modes: must
//! not panic, must only ever forward whole packets that it parsed, and in read-only mode must
//! never forward a request that writes.
//!
//! Input: one mode byte (even: read-write, odd: read-only), then chunks of `direction byte
//! (even: client, odd: server), u16 big-endian length, bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::ssh::sftp::{
    is_write, parse_request, FrameBuffer, SftpMode, SftpOutput, SftpSession,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mode = if mode % 2 == 0 {
        SftpMode::ReadWrite
    } else {
        SftpMode::ReadOnly
    };
    let mut session = SftpSession::new(mode);
    let mut forwarded = FrameBuffer::new();
    while rest.len() >= 3 {
        let dir = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let chunk = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let mut out = SftpOutput::default();
        let result = if dir % 2 == 0 {
            session.client_data(chunk, &mut out)
        } else {
            session.server_data(chunk, &mut out)
        };
        forwarded.push(&out.to_server);
        while let Ok(Some(frame)) = forwarded.next_frame() {
            let request = parse_request(frame).expect("forwarded a packet that does not parse");
            assert!(mode == SftpMode::ReadWrite || !is_write(&request));
        }
        assert_eq!(forwarded.buffered(), 0, "forwarded part of a packet");
        if result.is_err() {
            break;
        }
    }
});
