//! The policy file as written: serde structs that mirror the TOML, every value wrapped in
//! [`Spanned`] so validation can point at `file:line:col`. Nothing here is trusted or defaulted;
//! `validate.rs` turns these into the types of `model.rs`.
//!
//! Required keys are `Option` here on purpose: a missing key is reported by validation, together
//! with every other problem, instead of stopping deserialization at the first one. Unknown keys are
//! refused (`deny_unknown_fields`) so a misspelled key is never silently ignored.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A list whose presence and position matter (`who`, `approvers`).
pub(crate) type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub gateway: Option<Spanned<RawGateway>>,
    #[serde(default)]
    pub identity: Vec<Spanned<RawIdentity>>,
    #[serde(default)]
    pub target: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub mask: Vec<Spanned<RawMask>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub data_dir: Option<Spanned<String>>,
    pub public_url: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub handshake_timeout: Option<Spanned<String>>,
    pub upstream_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub tcp_keepalive: Option<Spanned<String>>,
    pub max_message_size: Option<Spanned<RawSize>>,
    pub max_token_ttl: Option<Spanned<String>>,
    pub audit_flush_interval: Option<Spanned<String>>,
    pub audit_queue: Option<Spanned<i64>>,
    pub audit_retention: Option<Spanned<String>>,
    pub http: Option<Spanned<RawHttp>>,
    pub webhooks: Option<SpannedList>,
    pub webhook_ca: Option<Spanned<String>>,
    pub relay_busy_poll_us: Option<Spanned<i64>>,
}

/// `[gateway] http = { listen, tls = { cert, key }, allow_plain_http }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub listen: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawTls>>,
    pub allow_plain_http: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    #[serde(default)]
    pub roles: Vec<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub ssh_keys: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub upstream_tls: Option<Spanned<String>>,
    pub upstream_ca: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawTls>>,
    pub require_tls: Option<Spanned<bool>>,
    pub client_auth: Option<Spanned<String>>,
    pub default: Option<Spanned<String>>,
    pub read_only: Option<Spanned<bool>>,
    #[serde(default)]
    pub read_only_for: Vec<Spanned<String>>,
    pub upstream_pool: Option<Spanned<i64>>,
    pub upstream_pool_idle: Option<Spanned<String>>,
    pub upstream_pool_lifetime: Option<Spanned<String>>,
    // kind = "ssh"
    pub key_file: Option<Spanned<String>>,
    pub host_key: Option<Spanned<String>>,
    pub shell: Option<Spanned<String>>,
    pub shell_for: Option<SpannedList>,
    pub sftp: Option<Spanned<String>>,
    pub forwarding: Option<Spanned<String>>,
    pub record_input: Option<Spanned<bool>>,
    pub max_recording_size: Option<Spanned<RawSize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,
    pub who: Option<SpannedList>,
    #[serde(default)]
    pub sql: Vec<Spanned<String>>,
    #[serde(default)]
    pub tables: Vec<Spanned<String>>,
    #[serde(default)]
    pub flags: Vec<Spanned<String>>,
    #[serde(rename = "match")]
    pub pattern: Option<Spanned<String>>,
    #[serde(default)]
    pub commands: Vec<Spanned<String>>,
    #[serde(default)]
    pub programs: Vec<Spanned<String>>,
    pub action: Option<Spanned<String>>,
    pub message: Option<Spanned<String>>,
    pub approvers: Option<SpannedList>,
    pub timeout: Option<Spanned<String>>,
    pub approvals: Option<Spanned<i64>>,
    pub grant: Option<Spanned<String>>,
}

/// `[[mask]]`: what to mask in answers, for whom, where, and how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMask {
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,
    pub who: Option<SpannedList>,
    #[serde(default)]
    pub columns: Vec<Spanned<String>>,
    #[serde(default)]
    pub detectors: Vec<Spanned<String>>,
    #[serde(default)]
    pub custom: Vec<Spanned<RawCustomDetector>>,
    pub strategy: Option<Spanned<String>>,
    pub keep: Option<Spanned<i64>>,
}

/// `custom = [{ name = "employee_id", pattern = "EMP-[0-9]{6}" }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCustomDetector {
    pub name: Option<Spanned<String>>,
    pub pattern: Option<Spanned<String>>,
}

/// A size as written: a plain integer (bytes) or a string with a unit (`"64MiB"`).
#[derive(Debug)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"64MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom("size too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}
