//! The `ssh-ed25519` host key and signature encodings (RFC 8709 §4 and §6) used by the key
//! exchange, and OpenSSH's SHA256 fingerprint for error messages.
//!
//! Only the transport's needs are here (the server signs the exchange hash, the client checks a
//! pinned key); user keys and key files live elsewhere.

use ring::signature::{self, UnparsedPublicKey};

use super::wire::{Reader, Writer};

/// The only host key algorithm we offer or accept.
pub const SSH_ED25519: &str = "ssh-ed25519";

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_LEN: usize = 32;

/// Length of an Ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// Why a host key or signature blob was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKeyError {
    /// The blob is not `string "ssh-ed25519", string key` with a 32-byte key (or a 64-byte
    /// signature), with nothing after it.
    Malformed,
    /// The signature does not verify.
    BadSignature,
}

impl std::fmt::Display for HostKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "host key or signature is not a well-formed ssh-ed25519 blob",
            Self::BadSignature => "host key signature over the exchange hash does not verify",
        })
    }
}

impl std::error::Error for HostKeyError {}

/// RFC 8709 §4: "string "ssh-ed25519" / string key", the key being the 32-byte public key.
pub fn ed25519_public_key_blob(public_key: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(SSH_ED25519.as_bytes()).string(public_key);
    w.into_bytes()
}

/// The 32-byte key inside an `ssh-ed25519` public key blob.
///
/// # Errors
/// [`HostKeyError::Malformed`] for any other algorithm, length or trailing bytes.
pub fn ed25519_public_key_from_blob(blob: &[u8]) -> Result<[u8; ED25519_PUBLIC_LEN], HostKeyError> {
    let mut r = Reader::new(blob);
    let name = r.string().map_err(|_| HostKeyError::Malformed)?;
    let key = r.string().map_err(|_| HostKeyError::Malformed)?;
    r.finish().map_err(|_| HostKeyError::Malformed)?;
    if name != SSH_ED25519.as_bytes() {
        return Err(HostKeyError::Malformed);
    }
    key.try_into().map_err(|_| HostKeyError::Malformed)
}

/// RFC 8709 §6: "string "ssh-ed25519" / string signature", the 64-byte Ed25519 signature.
pub fn ed25519_signature_blob(signature: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(SSH_ED25519.as_bytes()).string(signature);
    w.into_bytes()
}

/// Checks an `ssh-ed25519` signature blob over `message` with `public_key`.
///
/// # Errors
/// [`HostKeyError::Malformed`] if the blob is not an `ssh-ed25519` signature of 64 bytes,
/// [`HostKeyError::BadSignature`] if it does not verify.
pub fn verify_ed25519_signature(
    public_key: &[u8; ED25519_PUBLIC_LEN],
    signature_blob: &[u8],
    message: &[u8],
) -> Result<(), HostKeyError> {
    let mut r = Reader::new(signature_blob);
    let name = r.string().map_err(|_| HostKeyError::Malformed)?;
    let signature = r.string().map_err(|_| HostKeyError::Malformed)?;
    r.finish().map_err(|_| HostKeyError::Malformed)?;
    if name != SSH_ED25519.as_bytes() || signature.len() != ED25519_SIGNATURE_LEN {
        return Err(HostKeyError::Malformed);
    }
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(message, signature)
        .map_err(|_| HostKeyError::BadSignature)
}

/// OpenSSH's fingerprint of a public key blob: `SHA256:` and the unpadded base64 of the SHA-256
/// of the blob (what `ssh-keygen -l` and `ssh -v` print).
pub fn sha256_fingerprint(blob: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, blob);
    format!("SHA256:{}", base64_unpadded(digest.as_ref()))
}

/// Standard-alphabet base64 (RFC 4648 §4) without `=` padding.
fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_unpadded(input.as_bytes()), want);
        }
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // RFC 8032 §7.1 TEST 1 public key. `ssh-keygen -l -f` on
        // "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
        // (OpenSSH 9.2) prints "256 SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8".
        let public = [
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ];
        let blob = ed25519_public_key_blob(&public);
        assert_eq!(&blob[..4], &[0, 0, 0, 11]);
        assert_eq!(
            sha256_fingerprint(&blob),
            "SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8"
        );
    }

    #[test]
    fn round_trip_key_blob_and_signature() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let blob = ed25519_public_key_blob(&public);
        assert_eq!(ed25519_public_key_from_blob(&blob), Ok(public));
        let sig = ed25519_signature_blob(pair.sign(b"exchange hash").as_ref());
        assert_eq!(
            verify_ed25519_signature(&public, &sig, b"exchange hash"),
            Ok(())
        );
        assert_eq!(
            verify_ed25519_signature(&public, &sig, b"another hash"),
            Err(HostKeyError::BadSignature)
        );
    }

    #[test]
    fn rejects_other_algorithms_and_trailing_bytes() {
        let mut w = Writer::new();
        w.string(b"ssh-rsa").string(&[0; 32]);
        assert_eq!(
            ed25519_public_key_from_blob(w.as_bytes()),
            Err(HostKeyError::Malformed)
        );
        let mut blob = ed25519_public_key_blob(&[0; 32]);
        blob.push(0);
        assert_eq!(
            ed25519_public_key_from_blob(&blob),
            Err(HostKeyError::Malformed)
        );
        assert_eq!(
            ed25519_public_key_from_blob(&ed25519_public_key_blob(&[0; 31])),
            Err(HostKeyError::Malformed)
        );
        assert_eq!(
            verify_ed25519_signature(&[0; 32], &ed25519_signature_blob(&[0; 63]), b""),
            Err(HostKeyError::Malformed)
        );
    }
}
