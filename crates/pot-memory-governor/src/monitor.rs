//! The in-process memory monitor: a sampling thread that records threshold crossings and, at
//! the kill threshold or past the budget, raises a cancel flag that pot's own work checks (the
//! forward pass between layers and head chunks). It never signals any process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{ProcessMemory, SystemMemory, gb};

/// Percent of the system's memory in use at which to warn, to record a critical event, and to
/// stop pot's work (the predecessor's 75 / 85 / 92).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    pub warning: f64,
    pub critical: f64,
    pub kill: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warning: 75.0,
            critical: 85.0,
            kill: 92.0,
        }
    }
}

impl Thresholds {
    pub fn validate(&self) -> Result<(), String> {
        let ordered = 0.0 < self.warning && self.warning <= self.critical;
        if ordered && self.critical <= self.kill && self.kill <= 100.0 {
            Ok(())
        } else {
            Err(format!(
                "thresholds must satisfy 0 < warning <= critical <= kill <= 100 (got {} / {} / {})",
                self.warning, self.critical, self.kill
            ))
        }
    }
}

#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub thresholds: Thresholds,
    /// This process's RSS may not exceed this (the plan's budget).
    pub budget_bytes: Option<u64>,
    pub interval: Duration,
    /// Set by whoever embeds pot to stop the work (Ctrl-C in the Python package): the monitor
    /// cancels it as at the kill threshold, with the reason [`INTERRUPTED`].
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// The abort reason of work stopped through [`MonitorConfig::interrupt`].
pub const INTERRUPTED: &str = "interrupted";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLevel {
    /// A stage boundary noted by the pipeline (model loaded, released, ...).
    Info,
    Warning,
    Critical,
    /// Kill threshold or budget crossed: work cancelled.
    Kill,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryEvent {
    /// Seconds since the monitor started.
    pub at_s: f64,
    pub level: EventLevel,
    pub message: String,
    pub rss_bytes: Option<u64>,
    pub system_used_percent: Option<f64>,
}

/// One reading of the sampling thread, for the memory-over-time picture of a run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemorySample {
    /// Seconds since the monitor started.
    pub at_s: f64,
    pub rss_bytes: Option<u64>,
    pub system_used_percent: Option<f64>,
}

/// Readings kept at most (a long run keeps every 2nd, 4th, ... reading, evenly spread).
const SERIES_CAPACITY: usize = 512;

/// A bounded, evenly thinned record of readings: when full, every other reading is dropped and
/// from then on only every `stride`-th reading is kept, so a run of any length keeps between
/// half and all of `SERIES_CAPACITY` points covering its whole duration.
#[derive(Default)]
struct Series {
    kept: Vec<MemorySample>,
    stride: u64,
    seen: u64,
}

impl Series {
    fn push(&mut self, sample: MemorySample) {
        let stride = self.stride.max(1);
        if self.seen.is_multiple_of(stride) {
            if self.kept.len() == SERIES_CAPACITY {
                let mut i = 0u64;
                self.kept.retain(|_| {
                    i += 1;
                    !i.is_multiple_of(2)
                });
                self.stride = stride * 2;
            }
            if self.seen.is_multiple_of(self.stride.max(1)) {
                self.kept.push(sample);
            }
        }
        self.seen += 1;
    }
}

/// What the monitor saw, when it is stopped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitorReport {
    pub samples: u64,
    /// Readings over the run (at most 512, evenly thinned): RSS and system use.
    pub series: Vec<MemorySample>,
    /// Peak RSS of this process (VmHWM, the kernel's own high-water mark).
    pub peak_rss_bytes: Option<u64>,
    pub events: Vec<MemoryEvent>,
    /// Why the work was cancelled, when it was.
    pub abort: Option<String>,
}

struct State {
    events: Vec<MemoryEvent>,
    series: Series,
    samples: u64,
    abort: Option<String>,
}

pub struct Monitor {
    started: Instant,
    cancel: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts the sampling thread; an error when the thread cannot be spawned (a run must not
    /// go on unguarded).
    pub fn start(config: MonitorConfig) -> std::io::Result<Self> {
        let started = Instant::now();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            events: Vec::new(),
            series: Series::default(),
            samples: 0,
            abort: None,
        }));
        let thread = {
            let (cancel, stop, state) = (cancel.clone(), stop.clone(), state.clone());
            std::thread::Builder::new()
                .name("pot-memory-monitor".into())
                .spawn(move || sample_loop(&config, started, &cancel, &stop, &state))?
        };
        Ok(Self {
            started,
            cancel,
            stop,
            state,
            thread: Some(thread),
        })
    }

    /// The flag the work checks; set at the kill threshold or past the budget.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Why the work was cancelled, if it was.
    pub fn abort_reason(&self) -> Option<String> {
        self.state.lock().ok()?.abort.clone()
    }

    /// Records a stage boundary with the memory figures at that moment.
    pub fn note(&self, message: &str) {
        let event = event(self.started, EventLevel::Info, message.to_string());
        if let Ok(mut s) = self.state.lock() {
            s.events.push(event);
        }
    }

    /// Stops the sampling thread and returns what it saw.
    pub fn finish(mut self) -> MonitorReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let state = self.state.lock().map(|mut s| {
            (
                std::mem::take(&mut s.events),
                std::mem::take(&mut s.series.kept),
                s.samples,
                s.abort.take(),
            )
        });
        let (events, series, samples, abort) = state.unwrap_or_default();
        MonitorReport {
            samples,
            series,
            peak_rss_bytes: ProcessMemory::own().map(|m| m.peak_rss_bytes),
            events,
            abort,
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn event(started: Instant, level: EventLevel, message: String) -> MemoryEvent {
    MemoryEvent {
        at_s: started.elapsed().as_secs_f64(),
        level,
        message,
        rss_bytes: ProcessMemory::own().map(|m| m.rss_bytes),
        system_used_percent: SystemMemory::read().map(|s| s.used_percent()),
    }
}

fn sample_loop(
    config: &MonitorConfig,
    started: Instant,
    cancel: &AtomicBool,
    stop: &AtomicBool,
    state: &Mutex<State>,
) {
    let (mut warned, mut critical) = (false, false);
    while !stop.load(Ordering::Relaxed) {
        let own = ProcessMemory::own();
        let used = SystemMemory::read().map(|s| s.used_percent());
        let mut new_events = Vec::new();
        let mut abort = None;
        if let Some(used) = used {
            let t = &config.thresholds;
            if used >= t.warning && !warned {
                warned = true;
                new_events.push((
                    EventLevel::Warning,
                    format!("system memory {used:.1}% used (warning at {}%)", t.warning),
                ));
            }
            if used >= t.critical && !critical {
                critical = true;
                new_events.push((
                    EventLevel::Critical,
                    format!(
                        "system memory {used:.1}% used (critical at {}%)",
                        t.critical
                    ),
                ));
            }
            if used >= t.kill {
                abort = Some(format!(
                    "system memory {used:.1}% used, at or over the kill threshold {}%",
                    t.kill
                ));
            }
        }
        if config
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
        {
            abort = Some(INTERRUPTED.to_string());
        }
        if let (Some(own), Some(budget)) = (own, config.budget_bytes)
            && own.rss_bytes > budget
        {
            abort = Some(format!(
                "pot's resident memory {} is over the budget {}",
                gb(own.rss_bytes),
                gb(budget)
            ));
        }
        if let Ok(mut s) = state.lock() {
            s.samples += 1;
            s.series.push(MemorySample {
                at_s: started.elapsed().as_secs_f64(),
                rss_bytes: own.map(|m| m.rss_bytes),
                system_used_percent: used,
            });
            for (level, message) in new_events {
                s.events.push(event(started, level, message));
            }
            if let Some(reason) = abort
                && s.abort.is_none()
            {
                s.events
                    .push(event(started, EventLevel::Kill, reason.clone()));
                s.abort = Some(reason);
                cancel.store(true, Ordering::Relaxed);
            }
        }
        std::thread::sleep(config.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_below_current_rss_cancels_the_work() {
        let monitor = Monitor::start(MonitorConfig {
            thresholds: Thresholds {
                warning: 100.0,
                critical: 100.0,
                kill: 100.0,
            },
            budget_bytes: Some(1),
            interval: Duration::from_millis(5),
            interrupt: None,
        })
        .unwrap();
        let flag = monitor.cancel_flag();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(monitor.cancelled());
        monitor.note("after");
        let report = monitor.finish();
        let abort = report.abort.expect("aborted");
        assert!(abort.contains("over the budget"), "{abort}");
        assert!(report.events.iter().any(|e| e.level == EventLevel::Kill));
        assert_eq!(report.events.last().unwrap().message, "after");
        assert!(report.peak_rss_bytes.unwrap() > 0);
    }

    #[test]
    fn a_generous_budget_only_samples() {
        let monitor = Monitor::start(MonitorConfig {
            thresholds: Thresholds::default(),
            budget_bytes: Some(u64::MAX),
            interval: Duration::from_millis(5),
            interrupt: None,
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!monitor.cancelled());
        let report = monitor.finish();
        assert!(report.samples >= 1 && report.abort.is_none());
    }

    #[test]
    fn a_long_series_is_thinned_evenly_and_spans_the_run() {
        let mut series = Series::default();
        for i in 0..10_000u64 {
            series.push(MemorySample {
                at_s: i as f64,
                rss_bytes: Some(i),
                system_used_percent: None,
            });
        }
        let kept = &series.kept;
        assert!(kept.len() > SERIES_CAPACITY / 2 && kept.len() <= SERIES_CAPACITY);
        assert_eq!(kept[0].at_s, 0.0);
        assert!(kept.last().unwrap().at_s > 9_000.0);
        let step = kept[1].at_s - kept[0].at_s;
        assert!(kept.windows(2).all(|w| w[1].at_s - w[0].at_s == step));
    }

    #[test]
    fn thresholds_must_be_ordered() {
        assert!(Thresholds::default().validate().is_ok());
        let bad = Thresholds {
            warning: 90.0,
            critical: 85.0,
            kill: 92.0,
        };
        assert!(bad.validate().unwrap_err().contains("warning <= critical"));
    }
}
