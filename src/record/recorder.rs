//! The recording file: [`Recorder`] owns one `.cast` file and drives an [`Encoder`] into it.
//!
//! This is the only part of `record` that does I/O. It still reads no clock: every call takes the
//! session time from the caller, which also decides when to flush ([`Recorder::flush_deadline`] /
//! [`Recorder::maybe_flush`]), so the gateway's one timer per connection drives it.
//!
//! Failure is loud: the first write or flush error is returned and then returned again by every
//! later call (sticky), so the gateway can audit it and end the session rather than keep a session
//! running that is no longer recorded.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::asciicast::{Encoder, Header, Outcome, DEFAULT_LIMIT};
use super::error::RecordError;

/// Directory under the gateway's data dir that holds the recordings (mode 0700).
pub const RECORDINGS_DIR: &str = "recordings";

/// Longest session id accepted in a file name.
pub const MAX_SESSION_ID: usize = 128;

/// Scratch buffers larger than this are shrunk after use, so one huge event does not pin memory
/// for the rest of the session.
const SCRATCH_KEEP: usize = 1 << 20;

/// How a recording is made. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOptions {
    /// Cap on the file's size in bytes (default [`DEFAULT_LIMIT`], 1 GiB); see
    /// [`Outcome::LimitReached`].
    pub limit: u64,
    /// Record what the client types ("i" events). Off by default: keystrokes include passwords
    /// typed at prompts, so only a policy that asks for it turns this on.
    pub record_input: bool,
    /// Longest session time buffered data may wait before [`Recorder::maybe_flush`] writes it
    /// out (default 1 s).
    pub flush_interval: Duration,
    /// Most bytes buffered before they are written out (default 64 KiB); also the size of the
    /// write buffer, so memory per recorder stays bounded by it.
    pub flush_bytes: usize,
}

impl Default for RecordOptions {
    fn default() -> RecordOptions {
        RecordOptions {
            limit: DEFAULT_LIMIT,
            record_input: false,
            flush_interval: Duration::from_secs(1),
            flush_bytes: 64 * 1024,
        }
    }
}

/// A transformation applied to output bytes before they are recorded, e.g. the masking engine for
/// a target with masks. Only output ("o") passes through it; input is recorded as typed (or not at
/// all, see [`RecordOptions::record_input`]).
///
/// A filter may hold bytes back (a masker needs a look-ahead to see a whole secret) and must give
/// them up in [`finish`](OutputFilter::finish). Closures `FnMut(&[u8], &mut Vec<u8>)` are filters
/// that hold nothing back.
///
/// `Sync` because a recorder lives in the SSH session, which the session's task holds by
/// reference across awaits (so the session, and everything in it, must be `Sync`).
pub trait OutputFilter: Send + Sync {
    /// Appends the filtered form of `input` to `out`.
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>);

    /// Appends whatever is still held back; called once, when the recording ends.
    fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = out;
    }
}

impl<F: FnMut(&[u8], &mut Vec<u8>) + Send + Sync> OutputFilter for F {
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self(input, out);
    }
}

/// What a finished recording amounts to, for the session's closing audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether it was cut at the size limit.
    pub limit_reached: bool,
}

/// The path of the recording of `channel` in `session`: `<data_dir>/recordings/<session>-<channel>.cast`.
///
/// Computable before the file exists, so the audit event that names it can be written first.
///
/// # Errors
///
/// [`RecordError::InvalidSessionId`] unless `session` is 1 to [`MAX_SESSION_ID`] characters of
/// `[A-Za-z0-9_.-]` not starting with a dot: the id becomes a file name, so it must not be able to
/// name another directory.
pub fn recording_path(
    data_dir: &Path,
    session: &str,
    channel: u32,
) -> Result<PathBuf, RecordError> {
    let valid = !session.is_empty()
        && session.len() <= MAX_SESSION_ID
        && !session.starts_with('.')
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        return Err(RecordError::InvalidSessionId);
    }
    Ok(data_dir
        .join(RECORDINGS_DIR)
        .join(format!("{session}-{channel}.cast")))
}

/// One channel's recording file.
///
/// Call order: [`create`](Recorder::create); then [`output`](Recorder::output),
/// [`input`](Recorder::input), [`resize`](Recorder::resize), [`marker`](Recorder::marker) as the
/// session goes, with [`maybe_flush`](Recorder::maybe_flush) whenever
/// [`flush_deadline`](Recorder::flush_deadline) passes; then [`finish`](Recorder::finish).
/// Every time is the session time since the recording started (the same clock for all calls).
/// Dropping a recorder without `finish` flushes what it can and ignores errors.
pub struct Recorder {
    path: PathBuf,
    file: BufWriter<File>,
    encoder: Encoder,
    options: RecordOptions,
    filter: Option<Box<dyn OutputFilter>>,
    /// Encoded lines of the current call.
    line: Vec<u8>,
    /// Output after the filter.
    filtered: Vec<u8>,
    /// Session time of the last flush.
    last_flush: Duration,
    /// Bytes handed to the write buffer since the last flush.
    unflushed: usize,
    /// The first I/O error, returned by every call after it.
    failed: Option<RecordError>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("bytes", &self.encoder.bytes_written())
            .field("filter", &self.filter.is_some())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Creates `<data_dir>/recordings/<session>-<channel>.cast` (mode 0600; the directory is
    /// created with mode 0700 if missing) and writes the header, flushed at once so the file is
    /// a valid (empty) recording from the start.
    ///
    /// # Errors
    ///
    /// [`RecordError::InvalidSessionId`] (see [`recording_path`]), [`RecordError::AlreadyExists`]
    /// (a recording is never overwritten, nor a symlink followed), [`RecordError::NotADirectory`],
    /// [`RecordError::Io`].
    pub fn create(
        data_dir: &Path,
        session: &str,
        channel: u32,
        header: &Header,
        options: RecordOptions,
    ) -> Result<Recorder, RecordError> {
        let path = recording_path(data_dir, session, channel)?;
        let dir = data_dir.join(RECORDINGS_DIR);
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            Ok(()) => {}
            Err(e) => return Err(RecordError::io("create directory", &dir, &e)),
        }
        if !dir.is_dir() {
            return Err(RecordError::NotADirectory { path: dir });
        }
        // create_new is O_CREAT|O_EXCL: fails if anything (a file, a symlink) is at the path.
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RecordError::AlreadyExists { path });
            }
            Err(e) => return Err(RecordError::io("create", &path, &e)),
        };
        let mut recorder = Recorder::start(path, file, header, options)?;
        recorder.flush(Duration::ZERO)?;
        Ok(recorder)
    }

    /// A recorder writing to `file` (already open), with the header buffered but not flushed.
    pub(super) fn start(
        path: PathBuf,
        file: File,
        header: &Header,
        options: RecordOptions,
    ) -> Result<Recorder, RecordError> {
        let mut line = Vec::new();
        let encoder = Encoder::new(header, options.limit, &mut line);
        let mut recorder = Recorder {
            file: BufWriter::with_capacity(options.flush_bytes.max(1), file),
            path,
            encoder,
            options,
            filter: None,
            line,
            filtered: Vec::new(),
            last_flush: Duration::ZERO,
            unflushed: 0,
            failed: None,
        };
        recorder.write_line()?;
        Ok(recorder)
    }

    /// Sends every later output chunk through `filter` before it is recorded.
    pub fn set_output_filter(&mut self, filter: Box<dyn OutputFilter>) {
        self.filter = Some(filter);
    }

    /// The recording file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes recorded so far (header included), buffered or not: the file's size after a flush.
    pub fn bytes_written(&self) -> u64 {
        self.encoder.bytes_written()
    }

    /// The size cap this recording was created with ([`RecordOptions::limit`]).
    pub fn limit(&self) -> u64 {
        self.options.limit
    }

    /// Bytes waiting in the write buffer.
    pub fn unflushed_bytes(&self) -> usize {
        self.unflushed
    }

    /// When the buffered data must be flushed: `None` while nothing is buffered. The caller arms
    /// its timer for this session time and calls [`maybe_flush`](Recorder::maybe_flush) then.
    pub fn flush_deadline(&self) -> Option<Duration> {
        (self.unflushed > 0).then(|| self.last_flush.saturating_add(self.options.flush_interval))
    }

    /// Records output (SSH channel data from the target) at session time `at`, through the output
    /// filter if one is set.
    ///
    /// # Errors
    ///
    /// [`RecordError::Io`] if writing failed now or earlier: the recording is broken, and the
    /// caller should end the session (after auditing why).
    pub fn output(&mut self, at: Duration, data: &[u8]) -> Result<Outcome, RecordError> {
        self.check()?;
        let outcome = match &mut self.filter {
            Some(filter) => {
                self.filtered.clear();
                filter.filter(data, &mut self.filtered);
                let outcome = self.encoder.output(at, &self.filtered, &mut self.line);
                shrink(&mut self.filtered);
                outcome
            }
            None => self.encoder.output(at, data, &mut self.line),
        };
        self.after_event(at)?;
        Ok(outcome)
    }

    /// Records input (channel data from the client) at `at` if [`RecordOptions::record_input`]
    /// is on; otherwise returns [`Outcome::Skipped`].
    ///
    /// # Errors
    ///
    /// As [`output`](Recorder::output).
    pub fn input(&mut self, at: Duration, data: &[u8]) -> Result<Outcome, RecordError> {
        self.check()?;
        if !self.options.record_input {
            return Ok(Outcome::Skipped);
        }
        let outcome = self.encoder.input(at, data, &mut self.line);
        self.after_event(at)?;
        Ok(outcome)
    }

    /// Records a terminal resize (SSH "window-change") at `at`.
    ///
    /// # Errors
    ///
    /// As [`output`](Recorder::output).
    pub fn resize(&mut self, at: Duration, cols: u32, rows: u32) -> Result<Outcome, RecordError> {
        self.check()?;
        let outcome = self.encoder.resize(at, cols, rows, &mut self.line);
        self.after_event(at)?;
        Ok(outcome)
    }

    /// Records a marker event with `label` at `at` (e.g. "approval granted").
    ///
    /// # Errors
    ///
    /// As [`output`](Recorder::output).
    pub fn marker(&mut self, at: Duration, label: &str) -> Result<Outcome, RecordError> {
        self.check()?;
        let outcome = self.encoder.marker(at, label, &mut self.line);
        self.after_event(at)?;
        Ok(outcome)
    }

    /// Flushes the write buffer to the file if it has waited [`RecordOptions::flush_interval`]
    /// of session time since the last flush, or holds [`RecordOptions::flush_bytes`].
    ///
    /// # Errors
    ///
    /// As [`output`](Recorder::output).
    pub fn maybe_flush(&mut self, now: Duration) -> Result<(), RecordError> {
        self.check()?;
        let due = self
            .flush_deadline()
            .is_some_and(|deadline| now >= deadline);
        if due || self.unflushed >= self.options.flush_bytes {
            self.flush(now)?;
        }
        Ok(())
    }

    /// Ends the recording at `at`: what the output filter held back is recorded, an incomplete
    /// trailing character becomes U+FFFD, everything is written and the file is synced to disk.
    ///
    /// # Errors
    ///
    /// As [`output`](Recorder::output); also a failed `fsync`.
    pub fn finish(mut self, at: Duration) -> Result<RecordingSummary, RecordError> {
        self.check()?;
        if let Some(mut filter) = self.filter.take() {
            self.filtered.clear();
            filter.finish(&mut self.filtered);
            let _ = self.encoder.output(at, &self.filtered, &mut self.line);
        }
        let _ = self.encoder.finish(at, &mut self.line);
        self.write_line()?;
        self.flush(at)?;
        if let Err(e) = self.file.get_ref().sync_all() {
            return Err(self.fail(RecordError::io("sync", &self.path, &e)));
        }
        Ok(RecordingSummary {
            path: self.path.clone(),
            bytes: self.encoder.bytes_written(),
            limit_reached: self.encoder.is_stopped(),
        })
    }

    fn check(&self) -> Result<(), RecordError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn after_event(&mut self, at: Duration) -> Result<(), RecordError> {
        self.write_line()?;
        self.maybe_flush(at)
    }

    /// Hands the encoded lines to the write buffer (which writes through to the file when full).
    fn write_line(&mut self) -> Result<(), RecordError> {
        if self.line.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.line);
        self.unflushed = self.unflushed.saturating_add(self.line.len());
        self.line.clear();
        shrink(&mut self.line);
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(RecordError::io("write", &self.path, &e))),
        }
    }

    fn flush(&mut self, now: Duration) -> Result<(), RecordError> {
        if let Err(e) = self.file.flush() {
            return Err(self.fail(RecordError::io("write", &self.path, &e)));
        }
        self.unflushed = 0;
        self.last_flush = now.max(self.last_flush);
        Ok(())
    }

    fn fail(&mut self, error: RecordError) -> RecordError {
        self.failed = Some(error.clone());
        error
    }
}

fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > SCRATCH_KEEP {
        buf.clear();
        buf.shrink_to(SCRATCH_KEEP / 16);
    }
}
