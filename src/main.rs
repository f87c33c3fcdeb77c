//! The `portcullis` command line: serve, check, token, audit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use argh::FromArgs;

use portcullis::audit;
use portcullis::config::{self, Policy};
use portcullis::control::{self, Request, Response};
use portcullis::identity::tokens::Tokens;
use portcullis::server::{self, now_unix, ServeOptions};
use portcullis::store::Store;

#[derive(FromArgs)]
/// portcullis: an access gateway that holds the upstream secrets, decides on every statement,
/// and audits everything.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(ServeCmd),
    Check(CheckCmd),
    Token(TokenCmd),
    Audit(AuditCmd),
    Approvals(ApprovalsCmd),
    Mask(MaskCmd),
    SshHostKey(SshHostKeyCmd),
}

#[derive(FromArgs)]
/// Print the gateway's SSH host key (creating it if the gateway never started) and its SHA256
/// fingerprint, for clients' known_hosts.
#[argh(subcommand, name = "ssh-host-key")]
struct SshHostKeyCmd {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
}

#[derive(FromArgs)]
/// Run the gateway (foreground; SIGHUP reloads the policy, SIGTERM stops).
#[argh(subcommand, name = "serve")]
struct ServeCmd {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
    /// worker threads (default: number of CPUs)
    #[argh(option)]
    threads: Option<usize>,
}

#[derive(FromArgs)]
/// Validate a policy file without starting anything; prints file:line:col problems.
#[argh(subcommand, name = "check")]
struct CheckCmd {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
}

#[derive(FromArgs)]
/// Mint, list and revoke short-lived tokens.
#[argh(subcommand, name = "token")]
struct TokenCmd {
    #[argh(subcommand)]
    command: TokenSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum TokenSub {
    Issue(TokenIssue),
    List(TokenList),
    Revoke(TokenRevoke),
}

#[derive(FromArgs)]
/// Mint a token; prints only the token on stdout.
#[argh(subcommand, name = "issue")]
struct TokenIssue {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
    /// identity the token acts as
    #[argh(option)]
    identity: String,
    /// target the token opens (not for --scope approve)
    #[argh(option, default = "String::new()")]
    target: String,
    /// what the token is for: connect (to a target, default) or approve (the approvals API and page)
    #[argh(option, default = "String::from(\"connect\")")]
    scope: String,
    /// lifetime, e.g. 10m, 1h (default 10m)
    #[argh(option, default = "String::from(\"10m\")")]
    ttl: String,
    /// number of sessions it may open (default: unlimited within its lifetime)
    #[argh(option)]
    uses: Option<u32>,
    /// free text saying who or what asked for it (CI job URL, ticket), kept in the audit log
    #[argh(option, default = "String::new()")]
    origin: String,
}

#[derive(FromArgs)]
/// List tokens (never their secrets).
#[argh(subcommand, name = "list")]
struct TokenList {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
}

#[derive(FromArgs)]
/// Revoke a token by id; its open sessions end at once.
#[argh(subcommand, name = "revoke")]
struct TokenRevoke {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
    /// token id (tok_...)
    #[argh(positional)]
    id: String,
}

#[derive(FromArgs)]
/// Export or verify the audit log.
#[argh(subcommand, name = "audit")]
struct AuditCmd {
    #[argh(subcommand)]
    command: AuditSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum AuditSub {
    Export(AuditExport),
    Verify(AuditVerify),
}

#[derive(FromArgs)]
/// Write audit events as JSON Lines to stdout.
#[argh(subcommand, name = "export")]
struct AuditExport {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
    /// only events with a sequence number above this
    #[argh(option, default = "0")]
    since: u64,
}

#[derive(FromArgs)]
/// Check the audit log's hash chain (the gateway must be stopped).
#[argh(subcommand, name = "verify")]
struct AuditVerify {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
}

#[derive(FromArgs)]
/// List, show, approve and deny held statements through the gateway's HTTP API.
#[argh(subcommand, name = "approvals")]
struct ApprovalsCmd {
    /// base URL of the gateway's HTTP endpoint (default: from --config's [gateway] http)
    #[argh(option)]
    url: Option<String>,
    /// policy file, to find the endpoint when --url is not given
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// file holding an approver token (default: the PORTCULLIS_TOKEN environment variable)
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// CA bundle to verify an https endpoint (default: the system bundle)
    #[argh(option)]
    ca: Option<PathBuf>,
    #[argh(subcommand)]
    command: ApprovalsSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum ApprovalsSub {
    List(ApprovalsList),
    Show(ApprovalsShow),
    Approve(ApprovalsApprove),
    Deny(ApprovalsDeny),
}

#[derive(FromArgs)]
/// List requests (default: pending).
#[argh(subcommand, name = "list")]
struct ApprovalsList {
    /// pending, approved, denied, timed_out, abandoned or all
    #[argh(option, default = "String::from(\"pending\")")]
    state: String,
}

#[derive(FromArgs)]
/// Show one request with its full statement.
#[argh(subcommand, name = "show")]
struct ApprovalsShow {
    /// request id (apr_...)
    #[argh(positional)]
    id: String,
}

#[derive(FromArgs)]
/// Approve a request (you can't approve your own).
#[argh(subcommand, name = "approve")]
struct ApprovalsApprove {
    /// request id (apr_...)
    #[argh(positional)]
    id: String,
    /// optional note kept with the decision
    #[argh(option)]
    reason: Option<String>,
}

#[derive(FromArgs)]
/// Deny a request; the client gets the reason.
#[argh(subcommand, name = "deny")]
struct ApprovalsDeny {
    /// request id (apr_...)
    #[argh(positional)]
    id: String,
    /// why (shown to the requester)
    #[argh(option)]
    reason: String,
}

#[derive(FromArgs)]
/// Try the masking rules.
#[argh(subcommand, name = "mask")]
struct MaskCmd {
    #[argh(subcommand)]
    command: MaskSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum MaskSub {
    Test(MaskTest),
}

#[derive(FromArgs)]
/// Mask standard input with a target's [[mask]] rules and print it (what a client would see in
/// free-text values); the hash strategy uses a demo key here, not the gateway's.
#[argh(subcommand, name = "test")]
struct MaskTest {
    /// policy file
    #[argh(option, short = 'c')]
    config: PathBuf,
    /// target whose rules apply
    #[argh(option)]
    target: String,
    /// only the rules that apply to this identity (default: every rule of the target)
    #[argh(option)]
    identity: Option<String>,
}

fn mask_test(c: MaskTest) -> Result<(), String> {
    use std::io::Read;
    let policy = load(&c.config)?;
    if policy.target(&c.target).is_none() {
        return Err(format!(
            "no target {:?} in {}",
            c.target,
            c.config.display()
        ));
    }
    let identity = match &c.identity {
        Some(name) => Some(
            policy
                .identity(name)
                .ok_or_else(|| format!("no identity {name:?}"))?
                .clone(),
        ),
        None => None,
    };
    let mut maskers = Vec::new();
    for m in &policy.masks {
        let target_ok = m.targets.is_empty() || m.targets.contains(&c.target);
        let who_ok = identity
            .as_ref()
            .is_none_or(|i| m.who.iter().any(|w| w.matches(i)));
        if target_ok && who_ok {
            let masker =
                portcullis::mask::Masker::new(&m.detectors, &m.custom, m.strategy, [0u8; 32])
                    .map_err(|e| e.to_string())?;
            eprintln!(
                "portcullis: rule for {:?}: columns {:?}, detectors {:?}",
                m.who, m.columns, m.detectors
            );
            maskers.push(masker);
        }
    }
    if maskers.is_empty() {
        eprintln!("portcullis: no [[mask]] rule applies; output = input");
    }
    let mut input = Vec::new();
    std::io::stdin()
        .take(64 << 20)
        .read_to_end(&mut input)
        .map_err(|e| e.to_string())?;
    for m in &maskers {
        if let Some(masked) = m.mask_text(&input) {
            input = masked;
        }
    }
    std::io::stdout()
        .write_all(&input)
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Serve(c) => {
            let threads = c.threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            server::serve(ServeOptions {
                config_path: c.config,
                threads,
            })
        }
        Command::Check(c) => check(&c.config),
        Command::Token(t) => match t.command {
            TokenSub::Issue(c) => token_issue(c),
            TokenSub::List(c) => token_list(&c.config),
            TokenSub::Revoke(c) => token_revoke(&c.config, c.id),
        },
        Command::Approvals(a) => approvals(a),
        Command::Mask(m) => match m.command {
            MaskSub::Test(t) => mask_test(t),
        },
        Command::SshHostKey(c) => ssh_host_key(&c.config),
        Command::Audit(a) => match a.command {
            AuditSub::Export(c) => audit_export(&c.config, c.since),
            AuditSub::Verify(c) => audit_verify(&c.config),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `ssh-ed25519 AAAA...` on stdout (a known_hosts line needs the host in front: the
/// fingerprint and an example go to stderr).
fn ssh_host_key(path: &Path) -> Result<(), String> {
    let policy = load(path)?;
    let key = portcullis::ssh_gateway::host_key::HostKey::load_or_create(
        &policy.gateway.data_dir,
        &ring::rand::SystemRandom::new(),
    )?;
    println!("{}", key.openssh_line());
    println!("{}", key.fingerprint());
    if let Some(t) = policy.targets.iter().find(|t| t.ssh.is_some()) {
        eprintln!(
            "portcullis: known_hosts line for target {}: [{}]:{} {}",
            t.name,
            t.listen.ip(),
            t.listen.port(),
            key.openssh_line()
        );
    }
    Ok(())
}

fn load(path: &Path) -> Result<Policy, String> {
    config::load(path).map_err(|e| e.to_string())
}

fn check(path: &Path) -> Result<(), String> {
    let policy = load(path)?;
    for s in policy.orphaned_services() {
        eprintln!(
            "{}: warning: service identity {:?} is disabled: its owner {:?} is not in the policy",
            path.display(),
            s.name,
            s.owner.as_deref().unwrap_or("")
        );
    }
    eprintln!(
        "{}: ok ({} identities, {} targets, {} rules)",
        path.display(),
        policy.identities.len(),
        policy.targets.len(),
        policy.rules.len()
    );
    Ok(())
}

/// Send `req` to the running gateway, or, when none runs, carry it out on the store directly.
fn execute(path: &Path, req: Request) -> Result<Response, String> {
    let policy = load(path)?;
    let data_dir = policy.gateway.data_dir.clone();
    match control::request(&data_dir, &req) {
        Ok(Some(resp)) => return Ok(resp),
        Ok(None) => {}
        Err(e) => return Err(format!("control socket in {}: {e}", data_dir.display())),
    }
    let store = Store::open(&data_dir).map_err(|e| e.to_string())?;
    let tokens = Tokens::new(store.clone()).map_err(|e| e.to_string())?;
    let (audit, writer) = audit::start(store.clone(), policy.gateway.audit_flush_interval)
        .map_err(|e| e.to_string())?;
    let resp = control::execute(&policy, &tokens, &audit, req, now_unix());
    drop(audit);
    writer.shutdown();
    Ok(resp)
}

fn fail_on_error(resp: Response) -> Result<Response, String> {
    match resp {
        Response::Error(e) => Err(e),
        other => Ok(other),
    }
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    config::parse_duration(s)
        .map(|d| d.as_secs())
        .ok_or_else(|| format!("--ttl {s:?}: not a duration (examples: 90s, 10m, 1h)"))
}

fn token_issue(c: TokenIssue) -> Result<(), String> {
    let ttl_secs = parse_ttl(&c.ttl)?;
    let req = Request::TokenIssue {
        identity: c.identity.clone(),
        target: c.target.clone(),
        scope: c.scope.clone(),
        ttl_secs,
        uses: c.uses,
        origin: c.origin,
    };
    match fail_on_error(execute(&c.config, req)?)? {
        Response::Issued(t) => {
            println!("{}", t.secret);
            let what = if c.scope == "connect" {
                format!("on target {}", c.target)
            } else {
                format!("with scope {}", c.scope)
            };
            eprintln!(
                "portcullis: issued {} for identity {} {what}, valid {}s{}",
                t.id,
                c.identity,
                ttl_secs,
                c.uses.map(|u| format!(", {u} use(s)")).unwrap_or_default()
            );
            Ok(())
        }
        _ => Err("unexpected answer from the gateway".into()),
    }
}

fn token_list(path: &Path) -> Result<(), String> {
    match fail_on_error(execute(path, Request::TokenList)?)? {
        Response::Tokens(list) => {
            let now = now_unix();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<18} {:<16} {:<16} {:<10} {:>8} {:>6}  origin",
                "id", "identity", "target", "state", "expires", "uses"
            );
            for t in list {
                let state = if t.revoked {
                    "revoked"
                } else if t.expires_at <= now {
                    "expired"
                } else if t.uses_left == Some(0) {
                    "used"
                } else {
                    "live"
                };
                let left = t.expires_at.saturating_sub(now);
                let uses = t
                    .uses_left
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    out,
                    "{:<18} {:<16} {:<16} {:<10} {:>7}s {:>6}  {}",
                    t.id, t.identity, t.target, state, left, uses, t.origin
                );
            }
            Ok(())
        }
        _ => Err("unexpected answer from the gateway".into()),
    }
}

fn token_revoke(path: &Path, id: String) -> Result<(), String> {
    match fail_on_error(execute(path, Request::TokenRevoke { id: id.clone() })?)? {
        Response::Revoked(Some(_)) => {
            eprintln!("portcullis: revoked {id}");
            Ok(())
        }
        Response::Revoked(None) => Err(format!("no token {id}")),
        _ => Err("unexpected answer from the gateway".into()),
    }
}

fn audit_export(path: &Path, since: u64) -> Result<(), String> {
    // The gateway answers in bounded pages; ask again from the last sequence number until empty.
    let mut since = since;
    let mut out = std::io::stdout().lock();
    loop {
        let lines = match fail_on_error(execute(path, Request::AuditExport { since })?)? {
            Response::Lines(lines) => lines,
            _ => return Err("unexpected answer from the gateway".into()),
        };
        let Some(last) = lines.last().and_then(|l| audit::line_seq(l)) else {
            return Ok(());
        };
        for l in &lines {
            writeln!(out, "{l}").map_err(|e| e.to_string())?;
        }
        if last <= since {
            return Ok(());
        }
        since = last;
    }
}

fn audit_verify(path: &Path) -> Result<(), String> {
    let policy = load(path)?;
    let store = Store::open(&policy.gateway.data_dir).map_err(|e| e.to_string())?;
    let report = audit::verify(&store).map_err(|e| e.to_string())?;
    println!("{report}");
    let _: Arc<Store> = store;
    Ok(())
}

/// `application/x-www-form-urlencoded` value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn approvals(a: ApprovalsCmd) -> Result<(), String> {
    use portcullis::http::client;
    let base = match (&a.url, &a.config) {
        (Some(u), _) => u.clone(),
        (None, Some(path)) => {
            let policy = load(path)?;
            let http = policy.gateway.http.as_ref().ok_or_else(|| {
                format!("{}: no [gateway] http endpoint configured", path.display())
            })?;
            let scheme = if http.tls.is_some() { "https" } else { "http" };
            let host = if http.listen.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                http.listen.ip().to_string()
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            format!("{scheme}://{host}:{}", http.listen.port())
        }
        (None, None) => return Err("say where the gateway is: --url URL or --config FILE".into()),
    };
    let token = match &a.token_file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
        None => std::env::var("PORTCULLIS_TOKEN").map_err(|_| {
            "no approver token: use --token-file FILE or set PORTCULLIS_TOKEN".to_string()
        })?,
    };
    let token = token.trim().to_string();
    let base = base.trim_end_matches('/').to_string();
    let (method, path, body) = match &a.command {
        ApprovalsSub::List(l) => (
            "GET",
            format!("/api/requests?state={}&format=text", form_encode(&l.state)),
            String::new(),
        ),
        ApprovalsSub::Show(s) => (
            "GET",
            format!("/api/requests/{}?format=text", form_encode(&s.id)),
            String::new(),
        ),
        ApprovalsSub::Approve(x) => (
            "POST",
            format!("/api/requests/{}/approve?format=text", form_encode(&x.id)),
            x.reason
                .as_deref()
                .map(|r| format!("reason={}", form_encode(r)))
                .unwrap_or_default(),
        ),
        ApprovalsSub::Deny(x) => (
            "POST",
            format!("/api/requests/{}/deny?format=text", form_encode(&x.id)),
            format!("reason={}", form_encode(&x.reason)),
        ),
    };
    let url = client::parse_url(&format!("{base}{path}"))?;
    let tls = match &a.ca {
        Some(ca) => portcullis::net::tls::client_config(
            portcullis::config::UpstreamTls::VerifyFull,
            Some(ca),
        )
        .map_err(|e| e.to_string())?,
        None => None,
    };
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (status, answer) = smol::block_on(client::request(
        method,
        &url,
        &headers,
        body.as_bytes(),
        tls,
        std::time::Duration::from_secs(30),
    ))?;
    let text = String::from_utf8_lossy(&answer);
    if status == 200 {
        print!("{text}");
        Ok(())
    } else {
        Err(format!("{status}: {}", text.trim()))
    }
}
