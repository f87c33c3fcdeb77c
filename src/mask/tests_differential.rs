//! The e-mail start rule ([`detectors::email_start`]) against the regex's own reverse search: the
//! same masks on result-like cells (the generator of `examples/mask_bench.rs`), random text with
//! near-misses, and adversarial inputs, per cell and as a stream.

use super::detectors::{self, email_start, is_email_domain, is_email_local};
use super::tests::{random_text, stream, Rng};
use super::*;

const KEY: [u8; 32] = [3; 32];

/// The six custom detectors of `examples/mask_bench.rs` (20 detectors with the built-ins).
const BENCH_CUSTOM: &[(&str, &str)] = &[
    ("employee_id", r"\bEMP-[0-9]{6}\b"),
    ("order_ref", r"\bORD-[A-Z]{2}[0-9]{8}\b"),
    ("passport", r"\b[A-Z][0-9]{8}\b"),
    ("api_token", r"\btok_[a-z0-9]{24}\b"),
    ("license", r"\bLIC-[0-9]{4}-[0-9]{4}\b"),
    ("internal_host", r"\b[a-z]{2,12}\.corp\.internal\b"),
];

/// The masker under test and the reference (reverse search for every start).
fn pair(strategy: Strategy) -> (Masker, Masker) {
    let custom: Vec<(String, String)> = BENCH_CUSTOM
        .iter()
        .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
        .collect();
    let build = || {
        Masker::new(&["all".to_owned()], &custom, strategy, KEY).unwrap_or_else(|e| panic!("{e}"))
    };
    (build(), build().with_reverse_search_only())
}

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// Cells like `examples/mask_bench.rs` generates (id, name, e-mail, amount, timestamp, status,
/// free text with a hit in about 2%), plus e-mails in the odd places the start rule must get
/// right: glued to other text, after 64+ local bytes, several in one cell, after a rejected one.
fn cells(rng: &mut Rng, rows: usize) -> Vec<Vec<u8>> {
    const FIRST: &[&str] = &["alice", "Bob", "carol.x", "d_e", "Zoë", "o'neil", "x+tag"];
    const LAST: &[&str] = &["smith", "Müller", "o.brien", "lee-park", "", "a..b"];
    const DOMAINS: &[&str] = &[
        "example.com",
        "mail.example.org",
        "example.co.uk",
        "localhost",
        "-bad-.com",
        "example.com.",
        "10.0.0.1",
    ];
    const WORDS: &[&str] = &[
        "the", "order", "was", "shipped", "2.3.1", "42", "EUR", "São", "über", "@", "a@", "@b",
        "x::int", "12:30:45", "+49", "-", ".",
    ];
    const HITS: &[&str] = &[
        "contact bob.smith@example.com",
        "card 4111 1111 1111 1111",
        "IBAN DE89 3704 0044 0532 0130 00",
        "ssn 123-45-6789",
        "phone +1 415 555 2671",
        "from 192.168.10.20",
        "peer 2001:db8::8a2e:370:7334",
        "key AKIAIOSFODNN7EXAMPLE",
        "password=hunter2",
        "token ghp_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2",
        "emp EMP-123456",
        "ref ORD-AB12345678",
        "mail a@b.cd,c@d.ef;e@f",
        "x.y.z@host.example.com.au>",
        "password=bob@example.com",
    ];
    let mut out = Vec::new();
    for row in 0..rows {
        out.push(format!("{}", 100_000 + row).into_bytes());
        let (first, last) = (pick(rng, FIRST), pick(rng, LAST));
        out.push(format!("{first} {last}").into_bytes());
        let sep = pick(rng, &[".", "", "_", "%", "+", "-"]);
        let domain = pick(rng, DOMAINS);
        let email = match rng.below(8) {
            0 => format!("{}{first}@{domain}", "l".repeat(60 + rng.below(10))),
            1 => format!("<{first}{sep}{last}@{domain}>"),
            2 => format!("{first}{sep}{last}@{domain} {first}@{domain}"),
            3 => format!(".{first}@{domain}"),
            _ => format!("{first}{sep}{last}@{domain}"),
        };
        out.push(email.into_bytes());
        out.push(format!("{}.{:02}", rng.below(100_000), rng.below(100)).into_bytes());
        out.push(
            format!(
                "2024-{:02}-{:02} {:02}:{:02}:17+00",
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60)
            )
            .into_bytes(),
        );
        out.push(pick(rng, &["paid", "open", "shipped"]).as_bytes().to_vec());
        let n = 4 + rng.below(20);
        let mut text = Vec::new();
        for i in 0..n {
            if i > 0 {
                text.push(b' ');
            }
            let word = if i == n / 2 && rng.below(10) == 0 {
                pick(rng, HITS)
            } else {
                pick(rng, WORDS)
            };
            text.extend_from_slice(word.as_bytes());
        }
        out.push(text);
    }
    out
}

#[test]
fn email_start_is_where_the_reverse_search_starts() {
    let hay = b"to: alice.smith@example.com";
    assert_eq!(email_start(hay, 0, hay.len()), Some(4));
    // Not before `from`.
    assert_eq!(email_start(hay, 10, hay.len()), Some(10));
    // At most 64 local bytes.
    let long = format!("{}@example.com", "a".repeat(70));
    assert_eq!(email_start(long.as_bytes(), 0, long.len()), Some(6));
    // The last '@' before the end splits local part and domain.
    let two = b"a@b@example.com";
    assert_eq!(email_start(two, 0, two.len()), Some(2));
    // Not an e-mail match: refuse, so the caller takes the full search.
    assert_eq!(email_start(b"no at sign", 0, 10), None);
    assert_eq!(email_start(b" @example.com", 0, 13), None);
    assert_eq!(email_start(b"bob@", 0, 4), None);
    assert_eq!(email_start(b"bob@exa mple", 0, 12), None);
    assert_eq!(email_start(b"bob@example.com", 0, 99), None);
}

#[test]
fn email_classes_are_the_patterns_classes() {
    // The pattern's two classes, compiled the way the masker compiles them.
    let class = |c: &str| {
        let hir = syntax::parse_with(c, &syntax_config()).unwrap_or_else(|e| panic!("{e}"));
        Regex::builder()
            .build_from_hir(&hir)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (local, domain) = (class(r"^[A-Za-z0-9._%+-]$"), class(r"^[A-Za-z0-9.-]$"));
    let email = detectors::builtin("email").map(|b| b.pattern);
    assert_eq!(email, Some(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}"));
    for b in 0..=255u8 {
        assert_eq!(is_email_local(b), local.is_match(&[b][..]), "byte {b:#04x}");
        assert_eq!(
            is_email_domain(b),
            domain.is_match(&[b][..]),
            "byte {b:#04x}"
        );
    }
}

#[test]
fn differential_result_like_cells_mask_the_same_per_cell() {
    for (seed, strategy) in [
        (1, Strategy::Redact),
        (2, Strategy::Partial { keep: 4 }),
        (3, Strategy::Hash),
    ] {
        let (fast, reference) = pair(strategy);
        let mut rng = Rng(0x5EED_0000 + seed);
        let mut masked = 0usize;
        for cell in cells(&mut rng, 2_000) {
            let want = reference.mask_text(&cell);
            masked += usize::from(want.is_some());
            assert_eq!(
                fast.mask_text(&cell),
                want,
                "{strategy:?}: {:?}",
                String::from_utf8_lossy(&cell)
            );
        }
        // Every row has an e-mail column; most are valid addresses.
        assert!(masked > 1_000, "only {masked} cells masked");
    }
}

#[test]
fn differential_result_like_rows_mask_the_same_as_a_stream() {
    let (fast, reference) = pair(Strategy::Redact);
    let mut rng = Rng(0xC0FF_EE00);
    let mut text = Vec::new();
    for (i, cell) in cells(&mut rng, 3_000).into_iter().enumerate() {
        text.extend_from_slice(&cell);
        text.push(if i % 7 == 6 { b'\n' } else { b'\t' });
    }
    let want = reference.mask_text(&text).unwrap_or_else(|| text.clone());
    assert_eq!(fast.mask_text(&text).as_ref(), Some(&want));
    for max_chunk in [1 << 16, 777] {
        assert!(stream(&fast, &text, &mut rng, max_chunk) == want);
    }
}

#[test]
fn differential_random_text_masks_the_same() {
    let (fast, reference) = pair(Strategy::Redact);
    let mut rng = Rng(0xABCD);
    for _ in 0..400 {
        let len = rng.below(3000);
        let text: Vec<u8> = if rng.below(4) == 0 {
            (0..len).map(|_| (rng.next() & 0xff) as u8).collect()
        } else {
            random_text(&mut rng, len)
        };
        assert_eq!(fast.mask_text(&text), reference.mask_text(&text));
    }
}

#[test]
fn adversarial_email_shapes_finish_and_mask_the_same() {
    let (fast, reference) = pair(Strategy::Redact);
    let mut inputs: Vec<Vec<u8>> = vec![
        b"a@b.cc ".repeat(20_000),
        b"a@b".repeat(40_000),
        b"@a.bc".repeat(30_000),
        b"a.@b.cc".repeat(20_000),
        b"aa@@bb.cc".repeat(15_000),
    ];
    let mut long_local = vec![b'x'; 100_000];
    long_local.extend_from_slice(b"@example.com");
    inputs.push(long_local);
    let mut long_domain = b"bob@".to_vec();
    long_domain.extend(std::iter::repeat_n(b'a', 100_000));
    long_domain.extend_from_slice(b".com");
    inputs.push(long_domain);
    for text in &inputs {
        let want = reference.mask_text(text).unwrap_or_else(|| text.clone());
        assert!(fast.mask_text(text).unwrap_or_else(|| text.clone()) == want);
        let mut rng = Rng(11);
        assert!(stream(&fast, text, &mut rng, 10_000) == want);
    }
}
