//! Real-peer test harness: a throwaway PostgreSQL cluster (TLS, SCRAM and MD5 roles), the
//! `portcullis` binary under test, and psql as the client. Nothing is mocked.
//!
//! Requirements: run as root (the cluster runs as the `postgres` OS user via `runuser`; as a
//! non-root user the cluster runs as that user instead), PostgreSQL server binaries under
//! `/usr/lib/postgresql/<version>/bin` (or `$PG_BIN`), `psql` and `openssl` on `PATH`.
//!
//! Every cluster and gateway lives in its own directory under `std::env::temp_dir()`, removed on
//! drop; set `PORTCULLIS_KEEP_TEST_DIRS=1` to keep them for a post-mortem. Every wait is bounded,
//! and every failure panics with the relevant log.
//!
//! Used by many integration test files via `mod common;`: each uses a different subset.
#![allow(dead_code)] // each test binary uses only part of the harness

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// How long any psql / CLI invocation may run before the harness kills it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the gateway may take to print `portcullis: ready`.
pub const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// A random u64 from std's per-process random hasher keys, mixed with a counter and the clock.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A random lowercase hex string of `n` 64-bit words (16 hex digits each).
pub fn random_hex(words: usize) -> String {
    (0..words)
        .map(|_| format!("{:016x}", random_u64()))
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Picked at random below the kernel's ephemeral range (so outgoing connections can't take it in
/// the meantime) and never handed out twice in this process, so parallel tests don't collide.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..1000 {
        let port = 20_000 + (random_u64() % 12_000) as u16; // 20000..32000
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        let set = guard.get_or_insert_with(HashSet::new);
        if set.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            set.insert(port);
            return port;
        }
    }
    panic!("free_port: no free port found in 1000 attempts");
}

/// A fresh, unique directory under the system temp dir.
pub fn unique_temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-{kind}-{}-{}",
        std::process::id(),
        random_hex(1)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn keep_dirs() -> bool {
    std::env::var_os("PORTCULLIS_KEEP_TEST_DIRS").is_some_and(|v| !v.is_empty() && v != "0")
}

fn remove_dir(dir: &Path) {
    if keep_dirs() {
        eprintln!("harness: keeping {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Writes `contents` to `path` with the given mode (set before any byte is written).
pub fn write_file_mode(path: &Path, contents: &[u8], mode: u32) {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.set_permissions(fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    f.write_all(contents)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<could not read {}: {e}>", path.display()),
    }
}

/// Are we root? (Read from /proc: std has no geteuid and we add no crates.)
pub fn running_as_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1)) // real, effective, saved, fs
        .is_some_and(|euid| euid == "0")
}

/// Renders a command's output for a panic message.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout as a String (lossy).
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as a String (lossy).
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the real `asciinema cat FILE` under a pseudo-terminal (`script`; asciinema opens
/// /dev/tty), bounded by `timeout`. The caller checks what it printed.
pub fn asciinema_cat(file: &Path, timeout: Duration) -> Output {
    let path = file.to_str().expect("temp paths are UTF-8");
    assert!(!path.contains('\''), "temp path with a quote: {path}");
    run_with_timeout(
        Command::new("script")
            // -q: no "Script started" lines; -e: exit with the child's status; log to /dev/null.
            .args([
                "-q",
                "-e",
                "-c",
                &format!("asciinema cat '{path}'"),
                "/dev/null",
            ])
            .env("LC_ALL", "C.UTF-8")
            // A config home of its own: on a machine where asciinema never ran, two runs at once
            // race to create ~/.config/asciinema and one dies with FileExistsError.
            .env("ASCIINEMA_CONFIG_HOME", format!("{path}.asciinema-config")),
        None,
        timeout,
    )
}

/// Runs `cmd` to completion with an optional stdin, killing it after `timeout`.
/// A killed command gets a non-success status and a note at the end of its stderr.
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));

    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            // A broken pipe (the command exits before reading everything) is the test's business.
            Some(thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let out_reader = child.stdout.take().map(|mut s| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let err_reader = child.stderr.take().map(|mut s| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child
                    .wait()
                    .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    let mut stderr = err_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[harness: killed after {timeout:?}: {cmd:?}]\n").as_bytes(),
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A `psql` command with the environment cleared of anything that could change where or how it
/// connects (PG* variables, ~/.pgpass, ~/.psqlrc), and a connect timeout.
pub fn psql_command(conninfo: &str, password: Option<&str>) -> Command {
    let mut cmd = Command::new("psql");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "portcullis-tests");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd.arg("-X").arg("-v").arg("ON_ERROR_STOP=1").arg(conninfo);
    cmd
}

/// Runs psql against `conninfo` with extra `args` (e.g. `["-At", "-c", "select 1"]`) and an
/// optional stdin (for `COPY ... FROM STDIN` or `-f -`), bounded by [`COMMAND_TIMEOUT`].
pub fn run_psql(
    conninfo: &str,
    password: Option<&str>,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Output {
    let mut cmd = psql_command(conninfo, password);
    cmd.args(args);
    run_with_timeout(&mut cmd, stdin, COMMAND_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

/// A throwaway CA and a server certificate for `127.0.0.1` / `localhost` (ECDSA P-256), all
/// owned by the current user; keys are mode 0600.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "openssl {args:?} failed in {}:\n{}",
        dir.display(),
        describe(&out)
    );
}

/// Generates a CA and a server certificate (SAN: IP 127.0.0.1, DNS localhost) in `dir`.
pub fn make_tls_files(dir: &Path) -> TlsFiles {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3",
        "-subj",
        "/CN=portcullis test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);

    let mut csr = vec!["req", "-new"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);

    fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap_or_else(|e| panic!("writing server.ext: {e}"));
    let serial = format!("0x{}", random_hex(1));
    let mut sign: Vec<&str> = "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -days 3 \
        -extfile server.ext -out server.crt -set_serial"
        .split_whitespace()
        .collect();
    sign.push(&serial);
    openssl(dir, &sign);
    for key in ["ca.key", "server.key"] {
        let p = dir.join(key);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }
    TlsFiles {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL cluster
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL server binaries: `$PG_BIN`, else the newest `/usr/lib/postgresql/<v>/bin`.
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let Ok(version) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server found under /usr/lib/postgresql (set PG_BIN)")
    })
}

/// A running, throwaway PostgreSQL cluster on 127.0.0.1:`port`.
///
/// - TLS on (certificate from [`TlsFiles`], SAN 127.0.0.1/localhost); plaintext also accepted.
/// - `postgres` (superuser) authenticates with SCRAM-SHA-256, password [`PgCluster::password`].
/// - `md5_user` (superuser, member of `md5_auth`) authenticates with MD5, password
///   [`PgCluster::md5_password`]. Any role made a member of `md5_auth` with an md5 secret
///   (`SET password_encryption='md5'` before `CREATE ROLE`) also gets MD5.
/// - Every other role gets SCRAM-SHA-256. No unix-socket logins.
pub struct PgCluster {
    /// The temp dir holding everything (removed on drop).
    pub dir: PathBuf,
    /// The cluster's data directory (`dir/data`).
    pub data_dir: PathBuf,
    pub port: u16,
    /// Password of the `postgres` superuser (SCRAM).
    pub password: String,
    /// Password of `md5_user` (MD5).
    pub md5_password: String,
    /// The CA that signed the server certificate: use as `sslrootcert`.
    pub ca_cert: PathBuf,
    /// Root-owned copies of the TLS material (the server key is also usable by a gateway under
    /// test for its own listener: the certificate is valid for 127.0.0.1 and localhost).
    pub tls: TlsFiles,
    bin: PathBuf,
    as_root: bool,
}

impl PgCluster {
    /// initdb + start a new cluster; panics with initdb's output or the server log on failure.
    pub fn start() -> PgCluster {
        let as_root = running_as_root();
        let bin = pg_bin_dir();
        let dir = unique_temp_dir("pg");
        let data_dir = dir.join("data");
        let password = format!("su-{}", random_hex(2));
        let md5_password = format!("md5-{}", random_hex(2));

        let pwfile = dir.join("pwfile");
        write_file_mode(&pwfile, password.as_bytes(), 0o600);
        if as_root {
            let out = run_with_timeout(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                None,
                COMMAND_TIMEOUT,
            );
            assert!(
                out.status.success(),
                "chown {}:\n{}",
                dir.display(),
                describe(&out)
            );
        }
        // Made after the chown so they stay owned by us; the server gets its own copies in data/.
        let tls = make_tls_files(&dir.join("tls"));

        let cluster = PgCluster {
            dir: dir.clone(),
            data_dir: data_dir.clone(),
            port: 0,
            password,
            md5_password,
            ca_cert: tls.ca_cert.clone(),
            tls,
            bin,
            as_root,
        };

        let mut initdb = cluster.pg_command("initdb");
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-A",
                "scram-sha-256",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .args(["--locale", "C"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = run_with_timeout(&mut initdb, None, Duration::from_secs(120));
        assert!(out.status.success(), "initdb failed:\n{}", describe(&out));
        let _ = fs::remove_file(&pwfile);

        // Server-side TLS files inside the data dir, owned by the server's user, key 0600.
        let tls_files = [
            (&cluster.tls.server_cert, "server.crt"),
            (&cluster.tls.server_key, "server.key"),
        ];
        for (src, name) in tls_files {
            let dst = data_dir.join(name);
            let bytes = fs::read(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
            write_file_mode(&dst, &bytes, 0o600);
            cluster.chown_to_postgres(&dst);
        }

        let hba = "# written by the portcullis test harness\n\
            hostssl   all +md5_auth 127.0.0.1/32 md5\n\
            hostnossl all +md5_auth 127.0.0.1/32 md5\n\
            hostssl   all all       127.0.0.1/32 scram-sha-256\n\
            hostnossl all all       127.0.0.1/32 scram-sha-256\n";
        fs::write(data_dir.join("pg_hba.conf"), hba)
            .unwrap_or_else(|e| panic!("writing pg_hba.conf: {e}"));

        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data_dir.join("postgresql.conf"))
            .unwrap_or_else(|e| panic!("opening postgresql.conf: {e}"));
        let settings = format!(
            "\n# portcullis test harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 100\n\
             log_min_messages = warning\n",
            dir.display()
        );
        conf.write_all(settings.as_bytes())
            .unwrap_or_else(|e| panic!("writing postgresql.conf: {e}"));
        drop(conf);

        let mut cluster = cluster;
        cluster.start_server_on_free_port();
        cluster.setup_roles();
        cluster
    }

    /// A command for one of the server binaries, run as the `postgres` OS user when we are root.
    fn pg_command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(exe);
            cmd
        } else {
            Command::new(exe)
        };
        // The test's own cwd may not be readable by postgres.
        cmd.current_dir(&self.dir);
        cmd
    }

    fn chown_to_postgres(&self, path: &Path) {
        if !self.as_root {
            return;
        }
        let out = run_with_timeout(
            Command::new("chown").arg("postgres:postgres").arg(path),
            None,
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "chown {}:\n{}",
            path.display(),
            describe(&out)
        );
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    fn start_server_on_free_port(&mut self) {
        let mut last = String::new();
        for _attempt in 0..5 {
            self.port = free_port();
            let conf = self.data_dir.join("postgresql.conf");
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&conf)
                .unwrap_or_else(|e| panic!("opening {}: {e}", conf.display()));
            // Later settings override earlier ones, so a retry just appends a new port.
            f.write_all(format!("port = {}\n", self.port).as_bytes())
                .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
            drop(f);
            let out = self.pg_ctl_start();
            if out.status.success() {
                return;
            }
            last = format!("{}\n--- server log ---\n{}", describe(&out), self.log());
            if !last.contains("already in use") {
                break;
            }
        }
        panic!(
            "PostgreSQL failed to start in {}:\n{last}",
            self.dir.display()
        );
    }

    fn pg_ctl_start(&self) -> Output {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"]);
        run_with_timeout(&mut cmd, None, Duration::from_secs(90))
    }

    /// Starts the server again after [`PgCluster::stop_server`] (same port).
    pub fn start_server(&self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "pg_ctl start failed:\n{}\n--- server log ---\n{}",
            describe(&out),
            self.log()
        );
    }

    /// Stops the server (fast mode) without removing anything; see [`PgCluster::start_server`].
    pub fn stop_server(&self) {
        let out = self.pg_ctl_stop("fast");
        assert!(
            out.status.success(),
            "pg_ctl stop failed:\n{}",
            describe(&out)
        );
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", "30", "stop"]);
        run_with_timeout(&mut cmd, None, Duration::from_secs(60))
    }

    fn setup_roles(&self) {
        let sql = format!(
            "CREATE ROLE md5_auth NOLOGIN;\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE md5_user LOGIN SUPERUSER PASSWORD '{}' IN ROLE md5_auth;",
            self.md5_password
        );
        let out = self.psql("postgres", &sql);
        assert!(
            out.status.success(),
            "creating md5_user failed:\n{}\n--- server log ---\n{}",
            describe(&out),
            self.log()
        );
    }

    /// `host:port` of the server, as a policy's `upstream`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A libpq conninfo for a direct, verify-full TLS connection.
    pub fn conninfo(&self, user: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=verify-full sslrootcert={}",
            self.port,
            cq(user),
            cq(db),
            cq(&self.ca_cert.to_string_lossy())
        )
    }

    /// Runs `sql` (`psql -c`) directly as the superuser over verify-full TLS. Doesn't panic.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        run_psql(
            &self.conninfo("postgres", db),
            Some(&self.password),
            &["-c", sql],
            None,
        )
    }

    /// Like [`PgCluster::psql`] with any psql arguments and an optional stdin.
    pub fn psql_args(&self, db: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_psql(
            &self.conninfo("postgres", db),
            Some(&self.password),
            args,
            stdin,
        )
    }

    /// Runs `sql` in database `postgres` with `psql -XAtq` and returns stdout without the final
    /// newline; panics if psql fails.
    pub fn query_scalar(&self, sql: &str) -> String {
        self.query_scalar_in("postgres", sql)
    }

    /// [`PgCluster::query_scalar`] in database `db`.
    pub fn query_scalar_in(&self, db: &str, sql: &str) -> String {
        let out = self.psql_args(db, &["-Atq", "-c", sql], None);
        assert!(
            out.status.success(),
            "query {sql:?} failed:\n{}",
            describe(&out)
        );
        let s = stdout(&out);
        s.strip_suffix('\n').unwrap_or(&s).to_string()
    }

    /// `CREATE DATABASE "name"`; panics on failure.
    pub fn create_database(&self, name: &str) {
        let out = self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        assert!(
            out.status.success(),
            "CREATE DATABASE {name} failed:\n{}",
            describe(&out)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.pg_ctl_stop("immediate");
        }
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- PostgreSQL log tail ({}) ---\n{}",
                self.dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        remove_dir(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway under test
// ---------------------------------------------------------------------------------------------

/// Path of the gateway binary built by cargo for these tests.
pub fn gateway_exe() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Builds a gateway run: the policy text, secret files and environment, then [`start`].
///
/// [`start`]: GatewayBuilder::start
pub struct GatewayBuilder {
    policy: String,
    files: Vec<(String, Vec<u8>, u32)>,
    envs: Vec<(String, String)>,
    ready_timeout: Duration,
    wait_ready: bool,
}

impl GatewayBuilder {
    /// A file (mode 0600) in the gateway's directory, next to the policy: refer to it in the
    /// policy by its bare name (relative paths resolve against the policy file's directory).
    pub fn secret(mut self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .push((name.to_string(), contents.as_ref().to_vec(), 0o600));
        self
    }

    /// A file with an explicit mode (e.g. 0o644 to test that loose permissions are refused).
    pub fn file(mut self, name: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.files
            .push((name.to_string(), contents.as_ref().to_vec(), mode));
        self
    }

    /// An environment variable for the gateway process (e.g. for `password_env`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// How long to wait for `portcullis: ready` (default [`GATEWAY_READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    /// Don't wait for readiness (for tests that expect `serve` to fail): use
    /// [`Gateway::wait_exit`] afterwards.
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Writes the files and spawns `portcullis serve --config <dir>/portcullis.toml`, then waits
    /// (bounded) for `portcullis: ready` on stderr; panics with the log if it exits or times out.
    pub fn start(self) -> Gateway {
        let dir = unique_temp_dir("gw");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        let config = dir.join("portcullis.toml");
        write_file_mode(&config, self.policy.as_bytes(), 0o600);
        for (name, contents, mode) in &self.files {
            write_file_mode(&dir.join(name), contents, *mode);
        }
        let log_path = dir.join("gateway.log");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning log handle: {e}"));

        let mut cmd = Command::new(gateway_exe());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log2))
            .stderr(Stdio::from(log));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", gateway_exe()));
        let mut gw = Gateway {
            dir,
            config,
            log_path,
            child: Some(child),
            envs: self.envs,
        };
        if self.wait_ready {
            gw.wait_ready(self.ready_timeout);
        }
        gw
    }
}

/// A running `portcullis serve` in its own temp dir. Dropping it kills the process and removes
/// the dir (the log is printed if the test is panicking).
pub struct Gateway {
    /// The gateway's temp dir: holds the policy, secret files and the log.
    pub dir: PathBuf,
    /// The policy file passed as `--config`.
    pub config: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    envs: Vec<(String, String)>,
}

/// What [`Gateway::stop`] and [`Gateway::wait_exit`] return.
#[derive(Debug)]
pub struct Stopped {
    /// The exit status (`None` if the process could not be waited for).
    pub status: Option<ExitStatus>,
    /// Everything the gateway wrote to stdout and stderr.
    pub log: String,
}

impl Gateway {
    /// Starts a gateway with this policy and no extra files; see [`Gateway::builder`].
    pub fn start(policy_toml: &str) -> Gateway {
        Gateway::builder(policy_toml).start()
    }

    /// Starts a gateway with secret files (name, contents) written 0600 next to the policy.
    pub fn start_with_files(policy_toml: &str, files: &[(&str, &str)]) -> Gateway {
        let mut b = Gateway::builder(policy_toml);
        for (name, contents) in files {
            b = b.secret(name, contents);
        }
        b.start()
    }

    /// A builder for a gateway run with this policy text.
    pub fn builder(policy_toml: &str) -> GatewayBuilder {
        GatewayBuilder {
            policy: policy_toml.to_string(),
            files: Vec::new(),
            envs: Vec::new(),
            ready_timeout: GATEWAY_READY_TIMEOUT,
            wait_ready: true,
        }
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .log()
                .lines()
                .any(|l| l.trim_end() == "portcullis: ready")
            {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "gateway exited before ready ({status}); log:\n{}",
                        self.log()
                    );
                }
            }
            if Instant::now() >= deadline {
                panic!("gateway not ready after {timeout:?}; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything the gateway wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The address a target listens on, from its `portcullis: target NAME listening on ADDR`
    /// line (useful when the policy says port 0).
    pub fn listen_addr(&self, target: &str) -> Option<SocketAddr> {
        let prefix = format!("portcullis: target {target} listening on ");
        self.log()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|a| a.trim().parse().ok()))
    }

    /// Waits (bounded) until `needle` appears in the log; panics with the log otherwise.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() >= deadline {
                panic!("{needle:?} not in gateway log after {timeout:?}; log:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `portcullis <args> --config <policy>`; doesn't panic.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(gateway_exe());
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
    }

    /// `portcullis token issue --identity I --target T <extra>`: returns the `pct_...` secret;
    /// panics (with the gateway log) if the command fails.
    pub fn token(&self, identity: &str, target: &str, extra_args: &[&str]) -> String {
        let mut args = vec!["token", "issue", "--identity", identity, "--target", target];
        args.extend_from_slice(extra_args);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "token issue failed:\n{}\n--- gateway log ---\n{}",
            describe(&out),
            self.log()
        );
        let token = stdout(&out).trim().to_string();
        assert!(
            token.starts_with("pct_") && !token.contains(char::is_whitespace),
            "token issue printed something other than one pct_ token: {token:?}"
        );
        token
    }

    /// psql through the gateway: `psql -X -v ON_ERROR_STOP=1 "host=127.0.0.1 port=P
    /// dbname=TARGET user=IDENTITY sslmode=SSLMODE" -c SQL` with PGPASSWORD=token.
    ///
    /// `sslmode` is pasted after `sslmode=`, so it may carry more conninfo, e.g.
    /// `"verify-full sslrootcert=/path/ca.crt"`.
    pub fn psql_via(
        &self,
        port: u16,
        identity: &str,
        target: &str,
        token: &str,
        sslmode: &str,
        sql: &str,
    ) -> Output {
        self.psql_via_args(port, identity, target, token, sslmode, &["-c", sql], None)
    }

    /// [`Gateway::psql_via`] feeding `stdin` to psql: for `COPY ... FROM STDIN` pass the COPY
    /// statement as `sql`; with an empty `sql`, stdin is the script (`-f -`).
    #[allow(clippy::too_many_arguments)] // mirrors psql_via plus stdin
    pub fn psql_via_stdin(
        &self,
        port: u16,
        identity: &str,
        target: &str,
        token: &str,
        sslmode: &str,
        sql: &str,
        stdin: &[u8],
    ) -> Output {
        let args: &[&str] = if sql.is_empty() {
            &["-f", "-"]
        } else {
            &["-c", sql]
        };
        self.psql_via_args(port, identity, target, token, sslmode, args, Some(stdin))
    }

    /// psql through the gateway with any psql arguments (e.g. `["-At", "-c", "select 1"]`).
    #[allow(clippy::too_many_arguments)] // each is one conninfo part
    pub fn psql_via_args(
        &self,
        port: u16,
        identity: &str,
        target: &str,
        token: &str,
        sslmode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Output {
        let conninfo = gateway_conninfo(port, identity, target, sslmode);
        run_psql(&conninfo, Some(token), args, stdin)
    }

    /// Sends SIGHUP (policy reload).
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let out = run_with_timeout(
            Command::new("kill").arg(format!("-{sig}")).arg(&pid),
            None,
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "kill -{sig} {pid}:\n{}",
            describe(&out)
        );
    }

    /// Is the gateway process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits (bounded) for the process to exit on its own, killing it at the deadline.
    pub fn wait_exit(mut self, timeout: Duration) -> Stopped {
        let status = self.reap(timeout);
        Stopped {
            status,
            log: self.log(),
        }
    }

    /// SIGTERM, then up to 10 s for a clean exit, then SIGKILL. Returns the status and the log.
    pub fn stop(mut self) -> Stopped {
        if self.is_running() {
            self.signal("TERM");
        }
        let status = self.reap(Duration::from_secs(10));
        Stopped {
            status,
            log: self.log(),
        }
    }

    fn reap(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- gateway log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        remove_dir(&self.dir);
    }
}

/// The conninfo psql uses to reach a gateway listener (`sslmode` is pasted verbatim).
pub fn gateway_conninfo(port: u16, identity: &str, target: &str, sslmode: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} dbname={} user={} sslmode={sslmode}",
        cq(target),
        cq(identity)
    )
}

/// Quotes a libpq conninfo value when it needs it (spaces, quotes, backslashes, empty).
pub fn cq(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\', '\t', '\n', '=']) {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Waits (bounded) until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One row of `/proc/net/tcp`: ports, state, and the pending timer (`tr`: 2 is the keepalive
/// timer) with its expiry in USER_HZ ticks (1/100 s).
pub struct TcpRow {
    pub local_port: u16,
    pub remote_port: u16,
    pub established: bool,
    pub timer: u8,
    pub expires_ticks: u64,
}

/// The IPv4 TCP sockets `pid` holds open, read from `/proc/net/tcp` and `/proc/<pid>/fd`.
pub fn tcp_sockets_of(pid: u32) -> Vec<TcpRow> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the gateway's /proc fd list");
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let hex = |s: &str| u64::from_str_radix(s, 16).expect("a hex field in /proc/net/tcp");
    let port = |addr: &str| {
        let (_, p) = addr
            .rsplit_once(':')
            .expect("address:port in /proc/net/tcp");
        u16::try_from(hex(p)).expect("a port")
    };
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !inodes.contains(f[9]) {
                return None;
            }
            let (timer, expires) = f[5].split_once(':').expect("tr:tm->when");
            Some(TcpRow {
                local_port: port(f[1]),
                remote_port: port(f[2]),
                established: f[3] == "01",
                timer: u8::try_from(hex(timer)).expect("a timer kind"),
                expires_ticks: hex(expires),
            })
        })
        .collect()
}

/// Asserts that `pid` holds exactly one established connection on each side of a relayed
/// session (accepted on `listen_port`, dialled to `upstream_port`) and that both have a keepalive
/// timer due within `within_ticks` (1/100 s; the kernel's default would be two hours).
///
/// A socket shows one timer at a time: while data it sent is unacknowledged (a busy machine
/// can delay the ACK, even on loopback) it shows the retransmission timer (kind 1), and the
/// keepalive timer again once that data is acknowledged. So the table is read again, up to
/// 10 s, while a leg shows the retransmission timer; a socket without keepalive then shows no
/// timer (kind 0) and fails.
pub fn assert_keepalive_on_both_legs(
    pid: u32,
    listen_port: u16,
    upstream_port: u16,
    within_ticks: u64,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut rows = tcp_sockets_of(pid);
    while std::time::Instant::now() < deadline
        && rows.iter().any(|r| {
            r.established
                && r.timer == 1
                && (r.local_port == listen_port || r.remote_port == upstream_port)
        })
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
        rows = tcp_sockets_of(pid);
    }
    let client: Vec<&TcpRow> = rows
        .iter()
        .filter(|r| r.established && r.local_port == listen_port)
        .collect();
    let upstream: Vec<&TcpRow> = rows
        .iter()
        .filter(|r| r.established && r.remote_port == upstream_port)
        .collect();
    assert_eq!(client.len(), 1, "the client's connection to the gateway");
    assert_eq!(upstream.len(), 1, "the gateway's connection upstream");
    for (leg, row) in [("client", client[0]), ("upstream", upstream[0])] {
        assert_eq!(row.timer, 2, "{leg} leg: no keepalive timer pending");
        assert!(
            row.expires_ticks <= within_ticks,
            "{leg} leg: keepalive due in {} ticks, not within {within_ticks}",
            row.expires_ticks
        );
    }
}
