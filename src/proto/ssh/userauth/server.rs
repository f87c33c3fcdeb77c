//! The server half of user authentication: the gateway facing an OpenSSH client.

use std::fmt;

use super::{
    decode_info_response, decode_userauth_request, encode_failure, encode_info_request,
    encode_pk_ok, encode_success, publickey_signed_data, AuthError, AuthMethod, MethodRequest,
    Secret, DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, MAX_SECRET, SERVICE_CONNECTION,
    SSH_MSG_USERAUTH_INFO_RESPONSE, SSH_MSG_USERAUTH_REQUEST, TOKEN_PROMPT,
};
use crate::proto::ssh::keys::{sanitize_name, PublicKey, SignatureAlgorithm};

/// Limits and methods of a [`ServerAuth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAuthConfig {
    /// Failed attempts after which the client is disconnected with reason 14
    /// (NO_MORE_AUTH_METHODS_AVAILABLE), like OpenSSH's `MaxAuthTries`. `none` probes and
    /// accepted public key queries don't count; rejected queries do (OpenSSH counts them too).
    pub max_failures: u32,
    /// Requests of any kind after which the client is disconnected (bounds `none` probes,
    /// accepted queries and abandoned keyboard-interactive rounds, which don't count as failures).
    pub max_requests: u32,
    /// Methods offered in USERAUTH_FAILURE, in this order; requests for others fail.
    pub methods: Vec<AuthMethod>,
}

impl Default for ServerAuthConfig {
    fn default() -> Self {
        ServerAuthConfig {
            max_failures: 6,
            max_requests: 32,
            methods: vec![
                AuthMethod::PublicKey,
                AuthMethod::Password,
                AuthMethod::KeyboardInteractive,
            ],
        }
    }
}

/// Tells the caller to send SSH_MSG_DISCONNECT with this reason and description, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    /// RFC 4253 §11.1 reason code.
    pub reason: u32,
    /// Text for the description field.
    pub description: &'static str,
}

impl From<&AuthError> for Disconnect {
    fn from(e: &AuthError) -> Self {
        Disconnect {
            reason: e.disconnect_reason(),
            description: match e.disconnect_reason() {
                super::DISCONNECT_ILLEGAL_USER_NAME => "illegal user name",
                super::DISCONNECT_SERVICE_NOT_AVAILABLE => "service not available",
                DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE => "too many authentication requests",
                _ => "protocol error during user authentication",
            },
        }
    }
}

/// What the credential of a successful login was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// `publickey`: the key whose signature verified.
    PublicKey(PublicKey),
    /// `password` or `keyboard-interactive`: the token the caller accepted.
    Secret(Secret),
}

/// A finished, successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user name (for the gateway: names the target).
    pub user: String,
    /// The method that succeeded.
    pub method: AuthMethod,
    /// The key or token that proved the identity.
    pub credential: Credential,
}

/// What to do after [`ServerAuth::handle`] or answering a check.
#[derive(Debug)]
#[must_use]
pub enum ServerStep {
    /// Send `reply` and feed the next USERAUTH payload to `auth`.
    Reply {
        /// The state to continue with.
        auth: ServerAuth,
        /// Payload to send (FAILURE, PK_OK or INFO_REQUEST).
        reply: Vec<u8>,
    },
    /// The caller must decide whether `key` may log in as `user`; see [`PublicKeyCheck`].
    CheckPublicKey(PublicKeyCheck),
    /// The caller must decide whether the secret is valid for `user`; see [`PasswordCheck`].
    CheckPassword(PasswordCheck),
    /// Send `reply` (USERAUTH_SUCCESS) and start the connection protocol. RFC 4252 §5.1: later
    /// USERAUTH_REQUESTs "SHOULD be silently ignored" by the connection layer.
    Authenticated {
        /// Payload to send.
        reply: Vec<u8>,
        /// Who logged in, and how.
        outcome: Authenticated,
    },
    /// Send DISCONNECT and close (too many failures or requests).
    Disconnect(Disconnect),
}

/// Proof that a `publickey` signature verified; only [`ServerAuth`] constructs it.
#[derive(Debug)]
struct SignatureVerified(());

#[derive(Debug)]
enum KeyStage {
    /// RFC 4252 §7 query: "boolean FALSE"; accept answers PK_OK.
    Query { algorithm: SignatureAlgorithm },
    /// Signed request whose signature verified; accept logs the user in.
    Verified(SignatureVerified),
}

/// A public key waiting for the caller's decision. Answer with [`PublicKeyCheck::accept`] if the
/// key is registered for the identity `user` resolves to, else [`PublicKeyCheck::reject`].
#[derive(Debug)]
#[must_use]
pub struct PublicKeyCheck {
    auth: ServerAuth,
    user: String,
    key: PublicKey,
    stage: KeyStage,
}

impl PublicKeyCheck {
    /// The user name the client asked for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The offered key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// True if this is a query (accepting sends PK_OK); false if the signature already verified
    /// (accepting logs the user in). The decision should be the same either way.
    pub fn is_query(&self) -> bool {
        matches!(self.stage, KeyStage::Query { .. })
    }

    /// The key may log in as this user.
    pub fn accept(self) -> ServerStep {
        match self.stage {
            KeyStage::Query { algorithm } => ServerStep::Reply {
                reply: encode_pk_ok(algorithm.name().as_bytes(), &self.key.to_blob()),
                auth: self.auth,
            },
            KeyStage::Verified(SignatureVerified(())) => ServerStep::Authenticated {
                reply: encode_success(),
                outcome: Authenticated {
                    user: self.user,
                    method: AuthMethod::PublicKey,
                    credential: Credential::PublicKey(self.key),
                },
            },
        }
    }

    /// The key may not log in as this user.
    pub fn reject(self) -> ServerStep {
        self.auth.fail()
    }
}

/// A password or keyboard-interactive token waiting for the caller's decision.
#[derive(Debug)]
#[must_use]
pub struct PasswordCheck {
    auth: ServerAuth,
    user: String,
    secret: Secret,
    method: AuthMethod,
}

impl PasswordCheck {
    /// The user name the client asked for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The secret the client gave (a gateway token).
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// `password` or `keyboard-interactive`.
    pub fn method(&self) -> AuthMethod {
        self.method
    }

    /// The secret is valid for this user.
    pub fn accept(self) -> ServerStep {
        ServerStep::Authenticated {
            reply: encode_success(),
            outcome: Authenticated {
                user: self.user,
                method: self.method,
                credential: Credential::Secret(self.secret),
            },
        }
    }

    /// The secret is not valid.
    pub fn reject(self) -> ServerStep {
        self.auth.fail()
    }
}

/// Which message the server waits for.
#[derive(Debug)]
enum Expect {
    /// A USERAUTH_REQUEST.
    Request,
    /// The INFO_RESPONSE to our keyboard-interactive prompt (a new request abandons it).
    InfoResponse,
}

/// The server side of RFC 4252, from the first USERAUTH_REQUEST to USERAUTH_SUCCESS.
///
/// Call order: after the transport has answered SERVICE_REQUEST `ssh-userauth` with
/// SERVICE_ACCEPT, build one with [`ServerAuth::new`] and pass every payload with a message
/// number in 50..=79 to [`ServerAuth::handle`]; act on the [`ServerStep`] it returns. Transport
/// messages (IGNORE, DEBUG, KEXINIT, ...) stay with the transport. Any `Err` ends the exchange:
/// send DISCONNECT with [`AuthError::disconnect_reason`] and close.
pub struct ServerAuth {
    session_id: Vec<u8>,
    config: ServerAuthConfig,
    failures: u32,
    requests: u32,
    /// RFC 4252 §5: user and service of the first request; later requests must repeat them.
    bound: Option<(String, String)>,
    expect: Expect,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth")
            .field("failures", &self.failures)
            .field("requests", &self.requests)
            .field("bound", &self.bound)
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl ServerAuth {
    /// A fresh exchange for the connection whose transport session identifier (the first
    /// exchange hash H, RFC 4253 §7.2) is `session_id`.
    pub fn new(session_id: &[u8], config: ServerAuthConfig) -> Self {
        ServerAuth {
            session_id: session_id.to_vec(),
            config,
            failures: 0,
            requests: 0,
            bound: None,
            expect: Expect::Request,
        }
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The USERAUTH_FAILURE listing our methods, without counting a failure.
    fn failure_reply(&self) -> Vec<u8> {
        encode_failure(&self.config.methods, false)
    }

    /// Counts a failed attempt: FAILURE, or DISCONNECT once the limit is reached.
    fn fail(mut self) -> ServerStep {
        self.failures = self.failures.saturating_add(1);
        self.expect = Expect::Request;
        if self.failures >= self.config.max_failures {
            return ServerStep::Disconnect(Disconnect {
                reason: DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                description: "too many authentication failures",
            });
        }
        ServerStep::Reply {
            reply: self.failure_reply(),
            auth: self,
        }
    }

    fn offers(&self, method: AuthMethod) -> bool {
        self.config.methods.contains(&method)
    }

    /// Consumes one client payload.
    ///
    /// # Errors
    /// A malformed message, a message number this state doesn't accept, an oversized field, a
    /// user name with control characters, a service other than `ssh-connection`, a change of
    /// user or service (RFC 4252 §5), or more requests than `max_requests`.
    pub fn handle(mut self, payload: &[u8]) -> Result<ServerStep, AuthError> {
        match (payload.first().copied(), &self.expect) {
            (Some(SSH_MSG_USERAUTH_REQUEST), _) => {
                // RFC 4256 §3.4 lets a client abandon keyboard-interactive by sending a new
                // request; the abandoned round is not a failure but counts as a request.
                self.expect = Expect::Request;
                self.request(payload)
            }
            (Some(SSH_MSG_USERAUTH_INFO_RESPONSE), Expect::InfoResponse) => {
                self.info_response(payload)
            }
            (Some(other), _) => Err(AuthError::UnexpectedMessage(other)),
            (None, _) => Err(AuthError::Malformed(
                crate::proto::ssh::wire::WireError::Truncated,
            )),
        }
    }

    fn request(mut self, payload: &[u8]) -> Result<ServerStep, AuthError> {
        let request = decode_userauth_request(payload)?;
        self.requests = self.requests.saturating_add(1);
        if self.requests > self.config.max_requests {
            return Err(AuthError::TooManyRequests);
        }
        if request.user.chars().any(char::is_control) {
            return Err(AuthError::IllegalUserName);
        }
        // RFC 4252 §5: "The 'user name' and 'service name' are repeated in every new
        // authentication attempt, and MAY change. ... If it is unable to flush an authentication
        // state, it MUST disconnect if the 'user name' or 'service name' changes." The gateway
        // binds the target at the first request, so it disconnects, as OpenSSH does.
        match &self.bound {
            None => {
                if request.service != SERVICE_CONNECTION {
                    return Err(AuthError::ServiceNotAvailable(sanitize_name(
                        request.service.as_bytes(),
                    )));
                }
                self.bound = Some((request.user.to_owned(), request.service.to_owned()));
            }
            Some((user, service)) => {
                if user != request.user || service != request.service {
                    return Err(AuthError::UserOrServiceChanged);
                }
            }
        }
        let user = request.user.to_owned();
        Ok(match request.method {
            // RFC 4252 §5.2: "none" ... "the server MUST reject this request" listing methods.
            MethodRequest::None => ServerStep::Reply {
                reply: self.failure_reply(),
                auth: self,
            },
            MethodRequest::PublicKey {
                algorithm,
                key_blob,
                signature,
            } => self.publickey(user, algorithm, key_blob, signature),
            MethodRequest::Password {
                password,
                new_password,
            } => {
                // RFC 4252 §8: a change request is only meaningful after we sent
                // PASSWD_CHANGEREQ, which we never do; tokens can't be changed by the client.
                if !self.offers(AuthMethod::Password) || new_password.is_some() {
                    self.fail()
                } else {
                    ServerStep::CheckPassword(PasswordCheck {
                        secret: Secret::new(password),
                        user,
                        method: AuthMethod::Password,
                        auth: self,
                    })
                }
            }
            MethodRequest::KeyboardInteractive { .. } => {
                if !self.offers(AuthMethod::KeyboardInteractive) {
                    self.fail()
                } else {
                    // RFC 4256 §3.2: one prompt, "echo" FALSE so the token isn't shown.
                    self.expect = Expect::InfoResponse;
                    ServerStep::Reply {
                        reply: encode_info_request("", "", &[(TOKEN_PROMPT, false)]),
                        auth: self,
                    }
                }
            }
            MethodRequest::Other(_) => self.fail(),
        })
    }

    fn publickey(
        self,
        user: String,
        algorithm_name: &[u8],
        key_blob: &[u8],
        signature: Option<&[u8]>,
    ) -> ServerStep {
        if !self.offers(AuthMethod::PublicKey) {
            return self.fail();
        }
        // Unknown algorithms and key types, ssh-rsa (SHA-1) and small RSA keys are ordinary
        // failures: clients try every key they have.
        let Ok(algorithm) = SignatureAlgorithm::from_name(algorithm_name) else {
            return self.fail();
        };
        let Ok(key) = PublicKey::from_blob(key_blob) else {
            return self.fail();
        };
        if !key.accepts(algorithm) {
            return self.fail();
        }
        let stage = match signature {
            None => KeyStage::Query { algorithm },
            Some(signature) => {
                let Some((user_bound, service)) = &self.bound else {
                    return self.fail();
                };
                // The signature covers the blob exactly as the client sent it.
                let data = publickey_signed_data(
                    &self.session_id,
                    user_bound,
                    service,
                    algorithm_name,
                    key_blob,
                );
                if key.verify(algorithm, &data, signature).is_err() {
                    return self.fail();
                }
                KeyStage::Verified(SignatureVerified(()))
            }
        };
        ServerStep::CheckPublicKey(PublicKeyCheck {
            auth: self,
            user,
            key,
            stage,
        })
    }

    fn info_response(mut self, payload: &[u8]) -> Result<ServerStep, AuthError> {
        let responses = decode_info_response(payload)?;
        self.expect = Expect::Request;
        let user = match &self.bound {
            Some((user, _)) => user.clone(),
            None => return Err(AuthError::UnexpectedMessage(SSH_MSG_USERAUTH_INFO_RESPONSE)),
        };
        // RFC 4256 §3.4: "If the num-responses field does not match the num-prompts field in the
        // request message, the server MUST send a failure message."
        Ok(match responses.as_slice() {
            [token] if token.len() <= MAX_SECRET => ServerStep::CheckPassword(PasswordCheck {
                secret: Secret::new(*token),
                user,
                method: AuthMethod::KeyboardInteractive,
                auth: self,
            }),
            _ => self.fail(),
        })
    }
}
