//! pot inside another program (the Python package): a command runs from its arguments exactly
//! as `pot ARGS` would, and the embedder gets back what the terminal would have shown as data:
//! the JSON a command prints with `--json`, the report `pot verify` writes, the progress events
//! of `--progress json`, and a flag that stops the work cleanly (through the memory monitor).
//!
//! The session is the calling thread's: commands run on the thread that calls [`run`].

use std::cell::RefCell;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::Value;

use crate::exit::Failure;

/// A callback for progress events (the objects `--progress json` prints).
pub type ProgressCallback = Box<dyn FnMut(&Value)>;

/// What an embedder hands a command.
#[derive(Default)]
pub struct Session {
    /// Called with each progress event.
    pub progress: Option<ProgressCallback>,
    /// Setting it stops the work: the run ends as a memory abort would, with the reason
    /// `pot_memory_governor::INTERRUPTED`.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// A finished command.
pub struct Ran {
    /// The exit code `pot` would have ended with (0 SAME, 1 DIFFERENT, 3 UNDECIDED, ...).
    pub code: u8,
    /// The JSON values the command produced, in order: what `--json` prints, or the report.
    pub outputs: Vec<Value>,
}

struct State {
    session: Session,
    outputs: Vec<Value>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `pot ARGS` (`argv[0]` is the program name) in this thread's session.
pub fn run<I, T>(argv: I, session: Session) -> Result<Ran, Failure>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    STATE.with(|s| {
        *s.borrow_mut() = Some(State {
            session,
            outputs: Vec::new(),
        })
    });
    let result = crate::run(argv);
    let state = STATE.with(|s| s.borrow_mut().take());
    let outputs = state.map(|s| s.outputs).unwrap_or_default();
    result.map(|code| Ran { code, outputs })
}

/// A command's JSON output: printed (pretty) on the terminal, handed to the embedder otherwise.
pub(crate) fn print_json(value: &Value) -> serde_json::Result<()> {
    if !keep(value) {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

/// A command's result that the terminal shows another way (the report: written with `-o`,
/// summarised on stdout): kept for an embedder, nothing on the terminal.
pub(crate) fn result(value: &Value) {
    keep(value);
}

fn keep(value: &Value) -> bool {
    STATE.with(|s| match s.borrow_mut().as_mut() {
        Some(state) => {
            state.outputs.push(value.clone());
            true
        }
        None => false,
    })
}

/// Whether stdout's text (summaries, tables) is left out: an embedder reads the JSON instead.
pub(crate) fn quiet_stdout() -> bool {
    STATE.with(|s| s.borrow().is_some())
}

/// Hands a progress event to the embedder's callback; `false` when there is none (the caller
/// prints it).
pub(crate) fn progress(event: &Value) -> bool {
    // Taken out while it runs: the callback may take as long as it likes and must not find
    // the session borrowed.
    let Some(mut callback) = STATE.with(|s| s.borrow_mut().as_mut()?.session.progress.take())
    else {
        return false;
    };
    callback(event);
    STATE.with(|s| {
        if let Some(state) = s.borrow_mut().as_mut() {
            state.session.progress = Some(callback);
        }
    });
    true
}

/// The embedder's stop flag, if any.
pub(crate) fn interrupt() -> Option<Arc<AtomicBool>> {
    STATE.with(|s| s.borrow().as_ref()?.session.interrupt.clone())
}
