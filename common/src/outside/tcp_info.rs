//! What the kernel knows about the outside TCP connection: how many
//! segments it had to send again. `auto` reads it while data uses the TLS
//! connection, to move data to UDP as soon as the path loses packets.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// A connection's segments retransmitted and data segments sent so far,
/// read on demand.
pub type RetransFn = Arc<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;

/// A reader of `socket`'s retransmission count (a duplicate of its
/// descriptor is kept, so the reader outlives no one's socket).
pub fn retrans_reader(socket: &impl std::os::fd::AsFd) -> Option<RetransFn> {
    let fd: OwnedFd = socket.as_fd().try_clone_to_owned().ok()?;
    Some(Arc::new(move || total_retrans(&fd)))
}

/// TCP_INFO's `tcpi_total_retrans` and `tcpi_data_segs_out` of `fd`.
#[allow(unsafe_code)]
fn total_retrans(fd: &OwnedFd) -> Option<(u64, u64)> {
    // SAFETY: tcp_info is a plain C struct of integers, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which lives across the
    // call; the kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
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
        let read = retrans_reader(&server).unwrap();
        let (retrans, sent) = read().unwrap();
        assert_eq!(
            retrans, 0,
            "a fresh loopback connection retransmitted nothing"
        );
        assert_eq!(sent, 1, "one data segment sent");
        drop(client);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(retrans_reader(&udp).unwrap()(), None);
    }
}
