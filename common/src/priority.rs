//! Scheduling priority of the tunnel. Every packet through the tunnel waits
//! for a twoway thread to run; on a busy machine (the bulk transfer itself
//! keeps the cores busy) a default-priority VPN process adds milliseconds to
//! every round trip. A negative nice value lets the tunnel run first.

use std::io;

/// The nice value the tunnel asks for unless configured (`tunnel.nice`).
pub const DEFAULT_NICE: i32 = -10;

/// The range `setpriority` accepts.
pub const RANGE: std::ops::RangeInclusive<i32> = -20..=19;

/// Gives every thread of this process the nice value `nice` (Linux keeps it
/// per thread; threads started later inherit it from the thread that starts
/// them). Lowering it needs root or CAP_SYS_NICE.
pub fn set_nice(nice: i32) -> io::Result<()> {
    for entry in std::fs::read_dir("/proc/self/task")? {
        let tid = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse().ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(tid) = tid {
            match rustix::process::setpriority_process(Some(tid), nice) {
                // The thread ended since the directory was read.
                Err(rustix::io::Errno::SRCH) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// Applies `nice` if it differs from the default of 0, logging the outcome;
/// a failure is not fatal (the tunnel works, only with less priority).
pub fn apply(nice: i32) {
    if nice == 0 {
        return;
    }
    match set_nice(nice) {
        Ok(()) => tracing::debug!(nice, "scheduling priority set"),
        Err(e) => tracing::warn!(
            nice,
            "cannot set scheduling priority (key `tunnel.nice`): {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{getpriority_process, Pid};

    #[test]
    fn every_thread_gets_the_value() {
        // Raising the nice value needs no privilege (it only slows this test
        // process a little).
        let current = getpriority_process(None).unwrap();
        let target = (current + 1).min(19);
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            let tid: i32 = me.file_name().unwrap().to_str().unwrap().parse().unwrap();
            tx.send(tid).unwrap();
            let _ = done_rx.recv();
        });
        let tid = Pid::from_raw(rx.recv().unwrap());
        set_nice(target).unwrap();
        assert_eq!(getpriority_process(None).unwrap(), target);
        assert_eq!(
            getpriority_process(tid).unwrap(),
            target,
            "the other thread too"
        );
        done_tx.send(()).unwrap();
        helper.join().unwrap();
    }
}
