//! The binary packet protocol (RFC 4253 §6): framing, padding, sequence numbers, and the
//! incremental opener that takes packets out of a receive buffer.
//!
//! ```text
//! uint32    packet_length
//! byte      padding_length
//! byte[n1]  payload; n1 = packet_length - padding_length - 1
//! byte[n2]  random padding; n2 = padding_length
//! byte[m]   mac (Message Authentication Code - MAC); m = mac_length
//! ```
//!
//! With our AEAD ciphers the "mac" is the 16-byte tag (see [`crate::proto::ssh::cipher`]).
//!
//! The opener reads the length first (for ChaCha20 it decrypts it with K_1), refuses any length
//! over [`MAX_PACKET_LENGTH`] or off the block alignment before waiting for — let alone allocating
//! — the body, and verifies the tag before looking at a single decrypted byte.

use std::fmt;

use ring::rand::SecureRandom;

use super::cipher::{CipherAlgorithm, KeyLengthError, OpeningCipher, SealingCipher};

/// Largest payload accepted from a peer. RFC 4253 §6.1: "All implementations MUST be able to
/// process packets with an uncompressed payload length of 35000 bytes or less"; OpenSSH sends
/// packets up to its `PACKET_MAX_SIZE` of 256 KiB, so we accept that much payload.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// Largest `packet_length` accepted: [`MAX_PAYLOAD`] plus the padding-length byte and the most
/// padding a one-byte `padding_length` can announce.
pub const MAX_PACKET_LENGTH: usize = MAX_PAYLOAD + 1 + 255;

/// Largest payload we send. OpenSSH refuses a `packet_length` over 256 KiB, and our padding is at
/// most 4 + 15 bytes, so this leaves room for the padding-length byte and the padding.
pub const MAX_SEND_PAYLOAD: usize = 256 * 1024 - 64;

/// RFC 4253 §6: "There MUST be at least four bytes of padding."
const MIN_PADDING: usize = 4;

/// Why a packet could not be sealed or opened. Every opening error is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketError {
    /// The (decrypted) `packet_length` is over [`MAX_PACKET_LENGTH`]; refused before the body is
    /// read.
    TooLong {
        /// The declared `packet_length`.
        declared: u32,
    },
    /// The `packet_length` is too small to hold a padding-length byte and four bytes of padding, or
    /// is not a multiple of the cipher block size. RFC 4253 §6: "the length of the concatenation
    /// of 'packet_length', 'padding_length', 'payload', and 'random padding' MUST be a multiple of
    /// the cipher block size or 8, whichever is larger."
    BadLength {
        /// The declared `packet_length`.
        declared: u32,
    },
    /// `padding_length` is under 4 or larger than the packet.
    BadPadding,
    /// The authentication tag did not verify (wrong key, corrupted or forged packet).
    BadTag,
    /// A payload we were asked to send is larger than [`MAX_SEND_PAYLOAD`].
    PayloadTooLarge {
        /// The payload length.
        len: usize,
    },
    /// The system random number generator failed while generating padding.
    Random,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { declared } => write!(
                f,
                "packet length {declared} is over the limit of {MAX_PACKET_LENGTH}"
            ),
            Self::BadLength { declared } => write!(
                f,
                "packet length {declared} is too small or not a multiple of the block size"
            ),
            Self::BadPadding => f.write_str("packet padding length is invalid"),
            Self::BadTag => f.write_str("packet authentication tag does not verify"),
            Self::PayloadTooLarge { len } => write!(
                f,
                "payload of {len} bytes is over the sending limit of {MAX_SEND_PAYLOAD}"
            ),
            Self::Random => f.write_str("random number generator failed"),
        }
    }
}

impl std::error::Error for PacketError {}

/// Traffic through one direction since its keys were installed (the rekey triggers count this).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    /// Bytes on the wire, framing and tag included.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
}

impl Volume {
    fn add(&mut self, bytes: usize) {
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
        self.packets = self.packets.saturating_add(1);
    }
}

/// What happens to the sequence number when new keys are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceAfterNewKeys {
    /// RFC 4253 §6.4: the sequence number "is never reset, even if keys/algorithms are
    /// renegotiated later".
    Continue,
    /// Strict kex (OpenSSH PROTOCOL §1.10): "After sending or receiving a SSH2_MSG_NEWKEYS
    /// message, reset the packet sequence number to zero."
    ResetToZero,
}

/// Seals outgoing payloads into packets.
pub struct PacketSealer {
    cipher: SealingCipher,
    /// RFC 4253 §6.4: "initialized to zero for the first packet, and is incremented after every
    /// packet (regardless of whether encryption or MAC is in use). ... It wraps around to zero
    /// after every 2^32 packets."
    sequence_number: u32,
    volume: Volume,
}

impl Default for PacketSealer {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketSealer {
    /// A sealer with no protection (before the first NEWKEYS), sequence number 0.
    pub fn new() -> Self {
        PacketSealer {
            cipher: SealingCipher::None,
            sequence_number: 0,
            volume: Volume::default(),
        }
    }

    /// A sealer already keyed with `cipher`, `key` and `iv`, sequence number 0 (for tests and
    /// fuzzing; the transport installs keys itself after NEWKEYS).
    ///
    /// # Errors
    /// [`KeyLengthError`] if `key` or `iv` has the wrong length for `cipher`.
    pub fn with_keys(
        cipher: CipherAlgorithm,
        key: &[u8],
        iv: &[u8],
    ) -> Result<Self, KeyLengthError> {
        let mut sealer = PacketSealer::new();
        sealer.cipher = SealingCipher::new(cipher, key, iv)?;
        Ok(sealer)
    }

    /// Sequence number the next packet will carry.
    pub fn sequence_number(&self) -> u32 {
        self.sequence_number
    }

    /// Traffic sealed since the current keys were installed.
    pub fn volume(&self) -> Volume {
        self.volume
    }

    /// Installs new keys (right after our NEWKEYS has been sealed with the old ones).
    pub(crate) fn install(&mut self, cipher: SealingCipher, sequence: SequenceAfterNewKeys) {
        self.cipher = cipher;
        self.volume = Volume::default();
        if sequence == SequenceAfterNewKeys::ResetToZero {
            self.sequence_number = 0;
        }
    }

    /// Appends `payload` to `out` as one protected packet with random padding.
    ///
    /// # Errors
    /// [`PacketError::PayloadTooLarge`] over [`MAX_SEND_PAYLOAD`] (nothing is written), or
    /// [`PacketError::Random`] if the random number generator fails (`out` is left as it was).
    pub fn seal(
        &mut self,
        payload: &[u8],
        rng: &dyn SecureRandom,
        out: &mut Vec<u8>,
    ) -> Result<(), PacketError> {
        if payload.len() > MAX_SEND_PAYLOAD {
            return Err(PacketError::PayloadTooLarge { len: payload.len() });
        }
        let block = self.cipher.block_size();
        let aligned = if self.cipher.aligns_length_field() {
            4 + 1 + payload.len()
        } else {
            1 + payload.len()
        };
        // RFC 4253 §6: "Arbitrary-length padding ... such that the total length ... is a multiple
        // of the cipher block size or 8, whichever is larger. There MUST be at least four bytes of
        // padding." We use the smallest padding that satisfies both.
        let mut padding = block - aligned % block;
        if padding < MIN_PADDING {
            padding += block;
        }
        let packet_length = 1 + payload.len() + padding;
        let start = out.len();
        out.reserve(4 + packet_length + self.cipher.tag_len());
        // Both values are bounded by MAX_SEND_PAYLOAD + 24, far below u32::MAX and 256.
        out.extend_from_slice(
            &u32::try_from(packet_length)
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.push(u8::try_from(padding).unwrap_or(u8::MAX));
        out.extend_from_slice(payload);
        let pad_start = out.len();
        out.resize(pad_start + padding, 0);
        if let Some(pad) = out.get_mut(pad_start..) {
            if rng.fill(pad).is_err() {
                out.truncate(start);
                return Err(PacketError::Random);
            }
        }
        self.cipher.seal(self.sequence_number, out, start);
        self.volume.add(out.len() - start);
        self.sequence_number = self.sequence_number.wrapping_add(1);
        Ok(())
    }
}

/// A packet taken out of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedPacket {
    /// The payload (message number first).
    pub payload: Vec<u8>,
    /// Bytes of the input the packet occupied; the caller drops them from its buffer.
    pub consumed: usize,
    /// The packet's sequence number (what SSH_MSG_UNIMPLEMENTED refers to).
    pub sequence_number: u32,
}

/// Opens incoming packets from a receive buffer.
pub struct PacketOpener {
    cipher: OpeningCipher,
    /// See [`PacketSealer`]'s field.
    sequence_number: u32,
    volume: Volume,
}

impl Default for PacketOpener {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketOpener {
    /// An opener with no protection (before the first NEWKEYS), sequence number 0.
    pub fn new() -> Self {
        PacketOpener {
            cipher: OpeningCipher::None,
            sequence_number: 0,
            volume: Volume::default(),
        }
    }

    /// An opener already keyed with `cipher`, `key` and `iv`, sequence number 0 (for tests and
    /// fuzzing).
    ///
    /// # Errors
    /// [`KeyLengthError`] if `key` or `iv` has the wrong length for `cipher`.
    pub fn with_keys(
        cipher: CipherAlgorithm,
        key: &[u8],
        iv: &[u8],
    ) -> Result<Self, KeyLengthError> {
        let mut opener = PacketOpener::new();
        opener.cipher = OpeningCipher::new(cipher, key, iv)?;
        Ok(opener)
    }

    /// Sequence number the next packet will carry.
    pub fn sequence_number(&self) -> u32 {
        self.sequence_number
    }

    /// Traffic opened since the current keys were installed.
    pub fn volume(&self) -> Volume {
        self.volume
    }

    /// Installs new keys (right after the peer's NEWKEYS has been opened with the old ones).
    pub(crate) fn install(&mut self, cipher: OpeningCipher, sequence: SequenceAfterNewKeys) {
        self.cipher = cipher;
        self.volume = Volume::default();
        if sequence == SequenceAfterNewKeys::ResetToZero {
            self.sequence_number = 0;
        }
    }

    /// Takes the first packet out of `input` if it is complete: `Ok(None)` means "need more
    /// bytes" (nothing is consumed and the call can be repeated with a longer `input`).
    ///
    /// # Errors
    /// Any [`PacketError`] is fatal: the stream can't be resynchronised.
    pub fn open(&mut self, input: &[u8]) -> Result<Option<OpenedPacket>, PacketError> {
        let Some(first4) = input.first_chunk::<4>() else {
            return Ok(None);
        };
        let declared = self.cipher.packet_length(self.sequence_number, *first4);
        let packet_length = usize::try_from(declared).unwrap_or(usize::MAX);
        if packet_length > MAX_PACKET_LENGTH {
            return Err(PacketError::TooLong { declared });
        }
        let block = self.cipher.block_size();
        let aligned = if self.cipher.aligns_length_field() {
            4 + packet_length
        } else {
            packet_length
        };
        if packet_length < 1 + MIN_PADDING || aligned % block != 0 {
            return Err(PacketError::BadLength { declared });
        }
        let body_end = 4 + packet_length;
        let total = body_end + self.cipher.tag_len();
        let (Some(body), Some(tag)) = (input.get(..body_end), input.get(body_end..total)) else {
            return Ok(None);
        };
        let mut packet = body.to_vec();
        self.cipher
            .open(self.sequence_number, &mut packet, tag)
            .map_err(|_| PacketError::BadTag)?;
        let padding = usize::from(packet.get(4).copied().unwrap_or(0));
        let payload_len = (packet_length - 1)
            .checked_sub(padding)
            .filter(|_| padding >= MIN_PADDING)
            .ok_or(PacketError::BadPadding)?;
        packet.truncate(5 + payload_len);
        packet.drain(..5);
        let sequence_number = self.sequence_number;
        self.sequence_number = self.sequence_number.wrapping_add(1);
        self.volume.add(total);
        Ok(Some(OpenedPacket {
            payload: packet,
            consumed: total,
            sequence_number,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn keyed(alg: CipherAlgorithm) -> (PacketSealer, PacketOpener) {
        let key: Vec<u8> = (0..alg.key_len()).map(|i| i as u8).collect();
        let iv: Vec<u8> = (0..alg.iv_len()).map(|i| 0xa0 + i as u8).collect();
        let mut sealer = PacketSealer::new();
        sealer.install(
            SealingCipher::new(alg, &key, &iv).unwrap(),
            SequenceAfterNewKeys::Continue,
        );
        let mut opener = PacketOpener::new();
        opener.install(
            OpeningCipher::new(alg, &key, &iv).unwrap(),
            SequenceAfterNewKeys::Continue,
        );
        (sealer, opener)
    }

    fn all_pairs() -> Vec<(&'static str, PacketSealer, PacketOpener)> {
        let mut pairs = vec![("none", PacketSealer::new(), PacketOpener::new())];
        for alg in CipherAlgorithm::ALL {
            let (s, o) = keyed(alg);
            pairs.push((alg.name(), s, o));
        }
        pairs
    }

    #[test]
    fn round_trip_every_cipher_and_payload_size() {
        let rng = SystemRandom::new();
        for (name, mut sealer, mut opener) in all_pairs() {
            for len in [1usize, 2, 7, 8, 15, 16, 17, 100, 35_000, MAX_SEND_PAYLOAD] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut wire = Vec::new();
                sealer.seal(&payload, &rng, &mut wire).unwrap();
                let opened = opener.open(&wire).unwrap().unwrap();
                assert_eq!(opened.payload, payload, "{name} {len}");
                assert_eq!(opened.consumed, wire.len(), "{name} {len}");
            }
            assert_eq!(sealer.sequence_number(), 10);
            assert_eq!(opener.sequence_number(), 10);
        }
    }

    #[test]
    fn accepts_packets_only_once_complete_byte_by_byte() {
        let rng = SystemRandom::new();
        for (name, mut sealer, mut opener) in all_pairs() {
            let mut wire = Vec::new();
            sealer.seal(b"\x5ehello", &rng, &mut wire).unwrap();
            sealer.seal(b"\x5eworld", &rng, &mut wire).unwrap();
            let first_len = opener.clone_len_probe(&wire);
            for cut in 0..first_len {
                assert_eq!(opener.open(&wire[..cut]), Ok(None), "{name} cut {cut}");
            }
            let first = opener.open(&wire).unwrap().unwrap();
            assert_eq!(first.payload, b"\x5ehello");
            let second = opener.open(&wire[first.consumed..]).unwrap().unwrap();
            assert_eq!(second.payload, b"\x5eworld");
            assert_eq!(second.sequence_number, 1);
        }
    }

    impl PacketOpener {
        /// Test helper: total bytes of the first packet in `wire` (from the sealer's output).
        fn clone_len_probe(&self, wire: &[u8]) -> usize {
            let first4 = *wire.first_chunk::<4>().unwrap();
            let len = self.cipher.packet_length(self.sequence_number, first4) as usize;
            4 + len + self.cipher.tag_len()
        }
    }

    #[test]
    fn rejects_oversized_length_before_the_body_arrives() {
        let mut opener = PacketOpener::new();
        let declared = (MAX_PACKET_LENGTH + 4) as u32; // 8-aligned with the length field
        let err = opener.open(&declared.to_be_bytes()).unwrap_err();
        assert_eq!(err, PacketError::TooLong { declared });
        assert_eq!(
            opener.open(&u32::MAX.to_be_bytes()),
            Err(PacketError::TooLong { declared: u32::MAX })
        );
    }

    #[test]
    fn accepts_the_largest_packet_openssh_sends() {
        // OpenSSH's PACKET_MAX_SIZE: packet_length of 256 KiB.
        let mut opener = PacketOpener::new();
        let packet_length = 256 * 1024 - 4; // 4 + length is 8-aligned
        let mut wire = (packet_length as u32).to_be_bytes().to_vec();
        wire.push(4);
        wire.push(94);
        wire.resize(4 + packet_length, 0);
        let opened = opener.open(&wire).unwrap().unwrap();
        assert_eq!(opened.payload.len(), packet_length - 1 - 4);
    }

    #[test]
    fn rejects_misaligned_and_tiny_lengths() {
        let mut opener = PacketOpener::new();
        // 4 + 13 is not a multiple of 8.
        assert_eq!(
            opener.open(&[0, 0, 0, 13]),
            Err(PacketError::BadLength { declared: 13 })
        );
        // 4 + 4 is aligned but can't hold a padding-length byte and 4 bytes of padding.
        assert_eq!(
            opener.open(&[0, 0, 0, 4]),
            Err(PacketError::BadLength { declared: 4 })
        );
        // AES-GCM: packet_length itself must be a multiple of 16.
        let (_, mut gcm) = keyed(CipherAlgorithm::Aes128Gcm);
        assert_eq!(
            gcm.open(&[0, 0, 0, 20]),
            Err(PacketError::BadLength { declared: 20 })
        );
    }

    #[test]
    fn rejects_short_and_overlong_padding() {
        let mut opener = PacketOpener::new();
        // packet_length 12: padding_length 3 (< 4).
        let short = [0, 0, 0, 12, 3, 94, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(opener.open(&short), Err(PacketError::BadPadding));
        // padding_length 200 in a 12-byte packet.
        let long = [0, 0, 0, 12, 200, 94, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(opener.open(&long), Err(PacketError::BadPadding));
        // padding_length 11 = everything: an empty payload is framed correctly (the transport
        // rejects it as a message).
        let empty = [0, 0, 0, 12, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        assert_eq!(opener.open(&empty).unwrap().unwrap().payload, b"");
    }

    #[test]
    fn rejects_bad_tag_for_every_cipher() {
        let rng = SystemRandom::new();
        for alg in CipherAlgorithm::ALL {
            for flip in [5usize, 20, usize::MAX] {
                let (mut sealer, mut opener) = keyed(alg);
                let mut wire = Vec::new();
                sealer.seal(b"\x5esecret payload", &rng, &mut wire).unwrap();
                let at = if flip == usize::MAX {
                    wire.len() - 1
                } else {
                    flip
                };
                wire[at] ^= 1;
                assert_eq!(opener.open(&wire), Err(PacketError::BadTag), "{alg:?} {at}");
            }
        }
    }

    #[test]
    fn rejects_packet_sealed_with_another_sequence_number() {
        let rng = SystemRandom::new();
        for alg in CipherAlgorithm::ALL {
            let (mut sealer, mut opener) = keyed(alg);
            let mut dropped = Vec::new();
            sealer.seal(b"\x5eone", &rng, &mut dropped).unwrap();
            let mut wire = Vec::new();
            sealer.seal(b"\x5etwo", &rng, &mut wire).unwrap();
            // The opener still expects packet 0 (or invocation counter 0 for GCM).
            let result = opener.open(&wire);
            assert!(
                matches!(
                    result,
                    Err(PacketError::BadTag)
                        | Err(PacketError::BadLength { .. })
                        | Err(PacketError::TooLong { .. })
                        | Ok(None)
                ),
                "{alg:?}: {result:?}"
            );
            assert!(!matches!(result, Ok(Some(_))));
        }
    }

    #[test]
    fn rejects_oversized_payload_without_writing() {
        let rng = SystemRandom::new();
        let mut sealer = PacketSealer::new();
        let mut out = vec![1, 2, 3];
        assert_eq!(
            sealer.seal(&vec![0; MAX_SEND_PAYLOAD + 1], &rng, &mut out),
            Err(PacketError::PayloadTooLarge {
                len: MAX_SEND_PAYLOAD + 1
            })
        );
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(sealer.sequence_number(), 0);
    }

    #[test]
    fn sealed_packets_meet_alignment_and_padding_rules() {
        let rng = SystemRandom::new();
        for (name, mut sealer, _) in all_pairs() {
            for len in 1..70usize {
                let mut wire = Vec::new();
                sealer.seal(&vec![94; len], &rng, &mut wire).unwrap();
                let tag = if name == "none" { 0 } else { 16 };
                let body = wire.len() - tag;
                let block = if name.starts_with("aes") { 16 } else { 8 };
                let aligned = if name == "none" { body } else { body - 4 };
                assert_eq!(aligned % block, 0, "{name} {len}");
                let packet_length = body - 4;
                let padding = packet_length - 1 - len;
                assert!((4..4 + block).contains(&padding), "{name} {len}");
            }
        }
    }

    #[test]
    fn sequence_numbers_wrap_and_reset() {
        let rng = SystemRandom::new();
        let mut sealer = PacketSealer::new();
        sealer.sequence_number = u32::MAX;
        let mut out = Vec::new();
        sealer.seal(b"\x02", &rng, &mut out).unwrap();
        assert_eq!(sealer.sequence_number(), 0);
        sealer.seal(b"\x02", &rng, &mut out).unwrap();
        sealer.install(SealingCipher::None, SequenceAfterNewKeys::Continue);
        assert_eq!(sealer.sequence_number(), 1);
        sealer.install(SealingCipher::None, SequenceAfterNewKeys::ResetToZero);
        assert_eq!(sealer.sequence_number(), 0);
        assert_eq!(sealer.volume(), Volume::default());
    }

    #[test]
    fn never_panics_on_short_garbage() {
        for alg in CipherAlgorithm::ALL {
            let (_, mut opener) = keyed(alg);
            for len in 0..64usize {
                let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
                let _ = opener.open(&junk);
            }
        }
    }
}
