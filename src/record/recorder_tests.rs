//! Tests of the recording file: placement, permissions, flushing, filter, limit, errors.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::asciicast::{Header, Outcome, LIMIT_MARKER};
use super::recorder::{recording_path, RecordOptions, Recorder};
use super::RecordError;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-record-{name}-{}-{n}",
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

fn header() -> Header {
    Header::new(80, 24, 1_700_000_000, "xterm-256color")
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn creates_recording_0600_in_recordings_dir_0700() {
    let tmp = TempDir::new("create");
    let rec = Recorder::create(&tmp.0, "s-1f2e", 0, &header(), RecordOptions::default()).unwrap();
    let path = tmp.0.join("recordings").join("s-1f2e-0.cast");
    assert_eq!(rec.path(), path);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&tmp.0.join("recordings")), 0o700);
    // The header is on disk at once: a session that dies early still leaves a valid file.
    assert_eq!(
        lines(&path),
        [
            "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1700000000, \
          \"env\": {\"TERM\": \"xterm-256color\"}}"
        ]
    );
    let summary = rec.finish(secs(0.5)).unwrap();
    assert_eq!(summary.path, path);
    assert_eq!(summary.bytes, fs::metadata(&path).unwrap().len());
    assert!(!summary.limit_reached);
}

#[test]
fn refuses_to_overwrite_an_existing_recording() {
    let tmp = TempDir::new("exists");
    let first = Recorder::create(&tmp.0, "s1", 3, &header(), RecordOptions::default()).unwrap();
    let err = Recorder::create(&tmp.0, "s1", 3, &header(), RecordOptions::default()).unwrap_err();
    assert_eq!(
        err,
        RecordError::AlreadyExists {
            path: first.path().to_path_buf()
        }
    );
    // Another channel of the same session is another file.
    Recorder::create(&tmp.0, "s1", 4, &header(), RecordOptions::default()).unwrap();
}

#[test]
fn refuses_a_symlink_at_the_recording_path() {
    let tmp = TempDir::new("symlink");
    fs::create_dir(tmp.0.join("recordings")).unwrap();
    let victim = tmp.0.join("victim");
    fs::write(&victim, b"keep me").unwrap();
    symlink(&victim, tmp.0.join("recordings/s1-0.cast")).unwrap();
    let err = Recorder::create(&tmp.0, "s1", 0, &header(), RecordOptions::default()).unwrap_err();
    assert!(matches!(err, RecordError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
}

#[test]
fn refuses_recordings_path_that_is_a_file() {
    let tmp = TempDir::new("notdir");
    fs::write(tmp.0.join("recordings"), b"").unwrap();
    let err = Recorder::create(&tmp.0, "s1", 0, &header(), RecordOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::Io {
                op: "create directory",
                ..
            } | RecordError::NotADirectory { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn rejects_session_ids_that_are_not_plain_file_names() {
    let dir = Path::new("/var/lib/portcullis");
    for bad in [
        "",
        "../etc",
        "a/b",
        ".hidden",
        "a b",
        "s\0",
        "é",
        &"x".repeat(129),
    ] {
        assert_eq!(
            recording_path(dir, bad, 0),
            Err(RecordError::InvalidSessionId),
            "{bad:?}"
        );
    }
    assert_eq!(
        recording_path(dir, "2026-01-02T03.04_ab-CD", 7).unwrap(),
        Path::new("/var/lib/portcullis/recordings/2026-01-02T03.04_ab-CD-7.cast")
    );
}

#[test]
fn records_output_resize_and_marker_lines() {
    let tmp = TempDir::new("events");
    let mut rec = Recorder::create(&tmp.0, "s1", 0, &header(), RecordOptions::default()).unwrap();
    assert_eq!(rec.output(secs(0.25), b"$ ").unwrap(), Outcome::Recorded);
    assert_eq!(rec.resize(secs(1.0), 120, 40).unwrap(), Outcome::Recorded);
    assert_eq!(
        rec.marker(secs(2.0), "approved").unwrap(),
        Outcome::Recorded
    );
    let path = rec.path().to_path_buf();
    rec.finish(secs(3.0)).unwrap();
    assert_eq!(
        lines(&path)[1..],
        [
            "[0.250000, \"o\", \"$ \"]",
            "[1.000000, \"r\", \"120x40\"]",
            "[2.000000, \"m\", \"approved\"]"
        ]
    );
}

#[test]
fn input_is_recorded_only_when_enabled() {
    let tmp = TempDir::new("input");
    let mut off = Recorder::create(&tmp.0, "off", 0, &header(), RecordOptions::default()).unwrap();
    assert_eq!(off.input(secs(0.1), b"secret\r").unwrap(), Outcome::Skipped);
    let off_path = off.path().to_path_buf();
    off.finish(secs(1.0)).unwrap();
    assert_eq!(lines(&off_path).len(), 1);

    let options = RecordOptions {
        record_input: true,
        ..RecordOptions::default()
    };
    let mut on = Recorder::create(&tmp.0, "on", 0, &header(), options).unwrap();
    assert_eq!(on.input(secs(0.1), b"ls\r").unwrap(), Outcome::Recorded);
    let on_path = on.path().to_path_buf();
    on.finish(secs(1.0)).unwrap();
    assert_eq!(lines(&on_path)[1..], ["[0.100000, \"i\", \"ls\\r\"]"]);
}

#[test]
fn buffers_until_a_second_of_session_time_has_passed() {
    let tmp = TempDir::new("flush-time");
    let mut rec = Recorder::create(&tmp.0, "s1", 0, &header(), RecordOptions::default()).unwrap();
    let path = rec.path().to_path_buf();
    assert_eq!(rec.flush_deadline(), None);
    let _ = rec.output(secs(0.2), b"a").unwrap();
    // The header was flushed at 0 s: the first event waits for 1 s.
    assert_eq!(lines(&path).len(), 1);
    assert_eq!(rec.flush_deadline(), Some(secs(1.0)));
    rec.maybe_flush(secs(0.9)).unwrap();
    assert_eq!(lines(&path).len(), 1);
    rec.maybe_flush(secs(1.0)).unwrap();
    assert_eq!(lines(&path).len(), 2);
    assert_eq!(rec.flush_deadline(), None);
    assert_eq!(rec.unflushed_bytes(), 0);
    // After a quiet period, the next event is written at once (its deadline has passed).
    let _ = rec.output(secs(5.0), b"b").unwrap();
    assert_eq!(lines(&path).len(), 3);
    // Within the next second it waits again.
    let _ = rec.output(secs(5.5), b"c").unwrap();
    assert_eq!(lines(&path).len(), 3);
    assert_eq!(rec.flush_deadline(), Some(secs(6.0)));
}

#[test]
fn flushes_once_64_kib_are_buffered() {
    let tmp = TempDir::new("flush-size");
    let mut rec = Recorder::create(&tmp.0, "s1", 0, &header(), RecordOptions::default()).unwrap();
    let path = rec.path().to_path_buf();
    let header_len = fs::metadata(&path).unwrap().len();
    let chunk = [b'y'; 16 * 1024];
    for i in 0..3 {
        let _ = rec.output(secs(0.1 + f64::from(i) * 0.01), &chunk).unwrap();
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), header_len);
    let _ = rec.output(secs(0.2), &chunk).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), rec.bytes_written());
    assert_eq!(rec.unflushed_bytes(), 0);
}

#[test]
fn output_filter_rewrites_output_only() {
    let tmp = TempDir::new("filter");
    let options = RecordOptions {
        record_input: true,
        ..RecordOptions::default()
    };
    let mut rec = Recorder::create(&tmp.0, "s1", 0, &header(), options).unwrap();
    rec.set_output_filter(Box::new(|input: &[u8], out: &mut Vec<u8>| {
        out.extend(
            input
                .iter()
                .map(|b| if b.is_ascii_digit() { b'#' } else { *b }),
        );
    }));
    let _ = rec.output(secs(0.1), b"pin 1234\r\n").unwrap();
    let _ = rec.input(secs(0.2), b"echo 42\r").unwrap();
    let path = rec.path().to_path_buf();
    rec.finish(secs(1.0)).unwrap();
    assert_eq!(
        lines(&path)[1..],
        [
            "[0.100000, \"o\", \"pin ####\\r\\n\"]",
            "[0.200000, \"i\", \"echo 42\\r\"]"
        ]
    );
}

/// Holds back a trailing run of digits until it sees the end of it, like a masker with look-ahead.
struct HoldDigits {
    held: Vec<u8>,
}

impl super::OutputFilter for HoldDigits {
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.held.extend_from_slice(input);
        let keep = self
            .held
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let emit = self.held.len() - keep;
        out.extend_from_slice(&self.held[..emit]);
        self.held.drain(..emit);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend(self.held.drain(..).map(|_| b'*'));
    }
}

#[test]
fn finish_records_what_the_filter_held_back() {
    let tmp = TempDir::new("filter-finish");
    let mut rec = Recorder::create(&tmp.0, "s1", 0, &header(), RecordOptions::default()).unwrap();
    rec.set_output_filter(Box::new(HoldDigits { held: Vec::new() }));
    let _ = rec.output(secs(0.1), b"code 12").unwrap();
    let path = rec.path().to_path_buf();
    rec.finish(secs(2.0)).unwrap();
    assert_eq!(
        lines(&path)[1..],
        ["[0.100000, \"o\", \"code \"]", "[2.000000, \"o\", \"**\"]"]
    );
}

#[test]
fn limit_writes_marker_and_tells_the_caller() {
    let tmp = TempDir::new("limit");
    let options = RecordOptions {
        limit: 4096,
        ..RecordOptions::default()
    };
    let mut rec = Recorder::create(&tmp.0, "s1", 0, &header(), options).unwrap();
    let chunk = [b'z'; 500];
    let mut reached_at = None;
    for i in 0..20 {
        match rec.output(secs(f64::from(i)), &chunk).unwrap() {
            Outcome::Recorded => {}
            Outcome::LimitReached => {
                assert_eq!(reached_at, None, "reported twice");
                reached_at = Some(i);
            }
            Outcome::Stopped => assert!(reached_at.is_some()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reached_at, Some(7)); // 7 lines of 520 bytes + header + marker reserve fit
    let path = rec.path().to_path_buf();
    let summary = rec.finish(secs(30.0)).unwrap();
    assert!(summary.limit_reached);
    let size = fs::metadata(&path).unwrap().len();
    assert_eq!(size, summary.bytes);
    assert!(size <= 4096, "{size}");
    assert_eq!(
        lines(&path).last().unwrap(),
        &format!("[7.000000, \"m\", \"{LIMIT_MARKER}\"]")
    );
}

#[test]
fn write_error_is_returned_and_sticky() {
    // /dev/full fails every write with ENOSPC: a full disk without filling one.
    let file = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut rec = Recorder::start(
        PathBuf::from("/dev/full"),
        file,
        &header(),
        RecordOptions::default(),
    )
    .unwrap();
    // Buffered: no error yet.
    assert_eq!(rec.output(secs(0.1), b"hello").unwrap(), Outcome::Recorded);
    let err = rec.maybe_flush(secs(1.5)).unwrap_err();
    match &err {
        RecordError::Io { op, kind, .. } => {
            assert_eq!(*op, "write");
            assert_eq!(*kind, io::ErrorKind::StorageFull);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("/dev/full: write failed"), "{err}");
    // Every later call reports the same failure instead of recording silently into nothing.
    assert_eq!(rec.output(secs(2.0), b"more").unwrap_err(), err);
    assert_eq!(rec.resize(secs(2.0), 100, 30).unwrap_err(), err);
    assert_eq!(rec.maybe_flush(secs(9.0)).unwrap_err(), err);
    assert_eq!(rec.finish(secs(10.0)).unwrap_err(), err);
}

#[test]
fn recorder_can_move_between_threads_and_be_shared() {
    // The gateway's connection tasks may run on any executor thread, and hold the session (which
    // owns its recorders) by reference across awaits.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Recorder>();
    assert_send_sync::<super::Encoder>();
}
