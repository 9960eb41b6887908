//! `pot monitor`: a standalone memory monitor like the predecessor's, without its worst habit.
//! It watches the system's memory and one pot process; at the kill threshold it sends SIGTERM
//! to that process only, after checking that the pid is a pot process. It writes its report on
//! every exit: the guarded process ended, kill, or SIGTERM / SIGINT to the monitor itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use pot_memory_governor::process::command_name;
use pot_memory_governor::{ProcessMemory, SystemMemory};
use serde_json::json;

use crate::exit::{self, Failure};
use crate::resources::ThresholdArgs;
use crate::verify::write_atomically;

#[derive(Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    thresholds: ThresholdArgs,
    /// The pot process to guard (without it: watch only, never signal).
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Write the JSON report here on exit.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Stop after this many seconds (default: until the guarded process ends or a signal).
    #[arg(long)]
    duration: Option<f64>,
}

/// Longest sampling interval `pot monitor` accepts (one hour).
const MAX_INTERVAL_S: f64 = 3600.0;

pub fn monitor_cmd(args: MonitorArgs) -> Result<u8, Failure> {
    let thresholds = args.thresholds.thresholds()?;
    // Bounded above too: a duration of 1e20 s does not exist (it used to panic).
    if !(args.interval.is_finite() && args.interval > 0.0 && args.interval <= MAX_INTERVAL_S) {
        return Err(
            anyhow!("--interval must be a number of seconds in (0, {MAX_INTERVAL_S}]").into(),
        );
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d >= 0.0)
    {
        return Err(anyhow!("--duration must be a non-negative number of seconds").into());
    }
    if let Some(pid) = args.pid {
        match command_name(pid) {
            None => bail_usage(format!("no process with pid {pid}"))?,
            Some(name) if name != "pot" => bail_usage(format!(
                "pid {pid} is `{name}`, not a pot process; pot monitor only ever stops pot"
            ))?,
            Some(_) => {}
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("cannot install handler")?;
    }

    let started = Instant::now();
    let (mut events, mut samples) = (Vec::new(), 0u64);
    let (mut peak_used, mut peak_rss) = (0f64, 0u64);
    let (mut warned, mut critical) = (false, false);
    let mut note = |level: &str, message: String| {
        eprintln!(
            "[{:.1}s] {level}: {message}",
            started.elapsed().as_secs_f64()
        );
        events.push(
            json!({ "at_s": started.elapsed().as_secs_f64(), "level": level, "message": message }),
        );
    };
    let end_reason = loop {
        if stop.load(Ordering::Relaxed) {
            break "signal received (SIGTERM or SIGINT)".to_string();
        }
        if args
            .duration
            .is_some_and(|d| started.elapsed().as_secs_f64() >= d)
        {
            break "duration reached".to_string();
        }
        let used = SystemMemory::read().map(|s| s.used_percent());
        let guarded = args.pid.map(|pid| (pid, ProcessMemory::of_pid(pid)));
        if let Some((pid, None)) = guarded {
            break format!("guarded process {pid} ended");
        }
        samples += 1;
        if let Some((_, Some(m))) = guarded {
            peak_rss = peak_rss.max(m.rss_bytes);
        }
        if let Some(used) = used {
            peak_used = peak_used.max(used);
            if used >= thresholds.warning && !warned {
                warned = true;
                note("warning", format!("system memory {used:.1}% used"));
            }
            if used >= thresholds.critical && !critical {
                critical = true;
                note("critical", format!("system memory {used:.1}% used"));
            }
            if used >= thresholds.kill {
                match args.pid {
                    Some(pid) if command_name(pid).as_deref() == Some("pot") => {
                        // SAFETY: kill(2) on the one pid we were asked to guard, re-checked
                        // to still be a pot process just above.
                        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                        let outcome = if rc == 0 {
                            "sent SIGTERM to"
                        } else {
                            "could not signal"
                        };
                        note(
                            "kill",
                            format!("system memory {used:.1}% used: {outcome} pot process {pid}"),
                        );
                        break format!("kill threshold {}% reached", thresholds.kill);
                    }
                    _ => note(
                        "kill",
                        format!("system memory {used:.1}% used (no pot process to stop)"),
                    ),
                }
            }
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval));
    };
    let report = json!({
        "monitor": "pot monitor",
        "pid": args.pid,
        "thresholds": thresholds,
        "samples": samples,
        "seconds": started.elapsed().as_secs_f64(),
        "peak_system_used_percent": peak_used,
        "peak_guarded_rss_bytes": args.pid.map(|_| peak_rss),
        "events": events,
        "end": end_reason,
    });
    eprintln!("monitor ended: {end_reason}");
    if let Some(path) = &args.report {
        write_atomically(
            path,
            &serde_json::to_string_pretty(&report).map_err(|e| anyhow!(e))?,
        )?;
    }
    Ok(exit::SAME)
}

fn bail_usage(message: String) -> anyhow::Result<()> {
    bail!(message)
}
