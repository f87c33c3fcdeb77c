//! The async shell around [`parse_request`]: accept loop, optional TLS, one driver per connection,
//! timeouts. Everything about bytes is decided in `parse.rs` and `response.rs`; this file only
//! moves them and keeps time.
//!
//! Bounds per connection: the TLS handshake and each request (from its first byte to its last)
//! must finish within `header_timeout` (slowloris); between requests the client may stay silent
//! for `idle_timeout`; writing a response may take `idle_timeout`. The buffer never holds more
//! than one request (`max_head + max_body`) plus one read. Handlers themselves are not timed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer};

use super::parse::{parse_request, wants_continue, Limits, Method, Request};
use super::response::Response;
use crate::net::stream::Stream;

/// Answers one request. Arguments: the request, the peer address, whether it came over TLS.
pub type Handler = Arc<
    dyn Fn(Request, SocketAddr, bool) -> Pin<Box<dyn Future<Output = Response> + Send>>
        + Send
        + Sync,
>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub parse: Limits,
    /// The TLS handshake, and each request head and body, must arrive within this (10 s).
    pub header_timeout: Duration,
    /// How long a connection may wait for the first byte of its next request (60 s); also the
    /// bound on writing one response.
    pub idle_timeout: Duration,
    /// Open connections; one more is answered 503 and closed (256).
    pub max_connections: usize,
    /// Requests on one connection before it is closed (1000).
    pub max_requests_per_connection: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            parse: Limits::default(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_requests_per_connection: 1000,
        }
    }
}

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// After the last response on a connection: how long, and how much, to drain the client's
/// unread bytes so closing does not reset the connection and destroy the response in flight
/// (RFC 9112 §9.6, "lingering close").
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// Connections over the cap being answered 503 at the same time; beyond this they are dropped.
const MAX_REJECTING: usize = 64;
/// The whole 503 exchange (including a TLS handshake) must fit in this.
const REJECT_TIME: Duration = Duration::from_secs(2);

/// Accepts connections on `listener` and serves each on `ex` until the listener fails fatally
/// (a closed or invalid socket). Transient accept errors (a peer that reset before accept, no
/// file descriptors left) are waited out. With `tls`, every connection must complete a TLS
/// handshake first.
///
/// Dropping the returned future stops accepting; open connections run on until they end on
/// their own, which the timeouts in `limits` bound.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    limits: ServerLimits,
    ex: Arc<Executor<'static>>,
) {
    let limits = Arc::new(limits);
    let open = Arc::new(AtomicUsize::new(0));
    let rejecting = Arc::new(AtomicUsize::new(0));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_fatal(&e) => return,
            Err(_) => {
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Responses are written whole; no reason to wait for more.
        let _ = tcp.set_nodelay(true);
        if let Some(slot) = Slot::take(&open, limits.max_connections) {
            let (tls, handler, limits) = (tls.clone(), handler.clone(), limits.clone());
            ex.spawn(async move {
                connection(tcp, peer, tls, handler, &limits).await;
                drop(slot);
            })
            .detach();
        } else if let Some(slot) = Slot::take(&rejecting, MAX_REJECTING) {
            let tls = tls.clone();
            ex.spawn(async move {
                reject(tcp, tls).await;
                drop(slot);
            })
            .detach();
        }
        // else: dropped without a word; a flood gets no more of our time than that.
    }
}

/// Errors after which `accept` will never succeed again (Linux errno values: EBADF, EINVAL,
/// ENOTSOCK, EOPNOTSUPP).
fn is_fatal(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput || matches!(e.raw_os_error(), Some(9 | 22 | 88 | 95))
}

/// One unit of a counted capacity; given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What reading the next request came to.
enum Incoming {
    Request(Request),
    /// Refuse with this status and message, then close.
    Refused(u16, String),
    /// The peer closed, went idle, or the socket failed: close without a word.
    Closed,
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    limits: &ServerLimits,
) {
    let mut timer = Timer::never();
    let is_tls = tls.is_some();
    let Some(mut stream) = handshake(tcp, tls, &mut timer, limits.header_timeout).await else {
        return;
    };
    let mut buf = Vec::new();
    let mut served: usize = 0;
    loop {
        let request = match read_request(&mut stream, &mut buf, limits, &mut timer).await {
            Incoming::Request(request) => request,
            Incoming::Closed => return,
            Incoming::Refused(status, message) => {
                let response = Response::text(status, &format!("{message}\n"));
                let _ = send(&mut stream, &response, false, false, limits, &mut timer).await;
                linger(stream, &mut timer).await;
                return;
            }
        };
        served = served.saturating_add(1);
        let keep_alive = request.keep_alive && served < limits.max_requests_per_connection;
        let head_only = request.method == Method::Head;
        let response = handler(request, peer, is_tls).await;
        if !send(
            &mut stream,
            &response,
            head_only,
            keep_alive,
            limits,
            &mut timer,
        )
        .await
        {
            return;
        }
        if !keep_alive {
            linger(stream, &mut timer).await;
            return;
        }
    }
}

/// Plain TCP as is, or a completed TLS handshake within `timeout`.
async fn handshake(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    timer: &mut Timer,
    timeout: Duration,
) -> Option<Stream> {
    let Some(config) = tls else {
        return Some(Stream::Plain(tcp));
    };
    let accept = futures_rustls::TlsAcceptor::from(config).accept(tcp);
    match with_deadline(timer, Instant::now() + timeout, accept).await {
        Some(Ok(tls)) => Some(Stream::TlsServer(Box::new(tls))),
        _ => None,
    }
}

/// Reads until one request parses. Bytes left over from a pipelining client stay in `buf`.
async fn read_request(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    limits: &ServerLimits,
    timer: &mut Timer,
) -> Incoming {
    // The clock for a request starts with its first byte, which may already be buffered.
    let mut head_deadline = (!buf.is_empty()).then(|| Instant::now() + limits.header_timeout);
    let mut continued = false;
    loop {
        match parse_request(buf, &limits.parse) {
            Ok(Some((request, used))) => {
                buf.drain(..used);
                return Incoming::Request(request);
            }
            Ok(None) => {}
            Err(e) => return Incoming::Refused(e.status(), e.to_string()),
        }
        let deadline = head_deadline.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        if !continued && wants_continue(buf, &limits.parse) {
            continued = true;
            let write = async {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                stream.flush().await
            };
            if !matches!(with_deadline(timer, deadline, write).await, Some(Ok(()))) {
                return Incoming::Closed;
            }
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let read = with_deadline(timer, deadline, stream.read(&mut buf[start..])).await;
        let n = match read {
            Some(Ok(n)) => n,
            Some(Err(_)) => 0,
            None if head_deadline.is_some() => {
                return Incoming::Refused(408, "request not received in time".to_string());
            }
            None => 0,
        };
        buf.truncate(start + n);
        if n == 0 {
            return Incoming::Closed;
        }
        head_deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
    }
}

/// Encodes and writes one response; `false` if the connection is unusable afterwards.
async fn send(
    stream: &mut Stream,
    response: &Response,
    head_only: bool,
    keep_alive: bool,
    limits: &ServerLimits,
    timer: &mut Timer,
) -> bool {
    let mut out = Vec::with_capacity(512 + response.body.len());
    response.encode(head_only, keep_alive, &mut out);
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    matches!(
        with_deadline(timer, Instant::now() + limits.idle_timeout, write).await,
        Some(Ok(()))
    )
}

/// Closes our direction (TLS close_notify, then TCP FIN), then drains what the client still
/// sends for a bounded time, so the kernel does not answer unread data with a reset that would
/// destroy the response on its way.
async fn linger(mut stream: Stream, timer: &mut Timer) {
    let deadline = Instant::now() + LINGER_TIME;
    if !matches!(
        with_deadline(timer, deadline, stream.close()).await,
        Some(Ok(()))
    ) {
        return;
    }
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match with_deadline(timer, deadline, stream.read(&mut sink)).await {
            Some(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

/// The answer for a connection over the cap: 503, then close.
async fn reject(tcp: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) {
    let mut timer = Timer::never();
    let Some(mut stream) = handshake(tcp, tls, &mut timer, REJECT_TIME).await else {
        return;
    };
    let response =
        Response::text(503, "too many connections, try again\n").header("Retry-After", "1");
    let mut out = Vec::new();
    response.encode(false, false, &mut out);
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    if matches!(
        with_deadline(&mut timer, Instant::now() + REJECT_TIME, write).await,
        Some(Ok(()))
    ) {
        linger(stream, &mut timer).await;
    }
}

/// `work`, unless `deadline` passes first (then `None`). One timer per connection, re-armed.
async fn with_deadline<T>(
    timer: &mut Timer,
    deadline: Instant,
    work: impl Future<Output = T>,
) -> Option<T> {
    timer.set_at(deadline);
    future::or(async { Some(work.await) }, async {
        (&mut *timer).await;
        None
    })
    .await
}
