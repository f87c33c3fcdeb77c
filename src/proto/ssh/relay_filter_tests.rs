//! Channel filters in the relay's data path (the SFTP read-only filter above all): what is
//! forwarded, what is answered locally, the window bookkeeping with injected replies (the
//! harness checks the invariant after every step), and that packets never interleave.

use super::*;
use crate::proto::ssh::filter::{FilterNote, SftpFilter};
use crate::proto::ssh::sftp::{self, fxp, status, SftpEvent, SftpMode};
use crate::proto::ssh::wire::{Reader, Writer};

/// One SFTP packet: uint32 length, byte type, then `fields`.
fn packet(kind: u8, fields: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut body = Writer::message(kind);
    fields(&mut body);
    let mut w = Writer::new();
    w.string(body.as_bytes());
    w.into_bytes()
}

fn init() -> Vec<u8> {
    packet(fxp::INIT, |w| {
        w.u32(3);
    })
}

fn remove(id: u32, path: &str) -> Vec<u8> {
    packet(fxp::REMOVE, |w| {
        w.u32(id).string(path.as_bytes());
    })
}

fn open_read(id: u32, path: &str) -> Vec<u8> {
    packet(fxp::OPEN, |w| {
        w.u32(id).string(path.as_bytes()).u32(1).u32(0);
    })
}

fn data_reply(id: u32, len: usize) -> Vec<u8> {
    packet(fxp::DATA, |w| {
        w.u32(id).string(&vec![0x5a; len]);
    })
}

/// Cuts a byte stream into SFTP packets: (type, request id). Panics on a partial packet, so a
/// stream that interleaved two packets fails here.
fn packets(stream: &[u8]) -> Vec<(u8, u32)> {
    let mut r = Reader::new(stream);
    let mut out = Vec::new();
    while !r.is_empty() {
        let body = r.string().expect("whole packets only");
        let mut b = Reader::new(body);
        let kind = b.u8().unwrap();
        let id = b.u32().unwrap_or(0);
        out.push((kind, id));
    }
    out
}

/// The data bytes in `got` (plain DATA only), concatenated.
fn data_of(got: &[Got]) -> Vec<u8> {
    got.iter()
        .flat_map(|g| match g {
            Got::Data(_, d) => d.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// A session channel whose `subsystem sftp` request was allowed with an SFTP filter in `mode`.
/// The client window is `client_window`.
fn sftp_channel(h: &mut Harness, mode: SftpMode, client_window: u32) -> u32 {
    let id = h.open_session_with(0, 300, client_window, 32 * 1024, 2 * MIB, 32 * 1024);
    h.send(
        DOWN,
        request(id, true, ChannelRequestKind::Subsystem { name: b"sftp" }),
    );
    let d = h.decision();
    assert!(h
        .relay
        .set_filter(ChannelId(id), Box::new(SftpFilter::new(mode)))
        .unwrap());
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    let up = h.take(UP);
    assert!(
        matches!(&up[..], [Got::Request { name, .. }] if name == "subsystem"),
        "{up:?}"
    );
    h.send(UP, Message::ChannelSuccess { recipient: id });
    assert_eq!(h.take(DOWN), vec![Got::Success(0)]);
    h.relay.check_invariants().unwrap();
    id
}

fn sftp_notes(events: &[Event]) -> Vec<SftpEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Filtered {
                note: FilterNote::Sftp(ev),
                ..
            } => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn read_only_filter_answers_writes_itself_and_forwards_reads_byte_for_byte() {
    let mut h = Harness::new();
    let id = sftp_channel(&mut h, SftpMode::ReadOnly, 2 * MIB);
    let mut batch = init();
    batch.extend(remove(7, "/etc/passwd"));
    batch.extend(open_read(8, "/etc/hostname"));
    h.send(DOWN, data(id, &batch));
    let mut forwarded = init();
    forwarded.extend(open_read(8, "/etc/hostname"));
    assert_eq!(h.take(UP), vec![Got::Data(300, forwarded)]);
    let down = h.take(DOWN);
    assert_eq!(
        down,
        vec![Got::Data(
            0,
            sftp::status_packet(7, status::PERMISSION_DENIED, sftp::DENIED_MESSAGE)
        )]
    );
    let notes = sftp_notes(&h.drain_events());
    assert!(notes.contains(&SftpEvent::Denied { id: 7 }), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| matches!(n, SftpEvent::Remove { path, .. } if path == "/etc/passwd")),
        "{notes:?}"
    );
}

#[test]
fn refused_bytes_return_window_at_once_forwarded_bytes_when_handed_on() {
    let mut h = Harness::new();
    let id = sftp_channel(&mut h, SftpMode::ReadOnly, 2 * MIB);
    h.send(DOWN, data(id, &init()));
    h.take(UP);
    // 200 refused requests of ~4 KiB each: 800 KiB, past OpenSSH's adjust threshold.
    let path = "x".repeat(4000);
    let refused: Vec<u8> = (0..200).flat_map(|i| remove(i, &path)).collect();
    h.send(DOWN, data(id, &refused));
    assert_eq!(h.take(UP), vec![], "nothing refused goes upstream");
    let down = h.take(DOWN);
    let adjusted: u32 = down
        .iter()
        .map(|g| match g {
            Got::Adjust(0, n) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(
        adjusted as usize,
        init().len() + refused.len(),
        "all of it came back as window"
    );
    assert_eq!(packets(&data_of(&down)).len(), 200);
}

#[test]
fn partial_packets_are_held_and_never_interleave_with_refusals() {
    let mut h = Harness::new();
    let id = sftp_channel(&mut h, SftpMode::ReadOnly, 2 * MIB);
    h.send(DOWN, data(id, &init()));
    h.send(DOWN, data(id, &open_read(1, "/f")));
    h.take(UP);
    // The server's 40 KiB DATA answer arrives in three pieces; a refusal is due in between.
    let answer = data_reply(2, 40 * 1024);
    let (a, rest) = answer.split_at(5);
    let (b, c) = rest.split_at(30 * 1024);
    h.send(UP, data(id, a));
    h.send(DOWN, data(id, &remove(3, "/f")));
    h.send(UP, data(id, b));
    // Client-side half a request: held back, not forwarded.
    let read_req = packet(fxp::READ, |w| {
        w.u32(4).string(b"h").u64(0).u32(100);
    });
    let (r1, r2) = read_req.split_at(7);
    h.send(DOWN, data(id, r1));
    assert_eq!(h.take(UP), vec![]);
    h.send(UP, data(id, c));
    h.send(DOWN, data(id, r2));
    assert_eq!(h.take(UP), vec![Got::Data(300, read_req)]);
    let stream = data_of(&h.take(DOWN));
    assert_eq!(
        packets(&stream),
        vec![(fxp::STATUS, 3), (fxp::DATA, 2)],
        "the refusal went first (the answer was incomplete), each packet whole"
    );
}

#[test]
fn refusals_wait_for_the_clients_window_and_keep_the_bookkeeping_exact() {
    let mut h = Harness::new();
    // The client gives the relay a window of 100 bytes only.
    let id = sftp_channel(&mut h, SftpMode::ReadOnly, 100);
    h.send(DOWN, data(id, &init()));
    for i in 0..10 {
        h.send(DOWN, data(id, &remove(i, "/x")));
    }
    let first = data_of(&h.take(DOWN));
    assert_eq!(first.len(), 100, "exactly the client's window");
    h.send(
        DOWN,
        Message::WindowAdjust {
            recipient: id,
            bytes: 10_000,
        },
    );
    let mut stream = first;
    stream.extend(data_of(&h.take(DOWN)));
    let got = packets(&stream);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(k, _)| *k == fxp::STATUS));
    assert_eq!(
        got.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    // The server's answer to INIT is queued after the refusals it followed.
    let version = packet(fxp::VERSION, |w| {
        w.u32(3);
    });
    h.send(UP, data(id, &version));
    assert_eq!(h.take(DOWN), vec![Got::Data(0, version)]);
}

#[test]
fn data_sent_before_the_decision_is_filtered_too() {
    let mut h = Harness::new();
    let id = h.open_session(0, 300);
    h.send(
        DOWN,
        request(id, true, ChannelRequestKind::Subsystem { name: b"sftp" }),
    );
    let d = h.decision();
    // A client that does not wait for the subsystem's success.
    let mut early = init();
    early.extend(remove(1, "/etc/shadow"));
    h.send(DOWN, data(id, &early));
    assert!(h
        .relay
        .set_filter(ChannelId(id), Box::new(SftpFilter::new(SftpMode::ReadOnly)))
        .unwrap());
    h.relay.check_invariants().unwrap();
    h.relay.decide(d.ticket(), Verdict::Allow).unwrap();
    let up = h.take(UP);
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(matches!(&up[0], Got::Request { name, .. } if name == "subsystem"));
    assert_eq!(up[1], Got::Data(300, init()));
    assert_eq!(
        packets(&data_of(&h.take(DOWN))),
        vec![(fxp::STATUS, 1)],
        "refused, never forwarded"
    );
}

#[test]
fn malformed_stream_fails_closed_and_closes_the_channel() {
    let mut h = Harness::new();
    let id = sftp_channel(&mut h, SftpMode::ReadWrite, 2 * MIB);
    h.send(DOWN, data(id, &init()));
    h.take(UP);
    h.drain_events();
    // A write request, then a packet length over sftp::MAX_PACKET in the same message.
    let mut bad = remove(5, "/tmp/x");
    bad.extend(u32::MAX.to_be_bytes());
    h.send(DOWN, data(id, &bad));
    let events = h.drain_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::FilterFailed { channel, .. } if channel.0 == id)),
        "{events:?}"
    );
    assert!(sftp_notes(&events).is_empty(), "nothing of the failed call");
    assert_eq!(
        h.take(UP),
        vec![Got::Close(300)],
        "the REMOVE never went up"
    );
    assert_eq!(h.take(DOWN), vec![Got::Close(0)]);
    // Late data of either side is dropped, never relayed unfiltered.
    h.send(UP, data(id, b"late"));
    assert_eq!(h.take(DOWN), vec![]);
}

#[test]
fn clients_extended_data_on_a_filtered_channel_is_dropped() {
    let mut h = Harness::new();
    let id = sftp_channel(&mut h, SftpMode::ReadOnly, 2 * MIB);
    h.send(
        DOWN,
        Message::ExtendedData {
            recipient: id,
            data_type: EXTENDED_DATA_STDERR,
            data: &remove(1, "/x"),
        },
    );
    assert_eq!(h.take(UP), vec![]);
    // The server's stderr is relayed as it is.
    h.send(
        UP,
        Message::ExtendedData {
            recipient: id,
            data_type: EXTENDED_DATA_STDERR,
            data: b"sftp-server: log line\n",
        },
    );
    assert_eq!(
        h.take(DOWN),
        vec![Got::Stderr(0, b"sftp-server: log line\n".to_vec())]
    );
}

#[test]
fn rejects_a_flood_of_refused_requests_the_client_never_reads() {
    let mut h = Harness::new();
    // The client never gives window back: refusals pile up.
    let id = sftp_channel(&mut h, SftpMode::ReadOnly, 0);
    h.send(DOWN, data(id, &init()));
    let one = remove(0, "");
    let batch: Vec<u8> = std::iter::repeat_n(one, 2000).flatten().collect();
    let mut result = Ok(());
    for _ in 0..100 {
        result = h.relay.handle(DOWN, &data(id, &batch).encode());
        if result.is_err() {
            break;
        }
        // The window comes back as refused bytes are dropped.
        h.take(DOWN);
    }
    assert_eq!(
        result,
        Err(RelayError::QueueFull {
            from: DOWN,
            channel: Some(ChannelId(id))
        })
    );
}
