//! Memory figures from /proc (Linux). Elsewhere every reading is `None`: plans then rely on
//! `--max-memory` alone and the monitor only enforces the budget it can measure.

/// Resident and peak resident memory of one process, in bytes (VmRSS, VmHWM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessMemory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl ProcessMemory {
    /// This process.
    pub fn own() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// Another process, by pid (`pot monitor --pid`).
    pub fn of_pid(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    fn parse(status: &str) -> Option<Self> {
        Some(Self {
            rss_bytes: kib_field(status, "VmRSS:")?,
            peak_rss_bytes: kib_field(status, "VmHWM:")?,
        })
    }
}

/// The system's memory: total and available (MemAvailable, the kernel's estimate of what can be
/// allocated without swapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SystemMemory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl SystemMemory {
    pub fn read() -> Option<Self> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        Some(Self {
            total_bytes: kib_field(&info, "MemTotal:")?,
            available_bytes: kib_field(&info, "MemAvailable:")?,
        })
    }

    /// Percent of the system's memory in use (by every process), the predecessor's measure.
    pub fn used_percent(&self) -> f64 {
        100.0 * (self.total_bytes - self.available_bytes.min(self.total_bytes)) as f64
            / self.total_bytes.max(1) as f64
    }
}

/// A `Name:   123 kB` line of /proc's status or meminfo, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// The command name of a process (/proc/PID/comm), to check what a pid is before acting on it.
pub fn command_name(pid: u32) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let status = "Name:\tpot\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        let m = ProcessMemory::parse(status).unwrap();
        assert_eq!((m.rss_bytes, m.peak_rss_bytes), (1024 * 1024, 2048 * 1024));
        assert_eq!(ProcessMemory::parse("Name:\tpot\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        let own = ProcessMemory::own().expect("Linux /proc");
        assert!(own.rss_bytes > 0 && own.peak_rss_bytes >= own.rss_bytes);
        let sys = SystemMemory::read().unwrap();
        assert!(sys.available_bytes <= sys.total_bytes);
        assert!((0.0..=100.0).contains(&sys.used_percent()));
        assert!(
            command_name(std::process::id()).is_some(),
            "own comm readable"
        );
    }
}
