//! Detector throughput of the masking engine on realistic result data, one core.
//!
//! Generates ~64 MiB of result-like cells in memory (ids, names, e-mails, amounts, timestamps,
//! free text with occasional secrets and PII), builds a `Masker` with 20 detectors (the 14
//! built-ins and 6 custom ones), and measures:
//! - per cell: `mask_text` on every cell, as the PostgreSQL relay does for DataRow values;
//! - stream: the same data as COPY text (tab/newline separated) through `StreamMasker` in 64 KiB
//!   chunks.
//!
//! `cargo run --release --example mask_bench [MiB] [cell|stream]` (both modes by default; one mode
//! alone is for profilers such as `valgrind --tool=callgrind`).

use std::time::Instant;

use portcullis::mask::{Masker, Strategy, StreamMasker};

/// CPU time of this thread in seconds (Linux `schedstat`), to see through a busy machine; `None`
/// elsewhere.
fn cpu_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Runs `f` three times; the best wall time and the best CPU time, in seconds.
fn best_of_3(mut f: impl FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_time());
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c, cpu_time()) {
            cpu = cpu.min(c1 - c0);
        }
    }
    (wall, cpu)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const FIRST: &[&str] = &[
    "Alice", "Bob", "Carol", "David", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë",
];
const LAST: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Müller",
    "Martinez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.org",
    "corp.example.net",
    "example.co.uk",
];
const WORDS: &[&str] = &[
    "the",
    "order",
    "was",
    "shipped",
    "to",
    "customer",
    "after",
    "payment",
    "confirmed",
    "by",
    "support",
    "ticket",
    "refund",
    "requested",
    "delivery",
    "delayed",
    "because",
    "of",
    "weather",
    "invoice",
    "sent",
    "again",
    "please",
    "check",
    "status",
    "account",
    "updated",
    "address",
    "changed",
    "note",
    "call",
    "back",
    "tomorrow",
    "morning",
    "version",
    "2.3.1",
    "build",
    "42",
    "items",
    "3",
    "total",
    "EUR",
    "approx",
    "warehouse",
    "Berlin",
    "São",
    "Paulo",
    "über",
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
];

fn free_text(rng: &mut Rng, out: &mut String) {
    let n = 4 + rng.below(20);
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        // About 2% of free-text cells carry a hit.
        if i == n / 2 && rng.below(50) == 0 {
            out.push_str(rng.pick(HITS));
        } else {
            out.push_str(rng.pick(WORDS));
        }
    }
}

/// Cells of rows: id, name, email, amount, created_at, status, free text.
fn generate(target: usize) -> (Vec<u8>, Vec<(usize, usize)>, usize) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut data = String::with_capacity(target + 4096);
    let mut cells = Vec::new();
    let mut rows = 0usize;
    let mut id = 100_000u64;
    while data.len() < target {
        id += 1 + u64::try_from(rng.below(3)).unwrap_or(0);
        let mut row = |data: &mut String, f: &mut dyn FnMut(&mut String)| {
            let s = data.len();
            f(data);
            cells.push((s, data.len()));
            data.push('\t');
        };
        row(&mut data, &mut |d| d.push_str(&id.to_string()));
        let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
        row(&mut data, &mut |d| {
            d.push_str(first);
            d.push(' ');
            d.push_str(last);
        });
        let domain = rng.pick(DOMAINS);
        row(&mut data, &mut |d| {
            d.push_str(&first.to_lowercase());
            d.push('.');
            d.push_str(&last.to_lowercase());
            d.push('@');
            d.push_str(domain);
        });
        let cents = rng.below(10_000_000);
        row(&mut data, &mut |d| {
            d.push_str(&format!("{}.{:02}", cents / 100, cents % 100))
        });
        let (mo, day, h, mi) = (
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
        );
        row(&mut data, &mut |d| {
            d.push_str(&format!("2024-{mo:02}-{day:02} {h:02}:{mi:02}:17+00"))
        });
        let status = rng.pick(&["paid", "open", "shipped", "refunded"]);
        row(&mut data, &mut |d| d.push_str(status));
        let mut text = String::new();
        free_text(&mut rng, &mut text);
        row(&mut data, &mut |d| d.push_str(&text));
        data.pop();
        data.push('\n');
        rows += 1;
    }
    (data.into_bytes(), cells, rows)
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let mode = std::env::args().nth(2).unwrap_or_default();
    let t = Instant::now();
    let (data, cells, rows) = generate(mib << 20);
    eprintln!(
        "generated {:.1} MiB, {} rows, {} cells in {:.2?}",
        data.len() as f64 / 1048576.0,
        rows,
        cells.len(),
        t.elapsed()
    );

    let custom: Vec<(String, String)> = [
        ("employee_id", r"\bEMP-[0-9]{6}\b"),
        ("order_ref", r"\bORD-[A-Z]{2}[0-9]{8}\b"),
        ("passport", r"\b[A-Z][0-9]{8}\b"),
        ("api_token", r"\btok_[a-z0-9]{24}\b"),
        ("license", r"\bLIC-[0-9]{4}-[0-9]{4}\b"),
        ("internal_host", r"\b[a-z]{2,12}\.corp\.internal\b"),
    ]
    .iter()
    .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
    .collect();
    let t = Instant::now();
    let masker = match Masker::new(&["all".to_owned()], &custom, Strategy::Redact, [9; 32]) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mask_bench: {e}");
            std::process::exit(1);
        }
    };
    let detectors = masker.detector_names().count();
    eprintln!(
        "built {detectors} detectors in {:.2?}; max match length {} bytes",
        t.elapsed(),
        masker.max_match_len()
    );

    // Per cell, as for DataRow values.
    if mode != "stream" {
        per_cell(&masker, &data, &cells, detectors);
    }
    if mode != "cell" {
        stream(&masker, &data);
    }
}

fn per_cell(masker: &Masker, data: &[u8], cells: &[(usize, usize)], detectors: usize) {
    let cell_bytes: usize = cells.iter().map(|(s, e)| e - s).sum();
    let mib = cell_bytes as f64 / 1048576.0;
    let mut masked = 0usize;
    let (wall, cpu) = best_of_3(|| {
        masked = 0;
        for &(s, e) in cells {
            if masker.mask_text(&data[s..e]).is_some() {
                masked += 1;
            }
        }
    });
    println!(
        "per cell: {} cells, {mib:.1} MiB, {masked} masked, {detectors} detectors: {:.0} MiB/s, {:.1} ns/cell (wall); {:.0} MiB/s, {:.1} ns/cell (CPU time); best of 3",
        cells.len(),
        mib / wall,
        wall * 1e9 / cells.len() as f64,
        mib / cpu,
        cpu * 1e9 / cells.len() as f64,
    );
    // Untimed: a digest of every output cell, to compare engine versions.
    let mut digest = Fnv::default();
    for &(s, e) in cells {
        match masker.mask_text(&data[s..e]) {
            Some(m) => digest.write(&m),
            None => digest.write(&data[s..e]),
        }
        digest.write(b"\0");
    }
    println!("per cell: output digest {:016x}", digest.0);
}

/// FNV-1a, to fingerprint the output.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The same data as COPY TO STDOUT text.
fn stream(masker: &Masker, data: &[u8]) {
    let mib = data.len() as f64 / 1048576.0;
    let mut out_len = 0;
    let (wall, cpu) = best_of_3(|| {
        let mut s = StreamMasker::new(masker);
        let mut out = Vec::with_capacity(1 << 17);
        out_len = 0;
        for chunk in data.chunks(64 << 10) {
            s.feed(chunk, &mut out);
            out_len += out.len();
            out.clear();
        }
        s.finish(&mut out);
        out_len += out.len();
    });
    println!(
        "stream:   {mib:.1} MiB in 64 KiB chunks -> {:.1} MiB: {:.0} MiB/s (wall), {:.0} MiB/s (CPU time); best of 3",
        out_len as f64 / 1048576.0,
        mib / wall,
        mib / cpu,
    );
    let mut s = StreamMasker::new(masker);
    let mut out = Vec::with_capacity(1 << 17);
    let mut digest = Fnv::default();
    for chunk in data.chunks(64 << 10) {
        s.feed(chunk, &mut out);
        digest.write(&out);
        out.clear();
    }
    s.finish(&mut out);
    digest.write(&out);
    println!("stream:   output digest {:016x}", digest.0);
}
