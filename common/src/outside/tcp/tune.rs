//! Socket options of the outside TCP connection: no Nagle delay, a small
//! unsent backlog, and the congestion control (`tunnel.congestion`).

/// Unsent bytes the kernel may hold per connection before it stops taking
/// more: enough to keep the link busy, little enough that a ping queued
/// behind a bulk transfer waits microseconds, not milliseconds.
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Congestion control of the outside connection unless configured
/// (`tunnel.congestion`): chosen by what the connection carries
/// ([`super::info::TcpHandle::used_for`]).
pub const DEFAULT_CONGESTION: &str = CONGESTION_AUTO;
/// `tunnel.congestion` value that lets twoway choose.
pub const CONGESTION_AUTO: &str = "auto";
/// `auto` while data crosses a clean, busy path: CUBIC. BBR (v1) drops its
/// window to four packets for 200 ms every ten seconds to measure the path's
/// round trip, and every flow inside the tunnel stalls with it (pings through
/// a loaded tunnel jumped from 4 to 8-9 ms at each probe).
pub const AUTO_CLEAN: &str = "cubic";
/// `auto` otherwise (UDP blocked, `transport = "tcp"`, before UDP is known to
/// work): BBR, which does not take random loss for congestion. Under 1 %
/// loss at 30 ms CUBIC is held to a few Mbit/s (about MSS/RTT x 1.2/sqrt(p)).
pub const AUTO_FALLBACK: &str = "bbr";

/// Whether `name` can be a TCP congestion control name ("" means the system
/// default).
pub fn valid_congestion(name: &str) -> bool {
    name.len() < 16 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Socket options for the outside TCP connection: no Nagle delay (we
/// coalesce ourselves), a small unsent backlog, and the congestion control
/// `congestion` (empty: the system's; `auto`: BBR until the relay knows better). Buffer sizes are left to the kernel's
/// autotuning, which follows the bandwidth-delay product.
pub fn tune(tcp: &tokio::net::TcpStream, congestion: &str) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    let _ = sock.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    let congestion = if congestion == CONGESTION_AUTO {
        AUTO_FALLBACK
    } else {
        congestion
    };
    if !congestion.is_empty() {
        if let Err(e) = sock.set_tcp_congestion(congestion.as_bytes()) {
            tracing::warn!(
                "cannot use TCP congestion control {congestion:?} (key `tunnel.congestion`): {e}"
            );
        }
    }
}
