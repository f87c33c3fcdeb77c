//! Per-channel data filters: code that sits in a relayed channel's data path, sees every byte of
//! plain channel data (CHANNEL_DATA, not extended data) in both directions, decides what is handed
//! on, and may answer the sender itself. The SFTP read-only mode is one: it forwards the client's
//! read requests and answers its write requests with `SSH_FX_PERMISSION_DENIED` without
//! forwarding them.
//!
//! A filter is installed with [`Relay::set_filter`](super::relay::Relay::set_filter) (for a
//! subsystem: before the caller allows the `subsystem` request, so no byte of the subsystem's
//! stream gets past it). From then on the relay hands the channel's data to
//! [`ChannelFilter::data`] instead of queueing it, and queues what the filter returns:
//!
//! - `forward` toward the other side, as relayed data: it takes that side's window and returns
//!   window to the sender only once it is handed on, like unfiltered data;
//! - `reply` back toward the sender, as the gateway's own data: it takes the sender's window (the
//!   window the sender gave us), not the other side's;
//! - `notes` as [`Event::Filtered`](super::relay::Event::Filtered), in order.
//!
//! # Contract
//!
//! `forward` and `reply` are made of whole units of the filtered protocol (SFTP packets), so
//! the relay can queue them one after the other without ever interleaving two units: a reply
//! never lands inside a forwarded packet. `forward` consists of input bytes only (a filter
//! never forwards more than it was given); what it neither forwards nor holds back
//! ([`ChannelFilter::held`]) counts as dropped, and the relay returns that window to the sender
//! at once. The relay checks this bookkeeping on every call: a filter that forwards more than
//! it was given fails the channel.
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
    /// Bytes to hand on to the other side: whole units, taken from the input in order.
    pub forward: Vec<u8>,
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
    /// The filter forwarded more bytes than it was given (a bug in the filter, caught by the
    /// relay's window bookkeeping).
    Contract {
        /// Bytes the filter had (held before the call plus the input).
        had: usize,
        /// Bytes it forwarded plus the bytes it still holds.
        kept: usize,
    },
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Sftp(e) => write!(f, "{e}"),
            FilterError::Contract { had, kept } => write!(
                f,
                "channel filter kept {kept} bytes out of the {had} it was given"
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

    /// Bytes from `from` the filter holds back (an incomplete unit, waiting for the rest).
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
