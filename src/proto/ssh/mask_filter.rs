//! The mask filter: a [`ChannelFilter`] that passes everything the target writes on a session
//! channel (stdout as CHANNEL_DATA, stderr as EXTENDED_DATA) through the `[[mask]]` detectors
//! before the client sees it. What the client sends is handed on as it is.
//!
//! Each output stream has its own [`MaskChain`], so a secret is found whole in stdout even when
//! the program writes to stderr in between; the order of bytes within each stream is kept, the
//! interleaving of the two streams only as far as the chains release them (a terminal merges
//! both into one stream on the target's pty anyway, so with a pty everything is stdout).
//!
//! A chain holds back the last few KiB it has seen until it knows no secret starts there (see
//! [`crate::mask::StreamMasker`]); [`ChannelFilter::flush`] decides and releases them. The relay
//! flushes at EOF, CLOSE and exit status; the caller flushes when the stream has been idle.
//!
//! This module contains no networking code, no clock and no randomness.

use std::sync::Arc;

use super::filter::{ChannelFilter, FilterError, FilterOutput};
use super::relay::Side;
use crate::mask::{MaskChain, Masker};

/// Masks a session channel's output. See the module doc.
#[derive(Debug)]
pub struct MaskFilter {
    stdout: MaskChain,
    stderr: MaskChain,
}

impl MaskFilter {
    /// A filter masking with every masker in `masks`, in order; None when `masks` is empty
    /// (nothing to mask: the channel needs no filter).
    pub fn new(masks: &[Arc<Masker>]) -> Option<MaskFilter> {
        Some(MaskFilter {
            stdout: MaskChain::new(masks)?,
            stderr: MaskChain::new(masks)?,
        })
    }
}

impl ChannelFilter for MaskFilter {
    fn data(&mut self, from: Side, data: &[u8], out: &mut FilterOutput) -> Result<(), FilterError> {
        match from {
            Side::Upstream => self.stdout.feed(data, &mut out.forward),
            Side::Downstream => out.forward.extend_from_slice(data),
        }
        Ok(())
    }

    fn stderr(
        &mut self,
        from: Side,
        data: &[u8],
        out: &mut FilterOutput,
    ) -> Result<(), FilterError> {
        match from {
            Side::Upstream => self.stderr.feed(data, &mut out.forward_stderr),
            Side::Downstream => out.forward_stderr.extend_from_slice(data),
        }
        Ok(())
    }

    fn flush(&mut self, from: Side, out: &mut FilterOutput) -> Result<(), FilterError> {
        if from == Side::Upstream {
            self.stdout.finish(&mut out.forward);
            self.stderr.finish(&mut out.forward_stderr);
        }
        Ok(())
    }

    fn held(&self, from: Side) -> usize {
        match from {
            Side::Upstream => self.stdout.held().saturating_add(self.stderr.held()),
            Side::Downstream => 0,
        }
    }
}
