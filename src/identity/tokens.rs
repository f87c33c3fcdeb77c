//! Short-lived tokens minted by the gateway.
//!
//! * Secret: `pct_` + 43 characters of unpadded base64url (RFC 4648 §5) of 32 random bytes, 47
//!   characters in all. It is shown once, at issue, and never stored.
//! * Id: `tok_` + 12 hex characters (6 random bytes), shown in lists, used to revoke.
//! * Stored: a SCRAM-SHA-256 verifier (RFC 5802 §3 StoredKey and ServerKey) of the whole secret
//!   string (`pct_...`; all ASCII, so SASLprep leaves it unchanged), with PBKDF2-HMAC-SHA256 at
//!   [`SCRAM_ITERATIONS`] and a salt that depends only on (identity, target):
//!   `salt = HMAC-SHA256(gateway_key, "scram-salt\0" || identity || "\0" || target)[..16]`.
//!
//! * Bearer index: every token issued by this version also gets a row
//!   `HMAC-SHA256(gateway_key, "bearer\0" || secret) -> id` in `BEARER_INDEX`, so a token presented
//!   without its identity (`Authorization: Bearer pct_...` on the approvals API) is found in O(1)
//!   by [`Tokens::find_bearer`]. The row reveals nothing to whoever reads the store without the
//!   gateway key, and secrets are 256-bit random, so the index can't be searched by guessing.
//!
//! Why one salt per (identity, target): in SCRAM the server sends the salt before it knows which
//! token the client holds, so all live tokens of one identity and target share it and the client's
//! proof is checked against each of their verifiers. Tokens are 256-bit random, so a shared salt
//! costs nothing; an unknown (identity, target) gets the same kind of salt, so the salt reveals
//! nothing about which tokens exist.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redb::{Durability, ReadableDatabase, ReadableTable};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::codec::{Dec, Enc};
use crate::store::tables::{BEARER_INDEX, TOKENS, TOKEN_INDEX};
use crate::store::{Store, StoreError};

/// PBKDF2 iterations of the SCRAM verifier (PostgreSQL's default, RFC 7677's example).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Prefix of every token secret.
pub const SECRET_PREFIX: &str = "pct_";
/// Prefix of every token id.
pub const ID_PREFIX: &str = "tok_";
/// Length of a token secret: prefix + 43 base64url characters.
pub const SECRET_LEN: usize = 4 + 43;
/// Most candidates `candidates()` returns (each costs two HMACs during SCRAM).
pub const MAX_CANDIDATES: usize = 64;
/// Longest identity, target or scope name the store accepts.
pub const MAX_NAME_LEN: usize = 256;
/// Longest origin (who or what asked for the token), in characters.
pub const MAX_ORIGIN_LEN: usize = 512;

/// Version byte of a token record without a bearer index key (issued before the index existed).
const RECORD_VERSION_1: u8 = 1;
/// Version byte of a token record that ends with its 32-byte bearer index key.
const RECORD_VERSION: u8 = 2;
/// Domain separation of the bearer index key from the SCRAM salts (same gateway key).
const BEARER_LABEL: &[u8] = b"bearer\0";

/// A SCRAM-SHA-256 verifier: what the server keeps instead of the password (RFC 5802 §3).
pub use crate::proto::pg::scram::ScramVerifier as Verifier;
use crate::proto::pg::scram::{ct_eq, derive_verifier};

/// A freshly minted token: the only time the secret exists outside the client.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub id: String,
    pub secret: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a token list shows (never the secret or the verifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub identity: String,
    pub target: String,
    pub scope: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the token is refused from this second on.
    pub expires_at: u64,
    /// Uses remaining; `None` = unlimited until expiry.
    pub uses_left: Option<u32>,
    pub used: u32,
    pub origin: String,
    pub revoked: bool,
}

/// Why a token was refused. One variant on purpose: wrong, unknown, expired, used up and revoked
/// tokens look the same to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    Invalid,
}

impl fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid token")
    }
}

/// Token operations over the store.
pub struct Tokens {
    store: Arc<Store>,
    salt_key: hmac::Key,
    rng: SystemRandom,
}

/// The stored form of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    identity: String,
    target: String,
    scope: String,
    created_at: u64,
    expires_at: u64,
    uses_left: Option<u32>,
    used: u32,
    origin: String,
    revoked: bool,
    verifier: Verifier,
    /// Key of this token's `BEARER_INDEX` row (`None` for version-1 records, which have none).
    bearer_key: Option<[u8; 32]>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let version = if self.bearer_key.is_some() {
            RECORD_VERSION
        } else {
            RECORD_VERSION_1
        };
        let enc = Enc::new(version)
            .str(&self.identity)
            .str(&self.target)
            .str(&self.scope)
            .u64(self.created_at)
            .u64(self.expires_at)
            .opt_u32(self.uses_left)
            .u32(self.used)
            .str(&self.origin)
            .bool(self.revoked)
            .fixed(&self.verifier.stored_key)
            .fixed(&self.verifier.server_key);
        match &self.bearer_key {
            Some(k) => enc.fixed(k).finish(),
            None => enc.finish(),
        }
    }

    fn decode(buf: &[u8]) -> Result<Record, StoreError> {
        let version = match buf.first() {
            Some(&RECORD_VERSION_1) => RECORD_VERSION_1,
            _ => RECORD_VERSION,
        };
        let mut d = Dec::new(buf, version, "token record")?;
        let mut r = Record {
            identity: d.string()?,
            target: d.string()?,
            scope: d.string()?,
            created_at: d.u64()?,
            expires_at: d.u64()?,
            uses_left: d.opt_u32()?,
            used: d.u32()?,
            origin: d.string()?,
            revoked: d.bool()?,
            verifier: Verifier {
                stored_key: d.array()?,
                server_key: d.array()?,
            },
            bearer_key: None,
        };
        if version == RECORD_VERSION {
            r.bearer_key = Some(d.array()?);
        }
        d.finish()?;
        Ok(r)
    }

    /// Usable at `now`: not revoked, not expired, uses left.
    fn is_live(&self, now: u64) -> bool {
        !self.revoked && now < self.expires_at && self.uses_left != Some(0)
    }

    fn info(&self, id: &str) -> TokenInfo {
        TokenInfo {
            id: id.to_string(),
            identity: self.identity.clone(),
            target: self.target.clone(),
            scope: self.scope.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            uses_left: self.uses_left,
            used: self.used,
            origin: self.origin.clone(),
            revoked: self.revoked,
        }
    }
}

/// `identity \0 target \0` — the index prefix of one (identity, target).
fn index_prefix(identity: &str, target: &str) -> String {
    format!("{identity}\0{target}\0")
}

impl Tokens {
    /// # Errors
    /// The gateway key cannot be read.
    pub fn new(store: Arc<Store>) -> Result<Tokens, StoreError> {
        let key = store.gateway_key()?;
        Ok(Tokens {
            store,
            salt_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            rng: SystemRandom::new(),
        })
    }

    /// The store these tokens live in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Mints a token. `ttl` of at least one second; `uses` (if any) at least 1. Policy limits
    /// (maximum ttl, known identity and target) are the caller's job (`control::execute`).
    ///
    /// # Errors
    /// `InvalidInput` for an empty or overlong name, a NUL in a name, a zero ttl or zero uses;
    /// store errors otherwise.
    #[allow(clippy::too_many_arguments)] // each is a distinct property of the token
    pub fn issue(
        &self,
        identity: &str,
        target: &str,
        scope: &str,
        ttl: Duration,
        uses: Option<u32>,
        origin: &str,
        now: u64,
    ) -> Result<IssuedToken, StoreError> {
        for (name, what) in [
            (identity, "identity name must be 1 to 256 bytes without NUL"),
            (target, "target name must be 1 to 256 bytes without NUL"),
            (scope, "scope must be 1 to 256 bytes without NUL"),
        ] {
            if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
                return Err(StoreError::InvalidInput(what));
            }
        }
        if origin.chars().count() > MAX_ORIGIN_LEN {
            return Err(StoreError::InvalidInput(
                "origin must be at most 512 characters",
            ));
        }
        if ttl.as_secs() == 0 {
            return Err(StoreError::InvalidInput("ttl must be at least one second"));
        }
        if uses == Some(0) {
            return Err(StoreError::InvalidInput("uses must be at least 1"));
        }
        if scope == "approve" && uses.is_some() {
            return Err(StoreError::InvalidInput("approve tokens can't have --uses"));
        }

        let mut raw = [0u8; 32];
        self.rng.fill(&mut raw).map_err(|_| StoreError::Random)?;
        let secret = format!("{SECRET_PREFIX}{}", base64url(&raw));
        let salt = self.scram_salt(identity, target);
        let verifier = derive_verifier(secret.as_bytes(), &salt, SCRAM_ITERATIONS);
        let bearer_key = self.bearer_key(&secret);
        let record = Record {
            identity: identity.to_string(),
            target: target.to_string(),
            scope: scope.to_string(),
            created_at: now,
            expires_at: now.saturating_add(ttl.as_secs()),
            uses_left: uses,
            used: 0,
            origin: origin.to_string(),
            revoked: false,
            verifier,
            bearer_key: Some(bearer_key),
        };

        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let id = {
            let mut tokens = txn.open_table(TOKENS)?;
            let mut index = txn.open_table(TOKEN_INDEX)?;
            let mut bearer = txn.open_table(BEARER_INDEX)?;
            // 48 random bits: a collision is unlikely but cheap to rule out.
            let mut id = None;
            for _ in 0..8 {
                let mut b = [0u8; 6];
                self.rng.fill(&mut b).map_err(|_| StoreError::Random)?;
                let candidate = format!("{ID_PREFIX}{}", hex(&b));
                if tokens.get(candidate.as_str())?.is_none() {
                    id = Some(candidate);
                    break;
                }
            }
            let id = id.ok_or(StoreError::Random)?;
            tokens.insert(id.as_str(), record.encode().as_slice())?;
            let key = format!("{}{id}", index_prefix(identity, target));
            index.insert(key.as_str(), now)?;
            bearer.insert(bearer_key.as_slice(), id.as_str())?;
            id
        };
        txn.commit()?;
        Ok(IssuedToken {
            id,
            secret,
            expires_at: record.expires_at,
        })
    }

    /// Every stored token (live, expired not yet purged, revoked), oldest first.
    ///
    /// # Errors
    /// Store errors; a corrupt record.
    pub fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let txn = self.store.db().begin_read()?;
        let tokens = txn.open_table(TOKENS)?;
        let mut out = Vec::new();
        for row in tokens.iter()? {
            let (k, v) = row?;
            out.push(Record::decode(v.value())?.info(k.value()));
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Marks a token revoked (it stays listed until purged). `None` if there is no such token.
    /// Revoking a revoked token returns it again.
    ///
    /// # Errors
    /// Store errors; a corrupt record.
    pub fn revoke(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let info = {
            let mut tokens = txn.open_table(TOKENS)?;
            let found = tokens.get(id)?.map(|v| Record::decode(v.value()));
            match found {
                None => None,
                Some(rec) => {
                    let mut rec = rec?;
                    rec.revoked = true;
                    tokens.insert(id, rec.encode().as_slice())?;
                    Some(rec.info(id))
                }
            }
        };
        if info.is_some() {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(info)
    }

    /// The SCRAM salt of (identity, target), whether or not any token exists for it.
    pub fn scram_salt(&self, identity: &str, target: &str) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.salt_key);
        ctx.update(b"scram-salt\0");
        ctx.update(identity.as_bytes());
        ctx.update(b"\0");
        ctx.update(target.as_bytes());
        let tag = ctx.sign();
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&tag.as_ref()[..16]);
        salt
    }

    /// The `BEARER_INDEX` key of a secret.
    fn bearer_key(&self, secret: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.salt_key);
        ctx.update(BEARER_LABEL);
        ctx.update(secret.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.sign().as_ref());
        key
    }

    /// The token whose secret is `secret`, presented without identity or target (a bearer token
    /// of the approvals API), if it is live at `now` (not revoked, not expired, uses left) and of
    /// `scope`. Found in O(1) through `BEARER_INDEX`, then the secret is checked against the
    /// stored SCRAM verifier (constant-time), so an index row alone never authenticates. Does not
    /// consume a use. Costs one PBKDF2 (4096 iterations) for a secret that is in the index.
    ///
    /// # Errors
    /// Store errors; a corrupt record (fail closed: the caller refuses the request).
    pub fn find_bearer(
        &self,
        secret: &str,
        scope: &str,
        now: u64,
    ) -> Result<Option<TokenInfo>, StoreError> {
        if secret.len() != SECRET_LEN || !secret.starts_with(SECRET_PREFIX) {
            return Ok(None);
        }
        let key = self.bearer_key(secret);
        let txn = self.store.db().begin_read()?;
        let bearer = match txn.open_table(BEARER_INDEX) {
            Ok(t) => t,
            // No token was ever issued by a version with the index.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(id) = bearer.get(key.as_slice())?.map(|v| v.value().to_string()) else {
            return Ok(None);
        };
        let tokens = txn.open_table(TOKENS)?;
        let Some(rec) = tokens.get(id.as_str())?.map(|v| Record::decode(v.value())) else {
            return Ok(None);
        };
        let rec = rec?;
        let salt = self.scram_salt(&rec.identity, &rec.target);
        let presented = derive_verifier(secret.as_bytes(), &salt, SCRAM_ITERATIONS);
        let matches = ct_eq(&rec.verifier.stored_key, &presented.stored_key);
        if matches && rec.is_live(now) && rec.scope == scope {
            Ok(Some(rec.info(&id)))
        } else {
            Ok(None)
        }
    }

    /// Live candidates (not expired, not revoked, uses left) of this identity, target and scope,
    /// newest first, at most [`MAX_CANDIDATES`]. During SCRAM the client's proof is checked
    /// against each; the one that matches is then [`consume`](Self::consume)d.
    ///
    /// # Errors
    /// Store errors; a corrupt record (fail closed: authentication is refused).
    pub fn candidates(
        &self,
        identity: &str,
        target: &str,
        scope: &str,
        now: u64,
    ) -> Result<Vec<(String, Verifier)>, StoreError> {
        Ok(self
            .live(identity, target, scope, now)?
            .into_iter()
            .map(|(id, rec)| (id, rec.verifier))
            .collect())
    }

    /// Live records of (identity, target, scope), newest first, capped.
    fn live(
        &self,
        identity: &str,
        target: &str,
        scope: &str,
        now: u64,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        if identity.contains('\0') || target.contains('\0') {
            return Ok(Vec::new());
        }
        let prefix = index_prefix(identity, target);
        // Keys of this pair sort in [prefix, prefix with its final \0 replaced by \x01).
        let end = format!("{identity}\0{target}\u{1}");
        let txn = self.store.db().begin_read()?;
        let index = txn.open_table(TOKEN_INDEX)?;
        let tokens = txn.open_table(TOKENS)?;
        let mut out = Vec::new();
        for row in index.range(prefix.as_str()..end.as_str())? {
            let (k, _) = row?;
            let Some(id) = k.value().strip_prefix(prefix.as_str()) else {
                continue;
            };
            let Some(v) = tokens.get(id)? else {
                continue;
            };
            let rec = Record::decode(v.value())?;
            if rec.is_live(now) && rec.scope == scope {
                out.push((id.to_string(), rec));
            }
        }
        out.sort_by(|a, b| (b.1.created_at, &b.0).cmp(&(a.1.created_at, &a.0)));
        out.truncate(MAX_CANDIDATES);
        Ok(out)
    }

    /// For cleartext password authentication: derives the verifier of `secret` and returns the id
    /// of the live token it matches (compared in constant time), without consuming it.
    ///
    /// # Errors
    /// Store errors; a corrupt record.
    pub fn find_by_secret(
        &self,
        identity: &str,
        target: &str,
        scope: &str,
        secret: &str,
        now: u64,
    ) -> Result<Option<String>, StoreError> {
        // Not a token: don't spend a PBKDF2 on it.
        if secret.len() != SECRET_LEN || !secret.starts_with(SECRET_PREFIX) {
            return Ok(None);
        }
        // Derive even when there are no candidates, so the time taken doesn't say whether any exist.
        let candidates = self.candidates(identity, target, scope, now)?;
        let salt = self.scram_salt(identity, target);
        let presented = derive_verifier(secret.as_bytes(), &salt, SCRAM_ITERATIONS);
        let mut found = None;
        for (id, v) in candidates {
            // Check every candidate, so the time taken doesn't say which one matched.
            if ct_eq(&v.stored_key, &presented.stored_key) && found.is_none() {
                found = Some(id);
            }
        }
        Ok(found)
    }

    /// Atomically (one write transaction, `Durability::Immediate`) re-checks revocation, expiry
    /// and uses, and consumes one use. Call after the proof matched and before the session starts.
    ///
    /// # Errors
    /// Store errors; a corrupt record. A token that is not usable is `Ok(Err(Invalid))`.
    pub fn consume(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Result<TokenInfo, TokenFailure>, StoreError> {
        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let outcome = {
            let mut tokens = txn.open_table(TOKENS)?;
            let found = tokens.get(id)?.map(|v| Record::decode(v.value()));
            match found {
                Some(rec) => {
                    let mut rec = rec?;
                    if rec.is_live(now) {
                        rec.used = rec.used.saturating_add(1);
                        rec.uses_left = rec.uses_left.map(|n| n.saturating_sub(1));
                        tokens.insert(id, rec.encode().as_slice())?;
                        Ok(rec.info(id))
                    } else {
                        Err(TokenFailure::Invalid)
                    }
                }
                None => Err(TokenFailure::Invalid),
            }
        };
        if outcome.is_ok() {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(outcome)
    }

    /// Deletes tokens whose expiry is more than `keep` in the past (housekeeping; revoked and
    /// used-up tokens stay listed until then). Returns how many were deleted.
    ///
    /// # Errors
    /// Store errors; a corrupt record.
    pub fn purge_expired(&self, now: u64, keep: Duration) -> Result<usize, StoreError> {
        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let n = {
            let mut tokens = txn.open_table(TOKENS)?;
            let mut index = txn.open_table(TOKEN_INDEX)?;
            let mut bearer = txn.open_table(BEARER_INDEX)?;
            let mut doomed = Vec::new();
            for row in tokens.iter()? {
                let (k, v) = row?;
                let rec = Record::decode(v.value())?;
                if rec.expires_at.saturating_add(keep.as_secs()) <= now {
                    let key = format!("{}{}", index_prefix(&rec.identity, &rec.target), k.value());
                    doomed.push((k.value().to_string(), key, rec.bearer_key));
                }
            }
            for (id, key, bearer_key) in &doomed {
                tokens.remove(id.as_str())?;
                index.remove(key.as_str())?;
                if let Some(b) = bearer_key {
                    bearer.remove(b.as_slice())?;
                }
            }
            doomed.len()
        };
        txn.commit()?;
        Ok(n)
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    base64_with(bytes, BASE64URL)
}

fn base64_with(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let sym = |i: u32| char::from(alphabet[usize::try_from(i & 63).unwrap_or(0)]);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        if chunk.len() > 1 {
            out.push(sym(n >> 6));
        }
        if chunk.len() > 2 {
            out.push(sym(n));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use crate::store::test_dir;
    use redb::ReadableTableMetadata;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0u8; 32]).len(), 43);
    }

    fn tokens(name: &str) -> (Tokens, std::path::PathBuf) {
        let dir = test_dir(name);
        let store = Store::open(&dir).unwrap();
        (Tokens::new(store).unwrap(), dir)
    }

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn issued_token_has_documented_shape_and_is_found_by_secret() {
        let (t, dir) = tokens("tok-shape");
        let tok = t
            .issue("alice", "app-db", "connect", H, None, "cli", 1000)
            .unwrap();
        assert_eq!(tok.secret.len(), SECRET_LEN);
        assert!(tok.secret.starts_with("pct_"));
        assert!(tok.secret[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(tok.id.len(), 16);
        assert!(tok.id.starts_with("tok_"));
        assert_eq!(tok.expires_at, 4600);
        let found = t
            .find_by_secret("alice", "app-db", "connect", &tok.secret, 1001)
            .unwrap();
        assert_eq!(found.as_deref(), Some(tok.id.as_str()));
        // Wrong secret, other target, other scope, other identity: nothing.
        let mut wrong = tok.secret.clone();
        wrong.replace_range(10..11, if &wrong[10..11] == "A" { "B" } else { "A" });
        for (i, tg, sc, s) in [
            ("alice", "app-db", "connect", wrong.as_str()),
            ("alice", "other", "connect", tok.secret.as_str()),
            ("alice", "app-db", "admin", tok.secret.as_str()),
            ("bob", "app-db", "connect", tok.secret.as_str()),
        ] {
            assert_eq!(t.find_by_secret(i, tg, sc, s, 1001).unwrap(), None);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn stored_verifier_matches_the_secret_under_the_pair_salt() {
        let (t, dir) = tokens("tok-verifier");
        let tok = t
            .issue("alice", "app-db", "connect", H, None, "", 0)
            .unwrap();
        let salt = t.scram_salt("alice", "app-db");
        let c = t.candidates("alice", "app-db", "connect", 1).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, tok.id);
        assert_eq!(
            c[0].1,
            derive_verifier(tok.secret.as_bytes(), &salt, SCRAM_ITERATIONS)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn salt_is_per_pair_and_given_for_unknown_pairs_too() {
        let (t, dir) = tokens("tok-salt");
        let a = t.scram_salt("alice", "app-db");
        assert_eq!(a, t.scram_salt("alice", "app-db"));
        assert_ne!(a, t.scram_salt("alice", "app-db2"));
        assert_ne!(a, t.scram_salt("bob", "app-db"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(t.scram_salt("ab", "c"), t.scram_salt("a", "bc"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn candidates_skip_dead_tokens_and_come_newest_first() {
        let (t, dir) = tokens("tok-candidates");
        let old = t.issue("alice", "db", "connect", H, None, "", 100).unwrap();
        let new = t.issue("alice", "db", "connect", H, None, "", 200).unwrap();
        let revoked = t.issue("alice", "db", "connect", H, None, "", 300).unwrap();
        t.revoke(&revoked.id).unwrap();
        let short = t
            .issue(
                "alice",
                "db",
                "connect",
                Duration::from_secs(10),
                None,
                "",
                250,
            )
            .unwrap();
        let once = t
            .issue("alice", "db", "connect", H, Some(1), "", 260)
            .unwrap();
        assert!(t.consume(&once.id, 270).unwrap().is_ok());
        t.issue("alice", "dbx", "connect", H, None, "", 200)
            .unwrap();
        t.issue("alice", "d", "connect", H, None, "", 200).unwrap();
        let ids: Vec<String> = t
            .candidates("alice", "db", "connect", 400)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![new.id.clone(), old.id.clone()]);
        assert!(t
            .candidates("alice", "db", "connect", 255)
            .unwrap()
            .iter()
            .any(|c| c.0 == short.id));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn candidates_are_capped() {
        let (t, dir) = tokens("tok-cap");
        for i in 0..70 {
            t.issue("alice", "db", "connect", H, None, "", i).unwrap();
        }
        let c = t.candidates("alice", "db", "connect", 100).unwrap();
        assert_eq!(c.len(), MAX_CANDIDATES);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn consume_counts_uses_and_refuses_used_up_expired_revoked_unknown() {
        let (t, dir) = tokens("tok-consume");
        let twice = t
            .issue("alice", "db", "connect", H, Some(2), "ci", 0)
            .unwrap();
        let info = t.consume(&twice.id, 1).unwrap().unwrap();
        assert_eq!((info.used, info.uses_left), (1, Some(1)));
        let info = t.consume(&twice.id, 2).unwrap().unwrap();
        assert_eq!((info.used, info.uses_left), (2, Some(0)));
        assert_eq!(t.consume(&twice.id, 3).unwrap(), Err(TokenFailure::Invalid));

        let exp = t
            .issue(
                "alice",
                "db",
                "connect",
                Duration::from_secs(5),
                None,
                "",
                0,
            )
            .unwrap();
        assert!(t.consume(&exp.id, 4).unwrap().is_ok());
        assert_eq!(t.consume(&exp.id, 5).unwrap(), Err(TokenFailure::Invalid));

        let rev = t.issue("alice", "db", "connect", H, None, "", 0).unwrap();
        let info = t.revoke(&rev.id).unwrap().unwrap();
        assert!(info.revoked);
        assert_eq!(t.consume(&rev.id, 1).unwrap(), Err(TokenFailure::Invalid));
        assert_eq!(
            t.consume("tok_000000000000", 1).unwrap(),
            Err(TokenFailure::Invalid)
        );
        assert_eq!(t.revoke("tok_000000000000").unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn list_shows_everything_but_the_secret() {
        let (t, dir) = tokens("tok-list");
        let a = t
            .issue("alice", "db", "connect", H, Some(3), "laptop", 10)
            .unwrap();
        let b = t
            .issue("ci", "db", "connect", H, None, "job 42", 20)
            .unwrap();
        let l = t.list().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0],
            TokenInfo {
                id: a.id.clone(),
                identity: "alice".into(),
                target: "db".into(),
                scope: "connect".into(),
                created_at: 10,
                expires_at: 3610,
                uses_left: Some(3),
                used: 0,
                origin: "laptop".into(),
                revoked: false,
            }
        );
        assert_eq!(l[1].id, b.id);
        assert!(!format!("{l:?}").contains(&a.secret));
        assert!(!format!("{a:?}").contains(&a.secret));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn purge_removes_long_expired_tokens_and_their_index_rows() {
        let (t, dir) = tokens("tok-purge");
        let gone = t
            .issue(
                "alice",
                "db",
                "connect",
                Duration::from_secs(10),
                None,
                "",
                0,
            )
            .unwrap();
        let kept = t
            .issue(
                "alice",
                "db",
                "connect",
                Duration::from_secs(100),
                None,
                "",
                0,
            )
            .unwrap();
        assert_eq!(t.purge_expired(50, Duration::from_secs(60)).unwrap(), 0);
        assert_eq!(t.purge_expired(70, Duration::from_secs(60)).unwrap(), 1);
        let ids: Vec<String> = t.list().unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![kept.id]);
        let txn = t.store().db().begin_read().unwrap();
        let index = txn.open_table(TOKEN_INDEX).unwrap();
        assert_eq!(index.len().unwrap(), 1);
        assert!(index
            .iter()
            .unwrap()
            .all(|r| !r.unwrap().0.value().ends_with(&gone.id)));
        let bearer = txn.open_table(BEARER_INDEX).unwrap();
        assert_eq!(bearer.len().unwrap(), 1);
        assert!(bearer
            .iter()
            .unwrap()
            .all(|r| r.unwrap().1.value() != gone.id));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rejects_bad_issue_input() {
        let (t, dir) = tokens("tok-input");
        let bad = [
            t.issue("", "db", "connect", H, None, "", 0),
            t.issue("a\0b", "db", "connect", H, None, "", 0),
            t.issue("alice", "db", "", H, None, "", 0),
            t.issue("alice", "db", "connect", Duration::ZERO, None, "", 0),
            t.issue("alice", "db", "connect", H, Some(0), "", 0),
            t.issue("alice", "db", "connect", H, None, &"x".repeat(513), 0),
        ];
        for r in bad {
            assert!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_panic() {
        let (t, dir) = tokens("tok-corrupt");
        let tok = t.issue("alice", "db", "connect", H, None, "", 0).unwrap();
        let txn = t.store().db().begin_write().unwrap();
        txn.open_table(TOKENS)
            .unwrap()
            .insert(tok.id.as_str(), [1u8, 0, 0].as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert!(matches!(t.list(), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            t.candidates("alice", "db", "connect", 1),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(t.consume(&tok.id, 1), Err(StoreError::Corrupt(_))));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn record_round_trips_and_every_truncation_is_corrupt() {
        let r = Record {
            identity: "alice".into(),
            target: "db".into(),
            scope: "connect".into(),
            created_at: 1,
            expires_at: 2,
            uses_left: Some(3),
            used: 4,
            origin: "o".into(),
            revoked: true,
            verifier: Verifier {
                stored_key: [1; 32],
                server_key: [2; 32],
            },
            bearer_key: Some([3; 32]),
        };
        let e = r.encode();
        assert_eq!(e[0], RECORD_VERSION);
        assert_eq!(Record::decode(&e).unwrap(), r);
        for cut in 0..e.len() {
            assert!(Record::decode(&e[..cut]).is_err());
        }
        // A version-1 record (no bearer key) still decodes, and re-encodes as version 1.
        let v1 = Record {
            bearer_key: None,
            ..r
        };
        let e = v1.encode();
        assert_eq!(e[0], RECORD_VERSION_1);
        assert_eq!(Record::decode(&e).unwrap(), v1);
        for cut in 0..e.len() {
            assert!(Record::decode(&e[..cut]).is_err());
        }
    }

    #[test]
    fn find_bearer_finds_live_approve_tokens_only() {
        let (t, dir) = tokens("tok-bearer");
        let tok = t.issue("alice", "-", "approve", H, None, "", 1000).unwrap();
        let info = t
            .find_bearer(&tok.secret, "approve", 1001)
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.id.as_str(), info.identity.as_str(), info.used),
            (tok.id.as_str(), "alice", 0)
        );
        // Not consumed: found again.
        assert!(t
            .find_bearer(&tok.secret, "approve", 1002)
            .unwrap()
            .is_some());
        // Wrong scope, wrong secret, malformed secret, expired.
        assert_eq!(t.find_bearer(&tok.secret, "connect", 1001).unwrap(), None);
        let mut wrong = tok.secret.clone();
        wrong.replace_range(10..11, if &wrong[10..11] == "A" { "B" } else { "A" });
        assert_eq!(t.find_bearer(&wrong, "approve", 1001).unwrap(), None);
        assert_eq!(t.find_bearer("pct_short", "approve", 1001).unwrap(), None);
        assert_eq!(t.find_bearer("", "approve", 1001).unwrap(), None);
        assert_eq!(t.find_bearer(&tok.secret, "approve", 4600).unwrap(), None);
        // A connect token is not an approve token.
        let conn = t
            .issue("alice", "db", "connect", H, None, "", 1000)
            .unwrap();
        assert_eq!(t.find_bearer(&conn.secret, "approve", 1001).unwrap(), None);
        assert!(t
            .find_bearer(&conn.secret, "connect", 1001)
            .unwrap()
            .is_some());
        // Revoked.
        t.revoke(&tok.id).unwrap();
        assert_eq!(t.find_bearer(&tok.secret, "approve", 1001).unwrap(), None);
        // Used up (connect token with uses).
        let once = t
            .issue("bob", "db", "connect", H, Some(1), "", 1000)
            .unwrap();
        assert!(t.consume(&once.id, 1001).unwrap().is_ok());
        assert_eq!(t.find_bearer(&once.secret, "connect", 1002).unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn find_bearer_checks_the_verifier_not_only_the_index() {
        let (t, dir) = tokens("tok-bearer-verifier");
        let a = t.issue("alice", "-", "approve", H, None, "", 0).unwrap();
        let b = t.issue("bob", "-", "approve", H, None, "", 0).unwrap();
        // Point a's index row at b's record: a's secret must not open b.
        let key = t.bearer_key(&a.secret);
        let txn = t.store().db().begin_write().unwrap();
        txn.open_table(BEARER_INDEX)
            .unwrap()
            .insert(key.as_slice(), b.id.as_str())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(t.find_bearer(&a.secret, "approve", 1).unwrap(), None);
        assert!(t.find_bearer(&b.secret, "approve", 1).unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn approve_tokens_refuse_uses() {
        let (t, dir) = tokens("tok-approve-uses");
        let r = t.issue("alice", "-", "approve", H, Some(1), "", 0);
        assert!(
            matches!(r, Err(StoreError::InvalidInput(m)) if m.contains("--uses")),
            "{r:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn find_bearer_without_any_indexed_token_is_none() {
        let (t, dir) = tokens("tok-bearer-empty");
        let secret = format!("pct_{}", "A".repeat(43));
        assert_eq!(t.find_bearer(&secret, "approve", 0).unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
