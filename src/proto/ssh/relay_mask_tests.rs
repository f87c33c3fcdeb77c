//! The mask filter in the relay's data path: the target's stdout and stderr reach the client
//! masked, held bytes are released when the caller says the stream is idle and before EOF, exit
//! status and CLOSE (in that order), and the window bookkeeping stays exact while masking
//! changes the length of the output (the harness checks the invariant after every step).

use std::sync::Arc;

use super::*;
use crate::mask::{Masker, Strategy};
use crate::proto::ssh::mask_filter::MaskFilter;

fn masker(strategy: Strategy) -> Arc<Masker> {
    Arc::new(Masker::new(&["email".to_owned()], &[], strategy, [7; 32]).unwrap())
}

/// A session channel whose exec was allowed with a mask filter; the client's window is
/// `client_window`.
fn masked_exec(h: &mut Harness, strategy: Strategy, client_window: u32) -> u32 {
    let id = h.open_session_with(0, 100, client_window, 32 * 1024, 2 * MIB, 32 * 1024);
    let d = h.exec(id, b"printf");
    let filter = MaskFilter::new(&[masker(strategy)]).unwrap();
    assert!(h.relay.set_filter(ChannelId(id), Box::new(filter)).unwrap());
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    let up = h.take(UP);
    assert!(
        matches!(&up[..], [Got::Request { name, .. }] if name == "exec"),
        "{up:?}"
    );
    h.send(UP, Message::ChannelSuccess { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Success(0)]);
    id
}

fn stderr(recipient: u32, bytes: &[u8]) -> Message<'_> {
    Message::ExtendedData {
        recipient,
        data_type: EXTENDED_DATA_STDERR,
        data: bytes,
    }
}

fn exit_status(recipient: u32, status: u32) -> Message<'static> {
    request(recipient, false, ChannelRequestKind::ExitStatus { status })
}

fn open_channel(h: &Harness, id: u32) -> &OpenChannel {
    match h.relay.channels.get(&id) {
        Some(Slot::Open(ch)) => ch,
        other => panic!("channel {id} not open: {other:?}"),
    }
}

fn holding(h: &Harness) -> Vec<ChannelId> {
    h.relay.filters_holding().map(|f| f.channel).collect()
}

#[test]
fn held_output_reaches_the_client_masked_when_the_caller_flushes_at_idle() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    h.send(UP, data(id, b"mail bob@example.org please\n"));
    // Short output stays in the masker until it knows no address starts in its tail.
    assert_eq!(h.take(DOWN), vec![]);
    assert_eq!(holding(&h), vec![ChannelId(id)]);
    let fed = h.relay.filters_holding().next().unwrap().fed;
    assert_eq!(fed, 28);
    assert!(h.relay.flush_filter(ChannelId(id)).unwrap());
    h.relay.check_invariants().unwrap();
    assert_eq!(
        h.take(DOWN),
        vec![Got::Data(0, b"mail [redacted:email] please\n".to_vec())]
    );
    assert_eq!(holding(&h), vec![]);
    // A flush with nothing held sends nothing.
    assert!(h.relay.flush_filter(ChannelId(id)).unwrap());
    assert_eq!(h.take(DOWN), vec![]);
}

#[test]
fn stderr_is_masked_in_its_own_stream() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    // An address split across two stderr writes with stdout in between is still found whole.
    h.send(UP, stderr(id, b"error: eve@exa"));
    h.send(UP, data(id, b"progress 50%\n"));
    h.send(UP, stderr(id, b"mple.net failed\n"));
    h.relay.flush_filter(ChannelId(id)).unwrap();
    h.relay.check_invariants().unwrap();
    assert_eq!(
        h.take(DOWN),
        vec![
            Got::Data(0, b"progress 50%\n".to_vec()),
            Got::Stderr(0, b"error: [redacted:email] failed\n".to_vec()),
        ]
    );
}

#[test]
fn held_bytes_go_out_before_eof_then_exit_status_then_close() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    h.send(UP, data(id, b"to: carol@example.com"));
    h.send(UP, stderr(id, b"warn: dan@example.com"));
    assert_eq!(h.take(DOWN), vec![]);
    h.send(UP, Message::Eof { recipient: id });
    h.send(UP, exit_status(id, 3));
    h.send(UP, Message::Close { recipient: id });
    let down = h.take(DOWN);
    assert_eq!(down.len(), 5, "{down:?}");
    assert_eq!(down[0], Got::Data(0, b"to: [redacted:email]".to_vec()));
    assert_eq!(down[1], Got::Stderr(0, b"warn: [redacted:email]".to_vec()));
    assert_eq!(down[2], Got::Eof(0));
    assert_eq!(exit_status_of(&down[3]), Some(3));
    assert_eq!(down[4], Got::Close(0));
}

#[test]
fn exit_status_before_eof_waits_for_the_held_bytes_too() {
    // sshd's usual order: output, exit-status, EOF, CLOSE.
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    h.send(UP, data(id, b"ok frank@example.com\n"));
    h.send(UP, exit_status(id, 0));
    h.send(UP, Message::Eof { recipient: id });
    let down = h.take(DOWN);
    assert_eq!(down.len(), 3, "{down:?}");
    assert_eq!(down[0], Got::Data(0, b"ok [redacted:email]\n".to_vec()));
    assert_eq!(exit_status_of(&down[1]), Some(0));
    assert_eq!(down[2], Got::Eof(0));
}

#[test]
fn close_without_eof_releases_the_held_bytes_first() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    h.send(UP, data(id, b"last words gus@example.com"));
    h.send(UP, Message::Close { recipient: id });
    assert_eq!(
        h.take(DOWN),
        vec![
            Got::Data(0, b"last words [redacted:email]".to_vec()),
            Got::Close(0)
        ]
    );
}

#[test]
fn client_input_passes_through_unmasked() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    h.send(DOWN, data(id, b"typed hal@example.com\n"));
    assert_eq!(
        h.take(UP),
        vec![Got::Data(100, b"typed hal@example.com\n".to_vec())]
    );
    assert_eq!(holding(&h), vec![]);
}

/// Upstream output in which every line holds one short address: redacting makes it longer.
fn growing_output(lines: usize) -> Vec<u8> {
    (0..lines)
        .flat_map(|i| format!("{i:05} a@b.io\n").into_bytes())
        .collect()
}

#[test]
fn longer_output_takes_the_clients_window_by_its_length_and_returns_input_bytes_upstream() {
    let mut h = Harness::new();
    // A client window far smaller than the output: most of it waits in the relay.
    let id = masked_exec(&mut h, Strategy::Redact, 4096);
    let input = growing_output(20_000); // 280,000 bytes
    let input_len = u32::try_from(input.len()).unwrap();
    for chunk in input.chunks(32 * 1024) {
        h.send(UP, data(id, chunk));
    }
    h.relay.flush_filter(ChannelId(id)).unwrap();
    h.relay.check_invariants().unwrap();
    let expected: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("{i:05} [redacted:email]\n").into_bytes())
        .collect();
    let mut got = Vec::new();
    let mut adjusted_up: u64 = 0;
    let mut rounds = 0;
    loop {
        for g in h.take(DOWN) {
            match g {
                Got::Data(0, d) => got.extend(d),
                other => panic!("unexpected {other:?}"),
            }
        }
        for g in h.take(UP) {
            match g {
                Got::Adjust(100, n) => adjusted_up += u64::from(n),
                other => panic!("unexpected {other:?}"),
            }
        }
        if got.len() == expected.len() {
            break;
        }
        // The client never gets more than the window it gave: 4096 output bytes per round.
        let ch = open_channel(&h, id);
        assert_eq!(
            ch.leg(DOWN).send_window,
            0,
            "window used up by output bytes"
        );
        assert_eq!(got.len() % 4096, 0);
        h.send(
            DOWN,
            Message::WindowAdjust {
                recipient: 0,
                bytes: 4096,
            },
        );
        rounds += 1;
        assert!(rounds < 1000, "output never drained");
    }
    assert_eq!(got, expected);
    // Every input byte's window came back to upstream (adjusted, or due at the next threshold),
    // none twice.
    let leg = &open_channel(&h, id).legs[UP.index()];
    assert_eq!(h.relay.buffered(ChannelId(id), DOWN), 0);
    assert_eq!(
        adjusted_up + u64::from(leg.unadjusted),
        u64::from(input_len)
    );
    assert_eq!(leg.recv_window + leg.unadjusted, leg.recv_window_max);
}

#[test]
fn output_masked_shorter_returns_the_difference_to_upstream_at_once() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Hash, 0);
    let address = b"a.very.long.mailbox.name.for.testing@subdomain.example.com";
    h.send(UP, data(id, address));
    h.relay.flush_filter(ChannelId(id)).unwrap();
    h.relay.check_invariants().unwrap();
    // 18 bytes (`h:` + 16 hex digits) wait for the client's window; the other input bytes'
    // window is owed back to upstream already.
    assert_eq!(h.relay.buffered(ChannelId(id), DOWN), 18);
    let up = &open_channel(&h, id).legs[UP.index()];
    assert_eq!(up.unadjusted, u32::try_from(address.len()).unwrap() - 18);
    h.send(
        DOWN,
        Message::WindowAdjust {
            recipient: 0,
            bytes: 1000,
        },
    );
    let down = h.take(DOWN);
    assert!(
        matches!(&down[..], [Got::Data(0, d)] if d.len() == 18 && d.starts_with(b"h:")),
        "{down:?}"
    );
    assert_eq!(h.relay.buffered(ChannelId(id), DOWN), 0);
}

#[test]
fn large_output_streams_through_without_a_flush_and_is_masked_exactly() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Partial { keep: 4 }, 2 * MIB);
    // Addresses straddling every packet boundary: output length is kept by `partial`.
    let input = growing_output(10_000);
    let mut got = Vec::new();
    for chunk in input.chunks(1000) {
        h.send(UP, data(id, chunk));
        for g in h.take(DOWN) {
            if let Got::Data(0, d) = g {
                got.extend(d);
            }
        }
    }
    // Most of it went out while streaming; only the tail waits.
    assert!(got.len() > input.len() - 16 * 1024, "{}", got.len());
    h.send(UP, Message::Eof { recipient: id });
    for g in h.take(DOWN) {
        if let Got::Data(0, d) = g {
            got.extend(d);
        }
    }
    let expected: Vec<u8> = (0..10_000)
        .flat_map(|i| format!("{i:05} ***.io\n").into_bytes())
        .collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "masked stream differs");
}

#[test]
fn exit_status_amid_output_is_not_a_split_point() {
    // sshd sends exit-status when the command exits, while more of its output may still wait
    // for window: the address spanning the exit-status is still found whole.
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    h.send(UP, data(id, b"x ivy@exa"));
    h.send(UP, exit_status(id, 0));
    assert_eq!(
        h.take(DOWN),
        vec![],
        "exit-status waits behind the held output"
    );
    h.send(UP, data(id, b"mple.org\n"));
    h.send(UP, Message::Eof { recipient: id });
    let down = h.take(DOWN);
    assert_eq!(down.len(), 3, "{down:?}");
    assert_eq!(down[0], Got::Data(0, b"x [redacted:email]\n".to_vec()));
    assert_eq!(exit_status_of(&down[1]), Some(0));
    assert_eq!(down[2], Got::Eof(0));
}

#[test]
fn exit_status_behind_held_output_follows_an_idle_flush() {
    let mut h = Harness::new();
    let id = masked_exec(&mut h, Strategy::Redact, 2 * MIB);
    h.send(UP, data(id, b"done jo@example.net"));
    h.send(UP, exit_status(id, 7));
    h.relay.flush_filter(ChannelId(id)).unwrap();
    let down = h.take(DOWN);
    assert_eq!(down.len(), 2, "{down:?}");
    assert_eq!(down[0], Got::Data(0, b"done [redacted:email]".to_vec()));
    assert_eq!(exit_status_of(&down[1]), Some(7));
}

#[test]
fn input_and_eof_sent_before_the_shell_was_allowed_keep_their_order() {
    // `ssh -tt host < script`: the client sends the script and its EOF before the gateway has
    // decided the shell; installing the filter must not strand the data behind the EOF.
    let mut h = Harness::new();
    let id = h.open_session(0, 100);
    h.send(DOWN, request(id, true, ChannelRequestKind::Shell));
    let d = h.decision();
    h.send(DOWN, data(id, b"echo hi\nexit\n"));
    h.send(DOWN, Message::Eof { recipient: id });
    let filter = MaskFilter::new(&[masker(Strategy::Redact)]).unwrap();
    assert!(h.relay.set_filter(ChannelId(id), Box::new(filter)).unwrap());
    h.relay.check_invariants().unwrap();
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    let up = h.take(UP);
    assert_eq!(up.len(), 3, "{up:?}");
    assert!(matches!(&up[0], Got::Request { name, .. } if name == "shell"));
    assert_eq!(up[1], Got::Data(100, b"echo hi\nexit\n".to_vec()));
    assert_eq!(up[2], Got::Eof(100));
}
