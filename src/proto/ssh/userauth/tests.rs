use super::*;
use crate::proto::ssh::keyfile::{generate_host_key, PrivateKey};
use crate::proto::ssh::keys::{PublicKey, SignatureAlgorithm};
use ring::rand::SystemRandom;

const SESSION_ID: &[u8] = b"\x01session-id-from-the-first-kex-H";
const USER: &str = "alice%db-prod";
const TOKEN: &str = "pct_s3cr3t_token_value";

fn server() -> ServerAuth {
    ServerAuth::new(SESSION_ID, ServerAuthConfig::default())
}

fn key() -> PrivateKey {
    generate_host_key(&SystemRandom::new(), "client").unwrap().0
}

/// Feeds `payload` and expects a reply; returns the state and the reply.
fn reply(auth: ServerAuth, payload: &[u8]) -> (ServerAuth, Vec<u8>) {
    match auth.handle(payload).unwrap() {
        ServerStep::Reply { auth, reply } => (auth, reply),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn failure_of(reply: &[u8]) -> Failure {
    decode_failure(reply).unwrap()
}

fn password_request(secret: &str) -> Vec<u8> {
    encode_password_request(USER, SERVICE_CONNECTION, &Secret::new(secret))
}

#[test]
fn round_trip_signed_publickey_between_client_and_server() {
    let key = key();
    let rng = SystemRandom::new();
    let (client, request) = ClientAuth::publickey(SESSION_ID, USER, &key, None, &rng).unwrap();
    let check = match server().handle(&request).unwrap() {
        ServerStep::CheckPublicKey(check) => check,
        other => panic!("{other:?}"),
    };
    assert!(!check.is_query());
    assert_eq!(check.user(), USER);
    assert_eq!(check.key(), key.public_key());
    let ServerStep::Authenticated { reply, outcome } = check.accept() else {
        panic!("signed request accepted must authenticate");
    };
    assert_eq!(reply, [SSH_MSG_USERAUTH_SUCCESS]);
    assert_eq!(outcome.user, USER);
    assert_eq!(outcome.method, AuthMethod::PublicKey);
    assert_eq!(
        outcome.credential,
        Credential::PublicKey(key.public_key().clone())
    );
    assert!(matches!(
        client.handle(&reply).unwrap(),
        ClientStep::Success
    ));
}

#[test]
fn accepts_publickey_query_with_pk_ok_then_signed_request() {
    let key = key();
    let blob = key.public_key().to_blob();
    let query = encode_publickey_request(USER, SERVICE_CONNECTION, "ssh-ed25519", &blob, None);
    let ServerStep::CheckPublicKey(check) = server().handle(&query).unwrap() else {
        panic!("query must ask the caller");
    };
    assert!(check.is_query());
    let ServerStep::Reply { auth, reply } = check.accept() else {
        panic!("accepted query must answer PK_OK");
    };
    assert_eq!(reply, encode_pk_ok(b"ssh-ed25519", &blob));
    assert_eq!(auth.failures(), 0);
    let (_, signed) =
        ClientAuth::publickey(SESSION_ID, USER, &key, None, &SystemRandom::new()).unwrap();
    assert!(matches!(
        auth.handle(&signed).unwrap(),
        ServerStep::CheckPublicKey(c) if !c.is_query()
    ));
}

#[test]
fn rejects_signature_made_for_another_session() {
    let key = key();
    let (_, request) =
        ClientAuth::publickey(b"other session", USER, &key, None, &SystemRandom::new()).unwrap();
    let (auth, reply) = reply(server(), &request);
    assert_eq!(failure_of(&reply).methods.len(), 3);
    assert_eq!(auth.failures(), 1);
}

#[test]
fn rejects_signature_by_another_key() {
    let key = key();
    let other = self::key();
    let blob = key.public_key().to_blob();
    let data = publickey_signed_data(SESSION_ID, USER, SERVICE_CONNECTION, b"ssh-ed25519", &blob);
    let sig = other
        .sign(&data, SignatureAlgorithm::Ed25519, &SystemRandom::new())
        .unwrap();
    let request =
        encode_publickey_request(USER, SERVICE_CONNECTION, "ssh-ed25519", &blob, Some(&sig));
    let (auth, _) = reply(server(), &request);
    assert_eq!(auth.failures(), 1);
}

#[test]
fn rejects_sha1_and_mismatched_algorithms_without_asking() {
    let key = key();
    let blob = key.public_key().to_blob();
    let mut auth = server();
    for alg in ["ssh-rsa", "rsa-sha2-256", "ssh-dss", "ecdsa-sha2-nistp256"] {
        let query = encode_publickey_request(USER, SERVICE_CONNECTION, alg, &blob, None);
        let (next, r) = reply(auth, &query);
        assert_eq!(r[0], SSH_MSG_USERAUTH_FAILURE, "{alg}");
        auth = next;
    }
    assert_eq!(auth.failures(), 4);
    // An unsupported key type (a certificate) is a failure too, not a protocol error.
    let mut w = crate::proto::ssh::wire::Writer::new();
    w.string(b"ssh-ed25519-cert-v01@openssh.com")
        .string(&[0; 32]);
    let query = encode_publickey_request(
        USER,
        SERVICE_CONNECTION,
        "ssh-ed25519-cert-v01@openssh.com",
        w.as_bytes(),
        None,
    );
    let (auth, _) = reply(auth, &query);
    assert_eq!(auth.failures(), 5);
}

#[test]
fn password_goes_to_the_caller_and_never_shows_in_debug() {
    let step = server().handle(&password_request(TOKEN)).unwrap();
    assert!(!format!("{step:?}").contains(TOKEN));
    let ServerStep::CheckPassword(check) = step else {
        panic!("password must ask the caller");
    };
    assert_eq!(check.user(), USER);
    assert_eq!(check.secret().expose(), TOKEN);
    assert_eq!(check.method(), AuthMethod::Password);
    let step = check.accept();
    assert!(!format!("{step:?}").contains(TOKEN));
    let ServerStep::Authenticated { outcome, .. } = step else {
        panic!("accepted password must authenticate");
    };
    assert_eq!(outcome.credential, Credential::Secret(Secret::new(TOKEN)));
    let request = password_request(TOKEN);
    let decoded = decode_userauth_request(&request).unwrap();
    assert!(!format!("{decoded:?}").contains(TOKEN));
}

#[test]
fn rejects_password_change_request_without_asking() {
    let mut w = crate::proto::ssh::wire::Writer::message(SSH_MSG_USERAUTH_REQUEST);
    w.string(USER.as_bytes())
        .string(SERVICE_CONNECTION.as_bytes())
        .string(b"password")
        .bool(true)
        .string(b"old")
        .string(b"new");
    let (auth, r) = reply(server(), w.as_bytes());
    assert_eq!(r[0], SSH_MSG_USERAUTH_FAILURE);
    assert_eq!(auth.failures(), 1);
}

#[test]
fn keyboard_interactive_prompts_for_token_with_echo_off() {
    let request = encode_keyboard_interactive_request(USER, SERVICE_CONNECTION, "");
    let (auth, info) = reply(server(), &request);
    assert_eq!(info, encode_info_request("", "", &[("Token: ", false)]));
    // Byte layout of that INFO_REQUEST (RFC 4256 §3.2): name, instruction, language, 1 prompt.
    let mut expected = vec![
        60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7,
    ];
    expected.extend_from_slice(b"Token: ");
    expected.push(0);
    assert_eq!(info, expected);
    let response = encode_info_response(&[&Secret::new(TOKEN)]);
    let ServerStep::CheckPassword(check) = auth.handle(&response).unwrap() else {
        panic!("response must ask the caller");
    };
    assert_eq!(check.method(), AuthMethod::KeyboardInteractive);
    assert_eq!(check.secret().expose(), TOKEN);
    let ServerStep::Reply { auth, reply } = check.reject() else {
        panic!("first rejection is a failure reply");
    };
    assert_eq!(
        reply,
        encode_failure(&ServerAuthConfig::default().methods, false)
    );
    assert_eq!(auth.failures(), 1);
    // After the failure, a second INFO_RESPONSE is out of place.
    assert_eq!(
        auth.handle(&response).unwrap_err(),
        AuthError::UnexpectedMessage(SSH_MSG_USERAUTH_INFO_RESPONSE)
    );
}

#[test]
fn rejects_info_response_with_wrong_count() {
    let request = encode_keyboard_interactive_request(USER, SERVICE_CONNECTION, "");
    let (auth, _) = reply(server(), &request);
    let two = encode_info_response(&[&Secret::new("a"), &Secret::new("b")]);
    let (auth, r) = reply(auth, &two);
    assert_eq!(r[0], SSH_MSG_USERAUTH_FAILURE);
    assert_eq!(auth.failures(), 1);
    let (auth, _) = reply(auth, &request);
    let (auth, _) = reply(auth, &encode_info_response(&[]));
    assert_eq!(auth.failures(), 2);
}

#[test]
fn rejects_info_response_before_any_prompt() {
    let response = encode_info_response(&[&Secret::new(TOKEN)]);
    assert_eq!(
        server().handle(&response).unwrap_err(),
        AuthError::UnexpectedMessage(SSH_MSG_USERAUTH_INFO_RESPONSE)
    );
}

#[test]
fn none_probes_do_not_count_but_requests_are_bounded() {
    let none = encode_none_request(USER, SERVICE_CONNECTION);
    let mut auth = server();
    for _ in 0..32 {
        let (next, r) = reply(auth, &none);
        assert_eq!(
            failure_of(&r),
            Failure {
                methods: vec![
                    "publickey".into(),
                    "password".into(),
                    "keyboard-interactive".into()
                ],
                partial_success: false
            }
        );
        auth = next;
    }
    assert_eq!(auth.failures(), 0);
    let err = auth.handle(&none).unwrap_err();
    assert_eq!(err, AuthError::TooManyRequests);
    assert_eq!(err.disconnect_reason(), 14);
}

#[test]
fn sixth_failure_disconnects_with_no_more_auth_methods() {
    let mut auth = server();
    for attempt in 1..=6 {
        let ServerStep::CheckPassword(check) = auth.handle(&password_request("wrong")).unwrap()
        else {
            panic!("password must ask the caller");
        };
        match check.reject() {
            ServerStep::Reply { auth: next, .. } if attempt < 6 => auth = next,
            ServerStep::Disconnect(d) if attempt == 6 => {
                assert_eq!(d.reason, DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE);
                return;
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    unreachable!();
}

#[test]
fn rejects_change_of_user_or_service() {
    let (auth, _) = reply(server(), &encode_none_request(USER, SERVICE_CONNECTION));
    assert_eq!(
        auth.handle(&encode_none_request("bob", SERVICE_CONNECTION))
            .unwrap_err(),
        AuthError::UserOrServiceChanged
    );
    let err = server()
        .handle(&encode_none_request(USER, "ssh-userauth"))
        .unwrap_err();
    assert_eq!(err, AuthError::ServiceNotAvailable("ssh-userauth".into()));
    assert_eq!(err.disconnect_reason(), DISCONNECT_SERVICE_NOT_AVAILABLE);
}

#[test]
fn rejects_oversized_and_control_character_user_names() {
    let long = "a".repeat(MAX_USER_NAME + 1);
    assert_eq!(
        server()
            .handle(&encode_none_request(&long, SERVICE_CONNECTION))
            .unwrap_err(),
        AuthError::FieldTooLong("user name")
    );
    let err = server()
        .handle(&encode_none_request("alice\x1b[2J", SERVICE_CONNECTION))
        .unwrap_err();
    assert_eq!(err, AuthError::IllegalUserName);
    assert_eq!(err.disconnect_reason(), DISCONNECT_ILLEGAL_USER_NAME);
    let long_secret = "x".repeat(MAX_SECRET + 1);
    assert_eq!(
        server()
            .handle(&password_request(&long_secret))
            .unwrap_err(),
        AuthError::FieldTooLong("password")
    );
}

#[test]
fn disabled_methods_fail_without_asking() {
    let config = ServerAuthConfig {
        methods: vec![AuthMethod::PublicKey],
        ..ServerAuthConfig::default()
    };
    let auth = ServerAuth::new(SESSION_ID, config);
    let (auth, r) = reply(auth, &password_request(TOKEN));
    assert_eq!(failure_of(&r).methods, vec!["publickey".to_string()]);
    let request = encode_keyboard_interactive_request(USER, SERVICE_CONNECTION, "");
    let (auth, _) = reply(auth, &request);
    assert_eq!(auth.failures(), 2);
}

#[test]
fn rejects_unexpected_and_trailing_bytes() {
    assert_eq!(
        server().handle(&[SSH_MSG_USERAUTH_SUCCESS]).unwrap_err(),
        AuthError::UnexpectedMessage(SSH_MSG_USERAUTH_SUCCESS)
    );
    assert!(server().handle(&[]).is_err());
    let mut request = encode_none_request(USER, SERVICE_CONNECTION);
    request.push(0);
    assert_eq!(
        server().handle(&request).unwrap_err(),
        AuthError::Malformed(WireError::TrailingBytes)
    );
    // Unknown methods skip their fields and fail.
    let mut w = crate::proto::ssh::wire::Writer::message(SSH_MSG_USERAUTH_REQUEST);
    w.string(USER.as_bytes())
        .string(SERVICE_CONNECTION.as_bytes())
        .string(b"hostbased")
        .string(b"whatever");
    let (auth, _) = reply(server(), w.as_bytes());
    assert_eq!(auth.failures(), 1);
}

#[test]
fn client_chooses_rsa_sha2_from_server_sig_algs() {
    let rsa = PublicKey::Rsa {
        n: vec![0xc1; 256],
        e: vec![1, 0, 1],
    };
    assert_eq!(
        choose_signature_algorithm(&rsa, Some(&["ssh-ed25519", "rsa-sha2-256"])),
        Ok(SignatureAlgorithm::RsaSha256)
    );
    assert_eq!(
        choose_signature_algorithm(&rsa, Some(&["rsa-sha2-256", "rsa-sha2-512"])),
        Ok(SignatureAlgorithm::RsaSha512)
    );
    assert_eq!(
        choose_signature_algorithm(&rsa, None),
        Ok(SignatureAlgorithm::RsaSha512)
    );
    assert_eq!(
        choose_signature_algorithm(&rsa, Some(&["ssh-rsa"])),
        Err(AuthError::NoCommonSignatureAlgorithm)
    );
    assert_eq!(
        choose_signature_algorithm(&PublicKey::Ed25519([1; 32]), Some(&["ssh-rsa"])),
        Ok(SignatureAlgorithm::Ed25519)
    );
}

#[test]
fn client_reports_allowed_methods_and_passes_banners() {
    let (client, request) = ClientAuth::password("root", &Secret::new("pw"));
    assert_eq!(
        decode_userauth_request(&request).unwrap().method,
        MethodRequest::Password {
            password: "pw",
            new_password: None
        }
    );
    let ClientStep::Banner { auth, message } = client
        .handle(&encode_banner("Authorized use only\n"))
        .unwrap()
    else {
        panic!("banner expected");
    };
    assert_eq!(message, "Authorized use only\n");
    let ClientStep::Refused(refusal) = auth
        .handle(&encode_failure(&[AuthMethod::PublicKey], false))
        .unwrap()
    else {
        panic!("refusal expected");
    };
    assert_eq!(
        refusal.to_string(),
        "target refused password authentication (it allows: publickey)"
    );
    let (client, _) = ClientAuth::password("root", &Secret::new("pw"));
    assert!(matches!(
        client.handle(&[SSH_MSG_USERAUTH_PASSWD_CHANGEREQ, 0, 0, 0, 0, 0, 0, 0, 0]),
        Ok(ClientStep::Refused(Refusal::PasswordChangeRequested))
    ));
    let (client, _) =
        ClientAuth::publickey(SESSION_ID, "root", &key(), None, &SystemRandom::new()).unwrap();
    assert_eq!(
        client.handle(&[SSH_MSG_USERAUTH_PK_OK]).unwrap_err(),
        AuthError::UnexpectedMessage(SSH_MSG_USERAUTH_PK_OK)
    );
}

#[test]
fn round_trip_codec_messages() {
    let failure = encode_failure(&[AuthMethod::PublicKey, AuthMethod::Password], true);
    assert_eq!(
        failure,
        b"\x33\x00\x00\x00\x12publickey,password\x01".to_vec()
    );
    assert_eq!(
        decode_failure(&failure).unwrap(),
        Failure {
            methods: vec!["publickey".into(), "password".into()],
            partial_success: true
        }
    );
    assert_eq!(decode_banner(&encode_banner("hi")).unwrap(), "hi");
    let req = encode_service_request(SERVICE_USERAUTH);
    assert_eq!(req, b"\x05\x00\x00\x00\x0cssh-userauth".to_vec());
    assert_eq!(
        decode_service(&req, SSH_MSG_SERVICE_REQUEST).unwrap(),
        SERVICE_USERAUTH
    );
    assert_eq!(
        decode_service(
            &encode_service_accept(SERVICE_USERAUTH),
            SSH_MSG_SERVICE_ACCEPT
        )
        .unwrap(),
        SERVICE_USERAUTH
    );
    assert_eq!(
        decode_info_response(&encode_info_response(&[&Secret::new("x")])).unwrap(),
        vec!["x"]
    );
    let query = encode_publickey_request("u", "s", "ssh-ed25519", b"blob", None);
    assert_eq!(
        decode_userauth_request(&query).unwrap(),
        UserauthRequest {
            user: "u",
            service: "s",
            method: MethodRequest::PublicKey {
                algorithm: b"ssh-ed25519",
                key_blob: b"blob",
                signature: None
            }
        }
    );
}

#[test]
fn signed_data_matches_rfc4252_layout() {
    let data = publickey_signed_data(b"H", "u", "ssh-connection", b"ssh-ed25519", b"K");
    let mut expected = vec![0, 0, 0, 1, b'H', 50, 0, 0, 0, 1, b'u', 0, 0, 0, 14];
    expected.extend_from_slice(b"ssh-connection");
    expected.extend_from_slice(&[0, 0, 0, 9]);
    expected.extend_from_slice(b"publickey");
    expected.push(1);
    expected.extend_from_slice(&[0, 0, 0, 11]);
    expected.extend_from_slice(b"ssh-ed25519");
    expected.extend_from_slice(&[0, 0, 0, 1, b'K']);
    assert_eq!(data, expected);
}

/// Property-style: random single-byte mutations and truncations of valid payloads never panic
/// the server, and every outcome is one of the documented ones.
#[test]
fn mutated_requests_never_panic() {
    let key = key();
    let (_, signed) =
        ClientAuth::publickey(SESSION_ID, USER, &key, None, &SystemRandom::new()).unwrap();
    let seeds = [
        signed,
        password_request(TOKEN),
        encode_keyboard_interactive_request(USER, SERVICE_CONNECTION, ""),
        encode_none_request(USER, SERVICE_CONNECTION),
        encode_info_response(&[&Secret::new(TOKEN)]),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let seed = &seeds[usize::try_from(next() % 5).unwrap()];
        let mut payload = seed.clone();
        let at = usize::try_from(next()).unwrap() % payload.len();
        match next() % 3 {
            0 => payload[at] ^= u8::try_from(next() % 255 + 1).unwrap(),
            1 => payload.truncate(at),
            _ => payload.insert(at, u8::try_from(next() % 256).unwrap()),
        }
        // Start a keyboard-interactive round first so INFO_RESPONSE mutations reach the parser.
        let (auth, _) = reply(
            server(),
            &encode_keyboard_interactive_request(USER, SERVICE_CONNECTION, ""),
        );
        let _ = auth.handle(&payload);
    }
}

/// Replays fuzz/seeds/ssh_userauth (records `[decision][u16 len][payload]`, see the target) so
/// the seeds stay meaningful: each must reach the outcome its name promises.
#[test]
fn replays_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ssh_userauth");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut auth = server();
        let mut rest = bytes.as_slice();
        let mut last = "";
        while let [decision, hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
            let (payload, next) = tail.split_at(len);
            rest = next;
            let step = match auth.handle(payload).unwrap() {
                ServerStep::CheckPublicKey(c) if decision & 1 == 1 => c.accept(),
                ServerStep::CheckPassword(c) if decision & 1 == 1 => c.accept(),
                ServerStep::CheckPublicKey(c) => c.reject(),
                ServerStep::CheckPassword(c) => c.reject(),
                other => other,
            };
            match step {
                ServerStep::Reply { auth: next, reply } => {
                    last = if reply[0] == 60 { "60" } else { "failure" };
                    auth = next;
                }
                ServerStep::Authenticated { .. } => {
                    last = "authenticated";
                    break;
                }
                ServerStep::Disconnect(_) => {
                    last = "disconnect";
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let expected = match name {
            "none_then_password.bin" | "keyboard_interactive.bin" => "authenticated",
            // The signature in the seed is zeros: PK_OK for the query, then a failure.
            "publickey_query_then_signed.bin" => "failure",
            "failures.bin" => "disconnect",
            _ => continue,
        };
        assert_eq!(last, expected, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 4, "seeds missing in {}", dir.display());
}
