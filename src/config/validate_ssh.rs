//! Validation of what only SSH targets and SSH rules have: `kind = "ssh"` target keys (upstream
//! login, pinned host key, shell / sftp / forwarding switches), identities' `ssh_keys`, and the
//! rule keys `commands` / `programs` and command flag names in `flags`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use toml::Spanned;

use super::super::duration::parse_size;
use super::super::model::*;
use super::super::raw::*;
use super::{is_env_name, Ctx};
use crate::policy::command::CommandFlags;
use crate::proto::ssh::keys::PublicKey;
use crate::record::DEFAULT_LIMIT;

/// The `flags` name for command lines the classifier did not understand.
pub(crate) const UNKNOWN_FLAG: &str = "unknown";

/// Parses one identity's `ssh_keys`; `owners` maps each key seen so far to its identity, so a
/// key listed by two identities (which would make the login ambiguous) is refused.
pub(super) fn identity_keys(
    cx: &mut Ctx<'_>,
    identity: &str,
    raw: &[Spanned<String>],
    owners: &mut HashMap<PublicKey, String>,
) -> Vec<PublicKey> {
    let mut out = Vec::with_capacity(raw.len());
    for v in raw {
        match PublicKey::from_openssh_line(v.get_ref()) {
            Ok(k) => {
                if let Some(other) = owners.get(&k.key) {
                    cx.err(
                        v.span(),
                        format!(
                            "this key ({}) is already listed for identity {other:?}; a key must name one identity",
                            k.key.fingerprint()
                        ),
                    );
                    continue;
                }
                owners.insert(k.key.clone(), identity.to_owned());
                out.push(k.key);
            }
            Err(e) => cx.err(
                v.span(),
                format!(
                    "`ssh_keys` entry is not an OpenSSH public key: {e}; paste the line of the .pub file (\"ssh-ed25519 AAAA... comment\")"
                ),
            ),
        }
    }
    out
}

/// Refuses PostgreSQL-only keys on an SSH target.
fn refuse_pg_keys(cx: &mut Ctx<'_>, r: &RawTarget) {
    let spans: [(&str, Option<Range<usize>>); 10] = [
        ("database", r.database.as_ref().map(Spanned::span)),
        ("upstream_tls", r.upstream_tls.as_ref().map(Spanned::span)),
        ("upstream_ca", r.upstream_ca.as_ref().map(Spanned::span)),
        ("tls", r.tls.as_ref().map(Spanned::span)),
        ("require_tls", r.require_tls.as_ref().map(Spanned::span)),
        ("client_auth", r.client_auth.as_ref().map(Spanned::span)),
        ("read_only", r.read_only.as_ref().map(Spanned::span)),
        ("upstream_pool", r.upstream_pool.as_ref().map(Spanned::span)),
        (
            "upstream_pool_idle",
            r.upstream_pool_idle.as_ref().map(Spanned::span),
        ),
        (
            "upstream_pool_lifetime",
            r.upstream_pool_lifetime.as_ref().map(Spanned::span),
        ),
    ];
    for (key, span) in spans {
        if let Some(span) = span {
            cx.err(
                span,
                format!("`{key}` is a PostgreSQL target key; remove it from this SSH target"),
            );
        }
    }
    if let Some(v) = r.read_only_for.first() {
        cx.err(
            v.span(),
            "`read_only_for` is a PostgreSQL target key; for SSH use `sftp = \"read-only\"` and command rules",
        );
    }
}

/// Refuses SSH-only keys on a PostgreSQL target.
pub(super) fn refuse_ssh_keys(cx: &mut Ctx<'_>, r: &RawTarget) {
    let spans: [(&str, Option<Range<usize>>); 8] = [
        ("key_file", r.key_file.as_ref().map(Spanned::span)),
        ("host_key", r.host_key.as_ref().map(Spanned::span)),
        ("shell", r.shell.as_ref().map(Spanned::span)),
        ("shell_for", r.shell_for.as_ref().map(Spanned::span)),
        ("sftp", r.sftp.as_ref().map(Spanned::span)),
        ("forwarding", r.forwarding.as_ref().map(Spanned::span)),
        ("record_input", r.record_input.as_ref().map(Spanned::span)),
        (
            "max_recording_size",
            r.max_recording_size.as_ref().map(Spanned::span),
        ),
    ];
    for (key, span) in spans {
        if let Some(span) = span {
            cx.err(
                span,
                format!("`{key}` is an SSH target key; remove it, or set `kind = \"ssh\"`"),
            );
        }
    }
}

/// The SSH settings of `r` (a `kind = "ssh"` target), or None after recording the problems.
pub(super) fn ssh_target(
    cx: &mut Ctx<'_>,
    r: &RawTarget,
    table: Range<usize>,
    what: &str,
    identities: &HashSet<&str>,
) -> Option<SshTarget> {
    refuse_pg_keys(cx, r);

    let auth = match (&r.key_file, &r.password_file, &r.password_env) {
        (Some(k), None, None) => cx.secret_file(k, "key_file").map(SshUpstreamAuth::KeyFile),
        (None, Some(f), None) => cx
            .secret_file(f, "password_file")
            .map(|p| SshUpstreamAuth::Password(SecretSource::File(p))),
        (None, None, Some(e)) => {
            if is_env_name(e.get_ref()) {
                Some(SshUpstreamAuth::Password(SecretSource::Env(
                    e.get_ref().clone(),
                )))
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
        (None, None, None) => {
            cx.err(
                table.clone(),
                format!("{what} needs a way to log in upstream: add `key_file = \"secrets/NAME.key\"` (an OpenSSH private key, mode 0600), or `password_file` / `password_env`"),
            );
            None
        }
        (k, f, e) => {
            let span = [k, f, e]
                .into_iter()
                .flatten()
                .nth(1)
                .map_or(table.clone(), Spanned::span);
            cx.err(
                span,
                "`key_file`, `password_file` and `password_env` are alternatives; keep only one",
            );
            None
        }
    };

    let host_key = match cx.required(
        &r.host_key,
        table.clone(),
        "host_key",
        what,
        "\"ssh-ed25519 AAAA...\" (from `ssh-keyscan -t ed25519 HOST`)",
    ) {
        None => None,
        Some(v) => match PublicKey::from_openssh_line(v.get_ref()) {
            Ok(k) => match k.key {
                PublicKey::Ed25519(bytes) => Some(bytes),
                other => {
                    cx.err(
                        v.span(),
                        format!(
                            "`host_key` is a {} key; the gateway pins the target's ssh-ed25519 host key: run `ssh-keyscan -t ed25519 HOST`",
                            other.key_type()
                        ),
                    );
                    None
                }
            },
            Err(e) => {
                cx.err(
                    v.span(),
                    format!("`host_key` is not an OpenSSH public key line: {e}; run `ssh-keyscan -t ed25519 HOST` and paste the key part"),
                );
                None
            }
        },
    };

    let shell = match r.shell.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "allow")) => true,
        Some((_, "deny")) => false,
        Some((v, other)) => {
            cx.err(
                v.span(),
                format!("`shell` = {other:?} is not known; use \"allow\" or \"deny\" (exec only)"),
            );
            true
        }
    };
    let shell_for = match &r.shell_for {
        None => Vec::new(),
        Some(list) => {
            if shell {
                cx.err(
                    list.span(),
                    "`shell_for` only matters with `shell = \"deny\"`; set that, or remove `shell_for`",
                );
            }
            cx.who_list(list.get_ref(), identities, "shell_for")
        }
    };
    let sftp = match r.sftp.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "allow")) => SftpAccess::Allow,
        Some((_, "read-only")) => SftpAccess::ReadOnly,
        Some((_, "deny")) => SftpAccess::Deny,
        Some((v, other)) => {
            cx.err(
                v.span(),
                format!(
                    "`sftp` = {other:?} is not known; use \"allow\", \"read-only\" or \"deny\""
                ),
            );
            SftpAccess::Deny
        }
    };
    let forwarding = match r.forwarding.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "deny")) => false,
        Some((_, "allow")) => true,
        Some((v, other)) => {
            cx.err(
                v.span(),
                format!("`forwarding` = {other:?} is not known; use \"allow\" or \"deny\""),
            );
            false
        }
    };
    Some(SshTarget {
        auth: auth?,
        host_key: host_key?,
        shell,
        shell_for,
        sftp,
        forwarding,
        record_input: r.record_input.as_ref().is_some_and(|v| *v.get_ref()),
        max_recording_size: max_recording_size(cx, r),
    })
}

/// Smallest `max_recording_size`: room for the header, the limit marker and some output.
const MIN_RECORDING_SIZE: u64 = 4 << 10;
/// Largest `max_recording_size`.
const MAX_RECORDING_SIZE: u64 = 1 << 40;

/// `max_recording_size`: a size (`"64MiB"`, or a number of bytes) from 4 KiB to 1 TiB; default
/// 1 GiB. A problem is recorded and the default returned.
fn max_recording_size(cx: &mut Ctx<'_>, r: &RawTarget) -> u64 {
    let Some(v) = &r.max_recording_size else {
        return DEFAULT_LIMIT;
    };
    let size = match v.get_ref() {
        RawSize::Bytes(n) => u64::try_from(*n).ok(),
        RawSize::Text(s) => parse_size(s),
    };
    match size.filter(|n| (MIN_RECORDING_SIZE..=MAX_RECORDING_SIZE).contains(n)) {
        Some(n) => n,
        None => {
            cx.err(
                v.span(),
                "`max_recording_size` must be a size between 4KiB and 1TiB; write e.g. \"1GiB\", \"64MiB\" or a number of bytes",
            );
            DEFAULT_LIMIT
        }
    }
}

/// The SSH parts of a rule: `commands` regexes, `programs`, and the command flag names of
/// `flags` (`sql_flag` says whether a name is an SQL flag, handled by the caller).
pub(super) struct RuleParts {
    pub commands: Vec<(String, regex_automata::meta::Regex)>,
    pub programs: Vec<String>,
    pub command_flags: CommandFlags,
    pub command_unknown: bool,
}

pub(super) fn rule_parts(cx: &mut Ctx<'_>, r: &RawRule) -> RuleParts {
    let mut commands = Vec::with_capacity(r.commands.len());
    for v in &r.commands {
        match regex_automata::meta::Regex::new(v.get_ref()) {
            Ok(re) => commands.push((v.get_ref().clone(), re)),
            Err(e) => cx.err(
                v.span(),
                format!("`commands` entry is not a valid regular expression: {e}; fix the pattern (use '...' TOML strings to avoid escaping backslashes)"),
            ),
        }
    }
    let mut programs = Vec::with_capacity(r.programs.len());
    for v in &r.programs {
        let p = v.get_ref();
        if p.is_empty() || p.contains('/') || p.chars().any(char::is_whitespace) {
            cx.err(
                v.span(),
                format!("`programs` entry {p:?} is not a program name; write the basename, as in \"systemctl\" (rules match /usr/bin/systemctl too)"),
            );
        } else {
            programs.push(p.clone());
        }
    }
    let mut command_flags = CommandFlags::empty();
    let mut command_unknown = false;
    for v in &r.flags {
        if let Some(f) = CommandFlags::from_name(v.get_ref()) {
            command_flags.insert(f);
        } else if v.get_ref() == UNKNOWN_FLAG {
            command_unknown = true;
        }
    }
    RuleParts {
        commands,
        programs,
        command_flags,
        command_unknown,
    }
}

/// Whether `name` is a flag of SSH command rules (for the `flags` message).
pub(super) fn is_command_flag(name: &str) -> bool {
    name == UNKNOWN_FLAG || CommandFlags::from_name(name).is_some()
}

/// The command flag names, for messages.
pub(super) fn command_flag_names() -> impl Iterator<Item = &'static str> {
    CommandFlags::NAMES
        .iter()
        .map(|(n, _)| *n)
        .chain([UNKNOWN_FLAG])
}
