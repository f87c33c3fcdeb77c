//! SSH user authentication (RFC 4252, RFC 4256 keyboard-interactive): message codec, the server
//! state machine [`ServerAuth`] and the client state machine [`ClientAuth`].
//!
//! Sans-IO like the rest of `proto::ssh`: payloads (message number first, no packet framing) in,
//! payloads and decisions out. The transport layer carries the payloads and supplies the session
//! identifier; the caller answers the questions this module can't decide (is this key or token
//! valid for this user?) through the check values in [`ServerStep`].
//!
//! Every state transition consumes the state, so a decision can't be answered twice and no
//! payload can be fed while a decision is pending.

use std::fmt;

use super::keys::{sanitize_name, KeyError, MAX_KEY_BLOB, MAX_SIGNATURE_BLOB};
use super::wire::{Reader, WireError, Writer};

/// RFC 4253 §12: SSH_MSG_SERVICE_REQUEST.
pub const SSH_MSG_SERVICE_REQUEST: u8 = 5;
/// RFC 4253 §12: SSH_MSG_SERVICE_ACCEPT.
pub const SSH_MSG_SERVICE_ACCEPT: u8 = 6;
/// RFC 4252 §6: SSH_MSG_USERAUTH_REQUEST.
pub const SSH_MSG_USERAUTH_REQUEST: u8 = 50;
/// RFC 4252 §6: SSH_MSG_USERAUTH_FAILURE.
pub const SSH_MSG_USERAUTH_FAILURE: u8 = 51;
/// RFC 4252 §6: SSH_MSG_USERAUTH_SUCCESS.
pub const SSH_MSG_USERAUTH_SUCCESS: u8 = 52;
/// RFC 4252 §6: SSH_MSG_USERAUTH_BANNER.
pub const SSH_MSG_USERAUTH_BANNER: u8 = 53;
/// RFC 4252 §7: SSH_MSG_USERAUTH_PK_OK (method-specific number 60 of `publickey`).
pub const SSH_MSG_USERAUTH_PK_OK: u8 = 60;
/// RFC 4252 §8: SSH_MSG_USERAUTH_PASSWD_CHANGEREQ (number 60 of `password`).
pub const SSH_MSG_USERAUTH_PASSWD_CHANGEREQ: u8 = 60;
/// RFC 4256 §5: SSH_MSG_USERAUTH_INFO_REQUEST (number 60 of `keyboard-interactive`).
pub const SSH_MSG_USERAUTH_INFO_REQUEST: u8 = 60;
/// RFC 4256 §5: SSH_MSG_USERAUTH_INFO_RESPONSE.
pub const SSH_MSG_USERAUTH_INFO_RESPONSE: u8 = 61;

/// The service that runs user authentication (RFC 4252 §1).
pub const SERVICE_USERAUTH: &str = "ssh-userauth";
/// The service requested in USERAUTH_REQUEST (RFC 4254 §1).
pub const SERVICE_CONNECTION: &str = "ssh-connection";

/// RFC 4253 §11.1 SSH_DISCONNECT_PROTOCOL_ERROR.
pub const DISCONNECT_PROTOCOL_ERROR: u32 = 2;
/// RFC 4253 §11.1 SSH_DISCONNECT_SERVICE_NOT_AVAILABLE.
pub const DISCONNECT_SERVICE_NOT_AVAILABLE: u32 = 7;
/// RFC 4253 §11.1 SSH_DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE.
pub const DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE: u32 = 14;
/// RFC 4253 §11.1 SSH_DISCONNECT_ILLEGAL_USER_NAME.
pub const DISCONNECT_ILLEGAL_USER_NAME: u32 = 15;

/// Longest user name accepted (it names the target; OpenSSH has no tighter rule).
pub const MAX_USER_NAME: usize = 256;
/// Longest password / token / keyboard-interactive response accepted.
pub const MAX_SECRET: usize = 1024;
/// Longest service, method or algorithm name accepted (RFC 4251 §6: names are at most 64).
pub const MAX_NAME: usize = 64;
/// Longest banner text or keyboard-interactive text field accepted by the client.
pub const MAX_TEXT: usize = 8 * 1024;
/// Most keyboard-interactive responses accepted in one INFO_RESPONSE.
pub const MAX_INFO_RESPONSES: usize = 16;

/// The prompt sent for keyboard-interactive (the client shows it; echo is off).
pub const TOKEN_PROMPT: &str = "Token: ";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why an authentication exchange ends. Each maps to an SSH_MSG_DISCONNECT reason
/// ([`AuthError::disconnect_reason`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// A message is not well-formed.
    Malformed(WireError),
    /// A message number this state doesn't accept.
    UnexpectedMessage(u8),
    /// A field is longer than its cap; the text names the field.
    FieldTooLong(&'static str),
    /// The user name contains control characters.
    IllegalUserName,
    /// The client asked for a service other than `ssh-connection` (sanitised name).
    ServiceNotAvailable(String),
    /// RFC 4252 §5: the user or service name changed between requests.
    UserOrServiceChanged,
    /// The client sent more authentication requests than the configured limit.
    TooManyRequests,
    /// Client side: the server's `server-sig-algs` lists no SHA-2 RSA algorithm.
    NoCommonSignatureAlgorithm,
    /// Client side: signing the request failed.
    Signing(KeyError),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed authentication message: {e}"),
            Self::UnexpectedMessage(n) => {
                write!(f, "unexpected message {n} during user authentication")
            }
            Self::FieldTooLong(field) => write!(f, "{field} is longer than the limit"),
            Self::IllegalUserName => f.write_str("user name contains control characters"),
            Self::ServiceNotAvailable(s) => write!(f, "service {s:?} is not available"),
            Self::UserOrServiceChanged => {
                f.write_str("user or service name changed during authentication")
            }
            Self::TooManyRequests => f.write_str("too many authentication requests"),
            Self::NoCommonSignatureAlgorithm => f.write_str(
                "the server accepts no rsa-sha2-256/rsa-sha2-512 signatures (ssh-rsa SHA-1 is \
                 refused); use an ed25519 key for this target",
            ),
            Self::Signing(e) => write!(f, "signing the authentication request failed: {e}"),
        }
    }
}

impl std::error::Error for AuthError {}

impl From<WireError> for AuthError {
    fn from(e: WireError) -> Self {
        AuthError::Malformed(e)
    }
}

impl AuthError {
    /// The SSH_MSG_DISCONNECT reason code to close the connection with.
    pub fn disconnect_reason(&self) -> u32 {
        match self {
            Self::IllegalUserName => DISCONNECT_ILLEGAL_USER_NAME,
            Self::ServiceNotAvailable(_) => DISCONNECT_SERVICE_NOT_AVAILABLE,
            Self::TooManyRequests | Self::NoCommonSignatureAlgorithm => {
                DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE
            }
            _ => DISCONNECT_PROTOCOL_ERROR,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// A password or token. `Debug` never shows it; the memory is overwritten on drop (best effort);
/// `==` takes time independent of where two secrets of equal length differ.
#[derive(Clone)]
pub struct Secret(String);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for Secret {}

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that checks or sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // `into_bytes` reuses the buffer, so this overwrites the bytes the secret lived in.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------------

/// An authentication method the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `publickey` (RFC 4252 §7).
    PublicKey,
    /// `password` (RFC 4252 §8).
    Password,
    /// `keyboard-interactive` (RFC 4256).
    KeyboardInteractive,
}

impl AuthMethod {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::PublicKey => "publickey",
            Self::Password => "password",
            Self::KeyboardInteractive => "keyboard-interactive",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The method-specific part of a USERAUTH_REQUEST.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MethodRequest<'a> {
    /// `none` (RFC 4252 §5.2): asks which methods can continue.
    None,
    /// `publickey` (RFC 4252 §7), a query when `signature` is `None`.
    PublicKey {
        /// Public key algorithm name.
        algorithm: &'a [u8],
        /// Public key blob.
        key_blob: &'a [u8],
        /// Signature blob, present when the client signed.
        signature: Option<&'a [u8]>,
    },
    /// `password` (RFC 4252 §8).
    Password {
        /// The password.
        password: &'a str,
        /// The new password of a change-password request (refused by [`ServerAuth`]).
        new_password: Option<&'a str>,
    },
    /// `keyboard-interactive` (RFC 4256 §3.1).
    KeyboardInteractive {
        /// `submethods` hint (ignored by [`ServerAuth`]).
        submethods: &'a str,
    },
    /// A method we don't implement (`hostbased`, `gssapi-with-mic`, ...): its fields are not read.
    Other(&'a str),
}

impl fmt::Debug for MethodRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::PublicKey {
                algorithm,
                key_blob,
                signature,
            } => f
                .debug_struct("PublicKey")
                .field("algorithm", &sanitize_name(algorithm))
                .field("key_blob_len", &key_blob.len())
                .field("signed", &signature.is_some())
                .finish(),
            Self::Password { new_password, .. } => f
                .debug_struct("Password")
                .field("password", &"<redacted>")
                .field("change", &new_password.is_some())
                .finish(),
            Self::KeyboardInteractive { submethods } => f
                .debug_struct("KeyboardInteractive")
                .field("submethods", submethods)
                .finish(),
            Self::Other(name) => f.debug_tuple("Other").field(name).finish(),
        }
    }
}

/// A decoded SSH_MSG_USERAUTH_REQUEST (RFC 4252 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserauthRequest<'a> {
    /// User name (UTF-8, at most [`MAX_USER_NAME`] bytes).
    pub user: &'a str,
    /// Service name.
    pub service: &'a str,
    /// Method and its fields.
    pub method: MethodRequest<'a>,
}

fn capped<'a>(r: &mut Reader<'a>, max: usize, field: &'static str) -> Result<&'a [u8], AuthError> {
    let value = r.string()?;
    if value.len() > max {
        return Err(AuthError::FieldTooLong(field));
    }
    Ok(value)
}

fn capped_utf8<'a>(
    r: &mut Reader<'a>,
    max: usize,
    field: &'static str,
) -> Result<&'a str, AuthError> {
    std::str::from_utf8(capped(r, max, field)?).map_err(|_| WireError::InvalidUtf8.into())
}

/// Decodes a USERAUTH_REQUEST payload (message number included).
///
/// ```text
/// byte      SSH_MSG_USERAUTH_REQUEST
/// string    user name in ISO-10646 UTF-8 encoding [RFC3629]
/// string    service name in US-ASCII
/// string    method name in US-ASCII
/// ....      method specific fields
/// ```
///
/// # Errors
/// [`AuthError::Malformed`] / [`AuthError::FieldTooLong`] for bad or oversized fields, and
/// [`AuthError::UnexpectedMessage`] if the payload is another message.
pub fn decode_userauth_request(payload: &[u8]) -> Result<UserauthRequest<'_>, AuthError> {
    let mut r = Reader::new(payload);
    let msg = r.u8()?;
    if msg != SSH_MSG_USERAUTH_REQUEST {
        return Err(AuthError::UnexpectedMessage(msg));
    }
    let user = capped_utf8(&mut r, MAX_USER_NAME, "user name")?;
    let service = capped_utf8(&mut r, MAX_NAME, "service name")?;
    let method_name = capped_utf8(&mut r, MAX_NAME, "method name")?;
    let method = match method_name {
        "none" => MethodRequest::None,
        "publickey" => {
            // RFC 4252 §7: "boolean FALSE/TRUE, string public key algorithm name,
            // string public key blob [, string signature]".
            let signed = r.bool()?;
            let algorithm = capped(&mut r, MAX_NAME, "public key algorithm")?;
            let key_blob = capped(&mut r, MAX_KEY_BLOB, "public key blob")?;
            let signature = if signed {
                Some(capped(&mut r, MAX_SIGNATURE_BLOB, "signature")?)
            } else {
                None
            };
            MethodRequest::PublicKey {
                algorithm,
                key_blob,
                signature,
            }
        }
        "password" => {
            // RFC 4252 §8: "boolean FALSE, string plaintext password" or, to change it,
            // "boolean TRUE, string old password, string new password".
            let change = r.bool()?;
            let password = capped_utf8(&mut r, MAX_SECRET, "password")?;
            let new_password = if change {
                Some(capped_utf8(&mut r, MAX_SECRET, "new password")?)
            } else {
                None
            };
            MethodRequest::Password {
                password,
                new_password,
            }
        }
        "keyboard-interactive" => {
            // RFC 4256 §3.1: "string language tag (deprecated), string submethods".
            let _language = capped_utf8(&mut r, MAX_NAME, "language tag")?;
            let submethods = capped_utf8(&mut r, MAX_TEXT, "submethods")?;
            MethodRequest::KeyboardInteractive { submethods }
        }
        other => {
            r.rest();
            MethodRequest::Other(other)
        }
    };
    r.finish()?;
    Ok(UserauthRequest {
        user,
        service,
        method,
    })
}

fn request_header(user: &str, service: &str, method: AuthMethod) -> Writer {
    let mut w = Writer::message(SSH_MSG_USERAUTH_REQUEST);
    w.string(user.as_bytes())
        .string(service.as_bytes())
        .string(method.name().as_bytes());
    w
}

/// USERAUTH_REQUEST for method `none`.
pub fn encode_none_request(user: &str, service: &str) -> Vec<u8> {
    let mut w = Writer::message(SSH_MSG_USERAUTH_REQUEST);
    w.string(user.as_bytes())
        .string(service.as_bytes())
        .string(b"none");
    w.into_bytes()
}

/// The data a `publickey` signature covers (RFC 4252 §7):
///
/// ```text
/// string    session identifier
/// byte      SSH_MSG_USERAUTH_REQUEST
/// string    user name
/// string    service name
/// string    "publickey"
/// boolean   TRUE
/// string    public key algorithm name
/// string    public key to be used for authentication
/// ```
pub fn publickey_signed_data(
    session_id: &[u8],
    user: &str,
    service: &str,
    algorithm: &[u8],
    key_blob: &[u8],
) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(session_id)
        .u8(SSH_MSG_USERAUTH_REQUEST)
        .string(user.as_bytes())
        .string(service.as_bytes())
        .string(b"publickey")
        .bool(true)
        .string(algorithm)
        .string(key_blob);
    w.into_bytes()
}

/// USERAUTH_REQUEST for `publickey`: a query without `signature`, a login attempt with it.
pub fn encode_publickey_request(
    user: &str,
    service: &str,
    algorithm: &str,
    key_blob: &[u8],
    signature: Option<&[u8]>,
) -> Vec<u8> {
    let mut w = request_header(user, service, AuthMethod::PublicKey);
    w.bool(signature.is_some())
        .string(algorithm.as_bytes())
        .string(key_blob);
    if let Some(sig) = signature {
        w.string(sig);
    }
    w.into_bytes()
}

/// USERAUTH_REQUEST for `password` (never a change request).
pub fn encode_password_request(user: &str, service: &str, password: &Secret) -> Vec<u8> {
    let mut w = request_header(user, service, AuthMethod::Password);
    w.bool(false).string(password.expose().as_bytes());
    w.into_bytes()
}

/// USERAUTH_REQUEST for `keyboard-interactive` (empty language tag).
pub fn encode_keyboard_interactive_request(user: &str, service: &str, submethods: &str) -> Vec<u8> {
    let mut w = request_header(user, service, AuthMethod::KeyboardInteractive);
    w.string(b"").string(submethods.as_bytes());
    w.into_bytes()
}

/// SSH_MSG_USERAUTH_FAILURE (RFC 4252 §5.1): "name-list authentications that can continue,
/// boolean partial success".
pub fn encode_failure(methods: &[AuthMethod], partial_success: bool) -> Vec<u8> {
    let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
    let mut w = Writer::message(SSH_MSG_USERAUTH_FAILURE);
    w.name_list(&names).bool(partial_success);
    w.into_bytes()
}

/// A decoded USERAUTH_FAILURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// "authentications that can continue".
    pub methods: Vec<String>,
    /// "partial success".
    pub partial_success: bool,
}

/// Decodes a USERAUTH_FAILURE payload.
///
/// # Errors
/// [`AuthError::Malformed`] or [`AuthError::UnexpectedMessage`].
pub fn decode_failure(payload: &[u8]) -> Result<Failure, AuthError> {
    let mut r = Reader::new(payload);
    expect_message(&mut r, SSH_MSG_USERAUTH_FAILURE)?;
    let methods = r.name_list()?.into_iter().map(str::to_owned).collect();
    let partial_success = r.bool()?;
    r.finish()?;
    Ok(Failure {
        methods,
        partial_success,
    })
}

/// SSH_MSG_USERAUTH_SUCCESS.
pub fn encode_success() -> Vec<u8> {
    vec![SSH_MSG_USERAUTH_SUCCESS]
}

/// SSH_MSG_USERAUTH_BANNER (RFC 4252 §5.4): "string message in ISO-10646 UTF-8, string language
/// tag".
pub fn encode_banner(message: &str) -> Vec<u8> {
    let mut w = Writer::message(SSH_MSG_USERAUTH_BANNER);
    w.string(message.as_bytes()).string(b"");
    w.into_bytes()
}

/// Decodes a USERAUTH_BANNER payload into its message text.
///
/// # Errors
/// [`AuthError::Malformed`], [`AuthError::FieldTooLong`] or [`AuthError::UnexpectedMessage`].
pub fn decode_banner(payload: &[u8]) -> Result<&str, AuthError> {
    let mut r = Reader::new(payload);
    expect_message(&mut r, SSH_MSG_USERAUTH_BANNER)?;
    let message = capped_utf8(&mut r, MAX_TEXT, "banner")?;
    let _language = capped(&mut r, MAX_NAME, "language tag")?;
    r.finish()?;
    Ok(message)
}

/// SSH_MSG_USERAUTH_PK_OK (RFC 4252 §7): "string public key algorithm name from the request,
/// string public key blob from the request".
pub fn encode_pk_ok(algorithm: &[u8], key_blob: &[u8]) -> Vec<u8> {
    let mut w = Writer::message(SSH_MSG_USERAUTH_PK_OK);
    w.string(algorithm).string(key_blob);
    w.into_bytes()
}

/// SSH_MSG_USERAUTH_INFO_REQUEST (RFC 4256 §3.2) with prompts `(text, echo)`.
pub fn encode_info_request(name: &str, instruction: &str, prompts: &[(&str, bool)]) -> Vec<u8> {
    let mut w = Writer::message(SSH_MSG_USERAUTH_INFO_REQUEST);
    w.string(name.as_bytes())
        .string(instruction.as_bytes())
        .string(b"")
        .u32(u32::try_from(prompts.len()).unwrap_or(u32::MAX));
    for (prompt, echo) in prompts {
        w.string(prompt.as_bytes()).bool(*echo);
    }
    w.into_bytes()
}

/// SSH_MSG_USERAUTH_INFO_RESPONSE (RFC 4256 §3.4): "int num-responses, string response[1..n]".
pub fn encode_info_response(responses: &[&Secret]) -> Vec<u8> {
    let mut w = Writer::message(SSH_MSG_USERAUTH_INFO_RESPONSE);
    w.u32(u32::try_from(responses.len()).unwrap_or(u32::MAX));
    for response in responses {
        w.string(response.expose().as_bytes());
    }
    w.into_bytes()
}

/// Decodes an INFO_RESPONSE into its responses (at most [`MAX_INFO_RESPONSES`], each at most
/// [`MAX_SECRET`] bytes).
///
/// # Errors
/// [`AuthError::Malformed`], [`AuthError::FieldTooLong`] or [`AuthError::UnexpectedMessage`].
pub fn decode_info_response(payload: &[u8]) -> Result<Vec<&str>, AuthError> {
    let mut r = Reader::new(payload);
    expect_message(&mut r, SSH_MSG_USERAUTH_INFO_RESPONSE)?;
    let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if count > MAX_INFO_RESPONSES {
        return Err(AuthError::FieldTooLong("keyboard-interactive responses"));
    }
    let mut responses = Vec::with_capacity(count);
    for _ in 0..count {
        responses.push(capped_utf8(
            &mut r,
            MAX_SECRET,
            "keyboard-interactive response",
        )?);
    }
    r.finish()?;
    Ok(responses)
}

/// SSH_MSG_SERVICE_REQUEST (RFC 4253 §10): "string service name".
pub fn encode_service_request(service: &str) -> Vec<u8> {
    let mut w = Writer::message(SSH_MSG_SERVICE_REQUEST);
    w.string(service.as_bytes());
    w.into_bytes()
}

/// SSH_MSG_SERVICE_ACCEPT (RFC 4253 §10): "string service name".
pub fn encode_service_accept(service: &str) -> Vec<u8> {
    let mut w = Writer::message(SSH_MSG_SERVICE_ACCEPT);
    w.string(service.as_bytes());
    w.into_bytes()
}

/// Decodes a SERVICE_REQUEST or SERVICE_ACCEPT (`msg` says which) into its service name.
///
/// # Errors
/// [`AuthError::Malformed`], [`AuthError::FieldTooLong`] or [`AuthError::UnexpectedMessage`].
pub fn decode_service(payload: &[u8], msg: u8) -> Result<&str, AuthError> {
    let mut r = Reader::new(payload);
    expect_message(&mut r, msg)?;
    let name = capped_utf8(&mut r, MAX_NAME, "service name")?;
    r.finish()?;
    Ok(name)
}

fn expect_message(r: &mut Reader<'_>, msg: u8) -> Result<(), AuthError> {
    let got = r.u8()?;
    if got == msg {
        Ok(())
    } else {
        Err(AuthError::UnexpectedMessage(got))
    }
}

mod client;
mod server;

pub use client::{choose_signature_algorithm, ClientAuth, ClientStep, Refusal};
pub use server::{
    Authenticated, Credential, Disconnect, PasswordCheck, PublicKeyCheck, ServerAuth,
    ServerAuthConfig, ServerStep,
};

#[cfg(test)]
mod tests;
