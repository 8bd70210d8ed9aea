//! Scheduling priority of the tunnel. Every packet through the tunnel waits
//! for a twoway thread to run; on a busy machine (the bulk transfer itself
//! keeps the cores busy) a default-priority VPN process adds milliseconds to
//! every round trip. A negative nice value lets the tunnel run first.

use std::io;

/// The nice value the tunnel asks for unless configured (`tunnel.nice`).
pub const DEFAULT_NICE: i32 = -10;

/// The range `setpriority` accepts.
pub const RANGE: std::ops::RangeInclusive<i32> = -20..=19;

/// What `tunnel.nice` asks of a thread that runs at nice value `current`.
///
/// 0 leaves the priority alone. A negative value is the least priority the
/// tunnel wants: a thread that already runs at that value or lower (started
/// with `Nice=-10` by the shipped units, or by `nice -n -15`) keeps its own.
/// Under the units this is what keeps the default quiet: they set the
/// value themselves and forbid the call (`SystemCallFilter=~@resources`).
/// A positive value asks the tunnel to yield, and is set unless the thread
/// already has it.
pub fn needs_change(wanted: i32, current: i32) -> bool {
    match wanted {
        0 => false,
        w if w < 0 => current > w,
        w => current != w,
    }
}

/// Gives every thread of this process that `needs_change` the nice value
/// `nice` (Linux keeps it per thread; threads started later inherit it from
/// the thread that starts them). Lowering it needs root or CAP_SYS_NICE.
/// Returns how many threads were changed.
pub fn set_nice(nice: i32) -> io::Result<usize> {
    let mut changed = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let tid = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse().ok())
            .and_then(rustix::process::Pid::from_raw);
        let Some(tid) = tid else { continue };
        // A thread whose value cannot be read is set, as before this check.
        let current = rustix::process::getpriority_process(Some(tid)).ok();
        if current.is_some_and(|c| !needs_change(nice, c)) {
            continue;
        }
        match rustix::process::setpriority_process(Some(tid), nice) {
            Ok(()) => changed += 1,
            // The thread ended since the directory was read.
            Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(changed)
}

/// Applies `tunnel.nice` (see `needs_change`), logging the outcome; a
/// failure is not fatal (the tunnel works, only with less priority).
pub fn apply(nice: i32) {
    if nice == 0 {
        return;
    }
    match set_nice(nice) {
        Ok(0) => tracing::debug!(nice, "scheduling priority already as asked"),
        Ok(threads) => tracing::debug!(nice, threads, "scheduling priority set"),
        Err(e) => tracing::warn!(
            nice,
            "cannot set scheduling priority (key `tunnel.nice`; needs root or CAP_SYS_NICE, or `Nice=` in the unit): {e}"
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
        // Positive: a negative value the process already beats is left alone.
        let target = (current.max(0) + 1).min(19);
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

    #[test]
    fn a_thread_already_at_the_asked_priority_or_better_is_left_alone() {
        // The shipped units: Nice=-10 and the default -10.
        assert!(!needs_change(DEFAULT_NICE, -10));
        // A unit (or `nice -n -15`) that gave more than asked keeps it.
        assert!(!needs_change(-10, -15));
        // Less than asked: lower the value (needs root or CAP_SYS_NICE).
        assert!(needs_change(-10, 0));
        assert!(needs_change(-10, -5));
        assert!(needs_change(-10, 5));
        // 0 never touches it.
        assert!(!needs_change(0, 5));
        assert!(!needs_change(0, -10));
        // A positive value asks to yield: set unless already there.
        assert!(needs_change(5, 0));
        assert!(needs_change(5, -10));
        assert!(needs_change(5, 10));
        assert!(!needs_change(5, 5));
    }
}
