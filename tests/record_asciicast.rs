//! Recordings made by `portcullis::record` replayed by the real asciinema.
//!
//! A scripted "session" (prompt, ANSI colours, a multi-byte character split across two chunks,
//! a resize, typed input, a marker) is recorded through [`Recorder`] exactly as the SSH gateway
//! will, and `asciinema cat FILE` must print the original output bytes back.
//!
//! Requirements: `asciinema` (Debian package `asciinema`, 2.2) and `script` (util-linux,
//! essential in Debian). `asciinema cat` opens `/dev/tty`, so it runs under `script`, which gives
//! it a pseudo-terminal; asciinema puts that terminal in raw mode, so the bytes come back
//! untranslated. Missing tools fail the test (CI installs them), they are not skipped.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use portcullis::record::{Header, Outcome, RecordOptions, Recorder};

const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: `apt-get install {package}` (CI installs it via .ci/run)"
    );
}

/// Runs `asciinema cat FILE` under a pseudo-terminal and returns what it printed.
fn asciinema_cat(file: &Path) -> Vec<u8> {
    require("asciinema", "asciinema");
    require("script", "bsdutils");
    let out = common::asciinema_cat(file, REPLAY_TIMEOUT);
    assert!(
        out.status.success(),
        "asciinema cat failed:\n{}",
        common::describe(&out)
    );
    assert!(
        out.stderr.is_empty(),
        "asciinema cat complained:\n{}",
        common::describe(&out)
    );
    out.stdout
}

fn recording_options() -> RecordOptions {
    RecordOptions {
        record_input: true,
        ..RecordOptions::default()
    }
}

#[test]
fn asciinema_cat_replays_a_recorded_session_byte_for_byte() {
    let data_dir = common::unique_temp_dir("record");
    let mut header = Header::new(80, 24, 1_767_225_600, "xterm-256color");
    header.shell = Some("/bin/bash".into());
    header.title = Some("alice@web-prod".into());
    let mut rec =
        Recorder::create(&data_dir, "it-session", 0, &header, recording_options()).unwrap();

    // What the target wrote, chunk by chunk, as SSH channel data would cut it. "€" is e2 82 ac and
    // is split after its first byte; "日本" is split inside its second character.
    let output: &[&[u8]] = &[
        b"\x1b[1;32malice@web-prod\x1b[0m:\x1b[1;34m~\x1b[0m$ ",
        b"ls --color\r\n",
        b"\x1b[0m\x1b[01;34mdir\x1b[0m  notes.txt  \x1b[01;32mrun.sh\x1b[0m\r\n",
        b"price: 5 \xe2",
        b"\x82\xac, tab\there, quote \" backslash \\ bell \x07\r\n",
        "日".as_bytes(),
        &"本".as_bytes()[..2],
        &"本".as_bytes()[2..],
        b"\r\n\x1b[?2004h\x1b[1;32m$\x1b[0m exit\r\nlogout\r\n",
    ];
    let mut t = 0;
    for (i, chunk) in output.iter().enumerate() {
        t += 137;
        let outcome = rec.output(ms(t), chunk).unwrap();
        // Only the chunk holding nothing but the start of "本" writes no event.
        let want = if chunk == &&"本".as_bytes()[..2] {
            Outcome::Skipped
        } else {
            Outcome::Recorded
        };
        assert_eq!(outcome, want, "chunk {i}");
        if i == 1 {
            assert_eq!(
                rec.input(ms(t + 5), b"ls --color\r").unwrap(),
                Outcome::Recorded
            );
            assert_eq!(rec.resize(ms(t + 9), 132, 43).unwrap(), Outcome::Recorded);
            assert_eq!(
                rec.marker(ms(t + 11), "command allowed: ls").unwrap(),
                Outcome::Recorded
            );
        }
        rec.maybe_flush(ms(t)).unwrap();
    }
    let summary = rec.finish(ms(t + 50)).unwrap();
    assert!(!summary.limit_reached);

    let replayed = asciinema_cat(&summary.path);
    let original = output.concat();
    assert_eq!(
        String::from_utf8_lossy(&replayed),
        String::from_utf8_lossy(&original),
        "replay differs (file: {})",
        summary.path.display()
    );
    assert_eq!(replayed, original);
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[test]
fn asciinema_cat_replays_invalid_bytes_as_replacement_characters() {
    let data_dir = common::unique_temp_dir("record");
    let header = Header::new(80, 24, 1_767_225_600, "xterm");
    let mut rec = Recorder::create(
        &data_dir,
        "it-invalid",
        1,
        &header,
        RecordOptions::default(),
    )
    .unwrap();
    let output: &[&[u8]] = &[
        b"binary: \xff\xfe",
        b"\x00\x1b[0m \xc3",
        b"( end\r\n\xf0\x9f",
    ];
    for (i, chunk) in output.iter().enumerate() {
        let _ = rec
            .output(ms(10 * u64::try_from(i).unwrap()), chunk)
            .unwrap();
    }
    // The session ends inside a character: its bytes become one U+FFFD.
    let summary = rec.finish(ms(100)).unwrap();
    let replayed = asciinema_cat(&summary.path);
    let expected = String::from_utf8_lossy(&output.concat()).into_owned();
    assert_eq!(String::from_utf8(replayed).unwrap(), expected);
    std::fs::remove_dir_all(&data_dir).unwrap();
}
