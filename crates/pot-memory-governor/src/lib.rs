//! pot-memory-governor: keeps a verification safe on models larger than memory.
//!
//! - [`plan`]: from a model's description (sizes only, no weight reads) and the limits
//!   (`--max-memory`, `--min-free`, `--enable-offload`, `--enable-8bit`), choose resident,
//!   streamed layer by layer, or int8 weights, or refuse before loading with the numbers and the
//!   flags that would make it fit.
//! - [`Monitor`]: a sampling thread over this process's own RSS and the system's available
//!   memory, with warning / critical / kill thresholds; at the kill threshold or past the budget it
//!   raises a cancel flag that the forward pass checks between layers. It never signals any
//!   process; `pot monitor` (the CLI) is the only place that may stop a process, and only the pot
//!   process it was asked to guard.
//! - [`process`]: what /proc says about a process and the system.

mod monitor;
mod plan;
pub mod process;

pub use monitor::{
    EventLevel, INTERRUPTED, MemoryEvent, MemorySample, Monitor, MonitorConfig, MonitorReport,
    Thresholds,
};
pub use plan::{Estimate, Execution, Limits, Plan, PlanError, Strategy, Workload, estimates, plan};
pub use process::{ProcessMemory, SystemMemory};

/// Bytes in a GB as the CLI counts them (10^9, like `--max-memory 3` = 3 GB).
pub const GB: f64 = 1e9;

/// `bytes` as GB with two decimals, for messages.
pub fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / GB)
}

/// Lowers this process's scheduling priority (`nice`), so a long verification yields the CPU to
/// interactive work. Returns the new niceness.
pub fn lower_priority(niceness: i32) -> std::io::Result<i32> {
    // SAFETY: setpriority/getpriority on our own process (who = 0) only.
    unsafe {
        if libc::setpriority(libc::PRIO_PROCESS, 0, niceness) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(libc::getpriority(libc::PRIO_PROCESS, 0))
    }
}
