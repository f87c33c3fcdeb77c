//! Masking of an SSH session's live output end to end: a real OpenSSH sshd as the target, the
//! `portcullis` binary, and real OpenSSH `ssh` / `sftp` clients (inside tmux for the interactive
//! terminal). What the client prints is what reached its terminal. Nothing is mocked.
//!
//! Requirements: root (sshd needs it for ptys), Debian packages `openssh-server`,
//! `openssh-client`, `tmux`. Tests fail (never skip) when one is missing.
// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod ssh_rig;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::{describe, run_with_timeout, stderr, stdout, COMMAND_TIMEOUT};
use ssh_rig::{require_sshd, Rig};

/// A `[[mask]]` rule for alice (appended after the target table: a new table starts there).
const MASK_ALICE: &str = "[[mask]]\nwho = [\"alice\"]\ndetectors = [\"email\"]\n";
/// The same rule for someone else: alice is not masked.
const MASK_BOB: &str = "[[mask]]\nwho = [\"bob\"]\ndetectors = [\"email\"]\n";

fn require_tmux() {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("tmux").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`tmux` is not installed: `apt-get install tmux` (CI installs it via .ci/run)"
    );
}

/// Audit lines of `kind`.
fn events<'a>(audit: &'a str, kind: &str) -> Vec<&'a str> {
    let needle = format!("\"kind\":\"{kind}\"");
    audit.lines().filter(|l| l.contains(&needle)).collect()
}

/// A command whose text holds no address, but whose output does: printf joins the parts. One
/// address goes to stdout, another to stderr.
const BOTH_STREAMS: &str =
    "printf 'to: %s@%s\\n' planted.out example.com; printf 'from: %s@%s\\n' planted.err example.org 1>&2";

#[test]
fn exec_output_reaches_the_client_masked_on_stdout_and_stderr() {
    require_sshd();
    let rig = Rig::start(MASK_ALICE, None);
    let out = rig.ssh(BOTH_STREAMS);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "to: [redacted:email]\n", "{}", describe(&out));
    assert!(
        stderr(&out).contains("from: [redacted:email]\n"),
        "{}",
        describe(&out)
    );
    assert!(!stderr(&out).contains("planted"), "{}", describe(&out));
    let audit = rig.wait_audit(&["\"kind\":\"ssh_channel_closed\""]);
    let closed = events(&audit, "ssh_channel_closed");
    assert!(closed[0].contains("\"masked\":true"), "{audit}");
}

#[test]
fn unmasked_identity_sees_the_raw_values() {
    require_sshd();
    let rig = Rig::start(MASK_BOB, None);
    let out = rig.ssh(BOTH_STREAMS);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "to: planted.out@example.com\n",
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("from: planted.err@example.org\n"),
        "{}",
        describe(&out)
    );
    let audit = rig.wait_audit(&["\"kind\":\"ssh_channel_closed\""]);
    assert!(
        events(&audit, "ssh_channel_closed")[0].contains("\"masked\":false"),
        "{audit}"
    );
}

#[test]
fn cat_of_a_large_file_is_masked_exactly_and_keeps_its_exit_status() {
    require_sshd();
    let rig = Rig::start(MASK_ALICE, None);
    // ~640 KiB, far more than a window or a masker's hold-back, with an address on every line
    // (so addresses straddle every packet and chunk boundary).
    let lines = 40_000;
    let file = rig.work.join("contacts.txt");
    let raw: String = (0..lines)
        .map(|i| format!("{i:06} user{i}@example.com\n"))
        .collect();
    fs::write(&file, &raw).unwrap();
    let out = rig.ssh(&format!("cat {}", file.display()));
    assert!(out.status.success(), "{}", describe(&out));
    let expected: String = (0..lines)
        .map(|i| format!("{i:06} [redacted:email]\n"))
        .collect();
    let got = stdout(&out);
    let odd: Vec<&str> = got
        .lines()
        .filter(|l| !l.ends_with("[redacted:email]"))
        .collect();
    assert_eq!(got.len(), expected.len(), "{}; {odd:?}", stderr(&out));
    assert!(got == expected, "masked output differs");
    // The exit status still comes through after the released tail.
    let out = rig.ssh(&format!("cat {} /nonexistent", file.display()));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stdout(&out) == expected, "masked output differs");
}

#[test]
fn sftp_is_refused_for_a_masked_identity_and_audited() {
    require_sshd();
    let rig = Rig::start(MASK_ALICE, None);
    let file = rig.work.join("secret.txt");
    fs::write(&file, "carol@example.com\n").unwrap();
    let dest = rig.work.join("copy.txt");
    let batch = format!("get {} {}\n", file.display(), dest.display());
    let out = rig.sftp(&batch);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!dest.exists(), "the download happened");
    assert!(
        stderr(&out).contains("portcullis: sftp is refused for 'alice' on target 'web'"),
        "{}",
        describe(&out)
    );
    let audit = rig.wait_audit(&["\"kind\":\"ssh_refused\""]);
    let refused = events(&audit, "ssh_refused");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("\"name\":\"sftp\"") && l.contains("output is masked")),
        "{audit}"
    );
}

/// One interactive `ssh -tt` in a tmux pane, read back with `capture-pane`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(rig: &Rig) -> Tmux {
        let socket = format!("portcullis-mask-{}", common::random_hex(2));
        let ssh = format!(
            "ssh -tt -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -i {} -p {} web@127.0.0.1",
            rig.alice_key.display(),
            rig.port
        );
        let out = tmux(
            &socket,
            &["new-session", "-d", "-x", "160", "-y", "40", &ssh],
        );
        assert!(out.status.success(), "tmux: {}", describe(&out));
        Tmux { socket }
    }

    fn send(&self, keys: &str) {
        let out = tmux(&self.socket, &["send-keys", "-t", "0", "-l", keys]);
        assert!(out.status.success(), "tmux send-keys: {}", describe(&out));
        let out = tmux(&self.socket, &["send-keys", "-t", "0", "Enter"]);
        assert!(out.status.success(), "tmux send-keys: {}", describe(&out));
    }

    fn screen(&self) -> String {
        stdout(&tmux(&self.socket, &["capture-pane", "-p", "-t", "0"]))
    }

    /// The screen once it shows `needle` (bounded wait: the shell answers when it answers).
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {needle:?}:\n{screen}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = tmux(&self.socket, &["kill-server"]);
    }
}

fn tmux(socket: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("tmux");
    cmd.args(["-L", socket]).args(args).env("TERM", "xterm");
    run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
}

#[test]
fn interactive_terminal_shows_masked_output_while_the_session_stays_open() {
    require_sshd();
    require_tmux();
    let rig = Rig::start(MASK_ALICE, None);
    let term = Tmux::start(&rig);
    term.send("echo ready-$((6*7))");
    term.wait_for("ready-42");
    // A short output with the session still open: the masker holds it back until the channel
    // goes quiet, then releases it masked; nothing else (no EOF, no exit) ends the wait.
    term.send("printf 'contact: %s@%s\\n' planted.secret example.com");
    let screen = term.wait_for("contact: [redacted:email]");
    assert!(!screen.contains("planted.secret@"), "{screen}");
    term.send("exit");
    rig.wait_audit(&["\"kind\":\"ssh_channel_closed\""]);
    let audit = rig.audit();
    let shell = events(&audit, "ssh_channel_closed");
    assert!(shell[0].contains("\"channel_kind\":\"shell\""), "{audit}");
    assert!(shell[0].contains("\"masked\":true"), "{audit}");
    // The recording (every shell is recorded) has the masked output once, not masked twice.
    let recordings = rig.gw.dir.join("data").join("recordings");
    let cast: Vec<_> = fs::read_dir(&recordings)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "cast"))
        .collect();
    assert_eq!(cast.len(), 1, "{cast:?}");
    let text = fs::read_to_string(&cast[0]).unwrap();
    assert!(text.contains("contact: [redacted:email]"), "{text}");
    assert!(!text.contains("planted.secret@"), "{text}");
    assert!(Path::new(&cast[0]).exists());
}
