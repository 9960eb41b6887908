//! The memory and CPU flags shared by `pot verify` and `pot fingerprint`, and applying them to
//! this process (thread pool size, priority).

use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use pot_memory_governor::{GB, Limits, Thresholds, lower_priority};
use pot_orchestrator::ResourceOptions;

/// The monitor's thresholds, shared by `verify`, `fingerprint` and `monitor`.
#[derive(Args, Clone, Debug)]
pub struct ThresholdArgs {
    /// System memory use (%) at which the monitor warns.
    #[arg(long, default_value_t = 75.0, value_name = "PERCENT")]
    warning: f64,
    /// System memory use (%) at which the monitor records a critical event.
    #[arg(long, default_value_t = 85.0, value_name = "PERCENT")]
    critical: f64,
    /// System memory use (%) at which pot stops: its own work in `verify` and `fingerprint`
    /// ("memory limit exceeded"), the guarded pot process in `monitor`.
    #[arg(long, default_value_t = 92.0, value_name = "PERCENT")]
    kill: f64,
}

impl ThresholdArgs {
    pub fn thresholds(&self) -> anyhow::Result<Thresholds> {
        let t = Thresholds {
            warning: self.warning,
            critical: self.critical,
            kill: self.kill,
        };
        t.validate().map_err(|e| anyhow!(e))?;
        Ok(t)
    }
}

#[derive(Args, Clone, Debug)]
pub struct ResourceArgs {
    /// The most memory pot may use, in GB (10^9 bytes); planned before loading, enforced while
    /// running.
    #[arg(long, default_value_t = 40.0, value_name = "GB")]
    max_memory: f64,
    /// Memory (GB) to leave available to the rest of the system.
    #[arg(long, default_value_t = 2.0, value_name = "GB")]
    min_free: f64,
    /// Allow streaming weights layer by layer when a model does not fit resident.
    #[arg(long)]
    enable_offload: bool,
    /// Hold weights as int8 (per-group scales; about a quarter of f32 memory; small score noise,
    /// see docs/MEMORY.md).
    #[arg(long)]
    enable_8bit: bool,
    /// Threads for all compute (default: every core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Scheduling priority of this process (nice value, 0-19; higher yields more).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    nice: i32,
    #[command(flatten)]
    thresholds: ThresholdArgs,
}

impl ResourceArgs {
    /// Applies threads and priority to this process and returns the pipeline's options.
    pub fn apply(&self) -> anyhow::Result<ResourceOptions> {
        if !(self.max_memory.is_finite() && self.max_memory > 0.0) {
            return Err(anyhow!("--max-memory must be a positive number of GB"));
        }
        if !(self.min_free.is_finite() && self.min_free >= 0.0) {
            return Err(anyhow!(
                "--min-free must be zero or a positive number of GB"
            ));
        }
        let thresholds = self.thresholds.thresholds()?;
        if let Some(n) = self.threads {
            if n == 0 {
                return Err(anyhow!("--threads must be at least 1"));
            }
            // burn-flex's matmul and our dequantisers both run on rayon's global pool.
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("cannot size the thread pool")?;
        }
        if self.nice > 0
            && let Err(e) = lower_priority(self.nice)
        {
            eprintln!("note: could not lower priority to nice {}: {e}", self.nice);
        }
        Ok(ResourceOptions {
            limits: Limits {
                max_memory_bytes: (self.max_memory * GB) as u64,
                min_free_bytes: (self.min_free * GB) as u64,
                enable_offload: self.enable_offload,
                enable_8bit: self.enable_8bit,
            },
            thresholds,
            monitor_interval: Duration::from_millis(100),
            interrupt: crate::embed::interrupt(),
        })
    }
}
