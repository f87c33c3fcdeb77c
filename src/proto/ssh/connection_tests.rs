use super::*;

// Byte builders written independently of wire::Writer, so a Writer bug cannot hide in both.
fn u32b(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}
fn s(v: &[u8]) -> Vec<u8> {
    let mut out = u32b(u32::try_from(v.len()).unwrap());
    out.extend_from_slice(v);
    out
}
fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Parses `bytes`, checks it equals `expected`, and that encoding gives back `bytes`.
fn round_trip(bytes: &[u8], expected: &Message<'_>) {
    let parsed = Message::parse(bytes).unwrap();
    assert_eq!(&parsed, expected);
    assert_eq!(parsed.encode(), bytes, "{expected:?}");
    // And every strict prefix is refused (truncation anywhere).
    for cut in 0..bytes.len() {
        assert!(
            Message::parse(&bytes[..cut]).is_err() || is_prefix_valid(expected, cut),
            "prefix {cut} of {expected:?} accepted"
        );
    }
}

/// Messages ending in an opaque tail (unknown request data, success data) legitimately parse
/// when cut inside that tail.
fn is_prefix_valid(m: &Message<'_>, cut: usize) -> bool {
    let tail = match m {
        Message::RequestSuccess { data } => data.len(),
        Message::OpenConfirmation(c) => c.data.len(),
        Message::GlobalRequest(GlobalRequest {
            kind: GlobalRequestKind::Unknown { data, .. },
            ..
        }) => data.len(),
        Message::GlobalRequest(GlobalRequest {
            kind: GlobalRequestKind::HostKeys { .. } | GlobalRequestKind::HostKeysProve { .. },
            ..
        }) => return true, // a shorter list of whole keys is still a list
        Message::ChannelOpen(ChannelOpen {
            kind: ChannelKind::Unknown { data, .. },
            ..
        }) => data.len(),
        Message::ChannelRequest(ChannelRequest {
            kind: ChannelRequestKind::Unknown { data, .. },
            ..
        }) => data.len(),
        _ => 0,
    };
    cut >= m.encode().len() - tail
}

#[test]
fn round_trip_global_requests() {
    round_trip(
        &cat(&[
            vec![80],
            s(b"tcpip-forward"),
            vec![1],
            s(b"localhost"),
            u32b(8080),
        ]),
        &Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::TcpipForward {
                address: b"localhost",
                port: 8080,
            },
        }),
    );
    round_trip(
        &cat(&[
            vec![80],
            s(b"cancel-tcpip-forward"),
            vec![0],
            s(b""),
            u32b(0),
        ]),
        &Message::GlobalRequest(GlobalRequest {
            want_reply: false,
            kind: GlobalRequestKind::CancelTcpipForward {
                address: b"",
                port: 0,
            },
        }),
    );
    round_trip(
        &cat(&[vec![80], s(b"keepalive@openssh.com"), vec![1]]),
        &Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::Keepalive,
        }),
    );
    round_trip(
        &cat(&[vec![80], s(b"no-more-sessions@openssh.com"), vec![0]]),
        &Message::GlobalRequest(GlobalRequest {
            want_reply: false,
            kind: GlobalRequestKind::NoMoreSessions,
        }),
    );
    round_trip(
        &cat(&[
            vec![80],
            s(b"hostkeys-00@openssh.com"),
            vec![0],
            s(b"k1"),
            s(b"k2"),
        ]),
        &Message::GlobalRequest(GlobalRequest {
            want_reply: false,
            kind: GlobalRequestKind::HostKeys {
                keys: vec![b"k1", b"k2"],
            },
        }),
    );
    round_trip(
        &cat(&[
            vec![80],
            s(b"hostkeys-prove-00@openssh.com"),
            vec![1],
            s(b"k1"),
        ]),
        &Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::HostKeysProve { keys: vec![b"k1"] },
        }),
    );
    round_trip(
        &cat(&[
            vec![80],
            s(b"streamlocal-forward@openssh.com"),
            vec![1],
            s(b"/tmp/s"),
        ]),
        &Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::Unknown {
                name: "streamlocal-forward@openssh.com",
                data: &s(b"/tmp/s"),
            },
        }),
    );
}

#[test]
fn round_trip_global_replies() {
    round_trip(&[81], &Message::RequestSuccess { data: b"" });
    round_trip(
        &cat(&[vec![81], u32b(40000)]),
        &Message::RequestSuccess { data: &u32b(40000) },
    );
    round_trip(&[82], &Message::RequestFailure);
}

#[test]
fn round_trip_channel_opens() {
    let head = |t: &[u8]| cat(&[vec![90], s(t), u32b(3), u32b(2 << 20), u32b(32768)]);
    let open = |kind| {
        Message::ChannelOpen(ChannelOpen {
            sender: 3,
            initial_window: 2 << 20,
            max_packet: 32768,
            kind,
        })
    };
    round_trip(&head(b"session"), &open(ChannelKind::Session));
    round_trip(
        &cat(&[
            head(b"direct-tcpip"),
            s(b"db.internal"),
            u32b(5432),
            s(b"127.0.0.1"),
            u32b(50000),
        ]),
        &open(ChannelKind::DirectTcpip {
            host: b"db.internal",
            port: 5432,
            originator: b"127.0.0.1",
            originator_port: 50000,
        }),
    );
    round_trip(
        &cat(&[
            head(b"forwarded-tcpip"),
            s(b"0.0.0.0"),
            u32b(8080),
            s(b"10.0.0.9"),
            u32b(40000),
        ]),
        &open(ChannelKind::ForwardedTcpip {
            address: b"0.0.0.0",
            port: 8080,
            originator: b"10.0.0.9",
            originator_port: 40000,
        }),
    );
    round_trip(
        &cat(&[head(b"x11"), s(b"127.0.0.1"), u32b(6010)]),
        &open(ChannelKind::X11 {
            originator: b"127.0.0.1",
            originator_port: 6010,
        }),
    );
    round_trip(
        &head(b"auth-agent@openssh.com"),
        &open(ChannelKind::AuthAgent),
    );
    round_trip(
        &cat(&[
            head(b"direct-streamlocal@openssh.com"),
            s(b"/run/docker.sock"),
            s(b""),
            u32b(0),
        ]),
        &open(ChannelKind::DirectStreamlocal {
            socket_path: b"/run/docker.sock",
            reserved: b"",
            reserved_port: 0,
        }),
    );
    round_trip(
        &cat(&[
            head(b"forwarded-streamlocal@openssh.com"),
            s(b"/tmp/s"),
            s(b""),
        ]),
        &open(ChannelKind::ForwardedStreamlocal {
            socket_path: b"/tmp/s",
            reserved: b"",
        }),
    );
    round_trip(
        &cat(&[head(b"tun@openssh.com"), u32b(1), u32b(0x7fff_ffff)]),
        &open(ChannelKind::Unknown {
            name: "tun@openssh.com",
            data: &cat(&[u32b(1), u32b(0x7fff_ffff)]),
        }),
    );
}

#[test]
fn round_trip_open_replies_and_channel_messages() {
    round_trip(
        &cat(&[vec![91], u32b(3), u32b(7), u32b(2 << 20), u32b(32768)]),
        &Message::OpenConfirmation(OpenConfirmation {
            recipient: 3,
            sender: 7,
            initial_window: 2 << 20,
            max_packet: 32768,
            data: b"",
        }),
    );
    round_trip(
        &cat(&[vec![92], u32b(3), u32b(2), s(b"connect failed"), s(b"en")]),
        &Message::OpenFailure(OpenFailure {
            recipient: 3,
            reason: OpenFailureReason::ConnectFailed,
            description: b"connect failed",
            language: b"en",
        }),
    );
    round_trip(
        &cat(&[vec![93], u32b(3), u32b(131072)]),
        &Message::WindowAdjust {
            recipient: 3,
            bytes: 131072,
        },
    );
    round_trip(
        &cat(&[vec![94], u32b(3), s(b"hello\n")]),
        &Message::Data {
            recipient: 3,
            data: b"hello\n",
        },
    );
    round_trip(
        &cat(&[vec![95], u32b(3), u32b(1), s(b"oops\n")]),
        &Message::ExtendedData {
            recipient: 3,
            data_type: EXTENDED_DATA_STDERR,
            data: b"oops\n",
        },
    );
    round_trip(&cat(&[vec![96], u32b(3)]), &Message::Eof { recipient: 3 });
    round_trip(&cat(&[vec![97], u32b(3)]), &Message::Close { recipient: 3 });
    round_trip(
        &cat(&[vec![99], u32b(3)]),
        &Message::ChannelSuccess { recipient: 3 },
    );
    round_trip(
        &cat(&[vec![100], u32b(3)]),
        &Message::ChannelFailure { recipient: 3 },
    );
}

#[test]
fn open_failure_reason_codes_round_trip() {
    for code in [1, 2, 3, 4, 0xFE00_0001] {
        assert_eq!(OpenFailureReason::from_code(code).code(), code);
    }
    assert_eq!(
        OpenFailureReason::from_code(1),
        OpenFailureReason::AdministrativelyProhibited
    );
    assert_eq!(
        OpenFailureReason::from_code(4),
        OpenFailureReason::ResourceShortage
    );
}

#[test]
fn round_trip_channel_requests() {
    let head = |t: &[u8], reply: u8| cat(&[vec![98], u32b(9), s(t), vec![reply]]);
    let req = |want_reply, kind| {
        Message::ChannelRequest(ChannelRequest {
            recipient: 9,
            want_reply,
            kind,
        })
    };
    let size = TerminalSize {
        cols: 80,
        rows: 24,
        width_px: 640,
        height_px: 480,
    };
    let size_bytes = cat(&[u32b(80), u32b(24), u32b(640), u32b(480)]);
    // Terminal modes as OpenSSH sends them: VINTR=3, ECHO=1, TTY_OP_ISPEED=38400, TTY_OP_END.
    let modes = cat(&[
        vec![1],
        u32b(3),
        vec![53],
        u32b(1),
        vec![128],
        u32b(38400),
        vec![0],
    ]);
    round_trip(
        &cat(&[
            head(b"pty-req", 1),
            s(b"xterm-256color"),
            size_bytes.clone(),
            s(&modes),
        ]),
        &req(
            true,
            ChannelRequestKind::PtyReq {
                term: b"xterm-256color",
                size,
                modes: &modes,
            },
        ),
    );
    round_trip(
        &cat(&[
            head(b"x11-req", 1),
            vec![0],
            s(b"MIT-MAGIC-COOKIE-1"),
            s(b"abcd"),
            u32b(0),
        ]),
        &req(
            true,
            ChannelRequestKind::X11Req {
                single_connection: false,
                auth_protocol: b"MIT-MAGIC-COOKIE-1",
                auth_cookie: b"abcd",
                screen: 0,
            },
        ),
    );
    round_trip(
        &cat(&[head(b"env", 0), s(b"LANG"), s(b"C.UTF-8")]),
        &req(
            false,
            ChannelRequestKind::Env {
                name: b"LANG",
                value: b"C.UTF-8",
            },
        ),
    );
    round_trip(&head(b"shell", 1), &req(true, ChannelRequestKind::Shell));
    round_trip(
        &cat(&[head(b"exec", 1), s(b"scp -t /tmp")]),
        &req(
            true,
            ChannelRequestKind::Exec {
                command: b"scp -t /tmp",
            },
        ),
    );
    round_trip(
        &cat(&[head(b"subsystem", 1), s(b"sftp")]),
        &req(true, ChannelRequestKind::Subsystem { name: b"sftp" }),
    );
    round_trip(
        &cat(&[head(b"window-change", 0), size_bytes]),
        &req(false, ChannelRequestKind::WindowChange { size }),
    );
    round_trip(
        &cat(&[head(b"xon-xoff", 0), vec![1]]),
        &req(
            false,
            ChannelRequestKind::XonXoff {
                client_can_do: true,
            },
        ),
    );
    round_trip(
        &cat(&[head(b"signal", 0), s(b"INT")]),
        &req(false, ChannelRequestKind::Signal { name: "INT" }),
    );
    round_trip(
        &cat(&[head(b"exit-status", 0), u32b(127)]),
        &req(false, ChannelRequestKind::ExitStatus { status: 127 }),
    );
    round_trip(
        &cat(&[
            head(b"exit-signal", 0),
            s(b"KILL"),
            vec![1],
            s(b"killed"),
            s(b""),
        ]),
        &req(
            false,
            ChannelRequestKind::ExitSignal {
                signal: "KILL",
                core_dumped: true,
                message: b"killed",
                language: b"",
            },
        ),
    );
    round_trip(
        &cat(&[head(b"break", 1), u32b(500)]),
        &req(true, ChannelRequestKind::Break { length_ms: 500 }),
    );
    round_trip(
        &head(b"auth-agent-req@openssh.com", 0),
        &req(false, ChannelRequestKind::AuthAgentReq),
    );
    round_trip(
        &head(b"eow@openssh.com", 0),
        &req(false, ChannelRequestKind::Eow),
    );
    round_trip(
        &head(b"keepalive@openssh.com", 1),
        &req(true, ChannelRequestKind::Keepalive),
    );
    round_trip(
        &cat(&[head(b"foo@example.com", 1), vec![1, 2, 3]]),
        &req(
            true,
            ChannelRequestKind::Unknown {
                name: "foo@example.com",
                data: &[1, 2, 3],
            },
        ),
    );
}

#[test]
fn data_is_borrowed_from_the_payload() {
    let bytes = cat(&[vec![94], u32b(0), s(b"payload bytes")]);
    let Message::Data { data, .. } = Message::parse(&bytes).unwrap() else {
        panic!("not data")
    };
    // The slice points into the payload: no copy was made.
    assert!(std::ptr::eq(data.as_ptr(), bytes[9..].as_ptr()));
}

#[test]
fn rejects_empty_and_non_connection_messages() {
    assert_eq!(Message::parse(&[]), Err(DecodeError::Empty));
    assert_eq!(
        Message::parse(&[20]),
        Err(DecodeError::NotConnectionMessage(20))
    );
    assert_eq!(
        Message::parse(&cat(&[vec![101], u32b(0)])),
        Err(DecodeError::NotConnectionMessage(101))
    );
}

#[test]
fn rejects_truncated_messages() {
    assert_eq!(
        Message::parse(&cat(&[vec![94], u32b(0), u32b(10), b"short".to_vec()])),
        Err(DecodeError::Wire(WireError::Truncated))
    );
    assert_eq!(
        Message::parse(&[97, 0, 0]),
        Err(DecodeError::Wire(WireError::Truncated))
    );
    assert_eq!(
        Message::parse(&cat(&[vec![98], u32b(0), s(b"exec"), vec![1]])),
        Err(DecodeError::Wire(WireError::Truncated))
    );
}

#[test]
fn rejects_trailing_bytes_after_known_messages() {
    for bytes in [
        cat(&[vec![96], u32b(0), vec![0]]),
        cat(&[vec![82], vec![0]]),
        cat(&[vec![98], u32b(0), s(b"shell"), vec![1], vec![0]]),
        cat(&[vec![80], s(b"keepalive@openssh.com"), vec![1], vec![0]]),
        cat(&[vec![90], s(b"session"), u32b(0), u32b(0), u32b(0), vec![0]]),
    ] {
        assert_eq!(
            Message::parse(&bytes),
            Err(DecodeError::Wire(WireError::TrailingBytes)),
            "{bytes:?}"
        );
    }
}

#[test]
fn rejects_oversized_fields() {
    let long_command = vec![b'a'; MAX_EXEC_COMMAND + 1];
    assert_eq!(
        Message::parse(&cat(&[
            vec![98],
            u32b(0),
            s(b"exec"),
            vec![1],
            s(&long_command)
        ])),
        Err(DecodeError::FieldTooLong {
            field: "exec command",
            max: MAX_EXEC_COMMAND
        })
    );
    let ok_command = vec![b'a'; MAX_EXEC_COMMAND];
    assert!(Message::parse(&cat(&[
        vec![98],
        u32b(0),
        s(b"exec"),
        vec![1],
        s(&ok_command)
    ]))
    .is_ok());
    let modes = vec![0u8; MAX_TERMINAL_MODES + 1];
    assert!(matches!(
        Message::parse(&cat(&[
            vec![98],
            u32b(0),
            s(b"pty-req"),
            vec![1],
            s(b"xterm"),
            u32b(80),
            u32b(24),
            u32b(0),
            u32b(0),
            s(&modes)
        ])),
        Err(DecodeError::FieldTooLong {
            field: "terminal modes",
            ..
        })
    ));
    let value = vec![b'v'; MAX_ENV_VALUE + 1];
    assert!(matches!(
        Message::parse(&cat(&[
            vec![98],
            u32b(0),
            s(b"env"),
            vec![0],
            s(b"X"),
            s(&value)
        ])),
        Err(DecodeError::FieldTooLong {
            field: "env value",
            ..
        })
    ));
    let name = vec![b'N'; MAX_ENV_NAME + 1];
    assert!(matches!(
        Message::parse(&cat(&[
            vec![98],
            u32b(0),
            s(b"env"),
            vec![0],
            s(&name),
            s(b"v")
        ])),
        Err(DecodeError::FieldTooLong {
            field: "env name",
            ..
        })
    ));
    let host = vec![b'h'; MAX_HOST + 1];
    assert!(matches!(
        Message::parse(&cat(&[
            vec![80],
            s(b"tcpip-forward"),
            vec![1],
            s(&host),
            u32b(1)
        ])),
        Err(DecodeError::FieldTooLong { .. })
    ));
    let keys: Vec<Vec<u8>> = (0..=MAX_HOST_KEYS).map(|_| s(b"k")).collect();
    assert_eq!(
        Message::parse(&cat(&[
            vec![80],
            s(b"hostkeys-00@openssh.com"),
            vec![0],
            keys.concat()
        ])),
        Err(DecodeError::TooManyHostKeys)
    );
    let opaque = vec![0u8; MAX_OPAQUE + 1];
    assert!(matches!(
        Message::parse(&cat(&[vec![98], u32b(0), s(b"x@y"), vec![0], opaque])),
        Err(DecodeError::FieldTooLong { .. })
    ));
    // A length field larger than anything wire accepts.
    assert_eq!(
        Message::parse(&cat(&[vec![94], u32b(0), u32b(0xFFFF_FFFF)])),
        Err(DecodeError::Wire(WireError::TooLong))
    );
}

#[test]
fn rejects_bad_names_and_booleans() {
    let long = vec![b'a'; MAX_NAME + 1];
    for name in [
        &b""[..],
        &long,
        b"has space",
        b"ctl\x01",
        b"\xc3\xa9t\xc3\xa9",
    ] {
        assert_eq!(
            Message::parse(&cat(&[vec![80], s(name), vec![0]])),
            Err(DecodeError::BadName),
            "{name:?}"
        );
        assert_eq!(
            Message::parse(&cat(&[vec![98], u32b(0), s(name), vec![0]])),
            Err(DecodeError::BadName)
        );
    }
    assert_eq!(
        Message::parse(&cat(&[vec![98], u32b(0), s(b"shell"), vec![2]])),
        Err(DecodeError::Wire(WireError::NonCanonical))
    );
    assert_eq!(
        Message::parse(&cat(&[
            vec![98],
            u32b(0),
            s(b"signal"),
            vec![0],
            s(b"I NT")
        ])),
        Err(DecodeError::BadName)
    );
}

#[test]
fn non_utf8_commands_and_values_are_kept_as_bytes() {
    let bytes = cat(&[vec![98], u32b(0), s(b"exec"), vec![1], s(b"cat caf\xe9")]);
    assert_eq!(
        Message::parse(&bytes).unwrap(),
        Message::ChannelRequest(ChannelRequest {
            recipient: 0,
            want_reply: true,
            kind: ChannelRequestKind::Exec {
                command: b"cat caf\xe9"
            },
        })
    );
}

#[test]
fn recipient_is_read_and_rewritten_in_place() {
    let mut bytes = cat(&[vec![98], u32b(5), s(b"shell"), vec![1]]);
    assert_eq!(recipient_of(&bytes), Some(5));
    assert!(set_recipient(&mut bytes, 0x0102_0304));
    assert_eq!(&bytes[1..5], &[1, 2, 3, 4]);
    assert_eq!(recipient_of(&[90, 0, 0, 0, 1]), None);
    assert_eq!(recipient_of(&[97, 0, 0]), None);
    let mut global = vec![80, 0, 0, 0, 0];
    assert!(!set_recipient(&mut global, 1));
    assert_eq!(global, vec![80, 0, 0, 0, 0]);
}

#[test]
fn garbage_never_panics() {
    // A deterministic xorshift over short random payloads with every message number.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = usize::try_from(x % 48).unwrap();
        let mut payload: Vec<u8> = (0..len)
            .map(|i| u8::try_from((x >> (i % 56)) & 0xff).unwrap())
            .collect();
        if let Some(first) = payload.first_mut() {
            *first = 80 + u8::try_from(x % 22).unwrap();
        }
        if let Ok(m) = Message::parse(&payload) {
            // Whatever parses re-encodes to the same bytes.
            assert_eq!(m.encode(), payload);
        }
    }
}
