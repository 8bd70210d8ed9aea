//! Times in status output: RFC 3339 in UTC, with up to nine decimals
//! (docs/STATUS.md).

use std::time::SystemTime;

/// Formats a time as RFC 3339 UTC, for status output.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_with_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_729_079, 902_577_779);
        assert_eq!(rfc3339(t), "2026-11-26T21:37:59.902577779Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
