//! The hook where terminal recording plugs in: the session calls an [`Observer`] with every byte
//! relayed on a channel (input only if the target records input), every resize, and the
//! channel's end. The asciicast writer implements it; until then [`NoRecording`] does nothing.

use std::time::Instant;

use crate::proto::ssh::connection::TerminalSize;
use crate::proto::ssh::relay::ChannelId;

/// Sees a session's channel data for recording. Calls come in relay order; `at` is when the
/// session loop handled the data.
pub(super) trait Observer: Send + Sync {
    /// Data from upstream to the client (stdout and stderr).
    fn output(&mut self, channel: ChannelId, at: Instant, bytes: &[u8]);
    /// Data from the client to upstream.
    fn input(&mut self, channel: ChannelId, at: Instant, bytes: &[u8]);
    /// The client's terminal changed size.
    fn resize(&mut self, channel: ChannelId, at: Instant, size: TerminalSize);
    /// The channel is closed both ways.
    fn finish(&mut self, channel: ChannelId, at: Instant);
}

/// Records nothing.
pub(super) struct NoRecording;

impl Observer for NoRecording {
    fn output(&mut self, _: ChannelId, _: Instant, _: &[u8]) {}
    fn input(&mut self, _: ChannelId, _: Instant, _: &[u8]) {}
    fn resize(&mut self, _: ChannelId, _: Instant, _: TerminalSize) {}
    fn finish(&mut self, _: ChannelId, _: Instant) {}
}
