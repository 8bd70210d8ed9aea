//! IP and offload header parsing as the data path does it: source and
//! destination of any packet, and an offload header from the network checked
//! against its packet. A header that passes validation must also be safe to
//! split into plain packets and to finish the checksum of.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twoway_common::ippacket;
use twoway_common::offload::{self, Header, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let _ = ippacket::addresses(data);
    if data.len() < HEADER_LEN {
        return;
    }
    let (head, packet) = data.split_at(HEADER_LEN);
    let header = Header::read(head);
    assert_eq!(Header::read(&header.to_wire()), header);
    if header.validate(packet).is_ok() {
        let _ = ippacket::addresses(packet);
        let _ = offload::split(&header, packet, |segment| {
            let _ = ippacket::addresses(segment);
        });
        let mut copy = packet.to_vec();
        offload::finish_checksum(&mut copy, &header);
    }
});
