//! Detector byte vectors, strategies, column globs, and property tests of streaming.

use super::*;

const KEY: [u8; 32] = [7; 32];

fn masker(detectors: &[&str], strategy: Strategy) -> Masker {
    let d: Vec<String> = detectors.iter().map(|s| (*s).to_owned()).collect();
    match Masker::new(&d, &[], strategy, KEY) {
        Ok(m) => m,
        Err(e) => panic!("masker: {e}"),
    }
}

fn all() -> Masker {
    masker(&["all"], Strategy::Redact)
}

fn with_custom(custom: &[(&str, &str)], strategy: Strategy) -> Result<Masker, MaskError> {
    let c: Vec<(String, String)> = custom
        .iter()
        .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
        .collect();
    Masker::new(&["all".to_owned()], &c, strategy, KEY)
}

fn apply(m: &Masker, text: &str) -> String {
    match m.mask_text(text.as_bytes()) {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => text.to_owned(),
    }
}

/// `text` masked by every built-in with `redact`.
fn redact(text: &str) -> String {
    apply(&all(), text)
}

#[track_caller]
fn masks(text: &str, want: &str) {
    assert_eq!(redact(text), want, "input {text:?}");
}

#[track_caller]
fn untouched(text: &str) {
    assert_eq!(
        all().mask_text(text.as_bytes()),
        None,
        "{text:?} became {:?}",
        redact(text)
    );
}

#[test]
fn pins_the_longest_match_of_every_detector() {
    let got: Vec<(&str, usize)> = detectors()
        .map(|n| (n, masker(&[n], Strategy::Redact).max_match_len()))
        .collect();
    assert_eq!(
        got,
        [
            ("private_key", 8346),
            ("jwt", 6658),
            ("aws_key", 20),
            ("aws_secret", 74),
            ("github_token", 255),
            ("slack_token", 205),
            ("password", 320),
            ("email", 318),
            ("iban", 44),
            ("ssn", 11),
            ("card", 37),
            ("phone", 44),
            ("ipv4", 15),
            ("ipv6", 81),
        ]
    );
    assert_eq!(all().max_match_len(), 8346);
}

#[test]
fn rejects_unknown_detector_listing_the_valid_ones() {
    let e = Masker::new(&["emial".to_owned()], &[], Strategy::Redact, KEY);
    let e = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("\"emial\"") && e.contains("email, iban") || e.contains("email"),
        "{e}"
    );
    assert!(e.contains("valid detectors: all, private_key"), "{e}");
}

#[test]
fn masks_emails_and_skips_near_misses() {
    masks(
        "mail bob.smith+x@example.co.uk now",
        "mail [redacted:email] now",
    );
    masks("end bob@example.com.", "end [redacted:email].");
    masks("<alice@mail.example.org>", "<[redacted:email]>");
    untouched("no tld bob@localhost");
    untouched("numeric tld bob@example.123");
    // The local part may not have "..": the search goes on and finds the valid address after it.
    masks(
        "double dot a..b@example.com x",
        "double dot a..[redacted:email] x",
    );
    untouched("@@@@ foo@ @bar.com");
    untouched("label -a@-example-.com");
}

#[test]
fn email_with_leading_dot_masks_from_the_first_valid_start() {
    masks(".bob@example.com", ".[redacted:email]");
}

#[test]
fn masks_luhn_valid_cards_only() {
    masks("card 4111 1111 1111 1111 ok", "card [redacted:card] ok");
    masks("card 4111-1111-1111-1111", "card [redacted:card]");
    masks("amex 378282246310005.", "amex [redacted:card].");
    masks("mc 5500000000000004", "mc [redacted:card]");
    untouched("bad luhn 4111 1111 1111 1112");
    untouched("too short 411111111111");
    untouched("all zeros 0000000000000000");
    untouched("order 12345678901234567890123 in a longer number");
}

#[test]
fn card_followed_by_a_short_number_masks_only_the_card() {
    masks("4111 1111 1111 1111 12 25", "[redacted:card] 12 25");
}

#[test]
fn masks_ibans_with_valid_mod97() {
    masks(
        "iban DE89 3704 0044 0532 0130 00 paid",
        "iban [redacted:iban] paid",
    );
    masks("GB82WEST12345698765432", "[redacted:iban]");
    untouched("iban DE88 3704 0044 0532 0130 00 paid");
    untouched("GB82WEST12345698765433");
}

#[test]
fn masks_ssns_by_area_group_serial_rules() {
    masks("ssn 123-45-6789.", "ssn [redacted:ssn].");
    untouched("000-12-3456");
    untouched("666-12-3456");
    untouched("912-12-3456");
    untouched("123-00-4567");
    untouched("123-45-0000");
    untouched("1234-45-6789");
}

#[test]
fn masks_e164_phone_numbers() {
    masks("call +1 415 555 2671 now", "call [redacted:phone] now");
    masks("(+442071838750)", "([redacted:phone])");
    masks("tel:+49-30-1234567", "tel:[redacted:phone]");
    untouched("+1234567 is seven digits");
    untouched("a+12345678 is arithmetic");
    untouched("+0123456789 has no country code");
}

#[test]
fn masks_ipv4_with_octets_in_range() {
    masks("from 192.168.1.20:5432", "from [redacted:ipv4]:5432");
    untouched("256.1.1.1");
    untouched("01.2.3.4");
    untouched("1.2.3");
}

#[test]
fn masks_ipv6_but_not_casts_or_times() {
    masks("peer 2001:db8::8a2e:370:7334 up", "peer [redacted:ipv6] up");
    masks("fe80::1%eth0", "[redacted:ipv6]%eth0");
    masks("::ffff:192.0.2.1", "[redacted:ipv6]");
    untouched("select x::int, y::text, 'a'::bigint");
    untouched("at 12:30:45");
    untouched("mac 00:1a:2b:3c:4d:5e");
}

#[test]
fn masks_aws_access_key_ids_and_secret_values() {
    masks("id AKIAIOSFODNN7EXAMPLE.", "id [redacted:aws_key].");
    masks("ASIAY34FZKBOKMUTVV7A", "[redacted:aws_key]");
    untouched("AKIAIOSFODNN7EXAMPL short");
    untouched("XAKIAIOSFODNN7EXAMPLE inside a word");
    masks(
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        "aws_secret_access_key = [redacted:aws_secret]\n",
    );
    masks(
        "AWS_SECRET_ACCESS_KEY=\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
        "AWS_SECRET_ACCESS_KEY=\"[redacted:aws_secret]\"",
    );
    // 40 base64 characters without a label are not a secret (too many false positives).
    untouched("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
}

#[test]
fn masks_github_and_slack_tokens() {
    let ghp = format!("ghp_{}", "a1B2".repeat(9));
    masks(
        &format!("token {ghp} end"),
        "token [redacted:github_token] end",
    );
    let pat = format!("github_pat_11AAAAAAA0{}", "x_Y9".repeat(20));
    masks(&pat, "[redacted:github_token]");
    untouched(&format!("ghx_{}", "a1B2".repeat(9)));
    untouched("ghp_short123");
    masks("xoxb-123456789012-abcdefghijkl", "[redacted:slack_token]");
    untouched("xoxz-123456789012-abcdefghijkl");
    untouched("xoxb-short");
}

#[test]
fn masks_jwts_with_three_parts() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    masks(&format!("Bearer {jwt}"), "Bearer [redacted:jwt]");
    untouched("eyJhbGciOiJIUzI1NiJ9 alone");
    untouched("eyJhbGciOiJIUzI1NiJ9.notjson.sig");
}

#[test]
fn masks_pem_private_key_blocks_whole() {
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy\n0AHB7MhgwM0=\n-----END RSA PRIVATE KEY-----";
    masks(
        &format!("key:\n{pem}\ndone"),
        "key:\n[redacted:private_key]\ndone",
    );
    let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQww\n-----END ENCRYPTED PRIVATE KEY-----";
    masks(enc, "[redacted:private_key]");
    untouched("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----");
    untouched("-----BEGIN PRIVATE KEY-----\ntruncated, never ended");
}

#[test]
fn masks_only_the_value_of_password_assignments() {
    masks("password=hunter2", "password=[redacted:password]");
    masks(
        "db_password = 'hunter two'",
        "db_password = '[redacted:password]'",
    );
    masks(
        "{\"api_key\": \"k-123\"}",
        "{\"api_key\": \"[redacted:password]\"}",
    );
    masks("secret: s3cr3t; next", "secret: [redacted:password]; next");
    masks("PASSWD=>x", "PASSWD=>[redacted:password]");
    untouched("password is required");
    untouched("password=");
    untouched("passwords: 3");
}

#[test]
fn later_hits_never_overlap_an_accepted_one() {
    // The e-mail contains an IPv4-like host and digits; it is masked once, as an e-mail.
    masks("a@10.0.0.1.example.com", "[redacted:email]");
    masks(
        "x 4111111111111111 y bob@example.com z 123-45-6789",
        "x [redacted:card] y [redacted:email] z [redacted:ssn]",
    );
}

#[test]
fn non_utf8_bytes_are_scanned_and_kept() {
    let m = all();
    let mut v = vec![0xff, 0xfe, b' '];
    v.extend_from_slice(b"bob@example.com");
    v.extend_from_slice(&[0x80, 0xc3]);
    let out = m.mask_text(&v).unwrap_or_default();
    let mut want = vec![0xff, 0xfe, b' '];
    want.extend_from_slice(b"[redacted:email]");
    want.extend_from_slice(&[0x80, 0xc3]);
    assert_eq!(out, want);
    assert_eq!(m.mask_text(&[0xff; 100]), None);
    assert_eq!(m.mask_text(b""), None);
}

#[test]
fn partial_keeps_the_last_characters_and_the_length() {
    let m = masker(&["card", "email"], Strategy::Partial { keep: 4 });
    assert_eq!(
        apply(&m, "card 4111111111111111."),
        "card ************1111."
    );
    assert_eq!(apply(&m, "bob@example.com"), "***********.com");
    assert_eq!(
        m.mask_whole("Zoë Müller".as_bytes()),
        "******ller".as_bytes()
    );
    // Never more than half.
    assert_eq!(m.mask_whole(b"1234"), b"**34");
    assert_eq!(m.mask_whole(b"x"), b"*");
    assert_eq!(m.mask_whole(b""), b"");
    assert_eq!(
        m.mask_whole(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb]),
        [b'*', b'*', b'*', 0xfc, 0xfb]
    );
    let none = masker(&["card"], Strategy::Partial { keep: 0 });
    assert_eq!(none.mask_whole(b"secret"), b"******");
}

#[test]
fn hash_is_keyed_stable_and_prefixed() {
    let m = masker(&["email"], Strategy::Hash);
    let a = apply(&m, "bob@example.com");
    assert!(a.starts_with("h:") && a.len() == 2 + HASH_HEX_LEN, "{a}");
    assert!(a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    // The same value hashes the same in text and as a whole column value (joins work).
    assert_eq!(a.as_bytes(), m.mask_whole(b"bob@example.com"));
    assert_eq!(apply(&m, "x bob@example.com y"), format!("x {a} y"));
    assert_ne!(a.as_bytes(), m.mask_whole(b"eve@example.com"));
    let other = Masker::new(&["email".to_owned()], &[], Strategy::Hash, [8; 32]);
    let other = other.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a.as_bytes(), other.mask_whole(b"bob@example.com"));
}

#[test]
fn redact_whole_value_is_a_fixed_placeholder() {
    assert_eq!(all().mask_whole(b"anything at all"), b"[redacted]");
}

#[test]
fn custom_detectors_are_named_and_checked() {
    let m = with_custom(&[("employee_id", "EMP-[0-9]{6}")], Strategy::Redact)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(apply(&m, "by EMP-123456."), "by [redacted:employee_id].");
    assert!(m.detector_names().any(|n| n == "employee_id"));
    let err = |c: &[(&str, &str)]| with_custom(c, Strategy::Redact).err();
    assert!(matches!(
        err(&[("e", "EMP-[0-9]+")]),
        Some(MaskError::Unbounded(_))
    ));
    assert!(matches!(
        err(&[("e", "a{1,5000}")]),
        Some(MaskError::Unbounded(_))
    ));
    assert!(matches!(
        err(&[("e", "a?")]),
        Some(MaskError::EmptyMatch(_))
    ));
    assert!(matches!(
        err(&[("e", "(")]),
        Some(MaskError::BadPattern { .. })
    ));
    assert!(matches!(
        err(&[("email", "x")]),
        Some(MaskError::BadName(_))
    ));
    assert!(matches!(
        err(&[("Bad-Name", "x")]),
        Some(MaskError::BadName(_))
    ));
    assert!(matches!(
        err(&[("a", "x"), ("a", "y")]),
        Some(MaskError::BadName(_))
    ));
    assert!(check_custom("ok", "[A-Z]{2}[0-9]{4}").is_ok());
    // Non-ASCII literals in custom patterns match their UTF-8 bytes.
    let m = with_custom(&[("secretword", "geheimnis-ä{1,3}")], Strategy::Redact)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(apply(&m, "x geheimnis-ää y"), "x [redacted:secretword] y");
}

#[test]
fn column_globs() {
    assert!(column_matches("*.email", Some("public.users"), "email"));
    assert!(column_matches("*.email", None, "EMAIL"));
    assert!(!column_matches("*.email", Some("users"), "emails"));
    assert!(column_matches("users.ssn", Some("public.users"), "ssn"));
    assert!(column_matches("users.ssn", Some("users"), "ssn"));
    assert!(!column_matches("users.ssn", Some("public.orders"), "ssn"));
    // Unknown origin: fail closed.
    assert!(column_matches("users.ssn", None, "ssn"));
    assert!(column_matches(
        "*password*",
        Some("a.b"),
        "db_password_hash"
    ));
    assert!(column_matches("*password*", None, "password"));
    assert!(!column_matches("*password*", None, "passwd"));
    assert!(column_matches(
        "public.users.ssn",
        Some("public.users"),
        "ssn"
    ));
    assert!(!column_matches(
        "public.users.ssn",
        Some("archive.users"),
        "ssn"
    ));
    assert!(column_matches("public.users.ssn", Some("users"), "ssn"));
    assert!(column_matches("ph?ne", None, "phone"));
    assert!(!column_matches("a.b.c.d", None, "d"));
    assert!(column_matches("*", None, "anything"));
    assert!(!column_matches("", None, "x"));
}

/// xorshift64*: deterministic, no dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap_or(0)
    }
}

const FRAGMENTS: &[&str] = &[
    "bob@example.com",
    "4111 1111 1111 1111",
    "4111111111111112",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
    "+1 415 555 2671",
    "192.168.0.1",
    "2001:db8::1",
    "AKIAIOSFODNN7EXAMPLE",
    "password=hunter2",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2",
    "xoxb-123456789012-abcdef",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "-----BEGIN PRIVATE KEY-----\nMIIBVQ==\n-----END PRIVATE KEY-----",
    "x::int",
    "EMP-123456",
];

/// Random text: bytes from a small alphabet that keeps near-matches frequent, and fragments.
pub(super) fn random_text(rng: &mut Rng, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"0123456789 .-@:+=abcdefxyzAKIA\n\"'eyJ_/\xff\xc3";
    let mut v = Vec::with_capacity(len + 64);
    while v.len() < len {
        if rng.below(8) == 0 {
            v.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes());
        } else {
            v.push(ALPHABET[rng.below(ALPHABET.len())]);
        }
    }
    v
}

pub(super) fn stream(m: &Masker, text: &[u8], rng: &mut Rng, max_chunk: usize) -> Vec<u8> {
    let mut s = StreamMasker::new(m);
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let n = 1 + rng.below(max_chunk);
        let end = (i + n).min(text.len());
        s.feed(&text[i..end], &mut out);
        let bound = m.max_match_len() + m.max_match_len().max(4096) + 1;
        assert!(s.held() <= bound, "held {} > {bound}", s.held());
        i = end;
    }
    s.finish(&mut out);
    assert_eq!(s.held(), 0);
    out
}

#[test]
fn property_stream_output_equals_whole_text_output() {
    let strategies = [
        Strategy::Redact,
        Strategy::Partial { keep: 4 },
        Strategy::Hash,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..9 {
        let strategy = strategies[round % 3];
        let m = with_custom(&[("employee_id", "EMP-[0-9]{6}")], strategy)
            .unwrap_or_else(|e| panic!("{e}"));
        let len = 1 + rng.below(12_000);
        let text = random_text(&mut rng, len);
        let whole = m.mask_text(&text).unwrap_or_else(|| text.clone());
        for max_chunk in [1, 7, 300, 5000, 40_000] {
            if max_chunk == 1 && len > 4000 {
                continue;
            }
            let got = stream(&m, &text, &mut rng, max_chunk);
            assert!(
                got == whole,
                "round {round}, chunks up to {max_chunk}: stream differs"
            );
        }
    }
}

#[test]
fn property_stream_with_small_max_len_equals_whole_text() {
    // A short L makes undecided tails and look-behind cuts frequent.
    let m = masker(&["ssn", "ipv4", "aws_key"], Strategy::Redact);
    let mut rng = Rng(42);
    for _ in 0..200 {
        let len = 1 + rng.below(3000);
        let text = random_text(&mut rng, len);
        let whole = m.mask_text(&text).unwrap_or_else(|| text.clone());
        let max_chunk = 1 + rng.below(64);
        assert_eq!(stream(&m, &text, &mut rng, max_chunk), whole);
    }
}

#[test]
fn stream_can_continue_after_finish() {
    let m = all();
    let mut s = StreamMasker::new(&m);
    let mut out = Vec::new();
    s.feed(b"a bob@example.com", &mut out);
    s.finish(&mut out);
    s.feed(b" 123-45-6789", &mut out);
    s.finish(&mut out);
    assert_eq!(out, b"a [redacted:email] [redacted:ssn]");
}

#[test]
fn property_text_without_hits_is_never_changed() {
    // Letters, spaces and punctuation without '@', digits or key-ish words cannot hit.
    const ALPHABET: &[u8] = b"ghijklmnoqtuvw GHIJLMNOQTUVW.,;!?()\n";
    let m = with_custom(&[("employee_id", "EMP-[0-9]{6}")], Strategy::Redact)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng(7);
    for _ in 0..200 {
        let len = rng.below(5000);
        let text: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        assert_eq!(m.mask_text(&text), None);
        assert_eq!(stream(&m, &text, &mut rng, 999), text);
    }
}

#[test]
fn property_mask_text_is_none_exactly_when_nothing_changes_and_never_panics() {
    let m = all();
    let mut rng = Rng(99);
    for _ in 0..300 {
        let len = rng.below(2000);
        let text: Vec<u8> = if rng.below(2) == 0 {
            (0..len).map(|_| (rng.next() & 0xff) as u8).collect()
        } else {
            random_text(&mut rng, len)
        };
        if let Some(out) = m.mask_text(&text) {
            assert_ne!(out, text);
        }
        let _ = m.mask_whole(&text);
    }
}

#[test]
fn adversarial_near_matches_finish() {
    let m = all();
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![b'1'; 100_000],
        vec![b'@'; 100_000],
        b"eyJ".repeat(40_000),
        b"eyJa.".repeat(20_000),
        b"a@".repeat(50_000),
        b"a@b.".repeat(25_000),
        b"1.".repeat(50_000),
        b"1 ".repeat(50_000),
        b"1-".repeat(50_000),
        b"ab:".repeat(30_000),
        b"+1".repeat(50_000),
        b"password=".repeat(10_000),
        b"-----BEGIN PRIVATE KEY-----\n".repeat(3_000),
        b"xoxb-".repeat(20_000),
        b"ghp_".repeat(25_000),
        b"AKIA".repeat(25_000),
        b"DE89 ".repeat(20_000),
    ];
    let mut key = b"-----BEGIN PRIVATE KEY-----\n".to_vec();
    key.extend(std::iter::repeat_n(b'A', 100_000));
    inputs.push(key);
    for text in &inputs {
        let whole = m.mask_text(text).unwrap_or_else(|| text.clone());
        let mut rng = Rng(5);
        assert_eq!(stream(&m, text, &mut rng, 10_000), whole);
    }
}
