//! Per-channel data filters: code that sits in a relayed channel's data path, sees every byte of
//! channel data in both directions (plain CHANNEL_DATA, and the server's stderr), decides what is
//! handed on, and may answer the sender itself. Two exist:
//!
//! - the SFTP filter ([`SftpFilter`]): it audits every packet, and in read-only mode forwards
//!   the client's read requests and answers its write requests with `SSH_FX_PERMISSION_DENIED`
//!   without forwarding them;
//! - the mask filter ([`super::mask_filter::MaskFilter`]): it passes the target's output (stdout
//!   and stderr) through the `[[mask]]` detectors before the client sees it.
//!
//! A filter is installed with [`Relay::set_filter`](super::relay::Relay::set_filter) before the
//! caller allows the request that starts the filtered stream (`subsystem`, `exec`, `shell`), so
//! no byte of the stream gets past it. From then on the relay hands the channel's data to
//! [`ChannelFilter::data`] / [`ChannelFilter::stderr`] instead of queueing it, and queues what
//! the filter returns:
//!
//! - `forward` / `forward_stderr` toward the other side, as relayed data;
//! - `reply` back toward the sender, as the gateway's own data: it takes the sender's window (the
//!   window the sender gave us), not the other side's;
//! - `notes` as [`Event::Filtered`](super::relay::Event::Filtered), in order.
//!
//! # Contract
//!
//! `forward`, `forward_stderr` and `reply` are made of whole units of the filtered protocol
//! (SFTP packets; for masking, any bytes), so the relay can queue them one after the other
//! without ever interleaving two units: a reply never lands inside a forwarded packet.
//!
//! Window bookkeeping. Of what the filter had from one side (what it held before the call plus
//! the input), what it still holds ([`ChannelFilter::held`]) is unconsumed; the rest counts as
//! consumed, whatever became of it. The forwarded bytes may be fewer than the consumed ones
//! (SFTP requests answered locally, a long secret masked short) or more (a short secret masked
//! as `[redacted:NAME]`):
//!
//! - the window returned to the sender counts **consumed input bytes**: consumed bytes beyond the
//!   forwarded ones are returned at once; the rest is returned as the forwarded bytes are handed
//!   on to the receiver (in proportion when they are more), so a slow reader still slows the
//!   writer down;
//! - the forwarded bytes take the **receiver's window by their own length**, like any data sent.
//!
//! The relay checks on every call that a filter never holds more than it had, and bounds what
//! a filter's output may queue toward one side (see `MAX_FILTER_QUEUE` in `channel.rs`); a
//! filter that breaks either fails the channel.
//!
//! Idle and end. A filter may hold bytes back waiting for more (an incomplete SFTP packet, the
//! tail a masker must see before it knows no secret starts there). The relay asks it to release
//! them with [`ChannelFilter::flush`] before it forwards the sender's EOF, CLOSE, `exit-status`,
//! `exit-signal` or `eow@openssh.com` (so the order data, EOF, exit status, CLOSE is kept), and
//! when the caller says the stream is idle ([`Relay::flush_filter`](super::relay::Relay::flush_filter)):
//! the relay has no clock, the caller has.
//!
//! Errors are fail-closed: the relay drops the filter, everything it held and the output of the
//! failing call, reports [`Event::FilterFailed`](super::relay::Event::FilterFailed) and closes
//! the channel on both connections.
//!
//! This module contains no networking code, no clock and no randomness.

use std::fmt;

use super::relay::Side;
use super::sftp::{SftpError, SftpEvent, SftpMode, SftpOutput, SftpSession};

/// What a filter made of one piece of channel data.
#[derive(Debug, Default)]
pub struct FilterOutput {
    /// Bytes to hand on to the other side as plain data: whole units, in input order.
    pub forward: Vec<u8>,
    /// Bytes to hand on to the other side as stderr (extended data type 1), in input order.
    /// Queued after `forward` when a call returns both (a flush).
    pub forward_stderr: Vec<u8>,
    /// Bytes to send back to the side the data came from: whole units.
    pub reply: Vec<u8>,
    /// Observations for the caller, in order.
    pub notes: Vec<FilterNote>,
}

/// An observation a filter reports (see [`Event::Filtered`](super::relay::Event::Filtered)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterNote {
    /// One SFTP packet, or a refusal ([`SftpEvent::Denied`]).
    Sftp(SftpEvent),
}

/// Why a filter gave up on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// The SFTP stream could not be followed.
    Sftp(SftpError),
    /// The filter holds more bytes than it was given (a bug in the filter, caught by the
    /// relay's window bookkeeping).
    Contract {
        /// Bytes the filter had (held before the call plus the input).
        had: usize,
        /// Bytes it holds after the call.
        kept: usize,
    },
    /// The filter's output queued toward one side grew past the relay's bound (a mask strategy
    /// that makes output many times longer than its input, read by a slow client).
    OutputTooLarge {
        /// Bytes queued.
        queued: usize,
    },
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Sftp(e) => write!(f, "{e}"),
            FilterError::Contract { had, kept } => write!(
                f,
                "channel filter holds {kept} bytes out of the {had} it was given"
            ),
            FilterError::OutputTooLarge { queued } => write!(
                f,
                "channel filter output grew to {queued} bytes queued for a slow reader"
            ),
        }
    }
}

impl std::error::Error for FilterError {}

impl From<SftpError> for FilterError {
    fn from(e: SftpError) -> Self {
        FilterError::Sftp(e)
    }
}

/// A per-channel data filter. See the module doc for the contract.
pub trait ChannelFilter: fmt::Debug + Send {
    /// Plain channel data that `from` sent, in order.
    ///
    /// # Errors
    /// A [`FilterError`]: the relay closes the channel (fail closed).
    fn data(&mut self, from: Side, data: &[u8], out: &mut FilterOutput) -> Result<(), FilterError>;

    /// Extended data of type stderr that `from` sent, in order. The default hands it on as it
    /// is: a filter that only follows the plain data stream (SFTP) leaves the server's stderr
    /// (sftp-server's log) alone.
    ///
    /// # Errors
    /// A [`FilterError`]: the relay closes the channel (fail closed).
    fn stderr(
        &mut self,
        from: Side,
        data: &[u8],
        out: &mut FilterOutput,
    ) -> Result<(), FilterError> {
        let _ = from;
        out.forward_stderr.extend_from_slice(data);
        Ok(())
    }

    /// Releases what the filter holds from `from` that it can release without more input: the
    /// stream went idle, or ends (EOF, CLOSE, exit status). The default releases nothing (a
    /// filter whose held bytes are an incomplete unit can't hand them on).
    ///
    /// # Errors
    /// A [`FilterError`]: the relay closes the channel (fail closed).
    fn flush(&mut self, from: Side, out: &mut FilterOutput) -> Result<(), FilterError> {
        let _ = (from, out);
        Ok(())
    }

    /// Bytes from `from` the filter holds back (an incomplete unit, waiting for the rest), counting
    /// plain data and stderr.
    fn held(&self, from: Side) -> usize;
}

/// The SFTP filter: every packet is parsed for audit ([`FilterNote::Sftp`]); in
/// [`SftpMode::ReadOnly`] the requests that could change files are answered by the filter with
/// `SSH_FX_PERMISSION_DENIED` and not forwarded. The client is downstream.
#[derive(Debug)]
pub struct SftpFilter {
    session: SftpSession,
}

impl SftpFilter {
    /// A filter for a fresh `subsystem sftp` channel.
    pub fn new(mode: SftpMode) -> SftpFilter {
        SftpFilter {
            session: SftpSession::new(mode),
        }
    }
}

impl ChannelFilter for SftpFilter {
    fn data(&mut self, from: Side, data: &[u8], out: &mut FilterOutput) -> Result<(), FilterError> {
        let mut sftp = SftpOutput::default();
        match from {
            Side::Downstream => {
                self.session.client_data(data, &mut sftp)?;
                out.forward.append(&mut sftp.to_server);
                out.reply.append(&mut sftp.to_client);
            }
            Side::Upstream => {
                self.session.server_data(data, &mut sftp)?;
                out.forward.append(&mut sftp.to_client);
                // The session never answers the server; anything here would be a bug.
                out.reply.append(&mut sftp.to_server);
            }
        }
        out.notes
            .extend(sftp.events.into_iter().map(FilterNote::Sftp));
        Ok(())
    }

    fn held(&self, from: Side) -> usize {
        match from {
            Side::Downstream => self.session.client_held(),
            Side::Upstream => self.session.server_held(),
        }
    }
}
