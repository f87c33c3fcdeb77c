//! A tiny byte-coded script of operations on a [`Relay`]: what the `ssh_connection` fuzz target
//! runs on arbitrary input, and what a unit test replays from the committed fuzz seeds.
//!
//! A script is a sequence of operations, each an op byte followed by its operand:
//!
//! | op % 8 | operand | operation |
//! | --- | --- | --- |
//! | 0, 1 | u16 length (big-endian), then that many payload bytes | [`Relay::handle`] from the client (0) or upstream (1) |
//! | 2, 3 | one byte n | up to n+1 [`Relay::poll_transmit`] to the client (2) or upstream (3) |
//! | 4 | one byte: low 4 bits pick a pending decision, high bits the verdict (0 allow, 1 deny, 2 deny with message, 3 hold) | [`Relay::decide`] |
//! | 5 | one byte: a channel number (low 7 bits); high bit clear: [`Relay::close_channel`], set: [`Relay::set_filter`] with a read-only SFTP filter | close or filter a channel |
//! | 6 | one byte: even client, odd upstream | [`Relay::send_keepalive`] |
//! | 7 | none | drain both directions completely |
//!
//! After every operation the relay's flow-control invariants must hold and every payload it
//! sends must decode; [`run`] panics otherwise (that is the point: the fuzzer reports it).

use super::connection::Message;
use super::relay::{Event, Relay, RelayConfig, RelayError, Side, Ticket, Verdict};

/// What a script did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Payloads the relay sent.
    pub sent: usize,
    /// The first protocol error the relay reported, if any (expected for hostile input).
    pub error: Option<RelayError>,
}

/// Runs `script` on a fresh relay.
///
/// # Panics
/// When the relay breaks an invariant or sends a payload that does not decode: a bug.
pub fn run(script: &[u8]) -> Outcome {
    let mut error = None;
    let mut relay = Relay::new(RelayConfig::default());
    let mut pending: Vec<Ticket> = Vec::new();
    let mut sent = 0usize;
    let mut rest = script;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            code @ (0 | 1) => {
                let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                    break;
                };
                let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
                let (payload, tail) = tail.split_at(len);
                rest = tail;
                let side = if code == 0 {
                    Side::Downstream
                } else {
                    Side::Upstream
                };
                // A protocol error is an expected outcome for hostile input; the relay stays
                // usable for the rest of the script (it keeps answering with the error).
                if let Err(e) = relay.handle(side, payload) {
                    error.get_or_insert(e);
                }
            }
            code @ (2 | 3) => {
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let side = if code == 2 {
                    Side::Downstream
                } else {
                    Side::Upstream
                };
                sent += transmit(&mut relay, side, usize::from(n) + 1);
            }
            4 => {
                let Some((&arg, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let index = usize::from(arg & 0x0f);
                if index < pending.len() {
                    let verdict = match arg >> 4 {
                        0 => Some(Verdict::Allow),
                        1 => Some(Verdict::Deny),
                        2 => Some(Verdict::deny_with_message("denied\n", 1)),
                        _ => None,
                    };
                    if let Some(verdict) = verdict {
                        let ticket = pending.remove(index);
                        let _ = relay.decide(ticket, verdict);
                    }
                }
            }
            5 => {
                let Some((&id, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let channel = super::relay::ChannelId(u32::from(id & 0x7f));
                if id & 0x80 == 0 {
                    relay.close_channel(channel);
                } else if let Err(e) = relay.set_filter(
                    channel,
                    Box::new(super::filter::SftpFilter::new(
                        super::sftp::SftpMode::ReadOnly,
                    )),
                ) {
                    error.get_or_insert(e);
                }
            }
            6 => {
                let Some((&side, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                relay.send_keepalive(if side % 2 == 0 {
                    Side::Downstream
                } else {
                    Side::Upstream
                });
            }
            _ => {
                sent += transmit(&mut relay, Side::Downstream, usize::MAX);
                sent += transmit(&mut relay, Side::Upstream, usize::MAX);
            }
        }
        while let Some(event) = relay.poll_event() {
            if let Event::Decide(d) = event {
                if pending.len() < 16 {
                    pending.push(d.ticket());
                }
            }
        }
        if let Err(broken) = relay.check_invariants() {
            panic!("flow-control invariant broken: {broken}");
        }
    }
    Outcome { sent, error }
}

fn transmit(relay: &mut Relay, to: Side, max: usize) -> usize {
    let mut n = 0;
    while n < max {
        let Some(payload) = relay.poll_transmit(to) else {
            break;
        };
        if let Err(e) = Message::parse(&payload) {
            panic!("relay sent a payload that does not decode ({e}): {payload:?}");
        }
        n += 1;
        // Every poll hands on at most one window's worth; a loop far past that is a bug.
        assert!(n < 1_000_000, "poll_transmit never ends");
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ssh::connection::{
        ChannelKind, ChannelOpen, ChannelRequest, ChannelRequestKind, GlobalRequest,
        GlobalRequestKind, OpenConfirmation, EXTENDED_DATA_STDERR,
    };

    fn handle(side: u8, m: Message<'_>) -> Vec<u8> {
        let payload = m.encode();
        let mut out = vec![side];
        out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// The scripts committed as seeds in fuzz/seeds/ssh_connection (regenerate with
    /// `PORTCULLIS_WRITE_SEEDS=1 cargo test --lib relay_script`).
    fn seed_scripts() -> Vec<(&'static str, Vec<u8>)> {
        let open = handle(
            0,
            Message::ChannelOpen(ChannelOpen {
                sender: 0,
                initial_window: 2 << 20,
                max_packet: 32768,
                kind: ChannelKind::Session,
            }),
        );
        let confirm = handle(
            1,
            Message::OpenConfirmation(OpenConfirmation {
                recipient: 0,
                sender: 100,
                initial_window: 2 << 20,
                max_packet: 32768,
                data: b"",
            }),
        );
        let exec = handle(
            0,
            Message::ChannelRequest(ChannelRequest {
                recipient: 0,
                want_reply: true,
                kind: ChannelRequestKind::Exec { command: b"ls" },
            }),
        );
        let sftp = sftp_read_only(&open, &confirm);
        let allow = vec![4, 0x00];
        let deny_msg = vec![4, 0x20];
        let up = vec![3, 255];
        let down = vec![2, 255];
        let exec_session = [
            open.clone(),
            allow.clone(),
            up.clone(),
            confirm.clone(),
            down.clone(),
            exec.clone(),
            allow.clone(),
            up.clone(),
            handle(1, Message::ChannelSuccess { recipient: 0 }),
            handle(
                0,
                Message::Data {
                    recipient: 0,
                    data: b"hello",
                },
            ),
            handle(
                1,
                Message::Data {
                    recipient: 0,
                    data: b"out",
                },
            ),
            handle(
                1,
                Message::ExtendedData {
                    recipient: 0,
                    data_type: EXTENDED_DATA_STDERR,
                    data: b"err",
                },
            ),
            handle(
                1,
                Message::ChannelRequest(ChannelRequest {
                    recipient: 0,
                    want_reply: false,
                    kind: ChannelRequestKind::ExitStatus { status: 0 },
                }),
            ),
            handle(1, Message::Eof { recipient: 0 }),
            handle(1, Message::Close { recipient: 0 }),
            vec![7],
            handle(0, Message::Close { recipient: 0 }),
            vec![7],
        ]
        .concat();
        let denied_exec = [
            open.clone(),
            allow.clone(),
            up.clone(),
            confirm.clone(),
            exec.clone(),
            deny_msg,
            vec![7],
            handle(0, Message::Close { recipient: 0 }),
            handle(1, Message::Close { recipient: 0 }),
            vec![7],
        ]
        .concat();
        let globals = [
            handle(
                0,
                Message::GlobalRequest(GlobalRequest {
                    want_reply: true,
                    kind: GlobalRequestKind::TcpipForward {
                        address: b"localhost",
                        port: 0,
                    },
                }),
            ),
            allow.clone(),
            handle(
                0,
                Message::GlobalRequest(GlobalRequest {
                    want_reply: true,
                    kind: GlobalRequestKind::Keepalive,
                }),
            ),
            handle(
                0,
                Message::GlobalRequest(GlobalRequest {
                    want_reply: false,
                    kind: GlobalRequestKind::NoMoreSessions,
                }),
            ),
            up,
            handle(
                1,
                Message::RequestSuccess {
                    data: &[0, 0, 0x9c, 0x40],
                },
            ),
            vec![6, 1, 7],
            handle(1, Message::RequestFailure),
            open,
            down,
        ]
        .concat();
        let window = [
            handle(
                0,
                Message::ChannelOpen(ChannelOpen {
                    sender: 0,
                    initial_window: 10,
                    max_packet: 4,
                    kind: ChannelKind::Session,
                }),
            ),
            allow,
            vec![7],
            confirm,
            vec![7],
            handle(
                1,
                Message::Data {
                    recipient: 0,
                    data: b"0123456789abcdef",
                },
            ),
            vec![7],
            handle(
                0,
                Message::WindowAdjust {
                    recipient: 0,
                    bytes: 100,
                },
            ),
            vec![7, 5, 0, 7],
        ]
        .concat();
        vec![
            ("exec_session.bin", exec_session),
            ("denied_exec.bin", denied_exec),
            ("globals.bin", globals),
            ("small_window.bin", window),
            ("sftp_read_only_filter.bin", sftp),
        ]
    }

    /// A session whose `subsystem sftp` gets the read-only filter (op 5 with the high bit), then
    /// SFTP traffic both ways: INIT, a REMOVE (refused) and an OPEN for reading split across two
    /// DATA messages, and the server's VERSION and STATUS.
    fn sftp_read_only(open: &[u8], confirm: &[u8]) -> Vec<u8> {
        use super::super::wire::Writer;
        fn packet(kind: u8, fields: impl FnOnce(&mut Writer)) -> Vec<u8> {
            let mut body = Writer::message(kind);
            fields(&mut body);
            let mut w = Writer::new();
            w.string(body.as_bytes());
            w.into_bytes()
        }
        let data = |side: u8, bytes: &[u8]| {
            handle(
                side,
                Message::Data {
                    recipient: 0,
                    data: bytes,
                },
            )
        };
        let subsystem = handle(
            0,
            Message::ChannelRequest(ChannelRequest {
                recipient: 0,
                want_reply: true,
                kind: ChannelRequestKind::Subsystem { name: b"sftp" },
            }),
        );
        let client: Vec<u8> = [
            packet(1, |w| {
                w.u32(3);
            }),
            packet(13, |w| {
                w.u32(7).string(b"/etc/passwd");
            }),
            packet(3, |w| {
                w.u32(8).string(b"/etc/hostname").u32(1).u32(0);
            }),
        ]
        .concat();
        let server: Vec<u8> = [
            packet(2, |w| {
                w.u32(3);
            }),
            packet(101, |w| {
                w.u32(8).u32(2).string(b"no").string(b"en");
            }),
        ]
        .concat();
        let (first, second) = client.split_at(20);
        [
            open.to_vec(),
            vec![4, 0, 7],
            confirm.to_vec(),
            subsystem,
            vec![5, 0x80, 4, 0, 7],
            data(0, first),
            data(0, second),
            vec![7],
            data(1, &server),
            vec![7],
        ]
        .concat()
    }

    #[test]
    fn seed_scripts_run_and_relay_traffic() {
        for (name, script) in seed_scripts() {
            let outcome = run(&script);
            assert_eq!(outcome.error, None, "{name}");
            assert!(outcome.sent >= 3, "{name} sent almost nothing");
        }
    }

    #[test]
    fn replays_fuzz_seeds_without_panicking() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ssh_connection");
        if std::env::var_os("PORTCULLIS_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, script) in seed_scripts() {
                std::fs::write(dir.join(name), script).unwrap();
            }
        }
        let mut count = 0;
        for entry in std::fs::read_dir(&dir)
            .expect("fuzz/seeds/ssh_connection is missing")
            .flatten()
        {
            run(&std::fs::read(entry.path()).unwrap());
            count += 1;
        }
        assert!(count >= 4);
    }

    #[test]
    fn arbitrary_scripts_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let base: Vec<u8> = seed_scripts().into_iter().flat_map(|(_, s)| s).collect();
        for round in 0..300 {
            // Mutate the seeds: flip, insert and drop bytes at pseudo-random places.
            let mut script = base.clone();
            for _ in 0..(round % 20 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = usize::try_from(x % script.len() as u64).unwrap();
                match x % 3 {
                    0 => script[at] ^= u8::try_from((x >> 8) & 0xff).unwrap(),
                    1 => script.insert(at, u8::try_from((x >> 16) & 0xff).unwrap()),
                    _ => {
                        script.remove(at);
                    }
                }
            }
            run(&script);
        }
    }
}
