//! `pot report`: a saved JSON report read back for people (summary, HTML page).

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;

use crate::exit::{self, Failure};
use crate::verify::write_atomically;

/// Reports larger than this are not pot reports (a 48-query report is ~60 KB; the trace grows
/// by ~0.5 KB a query, the memory series is bounded at 512 readings).
const MAX_REPORT_BYTES: u64 = 64 << 20;

#[derive(Args)]
pub struct ReportArgs {
    /// A JSON report written by `pot verify -o`.
    report: PathBuf,
    /// Write it as one self-contained HTML page (the page `pot verify --html` writes).
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Print nothing on stdout (the summary is printed otherwise).
    #[arg(long, short)]
    quiet: bool,
}

/// Prints the summary, writes the page; exits with the report's verdict code like `pot verify`
/// (0 SAME, 1 DIFFERENT, 3 UNDECIDED) so scripts can branch on a saved report too.
pub fn report_cmd(args: ReportArgs) -> Result<u8, Failure> {
    let unreadable = |why: String| {
        exit::fail(
            exit::LOAD_FAILED,
            anyhow!(
                "{} is not a readable pot report: {why}",
                args.report.display()
            ),
        )
    };
    let size = std::fs::metadata(&args.report)
        .map_err(|e| unreadable(e.to_string()))?
        .len();
    if size > MAX_REPORT_BYTES {
        return Err(unreadable(format!(
            "{size} bytes, more than any report pot writes ({MAX_REPORT_BYTES})"
        )));
    }
    let text = std::fs::read_to_string(&args.report).map_err(|e| unreadable(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unreadable(format!("not JSON ({e})")))?;
    let version = json["report_version"].as_str().unwrap_or_default();
    if !version.starts_with("pot-report/") {
        return Err(unreadable(
            "no `report_version` of the form pot-report/vN: write one with `pot verify -o R.json`"
                .into(),
        ));
    }
    if !args.quiet {
        for line in pot_report::summary(&json) {
            println!("{line}");
        }
    }
    if let Some(out) = &args.html {
        write_atomically(out, &pot_report::html(&json))
            .map_err(|e| exit::fail(exit::RUNTIME, e))?;
    }
    let verdict = serde_json::from_value(json["final_decision"].clone()).ok();
    Ok(exit::of_verdict(verdict))
}
