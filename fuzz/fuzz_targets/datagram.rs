//! The UDP datagram decoder (`Header::parse`, `Receiver::open`) with fixed
//! keys, fed a sequence of operations: seal a datagram, deliver a sealed one
//! (again, reordered), deliver it with one byte changed or cut short, or
//! deliver arbitrary bytes. Checked on every delivery:
//!
//! - nothing panics;
//! - a datagram is accepted only if it is byte for byte one the sender
//!   sealed (nothing unauthenticated, altered or from another direction or
//!   session gets through), and then with the kind and body sealed;
//! - a sealed datagram opens exactly when a model of the replay window and
//!   the key epochs says it must: once, if it is fresh and its epoch's key is
//!   held; a second delivery is a replay;
//! - the client's own receiver (reflection) and another session's receiver
//!   accept nothing.
//!
//! At the end, a fresh pair checks the plain property: whatever the sender
//! seals, delivered in order, the receiver opens exactly once.
#![no_main]

use std::collections::{BTreeSet, HashMap};

use libfuzzer_sys::fuzz_target;
use twoway_common::outside::udp::datagram::{
    DatagramError, Header, Kind, Receiver, Sender, HEADER_LEN, OVERHEAD,
};
use twoway_common::outside::udp::keys::{
    KeyError, Role, UdpSecret, EXPORT_LEN, MAX_EPOCH_JUMP, REKEY_AFTER,
};
use twoway_common::outside::udp::replay::WINDOW;

const SESSION: u32 = 0x5eed_0001;
const REKEYS: [u64; 6] = [1, 2, 3, 4, 64, REKEY_AFTER];
/// Upper bound on datagrams sealed per input, to keep runs fast.
const MAX_SEALED: u64 = 6_000;

fn secret(seed: u8) -> UdpSecret {
    let mut s = [0u8; EXPORT_LEN];
    for (i, b) in s.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31) ^ i as u8;
    }
    UdpSecret::new(s)
}

fn kind(b: u8) -> Kind {
    match b % 3 {
        0 => Kind::Packet,
        1 => Kind::Probe,
        _ => Kind::ProbeReply,
    }
}

struct Sealed {
    bytes: Vec<u8>,
    counter: u64,
    kind: Kind,
    body: Vec<u8>,
}

/// What the receiver must do, from the replay window's and the epochs' rules.
struct Model {
    rekey: u64,
    opened: BTreeSet<u64>,
    highest: Option<u64>,
    epoch: u64,
}

impl Model {
    fn expect(&self, counter: u64) -> Result<(), DatagramError> {
        let fresh = !self.opened.contains(&counter)
            && self
                .highest
                .is_none_or(|h| counter > h || h - counter < WINDOW);
        if !fresh {
            return Err(DatagramError::Replayed);
        }
        let e = counter / self.rekey;
        // The epoch before, the current one, the next, and up to
        // MAX_EPOCH_JUMP beyond it (keys derived when every datagram of the
        // epochs between was lost).
        let held = (self.epoch..=self.epoch + 1 + MAX_EPOCH_JUMP).contains(&e)
            || (self.epoch > 0 && e == self.epoch - 1);
        if !held {
            return Err(DatagramError::Key(KeyError::Epoch));
        }
        Ok(())
    }

    fn opened(&mut self, counter: u64) {
        self.opened.insert(counter);
        self.highest = Some(self.highest.map_or(counter, |h| h.max(counter)));
        self.epoch = self.epoch.max(counter / self.rekey);
    }
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let Some(setup) = input.byte() else { return };
    let rekey = REKEYS[usize::from(setup) % REKEYS.len()];
    let (seal, _) = secret(1).split(Role::Client, rekey);
    let (_, open) = secret(1).split(Role::Server, rekey);
    let (_, reflect_open) = secret(1).split(Role::Client, rekey);
    let (_, other_open) = secret(2).split(Role::Server, rekey);
    let mut tx = Sender::new(SESSION, seal);
    let mut rx = Receiver::new(SESSION, open);
    let mut reflected = Receiver::new(SESSION, reflect_open);
    let mut other = Receiver::new(SESSION, other_open);
    let mut model = Model {
        rekey,
        opened: BTreeSet::new(),
        highest: None,
        epoch: 0,
    };
    let mut sealed: Vec<Sealed> = Vec::new();
    let mut by_bytes: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut count: u64 = 0;

    while let Some(op) = input.byte() {
        let mut delivery: Option<Vec<u8>> = None;
        match op % 6 {
            // Seal a datagram (not delivered yet).
            0 => {
                let k = kind(input.byte().unwrap_or(0));
                let len = usize::from(input.byte().unwrap_or(0));
                let body = input.take(len).to_vec();
                if count < MAX_SEALED {
                    count += 1;
                    let mut out = Vec::new();
                    let n = tx.seal(k, &[&body], &mut out).expect("counter left");
                    assert_eq!(n, OVERHEAD + body.len());
                    let counter = Header::parse(&out).expect("own header").counter;
                    by_bytes.insert(out.clone(), sealed.len());
                    sealed.push(Sealed {
                        bytes: out,
                        counter,
                        kind: k,
                        body,
                    });
                }
            }
            // Deliver a sealed one (maybe again, maybe out of order).
            1 if !sealed.is_empty() => {
                let i = usize::from(input.byte().unwrap_or(0)) % sealed.len();
                delivery = Some(sealed[i].bytes.clone());
            }
            // Deliver a sealed one with one byte changed.
            2 if !sealed.is_empty() => {
                let i = usize::from(input.byte().unwrap_or(0)) % sealed.len();
                let mut d = sealed[i].bytes.clone();
                let at = usize::from(input.byte().unwrap_or(0)) % d.len();
                d[at] ^= input.byte().unwrap_or(1).max(1);
                delivery = Some(d);
            }
            // Deliver a sealed one cut short, or with bytes appended.
            3 if !sealed.is_empty() => {
                let i = usize::from(input.byte().unwrap_or(0)) % sealed.len();
                let mut d = sealed[i].bytes.clone();
                let n = usize::from(input.byte().unwrap_or(0));
                if n % 2 == 0 {
                    d.truncate(d.len().saturating_sub(n / 2 + 1));
                } else {
                    d.extend_from_slice(input.take(n / 2 + 1));
                }
                delivery = Some(d);
            }
            // Burn counters: moves the sender through epochs and past the window.
            4 => {
                let n = u64::from(input.byte().unwrap_or(0)) * 16;
                for _ in 0..n.min(MAX_SEALED - count) {
                    count += 1;
                    tx.seal(Kind::Packet, &[], &mut Vec::new())
                        .expect("counter left");
                }
            }
            // Arbitrary bytes, with a valid-looking header half the time.
            _ => {
                let len = usize::from(input.byte().unwrap_or(0));
                let mut d = Vec::new();
                if len % 2 == 1 {
                    let counter = u64::from(input.byte().unwrap_or(0)) << (len % 64);
                    d.extend_from_slice(
                        &Header {
                            session: SESSION,
                            counter,
                        }
                        .encode(),
                    );
                }
                d.extend_from_slice(input.take(len));
                delivery = Some(d);
            }
        }
        let Some(d) = delivery else { continue };

        // The header parser on its own.
        if let Ok(h) = Header::parse(&d) {
            assert!(d.len() >= OVERHEAD);
            assert_eq!(h.encode()[..], d[..HEADER_LEN]);
        }
        // Reflection and another session's keys: never.
        assert!(
            reflected.open(&mut d.clone()).is_err(),
            "reflected datagram accepted"
        );
        assert!(
            other.open(&mut d.clone()).is_err(),
            "another session's keys accepted it"
        );

        let mut buf = d.clone();
        let got = rx.open(&mut buf);
        match by_bytes.get(&d) {
            None => assert!(got.is_err(), "unauthenticated datagram accepted: {got:?}"),
            Some(&i) => {
                let want = &sealed[i];
                match (model.expect(want.counter), got) {
                    (Ok(()), Ok(o)) => {
                        assert_eq!(o.counter, want.counter);
                        assert_eq!(o.kind, want.kind);
                        assert_eq!(o.body, &want.body[..]);
                        model.opened(want.counter);
                    }
                    (Err(e), Err(g)) => assert_eq!(e, g, "counter {}", want.counter),
                    (e, g) => panic!("counter {}: model {e:?}, receiver {g:?}", want.counter),
                }
            }
        }
    }

    // Whatever the sender seals, the receiver opens exactly once.
    let (seal, _) = secret(1).split(Role::Client, rekey);
    let (_, open) = secret(1).split(Role::Server, rekey);
    let mut tx = Sender::new(SESSION, seal);
    let mut rx = Receiver::new(SESSION, open);
    let all: Vec<(Vec<u8>, Vec<u8>)> = sealed
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            tx.seal(s.kind, &[&s.body], &mut out).expect("counter left");
            (out, s.body.clone())
        })
        .collect();
    for (d, body) in &all {
        let mut buf = d.clone();
        let o = rx.open(&mut buf).expect("a sealed datagram opens");
        assert_eq!(o.body, &body[..]);
    }
    for (d, _) in &all {
        assert_eq!(rx.open(&mut d.clone()), Err(DatagramError::Replayed));
    }
});
