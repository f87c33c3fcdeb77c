//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for PostgreSQL SASL authentication, both sides:
//! the gateway as a server (clients log in with a token) and as a client (the gateway logs in to
//! the upstream server with the credential it holds).
//!
//! Sans-IO: messages are byte slices in and `Vec<u8>` out; nonces are passed in by the caller,
//! which draws them from `ring::rand::SystemRandom` (at least 18 random bytes, base64-encoded, as
//! libpq does). Each protocol step is a type, and each transition consumes it.
//!
//! Scope and known limits:
//! - No channel binding (`SCRAM-SHA-256-PLUS`): the server refuses `p=` and accepts `n` and `y`;
//!   the client always sends `n,,`.
//! - Passwords are used as raw bytes, without SASLprep (RFC 4013). For ASCII passwords (and the
//!   gateway's `pct_` tokens) that is the same thing; an upstream password with non-ASCII
//!   characters that SASLprep would change won't match what PostgreSQL stored.
//! - The SCRAM username is ignored by the server side, as PostgreSQL does (RFC 5802 5.1 allows it;
//!   PostgreSQL uses the user from the StartupMessage), and sent empty by [`client_first`].
//! - Every message is capped at [`MAX_MESSAGE`] bytes.

use std::fmt;
use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

/// Most iterations the gateway will compute for an upstream: a hostile or misconfigured upstream
/// can't make the gateway burn more CPU than this per login (~0.5 s on one core).
pub const MAX_UPSTREAM_ITERATIONS: u32 = 1_000_000;

/// Longest SCRAM message accepted. Real ones are 30 to 200 bytes.
pub const MAX_MESSAGE: usize = 4096;

/// The mechanism name, as advertised in AuthenticationSASL.
pub const MECHANISM: &str = "SCRAM-SHA-256";

const KEY_LEN: usize = 32;

/// Why a SCRAM exchange failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The message does not follow the RFC 5802 grammar; the text says where.
    Malformed(&'static str),
    /// The client asked for channel binding (`p=...`), which we don't advertise.
    ChannelBindingUnsupported,
    /// The `c=` attribute of the client-final-message doesn't echo the GS2 header.
    ChannelBindingMismatch,
    /// A mandatory extension (`m=`) we don't know.
    UnsupportedExtension,
    /// The nonce doesn't continue (client) or repeat (server) the one agreed on.
    NonceMismatch,
    /// The iteration count is 0 or above the allowed maximum.
    IterationsOutOfRange(u32),
    /// The client proof matches no candidate verifier: wrong password or token.
    BadProof,
    /// The server's signature is wrong: it does not know the password (or someone in between).
    BadServerSignature,
    /// The server ended the exchange with `e=...`; the text is the server's, sanitized.
    ServerError(String),
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            Self::ChannelBindingUnsupported => {
                f.write_str("SCRAM channel binding was requested but is not offered")
            }
            Self::ChannelBindingMismatch => {
                f.write_str("SCRAM channel-binding data does not match the first message")
            }
            Self::UnsupportedExtension => f.write_str("unsupported mandatory SCRAM extension"),
            Self::NonceMismatch => f.write_str("SCRAM nonce does not match"),
            Self::IterationsOutOfRange(i) => {
                write!(f, "SCRAM iteration count {i} is out of the allowed range")
            }
            Self::BadProof => f.write_str("SCRAM client proof is invalid"),
            Self::BadServerSignature => f.write_str("SCRAM server signature is invalid"),
            Self::ServerError(e) => write!(f, "server rejected SCRAM authentication: {e}"),
        }
    }
}

impl std::error::Error for ScramError {}

/// What a server stores for one password: RFC 5802 `StoredKey` and `ServerKey`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ScramVerifier {
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

/// RFC 5802 3: `SaltedPassword := Hi(Normalize(password), salt, i)`, `ClientKey := HMAC(
/// SaltedPassword, "Client Key")`, `StoredKey := H(ClientKey)`, `ServerKey := HMAC(SaltedPassword,
/// "Server Key")`. `Hi` is PBKDF2 with HMAC-SHA-256. An `iterations` of 0 is computed as 1.
pub fn derive_verifier(password: &[u8], salt: &[u8], iterations: u32) -> ScramVerifier {
    let keys = Keys::derive(
        password,
        salt,
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
    );
    ScramVerifier {
        stored_key: keys.stored_key,
        server_key: keys.server_key,
    }
}

struct Keys {
    client_key: [u8; KEY_LEN],
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl Keys {
    fn derive(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Self {
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt,
            password,
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Self {
            client_key,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// Compares without an early exit, so the time taken doesn't say where the first difference is.
/// (ring's `constant_time::verify_slices_are_equal` is deprecated.)
/// Slices of different lengths are unequal (the length itself is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

// ---------------------------------------------------------------------------------------------
// Message parsing helpers
// ---------------------------------------------------------------------------------------------

fn as_text(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE {
        return Err(ScramError::Malformed("message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// `attr-val = ALPHA "=" value`: returns the value if `part` is attribute `name`.
fn attr<'a>(part: Option<&'a str>, name: char, what: &'static str) -> Result<&'a str, ScramError> {
    let part = part.ok_or(ScramError::Malformed(what))?;
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(c), Some('=')) if c == name => Ok(chars.as_str()),
        _ => Err(ScramError::Malformed(what)),
    }
}

/// RFC 5802 7: `printable = %x21-2B / %x2D-7E ;; Printable ASCII except ","`, `nonce = "r=" c-nonce
/// [s-nonce]`, `c-nonce = printable`.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Optional `extensions = attr-val *("," attr-val)` after the known attributes: accepted and
/// ignored, as long as they are well-formed and not `m=` (which is only valid first).
fn skip_extensions<'a>(parts: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for part in parts {
        let mut chars = part.chars();
        match (chars.next(), chars.next()) {
            (Some(c), Some('=')) if c.is_ascii_alphabetic() => {}
            _ => return Err(ScramError::Malformed("bad extension attribute")),
        }
    }
    Ok(())
}

fn decode_key(b64: &str, what: &'static str) -> Result<[u8; KEY_LEN], ScramError> {
    base64_decode(b64)
        .and_then(|v| <[u8; KEY_LEN]>::try_from(v).ok())
        .ok_or(ScramError::Malformed(what))
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// The server after sending its server-first-message, waiting for the client-final-message.
#[derive(Debug, Clone)]
pub struct ScramServerAwaitingFinal {
    /// The GS2 header as the client sent it (`n,,` or `y,,`); `c=` must echo it in base64.
    gs2_header: String,
    /// Client nonce + server nonce.
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// Namespace for the server side; see [`server_first`] and [`ScramServerAwaitingFinal::finish`].
pub struct ScramServer;

impl ScramServer {
    /// Same as [`server_first`].
    ///
    /// # Errors
    /// As [`server_first`].
    pub fn start(
        client_first: &[u8],
        salt: &[u8],
        iterations: u32,
        server_nonce: &str,
    ) -> Result<(ScramServerAwaitingFinal, Vec<u8>), ScramError> {
        server_first(client_first, salt, iterations, server_nonce)
    }
}

/// Reads the client-first-message (the SASLInitialResponse data) and builds the
/// server-first-message `r=<client nonce><server nonce>,s=<salt>,i=<iterations>`.
///
/// `server_nonce` must be fresh random printable ASCII without ',' (base64 of random bytes).
///
/// # Errors
/// [`ScramError::ChannelBindingUnsupported`] for `p=`; [`ScramError::UnsupportedExtension`] for
/// `m=`; [`ScramError::Malformed`] for anything off-grammar or an authzid (PostgreSQL refuses it
/// too); [`ScramError::IterationsOutOfRange`] for 0 iterations.
pub fn server_first(
    client_first: &[u8],
    salt: &[u8],
    iterations: u32,
    server_nonce: &str,
) -> Result<(ScramServerAwaitingFinal, Vec<u8>), ScramError> {
    if iterations == 0 {
        return Err(ScramError::IterationsOutOfRange(0));
    }
    if !is_printable(server_nonce) {
        return Err(ScramError::Malformed("server nonce is not printable"));
    }
    let text = as_text(client_first)?;
    // RFC 5802 7: client-first-message = gs2-header client-first-message-bare
    //             gs2-header = gs2-cbind-flag "," [ authzid ] ","
    //             gs2-cbind-flag = ("p=" cb-name) / "n" / "y"
    let (flag, rest) = text
        .split_once(',')
        .ok_or(ScramError::Malformed("missing GS2 header"))?;
    match flag {
        // "n" -> client doesn't support channel binding; "y" -> client does support channel
        // binding but thinks the server does not. We never advertise -PLUS, so "y" is honest.
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("missing GS2 header"))?;
    if !authzid.is_empty() {
        return Err(ScramError::Malformed(
            "authorization identity is not supported",
        ));
    }
    let gs2_header = text
        .get(..text.len() - bare.len())
        .ok_or(ScramError::Malformed("missing GS2 header"))?;

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    if bare.starts_with("m=") {
        return Err(ScramError::UnsupportedExtension);
    }
    let mut parts = bare.split(',');
    // username = "n=" saslname: ignored, PostgreSQL authenticates the StartupMessage user.
    attr(parts.next(), 'n', "missing username")?;
    let client_nonce = attr(parts.next(), 'r', "missing nonce")?;
    if !is_printable(client_nonce) {
        return Err(ScramError::Malformed("client nonce is not printable"));
    }
    skip_extensions(parts)?;

    let nonce = format!("{client_nonce}{server_nonce}");
    // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
    let server_first = format!("r={nonce},s={},i={iterations}", base64_encode(salt));
    let state = ScramServerAwaitingFinal {
        gs2_header: gs2_header.to_owned(),
        nonce,
        client_first_bare: bare.to_owned(),
        server_first: server_first.clone(),
    };
    Ok((state, server_first.into_bytes()))
}

impl ScramServerAwaitingFinal {
    /// Reads the client-final-message and verifies its proof against each candidate verifier
    /// (several live tokens of one identity share one salt and iteration count). Returns the index
    /// of the first candidate that matched and the server-final-message `v=<ServerSignature>`.
    ///
    /// Every candidate is checked (no early exit) and each comparison is constant-time.
    ///
    /// # Errors
    /// [`ScramError::ChannelBindingMismatch`] if `c=` isn't the base64 of the GS2 header
    /// (`biws` for `n,,`, `eSws` for `y,,`); [`ScramError::NonceMismatch`];
    /// [`ScramError::BadProof`] if no candidate matches (also when `candidates` is empty);
    /// [`ScramError::Malformed`].
    pub fn finish(
        self,
        client_final: &[u8],
        candidates: &[ScramVerifier],
    ) -> Result<(usize, Vec<u8>), ScramError> {
        let text = as_text(client_final)?;
        // client-final-message-without-proof = channel-binding "," nonce ["," extensions]
        // client-final-message = client-final-message-without-proof "," proof
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("missing proof"))?;
        let proof = decode_key(attr(Some(proof), 'p', "missing proof")?, "bad proof")?;
        let mut parts = without_proof.split(',');
        // channel-binding = "c=" base64: "base64 encoding of cbind-input", cbind-input = gs2-header
        // [ cbind-data ] where cbind-data is absent for "n" and "y".
        let cbind = attr(parts.next(), 'c', "missing channel binding")?;
        if base64_decode(cbind).as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let nonce = attr(parts.next(), 'r', "missing nonce")?;
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        skip_extensions(parts)?;

        // AuthMessage := client-first-message-bare + "," + server-first-message + "," +
        //                client-final-message-without-proof
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        // ClientSignature := HMAC(StoredKey, AuthMessage); ClientKey = ClientProof XOR
        // ClientSignature; the proof is valid if H(ClientKey) == StoredKey (RFC 5802 3).
        let mut matched = None;
        for (i, candidate) in candidates.iter().enumerate() {
            let signature = hmac_sha256(&candidate.stored_key, auth_message.as_bytes());
            let client_key = xor(&proof, &signature);
            if ct_eq(&sha256(&client_key), &candidate.stored_key) && matched.is_none() {
                matched = Some(i);
            }
        }
        let (index, verifier) = matched
            .and_then(|i| Some((i, candidates.get(i)?)))
            .ok_or(ScramError::BadProof)?;
        // ServerSignature := HMAC(ServerKey, AuthMessage); verifier = "v=" base64
        let server_signature = hmac_sha256(&verifier.server_key, auth_message.as_bytes());
        Ok((
            index,
            format!("v={}", base64_encode(&server_signature)).into_bytes(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// The client after sending its client-first-message, waiting for the server-first-message.
#[derive(Clone)]
pub struct ScramClientAwaitingFirst {
    password: Vec<u8>,
    client_nonce: String,
    client_first_bare: String,
}

impl fmt::Debug for ScramClientAwaitingFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientAwaitingFirst")
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

/// The client after sending its client-final-message, waiting for the server-final-message.
#[derive(Clone)]
pub struct ScramClientAwaitingFinal {
    server_signature: [u8; KEY_LEN],
}

impl fmt::Debug for ScramClientAwaitingFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientAwaitingFinal")
            .finish_non_exhaustive()
    }
}

/// Starts a login as libpq does: client-first-message `n,,n=,r=<client_nonce>` (empty username;
/// PostgreSQL uses the StartupMessage user). Send it in a SASLInitialResponse for [`MECHANISM`].
///
/// `client_nonce` must be fresh random printable ASCII without ',' (base64 of random bytes); any
/// other character is dropped so the message stays well-formed.
pub fn client_first(password: &[u8], client_nonce: &str) -> (ScramClientAwaitingFirst, Vec<u8>) {
    client_first_with_username("", password, client_nonce)
}

/// As [`client_first`] with a SCRAM username (escaped as RFC 5802 `saslname`: "=" as "=3D" and ","
/// as "=2C"); for servers other than PostgreSQL and for the RFC 7677 test vector.
pub fn client_first_with_username(
    username: &str,
    password: &[u8],
    client_nonce: &str,
) -> (ScramClientAwaitingFirst, Vec<u8>) {
    let nonce: String = client_nonce
        .chars()
        .filter(|&c| c.is_ascii_graphic() && c != ',')
        .collect();
    let saslname = username.replace('=', "=3D").replace(',', "=2C");
    let bare = format!("n={saslname},r={nonce}");
    let message = format!("n,,{bare}").into_bytes();
    let state = ScramClientAwaitingFirst {
        password: password.to_vec(),
        client_nonce: nonce,
        client_first_bare: bare,
    };
    (state, message)
}

impl ScramClientAwaitingFirst {
    /// Reads the server-first-message (AuthenticationSASLContinue data) and builds the
    /// client-final-message with the proof (send it in a SASLResponse).
    ///
    /// The iteration count must be in `1..=max_iterations` (pass [`MAX_UPSTREAM_ITERATIONS`] unless
    /// configured otherwise) — checked before any key derivation.
    ///
    /// # Errors
    /// [`ScramError::NonceMismatch`] unless the server nonce starts with ours and adds to it;
    /// [`ScramError::IterationsOutOfRange`]; [`ScramError::UnsupportedExtension`] for `m=`;
    /// [`ScramError::Malformed`].
    pub fn handle_server_first(
        self,
        msg: &[u8],
        max_iterations: u32,
    ) -> Result<(ScramClientAwaitingFinal, Vec<u8>), ScramError> {
        let server_first = as_text(msg)?;
        if server_first.starts_with("m=") {
            return Err(ScramError::UnsupportedExtension);
        }
        let mut parts = server_first.split(',');
        // nonce = "r=" c-nonce [s-nonce] ;; Second part provided by server.
        let nonce = attr(parts.next(), 'r', "missing nonce")?;
        if !is_printable(nonce)
            || nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(&self.client_nonce)
        {
            return Err(ScramError::NonceMismatch);
        }
        // salt = "s=" base64
        let salt = base64_decode(attr(parts.next(), 's', "missing salt")?)
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::Malformed("bad salt"))?;
        // iteration-count = "i=" posit-number ;; A positive number.
        let digits = attr(parts.next(), 'i', "missing iteration count")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScramError::Malformed("bad iteration count"));
        }
        let iterations: u32 = digits
            .parse()
            .map_err(|_| ScramError::IterationsOutOfRange(u32::MAX))?;
        let iterations = NonZeroU32::new(iterations)
            .filter(|i| i.get() <= max_iterations)
            .ok_or(ScramError::IterationsOutOfRange(iterations))?;
        skip_extensions(parts)?;

        let keys = Keys::derive(&self.password, &salt, iterations);
        // channel-binding "c=biws" is base64("n,,"): we never do channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        // ClientProof := ClientKey XOR ClientSignature, ClientSignature := HMAC(StoredKey, AuthMessage)
        let proof = xor(
            &keys.client_key,
            &hmac_sha256(&keys.stored_key, auth_message.as_bytes()),
        );
        let server_signature = hmac_sha256(&keys.server_key, auth_message.as_bytes());
        let message = format!("{without_proof},p={}", base64_encode(&proof)).into_bytes();
        Ok((ScramClientAwaitingFinal { server_signature }, message))
    }
}

impl ScramClientAwaitingFinal {
    /// Reads the server-final-message (AuthenticationSASLFinal data) and checks the server's
    /// signature, proving the server knows the password. Only after this returns `Ok` may the
    /// following AuthenticationOk be trusted.
    ///
    /// # Errors
    /// [`ScramError::ServerError`] for `e=...`; [`ScramError::BadServerSignature`];
    /// [`ScramError::Malformed`].
    pub fn handle_server_final(self, msg: &[u8]) -> Result<(), ScramError> {
        // server-final-message = (server-error / verifier) ["," extensions]
        let text = match as_text(msg) {
            Ok(t) => t,
            Err(e) if msg.starts_with(b"e=") => return Err(server_error(msg).unwrap_or(e)),
            Err(e) => return Err(e),
        };
        let mut parts = text.split(',');
        let first = parts.next().unwrap_or_default();
        if first.starts_with("e=") {
            return Err(server_error(msg).unwrap_or(ScramError::Malformed("server error")));
        }
        let signature = decode_key(attr(Some(first), 'v', "missing verifier")?, "bad verifier")?;
        skip_extensions(parts)?;
        if ct_eq(&signature, &self.server_signature) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

/// `server-error = "e=" server-error-value`: keeps printable ASCII up to the first ',' (at most
/// 128 characters) so a hostile server can't put control characters into our logs.
fn server_error(msg: &[u8]) -> Option<ScramError> {
    let value = msg.strip_prefix(b"e=")?;
    let text: String = value
        .iter()
        .take_while(|&&b| b != b',')
        .take(128)
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|&b| char::from(b))
        .collect();
    Some(ScramError::ServerError(text))
}

// ---------------------------------------------------------------------------------------------
// Base64 (RFC 4648 section 4, with padding), strict
// ---------------------------------------------------------------------------------------------

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = usize::try_from((n >> (18 - 6 * i)) & 0x3f).unwrap_or(0);
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Strict standard base64: length a multiple of 4, padding only at the end, no whitespace, and
/// unused bits zero (so every byte string has exactly one accepted encoding). `None` if invalid.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (q, quad) in bytes.chunks_exact(4).enumerate() {
        let pad = match quad {
            [_, _, b'=', b'='] => 2,
            [_, _, _, b'='] => 1,
            _ => 0,
        };
        if pad > 0 && q + 1 != quads {
            return None;
        }
        let mut n = 0u32;
        for &c in quad.get(..4 - pad)? {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad;
        let [_, b0, b1, b2] = n.to_be_bytes();
        match pad {
            0 => out.extend_from_slice(&[b0, b1, b2]),
            1 if b2 == 0 => out.extend_from_slice(&[b0, b1]),
            2 if b1 == 0 && b2 == 0 => out.push(b0),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3, "SCRAM-SHA-256 Authentication Exchange" (user "user", password "pencil").
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn salt() -> Vec<u8> {
        base64_decode(SALT_B64).unwrap_or_default()
    }

    fn rfc_verifier() -> ScramVerifier {
        derive_verifier(b"pencil", &salt(), 4096)
    }

    fn rfc_server() -> ScramServerAwaitingFinal {
        match server_first(CLIENT_FIRST, &salt(), 4096, SERVER_NONCE) {
            Ok((state, msg)) => {
                assert_eq!(msg, SERVER_FIRST);
                state
            }
            Err(e) => panic!("server_first failed: {e}"),
        }
    }

    fn rfc_client() -> ScramClientAwaitingFinal {
        let (client, first) = client_first_with_username("user", b"pencil", CLIENT_NONCE);
        assert_eq!(first, CLIENT_FIRST);
        match client.handle_server_first(SERVER_FIRST, MAX_UPSTREAM_ITERATIONS) {
            Ok((state, msg)) => {
                assert_eq!(msg, CLIENT_FINAL);
                state
            }
            Err(e) => panic!("handle_server_first failed: {e}"),
        }
    }

    #[test]
    fn server_side_reproduces_rfc_7677_vector() {
        assert_eq!(
            rfc_server().finish(CLIENT_FINAL, &[rfc_verifier()]),
            Ok((0, SERVER_FINAL.to_vec()))
        );
    }

    #[test]
    fn client_side_reproduces_rfc_7677_vector() {
        assert_eq!(rfc_client().handle_server_final(SERVER_FINAL), Ok(()));
    }

    #[test]
    fn server_finds_the_matching_candidate_among_several() {
        let other = derive_verifier(b"other", &salt(), 4096);
        let candidates = [other, other, rfc_verifier(), other];
        assert_eq!(
            rfc_server().finish(CLIENT_FINAL, &candidates),
            Ok((2, SERVER_FINAL.to_vec()))
        );
    }

    #[test]
    fn wrong_password_is_bad_proof() {
        let wrong = derive_verifier(b"pencil2", &salt(), 4096);
        assert_eq!(
            rfc_server().finish(CLIENT_FINAL, &[wrong]),
            Err(ScramError::BadProof)
        );
        assert_eq!(
            rfc_server().finish(CLIENT_FINAL, &[]),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn tampered_proof_is_bad_proof() {
        let tampered = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVA=";
        assert_eq!(
            rfc_server().finish(tampered, &[rfc_verifier()]),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn server_refuses_tampered_nonce() {
        let msg = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,\
            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            rfc_server().finish(msg, &[rfc_verifier()]),
            Err(ScramError::NonceMismatch)
        );
    }

    #[test]
    fn client_refuses_server_nonce_not_extending_ours() {
        for msg in [
            &b"r=XOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"[..],
            b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"r=rOprNGfw,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ] {
            let (client, _) = client_first(b"pencil", CLIENT_NONCE);
            assert!(
                matches!(
                    client.handle_server_first(msg, 4096),
                    Err(ScramError::NonceMismatch)
                ),
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn client_refuses_iterations_above_max_or_zero() {
        let (client, _) = client_first(b"pencil", CLIENT_NONCE);
        assert_eq!(
            client
                .clone()
                .handle_server_first(SERVER_FIRST, 4095)
                .map(|_| ()),
            Err(ScramError::IterationsOutOfRange(4096))
        );
        let zero = b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0";
        assert_eq!(
            client.clone().handle_server_first(zero, 4096).map(|_| ()),
            Err(ScramError::IterationsOutOfRange(0))
        );
        let huge = b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999";
        assert_eq!(
            client
                .clone()
                .handle_server_first(huge, MAX_UPSTREAM_ITERATIONS)
                .map(|_| ()),
            Err(ScramError::IterationsOutOfRange(u32::MAX))
        );
        let signed = b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+5";
        assert!(matches!(
            client.handle_server_first(signed, 4096),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn server_refuses_channel_binding_request() {
        assert_eq!(
            server_first(b"p=tls-server-end-point,,n=,r=abc", &salt(), 4096, "xyz").map(|_| ()),
            Err(ScramError::ChannelBindingUnsupported)
        );
    }

    #[test]
    fn server_refuses_mandatory_extension_and_authzid() {
        assert_eq!(
            server_first(b"n,,m=ext,n=,r=abc", &salt(), 4096, "xyz").map(|_| ()),
            Err(ScramError::UnsupportedExtension)
        );
        assert!(matches!(
            server_first(b"n,a=admin,n=,r=abc", &salt(), 4096, "xyz"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn server_accepts_y_flag_and_checks_its_echo() {
        let Ok((server, _)) = server_first(b"y,,n=,r=abc", &salt(), 4096, "xyz") else {
            panic!("y,, must be accepted");
        };
        // "c=biws" (n,,) is not the echo of "y,,": a downgrade someone in between could attempt.
        assert_eq!(
            server.clone().finish(
                b"c=biws,r=abcxyz,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                &[rfc_verifier()]
            ),
            Err(ScramError::ChannelBindingMismatch)
        );
        assert_eq!(
            server.finish(
                b"c=eSws,r=abcxyz,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                &[rfc_verifier()]
            ),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn truncated_messages_are_malformed_not_panics() {
        for n in 0..CLIENT_FIRST.len() {
            let r = server_first(&CLIENT_FIRST[..n], &salt(), 4096, SERVER_NONCE);
            // From 13 bytes on ("n,,n=user,r=r") the prefix is itself a valid message.
            assert!(r.is_err() || n >= 13, "{n} bytes accepted");
        }
        let verifier = rfc_verifier();
        for n in 0..CLIENT_FINAL.len() {
            assert!(rfc_server()
                .finish(&CLIENT_FINAL[..n], &[verifier])
                .is_err());
        }
        for n in 0..SERVER_FIRST.len() {
            let (client, _) = client_first_with_username("user", b"pencil", CLIENT_NONCE);
            // A truncated iteration count ("i=40") is a valid, different message.
            let r = client.handle_server_first(&SERVER_FIRST[..n], 4096);
            assert!(
                r.is_err() || n >= SERVER_FIRST.len() - 3,
                "{n} bytes accepted"
            );
        }
        let client = rfc_client();
        for n in 0..SERVER_FINAL.len() {
            assert!(client
                .clone()
                .handle_server_final(&SERVER_FINAL[..n])
                .is_err());
        }
    }

    #[test]
    fn client_refuses_wrong_server_signature_and_reports_server_error() {
        assert_eq!(
            rfc_client().handle_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5="),
            Err(ScramError::Malformed("bad verifier"))
        );
        assert_eq!(
            rfc_client().handle_server_final(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
        assert_eq!(
            rfc_client().handle_server_final(b"e=invalid-proof\x1b[31m"),
            Err(ScramError::ServerError("invalid-proof[31m".to_owned()))
        );
    }

    #[test]
    fn client_and_server_pair_authenticate_each_other() {
        let salt = b"0123456789abcdef";
        let verifier = derive_verifier(b"pct_token", salt, 4096);
        let (client, first) = client_first(b"pct_token", "Y2xpZW50LW5vbmNl");
        assert_eq!(first, b"n,,n=,r=Y2xpZW50LW5vbmNl");
        let (server, server_first_msg) =
            server_first(&first, salt, 4096, "c2VydmVyLW5vbmNl").unwrap_or_else(|e| panic!("{e}"));
        let (client, client_final) = client
            .handle_server_first(&server_first_msg, MAX_UPSTREAM_ITERATIONS)
            .unwrap_or_else(|e| panic!("{e}"));
        let (index, server_final) = server
            .finish(&client_final, &[verifier])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index, 0);
        assert_eq!(client.handle_server_final(&server_final), Ok(()));
    }

    #[test]
    fn pair_with_wrong_password_fails_on_both_sides() {
        let salt = b"0123456789abcdef";
        let verifier = derive_verifier(b"right", salt, 16);
        let (client, first) = client_first(b"wrong", "bm9uY2U");
        let (server, sf) =
            server_first(&first, salt, 16, "c2VydmVy").unwrap_or_else(|e| panic!("{e}"));
        let (_, cf) = client
            .handle_server_first(&sf, 16)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.finish(&cf, &[verifier]), Err(ScramError::BadProof));
    }

    #[test]
    fn client_escapes_username_and_drops_bad_nonce_chars() {
        let (_, msg) = client_first_with_username("a=b,c", b"p", "ab,c\n");
        assert_eq!(msg, b"n,,n=a=3Db=2Cc,r=abc");
    }

    #[test]
    fn rejects_oversized_messages() {
        let big = vec![b'a'; MAX_MESSAGE + 1];
        assert_eq!(
            server_first(&big, &salt(), 4096, "x").map(|_| ()),
            Err(ScramError::Malformed("message too long"))
        );
    }

    #[test]
    fn base64_round_trips_and_rejects_non_canonical() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)), Some(data));
        }
        assert_eq!(base64_encode(b"n,,"), "biws");
        assert_eq!(base64_encode(b"y,,"), "eSws");
        assert_eq!(base64_decode("Zm9vYg=="), Some(b"foob".to_vec()));
        for bad in [
            "Zm9vYh==",
            "Zm9vYmE",
            "Zm9v YmE=",
            "Zg==Zg==",
            "Z===",
            "====",
            "Zm9\n",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }
}
