//! Peak resident memory of this process (the CPU backend's "peak memory").

/// Peak resident set size of this process so far in bytes (`getrusage(RUSAGE_SELF).ru_maxrss`; on Linux
/// that is reported in KiB). None if the call fails.
pub fn max_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (rc == 0 && ru.ru_maxrss > 0).then(|| ru.ru_maxrss as u64 * 1024)
}

/// Current peak RSS ("VmHWM") from `/proc/self/status`, in bytes.
pub fn vm_hwm_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current RSS ("VmRSS") from `/proc/self/status`, in bytes.
pub fn vm_rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Reset the kernel's peak-RSS mark of this process to the current RSS (writing `5` to
/// `/proc/self/clear_refs`, Linux ≥ 4.0), so that the next reading is the peak of what follows.
/// Returns whether it worked; when it did not, readings are the peak of the whole process so far.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// Peak memory of the region since the last successful [`reset_peak_rss`]: the larger of
/// `getrusage`'s max RSS and `/proc`'s VmHWM when the reset worked (the kernel resets both marks), else
/// `getrusage`'s process-wide max RSS.
pub fn peak_rss_bytes(was_reset: bool) -> Option<u64> {
    if was_reset {
        vm_hwm_bytes().or_else(max_rss_bytes)
    } else {
        max_rss_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_grows_with_a_touched_allocation() {
        let before = max_rss_bytes().expect("getrusage works on Linux");
        assert!(before > 0);
        let reset = reset_peak_rss();
        let base = peak_rss_bytes(reset).unwrap();
        // Touch 64 MiB so it becomes resident.
        let v = vec![1u8; 64 << 20];
        let sum: u64 = v.iter().step_by(4096).map(|&b| b as u64).sum();
        assert_eq!(sum, (64 << 20) / 4096);
        let after = peak_rss_bytes(reset).unwrap();
        assert!(after >= base + (60 << 20), "{base} -> {after}");
    }
}
