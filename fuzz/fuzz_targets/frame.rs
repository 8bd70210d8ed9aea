//! The frame decoder, fed an arbitrary byte stream in arbitrary read sizes as
//! a TLS stream would deliver it. Every frame it yields must be within the
//! limits and re-encode to exactly the bytes it came from; control frames are
//! parsed as the peers parse them.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use twoway_common::outside::tcp::record::frame::{self, FrameType, MAX_PAYLOAD};
use twoway_common::message::{self, Assignment, Bye, Hello, Refusal, Update};

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    // Read sizes 1..=256 bytes, so headers and payloads are cut anywhere.
    let step = usize::from(step) + 1;
    let mut buf = BytesMut::new();
    let mut reencoded = BytesMut::new();
    'read: for chunk in stream.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match frame::decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= MAX_PAYLOAD);
                    frame::encode(f.kind, &f.payload, &mut reencoded);
                    control(f.kind, &f.payload);
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
    }
    assert_eq!(&reencoded[..], &stream[..reencoded.len()]);
});

fn control(kind: FrameType, payload: &[u8]) {
    match kind {
        FrameType::Hello => drop(message::decode::<Hello>(payload)),
        FrameType::Assign => drop(message::decode::<Assignment>(payload)),
        FrameType::Refuse => drop(message::decode::<Refusal>(payload)),
        FrameType::Bye => drop(message::decode::<Bye>(payload)),
        FrameType::Update => drop(message::decode::<Update>(payload)),
        _ => {}
    }
}
