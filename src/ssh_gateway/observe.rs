//! The hook where terminal recording plugs in: the session tells an [`Observer`] when a channel
//! asks for a pty and when a shell or exec starts on it, then calls it with every byte relayed on
//! the channel (input only if the target records input), every resize, and the channel's end.
//! [`super::recording::Recordings`] records to asciicast files.
//!
//! The observer never does async work itself: what must reach the audit log, and recordings
//! that are ready to be closed (which syncs the file), wait in it until the session takes them
//! ([`Observer::take_reports`]), and the session runs them from its own loop.

use std::time::Instant;

use crate::audit::Event as AuditEvent;
use crate::proto::ssh::connection::TerminalSize;
use crate::proto::ssh::relay::ChannelId;

use super::recording::{Closing, Plan};

/// What became of [`Observer::start`].
pub(super) enum Started {
    /// The channel is not recorded (an exec without a pty, or nothing is recorded at all).
    NotRecorded,
    /// The recording exists; `event` (naming its file) must be durable in the audit log before
    /// the channel runs.
    Recording {
        /// `recording_started`.
        event: AuditEvent,
    },
    /// The recording could not be created: the channel must not run. `event` says why (audit
    /// it); `message` is for the client's stderr.
    Failed {
        /// `recording_failed`.
        event: AuditEvent,
        /// One line for the client, newline included.
        message: String,
    },
}

/// What an observer hands back to the session's loop.
pub(super) enum Report {
    /// An event for the audit log.
    Audit(AuditEvent),
    /// A recording to close (blocking: it syncs the file); its result is audited.
    Close(Box<Closing>),
}

/// Sees a session's channel data for recording. Calls come in relay order; `at` is when the
/// session loop handled the data.
pub(super) trait Observer: Send + Sync {
    /// The client's pty-req on `channel` was allowed: the terminal a later shell or exec runs in.
    fn pty(&mut self, channel: ChannelId, size: TerminalSize, term: &[u8]);
    /// A shell (`command` None) or an exec (`command`) was allowed on `channel` and is about to
    /// run: start recording it if `plan` says so. Called before the request is forwarded, so no
    /// output of the channel is relayed before the recording exists.
    fn start(
        &mut self,
        channel: ChannelId,
        at: Instant,
        command: Option<&str>,
        plan: &Plan,
    ) -> Started;
    /// Data from upstream to the client (stdout and stderr).
    fn output(&mut self, channel: ChannelId, at: Instant, bytes: &[u8]);
    /// Data from the client to upstream.
    fn input(&mut self, channel: ChannelId, at: Instant, bytes: &[u8]);
    /// The client's terminal changed size.
    fn resize(&mut self, channel: ChannelId, at: Instant, size: TerminalSize);
    /// The channel is closed both ways.
    fn finish(&mut self, channel: ChannelId, at: Instant);
    /// The session is ending (closed, killed, failed): every recording still open ends at `at`.
    fn end(&mut self, at: Instant);
    /// When [`handle_timeout`](Observer::handle_timeout) must be called next (buffered recording
    /// data to flush, masked output held back to release).
    fn poll_timeout(&self) -> Option<Instant>;
    /// Flushes what is due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// What waits for the session: audit events and recordings to close, oldest first.
    fn take_reports(&mut self) -> Vec<Report>;
    /// Set once a recording can't go on (a write failed, the size limit was reached): why. The
    /// session must then end without relaying anything more to the client.
    fn halted(&self) -> Option<&str>;
}
