//! Session recording as asciicast v2, the format of asciinema 2
//! (<https://docs.asciinema.org/manual/asciicast/v2/>): one file per interactive SSH channel,
//! replayable with `asciinema play` / `asciinema cat`.
//!
//! - [`asciicast`]: the sans-IO encoder. Header and events in, newline-terminated JSON lines out;
//!   times passed in; arbitrary output bytes decoded incrementally ([`utf8`]) and escaped
//!   ([`json`]) so every line is valid JSON whatever the chunking.
//! - [`Recorder`]: the file. Created 0600 under `<data_dir>/recordings/` (0700), never
//!   overwritten, buffered with caller-driven flushes, capped in size, and loud on failure:
//!   an I/O error is returned to the caller, which ends the session (audit first).
//!
//! Where recordings meet the rest of the gateway:
//! - the path is known before the file exists ([`recording_path`]), so the session's audit event
//!   can name it before anything is recorded;
//! - input ("i" events) is recorded only when the policy says so ([`RecordOptions::record_input`]);
//! - output can pass through a filter first ([`OutputFilter`]), for targets with masks;
//! - at the size limit ([`RecordOptions::limit`]) a final marker event is written and the caller
//!   is told ([`Outcome::LimitReached`]); its policy decides whether the session goes on.

pub mod asciicast;
mod error;
pub mod json;
mod recorder;
pub mod utf8;

#[cfg(test)]
mod asciicast_tests;
#[cfg(test)]
mod recorder_tests;

pub use asciicast::{Encoder, Header, Outcome, DEFAULT_LIMIT, LIMIT_MARKER};
pub use error::RecordError;
pub use recorder::{
    recording_path, OutputFilter, RecordOptions, Recorder, RecordingSummary, MAX_SESSION_ID,
    RECORDINGS_DIR,
};
