//! The SSH transport layer (RFC 4253) for both roles, sans-IO.
//!
//! This module contains no networking code and reads no clock and no global randomness: the
//! caller feeds received bytes in, takes bytes to send out, passes `now` into every call that
//! can start or check a timer, and hands over the random number generator at construction.
//!
//! # Call order
//!
//! ```text
//! let mut t = Transport::new(role, config, rng, now)?;   // our identification + KEXINIT queued
//! loop {
//!     write_all(t.pending_output()); t.consume_output(n);  // after every call below
//!     select {
//!         bytes = read()      => { t.feed(&bytes); for e in t.process(now)? { ... } }
//!         at t.poll_timeout() => t.handle_timeout(now)?,
//!         payload from above  => t.send_payload(payload, now)?,
//!     }
//! }
//! ```
//!
//! Events: [`Event::Ready`] after the first key exchange, then [`Event::ServiceRequest`] (server)
//! or [`Event::ServiceAccepted`] (client), and [`Event::Payload`] for every message numbered 50
//! or more (user authentication and connection protocols, opaque here).
//!
//! # Errors are sticky
//!
//! A fatal error queues an `SSH_MSG_DISCONNECT` with the matching reason code (when there is
//! still someone to tell), and from then on every call returns the same error. The caller sends
//! what [`Transport::pending_output`] still holds and closes the socket.
//!
//! # Security properties
//!
//! - Only `curve25519-sha256`, `ssh-ed25519` and AEAD ciphers (see [`super::kex`]).
//! - Client: the server's host key must be the pinned one ([`TransportError::HostKeyMismatch`]);
//!   there is no trust-on-first-use.
//! - Strict key exchange (OpenSSH PROTOCOL §1.10, the Terrapin fix, CVE-2023-48795) whenever the
//!   peer offers it, which every OpenSSH since 9.6 does.
//! - Rekeying by volume and time (RFC 4253 §9), by either side.
//! - Bounded memory per packet ([`super::packet::MAX_PACKET_LENGTH`]) and a deadline for every
//!   key exchange (`TransportConfig::kex_timeout` for the first, `rekey_timeout` for later ones).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::cipher::{CipherAlgorithm, KeyLengthError, OpeningCipher, SealingCipher};
use super::hostkey::{self, HostKeyError};
use super::kex::{
    self, EcdhReply, Ephemeral, HashInputs, KexError, KexInit, KexRound, Negotiated, SharedSecret,
    Side,
};
use super::msg::{self, DisconnectReason};
use super::packet::{OpenedPacket, PacketError, PacketOpener, PacketSealer, SequenceAfterNewKeys};
use super::version::{self, Scan, VersionError};
use super::wire::{Reader, WireError, Writer};

/// Which end we are, with the key material that end needs.
pub enum Role {
    /// We accept connections and prove our identity with `host_key`.
    Server {
        /// The gateway's Ed25519 host key.
        host_key: Ed25519KeyPair,
    },
    /// We connect to a server whose Ed25519 public key is known in advance (from the policy).
    Client {
        /// The 32-byte Ed25519 public key the server must present.
        pinned_host_key: [u8; 32],
    },
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Server { .. } => f.write_str("Server"),
            Role::Client { .. } => f.write_str("Client"),
        }
    }
}

impl Role {
    fn side(&self) -> Side {
        match self {
            Role::Server { .. } => Side::Server,
            Role::Client { .. } => Side::Client,
        }
    }
}

/// Tunables. [`TransportConfig::default`] is what the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Ciphers offered, in order of preference (default: all three). An empty list makes every
    /// negotiation fail.
    pub ciphers: Vec<CipherAlgorithm>,
    /// Rekey once this many bytes went through either direction under the same keys. RFC 4253
    /// §9: "It is RECOMMENDED that the keys be changed after each gigabyte of transmitted data or
    /// after each hour of connection time, whichever comes sooner."
    pub rekey_after_bytes: u64,
    /// Rekey once this many packets went through either direction under the same keys (2^31
    /// keeps ChaCha20's 32-bit sequence-number nonce from ever repeating under one key).
    pub rekey_after_packets: u64,
    /// Rekey this long after the last key exchange completed.
    pub rekey_interval: Duration,
    /// The first key exchange must complete within this time from the start of the connection.
    pub kex_timeout: Duration,
    /// Every later key exchange must complete within this time from the KEXINIT that began it
    /// (ours or the peer's). Data waits while it runs, so a peer that stalls a rekey stalls the
    /// session until this expires.
    pub rekey_timeout: Duration,
}

/// Default of [`TransportConfig::kex_timeout`] and [`TransportConfig::rekey_timeout`].
pub const DEFAULT_KEX_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            ciphers: CipherAlgorithm::ALL.to_vec(),
            rekey_after_bytes: 1 << 30,
            rekey_after_packets: 1 << 31,
            rekey_interval: Duration::from_secs(3600),
            kex_timeout: DEFAULT_KEX_TIMEOUT,
            rekey_timeout: DEFAULT_KEX_TIMEOUT,
        }
    }
}

/// Something the layer above must act on, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The first key exchange completed: packets are now encrypted and the services may start.
    Ready {
        /// The session identifier (the first exchange hash H), which user authentication signs.
        session_id: Vec<u8>,
    },
    /// Client only: the server's `SSH_MSG_EXT_INFO` carried `server-sig-algs` (RFC 8308 §3.1).
    /// OpenSSH sends it right after its first NEWKEYS, so it arrives before
    /// [`Event::ServiceAccepted`]; also readable via [`Transport::server_sig_algs`].
    ExtInfo {
        /// The signature algorithms the server accepts for user authentication.
        server_sig_algs: Vec<String>,
    },
    /// Server only: the client asked for a service (normally `ssh-userauth`). Answer with
    /// [`Transport::accept_service`] or refuse with [`Transport::disconnect`]
    /// ([`DisconnectReason::ServiceNotAvailable`]).
    ServiceRequest(String),
    /// Client only: the server accepted the service asked for with
    /// [`Transport::request_service`].
    ServiceAccepted(String),
    /// A message for the layers above (message number 50 or more), payload as received.
    Payload(Vec<u8>),
    /// The peer sent `SSH_MSG_DISCONNECT`; the transport is closed.
    Disconnected {
        /// The reason code.
        reason: DisconnectReason,
        /// The peer's description (lossily decoded, at most 1,024 bytes).
        description: String,
    },
}

/// Why the transport failed, or why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer's identification string was refused.
    Version(VersionError),
    /// A packet could not be opened (framing, length, padding, tag).
    Packet(PacketError),
    /// Key exchange failed (negotiation, malformed kex message, X25519).
    Kex(KexError),
    /// Client: the server presented a host key other than the pinned one.
    HostKeyMismatch {
        /// SHA256 fingerprint of the pinned key.
        expected: String,
        /// SHA256 fingerprint of what the server presented.
        presented: String,
    },
    /// Client: the server's host key blob or its signature over H is not acceptable.
    HostKey(HostKeyError),
    /// The peer broke strict key exchange (OpenSSH PROTOCOL §1.10): a message other than the
    /// expected key exchange messages during the first key exchange, or a KEXINIT that was not
    /// the first packet.
    StrictKexViolation {
        /// The offending message number.
        message: u8,
    },
    /// A message that is not allowed in the current state.
    UnexpectedMessage {
        /// The message number.
        message: u8,
    },
    /// A transport message is malformed.
    Malformed {
        /// The message number.
        message: u8,
        /// What is wrong with it.
        error: WireError,
    },
    /// A packet with an empty payload (no message number).
    EmptyPayload,
    /// A key exchange did not complete within `TransportConfig::kex_timeout` (the first) or
    /// `TransportConfig::rekey_timeout` (a later one).
    KexTimeout,
    /// The peer disconnected (reported once as [`Event::Disconnected`], then returned by every
    /// call).
    PeerDisconnected {
        /// The reason code.
        reason: DisconnectReason,
        /// The peer's description.
        description: String,
    },
    /// We disconnected ([`Transport::disconnect`]).
    Closed,
    /// The random number generator failed.
    Random,
    /// Refused call, transport unchanged: [`Transport::send_payload`] takes only messages
    /// numbered 50 or more.
    NotAHigherLayerMessage,
    /// Refused call, transport unchanged: the method is for the other role.
    WrongRole,
    /// Refused call, transport unchanged: the first key exchange has not completed yet (or a
    /// service request is already outstanding).
    NotReady,
}

impl TransportError {
    /// The reason code we send in our DISCONNECT for this error, or `None` when no DISCONNECT is
    /// sent (the peer left, we already said goodbye, or the error only refuses a call).
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        Some(match self {
            Self::Version(VersionError::UnsupportedVersion(_)) => {
                DisconnectReason::ProtocolVersionNotSupported
            }
            Self::Packet(PacketError::BadTag) => DisconnectReason::MacError,
            Self::Kex(_) => DisconnectReason::KeyExchangeFailed,
            Self::HostKeyMismatch { .. } | Self::HostKey(_) => {
                DisconnectReason::HostKeyNotVerifiable
            }
            Self::KexTimeout | Self::Random => DisconnectReason::ByApplication,
            Self::Version(_)
            | Self::Packet(_)
            | Self::StrictKexViolation { .. }
            | Self::UnexpectedMessage { .. }
            | Self::Malformed { .. }
            | Self::EmptyPayload => DisconnectReason::ProtocolError,
            Self::PeerDisconnected { .. }
            | Self::Closed
            | Self::NotAHigherLayerMessage
            | Self::WrongRole
            | Self::NotReady => return None,
        })
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(e) => write!(f, "identification: {e}"),
            Self::Packet(e) => write!(f, "packet: {e}"),
            Self::Kex(e) => write!(f, "key exchange: {e}"),
            Self::HostKeyMismatch {
                expected,
                presented,
            } => write!(
                f,
                "host key mismatch: expected {expected}, server presented {presented}"
            ),
            Self::HostKey(e) => write!(f, "host key: {e}"),
            Self::StrictKexViolation { message } => write!(
                f,
                "strict key exchange violation: unexpected message {message}"
            ),
            Self::UnexpectedMessage { message } => {
                write!(f, "unexpected message {message} in this state")
            }
            Self::Malformed { message, error } => write!(f, "malformed message {message}: {error}"),
            Self::EmptyPayload => f.write_str("packet without a message number"),
            Self::KexTimeout => f.write_str("key exchange timed out"),
            Self::PeerDisconnected {
                reason,
                description,
            } => write!(f, "peer disconnected ({reason}): {description}"),
            Self::Closed => f.write_str("transport closed"),
            Self::Random => f.write_str("random number generator failed"),
            Self::NotAHigherLayerMessage => {
                f.write_str("payload must start with a message number of 50 or more")
            }
            Self::WrongRole => f.write_str("operation not available in this role"),
            Self::NotReady => f.write_str("transport not ready for this operation"),
        }
    }
}

impl std::error::Error for TransportError {}

impl From<PacketError> for TransportError {
    fn from(e: PacketError) -> Self {
        Self::Packet(e)
    }
}

impl From<KexError> for TransportError {
    fn from(e: KexError) -> Self {
        Self::Kex(e)
    }
}

impl From<VersionError> for TransportError {
    fn from(e: VersionError) -> Self {
        Self::Version(e)
    }
}

impl From<HostKeyError> for TransportError {
    fn from(e: HostKeyError) -> Self {
        Self::HostKey(e)
    }
}

impl From<KeyLengthError> for TransportError {
    fn from(_: KeyLengthError) -> Self {
        // Derived keys always have the cipher's length; reaching this is a bug on our side.
        Self::Kex(KexError::BadSharedSecret)
    }
}

/// Whether strict key exchange is in force (decided once, by the first KEXINITs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KexMode {
    /// Both sides offered the strict-kex marker.
    Strict,
    /// RFC 4253 as written.
    Classic,
}

impl KexMode {
    fn sequence(self) -> SequenceAfterNewKeys {
        match self {
            Self::Strict => SequenceAfterNewKeys::ResetToZero,
            Self::Classic => SequenceAfterNewKeys::Continue,
        }
    }
}

/// Server only: send EXT_INFO after our first NEWKEYS? (RFC 8308 §2.4: "the server MAY send it
/// ... as the next packet following the server's first SSH_MSG_NEWKEYS" when the client's
/// KEXINIT carried ext-info-c.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtInfoPlan {
    SendAfterNewKeys,
    Skip,
}

/// Did the peer's `first_kex_packet_follows` guess wrong?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerGuess {
    /// No guessed packet to drop.
    NoneToDrop,
    /// RFC 4253 §7: "If the other party's guess was wrong, and this field was TRUE, the next
    /// packet MUST be silently ignored".
    DropNextPacket,
}

/// Our KEXINIT as sent.
struct SentKexInit {
    payload: Vec<u8>,
    init: KexInit,
}

/// What the two KEXINITs settled.
struct Agreed {
    client_kexinit: Vec<u8>,
    server_kexinit: Vec<u8>,
    negotiated: Negotiated,
    mode: KexMode,
    ext_info: ExtInfoPlan,
}

/// Result of a key exchange, applied when the peer's NEWKEYS arrives.
struct KexOutcome {
    session_id: Vec<u8>,
    negotiated: Negotiated,
    mode: KexMode,
}

/// One step of a key exchange (RFC 4253 §7 with RFC 5656 §4 / RFC 8731 messages).
#[allow(clippy::enum_variant_names)] // rustls-style `Expect*` state names (STYLE.md rule 3)
enum KexStep {
    /// We sent KEXINIT and wait for the peer's.
    ExpectKexInit { ours: SentKexInit },
    /// Server: both KEXINITs known; waiting for `SSH_MSG_KEX_ECDH_INIT`.
    ExpectEcdhInit { agreed: Agreed, guess: PeerGuess },
    /// Client: `SSH_MSG_KEX_ECDH_INIT` sent; waiting for the reply.
    ExpectEcdhReply {
        agreed: Agreed,
        ephemeral: Ephemeral,
        guess: PeerGuess,
    },
    /// Our NEWKEYS is out and our new outgoing keys are in use; waiting for the peer's NEWKEYS.
    ExpectNewKeys {
        opening: Box<OpeningCipher>,
        outcome: KexOutcome,
    },
}

impl KexStep {
    /// Strict mode as far as it is known (before the peer's KEXINIT it is not).
    fn mode(&self) -> Option<KexMode> {
        match self {
            Self::ExpectKexInit { .. } => None,
            Self::ExpectEcdhInit { agreed, .. } | Self::ExpectEcdhReply { agreed, .. } => {
                Some(agreed.mode)
            }
            Self::ExpectNewKeys { outcome, .. } => Some(outcome.mode),
        }
    }
}

/// A key exchange in progress with its deadline.
struct KexRun {
    step: KexStep,
    deadline: Instant,
}

/// What a key exchange step led to.
#[allow(clippy::large_enum_variant)] // a return value moved once; boxing would only add an allocation
enum StepOutcome {
    Continue(KexStep),
    Done(KexOutcome),
}

/// State kept once the first key exchange is done.
struct Session {
    id: Vec<u8>,
    mode: KexMode,
    negotiated: Negotiated,
    /// When the current keys were installed (for the time-based rekey).
    keys_since: Instant,
    /// Client: the service we asked for and have no answer for yet.
    pending_service: Option<String>,
    /// Client: `server-sig-algs` from the server's EXT_INFO.
    server_sig_algs: Option<Vec<String>>,
    /// Completed key exchanges, the first included.
    key_exchanges: u64,
}

/// Where the connection is.
enum Phase {
    /// Our identification and first KEXINIT are out; waiting for the peer's identification.
    ExpectVersion {
        ours: SentKexInit,
        lines_before: usize,
        deadline: Instant,
    },
    /// The first key exchange.
    FirstKex(KexRun),
    /// Keys in place; `rekey` is a re-exchange in progress.
    Established {
        session: Session,
        rekey: Option<KexRun>,
    },
}

/// The transport state machine. See the module documentation for the call order.
pub struct Transport {
    role: Role,
    config: TransportConfig,
    rng: Box<dyn SecureRandom + Send + Sync>,
    /// Our identification string without CR LF.
    our_version: Vec<u8>,
    /// The peer's identification string without CR LF (empty until received).
    peer_version: Vec<u8>,
    rx: Vec<u8>,
    rx_start: usize,
    tx: Vec<u8>,
    /// Bytes of `tx` already written (dropped in bulk, not one write at a time).
    tx_start: usize,
    sealer: PacketSealer,
    opener: PacketOpener,
    /// Payloads held back while a key exchange runs (RFC 4253 §7.1), in order.
    held: VecDeque<Vec<u8>>,
    state: Result<Phase, TransportError>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("role", &self.role)
            .field("closed", &self.state.is_err())
            .field("pending_output", &self.pending_output().len())
            .finish_non_exhaustive()
    }
}

/// Longest peer DISCONNECT description kept.
const MAX_DESCRIPTION: usize = 1024;

impl Transport {
    /// A transport for `role`, with our identification string and first KEXINIT already in
    /// [`Transport::pending_output`] (RFC 4253 §4.2: "Key exchange will begin immediately after
    /// sending this identifier"). The first key exchange must finish by `now +
    /// config.kex_timeout`.
    ///
    /// # Errors
    /// [`TransportError::Random`] if `rng` fails.
    pub fn new(
        role: Role,
        config: TransportConfig,
        rng: Box<dyn SecureRandom + Send + Sync>,
        now: Instant,
    ) -> Result<Self, TransportError> {
        let our_version = version::our_version().into_bytes();
        let mut tx = our_version.clone();
        tx.extend_from_slice(b"\r\n");
        let deadline = deadline_after(now, config.kex_timeout);
        let mut transport = Transport {
            role,
            config,
            rng,
            our_version,
            peer_version: Vec::new(),
            rx: Vec::new(),
            rx_start: 0,
            tx_start: 0,
            tx,
            sealer: PacketSealer::new(),
            opener: PacketOpener::new(),
            held: VecDeque::new(),
            state: Err(TransportError::Closed),
        };
        let ours = transport.send_kexinit(KexRound::Initial)?;
        transport.state = Ok(Phase::ExpectVersion {
            ours,
            lines_before: 0,
            deadline,
        });
        Ok(transport)
    }

    /// Client or server.
    pub fn side(&self) -> Side {
        self.role.side()
    }

    /// Appends received bytes. Call [`Transport::process`] after each call: it consumes every
    /// complete packet, so the buffer never holds more than one partial packet plus what was
    /// fed since. Ignored once the transport has failed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.state.is_ok() {
            self.rx.extend_from_slice(bytes);
        }
    }

    /// Processes every complete packet fed so far and returns what happened.
    ///
    /// # Errors
    /// A fatal [`TransportError`] (sticky: every later call returns it). A DISCONNECT for the
    /// peer is then waiting in [`Transport::pending_output`]. Events decoded earlier in the same
    /// call are dropped with the connection.
    pub fn process(&mut self, now: Instant) -> Result<Vec<Event>, TransportError> {
        let phase = self.take_phase()?;
        let mut events = Vec::new();
        let result = self.run(phase, now, &mut events);
        self.compact_rx();
        match result {
            Ok(phase) => {
                self.state = Ok(phase);
                Ok(events)
            }
            Err(TransportError::PeerDisconnected {
                reason,
                description,
            }) => {
                events.push(Event::Disconnected {
                    reason,
                    description: description.clone(),
                });
                self.state = Err(TransportError::PeerDisconnected {
                    reason,
                    description,
                });
                Ok(events)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Bytes waiting to be written to the socket.
    pub fn pending_output(&self) -> &[u8] {
        self.tx.get(self.tx_start..).unwrap_or_default()
    }

    /// Drops the first `n` bytes of [`Transport::pending_output`] (those written). The buffer is
    /// compacted only when it empties or its written part dominates, so a large backlog written
    /// in many small writes isn't moved once per write.
    pub fn consume_output(&mut self, n: usize) {
        self.tx_start = (self.tx_start + n).min(self.tx.len());
        if self.tx_start == self.tx.len() {
            self.tx.clear();
            self.tx_start = 0;
        } else if self.tx_start >= 64 * 1024 && self.tx_start * 2 >= self.tx.len() {
            self.tx.drain(..self.tx_start);
            self.tx_start = 0;
        }
    }

    /// Sends a message of the layers above (first byte 50 or more). While a key exchange is
    /// running it is held and sent, in order, when the exchange completes (RFC 4253 §7.1: once a
    /// party has sent KEXINIT, "until it has sent a SSH_MSG_NEWKEYS message, it MUST NOT send any
    /// messages other than" transport and key exchange messages). May start a rekey when the
    /// volume limits are reached, which is why it takes `now`.
    ///
    /// # Errors
    /// [`TransportError::NotAHigherLayerMessage`] (refusal, nothing changes), the sticky error,
    /// or a fatal one (payload over [`super::packet::MAX_SEND_PAYLOAD`]).
    pub fn send_payload(&mut self, payload: Vec<u8>, now: Instant) -> Result<(), TransportError> {
        if payload.first().is_none_or(|&m| m < msg::FIRST_HIGHER_LAYER) {
            return Err(TransportError::NotAHigherLayerMessage);
        }
        self.with_phase(|t, phase| {
            let phase = t.send_or_hold(phase, payload)?;
            t.maybe_rekey(phase, now)
        })
    }

    /// Client: asks for a service (`SSH_MSG_SERVICE_REQUEST`, RFC 4253 §10), normally
    /// `ssh-userauth` right after [`Event::Ready`]. The answer is [`Event::ServiceAccepted`].
    ///
    /// # Errors
    /// [`TransportError::WrongRole`] on a server, [`TransportError::NotReady`] before
    /// [`Event::Ready`] or while a request is outstanding (refusals), or the sticky error.
    pub fn request_service(&mut self, name: &str) -> Result<(), TransportError> {
        if self.side() != Side::Client {
            return Err(TransportError::WrongRole);
        }
        match &self.state {
            Err(e) => return Err(e.clone()),
            Ok(Phase::Established { session, .. }) if session.pending_service.is_none() => {}
            Ok(_) => return Err(TransportError::NotReady),
        }
        self.with_phase(|t, mut phase| {
            if let Phase::Established { session, .. } = &mut phase {
                session.pending_service = Some(name.to_owned());
            }
            let mut w = Writer::message(msg::SERVICE_REQUEST);
            w.string(name.as_bytes());
            t.send_or_hold(phase, w.into_bytes())
        })
    }

    /// Server: accepts the service of an [`Event::ServiceRequest`] (`SSH_MSG_SERVICE_ACCEPT`).
    ///
    /// # Errors
    /// [`TransportError::WrongRole`] on a client, [`TransportError::NotReady`] before the first
    /// key exchange completed (refusals), or the sticky error.
    pub fn accept_service(&mut self, name: &str) -> Result<(), TransportError> {
        if self.side() != Side::Server {
            return Err(TransportError::WrongRole);
        }
        self.refuse_unless_established()?;
        self.with_phase(|t, phase| {
            let mut w = Writer::message(msg::SERVICE_ACCEPT);
            w.string(name.as_bytes());
            t.send_or_hold(phase, w.into_bytes())
        })
    }

    /// Starts a key re-exchange now (RFC 4253 §9: "Either party may initiate the re-exchange").
    /// Does nothing if one is already running.
    ///
    /// # Errors
    /// [`TransportError::NotReady`] before the first key exchange completed (refusal), or the
    /// sticky error.
    pub fn start_rekey(&mut self, now: Instant) -> Result<(), TransportError> {
        self.refuse_unless_established()?;
        self.with_phase(|t, phase| match phase {
            Phase::Established {
                session,
                rekey: None,
            } => t.begin_rekey(session, now),
            _ => Ok(phase),
        })
    }

    /// Closes the transport: queues `SSH_MSG_DISCONNECT` with `reason` and `description` (allowed
    /// at any time, even during a key exchange) and makes every later call return
    /// [`TransportError::Closed`]. Does nothing if the transport has already failed or closed.
    pub fn disconnect(&mut self, reason: DisconnectReason, description: &str) {
        if self.state.is_ok() {
            self.send_disconnect(reason, description);
            self.state = Err(TransportError::Closed);
        }
    }

    /// When [`Transport::handle_timeout`] must be called next: the deadline of the running key
    /// exchange, or the time-based rekey. `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            Err(_) => None,
            Ok(Phase::ExpectVersion { deadline, .. }) => Some(*deadline),
            Ok(Phase::FirstKex(run))
            | Ok(Phase::Established {
                rekey: Some(run), ..
            }) => Some(run.deadline),
            Ok(Phase::Established {
                session,
                rekey: None,
            }) => session.keys_since.checked_add(self.config.rekey_interval),
        }
    }

    /// Acts on expired timers: a key exchange past its deadline is fatal
    /// ([`TransportError::KexTimeout`]); keys older than `rekey_interval` start a rekey.
    ///
    /// # Errors
    /// The sticky or new fatal error.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TransportError> {
        let phase = self.take_phase()?;
        let deadline = match &phase {
            Phase::ExpectVersion { deadline, .. } => Some(*deadline),
            Phase::FirstKex(run)
            | Phase::Established {
                rekey: Some(run), ..
            } => Some(run.deadline),
            Phase::Established { rekey: None, .. } => None,
        };
        if deadline.is_some_and(|d| now >= d) {
            return Err(self.fail(TransportError::KexTimeout));
        }
        match self.maybe_rekey(phase, now) {
            Ok(phase) => {
                self.state = Ok(phase);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The session identifier once the first key exchange completed.
    pub fn session_id(&self) -> Option<&[u8]> {
        self.session().map(|s| s.id.as_slice())
    }

    /// The algorithms of the keys in use (after the first key exchange).
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.session().map(|s| s.negotiated)
    }

    /// Whether strict key exchange is in force (after the first key exchange).
    pub fn strict_kex(&self) -> Option<bool> {
        self.session().map(|s| s.mode == KexMode::Strict)
    }

    /// Completed key exchanges (1 after [`Event::Ready`], +1 per rekey).
    pub fn key_exchanges(&self) -> u64 {
        self.session().map_or(0, |s| s.key_exchanges)
    }

    /// Client: the server's `server-sig-algs` (RFC 8308), if it sent them.
    pub fn server_sig_algs(&self) -> Option<&[String]> {
        self.session()?.server_sig_algs.as_deref()
    }

    /// The peer's identification string (without CR LF) once received.
    pub fn peer_version(&self) -> Option<&[u8]> {
        (!self.peer_version.is_empty()).then_some(self.peer_version.as_slice())
    }

    /// The error that closed the transport, if any.
    pub fn error(&self) -> Option<&TransportError> {
        self.state.as_ref().err()
    }

    /// Is a key re-exchange running?
    pub fn is_rekeying(&self) -> bool {
        matches!(self.state, Ok(Phase::Established { rekey: Some(_), .. }))
    }

    fn session(&self) -> Option<&Session> {
        match &self.state {
            Ok(Phase::Established { session, .. }) => Some(session),
            _ => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // State plumbing
    // -----------------------------------------------------------------------------------------

    /// Takes the phase out for a transition by value; the sticky error if there is none.
    fn take_phase(&mut self) -> Result<Phase, TransportError> {
        match std::mem::replace(&mut self.state, Err(TransportError::Closed)) {
            Ok(phase) => Ok(phase),
            Err(e) => {
                let copy = e.clone();
                self.state = Err(e);
                Err(copy)
            }
        }
    }

    /// Runs a public operation on the phase; an error from it is fatal (refusals are checked
    /// before, on the borrowed state).
    fn with_phase(
        &mut self,
        op: impl FnOnce(&mut Self, Phase) -> Result<Phase, TransportError>,
    ) -> Result<(), TransportError> {
        let phase = self.take_phase()?;
        match op(self, phase) {
            Ok(phase) => {
                self.state = Ok(phase);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// [`TransportError::NotReady`] before the first key exchange completed, the sticky error
    /// once closed.
    fn refuse_unless_established(&self) -> Result<(), TransportError> {
        match &self.state {
            Err(e) => Err(e.clone()),
            Ok(Phase::Established { .. }) => Ok(()),
            Ok(_) => Err(TransportError::NotReady),
        }
    }

    /// Makes `error` sticky, telling the peer why when there is a reason code for it.
    fn fail(&mut self, error: TransportError) -> TransportError {
        if let Some(reason) = error.disconnect_reason() {
            self.send_disconnect(reason, &error.to_string());
        }
        self.state = Err(error.clone());
        error
    }

    fn send_disconnect(&mut self, reason: DisconnectReason, description: &str) {
        // RFC 4253 §11.1: "uint32 reason code / string description in ISO-10646 UTF-8 encoding /
        // string language tag".
        let mut w = Writer::message(msg::DISCONNECT);
        w.u32(reason.code())
            .string(description.as_bytes())
            .string(b"");
        // Best effort: the connection is ending either way.
        let _ = self.sealer.seal(w.as_bytes(), &*self.rng, &mut self.tx);
    }

    fn compact_rx(&mut self) {
        if self.rx_start > 0 {
            self.rx.drain(..self.rx_start.min(self.rx.len()));
            self.rx_start = 0;
        }
    }

    fn send_now(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        Ok(self.sealer.seal(payload, &*self.rng, &mut self.tx)?)
    }

    /// Sends `payload` now when no key exchange is running, else holds it.
    fn send_or_hold(&mut self, phase: Phase, payload: Vec<u8>) -> Result<Phase, TransportError> {
        if matches!(phase, Phase::Established { rekey: None, .. }) {
            self.send_now(&payload)?;
        } else {
            self.held.push_back(payload);
        }
        Ok(phase)
    }

    fn flush_held(&mut self) -> Result<(), TransportError> {
        while let Some(payload) = self.held.pop_front() {
            self.send_now(&payload)?;
        }
        Ok(())
    }

    fn send_kexinit(&mut self, round: KexRound) -> Result<SentKexInit, TransportError> {
        let mut cookie = [0u8; 16];
        self.rng
            .fill(&mut cookie)
            .map_err(|_| TransportError::Random)?;
        let init = KexInit::ours(self.side(), round, &self.config.ciphers, cookie);
        let payload = init.encode();
        self.send_now(&payload)?;
        Ok(SentKexInit { payload, init })
    }

    fn begin_rekey(&mut self, session: Session, now: Instant) -> Result<Phase, TransportError> {
        let ours = self.send_kexinit(KexRound::Rekey)?;
        Ok(Phase::Established {
            session,
            rekey: Some(KexRun {
                step: KexStep::ExpectKexInit { ours },
                deadline: deadline_after(now, self.config.rekey_timeout),
            }),
        })
    }

    /// Starts a rekey when the keys have carried enough traffic or time.
    fn maybe_rekey(&mut self, phase: Phase, now: Instant) -> Result<Phase, TransportError> {
        let Phase::Established {
            session,
            rekey: None,
        } = phase
        else {
            return Ok(phase);
        };
        let (sent, received) = (self.sealer.volume(), self.opener.volume());
        let due = sent.bytes.max(received.bytes) >= self.config.rekey_after_bytes
            || sent.packets.max(received.packets) >= self.config.rekey_after_packets
            || session
                .keys_since
                .checked_add(self.config.rekey_interval)
                .is_some_and(|at| now >= at);
        if due {
            self.begin_rekey(session, now)
        } else {
            Ok(Phase::Established {
                session,
                rekey: None,
            })
        }
    }

    // -----------------------------------------------------------------------------------------
    // Receiving
    // -----------------------------------------------------------------------------------------

    fn run(
        &mut self,
        mut phase: Phase,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<Phase, TransportError> {
        loop {
            if let Phase::ExpectVersion {
                ours,
                lines_before,
                deadline,
            } = phase
            {
                let input = self.rx.get(self.rx_start..).unwrap_or_default();
                match version::scan(input, self.side() == Side::Client)? {
                    Scan::Incomplete => {
                        return Ok(Phase::ExpectVersion {
                            ours,
                            lines_before,
                            deadline,
                        })
                    }
                    Scan::OtherLine { consumed } => {
                        if lines_before >= version::MAX_PRE_BANNER_LINES {
                            return Err(VersionError::TooManyLines.into());
                        }
                        self.rx_start += consumed;
                        phase = Phase::ExpectVersion {
                            ours,
                            lines_before: lines_before + 1,
                            deadline,
                        };
                    }
                    Scan::Identification { version, consumed } => {
                        self.rx_start += consumed;
                        self.peer_version = version;
                        phase = Phase::FirstKex(KexRun {
                            step: KexStep::ExpectKexInit { ours },
                            deadline,
                        });
                    }
                }
                continue;
            }
            let input = self.rx.get(self.rx_start..).unwrap_or_default();
            let Some(packet) = self.opener.open(input)? else {
                return Ok(phase);
            };
            self.rx_start += packet.consumed;
            phase = self.on_packet(phase, packet, now, events)?;
            phase = self.maybe_rekey(phase, now)?;
        }
    }

    fn on_packet(
        &mut self,
        phase: Phase,
        packet: OpenedPacket,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<Phase, TransportError> {
        let OpenedPacket {
            payload,
            sequence_number,
            ..
        } = packet;
        let Some(&message) = payload.first() else {
            return Err(TransportError::EmptyPayload);
        };
        if message == msg::DISCONNECT {
            return Err(parse_disconnect(&payload));
        }
        match phase {
            // Packets are only opened after the identification.
            Phase::ExpectVersion { .. } => Err(TransportError::UnexpectedMessage { message }),
            Phase::FirstKex(KexRun { step, deadline }) => {
                let step = match step {
                    KexStep::ExpectKexInit { ours } => match message {
                        msg::KEXINIT => {
                            self.on_peer_kexinit(ours, payload, sequence_number, None)?
                        }
                        // Strictness is not known before the peer's KEXINIT; if it turns out to
                        // be strict, that KEXINIT's non-zero sequence number is the violation.
                        msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED => {
                            KexStep::ExpectKexInit { ours }
                        }
                        _ => return Err(TransportError::UnexpectedMessage { message }),
                    },
                    step => match self.on_kex_step(step, &payload, sequence_number, true, None)? {
                        StepOutcome::Continue(step) => step,
                        StepOutcome::Done(outcome) => {
                            events.push(Event::Ready {
                                session_id: outcome.session_id.clone(),
                            });
                            let session = Session {
                                id: outcome.session_id,
                                mode: outcome.mode,
                                negotiated: outcome.negotiated,
                                keys_since: now,
                                pending_service: None,
                                server_sig_algs: None,
                                key_exchanges: 1,
                            };
                            self.flush_held()?;
                            return Ok(Phase::Established {
                                session,
                                rekey: None,
                            });
                        }
                    },
                };
                Ok(Phase::FirstKex(KexRun { step, deadline }))
            }
            Phase::Established {
                mut session,
                rekey: Some(KexRun { step, deadline }),
            } => {
                let step = match step {
                    // We started this rekey; until the peer's KEXINIT arrives it may still send
                    // anything it could send before.
                    KexStep::ExpectKexInit { ours } => {
                        if message == msg::KEXINIT {
                            self.on_peer_kexinit(
                                ours,
                                payload,
                                sequence_number,
                                Some(session.mode),
                            )?
                        } else {
                            self.on_open_message(&mut session, payload, sequence_number, events)?;
                            KexStep::ExpectKexInit { ours }
                        }
                    }
                    step => {
                        match self.on_kex_step(
                            step,
                            &payload,
                            sequence_number,
                            false,
                            Some(&session.id),
                        )? {
                            StepOutcome::Continue(step) => step,
                            StepOutcome::Done(outcome) => {
                                session.negotiated = outcome.negotiated;
                                session.keys_since = now;
                                session.key_exchanges += 1;
                                self.flush_held()?;
                                return Ok(Phase::Established {
                                    session,
                                    rekey: None,
                                });
                            }
                        }
                    }
                };
                Ok(Phase::Established {
                    session,
                    rekey: Some(KexRun { step, deadline }),
                })
            }
            Phase::Established {
                mut session,
                rekey: None,
            } => {
                if message == msg::KEXINIT {
                    // RFC 4253 §9: the peer started a re-exchange; answer with our KEXINIT.
                    let ours = self.send_kexinit(KexRound::Rekey)?;
                    let step =
                        self.on_peer_kexinit(ours, payload, sequence_number, Some(session.mode))?;
                    return Ok(Phase::Established {
                        session,
                        rekey: Some(KexRun {
                            step,
                            deadline: deadline_after(now, self.config.rekey_timeout),
                        }),
                    });
                }
                self.on_open_message(&mut session, payload, sequence_number, events)?;
                Ok(Phase::Established {
                    session,
                    rekey: None,
                })
            }
        }
    }

    /// A message outside any key exchange (or before the peer's KEXINIT of one we started).
    fn on_open_message(
        &mut self,
        session: &mut Session,
        payload: Vec<u8>,
        sequence_number: u32,
        events: &mut Vec<Event>,
    ) -> Result<(), TransportError> {
        let Some(&message) = payload.first() else {
            return Err(TransportError::EmptyPayload);
        };
        let malformed = |error| TransportError::Malformed { message, error };
        match message {
            m if m >= msg::FIRST_HIGHER_LAYER => events.push(Event::Payload(payload)),
            msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED => {}
            msg::SERVICE_REQUEST if self.side() == Side::Server => {
                let name = parse_service_name(&payload).map_err(malformed)?;
                events.push(Event::ServiceRequest(name));
            }
            msg::SERVICE_ACCEPT if self.side() == Side::Client => {
                let name = parse_service_name(&payload).map_err(malformed)?;
                if session.pending_service.as_deref() != Some(name.as_str()) {
                    return Err(TransportError::UnexpectedMessage { message });
                }
                session.pending_service = None;
                events.push(Event::ServiceAccepted(name));
            }
            msg::EXT_INFO if self.side() == Side::Client => {
                if let Some(algs) = kex::parse_ext_info(&payload)? {
                    session.server_sig_algs = Some(algs.clone());
                    events.push(Event::ExtInfo {
                        server_sig_algs: algs,
                    });
                }
            }
            // We don't announce ext-info-s, so a client has no reason to send EXT_INFO; RFC 8308
            // §2.5 lets us ignore what we don't use.
            msg::EXT_INFO => {}
            // Known messages in the wrong place.
            msg::SERVICE_REQUEST
            | msg::SERVICE_ACCEPT
            | msg::NEWKEYS
            | msg::KEX_ECDH_INIT
            | msg::KEX_ECDH_REPLY => return Err(TransportError::UnexpectedMessage { message }),
            // RFC 4253 §11.4: "An implementation MUST respond to all unrecognized messages with
            // an SSH_MSG_UNIMPLEMENTED message in the order in which the messages were received."
            _ => self.send_unimplemented(sequence_number)?,
        }
        Ok(())
    }

    fn send_unimplemented(&mut self, sequence_number: u32) -> Result<(), TransportError> {
        let mut w = Writer::message(msg::UNIMPLEMENTED);
        w.u32(sequence_number);
        self.send_now(w.as_bytes())
    }

    /// Both KEXINITs are known: negotiate and take the first key exchange step.
    /// `session_mode` is `None` during the first key exchange, where the KEXINITs decide it.
    fn on_peer_kexinit(
        &mut self,
        ours: SentKexInit,
        theirs: Vec<u8>,
        sequence_number: u32,
        session_mode: Option<KexMode>,
    ) -> Result<KexStep, TransportError> {
        let peer = KexInit::parse(&theirs)?;
        let side = self.side();
        let (client, server) = match side {
            Side::Client => (&ours.init, &peer),
            Side::Server => (&peer, &ours.init),
        };
        let negotiated = kex::negotiate(client, server)?;
        let (mode, ext_info) = match session_mode {
            Some(mode) => (mode, ExtInfoPlan::Skip),
            None => {
                let (our_marker, peer_marker) = match side {
                    Side::Client => (kex::STRICT_KEX_CLIENT, kex::STRICT_KEX_SERVER),
                    Side::Server => (kex::STRICT_KEX_SERVER, kex::STRICT_KEX_CLIENT),
                };
                // Strict only when both sides signalled it (we always do). PROTOCOL §1.10: then
                // "terminate the connection if the first packet received is not
                // SSH2_MSG_KEXINIT".
                let mode = if ours.init.signals(our_marker) && peer.signals(peer_marker) {
                    if sequence_number != 0 {
                        return Err(TransportError::StrictKexViolation {
                            message: msg::KEXINIT,
                        });
                    }
                    KexMode::Strict
                } else {
                    KexMode::Classic
                };
                let ext_info = if side == Side::Server && peer.signals(kex::EXT_INFO_CLIENT) {
                    ExtInfoPlan::SendAfterNewKeys
                } else {
                    ExtInfoPlan::Skip
                };
                (mode, ext_info)
            }
        };
        let guess = if peer.first_kex_packet_follows && kex::peer_guess_is_wrong(&ours.init, &peer)
        {
            PeerGuess::DropNextPacket
        } else {
            PeerGuess::NoneToDrop
        };
        let (client_kexinit, server_kexinit) = match side {
            Side::Client => (ours.payload, theirs),
            Side::Server => (theirs, ours.payload),
        };
        let agreed = Agreed {
            client_kexinit,
            server_kexinit,
            negotiated,
            mode,
            ext_info,
        };
        match side {
            Side::Server => Ok(KexStep::ExpectEcdhInit { agreed, guess }),
            Side::Client => {
                let ephemeral = Ephemeral::generate(&*self.rng)?;
                self.send_now(&kex::encode_ecdh_init(ephemeral.public()))?;
                Ok(KexStep::ExpectEcdhReply {
                    agreed,
                    ephemeral,
                    guess,
                })
            }
        }
    }

    /// A packet during a key exchange, after both KEXINITs. `first` marks the first exchange,
    /// where strict mode forbids everything but the expected messages.
    fn on_kex_step(
        &mut self,
        step: KexStep,
        payload: &[u8],
        sequence_number: u32,
        first: bool,
        session_id: Option<&[u8]>,
    ) -> Result<StepOutcome, TransportError> {
        let Some(&message) = payload.first() else {
            return Err(TransportError::EmptyPayload);
        };
        let strict = first && step.mode() == Some(KexMode::Strict);
        match (step, message) {
            (
                KexStep::ExpectEcdhInit {
                    agreed,
                    guess: PeerGuess::DropNextPacket,
                },
                _,
            ) => Ok(StepOutcome::Continue(KexStep::ExpectEcdhInit {
                agreed,
                guess: PeerGuess::NoneToDrop,
            })),
            (
                KexStep::ExpectEcdhReply {
                    agreed,
                    ephemeral,
                    guess: PeerGuess::DropNextPacket,
                },
                _,
            ) => Ok(StepOutcome::Continue(KexStep::ExpectEcdhReply {
                agreed,
                ephemeral,
                guess: PeerGuess::NoneToDrop,
            })),
            (KexStep::ExpectEcdhInit { agreed, .. }, msg::KEX_ECDH_INIT) => self
                .server_ecdh(agreed, payload, session_id)
                .map(StepOutcome::Continue),
            (
                KexStep::ExpectEcdhReply {
                    agreed, ephemeral, ..
                },
                msg::KEX_ECDH_REPLY,
            ) => self
                .client_ecdh(agreed, ephemeral, payload, session_id)
                .map(StepOutcome::Continue),
            (KexStep::ExpectNewKeys { opening, outcome }, msg::NEWKEYS) => {
                if payload.len() != 1 {
                    return Err(TransportError::Malformed {
                        message,
                        error: WireError::TrailingBytes,
                    });
                }
                // PROTOCOL §1.10: "After sending or receiving a SSH2_MSG_NEWKEYS message, reset
                // the packet sequence number to zero."
                self.opener.install(*opening, outcome.mode.sequence());
                Ok(StepOutcome::Done(outcome))
            }
            // PROTOCOL §1.10: "Unexpected packets for the purpose of strict KEX include messages
            // that are otherwise valid at any time during the connection such as SSH2_MSG_DEBUG
            // and SSH2_MSG_IGNORE."
            (_, _) if strict => Err(TransportError::StrictKexViolation { message }),
            (step, msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED) => {
                Ok(StepOutcome::Continue(step))
            }
            (step, m) if msg::allowed_during_kex(m) && !is_known_transport_message(m) => {
                self.send_unimplemented(sequence_number)?;
                Ok(StepOutcome::Continue(step))
            }
            (_, _) => Err(TransportError::UnexpectedMessage { message }),
        }
    }

    /// Server side of RFC 5656 §4 / RFC 8731 §3: answer Q_C with K_S, Q_S and our signature of
    /// H, then send NEWKEYS.
    fn server_ecdh(
        &mut self,
        agreed: Agreed,
        payload: &[u8],
        session_id: Option<&[u8]>,
    ) -> Result<KexStep, TransportError> {
        let Role::Server { host_key } = &self.role else {
            return Err(TransportError::UnexpectedMessage {
                message: msg::KEX_ECDH_INIT,
            });
        };
        let q_c = kex::parse_ecdh_init(payload)?;
        let ephemeral = Ephemeral::generate(&*self.rng)?;
        let q_s = *ephemeral.public();
        let k = ephemeral.agree(&q_c)?;
        let host_key_blob = hostkey::ed25519_public_key_blob(host_key.public_key().as_ref());
        let h = kex::exchange_hash(
            &HashInputs {
                client_version: &self.peer_version,
                server_version: &self.our_version,
                client_kexinit: &agreed.client_kexinit,
                server_kexinit: &agreed.server_kexinit,
                host_key_blob: &host_key_blob,
                client_public: &q_c,
                server_public: &q_s,
            },
            &k,
        );
        let signature_blob = hostkey::ed25519_signature_blob(host_key.sign(&h).as_ref());
        let reply = EcdhReply {
            host_key_blob,
            q_s,
            signature_blob,
        };
        self.send_now(&reply.encode())?;
        self.send_newkeys(agreed, &k, h, session_id)
    }

    /// Client side: check the host key against the pin and its signature over H, then send
    /// NEWKEYS.
    fn client_ecdh(
        &mut self,
        agreed: Agreed,
        ephemeral: Ephemeral,
        payload: &[u8],
        session_id: Option<&[u8]>,
    ) -> Result<KexStep, TransportError> {
        let Role::Client { pinned_host_key } = &self.role else {
            return Err(TransportError::UnexpectedMessage {
                message: msg::KEX_ECDH_REPLY,
            });
        };
        let pinned_host_key = *pinned_host_key;
        let reply = EcdhReply::parse(payload)?;
        let pinned_blob = hostkey::ed25519_public_key_blob(&pinned_host_key);
        if reply.host_key_blob != pinned_blob {
            return Err(TransportError::HostKeyMismatch {
                expected: hostkey::sha256_fingerprint(&pinned_blob),
                presented: hostkey::sha256_fingerprint(&reply.host_key_blob),
            });
        }
        let q_c = *ephemeral.public();
        let k = ephemeral.agree(&reply.q_s)?;
        let h = kex::exchange_hash(
            &HashInputs {
                client_version: &self.our_version,
                server_version: &self.peer_version,
                client_kexinit: &agreed.client_kexinit,
                server_kexinit: &agreed.server_kexinit,
                host_key_blob: &reply.host_key_blob,
                client_public: &q_c,
                server_public: &reply.q_s,
            },
            &k,
        );
        hostkey::verify_ed25519_signature(&pinned_host_key, &reply.signature_blob, &h)?;
        self.send_newkeys(agreed, &k, h, session_id)
    }

    /// Derives the keys, sends NEWKEYS under the old keys and switches our sending side to the
    /// new ones (RFC 4253 §7.3: "All messages sent after this message MUST use the new keys and
    /// algorithms").
    fn send_newkeys(
        &mut self,
        agreed: Agreed,
        k: &SharedSecret,
        h: Vec<u8>,
        session_id: Option<&[u8]>,
    ) -> Result<KexStep, TransportError> {
        // RFC 4253 §7.2: "The exchange hash H from the first key exchange is additionally used
        // as the session identifier ... it will not change" on re-exchange.
        let session_id = session_id.map_or_else(|| h.clone(), <[u8]>::to_vec);
        let keys = kex::derive_session_keys(k, &h, &session_id, &agreed.negotiated);
        let (ours, theirs) = match self.side() {
            Side::Client => (&keys.client_to_server, &keys.server_to_client),
            Side::Server => (&keys.server_to_client, &keys.client_to_server),
        };
        let sealing = SealingCipher::new(ours.cipher, &ours.key, &ours.iv)?;
        let opening = OpeningCipher::new(theirs.cipher, &theirs.key, &theirs.iv)?;
        self.send_now(&[msg::NEWKEYS])?;
        self.sealer.install(sealing, agreed.mode.sequence());
        if agreed.ext_info == ExtInfoPlan::SendAfterNewKeys {
            self.send_now(&kex::encode_server_ext_info())?;
        }
        Ok(KexStep::ExpectNewKeys {
            opening: Box::new(opening),
            outcome: KexOutcome {
                session_id,
                negotiated: agreed.negotiated,
                mode: agreed.mode,
            },
        })
    }
}

/// Message numbers this transport knows (the rest of 1..=49 gets SSH_MSG_UNIMPLEMENTED).
fn is_known_transport_message(message: u8) -> bool {
    matches!(
        message,
        msg::DISCONNECT
            | msg::IGNORE
            | msg::UNIMPLEMENTED
            | msg::DEBUG
            | msg::SERVICE_REQUEST
            | msg::SERVICE_ACCEPT
            | msg::EXT_INFO
            | msg::KEXINIT
            | msg::NEWKEYS
            | msg::KEX_ECDH_INIT
            | msg::KEX_ECDH_REPLY
    )
}

fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    // A timeout too large to represent means "never" in practice; a century is close enough.
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// `SSH_MSG_SERVICE_REQUEST` / `SSH_MSG_SERVICE_ACCEPT`: `string service name`.
fn parse_service_name(payload: &[u8]) -> Result<String, WireError> {
    let mut r = Reader::new(payload);
    r.u8()?;
    let name = r.utf8()?;
    r.finish()?;
    Ok(name.to_owned())
}

/// `SSH_MSG_DISCONNECT` as the error it ends the connection with. A malformed one still ends it
/// (as a protocol error).
fn parse_disconnect(payload: &[u8]) -> TransportError {
    let mut r = Reader::new(payload);
    let parsed = (|| -> Result<(u32, &[u8]), WireError> {
        r.u8()?;
        let code = r.u32()?;
        let description = r.string()?;
        Ok((code, description))
    })();
    match parsed {
        Ok((code, description)) => {
            let shown = description.get(..MAX_DESCRIPTION).unwrap_or(description);
            TransportError::PeerDisconnected {
                reason: DisconnectReason::from_code(code),
                description: String::from_utf8_lossy(shown).into_owned(),
            }
        }
        Err(error) => TransportError::Malformed {
            message: msg::DISCONNECT,
            error,
        },
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
