//! Key exchange: KEXINIT (RFC 4253 §7.1), algorithm negotiation, `curve25519-sha256` (RFC 8731),
//! the exchange hash H, and key derivation (RFC 4253 §7.2).
//!
//! # What we offer
//!
//! | category | names |
//! | --- | --- |
//! | kex | `curve25519-sha256`, `curve25519-sha256@libssh.org`, plus markers: `ext-info-c` (client) and `kex-strict-c-v00@openssh.com` / `kex-strict-s-v00@openssh.com`, in the first KEXINIT only |
//! | host key | `ssh-ed25519` |
//! | cipher | `chacha20-poly1305@openssh.com`, `aes256-gcm@openssh.com`, `aes128-gcm@openssh.com` (or a subset, see [`KexInit::ours`]) |
//! | MAC | `hmac-sha2-256-etm@openssh.com`, `hmac-sha2-512-etm@openssh.com` — **never used** |
//! | compression | `none` |
//!
//! Every cipher we offer is an AEAD whose tag authenticates the packet, so no MAC is ever computed.
//! RFC 4251 §5 does not let the MAC name-list be empty in practice (OpenSSH refuses a KEXINIT with
//! an empty list), so we name two strong MACs. Negotiation follows OpenSSH (kex.c `choose_enc` /
//! `choose_mac`): the MAC of a direction is negotiated only when that direction's cipher has no
//! tag of its own. Since all ours have one, a peer whose MAC list shares nothing with ours still
//! connects, exactly as with OpenSSH (checked against a real `ssh -o MACs=hmac-sha1,...` in
//! `tests/ssh_transport.rs`).

use std::fmt;

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use ring::digest;

use super::cipher::CipherAlgorithm;
use super::hostkey::SSH_ED25519;
use super::msg;
use super::wire::{Reader, WireError, Writer};

/// RFC 8731 name.
pub const CURVE25519_SHA256: &str = "curve25519-sha256";
/// The pre-RFC name libssh and OpenSSH also use for the same method.
pub const CURVE25519_SHA256_LIBSSH: &str = "curve25519-sha256@libssh.org";
/// RFC 8308 §2.1: a client "MUST include [ext-info-c] in its KEXINIT ... to indicate it is
/// willing to accept SSH_MSG_EXT_INFO"; it is a marker, never a usable kex method.
pub const EXT_INFO_CLIENT: &str = "ext-info-c";
/// OpenSSH PROTOCOL §1.10 strict-kex marker a client puts in its kex name-list.
pub const STRICT_KEX_CLIENT: &str = "kex-strict-c-v00@openssh.com";
/// The server's strict-kex marker.
pub const STRICT_KEX_SERVER: &str = "kex-strict-s-v00@openssh.com";
/// MACs we name but never use (see the module doc).
pub const UNUSED_MACS: [&str; 2] = [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
];
/// The only compression we do.
pub const COMPRESSION_NONE: &str = "none";
/// What our server announces in EXT_INFO `server-sig-algs` (RFC 8308 §3.1): the user-key
/// signature algorithms the gateway's userauth accepts.
pub const SERVER_SIG_ALGS: &str = "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256";

/// Length of an X25519 public value (RFC 8731 §3: "Clients and servers MUST also abort if the
/// length of the received public keys are not the expected lengths").
pub const X25519_PUBLIC_LEN: usize = 32;

/// A key exchange method we implement. Both names are the same computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KexAlgorithm {
    /// `curve25519-sha256`.
    Curve25519Sha256,
    /// `curve25519-sha256@libssh.org`.
    Curve25519Sha256Libssh,
}

impl KexAlgorithm {
    /// Our order of preference.
    pub const ALL: [KexAlgorithm; 2] = [Self::Curve25519Sha256, Self::Curve25519Sha256Libssh];

    /// The SSH name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Curve25519Sha256 => CURVE25519_SHA256,
            Self::Curve25519Sha256Libssh => CURVE25519_SHA256_LIBSSH,
        }
    }

    /// The method with this name; markers such as `ext-info-c` are not methods and give `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Which end of the connection a KEXINIT comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that opened the TCP connection.
    Client,
    /// The end that accepted it.
    Server,
}

/// Is this the first key exchange of the connection or a later one? The ext-info and strict-kex
/// markers belong to the first only (RFC 8308 §2.1; OpenSSH PROTOCOL §1.10 "only valid in the
/// initial KEXINIT").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KexRound {
    /// The key exchange that follows the version exchange.
    Initial,
    /// A re-exchange (RFC 4253 §9).
    Rekey,
}

/// Category of a name-list, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Category {
    /// `kex_algorithms`.
    Kex,
    /// `server_host_key_algorithms`.
    HostKey,
    /// `encryption_algorithms_client_to_server`.
    CipherClientToServer,
    /// `encryption_algorithms_server_to_client`.
    CipherServerToClient,
    /// `compression_algorithms_client_to_server`.
    CompressionClientToServer,
    /// `compression_algorithms_server_to_client`.
    CompressionServerToClient,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kex => "key exchange",
            Self::HostKey => "host key",
            Self::CipherClientToServer => "cipher (client to server)",
            Self::CipherServerToClient => "cipher (server to client)",
            Self::CompressionClientToServer => "compression (client to server)",
            Self::CompressionServerToClient => "compression (server to client)",
        })
    }
}

/// Why a key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KexError {
    /// A key exchange message is malformed; `message` is its number.
    Malformed {
        /// The message number.
        message: u8,
        /// What is wrong with it.
        error: WireError,
    },
    /// The two KEXINITs share no algorithm in a category.
    NoCommonAlgorithm(Category),
    /// An ephemeral public value does not have 32 bytes.
    BadEphemeralKey,
    /// X25519 produced an unusable shared secret (RFC 8731 §3: "MUST check whether the computed
    /// secret is the all-zero value and abort if so").
    BadSharedSecret,
    /// The random number generator failed.
    Random,
}

impl fmt::Display for KexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { message, error } => {
                write!(f, "malformed key exchange message {message}: {error}")
            }
            Self::NoCommonAlgorithm(category) => {
                write!(f, "no {category} algorithm in common with the peer")
            }
            Self::BadEphemeralKey => f.write_str("ephemeral X25519 public key is not 32 bytes"),
            Self::BadSharedSecret => f.write_str("X25519 shared secret is invalid"),
            Self::Random => f.write_str("random number generator failed"),
        }
    }
}

impl std::error::Error for KexError {}

/// A parsed or built `SSH_MSG_KEXINIT` (RFC 4253 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KexInit {
    /// `byte[16] cookie (random bytes)`.
    pub cookie: [u8; 16],
    /// `name-list kex_algorithms`.
    pub kex_algorithms: Vec<String>,
    /// `name-list server_host_key_algorithms`.
    pub server_host_key_algorithms: Vec<String>,
    /// `name-list encryption_algorithms_client_to_server`.
    pub ciphers_client_to_server: Vec<String>,
    /// `name-list encryption_algorithms_server_to_client`.
    pub ciphers_server_to_client: Vec<String>,
    /// `name-list mac_algorithms_client_to_server`.
    pub macs_client_to_server: Vec<String>,
    /// `name-list mac_algorithms_server_to_client`.
    pub macs_server_to_client: Vec<String>,
    /// `name-list compression_algorithms_client_to_server`.
    pub compression_client_to_server: Vec<String>,
    /// `name-list compression_algorithms_server_to_client`.
    pub compression_server_to_client: Vec<String>,
    /// `name-list languages_client_to_server`.
    pub languages_client_to_server: Vec<String>,
    /// `name-list languages_server_to_client`.
    pub languages_server_to_client: Vec<String>,
    /// `boolean first_kex_packet_follows`.
    pub first_kex_packet_follows: bool,
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn borrowed(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

impl KexInit {
    /// Our KEXINIT for `side`, offering `ciphers` in that order (normally
    /// [`CipherAlgorithm::ALL`]; tests and operators may narrow it).
    pub fn ours(
        side: Side,
        round: KexRound,
        ciphers: &[CipherAlgorithm],
        cookie: [u8; 16],
    ) -> Self {
        let mut kex = owned(&[CURVE25519_SHA256, CURVE25519_SHA256_LIBSSH]);
        if round == KexRound::Initial {
            match side {
                Side::Client => {
                    kex.push(EXT_INFO_CLIENT.to_owned());
                    kex.push(STRICT_KEX_CLIENT.to_owned());
                }
                Side::Server => kex.push(STRICT_KEX_SERVER.to_owned()),
            }
        }
        let cipher_names: Vec<String> = ciphers.iter().map(|c| c.name().to_owned()).collect();
        KexInit {
            cookie,
            kex_algorithms: kex,
            server_host_key_algorithms: owned(&[SSH_ED25519]),
            ciphers_client_to_server: cipher_names.clone(),
            ciphers_server_to_client: cipher_names,
            macs_client_to_server: owned(&UNUSED_MACS),
            macs_server_to_client: owned(&UNUSED_MACS),
            compression_client_to_server: owned(&[COMPRESSION_NONE]),
            compression_server_to_client: owned(&[COMPRESSION_NONE]),
            languages_client_to_server: Vec::new(),
            languages_server_to_client: Vec::new(),
            first_kex_packet_follows: false,
        }
    }

    /// The payload, message number included (this exact byte string goes into H as I_C / I_S).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::message(msg::KEXINIT);
        w.raw(&self.cookie);
        for list in [
            &self.kex_algorithms,
            &self.server_host_key_algorithms,
            &self.ciphers_client_to_server,
            &self.ciphers_server_to_client,
            &self.macs_client_to_server,
            &self.macs_server_to_client,
            &self.compression_client_to_server,
            &self.compression_server_to_client,
            &self.languages_client_to_server,
            &self.languages_server_to_client,
        ] {
            w.name_list(&borrowed(list));
        }
        // "uint32 0 (reserved for future extension)"
        w.bool(self.first_kex_packet_follows).u32(0);
        w.into_bytes()
    }

    /// Parses a KEXINIT payload (message number included).
    ///
    /// # Errors
    /// [`KexError::Malformed`] for a wrong message number, a truncated or malformed field, or
    /// trailing bytes. The reserved uint32 is read but not checked (RFC 4253 §7.1 only says it
    /// is "reserved for future extension").
    pub fn parse(payload: &[u8]) -> Result<Self, KexError> {
        let malformed = |error| KexError::Malformed {
            message: msg::KEXINIT,
            error,
        };
        let mut r = Reader::new(payload);
        if r.u8().map_err(malformed)? != msg::KEXINIT {
            return Err(malformed(WireError::NonCanonical));
        }
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(r.take(16).map_err(malformed)?);
        let mut lists: [Vec<String>; 10] = Default::default();
        for list in &mut lists {
            *list = r
                .name_list()
                .map_err(malformed)?
                .into_iter()
                .map(str::to_owned)
                .collect();
        }
        let first_kex_packet_follows = r.bool().map_err(malformed)?;
        let _reserved = r.u32().map_err(malformed)?;
        r.finish().map_err(malformed)?;
        let [kex, host_key, enc_cs, enc_sc, mac_cs, mac_sc, comp_cs, comp_sc, lang_cs, lang_sc] =
            lists;
        Ok(KexInit {
            cookie,
            kex_algorithms: kex,
            server_host_key_algorithms: host_key,
            ciphers_client_to_server: enc_cs,
            ciphers_server_to_client: enc_sc,
            macs_client_to_server: mac_cs,
            macs_server_to_client: mac_sc,
            compression_client_to_server: comp_cs,
            compression_server_to_client: comp_sc,
            languages_client_to_server: lang_cs,
            languages_server_to_client: lang_sc,
            first_kex_packet_follows,
        })
    }

    /// Does the kex name-list carry `marker` (`ext-info-c`, a strict-kex marker)?
    pub fn signals(&self, marker: &str) -> bool {
        self.kex_algorithms.iter().any(|n| n == marker)
    }
}

/// The algorithms both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Key exchange method.
    pub kex: KexAlgorithm,
    /// Cipher for packets from client to server.
    pub cipher_client_to_server: CipherAlgorithm,
    /// Cipher for packets from server to client.
    pub cipher_server_to_client: CipherAlgorithm,
}

/// RFC 4253 §7.1: "The chosen algorithm MUST be the first algorithm on the client's name-list
/// that is also on the server's name-list." `accept` maps a name to something we implement, so
/// a name both peers list but we don't know (a marker, say) is never chosen.
fn choose<T>(
    client: &[String],
    server: &[String],
    category: Category,
    accept: impl Fn(&str) -> Option<T>,
) -> Result<T, KexError> {
    client
        .iter()
        .filter(|name| server.contains(name))
        .find_map(|name| accept(name))
        .ok_or(KexError::NoCommonAlgorithm(category))
}

/// Negotiates every category (RFC 4253 §7.1).
///
/// # Errors
/// [`KexError::NoCommonAlgorithm`] naming the first category without a common algorithm.
pub fn negotiate(client: &KexInit, server: &KexInit) -> Result<Negotiated, KexError> {
    let kex = choose(
        &client.kex_algorithms,
        &server.kex_algorithms,
        Category::Kex,
        KexAlgorithm::from_name,
    )?;
    choose(
        &client.server_host_key_algorithms,
        &server.server_host_key_algorithms,
        Category::HostKey,
        |n| (n == SSH_ED25519).then_some(()),
    )?;
    let cipher_client_to_server = choose(
        &client.ciphers_client_to_server,
        &server.ciphers_client_to_server,
        Category::CipherClientToServer,
        CipherAlgorithm::from_name,
    )?;
    let cipher_server_to_client = choose(
        &client.ciphers_server_to_client,
        &server.ciphers_server_to_client,
        Category::CipherServerToClient,
        CipherAlgorithm::from_name,
    )?;
    // MACs: not negotiated, every CipherAlgorithm is an AEAD (module doc; OpenSSH kex.c only
    // calls choose_mac when "authlen == 0").
    let none = |n: &str| (n == COMPRESSION_NONE).then_some(());
    choose(
        &client.compression_client_to_server,
        &server.compression_client_to_server,
        Category::CompressionClientToServer,
        none,
    )?;
    choose(
        &client.compression_server_to_client,
        &server.compression_server_to_client,
        Category::CompressionServerToClient,
        none,
    )?;
    Ok(Negotiated {
        kex,
        cipher_client_to_server,
        cipher_server_to_client,
    })
}

/// RFC 4253 §7: if the peer set `first_kex_packet_follows`, "the guess is wrong if the kex
/// algorithm and/or the host key algorithm is guessed wrong (server and client have different
/// preferred algorithm) ... [then] the next packet MUST be silently ignored". Like OpenSSH
/// (kex.c `proposals_match`) we compare the first entries of both lists.
pub fn peer_guess_is_wrong(ours: &KexInit, peer: &KexInit) -> bool {
    ours.kex_algorithms.first() != peer.kex_algorithms.first()
        || ours.server_host_key_algorithms.first() != peer.server_host_key_algorithms.first()
}

/// The X25519 shared secret, kept raw; it enters H and the key derivation as an mpint.
pub struct SharedSecret(Vec<u8>);

impl SharedSecret {
    /// A secret from raw X25519 output (tests and fuzzing use fixed values).
    pub fn from_raw(raw: &[u8]) -> Self {
        SharedSecret(raw.to_vec())
    }

    /// RFC 8731 §3.1: "The 32 bytes of shared secret ... are converted into K by interpreting
    /// the octets as an unsigned fixed-length integer encoded in network byte order", then
    /// encoded as an mpint.
    fn write_mpint(&self, w: &mut Writer) {
        w.mpint_unsigned(&self.0);
    }
}

impl Drop for SharedSecret {
    fn drop(&mut self) {
        // Best effort: without `unsafe` the compiler may elide this, but it costs nothing.
        self.0.fill(0);
    }
}

/// Our ephemeral X25519 key for one key exchange.
pub struct Ephemeral {
    private: EphemeralPrivateKey,
    public: [u8; X25519_PUBLIC_LEN],
}

impl Ephemeral {
    /// A fresh key pair.
    ///
    /// # Errors
    /// [`KexError::Random`] if the random number generator fails.
    pub fn generate(rng: &dyn ring::rand::SecureRandom) -> Result<Self, KexError> {
        let private =
            EphemeralPrivateKey::generate(&agreement::X25519, rng).map_err(|_| KexError::Random)?;
        let public_key = private.compute_public_key().map_err(|_| KexError::Random)?;
        let public = public_key
            .as_ref()
            .try_into()
            .map_err(|_| KexError::Random)?;
        Ok(Ephemeral { private, public })
    }

    /// Our public value (Q_C or Q_S).
    pub fn public(&self) -> &[u8; X25519_PUBLIC_LEN] {
        &self.public
    }

    /// X25519 with the peer's public value.
    ///
    /// # Errors
    /// [`KexError::BadEphemeralKey`] for a public value that is not 32 bytes,
    /// [`KexError::BadSharedSecret`] if the result is all zeros (a low-order peer point).
    pub fn agree(self, peer_public: &[u8]) -> Result<SharedSecret, KexError> {
        if peer_public.len() != X25519_PUBLIC_LEN {
            return Err(KexError::BadEphemeralKey);
        }
        let peer = UnparsedPublicKey::new(&agreement::X25519, peer_public);
        let raw = agreement::agree_ephemeral(self.private, &peer, |k| k.to_vec())
            .map_err(|_| KexError::BadSharedSecret)?;
        if raw.iter().all(|&b| b == 0) {
            return Err(KexError::BadSharedSecret);
        }
        Ok(SharedSecret(raw))
    }
}

/// `SSH_MSG_KEX_ECDH_INIT` (RFC 5656 §4): `string Q_C`.
pub fn encode_ecdh_init(q_c: &[u8]) -> Vec<u8> {
    let mut w = Writer::message(msg::KEX_ECDH_INIT);
    w.string(q_c);
    w.into_bytes()
}

/// Parses `SSH_MSG_KEX_ECDH_INIT` and returns Q_C.
///
/// # Errors
/// [`KexError::Malformed`] or [`KexError::BadEphemeralKey`].
pub fn parse_ecdh_init(payload: &[u8]) -> Result<[u8; X25519_PUBLIC_LEN], KexError> {
    let malformed = |error| KexError::Malformed {
        message: msg::KEX_ECDH_INIT,
        error,
    };
    let mut r = Reader::new(payload);
    if r.u8().map_err(malformed)? != msg::KEX_ECDH_INIT {
        return Err(malformed(WireError::NonCanonical));
    }
    let q_c = r.string().map_err(malformed)?;
    r.finish().map_err(malformed)?;
    q_c.try_into().map_err(|_| KexError::BadEphemeralKey)
}

/// The fields of `SSH_MSG_KEX_ECDH_REPLY` (RFC 5656 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdhReply {
    /// `string K_S, server's public host key`.
    pub host_key_blob: Vec<u8>,
    /// `string Q_S, server's ephemeral public key octet string`.
    pub q_s: [u8; X25519_PUBLIC_LEN],
    /// `string the signature on the exchange hash`.
    pub signature_blob: Vec<u8>,
}

impl EcdhReply {
    /// The payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::message(msg::KEX_ECDH_REPLY);
        w.string(&self.host_key_blob)
            .string(&self.q_s)
            .string(&self.signature_blob);
        w.into_bytes()
    }

    /// Parses the payload.
    ///
    /// # Errors
    /// [`KexError::Malformed`] or [`KexError::BadEphemeralKey`].
    pub fn parse(payload: &[u8]) -> Result<Self, KexError> {
        let malformed = |error| KexError::Malformed {
            message: msg::KEX_ECDH_REPLY,
            error,
        };
        let mut r = Reader::new(payload);
        if r.u8().map_err(malformed)? != msg::KEX_ECDH_REPLY {
            return Err(malformed(WireError::NonCanonical));
        }
        let host_key_blob = r.string().map_err(malformed)?.to_vec();
        let q_s = r.string().map_err(malformed)?;
        let signature_blob = r.string().map_err(malformed)?.to_vec();
        r.finish().map_err(malformed)?;
        Ok(EcdhReply {
            host_key_blob,
            q_s: q_s.try_into().map_err(|_| KexError::BadEphemeralKey)?,
            signature_blob,
        })
    }
}

/// The inputs of the exchange hash other than K.
#[derive(Debug, Clone, Copy)]
pub struct HashInputs<'a> {
    /// V_C, the client's identification string without CR LF.
    pub client_version: &'a [u8],
    /// V_S.
    pub server_version: &'a [u8],
    /// I_C, the payload of the client's KEXINIT.
    pub client_kexinit: &'a [u8],
    /// I_S.
    pub server_kexinit: &'a [u8],
    /// K_S, the server's host key blob.
    pub host_key_blob: &'a [u8],
    /// Q_C.
    pub client_public: &'a [u8],
    /// Q_S.
    pub server_public: &'a [u8],
}

/// RFC 5656 §4 (adopted by RFC 8731 §3): "The exchange hash H is computed as the hash of the
/// concatenation of the following": `string V_C, string V_S, string I_C, string I_S, string K_S,
/// string Q_C, string Q_S, mpint K`; the hash is SHA-256 for both curve25519 names.
pub fn exchange_hash(inputs: &HashInputs<'_>, k: &SharedSecret) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(inputs.client_version)
        .string(inputs.server_version)
        .string(inputs.client_kexinit)
        .string(inputs.server_kexinit)
        .string(inputs.host_key_blob)
        .string(inputs.client_public)
        .string(inputs.server_public);
    k.write_mpint(&mut w);
    digest::digest(&digest::SHA256, w.as_bytes())
        .as_ref()
        .to_vec()
}

/// RFC 4253 §7.2 key derivation: `HASH(K || H || X || session_id)` for the letter `X`, "where K
/// is encoded as mpint", extended when more bytes are needed: "K1 = HASH(K || H || X ||
/// session_id) / K2 = HASH(K || H || K1) / K3 = HASH(K || H || K1 || K2) / ... key = K1 || K2 ||
/// K3 || ...", then truncated to `len`.
pub fn derive(k: &SharedSecret, h: &[u8], letter: u8, session_id: &[u8], len: usize) -> Vec<u8> {
    let mut prefix = Writer::new();
    k.write_mpint(&mut prefix);
    prefix.raw(h);
    let mut first = prefix.clone();
    first.u8(letter).raw(session_id);
    let mut out = digest::digest(&digest::SHA256, first.as_bytes())
        .as_ref()
        .to_vec();
    while out.len() < len {
        let mut next = prefix.clone();
        next.raw(&out);
        out.extend_from_slice(digest::digest(&digest::SHA256, next.as_bytes()).as_ref());
    }
    out.truncate(len);
    out
}

/// Key material for one direction.
pub struct DirectionKeys {
    /// The cipher these keys are for.
    pub cipher: CipherAlgorithm,
    /// Initial IV (letters A / B).
    pub iv: Vec<u8>,
    /// Encryption key (letters C / D).
    pub key: Vec<u8>,
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.iv.fill(0);
        self.key.fill(0);
    }
}

/// Key material for both directions after a key exchange.
pub struct SessionKeys {
    /// Packets from the client to the server.
    pub client_to_server: DirectionKeys,
    /// Packets from the server to the client.
    pub server_to_client: DirectionKeys,
}

/// Derives what the negotiated ciphers need (RFC 4253 §7.2 letters A–D; E and F, the integrity
/// keys, are not derived because no MAC is in use).
pub fn derive_session_keys(
    k: &SharedSecret,
    h: &[u8],
    session_id: &[u8],
    negotiated: &Negotiated,
) -> SessionKeys {
    let c2s = negotiated.cipher_client_to_server;
    let s2c = negotiated.cipher_server_to_client;
    SessionKeys {
        client_to_server: DirectionKeys {
            cipher: c2s,
            iv: derive(k, h, b'A', session_id, c2s.iv_len()),
            key: derive(k, h, b'C', session_id, c2s.key_len()),
        },
        server_to_client: DirectionKeys {
            cipher: s2c,
            iv: derive(k, h, b'B', session_id, s2c.iv_len()),
            key: derive(k, h, b'D', session_id, s2c.key_len()),
        },
    }
}

/// Most extensions accepted in one EXT_INFO (RFC 8308 defines four; OpenSSH sends up to five).
pub const MAX_EXTENSIONS: u32 = 32;

/// `SSH_MSG_EXT_INFO` with our `server-sig-algs` (RFC 8308 §2.3 and §3.1).
pub fn encode_server_ext_info() -> Vec<u8> {
    let mut w = Writer::message(msg::EXT_INFO);
    w.u32(1)
        .string(b"server-sig-algs")
        .string(SERVER_SIG_ALGS.as_bytes());
    w.into_bytes()
}

/// Parses `SSH_MSG_EXT_INFO` and returns the `server-sig-algs` name-list if present (other
/// extensions are skipped: RFC 8308 §2.5 "an implementation MUST ignore ... extensions it does
/// not recognize").
///
/// # Errors
/// [`KexError::Malformed`] (an extension count over [`MAX_EXTENSIONS`] is `TooLong`).
pub fn parse_ext_info(payload: &[u8]) -> Result<Option<Vec<String>>, KexError> {
    let malformed = |error| KexError::Malformed {
        message: msg::EXT_INFO,
        error,
    };
    let mut r = Reader::new(payload);
    if r.u8().map_err(malformed)? != msg::EXT_INFO {
        return Err(malformed(WireError::NonCanonical));
    }
    let count = r.u32().map_err(malformed)?;
    if count > MAX_EXTENSIONS {
        return Err(malformed(WireError::TooLong));
    }
    let mut server_sig_algs = None;
    for _ in 0..count {
        let name = r.string().map_err(malformed)?;
        if name == b"server-sig-algs" {
            let names = r.name_list().map_err(malformed)?;
            server_sig_algs = Some(names.into_iter().map(str::to_owned).collect());
        } else {
            r.string().map_err(malformed)?;
        }
    }
    r.finish().map_err(malformed)?;
    Ok(server_sig_algs)
}

#[cfg(test)]
#[path = "kex_tests.rs"]
mod tests;
