//! Running the `pot` binary from tests, as a user would (no `$POT_KEY` leaking in).

use std::process::{Command, Output};

#[allow(dead_code)] // not every test binary uses it
pub fn pot(args: &[&str]) -> Output {
    pot_env(args, &[])
}

/// `pot` with extra environment variables.
#[allow(dead_code)] // not every test binary uses it
pub fn pot_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pot"))
        .args(args)
        .env_remove("POT_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A Python that imports `modules` (e.g. "torch, transformers"): `$POT_PYTHON`, the venv
/// `~/.cache/pot/pyenv`, or `python3`; `None` (the caller skips with a message) when none does.
#[allow(dead_code)] // not every test binary uses it
pub fn python_with(modules: &str) -> Option<std::path::PathBuf> {
    let venv = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cache/pot/pyenv/bin/python"));
    let candidates = std::env::var_os("POT_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(venv.filter(|v| v.is_file()))
        .chain(std::iter::once("python3".into()));
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    None
}

/// A headless Chromium or Chrome on this machine, if any.
#[allow(dead_code)] // not every test binary uses it
pub fn browser() -> Option<std::path::PathBuf> {
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .map(std::path::PathBuf::from)
}

/// Opens `page` in headless `browser`, writes a screenshot to `png` and returns the console
/// messages the page logged (Chromium's `INFO:CONSOLE` log lines). Panics when the browser
/// does not finish within a minute or writes no screenshot.
#[allow(dead_code)] // not every test binary uses it
pub fn screenshot(
    browser: &std::path::Path,
    page: &std::path::Path,
    png: &std::path::Path,
) -> Vec<String> {
    use std::time::{Duration, Instant};
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1000,2600",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--screenshot={}", png.display()),
            &format!("file://{}", page.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!(
                "{} did not render {} within 60 s",
                browser.display(),
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = reader.join().unwrap();
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot of {} is {size} bytes; browser log:\n{log}",
        page.display()
    );
    log.lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// A key file of 32 bytes `byte` (hex, mode 0600) in `dir`: fixed keys make commitments and
/// challenge ids stable across runs.
#[allow(dead_code)] // not every test binary uses it
pub fn key_file(dir: &std::path::Path, byte: u8) -> String {
    let path = dir.join("key.hex");
    std::fs::write(&path, format!("{byte:02x}").repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.display().to_string()
}
