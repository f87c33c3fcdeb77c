use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::chain::{decode_lines, decode_row, encode_lines, encode_row, sha256, BLOCK_MAX_LINES};
use super::*;
use crate::store::tables::{AUDIT, META, META_AUDIT_HEAD};
use crate::store::test_dir;

const FLUSH: Duration = Duration::from_millis(50);

fn open(name: &str) -> (Arc<Store>, PathBuf) {
    let dir = test_dir(name);
    (Store::open(&dir).unwrap(), dir)
}

fn exported(store: &Store, since: u64) -> Vec<String> {
    let mut out = Vec::new();
    let n = export(store, &mut out, since).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(usize::try_from(n).unwrap(), lines.len());
    lines
}

/// A strict little JSON checker (RFC 8259 grammar, no extensions): enough to show every exported
/// line is one JSON object and nothing else.
mod json {
    pub fn is_object(s: &str) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        b.first() == Some(&b'{') && value(b, &mut i) && i == b.len()
    }
    fn value(b: &[u8], i: &mut usize) -> bool {
        match b.get(*i) {
            Some(b'{') => {
                *i += 1;
                if b.get(*i) == Some(&b'}') {
                    *i += 1;
                    return true;
                }
                loop {
                    if !string(b, i) || b.get(*i) != Some(&b':') {
                        return false;
                    }
                    *i += 1;
                    if !value(b, i) {
                        return false;
                    }
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b'}') => {
                            *i += 1;
                            return true;
                        }
                        _ => return false,
                    }
                }
            }
            Some(b'[') => {
                *i += 1;
                if b.get(*i) == Some(&b']') {
                    *i += 1;
                    return true;
                }
                loop {
                    if !value(b, i) {
                        return false;
                    }
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b']') => {
                            *i += 1;
                            return true;
                        }
                        _ => return false,
                    }
                }
            }
            Some(b'"') => string(b, i),
            Some(b't') => lit(b, i, b"true"),
            Some(b'f') => lit(b, i, b"false"),
            Some(b'n') => lit(b, i, b"null"),
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                if b[*i] == b'-' {
                    *i += 1;
                }
                let start = *i;
                while b.get(*i).is_some_and(u8::is_ascii_digit) {
                    *i += 1;
                }
                *i > start && !(b[start] == b'0' && *i - start > 1)
            }
            _ => false,
        }
    }
    fn lit(b: &[u8], i: &mut usize, l: &[u8]) -> bool {
        if b[*i..].starts_with(l) {
            *i += l.len();
            true
        } else {
            false
        }
    }
    fn string(b: &[u8], i: &mut usize) -> bool {
        if b.get(*i) != Some(&b'"') {
            return false;
        }
        *i += 1;
        loop {
            match b.get(*i) {
                None => return false,
                Some(b'"') => {
                    *i += 1;
                    return true;
                }
                Some(b'\\') => {
                    *i += 1;
                    match b.get(*i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *i += 1,
                        Some(b'u') => {
                            let hex = b.get(*i + 1..*i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return false;
                            }
                            *i += 5;
                        }
                        _ => return false,
                    }
                }
                Some(c) if *c < 0x20 => return false,
                Some(_) => *i += 1,
            }
        }
    }

    #[test]
    fn checker_rejects_what_it_should() {
        assert!(is_object(r#"{"a":[1,-2,"x\n\u00e9"],"b":{},"c":null}"#));
        for bad in [
            r#"{"a":1,}"#,
            "{\"a\":\"\n\"}",
            r#"{"a":01}"#,
            r#"{"a":1}x"#,
            r#"{"a"}"#,
        ] {
            assert!(!is_object(bad), "{bad}");
        }
    }
}

#[test]
fn events_get_consecutive_seqs_in_queue_order_and_chain() {
    let (store, dir) = open("audit-order");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    for i in 0..20u64 {
        let seq = audit
            .record_blocking(Event::new("test").uint("i", i))
            .unwrap();
        assert_eq!(seq, i + 1);
    }
    writer.shutdown();
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 20);
    let mut prev = "0".repeat(64);
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.starts_with(&format!("{{\"seq\":{},\"ts\":\"", i + 1)),
            "{l}"
        );
        assert!(l.contains(&format!(",\"kind\":\"test\",\"i\":{i},")), "{l}");
        assert!(l.ends_with(&format!(",\"prev\":\"{prev}\"}}")), "{l}");
        prev = format::hex(&sha256(l.as_bytes()));
    }
    assert!(verify(&store).unwrap().is_intact());
    // since: only later events.
    let tail = exported(&store, 18);
    assert_eq!(tail.len(), 2);
    assert_eq!(line_seq(&tail[0]), Some(19));
    assert!(exported(&store, u64::MAX).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn group_commit_serves_concurrent_producers_in_few_commits() {
    let (store, dir) = open("audit-group");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let audit = audit.clone();
            std::thread::spawn(move || {
                (0..200u64)
                    .map(|i| {
                        audit
                            .record_blocking(Event::new("load").uint("t", t).uint("i", i))
                            .unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let commits = audit
        .stats
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);
    writer.shutdown();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1600).collect::<Vec<u64>>());
    // Eight waiters at a time: batches of several events, far fewer commits than events.
    assert!(commits < 1600 / 2, "{commits} commits for 1600 events");
    let report = verify(&store).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!((report.events, report.head_seq), (1600, 1600));
    // Each producer's events appear in its own order.
    let lines = exported(&store, 0);
    for t in 0..8 {
        let mine: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(&format!("\"t\":{t},")))
            .collect();
        assert_eq!(mine.len(), 200);
        for (i, l) in mine.iter().enumerate() {
            assert!(l.contains(&format!("\"i\":{i},")), "{l}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn async_record_and_record_durable_share_the_chain() {
    let (store, dir) = open("audit-async");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    smol::block_on(async {
        for i in 0..100u64 {
            audit.record(Event::new("read").uint("i", i)).await.unwrap();
        }
        let seq = audit
            .record_durable(Event::new("write").str("sql", "delete from t"))
            .await
            .unwrap();
        assert_eq!(seq, 101);
    });
    // Non-durable events become visible without a durable one behind them, too.
    smol::block_on(audit.record(Event::new("read").uint("i", 100))).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while exported(&store, 101).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "record() never written"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    writer.shutdown();
    assert_eq!(exported(&store, 0).len(), 102);
    assert!(verify(&store).unwrap().is_intact());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn export_is_one_json_object_per_line_even_with_hostile_strings() {
    let (store, dir) = open("audit-json");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    let hostile =
        "quote\" backslash\\ newline\n cr\r tab\t nul\0 bell\u{7} del\u{7f} ls\u{2028} é 😀";
    audit
        .record_blocking(
            Event::new("statement")
                .str("sql", hostile)
                .int("neg", i64::MIN)
                .uint("big", u64::MAX)
                .bool("ok", false)
                .opt_str("approver", None::<&str>)
                .opt_uint("rows", Some(3))
                .list("tables", vec![hostile.to_string(), String::new()])
                .str("prev", "not the chain's"),
        )
        .unwrap();
    audit.record_blocking(Event::new("empty")).unwrap();
    writer.shutdown();
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert!(json::is_object(l), "not one JSON object: {l}");
    }
    assert!(lines[0].contains(r#""neg":-9223372036854775808,"big":18446744073709551615,"#));
    assert!(lines[0].contains(r#""approver":null,"rows":3,"#));
    assert!(lines[0].contains(r#""_prev":"not the chain's","prev":""#));
    assert!(lines[1].contains(r#","kind":"empty","prev":""#));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn timestamps_are_rfc3339_utc_millis_of_now() {
    let (store, dir) = open("audit-ts");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    audit.record_blocking(Event::new("t")).unwrap();
    writer.shutdown();
    let l = &exported(&store, 0)[0];
    let ts = &l[l.find("\"ts\":\"").unwrap() + 6..][..24];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let today = &rfc3339_millis(u64::try_from(now_ms).unwrap())[..10];
    assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
    assert!(
        ts.starts_with(today) || l.contains("T23:59"),
        "{ts} vs {today}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn with_rows(store: &Store, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let txn = store.db().begin_write().unwrap();
    f(&mut txn.open_table(AUDIT).unwrap());
    txn.commit().unwrap();
}

fn filled(name: &str, n: u64) -> (Arc<Store>, PathBuf) {
    let (store, dir) = open(name);
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    for i in 0..n {
        audit.record_blocking(Event::new("e").uint("i", i)).unwrap();
    }
    writer.shutdown();
    (store, dir)
}

fn row(store: &Store, seq: u64) -> ([u8; 32], String) {
    let txn = redb::ReadableDatabase::begin_read(store.db()).unwrap();
    let t = txn.open_table(AUDIT).unwrap();
    let v = t.get(seq).unwrap().unwrap();
    let (h, l) = decode_row(v.value()).unwrap();
    (h, l.to_string())
}

#[test]
fn verify_detects_a_changed_line() {
    let (store, dir) = filled("audit-tamper-line", 5);
    let (hash, line) = row(&store, 3);
    let forged = line.replace("\"i\":2", "\"i\":9");
    with_rows(&store, |t| {
        t.insert(3, encode_row(&hash, &forged).as_slice()).unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: 3,
            problem: Problem::HashMismatch
        })
    );
    assert_eq!(r.events, 2);
    assert!(r.to_string().contains("BROKEN at seq 3"), "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verify_detects_a_rewritten_row_with_its_hash_at_the_next_row() {
    let (store, dir) = filled("audit-tamper-rehash", 5);
    let (_, line) = row(&store, 3);
    let forged = line.replace("\"i\":2", "\"i\":9");
    with_rows(&store, |t| {
        t.insert(
            3,
            encode_row(&sha256(forged.as_bytes()), &forged).as_slice(),
        )
        .unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: 4,
            problem: Problem::PrevMismatch
        })
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verify_detects_removed_rows_in_the_middle_and_at_the_end() {
    let (store, dir) = filled("audit-tamper-remove", 5);
    with_rows(&store, |t| {
        t.remove(5).unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: 5,
            problem: Problem::HeadMismatch
        })
    );
    with_rows(&store, |t| {
        t.remove(2).unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: 2,
            problem: Problem::Missing
        })
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verify_reports_garbage_rows_and_export_refuses_them() {
    let (store, dir) = filled("audit-garbage", 3);
    with_rows(&store, |t| {
        t.insert(2, [1u8, 2, 3].as_slice()).unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: 2,
            problem: Problem::Malformed
        })
    );
    let mut sink = Vec::new();
    assert!(matches!(
        export(&store, &mut sink, 0),
        Err(StoreError::Corrupt(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn empty_log_verifies_and_exports_nothing() {
    let (store, dir) = open("audit-empty");
    let r = verify(&store).unwrap();
    assert!(r.is_intact());
    assert_eq!((r.events, r.head_seq), (0, 0));
    assert!(exported(&store, 0).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn durable_event_survives_reopen_and_the_chain_continues() {
    let dir = test_dir("audit-reopen");
    {
        let store = Store::open(&dir).unwrap();
        let (audit, writer) = start(store, FLUSH).unwrap();
        let seq = audit
            .record_blocking(Event::new("first").str("who", "alice"))
            .unwrap();
        assert_eq!(seq, 1);
        smol::block_on(audit.record(Event::new("second"))).unwrap();
        writer.shutdown();
        // Store dropped here: the file is closed.
    }
    let store = Store::open(&dir).unwrap();
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("\"kind\":\"first\",\"who\":\"alice\""));
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    assert_eq!(audit.record_blocking(Event::new("third")).unwrap(), 3);
    writer.shutdown();
    assert!(verify(&store).unwrap().is_intact());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn after_shutdown_records_fail_with_closed() {
    let (store, dir) = open("audit-closed");
    let (audit, writer) = start(store, FLUSH).unwrap();
    writer.shutdown();
    assert_eq!(
        audit.record_blocking(Event::new("late")),
        Err(AuditError::Closed)
    );
    assert_eq!(
        smol::block_on(audit.record(Event::new("late"))),
        Err(AuditError::Closed)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn start_refuses_a_corrupt_head() {
    let (store, dir) = open("audit-badhead");
    let txn = store.db().begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert(META_AUDIT_HEAD, [9u8].as_slice())
        .unwrap();
    txn.commit().unwrap();
    assert!(matches!(start(store, FLUSH), Err(StoreError::Corrupt(_))));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn export_lines_respects_line_and_byte_caps() {
    let (store, dir) = filled("audit-chunks", 10);
    assert_eq!(export_lines(&store, 0, 4, usize::MAX).unwrap().len(), 4);
    let one = export_lines(&store, 0, 100, 1).unwrap();
    assert_eq!(one.len(), 1, "at least one line even past the byte cap");
    let rest = export_lines(&store, 7, 100, usize::MAX).unwrap();
    assert_eq!(
        rest.iter().map(|l| line_seq(l)).collect::<Vec<_>>(),
        [Some(8), Some(9), Some(10)]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn record_alone_is_flushed_durably_within_the_interval() {
    use std::sync::atomic::Ordering;
    let (store, dir) = open("audit-flush");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    smol::block_on(audit.record(Event::new("read"))).unwrap();
    // One Durability::None commit for the event, then one Immediate flush after FLUSH.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while audit.stats.commits.load(Ordering::Relaxed) < 2 {
        assert!(std::time::Instant::now() < deadline, "no flush commit");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(FLUSH * 3);
    assert_eq!(
        audit.stats.commits.load(Ordering::Relaxed),
        2,
        "idle writer keeps committing"
    );
    writer.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn many_records_from_many_threads_all_land_in_order() {
    let (store, dir) = open("audit-many");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let audit = audit.clone();
            std::thread::spawn(move || {
                for i in 0..5000u64 {
                    smol::block_on(audit.record(Event::new("read").uint("t", t).uint("i", i)))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
    let last = audit.record_blocking(Event::new("write")).unwrap();
    let elapsed = started.elapsed();
    writer.shutdown();
    assert_eq!(last, 20_001);
    let report = verify(&store).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.events, 20_001);
    eprintln!("20001 events in {elapsed:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The escaper as first written (one `char` at a time): the reference the fast one must match.
fn escape_reference(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn json_escaper_matches_the_char_by_char_reference() {
    let pieces = [
        "",
        "a",
        "select 1",
        "\"",
        "\\",
        "\n",
        "\r",
        "\t",
        "\0",
        "\u{1}",
        "\u{1f}",
        "\u{7f}",
        "\u{80}",
        "\u{2027}",
        "\u{2028}",
        "\u{2029}",
        "\u{202a}",
        "\u{e000}",
        "é",
        "😀",
        "€",
        "\u{2028}\u{2029}",
        " ",
        "'",
    ];
    // Every string of up to three pieces: escapes at the start, the end, side by side, and
    // next to multi-byte characters that share U+2028's lead byte (E2) but are not it.
    let mut checked = 0;
    for a in pieces {
        for b in pieces {
            for c in pieces {
                let s = format!("{a}{b}{c}");
                let mut fast = String::new();
                super::format::push_json_str(&mut fast, &s);
                assert_eq!(fast, escape_reference(&s), "input {s:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, pieces.len().pow(3));
    // Appends to what is already there.
    let mut out = String::from("x");
    super::format::push_json_str(&mut out, "a\"b");
    assert_eq!(out, "x\"a\\\"b\"");
}

#[test]
fn try_record_queues_without_waiting_and_the_event_is_written() {
    let (store, dir) = open("audit-try-record");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    for i in 0..3u64 {
        assert!(audit.try_record(Event::new("tried").uint("i", i)).is_ok());
    }
    writer.shutdown();
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert!(l.contains(&format!("\"kind\":\"tried\",\"i\":{i},")), "{l}");
    }
    // After shutdown the log is closed: the event is dropped, not handed back to wait with.
    assert!(audit.try_record(Event::new("late")).is_ok());
    assert_eq!(exported(&store, 0).len(), 3);
    assert!(verify(&store).unwrap().is_intact());
    let _ = std::fs::remove_dir_all(dir);
}

/// A log written by lazily committed events, so lines share block rows (as on a busy gateway).
fn filled_in_blocks(name: &str, n: u64) -> (Arc<Store>, PathBuf) {
    let (store, dir) = open(name);
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    for i in 0..n {
        assert!(audit.try_record(Event::new("b").uint("i", i)).is_ok());
    }
    writer.shutdown();
    (store, dir)
}

fn row_keys(store: &Store) -> Vec<u64> {
    let txn = redb::ReadableDatabase::begin_read(store.db()).unwrap();
    let t = txn.open_table(AUDIT).unwrap();
    redb::ReadableTable::iter(&t)
        .unwrap()
        .map(|r| r.unwrap().0.value())
        .collect()
}

fn raw_row(store: &Store, key: u64) -> Vec<u8> {
    let txn = redb::ReadableDatabase::begin_read(store.db()).unwrap();
    let t = txn.open_table(AUDIT).unwrap();
    let v = t.get(key).unwrap().unwrap();
    v.value().to_vec()
}

/// The (hash, line) pairs stored in the row under `key`, to change and store back.
fn row_lines(store: &Store, key: u64) -> Vec<([u8; 32], String)> {
    decode_lines(key, &raw_row(store, key))
        .unwrap()
        .iter()
        .map(|s| (s.hash, s.line.to_string()))
        .collect()
}

#[test]
fn lazily_committed_events_share_block_rows_and_read_back_in_order() {
    let n = 1000;
    let (store, dir) = filled_in_blocks("audit-blocks", n);
    let keys = row_keys(&store);
    // Fewer rows than events, none longer than a block allows.
    assert!(keys.len() < 100, "{} rows for {n} events", keys.len());
    for pair in keys.windows(2) {
        assert!(pair[1] - pair[0] <= BLOCK_MAX_LINES as u64, "{pair:?}");
    }
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 1000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(line_seq(l), Some(i as u64 + 1));
        assert!(l.contains(&format!("\"kind\":\"b\",\"i\":{i},")), "{l}");
    }
    let r = verify(&store).unwrap();
    assert!(r.is_intact(), "{r}");
    assert_eq!((r.events, r.head_seq), (1000, 1000));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn export_since_and_export_lines_start_inside_a_block() {
    let (store, dir) = filled_in_blocks("audit-blocks-since", 300);
    let keys = row_keys(&store);
    // A seq strictly inside the first block.
    let inside = keys[0] + 1;
    assert!(keys.len() < 300 && !keys.contains(&(inside + 1)));
    let after = exported(&store, inside);
    assert_eq!(after.len(), 300 - inside as usize);
    assert_eq!(line_seq(&after[0]), Some(inside + 1));
    assert!(exported(&store, 300).is_empty());
    // Paging with export_lines across block boundaries returns every line once, in order.
    let mut seen = Vec::new();
    let mut since = 0;
    loop {
        let page = export_lines(&store, since, 7, usize::MAX).unwrap();
        if page.is_empty() {
            break;
        }
        for l in &page {
            seen.push(line_seq(l).unwrap());
        }
        since = *seen.last().unwrap();
    }
    assert_eq!(seen, (1..=300).collect::<Vec<u64>>());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verify_finds_a_changed_line_inside_a_block_and_a_removed_block() {
    // More than BLOCK_MAX_LINES events: at least two block rows.
    let (store, dir) = filled_in_blocks("audit-blocks-tamper", 600);
    let keys = row_keys(&store);
    assert!(keys.len() >= 3, "{keys:?}");
    let first = keys[0];
    let raw = raw_row(&store, first);
    let mut lines = row_lines(&store, first);
    assert!(lines.len() >= 3, "the first row is a block");
    // Line 2 of the block (seq first + 2) changed, its stored hash kept.
    lines[2].1 = lines[2].1.replace("\"i\":2", "\"i\":9");
    with_rows(&store, |t| {
        t.insert(first, encode_lines(&lines).as_slice()).unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: first + 2,
            problem: Problem::HashMismatch
        })
    );
    assert_eq!(r.events, 2);
    // The same with the hash recomputed: the next line's prev no longer matches.
    lines[2].0 = sha256(lines[2].1.as_bytes());
    with_rows(&store, |t| {
        t.insert(first, encode_lines(&lines).as_slice()).unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: first + 3,
            problem: Problem::PrevMismatch
        })
    );
    // The original row back: intact. Then a whole block in the middle removed: missing at its
    // first seq.
    with_rows(&store, |t| {
        t.insert(first, raw.as_slice()).unwrap();
    });
    assert!(verify(&store).unwrap().is_intact());
    with_rows(&store, |t| {
        t.remove(keys[1]).unwrap();
    });
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: keys[1],
            problem: Problem::Missing
        })
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn single_and_block_rows_mix_in_one_log() {
    let (store, dir) = open("audit-blocks-mixed");
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    audit.record_blocking(Event::new("one")).unwrap();
    for i in 0..20u64 {
        assert!(audit.try_record(Event::new("b").uint("i", i)).is_ok());
    }
    writer.shutdown();
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    audit.record_blocking(Event::new("two")).unwrap();
    writer.shutdown();
    // The durable record is a version-1 row of its own (the format older logs have).
    let first_row = raw_row(&store, 1);
    let (_, line) = decode_row(&first_row).unwrap();
    assert!(line.contains("\"kind\":\"one\""));
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 22);
    assert!(lines[21].contains("\"kind\":\"two\""));
    assert!(verify(&store).unwrap().is_intact());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decoding_a_damaged_block_is_an_error_never_a_panic() {
    let lines: Vec<([u8; 32], String)> = (0..3)
        .map(|i| {
            let l = format!("line {i}");
            (sha256(l.as_bytes()), l)
        })
        .collect();
    let block = encode_lines(&lines);
    let decoded = decode_lines(10, &block).unwrap();
    assert_eq!(
        decoded.iter().map(|s| (s.seq, s.line)).collect::<Vec<_>>(),
        vec![(10, "line 0"), (11, "line 1"), (12, "line 2")]
    );
    for cut in 0..block.len() {
        assert!(decode_lines(10, &block[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = block.clone();
    trailing.push(0);
    assert!(decode_lines(10, &trailing).is_err());
    // A count below two, or one that a key near u64::MAX can't number, is corrupt.
    let mut one = block.clone();
    one[1..5].copy_from_slice(&1u32.to_be_bytes());
    assert!(decode_lines(10, &one).is_err());
    assert!(decode_lines(u64::MAX - 1, &block).is_err());
    let mut huge = block.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode_lines(10, &huge).is_err());
}

#[test]
fn encoded_fields_make_the_same_line_as_the_fields_themselves() {
    let shared: Arc<str> = "ses_1\"\n".into();
    let long = "x".repeat(MAX_STR_BYTES + 10);
    let fields = || {
        Event::new("")
            .shared("session", &shared)
            .str("text", "select '\u{2028}' -- \\")
            .str("long", long.clone())
            .names("kinds", ["select", "insert"])
            .names("flags", [])
            .list("tables", vec!["public.a".into(), "b\"c".into()])
            .opt_str("rule", None::<String>)
            .uint("seq", u64::MAX)
            .int("ts", i64::MIN)
            .int("zero", 0)
            .bool("prev", false)
    };
    let whole = fields();
    // Encoded at once (the hot path's event), in pieces, with a plain field after them and an
    // encoded group after that plain field (kept in call order).
    let ids = Encoded::of(&Event::new("").shared("session", &shared));
    let tail = Encoded::of(&Event::new("").uint("after", 3));
    let by_parts = Event::with_room("statement", 16)
        .encoded(&Encoded::of(&Event::new("")))
        .encoded(&Encoded::of(&fields()))
        .encoded_uint(crate::audit_key!("rows"), 1)
        .encoded_bool(crate::audit_key!("ok"), true)
        .str("error", "x")
        .encoded(&ids)
        .encoded_uint(crate::audit_key!("n"), 2)
        .encoded(&tail);
    let mut expected = Event::new("statement");
    expected.fields = whole.fields;
    expected = expected
        .uint("rows", 1)
        .bool("ok", true)
        .str("error", "x")
        .shared("session", &shared)
        .uint("n", 2)
        .uint("after", 3);
    let prev = [0x5a; 32];
    for (seq, ts) in [
        (1, 0),
        (u64::MAX, 1_795_771_800_123),
        (42, 253_402_300_799_999),
    ] {
        let a = super::format::line(seq, ts, &by_parts, &prev);
        assert_eq!(a, super::format::line(seq, ts, &expected, &prev));
        assert!(json::is_object(&a), "{a}");
    }
    assert!(super::format::line(1, 0, &by_parts, &prev).contains(",\"rows\":1,\"ok\":true,\"error\":\"x\",\"session\":\"ses_1\\\"\\n\",\"n\":2,\"after\":3,\"prev\":"));
    assert!(super::format::line(7, 0, &expected, &prev).contains(
        ",\"_seq\":18446744073709551615,\"_ts\":-9223372036854775808,\"zero\":0,\"_prev\":false,"
    ));
}

#[test]
fn keys_are_rendered_and_checked() {
    let k = crate::audit_key!("duration_us");
    assert_eq!(k.name(), "duration_us");
    let line = super::format::line(1, 0, &Event::with_room("k", 8).encoded_uint(k, 7), &[0; 32]);
    assert!(line.contains(",\"duration_us\":7,\"prev\":"), "{line}");
    // What `audit_key!` refuses at compile time, called at run time.
    for (name, rendered) in [
        ("seq", ",\"seq\":"),
        ("prev", ",\"prev\":"),
        ("a\"b", ",\"a\"b\":"),
        ("Rows", ",\"Rows\":"),
        ("", ",\"\":"),
        ("rows", ",\"row\":"),
        ("rows", "\"rows\":"),
    ] {
        let refused = std::panic::catch_unwind(|| Key::checked(name, rendered));
        assert!(refused.is_err(), "{name:?} {rendered:?}");
    }
}

#[test]
fn fields_encoded_from_borrowed_values_match_the_plain_fields() {
    let long = "\u{2028}é".repeat(MAX_STR_BYTES / 4);
    let many: Vec<String> = (0..MAX_LIST_ITEMS + 3).map(|i| format!("t{i}\"")).collect();
    let build = |ev: Event, plain: bool| {
        if plain {
            ev.str("text", long.as_str())
                .opt_str("rule", None::<String>)
                .names("kinds", ["select", "insert"])
                .list("tables", many.clone())
                .list("none", Vec::new())
        } else {
            ev.encoded_str(crate::audit_key!("text"), &long)
                .encoded_opt_str(crate::audit_key!("rule"), None)
                .encoded_names(crate::audit_key!("kinds"), ["select", "insert"])
                .encoded_list(crate::audit_key!("tables"), &many)
                .encoded_list(crate::audit_key!("none"), &[])
        }
    };
    let prev = [7; 32];
    // Encoded at once, and (after a plain field) kept as fields: the same line either way.
    let encoded = build(Event::with_room("k", 64), false);
    let after_plain = build(Event::new("k").uint("first", 1), false);
    let plain = build(Event::new("k"), true);
    let line = super::format::line(3, 0, &plain, &prev);
    assert_eq!(super::format::line(3, 0, &encoded, &prev), line);
    assert_eq!(
        super::format::line(3, 0, &after_plain, &prev),
        super::format::line(3, 0, &build(Event::new("k").uint("first", 1), true), &prev)
    );
    assert!(json::is_object(&line));
    assert!(line.contains("\"...[3 more]\"]"));
    assert!(line.contains("...[truncated "));
}

#[test]
fn numbers_and_timestamps_match_the_standard_formatter() {
    for n in [
        0u64,
        1,
        9,
        10,
        99,
        100,
        12_345,
        u64::from(u32::MAX),
        u64::MAX - 1,
        u64::MAX,
    ] {
        let line = super::format::line(n, 0, &Event::new("k").uint("u", n), &[0; 32]);
        assert!(line.starts_with(&format!("{{\"seq\":{n},")), "{line}");
        assert!(line.contains(&format!(",\"u\":{n},")), "{line}");
    }
    for i in [
        0i64,
        1,
        -1,
        9,
        -10,
        1_000_000,
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
    ] {
        let line = super::format::line(1, 0, &Event::new("k").int("i", i), &[0; 32]);
        assert!(line.contains(&format!(",\"i\":{i},")), "{line}");
    }
    // Every millisecond field, and seconds across a few years, against chrono-free arithmetic
    // formatted by `write!`.
    let reference = |ms: u64| {
        let secs = ms / 1000;
        let days = secs / 86_400;
        let line = super::format::rfc3339_millis(days * 86_400_000);
        format!(
            "{}T{:02}:{:02}:{:02}.{:03}Z",
            &line[..10],
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            ms % 1000
        )
    };
    let mut ms = 1_600_000_000_000u64;
    while ms < 1_900_000_000_000 {
        assert_eq!(super::format::rfc3339_millis(ms), reference(ms));
        ms += 997_331_123;
    }
    for ms in 0..2000 {
        assert_eq!(super::format::rfc3339_millis(ms), reference(ms));
    }
    // Past year 9999 the width grows rather than wrapping.
    assert_eq!(
        super::format::rfc3339_millis(253_402_300_800_000),
        "10000-01-01T00:00:00.000Z"
    );
}

#[test]
fn rows_built_line_by_line_match_the_stored_formats() {
    let lines: Vec<([u8; 32], String)> = (0..4)
        .map(|i| {
            let l = format!("{{\"seq\":{i}}}");
            (sha256(l.as_bytes()), l)
        })
        .collect();
    // One line: the version-1 row older logs have.
    assert_eq!(
        encode_lines(&lines[..1]),
        encode_row(&lines[0].0, &lines[0].1)
    );
    // Several: version 2, count, then hash and length-prefixed line each.
    let mut expected = vec![2u8];
    expected.extend_from_slice(&4u32.to_be_bytes());
    for (hash, line) in &lines {
        expected.extend_from_slice(hash);
        expected.extend_from_slice(&u32::try_from(line.len()).unwrap().to_be_bytes());
        expected.extend_from_slice(line.as_bytes());
    }
    assert_eq!(encode_lines(&lines), expected);
    // A builder reused after `clear` starts afresh.
    let mut row = super::chain::RowBuilder::default();
    for (hash, line) in &lines {
        row.push(hash, line);
    }
    assert_eq!(row.finish(), expected.as_slice());
    row.clear();
    assert!(row.finish().is_empty());
    row.push(&lines[1].0, &lines[1].1);
    assert_eq!(
        row.finish(),
        encode_row(&lines[1].0, &lines[1].1).as_slice()
    );
    assert_eq!((row.lines(), row.line_bytes()), (1, lines[1].1.len()));
}

// ---- retention ------------------------------------------------------------------------------

/// A cutoff after every line written by these tests: everything is old enough.
const FUTURE: &str = "9999-12-31T23:59:59.999Z";
/// A cutoff before every line: nothing is.
const PAST: &str = "1970-01-01T00:00:00.000Z";

fn base_of(store: &Store) -> Option<(u64, [u8; 32])> {
    let txn = redb::ReadableDatabase::begin_read(store.db()).unwrap();
    let meta = txn.open_table(META).unwrap();
    let v = meta.get(crate::store::tables::META_AUDIT_BASE).unwrap()?;
    Some(chain::decode_head(Some(v.value())).unwrap())
}

#[test]
fn line_ts_reads_the_time_a_line_carries() {
    let (store, dir) = filled("audit-line-ts", 1);
    let line = &exported(&store, 0)[0];
    let ts = format::line_ts(line).unwrap();
    assert!(line.contains(&format!("\"ts\":\"{ts}\"")), "{line}");
    assert_eq!(ts.len(), 24);
    for bad in [
        "",
        "{\"seq\":1,\"ts\":\"x\"}",
        "{\"seq\":1,\"kind\":\"e\"}",
        "{\"ts\":\"2026-11-28T03:12:07.123Z\"}",
    ] {
        assert_eq!(format::line_ts(bad), None, "{bad}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn prune_deletes_the_oldest_whole_rows_and_what_is_left_still_verifies() {
    let (store, dir) = filled_in_blocks("audit-prune", 600);
    let keys = row_keys(&store);
    assert!(keys.len() >= 3, "{keys:?}");
    // Nothing is older than the epoch.
    assert_eq!(chain::prune(&store, PAST, 100).unwrap().rows, 0);
    assert_eq!(base_of(&store), None);
    // One row: the first block goes, and the base is its last line.
    let first_kept = keys[1];
    let last_pruned_hash = row_lines(&store, keys[0]).last().unwrap().0;
    let p = chain::prune(&store, FUTURE, 1).unwrap();
    assert_eq!(
        (p.rows, p.events, p.through_seq),
        (1, first_kept - 1, first_kept - 1)
    );
    assert_eq!(base_of(&store), Some((first_kept - 1, last_pruned_hash)));
    let r = verify(&store).unwrap();
    assert!(r.is_intact(), "{r}");
    assert_eq!(
        (r.events, r.pruned_through, r.head_seq),
        (600 - (first_kept - 1), first_kept - 1, 600)
    );
    assert!(r.to_string().contains("were pruned"), "{r}");
    let lines = exported(&store, 0);
    assert_eq!(line_seq(&lines[0]), Some(first_kept));
    assert_eq!(lines.len() as u64, 600 - (first_kept - 1));
    // Everything: the log is empty, its base is the head, and it verifies.
    let p = chain::prune(&store, FUTURE, 1000).unwrap();
    assert_eq!(p.through_seq, 600);
    assert!(row_keys(&store).is_empty());
    let r = verify(&store).unwrap();
    assert!(r.is_intact(), "{r}");
    assert_eq!((r.events, r.pruned_through), (0, 600));
    // New events continue the chain from the head.
    let (audit, writer) = start(store.clone(), FLUSH).unwrap();
    audit.record_blocking(Event::new("after")).unwrap();
    writer.shutdown();
    let r = verify(&store).unwrap();
    assert!(r.is_intact(), "{r}");
    assert_eq!((r.events, r.head_seq), (1, 601));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn prune_never_removes_a_row_that_does_not_chain() {
    let (store, dir) = filled_in_blocks("audit-prune-tamper", 600);
    let keys = row_keys(&store);
    assert!(keys.len() >= 3, "{keys:?}");
    // The second block's line changed (its stored hash kept): the first block may go, the
    // second stays, and verify still reports the change.
    let second = keys[1];
    let mut lines = row_lines(&store, second);
    let i = lines.len() - 1;
    lines[i].1 = lines[i].1.replace("\"kind\":\"b\"", "\"kind\":\"c\"");
    with_rows(&store, |t| {
        t.insert(second, encode_lines(&lines).as_slice()).unwrap();
    });
    let p = chain::prune(&store, FUTURE, 1000).unwrap();
    assert_eq!((p.rows, p.through_seq), (1, second - 1));
    assert_eq!(row_keys(&store)[0], second);
    let r = verify(&store).unwrap();
    assert_eq!(
        r.broken,
        Some(Broken {
            seq: second + i as u64,
            problem: Problem::HashMismatch
        })
    );
    // Pruning again removes nothing past the break.
    assert_eq!(chain::prune(&store, FUTURE, 1000).unwrap().rows, 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn writer_with_retention_prunes_old_events_at_start_and_audits_the_prune() {
    let (store, dir) = filled_in_blocks("audit-retention", 300);
    // Long enough that the events written below are not pruned before the test reads them.
    let keep = Duration::from_secs(1);
    std::thread::sleep(keep + Duration::from_millis(100));
    let (audit, writer) = start_with(store.clone(), FLUSH, QUEUE_CAPACITY, Some(keep)).unwrap();
    audit.record_blocking(Event::new("later")).unwrap();
    writer.shutdown();
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("\"kind\":\"audit_pruned\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("\"through_seq\":300,\"events\":300,"),
        "{}",
        lines[0]
    );
    assert_eq!(line_seq(&lines[0]), Some(301));
    assert!(lines[1].contains("\"kind\":\"later\""), "{}", lines[1]);
    let r = verify(&store).unwrap();
    assert!(r.is_intact(), "{r}");
    assert_eq!((r.events, r.pruned_through, r.head_seq), (2, 300, 302));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_idle_writer_still_prunes_on_time() {
    let (store, dir) = open("audit-retention-idle");
    let keep = Duration::from_millis(300);
    let (audit, writer) = start_with(store.clone(), FLUSH, QUEUE_CAPACITY, Some(keep)).unwrap();
    for i in 0..50 {
        assert!(audit.try_record(Event::new("idle").uint("i", i)).is_ok());
    }
    audit
        .record_blocking(Event::new("idle").uint("i", 50))
        .unwrap();
    // Nothing else is queued from here: the writer is idle, and must wake up to prune.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = exported(&store, 0);
        if !lines.iter().any(|l| l.contains("\"kind\":\"idle\"")) {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "still there after 10s: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    writer.shutdown();
    let r = verify(&store).unwrap();
    assert!(r.is_intact(), "{r}");
    assert!(r.pruned_through >= 51, "{r}");
    // What is left is the record of pruning (an earlier record may itself have been pruned).
    assert!(
        lines
            .iter()
            .all(|l| l.contains("\"kind\":\"audit_pruned\"")),
        "{lines:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn writer_without_retention_keeps_every_event() {
    let (store, dir) = filled_in_blocks("audit-no-retention", 300);
    std::thread::sleep(Duration::from_millis(30));
    let (audit, writer) = start_with(store.clone(), FLUSH, QUEUE_CAPACITY, None).unwrap();
    audit.record_blocking(Event::new("later")).unwrap();
    writer.shutdown();
    assert_eq!(exported(&store, 0).len(), 301);
    assert_eq!(base_of(&store), None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn word_scan_escapes_exactly_what_the_reference_escapes() {
    // `push_json_str` skips clean runs eight bytes at a time: every ASCII character and the
    // multi-byte ones that share or neighbour the E2 lead byte, at every offset of a word and
    // across word boundaries.
    let mut specials: Vec<char> = (0u8..0x80).map(char::from).collect();
    specials.extend([
        '\u{2028}', '\u{2029}', '\u{2027}', '\u{202a}', '€', '\u{2000}', 'é', '\u{80}', '😀',
    ]);
    for c in &specials {
        for at in 0..17 {
            for tail in [0, 1, 9] {
                let s = format!("{}{c}{}", "a".repeat(at), "b".repeat(tail));
                let mut got = String::new();
                super::format::push_json_str(&mut got, &s);
                assert_eq!(got, escape_reference(&s), "{s:?}");
            }
        }
    }
    // Two specials in one word, and long clean runs.
    for a in &specials {
        for b in &specials {
            let s = format!("xy{a}{b}zzzzzzzzzzzzzzzz");
            let mut got = String::new();
            super::format::push_json_str(&mut got, &s);
            assert_eq!(got, escape_reference(&s), "{s:?}");
        }
    }
}

/// The writer keeps its row and line buffers from batch to batch; what a failed attempt left in
/// them must not reach the next row.
#[test]
fn a_batch_after_a_dirty_scratch_writes_only_its_own_lines() {
    use super::writer::{append, Job, Scratch};
    let (store, _dir) = open("audit-dirty-scratch");
    let job = |i: u64| Job {
        ev: Event::new("test").uint("i", i),
        reply: None,
        ts_ms: Some(1_700_000_000_000 + i),
    };
    let mut scratch = Scratch::default();
    let first: Vec<Job> = (0..3).map(job).collect();
    assert_eq!(
        append(&store, &first, redb::Durability::Immediate, &mut scratch).unwrap(),
        1
    );
    // As an error between two lines leaves them: a row half built, a line half written.
    scratch.row.push(&[7; 32], "{\"seq\":99,\"stale\":true}");
    scratch.line.push_str("stale");
    let second: Vec<Job> = (3..5).map(job).collect();
    assert_eq!(
        append(&store, &second, redb::Durability::Immediate, &mut scratch).unwrap(),
        4
    );
    let lines = exported(&store, 0);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("{{\"seq\":{},", i + 1)), "{l}");
        assert!(l.contains(&format!(",\"i\":{i},")), "{l}");
        assert!(!l.contains("stale"), "{l}");
    }
    assert!(verify(&store).unwrap().is_intact());
}
