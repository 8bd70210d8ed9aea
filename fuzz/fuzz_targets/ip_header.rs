//! IP and offload header parsing as the data path does it: source and
//! destination of any packet, and an offload header from the network checked
//! against its packet. A header that passes validation must also be safe to
//! split into plain packets and to finish the checksum of, and its checksum
//! write (which the kernel makes after the source filter) must never touch
//! the IP header, where the addresses are.
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
    if let Ok((checked, rest)) = Header::split_checked(data) {
        assert_eq!((checked, rest), (header, packet));
    }
    if header.validate(packet).is_ok() {
        if header.flags & offload::F_NEEDS_CSUM != 0 {
            let ip_header = if packet[0] >> 4 == 4 {
                usize::from(packet[0] & 0x0f) * 4
            } else {
                40
            };
            assert!(usize::from(header.csum_start) >= ip_header.max(20));
        }
        let _ = ippacket::addresses(packet);
        let _ = offload::split(&header, packet, |segment| {
            let _ = ippacket::addresses(segment);
        });
        let mut copy = packet.to_vec();
        offload::finish_checksum(&mut copy, &header);
    }
});
