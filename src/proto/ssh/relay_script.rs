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
//! | 5 | one byte: a channel number (low 7 bits) and a flag (high bit); what is done depends on bits 3–4 of the op byte, below | close, filter or flush a channel |
//! | 6 | one byte: even client, odd upstream | [`Relay::send_keepalive`] |
//! | 7 | none | drain both directions completely |
//!
//! Op 5 by `(op >> 3) % 4`:
//!
//! | variant | flag clear | flag set |
//! | --- | --- | --- |
//! | 0 | [`Relay::close_channel`] | [`Relay::set_filter`] with a read-only SFTP filter |
//! | 1 | [`Relay::set_filter`] with a [`MaskFilter`] whose output is shorter or longer than its input (e-mail addresses redacted, 4-digit runs hashed) | the same with a filter that makes output much longer (every `q` redacted to `[redacted:q]`), up to the relay's queue bound, past which the channel fails closed |
//! | 2 | [`Relay::flush_filter`] on the channel | the same |
//! | 3 | [`Relay::flush_filter`] on every channel [`Relay::filters_holding`] names (what the session does when output is idle) | the same |
//!
//! The op bytes the seeds use for 0–7 have bits 3–4 clear, so they keep their meaning.
//!
//! After every operation the relay's flow-control invariants must hold and every payload it
//! sends must decode; [`run`] panics otherwise (that is the point: the fuzzer reports it).

use std::sync::{Arc, OnceLock};

use super::connection::Message;
use super::filter::SftpFilter;
use super::mask_filter::MaskFilter;
use super::relay::{ChannelId, Event, Relay, RelayConfig, RelayError, Side, Ticket, Verdict};
use super::sftp::SftpMode;
use crate::mask::{Masker, Strategy};

/// What a script did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Payloads the relay sent.
    pub sent: usize,
    /// Channel data (stdout and stderr, all channels, in order) sent to the client, up to
    /// [`CLIENT_DATA_KEPT`] bytes: what tests check masking on.
    pub client_data: Vec<u8>,
    /// The first protocol error the relay reported, if any (expected for hostile input).
    pub error: Option<RelayError>,
}

/// Most bytes of [`Outcome::client_data`] kept.
pub const CLIENT_DATA_KEPT: usize = 64 * 1024;

/// Runs `script` on a fresh relay.
///
/// # Panics
/// When the relay breaks an invariant or sends a payload that does not decode: a bug.
pub fn run(script: &[u8]) -> Outcome {
    let mut error = None;
    let mut relay = Relay::new(RelayConfig::default());
    let mut pending: Vec<Ticket> = Vec::new();
    let mut sent = 0usize;
    let mut client_data = Vec::new();
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
                sent += transmit(&mut relay, side, usize::from(n) + 1, &mut client_data);
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
                let channel = ChannelId(u32::from(id & 0x7f));
                let flag = id & 0x80 != 0;
                let result = match ((op >> 3) % 4, flag) {
                    (0, false) => {
                        relay.close_channel(channel);
                        Ok(())
                    }
                    (0, true) => relay
                        .set_filter(channel, Box::new(SftpFilter::new(SftpMode::ReadOnly)))
                        .map(drop),
                    (1, growing) => match MaskFilter::new(maskers(growing)) {
                        Some(filter) => relay.set_filter(channel, Box::new(filter)).map(drop),
                        None => Ok(()),
                    },
                    (2, _) => relay.flush_filter(channel).map(drop),
                    _ => {
                        let holding: Vec<ChannelId> =
                            relay.filters_holding().map(|hold| hold.channel).collect();
                        holding
                            .into_iter()
                            .try_for_each(|channel| relay.flush_filter(channel).map(drop))
                    }
                };
                if let Err(e) = result {
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
                sent += transmit(&mut relay, Side::Downstream, usize::MAX, &mut client_data);
                sent += transmit(&mut relay, Side::Upstream, usize::MAX, &mut client_data);
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
    Outcome {
        sent,
        client_data,
        error,
    }
}

/// The maskers op 5 puts in a [`MaskFilter`], built once per process (compiling them per script
/// would dominate a fuzzing run). `growing = false`: e-mail addresses redacted (`[redacted:email]`,
/// shorter or longer than the address) and runs of 4 digits hashed (`h:` and 16 hex digits,
/// longer), so the output length drifts both ways; `true`: every `q` redacted, 12 times longer.
fn maskers(growing: bool) -> &'static [Arc<Masker>] {
    static MASKERS: OnceLock<[Vec<Arc<Masker>>; 2]> = OnceLock::new();
    let [drifting, growing_set] = MASKERS.get_or_init(|| {
        let build = |detectors: &[&str], custom: &[(&str, &str)], strategy| {
            let detectors: Vec<String> = detectors.iter().map(|d| (*d).to_owned()).collect();
            let custom: Vec<(String, String)> = custom
                .iter()
                .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
                .collect();
            // Fixed inputs that are known to compile; a failure leaves that masker out.
            Masker::new(&detectors, &custom, strategy, [7; 32])
                .ok()
                .map(Arc::new)
        };
        [
            [
                build(&["email"], &[], Strategy::Redact),
                build(&[], &[("pin", "[0-9]{4}")], Strategy::Hash),
            ]
            .into_iter()
            .flatten()
            .collect(),
            build(&[], &[("q", "q")], Strategy::Redact)
                .into_iter()
                .collect(),
        ]
    });
    if growing {
        growing_set
    } else {
        drifting
    }
}

fn transmit(relay: &mut Relay, to: Side, max: usize, client_data: &mut Vec<u8>) -> usize {
    let mut n = 0;
    while n < max {
        let Some(payload) = relay.poll_transmit(to) else {
            break;
        };
        match Message::parse(&payload) {
            Err(e) => panic!("relay sent a payload that does not decode ({e}): {payload:?}"),
            Ok(Message::Data { data, .. } | Message::ExtendedData { data, .. })
                if to == Side::Downstream =>
            {
                let room = CLIENT_DATA_KEPT.saturating_sub(client_data.len());
                client_data.extend_from_slice(data.get(..room).unwrap_or(data));
            }
            Ok(_) => {}
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
        let masked = masked_exec(
            &open,
            &confirm,
            &exec,
            0x00,
            b"mail bob@example.org, pin 1234\n",
        );
        let masked_growing = masked_exec(&open, &confirm, &exec, 0x80, b"qqqq quick quiz\n");
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
            ("mask_filter_exec.bin", masked),
            ("mask_filter_growing_exec.bin", masked_growing),
        ]
    }

    /// An exec whose channel gets a mask filter (op 5 variant 1, `flag` picks the masker set)
    /// before it is allowed; the target writes `secret` to stdout and stderr in two halves each,
    /// interleaved, the script flushes the channel (variant 2), the target writes it whole to
    /// both, the script flushes every holding channel (variant 3), the target writes it to
    /// stdout once more and ends with exit status, EOF and CLOSE (which flush too): five copies.
    fn masked_exec(open: &[u8], confirm: &[u8], exec: &[u8], flag: u8, secret: &[u8]) -> Vec<u8> {
        let (head, tail) = secret.split_at(secret.len() / 2);
        let out = |bytes: &[u8]| {
            handle(
                1,
                Message::Data {
                    recipient: 0,
                    data: bytes,
                },
            )
        };
        let err = |bytes: &[u8]| {
            handle(
                1,
                Message::ExtendedData {
                    recipient: 0,
                    data_type: EXTENDED_DATA_STDERR,
                    data: bytes,
                },
            )
        };
        [
            open.to_vec(),
            vec![4, 0x00, 3, 255],
            confirm.to_vec(),
            exec.to_vec(),
            vec![5 | 1 << 3, flag],
            vec![4, 0x00, 3, 255],
            handle(1, Message::ChannelSuccess { recipient: 0 }),
            out(head),
            err(head),
            out(tail),
            err(tail),
            vec![5 | 2 << 3, 0, 7],
            out(secret),
            err(secret),
            vec![7, 5 | 3 << 3, 0, 7],
            out(secret),
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
        .concat()
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
    fn mask_filter_ops_get_their_maskers() {
        // A masker that failed to compile would turn the mask ops into no-ops silently.
        assert_eq!(maskers(false).len(), 2);
        assert_eq!(maskers(true).len(), 1);
    }

    fn seed(name: &str) -> Vec<u8> {
        seed_scripts()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, script)| script)
            .unwrap()
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    #[test]
    fn mask_filter_seed_reaches_the_client_masked_shorter_and_longer() {
        let outcome = run(&seed("mask_filter_exec.bin"));
        assert_eq!(outcome.error, None);
        let text = String::from_utf8_lossy(&outcome.client_data);
        let masked = b"mail [redacted:email], pin h:";
        assert_eq!(count(&outcome.client_data, masked), 5, "{text}");
        assert!(!text.contains("bob@") && !text.contains("1234"), "{text}");
    }

    #[test]
    fn flush_op_releases_what_the_mask_filter_holds() {
        let script = seed("mask_filter_exec.bin");
        let flush_then_drain = [5 | 2 << 3, 0, 7];
        let at = script
            .windows(3)
            .position(|w| w == flush_then_drain)
            .unwrap();
        let masked: &[u8] = b"mail [redacted:email], pin h:";
        // Up to the flush: stdout and stderr each hold one whole line, released masked.
        let flushed = run(&script[..at + 3]);
        assert_eq!(count(&flushed.client_data, masked), 2);
        // Without it, the short lines stay in the maskers.
        let drained_only = run(&[&script[..at], &[7]].concat());
        assert_eq!(count(&drained_only.client_data, masked), 0);
    }

    #[test]
    fn growing_mask_filter_seed_reaches_the_client_masked() {
        let outcome = run(&seed("mask_filter_growing_exec.bin"));
        assert_eq!(outcome.error, None);
        let text = String::from_utf8_lossy(&outcome.client_data);
        let placeholders = count(&outcome.client_data, b"[redacted:q]");
        assert_eq!(placeholders, 5 * 6, "{text}");
        assert_eq!(count(&outcome.client_data, b"q"), placeholders, "{text}");
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
