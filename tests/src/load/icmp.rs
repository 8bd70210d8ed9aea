//! ICMP echo packets, with real checksums (a kernel drops anything else).

use std::net::Ipv4Addr;

const PROTO_ICMP: u8 = 1;
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn packet(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, id: u16, seq: u16, body: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + body.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = PROTO_ICMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = kind;
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..].copy_from_slice(body);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// An IPv4 ICMP echo request with `len` payload bytes.
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, len: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
    packet(src, dst, ECHO_REQUEST, id, seq, &body)
}

/// The reply a host would send to `request`, if it is an echo request.
pub fn reply_to(request: &[u8]) -> Option<Vec<u8>> {
    if request.len() < 28 || request[0] != 0x45 || request[9] != PROTO_ICMP {
        return None;
    }
    if request[20] != ECHO_REQUEST {
        return None;
    }
    let src = Ipv4Addr::new(request[16], request[17], request[18], request[19]);
    let dst = Ipv4Addr::new(request[12], request[13], request[14], request[15]);
    let id = u16::from_be_bytes([request[24], request[25]]);
    let seq = u16::from_be_bytes([request[26], request[27]]);
    Some(packet(src, dst, ECHO_REPLY, id, seq, &request[28..]))
}

/// Whether `packet` is an IPv4 ICMP echo reply addressed to `me`.
pub fn is_echo_reply_to(packet: &[u8], me: Ipv4Addr) -> bool {
    packet.len() >= 28
        && packet[0] >> 4 == 4
        && packet[9] == PROTO_ICMP
        && packet[16..20] == me.octets()
        && packet.get(usize::from(packet[0] & 0x0f) * 4) == Some(&ECHO_REPLY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_have_valid_checksums() {
        let a = Ipv4Addr::new(198, 18, 72, 5);
        let b = Ipv4Addr::new(198, 18, 64, 1);
        let req = echo_request(a, b, 7, 1, 33);
        assert_eq!(checksum(&req[..20]), 0);
        assert_eq!(checksum(&req[20..]), 0);
        let rep = reply_to(&req).unwrap();
        assert_eq!(checksum(&rep[..20]), 0);
        assert_eq!(checksum(&rep[20..]), 0);
        assert!(is_echo_reply_to(&rep, a));
        assert!(!is_echo_reply_to(&rep, b));
        assert!(!is_echo_reply_to(&req, a));
        assert!(reply_to(&rep).is_none());
    }
}
