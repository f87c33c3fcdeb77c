//! Stored forms of approval requests and grants (versioned, see `store/codec.rs`). Decoding never
//! panics and never allocates more than the value's own length justifies.

use super::{ApprovalRequest, Grant, State};
use crate::store::codec::{Dec, Enc};
use crate::store::StoreError;

/// Version byte of an approval request record.
const REQUEST_VERSION: u8 = 1;
/// Version byte of a grant record.
const GRANT_VERSION: u8 = 1;

const REQUEST: &str = "approval request record";
const GRANT: &str = "grant record";

/// A grant as stored: the grant and, once revoked, by whom and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredGrant {
    pub grant: Grant,
    /// The request whose approval created it.
    pub request: String,
    pub revoked: Option<(String, u64)>,
}

fn opt_str(e: Enc, v: Option<&str>) -> Enc {
    match v {
        Some(s) => e.u8(1).str(s),
        None => e.u8(0),
    }
}

fn opt_u64(e: Enc, v: Option<u64>) -> Enc {
    match v {
        Some(n) => e.u8(1).u64(n),
        None => e.u8(0),
    }
}

fn dec_opt_str(d: &mut Dec<'_>, what: &'static str) -> Result<Option<String>, StoreError> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(d.string()?)),
        _ => Err(StoreError::Corrupt(what)),
    }
}

fn dec_opt_u64(d: &mut Dec<'_>, what: &'static str) -> Result<Option<u64>, StoreError> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(d.u64()?)),
        _ => Err(StoreError::Corrupt(what)),
    }
}

/// A list count, checked against the bytes left (each item takes at least `min_item` bytes), so a
/// corrupt count can't make us reserve gigabytes.
fn count(
    d: &mut Dec<'_>,
    min_item: usize,
    left: usize,
    what: &'static str,
) -> Result<usize, StoreError> {
    let n = usize::try_from(d.u32()?).map_err(|_| StoreError::Corrupt(what))?;
    if n.saturating_mul(min_item) > left {
        return Err(StoreError::Corrupt(what));
    }
    Ok(n)
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn encode_request(r: &ApprovalRequest) -> Vec<u8> {
    let mut e = Enc::new(REQUEST_VERSION)
        .str(&r.id)
        .str(&r.requester)
        .str(&r.origin)
        .str(&r.target)
        .str(&r.session)
        .str(&r.text)
        .u32(len32(r.params.len()));
    for p in &r.params {
        e = opt_str(e, p.as_deref());
    }
    e = e
        .str(&r.hash)
        .str(&r.fingerprint)
        .str(&r.rule)
        .u64(r.created_at)
        .u64(r.expires_at)
        .u8(r.state.code())
        .u32(r.required)
        .u32(len32(r.approvals.len()));
    for (who, at) in &r.approvals {
        e = e.str(who).u64(*at);
    }
    e = opt_str(e, r.decided_by.as_deref());
    e = opt_str(e, r.reason.as_deref());
    opt_u64(e, r.decided_at).finish()
}

pub(super) fn decode_request(buf: &[u8]) -> Result<ApprovalRequest, StoreError> {
    let mut d = Dec::new(buf, REQUEST_VERSION, REQUEST)?;
    let id = d.string()?;
    let requester = d.string()?;
    let origin = d.string()?;
    let target = d.string()?;
    let session = d.string()?;
    let text = d.string()?;
    let n = count(&mut d, 1, buf.len(), REQUEST)?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        params.push(dec_opt_str(&mut d, REQUEST)?);
    }
    let hash = d.string()?;
    let fingerprint = d.string()?;
    let rule = d.string()?;
    let created_at = d.u64()?;
    let expires_at = d.u64()?;
    let state = State::from_code(d.u8()?).ok_or(StoreError::Corrupt(REQUEST))?;
    let required = d.u32()?;
    let n = count(&mut d, 12, buf.len(), REQUEST)?;
    let mut approvals = Vec::with_capacity(n);
    for _ in 0..n {
        approvals.push((d.string()?, d.u64()?));
    }
    let decided_by = dec_opt_str(&mut d, REQUEST)?;
    let reason = dec_opt_str(&mut d, REQUEST)?;
    let decided_at = dec_opt_u64(&mut d, REQUEST)?;
    d.finish()?;
    Ok(ApprovalRequest {
        id,
        requester,
        origin,
        target,
        session,
        text,
        params,
        hash,
        fingerprint,
        rule,
        created_at,
        expires_at,
        state,
        required,
        approvals,
        decided_by,
        reason,
        decided_at,
    })
}

pub(super) fn encode_grant(s: &StoredGrant) -> Vec<u8> {
    let g = &s.grant;
    let mut e = Enc::new(GRANT_VERSION)
        .str(&g.id)
        .str(&s.request)
        .str(&g.identity)
        .str(&g.target)
        .str(&g.fingerprint)
        .str(&g.text)
        .str(&g.rule)
        .u32(len32(g.granted_by.len()));
    for who in &g.granted_by {
        e = e.str(who);
    }
    e = e.u64(g.created_at).u64(g.expires_at);
    match &s.revoked {
        Some((by, at)) => e.u8(1).str(by).u64(*at).finish(),
        None => e.u8(0).finish(),
    }
}

pub(super) fn decode_grant(buf: &[u8]) -> Result<StoredGrant, StoreError> {
    let mut d = Dec::new(buf, GRANT_VERSION, GRANT)?;
    let id = d.string()?;
    let request = d.string()?;
    let identity = d.string()?;
    let target = d.string()?;
    let fingerprint = d.string()?;
    let text = d.string()?;
    let rule = d.string()?;
    let n = count(&mut d, 4, buf.len(), GRANT)?;
    let mut granted_by = Vec::with_capacity(n);
    for _ in 0..n {
        granted_by.push(d.string()?);
    }
    let created_at = d.u64()?;
    let expires_at = d.u64()?;
    let revoked = match d.u8()? {
        0 => None,
        1 => Some((d.string()?, d.u64()?)),
        _ => return Err(StoreError::Corrupt(GRANT)),
    };
    d.finish()?;
    Ok(StoredGrant {
        grant: Grant {
            id,
            identity,
            target,
            fingerprint,
            text,
            rule,
            granted_by,
            created_at,
            expires_at,
        },
        request,
        revoked,
    })
}
