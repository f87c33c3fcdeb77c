//! In-memory pair harness: our client against our server, bytes pumped between them with
//! virtual time, bounded in steps, never sleeping.

use super::*;
use crate::proto::ssh::packet::MAX_SEND_PAYLOAD;
use ring::rand::SystemRandom;

fn host_key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn public_of(key: &Ed25519KeyPair) -> [u8; 32] {
    key.public_key().as_ref().try_into().unwrap()
}

fn transport(role: Role, config: TransportConfig, now: Instant) -> Transport {
    Transport::new(role, config, Box::new(SystemRandom::new()), now).unwrap()
}

struct Pair {
    client: Transport,
    server: Transport,
    now: Instant,
    client_events: Vec<Event>,
    server_events: Vec<Event>,
    /// Bytes per delivery (usize::MAX: everything at once).
    chunk: usize,
}

impl Pair {
    fn new(client_config: TransportConfig, server_config: TransportConfig) -> Pair {
        let key = host_key();
        let pinned = public_of(&key);
        Pair::with_pin(client_config, server_config, key, pinned)
    }

    fn with_pin(
        client_config: TransportConfig,
        server_config: TransportConfig,
        key: Ed25519KeyPair,
        pinned_host_key: [u8; 32],
    ) -> Pair {
        let now = Instant::now();
        Pair {
            client: transport(Role::Client { pinned_host_key }, client_config, now),
            server: transport(Role::Server { host_key: key }, server_config, now),
            now,
            client_events: Vec::new(),
            server_events: Vec::new(),
            chunk: usize::MAX,
        }
    }

    fn default() -> Pair {
        Pair::new(TransportConfig::default(), TransportConfig::default())
    }

    /// Moves bytes both ways until neither side has anything to send. Returns the first error
    /// with the side it happened on.
    fn pump(&mut self) -> Result<(), (Side, TransportError)> {
        for _ in 0..10_000 {
            let moved_c = deliver(&mut self.client, &mut self.server, self.chunk);
            if moved_c > 0 {
                let events = self
                    .server
                    .process(self.now)
                    .map_err(|e| (Side::Server, e))?;
                self.server_events.extend(events);
            }
            let moved_s = deliver(&mut self.server, &mut self.client, self.chunk);
            if moved_s > 0 {
                let events = self
                    .client
                    .process(self.now)
                    .map_err(|e| (Side::Client, e))?;
                self.client_events.extend(events);
            }
            if moved_c == 0 && moved_s == 0 {
                return Ok(());
            }
        }
        panic!("pump did not settle in 10,000 steps");
    }

    fn handshake(&mut self) {
        self.pump().unwrap();
        assert!(matches!(
            self.client_events.first(),
            Some(Event::Ready { .. })
        ));
        assert!(matches!(
            self.server_events.first(),
            Some(Event::Ready { .. })
        ));
        assert_eq!(self.client.session_id(), self.server.session_id());
    }

    fn take_server_payloads(&mut self) -> Vec<Vec<u8>> {
        payloads(&mut self.server_events)
    }

    fn take_client_payloads(&mut self) -> Vec<Vec<u8>> {
        payloads(&mut self.client_events)
    }
}

fn payloads(events: &mut Vec<Event>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    events.retain(|e| match e {
        Event::Payload(p) => {
            out.push(p.clone());
            false
        }
        _ => true,
    });
    out
}

/// Delivers up to `chunk` pending bytes from `from` to `to` (not processed yet).
fn deliver(from: &mut Transport, to: &mut Transport, chunk: usize) -> usize {
    let n = from.pending_output().len().min(chunk);
    if n > 0 {
        let bytes = from.pending_output()[..n].to_vec();
        from.consume_output(n);
        to.feed(&bytes);
    }
    n
}

fn only(cipher: CipherAlgorithm) -> TransportConfig {
    TransportConfig {
        ciphers: vec![cipher],
        ..TransportConfig::default()
    }
}

fn numbered(tag: u8, i: usize, len: usize) -> Vec<u8> {
    let mut p = vec![tag];
    p.extend_from_slice(&(i as u32).to_be_bytes());
    p.resize(len.max(5), (i % 251) as u8);
    p
}

#[test]
fn handshake_completes_with_every_cipher() {
    for cipher in CipherAlgorithm::ALL {
        let mut pair = Pair::new(only(cipher), TransportConfig::default());
        pair.handshake();
        for t in [&pair.client, &pair.server] {
            let n = t.negotiated().unwrap();
            assert_eq!(n.cipher_client_to_server, cipher);
            assert_eq!(n.cipher_server_to_client, cipher);
            assert_eq!(n.kex, kex::KexAlgorithm::Curve25519Sha256);
            assert_eq!(t.strict_kex(), Some(true));
            assert_eq!(t.key_exchanges(), 1);
        }
        assert_eq!(
            pair.client.peer_version(),
            Some(version::our_version().as_bytes())
        );
    }
}

#[test]
fn client_receives_server_sig_algs_via_ext_info() {
    let mut pair = Pair::default();
    pair.handshake();
    let want: Vec<String> = kex::SERVER_SIG_ALGS.split(',').map(String::from).collect();
    assert!(pair.client_events.contains(&Event::ExtInfo {
        server_sig_algs: want.clone()
    }));
    assert_eq!(pair.client.server_sig_algs(), Some(want.as_slice()));
    assert_eq!(pair.server.server_sig_algs(), None);
}

#[test]
fn handshake_survives_delivery_in_small_chunks() {
    for chunk in [1usize, 7, 100] {
        let mut pair = Pair::default();
        pair.chunk = chunk;
        pair.handshake();
        pair.client
            .send_payload(numbered(94, 1, 3000), pair.now)
            .unwrap();
        pair.pump().unwrap();
        assert_eq!(pair.take_server_payloads(), vec![numbered(94, 1, 3000)]);
    }
}

#[test]
fn round_trip_payloads_both_ways_with_every_cipher() {
    for cipher in CipherAlgorithm::ALL {
        let mut pair = Pair::new(TransportConfig::default(), only(cipher));
        pair.handshake();
        let sizes = [5, 16, 1000, 35_000, MAX_SEND_PAYLOAD];
        for (i, &len) in sizes.iter().enumerate() {
            pair.client
                .send_payload(numbered(94, i, len), pair.now)
                .unwrap();
            pair.server
                .send_payload(numbered(95, i, len), pair.now)
                .unwrap();
        }
        pair.pump().unwrap();
        let want_c2s: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &l)| numbered(94, i, l))
            .collect();
        let want_s2c: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &l)| numbered(95, i, l))
            .collect();
        assert_eq!(pair.take_server_payloads(), want_c2s, "{cipher:?}");
        assert_eq!(pair.take_client_payloads(), want_s2c, "{cipher:?}");
    }
}

#[test]
fn service_request_and_accept() {
    let mut pair = Pair::default();
    pair.handshake();
    assert_eq!(
        pair.server.request_service("ssh-userauth"),
        Err(TransportError::WrongRole)
    );
    pair.client.request_service("ssh-userauth").unwrap();
    assert_eq!(
        pair.client.request_service("ssh-userauth"),
        Err(TransportError::NotReady),
        "one request at a time"
    );
    pair.pump().unwrap();
    assert!(pair
        .server_events
        .contains(&Event::ServiceRequest("ssh-userauth".into())));
    pair.server.accept_service("ssh-userauth").unwrap();
    pair.pump().unwrap();
    assert!(pair
        .client_events
        .contains(&Event::ServiceAccepted("ssh-userauth".into())));
}

#[test]
fn rejects_unsolicited_service_accept() {
    let mut pair = Pair::default();
    pair.handshake();
    pair.server.accept_service("ssh-userauth").unwrap();
    let err = pair.pump().unwrap_err();
    assert_eq!(
        err,
        (
            Side::Client,
            TransportError::UnexpectedMessage {
                message: msg::SERVICE_ACCEPT
            }
        )
    );
}

#[test]
fn refuses_calls_before_ready_without_failing() {
    let now = Instant::now();
    let mut client = transport(
        Role::Client {
            pinned_host_key: [0; 32],
        },
        TransportConfig::default(),
        now,
    );
    assert_eq!(
        client.request_service("ssh-userauth"),
        Err(TransportError::NotReady)
    );
    assert_eq!(client.start_rekey(now), Err(TransportError::NotReady));
    assert_eq!(
        client.send_payload(vec![msg::IGNORE, 0, 0, 0, 0], now),
        Err(TransportError::NotAHigherLayerMessage)
    );
    assert_eq!(
        client.send_payload(vec![], now),
        Err(TransportError::NotAHigherLayerMessage)
    );
    assert_eq!(client.error(), None);
}

/// Runs a rekey started by `initiator` with payloads sent from both sides while it runs, and
/// checks they all arrive in order.
fn rekey_with_traffic(pair: &mut Pair, initiator: Side, start: impl Fn(&mut Transport, Instant)) {
    let before = pair.client.key_exchanges();
    let session_id = pair.client.session_id().unwrap().to_vec();
    let (first, second) = match initiator {
        Side::Client => (&mut pair.client, &mut pair.server),
        Side::Server => (&mut pair.server, &mut pair.client),
    };
    start(first, pair.now);
    assert!(first.is_rekeying());
    // Sent while our KEXINIT is out: held until the exchange completes.
    for i in 0..5 {
        first.send_payload(numbered(94, i, 500), pair.now).unwrap();
    }
    // The other side hasn't seen the KEXINIT yet: sent right away, under the old keys.
    for i in 0..5 {
        second.send_payload(numbered(95, i, 500), pair.now).unwrap();
    }
    pair.pump().unwrap();
    // More traffic after the exchange.
    for i in 5..8 {
        pair.client
            .send_payload(numbered(94, i, 500), pair.now)
            .unwrap();
        pair.server
            .send_payload(numbered(95, i, 500), pair.now)
            .unwrap();
    }
    pair.pump().unwrap();
    assert_eq!(pair.client.key_exchanges(), before + 1);
    assert_eq!(pair.server.key_exchanges(), before + 1);
    assert!(!pair.client.is_rekeying() && !pair.server.is_rekeying());
    assert_eq!(pair.client.session_id(), Some(session_id.as_slice()));
    let (from_first, from_second): (Vec<_>, Vec<_>) = match initiator {
        Side::Client => (pair.take_server_payloads(), pair.take_client_payloads()),
        Side::Server => (pair.take_client_payloads(), pair.take_server_payloads()),
    };
    let (tag_first, tag_second) = (94, 95);
    let want_first: Vec<_> = (0..5)
        .chain(5..8)
        .map(|i| numbered(tag_first, i, 500))
        .collect();
    let want_second: Vec<_> = (0..8).map(|i| numbered(tag_second, i, 500)).collect();
    match initiator {
        Side::Client => {
            assert_eq!(from_first, want_first);
            assert_eq!(from_second, want_second);
        }
        Side::Server => {
            // The server sent tag 94 in rounds 0..5 and both sent 94/95 by role afterwards.
            let server_sent: Vec<_> = (0..5)
                .map(|i| numbered(94, i, 500))
                .chain((5..8).map(|i| numbered(95, i, 500)))
                .collect();
            let client_sent: Vec<_> = (0..5)
                .map(|i| numbered(95, i, 500))
                .chain((5..8).map(|i| numbered(94, i, 500)))
                .collect();
            assert_eq!(from_first, server_sent);
            assert_eq!(from_second, client_sent);
        }
    }
}

#[test]
fn rekey_started_explicitly_by_either_side_delivers_held_payloads_in_order() {
    for initiator in [Side::Client, Side::Server] {
        for cipher in CipherAlgorithm::ALL {
            let mut pair = Pair::new(only(cipher), TransportConfig::default());
            pair.handshake();
            rekey_with_traffic(&mut pair, initiator, |t, now| t.start_rekey(now).unwrap());
            // And traffic still flows under the third set of keys.
            rekey_with_traffic(&mut pair, initiator, |t, now| t.start_rekey(now).unwrap());
        }
    }
}

#[test]
fn rekey_by_bytes_from_either_side() {
    for initiator in [Side::Client, Side::Server] {
        let small = TransportConfig {
            rekey_after_bytes: 64 * 1024,
            ..TransportConfig::default()
        };
        let (c, s) = match initiator {
            Side::Client => (small, TransportConfig::default()),
            Side::Server => (TransportConfig::default(), small),
        };
        let mut pair = Pair::new(c, s);
        pair.handshake();
        // 20 KiB per packet: the fourth send crosses 64 KiB and starts the rekey; the later ones
        // are held until it completes.
        let sender = match initiator {
            Side::Client => &mut pair.client,
            Side::Server => &mut pair.server,
        };
        for i in 0..6 {
            sender
                .send_payload(numbered(94, i, 20_000), pair.now)
                .unwrap();
        }
        assert!(sender.is_rekeying(), "{initiator:?}");
        pair.pump().unwrap();
        assert_eq!(pair.client.key_exchanges(), 2, "{initiator:?}");
        assert_eq!(pair.server.key_exchanges(), 2, "{initiator:?}");
        let got = match initiator {
            Side::Client => pair.take_server_payloads(),
            Side::Server => pair.take_client_payloads(),
        };
        let want: Vec<_> = (0..6).map(|i| numbered(94, i, 20_000)).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn rekey_by_received_bytes_is_started_by_the_receiver() {
    let small = TransportConfig {
        rekey_after_bytes: 64 * 1024,
        ..TransportConfig::default()
    };
    let mut pair = Pair::new(TransportConfig::default(), small);
    pair.handshake();
    for i in 0..4 {
        pair.client
            .send_payload(numbered(94, i, 20_000), pair.now)
            .unwrap();
    }
    pair.pump().unwrap();
    assert_eq!(pair.server.key_exchanges(), 2);
    assert_eq!(pair.take_server_payloads().len(), 4);
}

#[test]
fn rekey_by_time_from_either_side() {
    for initiator in [Side::Client, Side::Server] {
        let short = TransportConfig {
            rekey_interval: Duration::from_secs(600),
            ..TransportConfig::default()
        };
        let (c, s) = match initiator {
            Side::Client => (short, TransportConfig::default()),
            Side::Server => (TransportConfig::default(), short),
        };
        let mut pair = Pair::new(c, s);
        pair.handshake();
        let t0 = pair.now;
        let first = match initiator {
            Side::Client => &mut pair.client,
            Side::Server => &mut pair.server,
        };
        let due = first.poll_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_secs(600));
        // Before the deadline nothing happens.
        first.handle_timeout(t0 + Duration::from_secs(599)).unwrap();
        assert!(!first.is_rekeying());
        pair.now = due;
        let first = match initiator {
            Side::Client => &mut pair.client,
            Side::Server => &mut pair.server,
        };
        first.handle_timeout(pair.now).unwrap();
        assert!(first.is_rekeying());
        // The running rekey now has a kex deadline.
        assert_eq!(first.poll_timeout(), Some(due + Duration::from_secs(30)));
        first.send_payload(numbered(94, 0, 100), pair.now).unwrap();
        pair.pump().unwrap();
        assert_eq!(pair.client.key_exchanges(), 2);
        assert_eq!(pair.server.key_exchanges(), 2);
        let first = match initiator {
            Side::Client => &pair.client,
            Side::Server => &pair.server,
        };
        assert_eq!(first.poll_timeout(), Some(due + Duration::from_secs(600)));
    }
}

#[test]
fn simultaneous_rekey_from_both_sides_completes_once() {
    let mut pair = Pair::default();
    pair.handshake();
    pair.client.start_rekey(pair.now).unwrap();
    pair.server.start_rekey(pair.now).unwrap();
    pair.client
        .send_payload(numbered(94, 0, 10), pair.now)
        .unwrap();
    pair.server
        .send_payload(numbered(95, 0, 10), pair.now)
        .unwrap();
    pair.pump().unwrap();
    assert_eq!(pair.client.key_exchanges(), 2);
    assert_eq!(pair.server.key_exchanges(), 2);
    assert_eq!(pair.take_server_payloads(), vec![numbered(94, 0, 10)]);
    assert_eq!(pair.take_client_payloads(), vec![numbered(95, 0, 10)]);
}

#[test]
fn rejects_host_key_mismatch_with_both_fingerprints() {
    let key = host_key();
    let real_blob = hostkey::ed25519_public_key_blob(&public_of(&key));
    let wrong = public_of(&host_key());
    let mut pair = Pair::with_pin(
        TransportConfig::default(),
        TransportConfig::default(),
        key,
        wrong,
    );
    let (side, err) = pair.pump().unwrap_err();
    assert_eq!(side, Side::Client);
    let expected = hostkey::sha256_fingerprint(&hostkey::ed25519_public_key_blob(&wrong));
    let presented = hostkey::sha256_fingerprint(&real_blob);
    assert_eq!(
        err,
        TransportError::HostKeyMismatch {
            expected: expected.clone(),
            presented: presented.clone()
        }
    );
    let text = err.to_string();
    assert!(
        text.contains(&expected) && text.contains(&presented),
        "{text}"
    );
    assert_eq!(pair.client.session_id(), None);
    // The server is told why.
    pair.pump().unwrap();
    assert!(matches!(
        pair.server_events.last(),
        Some(Event::Disconnected {
            reason: DisconnectReason::HostKeyNotVerifiable,
            ..
        })
    ));
    // Sticky on both sides.
    assert_eq!(pair.client.process(pair.now), Err(err));
    assert!(matches!(
        pair.server.process(pair.now),
        Err(TransportError::PeerDisconnected { .. })
    ));
}

#[test]
fn rejects_ignore_injected_before_newkeys_under_strict_kex() {
    let mut pair = Pair::default();
    // Client banner + KEXINIT to the server, server banner + KEXINIT back.
    deliver(&mut pair.client, &mut pair.server, usize::MAX);
    pair.server.process(pair.now).unwrap();
    deliver(&mut pair.server, &mut pair.client, usize::MAX);
    pair.client.process(pair.now).unwrap();
    // The client has queued ECDH_INIT; an attacker (or a bug) adds an IGNORE after it.
    pair.client.send_now(&[msg::IGNORE, 0, 0, 0, 0]).unwrap();
    deliver(&mut pair.client, &mut pair.server, usize::MAX);
    assert_eq!(
        pair.server.process(pair.now),
        Err(TransportError::StrictKexViolation {
            message: msg::IGNORE
        })
    );
    // The server tells the client with a protocol-error DISCONNECT (sealed with its new keys,
    // after its NEWKEYS, so the client reads it).
    deliver(&mut pair.server, &mut pair.client, usize::MAX);
    let events = pair.client.process(pair.now).unwrap();
    assert!(matches!(
        events.last(),
        Some(Event::Disconnected {
            reason: DisconnectReason::ProtocolError,
            ..
        })
    ));
}

/// Raw client bytes: identification and a KEXINIT, optionally preceded by an IGNORE packet.
fn raw_client_hello(strict: bool, ignore_first: bool) -> Vec<u8> {
    let rng = SystemRandom::new();
    let mut out = b"SSH-2.0-test\r\n".to_vec();
    let mut sealer = PacketSealer::new();
    if ignore_first {
        sealer
            .seal(&[msg::IGNORE, 0, 0, 0, 0], &rng, &mut out)
            .unwrap();
    }
    let round = if strict {
        KexRound::Initial
    } else {
        KexRound::Rekey
    };
    let init = KexInit::ours(Side::Client, round, &CipherAlgorithm::ALL, [3; 16]);
    sealer.seal(&init.encode(), &rng, &mut out).unwrap();
    out
}

#[test]
fn rejects_strict_kexinit_that_is_not_the_first_packet() {
    let now = Instant::now();
    let mut server = transport(
        Role::Server {
            host_key: host_key(),
        },
        TransportConfig::default(),
        now,
    );
    server.feed(&raw_client_hello(true, true));
    assert_eq!(
        server.process(now),
        Err(TransportError::StrictKexViolation {
            message: msg::KEXINIT
        })
    );
}

#[test]
fn accepts_ignore_before_kexinit_without_strict_kex() {
    let now = Instant::now();
    let mut server = transport(
        Role::Server {
            host_key: host_key(),
        },
        TransportConfig::default(),
        now,
    );
    server.feed(&raw_client_hello(false, true));
    assert_eq!(server.process(now), Ok(vec![]));
    assert!(matches!(
        server.state,
        Ok(Phase::FirstKex(KexRun {
            step: KexStep::ExpectEcdhInit {
                agreed: Agreed {
                    mode: KexMode::Classic,
                    ..
                },
                ..
            },
            ..
        }))
    ));
}

#[test]
fn classic_kex_keeps_counting_sequence_numbers() {
    // A client that doesn't offer strict kex: the server's opener must not reset at NEWKEYS.
    // Built by replacing our client's first KEXINIT with one without the markers.
    let mut pair = Pair::default();
    replace_client_kexinit(&mut pair, |init| {
        init.kex_algorithms.retain(|n| n != kex::STRICT_KEX_CLIENT);
    });
    pair.handshake();
    assert_eq!(pair.server.strict_kex(), Some(false));
    assert_eq!(pair.client.strict_kex(), Some(false));
    // Classic: client sent KEXINIT(0), ECDH_INIT(1), NEWKEYS(2); the next is 3.
    assert_eq!(pair.client.sealer.sequence_number(), 3);
    pair.client
        .send_payload(numbered(94, 0, 10), pair.now)
        .unwrap();
    pair.pump().unwrap();
    assert_eq!(pair.take_server_payloads(), vec![numbered(94, 0, 10)]);
}

#[test]
fn strict_kex_resets_sequence_numbers_after_newkeys() {
    let mut pair = Pair::default();
    pair.handshake();
    // Strict: reset to 0 after NEWKEYS; nothing sent by the client since.
    assert_eq!(pair.client.sealer.sequence_number(), 0);
    // The server sent EXT_INFO after its NEWKEYS.
    assert_eq!(pair.server.sealer.sequence_number(), 1);
    assert_eq!(pair.client.opener.sequence_number(), 1);
}

/// Swaps the client's first KEXINIT (still unsent) for an edited one.
fn replace_client_kexinit(pair: &mut Pair, edit: impl FnOnce(&mut KexInit)) {
    let client = &mut pair.client;
    let Ok(Phase::ExpectVersion { deadline, .. }) = client.state else {
        panic!("client already past the version exchange");
    };
    client.tx.clear();
    client.tx_start = 0;
    client.sealer = PacketSealer::new();
    client.tx.extend_from_slice(&client.our_version.clone());
    client.tx.extend_from_slice(b"\r\n");
    let mut init = KexInit::ours(
        Side::Client,
        KexRound::Initial,
        &CipherAlgorithm::ALL,
        [5; 16],
    );
    edit(&mut init);
    let payload = init.encode();
    client.send_now(&payload).unwrap();
    client.state = Ok(Phase::ExpectVersion {
        ours: SentKexInit { payload, init },
        lines_before: 0,
        deadline,
    });
}

#[test]
fn ignores_packet_after_a_wrong_first_kex_guess() {
    // The client claims a guessed kex packet follows, with a first kex algorithm the server
    // doesn't prefer: the server must drop the next packet (a bogus ECDH_INIT here).
    let mut pair = Pair::default();
    replace_client_kexinit(&mut pair, |init| {
        init.kex_algorithms.swap(0, 1); // curve25519-sha256@libssh.org first
        init.first_kex_packet_follows = true;
    });
    pair.client
        .send_now(&[msg::KEX_ECDH_INIT, 0, 0, 0, 1, 9])
        .unwrap();
    pair.handshake();
    assert_eq!(
        pair.server.negotiated().unwrap().kex,
        kex::KexAlgorithm::Curve25519Sha256Libssh
    );
}

#[test]
fn uses_the_guessed_packet_when_the_guess_is_right() {
    // Same bogus packet, but the guess matches: the server reads it as the real ECDH_INIT and
    // fails on it, proving the drop above is conditional.
    let mut pair = Pair::default();
    replace_client_kexinit(&mut pair, |init| init.first_kex_packet_follows = true);
    pair.client
        .send_now(&[msg::KEX_ECDH_INIT, 0, 0, 0, 1, 9])
        .unwrap();
    assert_eq!(
        pair.pump(),
        Err((Side::Server, TransportError::Kex(KexError::BadEphemeralKey)))
    );
}

#[test]
fn rejects_no_common_cipher_and_tells_the_peer() {
    let mut pair = Pair::new(
        only(CipherAlgorithm::Aes128Gcm),
        only(CipherAlgorithm::Aes256Gcm),
    );
    let (_, err) = pair.pump().unwrap_err();
    assert_eq!(
        err,
        TransportError::Kex(KexError::NoCommonAlgorithm(
            kex::Category::CipherClientToServer
        ))
    );
    assert_eq!(
        err.disconnect_reason(),
        Some(DisconnectReason::KeyExchangeFailed)
    );
}

#[test]
fn answers_unknown_transport_message_with_unimplemented() {
    let mut pair = Pair::default();
    pair.handshake();
    let seq = pair.client.sealer.sequence_number();
    pair.client.send_now(&[15, 1, 2, 3]).unwrap();
    deliver(&mut pair.client, &mut pair.server, usize::MAX);
    pair.server.process(pair.now).unwrap();
    // The server's next packet is UNIMPLEMENTED carrying our sequence number.
    let mut opener_probe = Vec::new();
    let before = pair.server.pending_output().len();
    assert!(before > 0);
    opener_probe.extend_from_slice(pair.server.pending_output());
    deliver(&mut pair.server, &mut pair.client, usize::MAX);
    // Peek at what the client decrypts.
    let packet = pair
        .client
        .opener
        .open(&pair.client.rx[pair.client.rx_start..])
        .unwrap()
        .unwrap();
    let mut want = vec![msg::UNIMPLEMENTED];
    want.extend_from_slice(&seq.to_be_bytes());
    assert_eq!(packet.payload, want);
}

#[test]
fn times_out_a_stalled_first_kex() {
    let mut pair = Pair::default();
    let deadline = pair.server.poll_timeout().unwrap();
    assert_eq!(deadline, pair.now + Duration::from_secs(30));
    pair.server
        .handle_timeout(deadline - Duration::from_secs(1))
        .unwrap();
    let out_before = pair.server.pending_output().len();
    assert_eq!(
        pair.server.handle_timeout(deadline),
        Err(TransportError::KexTimeout)
    );
    assert!(
        pair.server.pending_output().len() > out_before,
        "DISCONNECT queued"
    );
    assert_eq!(pair.server.poll_timeout(), None);
    assert_eq!(
        pair.server.process(pair.now),
        Err(TransportError::KexTimeout)
    );
}

#[test]
fn times_out_a_stalled_rekey() {
    let mut pair = Pair::default();
    pair.handshake();
    pair.client.start_rekey(pair.now).unwrap();
    // The server never answers.
    let deadline = pair.client.poll_timeout().unwrap();
    assert_eq!(
        pair.client.handle_timeout(deadline),
        Err(TransportError::KexTimeout)
    );
}

#[test]
fn disconnect_reaches_the_peer_and_closes_both() {
    let mut pair = Pair::default();
    pair.handshake();
    pair.client
        .disconnect(DisconnectReason::ByApplication, "bye");
    assert_eq!(pair.client.process(pair.now), Err(TransportError::Closed));
    assert_eq!(
        pair.client.send_payload(numbered(94, 0, 10), pair.now),
        Err(TransportError::Closed)
    );
    pair.pump().unwrap();
    assert_eq!(
        pair.server_events.last(),
        Some(&Event::Disconnected {
            reason: DisconnectReason::ByApplication,
            description: "bye".into()
        })
    );
}

#[test]
fn rejects_garbage_after_banner_and_tells_the_peer() {
    let now = Instant::now();
    let mut server = transport(
        Role::Server {
            host_key: host_key(),
        },
        TransportConfig::default(),
        now,
    );
    let sent_before = server.pending_output().len();
    let mut bytes = b"SSH-2.0-x\r\n".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    server.feed(&bytes);
    assert!(matches!(
        server.process(now),
        Err(TransportError::Packet(PacketError::TooLong { .. }))
    ));
    assert!(server.pending_output().len() > sent_before);
}

#[test]
fn rejects_non_ssh_client_line() {
    let now = Instant::now();
    let mut server = transport(
        Role::Server {
            host_key: host_key(),
        },
        TransportConfig::default(),
        now,
    );
    server.feed(b"GET / HTTP/1.1\r\n");
    assert_eq!(
        server.process(now),
        Err(TransportError::Version(VersionError::NotAnIdentification))
    );
}

#[test]
fn client_skips_lines_before_the_server_banner_up_to_the_limit() {
    let now = Instant::now();
    let mut client = transport(
        Role::Client {
            pinned_host_key: [0; 32],
        },
        TransportConfig::default(),
        now,
    );
    for _ in 0..version::MAX_PRE_BANNER_LINES {
        client.feed(b"hello\r\n");
    }
    client.feed(b"SSH-2.0-server\r\n");
    assert_eq!(client.process(now), Ok(vec![]));
    assert_eq!(client.peer_version(), Some(&b"SSH-2.0-server"[..]));

    let mut client = transport(
        Role::Client {
            pinned_host_key: [0; 32],
        },
        TransportConfig::default(),
        now,
    );
    for _ in 0..=version::MAX_PRE_BANNER_LINES {
        client.feed(b"hello\r\n");
    }
    assert_eq!(
        client.process(now),
        Err(TransportError::Version(VersionError::TooManyLines))
    );
}

#[test]
fn rejects_higher_layer_message_during_first_kex() {
    let now = Instant::now();
    let mut server = transport(
        Role::Server {
            host_key: host_key(),
        },
        TransportConfig::default(),
        now,
    );
    let mut bytes = b"SSH-2.0-x\r\n".to_vec();
    PacketSealer::new()
        .seal(&[50, 0, 0, 0, 0], &SystemRandom::new(), &mut bytes)
        .unwrap();
    server.feed(&bytes);
    assert_eq!(
        server.process(now),
        Err(TransportError::UnexpectedMessage { message: 50 })
    );
}

#[test]
fn never_panics_on_mutated_handshake_bytes() {
    // Flip one byte at a time in the client's first flight and feed it to a fresh server.
    let now = Instant::now();
    let client = transport(
        Role::Client {
            pinned_host_key: [0; 32],
        },
        TransportConfig::default(),
        now,
    );
    let flight = client.pending_output().to_vec();
    let key_pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    for i in (0..flight.len()).step_by(3) {
        let mut bytes = flight.clone();
        bytes[i] ^= 0x41;
        let key = Ed25519KeyPair::from_pkcs8(key_pkcs8.as_ref()).unwrap();
        let mut server = transport(
            Role::Server { host_key: key },
            TransportConfig::default(),
            now,
        );
        server.feed(&bytes);
        let _ = server.process(now);
    }
}

fn fuzz_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// What the `ssh_transport` fuzz target does with one input; returns the server's events.
fn replay_transport_seed(data: &[u8]) -> Result<Vec<Event>, TransportError> {
    let (&chunk, rest) = data.split_first().unwrap();
    let now = Instant::now();
    let host_key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let mut server = transport(Role::Server { host_key }, TransportConfig::default(), now);
    server.feed(b"SSH-2.0-fuzz\r\n");
    let mut events = server.process(now)?;
    for piece in rest.chunks(usize::from(chunk) + 1) {
        server.feed(piece);
        events.extend(server.process(now)?);
    }
    Ok(events)
}

#[test]
fn replays_fuzz_seeds_without_panicking() {
    for (name, data) in fuzz_seeds("ssh_transport") {
        let result = replay_transport_seed(&data);
        // Seeds are recorded OpenSSH 9.2 first flights (KEXINIT + ECDH_INIT, curve25519): each
        // must be accepted, and the one ending in the client's NEWKEYS must complete the kex.
        let events = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.ends_with("_newkeys.bin") {
            assert!(
                matches!(events.first(), Some(Event::Ready { .. })),
                "{name}: {events:?}"
            );
        }
    }
    for (name, data) in fuzz_seeds("ssh_packet") {
        let (&selector, rest) = data.split_first().unwrap();
        let cipher = [
            None,
            Some(CipherAlgorithm::ChaCha20Poly1305),
            Some(CipherAlgorithm::Aes256Gcm),
            Some(CipherAlgorithm::Aes128Gcm),
        ][usize::from(selector & 3)];
        let (mut sealer, mut opener) = match cipher {
            None => (PacketSealer::new(), PacketOpener::new()),
            Some(c) => (
                PacketSealer::with_keys(c, &vec![0x42; c.key_len()], &vec![0x24; c.iv_len()])
                    .unwrap(),
                PacketOpener::with_keys(c, &vec![0x42; c.key_len()], &vec![0x24; c.iv_len()])
                    .unwrap(),
            ),
        };
        if selector & 4 == 0 {
            let mut buf = rest;
            while let Ok(Some(packet)) = opener.open(buf) {
                buf = &buf[packet.consumed..];
            }
        } else {
            let mut wire = Vec::new();
            sealer.seal(rest, &SystemRandom::new(), &mut wire).unwrap();
            assert_eq!(opener.open(&wire).unwrap().unwrap().payload, rest, "{name}");
        }
    }
}
