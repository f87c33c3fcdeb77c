//! MD5 (RFC 1321), only for PostgreSQL's legacy `md5` password authentication, which the gateway
//! may need towards an upstream whose role still has an md5 password. ring has no MD5, and MD5 is
//! never used here for anything that needs collision resistance.

/// Per-round left-rotation amounts (RFC 1321 section 3.4, rounds 1 to 4).
const SHIFTS: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// RFC 1321 3.4: "T[i] denotes the i-th element of the table, which is equal to the integer part
/// of 4294967296 times abs(sin(i)), where i is in radians."
const T: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// MD5 digest of `data`.
pub fn md5(data: &[u8]) -> [u8; 16] {
    // RFC 1321 3.3: "A four-word buffer (A,B,C,D) is used to compute the message digest."
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        compress(&mut state, block);
    }

    // RFC 1321 3.1/3.2: append a single "1" bit, zeros until the length is 448 mod 512 bits, then
    // "a 64-bit representation of b (the length of the message before the padding bits were
    // added)", low-order word first.
    let tail = blocks.remainder();
    let mut last = [0u8; 128];
    last[..tail.len()].copy_from_slice(tail);
    last[tail.len()] = 0x80;
    let used = if tail.len() < 56 { 64 } else { 128 };
    let bits = u64::try_from(data.len())
        .unwrap_or(u64::MAX)
        .wrapping_mul(8);
    last[used - 8..used].copy_from_slice(&bits.to_le_bytes());
    for block in last[..used].chunks_exact(64) {
        compress(&mut state, block);
    }

    // 3.5: "The message digest produced as output is A, B, C, D ... beginning with the low-order
    // byte of A, and ending with the high-order byte of D."
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// One 64-byte block (RFC 1321 section 3.4).
fn compress(state: &mut [u32; 4], block: &[u8]) {
    let mut x = [0u32; 16];
    for (word, bytes) in x.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        // F(X,Y,Z) = XY v not(X) Z; G(X,Y,Z) = XZ v Y not(Z); H(X,Y,Z) = X xor Y xor Z;
        // I(X,Y,Z) = Y xor (X v not(Z)); message word index per round as in the RFC's tables.
        let (f, k) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((b & d) | (c & !d), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let rotated = a
            .wrapping_add(f)
            .wrapping_add(T[i])
            .wrapping_add(x[k])
            .rotate_left(SHIFTS[i]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The PasswordMessage payload for PostgreSQL md5 authentication:
/// `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
///
/// PostgreSQL protocol, "AuthenticationMD5Password": "The frontend must now send a PasswordMessage
/// containing the password (with user name) encrypted via MD5, then encrypted again using the
/// 4-byte random salt specified in the AuthenticationMD5Password message." `user` is the role name
/// sent in the StartupMessage (the upstream user, not the gateway identity).
pub fn md5_password_response(user: &str, password: &[u8], salt: [u8; 4]) -> String {
    let mut inner = Vec::with_capacity(password.len() + user.len());
    inner.extend_from_slice(password);
    inner.extend_from_slice(user.as_bytes());
    let mut outer = hex(&md5(&inner)).into_bytes();
    outer.extend_from_slice(&salt);
    format!("md5{}", hex(&md5(&outer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_1321_test_suite() {
        // RFC 1321, A.5 Test suite.
        let cases: [(&[u8], &str); 7] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                hex(&md5(input)),
                expected,
                "md5({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn pads_correctly_around_block_boundaries() {
        // Lengths 55, 56, 63, 64 and 65 exercise the one- and two-block padding paths.
        let expected = [
            (55, "ef1772b6dff9a122358552954ad0df65"),
            (56, "3b0c8ac703f828b04c6c197006d17218"),
            (63, "b06521f39153d618550606be297466d5"),
            (64, "014842d480b571495a4a0363793f7367"),
            (65, "c743a45e0d2e6a95cb859adae0248435"),
        ];
        for (n, digest) in expected {
            assert_eq!(hex(&md5(&vec![b'a'; n])), digest, "{n} x 'a'");
        }
    }

    #[test]
    fn builds_postgres_md5_password_response() {
        // Independently computed with Python's hashlib:
        // "md5" + md5(md5("secret" + "postgres").hexdigest() + b"\x01\x02\x03\x04").hexdigest()
        assert_eq!(
            hex(&md5(b"secretpostgres")),
            "53f48b7c4b76a86ce72276c5755f217d"
        );
        assert_eq!(
            md5_password_response("postgres", b"secret", [1, 2, 3, 4]),
            "md5bb41a296aab6baccb36ff243a562abff"
        );
    }
}
