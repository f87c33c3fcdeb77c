//! asciicast v2 encoder, sans-IO: header and events in, lines of bytes out.
//!
//! The format, from <https://docs.asciinema.org/manual/asciicast/v2/>: "asciicast v2 [...] is
//! based on newline-delimited JSON. First line, encoded as JSON object, represents the header,
//! which contains metadata, such as initial terminal size, timestamp, etc. All following lines
//! form the event stream. Each line represents a separate event, encoded as 3-element JSON
//! array." An event is `[time, code, data]`: "time (float) - indicates when event happened,
//! represented as the number of seconds since the beginning of the recording session", "code
//! (string) - specifies type of event", "data (any) - event specific data".
//!
//! This module contains no file, no clock and no global state. The caller passes the time of
//! every event as a [`Duration`] since the session started and receives the bytes to append to
//! the file; [`super::Recorder`] is the thin I/O layer on top.
//!
//! Output bytes are not text: [`Encoder`] decodes each stream (output, input) with its own
//! [`Utf8Stream`], so a character split across two SSH packets is written whole in the later
//! event, and invalid bytes become U+FFFD, as asciinema's recorder does.

use std::time::Duration;

use super::json;
use super::utf8::{Utf8Stream, REPLACEMENT};

/// Terminal size used when the client sends none (or zero): the size asciinema assumes too.
pub const DEFAULT_COLS: u32 = 80;
/// See [`DEFAULT_COLS`].
pub const DEFAULT_ROWS: u32 = 24;

/// Default cap on one recording file: 1 GiB.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

/// Text of the marker event written when the size limit is reached.
pub const LIMIT_MARKER: &str = "portcullis: recording stopped, size limit reached";

/// What the recording header says about the session. Strings come from the client (TERM from the
/// pty-req) and are escaped, never trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Initial terminal width in columns (0 means unknown: written as [`DEFAULT_COLS`]).
    pub cols: u32,
    /// Initial terminal height in rows (0 means unknown: written as [`DEFAULT_ROWS`]).
    pub rows: u32,
    /// Unix time (seconds) at which the session started.
    pub timestamp: u64,
    /// The client's TERM (pty-req "TERM environment variable value").
    pub term: String,
    /// The target's login shell, when known.
    pub shell: Option<String>,
    /// The command for an exec session (asciicast "command": "Command that was recorded").
    pub command: Option<String>,
    /// A human title, e.g. "alice@web-prod".
    pub title: Option<String>,
}

impl Header {
    /// A header with the given size, start time and TERM, and no optional fields.
    pub fn new(cols: u32, rows: u32, timestamp: u64, term: impl Into<String>) -> Header {
        Header {
            cols,
            rows,
            timestamp,
            term: term.into(),
            shell: None,
            command: None,
            title: None,
        }
    }
}

/// What became of one event.
#[must_use]
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The event was encoded (possibly without its last bytes, held as an incomplete character
    /// for the next event of the same stream).
    Recorded,
    /// Nothing to write: empty data, only part of a character, a resize to the current size, or
    /// input while input recording is off.
    Skipped,
    /// This event would have taken the recording past its size limit: it was not recorded, a
    /// final marker event ([`LIMIT_MARKER`]) was, and nothing more will be. Returned once; the
    /// caller's policy decides whether the session goes on unrecorded or is cut.
    LimitReached,
    /// The limit was reached earlier; nothing was recorded.
    Stopped,
}

/// Which stream an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Output,
    Input,
}

impl Stream {
    /// asciicast v2 event codes: "o - data written to a terminal", "i - data read from a
    /// terminal".
    fn code(self) -> &'static str {
        match self {
            Stream::Output => "o",
            Stream::Input => "i",
        }
    }
}

/// The asciicast v2 encoder for one channel's recording.
///
/// Call order: [`Encoder::new`] (writes the header line), then any number of
/// [`output`](Encoder::output) / [`input`](Encoder::input) / [`resize`](Encoder::resize) /
/// [`marker`](Encoder::marker), then [`finish`](Encoder::finish). Each call appends zero or more
/// complete lines to `out` and never anything else, so `out` can be written to the file as it is.
///
/// Times never go backwards in the file: an event time earlier than the previous one is written
/// as the previous one (players expect a non-decreasing event stream).
#[derive(Debug)]
pub struct Encoder {
    output: Utf8Stream,
    input: Utf8Stream,
    cols: u32,
    rows: u32,
    last: Duration,
    /// Bytes produced so far, header included.
    written: u64,
    limit: u64,
    stopped: bool,
}

impl Encoder {
    /// Starts a recording: appends the header line to `out`.
    ///
    /// `limit` caps the recording's size in bytes, header included: the event that would cross
    /// it is replaced by a marker event, and the file never grows past `limit` (unless the header
    /// and the marker alone are larger than `limit`: they are always written).
    pub fn new(header: &Header, limit: u64, out: &mut Vec<u8>) -> Encoder {
        let cols = nonzero_or(header.cols, DEFAULT_COLS);
        let rows = nonzero_or(header.rows, DEFAULT_ROWS);
        let start = out.len();
        // asciicast v2 header: "version - Format version number. Must be 2. Integer.", "width -
        // Initial terminal width, i.e number of columns. Integer.", "height - [...] number of
        // rows. Integer.", "timestamp - Unix timestamp of the beginning of the recording session.
        // Integer.", "env - Map of captured environment variables. Object (String -> String)."
        out.extend_from_slice(
            format!(
                "{{\"version\": 2, \"width\": {cols}, \"height\": {rows}, \"timestamp\": {}",
                header.timestamp
            )
            .as_bytes(),
        );
        out.extend_from_slice(b", \"env\": {\"TERM\": ");
        json::push_string(out, &header.term);
        if let Some(shell) = &header.shell {
            out.extend_from_slice(b", \"SHELL\": ");
            json::push_string(out, shell);
        }
        out.push(b'}');
        if let Some(command) = &header.command {
            out.extend_from_slice(b", \"command\": ");
            json::push_string(out, command);
        }
        if let Some(title) = &header.title {
            out.extend_from_slice(b", \"title\": ");
            json::push_string(out, title);
        }
        out.extend_from_slice(b"}\n");
        Encoder {
            output: Utf8Stream::new(),
            input: Utf8Stream::new(),
            cols,
            rows,
            last: Duration::ZERO,
            written: len_u64(out.len().saturating_sub(start)),
            limit,
            stopped: false,
        }
    }

    /// Bytes produced so far (header and events): the size of the file once `out` is written.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Has the size limit been reached (the marker written, nothing recorded since)?
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The terminal size as last recorded (header, then resizes).
    pub fn size(&self) -> (u32, u32) {
        (self.cols, self.rows)
    }

    /// Records bytes the target wrote to the terminal (an "o" event) at `at` since the start.
    pub fn output(&mut self, at: Duration, data: &[u8], out: &mut Vec<u8>) -> Outcome {
        self.data_event(Stream::Output, at, data, out)
    }

    /// Records bytes the client typed (an "i" event) at `at` since the start.
    pub fn input(&mut self, at: Duration, data: &[u8], out: &mut Vec<u8>) -> Outcome {
        self.data_event(Stream::Input, at, data, out)
    }

    /// Records a terminal resize (an "r" event: "data is in the format `{COLS}x{ROWS}`").
    ///
    /// RFC 4254, section 6.7 (window-change): "Zero dimension parameters MUST be ignored." A zero
    /// keeps the current value; a resize to the current size is skipped.
    pub fn resize(&mut self, at: Duration, cols: u32, rows: u32, out: &mut Vec<u8>) -> Outcome {
        let cols = nonzero_or(cols, self.cols);
        let rows = nonzero_or(rows, self.rows);
        if (cols, rows) == (self.cols, self.rows) {
            return if self.stopped {
                Outcome::Stopped
            } else {
                Outcome::Skipped
            };
        }
        let outcome = self.line(at, "r", out, |line| {
            line.extend_from_slice(format!("\"{cols}x{rows}\"").as_bytes());
        });
        if outcome == Outcome::Recorded {
            self.cols = cols;
            self.rows = rows;
        }
        outcome
    }

    /// Records a marker (an "m" event: "data is a marker label"), e.g. a policy decision.
    pub fn marker(&mut self, at: Duration, label: &str, out: &mut Vec<u8>) -> Outcome {
        self.line(at, "m", out, |line| json::push_string(line, label))
    }

    /// Ends the recording: an incomplete character held on either stream is written as one
    /// U+FFFD event. Later calls record nothing new (the streams are empty).
    pub fn finish(&mut self, at: Duration, out: &mut Vec<u8>) -> Outcome {
        if self.stopped {
            return Outcome::Stopped;
        }
        let mut result = Outcome::Skipped;
        for stream in [Stream::Output, Stream::Input] {
            let decoder = match stream {
                Stream::Output => &mut self.output,
                Stream::Input => &mut self.input,
            };
            let mut pending = false;
            decoder.finish(|_| pending = true);
            if pending {
                let outcome = self.line(at, stream.code(), out, |line| {
                    json::push_string(line, REPLACEMENT);
                });
                // Report the limit if either line hit it.
                if result != Outcome::LimitReached {
                    result = outcome;
                }
            }
        }
        result
    }

    fn data_event(
        &mut self,
        stream: Stream,
        at: Duration,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Outcome {
        if self.stopped {
            return Outcome::Stopped;
        }
        let at = self.clamp(at);
        let decoder = match stream {
            Stream::Output => &mut self.output,
            Stream::Input => &mut self.input,
        };
        // Decode straight into the line being built; if nothing came out (empty data, or only the
        // start of a character), the line is taken back.
        let start = out.len();
        push_event_prefix(out, at, stream.code());
        out.push(b'"');
        let body_start = out.len();
        decoder.decode(data, |text| json::push_string_body(out, text));
        if out.len() == body_start {
            out.truncate(start);
            return Outcome::Skipped;
        }
        out.extend_from_slice(b"\"]\n");
        self.commit(at, start, out)
    }

    /// Builds one event line `[time, "code", <data>]\n` with `data` writing the JSON value.
    fn line(
        &mut self,
        at: Duration,
        code: &str,
        out: &mut Vec<u8>,
        data: impl FnOnce(&mut Vec<u8>),
    ) -> Outcome {
        if self.stopped {
            return Outcome::Stopped;
        }
        let start = out.len();
        let at = self.clamp(at);
        push_event_prefix(out, at, code);
        data(out);
        out.extend_from_slice(b"]\n");
        self.commit(at, start, out)
    }

    /// Keeps the line `out[start..]` if it fits under the limit with room for the marker;
    /// otherwise replaces it with the marker and stops.
    fn commit(&mut self, at: Duration, start: usize, out: &mut Vec<u8>) -> Outcome {
        let line_len = len_u64(out.len().saturating_sub(start));
        let fits = self
            .written
            .checked_add(line_len)
            .and_then(|n| n.checked_add(marker_reserve()))
            .is_some_and(|n| n <= self.limit);
        if fits {
            self.written = self.written.saturating_add(line_len);
            self.last = at;
            return Outcome::Recorded;
        }
        out.truncate(start);
        push_event_prefix(out, at, "m");
        json::push_string(out, LIMIT_MARKER);
        out.extend_from_slice(b"]\n");
        self.written = self
            .written
            .saturating_add(len_u64(out.len().saturating_sub(start)));
        self.last = at;
        self.stopped = true;
        Outcome::LimitReached
    }

    fn clamp(&self, at: Duration) -> Duration {
        at.max(self.last)
    }
}

/// Appends `[<seconds with 6 decimals>, "<code>", ` to `out`.
///
/// The time is printed from the integer seconds and microseconds of the `Duration`, never through
/// a float, so it is exact and never rounds up past a later event's time. asciinema writes
/// `round(ts, 6)`; six decimals is microsecond resolution, which is also what its players use.
fn push_event_prefix(out: &mut Vec<u8>, at: Duration, code: &str) {
    out.extend_from_slice(
        format!("[{}.{:06}, \"{code}\", ", at.as_secs(), at.subsec_micros()).as_bytes(),
    );
}

/// Bytes always kept free for the limit marker: its line is `[`, at most 20 digits of seconds,
/// `.`, 6 digits, `, "m", `, the quoted label, `]\n`.
fn marker_reserve() -> u64 {
    len_u64(1 + 20 + 1 + 6 + 7 + LIMIT_MARKER.len() + 2 + 2)
}

fn nonzero_or(value: u32, fallback: u32) -> u32 {
    if value == 0 {
        fallback
    } else {
        value
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
