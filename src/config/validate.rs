//! Raw policy (`raw.rs`) -> validated [`Policy`] (`model.rs`). Every problem is recorded with the
//! position of the value (or of the table, for a missing key) and validation goes on, so one run
//! shows the administrator everything that needs fixing.

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::duration::{parse_duration, parse_size};
use super::model::*;
use super::raw::*;
use super::{LineIndex, Problem, MAX_PROBLEMS};
use crate::policy::kinds::{Flags, StmtKind};

#[path = "validate_ssh.rs"]
mod ssh;

/// PostgreSQL truncates identifiers (user and database names) to 63 bytes; identity and target
/// names are used as those.
const MAX_NAME_LEN: usize = 63;
/// Largest `max_message_size`: PostgreSQL itself refuses messages of 1 GiB and more.
const MAX_MESSAGE_SIZE: u64 = 1 << 30;
const MAX_CONNECTIONS: i64 = 1_000_000;
/// Largest `audit_queue`: a queued statement event holds its text (up to 256 KiB in the worst
/// case), so the bound is also the audit's memory bound.
const MAX_AUDIT_QUEUE: i64 = 1 << 20;
/// Largest `relay_busy_poll_us`: past a millisecond a poll is no longer about wake-up latency,
/// and it would hold up the worker's timers.
const MAX_RELAY_BUSY_POLL_US: u32 = 1000;
/// A rule name the engine uses for read-only refusals.
const RESERVED_RULE_NAME: &str = "read_only";
/// Most idle upstream connections a target may keep (`upstream_pool`).
const MAX_UPSTREAM_POOL: usize = 1024;
/// How long a kept upstream connection waits for a session by default (`upstream_pool_idle`).
const DEFAULT_UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(60);
/// How long after it was opened an upstream connection is no longer kept, by default
/// (`upstream_pool_lifetime`; pgbouncer's `server_lifetime` is the same): a long-lived backend
/// grows its catalog caches, and a new one picks up server-side changes to the role.
const DEFAULT_UPSTREAM_POOL_LIFETIME: Duration = Duration::from_secs(3600);
/// The most either may be: a day.
const MAX_UPSTREAM_POOL_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A pool duration key (`upstream_pool_idle`, `upstream_pool_lifetime`): longer than zero, at
/// most a day.
fn pool_duration(
    cx: &mut Ctx<'_>,
    v: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
) -> Duration {
    let Some(v) = v else {
        return default;
    };
    match cx.duration(v, key, false) {
        Some(d) if d > MAX_UPSTREAM_POOL_DURATION => {
            cx.err(v.span(), format!("`{key}` must be at most \"24h\""));
            default
        }
        Some(d) => d,
        None => default,
    }
}

const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
const DEFAULT_MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_AUDIT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Shortest `audit_retention`: "1s" for "1d" must not wipe the audit log.
const MIN_AUDIT_RETENTION: Duration = Duration::from_secs(3600);
/// Linux takes at most 32767 seconds for TCP_KEEPIDLE.
const MAX_TCP_KEEPALIVE: Duration = Duration::from_secs(32767);
const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(600);
/// Most approvals a rule may require.
const MAX_APPROVALS: i64 = 10;
/// Most webhook URLs.
const MAX_WEBHOOKS: usize = 16;
/// Longest webhook URL.
const MAX_URL_LEN: usize = 2048;

struct Ctx<'a> {
    text: &'a str,
    lines: &'a LineIndex,
    base_dir: PathBuf,
    problems: Vec<Problem>,
    omitted: usize,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.omitted += 1;
            return;
        }
        let (line, col) = self.lines.position(self.text, span.start);
        self.problems.push(Problem {
            line,
            col,
            message: message.into(),
        });
    }

    /// The value of a required key, or a problem at `table` saying it is missing.
    fn required<'v, T>(
        &mut self,
        v: &'v Option<Spanned<T>>,
        table: Range<usize>,
        key: &str,
        what: &str,
        example: &str,
    ) -> Option<&'v Spanned<T>> {
        if v.is_none() {
            self.err(
                table,
                format!("{what} is missing `{key}`; add e.g. `{key} = {example}`"),
            );
        }
        v.as_ref()
    }

    fn duration(&mut self, v: &Spanned<String>, key: &str, allow_zero: bool) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Some(d) if d.is_zero() && !allow_zero => {
                self.err(v.span(), format!("`{key}` must be longer than zero"));
                None
            }
            Some(d) => Some(d),
            None => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}` = {:?} is not a duration; write e.g. \"500ms\", \"10s\", \"15m\", \"24h\", \"7d\" or \"1h30m\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn opt_duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        allow_zero: bool,
    ) -> Duration {
        v.as_ref()
            .and_then(|v| self.duration(v, key, allow_zero))
            .unwrap_or(default)
    }

    /// `true` if `v` is a valid name; records a problem otherwise.
    fn name(&mut self, v: &Spanned<String>, what: &str) -> bool {
        let s = v.get_ref();
        if s.is_empty() {
            self.err(v.span(), format!("{what} is empty; give it a name"));
            false
        } else if !is_name(s) {
            self.err(
                v.span(),
                format!("{what} {s:?} has characters other than letters, digits, '_', '.' and '-'; rename it"),
            );
            false
        } else if s.len() > MAX_NAME_LEN {
            self.err(
                v.span(),
                format!("{what} {s:?} is longer than {MAX_NAME_LEN} bytes (PostgreSQL's limit for names); shorten it"),
            );
            false
        } else {
            true
        }
    }

    fn path(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Resolves `v` and checks the file exists, is a regular file and can be opened for reading.
    fn readable_file(&mut self, v: &Spanned<String>, key: &str) -> Option<PathBuf> {
        if v.get_ref().is_empty() {
            self.err(
                v.span(),
                format!("`{key}` is empty; give the path of a file"),
            );
            return None;
        }
        let path = self.path(v.get_ref());
        match std::fs::metadata(&path) {
            Err(e) => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}`: cannot use {}: {e}; fix the path (relative paths are relative to the policy file's directory)",
                        path.display()
                    ),
                );
                None
            }
            Ok(m) if !m.is_file() => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}`: {} is not a regular file; give the path of a file",
                        path.display()
                    ),
                );
                None
            }
            Ok(_) => match std::fs::File::open(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    self.err(
                        v.span(),
                        format!(
                            "`{key}`: cannot read {}: {e}; make it readable by the user the gateway runs as",
                            path.display()
                        ),
                    );
                    None
                }
            },
        }
    }

    /// Like [`Ctx::readable_file`], and the file must not be accessible by group or others.
    fn secret_file(&mut self, v: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let path = self.readable_file(v, key)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(&path) {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    self.err(
                        v.span(),
                        format!(
                            "`{key}`: {} is accessible by group or others (mode {mode:03o}); run `chmod 600 {}`",
                            path.display(),
                            path.display()
                        ),
                    );
                    return None;
                }
            }
        }
        Some(path)
    }

    /// `tls = { cert, key }` whose files exist and are readable; `key` names the table in messages
    /// (`"http.tls"`).
    fn tls_files(&mut self, t: &Spanned<RawTls>, key: &str) -> Option<TlsFiles> {
        let tr = t.get_ref();
        let what = format!("`{key}`");
        let cert = self.required(
            &tr.cert,
            t.span(),
            "cert",
            &what,
            "\"/etc/portcullis/tls/cert.pem\"",
        );
        let cert = cert.and_then(|c| self.readable_file(c, &format!("{key}.cert")));
        let key_file = self.required(
            &tr.key,
            t.span(),
            "key",
            &what,
            "\"/etc/portcullis/tls/key.pem\"",
        );
        let key_file = key_file.and_then(|k| self.readable_file(k, &format!("{key}.key")));
        Some(TlsFiles {
            cert: cert?,
            key: key_file?,
        })
    }

    /// One entry of `who`, `approvers` or `read_only_for`.
    fn who(&mut self, v: &Spanned<String>, identities: &HashSet<&str>, key: &str) -> Option<Who> {
        let s = v.get_ref().as_str();
        if s == "*" {
            return Some(Who::Anyone);
        }
        if let Some(role) = s.strip_prefix("role:") {
            if is_name(role) {
                return Some(Who::Role(role.to_owned()));
            }
            self.err(
                v.span(),
                format!("`{key}` entry {s:?}: a role name is letters, digits, '_', '.' and '-'; write \"role:NAME\""),
            );
            return None;
        }
        if identities.contains(s) {
            return Some(Who::Identity(s.to_owned()));
        }
        self.err(
            v.span(),
            format!("`{key}` entry {s:?} is not a defined identity; use the name of an [[identity]], \"role:NAME\" or \"*\""),
        );
        None
    }

    fn who_list(
        &mut self,
        list: &[Spanned<String>],
        identities: &HashSet<&str>,
        key: &str,
    ) -> Vec<Who> {
        list.iter()
            .filter_map(|v| self.who(v, identities, key))
            .collect()
    }

    fn action(&mut self, v: &Spanned<String>, key: &str) -> Option<Action> {
        match v.get_ref().as_str() {
            "allow" => Some(Action::Allow),
            "approve" => Some(Action::Approve),
            "block" => Some(Action::Block),
            other => {
                self.err(
                    v.span(),
                    format!("`{key}` = {other:?} is not an action; use \"allow\", \"approve\" or \"block\""),
                );
                None
            }
        }
    }

    /// Records a problem for each name seen before (in `seen`).
    fn unique<'v>(&mut self, seen: &mut HashSet<&'v str>, v: &'v Spanned<String>, what: &str) {
        if !seen.insert(v.get_ref().as_str()) {
            self.err(
                v.span(),
                format!(
                    "{what} {:?} is defined twice; names must be unique",
                    v.get_ref()
                ),
            );
        }
    }
}

fn raw_name(v: &Option<Spanned<String>>) -> Option<&str> {
    v.as_ref().map(|n| n.get_ref().as_str())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Validates `raw`; on failure returns the problems (at most [`MAX_PROBLEMS`]) and how many more
/// there were.
pub(crate) fn validate(
    raw: RawPolicy,
    text: &str,
    lines: &LineIndex,
    source: &Path,
) -> Result<Policy, (Vec<Problem>, usize)> {
    let base_dir = source.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let mut cx = Ctx {
        text,
        lines,
        base_dir,
        problems: Vec::new(),
        omitted: 0,
    };

    let gateway = gateway(&mut cx, raw.gateway.as_ref());
    let identities = identities(&mut cx, &raw.identity, &gateway);
    // References are checked against every name written, valid or not, so one bad identity or
    // target is reported once, not again at each rule that names it.
    let identity_names: HashSet<&str> = raw
        .identity
        .iter()
        .filter_map(|i| raw_name(&i.get_ref().name))
        .collect();
    let targets = targets(&mut cx, &raw.target, &identity_names);
    let target_names: HashSet<&str> = raw
        .target
        .iter()
        .filter_map(|t| raw_name(&t.get_ref().name))
        .collect();
    let rules = rules(&mut cx, &raw.rule, &identity_names, &target_names);
    let masks = masks(&mut cx, &raw.mask, &identity_names, &target_names);
    if let (Some(h), Some(listen)) = (
        &gateway.http,
        raw.gateway
            .as_ref()
            .and_then(|g| g.get_ref().http.as_ref())
            .and_then(|h| h.get_ref().listen.as_ref()),
    ) {
        if let Some(t) = targets.iter().find(|t| listen_conflict(t.listen, h.listen)) {
            cx.err(
                listen.span(),
                format!(
                    "http listen address {} is already used by target {:?}; give the HTTP endpoint its own port",
                    h.listen, t.name
                ),
            );
        }
    }

    if cx.problems.is_empty() {
        Ok(Policy {
            gateway,
            identities,
            targets,
            rules,
            masks,
            source: source.to_path_buf(),
        })
    } else {
        Err((cx.problems, cx.omitted))
    }
}

fn gateway(cx: &mut Ctx<'_>, raw: Option<&Spanned<RawGateway>>) -> Gateway {
    let mut g = Gateway {
        data_dir: PathBuf::new(),
        public_url: None,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        idle_timeout: None,
        tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        max_token_ttl: DEFAULT_MAX_TOKEN_TTL,
        audit_flush_interval: DEFAULT_AUDIT_FLUSH_INTERVAL,
        audit_queue: crate::audit::QUEUE_CAPACITY,
        audit_retention: None,
        http: None,
        webhooks: Vec::new(),
        webhook_ca: None,
        relay_busy_poll_us: 0,
    };
    let Some(raw) = raw else {
        cx.err(
            0..0,
            "the [gateway] table is missing; add it with at least `data_dir = \"/var/lib/portcullis\"`",
        );
        return g;
    };
    let table = raw.span();
    let r = raw.get_ref();

    if let Some(v) = cx.required(
        &r.data_dir,
        table,
        "data_dir",
        "[gateway]",
        "\"/var/lib/portcullis\"",
    ) {
        if v.get_ref().is_empty() {
            cx.err(
                v.span(),
                "`data_dir` is empty; give the directory for the gateway's state",
            );
        } else {
            g.data_dir = cx.path(v.get_ref());
        }
    }
    if let Some(v) = &r.public_url {
        let s = v.get_ref();
        if s.starts_with("https://") || s.starts_with("http://") {
            g.public_url = Some(s.trim_end_matches('/').to_owned());
        } else {
            cx.err(
                v.span(),
                format!("`public_url` = {s:?} is not an http(s) URL; write e.g. \"https://bastion.example.com:8443\""),
            );
        }
    }
    if let Some(v) = &r.max_connections {
        match usize::try_from(*v.get_ref()) {
            Ok(n) if (1..=MAX_CONNECTIONS).contains(v.get_ref()) => g.max_connections = n,
            _ => cx.err(
                v.span(),
                format!("`max_connections` must be between 1 and {MAX_CONNECTIONS}"),
            ),
        }
    }
    g.handshake_timeout = cx.opt_duration(
        &r.handshake_timeout,
        "handshake_timeout",
        DEFAULT_HANDSHAKE_TIMEOUT,
        false,
    );
    g.upstream_timeout = cx.opt_duration(
        &r.upstream_timeout,
        "upstream_timeout",
        DEFAULT_UPSTREAM_TIMEOUT,
        false,
    );
    g.idle_timeout = r
        .idle_timeout
        .as_ref()
        .and_then(|v| cx.duration(v, "idle_timeout", false));
    if let Some(v) = &r.tcp_keepalive {
        match cx.duration(v, "tcp_keepalive", true) {
            Some(d) if d > MAX_TCP_KEEPALIVE => cx.err(
                v.span(),
                "`tcp_keepalive` must be at most \"32767s\" (about 9h, the kernel's limit); \"0s\" turns keepalive off",
            ),
            Some(d) if d.is_zero() => g.tcp_keepalive = None,
            Some(d) => g.tcp_keepalive = Some(d),
            None => {}
        }
    }
    g.max_token_ttl = cx.opt_duration(
        &r.max_token_ttl,
        "max_token_ttl",
        DEFAULT_MAX_TOKEN_TTL,
        false,
    );
    g.audit_flush_interval = cx.opt_duration(
        &r.audit_flush_interval,
        "audit_flush_interval",
        DEFAULT_AUDIT_FLUSH_INTERVAL,
        true,
    );
    if let Some(v) = &r.audit_queue {
        match usize::try_from(*v.get_ref()) {
            Ok(n) if (1..=MAX_AUDIT_QUEUE).contains(v.get_ref()) => g.audit_queue = n,
            _ => cx.err(
                v.span(),
                format!("`audit_queue` must be a number of events between 1 and {MAX_AUDIT_QUEUE}"),
            ),
        }
    }
    if let Some(v) = &r.relay_busy_poll_us {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if n <= MAX_RELAY_BUSY_POLL_US => g.relay_busy_poll_us = n,
            _ => cx.err(
                v.span(),
                format!(
                    "`relay_busy_poll_us` must be a number of microseconds between 0 (off) and {MAX_RELAY_BUSY_POLL_US}"
                ),
            ),
        }
    }
    if let Some(v) = &r.audit_retention {
        match cx.duration(v, "audit_retention", false) {
            Some(d) if d < MIN_AUDIT_RETENTION => cx.err(
                v.span(),
                "`audit_retention` must be at least 1h (a shorter one is more likely a typo than a policy); leave it out to keep every event",
            ),
            Some(d) => g.audit_retention = Some(d),
            None => {}
        }
    }
    if let Some(v) = &r.max_message_size {
        let size = match v.get_ref() {
            RawSize::Bytes(n) => u64::try_from(*n).ok(),
            RawSize::Text(s) => parse_size(s),
        };
        match size.filter(|n| (1..=MAX_MESSAGE_SIZE).contains(n)) {
            Some(n) => g.max_message_size = usize::try_from(n).unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
            None => cx.err(
                v.span(),
                "`max_message_size` must be a size between 1 byte and 1GiB; write e.g. \"64MiB\", \"512KiB\" or a number of bytes",
            ),
        }
    }
    g.http = r.http.as_ref().and_then(|h| http(cx, h));
    g.webhook_ca = r
        .webhook_ca
        .as_ref()
        .and_then(|v| cx.readable_file(v, "webhook_ca"));
    if let Some(list) = &r.webhooks {
        if list.get_ref().len() > MAX_WEBHOOKS {
            cx.err(
                list.span(),
                format!(
                    "`webhooks` lists more than {MAX_WEBHOOKS} URLs; keep at most {MAX_WEBHOOKS}"
                ),
            );
        }
        for v in list.get_ref() {
            match check_webhook_url(v.get_ref()) {
                Ok(()) => g.webhooks.push(v.get_ref().clone()),
                Err(why) => cx.err(
                    v.span(),
                    format!(
                        "webhook {:?} {why}; write e.g. \"https://hooks.example.com/services/T0/B0/XXXX\"",
                        v.get_ref()
                    ),
                ),
            }
        }
    }
    g
}

/// `[gateway] http = { listen, tls, allow_plain_http }`.
fn http(cx: &mut Ctx<'_>, raw: &Spanned<RawHttp>) -> Option<HttpConfig> {
    let r = raw.get_ref();
    let tls = r.tls.as_ref().and_then(|t| cx.tls_files(t, "http.tls"));
    let allow_plain_http = r.allow_plain_http.as_ref().is_some_and(|v| *v.get_ref());
    let v = cx.required(
        &r.listen,
        raw.span(),
        "listen",
        "`http`",
        "\"127.0.0.1:8443\"",
    )?;
    let listen = match v.get_ref().parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            cx.err(
                v.span(),
                format!(
                    "http listen = {:?} is not an IP address and port; write e.g. \"127.0.0.1:8443\" or \"[::1]:8443\"",
                    v.get_ref()
                ),
            );
            return None;
        }
    };
    // Approvers' tokens and session cookies cross this endpoint: in clear text only where no one
    // else can listen, unless the administrator says otherwise (e.g. TLS ends in a proxy in front).
    if r.tls.is_none() && !allow_plain_http && !listen.ip().is_loopback() {
        cx.err(
            v.span(),
            format!(
                "http listen {listen} is not a loopback address, and plain HTTP would send approvers' tokens in clear text: add `tls = {{ cert = \"...\", key = \"...\" }}`, listen on 127.0.0.1, or set `allow_plain_http = true` (e.g. behind a TLS-terminating proxy)"
            ),
        );
        return None;
    }
    let tls = match (&r.tls, tls) {
        (Some(_), None) => return None, // already reported
        (_, tls) => tls,
    };
    Some(HttpConfig {
        listen,
        tls,
        allow_plain_http,
    })
}

/// A webhook URL: `https://host[:port]/path`, no credentials, no spaces or control characters.
fn check_webhook_url(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_URL_LEN {
        return Err("is longer than 2048 bytes");
    }
    let rest = s
        .strip_prefix("https://")
        .ok_or("is not an https:// URL (webhooks are sent over TLS only)")?;
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("has spaces, control or non-ASCII characters");
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !(path.is_empty() || path.starts_with('/')) {
        return Err("has no path after the host; add \"/\"");
    }
    if authority.contains('@') {
        return Err("has credentials before the host; put secrets in the path, as Slack does");
    }
    if authority.is_empty() {
        return Err("has no host");
    }
    let has_port = if authority.starts_with('[') {
        !authority.ends_with(']')
    } else {
        authority.contains(':')
    };
    if has_port {
        parse_host_port(authority).map_err(|_| "has a bad host or port")?;
    } else {
        parse_host_port(&format!("{authority}:443")).map_err(|_| "has a bad host")?;
    }
    Ok(())
}

fn identities(cx: &mut Ctx<'_>, raw: &[Spanned<RawIdentity>], gateway: &Gateway) -> Vec<Identity> {
    let mut seen = HashSet::new();
    // Humans, for the owner check (an owner defined later in the file is fine).
    let humans: HashSet<&str> = raw
        .iter()
        .filter(|i| {
            i.get_ref()
                .kind
                .as_ref()
                .is_none_or(|k| k.get_ref() == "human")
        })
        .filter_map(|i| i.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut key_owners = std::collections::HashMap::new();
    for spanned in raw {
        let table = spanned.span();
        let r = spanned.get_ref();
        let Some(name) = cx.required(&r.name, table.clone(), "name", "[[identity]]", "\"alice\"")
        else {
            continue;
        };
        if !cx.name(name, "identity name") {
            continue;
        }
        cx.unique(&mut seen, name, "identity");
        let kind = match r.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            None | Some((_, "human")) => IdentityKind::Human,
            Some((_, "service")) => IdentityKind::Service,
            Some((k, other)) => {
                cx.err(
                    k.span(),
                    format!("identity kind {other:?} is unknown; use \"human\" or \"service\""),
                );
                IdentityKind::Human
            }
        };
        let mut roles = Vec::with_capacity(r.roles.len());
        for role in &r.roles {
            if is_name(role.get_ref()) {
                roles.push(role.get_ref().clone());
            } else {
                cx.err(
                    role.span(),
                    format!(
                        "role {:?} has characters other than letters, digits, '_', '.' and '-'; write the bare role name (rules refer to it as \"role:NAME\")",
                        role.get_ref()
                    ),
                );
            }
        }
        let max_ttl = r
            .max_ttl
            .as_ref()
            .and_then(|v| cx.duration(v, "max_ttl", false).map(|d| (v, d)));
        if let Some((v, d)) = max_ttl {
            if d > gateway.max_token_ttl {
                cx.err(
                    v.span(),
                    "`max_ttl` is longer than the gateway's `max_token_ttl`; shorten it or raise `max_token_ttl`",
                );
            }
        }
        let owner = match (kind, &r.owner) {
            (IdentityKind::Human, Some(o)) => {
                cx.err(
                    o.span(),
                    "a human identity has no `owner`; remove it, or set `kind = \"service\"`",
                );
                None
            }
            (IdentityKind::Human, None) => None,
            (IdentityKind::Service, None) => {
                cx.err(
                    table.clone(),
                    format!(
                        "service identity {:?} needs an `owner`: the human responsible for it; add `owner = \"NAME\"`",
                        name.get_ref()
                    ),
                );
                None
            }
            (IdentityKind::Service, Some(o)) => {
                // An owner that is not in the file at all has left: the service stays in the
                // policy but is disabled (Policy::active_identity), so removing a person is a
                // valid reload that takes effect at once. An owner that is another kind of
                // identity is a mistake.
                let defined = raw
                    .iter()
                    .any(|i| i.get_ref().name.as_ref().map(|n| n.get_ref()) == Some(o.get_ref()));
                if humans.contains(o.get_ref().as_str()) || !defined {
                    Some(o.get_ref().clone())
                } else {
                    cx.err(
                        o.span(),
                        format!(
                            "owner {:?} is not a human identity of this policy; name an [[identity]] with kind \"human\"",
                            o.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        if kind == IdentityKind::Service && r.max_ttl.is_none() {
            cx.err(
                table.clone(),
                format!(
                    "service identity {:?} needs `max_ttl`, the longest lifetime of its tokens; add e.g. `max_ttl = \"15m\"`",
                    name.get_ref()
                ),
            );
        }
        out.push(Identity {
            name: name.get_ref().clone(),
            kind,
            owner,
            roles,
            max_ttl: max_ttl.map(|(_, d)| d),
            ssh_keys: ssh::identity_keys(cx, name.get_ref(), &r.ssh_keys, &mut key_owners),
        });
    }
    out
}

/// `"host:port"` or `"[v6]:port"` -> (host without brackets, port).
pub(crate) fn parse_host_port(s: &str) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("missing ']' after an IPv6 address")?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err("the part in brackets is not an IPv6 address");
        }
        let port = after.strip_prefix(':').ok_or("missing ':port' after ']'")?;
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or("missing ':port'")?;
        if host.contains(':') {
            return Err("IPv6 addresses go in brackets, as in \"[::1]:5432\"");
        }
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err("the host is not a host name or an IP address");
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host.to_owned(), p)),
        _ => Err("the port is not a number between 1 and 65535"),
    }
}

/// Whether two listen addresses would collide.
fn listen_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn targets(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<RawTarget>],
    identities: &HashSet<&str>,
) -> Vec<Target> {
    let mut seen = HashSet::new();
    let mut listens: Vec<(SocketAddr, &str)> = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for spanned in raw {
        let table = spanned.span();
        let r = spanned.get_ref();
        let Some(name) = cx.required(&r.name, table.clone(), "name", "[[target]]", "\"app-db\"")
        else {
            continue;
        };
        if !cx.name(name, "target name") {
            continue;
        }
        cx.unique(&mut seen, name, "target");
        let what = format!("target {:?}", name.get_ref());

        let kind = match r.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            None | Some((_, "postgres")) => TargetKind::Postgres,
            Some((_, "ssh")) => TargetKind::Ssh,
            Some((k, other)) => {
                cx.err(
                    k.span(),
                    format!("target kind {other:?} is not supported; use \"postgres\" or \"ssh\""),
                );
                continue;
            }
        };

        let mut listen = None;
        if let Some(v) = cx.required(
            &r.listen,
            table.clone(),
            "listen",
            &what,
            "\"127.0.0.1:6432\"",
        ) {
            match v.get_ref().parse::<SocketAddr>() {
                // Clients must know the port, and the gateway finds a connection's target by the
                // address it was accepted on: "any free port" would break both.
                Ok(addr) if addr.port() == 0 => cx.err(
                    v.span(),
                    "listen port 0 is not allowed: clients need a fixed port; write e.g. \"127.0.0.1:6432\"",
                ),
                Ok(addr) => {
                    if let Some((_, other)) = listens.iter().find(|(a, _)| listen_conflict(*a, addr)) {
                        cx.err(
                            v.span(),
                            format!("listen address {addr} is already used by target {other:?}; give each target its own port"),
                        );
                    }
                    listens.push((addr, name.get_ref()));
                    listen = Some(addr);
                }
                Err(_) => cx.err(
                    v.span(),
                    format!(
                        "listen = {:?} is not an IP address and port; write e.g. \"127.0.0.1:6432\" or \"[::1]:6432\"",
                        v.get_ref()
                    ),
                ),
            }
        }

        let mut upstream = None;
        if let Some(v) = cx.required(
            &r.upstream,
            table.clone(),
            "upstream",
            &what,
            "\"db.internal:5432\"",
        ) {
            match parse_host_port(v.get_ref()) {
                Ok(hp) => upstream = Some(hp),
                Err(why) => cx.err(
                    v.span(),
                    format!(
                        "upstream = {:?}: {why}; write \"host:port\" or \"[v6]:port\"",
                        v.get_ref()
                    ),
                ),
            }
        }

        let non_empty = |cx: &mut Ctx<'_>, v: &Option<Spanned<String>>, key: &str| {
            let v = cx.required(v, table.clone(), key, &what, "\"app\"")?;
            if v.get_ref().is_empty() {
                cx.err(
                    v.span(),
                    format!("`{key}` is empty; give the upstream {key} name"),
                );
                return None;
            }
            Some(v.get_ref().clone())
        };
        let default = r
            .default
            .as_ref()
            .and_then(|v| cx.action(v, "default"))
            .unwrap_or(Action::Block);
        if kind == TargetKind::Ssh {
            let user = non_empty(cx, &r.user, "user");
            let settings = ssh::ssh_target(cx, r, table.clone(), &what, identities);
            let (Some(listen), Some((upstream_host, upstream_port)), Some(user), Some(settings)) =
                (listen, upstream, user, settings)
            else {
                continue;
            };
            out.push(Target {
                name: name.get_ref().clone(),
                kind,
                listen,
                upstream_host,
                upstream_port,
                database: String::new(),
                user,
                secret: SecretSource::None,
                upstream_tls: UpstreamTls::Disable,
                upstream_ca: None,
                tls: None,
                require_tls: false,
                client_auth: ClientAuth::Scram,
                default,
                read_only: false,
                read_only_for: Vec::new(),
                upstream_pool: 0,
                upstream_pool_idle: DEFAULT_UPSTREAM_POOL_IDLE,
                upstream_pool_lifetime: DEFAULT_UPSTREAM_POOL_LIFETIME,
                ssh: Some(settings),
            });
            continue;
        }
        ssh::refuse_ssh_keys(cx, r);
        let database = non_empty(cx, &r.database, "database");
        let user = non_empty(cx, &r.user, "user");

        let secret = match (&r.password_file, &r.password_env) {
            (Some(_), Some(e)) => {
                cx.err(
                    e.span(),
                    "`password_file` and `password_env` are both set; keep only one",
                );
                None
            }
            (Some(f), None) => cx.secret_file(f, "password_file").map(SecretSource::File),
            (None, Some(e)) => {
                if is_env_name(e.get_ref()) {
                    Some(SecretSource::Env(e.get_ref().clone()))
                } else {
                    cx.err(
                        e.span(),
                        format!(
                            "`password_env` = {:?} is not an environment variable name; use letters, digits and '_'",
                            e.get_ref()
                        ),
                    );
                    None
                }
            }
            (None, None) => Some(SecretSource::None),
        };

        let upstream_tls = match r.upstream_tls.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "require")) => UpstreamTls::Require,
            Some((_, "disable")) => UpstreamTls::Disable,
            Some((_, "verify-full")) => UpstreamTls::VerifyFull,
            Some((v, other)) => {
                cx.err(
                    v.span(),
                    format!("upstream_tls = {other:?} is not known; use \"disable\", \"require\" or \"verify-full\""),
                );
                UpstreamTls::Require
            }
        };
        let upstream_ca = match &r.upstream_ca {
            None => None,
            Some(v) if upstream_tls != UpstreamTls::VerifyFull => {
                cx.err(
                    v.span(),
                    "`upstream_ca` is only used with `upstream_tls = \"verify-full\"`; set that, or remove `upstream_ca`",
                );
                None
            }
            Some(v) => cx.readable_file(v, "upstream_ca"),
        };

        let tls = r.tls.as_ref().and_then(|t| {
            let tr = t.get_ref();
            let cert = cx.required(
                &tr.cert,
                t.span(),
                "cert",
                "`tls`",
                "\"/etc/portcullis/tls/cert.pem\"",
            );
            let cert = cert.and_then(|c| cx.readable_file(c, "tls.cert"));
            let key = cx.required(
                &tr.key,
                t.span(),
                "key",
                "`tls`",
                "\"/etc/portcullis/tls/key.pem\"",
            );
            let key = key.and_then(|k| cx.readable_file(k, "tls.key"));
            Some(TlsFiles {
                cert: cert?,
                key: key?,
            })
        });
        let require_tls = match &r.require_tls {
            None => r.tls.is_some(),
            Some(v) => {
                if *v.get_ref() && r.tls.is_none() {
                    cx.err(
                        v.span(),
                        "`require_tls = true` needs `tls = { cert = \"...\", key = \"...\" }` on this target; add it, or remove `require_tls`",
                    );
                }
                *v.get_ref()
            }
        };

        let client_auth = match r.client_auth.as_ref() {
            None => ClientAuth::Scram,
            Some(v) => match v.get_ref().as_str() {
                "scram-sha-256" => ClientAuth::Scram,
                "password" if require_tls => ClientAuth::Password,
                "password" => {
                    cx.err(
                        v.span(),
                        "`client_auth = \"password\"` sends the token in clear text, so it needs TLS: add `tls = { ... }` and keep `require_tls = true`",
                    );
                    ClientAuth::Scram
                }
                other => {
                    cx.err(
                        v.span(),
                        format!("unknown client_auth {other:?}; use \"scram-sha-256\" (default) or \"password\""),
                    );
                    ClientAuth::Scram
                }
            },
        };
        let read_only_for = cx.who_list(&r.read_only_for, identities, "read_only_for");
        let upstream_pool = match &r.upstream_pool {
            None => 0,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if n <= MAX_UPSTREAM_POOL => n,
                _ => {
                    cx.err(
                        v.span(),
                        format!("`upstream_pool` must be between 0 (off) and {MAX_UPSTREAM_POOL}"),
                    );
                    0
                }
            },
        };
        let upstream_pool_idle = pool_duration(
            cx,
            &r.upstream_pool_idle,
            "upstream_pool_idle",
            DEFAULT_UPSTREAM_POOL_IDLE,
        );
        let upstream_pool_lifetime = pool_duration(
            cx,
            &r.upstream_pool_lifetime,
            "upstream_pool_lifetime",
            DEFAULT_UPSTREAM_POOL_LIFETIME,
        );

        let (
            Some(listen),
            Some((upstream_host, upstream_port)),
            Some(database),
            Some(user),
            Some(secret),
        ) = (listen, upstream, database, user, secret)
        else {
            continue;
        };
        out.push(Target {
            name: name.get_ref().clone(),
            kind: TargetKind::Postgres,
            listen,
            upstream_host,
            upstream_port,
            database,
            user,
            secret,
            upstream_tls,
            upstream_ca,
            tls,
            require_tls,
            client_auth,
            default,
            read_only: r.read_only.as_ref().is_some_and(|v| *v.get_ref()),
            read_only_for,
            upstream_pool,
            upstream_pool_idle,
            upstream_pool_lifetime,
            ssh: None,
        });
    }
    out
}

/// Checks a `tables` glob and normalizes it as PostgreSQL does identifiers (and as the classifier
/// reports tables): unquoted parts lower-cased, quoted parts kept and unquoted.
fn table_glob(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    let mut out = String::with_capacity(s.len());
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            'A'..='Z' if !quoted => out.push(c.to_ascii_lowercase()),
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '*' | '-' => out.push(c),
            _ => {
                return Err(
                    "has characters other than letters, digits, '_', '.', '*', '-' and '\"'",
                )
            }
        }
    }
    if quoted {
        return Err("has an unclosed '\"'");
    }
    if out.is_empty() {
        return Err("is empty");
    }
    Ok(out)
}

fn rules(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<RawRule>],
    identities: &HashSet<&str>,
    targets: &HashSet<&str>,
) -> Vec<Rule> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for spanned in raw {
        let table = spanned.span();
        let r = spanned.get_ref();
        let Some(name) = cx.required(&r.name, table.clone(), "name", "[[rule]]", "\"reads\"")
        else {
            continue;
        };
        if !cx.name(name, "rule name") {
            continue;
        }
        if name.get_ref() == RESERVED_RULE_NAME {
            cx.err(
                name.span(),
                format!("the rule name {RESERVED_RULE_NAME:?} is reserved for read-only refusals; rename the rule"),
            );
        }
        cx.unique(&mut seen, name, "rule");
        let what = format!("rule {:?}", name.get_ref());

        for t in &r.targets {
            if !targets.contains(t.get_ref().as_str()) {
                cx.err(
                    t.span(),
                    format!(
                        "rule target {:?} is not a defined [[target]]; fix the name",
                        t.get_ref()
                    ),
                );
            }
        }

        let who = match cx.required(&r.who, table.clone(), "who", &what, "[\"role:dba\"]") {
            Some(list) if list.get_ref().is_empty() => {
                cx.err(
                    list.span(),
                    "`who` is empty, so the rule would never apply; list identities, \"role:NAME\" or \"*\"",
                );
                Vec::new()
            }
            Some(list) => cx.who_list(list.get_ref(), identities, "who"),
            None => Vec::new(),
        };

        let mut sql = Vec::with_capacity(r.sql.len());
        for v in &r.sql {
            match StmtKind::from_name(v.get_ref()) {
                Some(k) => {
                    if !sql.contains(&k) {
                        sql.push(k);
                    }
                }
                None => {
                    let valid: Vec<&str> = StmtKind::ALL.iter().map(|k| k.as_str()).collect();
                    cx.err(
                        v.span(),
                        format!(
                            "unknown statement kind {:?} in `sql`; valid kinds: {}",
                            v.get_ref(),
                            valid.join(", ")
                        ),
                    );
                }
            }
        }

        let mut flags = Flags::empty();
        for v in &r.flags {
            match Flags::from_name(v.get_ref()) {
                Some(f) => flags.insert(f),
                None if ssh::is_command_flag(v.get_ref()) => {}
                None => {
                    let valid: Vec<&str> = Flags::NAMES.iter().map(|(n, _)| *n).collect();
                    let commands: Vec<&str> = ssh::command_flag_names().collect();
                    cx.err(
                        v.span(),
                        format!(
                            "unknown flag {:?} in `flags`; valid flags: {} (SQL), {} (SSH commands)",
                            v.get_ref(),
                            valid.join(", "),
                            commands.join(", ")
                        ),
                    );
                }
            }
        }
        let ssh_parts = ssh::rule_parts(cx, r);

        let mut tables = Vec::with_capacity(r.tables.len());
        for v in &r.tables {
            match table_glob(v.get_ref()) {
                Ok(g) => tables.push(g),
                Err(why) => cx.err(
                    v.span(),
                    format!(
                        "table pattern {:?} {why}; write e.g. \"users\", \"public.*\" or \"*.audit_*\"",
                        v.get_ref()
                    ),
                ),
            }
        }

        let pattern = r.pattern.as_ref().and_then(|v| {
            match regex_automata::meta::Regex::new(v.get_ref()) {
                Ok(re) => Some((v.get_ref().clone(), re)),
                Err(e) => {
                    cx.err(
                        v.span(),
                        format!("`match` is not a valid regular expression: {e}; fix the pattern (use '...' TOML strings to avoid escaping backslashes)"),
                    );
                    None
                }
            }
        });

        let action = cx
            .required(&r.action, table.clone(), "action", &what, "\"allow\"")
            .and_then(|v| cx.action(v, "action"));

        let approvers = match (&r.approvers, action) {
            (Some(list), Some(Action::Approve)) => {
                if list.get_ref().is_empty() {
                    cx.err(
                        list.span(),
                        "`approvers` is empty, so no one could approve; list identities, \"role:NAME\" or \"*\"",
                    );
                }
                cx.who_list(list.get_ref(), identities, "approvers")
            }
            (None, Some(Action::Approve)) => {
                cx.err(
                    table.clone(),
                    format!("{what} has `action = \"approve\"` but no `approvers`; add e.g. `approvers = [\"role:dba\"]`"),
                );
                Vec::new()
            }
            (Some(list), Some(_)) => {
                cx.err(
                    list.span(),
                    "`approvers` is only used with `action = \"approve\"`; remove it or change the action",
                );
                Vec::new()
            }
            (None, _) | (_, None) => Vec::new(),
        };
        let timeout = match (&r.timeout, action) {
            (Some(v), Some(Action::Approve)) => cx
                .duration(v, "timeout", false)
                .unwrap_or(DEFAULT_APPROVAL_TIMEOUT),
            (Some(v), Some(_)) => {
                cx.err(
                    v.span(),
                    "`timeout` is only used with `action = \"approve\"`; remove it or change the action",
                );
                DEFAULT_APPROVAL_TIMEOUT
            }
            _ => DEFAULT_APPROVAL_TIMEOUT,
        };
        let approvals = match (&r.approvals, action) {
            (Some(v), Some(Action::Approve)) => match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=MAX_APPROVALS).contains(v.get_ref()) => n,
                _ => {
                    cx.err(
                        v.span(),
                        format!("`approvals` must be between 1 and {MAX_APPROVALS}: how many different approvers must say yes"),
                    );
                    1
                }
            },
            (Some(v), Some(_)) => {
                cx.err(
                    v.span(),
                    "`approvals` is only used with `action = \"approve\"`; remove it or change the action",
                );
                1
            }
            _ => 1,
        };
        let grant = match (&r.grant, action) {
            (Some(v), Some(Action::Approve)) => cx.duration(v, "grant", false),
            (Some(v), Some(_)) => {
                cx.err(
                    v.span(),
                    "`grant` is only used with `action = \"approve\"`; remove it or change the action",
                );
                None
            }
            _ => None,
        };

        let Some(action) = action else { continue };
        let sql_only = !sql.is_empty() || !tables.is_empty() || flags != Flags::empty();
        let ssh_only = !r.commands.is_empty()
            || !r.programs.is_empty()
            || !ssh_parts.command_flags.is_empty()
            || ssh_parts.command_unknown;
        if sql_only && ssh_only {
            cx.err(
                table.clone(),
                format!("{what} mixes SQL conditions (`sql`, `tables`, SQL flags) with SSH ones (`commands`, `programs`, command flags), so it could never match; split it into two rules"),
            );
        }
        out.push(Rule {
            name: name.get_ref().clone(),
            targets: r.targets.iter().map(|t| t.get_ref().clone()).collect(),
            who,
            sql,
            tables,
            flags,
            pattern,
            commands: ssh_parts.commands,
            programs: ssh_parts.programs,
            command_flags: ssh_parts.command_flags,
            command_unknown: ssh_parts.command_unknown,
            action,
            message: r.message.as_ref().map(|m| m.get_ref().clone()),
            approvers,
            timeout,
            approvals,
            grant,
        });
    }
    out
}

/// Checks a `columns` glob of a mask rule and lower-cases it: one to three non-empty
/// dot-separated parts of letters, digits, '_', '-', '*' and '?'.
fn column_glob(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'*' | b'?' | b'.'))
    {
        return Err("has characters other than letters, digits, '_', '-', '*', '?' and '.'");
    }
    let parts = s.split('.').count();
    if parts > 3 || s.split('.').any(str::is_empty) {
        return Err("is not COLUMN, TABLE.COLUMN or SCHEMA.TABLE.COLUMN");
    }
    Ok(s.to_ascii_lowercase())
}

fn masks(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<RawMask>],
    identities: &HashSet<&str>,
    targets: &HashSet<&str>,
) -> Vec<MaskRule> {
    use crate::mask::{self, Strategy};
    let mut out = Vec::with_capacity(raw.len());
    for spanned in raw {
        let table = spanned.span();
        let r = spanned.get_ref();
        let problems_before = cx.problems.len() + cx.omitted;

        for t in &r.targets {
            if !targets.contains(t.get_ref().as_str()) {
                cx.err(
                    t.span(),
                    format!(
                        "mask target {:?} is not a defined [[target]]; fix the name",
                        t.get_ref()
                    ),
                );
            }
        }
        let who = match cx.required(&r.who, table.clone(), "who", "[[mask]]", "[\"role:ci\"]") {
            Some(list) if list.get_ref().is_empty() => {
                cx.err(
                    list.span(),
                    "`who` is empty, so the mask would never apply; list identities, \"role:NAME\" or \"*\"",
                );
                Vec::new()
            }
            Some(list) => cx.who_list(list.get_ref(), identities, "who"),
            None => Vec::new(),
        };

        let mut columns = Vec::with_capacity(r.columns.len());
        for v in &r.columns {
            match column_glob(v.get_ref()) {
                Ok(g) => columns.push(g),
                Err(why) => cx.err(
                    v.span(),
                    format!(
                        "column pattern {:?} {why}; write e.g. \"*.email\", \"users.ssn\" or \"*password*\"",
                        v.get_ref()
                    ),
                ),
            }
        }

        let mut detectors: Vec<String> = Vec::new();
        for v in &r.detectors {
            let name = v.get_ref().as_str();
            if name == "all" {
                for d in mask::detectors() {
                    if !detectors.iter().any(|x| x == d) {
                        detectors.push(d.to_owned());
                    }
                }
            } else if mask::detectors().any(|d| d == name) {
                if !detectors.iter().any(|x| x == name) {
                    detectors.push(name.to_owned());
                }
            } else {
                cx.err(
                    v.span(),
                    mask::MaskError::UnknownDetector(name.to_owned()).to_string(),
                );
            }
        }

        if r.custom.len() > mask::MAX_CUSTOM {
            cx.err(
                table.clone(),
                format!(
                    "more than {} custom detectors in one [[mask]]; split the rule",
                    mask::MAX_CUSTOM
                ),
            );
        }
        let mut custom: Vec<(String, String)> = Vec::with_capacity(r.custom.len());
        for c in &r.custom {
            let cr = c.get_ref();
            let name = cx.required(
                &cr.name,
                c.span(),
                "name",
                "a custom detector",
                "\"employee_id\"",
            );
            let pattern = cx.required(
                &cr.pattern,
                c.span(),
                "pattern",
                "a custom detector",
                "'EMP-[0-9]{6}'",
            );
            let (Some(name), Some(pattern)) = (name, pattern) else {
                continue;
            };
            if custom.iter().any(|(n, _)| n == name.get_ref()) {
                cx.err(
                    name.span(),
                    format!("custom detector {:?} is defined twice in this [[mask]]; names must be unique", name.get_ref()),
                );
                continue;
            }
            match mask::check_custom(name.get_ref(), pattern.get_ref()) {
                Ok(()) => custom.push((name.get_ref().clone(), pattern.get_ref().clone())),
                Err(e @ mask::MaskError::BadName(_)) => cx.err(name.span(), e.to_string()),
                Err(e) => cx.err(
                    pattern.span(),
                    format!("{e} (use '...' TOML strings to avoid escaping backslashes)"),
                ),
            }
        }

        let strategy = match r.strategy.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "redact")) => Some(Strategy::Redact),
            Some((_, "hash")) => Some(Strategy::Hash),
            Some((_, "partial")) => Some(Strategy::Partial {
                keep: mask::DEFAULT_KEEP,
            }),
            Some((v, other)) => {
                cx.err(
                    v.span(),
                    format!("strategy = {other:?} is not known; use \"redact\", \"partial\" or \"hash\""),
                );
                None
            }
        };
        let strategy = match (strategy, &r.keep) {
            (Some(Strategy::Partial { .. }), Some(v)) => match usize::try_from(*v.get_ref()) {
                Ok(keep) if keep <= mask::MAX_KEEP => Some(Strategy::Partial { keep }),
                _ => {
                    cx.err(
                        v.span(),
                        format!("`keep` must be between 0 and {}: how many trailing characters stay visible", mask::MAX_KEEP),
                    );
                    None
                }
            },
            (Some(_), Some(v)) => {
                cx.err(
                    v.span(),
                    "`keep` is only used with `strategy = \"partial\"`; remove it or change the strategy",
                );
                None
            }
            (s, _) => s,
        };

        if r.columns.is_empty() && r.detectors.is_empty() && r.custom.is_empty() {
            cx.err(
                table.clone(),
                "this [[mask]] masks nothing; add `columns`, `detectors` (e.g. [\"all\"]) or `custom`",
            );
        }

        let Some(strategy) = strategy else { continue };
        if cx.problems.len() + cx.omitted != problems_before {
            continue;
        }
        // What passed the checks above must also compile together (size limits).
        if let Err(e) = mask::Masker::new(&detectors, &custom, strategy, [0; 32]) {
            cx.err(table.clone(), format!("[[mask]]: {e}"));
            continue;
        }
        out.push(MaskRule {
            targets: r.targets.iter().map(|t| t.get_ref().clone()).collect(),
            who,
            columns,
            detectors,
            custom,
            strategy,
        });
    }
    out
}
