//! The warning a client gives while its certificate is about to expire (or
//! has): in its log once when it starts and then once a day, and in
//! `status` as long as it holds.

use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::warn;
use twoway_common::control::timestamp::rfc3339;

use crate::credentials::Certificate;

/// A certificate that expires within this time gets a warning.
pub const WARN_WITHIN: Duration = Duration::from_secs(14 * 24 * 3600);
/// How often the running client looks at the clock again.
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How often the log repeats the warning.
const REPEAT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The warning about `cert` at `now`, if it expires within [`WARN_WITHIN`].
pub fn warning(cert: &Certificate, now: SystemTime) -> Option<String> {
    let whose = match &cert.identity {
        Some(id) => format!("the certificate of {id}"),
        None => "the client certificate".to_owned(),
    };
    let renew = match &cert.identity {
        Some(id) => format!("`twoway-server pki renew --dir DIR {id}`"),
        None => "`twoway-server pki renew`".to_owned(),
    };
    let at = rfc3339(cert.not_after);
    match cert.not_after.duration_since(now) {
        Err(_) => Some(format!(
            "{whose} expired at {at}: the server refuses it; \
             ask the administrator for a new one ({renew})"
        )),
        Ok(left) if left <= WARN_WITHIN => Some(format!(
            "{whose} expires in {} ({at}): ask the administrator to renew it ({renew}) \
             and install the new certificate",
            how_long(left)
        )),
        Ok(_) => None,
    }
}

/// "6 days", "1 day", "5 hours", "less than an hour".
fn how_long(left: Duration) -> String {
    let hours = left.as_secs() / 3600;
    let days = hours / 24;
    match (days, hours) {
        (0, 0) => "less than an hour".to_owned(),
        (0, 1) => "1 hour".to_owned(),
        (0, h) => format!("{h} hours"),
        (1, _) => "1 day".to_owned(),
        (d, _) => format!("{d} days"),
    }
}

/// Logs the warning at once if it applies, then once a day while it does,
/// until `stop`.
pub async fn watch(cert: Certificate, stop: CancellationToken) {
    let mut logged: Option<Instant> = None;
    loop {
        if let Some(text) = warning(&cert, SystemTime::now()) {
            if logged.is_none_or(|t| t.elapsed() >= REPEAT_EVERY) {
                warn!(expires = %rfc3339(cert.not_after), "{text}");
                logged = Some(Instant::now());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn cert(identity: Option<&str>, not_after: SystemTime) -> Certificate {
        Certificate {
            identity: identity.map(str::to_owned),
            not_after,
        }
    }

    #[test]
    fn warns_within_fourteen_days_and_not_before() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(warning(&cert(Some("alice"), now + 15 * DAY), now), None);
        assert_eq!(
            warning(
                &cert(Some("alice"), now + WARN_WITHIN + Duration::from_secs(1)),
                now
            ),
            None
        );
        let w = warning(&cert(Some("alice"), now + WARN_WITHIN), now).unwrap();
        assert!(w.contains("expires in 14 days"), "{w}");
        let w = warning(
            &cert(Some("alice"), now + 7 * DAY - Duration::from_secs(60)),
            now,
        )
        .unwrap();
        assert!(
            w.starts_with("the certificate of alice expires in 6 days (")
                && w.contains("pki renew --dir DIR alice"),
            "{w}"
        );
        let w = warning(&cert(None, now + Duration::from_secs(7200)), now).unwrap();
        assert!(w.contains("client certificate expires in 2 hours"), "{w}");
    }

    #[test]
    fn an_expired_certificate_says_so() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = warning(&cert(Some("bob"), now - DAY), now).unwrap();
        assert!(w.contains("expired at") && w.contains("refuses it"), "{w}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(how_long(Duration::from_secs(59 * 60)), "less than an hour");
        assert_eq!(how_long(Duration::from_secs(3600)), "1 hour");
        assert_eq!(how_long(DAY + Duration::from_secs(5)), "1 day");
        assert_eq!(how_long(13 * DAY), "13 days");
    }
}
