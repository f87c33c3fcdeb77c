//! The relay phase of one SSH session: one async task drives both transports and the sans-IO
//! [`Relay`] between them, answers the relay's decisions from the policy (exec, shell,
//! subsystems, env, forwarding), holds commands for approval, and audits what runs.
//!
//! # The loop
//!
//! Each turn: hand the relay's output to the transports (only while a transport has less than
//! [`HIGH_WATER`] bytes queued for its socket: the relay returns channel window only as data is
//! taken, so a slow socket pushes back to the writer's window), act on the relay's events, then
//! wait for the first of: a socket readable, a socket writable (when bytes are queued), a
//! transport timer or the `idle_timeout` deadline, a decision on a held command, or a kill from
//! the gateway.
//!
//! SFTP channels get a [`SftpFilter`] in the relay's data path before their subsystem starts:
//! it reports every packet for audit and, for `sftp = "read-only"`, answers write requests
//! itself. Shells and execs of an identity that `[[mask]]` rules with detectors apply to get a
//! [`MaskFilter`] instead, so the client sees their output masked; the loop releases what the
//! masker holds back once the channel has been quiet for [`LIVE_MASK_IDLE`]. Such an identity
//! gets no `sftp` subsystem (masking would corrupt the files). A session the gateway ends (kill, idle) says why on every open channel's stderr
//! before the DISCONNECT.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::Stream as _;
use smol::Timer;

use super::auth::Login;
use super::conn::{Conn, ConnError};
use super::observe::Observer;
use super::recording::{self, Recordings};
use crate::approval::{self, ApprovalRequest, NewRequest, Outcome};
use crate::audit::Event as AuditEvent;
use crate::config::{Action, Identity, SftpAccess, SshTarget, Target};
use crate::policy::command::classify_bytes;
use crate::proto::ssh::connection::{ChannelKind, ChannelRequestKind, GlobalRequestKind};
use crate::proto::ssh::filter::{FilterNote, SftpFilter};
use crate::proto::ssh::mask_filter::MaskFilter;
use crate::proto::ssh::msg::DisconnectReason;
use crate::proto::ssh::relay::{
    ChannelId, Decision, Event, Relay, RelayConfig, RelayError, Side, Subject, Ticket, Verdict,
};
use crate::proto::ssh::sftp::SftpMode;
use crate::proto::ssh::transport::Event as TransportEvent;
use crate::server::{now_unix, Gateway};

/// Stop taking payloads from the relay for a side whose socket has this much queued.
const HIGH_WATER: usize = 256 * 1024;
/// Stop reading from a peer while this much is queued toward it (its own replies pile up).
const READ_STOP: usize = 4 * 1024 * 1024;
/// How long a masked channel's output must be quiet before the bytes its masker holds back are
/// released to the client. Programs write a line or a screen in one burst, which arrives well
/// within this; a secret split by a longer pause (typed slowly, echoed key by key) is seen in
/// pieces and may not be found. Short, because it is what a key's echo waits for.
const LIVE_MASK_IDLE: Duration = Duration::from_millis(30);
/// Environment variables a client may pass (`SendEnv`); others are refused.
fn env_allowed(name: &[u8]) -> bool {
    name == b"LANG" || name == b"TERM" || name.starts_with(b"LC_")
}

/// Why the session ended, for the log and the audit.
pub(super) struct Ending {
    pub reason: String,
}

/// What a channel is doing, for audit at its end.
#[derive(Default)]
struct ChannelInfo {
    /// "exec", "shell", "subsystem".
    kind: Option<&'static str>,
    command: Option<String>,
    rule: Option<String>,
    pty: bool,
    /// Its output passes through the mask filter.
    masked: bool,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
}

/// When masked channels' held output is due for release ([`LIVE_MASK_IDLE`] after their filter
/// last got data, with none of their output still waiting for the client). The relay has no
/// clock: this notes when the count of bytes each filter got ([`Relay::filters_holding`]) last
/// changed.
#[derive(Default)]
struct IdleFlush {
    /// Masked channels holding bytes: the count last seen, since when, and whether they were
    /// flushed at that count already.
    seen: HashMap<ChannelId, (u64, Instant, bool)>,
    /// Where the timer was set for this: kept while the true deadline only moves later (the
    /// timer then fires early once and is set again), so a busy stream does not re-arm the
    /// timer at every turn.
    wake: Option<Instant>,
}

impl IdleFlush {
    /// Notes what the masked channels' filters hold at `now`; returns when to wake.
    fn poll_timeout(
        &mut self,
        relay: &Relay,
        masked: impl Fn(ChannelId) -> bool,
        now: Instant,
    ) -> Option<Instant> {
        let holds: Vec<_> = relay
            .filters_holding()
            .filter(|h| masked(h.channel))
            .collect();
        self.seen
            .retain(|channel, _| holds.iter().any(|h| h.channel == *channel));
        for hold in holds {
            let seen = self
                .seen
                .entry(hold.channel)
                .or_insert((hold.fed, now, false));
            // Output waiting for the client means the target is held back by our window, not
            // quiet: the rest of what it writes (perhaps the rest of a secret) is still to come.
            if seen.0 != hold.fed || hold.queued > 0 {
                *seen = (hold.fed, now, false);
            }
        }
        let due = self
            .seen
            .values()
            .filter(|(_, _, flushed)| !flushed)
            .map(|(_, since, _)| *since + LIVE_MASK_IDLE)
            .min();
        self.wake = match (self.wake, due) {
            (Some(wake), Some(due)) if wake <= due => Some(wake),
            (_, due) => due,
        };
        self.wake
    }

    /// Flushes every channel quiet since [`LIVE_MASK_IDLE`] before `now`.
    fn handle_timeout(&mut self, relay: &mut Relay, now: Instant) -> Result<(), RelayError> {
        if self.wake.is_none_or(|w| w > now) {
            return Ok(());
        }
        self.wake = None;
        for (channel, (_, since, flushed)) in &mut self.seen {
            if !*flushed && *since + LIVE_MASK_IDLE <= now {
                relay.flush_filter(*channel)?;
                *flushed = true;
            }
        }
        Ok(())
    }
}

/// A command held for approval.
struct Held {
    ticket: Ticket,
    channel: ChannelId,
    request: ApprovalRequest,
    command: String,
    wait: Pin<Box<dyn Future<Output = Waited> + Send + Sync>>,
}

enum Waited {
    Outcome(Outcome),
    TimedOut,
}

/// What woke the loop.
enum Wake {
    Read(Side, usize),
    Eof(Side),
    Wrote,
    IoError(Side, io::Error),
    Timer,
    Kill(String),
    Decided(usize, Waited),
}

pub(super) struct Session {
    pub gw: Arc<Gateway>,
    pub id: String,
    pub identity: Identity,
    pub target: Target,
    pub login: Login,
    pub client: SocketAddr,
    channels: HashMap<ChannelId, ChannelInfo>,
    held: Vec<Held>,
    observer: Box<dyn Observer>,
    /// When channel data last moved (for `idle_timeout`).
    last_activity: Instant,
}

impl Session {
    pub fn new(
        gw: Arc<Gateway>,
        id: String,
        target: Target,
        login: Login,
        client: SocketAddr,
    ) -> Session {
        let observer = Box::new(Recordings::new(&id, &login.identity.name, &target.name));
        Session {
            gw,
            id,
            identity: login.identity.clone(),
            target,
            login,
            client,
            channels: HashMap::new(),
            held: Vec::new(),
            observer,
            last_activity: Instant::now(),
        }
    }

    fn base_event(&self, kind: &'static str) -> AuditEvent {
        AuditEvent::new(kind)
            .str("session", self.id.clone())
            .str("identity", self.identity.name.clone())
            .str("target", self.target.name.clone())
    }

    /// The target's SSH settings and the identity as the policy in force says now; None when a
    /// reload removed either (the session then ends).
    fn current(&self) -> Option<(Arc<crate::server::Loaded>, Identity, Target, SshTarget)> {
        let loaded = self.gw.loaded();
        let identity = loaded.policy.active_identity(&self.identity.name)?.clone();
        let target = loaded.policy.target(&self.target.name)?.clone();
        let ssh = target.ssh.clone()?;
        Some((loaded, identity, target, ssh))
    }

    pub async fn run(
        &mut self,
        mut down: Conn,
        mut up: Conn,
        kill: smol::channel::Receiver<String>,
    ) -> Ending {
        let mut kill = Box::pin(kill);
        let mut relay = Relay::new(RelayConfig {
            // Copies of the data feed the recording hook.
            observe_data: true,
            ..RelayConfig::default()
        });
        let mut timer = Timer::never();
        let mut armed: Option<Instant> = None;
        let mut idle_flush = IdleFlush::default();
        // `idle_timeout`: no channel data either way (keepalives don't count) and no command
        // waiting for approval, for this long, ends the session.
        let idle_timeout = self.gw.loaded().policy.gateway.idle_timeout;
        self.last_activity = Instant::now();
        let ending = loop {
            // A recording that can't go on ends the session before anything more is relayed.
            recording::report(&mut *self.observer, &self.gw.audit).await;
            if let Some(why) = self.observer.halted() {
                break why.to_owned();
            }
            // Relay output into the transports, and the relay's events.
            let now = Instant::now();
            if let Err(e) = pump(&mut relay, &mut down, Side::Downstream, now)
                .and_then(|()| pump(&mut relay, &mut up, Side::Upstream, now))
            {
                break format!("transport: {e}");
            }
            let mut progressed = false;
            while let Some(ev) = relay.poll_event() {
                progressed = true;
                self.on_relay_event(&mut relay, ev).await;
            }
            if progressed {
                continue;
            }
            let idle_deadline = match idle_timeout {
                Some(d) if self.held.is_empty() => Some(self.last_activity + d),
                _ => None,
            };
            let deadline = [
                down.transport.poll_timeout(),
                up.transport.poll_timeout(),
                idle_deadline,
                self.observer.poll_timeout(),
                idle_flush.poll_timeout(
                    &relay,
                    |channel| self.channels.get(&channel).is_some_and(|c| c.masked),
                    now,
                ),
            ]
            .into_iter()
            .flatten()
            .min();
            // Re-arming the timer costs a trip through the reactor: only when the deadline moved.
            if deadline != armed {
                armed = deadline;
                match deadline {
                    Some(at) => {
                        timer.set_at(at);
                    }
                    None => timer = Timer::never(),
                }
            }
            let wake = std::future::poll_fn(|cx| {
                poll_wake(
                    cx,
                    &mut down,
                    &mut up,
                    &mut timer,
                    &mut kill,
                    &mut self.held,
                )
            })
            .await;
            let now = Instant::now();
            match wake {
                Wake::Wrote => {}
                Wake::Read(side, n) => {
                    let conn = match side {
                        Side::Downstream => &mut down,
                        Side::Upstream => &mut up,
                    };
                    if let Err(e) = conn.feed(n) {
                        break format!("{} transport: {e}", side_name(side));
                    }
                    let events: Vec<TransportEvent> = conn.take_events().collect();
                    if let Some(reason) = self.on_transport_events(&mut relay, side, events) {
                        break reason;
                    }
                }
                Wake::Eof(side) => break format!("{} closed the connection", side_name(side)),
                Wake::IoError(side, e) => break format!("{} socket: {e}", side_name(side)),
                Wake::Timer => {
                    if let (Some(at), Some(d)) = (idle_deadline, idle_timeout) {
                        if now >= at {
                            break format!(
                                "closed by the gateway: no channel traffic for {} (idle_timeout)",
                                human(d)
                            );
                        }
                    }
                    self.observer.handle_timeout(now);
                    if let Err(e) = idle_flush.handle_timeout(&mut relay, now) {
                        break format!("relay: {e}");
                    }
                    if let Err(e) = down.transport.handle_timeout(now) {
                        break format!("client transport: {e}");
                    }
                    if let Err(e) = up.transport.handle_timeout(now) {
                        break format!("target transport: {e}");
                    }
                }
                Wake::Kill(reason) => {
                    break format!("closed by the gateway: {reason}");
                }
                Wake::Decided(i, waited) => {
                    self.last_activity = now;
                    if i < self.held.len() {
                        let held = self.held.swap_remove(i);
                        self.resolve(&mut relay, held, waited).await;
                    }
                }
            }
        };
        for held in std::mem::take(&mut self.held) {
            self.gw.broker.abandon(&held.request.id, now_unix());
        }
        // Ended by the gateway (kill, idle): say why on every open channel's stderr, which the
        // client shows whatever its LogLevel (the DISCONNECT text is only logged at INFO).
        if ending.starts_with("closed by the gateway") {
            let notice = format!("\r\nportcullis: session {ending}\r\n");
            for channel in self.channels.keys() {
                relay.send_client_stderr(*channel, notice.as_bytes());
            }
        }
        // The client often disconnects in the same packet batch as its last CLOSE: let the relay
        // finish what it was handed, so channel ends are audited with their byte counts.
        let now = Instant::now();
        let _ = pump(&mut relay, &mut up, Side::Upstream, now);
        if self.observer.halted().is_none() {
            let _ = pump(&mut relay, &mut down, Side::Downstream, now);
        }
        while let Some(ev) = relay.poll_event() {
            if !matches!(ev, Event::Decide(_)) {
                self.on_relay_event(&mut relay, ev).await;
            }
        }
        let unfinished: Vec<(ChannelId, ChannelInfo)> = self.channels.drain().collect();
        for (channel, info) in unfinished {
            if let Some(kind) = info.kind {
                let ev = self
                    .base_event("ssh_channel_closed")
                    .uint("channel", u64::from(channel.0))
                    .str("channel_kind", kind)
                    .opt_str("command", info.command)
                    .opt_str("rule", info.rule)
                    .bool("pty", info.pty)
                    .bool("masked", info.masked)
                    .bool("cut_by_session_end", true)
                    .opt_str("exit_signal", info.exit_signal);
                let ev = match info.exit_status {
                    Some(s) => ev.uint("exit_status", u64::from(s)),
                    None => ev,
                };
                let _ = self.gw.audit.record(ev).await;
            }
        }
        self.observer.end(Instant::now());
        recording::report(&mut *self.observer, &self.gw.audit).await;
        let description = if ending.starts_with("closed by the gateway") {
            format!("portcullis: {ending}")
        } else {
            "portcullis: session ended".to_owned()
        };
        down.close(DisconnectReason::ByApplication, &description)
            .await;
        up.close(DisconnectReason::ByApplication, "client session ended")
            .await;
        Ending { reason: ending }
    }

    /// Hands transport events to the relay. Some(reason) ends the session.
    fn on_transport_events(
        &mut self,
        relay: &mut Relay,
        side: Side,
        events: Vec<TransportEvent>,
    ) -> Option<String> {
        for ev in events {
            match ev {
                TransportEvent::Payload(p) => {
                    // RFC 4252 §5.1: USERAUTH requests after success "SHOULD be silently
                    // ignored"; upstream's late banners likewise.
                    if p.first().is_some_and(|&m| m < 80) {
                        continue;
                    }
                    match relay.handle(side, &p) {
                        Ok(()) => {}
                        Err(RelayError::Unrecognized { .. }) => {}
                        Err(e) => return Some(format!("{} protocol error: {e}", side_name(side))),
                    }
                }
                TransportEvent::Disconnected { description, .. } => {
                    return Some(format!(
                        "{} disconnected: {}",
                        side_name(side),
                        description.escape_debug()
                    ))
                }
                _ => {}
            }
        }
        None
    }

    /// One relay event: decisions, and what audit and recording see.
    async fn on_relay_event(&mut self, relay: &mut Relay, ev: Event) {
        let started = Instant::now();
        match ev {
            Event::Decide(d) => {
                self.last_activity = started;
                self.on_decide(relay, d).await;
            }
            Event::Opened { channel } => {
                self.channels.insert(channel, ChannelInfo::default());
            }
            Event::Input { channel, bytes } => {
                self.last_activity = started;
                self.observer.input(channel, started, &bytes);
            }
            Event::Output { channel, bytes, .. } => {
                self.last_activity = started;
                self.observer.output(channel, started, &bytes);
            }
            Event::Filtered {
                channel,
                note: FilterNote::Sftp(event),
                ..
            } => {
                if let Some(ev) = super::sftp_audit::event(&event) {
                    let ev = ev
                        .str("session", self.id.clone())
                        .str("identity", self.identity.name.clone())
                        .str("target", self.target.name.clone())
                        .uint("channel", u64::from(channel.0));
                    let _ = self.gw.audit.record(ev).await;
                }
            }
            Event::FilterFailed { channel, error } => {
                // The relay closed the channel: an SFTP stream the gateway cannot follow is
                // neither audited nor filtered, so it does not run.
                let ev = self
                    .base_event("ssh_sftp_unparsed")
                    .uint("channel", u64::from(channel.0))
                    .str("error", error.to_string());
                let _ = self.gw.audit.record(ev).await;
            }
            Event::Resize { channel, size } => self.observer.resize(channel, started, size),
            Event::ExitStatus { channel, status } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    c.exit_status = Some(status);
                }
            }
            Event::ExitSignal {
                channel, signal, ..
            } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    c.exit_signal = Some(signal);
                }
            }
            Event::Closed {
                channel,
                bytes_in,
                bytes_out,
            } => {
                self.observer.finish(channel, started);
                if let Some(info) = self.channels.remove(&channel) {
                    if let Some(kind) = info.kind {
                        let ev = self
                            .base_event("ssh_channel_closed")
                            .uint("channel", u64::from(channel.0))
                            .str("channel_kind", kind)
                            .opt_str("command", info.command)
                            .opt_str("rule", info.rule)
                            .bool("pty", info.pty)
                            .bool("masked", info.masked)
                            .uint("bytes_in", bytes_in)
                            .uint("bytes_out", bytes_out)
                            .opt_str("exit_signal", info.exit_signal);
                        let ev = match info.exit_status {
                            Some(s) => ev.uint("exit_status", u64::from(s)),
                            None => ev,
                        };
                        let _ = self.gw.audit.record(ev).await;
                    }
                }
            }
            _ => {}
        }
    }

    async fn on_decide(&mut self, relay: &mut Relay, d: Decision) {
        let Some((loaded, identity, target, ssh)) = self.current() else {
            let _ = relay.decide(d.ticket(), Verdict::Deny);
            return;
        };
        let from = d.from();
        let channel = d.channel();
        let verdict = match d.subject() {
            Err(_) => Verdict::Deny,
            Ok(Subject::Open(open)) => {
                let allowed = match (&open.kind, from) {
                    (ChannelKind::Session, Side::Downstream) => true,
                    _ => ssh.forwarding,
                };
                if !allowed {
                    self.audit_refused("channel_open", open.kind.name(), "forwarding = \"deny\"")
                        .await;
                }
                if allowed {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                }
            }
            Ok(Subject::Global(g)) => match g.kind {
                GlobalRequestKind::TcpipForward { .. }
                | GlobalRequestKind::CancelTcpipForward { .. }
                    if ssh.forwarding =>
                {
                    Verdict::Allow
                }
                kind => {
                    self.audit_refused("global_request", kind.name(), "not allowed")
                        .await;
                    Verdict::Deny
                }
            },
            Ok(Subject::Request(req)) => {
                let Some(channel) = channel else {
                    let _ = relay.decide(d.ticket(), Verdict::Deny);
                    return;
                };
                match req.kind {
                    ChannelRequestKind::Exec { command } => {
                        let command = command.to_vec();
                        self.decide_exec(
                            relay,
                            &loaded.policy,
                            &identity,
                            &target,
                            d.ticket(),
                            channel,
                            &command,
                        )
                        .await;
                        return;
                    }
                    ChannelRequestKind::Shell => {
                        if ssh.shell_allowed(&identity) {
                            self.started(channel, "shell", None, None);
                            let verdict = self
                                .audit_durable(
                                    self.base_event("ssh_shell")
                                        .uint("channel", u64::from(channel.0)),
                                )
                                .await;
                            self.recorded(relay, verdict, channel, None).await
                        } else {
                            self.audit_refused("shell", "shell", "shell = \"deny\"")
                                .await;
                            Verdict::deny_with_message(
                                format!(
                                    "portcullis: interactive shells are not allowed on target '{}' for '{}'; run commands with ssh {}@HOST COMMAND\r\n",
                                    target.name, identity.name, target.name
                                ),
                                1,
                            )
                        }
                    }
                    ChannelRequestKind::Subsystem { name }
                        if name == b"sftp"
                            && !recording::Plan::current(&self.gw, &identity, &target.name)
                                .masks()
                                .is_empty() =>
                    {
                        // Masking rewrites what the target sends, which would corrupt the files
                        // of a transfer; unmasked transfers would let the masked values out.
                        self.audit_refused(
                            "subsystem",
                            "sftp",
                            "the identity's output is masked ([[mask]] detectors apply)",
                        )
                        .await;
                        Verdict::deny_with_message(
                            format!(
                                "portcullis: sftp is refused for '{}' on target '{}': its output is masked, and masking would corrupt file transfers\n",
                                identity.name, target.name
                            ),
                            1,
                        )
                    }
                    ChannelRequestKind::Subsystem { name } if name == b"sftp" => {
                        match ssh.sftp {
                            SftpAccess::Deny => {
                                self.audit_refused("subsystem", "sftp", "sftp = \"deny\"")
                                    .await;
                                Verdict::deny_with_message(
                                    format!(
                                        "portcullis: sftp is not allowed on target '{}'\n",
                                        target.name
                                    ),
                                    1,
                                )
                            }
                            SftpAccess::ReadOnly | SftpAccess::Allow => {
                                let (mode, label) = match ssh.sftp {
                                    SftpAccess::ReadOnly => (SftpMode::ReadOnly, "read-only"),
                                    _ => (SftpMode::ReadWrite, "read-write"),
                                };
                                self.started(channel, "subsystem", Some("sftp".into()), None);
                                // The filter audits every packet and, read-only, answers write
                                // requests itself; it must be in place before the subsystem
                                // starts so no byte of the stream gets past it.
                                match relay.set_filter(channel, Box::new(SftpFilter::new(mode))) {
                                    Ok(true) => {
                                        self.audit_durable(
                                            self.base_event("ssh_sftp_started")
                                                .uint("channel", u64::from(channel.0))
                                                .str("mode", label),
                                        )
                                        .await
                                    }
                                    Ok(false) | Err(_) => Verdict::Deny,
                                }
                            }
                        }
                    }
                    ChannelRequestKind::Subsystem { name } => {
                        let name = String::from_utf8_lossy(name).into_owned();
                        self.audit_refused("subsystem", &name, "unknown subsystem")
                            .await;
                        Verdict::Deny
                    }
                    ChannelRequestKind::PtyReq { term, size, .. } => {
                        self.observer.pty(channel, size, term);
                        if let Some(c) = self.channels.get_mut(&channel) {
                            c.pty = true;
                        }
                        Verdict::Allow
                    }
                    ChannelRequestKind::Env { name, .. } => {
                        if env_allowed(name) {
                            Verdict::Allow
                        } else {
                            Verdict::Deny
                        }
                    }
                    ChannelRequestKind::Signal { .. } | ChannelRequestKind::Break { .. } => {
                        Verdict::Allow
                    }
                    ChannelRequestKind::X11Req { .. } | ChannelRequestKind::AuthAgentReq => {
                        if ssh.forwarding {
                            Verdict::Allow
                        } else {
                            self.audit_refused(
                                "channel_request",
                                req.kind.name(),
                                "forwarding = \"deny\"",
                            )
                            .await;
                            Verdict::Deny
                        }
                    }
                    other => {
                        self.audit_refused("channel_request", other.name(), "not allowed")
                            .await;
                        Verdict::Deny
                    }
                }
            }
        };
        let _ = relay.decide(d.ticket(), verdict);
    }

    fn started(
        &mut self,
        channel: ChannelId,
        kind: &'static str,
        command: Option<String>,
        rule: Option<String>,
    ) {
        let info = self.channels.entry(channel).or_default();
        info.kind = Some(kind);
        info.command = command;
        info.rule = rule;
    }

    /// Makes `ev` durable before what it describes runs; if the audit log is down, refuses.
    async fn audit_durable(&self, ev: AuditEvent) -> Verdict {
        match self.gw.audit.record_durable(ev).await {
            Ok(_) => Verdict::Allow,
            Err(_) => {
                Verdict::deny_with_message("portcullis: the audit log is unavailable; refused\n", 1)
            }
        }
    }

    /// A shell or exec allowed so far (`verdict`) gets its output masked when `[[mask]]` rules
    /// with detectors apply (a [`MaskFilter`] in the relay, in place before the request is
    /// forwarded, so no output passes unmasked) and starts its recording; refused if either
    /// can't be set up (see `recording::start`).
    async fn recorded(
        &mut self,
        relay: &mut Relay,
        verdict: Verdict,
        channel: ChannelId,
        command: Option<&str>,
    ) -> Verdict {
        if verdict != Verdict::Allow {
            return verdict;
        }
        let identity = self
            .current()
            .map_or_else(|| self.identity.clone(), |(_, identity, ..)| identity);
        let mut plan = recording::Plan::current(&self.gw, &identity, &self.target.name);
        if let Some(filter) = MaskFilter::new(plan.masks()) {
            if !matches!(relay.set_filter(channel, Box::new(filter)), Ok(true)) {
                return Verdict::Deny;
            }
            if let Some(c) = self.channels.get_mut(&channel) {
                c.masked = true;
            }
            plan = plan.output_masked_by_relay();
        }
        recording::start(&mut *self.observer, &self.gw, &plan, channel, command).await
    }

    async fn audit_refused(&self, what: &'static str, name: &str, why: &str) {
        let ev = self
            .base_event("ssh_refused")
            .str("request", what)
            .str("name", name.to_owned())
            .str("reason", why.to_owned());
        let _ = self.gw.audit.record(ev).await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide_exec(
        &mut self,
        relay: &mut Relay,
        policy: &crate::config::Policy,
        identity: &Identity,
        target: &Target,
        ticket: Ticket,
        channel: ChannelId,
        command: &[u8],
    ) {
        let line = classify_bytes(command);
        let text = String::from_utf8_lossy(command).into_owned();
        let decision = crate::policy::ssh::decide_exec(policy, identity, target, &line);
        let programs: Vec<String> = line.commands.iter().map(|c| c.program.clone()).collect();
        let flags: Vec<String> = line.flags().names().map(str::to_owned).collect();
        let ev = self
            .base_event("ssh_exec")
            .uint("channel", u64::from(channel.0))
            .str("command", text.clone())
            .list("programs", programs)
            .list("flags", flags)
            .bool("understood", line.is_known())
            .str("decision", decision.action.as_str())
            .opt_str("rule", decision.rule.clone())
            .opt_str("message", decision.message.clone());
        let counters = self.gw.metrics.target(&target.name);
        match decision.action {
            Action::Allow => {
                let verdict = self.audit_durable(ev).await;
                let verdict = self.recorded(relay, verdict, channel, Some(&text)).await;
                if verdict == Verdict::Allow {
                    self.started(channel, "exec", Some(text), decision.rule);
                }
                let _ = relay.decide(ticket, verdict);
            }
            Action::Block => {
                let _ = self.gw.audit.record(ev).await;
                counters.statements_blocked.add(1);
                let message = decision
                    .message
                    .unwrap_or_else(|| "command refused by policy".into());
                let _ = relay.decide(
                    ticket,
                    Verdict::deny_with_message(format!("portcullis: {message}\n"), 1),
                );
            }
            Action::Approve => {
                let _ = self.gw.audit.record(ev).await;
                let rule_name = decision.rule.clone().unwrap_or_default();
                self.hold(relay, policy, ticket, channel, text, rule_name)
                    .await;
            }
        }
    }

    /// Holds an exec for approval (or runs it at once under an active grant).
    async fn hold(
        &mut self,
        relay: &mut Relay,
        policy: &crate::config::Policy,
        ticket: Ticket,
        channel: ChannelId,
        text: String,
        rule_name: String,
    ) {
        let now = now_unix();
        let fingerprint = approval::fingerprint(&text);
        if let Some(grant) =
            self.gw
                .broker
                .active_grant(&self.identity.name, &self.target.name, &fingerprint, now)
        {
            let label = format!("{rule_name} (grant {})", grant.id);
            self.admit(relay, ticket, channel, text, label).await;
            return;
        }
        let (timeout, required) = policy
            .rules
            .iter()
            .find(|r| r.name == rule_name)
            .map(|r| (r.timeout, r.approvals))
            .unwrap_or((Duration::from_secs(600), 1));
        let origin = match self.login.token.as_ref().map(|t| t.origin.as_str()) {
            Some(o) if !o.is_empty() => format!("{o} (ssh client {})", self.client),
            _ => format!("ssh client {}", self.client),
        };
        let new = NewRequest {
            requester: self.identity.name.clone(),
            origin,
            target: self.target.name.clone(),
            session: self.id.clone(),
            hash: approval::exact_hash(&text, &[]),
            params: Vec::new(),
            text: text.clone(),
            rule: rule_name.clone(),
            expires_at: now.saturating_add(timeout.as_secs().max(1)),
            required,
        };
        let broker = self.gw.broker.clone();
        match smol::unblock(move || broker.submit(new, now)).await {
            Ok((request, outcome)) => {
                self.gw
                    .metrics
                    .target(&self.target.name)
                    .statements_held
                    .add(1);
                let public_url = policy.gateway.public_url.clone();
                self.gw.notifier.notify(crate::approval::notify::payload(
                    &request,
                    public_url.as_deref(),
                ));
                let link = match &public_url {
                    Some(base) => format!("{}/requests/{}", base.trim_end_matches('/'), request.id),
                    None => "the gateway's approval page".to_owned(),
                };
                let notice = format!(
                    "portcullis: command held for approval (request {id}, rule {rule}); waiting up to {wait}\nportcullis: approve at {link} or with: portcullis approvals approve {id}\n",
                    id = request.id,
                    rule = rule_name,
                    wait = human(timeout),
                );
                relay.send_client_stderr(channel, notice.as_bytes());
                let wait = Box::pin(async move {
                    smol::future::or(
                        async {
                            outcome
                                .recv()
                                .await
                                .map_or(Waited::TimedOut, Waited::Outcome)
                        },
                        async {
                            Timer::after(timeout).await;
                            Waited::TimedOut
                        },
                    )
                    .await
                });
                self.held.push(Held {
                    ticket,
                    channel,
                    request,
                    command: text,
                    wait,
                });
            }
            Err(e) => {
                let _ = relay.decide(
                    ticket,
                    Verdict::deny_with_message(
                        format!("portcullis: this command needs approval, but it could not be held: {e}\n"),
                        1,
                    ),
                );
            }
        }
    }

    /// Runs an approved command: durable audit first.
    async fn admit(
        &mut self,
        relay: &mut Relay,
        ticket: Ticket,
        channel: ChannelId,
        text: String,
        label: String,
    ) {
        let ev = self
            .base_event("ssh_exec_approved")
            .uint("channel", u64::from(channel.0))
            .str("command", text.clone())
            .str("rule", label.clone());
        let verdict = self.audit_durable(ev).await;
        let verdict = self.recorded(relay, verdict, channel, Some(&text)).await;
        if verdict == Verdict::Allow {
            self.started(channel, "exec", Some(text), Some(label));
        }
        let _ = relay.decide(ticket, verdict);
    }

    async fn resolve(&mut self, relay: &mut Relay, held: Held, waited: Waited) {
        let Held {
            ticket,
            channel,
            request,
            command,
            ..
        } = held;
        let id = request.id.clone();
        let waited = match waited {
            // The approver may have said yes in the same instant the timer fired.
            Waited::TimedOut => match self.gw.broker.expire(&id, now_unix()) {
                Some(_) => Waited::TimedOut,
                None => match self.gw.broker.get(&id).map(|r| r.state) {
                    Some(approval::State::Approved) => Waited::Outcome(Outcome::Approved),
                    _ => Waited::TimedOut,
                },
            },
            other => other,
        };
        let message = match waited {
            Waited::Outcome(Outcome::Approved) => {
                let label = format!("{} (approved: {id})", request.rule);
                self.admit(relay, ticket, channel, command, label).await;
                return;
            }
            Waited::Outcome(Outcome::Denied { by, reason }) => {
                format!("request {id} was denied by {by}: {reason}")
            }
            Waited::Outcome(Outcome::Abandoned) => format!("approval request {id} was abandoned"),
            Waited::Outcome(Outcome::TimedOut) | Waited::TimedOut => {
                format!("approval request {id} timed out")
            }
        };
        let ev = self
            .base_event("ssh_exec_refused")
            .uint("channel", u64::from(channel.0))
            .str("command", command)
            .str("rule", request.rule.clone())
            .str("approval", id)
            .str("message", message.clone());
        let _ = self.gw.audit.record(ev).await;
        let _ = relay.decide(
            ticket,
            Verdict::deny_with_message(format!("portcullis: {message}\n"), 1),
        );
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Downstream => "client",
        Side::Upstream => "target",
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// Moves the relay's payloads for `side` into its transport while the socket keeps up.
fn pump(relay: &mut Relay, conn: &mut Conn, side: Side, now: Instant) -> Result<(), ConnError> {
    while conn.transport.pending_output().len() < HIGH_WATER {
        match relay.poll_transmit(side) {
            Some(p) => conn.transport.send_payload(p, now)?,
            None => break,
        }
    }
    Ok(())
}

fn poll_wake(
    cx: &mut Context<'_>,
    down: &mut Conn,
    up: &mut Conn,
    timer: &mut Timer,
    kill: &mut Pin<Box<smol::channel::Receiver<String>>>,
    held: &mut [Held],
) -> Poll<Wake> {
    for (side, conn) in [(Side::Downstream, &mut *down), (Side::Upstream, &mut *up)] {
        let pending = conn.transport.pending_output();
        if !pending.is_empty() {
            match Pin::new(&mut conn.stream).poll_write(cx, pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Wake::IoError(side, io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    conn.transport.consume_output(n);
                    return Poll::Ready(Wake::Wrote);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Wake::IoError(side, e)),
                Poll::Pending => {}
            }
        }
    }
    for (side, conn) in [(Side::Downstream, &mut *down), (Side::Upstream, &mut *up)] {
        if conn.transport.pending_output().len() >= READ_STOP {
            continue;
        }
        let Conn { stream, buf, .. } = conn;
        match Pin::new(stream).poll_read(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Wake::Eof(side)),
            Poll::Ready(Ok(n)) => return Poll::Ready(Wake::Read(side, n)),
            Poll::Ready(Err(e)) => return Poll::Ready(Wake::IoError(side, e)),
            Poll::Pending => {}
        }
    }
    if let Poll::Ready(reason) = kill.as_mut().poll_next(cx) {
        return Poll::Ready(Wake::Kill(
            reason.unwrap_or_else(|| "gateway shutting down".into()),
        ));
    }
    for (i, h) in held.iter_mut().enumerate() {
        if let Poll::Ready(w) = h.wait.as_mut().poll(cx) {
            return Poll::Ready(Wake::Decided(i, w));
        }
    }
    if Pin::new(timer).poll(cx).is_ready() {
        return Poll::Ready(Wake::Timer);
    }
    Poll::Pending
}
