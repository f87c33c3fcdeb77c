//! The connection-protocol relay between one client connection (downstream) and the gateway's
//! own connection to the target's sshd (upstream), sans-IO.
//!
//! The gateway terminates SSH on both sides, so channel numbers differ between the two
//! connections and nothing can be passed through blindly: every connection-protocol payload one
//! transport decrypts is handed to [`Relay::handle`], and every payload the relay wants sent is
//! taken with [`Relay::poll_transmit`]. Policy, recording and audit see [`Event`]s from
//! [`Relay::poll_event`]; opens and requests that need a decision wait until
//! [`Relay::decide`] is called for them.
//!
//! This module contains no networking code, no clock and no randomness.
//!
//! # Driving it
//!
//! ```text
//! transport(down) --payload--> relay.handle(Downstream, payload)?
//! transport(up)   --payload--> relay.handle(Upstream, payload)?
//! loop { match relay.poll_event() { Some(Event::Decide(d)) => relay.decide(d.ticket(), policy(&d))?, ... } }
//! while let Some(p) = relay.poll_transmit(Downstream) { transport(down).send(p) }   // when writable
//! while let Some(p) = relay.poll_transmit(Upstream)   { transport(up).send(p) }
//! ```
//!
//! Channel data is produced lazily by `poll_transmit`: the relay hands data on (and returns
//! window to its sender) only when the caller takes it, so a caller that stops polling a side
//! whose socket is not writable pushes back all the way to the writer's window.
//!
//! # Filters
//!
//! [`Relay::set_filter`] puts a [`ChannelFilter`] into one channel's data path (the SFTP audit
//! and read-only mode, the masking of a session's output): its data then goes through the
//! filter in both directions, and the filter's own replies go back to the sender as the
//! gateway's data, in whole units and with the window bookkeeping kept exact even when the
//! filter changes the length of what it forwards (see [`super::filter`]). A filter that holds
//! bytes back is flushed before the sender's EOF, CLOSE and exit status, and by the caller when
//! the stream is idle ([`Relay::filters_holding`], [`Relay::flush_filter`]).
//!
//! # Channel numbers
//!
//! The relay numbers each channel once and uses that number ([`ChannelId`]) as its own channel
//! number on both connections. A number is reused only after CLOSE has been sent and received on
//! both connections (RFC 4254 §5.3).
//!
//! # What needs a decision
//!
//! - every CHANNEL_OPEN the relay would forward (the client's `session`, `direct-tcpip`,
//!   `direct-streamlocal@openssh.com` and unknown types; upstream's `forwarded-tcpip`, `x11`,
//!   `auth-agent@openssh.com`, `forwarded-streamlocal@openssh.com` and unknown types). Types sent
//!   the wrong way (a server opening a `session`, a client opening `x11`) are refused with
//!   SSH_OPEN_UNKNOWN_CHANNEL_TYPE, as sshd and ssh do;
//! - every CHANNEL_REQUEST from the client except `window-change` (reported as
//!   [`Event::Resize`]), `keepalive@openssh.com` and `eow@openssh.com`, which are forwarded;
//! - the client's global requests `tcpip-forward`, `cancel-tcpip-forward` and unknown ones.
//!
//! Answered by the relay itself: `keepalive@openssh.com` (REQUEST_FAILURE, as sshd answers; any
//! reply proves liveness), `no-more-sessions@openssh.com` (remembered: later `session` opens from
//! the client are refused), `hostkeys-prove-00@openssh.com` (refused: the client learns host keys
//! from the gateway's own server half, not from here). Upstream's global requests are never
//! forwarded to the client (upstream's `hostkeys-00@openssh.com` announces keys the client does
//! not talk to). Upstream's channel requests that a server sends (`exit-status`, `exit-signal`,
//! `eow@openssh.com`, `keepalive@openssh.com`, `xon-xoff`) are forwarded; any other is refused.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use super::channel::{ChannelFault, Filter, Item, Leg, LegParams, Note, OpenChannel, Owed};
use super::connection::{
    ChannelKind, ChannelOpen, ChannelRequest, ChannelRequestKind, DecodeError, GlobalRequest,
    GlobalRequestKind, Message, OpenConfirmation, OpenFailure, OpenFailureReason, TerminalSize,
    EXTENDED_DATA_STDERR,
};
use super::filter::{ChannelFilter, FilterError, FilterNote};

/// OpenSSH's `CHAN_SES_PACKET_DEFAULT` (channels.h: `(32*1024)`): the maximum packet we advertise.
pub const DEFAULT_MAX_PACKET: u32 = 32 * 1024;
/// OpenSSH's `CHAN_SES_WINDOW_DEFAULT` (channels.h: `(64*CHAN_SES_PACKET_DEFAULT)`, 2 MiB): the
/// smallest window we advertise.
pub const DEFAULT_MIN_WINDOW: u32 = 64 * DEFAULT_MAX_PACKET;
/// Largest window we advertise. When the other side advertised more than 2 MiB to us we pass on
/// up to this much, so a peer tuned for a long fat link is not throttled by the gateway. It is
/// also the most a channel buffers per direction: worst case per relayed connection is
/// `max_channels` × 2 × `max_window` (64 × 2 × 4 MiB = 512 MiB) if every channel's reader stalls.
pub const DEFAULT_MAX_WINDOW: u32 = 4 * 1024 * 1024;
/// Most channels (open, opening or awaiting a decision) per relayed connection.
pub const DEFAULT_MAX_CHANNELS: usize = 64;

/// RFC 4253 §11.1 SSH_DISCONNECT_PROTOCOL_ERROR.
pub const DISCONNECT_PROTOCOL_ERROR: u32 = 2;

/// One of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client's connection to the gateway.
    Downstream,
    /// The gateway's connection to the target's sshd.
    Upstream,
}

impl Side {
    /// The other connection.
    pub fn other(self) -> Side {
        match self {
            Side::Downstream => Side::Upstream,
            Side::Upstream => Side::Downstream,
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Side::Downstream => 0,
            Side::Upstream => 1,
        }
    }
}

/// The relay's number for a channel: its own channel number on both connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub u32);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "channel {}", self.0)
    }
}

/// Which output stream data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// CHANNEL_DATA.
    Stdout,
    /// CHANNEL_EXTENDED_DATA with SSH_EXTENDED_DATA_STDERR.
    Stderr,
}

/// Limits and window sizes.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Smallest window advertised on either connection ([`DEFAULT_MIN_WINDOW`]).
    pub min_window: u32,
    /// Largest window advertised ([`DEFAULT_MAX_WINDOW`]); bounds the bytes buffered per channel
    /// and direction.
    pub max_window: u32,
    /// Maximum packet advertised ([`DEFAULT_MAX_PACKET`]).
    pub max_packet: u32,
    /// Most channels at once ([`DEFAULT_MAX_CHANNELS`]); further opens are refused with
    /// SSH_OPEN_RESOURCE_SHORTAGE.
    pub max_channels: usize,
    /// Whether [`Event::Input`] / [`Event::Output`] carry copies of the data (for terminal
    /// recording). Byte counts are kept either way.
    pub observe_data: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            min_window: DEFAULT_MIN_WINDOW,
            max_window: DEFAULT_MAX_WINDOW,
            max_packet: DEFAULT_MAX_PACKET,
            max_channels: DEFAULT_MAX_CHANNELS,
            observe_data: true,
        }
    }
}

/// Identifies one pending decision; pass it back to [`Relay::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    seq: u64,
    scope: Scope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Open(u32),
    Request(u32),
    Global,
}

/// Something that waits for the caller: a channel open, a channel request or a global request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    ticket: Ticket,
    from: Side,
    channel: Option<ChannelId>,
    payload: Vec<u8>,
}

/// What a [`Decision`] is about, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A CHANNEL_OPEN (its `sender`, window and packet size are the opener's).
    Open(ChannelOpen<'a>),
    /// A CHANNEL_REQUEST (its `recipient` is the relay's [`ChannelId`]).
    Request(ChannelRequest<'a>),
    /// A GLOBAL_REQUEST.
    Global(GlobalRequest<'a>),
}

impl Decision {
    /// The ticket to pass to [`Relay::decide`].
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// Which connection sent it.
    pub fn from(&self) -> Side {
        self.from
    }

    /// The channel it concerns (None for a global request).
    pub fn channel(&self) -> Option<ChannelId> {
        self.channel
    }

    /// The message as received.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The message, decoded.
    ///
    /// # Errors
    /// Never in practice (the relay decoded it before asking); a caller should refuse on error.
    pub fn subject(&self) -> Result<Subject<'_>, DecodeError> {
        match Message::parse(&self.payload)? {
            Message::ChannelOpen(open) => Ok(Subject::Open(open)),
            Message::ChannelRequest(req) => Ok(Subject::Request(req)),
            Message::GlobalRequest(req) => Ok(Subject::Global(req)),
            _ => Err(DecodeError::NotConnectionMessage(
                self.payload.first().copied().unwrap_or(0),
            )),
        }
    }
}

/// The caller's answer to a [`Decision`]. To hold a decision (approval pending), keep the ticket
/// and answer later: nothing behind a held request on its channel is forwarded meanwhile, and
/// the client can send at most one window of data into it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Forward it as received.
    Allow,
    /// Refuse it: OPEN_FAILURE (administratively prohibited) for an open, REQUEST_FAILURE /
    /// CHANNEL_FAILURE for a request (when the sender wants a reply).
    Deny,
    /// For a client's channel request (an `exec` above all): answer success, then send the
    /// client `stderr` as extended data, `exit-status`, EOF and CLOSE; upstream gets nothing but
    /// the channel's CLOSE. For an open, this is [`Verdict::Deny`] with `stderr` as the failure
    /// description; for a global request, [`Verdict::Deny`].
    DenyWithMessage {
        /// Text for the client's stderr (include the trailing newline).
        stderr: Vec<u8>,
        /// The exit status the client's command will report.
        exit_status: u32,
    },
}

impl Verdict {
    /// [`Verdict::DenyWithMessage`].
    pub fn deny_with_message(stderr: impl Into<Vec<u8>>, exit_status: u32) -> Verdict {
        Verdict::DenyWithMessage {
            stderr: stderr.into(),
            exit_status,
        }
    }
}

/// What the relay reports to the caller, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An open or request waits for [`Relay::decide`].
    Decide(Decision),
    /// Both sides confirmed the channel.
    Opened {
        /// The channel.
        channel: ChannelId,
    },
    /// The target refused to open the channel; the refusal was passed on.
    OpenFailed {
        /// The channel number (already free again).
        channel: ChannelId,
        /// The target's reason.
        reason: OpenFailureReason,
    },
    /// Data handed on from the client to upstream (copied only with `observe_data`).
    Input {
        /// The channel.
        channel: ChannelId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Data handed on from upstream to the client (copied only with `observe_data`).
    Output {
        /// The channel.
        channel: ChannelId,
        /// Stdout or stderr.
        stream: Stream,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The client's terminal was resized (window-change handed on).
    Resize {
        /// The channel.
        channel: ChannelId,
        /// The new size.
        size: TerminalSize,
    },
    /// Upstream's exit-status handed on to the client.
    ExitStatus {
        /// The channel.
        channel: ChannelId,
        /// The status.
        status: u32,
    },
    /// Upstream's exit-signal handed on to the client.
    ExitSignal {
        /// The channel.
        channel: ChannelId,
        /// Signal name without "SIG".
        signal: String,
        /// Whether a core was dumped.
        core_dumped: bool,
    },
    /// The channel is closed on both connections and its number is free.
    Closed {
        /// The channel.
        channel: ChannelId,
        /// Data bytes handed on from the client to upstream.
        bytes_in: u64,
        /// Data bytes handed on from upstream to the client.
        bytes_out: u64,
    },
    /// A channel's filter ([`Relay::set_filter`]) observed something in the data `from` sent.
    Filtered {
        /// The channel.
        channel: ChannelId,
        /// Who sent the data.
        from: Side,
        /// What the filter saw or did.
        note: FilterNote,
    },
    /// A channel's filter gave up: the channel is closing on both connections, and none of its
    /// data is relayed any more.
    FilterFailed {
        /// The channel.
        channel: ChannelId,
        /// Why.
        error: FilterError,
    },
    /// A side answered a keepalive sent with [`Relay::send_keepalive`].
    PeerAlive {
        /// Which side.
        side: Side,
    },
}

/// A channel whose filter holds bytes back ([`Relay::filters_holding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterHold {
    /// The channel.
    pub channel: ChannelId,
    /// Bytes its filter has been given so far, both ways: when this stops changing, the stream
    /// is quiet.
    pub fed: u64,
    /// Relayed data bytes queued on the channel, waiting for a reader's window or socket. While
    /// there are any, a quiet stream is not idle: the sender is held back by our reader, and more
    /// of the same output (perhaps the rest of a secret) follows once the reader catches up.
    pub queued: usize,
}

/// Where a channel is in its life, for introspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The opener's CHANNEL_OPEN waits for the caller's decision.
    AwaitingDecision,
    /// Forwarded to the other side; waiting for its confirmation.
    Opening,
    /// Open both ways.
    Open,
    /// EOF received one or both ways, no CLOSE yet.
    HalfClosed,
    /// A CLOSE was queued, sent or received; not yet closed both ways on both connections.
    Closing,
}

/// A CHANNEL_OPEN not yet confirmed by the target.
#[derive(Debug)]
struct PendingOpen {
    ticket: u64,
    origin: Side,
    /// The opener's channel number, window and maximum packet.
    peer: u32,
    window: u32,
    max_packet: u32,
    /// The opener's CHANNEL_OPEN as received.
    payload: Vec<u8>,
    /// The window we advertised to the target.
    advertised: u32,
}

#[derive(Debug)]
enum Slot {
    AwaitingDecision(PendingOpen),
    Opening(PendingOpen),
    Open(Box<OpenChannel>),
}

/// Where a global reply comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Relayed,
    Own,
}

#[derive(Debug)]
enum GlobalItem {
    Send(Vec<u8>),
    Request {
        payload: Vec<u8>,
        want_reply: bool,
        origin: Origin,
    },
    Held {
        ticket: u64,
        payload: Vec<u8>,
        want_reply: bool,
    },
}

#[derive(Debug)]
enum GlobalOwed {
    Undecided(u64),
    Relayed,
    Ready(Vec<u8>),
}

/// Connection-level state toward one side.
#[derive(Debug, Default)]
struct GlobalLeg {
    /// Global requests and replies to send to this side, in order.
    queue: VecDeque<GlobalItem>,
    /// CHANNEL_OPEN and OPEN_FAILURE to send to this side (not ordered with global requests).
    opens: VecDeque<Vec<u8>>,
    /// Replies owed to this side for its global requests, in order.
    owed: VecDeque<GlobalOwed>,
    /// Global requests with want-reply handed on to this side, in order.
    awaited: VecDeque<Origin>,
}

/// The relay for one client connection and its upstream connection. See the module doc.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    channels: BTreeMap<u32, Slot>,
    globals: [GlobalLeg; 2],
    events: VecDeque<Event>,
    next_ticket: u64,
    no_more_sessions: bool,
    /// Where the next round-robin scan starts, per side.
    cursor: [u32; 2],
    failed: Option<RelayError>,
}

const FAILURE_TEXT: &[u8] = b"administratively prohibited";

impl Relay {
    /// A relay with no channels. Out-of-range settings are corrected: the window bounds are
    /// ordered and never below 2 MiB, the maximum packet is between 1 KiB and the smallest window.
    pub fn new(config: RelayConfig) -> Relay {
        let mut config = config;
        config.min_window = config.min_window.max(DEFAULT_MIN_WINDOW);
        config.max_window = config.max_window.max(config.min_window);
        config.max_packet = config.max_packet.clamp(1024, config.min_window);
        Relay {
            config,
            channels: BTreeMap::new(),
            globals: [GlobalLeg::default(), GlobalLeg::default()],
            events: VecDeque::new(),
            next_ticket: 0,
            no_more_sessions: false,
            cursor: [0, 0],
            failed: None,
        }
    }

    /// The next event, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Feeds one decrypted connection-protocol payload (message numbers 80–127) from `from`.
    ///
    /// # Errors
    /// [`RelayError`] when the peer broke the protocol; the error is sticky except
    /// [`RelayError::Unrecognized`].
    pub fn handle(&mut self, from: Side, payload: &[u8]) -> Result<(), RelayError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.dispatch(from, payload);
        if let Err(e) = &result {
            if !matches!(e, RelayError::Unrecognized { .. }) {
                self.failed = Some(e.clone());
            }
        }
        result
    }

    /// The next payload to send to `to`, or None when nothing can be sent now (nothing queued,
    /// or only data waiting for that side's window, or requests waiting for a decision). Call
    /// until None whenever the transport toward `to` can take more, and after every
    /// [`Relay::handle`] and [`Relay::decide`].
    pub fn poll_transmit(&mut self, to: Side) -> Option<Vec<u8>> {
        let side = to.index();
        if let Some(p) = self.poll_global(to) {
            return Some(p);
        }
        if let Some(p) = self.globals[side].opens.pop_front() {
            return Some(p);
        }
        let start = self.cursor[side];
        let ids: Vec<u32> = self
            .channels
            .range(start..)
            .chain(self.channels.range(..start))
            .filter(|(_, slot)| matches!(slot, Slot::Open(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(Slot::Open(ch)) = self.channels.get_mut(&id) else {
                continue;
            };
            let Some(payload) = ch.poll_transmit(to, self.config.observe_data, &mut self.events)
            else {
                continue;
            };
            self.cursor[side] = id.wrapping_add(1);
            self.free_if_finished(id);
            return Some(payload);
        }
        None
    }

    /// Answers a [`Event::Decide`].
    ///
    /// # Errors
    /// [`DecideError::NotPending`] when the ticket was answered already or its channel is gone
    /// (the client closed it, or the relay failed); nothing is sent then.
    pub fn decide(&mut self, ticket: Ticket, verdict: Verdict) -> Result<(), DecideError> {
        if self.failed.is_some() {
            return Err(DecideError::NotPending);
        }
        match ticket.scope {
            Scope::Open(id) => self.decide_open(id, ticket.seq, verdict),
            Scope::Request(id) => self.decide_request(id, ticket.seq, verdict),
            Scope::Global => self.decide_global(ticket.seq, verdict),
        }
    }

    /// Closes a channel from the gateway's side (session kill, approval expired): CLOSE goes to
    /// both connections after what is already queued, held requests are dropped. Returns false
    /// when the channel is not open (a pending open is refused instead when it awaits a
    /// decision; one already forwarded cannot be cancelled).
    pub fn close_channel(&mut self, channel: ChannelId) -> bool {
        match self.channels.get_mut(&channel.0) {
            Some(Slot::Open(ch)) => {
                ch.close_both();
                true
            }
            Some(Slot::AwaitingDecision(p)) => {
                let seq = p.ticket;
                self.decide_open(channel.0, seq, Verdict::Deny).is_ok()
            }
            _ => false,
        }
    }

    /// Puts `filter` in the data path of `channel` (see [`super::filter`]): from now on its plain
    /// data in both directions goes through the filter, whose replies go back to the sender.
    /// Call it before allowing the request that starts the filtered stream (`subsystem sftp`),
    /// so that no byte of that stream passes unfiltered; the client's data already waiting
    /// behind that request is filtered too. Returns false when the channel is not open.
    ///
    /// # Errors
    /// [`RelayError`] (sticky) when the filter's replies to data already waiting overflow the
    /// channel's queue, as [`Relay::handle`] would have reported.
    pub fn set_filter(
        &mut self,
        channel: ChannelId,
        filter: Box<dyn ChannelFilter>,
    ) -> Result<bool, RelayError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Relay {
            channels, events, ..
        } = self;
        let Some(Slot::Open(ch)) = channels.get_mut(&channel.0) else {
            return Ok(false);
        };
        match ch.set_filter(filter, events) {
            Ok(()) => Ok(true),
            Err(fault) => {
                let e = RelayError::channel(Side::Downstream, channel, fault);
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The channels whose filter holds bytes back (a masker's tail), each with how many bytes
    /// its filter has been given so far and how many wait for a reader. The relay has no clock:
    /// the caller notes when that count last changed and, once a channel has been quiet long
    /// enough with nothing waiting, calls [`Relay::flush_filter`] for it. Held bytes are also released, without the caller, before
    /// the sender's EOF, CLOSE and exit status are forwarded.
    pub fn filters_holding(&self) -> impl Iterator<Item = FilterHold> + '_ {
        self.channels.iter().filter_map(|(id, slot)| match slot {
            Slot::Open(ch) => {
                let held = [Side::Downstream, Side::Upstream]
                    .into_iter()
                    .map(|side| ch.filter_held(side))
                    .fold(0usize, usize::saturating_add);
                (held > 0).then(|| FilterHold {
                    channel: ChannelId(*id),
                    fed: ch.filter_fed.iter().fold(0u64, |a, b| a.saturating_add(*b)),
                    queued: ch.legs.iter().map(|leg| leg.queued_bytes()).sum(),
                })
            }
            _ => None,
        })
    }

    /// Asks `channel`'s filter to release what it holds back from both sides (the stream has been
    /// idle), and queues it. A filter that holds incomplete units (SFTP) keeps them. Returns false
    /// when the channel is not open.
    ///
    /// # Errors
    /// [`RelayError`] (sticky) when the released bytes overflow the channel's queue, as
    /// [`Relay::handle`] would have reported.
    pub fn flush_filter(&mut self, channel: ChannelId) -> Result<bool, RelayError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Relay {
            channels, events, ..
        } = self;
        let Some(Slot::Open(ch)) = channels.get_mut(&channel.0) else {
            return Ok(false);
        };
        let flushed = ch
            .flush_filter(Side::Upstream, events)
            .and_then(|()| ch.flush_filter(Side::Downstream, events));
        match flushed {
            Ok(()) => Ok(true),
            Err(fault) => {
                let e = RelayError::channel(Side::Upstream, channel, fault);
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Queues the gateway's own text for the client's stderr on `channel` (a notice such as
    /// "held for approval" while a request waits for its decision). It goes after what is already
    /// queued toward the client, is not counted against upstream's window, and is dropped once
    /// the client's side of the channel is closed or at EOF. Returns false when the channel is
    /// not open.
    pub fn send_client_stderr(&mut self, channel: ChannelId, text: &[u8]) -> bool {
        match self.channels.get_mut(&channel.0) {
            Some(Slot::Open(ch)) => ch
                .push(
                    Side::Downstream,
                    Item::Data {
                        ext: Some(EXTENDED_DATA_STDERR),
                        bytes: text.iter().copied().collect(),
                        relayed: false,
                        cost: 0,
                    },
                )
                .is_ok(),
            _ => false,
        }
    }

    /// Queues a `keepalive@openssh.com` global request with want-reply to `to`; its answer is
    /// reported as [`Event::PeerAlive`] and not forwarded.
    pub fn send_keepalive(&mut self, to: Side) {
        let payload = Message::GlobalRequest(GlobalRequest {
            want_reply: true,
            kind: GlobalRequestKind::Keepalive,
        })
        .encode();
        self.globals[to.index()]
            .queue
            .push_back(GlobalItem::Request {
                payload,
                want_reply: true,
                origin: Origin::Own,
            });
    }

    /// Where a channel is, or None when its number is free.
    pub fn phase(&self, channel: ChannelId) -> Option<Phase> {
        use super::channel::{Inbound, Outbound};
        Some(match self.channels.get(&channel.0)? {
            Slot::AwaitingDecision(_) => Phase::AwaitingDecision,
            Slot::Opening(_) => Phase::Opening,
            Slot::Open(ch) => {
                if ch
                    .legs
                    .iter()
                    .any(|l| l.inbound == Inbound::Closed || l.sealed())
                {
                    Phase::Closing
                } else if ch
                    .legs
                    .iter()
                    .any(|l| l.inbound == Inbound::Eof || l.outbound == Outbound::Eof)
                {
                    Phase::HalfClosed
                } else {
                    Phase::Open
                }
            }
        })
    }

    /// Channels whose numbers are in use.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Relayed data bytes buffered on `channel` waiting to be handed on to `toward`.
    pub fn buffered(&self, channel: ChannelId, toward: Side) -> usize {
        match self.channels.get(&channel.0) {
            Some(Slot::Open(ch)) => ch.leg(toward).buffered(),
            _ => 0,
        }
    }

    /// Checks the flow-control bookkeeping of every channel: for each side, the bytes it sent
    /// that are still buffered (queued, as the window the queued data holds, or held back by the
    /// channel's filter) plus its remaining window plus what is owed back to it by WINDOW_ADJUST
    /// add up to exactly the window we advertised, so the buffer can never exceed that window
    /// (a filter's longer output is bounded apart, see [`super::filter`]). For tests and fuzzing;
    /// O(queued items).
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, slot) in &self.channels {
            let Slot::Open(ch) = slot else { continue };
            for side in [Side::Downstream, Side::Upstream] {
                let leg = ch.leg(side);
                let buffered = u64::try_from(ch.leg(side.other()).buffered()).unwrap_or(u64::MAX);
                let held = match &ch.filter {
                    Filter::Active(f) => u64::try_from(f.held(side)).unwrap_or(u64::MAX),
                    _ => 0,
                };
                let total =
                    buffered + held + u64::from(leg.recv_window) + u64::from(leg.unadjusted);
                if total != u64::from(leg.recv_window_max) {
                    return Err(format!(
                        "channel {id}, from {side}: buffered {buffered} + held by the filter {held} + window {} + unadjusted {} != advertised {}",
                        leg.recv_window, leg.unadjusted, leg.recv_window_max
                    ));
                }
            }
        }
        Ok(())
    }

    fn ticket(&mut self, scope: Scope) -> Ticket {
        let seq = self.next_ticket;
        self.next_ticket += 1;
        Ticket { seq, scope }
    }

    fn dispatch(&mut self, from: Side, payload: &[u8]) -> Result<(), RelayError> {
        let message = match Message::parse(payload) {
            Ok(m) => m,
            Err(DecodeError::NotConnectionMessage(number)) => {
                return Err(RelayError::Unrecognized { from, number })
            }
            Err(error) => return Err(RelayError::Malformed { from, error }),
        };
        match message {
            Message::GlobalRequest(req) => self.on_global_request(from, &req, payload),
            Message::RequestSuccess { .. } | Message::RequestFailure => {
                self.on_global_reply(from, payload)
            }
            Message::ChannelOpen(open) => self.on_open(from, &open, payload),
            Message::OpenConfirmation(c) => self.on_open_confirmation(from, &c),
            Message::OpenFailure(f) => self.on_open_failure(from, &f),
            Message::WindowAdjust { recipient, bytes } => {
                self.with_channel(from, recipient, |ch| ch.on_window_adjust(from, bytes))
            }
            Message::Data { recipient, data } => self.channel_data(from, recipient, None, data),
            Message::ExtendedData {
                recipient,
                data_type,
                data,
            } => {
                if data_type == EXTENDED_DATA_STDERR {
                    self.channel_data(from, recipient, Some(data_type), data)
                } else {
                    // OpenSSH (channels.c) ignores other types, without window accounting.
                    self.with_channel(from, recipient, |ch| ch.check_inbound(from))
                }
            }
            Message::Eof { recipient } => {
                self.with_channel_events(from, recipient, |ch, events| ch.on_eof(from, events))
            }
            Message::Close { recipient } => {
                self.with_channel_events(from, recipient, |ch, events| ch.on_close(from, events))?;
                self.free_if_finished(recipient);
                Ok(())
            }
            Message::ChannelRequest(req) => self.on_channel_request(from, &req, payload),
            Message::ChannelSuccess { recipient } => {
                self.with_channel(from, recipient, |ch| ch.on_reply(from, true))
            }
            Message::ChannelFailure { recipient } => {
                self.with_channel(from, recipient, |ch| ch.on_reply(from, false))
            }
        }
    }

    fn with_channel(
        &mut self,
        from: Side,
        recipient: u32,
        f: impl FnOnce(&mut OpenChannel) -> Result<(), ChannelFault>,
    ) -> Result<(), RelayError> {
        match self.channels.get_mut(&recipient) {
            Some(Slot::Open(ch)) => {
                f(ch).map_err(|fault| RelayError::channel(from, ChannelId(recipient), fault))
            }
            _ => Err(RelayError::UnknownChannel {
                from,
                channel: recipient,
            }),
        }
    }

    /// [`Relay::with_channel`] for calls that may run the channel's filter (which reports
    /// events).
    fn with_channel_events(
        &mut self,
        from: Side,
        recipient: u32,
        f: impl FnOnce(&mut OpenChannel, &mut VecDeque<Event>) -> Result<(), ChannelFault>,
    ) -> Result<(), RelayError> {
        let Relay {
            channels, events, ..
        } = self;
        match channels.get_mut(&recipient) {
            Some(Slot::Open(ch)) => f(ch, events)
                .map_err(|fault| RelayError::channel(from, ChannelId(recipient), fault)),
            _ => Err(RelayError::UnknownChannel {
                from,
                channel: recipient,
            }),
        }
    }

    fn channel_data(
        &mut self,
        from: Side,
        recipient: u32,
        ext: Option<u32>,
        data: &[u8],
    ) -> Result<(), RelayError> {
        let Relay {
            channels, events, ..
        } = self;
        match channels.get_mut(&recipient) {
            Some(Slot::Open(ch)) => ch
                .on_data(from, ext, data, events)
                .map_err(|fault| RelayError::channel(from, ChannelId(recipient), fault)),
            _ => Err(RelayError::UnknownChannel {
                from,
                channel: recipient,
            }),
        }
    }

    fn free_if_finished(&mut self, id: u32) {
        if let Some(Slot::Open(ch)) = self.channels.get(&id) {
            if ch.is_finished() {
                let event = Event::Closed {
                    channel: ChannelId(id),
                    bytes_in: ch.leg(Side::Upstream).delivered,
                    bytes_out: ch.leg(Side::Downstream).delivered,
                };
                self.channels.remove(&id);
                self.events.push_back(event);
            }
        }
    }

    // ---- global requests ----

    fn on_global_request(
        &mut self,
        from: Side,
        req: &GlobalRequest<'_>,
        payload: &[u8],
    ) -> Result<(), RelayError> {
        let local_answer = match (&req.kind, from) {
            (GlobalRequestKind::NoMoreSessions, Side::Downstream) => {
                // OpenSSH PROTOCOL §2.2: "an OpenSSH server will refuse to open future channels
                // of type "session"".
                self.no_more_sessions = true;
                Some(true)
            }
            (
                GlobalRequestKind::TcpipForward { .. }
                | GlobalRequestKind::CancelTcpipForward { .. }
                | GlobalRequestKind::Unknown { .. },
                Side::Downstream,
            ) => None,
            // keepalive@openssh.com: sshd answers it with REQUEST_FAILURE (it knows no such
            // request) and ssh counts any answer; hostkeys-prove is for the gateway's own keys;
            // nothing upstream asks globally is for the client.
            _ => Some(false),
        };
        if self.globals[from.index()].owed.len() >= super::channel::MAX_QUEUED_ITEMS
            || self.globals[from.other().index()].queue.len() >= super::channel::MAX_QUEUED_ITEMS
        {
            return Err(RelayError::QueueFull {
                from,
                channel: None,
            });
        }
        match local_answer {
            Some(success) => {
                if req.want_reply {
                    self.globals[from.index()]
                        .owed
                        .push_back(GlobalOwed::Ready(global_reply(success)));
                    self.drain_global(from);
                }
            }
            None => {
                let ticket = self.ticket(Scope::Global);
                if req.want_reply {
                    self.globals[from.index()]
                        .owed
                        .push_back(GlobalOwed::Undecided(ticket.seq));
                }
                self.globals[from.other().index()]
                    .queue
                    .push_back(GlobalItem::Held {
                        ticket: ticket.seq,
                        payload: payload.to_vec(),
                        want_reply: req.want_reply,
                    });
                self.events.push_back(Event::Decide(Decision {
                    ticket,
                    from,
                    channel: None,
                    payload: payload.to_vec(),
                }));
            }
        }
        Ok(())
    }

    fn on_global_reply(&mut self, from: Side, payload: &[u8]) -> Result<(), RelayError> {
        match self.globals[from.index()].awaited.pop_front() {
            None => Err(RelayError::UnexpectedReply {
                from,
                channel: None,
            }),
            Some(Origin::Own) => {
                self.events.push_back(Event::PeerAlive { side: from });
                Ok(())
            }
            Some(Origin::Relayed) => {
                let to = from.other();
                let slot = self.globals[to.index()]
                    .owed
                    .iter_mut()
                    .find(|o| matches!(o, GlobalOwed::Relayed))
                    .ok_or(RelayError::UnexpectedReply {
                        from,
                        channel: None,
                    })?;
                // Forwarded as is: a REQUEST_SUCCESS may carry the port the server bound.
                *slot = GlobalOwed::Ready(payload.to_vec());
                self.drain_global(to);
                Ok(())
            }
        }
    }

    fn drain_global(&mut self, to: Side) {
        let leg = &mut self.globals[to.index()];
        while let Some(GlobalOwed::Ready(_)) = leg.owed.front() {
            if let Some(GlobalOwed::Ready(reply)) = leg.owed.pop_front() {
                leg.queue.push_back(GlobalItem::Send(reply));
            }
        }
    }

    fn poll_global(&mut self, to: Side) -> Option<Vec<u8>> {
        let leg = &mut self.globals[to.index()];
        match leg.queue.front()? {
            GlobalItem::Held { .. } => None,
            _ => match leg.queue.pop_front()? {
                GlobalItem::Send(p) => Some(p),
                GlobalItem::Request {
                    payload,
                    want_reply,
                    origin,
                } => {
                    if want_reply {
                        leg.awaited.push_back(origin);
                    }
                    Some(payload)
                }
                GlobalItem::Held { .. } => None,
            },
        }
    }

    fn decide_global(&mut self, seq: u64, verdict: Verdict) -> Result<(), DecideError> {
        for to in [Side::Upstream, Side::Downstream] {
            let queue = &mut self.globals[to.index()].queue;
            let Some(pos) = queue
                .iter()
                .position(|i| matches!(i, GlobalItem::Held { ticket, .. } if *ticket == seq))
            else {
                continue;
            };
            let from = to.other();
            let allow = verdict == Verdict::Allow;
            let Some(GlobalItem::Held {
                payload,
                want_reply,
                ..
            }) = queue.remove(pos)
            else {
                return Err(DecideError::NotPending);
            };
            if allow {
                queue.insert(
                    pos,
                    GlobalItem::Request {
                        payload,
                        want_reply,
                        origin: Origin::Relayed,
                    },
                );
            }
            if let Some(owed) = self.globals[from.index()]
                .owed
                .iter_mut()
                .find(|o| matches!(o, GlobalOwed::Undecided(t) if *t == seq))
            {
                *owed = if allow {
                    GlobalOwed::Relayed
                } else {
                    GlobalOwed::Ready(global_reply(false))
                };
            }
            self.drain_global(from);
            return Ok(());
        }
        Err(DecideError::NotPending)
    }

    // ---- channel opens ----

    fn on_open(
        &mut self,
        from: Side,
        open: &ChannelOpen<'_>,
        payload: &[u8],
    ) -> Result<(), RelayError> {
        let right_way = matches!(
            (&open.kind, from),
            (
                ChannelKind::Session
                    | ChannelKind::DirectTcpip { .. }
                    | ChannelKind::DirectStreamlocal { .. },
                Side::Downstream,
            ) | (
                ChannelKind::ForwardedTcpip { .. }
                    | ChannelKind::X11 { .. }
                    | ChannelKind::AuthAgent
                    | ChannelKind::ForwardedStreamlocal { .. },
                Side::Upstream,
            ) | (ChannelKind::Unknown { .. }, _)
        );
        let refusal = if !right_way {
            Some((
                OpenFailureReason::UnknownChannelType,
                &b"unknown channel type"[..],
            ))
        } else if from == Side::Downstream
            && open.kind == ChannelKind::Session
            && self.no_more_sessions
        {
            Some((OpenFailureReason::AdministrativelyProhibited, FAILURE_TEXT))
        } else if self.channels.len() >= self.config.max_channels {
            Some((
                OpenFailureReason::ResourceShortage,
                &b"too many channels"[..],
            ))
        } else {
            None
        };
        if let Some((reason, text)) = refusal {
            return self.queue_open(
                from,
                Message::OpenFailure(OpenFailure {
                    recipient: open.sender,
                    reason,
                    description: text,
                    language: b"",
                })
                .encode(),
            );
        }
        // The lowest number free on both connections (we use one number for both).
        let mut id = 0u32;
        while self.channels.contains_key(&id) {
            id += 1;
        }
        let ticket = self.ticket(Scope::Open(id));
        let advertised = open
            .initial_window
            .clamp(self.config.min_window, self.config.max_window);
        self.channels.insert(
            id,
            Slot::AwaitingDecision(PendingOpen {
                ticket: ticket.seq,
                origin: from,
                peer: open.sender,
                window: open.initial_window,
                max_packet: open.max_packet,
                payload: payload.to_vec(),
                advertised,
            }),
        );
        self.events.push_back(Event::Decide(Decision {
            ticket,
            from,
            channel: Some(ChannelId(id)),
            payload: payload.to_vec(),
        }));
        Ok(())
    }

    fn queue_open(&mut self, to: Side, payload: Vec<u8>) -> Result<(), RelayError> {
        let opens = &mut self.globals[to.index()].opens;
        if opens.len() >= super::channel::MAX_QUEUED_ITEMS {
            return Err(RelayError::QueueFull {
                from: to,
                channel: None,
            });
        }
        opens.push_back(payload);
        Ok(())
    }

    fn decide_open(&mut self, id: u32, seq: u64, verdict: Verdict) -> Result<(), DecideError> {
        match self.channels.get(&id) {
            Some(Slot::AwaitingDecision(p)) if p.ticket == seq => {}
            _ => return Err(DecideError::NotPending),
        }
        let Some(Slot::AwaitingDecision(pending)) = self.channels.remove(&id) else {
            return Err(DecideError::NotPending);
        };
        let forward = match (&verdict, Message::parse(&pending.payload)) {
            (Verdict::Allow, Ok(Message::ChannelOpen(open))) => Some(
                Message::ChannelOpen(ChannelOpen {
                    sender: id,
                    initial_window: pending.advertised,
                    max_packet: self.config.max_packet,
                    kind: open.kind,
                })
                .encode(),
            ),
            _ => None,
        };
        let result = match forward {
            Some(open) => {
                let to = pending.origin.other();
                self.channels.insert(id, Slot::Opening(pending));
                self.queue_open(to, open)
            }
            None => {
                let text = match &verdict {
                    Verdict::DenyWithMessage { stderr, .. } => stderr.as_slice(),
                    _ => FAILURE_TEXT,
                };
                self.queue_open(
                    pending.origin,
                    Message::OpenFailure(OpenFailure {
                        recipient: pending.peer,
                        reason: OpenFailureReason::AdministrativelyProhibited,
                        description: text,
                        language: b"",
                    })
                    .encode(),
                )
            }
        };
        // queue_open fails only when the opener flooded us; that shows on its next message.
        result.map_err(|_| DecideError::NotPending)
    }

    fn on_open_confirmation(
        &mut self,
        from: Side,
        c: &OpenConfirmation<'_>,
    ) -> Result<(), RelayError> {
        let pending = match self.channels.remove(&c.recipient) {
            Some(Slot::Opening(p)) if p.origin == from.other() => p,
            other => {
                if let Some(slot) = other {
                    self.channels.insert(c.recipient, slot);
                }
                return Err(RelayError::UnexpectedOpenReply {
                    from,
                    channel: c.recipient,
                });
            }
        };
        let id = ChannelId(c.recipient);
        let origin_window = c
            .initial_window
            .clamp(self.config.min_window, self.config.max_window);
        let target = Leg::new(LegParams {
            peer: c.sender,
            send_window: c.initial_window,
            send_max_packet: c.max_packet,
            recv_window: pending.advertised,
            recv_max_packet: self.config.max_packet,
        });
        let mut opener = Leg::new(LegParams {
            peer: pending.peer,
            send_window: pending.window,
            send_max_packet: pending.max_packet,
            recv_window: origin_window,
            recv_max_packet: self.config.max_packet,
        });
        opener.queue.push_back(Item::Confirm(
            Message::OpenConfirmation(OpenConfirmation {
                recipient: pending.peer,
                sender: c.recipient,
                initial_window: origin_window,
                max_packet: self.config.max_packet,
                data: c.data,
            })
            .encode(),
        ));
        let legs = match pending.origin {
            Side::Downstream => [opener, target],
            Side::Upstream => [target, opener],
        };
        self.channels.insert(
            c.recipient,
            Slot::Open(Box::new(OpenChannel {
                id,
                legs,
                filter: Filter::None,
                filter_fed: [0, 0],
                deferred: VecDeque::new(),
            })),
        );
        self.events.push_back(Event::Opened { channel: id });
        Ok(())
    }

    fn on_open_failure(&mut self, from: Side, f: &OpenFailure<'_>) -> Result<(), RelayError> {
        let pending = match self.channels.remove(&f.recipient) {
            Some(Slot::Opening(p)) if p.origin == from.other() => p,
            other => {
                if let Some(slot) = other {
                    self.channels.insert(f.recipient, slot);
                }
                return Err(RelayError::UnexpectedOpenReply {
                    from,
                    channel: f.recipient,
                });
            }
        };
        self.events.push_back(Event::OpenFailed {
            channel: ChannelId(f.recipient),
            reason: f.reason,
        });
        self.queue_open(
            pending.origin,
            Message::OpenFailure(OpenFailure {
                recipient: pending.peer,
                ..f.clone()
            })
            .encode(),
        )
    }

    // ---- channel requests ----

    fn on_channel_request(
        &mut self,
        from: Side,
        req: &ChannelRequest<'_>,
        payload: &[u8],
    ) -> Result<(), RelayError> {
        enum Route {
            Forward(Note),
            Decide,
            Refuse,
        }
        let route = match (from, &req.kind) {
            (Side::Downstream, ChannelRequestKind::WindowChange { size }) => {
                Route::Forward(Note::Resize(*size))
            }
            (Side::Downstream, ChannelRequestKind::Keepalive | ChannelRequestKind::Eow) => {
                Route::Forward(Note::None)
            }
            (Side::Downstream, _) => Route::Decide,
            (Side::Upstream, ChannelRequestKind::ExitStatus { status }) => {
                Route::Forward(Note::ExitStatus(*status))
            }
            (
                Side::Upstream,
                ChannelRequestKind::ExitSignal {
                    signal,
                    core_dumped,
                    ..
                },
            ) => Route::Forward(Note::ExitSignal {
                signal: (*signal).to_string(),
                core_dumped: *core_dumped,
            }),
            (
                Side::Upstream,
                ChannelRequestKind::Eow
                | ChannelRequestKind::Keepalive
                | ChannelRequestKind::XonXoff { .. },
            ) => Route::Forward(Note::None),
            (Side::Upstream, _) => Route::Refuse,
        };
        let id = ChannelId(req.recipient);
        let ticket = match route {
            Route::Decide => Some(self.ticket(Scope::Request(req.recipient))),
            _ => None,
        };
        // The server's exit status (and end of writes) follow all of its output: behind a
        // filter's held bytes, they wait for their release.
        let ends_output = from == Side::Upstream
            && matches!(
                req.kind,
                ChannelRequestKind::ExitStatus { .. }
                    | ChannelRequestKind::ExitSignal { .. }
                    | ChannelRequestKind::Eow
            );
        let Relay {
            channels, events, ..
        } = self;
        let Some(Slot::Open(ch)) = channels.get_mut(&req.recipient) else {
            return Err(RelayError::UnknownChannel {
                from,
                channel: req.recipient,
            });
        };
        let fault = |fault| RelayError::channel(from, id, fault);
        ch.check_inbound(from).map_err(fault)?;
        let to = from.other();
        let want_reply = req.want_reply;
        // Nothing can be forwarded once our CLOSE to the other side is queued, or once it has
        // closed: refuse.
        let route = if !ch.leg(to).sealed() && ch.leg(to).inbound != super::channel::Inbound::Closed
        {
            route
        } else {
            Route::Refuse
        };
        if ch.leg(from).owed.len() >= super::channel::MAX_QUEUED_ITEMS {
            return Err(fault(ChannelFault::QueueFull));
        }
        match route {
            Route::Refuse => {
                if want_reply {
                    ch.leg_mut(from).owed.push_back(Owed::Ready {
                        reply: Some(false),
                        then: Vec::new(),
                    });
                    ch.drain_owed(from).map_err(fault)?;
                }
            }
            Route::Forward(note) => {
                if want_reply {
                    ch.leg_mut(from).owed.push_back(Owed::Relayed);
                }
                let item = Item::Request {
                    payload: payload.to_vec(),
                    want_reply,
                    note,
                };
                if ends_output {
                    ch.push_after_filtered(to, item).map_err(fault)?;
                } else {
                    ch.push(to, item).map_err(fault)?;
                }
            }
            Route::Decide => {
                let Some(ticket) = ticket else {
                    return Ok(());
                };
                if want_reply {
                    ch.leg_mut(from).owed.push_back(Owed::Undecided(ticket.seq));
                }
                ch.push(
                    to,
                    Item::Held {
                        ticket: ticket.seq,
                        payload: payload.to_vec(),
                        want_reply,
                    },
                )
                .map_err(fault)?;
                events.push_back(Event::Decide(Decision {
                    ticket,
                    from,
                    channel: Some(id),
                    payload: payload.to_vec(),
                }));
            }
        }
        Ok(())
    }

    fn decide_request(&mut self, id: u32, seq: u64, verdict: Verdict) -> Result<(), DecideError> {
        let Some(Slot::Open(ch)) = self.channels.get_mut(&id) else {
            return Err(DecideError::NotPending);
        };
        // Held requests only ever come from the client, so they wait in the queue to upstream.
        let to = Side::Upstream;
        let from = to.other();
        let pos = ch
            .leg(to)
            .queue
            .iter()
            .position(|i| matches!(i, Item::Held { ticket, .. } if *ticket == seq))
            .ok_or(DecideError::NotPending)?;
        match verdict {
            Verdict::Allow => {
                let queue = &mut ch.leg_mut(to).queue;
                if let Some(item) = queue.get_mut(pos) {
                    if let Item::Held {
                        payload,
                        want_reply,
                        ..
                    } = item
                    {
                        *item = Item::Request {
                            payload: std::mem::take(payload),
                            want_reply: *want_reply,
                            note: Note::None,
                        };
                    }
                }
                if let Some(owed) = ch
                    .leg_mut(from)
                    .owed
                    .iter_mut()
                    .find(|o| matches!(o, Owed::Undecided(t) if *t == seq))
                {
                    *owed = Owed::Relayed;
                }
            }
            Verdict::Deny => {
                ch.leg_mut(to).queue.remove(pos);
                ch.resolve_owed(from, seq, Some(false), Vec::new());
            }
            Verdict::DenyWithMessage {
                stderr,
                exit_status,
            } => {
                let want_reply = ch
                    .leg(from)
                    .owed
                    .iter()
                    .any(|o| matches!(o, Owed::Undecided(t) if *t == seq));
                let exit = Message::ChannelRequest(ChannelRequest {
                    recipient: id,
                    want_reply: false,
                    kind: ChannelRequestKind::ExitStatus {
                        status: exit_status,
                    },
                })
                .encode();
                let then = vec![
                    Item::Data {
                        ext: Some(EXTENDED_DATA_STDERR),
                        bytes: stderr.into_iter().collect(),
                        relayed: false,
                        cost: 0,
                    },
                    Item::Request {
                        payload: exit,
                        want_reply: false,
                        note: Note::None,
                    },
                    Item::Eof,
                    Item::Close,
                ];
                // The command "started" (so ssh shows the text and the status rather than
                // "exec request failed"), and ended at once.
                ch.resolve_owed(from, seq, want_reply.then_some(true), then);
                // Nothing held after it may reach upstream either; upstream only sees CLOSE.
                ch.cancel_held(to);
                ch.leg_mut(to).push_close();
            }
        }
        let fault = ch.drain_owed(from);
        // A flood of queued replies shows up as an error on the client's next message.
        fault.map_err(|_| DecideError::NotPending)?;
        Ok(())
    }
}

fn global_reply(success: bool) -> Vec<u8> {
    if success {
        Message::RequestSuccess { data: b"" }.encode()
    } else {
        Message::RequestFailure.encode()
    }
}

#[path = "relay_error.rs"]
mod error;
pub use error::{DecideError, RelayError};

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
