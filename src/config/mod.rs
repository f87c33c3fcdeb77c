//! The policy file: TOML schema, validation with `file:line:col` errors, loading.
//!
//! [`load`] reads the file and calls [`parse`], which deserializes the TOML into the raw, spanned
//! structs of `raw.rs` (unknown keys and wrong value types are refused there) and then validates
//! every value and every cross-reference in `validate.rs`, collecting all problems it finds (up to
//! [`MAX_PROBLEMS`]) rather than stopping at the first. The result is a [`Policy`] (see `model.rs`),
//! which the rest of the gateway uses without re-checking.
//!
//! Relative paths in the file (`data_dir`, `password_file`, `tls`, `upstream_ca`) are relative to
//! the directory of the policy file. Files the gateway must read (`password_file`, `tls.cert`,
//! `tls.key`, `upstream_ca`) must exist and be readable when the policy is loaded; a password file
//! must also not be accessible by group or others.

mod duration;
mod model;
mod raw;
mod validate;

pub use duration::{parse_duration, parse_size};
pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// Largest number of problems reported for one file; the rest are counted, not listed.
pub const MAX_PROBLEMS: usize = 50;

/// Largest policy file accepted (a real one is a few KiB).
const MAX_FILE_SIZE: u64 = 4 << 20;

/// One problem in a policy file. `line` and `col` are 1-based (`col` counts characters); both are 0
/// when the problem has no position (the file could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    /// What is wrong; how to fix it.
    pub message: String,
}

/// Why a policy file was refused: every problem found, each with its position.
#[derive(Debug, Clone)]
pub struct ConfigError {
    source: PathBuf,
    problems: Vec<Problem>,
    /// Problems found beyond [`MAX_PROBLEMS`].
    omitted: usize,
}

impl ConfigError {
    /// The problems, in the order found (at most [`MAX_PROBLEMS`]); never empty.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The policy file the problems are in.
    pub fn source_path(&self) -> &Path {
        &self.source
    }

    fn single(source: &Path, message: String) -> ConfigError {
        ConfigError {
            source: source.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                col: 0,
                message,
            }],
            omitted: 0,
        }
    }
}

impl fmt::Display for ConfigError {
    /// One line per problem: `path:line:col: what is wrong; how to fix it`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.source.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if p.line == 0 {
                write!(f, "{path}: {}", p.message)?;
            } else {
                write!(f, "{path}:{}:{}: {}", p.line, p.col, p.message)?;
            }
        }
        if self.omitted > 0 {
            write!(
                f,
                "\n{path}: {} more problem(s) not shown; fix the ones above first",
                self.omitted
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the policy file at `path`.
///
/// # Errors
/// A [`ConfigError`] listing every problem found, or saying why the file could not be read.
pub fn load(path: &Path) -> Result<Policy, ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::single(path, format!("cannot read the policy file: {e}")))?;
    if meta.len() > MAX_FILE_SIZE {
        return Err(ConfigError::single(
            path,
            format!(
                "the policy file is {} bytes, more than the {MAX_FILE_SIZE} bytes allowed; is this the right file?",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single(path, format!("cannot read the policy file: {e}")))?;
    parse(&text, path)
}

/// Validates policy `text`; `source` is the file it came from, used in messages and as the base of
/// relative paths (its parent directory).
///
/// # Errors
/// A [`ConfigError`] listing every problem found (syntax errors, unknown keys and wrong value types
/// stop at the first one; semantic problems are all collected).
pub fn parse(text: &str, source: &Path) -> Result<Policy, ConfigError> {
    let lines = LineIndex::new(text);
    let raw: raw::RawPolicy = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (line, col) = e.span().map_or((0, 0), |s| lines.position(text, s.start));
            return Err(ConfigError {
                source: source.to_path_buf(),
                problems: vec![Problem {
                    line,
                    col,
                    message: toml_message(e.message()),
                }],
                omitted: 0,
            });
        }
    };
    validate::validate(raw, text, &lines, source).map_err(|(problems, omitted)| ConfigError {
        source: source.to_path_buf(),
        problems,
        omitted,
    })
}

/// Rewords serde's messages in the policy's terms and adds a hint.
fn toml_message(msg: &str) -> String {
    let mut msg = msg
        .trim_end()
        .replace(", expected i64", ", expected an integer");
    for name in [
        "RawPolicy",
        "RawGateway",
        "RawIdentity",
        "RawTarget",
        "RawTls",
        "RawRule",
    ] {
        msg = msg.replace(&format!("struct {name}"), "a table");
    }
    let msg = msg.as_str();
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        // "unknown field `x`, expected one of `a`, `b`" / "..., there are no fields"
        return match rest.split_once(", expected ") {
            Some((key, valid)) => format!(
                "unknown key {key}; valid keys here: {}",
                valid.trim_start_matches("one of ")
            ),
            None => format!("unknown key {rest}"),
        };
    }
    if msg.starts_with("invalid type: map") {
        return format!("{msg}; write [gateway] once, and [[identity]], [[target]], [[rule]] for each entry (an inline table {{ }} is not a list)");
    }
    if msg.starts_with("invalid type") && msg.ends_with("expected a string") {
        return format!("{msg}; quote the value (durations too: \"10s\")");
    }
    if msg.starts_with("invalid type") && msg.ends_with("expected a sequence") {
        return format!("{msg}; write a list, as in [\"a\", \"b\"]");
    }
    msg.to_owned()
}

/// Byte offset -> 1-based (line, column in characters).
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub(crate) fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let col = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, col + 1)
    }
}

#[cfg(test)]
mod tests;
