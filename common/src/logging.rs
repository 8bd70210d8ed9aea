//! Log output for both binaries: plain text (no colours unless on a
//! terminal) or JSON lines for collectors; level from RUST_LOG, default info.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

/// A list for a log field, each item as it displays (`10.99.0.0/24`, not
/// the `Ipv4Network { addr: .., prefix: 24 }` of `?`): `[a, b]`.
pub fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let inner: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", inner.join(", "))
}

/// Installs the global subscriber writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn networks_in_a_list_print_as_cidr() {
        let nets: Vec<ipnetwork::IpNetwork> =
            vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()];
        assert_eq!(super::list(&nets), "[10.0.0.0/24, fd00::/64]");
        assert_eq!(super::list::<ipnetwork::IpNetwork>(&[]), "[]");
    }
}
