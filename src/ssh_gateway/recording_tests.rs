//! Tests of the session's recordings with real files and a virtual clock: which channels are
//! recorded, the header from the pty-req, input only when asked, masks, the size limit, failures
//! refusing the channel, flushes and releases driven by `poll_timeout`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Plan, Recordings, HALT_LIMIT, MASK_IDLE};
use crate::audit::{Event as AuditEvent, Value};
use crate::mask::{Masker, Strategy};
use crate::proto::ssh::connection::TerminalSize;
use crate::proto::ssh::relay::ChannelId;
use crate::record::RecordOptions;
use crate::ssh_gateway::observe::{Observer, Report, Started};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-sshrec-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const CH: ChannelId = ChannelId(3);

fn size(cols: u32, rows: u32) -> TerminalSize {
    TerminalSize {
        cols,
        rows,
        width_px: 0,
        height_px: 0,
    }
}

fn plan(dir: &Path, record_input: bool, masks: Vec<Arc<Masker>>) -> Plan {
    Plan::new(
        dir.to_path_buf(),
        RecordOptions {
            record_input,
            ..RecordOptions::default()
        },
        masks,
    )
}

fn email_masker() -> Arc<Masker> {
    Arc::new(Masker::new(&["email".to_owned()], &[], Strategy::Redact, [7; 32]).unwrap())
}

fn recordings() -> Recordings {
    Recordings::new("s1", "alice", "web")
}

/// Starts a recorded shell on [`CH`] with an 100x30 xterm; returns the recording's time zero.
fn start_shell(rec: &mut Recordings, plan: &Plan) -> Instant {
    let t0 = Instant::now();
    rec.pty(CH, size(100, 30), b"xterm-256color");
    match rec.start(CH, t0, None, plan) {
        Started::Recording { event } => {
            assert_eq!(event.kind, "recording_started");
        }
        _ => panic!("the shell was not recorded"),
    }
    t0
}

/// Runs what the observer reports (closing recordings as the session would) and returns the
/// audit events.
fn settle(rec: &mut Recordings) -> Vec<AuditEvent> {
    rec.take_reports()
        .into_iter()
        .map(|r| match r {
            Report::Audit(ev) => ev,
            Report::Close(closing) => closing.close(),
        })
        .collect()
}

fn field<'a>(ev: &'a AuditEvent, key: &str) -> Option<&'a Value> {
    ev.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// The session's first recording.
fn cast(dir: &Path) -> String {
    fs::read_to_string(dir.join("recordings/s1-0.cast")).unwrap()
}

#[test]
fn records_a_shell_with_the_pty_size_and_term_in_the_header() {
    let tmp = TempDir::new("shell");
    let plan = plan(&tmp.0, false, Vec::new());
    let mut rec = recordings();
    let t0 = start_shell(&mut rec, &plan);
    rec.output(CH, t0 + Duration::from_millis(250), b"$ ls\r\n");
    rec.resize(CH, t0 + Duration::from_millis(500), size(120, 40));
    rec.finish(CH, t0 + Duration::from_secs(1));
    let events = settle(&mut rec);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "recording_finished");
    assert_eq!(
        field(&events[0], "limit_reached"),
        Some(&Value::Bool(false))
    );
    let text = cast(&tmp.0);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("{\"version\": 2, \"width\": 100, \"height\": 30,"),
        "{text}"
    );
    assert!(lines[0].contains("\"TERM\": \"xterm-256color\""), "{text}");
    assert!(lines[0].contains("\"title\": \"alice@web\""), "{text}");
    assert_eq!(lines[1], "[0.250000, \"o\", \"$ ls\\r\\n\"]");
    assert_eq!(lines[2], "[0.500000, \"r\", \"120x40\"]");
    let mode = fs::metadata(tmp.0.join("recordings/s1-0.cast"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn exec_without_a_pty_is_not_recorded_and_exec_with_one_is() {
    let tmp = TempDir::new("exec");
    let plan = plan(&tmp.0, false, Vec::new());
    let mut rec = recordings();
    let t0 = Instant::now();
    assert!(matches!(
        rec.start(ChannelId(1), t0, Some("rsync --server ."), &plan),
        Started::NotRecorded
    ));
    rec.output(ChannelId(1), t0, b"binary");
    rec.finish(ChannelId(1), t0);
    assert!(settle(&mut rec).is_empty());
    assert!(!tmp.0.join("recordings").exists());

    rec.pty(CH, size(80, 24), b"vt100");
    let Started::Recording { event } = rec.start(CH, t0, Some("top -b -n 1"), &plan) else {
        panic!("exec with a pty not recorded");
    };
    assert_eq!(
        field(&event, "command"),
        Some(&Value::Str("top -b -n 1".into()))
    );
    assert_eq!(
        field(&event, "channel_kind"),
        Some(&Value::Str("exec".into()))
    );
    rec.finish(CH, t0);
    settle(&mut rec);
    assert!(cast(&tmp.0).contains("\"command\": \"top -b -n 1\""));
}

#[test]
fn input_is_recorded_only_when_the_target_asks() {
    for record_input in [false, true] {
        let tmp = TempDir::new("input");
        let plan = plan(&tmp.0, record_input, Vec::new());
        let mut rec = recordings();
        let t0 = start_shell(&mut rec, &plan);
        rec.input(CH, t0 + Duration::from_millis(100), b"s3cret\r");
        rec.output(CH, t0 + Duration::from_millis(200), b"ok\r\n");
        rec.finish(CH, t0 + Duration::from_secs(1));
        settle(&mut rec);
        let text = cast(&tmp.0);
        assert_eq!(text.contains("s3cret"), record_input, "{text}");
        assert_eq!(text.contains("\"i\""), record_input, "{text}");
        assert!(text.contains("ok\\r\\n"), "{text}");
    }
}

#[test]
fn refuses_the_channel_when_the_recording_cannot_be_created() {
    let tmp = TempDir::new("nodir");
    // A file where the recordings directory should be.
    fs::write(tmp.0.join("recordings"), b"not a directory").unwrap();
    let plan = plan(&tmp.0, false, Vec::new());
    let mut rec = recordings();
    rec.pty(CH, size(80, 24), b"xterm");
    match rec.start(CH, Instant::now(), None, &plan) {
        Started::Failed { event, message } => {
            assert_eq!(event.kind, "recording_failed");
            assert_eq!(
                field(&event, "action"),
                Some(&Value::Str("channel refused".into()))
            );
            assert!(message.starts_with("portcullis: "), "{message}");
        }
        _ => panic!("an unrecordable shell was allowed"),
    }
    assert!(rec.halted().is_none(), "other channels may still run");
}

#[test]
fn refuses_to_overwrite_an_existing_recording() {
    let tmp = TempDir::new("exists");
    fs::create_dir_all(tmp.0.join("recordings")).unwrap();
    fs::write(tmp.0.join("recordings/s1-0.cast"), b"earlier").unwrap();
    let plan = plan(&tmp.0, false, Vec::new());
    let mut rec = recordings();
    assert!(matches!(
        rec.start(CH, Instant::now(), None, &plan),
        Started::Failed { .. }
    ));
    assert_eq!(cast(&tmp.0), "earlier");
}

#[test]
fn reaching_the_size_limit_halts_the_session_once() {
    let tmp = TempDir::new("limit");
    let plan = Plan::new(
        tmp.0.clone(),
        RecordOptions {
            limit: 400,
            ..RecordOptions::default()
        },
        Vec::new(),
    );
    let mut rec = recordings();
    let t0 = start_shell(&mut rec, &plan);
    rec.output(CH, t0, &[b'x'; 100]);
    assert!(rec.halted().is_none());
    rec.output(CH, t0, &[b'y'; 300]);
    assert_eq!(rec.halted(), Some(HALT_LIMIT));
    rec.output(CH, t0, &[b'z'; 300]);
    rec.end(t0 + Duration::from_secs(1));
    let events = settle(&mut rec);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["recording_limit_reached", "recording_finished"]);
    assert_eq!(field(&events[1], "limit_reached"), Some(&Value::Bool(true)));
    let text = cast(&tmp.0);
    assert!(!text.contains("yyy") && !text.contains("zzz"), "{text}");
}

#[test]
fn masked_output_is_recorded_without_the_secret_even_typed_byte_by_byte() {
    let tmp = TempDir::new("mask");
    let plan = plan(&tmp.0, true, vec![email_masker()]);
    let mut rec = recordings();
    let t0 = start_shell(&mut rec, &plan);
    let typed = b"mail alice@example.com\r\n";
    for (i, b) in typed.iter().enumerate() {
        let at = t0 + Duration::from_millis(100 * u64::try_from(i).unwrap());
        // The shell echoes each keystroke.
        rec.input(CH, at, &[*b]);
        rec.output(CH, at, &[*b]);
    }
    let last = t0 + Duration::from_millis(100 * u64::try_from(typed.len() - 1).unwrap());
    // Held back until the stream has been quiet for MASK_IDLE, then released at the last data.
    assert_eq!(rec.poll_timeout(), Some(last + MASK_IDLE));
    rec.handle_timeout(last + MASK_IDLE - Duration::from_millis(1));
    assert!(!cast(&tmp.0).contains("mail"), "released early");
    rec.handle_timeout(last + MASK_IDLE);
    assert_eq!(rec.poll_timeout(), None);
    let text = cast(&tmp.0);
    assert!(!text.contains("alice@example.com"), "{text}");
    assert!(text.contains("mail [redacted:email]\\r\\n"), "{text}");
    assert!(
        text.contains("[2.300000, \"o\""),
        "timed at the last byte: {text}"
    );
    rec.finish(CH, last + Duration::from_secs(5));
    settle(&mut rec);
    assert!(!cast(&tmp.0).contains("example.com"));
}

#[test]
fn masks_hold_nothing_back_at_the_channel_end() {
    let tmp = TempDir::new("mask-end");
    let plan = plan(&tmp.0, false, vec![email_masker()]);
    let mut rec = recordings();
    let t0 = start_shell(&mut rec, &plan);
    rec.output(CH, t0, b"bob@example.org and the rest");
    rec.finish(CH, t0 + Duration::from_millis(10));
    settle(&mut rec);
    let text = cast(&tmp.0);
    assert!(text.contains("[redacted:email] and the rest"), "{text}");
}

#[test]
fn buffered_output_is_flushed_when_poll_timeout_says() {
    let tmp = TempDir::new("flush");
    let plan = plan(&tmp.0, false, Vec::new());
    let mut rec = recordings();
    let t0 = start_shell(&mut rec, &plan);
    assert_eq!(rec.poll_timeout(), None, "nothing buffered");
    rec.output(CH, t0 + Duration::from_millis(100), b"hello");
    assert!(!cast(&tmp.0).contains("hello"), "buffered, not yet written");
    let due = rec.poll_timeout().unwrap();
    assert_eq!(due, t0 + Duration::from_secs(1));
    rec.handle_timeout(due);
    assert!(cast(&tmp.0).contains("hello"));
    assert_eq!(rec.poll_timeout(), None);
}

#[test]
fn session_end_finishes_every_open_recording() {
    let tmp = TempDir::new("end");
    let plan = plan(&tmp.0, false, Vec::new());
    let mut rec = recordings();
    let t0 = Instant::now();
    for ch in [ChannelId(0), ChannelId(1)] {
        assert!(matches!(
            rec.start(ch, t0, None, &plan),
            Started::Recording { .. }
        ));
        rec.output(ch, t0, b"still running");
    }
    rec.end(t0 + Duration::from_secs(3));
    let events = settle(&mut rec);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.kind == "recording_finished"));
    for n in [0, 1] {
        let text = fs::read_to_string(tmp.0.join(format!("recordings/s1-{n}.cast"))).unwrap();
        assert!(text.contains("still running"), "{text}");
    }
}

#[test]
fn channels_not_recorded_are_ignored() {
    let tmp = TempDir::new("ignored");
    let mut rec = recordings();
    // Data on a channel that never started (sftp, forwarding).
    rec.output(ChannelId(9), Instant::now(), b"x");
    rec.input(ChannelId(9), Instant::now(), b"x");
    rec.resize(ChannelId(9), Instant::now(), size(1, 1));
    rec.finish(ChannelId(9), Instant::now());
    assert!(settle(&mut rec).is_empty());
    assert!(!tmp.0.join("recordings").exists());
}

#[test]
fn a_reused_channel_number_gets_a_new_file() {
    let tmp = TempDir::new("reuse");
    let plan = plan(&tmp.0, false, Vec::new());
    let mut rec = recordings();
    let t0 = Instant::now();
    for (n, text) in [(0, "first"), (1, "second")] {
        // The relay numbers a channel again once it is closed on both sides.
        let Started::Recording { event } = rec.start(CH, t0, None, &plan) else {
            panic!("recording {n} refused");
        };
        let path = tmp.0.join(format!("recordings/s1-{n}.cast"));
        assert_eq!(
            event
                .fields
                .iter()
                .find(|(k, _)| *k == "path")
                .map(|(_, v)| v),
            Some(&Value::Str(path.display().to_string()))
        );
        rec.output(CH, t0, text.as_bytes());
        rec.finish(CH, t0);
        settle(&mut rec);
        assert!(fs::read_to_string(&path).unwrap().contains(text));
    }
}
