//! The SSH key parsers. Input: a selector byte, then the data:
//! - 0: public key blob (`PublicKey::from_blob`); a parsed key must re-encode to the same bytes,
//!   and `verify` of arbitrary signature bytes must not panic (the blob's second half is used);
//! - 1: authorized_keys line (`PublicKey::from_openssh_line`); a parsed key must round-trip
//!   through its `Display` form;
//! - 2: the binary body of an `openssh-key-v1` file, armored here so the binary parser is reached;
//! - 3: a whole key file as text (`parse_private_key_file`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proto::pg::scram::base64_encode;
use portcullis::proto::ssh::keyfile::parse_private_key_file;
use portcullis::proto::ssh::keys::{PublicKey, SignatureAlgorithm};
use ring::rand::SystemRandom;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let (blob, sig) = rest.split_at(rest.len() / 2);
            for input in [rest, blob] {
                if let Ok(key) = PublicKey::from_blob(input) {
                    assert_eq!(key.to_blob(), input);
                    for alg in SignatureAlgorithm::ALL {
                        assert!(key.verify(alg, b"data", sig).is_err());
                    }
                }
            }
        }
        1 => {
            if let Ok(line) = std::str::from_utf8(rest) {
                if let Ok(parsed) = PublicKey::from_openssh_line(line) {
                    let again = PublicKey::from_openssh_line(&parsed.key.to_string()).unwrap();
                    assert_eq!(again.key, parsed.key);
                }
            }
        }
        2 => {
            let file = format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                base64_encode(rest)
            );
            let _ = parse_private_key_file(file.as_bytes(), &SystemRandom::new());
        }
        _ => {
            let _ = parse_private_key_file(rest, &SystemRandom::new());
        }
    }
});
