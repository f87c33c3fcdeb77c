//! Recordings of SSH sessions end to end: a real OpenSSH sshd as the target, the `portcullis`
//! binary, real `ssh -tt` sessions as clients, and the real `asciinema cat` replaying what was
//! recorded. Nothing is mocked.
//!
//! Requirements: root (sshd needs it for ptys; the full-disk test mounts a tmpfs), Debian
//! packages `openssh-server`, `openssh-client`, `asciinema`, `bsdutils` (`script`). Tests fail
//! (never skip) when one is missing.
// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod ssh_rig;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    describe, free_port, run_with_timeout, stderr, stdout, unique_temp_dir, Gateway,
    COMMAND_TIMEOUT,
};
use ssh_rig::{keygen, Sshd, QUIET_CLIENT, SSHD};

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: `apt-get install {package}` (CI installs it via .ci/run)"
    );
}

/// Fails (never skips) without root, sshd, asciinema or script.
fn require_tools() {
    assert!(
        Path::new(SSHD).exists() && common::running_as_root(),
        "these tests need root and {SSHD} (Debian openssh-server); .ci/run sets both up"
    );
    require("asciinema", "asciinema");
    require("script", "bsdutils");
}

/// sshd + gateway + a client key registered for identity "alice".
struct Rig {
    _sshd: Sshd,
    gw: Gateway,
    /// The gateway's SSH port for target "web".
    port: u16,
    /// alice's private key file.
    alice_key: PathBuf,
    work: PathBuf,
}

const RULES: &str = r#"
[[rule]]
name = "tools"
who = ["*"]
programs = ["echo", "printf", "true", "sleep"]
action = "allow"
"#;

impl Rig {
    /// `target_extra` is appended to the [[target]] "web" table, `policy_extra` to the policy.
    fn start(target_extra: &str, policy_extra: &str) -> Rig {
        let work = unique_temp_dir("sshrec-work");
        let alice_key = work.join("alice");
        let alice_pub = keygen(&alice_key, "alice@laptop");
        let up_dir = unique_temp_dir("sshrec-upkey");
        let up_pub = keygen(&up_dir.join("up"), "gateway");
        let up_private = fs::read(up_dir.join("up")).unwrap();
        let _ = fs::remove_dir_all(&up_dir);
        let sshd = Sshd::start(&up_pub);
        let port = free_port();
        let http = free_port();
        let policy = format!(
            r#"[gateway]
data_dir = "data"
http = {{ listen = "127.0.0.1:{http}" }}
[[identity]]
name = "alice"
ssh_keys = ["{alice_pub}"]
[[target]]
name = "web"
kind = "ssh"
listen = "127.0.0.1:{port}"
upstream = "127.0.0.1:{sshd_port}"
user = "root"
key_file = "up.key"
host_key = "{host_key}"
default = "block"
{target_extra}
{RULES}
{policy_extra}"#,
            sshd_port = sshd.port,
            host_key = sshd.host_key,
        );
        let gw = Gateway::builder(&policy)
            .secret("up.key", up_private)
            .start();
        Rig {
            _sshd: sshd,
            gw,
            port,
            alice_key,
            work,
        }
    }

    fn recordings_dir(&self) -> PathBuf {
        self.gw.dir.join("data").join("recordings")
    }

    /// The `.cast` files, sorted.
    fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = match fs::read_dir(self.recordings_dir()) {
            Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        files.retain(|p| p.extension().is_some_and(|e| e == "cast"));
        files.sort();
        files
    }

    fn ssh_args(&self, log_level: &str) -> Vec<String> {
        // OpenSSH keeps the first value it is given for an option: this LogLevel, ahead of
        // QUIET_CLIENT's.
        let log_level = format!("LogLevel={log_level}");
        ["-o", log_level.as_str()]
            .into_iter()
            .chain(QUIET_CLIENT)
            .chain([
                "-o",
                "ConnectTimeout=10",
                "-o",
                "BatchMode=yes",
                "-p",
                &self.port.to_string(),
                "-i",
                self.alice_key.to_str().unwrap(),
            ])
            .map(str::to_owned)
            .collect()
    }

    /// `ssh -tt web@gateway` run inside a pseudo-terminal of `cols` x `rows` (so ssh's pty-req
    /// carries that size) with TERM `term`, typing `script` into it.
    fn interactive(&self, cols: u32, rows: u32, term: &str, script: &[u8]) -> Output {
        let args = self.ssh_args("ERROR").join(" ");
        assert!(!args.contains('\''), "quote in {args}");
        let shell = format!("stty cols {cols} rows {rows}; exec ssh -tt {args} web@127.0.0.1");
        run_with_timeout(
            Command::new("script")
                .args(["-q", "-e", "-c", &shell, "/dev/null"])
                .env("TERM", term),
            Some(script),
            COMMAND_TIMEOUT,
        )
    }

    /// `ssh -tt web@gateway` with its stdin a pipe (pty-req without a size), `log_level` for
    /// ssh's own messages.
    fn shell_piped(&self, log_level: &str, script: &[u8]) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.arg("-tt")
            .args(self.ssh_args(log_level))
            .arg("web@127.0.0.1")
            .env("TERM", "vt100");
        run_with_timeout(&mut cmd, Some(script), COMMAND_TIMEOUT)
    }

    fn exec(&self, command: &str) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.args(self.ssh_args("ERROR"))
            .args(["web@127.0.0.1", command]);
        run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
    }

    fn audit(&self) -> String {
        stdout(&self.gw.cli(&["audit", "export"]))
    }

    /// The audit log once it contains every one of `needles` (bounded wait).
    fn wait_audit(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let audit = self.audit();
            if needles.iter().all(|n| audit.contains(n)) {
                return audit;
            }
            assert!(
                Instant::now() < deadline,
                "audit lacks one of {needles:?}:\n{audit}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// Audit lines of `kind`.
fn events<'a>(audit: &'a str, kind: &str) -> Vec<&'a str> {
    let needle = format!("\"kind\":\"{kind}\"");
    audit.lines().filter(|l| l.contains(&needle)).collect()
}

/// Runs `asciinema cat FILE` under a pseudo-terminal (it opens /dev/tty) and returns what it
/// printed.
fn asciinema_cat(file: &Path) -> String {
    let out = common::asciinema_cat(file, Duration::from_secs(60));
    assert!(out.status.success(), "asciinema cat:\n{}", describe(&out));
    stdout(&out)
}

/// The recording's header and its events' codes.
fn parse_cast(file: &Path) -> (String, Vec<String>) {
    let text = fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_owned();
    let codes = lines
        .map(|l| {
            // [time, "code", data]
            l.split('"').nth(1).unwrap_or_default().to_owned()
        })
        .collect();
    (header, codes)
}

const SESSION: &[u8] = b"echo rec-$((6*7)); printf 'line-%s\\n' two\nexit\n";

#[test]
fn interactive_session_is_recorded_and_replays_with_asciinema() {
    require_tools();
    let rig = Rig::start("", "");
    let out = rig.interactive(132, 43, "xterm-256color", SESSION);
    assert!(
        stdout(&out).contains("rec-42"),
        "{}\n{}",
        describe(&out),
        rig.gw.log()
    );
    let audit = rig.wait_audit(&[
        "\"kind\":\"recording_started\"",
        "\"kind\":\"recording_finished\"",
    ]);
    let files = rig.recordings();
    assert_eq!(files.len(), 1, "{files:?}");
    let cast = &files[0];

    let (header, codes) = parse_cast(cast);
    assert!(
        header.contains("\"width\": 132, \"height\": 43"),
        "the pty-req's size: {header}"
    );
    assert!(header.contains("\"TERM\": \"xterm-256color\""), "{header}");
    assert!(header.contains("\"title\": \"alice@web\""), "{header}");
    assert!(codes.iter().any(|c| c == "o"), "{codes:?}");
    assert!(
        !codes.iter().any(|c| c == "i"),
        "input recorded without record_input: {codes:?}"
    );

    let replayed = asciinema_cat(cast);
    assert!(replayed.contains("rec-42"), "replay: {replayed:?}");
    assert!(replayed.contains("line-two"), "replay: {replayed:?}");

    // The audit names the file, before and after.
    let path = cast.display().to_string();
    let started = events(&audit, "recording_started");
    assert_eq!(started.len(), 1, "{audit}");
    assert!(
        started[0].contains(&format!("\"path\":\"{path}\"")),
        "{audit}"
    );
    assert!(started[0].contains("\"cols\":132"), "{audit}");
    assert!(started[0].contains("\"input\":false"), "{audit}");
    let finished = events(&audit, "recording_finished");
    assert_eq!(finished.len(), 1, "{audit}");
    assert!(
        finished[0].contains(&format!("\"path\":\"{path}\"")),
        "{audit}"
    );
    assert!(finished[0].contains("\"limit_reached\":false"), "{audit}");
    let size = fs::metadata(cast).unwrap().len();
    assert!(
        finished[0].contains(&format!("\"bytes\":{size}")),
        "{audit}"
    );
    // recording_started is written before the shell's output exists.
    let seq_started = audit.find("\"kind\":\"recording_started\"").unwrap();
    let seq_closed = audit.find("\"kind\":\"ssh_channel_closed\"").unwrap();
    assert!(seq_started < seq_closed, "{audit}");

    // Private: the file 0600, the directory 0700.
    let mode = fs::metadata(cast).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", cast.display());
    let dir_mode = fs::metadata(rig.recordings_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

#[test]
fn record_input_adds_the_keystrokes() {
    require_tools();
    let rig = Rig::start("record_input = true", "");
    let out = rig.shell_piped("ERROR", SESSION);
    assert!(stdout(&out).contains("rec-42"), "{}", describe(&out));
    let audit = rig.wait_audit(&["\"kind\":\"recording_finished\""]);
    assert!(audit.contains("\"input\":true"), "{audit}");
    let files = rig.recordings();
    assert_eq!(files.len(), 1);
    let (header, codes) = parse_cast(&files[0]);
    // No window size from a piped stdin: the asciinema default.
    assert!(header.contains("\"width\": 80, \"height\": 24"), "{header}");
    assert!(header.contains("\"TERM\": \"vt100\""), "{header}");
    assert!(codes.iter().any(|c| c == "i"), "{codes:?}");
    let text = fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("\"i\", \"echo rec-$((6*7)); printf"),
        "what was typed: {text}"
    );
}

#[test]
fn exec_without_a_pty_is_audited_not_recorded() {
    require_tools();
    let rig = Rig::start("", "");
    let out = rig.exec("echo plain-exec");
    assert_eq!(stdout(&out), "plain-exec\n", "{}", describe(&out));
    rig.wait_audit(&["\"kind\":\"ssh_channel_closed\""]);
    assert!(rig.recordings().is_empty(), "{:?}", rig.recordings());
    assert!(!rig.audit().contains("recording_started"));
}

#[test]
fn masked_identity_recording_lacks_the_planted_address() {
    require_tools();
    let rig = Rig::start("", "[[mask]]\nwho = [\"alice\"]\ndetectors = [\"email\"]\n");
    let script = b"printf 'contact: %s\\n' planted.secret@example.com\nexit\n";
    let out = rig.shell_piped("ERROR", script);
    // The client's own terminal is masked too (tests/ssh_mask.rs covers that in depth).
    assert!(
        stdout(&out).contains("contact: [redacted:email]"),
        "{}",
        describe(&out)
    );
    assert!(
        !stdout(&out).contains("planted.secret"),
        "{}",
        describe(&out)
    );
    let audit = rig.wait_audit(&["\"kind\":\"recording_finished\""]);
    assert!(audit.contains("\"masked\":true"), "{audit}");
    let files = rig.recordings();
    assert_eq!(files.len(), 1);
    let text = fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains("planted.secret"), "{text}");
    let replayed = asciinema_cat(&files[0]);
    assert!(
        replayed.contains("contact: [redacted:email]"),
        "replay: {replayed:?}"
    );
    assert!(!replayed.contains("example.com"), "replay: {replayed:?}");
}

#[test]
fn shell_is_refused_when_it_cannot_be_recorded() {
    require_tools();
    let rig = Rig::start("", "");
    // A file where the recordings directory goes.
    fs::create_dir_all(rig.gw.dir.join("data")).unwrap();
    fs::write(rig.recordings_dir(), b"in the way").unwrap();
    let out = rig.shell_piped("ERROR", b"echo should-not-run-$((1+1))\nexit\n");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("this session must be recorded, and the recording could not be created"),
        "{all}"
    );
    assert!(!all.contains("should-not-run-2"), "{all}");
    let audit = rig.wait_audit(&["\"kind\":\"recording_failed\""]);
    let failed = events(&audit, "recording_failed");
    assert!(
        failed[0].contains("\"action\":\"channel refused\""),
        "{audit}"
    );
    assert!(failed[0].contains("\"while\":\"creating\""), "{audit}");
    // An exec without a pty is not recorded, so it still runs.
    assert_eq!(stdout(&rig.exec("echo still-fine")), "still-fine\n");
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_ends_the_session_and_says_why() {
    require_tools();
    let rig = Rig::start("", "");
    let dir = rig.recordings_dir();
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs on {}", dir.display());
    let _mount = Mount(dir.clone());

    // ~1 MiB of output into a 64 KiB file system; the shell then sleeps, so the session only
    // ends because the gateway ends it.
    let script = b"printf 'fill-%.0s0123456789012345678901234567890123456789012345678901234567890123456789\\n' $(seq 1 15000); sleep 30; echo after-$((1+1))-failure\nexit\n";
    let started = Instant::now();
    let out = rig.shell_piped("INFO", script);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the session was not ended: {}",
        describe(&out)
    );
    assert!(
        !stdout(&out).contains("after-2-failure"),
        "{}",
        describe(&out)
    );
    let fills = stdout(&out).matches("\nfill-").count();
    assert!(
        fills < 15_000,
        "the output was cut: {fills} lines reached the client"
    );
    let recorded: usize = rig
        .recordings()
        .iter()
        .map(|f| {
            String::from_utf8_lossy(&fs::read(f).unwrap())
                .matches("fill-")
                .count()
        })
        .sum();
    // What reached the client beyond the recording: the recorder's write buffer and the last
    // relay turn (see README "Recordings").
    println!("full disk: {fills} lines relayed, {recorded} recorded");
    assert!(
        stderr(&out).contains("the session recording failed"),
        "the client is told: {}",
        describe(&out)
    );
    let audit = rig.wait_audit(&[
        "\"kind\":\"recording_failed\"",
        "\"kind\":\"session_closed\"",
    ]);
    let failed = events(&audit, "recording_failed");
    assert!(
        failed[0].contains("\"action\":\"session closed\""),
        "{audit}"
    );
    assert!(failed[0].contains("No space left on device"), "{audit}");
    let closed = events(&audit, "session_closed");
    assert!(
        closed
            .iter()
            .any(|l| l.contains("closed by the gateway: the session recording failed")),
        "{audit}"
    );
}

#[test]
fn max_recording_size_ends_a_session_that_prints_more() {
    require_tools();
    let rig = Rig::start("max_recording_size = \"64KiB\"", "");
    // ~1 MiB of output against a 64 KiB recording; the shell then sleeps, so the session only
    // ends because the gateway ends it.
    let script = b"printf 'fill-%.0s0123456789012345678901234567890123456789012345678901234567890123456789\\n' $(seq 1 15000); sleep 30; echo after-$((1+1))-limit\nexit\n";
    let started = Instant::now();
    let out = rig.shell_piped("INFO", script);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the session was not ended: {}",
        describe(&out)
    );
    assert!(
        !stdout(&out).contains("after-2-limit"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("the session recording reached its size limit"),
        "the client is told: {}",
        describe(&out)
    );
    let files = rig.recordings();
    assert_eq!(files.len(), 1, "{files:?}");
    let cast = fs::read_to_string(&files[0]).unwrap();
    assert!(
        cast.len() <= 64 << 10,
        "the recording is {} bytes, over the 64 KiB limit",
        cast.len()
    );
    let last = cast.lines().last().unwrap();
    assert!(
        last.contains("portcullis: recording stopped, size limit reached"),
        "no limit marker at the end: {last}"
    );
    let audit = rig.wait_audit(&[
        "\"kind\":\"recording_limit_reached\"",
        "\"kind\":\"session_closed\"",
    ]);
    let reached = events(&audit, "recording_limit_reached");
    assert_eq!(reached.len(), 1, "{audit}");
    assert!(reached[0].contains("\"limit\":65536"), "{audit}");
    let closed = events(&audit, "session_closed");
    assert!(
        closed
            .iter()
            .any(|l| l
                .contains("closed by the gateway: the session recording reached its size limit")),
        "{audit}"
    );
}

#[test]
fn killed_session_finishes_its_recording() {
    require_tools();
    let rig = Rig::start("", "");
    let out = rig
        .gw
        .cli(&["token", "issue", "--identity", "alice", "--target", "web"]);
    assert!(out.status.success(), "{}", describe(&out));
    let token = stdout(&out).trim().to_owned();
    let err = stderr(&out);
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .unwrap()
        .trim_end_matches(',')
        .to_owned();
    let askpass = rig.work.join("askpass");
    fs::write(&askpass, format!("#!/bin/sh\necho '{token}'\n")).unwrap();
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).unwrap();
    let mut child = Command::new("ssh")
        .arg("-tt")
        .args(QUIET_CLIENT)
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-p",
            &rig.port.to_string(),
            "web@127.0.0.1",
        ])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .env("TERM", "vt100")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo before-the-kill-$((2*3)); sleep 40\n")
        .unwrap();
    rig.wait_audit(&["\"kind\":\"recording_started\""]);
    // Wait until the output is in the file (flushed within a second).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let files = rig.recordings();
        if files
            .first()
            .is_some_and(|f| fs::read_to_string(f).unwrap().contains("before-the-kill-6"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "output never recorded: {files:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let out = rig.gw.cli(&["token", "revoke", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "session not ended by the revoke");
        thread::sleep(Duration::from_millis(100));
    }
    let audit = rig.wait_audit(&[
        "\"kind\":\"recording_finished\"",
        "\"kind\":\"session_closed\"",
    ]);
    // The recording ends before the session's closing event.
    let finished = audit.find("\"kind\":\"recording_finished\"").unwrap();
    let closed = audit.find("\"kind\":\"session_closed\"").unwrap();
    assert!(finished < closed, "{audit}");
    let files = rig.recordings();
    let replayed = asciinema_cat(&files[0]);
    assert!(replayed.contains("before-the-kill-6"), "{replayed:?}");
}

#[test]
fn multiplexed_sessions_on_one_connection_get_their_own_files() {
    require_tools();
    let rig = Rig::start("", "");
    let sock = rig.work.join("mux.sock");
    let sock_opt = format!("ControlPath={}", sock.display());
    // A master connection in the background (-f after login), then two sessions through it, one
    // after the other: the second reuses the first one's channel number.
    let status = Command::new("ssh")
        .args(rig.ssh_args("ERROR"))
        .args(["-o", "ControlMaster=yes", "-o", &sock_opt, "-f", "-N"])
        .arg("web@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh master did not start");
    for n in [1, 2] {
        let mut cmd = Command::new("ssh");
        cmd.arg("-tt")
            .args(rig.ssh_args("ERROR"))
            .args(["-o", "ControlMaster=no", "-o", &sock_opt])
            .arg("web@127.0.0.1")
            .env("TERM", "vt100");
        let script = format!("echo mux-$((40+{n}))\nexit\n");
        let out = run_with_timeout(&mut cmd, Some(script.as_bytes()), COMMAND_TIMEOUT);
        assert!(
            stdout(&out).contains(&format!("mux-{}", 40 + n)),
            "session {n}: {}",
            describe(&out)
        );
    }
    let _ = Command::new("ssh")
        .args(rig.ssh_args("ERROR"))
        .args(["-o", &sock_opt, "-O", "exit"])
        .arg("web@127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let audit = rig.wait_audit(&["\"kind\":\"session_closed\""]);
    assert_eq!(events(&audit, "session_opened").len(), 1, "{audit}");
    let started = events(&audit, "recording_started");
    assert_eq!(started.len(), 2, "{audit}");
    assert!(
        started.iter().all(|l| l.contains("\"channel\":0,")),
        "the channel number was reused: {audit}"
    );
    let files = rig.recordings();
    assert_eq!(files.len(), 2, "{files:?}");
    for (n, file) in files.iter().enumerate() {
        assert!(file.display().to_string().ends_with(&format!("-{n}.cast")));
        let replayed = asciinema_cat(file);
        assert!(
            replayed.contains(&format!("mux-{}", 41 + n)),
            "{replayed:?}"
        );
    }
}
