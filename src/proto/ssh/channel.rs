//! One relayed channel: its two legs (the client connection's and the upstream connection's),
//! what is queued toward each, flow control, and the EOF/CLOSE handshake (RFC 4254 §5).
//!
//! The connection-level [`Relay`](super::relay::Relay) owns a table of these and routes messages
//! to them; this module holds the per-channel rules:
//!
//! - **Order.** Everything one side sends on a channel (data, requests, replies, EOF, CLOSE) is
//!   handed to the other side in the order it arrived: one queue per direction. RFC 4254 §5.3:
//!   EOF is forwarded only after all data before it; exit-status / exit-signal stay where the
//!   server put them relative to data, EOF and CLOSE (scp and rsync read the status only if it
//!   arrives before the CLOSE).
//! - **Windows.** RFC 4254 §5.2: "Both parties use the following message to adjust the window."
//!   Each leg tracks the window the peer gave us (we never send past it, and split data to its
//!   maximum packet size) and the window we gave the peer (it must not send past it: a
//!   [`RelayError::WindowExceeded`](super::relay::RelayError::WindowExceeded) otherwise). We return window to a side with WINDOW_ADJUST
//!   only as its data is handed on to the other side, so per direction at most one advertised
//!   window of bytes is ever buffered here, and a slow reader slows the writer down.
//! - **Close.** RFC 4254 §5.3: "Upon receiving this message, a party MUST send back an
//!   SSH_MSG_CHANNEL_CLOSE unless it has already sent this message for the channel. The channel is
//!   considered closed for a party when it has both sent and received SSH_MSG_CHANNEL_CLOSE, and
//!   the party may then reuse the channel number." A CLOSE from one side is forwarded to the other
//!   after what is queued before it; it is answered when the other side's CLOSE comes back, so
//!   the close handshake is end to end. The channel number is freed only when both legs are
//!   closed both ways.

use std::collections::VecDeque;

use super::connection::{msg, set_recipient, TerminalSize, EXTENDED_DATA_STDERR};
use super::filter::{ChannelFilter, FilterError, FilterOutput};
use super::relay::{ChannelId, Event, Side, Stream};
use super::wire::Writer;

/// Most items queued toward one side of one channel. Data coalesces into one item, so only a
/// peer that floods requests while the other side's window is shut reaches this.
pub(super) const MAX_QUEUED_ITEMS: usize = 1024;

/// Largest data field we put in one DATA message, whatever the peer's maximum packet says. OpenSSH
/// refuses packets over 256 KiB (`PACKET_MAX_SIZE`); half that leaves room for the headers and
/// never limits a peer that advertises OpenSSH's 32 KiB default.
pub(super) const MAX_DATA_CHUNK: u32 = 128 * 1024;

/// Most bytes of a filter's own replies (SFTP refusals) queued toward one side of one channel.
/// A refusal is answered only after the request arrived, so a well-behaved client, which reads
/// its answers, keeps this near zero (OpenSSH's sftp has at most 64 requests in flight, ~4 KiB
/// of refusals); a client that sends refused requests and never reads the answers reaches it
/// and is cut off ([`ChannelFault::QueueFull`]) instead of growing the queue by up to five times
/// its window (a 13-byte REMOVE earns a 61-byte refusal).
pub(super) const MAX_FILTER_BACKLOG: usize = 1024 * 1024;

/// Most relayed data bytes a filtered channel may queue toward one side. Unfiltered data never
/// exceeds the sender's window; a filter's output can be longer than its input (a short secret
/// masked as `[redacted:NAME]`), and is read out at the receiver's pace, so it is bounded here
/// instead: at about three times the largest window, which realistic mask output (e-mail
/// addresses masked as `[redacted:email]` end to end) stays under. Past it the filter fails
/// ([`FilterError::OutputTooLarge`]) and the channel closes.
pub(super) const MAX_FILTER_QUEUE: usize = 16 * 1024 * 1024;

/// A per-channel protocol violation by one peer; the relay wraps it with the side and channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelFault {
    DataAfterEof,
    AfterClose,
    WindowExceeded { len: u32, window: u32 },
    WindowOverflow,
    UnexpectedReply,
    QueueFull,
}

/// A channel's data filter, if it has one.
#[derive(Debug, Default)]
pub(super) enum Filter {
    /// Data is relayed as it is.
    #[default]
    None,
    Active(Box<dyn ChannelFilter>),
    /// The filter failed: the channel is closing, and its data is dropped, never relayed
    /// unfiltered.
    Failed,
}

/// What the relay does with an observation when the item carrying it is handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    None,
    Resize(TerminalSize),
    ExitStatus(u32),
    ExitSignal { signal: String, core_dumped: bool },
}

/// One thing waiting to be sent to one side, in order.
#[derive(Debug)]
pub(super) enum Item {
    /// OPEN_CONFIRMATION to the side that opened the channel (complete payload).
    Confirm(Vec<u8>),
    /// Channel data; `ext` is the extended data type (None for plain DATA). `relayed` is false
    /// for text the gateway writes itself (a refusal message), which is not counted against the
    /// other side's window. `cost` is the part of the other side's window these bytes still
    /// hold, returned to it as they are handed on: their length for data relayed as received,
    /// the input bytes a filter consumed for its output (see [`super::filter`]), 0 for the
    /// gateway's own text.
    Data {
        ext: Option<u32>,
        bytes: VecDeque<u8>,
        relayed: bool,
        cost: u32,
    },
    /// A CHANNEL_REQUEST payload whose recipient is rewritten when it is sent.
    Request {
        payload: Vec<u8>,
        want_reply: bool,
        note: Note,
    },
    /// A request waiting for the caller's decision: nothing behind it is sent until then.
    Held {
        ticket: u64,
        payload: Vec<u8>,
        want_reply: bool,
    },
    /// CHANNEL_SUCCESS (true) or CHANNEL_FAILURE (false).
    Reply(bool),
    Eof,
    Close,
}

/// An answer owed to one side for a request it sent with want-reply, kept in arrival order:
/// RFC 4254 §4 and §5.4 replies carry no request id, so they must go back in request order even
/// when a later request is answered (refused) by us before an earlier one is answered upstream.
#[derive(Debug)]
pub(super) enum Owed {
    /// The caller has not decided yet.
    Undecided(u64),
    /// Forwarded; the other side's reply will fill this in.
    Relayed,
    /// Known: the reply (None when none is owed but `then` must keep its place) and what must
    /// follow it (a refusal's stderr text, exit-status, EOF, CLOSE).
    Ready {
        reply: Option<bool>,
        then: Vec<Item>,
    },
}

/// What a side has told us about its half of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Inbound {
    Open,
    /// RFC 4254 §5.3: "no more data will be sent to the channel" (requests still may be).
    Eof,
    Closed,
}

/// What we have told a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outbound {
    Open,
    /// EOF is queued: no data follows (requests still may).
    Eof,
    /// CLOSE is queued: nothing more is queued to this side.
    CloseQueued,
    CloseSent,
}

/// One connection's half of a relayed channel.
#[derive(Debug)]
pub(super) struct Leg {
    /// The peer's channel number (the recipient of everything we send on this leg).
    pub(super) peer: u32,
    /// Bytes we may still send (the peer's window).
    pub(super) send_window: u32,
    /// Largest data field the peer accepts.
    pub(super) send_max_packet: u32,
    /// Bytes the peer may still send us.
    pub(super) recv_window: u32,
    /// The window we advertised (and keep topping up to).
    pub(super) recv_window_max: u32,
    /// The maximum packet we advertised.
    pub(super) recv_max_packet: u32,
    /// Bytes the peer sent that have been handed on (or dropped) but not yet returned to it with
    /// WINDOW_ADJUST.
    pub(super) unadjusted: u32,
    pub(super) inbound: Inbound,
    pub(super) outbound: Outbound,
    /// Items to send to this side, in order.
    pub(super) queue: VecDeque<Item>,
    /// Replies owed to this side, in the order of its requests.
    pub(super) owed: VecDeque<Owed>,
    /// Requests with want-reply handed on to this side and not answered yet.
    pub(super) awaited: u32,
    /// Relayed data bytes handed on to this side.
    pub(super) delivered: u64,
}

/// Window parameters of one leg when the channel opens.
#[derive(Debug, Clone, Copy)]
pub(super) struct LegParams {
    pub(super) peer: u32,
    pub(super) send_window: u32,
    pub(super) send_max_packet: u32,
    pub(super) recv_window: u32,
    pub(super) recv_max_packet: u32,
}

impl Leg {
    pub(super) fn new(p: LegParams) -> Leg {
        Leg {
            peer: p.peer,
            send_window: p.send_window,
            send_max_packet: p.send_max_packet,
            recv_window: p.recv_window,
            recv_window_max: p.recv_window,
            recv_max_packet: p.recv_max_packet,
            unadjusted: 0,
            inbound: Inbound::Open,
            outbound: Outbound::Open,
            queue: VecDeque::new(),
            owed: VecDeque::new(),
            awaited: 0,
            delivered: 0,
        }
    }

    /// Bytes of a filter's own replies queued toward this side.
    pub(super) fn filter_backlog(&self) -> usize {
        self.queue
            .iter()
            .map(|item| match item {
                Item::Data {
                    ext: None,
                    bytes,
                    relayed: false,
                    ..
                } => bytes.len(),
                _ => 0,
            })
            .sum()
    }

    /// The other side's window held by data queued toward this side: the bytes it sent that
    /// are buffered here (for filtered data, the input bytes behind the queued output).
    pub(super) fn buffered(&self) -> usize {
        self.queue
            .iter()
            .map(|item| usize::try_from(relayed_len(item)).unwrap_or(usize::MAX))
            .sum()
    }

    /// Relayed data bytes queued toward this side, by their own length.
    pub(super) fn queued_bytes(&self) -> usize {
        self.queue
            .iter()
            .map(|item| match item {
                Item::Data {
                    bytes,
                    relayed: true,
                    ..
                } => bytes.len(),
                _ => 0,
            })
            .sum()
    }

    fn check_room(&self) -> Result<(), ChannelFault> {
        if self.queue.len() >= MAX_QUEUED_ITEMS || self.owed.len() >= MAX_QUEUED_ITEMS {
            Err(ChannelFault::QueueFull)
        } else {
            Ok(())
        }
    }

    /// Queues an item unless a CLOSE is already queued or sent (RFC 4254 §5.3: nothing follows
    /// our CLOSE) or this side has closed (it reads nothing more, and data queued for it would
    /// wait forever for window it will never give, holding back our CLOSE). Returns the relayed
    /// data bytes dropped, to be credited to the sender's window.
    fn push(&mut self, item: Item) -> Result<u32, ChannelFault> {
        if self.sealed() || self.inbound == Inbound::Closed {
            return Ok(relayed_len(&item));
        }
        match (&item, self.outbound) {
            // RFC 4254 §5.3: no data after EOF. Only the gateway's own text can get here (the
            // other side's data all precedes its EOF): a refusal after upstream's EOF.
            (Item::Data { .. } | Item::Eof, Outbound::Eof) => return Ok(relayed_len(&item)),
            (Item::Eof, _) => self.outbound = Outbound::Eof,
            _ => {}
        }
        if let Item::Close = item {
            self.outbound = Outbound::CloseQueued;
            self.queue.push_back(Item::Close);
            return Ok(0);
        }
        if let Item::Data {
            ext,
            bytes,
            relayed,
            cost,
        } = item
        {
            if bytes.is_empty() {
                // Nothing to hand on: the window it held is free now.
                return Ok(cost);
            }
            if let Some(Item::Data {
                ext: last_ext,
                bytes: last,
                relayed: last_relayed,
                cost: last_cost,
            }) = self.queue.back_mut()
            {
                if *last_ext == ext && *last_relayed == relayed {
                    last.extend(bytes);
                    *last_cost = last_cost.saturating_add(cost);
                    return Ok(0);
                }
            }
            self.check_room()?;
            self.queue.push_back(Item::Data {
                ext,
                bytes,
                relayed,
                cost,
            });
            return Ok(0);
        }
        self.check_room()?;
        self.queue.push_back(item);
        Ok(0)
    }

    pub(super) fn push_close(&mut self) {
        if !self.sealed() {
            self.outbound = Outbound::CloseQueued;
            self.queue.push_back(Item::Close);
        }
    }

    /// Empties the queue (this side will read nothing more), keeping a queued CLOSE, and returns
    /// the relayed data bytes dropped.
    fn clear_queue(&mut self) -> u32 {
        let dropped = self
            .queue
            .iter()
            .map(relayed_len)
            .fold(0u32, u32::saturating_add);
        self.queue.clear();
        if self.outbound == Outbound::CloseQueued {
            self.queue.push_back(Item::Close);
        }
        dropped
    }

    /// RFC 4254 §5.2 window replenishment, with OpenSSH's rule for when (channels.c
    /// `channel_check_window`): once more than three maximum packets or half the window are
    /// outstanding, return what has been consumed. Not after EOF or CLOSE either way.
    fn take_adjust(&mut self) -> Option<u32> {
        if self.unadjusted == 0 || self.inbound != Inbound::Open || self.sealed() {
            return None;
        }
        let outstanding = u64::from(self.recv_window_max) - u64::from(self.recv_window);
        if outstanding > 3 * u64::from(self.recv_max_packet)
            || self.recv_window < self.recv_window_max / 2
        {
            let bytes = self.unadjusted;
            self.recv_window = self.recv_window.saturating_add(bytes);
            self.unadjusted = 0;
            Some(bytes)
        } else {
            None
        }
    }

    /// A CLOSE is queued or sent to this side: nothing more may be queued.
    pub(super) fn sealed(&self) -> bool {
        matches!(self.outbound, Outbound::CloseQueued | Outbound::CloseSent)
    }

    fn credit(&mut self, bytes: u32) {
        self.unadjusted = self.unadjusted.saturating_add(bytes);
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The sender's window `item` still holds (see [`Item::Data`]).
fn relayed_len(item: &Item) -> u32 {
    match item {
        Item::Data { cost, .. } => *cost,
        _ => 0,
    }
}

/// What a filter is asked to do.
#[derive(Clone, Copy)]
enum FilterCall<'a> {
    Data(&'a [u8]),
    Stderr(&'a [u8]),
    Flush,
}

/// A channel both sides have confirmed: the state from "open" through "half-closed" (EOF one or
/// both ways) and "closing" (a CLOSE queued, sent or received) until both legs are closed both
/// ways, when the relay frees its number.
#[derive(Debug)]
pub(super) struct OpenChannel {
    pub(super) id: ChannelId,
    /// Indexed by [`Side::index`].
    pub(super) legs: [Leg; 2],
    pub(super) filter: Filter,
    /// Bytes of data handed to the filter so far, per sending side (tells the caller when a
    /// filtered stream last moved, for the idle flush).
    pub(super) filter_fed: [u64; 2],
    /// Requests that end a side's output (exit-status, exit-signal, eow) that arrived while the
    /// filter held some of that output: they go out right after it, when it is released.
    /// Flushing at the request instead would split the stream: sshd sends exit-status as soon as
    /// the command exits, while more of its output may still wait for window.
    pub(super) deferred: VecDeque<Item>,
}

impl OpenChannel {
    pub(super) fn leg(&self, side: Side) -> &Leg {
        &self.legs[side.index()]
    }

    pub(super) fn leg_mut(&mut self, side: Side) -> &mut Leg {
        &mut self.legs[side.index()]
    }

    /// Both legs closed both ways: the number may be reused.
    pub(super) fn is_finished(&self) -> bool {
        self.legs
            .iter()
            .all(|leg| leg.inbound == Inbound::Closed && leg.outbound == Outbound::CloseSent)
    }

    /// Checks that `from` may still send on this channel at all.
    pub(super) fn check_inbound(&self, from: Side) -> Result<(), ChannelFault> {
        if self.leg(from).inbound == Inbound::Closed {
            Err(ChannelFault::AfterClose)
        } else {
            Ok(())
        }
    }

    /// Queues toward `to`; dropped relayed bytes are returned to the other side's window.
    pub(super) fn push(&mut self, to: Side, item: Item) -> Result<(), ChannelFault> {
        let dropped = self.leg_mut(to).push(item)?;
        self.leg_mut(to.other()).credit(dropped);
        Ok(())
    }

    /// DATA / EXTENDED_DATA from `from`. `events` receives a filter's notes.
    pub(super) fn on_data(
        &mut self,
        from: Side,
        ext: Option<u32>,
        data: &[u8],
        events: &mut VecDeque<Event>,
    ) -> Result<(), ChannelFault> {
        let leg = self.leg_mut(from);
        match leg.inbound {
            Inbound::Open => {}
            Inbound::Eof => return Err(ChannelFault::DataAfterEof),
            Inbound::Closed => return Err(ChannelFault::AfterClose),
        }
        // RFC 4254 §5.2: "the recipient MAY ... drop" data past the window; OpenSSH logs it. We
        // refuse it: accepting it would let a peer grow our buffer without bound. (A peer sending
        // more than our maximum packet but within the window is only logged by OpenSSH, and
        // costs us nothing, so it is accepted.)
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        if len > leg.recv_window {
            return Err(ChannelFault::WindowExceeded {
                len,
                window: leg.recv_window,
            });
        }
        leg.recv_window -= len;
        match (&self.filter, ext, from) {
            (Filter::None, _, _) => {}
            (Filter::Active(_), None, _) => {
                return self.run_filter(from, FilterCall::Data(data), events)
            }
            // The server's stderr on a filtered channel: the filter decides (the SFTP filter
            // hands sftp-server's log on as it is, the mask filter masks it).
            (Filter::Active(_), Some(EXTENDED_DATA_STDERR), Side::Upstream) => {
                return self.run_filter(from, FilterCall::Stderr(data), events)
            }
            // The client's extended data on a filtered channel (sshd ignores it on a session
            // channel anyway) and all data of a channel whose filter failed: dropped, never
            // relayed unfiltered.
            (Filter::Active(_), _, _) | (Filter::Failed, _, _) => {
                self.leg_mut(from).credit(len);
                return Ok(());
            }
        }
        let to = self.leg_mut(from.other());
        let open = !to.sealed() && to.inbound != Inbound::Closed && to.outbound != Outbound::Eof;
        if let (
            true,
            Some(Item::Data {
                ext: last_ext,
                bytes,
                relayed: true,
                cost,
            }),
        ) = (open, to.queue.back_mut())
        {
            if *last_ext == ext {
                // The common case under load: append to the data already waiting (one copy).
                bytes.extend(data.iter());
                *cost = cost.saturating_add(len);
                return Ok(());
            }
        }
        self.push(
            from.other(),
            Item::Data {
                ext,
                bytes: VecDeque::from(data.to_vec()),
                relayed: true,
                cost: len,
            },
        )
    }

    /// Installs `filter` (see [`super::filter`]). Plain data the client sent that still waits
    /// to go upstream (sent before the request that starts the filtered stream was decided) is
    /// taken out of the queue and passed through the filter first; data already queued toward
    /// the client is left as it is (a server sends nothing on a session channel before its
    /// subsystem, shell or command starts). A channel keeps its first filter: a second one is
    /// ignored (sshd refuses a second exec/shell/subsystem on a channel anyway, and the first
    /// filter holds state and bytes of its stream).
    pub(super) fn set_filter(
        &mut self,
        filter: Box<dyn ChannelFilter>,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ChannelFault> {
        if !matches!(self.filter, Filter::None) {
            return Ok(());
        }
        self.filter = Filter::Active(filter);
        // The client's plain data waiting to go upstream, and everything queued behind its first
        // piece (an EOF, a CLOSE, requests), are taken out; the data goes through the filter and
        // the rest is queued again behind the filter's output, in order. Data is only ever
        // queued while the leg is open, so it is open again for the filter's output.
        let leg = self.leg_mut(Side::Upstream);
        let Some(first) = leg.queue.iter().position(|item| {
            matches!(
                item,
                Item::Data {
                    ext: None,
                    relayed: true,
                    ..
                }
            )
        }) else {
            return Ok(());
        };
        let tail: Vec<Item> = leg.queue.drain(first..).collect();
        let mut waiting = Vec::new();
        let mut rest = Vec::new();
        // Unfiltered data holds exactly its length of the client's window, so handing the bytes
        // to the filter as fresh input keeps the bookkeeping exact.
        for item in tail {
            match item {
                Item::Data {
                    ext: None,
                    bytes,
                    relayed: true,
                    ..
                } => waiting.extend(bytes),
                other => rest.push(other),
            }
        }
        if leg.outbound == Outbound::Eof || leg.outbound == Outbound::CloseQueued {
            leg.outbound = Outbound::Open;
        }
        self.run_filter(Side::Downstream, FilterCall::Data(&waiting), events)?;
        for item in rest {
            self.push(Side::Upstream, item)?;
        }
        Ok(())
    }

    /// Queues a request from the other side of `to` that ends that side's output: after what the
    /// filter holds of it, if anything (see [`OpenChannel::deferred`]).
    pub(super) fn push_after_filtered(&mut self, to: Side, item: Item) -> Result<(), ChannelFault> {
        if self.filter_held(to.other()) == 0 {
            return self.push(to, item);
        }
        if self.deferred.len() >= MAX_QUEUED_ITEMS {
            return Err(ChannelFault::QueueFull);
        }
        self.deferred.push_back(item);
        Ok(())
    }

    /// Asks the filter to release what it holds from `from` (idle, or the stream ends) and
    /// queues it. Nothing happens without an active filter.
    pub(super) fn flush_filter(
        &mut self,
        from: Side,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ChannelFault> {
        match &self.filter {
            Filter::Active(f) if f.held(from) > 0 => {
                self.run_filter(from, FilterCall::Flush, events)
            }
            _ => Ok(()),
        }
    }

    /// Bytes the active filter holds from `from`.
    pub(super) fn filter_held(&self, from: Side) -> usize {
        match &self.filter {
            Filter::Active(f) => f.held(from),
            _ => 0,
        }
    }

    /// Runs one filter call on data from `from` (already counted against its window) and
    /// queues what it returns; see [`super::filter`] for the window bookkeeping.
    fn run_filter(
        &mut self,
        from: Side,
        call: FilterCall<'_>,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ChannelFault> {
        let channel = self.id;
        let Filter::Active(filter) = &mut self.filter else {
            return Ok(());
        };
        let held_before = filter.held(from);
        let mut out = FilterOutput::default();
        let (result, input) = match call {
            FilterCall::Data(data) => (filter.data(from, data, &mut out), data.len()),
            FilterCall::Stderr(data) => (filter.stderr(from, data, &mut out), data.len()),
            FilterCall::Flush => (filter.flush(from, &mut out), 0),
        };
        let fed = &mut self.filter_fed[from.index()];
        *fed = fed.saturating_add(u64::try_from(input).unwrap_or(u64::MAX));
        let had = held_before.saturating_add(input);
        let kept = filter.held(from);
        let forwarded = out.forward.len().saturating_add(out.forward_stderr.len());
        let queued = self
            .leg(from.other())
            .queued_bytes()
            .saturating_add(forwarded);
        let result = result.and_then(|()| {
            let consumed = had
                .checked_sub(kept)
                .ok_or(FilterError::Contract { had, kept })?;
            if queued > MAX_FILTER_QUEUE {
                return Err(FilterError::OutputTooLarge { queued });
            }
            Ok(consumed)
        });
        let consumed = match result {
            Ok(consumed) => consumed,
            Err(error) => {
                // Fail closed: nothing of this call goes anywhere, the filter and what it held
                // are gone (their window returned), and the channel closes both ways.
                let Filter::Active(filter) = &self.filter else {
                    return Ok(());
                };
                let held_other = filter.held(from.other());
                self.filter = Filter::Failed;
                self.leg_mut(from).credit(to_u32(had));
                self.leg_mut(from.other()).credit(to_u32(held_other));
                events.push_back(Event::FilterFailed { channel, error });
                self.close_both();
                return Ok(());
            }
        };
        // The consumed input's window: what exceeds the forwarded bytes is returned now (it was
        // dropped or answered here); the rest rides on the forwarded bytes, split between the
        // two streams by length, and is returned as they are handed on.
        let consumed = to_u32(consumed);
        let (stdout_len, stderr_len) =
            (to_u32(out.forward.len()), to_u32(out.forward_stderr.len()));
        let total = stdout_len.saturating_add(stderr_len);
        let riding = consumed.min(total);
        self.leg_mut(from).credit(consumed - riding);
        let stdout_cost = if total == 0 {
            0
        } else {
            let share = u64::from(riding) * u64::from(stdout_len) / u64::from(total);
            u32::try_from(share).unwrap_or(riding)
        };
        let stderr_cost = riding - stdout_cost;
        events.extend(out.notes.into_iter().map(|note| Event::Filtered {
            channel,
            from,
            note,
        }));
        self.push(
            from.other(),
            Item::Data {
                ext: None,
                bytes: VecDeque::from(out.forward),
                relayed: true,
                cost: stdout_cost,
            },
        )?;
        self.push(
            from.other(),
            Item::Data {
                ext: Some(EXTENDED_DATA_STDERR),
                bytes: VecDeque::from(out.forward_stderr),
                relayed: true,
                cost: stderr_cost,
            },
        )?;
        self.push(
            from,
            Item::Data {
                ext: None,
                bytes: VecDeque::from(out.reply),
                relayed: false,
                cost: 0,
            },
        )?;
        if self.leg(from).filter_backlog() > MAX_FILTER_BACKLOG {
            return Err(ChannelFault::QueueFull);
        }
        if kept == 0 && from == Side::Upstream {
            // Everything before the deferred requests is out: they follow now.
            self.release_deferred()?;
        }
        Ok(())
    }

    /// Queues the deferred requests (they only ever come from upstream) toward the client.
    fn release_deferred(&mut self) -> Result<(), ChannelFault> {
        while let Some(item) = self.deferred.pop_front() {
            self.push(Side::Downstream, item)?;
        }
        Ok(())
    }

    /// WINDOW_ADJUST from `from`.
    pub(super) fn on_window_adjust(&mut self, from: Side, bytes: u32) -> Result<(), ChannelFault> {
        self.check_inbound(from)?;
        let leg = self.leg_mut(from);
        // RFC 4254 §5.2: "The window MUST NOT be increased above 2^32 - 1 bytes."
        leg.send_window = leg
            .send_window
            .checked_add(bytes)
            .ok_or(ChannelFault::WindowOverflow)?;
        Ok(())
    }

    /// EOF from `from`: forwarded after everything queued before it, and after what a filter
    /// held of `from`'s data (released now: nothing more follows it).
    pub(super) fn on_eof(
        &mut self,
        from: Side,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ChannelFault> {
        match self.leg(from).inbound {
            Inbound::Open => {}
            // A second EOF says nothing new; OpenSSH only logs it.
            Inbound::Eof => return Ok(()),
            Inbound::Closed => return Err(ChannelFault::AfterClose),
        }
        self.flush_filter(from, events)?;
        if from == Side::Upstream {
            // Whatever the filter still holds is an incomplete unit that no data completes now.
            self.release_deferred()?;
        }
        self.leg_mut(from).inbound = Inbound::Eof;
        self.push(from.other(), Item::Eof)
    }

    /// CLOSE from `from`. What a filter held of `from`'s data is released first, so it goes
    /// out before the CLOSE.
    pub(super) fn on_close(
        &mut self,
        from: Side,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ChannelFault> {
        self.check_inbound(from)?;
        self.flush_filter(from, events)?;
        if from == Side::Upstream {
            self.release_deferred()?;
        }
        let to = from.other();
        // Requests the other side sent that wait for a decision before going to the closing
        // side: refused. Requests the closing side sent that are still held: dropped.
        self.cancel_held(from);
        self.cancel_held(to);
        // The closing side reads nothing more and answers nothing more.
        let dropped = self.leg_mut(from).clear_queue();
        self.leg_mut(to).credit(dropped);
        {
            let leg = self.leg_mut(from);
            leg.inbound = Inbound::Closed;
            leg.owed.clear();
            leg.awaited = 0;
        }
        // Requests the other side sent that the closing side would have answered: refused.
        for owed in self.leg_mut(to).owed.iter_mut() {
            if let Owed::Relayed = owed {
                *owed = Owed::Ready {
                    reply: Some(false),
                    then: Vec::new(),
                };
            }
        }
        self.drain_owed(to)?;
        // Forward the CLOSE after what is queued before it; answer the closing side once the
        // other side's CLOSE is in (or now, if it already is).
        self.leg_mut(to).push_close();
        if self.leg(to).inbound == Inbound::Closed {
            self.leg_mut(from).push_close();
        }
        Ok(())
    }

    /// Drops every held request queued toward `to` and everything behind the first one (it must
    /// not overtake the request it followed), refusing what was owed for them.
    pub(super) fn cancel_held(&mut self, to: Side) {
        let Some(first) = self
            .leg(to)
            .queue
            .iter()
            .position(|item| matches!(item, Item::Held { .. }))
        else {
            return;
        };
        let dropped: Vec<Item> = self.leg_mut(to).queue.drain(first..).collect();
        let credit = dropped
            .iter()
            .map(relayed_len)
            .fold(0u32, u32::saturating_add);
        let from = to.other();
        self.leg_mut(from).credit(credit);
        if self.leg(to).outbound == Outbound::CloseQueued
            && !matches!(self.leg(to).queue.back(), Some(Item::Close))
        {
            self.leg_mut(to).queue.push_back(Item::Close);
        }
        for item in &dropped {
            if let Item::Held { ticket, .. } = item {
                self.resolve_owed(from, *ticket, Some(false), Vec::new());
            }
        }
    }

    /// Fills in the owed entry for decision `ticket` (if the request wanted a reply, or if
    /// `then` must keep its place).
    pub(super) fn resolve_owed(
        &mut self,
        from: Side,
        ticket: u64,
        reply: Option<bool>,
        then: Vec<Item>,
    ) {
        let leg = self.leg_mut(from);
        let slot = leg
            .owed
            .iter_mut()
            .find(|o| matches!(o, Owed::Undecided(t) if *t == ticket));
        match slot {
            Some(owed) => *owed = Owed::Ready { reply, then },
            None if then.is_empty() => {}
            // No reply was owed, but the tail must still go out after earlier replies.
            None => leg.owed.push_back(Owed::Ready { reply: None, then }),
        }
    }

    /// A CHANNEL_SUCCESS / FAILURE from `from`, answering the oldest request handed on to it.
    pub(super) fn on_reply(&mut self, from: Side, success: bool) -> Result<(), ChannelFault> {
        self.check_inbound(from)?;
        let leg = self.leg_mut(from);
        if leg.awaited == 0 {
            return Err(ChannelFault::UnexpectedReply);
        }
        leg.awaited -= 1;
        let to = from.other();
        if self.leg(to).inbound == Inbound::Closed {
            // The requester closed after its request was forwarded: nobody to tell.
            return Ok(());
        }
        let slot = self
            .leg_mut(to)
            .owed
            .iter_mut()
            .find(|o| matches!(o, Owed::Relayed))
            .ok_or(ChannelFault::UnexpectedReply)?;
        *slot = Owed::Ready {
            reply: Some(success),
            then: Vec::new(),
        };
        self.drain_owed(to)
    }

    /// Moves the replies owed to `to` that are known, in order, into its queue.
    pub(super) fn drain_owed(&mut self, to: Side) -> Result<(), ChannelFault> {
        while let Some(Owed::Ready { .. }) = self.leg(to).owed.front() {
            let Some(Owed::Ready { reply, then }) = self.leg_mut(to).owed.pop_front() else {
                break;
            };
            if let Some(success) = reply {
                self.push(to, Item::Reply(success))?;
            }
            for item in then {
                if let Item::Close = item {
                    self.leg_mut(to).push_close();
                } else {
                    self.push(to, item)?;
                }
            }
        }
        Ok(())
    }

    /// Starts closing from our side (caller's request or a refusal): both legs get a CLOSE after
    /// what is already queued to them.
    pub(super) fn close_both(&mut self) {
        for side in [Side::Downstream, Side::Upstream] {
            self.cancel_held(side);
            self.leg_mut(side).push_close();
        }
    }

    /// The next payload for `to`, if anything on this channel can be sent now. `events` receives
    /// the observations of what is handed on.
    pub(super) fn poll_transmit(
        &mut self,
        to: Side,
        observe_data: bool,
        events: &mut VecDeque<Event>,
    ) -> Option<Vec<u8>> {
        let id = self.id;
        let leg = self.leg_mut(to);
        let peer = leg.peer;
        if let Some(bytes) = leg.take_adjust() {
            let mut w = Writer::message(msg::CHANNEL_WINDOW_ADJUST);
            w.u32(peer).u32(bytes);
            return Some(w.into_bytes());
        }
        match leg.queue.front_mut()? {
            Item::Held { .. } => None,
            Item::Data {
                ext,
                bytes,
                relayed,
                cost,
            } => {
                let chunk = bytes
                    .len()
                    .min(usize::try_from(leg.send_window).unwrap_or(usize::MAX))
                    .min(usize::try_from(leg.send_max_packet).unwrap_or(usize::MAX))
                    .min(usize::try_from(MAX_DATA_CHUNK).unwrap_or(usize::MAX));
                if chunk == 0 {
                    return None;
                }
                let (ext, relayed) = (*ext, *relayed);
                let mut w = match ext {
                    None => Writer::message(msg::CHANNEL_DATA),
                    Some(code) => {
                        let mut w = Writer::message(msg::CHANNEL_EXTENDED_DATA);
                        w.u32(peer).u32(code);
                        w
                    }
                };
                if ext.is_none() {
                    w.u32(peer);
                }
                let len = u32::try_from(chunk).unwrap_or(u32::MAX);
                w.u32(len);
                // Straight from the ring buffer's two halves into the payload; the copy for the
                // observation event is made only when the caller records data.
                let (front, back) = bytes.as_slices();
                let from_front = chunk.min(front.len());
                w.raw(front.get(..from_front).unwrap_or_default());
                w.raw(back.get(..chunk - from_front).unwrap_or_default());
                let observed: Vec<u8> = if relayed && observe_data {
                    bytes.range(..chunk).copied().collect()
                } else {
                    Vec::new()
                };
                // The sender's window these bytes held: all of it with the last byte, else in
                // proportion (exactly `len` for data relayed as received, whose cost is its
                // length).
                let queued = bytes.len();
                let release = if chunk >= queued {
                    *cost
                } else {
                    let share = u64::from(*cost)
                        .saturating_mul(u64::try_from(chunk).unwrap_or(u64::MAX))
                        / u64::try_from(queued).unwrap_or(u64::MAX).max(1);
                    u32::try_from(share).unwrap_or(*cost).min(*cost)
                };
                *cost -= release;
                bytes.drain(..chunk);
                let now_empty = bytes.is_empty();
                if now_empty {
                    leg.queue.pop_front();
                }
                leg.send_window -= len;
                if relayed {
                    leg.delivered = leg.delivered.saturating_add(u64::from(len));
                    self.leg_mut(to.other()).credit(release);
                    if observe_data {
                        events.push_back(match to {
                            Side::Upstream => Event::Input {
                                channel: id,
                                bytes: observed,
                            },
                            Side::Downstream => Event::Output {
                                channel: id,
                                stream: if ext == Some(EXTENDED_DATA_STDERR) {
                                    Stream::Stderr
                                } else {
                                    Stream::Stdout
                                },
                                bytes: observed,
                            },
                        });
                    }
                }
                Some(w.into_bytes())
            }
            _ => {
                let item = leg.queue.pop_front()?;
                Some(match item {
                    Item::Confirm(payload) => payload,
                    Item::Request {
                        mut payload,
                        want_reply,
                        note,
                    } => {
                        set_recipient(&mut payload, peer);
                        if want_reply {
                            leg.awaited = leg.awaited.saturating_add(1);
                        }
                        if let Some(event) = observation(id, note) {
                            events.push_back(event);
                        }
                        payload
                    }
                    Item::Reply(true) => channel_only(msg::CHANNEL_SUCCESS, peer),
                    Item::Reply(false) => channel_only(msg::CHANNEL_FAILURE, peer),
                    Item::Eof => channel_only(msg::CHANNEL_EOF, peer),
                    Item::Close => {
                        leg.outbound = Outbound::CloseSent;
                        channel_only(msg::CHANNEL_CLOSE, peer)
                    }
                    // Matched above; kept so the match is total without a panic path.
                    Item::Held { .. } | Item::Data { .. } => return None,
                })
            }
        }
    }
}

fn observation(channel: ChannelId, note: Note) -> Option<Event> {
    match note {
        Note::None => None,
        Note::Resize(size) => Some(Event::Resize { channel, size }),
        Note::ExitStatus(status) => Some(Event::ExitStatus { channel, status }),
        Note::ExitSignal {
            signal,
            core_dumped,
        } => Some(Event::ExitSignal {
            channel,
            signal,
            core_dumped,
        }),
    }
}

fn channel_only(number: u8, recipient: u32) -> Vec<u8> {
    let mut w = Writer::message(number);
    w.u32(recipient);
    w.into_bytes()
}
