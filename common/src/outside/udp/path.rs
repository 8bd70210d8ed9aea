//! The state of one session's UDP path, shared by the relay's loops: where
//! datagrams go, whether data uses the path, and when an authenticated
//! datagram last arrived. The client decides (its probes), the server
//! follows (the client's Path frames), see PROTOCOL.md.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::socket::UdpSocket;
use crate::control::status::Carrier;
use crate::outside::tcp::info::{TcpHandle, TcpUse};

/// Whether datagrams can be sent to `addr`: no port 0, no unspecified,
/// multicast or broadcast address. Nothing legitimate comes from such a
/// source, and sending to one fails (port 0: EINVAL, which also makes
/// quinn-udp switch segmentation offload off on the shared socket), so a
/// datagram from there is dropped before anything is answered or moved.
pub fn replyable(addr: &SocketAddr) -> bool {
    let v4_ok = |ip: Ipv4Addr| !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast());
    addr.port() != 0
        && match addr.ip() {
            IpAddr::V4(ip) => v4_ok(ip),
            IpAddr::V6(ip) => {
                !(ip.is_unspecified() || ip.is_multicast()) && ip.to_ipv4_mapped().is_none_or(v4_ok)
            }
        }
}

/// One end's view of the path, sent in probe replies: datagrams received
/// and missing on UDP, and segments its TLS connection had to send again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathReport {
    /// Datagrams accepted.
    pub received: u64,
    /// Gaps in their counters.
    pub lost: u64,
    /// TCP retransmissions of the TLS connection.
    pub tcp_retrans: u64,
    /// Data segments the TLS connection sent.
    pub tcp_sent: u64,
}

impl PathReport {
    /// Bytes on the wire.
    pub const LEN: usize = 32;

    /// Four big-endian u64s.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.received.to_be_bytes());
        b[8..16].copy_from_slice(&self.lost.to_be_bytes());
        b[16..24].copy_from_slice(&self.tcp_retrans.to_be_bytes());
        b[24..].copy_from_slice(&self.tcp_sent.to_be_bytes());
        b
    }

    /// Reads what `encode` wrote.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let word = |i: usize| Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?));
        Some(Self {
            received: word(0)?,
            lost: word(8)?,
            tcp_retrans: word(16)?,
            tcp_sent: word(24)?,
        })
    }
}

/// One session's UDP path.
pub struct UdpPath {
    /// The socket (the server's is shared by all sessions).
    pub socket: Arc<UdpSocket>,
    /// The peer's address, and our address it last sent to.
    peer: Mutex<(Option<SocketAddr>, Option<IpAddr>)>,
    sending: AtomicBool,
    /// The peer's address was given (the client's server) and never moves.
    fixed: bool,
    created: Instant,
    /// Milliseconds after `created` of the last authenticated answer to one
    /// of our datagrams (a probe reply or a challenge), plus one (0: none yet).
    last_answer: AtomicU64,
    /// Times the peer's address changed (NAT rebinding, roaming).
    pub moves: AtomicU64,
    /// Our receive side: datagrams accepted and missing.
    rx_stats: Mutex<(u64, u64)>,
    /// The peer's last report.
    peer_report: Mutex<Option<PathReport>>,
    /// Our TLS connection.
    tcp: Option<Arc<TcpHandle>>,
    /// Challenges in flight. Only the session's read loop calls
    /// [`UdpPath::received_from`] and [`UdpPath::validated`], which take
    /// this lock and the peer's one after the other, never both at once.
    challenges: Mutex<Challenges>,
}

/// The path's challenges in flight, each in its own slot so that one cannot
/// push the other out.
#[derive(Debug, Default)]
struct Challenges {
    /// An address the peer may have moved to, challenged and not yet answered.
    candidate: Option<Candidate>,
    /// The address the path just left (RFC 9000 9.3.3).
    recheck: Option<Candidate>,
}

/// Bytes of a path challenge.
pub const CHALLENGE_LEN: usize = 8;
/// An unanswered challenge is sent again after this long (on the next
/// datagram from that address).
const CHALLENGE_AGAIN: Duration = Duration::from_millis(200);
/// A challenge's bytes stay valid this long; then the address gets new ones.
const CANDIDATE_LIFETIME: Duration = Duration::from_secs(5);

/// A new address the peer's datagrams came from, and our challenge to it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    from: SocketAddr,
    to: Option<IpAddr>,
    bytes: [u8; CHALLENGE_LEN],
    sent: Instant,
    created: Instant,
    /// A recheck counts only once the peer's newest datagram came from its
    /// address again: an echo alone an attacker can race.
    heard: bool,
}

impl Candidate {
    /// A fresh challenge to `from`, if the system has random bytes.
    fn new(from: SocketAddr, to: Option<IpAddr>) -> Option<Self> {
        let mut bytes = [0u8; CHALLENGE_LEN];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        let now = Instant::now();
        Some(Self {
            from,
            to,
            bytes,
            sent: now,
            created: now,
            heard: false,
        })
    }

    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.created) < CANDIDATE_LIFETIME
    }

    /// Whether `bytes` from `from` answer this challenge.
    fn answered_by(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        self.from == from && self.bytes[..] == *bytes && self.live(Instant::now())
    }

    /// The bytes again, unless they went out less than [`CHALLENGE_AGAIN`] ago.
    fn again(&mut self, now: Instant) -> Option<[u8; CHALLENGE_LEN]> {
        if now.duration_since(self.sent) < CHALLENGE_AGAIN {
            return None;
        }
        self.sent = now;
        Some(self.bytes)
    }
}

/// What an echo of a challenge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// It answers no live challenge: nothing changes.
    Ignored,
    /// The path moved to the echo's address.
    Moved,
    /// The path moved to the echo's address, leaving `0`: challenge it with
    /// `1`, so that a peer still there pulls the path back.
    MovedFrom(SocketAddr, Option<IpAddr>, [u8; CHALLENGE_LEN]),
}

impl Validation {
    /// Whether the path moved.
    pub fn moved(&self) -> bool {
        !matches!(self, Self::Ignored)
    }
}

impl std::fmt::Debug for UdpPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPath")
            .field("peer", &self.peer())
            .field("sending", &self.sending())
            .finish_non_exhaustive()
    }
}

impl UdpPath {
    /// A path over `socket`; `peer` is known on the client (the server) and
    /// learned on the server (from the first authenticated datagram).
    pub fn new(socket: Arc<UdpSocket>, peer: Option<SocketAddr>) -> Self {
        Self {
            socket,
            peer: Mutex::new((peer, None)),
            sending: AtomicBool::new(false),
            fixed: peer.is_some(),
            created: Instant::now(),
            last_answer: AtomicU64::new(0),
            moves: AtomicU64::new(0),
            rx_stats: Mutex::new((0, 0)),
            peer_report: Mutex::new(None),
            tcp: None,
            challenges: Mutex::new(Challenges::default()),
        }
    }

    /// The session's TLS connection: its retransmissions go into reports,
    /// and it learns what it carries when data moves.
    pub fn with_tcp(mut self, tcp: Option<Arc<TcpHandle>>) -> Self {
        self.tcp = tcp;
        self
    }

    /// Data moves to UDP or to the TLS connection (`why` says which use).
    pub fn carry_on(&self, why: TcpUse) {
        self.set_sending(why == TcpUse::Control);
        if let Some(tcp) = &self.tcp {
            tcp.used_for(why);
        }
    }

    /// Our receive side's counts (from the datagram receiver).
    pub fn set_rx_stats(&self, received: u64, lost: u64) {
        *self.rx_stats.lock().unwrap_or_else(|e| e.into_inner()) = (received, lost);
    }

    /// What we report about our side of the path.
    pub fn local_report(&self) -> PathReport {
        let (received, lost) = *self.rx_stats.lock().unwrap_or_else(|e| e.into_inner());
        let (tcp_retrans, tcp_sent) = self.tcp.as_ref().and_then(|t| t.counts()).unwrap_or((0, 0));
        PathReport {
            received,
            lost,
            tcp_retrans,
            tcp_sent,
        }
    }

    /// Keeps the peer's latest report.
    pub fn set_peer_report(&self, report: PathReport) {
        *self.peer_report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// The peer's latest report, if one came.
    pub fn peer_report(&self) -> Option<PathReport> {
        *self.peer_report.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where datagrams go, if known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Where datagrams go and the local address to send them from (the one
    /// the peer sent to, so that its connected socket takes the answer).
    pub fn route(&self) -> Option<(SocketAddr, Option<IpAddr>)> {
        let p = *self.peer.lock().unwrap_or_else(|e| e.into_inner());
        Some((p.0?, p.1))
    }

    /// An authenticated, fresh datagram arrived from `from`, sent to our
    /// `to`. If it is the `newest` the peer ever sent (its counter is the
    /// highest so far) and comes from another address than the peer's, the
    /// peer may have moved (NAT rebinding, roaming), or someone on the path
    /// raced a copy of it from elsewhere. So the path does not move yet
    /// (RFC 9000 8.2 and 9.3): the answer is a challenge to send to `from`,
    /// and only the peer's echo of it from there ([`Self::validated`]) moves
    /// the path. An older datagram that arrives late (reordered, or held back
    /// and re-sent) asks nothing. Our address the path sends from changes
    /// only with the path (a copy sent to another of our addresses moves
    /// nothing).
    pub fn received_from(
        &self,
        from: SocketAddr,
        to: Option<IpAddr>,
        newest: bool,
    ) -> Option<[u8; CHALLENGE_LEN]> {
        if self.fixed || !newest {
            return None;
        }
        let at_peer = self.peer() == Some(from);
        let mut ch = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if at_peer {
            // The peer is where it was: a pending challenge elsewhere is
            // stale, and a late answer to it must not move the path. (The
            // recheck stays: a copy raced from here looks just like this.)
            ch.candidate = None;
            return None;
        }
        // The peer speaks from the address the path just left: its echo of
        // the recheck now counts.
        if let Some(r) = ch
            .recheck
            .as_mut()
            .filter(|r| r.from == from && r.live(now))
        {
            r.heard = true;
            return r.again(now);
        }
        match &mut ch.candidate {
            // One challenge per address, repeated with the same bytes while
            // unanswered (new bytes each time would never be answered when
            // the round trip is longer than the repeat interval).
            Some(c) if c.from == from && c.live(now) => c.again(now),
            slot => {
                let c = Candidate::new(from, to)?;
                *slot = Some(c);
                Some(c.bytes)
            }
        }
    }

    /// The peer echoed `bytes` from `from`: if that answers our challenge
    /// to that address, the peer lives there now. A move away from a proved
    /// address asks for a recheck of it (RFC 9000 9.3.3): an attacker who
    /// copies the peer's datagrams and races them (and the echo) from
    /// elsewhere moved the path, and the peer, still at the old address,
    /// sends from there and answers the recheck, which moves the path back
    /// unless the attacker raced that datagram and that echo too. A recheck
    /// counts only after such a datagram (its echo alone is one race), and a
    /// move back rechecks nothing.
    pub fn validated(&self, from: SocketAddr, bytes: &[u8]) -> Validation {
        let mut ch = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = ch.recheck.filter(|r| r.heard && r.answered_by(from, bytes)) {
            self.move_to(r.from, r.to);
            *ch = Challenges::default();
            return Validation::Moved;
        }
        let Some(c) = ch.candidate.filter(|c| c.answered_by(from, bytes)) else {
            return Validation::Ignored;
        };
        let left = self.move_to(c.from, c.to);
        ch.candidate = None;
        let Some((old, src)) = left.0.map(|old| (old, left.1)) else {
            return Validation::Moved;
        };
        ch.recheck = Candidate::new(old, src);
        match ch.recheck {
            Some(r) => Validation::MovedFrom(old, src, r.bytes),
            None => Validation::Moved,
        }
    }

    /// Sends to `to` from `src` from now on; gives back where it sent before.
    fn move_to(&self, to: SocketAddr, src: Option<IpAddr>) -> (Option<SocketAddr>, Option<IpAddr>) {
        let mut peer = self.peer.lock().unwrap_or_else(|e| e.into_inner());
        let left = *peer;
        if left.0.is_some() {
            self.moves.fetch_add(1, Ordering::Relaxed);
        }
        *peer = (Some(to), src.or(left.1));
        left
    }

    /// An authenticated answer to one of our datagrams arrived: a probe
    /// reply, or a challenge (which the peer sends only for a datagram of
    /// ours it received). Only these prove that UDP works both ways: data
    /// arriving from the peer says nothing about whether ours reaches it.
    pub fn answered(&self) {
        let ms = self.created.elapsed().as_millis() as u64 + 1;
        self.last_answer.store(ms, Ordering::Relaxed);
    }

    /// How long ago the last answer arrived (None: never).
    pub fn since_answer(&self) -> Option<Duration> {
        let ms = self.last_answer.load(Ordering::Relaxed);
        let at = Duration::from_millis(ms.checked_sub(1)?);
        Some(self.created.elapsed().saturating_sub(at))
    }

    /// Whether data goes over UDP (and the peer's address is known).
    pub fn sending(&self) -> bool {
        self.sending.load(Ordering::Relaxed) && self.peer().is_some()
    }

    /// Switches data to UDP (true) or to the TLS connection.
    pub fn set_sending(&self, on: bool) {
        self.sending.store(on, Ordering::Relaxed);
    }

    /// The transport data uses now, for status output.
    pub fn transport(&self) -> Carrier {
        if self.sending() {
            Carrier::Udp
        } else {
            Carrier::Tcp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn server_path() -> UdpPath {
        let socket = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        UdpPath::new(Arc::new(socket), None)
    }

    #[tokio::test]
    async fn a_new_address_is_challenged_and_only_its_echo_moves_the_peer() {
        let path = server_path().await;
        let old: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let new: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let elsewhere: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        // Even the first address is proved before data goes there.
        let first = path.received_from(old, None, true).expect("a challenge");
        assert_eq!(path.peer(), None);
        assert!(
            !path.validated(elsewhere, &first).moved(),
            "an echo from elsewhere"
        );
        assert_eq!(path.validated(old, &first), Validation::Moved);
        assert_eq!(path.peer(), Some(old));
        assert_eq!(path.moves.load(Ordering::Relaxed), 0);

        // A datagram from a new address (a rebinding, or a copy raced by
        // someone on the path) is challenged; the path stays.
        let challenge = path.received_from(new, None, true).expect("a challenge");
        assert_eq!(path.peer(), Some(old));
        assert_eq!(
            path.received_from(new, None, true),
            None,
            "one challenge in flight per address"
        );
        let mut wrong = challenge;
        wrong[0] ^= 1;
        assert!(!path.validated(new, &wrong).moved(), "a wrong echo");
        assert!(
            !path.validated(old, &challenge).moved(),
            "the echo from the old address"
        );
        assert_eq!(path.peer(), Some(old));
        assert!(matches!(
            path.validated(new, &challenge),
            Validation::MovedFrom(o, _, _) if o == old
        ));
        assert_eq!(path.peer(), Some(new));
        assert_eq!(path.moves.load(Ordering::Relaxed), 1);
        assert!(
            !path.validated(new, &challenge).moved(),
            "an echo counts once"
        );

        // A late datagram from the old address (reordered, or replayed first
        // by someone on the path) counts as traffic but asks nothing.
        assert_eq!(path.received_from(old, None, false), None);
        assert_eq!(path.peer(), Some(new));
        assert_eq!(path.since_answer(), None, "data is not an answer");
        path.answered();
        assert!(path.since_answer().is_some());
    }

    #[test]
    fn unreplyable_sources() {
        for bad in [
            "192.0.2.1:0",
            "0.0.0.0:51820",
            "255.255.255.255:51820",
            "224.0.0.1:51820",
            "[::]:51820",
            "[ff02::1]:51820",
            "[::ffff:255.255.255.255]:51820",
            "[2001:db8::1]:0",
        ] {
            assert!(!replyable(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["192.0.2.1:1", "[2001:db8::1]:443", "[::ffff:192.0.2.1]:9"] {
            assert!(replyable(&good.parse().unwrap()), "{good}");
        }
    }
}

#[cfg(test)]
mod audit3 {
    use super::*;

    fn path() -> UdpPath {
        let socket = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        UdpPath::new(Arc::new(socket), None)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A datagram from `to` and the echo of its challenge move the path
    /// there, away from a validated address, which the move rechecks.
    /// Returns that address, the challenge and the recheck.
    fn move_with_recheck(
        p: &UdpPath,
        to: SocketAddr,
    ) -> (SocketAddr, [u8; CHALLENGE_LEN], [u8; CHALLENGE_LEN]) {
        let ch = p
            .received_from(to, None, true)
            .expect("a challenge to the new address");
        let Validation::MovedFrom(back, _, recheck) = p.validated(to, &ch) else {
            panic!("a move away from a validated address rechecks it");
        };
        (back, ch, recheck)
    }

    /// A path validated at the peer's first address (reached at our address
    /// `ours`), which it returns: the peer's first datagram came from there
    /// and the echo of its challenge moved the path.
    fn validated_path(ours: Option<IpAddr>) -> (UdpPath, SocketAddr) {
        let a = addr("192.0.2.1:4000");
        let p = path();
        let c = p.received_from(a, ours, true).unwrap();
        assert_eq!(p.validated(a, &c), Validation::Moved, "the first address");
        (p, a)
    }

    /// Finding: a re-challenge draws NEW bytes, so with a round trip over
    /// CHALLENGE_AGAIN (200 ms) and steady traffic from the new address,
    /// every echo answers a challenge that was already replaced.
    #[tokio::test]
    async fn audit3_rtt_over_200ms_never_validates_with_steady_traffic() {
        let (p, _) = validated_path(None);
        let n = addr("192.0.2.1:5000");
        // Client rebinds to n; 300 ms RTT; it sends a datagram every 50 ms.
        let mut in_flight = std::collections::VecDeque::new();
        let t0 = Instant::now();
        let mut moved = false;
        while t0.elapsed() < Duration::from_secs(2) {
            if let Some(ch) = p.received_from(n, None, true) {
                in_flight.push_back((Instant::now(), ch));
            }
            // Echoes come back one RTT after their challenge.
            while in_flight
                .front()
                .is_some_and(|(t, _)| t.elapsed() >= Duration::from_millis(300))
            {
                let (_, ch) = in_flight.pop_front().unwrap();
                moved |= p.validated(n, &ch).moved();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            moved,
            "2 s of steady traffic from the new address, path still at {:?}",
            p.peer()
        );
    }

    /// Finding: a candidate never expires and is not dropped when the peer's
    /// datagrams come from its validated address again; a late Response for
    /// it (held back and injected from the stale address) moves the path
    /// to where the client no longer is.
    #[tokio::test]
    async fn audit3_stale_candidate_moves_path_after_client_returned() {
        let (p, a) = validated_path(None);
        let n = addr("192.0.2.1:5000");
        let stale = p.received_from(n, None, true).unwrap();
        // The client is back at a; many newest datagrams from there.
        for _ in 0..10 {
            assert_eq!(p.received_from(a, None, true), None);
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !p.validated(n, &stale).moved(),
            "a stale candidate moved the path to {n}"
        );
    }

    /// Finding (fixed as RFC 9000 9.3.3 does): on-path racing. The attacker
    /// races a copy of a fresh datagram from x, forwards the challenge
    /// (spoofing the server) to the client at a, and races the client's
    /// Response from x too: the path moves to x. The move challenges a, and
    /// the client, still there, answers from a: the path comes back. (An
    /// attacker who wins that race too stays a relay on the path, as RFC
    /// 9000 9.3.3 says for QUIC; PROTOCOL.md.)
    #[tokio::test]
    async fn audit3_on_path_attacker_redirects_with_forwarded_challenge() {
        let (p, a) = validated_path(None);
        let x = addr("203.0.113.66:666");
        let (back, _, recheck) = move_with_recheck(&p, x);
        assert_eq!((back, p.peer()), (a, Some(x)));
        // The attacker keeps racing copies from x: the recheck stays.
        assert_eq!(p.received_from(x, None, true), None);
        // The echo copied and raced from x does not count (wrong address).
        assert_eq!(p.validated(x, &recheck), Validation::Ignored);
        // The client's datagrams from a draw the same recheck, not new bytes.
        std::thread::sleep(CHALLENGE_AGAIN);
        assert_eq!(p.received_from(a, None, true), Some(recheck));
        assert_eq!(
            p.validated(a, &recheck),
            Validation::Moved,
            "no recheck of x"
        );
        assert_eq!(p.peer(), Some(a));
        assert_eq!(p.moves.load(Ordering::Relaxed), 2);
    }

    /// Review finding (M1): an echo of the recheck alone, which an attacker
    /// can race, does not move the path back; it counts after the peer's
    /// newest datagram came from the old address. And a third address (L1)
    /// does not push the recheck out.
    #[tokio::test]
    async fn a_recheck_counts_after_the_peer_spoke_there_and_keeps_its_slot() {
        let (p, a) = validated_path(None);
        let x = addr("203.0.113.66:666");
        let y = addr("203.0.113.66:667");
        let (_, cx, recheck) = move_with_recheck(&p, x);
        // An echo forwarded and raced from a (spoofed) before the peer spoke there.
        assert_eq!(p.validated(a, &recheck), Validation::Ignored);
        assert_eq!(p.peer(), Some(x));
        // A copy raced from a third address challenges it, nothing more.
        assert!(p.received_from(y, None, true).is_some());
        std::thread::sleep(CHALLENGE_AGAIN);
        assert_eq!(
            p.received_from(a, None, true),
            Some(recheck),
            "the same bytes"
        );
        assert_eq!(p.validated(a, &recheck), Validation::Moved);
        assert_eq!(p.peer(), Some(a));
        // Nothing is left in flight for x: pulling the path there again takes
        // a fresh raced datagram and a raced echo.
        assert_eq!(p.validated(x, &cx), Validation::Ignored);
        assert_eq!(
            p.validated(a, &recheck),
            Validation::Ignored,
            "an echo counts once"
        );
    }

    /// Review finding (L2): a copy of the peer's datagram sent to another of
    /// our addresses does not change the address we send from.
    #[tokio::test]
    async fn our_source_address_changes_only_with_the_path() {
        let ours: IpAddr = "198.18.0.1".parse().unwrap();
        let other: IpAddr = "198.18.0.2".parse().unwrap();
        let (p, a) = validated_path(Some(ours));
        assert_eq!(p.route(), Some((a, Some(ours))));
        assert_eq!(p.received_from(a, Some(other), true), None);
        assert_eq!(p.route(), Some((a, Some(ours))));
    }

    /// A peer that really moved does not answer at its old address, and one
    /// reachable at both addresses answers the recheck from its new one:
    /// neither moves the path back.
    #[tokio::test]
    async fn a_real_move_stays() {
        let (p, _) = validated_path(None);
        let n = addr("192.0.2.1:5000");
        let (_, _, recheck) = move_with_recheck(&p, n);
        assert_eq!(p.validated(n, &recheck), Validation::Ignored);
        assert_eq!(p.peer(), Some(n));
    }
}
