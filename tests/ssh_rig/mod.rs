//! The rig the SSH gateway tests share: a throwaway root sshd as the target, a `portcullis`
//! gateway in front of it with target "web", and identity "alice" with her own key.
// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    describe, free_port, run_with_timeout, stdout, unique_temp_dir, wait_for_port, Gateway,
    COMMAND_TIMEOUT,
};

pub const SSHD: &str = "/usr/sbin/sshd";

/// OpenSSH client options of every test client: no user config, no known-hosts file, errors only.
pub const QUIET_CLIENT: [&str; 8] = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
];

/// Fails (never skips) without root or sshd: run `.ci/run`, or install openssh-server.
pub fn require_sshd() {
    assert!(
        Path::new(SSHD).exists() && crate::common::running_as_root(),
        "these tests need root and {SSHD} (Debian openssh-server); .ci/run sets both up"
    );
}

pub fn keygen(path: &Path, comment: &str) -> String {
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        None,
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "ssh-keygen: {}", describe(&out));
    fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// A throwaway sshd on 127.0.0.1 that accepts only `authorized` for every user.
pub struct Sshd {
    pub dir: PathBuf,
    pub port: u16,
    pub child: Child,
    /// `ssh-ed25519 AAAA...` (no comment): what a target's `host_key` pins.
    pub host_key: String,
}

impl Sshd {
    pub fn start(authorized: &str) -> Sshd {
        let dir = unique_temp_dir("sshd");
        fs::create_dir_all("/run/sshd").unwrap();
        let host_key_line = keygen(&dir.join("host_key"), "target-host");
        let host_key = host_key_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        fs::write(dir.join("authorized_keys"), format!("{authorized}\n")).unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\nAllowTcpForwarding yes\nPermitRootLogin yes\n",
            d = dir.display()
        );
        fs::write(dir.join("sshd_config"), config).unwrap();
        let log = fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning sshd");
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "sshd did not listen: {}",
            fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        Sshd {
            dir,
            port,
            child,
            host_key,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// sshd + gateway + a client key registered for identity "alice".
pub struct Rig {
    pub sshd: Sshd,
    pub gw: Gateway,
    /// The gateway's SSH port for target "web".
    pub port: u16,
    /// alice's private key file.
    pub alice_key: PathBuf,
    /// Scratch space for the test (marker files, transfer trees).
    pub work: PathBuf,
    /// The policy the gateway was started with.
    pub policy: String,
}

pub const RULES: &str = r#"
[[rule]]
name = "tools"
who = ["*"]
programs = ["echo", "cat", "id", "sh", "true", "false", "printf", "sha256sum", "rsync", "exit", "sleep", "ls"]
action = "allow"
[[rule]]
name = "restart"
who = ["alice"]
commands = ['^echo restarted$']
action = "approve"
approvers = ["bob"]
"#;

impl Rig {
    /// `target_extra` is appended to the [[target]] "web" table (`host_key` already set unless
    /// `host_key` overrides it).
    pub fn start(target_extra: &str, host_key: Option<&str>) -> Rig {
        Rig::start_with("", target_extra, host_key)
    }

    /// Like [`Rig::start`], with `gateway_extra` appended to the `[gateway]` table.
    pub fn start_with(gateway_extra: &str, target_extra: &str, host_key: Option<&str>) -> Rig {
        let work = unique_temp_dir("sshgw-work");
        let alice_key = work.join("alice");
        let alice_pub = keygen(&alice_key, "alice@laptop");
        let up_dir = unique_temp_dir("sshgw-upkey");
        let up_pub = keygen(&up_dir.join("up"), "gateway");
        let up_private = fs::read(up_dir.join("up")).unwrap();
        let _ = fs::remove_dir_all(&up_dir);
        let sshd = Sshd::start(&up_pub);
        let port = free_port();
        let http = free_port();
        let host_key = host_key.map_or_else(|| sshd.host_key.clone(), str::to_owned);
        let policy = format!(
            r#"[gateway]
data_dir = "data"
http = {{ listen = "127.0.0.1:{http}" }}
{gateway_extra}
[[identity]]
name = "alice"
ssh_keys = ["{alice_pub}"]
[[identity]]
name = "bob"
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
{RULES}"#,
            sshd_port = sshd.port
        );
        let gw = Gateway::builder(&policy)
            .secret("up.key", up_private)
            .start();
        Rig {
            sshd,
            gw,
            port,
            alice_key,
            work,
            policy,
        }
    }

    /// `program` (sftp or scp) with the options every test client uses, as alice, on the
    /// gateway's port (`-P`); the caller adds what to transfer.
    fn file_client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(QUIET_CLIENT)
            .args(["-o", "BatchMode=yes", "-i"])
            .arg(&self.alice_key)
            .args(["-P", &self.port.to_string()]);
        cmd
    }

    /// `sftp -b -` as alice with this batch.
    pub fn sftp(&self, batch: &str) -> Output {
        let mut cmd = self.file_client("sftp");
        cmd.args(["-b", "-", "web@127.0.0.1"]);
        run_with_timeout(&mut cmd, Some(batch.as_bytes()), COMMAND_TIMEOUT)
    }

    /// `scp` as alice (OpenSSH 9 scp speaks SFTP).
    pub fn scp(&self, from: &str, to: &str) -> Output {
        let mut cmd = self.file_client("scp");
        cmd.args([from, to]);
        run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
    }

    pub fn ssh_base(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(QUIET_CLIENT)
            .args(["-o", "ConnectTimeout=10", "-p", &self.port.to_string()]);
        cmd
    }

    /// `ssh -i alice web@gateway COMMAND`.
    pub fn ssh(&self, command: &str) -> Output {
        run_with_timeout(&mut self.ssh_cmd(command), None, COMMAND_TIMEOUT)
    }

    pub fn ssh_cmd(&self, command: &str) -> Command {
        let mut cmd = self.ssh_base();
        cmd.args(["-o", "BatchMode=yes", "-i"])
            .arg(&self.alice_key)
            .args(["web@127.0.0.1", command]);
        cmd
    }

    /// `ssh` with a token as the password (SSH_ASKPASS, no tty) and no key.
    pub fn ssh_with_token(&self, token: &str, command: &str) -> Output {
        run_with_timeout(
            &mut self.ssh_token_cmd(token, command),
            None,
            COMMAND_TIMEOUT,
        )
    }

    pub fn ssh_token_cmd(&self, token: &str, command: &str) -> Command {
        let askpass = self
            .work
            .join(format!("askpass-{}", crate::common::random_hex(1)));
        fs::write(&askpass, format!("#!/bin/sh\necho '{token}'\n")).unwrap();
        fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).unwrap();
        let mut cmd = self.ssh_base();
        cmd.args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
            "web@127.0.0.1",
            command,
        ])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
        cmd
    }

    pub fn audit(&self) -> String {
        stdout(&self.gw.cli(&["audit", "export"]))
    }

    /// The audit log once it contains every one of `needles` (bounded wait: events that are not
    /// made durable at once reach the store within the flush interval).
    pub fn wait_audit(&self, needles: &[&str]) -> String {
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

    /// The `-e` command rsync/scp use to reach the gateway as alice.
    pub fn ssh_e(&self) -> String {
        format!(
            "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -i {} -p {}",
            self.alice_key.display(),
            self.port
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// A running client whose stderr is collected in the background.
pub struct Running {
    pub child: Child,
    pub stderr: Receiver<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::piped())
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
        Running { child, stderr: rx }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for the client to exit; returns its status and stderr.
    pub fn wait(
        mut self,
        limit: Duration,
        log: impl Fn() -> String,
    ) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "client still running after {limit:?}; gateway log:\n{}",
                    log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        thread::sleep(Duration::from_millis(100));
        let err: Vec<String> = self.stderr.try_iter().collect();
        (status, err.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
