use super::*;

fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
        .collect()
}

fn client() -> KexInit {
    KexInit::ours(
        Side::Client,
        KexRound::Initial,
        &CipherAlgorithm::ALL,
        [1; 16],
    )
}

fn server() -> KexInit {
    KexInit::ours(
        Side::Server,
        KexRound::Initial,
        &CipherAlgorithm::ALL,
        [2; 16],
    )
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// Vectors computed with OpenSSL 3.0's independent SSHKDF implementation:
//   openssl kdf -keylen 64 -kdfopt digest:SHA256 -kdfopt hexkey:<mpint K> \
//     -kdfopt hexxcghash:<H> -kdfopt hexsession_id:<session_id> -kdfopt type:<X> SSHKDF
// with K = 80 01 02 .. 1f (mpint with a 0x00 prefix), H = 64 65 .. 83, session_id = c8 c9 .. e7.
const K_RAW: &str = "800102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const H: &str = "6465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283";
const SESSION_ID: &str = "c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7";

#[test]
fn key_derivation_matches_openssl_sshkdf() {
    let k = SharedSecret::from_raw(&hex(K_RAW));
    let (h, sid) = (hex(H), hex(SESSION_ID));
    assert_eq!(
        derive(&k, &h, b'A', &sid, 12),
        hex("9E:12:50:BE:2B:D3:30:03:20:71:71:29")
    );
    assert_eq!(
        derive(&k, &h, b'C', &sid, 12),
        hex("01:6F:94:3E:AE:C7:D2:9A:96:9E:C7:3B")
    );
}

#[test]
fn key_derivation_extends_past_one_hash_like_openssl() {
    // 64 bytes (the chacha20-poly1305 key) needs K2 = HASH(K || H || K1).
    let k = SharedSecret::from_raw(&hex(K_RAW));
    let (h, sid) = (hex(H), hex(SESSION_ID));
    assert_eq!(
        derive(&k, &h, b'C', &sid, 64),
        hex(
            "01:6F:94:3E:AE:C7:D2:9A:96:9E:C7:3B:29:57:8F:80:66:C8:78:7C:33:4E:B1:BF:1D:D7:5F:37:\
             DA:25:AA:17:F1:08:55:0B:90:D2:BD:43:9F:A0:F9:1E:40:D4:1C:76:09:22:BA:8E:3A:28:5A:E2:\
             FC:89:9A:7F:32:69:48:B8"
        )
    );
}

#[test]
fn key_derivation_strips_leading_zero_of_shared_secret_like_openssl() {
    // K = 00 01 02 .. 1f is the mpint 0x0102..1f (31 bytes): OpenSSL was given 0000001f 0102..1f.
    let mut raw = hex(K_RAW);
    raw[0] = 0;
    let k = SharedSecret::from_raw(&raw);
    assert_eq!(
        derive(&k, &hex(H), b'D', &hex(SESSION_ID), 16),
        hex("21:12:81:20:22:77:8B:56:73:FE:AB:F6:3F:E3:8D:D3")
    );
}

#[test]
fn session_keys_have_the_lengths_each_cipher_needs() {
    let k = SharedSecret::from_raw(&hex(K_RAW));
    for (c2s, s2c) in [
        (
            CipherAlgorithm::ChaCha20Poly1305,
            CipherAlgorithm::Aes128Gcm,
        ),
        (
            CipherAlgorithm::Aes256Gcm,
            CipherAlgorithm::ChaCha20Poly1305,
        ),
    ] {
        let negotiated = Negotiated {
            kex: KexAlgorithm::Curve25519Sha256,
            cipher_client_to_server: c2s,
            cipher_server_to_client: s2c,
        };
        let keys = derive_session_keys(&k, &hex(H), &hex(SESSION_ID), &negotiated);
        assert_eq!(keys.client_to_server.key.len(), c2s.key_len());
        assert_eq!(keys.client_to_server.iv.len(), c2s.iv_len());
        assert_eq!(keys.server_to_client.key.len(), s2c.key_len());
        assert_eq!(keys.server_to_client.iv.len(), s2c.iv_len());
        assert_ne!(keys.client_to_server.key, keys.server_to_client.key);
    }
}

#[test]
fn round_trip_kexinit() {
    for init in [client(), server()] {
        let bytes = init.encode();
        assert_eq!(bytes[0], msg::KEXINIT);
        assert_eq!(KexInit::parse(&bytes), Ok(init));
    }
}

#[test]
fn our_kexinit_carries_markers_only_in_the_first_round() {
    assert!(client().signals(EXT_INFO_CLIENT));
    assert!(client().signals(STRICT_KEX_CLIENT));
    assert!(server().signals(STRICT_KEX_SERVER));
    assert!(!server().signals(EXT_INFO_CLIENT));
    let rekey = KexInit::ours(
        Side::Client,
        KexRound::Rekey,
        &CipherAlgorithm::ALL,
        [0; 16],
    );
    assert_eq!(
        rekey.kex_algorithms,
        names(&[CURVE25519_SHA256, CURVE25519_SHA256_LIBSSH])
    );
}

#[test]
fn rejects_truncated_kexinit_at_every_length() {
    let bytes = client().encode();
    for cut in 0..bytes.len() {
        assert!(
            matches!(
                KexInit::parse(&bytes[..cut]),
                Err(KexError::Malformed { message: 20, .. })
            ),
            "cut {cut}"
        );
    }
}

#[test]
fn rejects_kexinit_with_trailing_bytes_or_wrong_number() {
    let mut bytes = server().encode();
    bytes.push(0);
    assert_eq!(
        KexInit::parse(&bytes),
        Err(KexError::Malformed {
            message: msg::KEXINIT,
            error: WireError::TrailingBytes
        })
    );
    let mut bytes = server().encode();
    bytes[0] = msg::NEWKEYS;
    assert!(KexInit::parse(&bytes).is_err());
}

#[test]
fn negotiates_first_client_algorithm_the_server_supports() {
    let mut c = client();
    c.ciphers_client_to_server = names(&[
        "aes128-ctr",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
    ]);
    c.ciphers_server_to_client =
        names(&["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]);
    c.kex_algorithms = names(&[
        "sntrup761x25519-sha512@openssh.com",
        CURVE25519_SHA256_LIBSSH,
        CURVE25519_SHA256,
    ]);
    let n = negotiate(&c, &server()).unwrap();
    assert_eq!(n.kex, KexAlgorithm::Curve25519Sha256Libssh);
    assert_eq!(n.cipher_client_to_server, CipherAlgorithm::Aes128Gcm);
    assert_eq!(n.cipher_server_to_client, CipherAlgorithm::Aes256Gcm);
}

#[test]
fn rejects_no_common_cipher_naming_the_category() {
    let mut c = client();
    c.ciphers_server_to_client = names(&["aes128-ctr", "aes256-cbc"]);
    let err = negotiate(&c, &server()).unwrap_err();
    assert_eq!(
        err,
        KexError::NoCommonAlgorithm(Category::CipherServerToClient)
    );
    assert!(
        err.to_string().contains("cipher (server to client)"),
        "{err}"
    );

    let mut c = client();
    c.server_host_key_algorithms = names(&["rsa-sha2-512", "ecdsa-sha2-nistp256"]);
    assert_eq!(
        negotiate(&c, &server()),
        Err(KexError::NoCommonAlgorithm(Category::HostKey))
    );

    let mut c = client();
    c.compression_client_to_server = names(&["zlib@openssh.com"]);
    assert_eq!(
        negotiate(&c, &server()),
        Err(KexError::NoCommonAlgorithm(
            Category::CompressionClientToServer
        ))
    );
}

#[test]
fn ext_info_and_strict_markers_are_never_chosen_as_kex() {
    // A hostile or confused server lists the client's markers (and nothing else we implement):
    // matching names must not become the key exchange method.
    let c = client();
    let mut s = server();
    s.kex_algorithms = names(&[
        EXT_INFO_CLIENT,
        STRICT_KEX_CLIENT,
        "diffie-hellman-group14-sha256",
    ]);
    assert_eq!(
        negotiate(&c, &s),
        Err(KexError::NoCommonAlgorithm(Category::Kex))
    );
    // Markers first in the client's list are skipped over.
    let mut c = client();
    c.kex_algorithms = names(&[EXT_INFO_CLIENT, STRICT_KEX_CLIENT, CURVE25519_SHA256]);
    let mut s = server();
    s.kex_algorithms = names(&[EXT_INFO_CLIENT, STRICT_KEX_CLIENT, CURVE25519_SHA256]);
    assert_eq!(
        negotiate(&c, &s).unwrap().kex,
        KexAlgorithm::Curve25519Sha256
    );
}

#[test]
fn accepts_disjoint_mac_lists_with_aead_ciphers_like_openssh() {
    let mut c = client();
    c.macs_client_to_server = names(&["umac-128-etm@openssh.com"]);
    c.macs_server_to_client = names(&["hmac-sha1"]);
    assert!(negotiate(&c, &server()).is_ok());
}

#[test]
fn detects_wrong_first_kex_guess() {
    let ours = server();
    let mut peer = client();
    assert!(!peer_guess_is_wrong(&ours, &peer));
    peer.kex_algorithms = names(&[CURVE25519_SHA256_LIBSSH, CURVE25519_SHA256]);
    assert!(peer_guess_is_wrong(&ours, &peer));
    let mut peer = client();
    peer.server_host_key_algorithms = names(&["ecdsa-sha2-nistp256", SSH_ED25519]);
    assert!(peer_guess_is_wrong(&ours, &peer));
}

#[test]
fn round_trip_ecdh_messages_and_reject_bad_lengths() {
    let init = encode_ecdh_init(&[9; 32]);
    assert_eq!(parse_ecdh_init(&init), Ok([9; 32]));
    assert_eq!(
        parse_ecdh_init(&encode_ecdh_init(&[9; 31])),
        Err(KexError::BadEphemeralKey)
    );
    let reply = EcdhReply {
        host_key_blob: vec![1, 2, 3],
        q_s: [7; 32],
        signature_blob: vec![4, 5],
    };
    let bytes = reply.encode();
    assert_eq!(EcdhReply::parse(&bytes), Ok(reply));
    for cut in 0..bytes.len() {
        assert!(EcdhReply::parse(&bytes[..cut]).is_err());
    }
}

#[test]
fn x25519_agreement_matches_on_both_sides_and_rejects_low_order_points() {
    let rng = ring::rand::SystemRandom::new();
    let a = Ephemeral::generate(&rng).unwrap();
    let b = Ephemeral::generate(&rng).unwrap();
    let (pa, pb) = (*a.public(), *b.public());
    let ka = a.agree(&pb).unwrap();
    let kb = b.agree(&pa).unwrap();
    assert_eq!(ka.0, kb.0);
    // The all-zero point has order 1: the shared secret would be all zeros.
    let c = Ephemeral::generate(&rng).unwrap();
    assert!(matches!(c.agree(&[0; 32]), Err(KexError::BadSharedSecret)));
    let d = Ephemeral::generate(&rng).unwrap();
    assert!(matches!(d.agree(&[1; 31]), Err(KexError::BadEphemeralKey)));
}

#[test]
fn exchange_hash_covers_every_input() {
    let k = SharedSecret::from_raw(&hex(K_RAW));
    let base = HashInputs {
        client_version: b"SSH-2.0-a",
        server_version: b"SSH-2.0-b",
        client_kexinit: b"\x14c",
        server_kexinit: b"\x14s",
        host_key_blob: b"key",
        client_public: &[1; 32],
        server_public: &[2; 32],
    };
    let h = exchange_hash(&base, &k);
    assert_eq!(h.len(), 32);
    let variants = [
        HashInputs {
            client_version: b"SSH-2.0-x",
            ..base
        },
        HashInputs {
            server_version: b"SSH-2.0-x",
            ..base
        },
        HashInputs {
            client_kexinit: b"\x14x",
            ..base
        },
        HashInputs {
            server_kexinit: b"\x14x",
            ..base
        },
        HashInputs {
            host_key_blob: b"kex",
            ..base
        },
        HashInputs {
            client_public: &[3; 32],
            ..base
        },
        HashInputs {
            server_public: &[3; 32],
            ..base
        },
    ];
    for v in &variants {
        assert_ne!(exchange_hash(v, &k), h);
    }
    // Same bytes moved between adjacent fields give a different hash (length prefixes).
    let shifted = HashInputs {
        client_version: b"SSH-2.0-aS",
        server_version: b"SH-2.0-b",
        ..base
    };
    assert_ne!(exchange_hash(&shifted, &k), h);
}

#[test]
fn round_trip_ext_info_and_skip_unknown_extensions() {
    assert_eq!(
        parse_ext_info(&encode_server_ext_info()),
        Ok(Some(names(&[
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "rsa-sha2-512",
            "rsa-sha2-256"
        ])))
    );
    let mut w = Writer::message(msg::EXT_INFO);
    w.u32(2)
        .string(b"publickey-hostbound@openssh.com")
        .string(b"0")
        .string(b"server-sig-algs")
        .string(b"ssh-ed25519");
    assert_eq!(
        parse_ext_info(w.as_bytes()),
        Ok(Some(names(&["ssh-ed25519"])))
    );
    let mut w = Writer::message(msg::EXT_INFO);
    w.u32(0);
    assert_eq!(parse_ext_info(w.as_bytes()), Ok(None));
    let mut w = Writer::message(msg::EXT_INFO);
    w.u32(MAX_EXTENSIONS + 1);
    assert!(parse_ext_info(w.as_bytes()).is_err());
}
