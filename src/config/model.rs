//! The validated policy: what the rest of the gateway reads. Built only by `config::load` /
//! `config::parse`, which check every reference and default every optional value, so code that holds
//! a `Policy` never has to re-validate it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::kinds::{Flags, StmtKind};

#[derive(Debug)]
pub struct Policy {
    pub gateway: Gateway,
    pub identities: Vec<Identity>,
    pub targets: Vec<Target>,
    pub rules: Vec<Rule>,
    /// `[[mask]]` rules, in file order: every rule that applies to a session is applied.
    pub masks: Vec<MaskRule>,
    /// The file this policy was read from (for messages).
    pub source: PathBuf,
}

impl Policy {
    pub fn identity(&self, name: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.name == name)
    }
    /// The identity, if it may act now: a service whose owner is no longer in the policy is
    /// disabled (its tokens are refused and its sessions closed).
    pub fn active_identity(&self, name: &str) -> Option<&Identity> {
        let identity = self.identity(name)?;
        match (&identity.kind, &identity.owner) {
            (IdentityKind::Service, Some(owner)) => self
                .identity(owner)
                .filter(|o| o.kind == IdentityKind::Human)
                .map(|_| identity),
            (IdentityKind::Service, None) => None,
            (IdentityKind::Human, _) => Some(identity),
        }
    }

    /// Services disabled because their owner left the policy (`portcullis check` warns).
    pub fn orphaned_services(&self) -> Vec<&Identity> {
        self.identities
            .iter()
            .filter(|i| i.kind == IdentityKind::Service && self.active_identity(&i.name).is_none())
            .collect()
    }

    /// The CA bundle for webhook servers, if the policy names one.
    pub fn webhooks_ca(&self) -> Option<PathBuf> {
        self.gateway.webhook_ca.clone()
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The mask rules that apply to `identity` on `target`.
    pub fn masks_for<'a>(
        &'a self,
        target: &'a str,
        identity: &'a Identity,
    ) -> impl Iterator<Item = &'a MaskRule> + 'a {
        self.masks
            .iter()
            .filter(move |m| m.applies(target, identity))
    }
}

#[derive(Debug, Clone)]
pub struct Gateway {
    /// Where the redb store, the control socket and the SSH recordings (`recordings/`) live.
    pub data_dir: PathBuf,
    /// Base URL used in approval links.
    pub public_url: Option<String>,
    /// Client connections accepted at once, over all targets (default 1024).
    pub max_connections: usize,
    /// Time a client has from TCP accept to finished authentication (default 10s).
    pub handshake_timeout: Duration,
    /// Time to connect and authenticate upstream (default 10s).
    pub upstream_timeout: Duration,
    /// Close client sessions idle this long (default: never).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive on client and upstream connections: first probe after this much silence
    /// (default 60s; `None` = off, written "0s"). See `net::tcp`.
    pub tcp_keepalive: Option<Duration>,
    /// Largest protocol message accepted from a client or an upstream server (default 64 MiB).
    pub max_message_size: usize,
    /// Longest token lifetime for anyone (default 24h); service identities are capped by `max_ttl`.
    pub max_token_ttl: Duration,
    /// Longest delay before an audit event of a read statement is durable (default 200ms). Events of
    /// statements that may write are durable before the statement is forwarded.
    pub audit_flush_interval: Duration,
    /// Audit events that may wait for the audit writer (default 65,536). When the queue is full,
    /// sessions wait for room (their upstream is not read) rather than drop an event.
    pub audit_queue: usize,
    /// Audit events older than this are deleted (default: `None`, every event is kept). Read at
    /// start, as `audit_queue`.
    pub audit_retention: Option<Duration>,
    /// The built-in HTTP endpoint (approvals page and API, /metrics, /healthz); `None` = off.
    pub http: Option<HttpConfig>,
    /// `https://` URLs that get a JSON POST for each new approval request.
    pub webhooks: Vec<String>,
    /// CA bundle (PEM) to verify webhook servers; default: the system bundle.
    pub webhook_ca: Option<PathBuf>,
    /// Microseconds a relay worker serving a single active session polls for its next message
    /// before it sleeps (default 0: never). Trades idle CPU for latency; see
    /// `proto::pg::proxy::worker`.
    pub relay_busy_poll_us: u32,
}

impl Gateway {
    /// The keys read only when the gateway starts (the store, the audit writer, the HTTP
    /// endpoint and the webhook sender are set up once) whose value differs in `new`: a reload
    /// keeps the running values for these, and says so.
    pub fn start_only_changes(&self, new: &Gateway) -> Vec<&'static str> {
        [
            ("data_dir", self.data_dir != new.data_dir),
            (
                "audit_flush_interval",
                self.audit_flush_interval != new.audit_flush_interval,
            ),
            ("audit_queue", self.audit_queue != new.audit_queue),
            (
                "audit_retention",
                self.audit_retention != new.audit_retention,
            ),
            ("http", self.http != new.http),
            ("webhooks", self.webhooks != new.webhooks),
            ("webhook_ca", self.webhook_ca != new.webhook_ca),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

/// `[gateway] http = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// TLS for the endpoint. Without it the endpoint is plain HTTP, which validation allows only on
    /// a loopback address unless `allow_plain_http` is true.
    pub tls: Option<TlsFiles>,
    pub allow_plain_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    Human,
    Service,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub kind: IdentityKind,
    /// For services: the human identity responsible. If the owner is removed from the policy, the
    /// service is refused too (checked at load time: a service whose owner is missing is an error).
    pub owner: Option<String>,
    pub roles: Vec<String>,
    /// For services: the longest token lifetime.
    pub max_ttl: Option<Duration>,
    /// OpenSSH public keys that authenticate this identity to SSH targets (validated; no key is
    /// listed by two identities).
    pub ssh_keys: Vec<crate::proto::ssh::keys::PublicKey>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Postgres,
    Ssh,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Postgres => "postgres",
            TargetKind::Ssh => "ssh",
        }
    }
}

/// `sftp = "allow" | "read-only" | "deny"` on an SSH target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftpAccess {
    Allow,
    /// Requests that could change files are answered with SSH_FX_PERMISSION_DENIED by the gateway.
    ReadOnly,
    Deny,
}

impl SftpAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            SftpAccess::Allow => "allow",
            SftpAccess::ReadOnly => "read-only",
            SftpAccess::Deny => "deny",
        }
    }
}

/// How the gateway logs in to an SSH target (the identity of the client never reaches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshUpstreamAuth {
    /// `key_file`: an unencrypted OpenSSH private key, mode 0600, read at connect time.
    KeyFile(PathBuf),
    /// `password_file` / `password_env`.
    Password(SecretSource),
}

/// The settings only an SSH target has (`kind = "ssh"`).
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub auth: SshUpstreamAuth,
    /// The upstream's `ssh-ed25519` host key, pinned: any other key is refused.
    pub host_key: [u8; 32],
    /// Interactive shells: allowed for everyone (`shell = "allow"`, default) or only for
    /// `shell_for` (`shell = "deny"`: exec only).
    pub shell: bool,
    pub shell_for: Vec<Who>,
    pub sftp: SftpAccess,
    /// Port, agent, X11 and streamlocal forwarding (default false).
    pub forwarding: bool,
    /// Keep the client's keystrokes in recordings (default false: they may hold passwords).
    pub record_input: bool,
    /// Cap on each recording's size in bytes, header included (default 1 GiB); a recording that
    /// reaches it ends the session.
    pub max_recording_size: u64,
}

impl SshTarget {
    /// Whether `identity` may open an interactive shell.
    pub fn shell_allowed(&self, identity: &Identity) -> bool {
        self.shell || self.shell_for.iter().any(|w| w.matches(identity))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Read from this file at connect time (so a rotated secret is picked up without a reload).
    File(PathBuf),
    /// Read from this environment variable of the gateway process.
    Env(String),
    /// No secret (trust auth upstream).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    Disable,
    /// TLS, without verifying the server's certificate.
    Require,
    /// TLS, certificate verified against `upstream_ca` (or the system roots) and the host name.
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    pub listen: SocketAddr,
    pub upstream_host: String,
    pub upstream_port: u16,
    pub database: String,
    pub user: String,
    pub secret: SecretSource,
    pub upstream_tls: UpstreamTls,
    /// CA bundle (PEM) for `verify-full`.
    pub upstream_ca: Option<PathBuf>,
    /// Client-side TLS. When set, clients may use TLS; when `require_tls` is also true they must.
    pub tls: Option<TlsFiles>,
    pub require_tls: bool,
    /// How clients prove they hold a token.
    pub client_auth: ClientAuth,
    /// Decision for statements no rule matches.
    pub default: Action,
    /// Every session to this target is read-only on the server.
    pub read_only: bool,
    /// Sessions of these identities/roles are read-only on the server.
    pub read_only_for: Vec<Who>,
    /// Upstream connections kept open after a client ends its session cleanly, reset with
    /// `DISCARD ALL`, for the next session to use (0: each session connects anew).
    pub upstream_pool: usize,
    /// How long a kept upstream connection waits for a session before it is closed
    /// (`upstream_pool_idle`).
    pub upstream_pool_idle: Duration,
    /// How long after it was opened an upstream connection is no longer kept
    /// (`upstream_pool_lifetime`).
    pub upstream_pool_lifetime: Duration,
    /// `kind = "ssh"`: the SSH settings (then `database` is empty and the TLS and `client_auth`
    /// fields keep their defaults, unused). `None` for PostgreSQL targets.
    pub ssh: Option<SshTarget>,
}

/// How a client presents its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// SCRAM-SHA-256 (default): the token never crosses the wire.
    Scram,
    /// Cleartext password message, for drivers without SCRAM; only over TLS (`require_tls`).
    Password,
}

/// What a rule decides. Ordered by restrictiveness: `Allow < Approve < Block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Allow,
    Approve,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Approve => "approve",
            Action::Block => "block",
        }
    }
}

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `"*"`
    Anyone,
    /// `"alice"`
    Identity(String),
    /// `"role:dba"`
    Role(String),
}

impl Who {
    pub fn matches(&self, identity: &Identity) -> bool {
        match self {
            Who::Anyone => true,
            Who::Identity(n) => *n == identity.name,
            Who::Role(r) => identity.has_role(r),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Target names; empty = every target.
    pub targets: Vec<String>,
    /// Who the rule applies to; never empty (validation requires `who`).
    pub who: Vec<Who>,
    /// Statement kinds; empty = every kind.
    pub sql: Vec<StmtKind>,
    /// Table globs (`public.*`, `*.users`, `audit_*`); empty = any table (or none).
    pub tables: Vec<String>,
    /// The rule matches only statements that carry one of these flags; empty = no flag condition.
    pub flags: Flags,
    /// The rule matches only statements whose text matches this regex (source kept for messages).
    pub pattern: Option<(String, regex_automata::meta::Regex)>,
    pub action: Action,
    /// Shown to the client when the rule blocks.
    pub message: Option<String>,
    /// For `approve`: who may approve (used by the approval broker).
    pub approvers: Vec<Who>,
    /// For `approve`: how long a request waits (default 10m).
    pub timeout: Duration,
    /// For `approve`: how many distinct approvers must say yes (1..=10, default 1).
    pub approvals: u32,
    /// SSH: regexes over each simple command's normalized form; empty = any command.
    pub commands: Vec<(String, regex_automata::meta::Regex)>,
    /// SSH: program basenames (`systemctl`); empty = any program.
    pub programs: Vec<String>,
    /// SSH: the rule matches only commands carrying one of these flags (the `flags` key accepts
    /// SQL and command flag names; each applies to its own kind of target).
    pub command_flags: crate::policy::command::CommandFlags,
    /// SSH: `flags = ["unknown"]`: the rule decides command lines the classifier did not
    /// understand (otherwise they are blocked).
    pub command_unknown: bool,
    /// For `approve`: after an approval, the same statement (same text) by the same identity on the
    /// same target runs without asking again for this long. `None` = every run asks.
    pub grant: Option<Duration>,
}

impl Rule {
    /// Whether the rule has conditions only SQL statements can meet (`sql`, `tables`, SQL flags).
    pub fn is_sql_only(&self) -> bool {
        !self.sql.is_empty()
            || !self.tables.is_empty()
            || self.flags != crate::policy::kinds::Flags::empty()
    }

    /// Whether the rule has conditions only SSH commands can meet.
    pub fn is_ssh_only(&self) -> bool {
        !self.commands.is_empty()
            || !self.programs.is_empty()
            || !self.command_flags.is_empty()
            || self.command_unknown
    }
}

/// `[[mask]]`: hide sensitive values in answers. Validated so that
/// `crate::mask::Masker::new(&detectors, &custom, strategy, key)` succeeds.
#[derive(Debug, Clone)]
pub struct MaskRule {
    /// Target names; empty = every target.
    pub targets: Vec<String>,
    /// Whose sessions are masked; never empty (validation requires `who`).
    pub who: Vec<Who>,
    /// Column globs (`*.email`, `users.ssn`, `*password*`, `public.users.ssn`), lower-cased:
    /// every value of a matching column is masked whole (`crate::mask::column_matches`).
    pub columns: Vec<String>,
    /// Built-in detector names run over every other value; `"all"` is expanded; no repeats.
    pub detectors: Vec<String>,
    /// Custom detectors: `(name, pattern)`.
    pub custom: Vec<(String, String)>,
    /// How hits and masked columns are replaced (`keep` is inside `Partial`; default `Redact`).
    pub strategy: crate::mask::Strategy,
}

impl MaskRule {
    pub fn applies(&self, target: &str, identity: &Identity) -> bool {
        (self.targets.is_empty() || self.targets.iter().any(|t| t == target))
            && self.who.iter().any(|w| w.matches(identity))
    }

    /// Whether the rule runs detectors over values (and not only masks columns).
    pub fn has_detectors(&self) -> bool {
        !self.detectors.is_empty() || !self.custom.is_empty()
    }
}
