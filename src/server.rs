//! The running gateway: reads the policy, opens the store, starts listeners, the control socket
//! and the audit writer, reloads on SIGHUP, and owns the state connections share.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use rustls::{ClientConfig, ServerConfig};
use smol::net::TcpListener;
use smol::{Executor, Task};

use crate::audit::{self, Audit, Event};
use crate::config::{self, Policy};
use crate::control;
use crate::identity::tokens::Tokens;
use crate::net::tls;
use crate::store::Store;

/// The policy and everything derived from it, swapped as a whole on reload.
pub struct Loaded {
    pub policy: Arc<Policy>,
    /// One compiled masker per `[[mask]]` rule, in policy order.
    pub maskers: Vec<Arc<crate::mask::Masker>>,
    pub server_tls: HashMap<String, Arc<ServerConfig>>,
    pub upstream_tls: HashMap<String, Option<Arc<ClientConfig>>>,
}

impl Loaded {
    /// `mask_key` keys the `hash` masking strategy (derived from the store's gateway key, so
    /// hashed values stay stable across restarts and reloads).
    pub fn build(policy: Policy, mask_key: [u8; 32]) -> Result<Loaded, String> {
        let mut maskers = Vec::with_capacity(policy.masks.len());
        for (i, m) in policy.masks.iter().enumerate() {
            let masker = crate::mask::Masker::new(&m.detectors, &m.custom, m.strategy, mask_key)
                .map_err(|e| format!("[[mask]] #{}: {e}", i + 1))?;
            maskers.push(Arc::new(masker));
        }
        let mut server_tls = HashMap::new();
        let mut upstream_tls = HashMap::new();
        for t in &policy.targets {
            if let Some(files) = &t.tls {
                let cfg =
                    tls::server_config(files).map_err(|e| format!("target {}: {e}", t.name))?;
                server_tls.insert(t.name.clone(), cfg);
            }
            let cfg = tls::client_config(t.upstream_tls, t.upstream_ca.as_deref())
                .map_err(|e| format!("target {}: {e}", t.name))?;
            upstream_tls.insert(t.name.clone(), cfg);
        }
        Ok(Loaded {
            policy: Arc::new(policy),
            maskers,
            server_tls,
            upstream_tls,
        })
    }
}

/// Where to send a cancel request for one client session.
pub struct SessionEntry {
    pub identity: String,
    pub target: String,
    pub token_id: String,
    pub cancel_secret: [u8; 4],
    pub upstream_pid: i32,
    pub upstream_secret: Vec<u8>,
    /// Closing this ends the session (identity removed, token revoked, shutdown).
    pub kill: smol::channel::Sender<String>,
    /// Tells a session that the client cancelled a statement waiting for approval.
    pub hold_cancel: smol::channel::Sender<()>,
    /// Set when a cancel request was forwarded upstream: the connection is then not kept for
    /// another session (the cancel could still reach the server after the session ended).
    pub cancel_forwarded: Arc<std::sync::atomic::AtomicBool>,
}

/// Failed authentications per client address, to slow down guessing. Bounded in size.
pub struct Failures {
    by_addr: HashMap<IpAddr, (u32, Instant)>,
}

/// How long expired token records stay listed (`token list`) before housekeeping removes them.
const TOKEN_RECORD_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

const FAILURE_WINDOW: Duration = Duration::from_secs(600);
const FAILURE_TABLE_MAX: usize = 10_000;

impl Failures {
    /// Record a failure and return how long to wait before answering it.
    pub fn record(&mut self, addr: IpAddr, now: Instant) -> Duration {
        if self.by_addr.len() >= FAILURE_TABLE_MAX {
            self.by_addr
                .retain(|_, (_, t)| now.saturating_duration_since(*t) < FAILURE_WINDOW);
            if self.by_addr.len() >= FAILURE_TABLE_MAX {
                self.by_addr.clear();
            }
        }
        let entry = self.by_addr.entry(addr).or_insert((0, now));
        if now.saturating_duration_since(entry.1) > FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        // Three free tries, then 250ms doubling up to 8s per attempt.
        match entry.0 {
            0..=3 => Duration::ZERO,
            n => Duration::from_millis(250u64 << (n - 4).min(5)),
        }
    }

    pub fn clear(&mut self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }
}

pub struct Gateway {
    loaded: RwLock<Arc<Loaded>>,
    /// Raised after every reload, once `loaded` holds the new policy (see `loaded_cached`).
    policy_generation: AtomicU64,
    pub config_path: PathBuf,
    pub tokens: Arc<Tokens>,
    pub audit: Audit,
    pub sessions: Mutex<HashMap<i32, SessionEntry>>,
    next_pid: AtomicU64,
    pub connections: AtomicUsize,
    pub failures: Mutex<Failures>,
    pub rng: SystemRandom,
    pub metrics: crate::metrics::Metrics,
    pub broker: Arc<crate::approval::Broker>,
    pub notifier: crate::approval::notify::Notifier,
    /// Table OIDs resolved to names, for `schema.table.column` mask rules.
    pub catalog: crate::proto::pg::catalog::Catalog,
    /// The threads that relay PostgreSQL sessions once they are authenticated.
    pub pg_workers: crate::proto::pg::proxy::Workers,
    /// Upstream connections kept for the next session (`upstream_pool` on a target).
    pub(crate) upstream_pool: crate::proto::pg::pool::UpstreamPool,
    /// The SSH gateway's host key (`data_dir/ssh_host_ed25519_key`, created at first start).
    pub ssh_host_key: Option<Arc<crate::ssh_gateway::host_key::HostKey>>,
    mask_key: [u8; 32],
    /// The `[gateway]` section the gateway started with: what the keys read only at start
    /// (`config::Gateway::start_only_changes`) run with until the next start, whatever reloads
    /// came since.
    started: config::Gateway,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lock a mutex even if a panicking thread poisoned it: the data it guards stays consistent
/// because every critical section is a single insert/remove/lookup.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gateway {
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The policy now, kept in `cache` between calls with what `derive` found in it: for
    /// per-statement callers. `loaded` takes the lock and counts a reference, two writes to
    /// memory every relay thread shares (its cache line moves between CPUs on every statement);
    /// this only reads the generation, which changes on reload alone, and `derive` runs once per
    /// generation (a session finds its identity and target by name there, not per statement). A
    /// statement judged while a reload is under way sees the old policy or the new one, as with
    /// `loaded`.
    pub fn loaded_cached<'c, T>(
        &self,
        cache: &'c mut Option<(u64, Arc<Loaded>, T)>,
        derive: impl FnOnce(&Loaded) -> T,
    ) -> (&'c Loaded, &'c T) {
        let generation = self.policy_generation.load(Ordering::Acquire);
        if cache
            .as_ref()
            .is_some_and(|(seen, _, _)| *seen != generation)
        {
            *cache = None;
        }
        let (_, loaded, derived) = cache.get_or_insert_with(|| {
            let loaded = self.loaded();
            let derived = derive(&loaded);
            (generation, loaded, derived)
        });
        (loaded, derived)
    }

    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        // SystemRandom only fails if the OS RNG is unavailable; a zero value then is still unique
        // enough for session ids, and secrets are never derived from it alone.
        let _ = self.rng.fill(&mut b);
        b
    }

    pub fn random_hex(&self, n: usize) -> String {
        let bytes: [u8; 32] = self.random_bytes();
        bytes
            .iter()
            .take(n.min(32))
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn allocate_pid(&self) -> i32 {
        let n = self.next_pid.fetch_add(1, Ordering::Relaxed);
        i32::try_from(n % (i32::MAX as u64 - 1) + 1).unwrap_or(1)
    }

    /// Close every session matching `pred`, telling it `reason`.
    pub fn kill_sessions(&self, reason: &str, pred: impl Fn(&SessionEntry) -> bool) -> usize {
        let sessions = lock(&self.sessions);
        let mut n = 0;
        for s in sessions.values().filter(|s| pred(s)) {
            let _ = s.kill.try_send(reason.to_string());
            n += 1;
        }
        n
    }

    /// Raised by every reload: what a session compares to know whether the policy changed since
    /// it started.
    pub fn policy_generation(&self) -> u64 {
        self.policy_generation.load(Ordering::Acquire)
    }

    /// Load the policy file again. A bad file is refused and the old policy keeps serving.
    /// Returns the `[gateway]` keys read only at start whose value in the new file differs from
    /// the one the gateway runs with (see `Gateway::start_only_changes`).
    pub fn reload(&self) -> Result<Vec<&'static str>, String> {
        let policy = config::load(&self.config_path).map_err(|e| e.to_string())?;
        let loaded = Loaded::build(policy, self.mask_key)?;
        let policy = loaded.policy.clone();
        let at_restart = self.started.start_only_changes(&policy.gateway);
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        self.policy_generation.fetch_add(1, Ordering::Release);
        self.pg_workers
            .set_busy_poll(policy.gateway.relay_busy_poll_us);
        // A kept upstream connection was opened under the old settings of its target.
        self.upstream_pool.clear();
        // Sessions whose identity or target is gone end now.
        let killed = self.kill_sessions("identity or target removed from the policy", |s| {
            policy.active_identity(&s.identity).is_none() || policy.target(&s.target).is_none()
        });
        let mut ev = Event::new("policy_reloaded")
            .str("file", self.config_path.display().to_string())
            .uint("sessions_closed", killed as u64);
        if !at_restart.is_empty() {
            ev = ev.names("at_next_start", at_restart.iter().copied());
        }
        let _ = self.audit.record_blocking(ev);
        Ok(at_restart)
    }
}

pub struct ServeOptions {
    pub config_path: PathBuf,
    pub threads: usize,
}

fn log(msg: &str) {
    eprintln!("portcullis: {msg}");
}

/// Tell systemd we are ready (Type=notify). No-op without NOTIFY_SOCKET.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = result {
        log(&format!("could not notify systemd: {e}"));
    }
}

/// Run the gateway until SIGTERM/SIGINT.
pub fn serve(opts: ServeOptions) -> Result<(), String> {
    let policy = config::load(&opts.config_path).map_err(|e| e.to_string())?;
    let flush = policy.gateway.audit_flush_interval;
    let audit_queue = policy.gateway.audit_queue;
    let audit_retention = policy.gateway.audit_retention;
    let busy_poll_us = policy.gateway.relay_busy_poll_us;
    let data_dir = policy.gateway.data_dir.clone();
    let started = policy.gateway.clone();
    let webhook_tls = match (&policy.webhooks_ca(), policy.gateway.webhooks.is_empty()) {
        (_, true) => None,
        (ca, false) => tls::client_config(crate::config::UpstreamTls::VerifyFull, ca.as_deref())
            .map_err(|e| format!("webhooks: {e}"))?,
    };
    let notifier =
        crate::approval::notify::Notifier::start(policy.gateway.webhooks.clone(), webhook_tls);
    let store = Store::open(&data_dir).map_err(|e| e.to_string())?;
    let mask_key = store.derive_key(b"mask-hash").map_err(|e| e.to_string())?;
    let loaded = Loaded::build(policy, mask_key)?;
    let tokens = Arc::new(Tokens::new(store.clone()).map_err(|e| e.to_string())?);
    let ssh_host_key =
        crate::ssh_gateway::host_key::HostKey::load_or_create(&data_dir, &SystemRandom::new())?;
    let (audit, writer) = audit::start_with(store.clone(), flush, audit_queue, audit_retention)
        .map_err(|e| e.to_string())?;
    // Requests still pending from a previous run lost their connection: they become abandoned.
    let broker = Arc::new(
        crate::approval::Broker::open(store.clone(), audit.clone(), now_unix())
            .map_err(|e| format!("approval store: {e}"))?,
    );
    let metrics = crate::metrics::Metrics::default();
    let pg_workers = crate::proto::pg::proxy::Workers::start(
        opts.threads,
        busy_poll_us,
        metrics.busy_poll.clone(),
    )
    .map_err(|e| format!("cannot start the relay workers: {e}"))?;

    let gw = Arc::new(Gateway {
        loaded: RwLock::new(Arc::new(loaded)),
        policy_generation: AtomicU64::new(0),
        config_path: opts.config_path.clone(),
        tokens: tokens.clone(),
        audit: audit.clone(),
        sessions: Mutex::new(HashMap::new()),
        next_pid: AtomicU64::new(1),
        connections: AtomicUsize::new(0),
        failures: Mutex::new(Failures {
            by_addr: HashMap::new(),
        }),
        rng: SystemRandom::new(),
        metrics,
        broker,
        notifier,
        catalog: Default::default(),
        pg_workers,
        upstream_pool: crate::proto::pg::pool::UpstreamPool::default(),
        ssh_host_key: Some(Arc::new(ssh_host_key)),
        mask_key,
        started,
    });

    let control = {
        let gw1 = gw.clone();
        let gw2 = gw.clone();
        control::serve(
            &data_dir,
            Arc::new(move || gw1.loaded().policy.clone()),
            tokens,
            audit.clone(),
            Arc::new(move |id: &str| {
                gw2.kill_sessions("token revoked", |s| s.token_id == id);
            }),
        )
        .map_err(|e| format!("control socket in {}: {e}", data_dir.display()))?
    };

    let ex = Arc::new(Executor::new());
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    // The calling thread runs the executor too, so start one fewer.
    let threads: Vec<_> = (1..opts.threads.max(1))
        .map(|i| {
            let ex = ex.clone();
            let stop_rx = stop_rx.clone();
            std::thread::Builder::new()
                .name(format!("portcullis-{i}"))
                .spawn(move || smol::block_on(ex.run(async move { stop_rx.recv().await.ok() })))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start worker threads: {e}"))?;

    let result = smol::block_on(ex.run(run(gw.clone(), ex.clone())));

    drop(stop_tx);
    for t in threads {
        let _ = t.join();
    }
    gw.kill_sessions("gateway shutting down", |_| true);
    control.shutdown();
    let _ = audit.record_blocking(Event::new("gateway_stopped"));
    drop(audit);
    drop(gw);
    writer.shutdown();
    result
}

async fn run(gw: Arc<Gateway>, ex: Arc<Executor<'static>>) -> Result<(), String> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;

    let mut signals = Signals::new([Signal::Hup, Signal::Term, Signal::Int])
        .map_err(|e| format!("signals: {e}"))?;
    let mut listeners: HashMap<SocketAddr, Task<()>> = HashMap::new();
    bind_listeners(&gw, &ex, &mut listeners).await?;
    // The approvals endpoint. Its address is read once; changing it needs a restart.
    let http = match start_http(&gw, &ex).await {
        Ok(task) => task,
        Err(e) => return Err(e),
    };
    // Housekeeping: drop token records that expired more than a week ago; time out approval
    // requests whose session is gone (the proxy times out the ones it waits for itself).
    let sweeper = {
        let gw = gw.clone();
        ex.spawn(async move {
            loop {
                smol::Timer::after(Duration::from_secs(5)).await;
                let broker = gw.broker.clone();
                let _ = smol::unblock(move || broker.expire_due(now_unix())).await;
                gw.upstream_pool.prune(std::time::Instant::now());
            }
        })
    };
    // Housekeeping: drop token records that expired more than a week ago.
    let housekeeping = {
        let tokens = gw.tokens.clone();
        ex.spawn(async move {
            loop {
                let t = tokens.clone();
                match smol::unblock(move || t.purge_expired(now_unix(), TOKEN_RECORD_KEEP)).await {
                    Ok(0) => {}
                    Ok(n) => log(&format!("purged {n} expired token record(s)")),
                    Err(e) => log(&format!("token purge: {e}")),
                }
                smol::Timer::after(Duration::from_secs(3600)).await;
            }
        })
    };
    let _ = gw
        .audit
        .record(Event::new("gateway_started").str("config", gw.config_path.display().to_string()))
        .await;
    log("ready");
    notify_systemd("READY=1");

    while let Some(sig) = signals.next().await {
        match sig {
            Ok(Signal::Hup) => {
                notify_systemd("RELOADING=1");
                match gw.reload() {
                    Ok(at_restart) => {
                        log("policy reloaded");
                        if !at_restart.is_empty() {
                            log(&format!(
                                "these [gateway] keys changed but are read at start only; \
                                 the running values stay until the next start: {}",
                                at_restart.join(", ")
                            ));
                        }
                        if let Err(e) = bind_listeners(&gw, &ex, &mut listeners).await {
                            log(&format!("after reload: {e}"));
                        }
                    }
                    Err(e) => {
                        log(&format!(
                            "reload refused, the previous policy stays in force:\n{e}"
                        ));
                        let _ = gw
                            .audit
                            .record(Event::new("policy_reload_refused").str("error", e))
                            .await;
                    }
                }
                notify_systemd("READY=1");
            }
            Ok(_) => {
                log("shutting down");
                notify_systemd("STOPPING=1");
                break;
            }
            Err(e) => log(&format!("signal error: {e}")),
        }
    }
    drop(listeners);
    drop(housekeeping);
    drop(sweeper);
    drop(http);
    Ok(())
}

/// Serve the approvals API and page, /metrics and /healthz, if `[gateway] http` is set.
async fn start_http(
    gw: &Arc<Gateway>,
    ex: &Arc<Executor<'static>>,
) -> Result<Option<Task<()>>, String> {
    let loaded = gw.loaded();
    let Some(cfg) = loaded.policy.gateway.http.clone() else {
        return Ok(None);
    };
    let tls = match &cfg.tls {
        Some(files) => Some(tls::server_config(files).map_err(|e| format!("http: {e}"))?),
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("http: cannot listen on {}: {e}", cfg.listen))?;
    log(&format!(
        "approvals endpoint on {}://{}",
        if tls.is_some() { "https" } else { "http" },
        cfg.listen
    ));
    let handler = crate::api::handler(gw.clone());
    let limits = crate::http::server::ServerLimits::default();
    Ok(Some(ex.spawn(crate::http::server::serve(
        listener,
        tls,
        handler,
        limits,
        ex.clone(),
    ))))
}

/// Start a listener for every target whose address has none yet; stop listeners of removed targets.
async fn bind_listeners(
    gw: &Arc<Gateway>,
    ex: &Arc<Executor<'static>>,
    listeners: &mut HashMap<SocketAddr, Task<()>>,
) -> Result<(), String> {
    let loaded = gw.loaded();
    let wanted: Vec<(SocketAddr, String)> = loaded
        .policy
        .targets
        .iter()
        .map(|t| (t.listen, t.name.clone()))
        .collect();
    listeners.retain(|addr, _| wanted.iter().any(|(a, _)| a == addr));
    for (addr, name) in wanted {
        if listeners.contains_key(&addr) {
            continue;
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("target {name}: cannot listen on {addr}: {e}"))?;
        log(&format!("target {name} listening on {addr}"));
        let gw2 = gw.clone();
        let ex2 = ex.clone();
        let task = ex.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        let gw3 = gw2.clone();
                        let loaded = gw3.loaded();
                        // No Nagle, keepalive (see `net::tcp`); best effort: a socket without
                        // them still works.
                        let _ = crate::net::tcp::tune(&tcp, loaded.policy.gateway.tcp_keepalive);
                        // The target at this address decides the protocol (a reload may have
                        // changed it).
                        let kind = loaded
                            .policy
                            .targets
                            .iter()
                            .find(|t| t.listen == addr)
                            .map(|t| t.kind);
                        drop(loaded);
                        match kind {
                            Some(crate::config::TargetKind::Ssh) => ex2
                                .spawn(crate::ssh_gateway::handle_connection(gw3, tcp, peer, addr))
                                .detach(),
                            _ => ex2
                                .spawn(crate::proto::pg::proxy::handle_connection(
                                    gw3, tcp, peer, addr,
                                ))
                                .detach(),
                        }
                    }
                    Err(e) => {
                        log(&format!("accept on {addr}: {e}"));
                        smol::Timer::after(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        listeners.insert(addr, task);
    }
    Ok(())
}
