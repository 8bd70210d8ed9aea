//! The train collector (`relay::train::Collector`): the receiving side of
//! large TCP packets that crossed the UDP channel as tagged segments. The
//! peer chooses every tag and segment byte (authenticated, but a peer can be
//! hostile). Checked: nothing panics; every byte handed on as a single
//! segment is one of the segments pushed, whole; a joined packet is no larger
//! than an offload packet may be and carries a header the offload check
//! (`Header::validate`, which the TUN write relies on) accepts. Tags are
//! narrowed (2 trains, up to 8 segments) so that trains complete often.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twoway_common::offload;
use twoway_common::relay::train::{Collector, Step, TAG_LEN};

fuzz_target!(|input: &[u8]| {
    let mut collector = Collector::default();
    let mut pushed: Vec<Vec<u8>> = Vec::new();
    let mut ops = input;
    while let [a, b, c, d, len, rest @ ..] = ops {
        let tag: [u8; TAG_LEN] = [*a & 1, *b, *c & 7, *d & 7];
        let len = usize::from(*len) * 8;
        let (segment, rest) = rest.split_at(len.min(rest.len()));
        ops = rest;
        pushed.push(segment.to_vec());
        let mut singles: Vec<Vec<u8>> = Vec::new();
        let step = collector.push(tag, segment, &mut |s| singles.push(s.to_vec()));
        for s in &singles {
            assert!(pushed.contains(s), "a single segment nobody pushed");
        }
        if let Step::Whole(header, packet) = step {
            assert!(packet.len() <= offload::MAX_PACKET);
            assert!(
                header.validate(&packet).is_ok(),
                "a joined packet the offload check refuses: {header:?}"
            );
        }
    }
    collector.release(&mut |s| assert!(pushed.iter().any(|p| p == s)));
});
