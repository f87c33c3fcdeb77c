//! OpenSSH private key files (`openssh-key-v1`, OpenSSH PROTOCOL.key) and signing with them.
//!
//! The gateway holds private keys for two jobs: its own host key (server half) and the keys it
//! logs in to targets with (client half). Both are OpenSSH-format files as `ssh-keygen` writes
//! them. Supported: `ssh-ed25519`, `ecdsa-sha2-nistp256` and `ssh-rsa` (2048–4096 bits, ring's
//! signing range), **unencrypted only**: ring has neither bcrypt_pbkdf nor AES-CTR, so a file
//! with a passphrase is refused with [`KeyFileError::Encrypted`], whose message tells the admin
//! how to make an unencrypted copy. The protection of an unencrypted key is its file mode, which
//! [`load_private_key_file`] checks the way ssh(1) does.
//!
//! [`parse_private_key_file`] is pure (bytes in, key out); [`load_private_key_file`] and
//! [`write_new_private_key_file`] are the only functions here that touch the file system.
//!
//! RSA: OpenSSH files carry `n, e, d, iqmp, p, q` but not the CRT exponents `d mod (p-1)` and
//! `d mod (q-1)` that ring's `RsaKeyPair::from_components` needs. They are computed here by a
//! small schoolbook reduction (`reduce_be`) whose running time depends only on the lengths of
//! its inputs, not their values; ring then checks the whole key for consistency.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

use super::keys::{check_rsa, KeyError, PublicKey, SignatureAlgorithm};
use super::wire::{Reader, WireError, Writer};
use crate::proto::pg::scram::{base64_decode, base64_encode};

/// Largest key file read (an 8192-bit RSA key file is ~6.5 KiB).
pub const MAX_KEY_FILE: usize = 64 * 1024;

// PROTOCOL.key: "#define AUTH_MAGIC "openssh-key-v1"" — written with its terminating NUL.
const AUTH_MAGIC: &[u8] = b"openssh-key-v1\0";
const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
// OpenSSH wraps the base64 body at 70 columns (sshkey.c, sshbuf_dtob64 with wrap 70).
const LINE_WIDTH: usize = 70;
// "the cipher's block size, or 8 for 'none'" (PROTOCOL.key, padding).
const NONE_BLOCK_SIZE: usize = 8;

/// Why a private key file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Not an OpenSSH private key file; the text says what it looks like instead.
    NotOpenSshFormat(&'static str),
    /// An old PEM (PKCS#1 / SEC1 / PKCS#8) key file.
    PemFormat,
    /// The key is protected by a passphrase (cipher and KDF names as in the file).
    Encrypted {
        /// `ciphername`, e.g. `aes256-ctr`.
        cipher: String,
        /// `kdfname`, e.g. `bcrypt`.
        kdf: String,
    },
    /// The binary structure is broken.
    Malformed(WireError),
    /// A PROTOCOL.key rule is broken; the text says which.
    Invalid(&'static str),
    /// The key inside is not usable (type, size).
    Key(KeyError),
    /// ring refused the key material (inconsistent components, unsupported size).
    Rejected(String),
    /// The private key does not match the public key stored beside it.
    PublicKeyMismatch,
    /// The random number generator failed.
    Rng,
    /// The file can be read or written by group or others.
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        kind: io::ErrorKind,
        /// The OS message.
        message: String,
    },
    /// A parse error in a named file.
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<KeyFileError>,
    },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOpenSshFormat(what) => {
                write!(f, "not an OpenSSH private key file ({what})")
            }
            Self::PemFormat => f.write_str(
                "PEM private key files are not supported; convert a copy to the OpenSSH format \
                 with `ssh-keygen -p -N '' -f COPY` (or generate a new key with `ssh-keygen -t ed25519`)",
            ),
            Self::Encrypted { cipher, kdf } => write!(
                f,
                "private key is encrypted ({cipher}, kdf {kdf}) and portcullis can't decrypt it \
                 (its crypto library has no bcrypt_pbkdf/aes-ctr); remove the passphrase on a copy \
                 with `cp KEY COPY && ssh-keygen -p -N '' -f COPY && chmod 600 COPY` and configure COPY"
            ),
            Self::Malformed(e) => write!(f, "malformed OpenSSH private key: {e}"),
            Self::Invalid(why) => write!(f, "invalid OpenSSH private key: {why}"),
            Self::Key(e) => write!(f, "unusable private key: {e}"),
            Self::Rejected(why) => write!(f, "private key rejected: {why}"),
            Self::PublicKeyMismatch => {
                f.write_str("private key does not match the public key stored in the file")
            }
            Self::Rng => f.write_str("random number generator failed"),
            Self::TooOpen { path, mode } => write!(
                f,
                "private key file {} has mode {:04o}: it must not be accessible by group or \
                 others; run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            Self::Io {
                path,
                kind: _,
                message,
            } => write!(f, "{}: {message}", path.display()),
            Self::InFile { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for KeyFileError {}

impl From<WireError> for KeyFileError {
    fn from(e: WireError) -> Self {
        KeyFileError::Malformed(e)
    }
}

impl From<KeyError> for KeyFileError {
    fn from(e: KeyError) -> Self {
        KeyFileError::Key(e)
    }
}

/// A byte buffer that holds secret material and is overwritten when dropped (best effort: the
/// allocator may have copied it while it grew).
struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

enum KeyPairKind {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key the gateway signs with. `Debug` shows only the public fingerprint.
pub struct PrivateKey {
    pair: KeyPairKind,
    public: PublicKey,
    comment: String,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey({} {})",
            self.public.key_type(),
            self.public.fingerprint()
        )
    }
}

impl PrivateKey {
    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The comment stored in the file (often `user@host`).
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// The ring key pair of an `ssh-ed25519` key (what [`super::transport::Role::Server`] takes
    /// as the host key); None for other key types.
    pub fn into_ed25519_pair(self) -> Option<Ed25519KeyPair> {
        match self.pair {
            KeyPairKind::Ed25519(pair) => Some(pair),
            _ => None,
        }
    }

    /// The algorithm to sign with when the peer states no preference: `ssh-ed25519`,
    /// `ecdsa-sha2-nistp256`, or `rsa-sha2-512` for RSA keys.
    pub fn default_algorithm(&self) -> SignatureAlgorithm {
        match self.pair {
            KeyPairKind::Ed25519(_) => SignatureAlgorithm::Ed25519,
            KeyPairKind::EcdsaP256(_) => SignatureAlgorithm::EcdsaP256,
            KeyPairKind::Rsa(_) => SignatureAlgorithm::RsaSha512,
        }
    }

    /// Signs `data` and returns the signature blob (`string name, string signature`, RFC 4253
    /// §6.6) that [`PublicKey::verify`] checks.
    ///
    /// # Errors
    /// [`KeyError::AlgorithmMismatch`] if `algorithm` doesn't suit the key,
    /// [`KeyError::SigningFailed`] if ring fails (RNG failure).
    pub fn sign(
        &self,
        data: &[u8],
        algorithm: SignatureAlgorithm,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, KeyError> {
        if !self.public.accepts(algorithm) {
            return Err(KeyError::AlgorithmMismatch {
                algorithm: algorithm.name(),
                key_type: self.public.key_type(),
            });
        }
        let mut w = Writer::new();
        w.string(algorithm.name().as_bytes());
        match &self.pair {
            KeyPairKind::Ed25519(pair) => {
                w.string(pair.sign(data).as_ref());
            }
            KeyPairKind::EcdsaP256(pair) => {
                let sig = pair.sign(rng, data).map_err(|_| KeyError::SigningFailed)?;
                // RFC 5656 §3.1.2: the blob is "mpint r, mpint s"; ring's FIXED form is r || s.
                let (r, s) = sig.as_ref().split_at(sig.as_ref().len() / 2);
                let mut inner = Writer::new();
                inner.mpint_unsigned(r).mpint_unsigned(s);
                w.string(inner.as_bytes());
            }
            KeyPairKind::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match algorithm {
                    SignatureAlgorithm::RsaSha256 => &signature::RSA_PKCS1_SHA256,
                    _ => &signature::RSA_PKCS1_SHA512,
                };
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(padding, rng, data, &mut sig)
                    .map_err(|_| KeyError::SigningFailed)?;
                w.string(&sig);
            }
        }
        Ok(w.into_bytes())
    }
}

/// Strips the armor and decodes the base64 body.
fn dearmor(text: &[u8]) -> Result<SecretBytes, KeyFileError> {
    if text.len() > MAX_KEY_FILE {
        return Err(KeyFileError::NotOpenSshFormat("file too large"));
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| KeyFileError::NotOpenSshFormat("binary data, not a text file"))?
        .trim();
    if !text.starts_with(BEGIN) {
        if text.starts_with("-----BEGIN ") && text.contains(" PRIVATE KEY-----") {
            return Err(KeyFileError::PemFormat);
        }
        if text.starts_with("ssh-") || text.starts_with("ecdsa-") {
            return Err(KeyFileError::NotOpenSshFormat(
                "this is a public key; give the file without .pub",
            ));
        }
        return Err(KeyFileError::NotOpenSshFormat(
            "no -----BEGIN OPENSSH PRIVATE KEY----- line",
        ));
    }
    let body = text
        .get(BEGIN.len()..)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or(KeyFileError::NotOpenSshFormat(
            "no -----END OPENSSH PRIVATE KEY----- line at the end",
        ))?;
    let b64 = SecretBytes(
        body.bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>(),
    );
    let b64_text = std::str::from_utf8(&b64.0)
        .map_err(|_| KeyFileError::NotOpenSshFormat("body is not base64"))?;
    base64_decode(b64_text)
        .map(SecretBytes)
        .ok_or(KeyFileError::NotOpenSshFormat("body is not valid base64"))
}

/// Parses an unencrypted OpenSSH private key file (the whole file, armor included).
///
/// PROTOCOL.key:
/// ```text
/// #define AUTH_MAGIC      "openssh-key-v1"
/// byte[]  AUTH_MAGIC
/// string  ciphername
/// string  kdfname
/// string  kdfoptions
/// int     number of keys N
/// string  publickey1
/// string  encrypted, padded list of private keys
///     uint32  checkint
///     uint32  checkint
///     byte[]  privatekey1   (key type, key fields, string comment)
///     byte    padding[]     (1, 2, 3, ... up to the block size)
/// ```
///
/// `rng` is needed because ring's ECDSA key pairs draw a nonce key when they are built.
///
/// # Errors
/// [`KeyFileError::Encrypted`] for passphrase-protected files, [`KeyFileError::PemFormat`] for
/// old PEM files, and the other variants for anything malformed, unsupported or inconsistent.
pub fn parse_private_key_file(
    text: &[u8],
    rng: &dyn SecureRandom,
) -> Result<PrivateKey, KeyFileError> {
    let binary = dearmor(text)?;
    let mut r = Reader::new(&binary.0);
    if r.take(AUTH_MAGIC.len()).ok() != Some(AUTH_MAGIC) {
        return Err(KeyFileError::Invalid("missing openssh-key-v1 magic"));
    }
    let cipher = r.string()?;
    let kdf = r.string()?;
    let _kdf_options = r.string()?;
    if cipher != b"none" || kdf != b"none" {
        return Err(KeyFileError::Encrypted {
            cipher: super::keys::sanitize_name(cipher),
            kdf: super::keys::sanitize_name(kdf),
        });
    }
    // OpenSSH writes exactly one key per file and refuses to read more (sshkey.c: "nkeys != 1").
    if r.u32()? != 1 {
        return Err(KeyFileError::Invalid("file must hold exactly one key"));
    }
    let public = PublicKey::from_blob(r.string()?)?;
    let private_section = r.string()?;
    r.finish()?;
    // PROTOCOL.key: "the private key section ... padded to the cipher block size".
    if private_section.len() % NONE_BLOCK_SIZE != 0 {
        return Err(KeyFileError::Invalid(
            "private section is not a multiple of the block size",
        ));
    }
    let mut p = Reader::new(private_section);
    // "Before the key is encrypted, a random integer is assigned to both checkint fields so
    // successful decryption can be quickly checked by verifying that both checkint fields hold
    // the same value."
    if p.u32()? != p.u32()? {
        return Err(KeyFileError::Invalid("check integers differ"));
    }
    let key_type = p.string()?;
    if key_type != public.key_type().as_bytes() {
        return Err(KeyFileError::PublicKeyMismatch);
    }
    let pair = match &public {
        PublicKey::Ed25519(pk) => {
            // sshkey.c (ed25519 private): "string pk (32), string sk (64 = seed || pk)".
            let pk_again = p.string()?;
            let sk = p.string()?;
            if sk.len() != 64 {
                return Err(KeyFileError::Invalid("ed25519 private key is not 64 bytes"));
            }
            let (seed, sk_pk) = sk.split_at(32);
            if pk_again != pk.as_slice() || sk_pk != pk.as_slice() {
                return Err(KeyFileError::PublicKeyMismatch);
            }
            let pair = Ed25519KeyPair::from_seed_and_public_key(seed, pk)
                .map_err(|e| KeyFileError::Rejected(e.to_string()))?;
            KeyPairKind::Ed25519(pair)
        }
        PublicKey::EcdsaP256(q) => {
            // sshkey.c (ecdsa private): "string curve, string Q, mpint d".
            let curve = p.string()?;
            let q_again = p.string()?;
            let d = p.mpint_unsigned()?;
            if curve != b"nistp256" || q_again != q.as_slice() {
                return Err(KeyFileError::PublicKeyMismatch);
            }
            let mut scalar = SecretBytes(vec![0u8; 32]);
            let start = 32usize
                .checked_sub(d.len())
                .ok_or(KeyFileError::Invalid("nistp256 private scalar too long"))?;
            scalar
                .0
                .get_mut(start..)
                .ok_or(KeyFileError::Invalid("nistp256 private scalar too long"))?
                .copy_from_slice(d);
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &scalar.0,
                q,
                rng,
            )
            .map_err(|e| KeyFileError::Rejected(e.to_string()))?;
            KeyPairKind::EcdsaP256(pair)
        }
        PublicKey::Rsa { n, e } => {
            // sshkey.c (rsa private): "mpint n, mpint e, mpint d, mpint iqmp, mpint p, mpint q".
            let n_again = p.mpint_unsigned()?;
            let e_again = p.mpint_unsigned()?;
            let d = p.mpint_unsigned()?;
            let iqmp = p.mpint_unsigned()?;
            let prime_p = p.mpint_unsigned()?;
            let prime_q = p.mpint_unsigned()?;
            if n_again != n.as_slice() || e_again != e.as_slice() {
                return Err(KeyFileError::PublicKeyMismatch);
            }
            check_rsa(n, e)?;
            let dp = SecretBytes(crt_exponent(d, prime_p)?);
            let dq = SecretBytes(crt_exponent(d, prime_q)?);
            let components = ring::rsa::KeyPairComponents {
                public_key: signature::RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                },
                d,
                p: prime_p,
                q: prime_q,
                dP: dp.0.as_slice(),
                dQ: dq.0.as_slice(),
                qInv: iqmp,
            };
            let pair = RsaKeyPair::from_components(&components)
                .map_err(|e| KeyFileError::Rejected(e.to_string()))?;
            KeyPairKind::Rsa(pair)
        }
    };
    let comment = String::from_utf8_lossy(p.string()?).into_owned();
    // "byte padding[] ... 1, 2, 3, ..."
    let padding = p.rest();
    if padding.len() >= NONE_BLOCK_SIZE
        || !padding
            .iter()
            .zip(1u8..)
            .all(|(&byte, expected)| byte == expected)
    {
        return Err(KeyFileError::Invalid("bad padding after the private key"));
    }
    Ok(PrivateKey {
        pair,
        public,
        comment,
    })
}

/// `d mod (prime - 1)`, the CRT exponent ring needs and OpenSSH files don't store.
fn crt_exponent(d: &[u8], prime: &[u8]) -> Result<Vec<u8>, KeyFileError> {
    // p is an odd prime, so p - 1 is p with its lowest bit cleared: no borrow to propagate.
    let mut p_minus_1 = SecretBytes(prime.to_vec());
    match p_minus_1.0.last_mut() {
        Some(last) if *last & 1 == 1 => *last &= !1,
        _ => return Err(KeyFileError::Invalid("RSA prime is even")),
    }
    reduce_be(d, &p_minus_1.0).ok_or(KeyFileError::Invalid("RSA prime is zero"))
}

/// `a mod m` for big-endian magnitudes, returned `m.len()` bytes wide (left-padded with zeros).
/// `None` if `m` is zero.
///
/// Schoolbook binary long division with a masked conditional subtraction, so the time taken and
/// the memory touched depend only on `a.len()` and `m.len()`: `a` is the RSA private exponent.
fn reduce_be(a: &[u8], m: &[u8]) -> Option<Vec<u8>> {
    if m.iter().all(|&b| b == 0) {
        return None;
    }
    // One spare limb: the remainder is < m before each shift, so 2r + 1 < 2m fits.
    let width = m.len().div_ceil(8) + 1;
    let modulus = limbs_from_be(m, width);
    let mut r = vec![0u64; width];
    let mut t = vec![0u64; width];
    for &byte in a {
        for shift in (0..8).rev() {
            // r = 2r + bit
            let mut carry = u64::from((byte >> shift) & 1);
            for limb in r.iter_mut() {
                let out = *limb >> 63;
                *limb = (*limb << 1) | carry;
                carry = out;
            }
            // t = r - m; keep t when there was no borrow (r >= m).
            let mut borrow = 0u64;
            for ((ti, &ri), &mi) in t.iter_mut().zip(&r).zip(&modulus) {
                let (d1, b1) = ri.overflowing_sub(mi);
                let (d2, b2) = d1.overflowing_sub(borrow);
                *ti = d2;
                borrow = u64::from(b1 | b2);
            }
            let take_t = borrow.wrapping_sub(1); // all ones when borrow == 0
            for (ri, &ti) in r.iter_mut().zip(&t) {
                *ri = (ti & take_t) | (*ri & !take_t);
            }
        }
    }
    t.fill(0);
    let out = be_from_limbs(&r, m.len());
    r.fill(0);
    Some(out)
}

/// Little-endian u64 limbs of a big-endian magnitude (which must fit in `width` limbs).
fn limbs_from_be(bytes: &[u8], width: usize) -> Vec<u64> {
    let mut limbs = vec![0u64; width];
    for (i, &b) in bytes.iter().rev().enumerate() {
        if let Some(limb) = limbs.get_mut(i / 8) {
            *limb |= u64::from(b) << (8 * (i % 8));
        }
    }
    limbs
}

/// Big-endian bytes, `len` wide, of little-endian limbs (higher bytes dropped; callers ensure
/// the value fits).
fn be_from_limbs(limbs: &[u64], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for (i, byte) in out.iter_mut().rev().enumerate() {
        if let Some(limb) = limbs.get(i / 8) {
            *byte = limb.to_be_bytes()[7 - i % 8];
        }
    }
    out
}

/// Builds the bytes of an unencrypted `openssh-key-v1` ed25519 key file, as `ssh-keygen -N ''`
/// writes it. `check` is the random check integer (PROTOCOL.key).
fn ed25519_key_file(seed: &[u8; 32], public: &[u8; 32], check: u32, comment: &str) -> Vec<u8> {
    let mut blob = Writer::new();
    PublicKey::Ed25519(*public).write_blob(&mut blob);

    let mut private = Writer::new();
    private.u32(check).u32(check);
    let mut sk = SecretBytes(Vec::with_capacity(64));
    sk.0.extend_from_slice(seed);
    sk.0.extend_from_slice(public);
    private
        .string(b"ssh-ed25519")
        .string(public)
        .string(&sk.0)
        .string(comment.as_bytes());
    // "padding ... 1, 2, 3, ..." up to a multiple of the block size (none: 8).
    let mut pad = 1u8;
    while private.as_bytes().len() % NONE_BLOCK_SIZE != 0 {
        private.u8(pad);
        pad += 1;
    }
    let private = SecretBytes(private.into_bytes());

    let mut w = Writer::new();
    w.raw(AUTH_MAGIC)
        .string(b"none")
        .string(b"none")
        .string(b"")
        .u32(1)
        .string(blob.as_bytes())
        .string(&private.0);
    let binary = SecretBytes(w.into_bytes());
    let b64 = SecretBytes(base64_encode(&binary.0).into_bytes());

    let mut file = Vec::with_capacity(b64.0.len() + b64.0.len() / LINE_WIDTH + 80);
    file.extend_from_slice(BEGIN.as_bytes());
    file.push(b'\n');
    for line in b64.0.chunks(LINE_WIDTH) {
        file.extend_from_slice(line);
        file.push(b'\n');
    }
    file.extend_from_slice(END.as_bytes());
    file.push(b'\n');
    file
}

/// Generates an ed25519 key (a fresh host key) and the bytes of its unencrypted OpenSSH key file,
/// which `ssh-keygen -y -f` reads. Write the bytes with [`write_new_private_key_file`].
///
/// # Errors
/// [`KeyFileError::Rng`] if the random number generator fails.
pub fn generate_host_key(
    rng: &dyn SecureRandom,
    comment: &str,
) -> Result<(PrivateKey, Vec<u8>), KeyFileError> {
    let mut seed = [0u8; 32];
    rng.fill(&mut seed).map_err(|_| KeyFileError::Rng)?;
    let mut check = [0u8; 4];
    rng.fill(&mut check).map_err(|_| KeyFileError::Rng)?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| KeyFileError::Rejected(e.to_string()))?;
    let mut public = [0u8; 32];
    public.copy_from_slice(pair.public_key().as_ref());
    let file = ed25519_key_file(&seed, &public, u32::from_be_bytes(check), comment);
    seed.fill(0);
    std::hint::black_box(&seed);
    Ok((
        PrivateKey {
            pair: KeyPairKind::Ed25519(pair),
            public: PublicKey::Ed25519(public),
            comment: comment.to_owned(),
        },
        file,
    ))
}

fn io_error(path: &Path, e: &io::Error) -> KeyFileError {
    KeyFileError::Io {
        path: path.to_owned(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// Reads and parses a private key file, refusing it if group or others have any access to it
/// (the rule ssh(1) applies: "UNPROTECTED PRIVATE KEY FILE!", mode & 077 != 0).
///
/// The mode is taken from the opened file, so a file swapped between the check and the read is
/// still the file checked.
///
/// # Errors
/// [`KeyFileError::TooOpen`] (the message says `chmod 600 FILE`), [`KeyFileError::Io`], or a
/// parse error wrapped in [`KeyFileError::InFile`] naming the file.
pub fn load_private_key_file(
    path: &Path,
    rng: &dyn SecureRandom,
) -> Result<PrivateKey, KeyFileError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
    let meta = file.metadata().map_err(|e| io_error(path, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let in_file = |source: KeyFileError| KeyFileError::InFile {
        path: path.to_owned(),
        source: Box::new(source),
    };
    if meta.len() > u64::try_from(MAX_KEY_FILE).unwrap_or(u64::MAX) {
        return Err(in_file(KeyFileError::NotOpenSshFormat("file too large")));
    }
    let mut text = SecretBytes(Vec::new());
    file.take(u64::try_from(MAX_KEY_FILE + 1).unwrap_or(u64::MAX))
        .read_to_end(&mut text.0)
        .map_err(|e| io_error(path, &e))?;
    parse_private_key_file(&text.0, rng).map_err(in_file)
}

/// Creates `path` with mode 0600 and writes `bytes` to it; fails if the file exists (a host key
/// is never silently replaced).
///
/// # Errors
/// [`KeyFileError::Io`] (including `AlreadyExists`).
pub fn write_new_private_key_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io_error(path, &e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    // `ssh-keygen -t ed25519 -N '' -C alice@laptop` (OpenSSH 9.2p1), a throwaway test key.
    const ED25519_FILE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDVRSrO2p5UrCvbHE1JLBR2V9NDwXEZButJ8rkYWgJ/gAAAAJAmJdERJiXR
EQAAAAtzc2gtZWQyNTUxOQAAACDVRSrO2p5UrCvbHE1JLBR2V9NDwXEZButJ8rkYWgJ/gA
AAAEApaBmVbjd0PNvRy1EcCUHH9WHVUNwTqd/sESkx3XZ0h9VFKs7anlSsK9scTUksFHZX
00PBcRkG60nyuRhaAn+AAAAADGFsaWNlQGxhcHRvcAE=
-----END OPENSSH PRIVATE KEY-----
";
    const ED25519_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINVFKs7anlSsK9scTUksFHZX00PBcRkG60nyuRhaAn+A alice@laptop";

    /// Decodes a key file, lets `edit` change the binary, and re-armors it.
    fn rearmor(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut binary = dearmor(ED25519_FILE.as_bytes()).unwrap().0.clone();
        edit(&mut binary);
        format!("{BEGIN}\n{}\n{END}\n", base64_encode(&binary)).into_bytes()
    }

    #[test]
    fn accepts_ssh_keygen_ed25519_file() {
        let key = parse_private_key_file(ED25519_FILE.as_bytes(), &SystemRandom::new()).unwrap();
        let expected = PublicKey::from_openssh_line(ED25519_PUB).unwrap();
        assert_eq!(key.public_key(), &expected.key);
        assert_eq!(key.comment(), "alice@laptop");
        assert!(!format!("{key:?}").contains("AAAA"));
        let sig = key
            .sign(b"hello", SignatureAlgorithm::Ed25519, &SystemRandom::new())
            .unwrap();
        assert_eq!(
            key.public_key()
                .verify(SignatureAlgorithm::Ed25519, b"hello", &sig),
            Ok(())
        );
        assert!(matches!(
            key.sign(b"x", SignatureAlgorithm::RsaSha512, &SystemRandom::new()),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn round_trip_generated_host_key() {
        let rng = SystemRandom::new();
        let (key, file) = generate_host_key(&rng, "portcullis host key").unwrap();
        let parsed = parse_private_key_file(&file, &rng).unwrap();
        assert_eq!(parsed.public_key(), key.public_key());
        assert_eq!(parsed.comment(), "portcullis host key");
        let sig = parsed
            .sign(b"m", SignatureAlgorithm::Ed25519, &rng)
            .unwrap();
        assert_eq!(
            key.public_key()
                .verify(SignatureAlgorithm::Ed25519, b"m", &sig),
            Ok(())
        );
        let text = std::str::from_utf8(&file).unwrap();
        assert!(text
            .lines()
            .all(|l| l.len() <= LINE_WIDTH || l.starts_with("-----")));
    }

    #[test]
    fn rejects_encrypted_file_with_instructions() {
        // Replace "none"/"none" by "aes256-ctr"/"bcrypt" (the structure after it does not matter:
        // the cipher is checked first).
        let file = rearmor(|b| {
            let mut w = Writer::new();
            w.raw(AUTH_MAGIC).string(b"aes256-ctr").string(b"bcrypt");
            let rest = b.split_off(AUTH_MAGIC.len() + 16);
            *b = w.into_bytes();
            b.extend_from_slice(&rest);
        });
        let err = parse_private_key_file(&file, &SystemRandom::new()).unwrap_err();
        assert_eq!(
            err,
            KeyFileError::Encrypted {
                cipher: "aes256-ctr".into(),
                kdf: "bcrypt".into()
            }
        );
        assert!(err.to_string().contains("ssh-keygen -p -N ''"));
    }

    #[test]
    fn rejects_differing_check_integers() {
        // The private section starts right after the public blob: magic(15) + 3 strings "none",
        // "none", "" (4+4 + 4+4 + 4) + N (4) + blob (4+51) + section length (4).
        let offset = AUTH_MAGIC.len() + 8 + 8 + 4 + 4 + 4 + 51 + 4;
        let file = rearmor(|b| b[offset] ^= 1);
        assert_eq!(
            parse_private_key_file(&file, &SystemRandom::new()).unwrap_err(),
            KeyFileError::Invalid("check integers differ")
        );
    }

    #[test]
    fn rejects_bad_padding() {
        let file = rearmor(|b| {
            let last = b.len() - 1;
            b[last] = 9;
        });
        assert_eq!(
            parse_private_key_file(&file, &SystemRandom::new()).unwrap_err(),
            KeyFileError::Invalid("bad padding after the private key")
        );
    }

    #[test]
    fn rejects_mismatched_public_key() {
        // Flip one bit of the outer public key (inside the blob, after its 4+11+4 header bytes).
        let offset = AUTH_MAGIC.len() + 8 + 8 + 4 + 4 + 4 + 4 + 11 + 4;
        let file = rearmor(|b| b[offset] ^= 1);
        assert_eq!(
            parse_private_key_file(&file, &SystemRandom::new()).unwrap_err(),
            KeyFileError::PublicKeyMismatch
        );
    }

    #[test]
    fn rejects_pem_and_public_key_files() {
        let rng = SystemRandom::new();
        assert_eq!(
            parse_private_key_file(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n", &rng).unwrap_err(),
            KeyFileError::PemFormat
        );
        assert!(matches!(
            parse_private_key_file(ED25519_PUB.as_bytes(), &rng).unwrap_err(),
            KeyFileError::NotOpenSshFormat(_)
        ));
        let truncated = &ED25519_FILE[..ED25519_FILE.len() - 10];
        assert!(parse_private_key_file(truncated.as_bytes(), &rng).is_err());
    }

    #[test]
    fn parser_never_panics_on_truncated_binaries() {
        let binary = dearmor(ED25519_FILE.as_bytes()).unwrap().0.clone();
        for cut in 0..binary.len() {
            let file = format!("{BEGIN}\n{}\n{END}\n", base64_encode(&binary[..cut]));
            assert!(parse_private_key_file(file.as_bytes(), &SystemRandom::new()).is_err());
        }
    }

    #[test]
    fn reduce_matches_u128_arithmetic() {
        // A small LCG gives reproducible pseudo-random operands.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state
        };
        for _ in 0..2000 {
            let a = (u128::from(next()) << 64) | u128::from(next());
            let m = u128::from(next() >> (next() % 64)).max(1);
            let got = reduce_be(&a.to_be_bytes(), &m.to_be_bytes()).unwrap();
            assert_eq!(got, (a % m).to_be_bytes().to_vec(), "{a} mod {m}");
            let m_short = &m.to_be_bytes()[8..];
            if u128::from(u64::from_be_bytes(m_short.try_into().unwrap())) == m {
                let got = reduce_be(&a.to_be_bytes(), m_short).unwrap();
                assert_eq!(got, (a % m).to_be_bytes()[8..].to_vec());
            }
        }
        assert_eq!(reduce_be(&[1, 2], &[0, 0]), None);
        assert_eq!(reduce_be(&[], &[7]), Some(vec![0]));
    }

    #[test]
    fn loader_refuses_group_readable_file_and_reads_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("portcullis-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("host_key");
        let _ = std::fs::remove_file(&path);
        write_new_private_key_file(&path, ED25519_FILE.as_bytes()).unwrap();
        let rng = SystemRandom::new();
        assert!(load_private_key_file(&path, &rng).is_ok());
        assert!(matches!(
            write_new_private_key_file(&path, b"x"),
            Err(KeyFileError::Io {
                kind: io::ErrorKind::AlreadyExists,
                ..
            })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_private_key_file(&path, &rng).unwrap_err();
        assert!(matches!(err, KeyFileError::TooOpen { mode, .. } if mode & 0o777 == 0o640));
        assert!(err.to_string().contains("chmod 600"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
