//! The outside TCP connection as the relay sees it: how many segments the
//! kernel had to send again (`auto` reads it while data uses the TLS
//! connection, to move data to UDP as soon as the path loses packets), and
//! its congestion control, which follows what the connection is used for
//! when `tunnel.congestion = "auto"`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use super::tune::{AUTO_CLEAN, AUTO_FALLBACK};

/// What the TLS connection carries, for its congestion control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpUse {
    /// Data goes over UDP; the connection carries control only.
    Control,
    /// Data, because `auto` found the path clean and busy.
    CleanData,
    /// Data, because UDP does not work or is not used.
    Fallback,
}

/// A duplicate of the outside connection's descriptor (so it outlives no
/// one's socket) and whether its congestion control is ours to choose.
#[derive(Debug)]
pub struct TcpHandle {
    fd: OwnedFd,
    auto_congestion: bool,
}

impl TcpHandle {
    /// A handle on `socket`; `congestion` is the `tunnel.congestion` value.
    pub fn new(socket: &impl AsFd, congestion: &str) -> Option<Arc<Self>> {
        let fd = socket.as_fd().try_clone_to_owned().ok()?;
        Some(Arc::new(Self {
            fd,
            auto_congestion: congestion == super::tune::CONGESTION_AUTO,
        }))
    }

    /// Segments retransmitted and data segments sent so far.
    pub fn counts(&self) -> Option<(u64, u64)> {
        total_retrans(&self.fd)
    }

    /// With `congestion = "auto"`: CUBIC while data crosses a clean, busy
    /// path (low queueing, no loss to fear), BBR otherwise (it keeps its rate
    /// under random loss, where CUBIC falls to a few Mbit/s).
    pub fn used_for(&self, what: TcpUse) {
        if !self.auto_congestion {
            return;
        }
        let name = if what == TcpUse::CleanData {
            AUTO_CLEAN
        } else {
            AUTO_FALLBACK
        };
        let sock = socket2::SockRef::from(&self.fd);
        if let Err(e) = sock.set_tcp_congestion(name.as_bytes()) {
            tracing::debug!(error = %e, congestion = name, "cannot switch the TCP congestion control");
        }
    }
}

/// TCP_INFO's `tcpi_total_retrans` and `tcpi_data_segs_out` of `fd`.
#[allow(unsafe_code)]
fn total_retrans(fd: &OwnedFd) -> Option<(u64, u64)> {
    // SAFETY: tcp_info is a plain C struct of integers, valid when zeroed.
    let mut info: nix::libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<nix::libc::tcp_info>() as nix::libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which lives across the
    // call; the kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        nix::libc::getsockopt(
            fd.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_INFO,
            (&mut info as *mut nix::libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some((
        u64::from(info.tcpi_total_retrans),
        u64::from(info.tcpi_data_segs_out),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_live_connection_and_not_a_udp_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut server, b"four").unwrap();
        let tcp = TcpHandle::new(&server, "auto").unwrap();
        let (retrans, sent) = tcp.counts().unwrap();
        assert_eq!(
            retrans, 0,
            "a fresh loopback connection retransmitted nothing"
        );
        assert_eq!(sent, 1, "one data segment sent");
        drop(client);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(TcpHandle::new(&udp, "").unwrap().counts(), None);
    }

    fn congestion(socket: &std::net::TcpStream) -> String {
        let name = socket2::SockRef::from(socket).tcp_congestion().unwrap();
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_owned()
    }

    #[test]
    fn auto_congestion_follows_the_use() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let available =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                .unwrap_or_default();
        if !(available.contains("bbr") && available.contains("cubic")) {
            // tcp_bbr is a module; without it `auto` stays on what it has.
            eprintln!("skipped: this kernel offers {available:?}");
            return;
        }
        let tcp = TcpHandle::new(&client, "auto").unwrap();
        tcp.used_for(TcpUse::CleanData);
        assert_eq!(congestion(&client), "cubic");
        tcp.used_for(TcpUse::Fallback);
        assert_eq!(congestion(&client), "bbr");
        tcp.used_for(TcpUse::CleanData);
        tcp.used_for(TcpUse::Control);
        assert_eq!(congestion(&client), "bbr");
        // A fixed choice is left alone.
        let fixed = TcpHandle::new(&client, "cubic").unwrap();
        fixed.used_for(TcpUse::CleanData);
        assert_eq!(congestion(&client), "bbr");
    }
}
