//! Options every TCP connection of the data path gets, accepted from a client or dialled upstream.
//!
//! - `TCP_NODELAY`: the protocols relayed here are request/answer; a message is written whole
//!   and the peer waits for it. With Nagle's algorithm on, the last segment of a reply written in
//!   two `send`s waits for the peer's (delayed) ACK, a round trip or up to 40 ms more. PostgreSQL,
//!   libpq, pgbouncer and OpenSSH all turn it off.
//! - TCP keepalive (`[gateway] tcp_keepalive`): a client that vanished without closing (laptop
//!   lid, NAT timeout, pulled cable) would otherwise hold its session, and the upstream session
//!   behind it, for as long as the gateway runs when no idle timeout is set; an upstream that
//!   vanished would leave a client waiting for an answer for ever. The kernel's default first
//!   probe comes after two hours; the gateway's after `tcp_keepalive` of silence.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::sockopt;

/// Probes sent, after the first silence, before the connection is declared dead.
pub const KEEPALIVE_PROBES: u32 = 3;
/// Longest wait between two probes (a shorter `tcp_keepalive` probes at that period instead).
pub const KEEPALIVE_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// The wait between probes for a keepalive idle time: [`KEEPALIVE_PROBE_INTERVAL`], or `idle` if
/// shorter, never under one second (the kernel's unit).
pub fn probe_interval(idle: Duration) -> Duration {
    idle.min(KEEPALIVE_PROBE_INTERVAL)
        .max(Duration::from_secs(1))
}

/// Sets `TCP_NODELAY` and, with `keepalive = Some(idle)`, keepalive probes after `idle` of
/// silence (rounded up to whole seconds, at least one); a peer that answers none of
/// [`KEEPALIVE_PROBES`] probes is dropped by the kernel and the session ends as if it had closed.
///
/// # Errors
/// A `setsockopt` failed (not a TCP socket, or the descriptor is closed).
pub fn tune(sock: impl AsFd, keepalive: Option<Duration>) -> io::Result<()> {
    let fd = sock.as_fd();
    sockopt::set_tcp_nodelay(fd, true)?;
    let Some(idle) = keepalive else {
        return Ok(());
    };
    // The kernel counts in whole seconds: round up, so "500ms" is one second, not zero.
    let idle = Duration::from_secs(idle.as_secs() + u64::from(idle.subsec_nanos() > 0))
        .max(Duration::from_secs(1));
    sockopt::set_tcp_keepidle(fd, idle)?;
    sockopt::set_tcp_keepintvl(fd, probe_interval(idle))?;
    sockopt::set_tcp_keepcnt(fd, KEEPALIVE_PROBES)?;
    sockopt::set_socket_keepalive(fd, true)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn keepalive_and_nodelay_are_set_as_asked() {
        let (_client, server) = pair();
        assert!(!sockopt::tcp_nodelay(&server).unwrap());
        assert!(!sockopt::socket_keepalive(&server).unwrap());
        tune(&server, Some(Duration::from_secs(45))).unwrap();
        assert!(sockopt::tcp_nodelay(&server).unwrap());
        assert!(sockopt::socket_keepalive(&server).unwrap());
        assert_eq!(
            timing(&server),
            (Duration::from_secs(45), Duration::from_secs(10))
        );
        assert_eq!(sockopt::tcp_keepcnt(&server).unwrap(), KEEPALIVE_PROBES);
    }

    #[test]
    fn keepalive_off_leaves_it_off_and_still_sets_nodelay() {
        let (_client, server) = pair();
        tune(&server, None).unwrap();
        assert!(sockopt::tcp_nodelay(&server).unwrap());
        assert!(!sockopt::socket_keepalive(&server).unwrap());
    }

    /// (first probe after, period between probes) as the kernel reports them.
    fn timing(sock: &TcpStream) -> (Duration, Duration) {
        (
            sockopt::tcp_keepidle(sock).unwrap(),
            sockopt::tcp_keepintvl(sock).unwrap(),
        )
    }

    #[test]
    fn short_idle_times_round_up_and_probe_at_their_own_period() {
        let (_client, server) = pair();
        tune(&server, Some(Duration::from_millis(2500))).unwrap();
        assert_eq!(
            timing(&server),
            (Duration::from_secs(3), Duration::from_secs(3))
        );
        tune(&server, Some(Duration::from_millis(200))).unwrap();
        assert_eq!(
            timing(&server),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
    }
}
