//! The `[tunnel]` keys the server and the client share: the priority of
//! the tunnel's threads, the congestion control of its outside connection
//! and the transport of its data. Defaults and checks live here once for both configs.

use std::path::Path;

use crate::config_file::ConfigError;

/// How data crosses: `auto` uses the UDP channel when it gets through and
/// the TLS connection's offload path while the path is clean and busy;
/// `udp` stays on UDP whenever it gets through; `tcp` never uses UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Probe UDP after the assignment; use it while it works, except on a
    /// clean, busy path (client side: see relay/choice.rs).
    #[default]
    Auto,
    /// Probe UDP and use it whenever it works.
    Udp,
    /// Never use UDP.
    Tcp,
}

/// Default of `tunnel.nice`.
pub fn default_nice() -> i32 {
    crate::priority::DEFAULT_NICE
}

/// Default of `tunnel.congestion`.
pub fn default_congestion() -> String {
    crate::outside::tcp::tune::DEFAULT_CONGESTION.to_owned()
}

/// Reports `tunnel.nice` and `tunnel.congestion` values that cannot work.
pub fn check(path: &Path, nice: i32, congestion: &str, errors: &mut Vec<ConfigError>) {
    if !crate::outside::tcp::tune::valid_congestion(congestion) {
        errors.push(ConfigError::invalid(
            path,
            "tunnel.congestion",
            "must be a TCP congestion control name such as \"cubic\" or \"bbr\", or \"\" for the system's",
        ));
    }
    if !crate::priority::RANGE.contains(&nice) {
        errors.push(ConfigError::invalid(
            path,
            "tunnel.nice",
            "must be between -20 and 19",
        ));
    }
}
