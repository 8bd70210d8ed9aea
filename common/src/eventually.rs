//! Waiting in tests for what happens in the background (feature
//! `test-util`): [`eventually`] polls a probe until it succeeds or a
//! deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

/// Awaits `probe` every `every` until it gives `Ok`, and returns that value.
/// Once `timeout` has passed, panics with the last `Err` (what the probe saw).
/// The probe always runs at least once.
pub async fn eventually<T, F, Fut>(timeout: Duration, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(Instant::now() < deadline, "{seen}"),
        }
        tokio::time::sleep(every).await;
    }
}
