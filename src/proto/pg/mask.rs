//! Masking of backend messages, sans-IO: RowDescription decides what each column gets, DataRow
//! values are rewritten one row at a time (memory stays flat whatever the result size), and the
//! text of ErrorResponse / NoticeResponse fields, NotificationResponse payloads and COPY TO STDOUT
//! data is scanned by the detectors. Frames are rebuilt with correct lengths.
//!
//! Fail closed: a value in a column named by a mask rule is never relayed raw. Text (and
//! text-like binary) values are masked with the rule's strategy; any other binary value in such a
//! column becomes NULL, which is valid for every type. A message that can't be parsed is an error
//! (the session ends), never relayed unmasked. Binary COPY output of a masked session is refused.

use std::collections::HashMap;
use std::sync::Arc;

use super::catalog::TableColumns;
use super::codec::{CodecError, Reader};
use crate::mask::{column_matches, Masker};

/// Types whose binary representation is their text: text, varchar, bpchar, name, json, xml.
const TEXT_LIKE: [u32; 6] = [25, 1043, 1042, 19, 114, 142];
const BYTEA: u32 = 17;

/// One `[[mask]]` rule that applies to the session.
#[derive(Clone)]
pub struct MaskRule {
    /// Column globs (`*.email`, `users.ssn`, `*password*`).
    pub columns: Vec<String>,
    pub masker: Arc<Masker>,
}

#[derive(Clone)]
enum Column {
    /// Scan with every rule's detectors (text format, or text-like binary, or bytea).
    Detect,
    /// A masked column: the whole value with this rule's strategy.
    Whole(Arc<Masker>),
    /// A masked column in a binary format that can't be masked in place.
    Null,
    /// Binary non-text value of an unmasked column: nothing a text detector can read.
    Keep,
}

/// Why a backend message can't be relayed.
#[derive(Debug, PartialEq, Eq)]
pub enum MaskFailure {
    Codec(CodecError),
    BinaryCopy,
    /// COPY output carries no column names, so columns a rule names can't be found in it.
    CopyWithMaskedColumns,
}

pub struct MaskPlan {
    rules: Vec<MaskRule>,
    columns: Vec<Column>,
    copy_binary: bool,
    /// Source tables of result columns, by OID, as far as the gateway could resolve them; `None`:
    /// resolution failed (the table's columns are then masked as if every rule named them).
    tables: HashMap<u32, Option<Arc<TableColumns>>>,
}

/// Most table OIDs a session remembers (the gateway-wide cache keeps the rest).
const MAX_SESSION_TABLES: usize = 4096;

fn put_frame(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

impl std::fmt::Debug for MaskPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskPlan")
            .field("rules", &self.rules.len())
            .field("columns", &self.columns.len())
            .finish()
    }
}

impl MaskPlan {
    pub fn new(rules: Vec<MaskRule>) -> MaskPlan {
        MaskPlan {
            rules,
            columns: Vec::new(),
            copy_binary: false,
            tables: HashMap::new(),
        }
    }

    /// Table OIDs named by a RowDescription `body` whose source this plan doesn't know yet (only
    /// when rules name columns: detectors don't care where a value comes from).
    ///
    /// # Errors
    /// The RowDescription is malformed.
    pub fn missing_tables(&self, body: &[u8]) -> Result<Vec<u32>, CodecError> {
        let mut missing = Vec::new();
        if !self.names_columns() {
            return Ok(missing);
        }
        let mut r = Reader::new(body);
        let n = r.i16()?;
        for _ in 0..n.max(0) {
            r.cstr_bytes()?;
            let table_oid = r.u32()?;
            r.take(2 + 4 + 2 + 4 + 2)?;
            if table_oid != 0
                && !self.tables.contains_key(&table_oid)
                && !missing.contains(&table_oid)
            {
                missing.push(table_oid);
            }
        }
        r.expect_empty()?;
        Ok(missing)
    }

    /// Records where table `oid` comes from (`None`: it could not be resolved).
    pub fn learn_table(&mut self, oid: u32, table: Option<Arc<TableColumns>>) {
        if self.tables.len() >= MAX_SESSION_TABLES {
            self.tables.clear();
        }
        self.tables.insert(oid, table);
    }

    /// Detector hits in `text` masked by every rule in turn; `None` when nothing matched.
    pub fn scan(&self, text: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for r in &self.rules {
            let input = current.as_deref().unwrap_or(text);
            if let Some(masked) = r.masker.mask_text(input) {
                current = Some(masked);
            }
        }
        current
    }

    /// Whether any rule masks columns by name.
    pub fn names_columns(&self) -> bool {
        self.rules.iter().any(|r| !r.columns.is_empty())
    }

    /// The tags this plan needs to see; everything else is relayed untouched.
    pub fn wants(tag: u8) -> bool {
        matches!(tag, b'T' | b'D' | b'E' | b'N' | b'A' | b'd' | b'H')
    }

    /// Mask one complete frame into `out`. Frames of other tags are copied.
    pub fn process(&mut self, tag: u8, frame: &[u8], out: &mut Vec<u8>) -> Result<(), MaskFailure> {
        let body = frame.get(5..).unwrap_or_default();
        let codec = MaskFailure::Codec;
        match tag {
            b'T' => {
                self.describe(body).map_err(codec)?;
                out.extend_from_slice(frame);
            }
            b'D' => self.data_row(body, frame, out).map_err(codec)?,
            b'E' | b'N' => self.fields(tag, body, frame, out).map_err(codec)?,
            b'A' => {
                let mut r = Reader::new(body);
                let pid = r.i32().map_err(codec)?;
                let channel = r.cstr_bytes().map_err(codec)?;
                let payload = r.cstr_bytes().map_err(codec)?;
                r.expect_empty().map_err(codec)?;
                match self.scan(payload) {
                    None => out.extend_from_slice(frame),
                    Some(masked) => {
                        let mut b = Vec::with_capacity(body.len() + 16);
                        b.extend_from_slice(&pid.to_be_bytes());
                        b.extend_from_slice(channel);
                        b.push(0);
                        b.extend_from_slice(&masked);
                        b.push(0);
                        put_frame(out, b'A', &b);
                    }
                }
            }
            b'H' => {
                // CopyOutResponse: overall format 0 = text, 1 = binary.
                let mut r = Reader::new(body);
                self.copy_binary = r.u8().map_err(codec)? == 1;
                if self.copy_binary {
                    return Err(MaskFailure::BinaryCopy);
                }
                // The proxy refuses COPY TO for such sessions before it runs; this is the
                // backstop for any COPY the classifier did not see (fail closed).
                if self.names_columns() {
                    return Err(MaskFailure::CopyWithMaskedColumns);
                }
                out.extend_from_slice(frame);
            }
            b'd' => match self.scan(body) {
                // COPY TO STDOUT sends one row per CopyData message.
                None => out.extend_from_slice(frame),
                Some(masked) => put_frame(out, b'd', &masked),
            },
            _ => out.extend_from_slice(frame),
        }
        Ok(())
    }

    fn describe(&mut self, body: &[u8]) -> Result<(), CodecError> {
        let mut r = Reader::new(body);
        let n = r.i16()?;
        self.columns.clear();
        for _ in 0..n.max(0) {
            let name = String::from_utf8_lossy(r.cstr_bytes()?).into_owned();
            let table_oid = r.u32()?;
            let attnum = r.i16()?;
            let type_oid = r.u32()?;
            let _typlen = r.i16()?;
            let _typmod = r.i32()?;
            let format = r.i16()?;
            let whole = self
                .rule_for(&name, table_oid, attnum)
                .map(|rule| rule.masker.clone());
            let textual = format == 0 || TEXT_LIKE.contains(&type_oid);
            self.columns.push(match (whole, textual) {
                (Some(m), true) => Column::Whole(m),
                (Some(_), false) => Column::Null,
                (None, true) => Column::Detect,
                (None, false) if type_oid == BYTEA => Column::Detect,
                (None, false) => Column::Keep,
            });
        }
        r.expect_empty()
    }

    /// The first rule that masks a result column labelled `name`, from table `table_oid`'s
    /// attribute `attnum` (0 / 0 for an expression).
    fn rule_for(&self, name: &str, table_oid: u32, attnum: i16) -> Option<&MaskRule> {
        let source = match table_oid {
            0 => None,
            oid => Some(self.tables.get(&oid).cloned().flatten()),
        };
        match source {
            // An expression: only its label can be matched, and a `table.column` glob matches
            // every column of that name (more masking, never less).
            None => self.rules.iter().find(|rule| {
                rule.columns
                    .iter()
                    .any(|g| column_matches(g, None, name) || glob_column_part_matches(g, name))
            }),
            // A table column: matched by where it comes from, whatever the query called it;
            // a bare-name glob also matches the label.
            Some(Some(table)) => {
                let qualified = table.qualified();
                let real = table.columns.get(&attnum).map_or(name, String::as_str);
                self.rules.iter().find(|rule| {
                    rule.columns.iter().any(|g| {
                        column_matches(g, Some(&qualified), real)
                            || (!g.contains('.') && column_matches(g, None, name))
                    })
                })
            }
            // The source couldn't be resolved: fail closed, as if every column rule named it.
            Some(None) => self.rules.iter().find(|rule| !rule.columns.is_empty()),
        }
    }

    fn data_row(&self, body: &[u8], frame: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut r = Reader::new(body);
        let n = r.i16()?;
        let mut rebuilt: Option<Vec<u8>> = None;
        for i in 0..usize::try_from(n.max(0)).unwrap_or(0) {
            let start = body.len() - r.remaining();
            let len = r.i32()?;
            let value = if len < 0 {
                None
            } else {
                Some(r.take(usize::try_from(len).unwrap_or(0))?)
            };
            let end = body.len() - r.remaining();
            // A row wider than its description can't be judged: mask every value as a masked
            // column would be, text or not.
            let column = self.columns.get(i).cloned().unwrap_or(Column::Null);
            let replacement: Option<Option<Vec<u8>>> = match (value, column) {
                (None, _) | (Some(_), Column::Keep) => None,
                (Some(v), Column::Detect) => self.scan(v).map(Some),
                (Some(v), Column::Whole(m)) => Some(Some(m.mask_whole(v))),
                (Some(_), Column::Null) => Some(None),
            };
            match (replacement, rebuilt.as_mut()) {
                (None, None) => {}
                (None, Some(b)) => b.extend_from_slice(&body[start..end]),
                (Some(new), _) => {
                    let b = rebuilt.get_or_insert_with(|| {
                        let mut b = Vec::with_capacity(body.len() + 32);
                        b.extend_from_slice(&body[..start]);
                        b
                    });
                    match new {
                        None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            b.extend_from_slice(
                                &i32::try_from(v.len()).unwrap_or(i32::MAX).to_be_bytes(),
                            );
                            b.extend_from_slice(&v);
                        }
                    }
                }
            }
        }
        r.expect_empty()?;
        match rebuilt {
            None => out.extend_from_slice(frame),
            Some(b) => put_frame(out, b'D', &b),
        }
        Ok(())
    }

    fn fields(
        &self,
        tag: u8,
        body: &[u8],
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let mut r = Reader::new(body);
        let mut rebuilt = Vec::with_capacity(body.len() + 16);
        let mut changed = false;
        loop {
            let code = r.u8()?;
            rebuilt.push(code);
            if code == 0 {
                break;
            }
            let value = r.cstr_bytes()?;
            // Message, detail, hint, context: where a unique violation prints the value.
            let masked = if matches!(code, b'M' | b'D' | b'H' | b'W') {
                self.scan(value)
            } else {
                None
            };
            match masked {
                Some(m) => {
                    changed = true;
                    rebuilt.extend(m.into_iter().filter(|b| *b != 0));
                }
                None => rebuilt.extend_from_slice(value),
            }
            rebuilt.push(0);
        }
        r.expect_empty()?;
        if changed {
            put_frame(out, tag, &rebuilt);
        } else {
            out.extend_from_slice(frame);
        }
        Ok(())
    }
}

/// `users.ssn` also names the column `ssn` of an unresolved table.
fn glob_column_part_matches(glob: &str, column: &str) -> bool {
    match glob.rsplit_once('.') {
        Some((_, col)) => column_matches(col, None, column),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Strategy;
    use crate::proto::pg::codec;

    fn plan(columns: &[&str]) -> MaskPlan {
        let masker = Arc::new(
            Masker::new(
                &["email".to_string(), "card".to_string()],
                &[],
                Strategy::Redact,
                [7u8; 32],
            )
            .unwrap(),
        );
        MaskPlan::new(vec![MaskRule {
            columns: columns.iter().map(|s| s.to_string()).collect(),
            masker,
        }])
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, tag, body);
        out
    }

    fn row_description(cols: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&i16::try_from(cols.len()).unwrap().to_be_bytes());
        for (name, oid, format) in cols {
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&oid.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&format.to_be_bytes());
        }
        frame(b'T', &b)
    }

    /// A RowDescription of text columns with their source (table OID, attribute number).
    fn sourced_description(cols: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&i16::try_from(cols.len()).unwrap().to_be_bytes());
        for (name, table, attnum) in cols {
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(&table.to_be_bytes());
            b.extend_from_slice(&attnum.to_be_bytes());
            b.extend_from_slice(&25u32.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
        }
        frame(b'T', &b)
    }

    fn users_table() -> Arc<TableColumns> {
        Arc::new(TableColumns {
            schema: "public".into(),
            table: "users".into(),
            columns: [(1, "id".to_string()), (2, "ssn".to_string())].into(),
        })
    }

    #[test]
    fn resolved_source_masks_renamed_columns_only_of_that_table() {
        let mut p = plan(&["public.users.ssn"]);
        let desc = sourced_description(&[("x", 100, 2), ("ssn", 200, 2), ("id", 100, 1)]);
        assert_eq!(p.missing_tables(&desc[5..]).unwrap(), vec![100, 200]);
        p.learn_table(100, Some(users_table()));
        p.learn_table(
            200,
            Some(Arc::new(TableColumns {
                schema: "public".into(),
                table: "other".into(),
                columns: [(2, "ssn".to_string())].into(),
            })),
        );
        assert!(p.missing_tables(&desc[5..]).unwrap().is_empty());
        run(&mut p, &desc);
        let out = run(&mut p, &data_row(&[Some(b"123"), Some(b"456"), Some(b"7")]));
        assert_eq!(
            out,
            data_row(&[Some(b"[redacted]"), Some(b"456"), Some(b"7")]),
            "users.ssn renamed to x is masked; other.ssn and users.id are not"
        );
    }

    #[test]
    fn unresolved_source_is_masked_whole() {
        let mut p = plan(&["public.users.ssn"]);
        let desc = sourced_description(&[("id", 100, 1)]);
        p.learn_table(100, None);
        run(&mut p, &desc);
        let out = run(&mut p, &data_row(&[Some(b"7")]));
        assert_eq!(out, data_row(&[Some(b"[redacted]")]));
    }

    #[test]
    fn plans_without_column_rules_need_no_tables() {
        let p = plan(&[]);
        let desc = sourced_description(&[("x", 100, 2)]);
        assert!(p.missing_tables(&desc[5..]).unwrap().is_empty());
        assert!(plan(&["ssn"]).missing_tables(&desc[5..5]).is_err());
    }

    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&i16::try_from(values.len()).unwrap().to_be_bytes());
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        frame(b'D', &b)
    }

    fn run(p: &mut MaskPlan, f: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        p.process(f[0], f, &mut out).unwrap();
        out
    }

    #[test]
    fn masks_named_columns_whole_and_detects_in_others() {
        let mut p = plan(&["users.ssn"]);
        run(
            &mut p,
            &row_description(&[("id", 23, 0), ("ssn", 25, 0), ("note", 25, 0)]),
        );
        let out = run(
            &mut p,
            &data_row(&[
                Some(b"1"),
                Some(b"123-45-6789"),
                Some(b"mail bob@example.com now"),
            ]),
        );
        let want = data_row(&[
            Some(b"1"),
            Some(b"[redacted]"),
            Some(b"mail [redacted:email] now"),
        ]);
        assert_eq!(out, want);
    }

    #[test]
    fn rows_without_hits_are_relayed_byte_for_byte() {
        let mut p = plan(&["*.email"]);
        run(&mut p, &row_description(&[("id", 23, 0), ("note", 25, 0)]));
        let row = data_row(&[Some(b"42"), None]);
        assert_eq!(run(&mut p, &row), row);
    }

    #[test]
    fn binary_non_text_value_in_a_masked_column_becomes_null() {
        let mut p = plan(&["secret_num"]);
        run(
            &mut p,
            &row_description(&[("secret_num", 23, 1), ("other", 23, 1)]),
        );
        let out = run(
            &mut p,
            &data_row(&[Some(&[0, 0, 0, 7]), Some(&[0, 0, 0, 8])]),
        );
        assert_eq!(out, data_row(&[None, Some(&[0, 0, 0, 8])]));
    }

    #[test]
    fn error_detail_with_a_unique_violation_value_is_masked() {
        let p = plan(&[]);
        let mut body = Vec::new();
        for (c, v) in [
            (b'S', "ERROR"),
            (b'C', "23505"),
            (b'D', "Key (email)=(bob@example.com) already exists."),
        ] {
            body.push(c);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = Vec::new();
        let mut p = p;
        p.process(b'E', &frame(b'E', &body), &mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("bob@example.com") && text.contains("23505"),
            "{text}"
        );
    }

    /// Random rows: the output is always one well-formed DataRow with the same column count,
    /// rows without hits come out byte for byte, and no email survives.
    #[test]
    fn masking_never_breaks_framing_and_leaves_rows_without_hits_alone() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: [&[u8]; 8] = [
            b"plain text",
            b"bob@example.com",
            b"",
            b"4111 1111 1111 1111",
            b"\xff\x00",
            b"42",
            b"a@b",
            b"x@example.org y",
        ];
        let mut p = plan(&["secret"]);
        run(
            &mut p,
            &row_description(&[("a", 25, 0), ("secret", 25, 0), ("c", 25, 0), ("d", 17, 1)]),
        );
        for _ in 0..2000 {
            let values: Vec<Option<Vec<u8>>> = (0..4)
                .map(|_| {
                    let n = usize::try_from(next() % 9).unwrap();
                    pieces.get(n).map(|b| b.to_vec())
                })
                .collect();
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            let input = data_row(&refs);
            let out = run(&mut p, &input);
            let frame = codec::split_frame(&out, 1 << 20)
                .unwrap()
                .expect("one whole frame");
            assert_eq!(frame.len, out.len(), "exactly one frame");
            let mut r = Reader::new(frame.body);
            assert_eq!(r.i16().unwrap(), 4);
            let mut cells = Vec::new();
            for _ in 0..4 {
                let len = r.i32().unwrap();
                cells.push(
                    (len >= 0).then(|| r.take(usize::try_from(len).unwrap()).unwrap().to_vec()),
                );
            }
            r.expect_empty().unwrap();
            let hit = |v: &Option<Vec<u8>>| v.as_deref().is_some_and(|b| p.scan(b).is_some());
            if values[1].is_none() && !values.iter().any(hit) {
                assert_eq!(out, input, "a row without hits changed");
            }
            for c in &cells {
                let text = String::from_utf8_lossy(c.as_deref().unwrap_or_default()).into_owned();
                assert!(
                    !text.contains("bob@example.com") && !text.contains("x@example.org"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn binary_copy_is_refused_and_truncated_rows_are_errors() {
        let mut p = plan(&[]);
        let mut out = Vec::new();
        assert_eq!(
            p.process(b'H', &frame(b'H', &[1, 0, 0]), &mut out),
            Err(MaskFailure::BinaryCopy)
        );
        assert!(matches!(
            p.process(b'D', &frame(b'D', &[0, 1, 0, 0, 0, 9, b'x']), &mut out),
            Err(MaskFailure::Codec(_))
        ));
    }
}
