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
    /// target the token opens
    #[argh(option)]
    target: String,
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
        scope: "connect".into(),
        ttl_secs,
        uses: c.uses,
        origin: c.origin,
    };
    match fail_on_error(execute(&c.config, req)?)? {
        Response::Issued(t) => {
            println!("{}", t.secret);
            eprintln!(
                "portcullis: issued {} for identity {} on target {}, valid {}s{}",
                t.id,
                c.identity,
                c.target,
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
