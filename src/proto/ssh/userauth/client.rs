//! The client half of user authentication: the gateway logging in to a target's sshd.

use std::fmt;

use ring::rand::SecureRandom;

use super::{
    decode_banner, decode_failure, encode_password_request, encode_publickey_request,
    publickey_signed_data, AuthError, AuthMethod, Secret, SERVICE_CONNECTION,
    SSH_MSG_USERAUTH_BANNER, SSH_MSG_USERAUTH_FAILURE, SSH_MSG_USERAUTH_PASSWD_CHANGEREQ,
    SSH_MSG_USERAUTH_SUCCESS,
};
use crate::proto::ssh::keyfile::PrivateKey;
use crate::proto::ssh::keys::{PublicKey, SignatureAlgorithm};
use crate::proto::ssh::wire::Reader;

/// The signature algorithm to log in with `key`, given the server's `server-sig-algs`
/// (RFC 8308 §3.1) if it sent one.
///
/// For RSA keys: `rsa-sha2-512` if listed, else `rsa-sha2-256` if listed; `rsa-sha2-512` when the
/// server sent no list (every SHA-2-capable OpenSSH sends one; older servers fail cleanly).
///
/// # Errors
/// [`AuthError::NoCommonSignatureAlgorithm`] if the server lists neither SHA-2 RSA algorithm
/// (it would only take `ssh-rsa` SHA-1 signatures, which we don't make).
pub fn choose_signature_algorithm(
    key: &PublicKey,
    server_sig_algs: Option<&[&str]>,
) -> Result<SignatureAlgorithm, AuthError> {
    match key {
        PublicKey::Ed25519(_) => Ok(SignatureAlgorithm::Ed25519),
        PublicKey::EcdsaP256(_) => Ok(SignatureAlgorithm::EcdsaP256),
        PublicKey::Rsa { .. } => match server_sig_algs {
            None => Ok(SignatureAlgorithm::RsaSha512),
            Some(list) => [SignatureAlgorithm::RsaSha512, SignatureAlgorithm::RsaSha256]
                .into_iter()
                .find(|alg| list.contains(&alg.name()))
                .ok_or(AuthError::NoCommonSignatureAlgorithm),
        },
    }
}

/// Why the server did not let us in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// USERAUTH_FAILURE for our attempt.
    Failure {
        /// The method we tried.
        method: AuthMethod,
        /// "authentications that can continue", as the server sent them.
        allowed: Vec<String>,
        /// "partial success": our method was accepted but the server wants more.
        partial_success: bool,
    },
    /// RFC 4252 §8: the server wants the password changed before it accepts it.
    PasswordChangeRequested,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failure {
                method,
                allowed,
                partial_success: false,
            } => write!(
                f,
                "target refused {method} authentication (it allows: {})",
                allowed.join(",")
            ),
            Self::Failure {
                method, allowed, ..
            } => write!(
                f,
                "target accepted {method} but requires another method too ({}); not supported",
                allowed.join(",")
            ),
            Self::PasswordChangeRequested => {
                f.write_str("target requires the password to be changed")
            }
        }
    }
}

/// What to do after [`ClientAuth::handle`].
#[derive(Debug)]
#[must_use]
pub enum ClientStep {
    /// The server sent a banner (RFC 4252 §5.4); keep feeding payloads to `auth`.
    Banner {
        /// The state to continue with.
        auth: ClientAuth,
        /// Banner text (UTF-8, at most [`super::MAX_TEXT`] bytes). Untrusted: escape before display.
        message: String,
    },
    /// USERAUTH_SUCCESS: start the connection protocol.
    Success,
    /// The server refused; the gateway reports this to its client.
    Refused(Refusal),
}

/// The client side of RFC 4252 for the upstream leg: one attempt with one credential.
///
/// Call order: after SERVICE_ACCEPT `ssh-userauth`, build one with [`ClientAuth::publickey`] or
/// [`ClientAuth::password`], send the payload it returns, then pass every server payload with a
/// number in 50..=79 to [`ClientAuth::handle`] until it returns `Success` or `Refused`.
#[derive(Debug)]
pub struct ClientAuth {
    method: AuthMethod,
}

impl ClientAuth {
    /// A signed `publickey` request, sent directly without a query (RFC 4252 §7 allows it;
    /// OpenSSH does the same when it knows the key is wanted). `server_sig_algs` is the
    /// server's RFC 8308 list if it sent EXT_INFO.
    ///
    /// # Errors
    /// [`AuthError::NoCommonSignatureAlgorithm`] or [`AuthError::Signing`].
    pub fn publickey(
        session_id: &[u8],
        user: &str,
        key: &PrivateKey,
        server_sig_algs: Option<&[&str]>,
        rng: &dyn SecureRandom,
    ) -> Result<(ClientAuth, Vec<u8>), AuthError> {
        let algorithm = choose_signature_algorithm(key.public_key(), server_sig_algs)?;
        let blob = key.public_key().to_blob();
        let data = publickey_signed_data(
            session_id,
            user,
            SERVICE_CONNECTION,
            algorithm.name().as_bytes(),
            &blob,
        );
        let signature = key
            .sign(&data, algorithm, rng)
            .map_err(AuthError::Signing)?;
        let payload = encode_publickey_request(
            user,
            SERVICE_CONNECTION,
            algorithm.name(),
            &blob,
            Some(&signature),
        );
        Ok((
            ClientAuth {
                method: AuthMethod::PublicKey,
            },
            payload,
        ))
    }

    /// A `password` request.
    pub fn password(user: &str, password: &Secret) -> (ClientAuth, Vec<u8>) {
        (
            ClientAuth {
                method: AuthMethod::Password,
            },
            encode_password_request(user, SERVICE_CONNECTION, password),
        )
    }

    /// Consumes one server payload.
    ///
    /// # Errors
    /// A malformed message or one this state doesn't accept (PK_OK: we never send queries).
    pub fn handle(self, payload: &[u8]) -> Result<ClientStep, AuthError> {
        match payload.first().copied() {
            Some(SSH_MSG_USERAUTH_SUCCESS) => {
                Reader::new(payload.get(1..).unwrap_or_default()).finish()?;
                Ok(ClientStep::Success)
            }
            Some(SSH_MSG_USERAUTH_FAILURE) => {
                let failure = decode_failure(payload)?;
                Ok(ClientStep::Refused(Refusal::Failure {
                    method: self.method,
                    allowed: failure.methods,
                    partial_success: failure.partial_success,
                }))
            }
            Some(SSH_MSG_USERAUTH_BANNER) => {
                let message = decode_banner(payload)?.to_owned();
                Ok(ClientStep::Banner {
                    auth: self,
                    message,
                })
            }
            Some(SSH_MSG_USERAUTH_PASSWD_CHANGEREQ) if self.method == AuthMethod::Password => {
                Ok(ClientStep::Refused(Refusal::PasswordChangeRequested))
            }
            Some(other) => Err(AuthError::UnexpectedMessage(other)),
            None => Err(AuthError::Malformed(
                crate::proto::ssh::wire::WireError::Truncated,
            )),
        }
    }
}
