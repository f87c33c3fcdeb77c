//! Terminal recordings of SSH sessions: every shell channel, and every exec channel with a pty,
//! is recorded as one asciicast v2 file, `<data_dir>/recordings/<session>-<n>.cast` (written by
//! [`crate::record::Recorder`]; replay with `asciinema play FILE`). `n` counts the session's
//! recordings from 0, so it is the channel number for a plain `ssh host`; it is not the channel
//! number itself because the relay reuses a closed channel's number (a multiplexed connection
//! opening one session after another), and a recording is never overwritten.
//!
//! Exec channels without a pty are not recorded: they are machine traffic (rsync, scp, git,
//! scripts) whose output is often binary and large, which asciicast encodes at several times its
//! size; their command, exit status and byte counts are in the audit log.
//!
//! # Fail closed
//!
//! - A recording that can't be created refuses the shell or exec: the client gets a message on
//!   stderr and exit status 1, the audit log gets `recording_failed`, nothing runs.
//! - The `recording_started` event naming the file is durable before the channel runs.
//! - A write that fails, or a recording that reaches its size limit, halts the session
//!   ([`Observer::halted`]): the session loop stops relaying at its next turn and disconnects the
//!   client with a message; `recording_failed` / `recording_limit_reached` say why. The relay
//!   cannot drop one channel's queued data, so the whole session ends rather than let queued
//!   output through unrecorded. Output is buffered before it reaches the disk (at most
//!   [`RecordOptions::flush_interval`] or [`RecordOptions::flush_bytes`]), and what the relay
//!   handed to the client's transport in the turn that found the failure is already on its way:
//!   that is the bound on output relayed but missing from a broken recording.
//!
//! # Masks
//!
//! When `[[mask]]` rules with detectors apply to the identity on the target, what is recorded
//! is masked, so what the detectors find is never written to the file. Output is masked by the
//! relay before the client sees it (the session puts a
//! [`MaskFilter`](crate::proto::ssh::mask_filter::MaskFilter) into the channel's data path, and
//! the relay reports output as it hands it on): the recording gets it masked already
//! ([`Plan::output_masked_by_relay`]). Input, when recorded, passes through the plan's
//! [`mask::MaskChain`] here.
//! A stream masker holds back up to a few KiB to see whole matches; an interactive terminal goes
//! quiet with bytes held, so after [`MASK_IDLE`] without data the held bytes are decided and
//! recorded, timed at the last data. A secret typed (and echoed) with pauses longer than that is
//! split and may not be found.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::observe::{Observer, Report, Started};
use crate::audit::{Audit, Event as AuditEvent};
use crate::config::Identity;
use crate::mask::{self, Masker};
use crate::proto::ssh::connection::TerminalSize;
use crate::proto::ssh::relay::{ChannelId, Verdict};
use crate::record::{
    recording_path, Header, Outcome, RecordError, RecordOptions, Recorder, DEFAULT_LIMIT,
};
use crate::server::{now_unix, Gateway};

/// Quiet time after which masked bytes held back are decided and recorded.
pub(super) const MASK_IDLE: Duration = Duration::from_secs(2);

/// What the client sees when its shell or exec is refused because it can't be recorded.
const CANNOT_RECORD: &str =
    "portcullis: this session must be recorded, and the recording could not be created; refused\r\n";

/// The session's end reason when a recording broke.
const HALT_FAILED: &str = "closed by the gateway: the session recording failed";
/// The session's end reason when a recording reached its size limit.
const HALT_LIMIT: &str = "closed by the gateway: the session recording reached its size limit";

/// How channels starting now are recorded, from the policy in force.
pub(super) struct Plan {
    data_dir: PathBuf,
    options: RecordOptions,
    /// The maskers of the `[[mask]]` rules with detectors that apply, in policy order.
    masks: Vec<Arc<Masker>>,
    /// Whether output reaches the recording masked already (by the relay's mask filter).
    output_masked: bool,
}

impl Plan {
    /// The plan for `identity` on target `target` under the policy loaded now.
    pub(super) fn current(gw: &Gateway, identity: &Identity, target: &str) -> Plan {
        let loaded = gw.loaded();
        let ssh = loaded.policy.target(target).and_then(|t| t.ssh.as_ref());
        let record_input = ssh.is_some_and(|ssh| ssh.record_input);
        let limit = ssh.map_or(DEFAULT_LIMIT, |ssh| ssh.max_recording_size);
        let masks = loaded
            .policy
            .masks
            .iter()
            .zip(&loaded.maskers)
            .filter(|(rule, _)| rule.applies(target, identity) && rule.has_detectors())
            .map(|(_, masker)| masker.clone())
            .collect();
        Plan {
            data_dir: loaded.policy.gateway.data_dir.clone(),
            options: RecordOptions {
                limit,
                record_input,
                ..RecordOptions::default()
            },
            masks,
            output_masked: false,
        }
    }

    /// The maskers of the `[[mask]]` rules with detectors that apply, in policy order: the
    /// session masks the channel's live output with them.
    pub(super) fn masks(&self) -> &[Arc<Masker>] {
        &self.masks
    }

    /// Says that the relay masks the channel's output before it is reported: the recording then
    /// masks only input (masking the masked output again could mask a replacement).
    pub(super) fn output_masked_by_relay(mut self) -> Plan {
        self.output_masked = true;
        self
    }

    #[cfg(test)]
    fn new(data_dir: PathBuf, options: RecordOptions, masks: Vec<Arc<Masker>>) -> Plan {
        Plan {
            data_dir,
            options,
            masks,
            output_masked: false,
        }
    }
}

/// Whether a channel is recorded: shells always (with or without a pty: both are someone at a
/// keyboard), execs only with a pty.
fn is_recorded(command: Option<&str>, pty: bool) -> bool {
    command.is_none() || pty
}

/// The terminal of a pty-req, kept until the shell or exec starts.
struct Pty {
    size: TerminalSize,
    term: String,
}

/// One recorded stream (output or input) through every applicable masker in turn, with the time
/// of its last data for the idle release.
struct MaskChain {
    chain: mask::MaskChain,
    /// When the stream last received data.
    last: Instant,
}

impl MaskChain {
    fn new(masks: &[Arc<Masker>], now: Instant) -> Option<MaskChain> {
        Some(MaskChain {
            chain: mask::MaskChain::new(masks)?,
            last: now,
        })
    }

    fn held(&self) -> usize {
        self.chain.held()
    }

    /// Appends to `out` what is decided once `input` is added.
    fn feed(&mut self, input: &[u8], at: Instant, out: &mut Vec<u8>) {
        self.last = at;
        self.chain.feed(input, out);
    }

    /// Decides everything held (the end of a segment, see the module docs) and appends it.
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.chain.finish(out);
    }

    /// When the held bytes are released if nothing more arrives.
    fn deadline(&self) -> Option<Instant> {
        (self.held() > 0).then(|| self.last + MASK_IDLE)
    }

    /// The time of the last data, when the held bytes are due for release at `now`.
    fn due(&self, now: Instant) -> Option<Instant> {
        self.deadline().filter(|d| now >= *d).map(|_| self.last)
    }
}

/// One channel being recorded.
struct Channel {
    recorder: Recorder,
    /// The recording's time zero.
    started: Instant,
    output_mask: Option<MaskChain>,
    input_mask: Option<MaskChain>,
}

impl Channel {
    fn time(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    /// Records masked bytes the output chain released at the end of a segment.
    fn release_output(&mut self, at: Instant) -> Result<Outcome, RecordError> {
        let Some(mask) = self.output_mask.as_mut() else {
            return Ok(Outcome::Skipped);
        };
        let mut out = Vec::new();
        mask.finish(&mut out);
        let time = self.time(at);
        self.recorder.output(time, &out)
    }

    fn release_input(&mut self, at: Instant) -> Result<Outcome, RecordError> {
        let Some(mask) = self.input_mask.as_mut() else {
            return Ok(Outcome::Skipped);
        };
        let mut out = Vec::new();
        mask.finish(&mut out);
        let time = self.time(at);
        self.recorder.input(time, &out)
    }

    fn deadline(&self) -> Option<Instant> {
        let flush = self.recorder.flush_deadline().map(|d| self.started + d);
        [
            flush,
            self.output_mask.as_ref().and_then(MaskChain::deadline),
            self.input_mask.as_ref().and_then(MaskChain::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Releases masked bytes whose segment has gone quiet, and flushes what is due.
    fn on_timeout(&mut self, now: Instant) -> Result<Outcome, RecordError> {
        let mut outcome = Outcome::Skipped;
        if let Some(last) = self.output_mask.as_ref().and_then(|m| m.due(now)) {
            outcome = worst(outcome, self.release_output(last)?);
        }
        if let Some(last) = self.input_mask.as_ref().and_then(|m| m.due(now)) {
            outcome = worst(outcome, self.release_input(last)?);
        }
        let time = self.time(now);
        self.recorder.maybe_flush(time)?;
        Ok(outcome)
    }
}

/// `LimitReached` wins over anything else, so the caller sees it once.
fn worst(a: Outcome, b: Outcome) -> Outcome {
    if a == Outcome::LimitReached || b == Outcome::LimitReached {
        Outcome::LimitReached
    } else {
        b
    }
}

/// A finished channel's recording waiting to be closed (which syncs the file).
pub(super) struct Closing {
    recorder: Recorder,
    at: Duration,
    base: AuditEvent,
}

impl Closing {
    /// Ends the recording and says how it ended. Blocking (fsync): run it off the session task.
    pub(super) fn close(self) -> AuditEvent {
        match self.recorder.finish(self.at) {
            Ok(summary) => self
                .base
                .uint("bytes", summary.bytes)
                .bool("limit_reached", summary.limit_reached),
            Err(e) => {
                let mut ev = self.base;
                ev.kind = "recording_failed";
                ev.str("error", e.to_string()).str("while", "closing")
            }
        }
    }
}

/// The recordings of one SSH session: the [`Observer`] the session feeds.
pub(super) struct Recordings {
    session: String,
    identity: String,
    target: String,
    ptys: HashMap<ChannelId, Pty>,
    channels: HashMap<ChannelId, Channel>,
    reports: Vec<Report>,
    halted: Option<&'static str>,
    /// The number of the session's next recording file.
    next_file: u32,
    /// Masked bytes of the current event.
    scratch: Vec<u8>,
}

impl Recordings {
    pub(super) fn new(session: &str, identity: &str, target: &str) -> Recordings {
        Recordings {
            session: session.to_owned(),
            identity: identity.to_owned(),
            target: target.to_owned(),
            ptys: HashMap::new(),
            channels: HashMap::new(),
            reports: Vec::new(),
            halted: None,
            next_file: 0,
            scratch: Vec::new(),
        }
    }

    fn event(&self, kind: &'static str, channel: ChannelId) -> AuditEvent {
        AuditEvent::new(kind)
            .str("session", self.session.clone())
            .str("identity", self.identity.clone())
            .str("target", self.target.clone())
            .uint("channel", u64::from(channel.0))
    }

    /// Acts on the result of a recorder call on `channel`: a failure or the size limit halts the
    /// session (audited once).
    fn check(&mut self, channel: ChannelId, result: Result<Outcome, RecordError>) {
        match result {
            Ok(Outcome::LimitReached) => {
                let Some(ch) = self.channels.get(&channel) else {
                    return;
                };
                let ev = self
                    .event("recording_limit_reached", channel)
                    .str("path", ch.recorder.path().display().to_string())
                    .uint("bytes", ch.recorder.bytes_written())
                    .uint("limit", ch.recorder.limit());
                self.reports.push(Report::Audit(ev));
                self.halted.get_or_insert(HALT_LIMIT);
            }
            Ok(_) => {}
            Err(e) => {
                // The recorder is broken for good (its errors are sticky): drop it, so its file
                // keeps what was written and nothing tries to finish it.
                let path = self
                    .channels
                    .remove(&channel)
                    .map(|ch| ch.recorder.path().display().to_string());
                let ev = self
                    .event("recording_failed", channel)
                    .opt_str("path", path)
                    .str("error", e.to_string())
                    .str("while", "recording")
                    .str("action", "session closed");
                self.reports.push(Report::Audit(ev));
                self.halted = Some(HALT_FAILED);
            }
        }
    }

    /// Moves `channel`'s recording to the reports to be closed at `at`.
    fn close(&mut self, channel: ChannelId, at: Instant) {
        let Some(mut ch) = self.channels.remove(&channel) else {
            return;
        };
        // Whatever the maskers still hold is decided now and recorded (relayed already, so it
        // belongs in the file); the size limit may still stop it, the recording ends anyway.
        let released = ch.release_output(at).and_then(|_| ch.release_input(at));
        if let Err(e) = released {
            self.channels.insert(channel, ch);
            self.check(channel, Err(e));
            return;
        }
        let base = self
            .event("recording_finished", channel)
            .str("path", ch.recorder.path().display().to_string());
        let time = ch.time(at);
        self.reports.push(Report::Close(Box::new(Closing {
            recorder: ch.recorder,
            at: time,
            base,
        })));
    }
}

impl Observer for Recordings {
    fn pty(&mut self, channel: ChannelId, size: TerminalSize, term: &[u8]) {
        let term = String::from_utf8_lossy(term).into_owned();
        self.ptys.insert(channel, Pty { size, term });
    }

    fn start(
        &mut self,
        channel: ChannelId,
        at: Instant,
        command: Option<&str>,
        plan: &Plan,
    ) -> Started {
        let pty = self.ptys.remove(&channel);
        if !is_recorded(command, pty.is_some()) {
            return Started::NotRecorded;
        }
        let (size, term) = match &pty {
            Some(p) => ((p.size.cols, p.size.rows), p.term.clone()),
            None => ((0, 0), String::new()),
        };
        let mut header = Header::new(size.0, size.1, now_unix(), term.clone());
        header.command = command.map(str::to_owned);
        header.title = Some(format!("{}@{}", self.identity, self.target));
        let created = Recorder::create(
            &plan.data_dir,
            &self.session,
            self.next_file,
            &header,
            plan.options.clone(),
        );
        let recorder = match created {
            Ok(r) => r,
            Err(e) => {
                let path = recording_path(&plan.data_dir, &self.session, self.next_file)
                    .ok()
                    .map(|p| p.display().to_string());
                let event = self
                    .event("recording_failed", channel)
                    .opt_str("path", path)
                    .str("error", e.to_string())
                    .str("while", "creating")
                    .str("action", "channel refused");
                return Started::Failed {
                    event,
                    message: CANNOT_RECORD.to_owned(),
                };
            }
        };
        self.next_file = self.next_file.saturating_add(1);
        let event = self
            .event("recording_started", channel)
            .str("path", recorder.path().display().to_string())
            .str(
                "channel_kind",
                if command.is_some() { "exec" } else { "shell" },
            )
            .opt_str("command", command)
            .uint("cols", u64::from(size.0))
            .uint("rows", u64::from(size.1))
            .str("term", term)
            .bool("input", plan.options.record_input)
            .bool("masked", !plan.masks.is_empty());
        self.channels.insert(
            channel,
            Channel {
                recorder,
                started: at,
                output_mask: if plan.output_masked {
                    None
                } else {
                    MaskChain::new(&plan.masks, at)
                },
                input_mask: if plan.options.record_input {
                    MaskChain::new(&plan.masks, at)
                } else {
                    None
                },
            },
        );
        Started::Recording { event }
    }

    fn output(&mut self, channel: ChannelId, at: Instant, bytes: &[u8]) {
        if self.halted.is_some() {
            return;
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let time = ch.time(at);
        let result = match ch.output_mask.as_mut() {
            Some(mask) => {
                self.scratch.clear();
                mask.feed(bytes, at, &mut self.scratch);
                ch.recorder.output(time, &self.scratch)
            }
            None => ch.recorder.output(time, bytes),
        };
        self.check(channel, result);
    }

    fn input(&mut self, channel: ChannelId, at: Instant, bytes: &[u8]) {
        if self.halted.is_some() {
            return;
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let time = ch.time(at);
        let result = match ch.input_mask.as_mut() {
            Some(mask) => {
                self.scratch.clear();
                mask.feed(bytes, at, &mut self.scratch);
                ch.recorder.input(time, &self.scratch)
            }
            None => ch.recorder.input(time, bytes),
        };
        self.check(channel, result);
    }

    fn resize(&mut self, channel: ChannelId, at: Instant, size: TerminalSize) {
        if self.halted.is_some() {
            return;
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let time = ch.time(at);
        let result = ch.recorder.resize(time, size.cols, size.rows);
        self.check(channel, result);
    }

    fn finish(&mut self, channel: ChannelId, at: Instant) {
        self.ptys.remove(&channel);
        self.close(channel, at);
    }

    fn end(&mut self, at: Instant) {
        self.ptys.clear();
        let mut open: Vec<ChannelId> = self.channels.keys().copied().collect();
        open.sort();
        for channel in open {
            self.close(channel, at);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.halted.is_some() {
            return None;
        }
        self.channels.values().filter_map(Channel::deadline).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.halted.is_some() {
            return;
        }
        let due: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for channel in due {
            if let Some(ch) = self.channels.get_mut(&channel) {
                let result = ch.on_timeout(now);
                self.check(channel, result);
            }
        }
    }

    fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    fn halted(&self) -> Option<&str> {
        self.halted
    }
}

/// Starts recording `channel` if it is recorded (see [`Observer::start`]) and makes the
/// `recording_started` event durable. Returns [`Verdict::Allow`] when the shell or exec may run,
/// or the refusal to send instead.
pub(super) async fn start(
    observer: &mut dyn Observer,
    gw: &Gateway,
    plan: &Plan,
    channel: ChannelId,
    command: Option<&str>,
) -> Verdict {
    match observer.start(channel, Instant::now(), command, plan) {
        Started::NotRecorded => Verdict::Allow,
        Started::Recording { event } => match gw.audit.record_durable(event).await {
            Ok(_) => Verdict::Allow,
            Err(_) => {
                Verdict::deny_with_message("portcullis: the audit log is unavailable; refused\n", 1)
            }
        },
        Started::Failed { event, message } => {
            let _ = gw.audit.record(event).await;
            Verdict::deny_with_message(message, 1)
        }
    }
}

/// Audits what the observer reports and closes the recordings it hands over (off the session
/// task: closing syncs the file). Call every loop turn before relaying, and at the session's end.
pub(super) async fn report(observer: &mut dyn Observer, audit: &Audit) {
    for report in observer.take_reports() {
        let ev = match report {
            Report::Audit(ev) => ev,
            Report::Close(closing) => smol::unblock(move || closing.close()).await,
        };
        let _ = audit.record(ev).await;
    }
}

#[cfg(test)]
#[path = "recording_tests.rs"]
mod tests;
