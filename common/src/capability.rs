//! Whether this process holds CAP_NET_ADMIN, read from /proc/self/status:
//! both binaries check it before they read any file, so that a missing
//! privilege is one clear message (exit code 5), not a failure further on.

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// What to do without CAP_NET_ADMIN, for messages.
pub const NET_ADMIN_HINT: &str = "run as root or grant CAP_NET_ADMIN";

/// Whether the effective capabilities include CAP_NET_ADMIN; None when
/// they cannot be read (no /proc): creating the device will tell instead.
pub fn net_admin() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    has_net_admin(&status)
}

/// CAP_NET_ADMIN in the `CapEff:` line of a /proc/PID/status text, if there is one.
pub fn has_net_admin(status: &str) -> Option<bool> {
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
