//! Which path data takes in `auto` mode, decided by the client once a
//! probe interval from what both ends report. Pure: no I/O, no clock.
//!
//! - UDP once a probe came back, and back to TCP when none has for
//!   [`super::udp::DEAD_AFTER`] (UDP blocked, a captive portal).
//! - On a clean, busy path (at most [`CLEAN_LOSS`] of the datagrams missing,
//!   both directions together, over [`CLEAN_ROUNDS`] intervals while at
//!   least [`BUSY`] datagrams a second crossed in each), data moves to the
//!   TLS connection, whose offload path carries more per CPU second than
//!   datagrams do. While a UDP path is busy, rounds come faster
//!   ([`Chooser::busy_on_udp`]), so a bulk transfer leaves UDP soon after it
//!   starts.
//! - When that connection retransmits more than [`TCP_LOSS`] of its data
//!   segments (at least [`TCP_LOSS_MIN`], both ends together), data moves back
//!   to UDP, where a lost packet stalls only its own flow, and stays there at
//!   least [`HOLD_FIRST`], doubling each time up to [`HOLD_MAX`].

use std::time::Duration;

use crate::outside::udp::path::PathReport;

/// Datagrams a second, both directions together, that make a path busy.
pub const BUSY: u64 = 10_000;
/// Clean busy intervals in a row before data moves to TCP.
pub const CLEAN_ROUNDS: u32 = 1;
/// Missing datagrams a clean interval may have, per received one: a socket
/// buffer that overflowed once in a burst is not a lossy path (1 % random
/// loss is ten times this).
pub const CLEAN_LOSS: f64 = 0.001;
/// Retransmitted per data segment sent, both ends together, that counts as
/// loss on the TLS connection (a tail loss probe on a busy machine does not;
/// 1 % random loss is five times this).
pub const TCP_LOSS: f64 = 0.002;
/// Fewest retransmissions in an interval that count as loss.
pub const TCP_LOSS_MIN: u64 = 2;
/// First stay on UDP after TCP retransmitted.
pub const HOLD_FIRST: Duration = Duration::from_secs(30);
/// Longest stay on UDP after TCP retransmitted.
pub const HOLD_MAX: Duration = Duration::from_secs(600);

/// Where data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Over UDP.
    Udp,
    /// Over the TLS connection.
    Tcp,
}

/// What one interval brought.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// A datagram authenticated recently enough: UDP works.
    pub udp_works: bool,
    /// Our report (our receive side, our TCP retransmissions).
    pub local: PathReport,
    /// The peer's last report, if any.
    pub peer: Option<PathReport>,
    /// Time since the session started.
    pub now: Duration,
}

/// The client's choice, round by round.
#[derive(Debug)]
pub struct Chooser {
    allow_clean_tcp: bool,
    path: Path,
    /// In `Tcp` because the path was clean (not because UDP is down).
    clean_tcp: bool,
    clean_rounds: u32,
    hold: Duration,
    tcp_allowed_at: Duration,
    last_local: PathReport,
    last_peer: Option<PathReport>,
    /// When the last round was taken.
    last_now: Duration,
    /// The last round on UDP was busy.
    busy: bool,
}

impl Default for Chooser {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Chooser {
    /// A chooser; with `clean_tcp` false data never leaves a working UDP path.
    pub fn new(clean_tcp: bool) -> Self {
        Self {
            allow_clean_tcp: clean_tcp,
            path: Path::Tcp,
            clean_tcp: false,
            clean_rounds: 0,
            hold: HOLD_FIRST,
            tcp_allowed_at: Duration::ZERO,
            last_local: PathReport::default(),
            last_peer: None,
            last_now: Duration::ZERO,
            busy: false,
        }
    }

    /// Whether data is on UDP and the last round found the path busy: the
    /// next round should come soon, since a clean one moves data to TCP.
    pub fn busy_on_udp(&self) -> bool {
        self.path == Path::Udp && self.busy
    }

    /// Whether UDP is, or was last seen, working: on UDP, or on TCP by choice.
    pub fn expects_udp(&self) -> bool {
        self.path == Path::Udp || self.clean_tcp
    }

    /// The path in use.
    #[cfg(test)]
    pub fn path(&self) -> Path {
        self.path
    }

    /// Takes one round; returns the new path if it changes.
    pub fn round(&mut self, r: Round) -> Option<Path> {
        let local = delta(r.local, self.last_local);
        let peer = match (r.peer, self.last_peer) {
            (Some(p), Some(l)) => delta(p, l),
            (Some(p), None) => p,
            (None, _) => PathReport::default(),
        };
        let interval = r.now.saturating_sub(self.last_now);
        self.last_local = r.local;
        self.last_peer = r.peer.or(self.last_peer);
        self.last_now = r.now;
        self.busy = false;
        let next = match self.path {
            Path::Tcp if !self.clean_tcp => {
                if r.udp_works {
                    self.clean_rounds = 0;
                    Path::Udp
                } else {
                    Path::Tcp
                }
            }
            Path::Tcp => {
                let retrans = local.tcp_retrans.saturating_add(peer.tcp_retrans);
                let sent = local.tcp_sent.saturating_add(peer.tcp_sent);
                let tcp_loss = retrans >= TCP_LOSS_MIN && retrans as f64 > TCP_LOSS * sent as f64;
                if tcp_loss || !r.udp_works {
                    // Loss on the stream (or UDP gone: then wait for it).
                    self.clean_tcp = false;
                    self.tcp_allowed_at = r.now + self.hold;
                    self.hold = (self.hold * 2).min(HOLD_MAX);
                    self.clean_rounds = 0;
                    if r.udp_works {
                        Path::Udp
                    } else {
                        Path::Tcp
                    }
                } else {
                    Path::Tcp
                }
            }
            Path::Udp => {
                if !r.udp_works {
                    Path::Tcp
                } else {
                    let received = local.received.saturating_add(peer.received);
                    let lost = local.lost.saturating_add(peer.lost);
                    let busy = received as f64 >= BUSY as f64 * interval.as_secs_f64();
                    self.busy = busy;
                    let clean = r.peer.is_some() && (lost as f64) <= CLEAN_LOSS * received as f64;
                    self.clean_rounds = if busy && clean {
                        self.clean_rounds + 1
                    } else {
                        0
                    };
                    if self.allow_clean_tcp
                        && self.clean_rounds >= CLEAN_ROUNDS
                        && r.now >= self.tcp_allowed_at
                    {
                        self.clean_tcp = true;
                        Path::Tcp
                    } else {
                        Path::Udp
                    }
                }
            }
        };
        (next != self.path).then(|| {
            self.path = next;
            next
        })
    }
}

/// The counts of one round; the peer's report is the peer's word, so sums
/// above saturate rather than overflow on absurd values.
fn delta(now: PathReport, then: PathReport) -> PathReport {
    PathReport {
        received: now.received.saturating_sub(then.received),
        lost: now.lost.saturating_sub(then.lost),
        tcp_retrans: now.tcp_retrans.saturating_sub(then.tcp_retrans),
        tcp_sent: now.tcp_sent.saturating_sub(then.tcp_sent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds rounds one second apart: (udp works, datagrams received by us and
    /// by the peer this round, lost by each, TCP retransmissions this round).
    struct Sim {
        c: Chooser,
        t: u64,
        local: PathReport,
        peer: PathReport,
    }

    impl Sim {
        fn new() -> Self {
            Self {
                c: Chooser::default(),
                t: 0,
                local: PathReport::default(),
                peer: PathReport::default(),
            }
        }

        fn step(&mut self, works: bool, rx: u64, lost: u64, retrans: u64) -> Path {
            self.t += 1;
            self.local.received += rx;
            self.peer.received += rx;
            self.local.lost += lost;
            self.peer.lost += lost;
            self.local.tcp_retrans += retrans;
            self.local.tcp_sent += 1_000;
            self.c.round(Round {
                udp_works: works,
                local: self.local,
                peer: Some(self.peer),
                now: Duration::from_secs(self.t),
            });
            self.c.path()
        }
    }

    #[test]
    fn udp_once_it_works_tcp_while_it_does_not() {
        let mut s = Sim::new();
        assert_eq!(s.step(false, 0, 0, 0), Path::Tcp);
        assert_eq!(s.step(true, 0, 0, 0), Path::Udp);
        assert_eq!(s.step(false, 0, 0, 0), Path::Tcp);
        assert_eq!(s.step(true, 0, 0, 0), Path::Udp);
    }

    #[test]
    fn a_clean_busy_path_moves_to_tcp_and_the_first_retransmission_back() {
        let mut s = Sim::new();
        s.step(true, 0, 0, 0);
        assert_eq!(s.step(true, BUSY, 0, 0), Path::Tcp, "a clean busy round");
        assert_eq!(s.step(true, 0, 0, 0), Path::Tcp, "stays while TCP is clean");
        assert_eq!(
            s.step(true, 0, 0, 1),
            Path::Tcp,
            "one retransmission is a probe, not loss"
        );
        assert_eq!(s.step(true, 0, 0, 2), Path::Tcp, "0.2 % is not loss yet");
        assert_eq!(s.step(true, 0, 0, 10), Path::Udp, "1 % of the segments");
        // Held on UDP for HOLD_FIRST even when clean again.
        for _ in 0..HOLD_FIRST.as_secs() - 1 {
            assert_eq!(s.step(true, BUSY, 0, 0), Path::Udp);
        }
        assert_eq!(s.step(true, BUSY, 0, 0), Path::Tcp, "after the hold");
        assert_eq!(s.step(true, BUSY, 0, 30), Path::Udp);
        for _ in 0..2 * HOLD_FIRST.as_secs() - 1 {
            assert_eq!(s.step(true, BUSY, 0, 0), Path::Udp, "the hold doubled");
        }
        assert_eq!(s.step(true, BUSY, 0, 0), Path::Tcp);
    }

    #[test]
    fn a_lossy_or_idle_path_stays_on_udp() {
        let mut s = Sim::new();
        s.step(true, 0, 0, 0);
        for _ in 0..20 {
            assert_eq!(s.step(true, 5 * BUSY, 500, 0), Path::Udp, "1 % loss");
            assert_eq!(s.step(true, 5 * BUSY, 51, 0), Path::Udp, "0.1 % loss");
            assert_eq!(s.step(true, 10, 0, 0), Path::Udp, "idle");
        }
    }

    #[test]
    fn a_rare_overflow_is_not_loss() {
        let mut s = Sim::new();
        s.step(true, 0, 0, 0);
        assert_eq!(s.step(true, 10 * BUSY, 40, 0), Path::Tcp);
    }

    #[test]
    fn without_a_peer_report_nothing_counts_as_clean() {
        let mut c = Chooser::default();
        let mut local = PathReport::default();
        for t in 1..10 {
            local.received += BUSY;
            c.round(Round {
                udp_works: true,
                local,
                peer: None,
                now: Duration::from_secs(t),
            });
            assert_eq!(c.path(), Path::Udp);
        }
    }

    #[test]
    fn without_clean_tcp_a_working_udp_path_is_kept() {
        let mut s = Sim::new();
        s.c = Chooser::new(false);
        s.step(true, 0, 0, 0);
        for _ in 0..10 {
            assert_eq!(s.step(true, 5 * BUSY, 0, 0), Path::Udp);
        }
    }

    #[test]
    fn busy_is_a_rate_and_a_busy_udp_path_asks_for_fast_rounds() {
        let mut c = Chooser::default();
        let (mut local, mut peer) = (PathReport::default(), PathReport::default());
        let mut round = |c: &mut Chooser, ms: u64, rx: u64, lost: u64| {
            local.received += rx;
            peer.received += rx;
            peer.lost += lost;
            c.round(Round {
                udp_works: true,
                local,
                peer: Some(peer),
                now: Duration::from_millis(ms),
            });
        };
        round(&mut c, 1_000, 0, 0);
        assert_eq!(c.path(), Path::Udp);
        assert!(!c.busy_on_udp(), "idle");
        // 1 % loss at 5,000 datagrams a second each way: busy, not clean.
        round(&mut c, 2_000, 5_000, 100);
        assert!(c.busy_on_udp());
        // A fifth of a second at the same rate is just as busy.
        round(&mut c, 2_200, 1_000, 20);
        assert!(c.busy_on_udp(), "busy is per second, not per round");
        round(&mut c, 2_400, 500, 10);
        assert!(!c.busy_on_udp(), "half the rate is not busy");
        // A clean fast round moves data to TCP.
        round(&mut c, 2_600, 1_000, 0);
        assert_eq!(c.path(), Path::Tcp);
        assert!(!c.busy_on_udp(), "not on UDP");
    }

    #[test]
    fn udp_failing_while_on_clean_tcp_keeps_tcp() {
        let mut s = Sim::new();
        s.step(true, 0, 0, 0);
        assert_eq!(s.step(true, BUSY, 0, 0), Path::Tcp);
        assert_eq!(s.step(false, 0, 0, 0), Path::Tcp);
        assert_eq!(s.step(false, 0, 0, 2), Path::Tcp, "nowhere better to go");
        assert_eq!(s.step(true, 0, 0, 0), Path::Udp);
    }
}
