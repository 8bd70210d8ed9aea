//! Whether this process may create a TUN device and change routes, checked
//! before connecting: `up` without CAP_NET_ADMIN then ends at once with exit
//! code 5, whether or not the server is reachable, and the server never sees
//! a session that could not have been used.

use crate::error::ClientError;

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// `Err(Privilege)` if the effective capabilities lack CAP_NET_ADMIN. When
/// they cannot be read (no /proc), creating the device will tell instead.
pub fn check() -> Result<(), ClientError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match has_net_admin(&status) {
        Some(false) => Err(ClientError::Privilege(
            "CAP_NET_ADMIN is needed to create the TUN device and routes \
             (run as root, or under the twoway@ systemd unit)"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// CAP_NET_ADMIN in the `CapEff:` line of /proc/self/status, if there is one.
fn has_net_admin(status: &str) -> Option<bool> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    let caps = u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_net_admin_from_proc_status() {
        let root = "Name:\ttwoway\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(has_net_admin(root), Some(true));
        let only = "CapEff:\t0000000000001000\n";
        assert_eq!(has_net_admin(only), Some(true));
        let nobody = "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n";
        assert_eq!(has_net_admin(nobody), Some(false));
        assert_eq!(has_net_admin("Name:\ttwoway\n"), None);
        assert_eq!(has_net_admin("CapEff:\tzz\n"), None);
    }
}
