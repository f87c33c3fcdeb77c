//! An in-memory harness: a fake client connection and a fake upstream connection exchange
//! payloads with the relay (no transport), bounded in steps, never sleeping.

use super::*;
use crate::proto::ssh::connection::{msg, MAX_EXEC_COMMAND};

const DOWN: Side = Side::Downstream;
const UP: Side = Side::Upstream;
const MIB: u32 = 1024 * 1024;

/// Everything the relay sent to one side, decoded into owned form for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Open {
        kind: String,
        sender: u32,
        window: u32,
        max_packet: u32,
    },
    Confirm {
        recipient: u32,
        sender: u32,
        window: u32,
        max_packet: u32,
    },
    OpenFailure {
        recipient: u32,
        reason: OpenFailureReason,
    },
    Adjust(u32, u32),
    Data(u32, Vec<u8>),
    Stderr(u32, Vec<u8>),
    Eof(u32),
    Close(u32),
    Request {
        recipient: u32,
        name: String,
        want_reply: bool,
        payload: Vec<u8>,
    },
    Success(u32),
    Failure(u32),
    GlobalRequest(String, bool),
    GlobalSuccess(Vec<u8>),
    GlobalFailure,
}

fn decode(payload: &[u8]) -> Got {
    match Message::parse(payload).expect("relay sent a malformed payload") {
        Message::ChannelOpen(o) => Got::Open {
            kind: o.kind.name().to_string(),
            sender: o.sender,
            window: o.initial_window,
            max_packet: o.max_packet,
        },
        Message::OpenConfirmation(c) => Got::Confirm {
            recipient: c.recipient,
            sender: c.sender,
            window: c.initial_window,
            max_packet: c.max_packet,
        },
        Message::OpenFailure(f) => Got::OpenFailure {
            recipient: f.recipient,
            reason: f.reason,
        },
        Message::WindowAdjust { recipient, bytes } => Got::Adjust(recipient, bytes),
        Message::Data { recipient, data } => Got::Data(recipient, data.to_vec()),
        Message::ExtendedData {
            recipient, data, ..
        } => Got::Stderr(recipient, data.to_vec()),
        Message::Eof { recipient } => Got::Eof(recipient),
        Message::Close { recipient } => Got::Close(recipient),
        Message::ChannelRequest(r) => Got::Request {
            recipient: r.recipient,
            name: r.kind.name().to_string(),
            want_reply: r.want_reply,
            payload: payload.to_vec(),
        },
        Message::ChannelSuccess { recipient } => Got::Success(recipient),
        Message::ChannelFailure { recipient } => Got::Failure(recipient),
        Message::GlobalRequest(g) => Got::GlobalRequest(g.kind.name().to_string(), g.want_reply),
        Message::RequestSuccess { data } => Got::GlobalSuccess(data.to_vec()),
        Message::RequestFailure => Got::GlobalFailure,
    }
}

struct Harness {
    relay: Relay,
    events: Vec<Event>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(RelayConfig::default())
    }

    fn with(config: RelayConfig) -> Harness {
        Harness {
            relay: Relay::new(config),
            events: Vec::new(),
        }
    }

    fn send(&mut self, from: Side, m: Message<'_>) {
        self.relay.handle(from, &m.encode()).unwrap();
        self.relay.check_invariants().unwrap();
    }

    /// Everything the relay has for `to` right now.
    fn take(&mut self, to: Side) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(p) = self.relay.poll_transmit(to) {
            out.push(decode(&p));
            assert!(out.len() < 100_000, "poll_transmit never ends");
        }
        self.relay.check_invariants().unwrap();
        out
    }

    fn drain_events(&mut self) -> Vec<Event> {
        while let Some(e) = self.relay.poll_event() {
            self.events.push(e);
        }
        std::mem::take(&mut self.events)
    }

    fn decisions(&mut self) -> Vec<Decision> {
        self.drain_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Decide(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// The one pending decision.
    fn decision(&mut self) -> Decision {
        let mut d = self.decisions();
        assert_eq!(d.len(), 1, "{d:?}");
        d.remove(0)
    }

    /// Client opens a session with its channel number `client_id`; upstream confirms with
    /// `upstream_id`. Returns the relay's channel number.
    fn open_session(&mut self, client_id: u32, upstream_id: u32) -> u32 {
        self.open_session_with(
            client_id,
            upstream_id,
            2 * MIB,
            32 * 1024,
            2 * MIB,
            32 * 1024,
        )
    }

    fn open_session_with(
        &mut self,
        client_id: u32,
        upstream_id: u32,
        client_window: u32,
        client_packet: u32,
        upstream_window: u32,
        upstream_packet: u32,
    ) -> u32 {
        self.send(DOWN, open_msg(client_id, client_window, client_packet));
        let d = self.decision();
        assert!(matches!(
            d.subject().unwrap(),
            Subject::Open(ChannelOpen {
                kind: ChannelKind::Session,
                ..
            })
        ));
        let id = d.channel().unwrap().0;
        self.relay.decide(d.ticket(), Verdict::Allow).unwrap();
        let up = self.take(UP);
        assert!(
            matches!(&up[..], [Got::Open { kind, sender, .. }] if kind == "session" && *sender == id),
            "{up:?}"
        );
        self.send(
            UP,
            Message::OpenConfirmation(OpenConfirmation {
                recipient: id,
                sender: upstream_id,
                initial_window: upstream_window,
                max_packet: upstream_packet,
                data: b"",
            }),
        );
        let down = self.take(DOWN);
        assert!(
            matches!(&down[..], [Got::Confirm { recipient, sender, .. }] if *recipient == client_id && *sender == id),
            "{down:?}"
        );
        self.drain_events();
        id
    }

    /// Client sends exec with want-reply; returns the decision.
    fn exec(&mut self, id: u32, command: &[u8]) -> Decision {
        self.send(
            DOWN,
            Message::ChannelRequest(ChannelRequest {
                recipient: id,
                want_reply: true,
                kind: ChannelRequestKind::Exec { command },
            }),
        );
        self.decision()
    }
}

fn open_msg(sender: u32, window: u32, max_packet: u32) -> Message<'static> {
    Message::ChannelOpen(ChannelOpen {
        sender,
        initial_window: window,
        max_packet,
        kind: ChannelKind::Session,
    })
}

fn data(recipient: u32, bytes: &[u8]) -> Message<'_> {
    Message::Data {
        recipient,
        data: bytes,
    }
}

fn request(recipient: u32, want_reply: bool, kind: ChannelRequestKind<'_>) -> Message<'_> {
    Message::ChannelRequest(ChannelRequest {
        recipient,
        want_reply,
        kind,
    })
}

fn exit_status_of(got: &Got) -> Option<u32> {
    match got {
        Got::Request { payload, .. } => match Message::parse(payload).ok()? {
            Message::ChannelRequest(ChannelRequest {
                kind: ChannelRequestKind::ExitStatus { status },
                ..
            }) => Some(status),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn advertises_openssh_default_window_and_packet_at_least() {
    assert_eq!(DEFAULT_MAX_PACKET, 32768);
    assert_eq!(DEFAULT_MIN_WINDOW, 2 * MIB);
    let mut h = Harness::new();
    // A client offering a tiny window: upstream still gets 2 MiB from us.
    h.send(DOWN, open_msg(5, 1000, 1000));
    let d = h.decision();
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    assert_eq!(
        h.take(UP),
        vec![Got::Open {
            kind: "session".into(),
            sender: 0,
            window: 2 * MIB,
            max_packet: 32768
        }]
    );
    // Upstream offering 3 MiB: the client gets 3 MiB (throughput is not shrunk).
    h.send(
        UP,
        Message::OpenConfirmation(OpenConfirmation {
            recipient: 0,
            sender: 44,
            initial_window: 3 * MIB,
            max_packet: 65536,
            data: b"",
        }),
    );
    assert_eq!(
        h.take(DOWN),
        vec![Got::Confirm {
            recipient: 5,
            sender: 0,
            window: 3 * MIB,
            max_packet: 32768
        }]
    );
    // Offering more than the cap gets the cap (it bounds what we buffer).
    h.send(DOWN, open_msg(6, 64 * MIB, 1000));
    let d = h.decision();
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    assert!(matches!(h.take(UP)[..], [Got::Open { window, .. }] if window == DEFAULT_MAX_WINDOW));
    // A config asking for less is raised to OpenSSH's defaults.
    let mut small = Harness::with(RelayConfig {
        min_window: 1000,
        max_window: 1000,
        ..RelayConfig::default()
    });
    small.send(DOWN, open_msg(0, 1000, 1000));
    let d = small.decision();
    small.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    assert!(matches!(small.take(UP)[..], [Got::Open { window, .. }] if window == 2 * MIB));
}

#[test]
fn exec_allowed_relays_data_both_ways_then_exit_status_eof_close_in_order() {
    let mut h = Harness::new();
    let id = h.open_session(7, 100);
    let d = h.exec(id, b"ls -l");
    assert_eq!(d.from(), DOWN);
    let Subject::Request(req) = d.subject().unwrap() else {
        panic!("not a request")
    };
    assert_eq!(req.kind, ChannelRequestKind::Exec { command: b"ls -l" });
    // Nothing reaches upstream before the decision.
    assert_eq!(h.take(UP), vec![]);
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    let up = h.take(UP);
    assert!(
        matches!(&up[..], [Got::Request { recipient: 100, name, want_reply: true, .. }] if name == "exec"),
        "{up:?}"
    );
    h.send(UP, Message::ChannelSuccess { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Success(7)]);

    h.send(DOWN, data(id, b"input"));
    assert_eq!(h.take(UP), vec![Got::Data(100, b"input".to_vec())]);

    h.send(UP, data(id, b"out"));
    h.send(
        UP,
        Message::ExtendedData {
            recipient: id,
            data_type: EXTENDED_DATA_STDERR,
            data: b"err",
        },
    );
    h.send(
        UP,
        request(id, false, ChannelRequestKind::ExitStatus { status: 3 }),
    );
    h.send(UP, Message::Eof { recipient: id });
    h.send(UP, Message::Close { recipient: id });
    let down = h.take(DOWN);
    assert_eq!(down.len(), 5, "{down:?}");
    assert_eq!(down[0], Got::Data(7, b"out".to_vec()));
    assert_eq!(down[1], Got::Stderr(7, b"err".to_vec()));
    assert_eq!(exit_status_of(&down[2]), Some(3));
    assert!(matches!(down[2], Got::Request { recipient: 7, .. }));
    assert_eq!(down[3], Got::Eof(7));
    assert_eq!(down[4], Got::Close(7));
    // Upstream's CLOSE is answered when the client's comes back, not before.
    assert_eq!(h.take(UP), vec![]);
    assert_eq!(h.relay.phase(ChannelId(id)), Some(Phase::Closing));
    h.send(DOWN, Message::Close { recipient: id });
    assert_eq!(h.take(UP), vec![Got::Close(100)]);
    assert_eq!(h.relay.phase(ChannelId(id)), None);

    let events = h.drain_events();
    let channel = ChannelId(id);
    assert_eq!(
        events,
        vec![
            Event::Input {
                channel,
                bytes: b"input".to_vec()
            },
            Event::Output {
                channel,
                stream: Stream::Stdout,
                bytes: b"out".to_vec()
            },
            Event::Output {
                channel,
                stream: Stream::Stderr,
                bytes: b"err".to_vec()
            },
            Event::ExitStatus { channel, status: 3 },
            Event::Closed {
                channel,
                bytes_in: 5,
                bytes_out: 6
            },
        ]
    );
}

#[test]
fn exec_denied_with_message_reaches_only_the_client() {
    let mut h = Harness::new();
    let id = h.open_session(0, 200);
    let d = h.exec(id, b"rm -rf /");
    // The client may already send stdin behind the exec.
    h.send(DOWN, data(id, b"y\n"));
    h.relay
        .decide(
            d.ticket(),
            Verdict::deny_with_message("denied by policy\n", 1),
        )
        .unwrap();
    let down = h.take(DOWN);
    assert_eq!(down.len(), 5, "{down:?}");
    assert_eq!(down[0], Got::Success(0));
    assert_eq!(down[1], Got::Stderr(0, b"denied by policy\n".to_vec()));
    assert_eq!(exit_status_of(&down[2]), Some(1));
    assert_eq!(down[3], Got::Eof(0));
    assert_eq!(down[4], Got::Close(0));
    // Upstream sees no exec and no data: only the channel being closed.
    assert_eq!(h.take(UP), vec![Got::Close(200)]);
    h.send(DOWN, Message::Close { recipient: id });
    h.send(UP, Message::Close { recipient: id });
    assert_eq!(h.take(UP), vec![]);
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.relay.channel_count(), 0);
    let events = h.drain_events();
    assert!(
        events.iter().all(|e| !matches!(e, Event::Input { .. })),
        "{events:?}"
    );
    assert!(events.contains(&Event::Closed {
        channel: ChannelId(id),
        bytes_in: 0,
        bytes_out: 0
    }));
}

#[test]
fn exec_denied_with_given_status_and_no_reply_wanted() {
    let mut h = Harness::new();
    let id = h.open_session(0, 200);
    h.send(
        DOWN,
        request(id, false, ChannelRequestKind::Exec { command: b"reboot" }),
    );
    let d = h.decision();
    h.relay
        .decide(d.ticket(), Verdict::deny_with_message("no\n", 77))
        .unwrap();
    let down = h.take(DOWN);
    assert_eq!(down.len(), 4, "{down:?}");
    assert_eq!(down[0], Got::Stderr(0, b"no\n".to_vec()));
    assert_eq!(exit_status_of(&down[1]), Some(77));
}

#[test]
fn refusal_after_upstream_eof_sends_no_data_and_no_second_eof() {
    // Found by the property test: the refusal text must not follow an EOF already sent.
    let mut h = Harness::new();
    let id = h.open_session(0, 200);
    h.send(UP, Message::Eof { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Eof(0)]);
    h.send(DOWN, request(id, true, ChannelRequestKind::Shell));
    let d = h.decision();
    h.relay
        .decide(d.ticket(), Verdict::deny_with_message("no\n", 1))
        .unwrap();
    let down = h.take(DOWN);
    assert_eq!(down.len(), 3, "{down:?}");
    assert_eq!(down[0], Got::Success(0));
    assert_eq!(exit_status_of(&down[1]), Some(1));
    assert_eq!(down[2], Got::Close(0));
}

#[test]
fn reply_from_upstream_after_the_client_closed_is_swallowed() {
    // Found by the property test: a forwarded request's answer may cross the client's CLOSE.
    let mut h = Harness::new();
    let id = h.open_session(0, 200);
    h.send(
        DOWN,
        request(
            id,
            true,
            ChannelRequestKind::WindowChange {
                size: TerminalSize::default(),
            },
        ),
    );
    h.send(DOWN, Message::Close { recipient: id });
    assert_eq!(h.take(UP).len(), 2);
    h.send(UP, Message::ChannelSuccess { recipient: id });
    h.send(UP, Message::Close { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Close(0)]);
    assert_eq!(h.relay.channel_count(), 0);
}

#[test]
fn plain_deny_answers_failure_and_honours_want_reply() {
    let mut h = Harness::new();
    let id = h.open_session(0, 200);
    h.send(
        DOWN,
        request(
            id,
            false,
            ChannelRequestKind::Env {
                name: b"LD_PRELOAD",
                value: b"/tmp/x.so",
            },
        ),
    );
    let d = h.decision();
    h.relay.decide(d.ticket(), Verdict::Deny).unwrap();
    // No reply wanted: nothing at all.
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.take(UP), vec![]);
    h.send(DOWN, request(id, true, ChannelRequestKind::AuthAgentReq));
    let d = h.decision();
    h.relay.decide(d.ticket(), Verdict::Deny).unwrap();
    assert_eq!(h.take(DOWN), vec![Got::Failure(0)]);
    assert_eq!(h.take(UP), vec![]);
    // The ticket is spent.
    assert_eq!(
        h.relay.decide(d.ticket(), Verdict::Allow),
        Err(DecideError::NotPending)
    );
}

#[test]
fn hold_then_allow_forwards_request_then_buffered_data_in_order() {
    let mut h = Harness::new();
    let id = h.open_session(0, 300);
    let d = h.exec(id, b"psql prod");
    // Approval pending: the client types ahead; nothing goes upstream, nothing is returned.
    h.send(DOWN, data(id, b"select 1;\n"));
    h.send(
        DOWN,
        request(
            id,
            false,
            ChannelRequestKind::WindowChange {
                size: TerminalSize {
                    cols: 100,
                    rows: 30,
                    ..TerminalSize::default()
                },
            },
        ),
    );
    h.send(DOWN, data(id, b"\\q\n"));
    assert_eq!(h.take(UP), vec![]);
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.relay.buffered(ChannelId(id), UP), 13);
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    let up = h.take(UP);
    assert_eq!(up.len(), 4, "{up:?}");
    assert!(matches!(&up[0], Got::Request { name, .. } if name == "exec"));
    assert_eq!(up[1], Got::Data(300, b"select 1;\n".to_vec()));
    assert!(matches!(&up[2], Got::Request { name, .. } if name == "window-change"));
    assert_eq!(up[3], Got::Data(300, b"\\q\n".to_vec()));
    assert!(h.drain_events().contains(&Event::Resize {
        channel: ChannelId(id),
        size: TerminalSize {
            cols: 100,
            rows: 30,
            width_px: 0,
            height_px: 0
        }
    }));
}

#[test]
fn client_stderr_notice_reaches_the_client_while_the_request_is_held() {
    let mut h = Harness::new();
    let id = h.open_session(4, 300);
    let d = h.exec(id, b"systemctl restart app");
    assert!(h
        .relay
        .send_client_stderr(ChannelId(id), b"held for approval\n"));
    assert_eq!(
        h.take(DOWN),
        vec![Got::Stderr(4, b"held for approval\n".to_vec())]
    );
    assert_eq!(
        h.take(UP),
        vec![],
        "the notice and the held exec stay off the target"
    );
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    let up = h.take(UP);
    assert!(
        matches!(&up[..], [Got::Request { name, .. }] if name == "exec"),
        "{up:?}"
    );
    assert!(
        !h.relay.send_client_stderr(ChannelId(id + 1), b"x"),
        "no such channel"
    );
}

#[test]
fn held_data_is_bounded_by_the_advertised_window() {
    let mut h = Harness::new();
    let id = h.open_session(0, 300);
    let _held = h.exec(id, b"cat > big");
    let chunk = vec![0u8; 32 * 1024];
    for _ in 0..64 {
        h.send(DOWN, data(id, &chunk));
    }
    assert_eq!(h.relay.buffered(ChannelId(id), UP), 2 * MIB as usize);
    // No WINDOW_ADJUST while held, so one byte more is a protocol error.
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(
        h.relay.handle(DOWN, &data(id, b"x").encode()),
        Err(RelayError::WindowExceeded {
            from: DOWN,
            channel: ChannelId(id),
            len: 1,
            window: 0
        })
    );
}

#[test]
fn hold_then_client_close_cancels_the_decision() {
    let mut h = Harness::new();
    let id = h.open_session(0, 300);
    let d = h.exec(id, b"deploy");
    h.send(DOWN, data(id, b"abc"));
    h.send(DOWN, Message::Close { recipient: id });
    // Upstream gets the CLOSE, but never the exec or the data behind it.
    assert_eq!(h.take(UP), vec![Got::Close(300)]);
    assert_eq!(
        h.relay.decide(d.ticket(), Verdict::Allow),
        Err(DecideError::NotPending)
    );
    h.send(UP, Message::Close { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Close(0)]);
    assert_eq!(h.relay.channel_count(), 0);
}

#[test]
fn replies_keep_request_order_across_local_and_forwarded_answers() {
    let mut h = Harness::new();
    let id = h.open_session(0, 300);
    // pty-req allowed (answer comes from upstream), then a refused request answered by us.
    h.send(
        DOWN,
        request(
            id,
            true,
            ChannelRequestKind::PtyReq {
                term: b"xterm",
                size: TerminalSize::default(),
                modes: &[0],
            },
        ),
    );
    let pty = h.decision();
    h.relay.decide(pty.ticket(), Verdict::Allow).unwrap();
    h.send(DOWN, request(id, true, ChannelRequestKind::AuthAgentReq));
    let agent = h.decision();
    h.relay.decide(agent.ticket(), Verdict::Deny).unwrap();
    // The refusal must not overtake the pty answer still owed by upstream.
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.take(UP).len(), 1);
    h.send(UP, Message::ChannelSuccess { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Success(0), Got::Failure(0)]);
}

#[test]
fn exit_status_waits_behind_data_the_client_window_holds_back() {
    let mut h = Harness::new();
    // The client gives the relay a 10-byte window.
    let id = h.open_session_with(0, 400, 10, 32 * 1024, 2 * MIB, 32 * 1024);
    let d = h.exec(id, b"rsync --server");
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    h.take(UP);
    h.send(UP, Message::ChannelSuccess { recipient: id });
    h.send(UP, data(id, &[b'a'; 100]));
    h.send(
        UP,
        request(id, false, ChannelRequestKind::ExitStatus { status: 0 }),
    );
    h.send(UP, Message::Eof { recipient: id });
    h.send(UP, Message::Close { recipient: id });
    assert_eq!(
        h.take(DOWN),
        vec![Got::Success(0), Got::Data(0, vec![b'a'; 10])]
    );
    h.send(
        DOWN,
        Message::WindowAdjust {
            recipient: id,
            bytes: 1000,
        },
    );
    let down = h.take(DOWN);
    assert_eq!(down.len(), 4, "{down:?}");
    assert_eq!(down[0], Got::Data(0, vec![b'a'; 90]));
    assert_eq!(exit_status_of(&down[1]), Some(0));
    assert_eq!(down[2], Got::Eof(0));
    assert_eq!(down[3], Got::Close(0));
}

#[test]
fn data_is_split_to_the_receivers_max_packet() {
    let mut h = Harness::new();
    let id = h.open_session_with(0, 500, 2 * MIB, 32 * 1024, 2 * MIB, 1000);
    let d = h.exec(id, b"cat");
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    h.take(UP);
    let block: Vec<u8> = (0..32 * 1024).map(|i| (i % 251) as u8).collect();
    h.send(DOWN, data(id, &block));
    let up = h.take(UP);
    assert_eq!(up.len(), 33);
    let mut joined = Vec::new();
    for got in up {
        let Got::Data(500, bytes) = got else {
            panic!("{got:?}")
        };
        assert!(bytes.len() <= 1000);
        joined.extend(bytes);
    }
    assert_eq!(joined, block);
}

#[test]
fn never_sends_past_the_receivers_window() {
    // The relay never sends past the receiver's window: upstream offers 5 bytes.
    let mut h = Harness::new();
    let id = h.open_session_with(0, 500, 2 * MIB, 32 * 1024, 5, 32 * 1024);
    h.send(DOWN, data(id, b"0123456789"));
    assert_eq!(h.take(UP), vec![Got::Data(500, b"01234".to_vec())]);
    assert_eq!(h.take(UP), vec![]);
    h.send(
        UP,
        Message::WindowAdjust {
            recipient: id,
            bytes: 5,
        },
    );
    assert_eq!(h.take(UP), vec![Got::Data(500, b"56789".to_vec())]);
}

/// A 10 MiB upload through a consumer that returns window slowly, then quickly.
#[test]
fn ten_mib_transfer_with_slow_consumer_buffers_at_most_one_window_and_never_stalls() {
    const TOTAL: usize = 10 * 1024 * 1024;
    let mut h = Harness::new();
    let id = h.open_session(0, 600);
    let d = h.exec(id, b"cat > /dev/null");
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    h.take(UP);
    let advertised = 2 * MIB; // what the client got in the confirmation
    let mut client_window = advertised;
    let mut upstream_unread: u32 = 0; // received by upstream, not yet returned as window
    let mut sent = 0usize;
    let mut received = 0usize;
    let mut adjusts_to_client = 0;
    let mut max_buffered = 0usize;
    let mut expect_byte = 0u8;
    let mut rounds = 0;
    while received < TOTAL {
        rounds += 1;
        assert!(rounds < 10_000, "transfer stalled at {received} bytes");
        // Client writes as much as its window allows, in 32 KiB packets.
        while client_window > 0 && sent < TOTAL {
            let n = (client_window as usize).min(32 * 1024).min(TOTAL - sent);
            let chunk: Vec<u8> = (sent..sent + n).map(|i| (i % 256) as u8).collect();
            h.send(DOWN, data(id, &chunk));
            client_window -= n as u32;
            sent += n;
        }
        max_buffered = max_buffered.max(h.relay.buffered(ChannelId(id), UP));
        for got in h.take(UP) {
            let Got::Data(600, bytes) = got else {
                panic!("{got:?}")
            };
            for b in &bytes {
                assert_eq!(*b, expect_byte);
                expect_byte = expect_byte.wrapping_add(1);
            }
            received += bytes.len();
            upstream_unread += bytes.len() as u32;
        }
        // The consumer returns 64 KiB per round for the first 4 MiB (slow), then everything.
        let give = if received < 4 * MIB as usize {
            upstream_unread.min(64 * 1024)
        } else {
            upstream_unread
        };
        if give > 0 {
            upstream_unread -= give;
            h.send(
                UP,
                Message::WindowAdjust {
                    recipient: id,
                    bytes: give,
                },
            );
        }
        for got in h.take(DOWN) {
            let Got::Adjust(0, bytes) = got else {
                panic!("{got:?}")
            };
            client_window += bytes;
            adjusts_to_client += 1;
        }
        // Never stalled by the gateway: if the client has no window left, it is because the
        // relay holds a full window it cannot hand on (the consumer is slow), not because the
        // relay sat on credit.
        if client_window == 0 && sent < TOTAL {
            assert_eq!(
                h.relay.buffered(ChannelId(id), UP) as u32,
                advertised,
                "client stalled while the relay had room"
            );
        }
    }
    assert_eq!(received, TOTAL);
    assert!(max_buffered <= advertised as usize, "{max_buffered}");
    assert!(adjusts_to_client > 0);
    // Every byte handed on was returned to the client, except the last sub-threshold bit.
    assert!(client_window as usize + 3 * 32 * 1024 >= advertised as usize);
}

#[test]
fn close_race_both_sides_close_at_once() {
    let mut h = Harness::new();
    let id = h.open_session(3, 700);
    h.send(DOWN, Message::Close { recipient: id });
    h.send(UP, Message::Close { recipient: id });
    // Each side gets exactly one CLOSE; the number is free.
    assert_eq!(h.take(DOWN), vec![Got::Close(3)]);
    assert_eq!(h.take(UP), vec![Got::Close(700)]);
    assert_eq!(h.relay.phase(ChannelId(id)), None);
    let closed = h
        .drain_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Closed { .. }))
        .count();
    assert_eq!(closed, 1);
}

#[test]
fn close_race_with_close_already_sent_to_the_other_side() {
    let mut h = Harness::new();
    let id = h.open_session(3, 700);
    h.send(UP, Message::Close { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Close(3)]);
    // The client closed at the same time (before seeing ours).
    h.send(DOWN, Message::Close { recipient: id });
    assert_eq!(h.take(UP), vec![Got::Close(700)]);
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.relay.channel_count(), 0);
}

#[test]
fn channel_numbers_are_reused_only_after_both_closes() {
    let mut h = Harness::new();
    let first = h.open_session(0, 800);
    assert_eq!(first, 0);
    // Upstream closes; the client has not answered yet.
    h.send(UP, Message::Close { recipient: first });
    assert_eq!(h.take(DOWN), vec![Got::Close(0)]);
    let second = h.open_session(1, 801);
    assert_eq!(second, 1, "number 0 is still half-closed");
    h.send(DOWN, Message::Close { recipient: first });
    assert_eq!(h.take(UP), vec![Got::Close(800)]);
    let third = h.open_session(2, 802);
    assert_eq!(third, 0, "number 0 is free again");
}

#[test]
fn rejects_unknown_channel_ids_with_a_typed_sticky_error() {
    let mut h = Harness::new();
    let err = h.relay.handle(DOWN, &data(9, b"x").encode());
    assert_eq!(
        err,
        Err(RelayError::UnknownChannel {
            from: DOWN,
            channel: 9
        })
    );
    assert_eq!(err.unwrap_err().disconnect_reason(), 2);
    // Sticky.
    assert!(h
        .relay
        .handle(UP, &Message::RequestFailure.encode())
        .is_err());
}

#[test]
fn rejects_protocol_violations() {
    // Each case on a fresh relay with one open channel 0 (client 0, upstream 900).
    type Case = (Side, Vec<Vec<u8>>, fn(&RelayError) -> bool);
    let cases: Vec<Case> = vec![
        (
            UP,
            vec![
                data(0, b"a").encode(),
                Message::Close { recipient: 0 }.encode(),
                data(0, b"b").encode(),
            ],
            |e| matches!(e, RelayError::AfterClose { .. }),
        ),
        (
            DOWN,
            vec![
                Message::Eof { recipient: 0 }.encode(),
                data(0, b"b").encode(),
            ],
            |e| matches!(e, RelayError::DataAfterEof { .. }),
        ),
        (
            DOWN,
            vec![Message::WindowAdjust {
                recipient: 0,
                bytes: u32::MAX,
            }
            .encode()],
            |e| matches!(e, RelayError::WindowOverflow { .. }),
        ),
        (
            UP,
            vec![Message::ChannelSuccess { recipient: 0 }.encode()],
            |e| {
                matches!(
                    e,
                    RelayError::UnexpectedReply {
                        channel: Some(_),
                        ..
                    }
                )
            },
        ),
        (
            UP,
            vec![Message::RequestSuccess { data: b"" }.encode()],
            |e| matches!(e, RelayError::UnexpectedReply { channel: None, .. }),
        ),
        (
            UP,
            vec![Message::OpenConfirmation(OpenConfirmation {
                recipient: 0,
                sender: 1,
                initial_window: 0,
                max_packet: 0,
                data: b"",
            })
            .encode()],
            |e| matches!(e, RelayError::UnexpectedOpenReply { .. }),
        ),
        (DOWN, vec![vec![98, 0, 0, 0]], |e| {
            matches!(e, RelayError::Malformed { .. })
        }),
    ];
    for (i, (from, payloads, check)) in cases.into_iter().enumerate() {
        let mut h = Harness::new();
        h.open_session(0, 900);
        let mut result = Ok(());
        for p in &payloads {
            result = h.relay.handle(from, p);
            if result.is_err() {
                break;
            }
        }
        let err = result.expect_err(&format!("case {i} accepted"));
        assert!(check(&err), "case {i}: {err}");
        assert_eq!(err.side(), from);
    }
}

#[test]
fn unrecognized_message_numbers_are_not_fatal() {
    let mut h = Harness::new();
    assert_eq!(
        h.relay.handle(DOWN, &[120, 1, 2]),
        Err(RelayError::Unrecognized {
            from: DOWN,
            number: 120
        })
    );
    h.open_session(0, 1);
}

#[test]
fn no_more_sessions_refuses_later_session_opens() {
    let mut h = Harness::new();
    h.open_session(0, 1);
    h.send(
        DOWN,
        Message::GlobalRequest(GlobalRequest {
            want_reply: false,
            kind: GlobalRequestKind::NoMoreSessions,
        }),
    );
    h.send(DOWN, open_msg(1, 2 * MIB, 32768));
    assert_eq!(h.decisions(), vec![]);
    assert_eq!(
        h.take(DOWN),
        vec![Got::OpenFailure {
            recipient: 1,
            reason: OpenFailureReason::AdministrativelyProhibited
        }]
    );
    assert_eq!(h.take(UP), vec![]);
}

#[test]
fn wrong_way_channel_types_are_refused_without_a_decision() {
    let mut h = Harness::new();
    h.send(
        UP,
        open_msg(4, 2 * MIB, 32768), // a server opening a session on the client
    );
    h.send(
        DOWN,
        Message::ChannelOpen(ChannelOpen {
            sender: 5,
            initial_window: 1,
            max_packet: 1,
            kind: ChannelKind::AuthAgent,
        }),
    );
    assert_eq!(h.decisions(), vec![]);
    assert_eq!(
        h.take(UP),
        vec![Got::OpenFailure {
            recipient: 4,
            reason: OpenFailureReason::UnknownChannelType
        }]
    );
    assert_eq!(
        h.take(DOWN),
        vec![Got::OpenFailure {
            recipient: 5,
            reason: OpenFailureReason::UnknownChannelType
        }]
    );
}

#[test]
fn denied_open_gets_administratively_prohibited_and_frees_the_number() {
    let mut h = Harness::new();
    h.send(
        DOWN,
        Message::ChannelOpen(ChannelOpen {
            sender: 2,
            initial_window: 2 * MIB,
            max_packet: 32768,
            kind: ChannelKind::DirectTcpip {
                host: b"10.0.0.1",
                port: 22,
                originator: b"127.0.0.1",
                originator_port: 4000,
            },
        }),
    );
    let d = h.decision();
    assert_eq!(h.relay.phase(ChannelId(0)), Some(Phase::AwaitingDecision));
    h.relay.decide(d.ticket(), Verdict::Deny).unwrap();
    assert_eq!(
        h.take(DOWN),
        vec![Got::OpenFailure {
            recipient: 2,
            reason: OpenFailureReason::AdministrativelyProhibited
        }]
    );
    assert_eq!(h.take(UP), vec![]);
    assert_eq!(h.relay.channel_count(), 0);
}

#[test]
fn upstream_open_failure_is_passed_on() {
    let mut h = Harness::new();
    h.send(DOWN, open_msg(6, 2 * MIB, 32768));
    let d = h.decision();
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    h.take(UP);
    assert_eq!(h.relay.phase(ChannelId(0)), Some(Phase::Opening));
    h.send(
        UP,
        Message::OpenFailure(OpenFailure {
            recipient: 0,
            reason: OpenFailureReason::ResourceShortage,
            description: b"no more sessions",
            language: b"",
        }),
    );
    assert_eq!(
        h.take(DOWN),
        vec![Got::OpenFailure {
            recipient: 6,
            reason: OpenFailureReason::ResourceShortage
        }]
    );
    assert_eq!(h.relay.channel_count(), 0);
}

#[test]
fn too_many_channels_are_refused_with_resource_shortage() {
    let mut h = Harness::with(RelayConfig {
        max_channels: 2,
        ..RelayConfig::default()
    });
    for i in 0..3 {
        h.send(DOWN, open_msg(i, 2 * MIB, 32768));
    }
    assert_eq!(h.decisions().len(), 2);
    assert_eq!(
        h.take(DOWN),
        vec![Got::OpenFailure {
            recipient: 2,
            reason: OpenFailureReason::ResourceShortage
        }]
    );
}

#[test]
fn keepalive_is_answered_locally_in_order_with_forwarded_replies() {
    let mut h = Harness::new();
    h.send(
        DOWN,
        Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::TcpipForward {
                address: b"localhost",
                port: 0,
            },
        }),
    );
    let d = h.decision();
    assert_eq!(d.channel(), None);
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    assert_eq!(
        h.take(UP),
        vec![Got::GlobalRequest("tcpip-forward".into(), true)]
    );
    h.send(
        DOWN,
        Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::Keepalive,
        }),
    );
    // The keepalive answer waits for the tcpip-forward answer before it.
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.take(UP), vec![]);
    let port = 40123u32.to_be_bytes();
    h.send(UP, Message::RequestSuccess { data: &port });
    assert_eq!(
        h.take(DOWN),
        vec![Got::GlobalSuccess(port.to_vec()), Got::GlobalFailure]
    );
}

#[test]
fn tcpip_forward_denied_and_upstream_globals_not_forwarded() {
    let mut h = Harness::new();
    h.send(
        DOWN,
        Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::TcpipForward {
                address: b"",
                port: 80,
            },
        }),
    );
    let d = h.decision();
    h.relay.decide(d.ticket(), Verdict::Deny).unwrap();
    assert_eq!(h.take(DOWN), vec![Got::GlobalFailure]);
    assert_eq!(h.take(UP), vec![]);
    h.send(
        UP,
        Message::GlobalRequest(GlobalRequest {
            want_reply: false,
            kind: GlobalRequestKind::HostKeys { keys: vec![b"key"] },
        }),
    );
    h.send(
        UP,
        Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::Keepalive,
        }),
    );
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.take(UP), vec![Got::GlobalFailure]);
}

#[test]
fn own_keepalive_answer_is_reported_not_forwarded() {
    let mut h = Harness::new();
    h.relay.send_keepalive(UP);
    assert_eq!(
        h.take(UP),
        vec![Got::GlobalRequest("keepalive@openssh.com".into(), true)]
    );
    h.send(UP, Message::RequestFailure);
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.drain_events(), vec![Event::PeerAlive { side: UP }]);
}

#[test]
fn upstream_channel_requests_a_server_never_sends_are_refused() {
    let mut h = Harness::new();
    let id = h.open_session(0, 10);
    h.send(
        UP,
        request(id, true, ChannelRequestKind::Exec { command: b"evil" }),
    );
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.take(UP), vec![Got::Failure(10)]);
    // And keepalive@openssh.com from sshd goes through to the client, its answer back.
    h.send(UP, request(id, true, ChannelRequestKind::Keepalive));
    assert!(
        matches!(&h.take(DOWN)[..], [Got::Request { name, .. }] if name == "keepalive@openssh.com")
    );
    h.send(DOWN, Message::ChannelFailure { recipient: id });
    assert_eq!(h.take(UP), vec![Got::Failure(10)]);
}

#[test]
fn caller_can_close_a_channel() {
    let mut h = Harness::new();
    let id = h.open_session(0, 10);
    assert!(h.relay.close_channel(ChannelId(id)));
    assert_eq!(h.take(DOWN), vec![Got::Close(0)]);
    assert_eq!(h.take(UP), vec![Got::Close(10)]);
    h.send(DOWN, Message::Close { recipient: id });
    h.send(UP, Message::Close { recipient: id });
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(h.relay.channel_count(), 0);
    assert!(!h.relay.close_channel(ChannelId(id)));
}

#[test]
fn long_exec_command_reaches_the_decision_whole() {
    let mut h = Harness::new();
    let id = h.open_session(0, 10);
    let command = vec![b'x'; MAX_EXEC_COMMAND];
    let d = h.exec(id, &command);
    let Ok(Subject::Request(ChannelRequest {
        kind: ChannelRequestKind::Exec { command: got },
        ..
    })) = d.subject()
    else {
        panic!("not exec")
    };
    assert_eq!(got.len(), MAX_EXEC_COMMAND);
    assert_eq!(d.payload()[0], msg::CHANNEL_REQUEST);
}

#[path = "relay_prop_tests.rs"]
mod prop;

/// Throughput of the relay core alone (no crypto, no sockets): 1 GiB client → upstream in 32 KiB
/// packets with a consumer that returns window at once. Run with
/// `cargo test --release --lib relay_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check; run in release"]
fn relay_throughput() {
    for observe_data in [false, true] {
        let mut h = Harness::with(RelayConfig {
            observe_data,
            ..RelayConfig::default()
        });
        let id = h.open_session(0, 1);
        let d = h.exec(id, b"cat > /dev/null");
        h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
        h.take(UP);
        let packet = vec![0x5a; 32 * 1024];
        let payload = data(id, &packet).encode();
        let total: u64 = 1 << 30;
        let mut client_window: u64 = 2 * u64::from(MIB);
        let mut moved: u64 = 0;
        let start = std::time::Instant::now();
        while moved < total {
            while client_window >= packet.len() as u64 {
                h.relay.handle(DOWN, &payload).unwrap();
                client_window -= packet.len() as u64;
            }
            let mut got: u32 = 0;
            while let Some(p) = h.relay.poll_transmit(UP) {
                got += u32::try_from(p.len() - 9).unwrap();
            }
            moved += u64::from(got);
            h.relay
                .handle(
                    UP,
                    &Message::WindowAdjust {
                        recipient: id,
                        bytes: got,
                    }
                    .encode(),
                )
                .unwrap();
            while let Some(p) = h.relay.poll_transmit(DOWN) {
                if let Ok(Message::WindowAdjust { bytes, .. }) = Message::parse(&p) {
                    client_window += u64::from(bytes);
                }
            }
            while h.relay.poll_event().is_some() {}
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "observe_data={observe_data}: {} MiB in {secs:.2} s = {:.0} MiB/s",
            moved >> 20,
            (moved >> 20) as f64 / secs
        );
    }
}

#[path = "relay_filter_tests.rs"]
mod filter;

#[path = "relay_mask_tests.rs"]
mod mask;
