//! Real-peer test of `proto::ssh::sftp`: the OpenSSH `sftp` client talks to OpenSSH's
//! `sftp-server` (Debian `openssh-sftp-server`) through the parser, and the parsed operations
//! must match what the batch did; in read-only mode the writes are refused by the session and
//! never reach the server.
//!
//! Plumbing: `sftp -D RELAY` runs RELAY as its "server" and speaks SFTP on its stdin/stdout.
//! RELAY is a three-line sh script that copies its stdin into a FIFO and a second FIFO to its
//! stdout; this process reads the first FIFO, feeds [`SftpSession::client_data`], writes what it
//! returns to a real `sftp-server` child's stdin, and feeds the child's stdout through
//! [`SftpSession::server_data`] into the second FIFO. Nothing but our parser sits between the two
//! real programs.

// Test code: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use portcullis::proto::ssh::sftp::{status, SftpEvent, SftpMode, SftpOutput, SftpSession};

const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
const O_NONBLOCK: i32 = 0o4000;

struct Dirs {
    root: PathBuf,
    local: PathBuf,
    remote: PathBuf,
}

fn dirs(kind: &str) -> Dirs {
    let root = common::unique_temp_dir(kind);
    let local = root.join("local");
    let remote = root.join("remote");
    fs::create_dir_all(&local).unwrap();
    fs::create_dir_all(&remote).unwrap();
    Dirs {
        root,
        local,
        remote,
    }
}

/// Pseudo-random bytes (so a transfer that reorders or drops a chunk is caught).
fn content(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect()
}

/// Runs `sftp -b BATCH` against a real sftp-server through an [`SftpSession`] in `mode`.
fn run_sftp(d: &Dirs, mode: SftpMode, batch: &str) -> (Output, Vec<SftpEvent>) {
    let c2s = d.root.join("c2s");
    let s2c = d.root.join("s2c");
    for fifo in [&c2s, &s2c] {
        let st = Command::new("mkfifo").arg(fifo).status().unwrap();
        assert!(st.success(), "mkfifo {}", fifo.display());
    }
    let relay = d.root.join("relay.sh");
    let script = format!(
        "#!/bin/sh\nexec 3<&0\ncat <&3 > '{}' &\nexec cat < '{}'\n",
        c2s.display(),
        s2c.display()
    );
    common::write_file_mode(&relay, script.as_bytes(), 0o755);
    let batch_file = d.root.join("batch");
    fs::write(&batch_file, batch).unwrap();

    let mut server = Command::new(SFTP_SERVER)
        .current_dir(&d.remote)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{SFTP_SERVER}: {e} (Debian package openssh-sftp-server)"));
    let mut server_in = server.stdin.take().unwrap();
    let mut server_out = server.stdout.take().unwrap();

    let client = {
        let (relay, batch_file, local) = (relay.clone(), batch_file.clone(), d.local.clone());
        let (c2s, s2c) = (c2s.clone(), s2c.clone());
        thread::spawn(move || {
            let mut cmd = Command::new("sftp");
            cmd.arg("-b")
                .arg(&batch_file)
                .arg("-D")
                .arg(&relay)
                .current_dir(&local);
            let out = common::run_with_timeout(&mut cmd, None, Duration::from_secs(60));
            // If sftp never started the relay, unblock our opens of the FIFOs.
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(O_NONBLOCK)
                .open(&c2s);
            let _ = OpenOptions::new()
                .read(true)
                .custom_flags(O_NONBLOCK)
                .open(&s2c);
            out
        })
    };

    let mut from_client = File::open(&c2s).unwrap();
    let to_client = Arc::new(Mutex::new(
        OpenOptions::new().write(true).open(&s2c).unwrap(),
    ));
    let session = Arc::new(Mutex::new(SftpSession::new(mode)));
    let events = Arc::new(Mutex::new(Vec::new()));

    let upstream = {
        let (session, events, to_client) = (session.clone(), events.clone(), to_client.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = from_client.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut out = SftpOutput::default();
                session
                    .lock()
                    .unwrap()
                    .client_data(&buf[..n], &mut out)
                    .unwrap();
                events.lock().unwrap().extend(out.events);
                if !out.to_client.is_empty() {
                    to_client.lock().unwrap().write_all(&out.to_client).unwrap();
                }
                if server_in.write_all(&out.to_server).is_err() {
                    break;
                }
            }
            // Dropping server_in closes the server's stdin: it exits.
        })
    };
    let downstream = {
        let (session, events, to_client) = (session.clone(), events.clone(), to_client.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = server_out.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut out = SftpOutput::default();
                session
                    .lock()
                    .unwrap()
                    .server_data(&buf[..n], &mut out)
                    .unwrap();
                events.lock().unwrap().extend(out.events);
                if to_client.lock().unwrap().write_all(&out.to_client).is_err() {
                    break;
                }
            }
        })
    };
    upstream.join().expect("client-to-server relay");
    downstream.join().expect("server-to-client relay");
    drop(to_client);
    let out = client.join().unwrap();
    let _ = server.wait();
    let events = std::mem::take(&mut *events.lock().unwrap());
    (out, events)
}

fn remote_path(d: &Dirs, name: &str) -> String {
    format!("{}/{name}", fs::canonicalize(&d.remote).unwrap().display())
}

fn closes_of(events: &[SftpEvent], path: &str) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            SftpEvent::Close {
                path: Some(p),
                bytes_read,
                bytes_written,
                ..
            } if p == path => Some((*bytes_read, *bytes_written)),
            _ => None,
        })
        .collect()
}

#[test]
fn parses_a_real_sftp_session_put_get_rename_mkdir_rm() {
    let d = dirs("sftp-rw");
    let data = content(300_000, 0x1234_5678);
    fs::write(d.local.join("up.bin"), &data).unwrap();
    let batch = "put up.bin up.bin\nget up.bin down.bin\nrename up.bin moved.bin\nmkdir newdir\nrmdir newdir\nrm moved.bin\n";
    let (out, events) = run_sftp(&d, SftpMode::ReadWrite, batch);
    assert!(out.status.success(), "{}", common::describe(&out));

    // What sftp did really happened.
    assert_eq!(fs::read(d.local.join("down.bin")).unwrap(), data);
    assert_eq!(fs::read_dir(&d.remote).unwrap().count(), 0);

    let up = remote_path(&d, "up.bin");
    let moved = remote_path(&d, "moved.bin");
    let newdir = remote_path(&d, "newdir");
    assert!(
        matches!(events.first(), Some(SftpEvent::Init { version: 3 })),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, SftpEvent::Version { version: 3, extensions } if extensions.iter().any(|x| x == "posix-rename@openssh.com"))));
    // put: OPEN for writing (create, truncate), WRITEs covering the file, CLOSE with the count.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SftpEvent::Open { path, flags, .. }
        if *path == up && flags.write() && flags.create() && flags.truncate())),
        "{events:?}"
    );
    let written: u64 = events
        .iter()
        .filter_map(|e| match e {
            SftpEvent::Write {
                path: Some(p), len, ..
            } if *p == up => Some(u64::from(*len)),
            _ => None,
        })
        .sum();
    assert_eq!(written, 300_000);
    // get: OPEN for reading, READs, CLOSE with the bytes read.
    assert!(events
        .iter()
        .any(|e| matches!(e, SftpEvent::Open { path, flags, .. }
        if *path == up && flags.read() && !flags.modifies())));
    assert_eq!(
        closes_of(&events, &up),
        [(0, 300_000), (300_000, 0)],
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, SftpEvent::Data { path: Some(p), .. } if *p == up)));
    // rename (OpenSSH uses posix-rename when the server offers it), mkdir, rmdir, rm.
    assert!(
        events.iter().any(|e| match e {
            SftpEvent::Rename { old, new, .. } => *old == up && *new == moved,
            SftpEvent::Extended { name, paths, .. } => {
                name == "posix-rename@openssh.com" && paths[..] == [up.clone(), moved.clone()]
            }
            _ => false,
        }),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, SftpEvent::Mkdir { path, .. } if *path == newdir)));
    assert!(events
        .iter()
        .any(|e| matches!(e, SftpEvent::Rmdir { path, .. } if *path == newdir)));
    assert!(events
        .iter()
        .any(|e| matches!(e, SftpEvent::Remove { path, .. } if *path == moved)));
    assert!(!events.iter().any(|e| matches!(e, SftpEvent::Denied { .. })));
    let _ = fs::remove_dir_all(&d.root);
}

#[test]
fn read_only_session_refuses_put_and_lets_get_through() {
    let d = dirs("sftp-ro");
    let data = content(70_000, 99);
    fs::write(d.remote.join("existing.txt"), &data).unwrap();
    fs::write(d.local.join("up.bin"), b"should never arrive").unwrap();
    let batch = "-put up.bin up2.bin\nget existing.txt got.txt\n-mkdir nope\n-rm existing.txt\n-rename existing.txt x.txt\n-chmod 600 existing.txt\n-ln -s existing.txt link\n";
    let (out, events) = run_sftp(&d, SftpMode::ReadOnly, batch);
    let stderr = common::stderr(&out);

    // The server's files are untouched; the read went through.
    let mut remote: Vec<_> = fs::read_dir(&d.remote)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    remote.sort();
    assert_eq!(remote, ["existing.txt"]);
    assert_eq!(fs::read(d.remote.join("existing.txt")).unwrap(), data);
    assert_eq!(fs::read(d.local.join("got.txt")).unwrap(), data);
    assert!(
        stderr.contains("Permission denied"),
        "{}",
        common::describe(&out)
    );

    // Each write-ish request was refused by the session (a Denied event right after it).
    let existing = remote_path(&d, "existing.txt");
    let denied: Vec<&SftpEvent> = events
        .windows(2)
        .filter(|w| matches!(w[1], SftpEvent::Denied { .. }))
        .map(|w| &w[0])
        .collect();
    assert!(
        denied
            .iter()
            .any(|e| matches!(e, SftpEvent::Open { path, .. } if path.ends_with("/up2.bin"))),
        "{denied:?}"
    );
    assert!(denied.iter().any(|e| matches!(e, SftpEvent::Mkdir { .. })));
    assert!(denied
        .iter()
        .any(|e| matches!(e, SftpEvent::Remove { path, .. } if *path == existing)));
    assert!(denied
        .iter()
        .any(|e| matches!(e, SftpEvent::Rename { .. } | SftpEvent::Extended { .. })));
    assert!(denied
        .iter()
        .any(|e| matches!(e, SftpEvent::Setstat { .. })));
    assert!(denied
        .iter()
        .any(|e| matches!(e, SftpEvent::Symlink { .. })));
    assert!(!events.iter().any(|e| matches!(e, SftpEvent::Write { .. })));
    // The server never answered a refused request: its statuses carry no PERMISSION_DENIED.
    assert!(!events.iter().any(
        |e| matches!(e, SftpEvent::Status { code, .. } if *code == status::PERMISSION_DENIED)
    ));
    assert_eq!(closes_of(&events, &existing), [(70_000, 0)]);
    let _ = fs::remove_dir_all(&d.root);
}
