//! Errors of the [`Relay`](super::Relay): a peer's protocol violation, or a decision that is no
//! longer pending.

use std::fmt;

use super::super::channel::ChannelFault;
use super::super::connection::DecodeError;
use super::{ChannelId, Side, DISCONNECT_PROTOCOL_ERROR};

/// A peer broke the connection protocol. Except for [`RelayError::Unrecognized`], the error is
/// sticky: every later [`Relay::handle`](super::Relay::handle) returns it. The caller sends SSH_MSG_DISCONNECT with
/// [`RelayError::disconnect_reason`] to the side that caused it and tears down both connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// A message number 101–127 (reserved for connection protocol extensions) or any other
    /// number outside 80–100. Not fatal: RFC 4253 §11.4 says to answer SSH_MSG_UNIMPLEMENTED,
    /// which needs the transport's sequence number.
    Unrecognized {
        /// Which side sent it.
        from: Side,
        /// The message number.
        number: u8,
    },
    /// The payload is not a well-formed connection message.
    Malformed {
        /// Which side sent it.
        from: Side,
        /// Why.
        error: DecodeError,
    },
    /// A message names a channel number that is not open on that connection.
    UnknownChannel {
        /// Which side sent it.
        from: Side,
        /// The recipient channel it named.
        channel: u32,
    },
    /// A message on a channel after that side's CLOSE.
    AfterClose {
        /// Which side sent it.
        from: Side,
        /// The channel.
        channel: ChannelId,
    },
    /// Data after that side's EOF.
    DataAfterEof {
        /// Which side sent it.
        from: Side,
        /// The channel.
        channel: ChannelId,
    },
    /// Data past the window we advertised.
    WindowExceeded {
        /// Which side sent it.
        from: Side,
        /// The channel.
        channel: ChannelId,
        /// Bytes sent.
        len: u32,
        /// Window left.
        window: u32,
    },
    /// A WINDOW_ADJUST that would take the window past 2^32 - 1.
    WindowOverflow {
        /// Which side sent it.
        from: Side,
        /// The channel.
        channel: ChannelId,
    },
    /// A reply (REQUEST_SUCCESS/FAILURE, CHANNEL_SUCCESS/FAILURE) with no request waiting for it.
    UnexpectedReply {
        /// Which side sent it.
        from: Side,
        /// The channel (None for a global reply).
        channel: Option<ChannelId>,
    },
    /// OPEN_CONFIRMATION / OPEN_FAILURE for a channel we did not ask that side to open.
    UnexpectedOpenReply {
        /// Which side sent it.
        from: Side,
        /// The recipient channel it named.
        channel: u32,
    },
    /// Too many messages queued behind a shut window or a pending decision.
    QueueFull {
        /// Which side sent them.
        from: Side,
        /// The channel (None for global requests).
        channel: Option<ChannelId>,
    },
}

impl RelayError {
    /// Which side broke the protocol.
    pub fn side(&self) -> Side {
        match self {
            Self::Unrecognized { from, .. }
            | Self::Malformed { from, .. }
            | Self::UnknownChannel { from, .. }
            | Self::AfterClose { from, .. }
            | Self::DataAfterEof { from, .. }
            | Self::WindowExceeded { from, .. }
            | Self::WindowOverflow { from, .. }
            | Self::UnexpectedReply { from, .. }
            | Self::UnexpectedOpenReply { from, .. }
            | Self::QueueFull { from, .. } => *from,
        }
    }

    /// The SSH_MSG_DISCONNECT reason code to send to [`RelayError::side`].
    pub fn disconnect_reason(&self) -> u32 {
        DISCONNECT_PROTOCOL_ERROR
    }

    pub(in crate::proto::ssh) fn channel(
        from: Side,
        channel: ChannelId,
        fault: ChannelFault,
    ) -> RelayError {
        match fault {
            ChannelFault::DataAfterEof => RelayError::DataAfterEof { from, channel },
            ChannelFault::AfterClose => RelayError::AfterClose { from, channel },
            ChannelFault::WindowExceeded { len, window } => RelayError::WindowExceeded {
                from,
                channel,
                len,
                window,
            },
            ChannelFault::WindowOverflow => RelayError::WindowOverflow { from, channel },
            ChannelFault::UnexpectedReply => RelayError::UnexpectedReply {
                from,
                channel: Some(channel),
            },
            ChannelFault::QueueFull => RelayError::QueueFull {
                from,
                channel: Some(channel),
            },
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Downstream => "client",
            Side::Upstream => "upstream",
        })
    }
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unrecognized { from, number } => {
                write!(f, "{from} sent unrecognized message {number}")
            }
            Self::Malformed { from, error } => write!(f, "{from} sent a bad message: {error}"),
            Self::UnknownChannel { from, channel } => {
                write!(f, "{from} named channel {channel}, which is not open")
            }
            Self::AfterClose { from, channel } => {
                write!(f, "{from} sent on {channel} after closing it")
            }
            Self::DataAfterEof { from, channel } => {
                write!(f, "{from} sent data on {channel} after EOF")
            }
            Self::WindowExceeded {
                from,
                channel,
                len,
                window,
            } => write!(
                f,
                "{from} sent {len} bytes on {channel} with only {window} bytes of window"
            ),
            Self::WindowOverflow { from, channel } => {
                write!(f, "{from} grew the window of {channel} past 2^32-1")
            }
            Self::UnexpectedReply {
                from,
                channel: Some(channel),
            } => write!(f, "{from} replied on {channel} with no request pending"),
            Self::UnexpectedReply {
                from,
                channel: None,
            } => write!(f, "{from} sent a global reply with no request pending"),
            Self::UnexpectedOpenReply { from, channel } => {
                write!(
                    f,
                    "{from} answered an open of channel {channel} never asked for"
                )
            }
            Self::QueueFull {
                from,
                channel: Some(channel),
            } => write!(f, "{from} queued too many messages on {channel}"),
            Self::QueueFull {
                from,
                channel: None,
            } => write!(f, "{from} queued too many global requests"),
        }
    }
}

impl std::error::Error for RelayError {}

/// Why [`Relay::decide`](super::Relay::decide) did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecideError {
    /// The ticket was already answered, or its channel has closed meanwhile.
    NotPending,
}

impl fmt::Display for DecideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no decision is pending for this ticket")
    }
}

impl std::error::Error for DecideError {}
