//! `pot._pot`: runs a `pot` command in-process for the Python package (python/pot), which
//! builds the arguments and turns the results into Python objects and exceptions.
//!
//! The command runs on its own thread with the GIL released; the calling thread wakes every
//! 100 ms to let Python handle signals, so Ctrl-C stops the run through the memory monitor
//! (cleanly: the run ends, nothing half-written) and then raises `KeyboardInterrupt`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;

/// What a command left: its exit code, its JSON outputs (as text), and its error message
/// when it failed (the code then says which kind).
type Ran = (u8, Vec<String>, Option<String>);

/// Runs `pot ARGV...` (without the program name). `progress`, if given, is called with each
/// progress event as a JSON string (the lines of `--progress json`).
#[pyfunction]
#[pyo3(signature = (argv, progress=None))]
fn run(py: Python<'_>, argv: Vec<String>, progress: Option<Py<PyAny>>) -> PyResult<Ran> {
    let interrupt = Arc::new(AtomicBool::new(false));
    // The first exception raised by the progress callback: it stops the run and is re-raised.
    let callback_error: Arc<std::sync::Mutex<Option<PyErr>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel::<Ran>();
    let worker = {
        let interrupt = interrupt.clone();
        let callback_error = callback_error.clone();
        std::thread::Builder::new()
            .name("pot".into())
            .spawn(move || {
                let on_progress = progress.map(|callback| {
                    let interrupt = interrupt.clone();
                    Box::new(move |event: &serde_json::Value| {
                        let text = event.to_string();
                        Python::attach(|py| {
                            if let Err(e) = callback.call1(py, (text,)) {
                                interrupt.store(true, Ordering::Relaxed);
                                callback_error.lock().unwrap().get_or_insert(e);
                            }
                        });
                    }) as pot_cli::embed::ProgressCallback
                });
                let session = pot_cli::embed::Session {
                    progress: on_progress,
                    interrupt: Some(interrupt),
                };
                let argv = std::iter::once("pot".to_string()).chain(argv);
                let ran = match pot_cli::embed::run(argv, session) {
                    Ok(ran) => (
                        ran.code,
                        ran.outputs.iter().map(|v| v.to_string()).collect(),
                        None,
                    ),
                    Err(f) => (f.code, Vec::new(), Some(format!("{:#}", f.error))),
                };
                done_tx.send(ran).ok();
            })
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start pot's thread: {e}"))
            })?
    };
    // A `Receiver` is not `Sync`; the GIL-free closure borrows it through a mutex.
    let done_rx = std::sync::Mutex::new(done_rx);
    let mut interrupted: Option<PyErr> = None;
    let ran = loop {
        let received = py.detach(|| {
            let rx = done_rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv_timeout(Duration::from_millis(100))
        });
        match received {
            Ok(ran) => break Some(ran),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if interrupted.is_none()
                    && let Err(e) = py.check_signals()
                {
                    interrupt.store(true, Ordering::Relaxed);
                    interrupted = Some(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    let panicked = py.detach(|| worker.join()).is_err();
    if let Some(e) = interrupted {
        return Err(e);
    }
    if let Some(e) = callback_error.lock().unwrap().take() {
        return Err(e);
    }
    match ran {
        Some(ran) if !panicked => Ok(ran),
        _ => Err(pyo3::exceptions::PyRuntimeError::new_err(
            "pot's thread ended without a result (a bug: please report it)",
        )),
    }
}

#[pymodule]
fn _pot(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
