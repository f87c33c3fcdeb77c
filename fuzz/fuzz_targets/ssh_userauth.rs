//! ServerAuth fed a sequence of client payloads. Input: records of `[decision][u16 length BE]
//! [payload]`; bit 0 of `decision` answers any check the payload raises (1 = accept). Seeds in
//! fuzz/seeds/ssh_userauth use that layout.
//!
//! Invariant beyond "no panic": a publickey login can't succeed, because nobody holds a private
//! key whose signature over this session id the fuzzer could produce.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::ssh::userauth::{
    AuthMethod, Credential, ServerAuth, ServerAuthConfig, ServerStep,
};

const SESSION_ID: &[u8] = b"fuzz-session-id";

fuzz_target!(|data: &[u8]| {
    let mut auth = ServerAuth::new(SESSION_ID, ServerAuthConfig::default());
    let mut rest = data;
    while let [decision, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let accept = decision & 1 == 1;
        let step = match auth.handle(payload) {
            Ok(step) => step,
            Err(e) => {
                assert!(matches!(e.disconnect_reason(), 2 | 7 | 14 | 15));
                return;
            }
        };
        let step = match step {
            ServerStep::CheckPublicKey(c) if accept => c.accept(),
            ServerStep::CheckPublicKey(c) => c.reject(),
            ServerStep::CheckPassword(c) if accept => c.accept(),
            ServerStep::CheckPassword(c) => c.reject(),
            other => other,
        };
        match step {
            ServerStep::Reply { auth: next, reply } => {
                assert!(matches!(reply.first(), Some(51 | 60)));
                auth = next;
            }
            ServerStep::Authenticated { outcome, .. } => {
                assert!(!matches!(outcome.credential, Credential::PublicKey(_)));
                assert_ne!(outcome.method, AuthMethod::PublicKey);
                return;
            }
            ServerStep::Disconnect(d) => {
                assert_eq!(d.reason, 14);
                return;
            }
            ServerStep::CheckPublicKey(_) | ServerStep::CheckPassword(_) => {
                unreachable!("checks are answered above")
            }
        }
    }
});
