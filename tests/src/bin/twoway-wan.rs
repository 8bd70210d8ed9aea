//! twoway-wan: a userspace WAN emulator for scripts/bench.sh (this kernel has
//! no netem). It bridges two network interfaces (veths in a middle namespace)
//! with AF_PACKET raw sockets and forwards every Ethernet frame each way with
//! a fixed delay, random loss and a token-bucket rate limit per direction,
//! behind a bounded drop-tail queue. Prints per-direction counters as one
//! JSON object on stdout when it ends (after --duration, or on SIGTERM/SIGINT).
//!
//! Turn segmentation and receive offloads off on both veth pairs first
//! (`ethtool -K DEV gro off gso off tso off tx off rx off` on all four ends),
//! or the sockets see 64 KiB pseudo-frames that cannot be sent on.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{
    bind, recvfrom, send, setsockopt, socket, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

/// Userspace WAN bridge between two interfaces: delay, random loss and a
/// rate limit per direction (A->B and B->A are set alike).
#[derive(Debug, Parser)]
#[command(name = "twoway-wan", version)]
struct Args {
    /// First interface (e.g. the veth toward the laptop).
    #[arg(long)]
    a: String,
    /// Second interface (e.g. the veth toward the server).
    #[arg(long)]
    b: String,
    /// One-way delay in milliseconds, each direction.
    #[arg(long, default_value_t = 15.0)]
    delay_ms: f64,
    /// Random loss in percent, each direction (applied on arrival).
    #[arg(long, default_value_t = 1.0)]
    loss_pct: f64,
    /// Rate limit in Mbit/s, each direction (0: none). Counts whole frames.
    #[arg(long, default_value_t = 500.0)]
    rate_mbit: f64,
    /// Token-bucket depth in bytes (burst allowed at line speed).
    #[arg(long, default_value_t = 16 * 1024)]
    burst_bytes: u64,
    /// Queue limit in bytes beyond which frames are dropped (tail drop);
    /// default: 2 x the bandwidth-delay product (rate x 2 x one-way delay).
    #[arg(long)]
    queue_bytes: Option<u64>,
    /// Stop after this many seconds (also on SIGTERM/SIGINT).
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Seed of the loss generator (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

const MAX_FRAME: usize = 65_536;
const SOCKET_BUFFER: usize = 8 << 20;

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    bytes: AtomicU64,
    lost_random: AtomicU64,
    dropped_queue: AtomicU64,
    send_errors: AtomicU64,
    max_queue_us: AtomicU64,
}

impl Counters {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "received": self.received.load(Ordering::Relaxed),
            "forwarded": self.forwarded.load(Ordering::Relaxed),
            "forwarded_bytes": self.bytes.load(Ordering::Relaxed),
            "lost_random": self.lost_random.load(Ordering::Relaxed),
            "dropped_queue_full": self.dropped_queue.load(Ordering::Relaxed),
            "send_errors": self.send_errors.load(Ordering::Relaxed),
            "max_queue_delay_ms": self.max_queue_us.load(Ordering::Relaxed) as f64 / 1000.0,
        })
    }
}

/// The shaping and loss settings of one direction.
#[derive(Clone, Copy)]
struct Shape {
    delay: Duration,
    /// Loss threshold out of 2^32.
    loss: u64,
    /// Nanoseconds per byte (0: no rate limit).
    ns_per_byte: f64,
    burst: Duration,
    queue: Duration,
}

/// An AF_PACKET raw socket receiving every protocol, bound to one interface.
fn packet_socket(dev: &str) -> anyhow::Result<OwnedFd> {
    // The link-layer address getifaddrs reports for the interface is a
    // sockaddr_ll with its index set and protocol 0, which bind() reads as
    // "keep the socket's protocol" (ETH_P_ALL).
    let addr: LinkAddr = getifaddrs()
        .context("getifaddrs")?
        .filter(|ifa| ifa.interface_name == dev)
        .find_map(|ifa| ifa.address.and_then(|a| a.as_link_addr().copied()))
        .with_context(|| format!("no interface {dev} (or no link-layer address on it)"))?;
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .context("socket(AF_PACKET, SOCK_RAW, ETH_P_ALL) (needs CAP_NET_RAW)")?;
    bind(fd.as_raw_fd(), &addr).with_context(|| format!("bind the packet socket to {dev}"))?;
    for (name, res) in [
        (
            "SO_RCVBUFFORCE",
            setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER),
        ),
        (
            "SO_SNDBUFFORCE",
            setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER),
        ),
    ] {
        res.with_context(|| format!("{name} on {dev}"))?;
    }
    // Receivers wake up now and then to see whether to stop.
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000))
        .with_context(|| format!("SO_RCVTIMEO on {dev}"))?;
    Ok(fd)
}

/// xorshift64*: plenty for drawing losses.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

// Linux's PACKET_OUTGOING: a frame this host sent on the interface.
const PACKET_OUTGOING: u8 = 4;

/// Reads frames from `input`, draws losses, schedules each survivor's
/// departure (token bucket, then the fixed delay) and hands it to the sender.
fn receiver(
    input: Arc<OwnedFd>,
    shape: Shape,
    mut rng: Rng,
    out: mpsc::Sender<(Instant, Vec<u8>)>,
    stats: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_FRAME];
    // GCRA form of the token bucket: tat is when the link would be idle
    // again; a frame may leave once tat - burst <= now.
    let mut tat = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let (len, from) = match recvfrom::<LinkAddr>(input.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => bail!("recvfrom: {e}"),
        };
        if from.is_some_and(|a| a.pkttype() == PACKET_OUTGOING) {
            continue; // sent by this namespace itself, not traffic to bridge
        }
        stats.received.fetch_add(1, Ordering::Relaxed);
        if shape.loss > 0 && (rng.next() >> 32) < shape.loss {
            stats.lost_random.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = Instant::now();
        let mut depart = now;
        if shape.ns_per_byte > 0.0 {
            if tat < now {
                tat = now;
            }
            let queued = tat - now;
            if queued > shape.queue {
                stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            stats
                .max_queue_us
                .fetch_max(queued.as_micros() as u64, Ordering::Relaxed);
            depart = (tat.checked_sub(shape.burst).unwrap_or(now)).max(now);
            tat += Duration::from_nanos((len as f64 * shape.ns_per_byte) as u64);
        }
        if out
            .send((depart + shape.delay, buf[..len].to_vec()))
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Sends each frame on `output` once its time has come (frames arrive in
/// order of their due times: the delay is fixed and departures are ordered).
fn sender(output: Arc<OwnedFd>, input: mpsc::Receiver<(Instant, Vec<u8>)>, stats: Arc<Counters>) {
    while let Ok((due, frame)) = input.recv() {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        match send(output.as_raw_fd(), &frame, MsgFlags::empty()) {
            Ok(_) => {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..=100.0).contains(&args.loss_pct) {
        bail!("--loss-pct must be between 0 and 100");
    }
    if !(0.0..=10_000.0).contains(&args.delay_ms) || args.rate_mbit < 0.0 {
        bail!("--delay-ms must be between 0 and 10000 and --rate-mbit not negative");
    }
    if args.a == args.b {
        bail!("--a and --b must be different interfaces");
    }
    let delay = Duration::from_secs_f64(args.delay_ms / 1000.0);
    let ns_per_byte = if args.rate_mbit > 0.0 {
        8_000.0 / args.rate_mbit
    } else {
        0.0
    };
    // 2 x BDP by default: rate x RTT (= 2 x one-way delay) x 2, at least 64 KiB.
    let queue_bytes = args.queue_bytes.unwrap_or_else(|| {
        ((args.rate_mbit * 1e6 / 8.0 * 4.0 * delay.as_secs_f64()) as u64).max(64 * 1024)
    });
    let shape = Shape {
        delay,
        loss: (args.loss_pct / 100.0 * 4_294_967_296.0) as u64,
        ns_per_byte,
        burst: Duration::from_nanos((args.burst_bytes as f64 * ns_per_byte) as u64),
        queue: Duration::from_nanos((queue_bytes as f64 * ns_per_byte) as u64),
    };

    // SIGTERM/SIGINT are blocked in every thread and taken by one waiter.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking SIGTERM/SIGINT")?;

    let fd_a = Arc::new(packet_socket(&args.a)?);
    let fd_b = Arc::new(packet_socket(&args.b)?);
    let stop = Arc::new(AtomicBool::new(false));
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }) | 1;

    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let mut counters = Vec::new();
    for (i, (from, to)) in [(&fd_a, &fd_b), (&fd_b, &fd_a)].into_iter().enumerate() {
        let stats = Arc::new(Counters::default());
        counters.push(stats.clone());
        let (tx, rx) = mpsc::channel();
        let (input, st, stp) = (from.clone(), stats.clone(), stop.clone());
        let rng = Rng(seed.wrapping_mul(i as u64 + 1) | 1);
        receivers.push(thread::spawn(move || {
            receiver(input, shape, rng, tx, st, stp.clone()).inspect_err(|_| {
                stp.store(true, Ordering::Relaxed);
            })
        }));
        let output = to.clone();
        senders.push(thread::spawn(move || sender(output, rx, stats)));
    }
    {
        let stop = stop.clone();
        thread::spawn(move || {
            if signals.wait().is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    eprintln!(
        "twoway-wan: {} <-> {}: delay {} ms, loss {} %, rate {} Mbit/s, burst {} B, queue {} B, for at most {} s",
        args.a, args.b, args.delay_ms, args.loss_pct, args.rate_mbit, args.burst_bytes, queue_bytes, args.duration
    );
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for r in receivers {
        match r.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(_) => errors.push("a receiver thread panicked".into()),
        }
    }
    for s in senders {
        let _ = s.join();
    }
    let report = serde_json::json!({
        "a": args.a, "b": args.b,
        "delay_ms": args.delay_ms, "loss_pct": args.loss_pct, "rate_mbit": args.rate_mbit,
        "burst_bytes": args.burst_bytes, "queue_bytes": queue_bytes,
        "seconds": started.elapsed().as_secs_f64(),
        "a_to_b": counters[0].json(), "b_to_a": counters[1].json(),
        "errors": errors,
    });
    println!("{report}");
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}
