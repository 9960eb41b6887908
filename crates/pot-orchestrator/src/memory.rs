//! The process's own memory, measured from /proc (Linux); `None` elsewhere.

/// Resident and peak resident memory of this process, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MemorySnapshot {
    pub rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
}

impl MemorySnapshot {
    pub fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        Self {
            rss_bytes: field("VmRSS:"),
            peak_rss_bytes: field("VmHWM:"),
        }
    }
}

/// Peak resident memory of this process so far (VmHWM), in GB (10^9 bytes).
pub fn peak_memory_gb() -> Option<f64> {
    MemorySnapshot::now().peak_rss_bytes.map(|b| b as f64 / 1e9)
}
