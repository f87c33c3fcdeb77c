//! The SSH gateway end to end: a real OpenSSH sshd as the target (started here, as root, with
//! its own host key and an authorized_keys holding only the gateway's upstream key), the
//! `portcullis` binary, and real `ssh`, `scp`, `sftp` and `rsync` as clients. Nothing is mocked.
//!
//! Requirements: root (sshd needs it for ptys and to switch to the login user), Debian packages
//! `openssh-server`, `openssh-client`, `openssh-sftp-server`, `rsync`. Tests fail (never skip)
//! when `/usr/sbin/sshd` is missing or they don't run as root.
// Helpers here are test code too: a failed unwrap is a failed test (clippy.toml allows unwrap
// only inside #[test] functions).
#![allow(clippy::unwrap_used)]

mod common;
mod ssh_rig;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    describe, free_port, gateway_exe, run_with_timeout, stderr, stdout, unique_temp_dir,
    wait_for_port, COMMAND_TIMEOUT,
};
use ssh_rig::{keygen, require_sshd, Rig, Running};

#[test]
fn exec_relays_stdout_stderr_and_exit_status() {
    require_sshd();
    let rig = Rig::start("", None);
    let out = rig.ssh("echo out-$((6*7)); echo err-line >&2; exit 3");
    // `$((…))` makes the command dynamic: blocked before anything runs.
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let out = rig.ssh("echo out; echo err-line >&2; sh -c 'exit 3'");
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err-line"), "{}", describe(&out));
    let out = rig.ssh("id -un");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "root\n", "runs as the target's user");
    rig.wait_audit(&[
        "\"kind\":\"session_opened\"",
        "\"method\":\"publickey\"",
        "\"kind\":\"ssh_exec\"",
        "\"kind\":\"ssh_channel_closed\"",
        "\"exit_status\":3",
        "\"bytes_out\":13",
        "\"channel_kind\":\"exec\"",
        "\"kind\":\"session_closed\"",
    ]);
}

#[test]
fn blocked_command_gets_a_message_and_never_runs_upstream() {
    require_sshd();
    let rig = Rig::start("", None);
    let marker = rig.work.join("marker");
    let out = rig.ssh(&format!("echo hi; touch {}", marker.display()));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "",
        "nothing of the line ran: {}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "portcullis: no rule allows 'touch {}'",
            marker.display()
        )),
        "{}",
        describe(&out)
    );
    assert!(!marker.exists(), "the blocked command ran upstream");
    rig.wait_audit(&["\"decision\":\"block\""]);
}

#[test]
fn wrong_pinned_host_key_is_refused() {
    require_sshd();
    let other = unique_temp_dir("otherkey");
    let wrong = keygen(&other.join("k"), "other");
    let wrong: String = wrong
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let rig = Rig::start("", Some(&wrong));
    let _ = fs::remove_dir_all(&other);
    let marker = rig.work.join("marker");
    let out = rig.ssh(&format!("sh -c 'echo x > {}'", marker.display()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("could not connect to target"),
        "{}",
        describe(&out)
    );
    assert!(!marker.exists());
    let log = rig.gw.log();
    assert!(log.contains("host key is not the pinned"), "{log}");
}

#[test]
fn token_logs_in_as_its_identity_and_only_for_its_target() {
    require_sshd();
    let rig = Rig::start("", None);
    let token = rig.gw.token("alice", "web", &[]);
    let out = rig.ssh_with_token(&token, "echo via-token");
    assert!(out.status.success(), "{}\n{}", describe(&out), rig.gw.log());
    assert_eq!(stdout(&out), "via-token\n");
    let out = rig.ssh_with_token(
        "pct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "echo nope",
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!stdout(&out).contains("nope"));
    let audit = rig.audit();
    assert!(
        audit.contains("\"method\":\"password\"")
            || audit.contains("\"method\":\"keyboard-interactive\""),
        "{audit}"
    );
}

#[test]
fn unknown_key_is_refused() {
    require_sshd();
    let rig = Rig::start("", None);
    let stranger = rig.work.join("stranger");
    keygen(&stranger, "stranger");
    let mut cmd = rig.ssh_base();
    cmd.args(["-o", "BatchMode=yes", "-i"])
        .arg(&stranger)
        .args(["web@127.0.0.1", "echo in"]);
    let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        describe(&out)
    );
    // The right key, the wrong user name (the user names the target).
    let mut cmd = rig.ssh_base();
    cmd.args(["-o", "BatchMode=yes", "-i"])
        .arg(&rig.alice_key)
        .args(["db@127.0.0.1", "echo in"]);
    let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
}

#[test]
fn interactive_shell_through_a_pty() {
    require_sshd();
    let rig = Rig::start("", None);
    let mut cmd = rig.ssh_base();
    cmd.args(["-tt", "-o", "BatchMode=yes", "-i"])
        .arg(&rig.alice_key)
        .arg("web@127.0.0.1");
    let script = b"echo shell-$((20+22)); tty; exit 5\n";
    let out = run_with_timeout(&mut cmd, Some(script), COMMAND_TIMEOUT);
    let text = stdout(&out);
    assert!(text.contains("shell-42"), "{}", describe(&out));
    assert!(
        text.contains("/dev/pts/"),
        "a pty was allocated: {}",
        describe(&out)
    );
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
}

#[test]
fn shell_deny_refuses_shells_but_not_allowed_commands() {
    require_sshd();
    let rig = Rig::start("shell = \"deny\"", None);
    let mut cmd = rig.ssh_base();
    cmd.args(["-tt", "-o", "BatchMode=yes", "-i"])
        .arg(&rig.alice_key)
        .arg("web@127.0.0.1");
    let out = run_with_timeout(
        &mut cmd,
        Some(b"echo should-not-run\nexit\n"),
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("interactive shells are not allowed"), "{all}");
    assert!(
        !stdout(&out).contains("should-not-run\r\nshould-not-run"),
        "{all}"
    );
    assert!(rig.ssh("true").status.success());
}

fn sha256(path: &Path) -> String {
    let out = run_with_timeout(Command::new("sha256sum").arg(path), None, COMMAND_TIMEOUT);
    stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn random_file(path: &Path, len: usize) {
    let mut f = fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    fs::write(path, buf).unwrap();
}

#[test]
fn scp_and_sftp_both_ways() {
    require_sshd();
    let rig = Rig::start("", None);
    let src = rig.work.join("up.bin");
    random_file(&src, 3 * 1024 * 1024 + 17);
    let remote = rig.work.join("remote.bin");
    let back = rig.work.join("back.bin");
    let scp = |from: &str, to: &str| rig.scp(from, to);
    let out = scp(
        &src.display().to_string(),
        &format!("web@127.0.0.1:{}", remote.display()),
    );
    assert!(out.status.success(), "scp up: {}", describe(&out));
    let out = scp(
        &format!("web@127.0.0.1:{}", remote.display()),
        &back.display().to_string(),
    );
    assert!(out.status.success(), "scp down: {}", describe(&out));
    assert_eq!(sha256(&src), sha256(&remote));
    assert_eq!(sha256(&src), sha256(&back));

    let via_sftp = rig.work.join("via-sftp.bin");
    let batch = format!(
        "put {} {}\nget {} {}\n",
        src.display(),
        via_sftp.display(),
        via_sftp.display(),
        rig.work.join("via-sftp-back.bin").display()
    );
    let out = rig.sftp(&batch);
    assert!(out.status.success(), "sftp: {}", describe(&out));
    assert_eq!(sha256(&src), sha256(&rig.work.join("via-sftp-back.bin")));
    let audit = rig.audit();
    assert!(audit.contains("\"kind\":\"ssh_sftp\""), "{audit}");
    assert!(
        audit.contains(&format!("\"path\":\"{}\"", remote.display())),
        "{audit}"
    );
}

/// Every path under `dir` with its contents (None for directories), sorted.
fn tree_of(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                out.push((name, None));
                stack.push(path);
            } else {
                out.push((name, Some(fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sftp_deny_refuses_the_subsystem() {
    require_sshd();
    let rig = Rig::start("sftp = \"deny\"", None);
    let src = rig.work.join("f");
    fs::write(&src, "data").unwrap();
    let dest = rig.work.join("put-target");
    let out = rig.sftp(&format!("put {} {}\n", src.display(), dest.display()));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!dest.exists(), "the upload happened");
    let out = rig.scp(
        &src.display().to_string(),
        &format!("web@127.0.0.1:{}", dest.display()),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!dest.exists(), "the scp upload happened");
}

#[test]
fn sftp_read_only_serves_reads_and_refuses_every_change() {
    require_sshd();
    let rig = Rig::start("sftp = \"read-only\"", None);
    let remote = rig.work.join("remote");
    fs::create_dir_all(remote.join("sub")).unwrap();
    random_file(&remote.join("big.bin"), 1024 * 1024 + 3);
    fs::write(remote.join("sub/note.txt"), "keep me\n").unwrap();
    let before = tree_of(&remote);
    let local = rig.work.join("local");
    fs::create_dir_all(&local).unwrap();
    let upload = local.join("upload.txt");
    fs::write(&upload, "new contents\n").unwrap();
    let r = remote.display();
    let l = local.display();
    // `-` lets the batch go on after a failed command; each change must fail on its own.
    let batch = format!(
        "ls {r}\nget {r}/big.bin {l}/big.bin\nget {r}/sub/note.txt {l}/note.txt\n\
         -put {up} {r}/uploaded.txt\n-put {up} {r}/sub/note.txt\n-rm {r}/sub/note.txt\n\
         -mkdir {r}/newdir\n-rename {r}/big.bin {r}/moved.bin\n-rmdir {r}/sub\n\
         -chmod 777 {r}/big.bin\n-ln -s {r}/big.bin {r}/link\n",
        up = upload.display()
    );
    let out = rig.sftp(&batch);
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "reads must work: {}\n{}",
        describe(&out),
        rig.gw.log()
    );
    assert!(stdout(&out).contains("big.bin"), "{}", describe(&out));
    assert_eq!(
        sha256(&remote.join("big.bin")),
        sha256(&local.join("big.bin"))
    );
    assert_eq!(fs::read(local.join("note.txt")).unwrap(), b"keep me\n");
    let denied = err.matches("Permission denied").count();
    assert!(
        denied >= 8,
        "every change is refused with Permission denied ({denied} seen): {}",
        describe(&out)
    );
    assert_eq!(tree_of(&remote), before, "the remote tree changed");

    // OpenSSH 9 scp uses SFTP: an upload fails the same way; a download works.
    let out = rig.scp(
        &upload.display().to_string(),
        &format!("web@127.0.0.1:{r}/scp-upload.txt"),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        describe(&out)
    );
    let out = rig.scp(
        &format!("web@127.0.0.1:{r}/sub/note.txt"),
        &local.join("scp-note.txt").display().to_string(),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(fs::read(local.join("scp-note.txt")).unwrap(), b"keep me\n");
    assert_eq!(tree_of(&remote), before, "the remote tree changed");
    rig.wait_audit(&[
        "\"mode\":\"read-only\"",
        "\"op\":\"denied\"",
        "\"op\":\"remove\"",
        &format!("\"path\":\"{r}/big.bin\""),
    ]);
}

#[test]
fn rsync_of_a_tree_arrives_intact() {
    require_sshd();
    assert!(
        Command::new("rsync").arg("--version").output().is_ok(),
        "rsync is not installed (Debian package `rsync`)"
    );
    let rig = Rig::start("", None);
    let tree = rig.work.join("tree");
    fs::create_dir_all(tree.join("a/b")).unwrap();
    for (i, p) in ["x", "a/y", "a/b/z", "a/b/w"].iter().enumerate() {
        random_file(&tree.join(p), 1000 * (i + 1) * (i + 1) + 5);
    }
    let dest = rig.work.join("copy");
    let mut cmd = Command::new("rsync");
    cmd.args(["-a", "-e", &rig.ssh_e()])
        .arg(format!("{}/", tree.display()))
        .arg(format!("web@127.0.0.1:{}/", dest.display()));
    let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "rsync: {}\n{}",
        describe(&out),
        rig.gw.log()
    );
    for p in ["x", "a/y", "a/b/z", "a/b/w"] {
        assert_eq!(sha256(&tree.join(p)), sha256(&dest.join(p)), "{p}");
    }
}

#[test]
fn local_forwarding_is_refused() {
    require_sshd();
    let rig = Rig::start("", None);
    let local = free_port();
    let mut cmd = rig.ssh_base();
    cmd.args(["-N", "-o", "BatchMode=yes", "-o", "LogLevel=INFO", "-i"])
        .arg(&rig.alice_key)
        .args([
            "-L",
            &format!("127.0.0.1:{local}:127.0.0.1:{}", rig.sshd.port),
            "web@127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    assert!(
        wait_for_port(local, Duration::from_secs(10)),
        "ssh -L did not listen"
    );
    let mut s = TcpStream::connect(("127.0.0.1", local)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    // Allowed, this would read sshd's "SSH-2.0-OpenSSH..." banner.
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "got {:?}", String::from_utf8_lossy(&buf[..n]));
    let _ = child.kill();
    let _ = child.wait();
    rig.wait_audit(&["\"kind\":\"ssh_refused\"", "\"name\":\"direct-tcpip\""]);
}

#[test]
fn approved_command_runs_after_approval() {
    require_sshd();
    let rig = Rig::start("", None);
    let approver = rig.gw.token("bob", "", &["--scope", "approve"]);
    let mut cmd = rig.ssh_base();
    cmd.args(["-o", "BatchMode=yes", "-i"])
        .arg(&rig.alice_key)
        .args(["web@127.0.0.1", "echo restarted"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no held notice; log:\n{}", rig.gw.log()));
        if let Some(rest) = line.split("(request ").nth(1) {
            assert!(
                line.starts_with("portcullis: command held for approval"),
                "{line}"
            );
            break rest.split(',').next().unwrap().to_string();
        }
    };
    let http = rig
        .gw
        .log()
        .lines()
        .find_map(|l| {
            l.strip_prefix("portcullis: approvals endpoint on ")
                .map(str::to_owned)
        })
        .expect("http endpoint in log");
    let mut approve = Command::new(gateway_exe());
    approve
        .args(["approvals", "--url", http.trim(), "approve", &id])
        .env("PORTCULLIS_TOKEN", &approver);
    let out = run_with_timeout(&mut approve, None, COMMAND_TIMEOUT);
    assert!(out.status.success(), "approve: {}", describe(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ssh still waiting after approval"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{status:?} {out}");
    assert_eq!(out, "restarted\n");
    rig.wait_audit(&["\"kind\":\"ssh_exec_approved\""]);
}

/// Waits until the gateway has a session open (its `session_opened` is in the audit).
fn wait_session_open(rig: &Rig) {
    rig.wait_audit(&["\"kind\":\"ssh_exec\""]);
}

#[test]
fn idle_timeout_ends_a_silent_session_but_not_a_busy_one() {
    require_sshd();
    let rig = Rig::start_with("idle_timeout = \"3s\"", "", None);
    let mut client = Running::spawn(rig.ssh_cmd("cat"));
    let mut stdin = client.child.stdin.take().unwrap();
    let mut out = client.child.stdout.take().unwrap();
    // Traffic every half second for about twice the idle timeout keeps the session.
    for i in 0..12 {
        use std::io::Write;
        stdin.write_all(format!("tick {i}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        thread::sleep(Duration::from_millis(500));
        assert!(
            client.running(),
            "a session with traffic was ended; log:\n{}",
            rig.gw.log()
        );
    }
    let mut echoed = [0u8; 7];
    out.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"tick 0\n");
    // Silence: the gateway ends it.
    let (status, err) = client.wait(Duration::from_secs(30), || rig.gw.log());
    drop(stdin);
    assert!(!status.success(), "{status:?} {err}");
    assert!(
        err.contains("idle_timeout"),
        "the client is told why: {err}"
    );
    rig.wait_audit(&["\"kind\":\"session_closed\"", "(idle_timeout)"]);
}

#[test]
fn revoked_token_ends_its_live_session() {
    require_sshd();
    let rig = Rig::start("", None);
    let out = rig
        .gw
        .cli(&["token", "issue", "--identity", "alice", "--target", "web"]);
    assert!(out.status.success(), "{}", describe(&out));
    let token = stdout(&out).trim().to_string();
    let err = stderr(&out);
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .unwrap_or_else(|| panic!("no tok_ id in: {err}"))
        .trim_end_matches(',')
        .to_string();
    let client = Running::spawn(rig.ssh_token_cmd(&token, "sleep 60"));
    wait_session_open(&rig);
    let out = rig.gw.cli(&["token", "revoke", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    let (status, err) = client.wait(Duration::from_secs(10), || rig.gw.log());
    assert!(!status.success(), "{status:?}");
    assert!(
        err.contains("token revoked"),
        "the client is told why: {err}"
    );
    let audit = rig.wait_audit(&["closed by the gateway: token revoked"]);
    assert!(audit.contains("\"kind\":\"session_closed\""), "{audit}");
    // Other sessions are unaffected.
    assert!(rig.ssh("true").status.success());
}

#[test]
fn client_and_upstream_connections_get_tcp_keepalive() {
    require_sshd();
    let rig = Rig::start_with("tcp_keepalive = \"7s\"\n", "", None);
    let mut client = Running::spawn(rig.ssh_cmd("sleep 60"));
    wait_session_open(&rig);
    // 7s is 700 ticks.
    common::assert_keepalive_on_both_legs(rig.gw.pid(), rig.port, rig.sshd.port, 700);
    assert!(client.running());
}

#[test]
fn reload_without_the_identity_ends_its_live_session() {
    require_sshd();
    let rig = Rig::start("", None);
    let client = Running::spawn(rig.ssh_cmd("sleep 60"));
    wait_session_open(&rig);
    // alice's key now belongs to "alicia": alice is gone from the policy.
    let renamed = rig.policy.replace("\"alice\"", "\"alicia\"");
    assert_ne!(renamed, rig.policy);
    common::write_file_mode(&rig.gw.config, renamed.as_bytes(), 0o600);
    rig.gw.sighup();
    rig.gw
        .wait_for_log("policy reloaded", Duration::from_secs(10));
    let (status, err) = client.wait(Duration::from_secs(10), || rig.gw.log());
    assert!(!status.success(), "{status:?}");
    assert!(
        err.contains("identity or target removed from the policy"),
        "the client is told why: {err}"
    );
    rig.wait_audit(&["closed by the gateway: identity or target removed from the policy"]);
    // The same key now logs in as alicia.
    let out = rig.ssh("true");
    assert!(out.status.success(), "{}", describe(&out));
}

/// `ssh` with the token offered through one named method only (ssh takes the first value of an
/// option, so this can't reuse `ssh_token_cmd`).
fn ssh_token_via(rig: &Rig, token: &str, method: &str, command: &str) -> Output {
    let askpass = rig.work.join(format!("askpass-{method}"));
    fs::write(&askpass, format!("#!/bin/sh\necho '{token}'\n")).unwrap();
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = rig.ssh_base();
    cmd.args([
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        &format!("PreferredAuthentications={method}"),
        "-o",
        "NumberOfPasswordPrompts=1",
        "web@127.0.0.1",
        command,
    ])
    .env("SSH_ASKPASS", &askpass)
    .env("SSH_ASKPASS_REQUIRE", "force")
    .env("DISPLAY", ":0");
    run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
}

#[test]
fn token_works_as_password_and_as_keyboard_interactive_answer() {
    require_sshd();
    let rig = Rig::start("", None);
    for method in ["password", "keyboard-interactive"] {
        let token = rig.gw.token("alice", "web", &["--uses", "1"]);
        let out = ssh_token_via(&rig, &token, method, &format!("echo via-{method}"));
        assert!(
            out.status.success(),
            "{method}: {}\n{}",
            describe(&out),
            rig.gw.log()
        );
        assert_eq!(stdout(&out), format!("via-{method}\n"));
        // Single use: the same token is refused the second time.
        let again = ssh_token_via(&rig, &token, method, "echo again");
        assert!(
            !again.status.success(),
            "{method} reuse: {}",
            describe(&again)
        );
        assert!(!stdout(&again).contains("again"));
    }
    let audit = rig.wait_audit(&[
        "\"method\":\"password\"",
        "\"method\":\"keyboard-interactive\"",
    ]);
    assert!(audit.contains("\"identity\":\"alice\""), "{audit}");
}

#[test]
fn rsa_and_ecdsa_user_keys_log_in() {
    require_sshd();
    let rig = Rig::start("", None);
    // bob gets an RSA and an ECDSA key (SIGHUP reload), and alice's commands are open to him.
    let mut lines = Vec::new();
    for (name, args) in [
        ("rsa", ["-t", "rsa", "-b", "3072"]),
        ("ecdsa", ["-t", "ecdsa", "-b", "256"]),
    ] {
        let key = rig.work.join(format!("bob-{name}"));
        let out = run_with_timeout(
            Command::new("ssh-keygen")
                .args(args)
                .args(["-q", "-N", "", "-C", &format!("bob-{name}"), "-f"])
                .arg(&key),
            None,
            COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "{}", describe(&out));
        lines.push((
            key.clone(),
            fs::read_to_string(key.with_extension("pub")).unwrap(),
        ));
    }
    let keys: Vec<String> = lines
        .iter()
        .map(|(_, l)| format!("\"{}\"", l.trim()))
        .collect();
    let policy = rig.policy.replace(
        "name = \"bob\"\n",
        &format!("name = \"bob\"\nssh_keys = [{}]\n", keys.join(", ")),
    );
    assert_ne!(policy, rig.policy);
    common::write_file_mode(&rig.gw.config, policy.as_bytes(), 0o600);
    rig.gw.sighup();
    rig.gw
        .wait_for_log("policy reloaded", Duration::from_secs(10));
    for (key, _) in &lines {
        let mut cmd = rig.ssh_base();
        cmd.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(key)
            .args(["web@127.0.0.1", "echo as-bob"]);
        let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "{key:?}: {}\n{}",
            describe(&out),
            rig.gw.log()
        );
        assert_eq!(stdout(&out), "as-bob\n");
    }
    let audit = rig.audit();
    assert!(audit.contains("\"identity\":\"bob\""), "{audit}");
}

#[test]
fn large_transfer_both_ways_arrives_intact() {
    require_sshd();
    let rig = Rig::start("", None);
    let size = 64 * 1024 * 1024;
    let src = rig.work.join("big.bin");
    random_file(&src, size);
    let want = sha256(&src);
    // Up: stdin through the gateway into `sha256sum` on the target.
    let data = fs::read(&src).unwrap();
    let out = run_with_timeout(
        &mut rig.ssh_cmd("sha256sum"),
        Some(&data),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out).split_whitespace().next(), Some(want.as_str()));
    // Down: the target reads the file back out (the rig's sshd runs on this machine).
    let out = run_with_timeout(
        &mut rig.ssh_cmd(&format!("cat {}", src.display())),
        None,
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), size);
    let copy = rig.work.join("big.copy");
    fs::write(&copy, &out.stdout).unwrap();
    assert_eq!(sha256(&copy), want);
}

/// Whether this CPU has the AES and carry-less multiply instructions (as `/proc/cpuinfo`
/// lists them), i.e. whether the gateway should prefer AES-GCM on the legs it opens.
fn cpu_has_hardware_aes_gcm() -> bool {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    if cfg!(target_arch = "aarch64") {
        flags.contains(&"aes")
    } else {
        flags.contains(&"aes") && flags.contains(&"pclmulqdq")
    }
}

#[test]
fn upstream_leg_uses_the_fastest_cipher_and_the_client_keeps_its_own() {
    require_sshd();
    let rig = Rig::start("", None);
    // The client asks for ChaCha20-Poly1305 (OpenSSH's default first choice anyway).
    let mut cmd = rig.ssh_base();
    cmd.args([
        "-c",
        "chacha20-poly1305@openssh.com",
        "-o",
        "BatchMode=yes",
        "-i",
    ])
    .arg(&rig.alice_key)
    .args(["web@127.0.0.1", "id -un"]);
    let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    // The gateway's own connection to sshd (default cipher list) takes AES-GCM when the CPU
    // runs it in hardware: a relay pays a cipher pass per leg, and that one is ours to choose.
    let upstream = if cpu_has_hardware_aes_gcm() {
        "\"upstream_cipher\":\"aes256-gcm@openssh.com\""
    } else {
        "\"upstream_cipher\":\"chacha20-poly1305@openssh.com\""
    };
    rig.wait_audit(&[
        "\"kind\":\"session_opened\"",
        "\"client_cipher\":\"chacha20-poly1305@openssh.com\"",
        upstream,
    ]);
}
