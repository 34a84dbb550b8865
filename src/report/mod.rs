//! Measurement output: the tallies the loops fill ([`stats`]), the run's result ([`summary`]) as
//! text and as versioned JSON, fleet merges of results ([`merge`]), `--assert` thresholds
//! ([`assert`]), and live progress ([`progress`]).
//!
//! Nothing here talks to Kafka; printers take `&mut impl Write` and are tested on hand-built
//! values.

pub mod assert;
pub mod merge;
pub mod progress;
pub mod stats;
pub mod summary;

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use crate::error::Failure;

/// Ends a run or a merge: evaluates `conditions` into the result, prints the text summary and the
/// checks to `out`, and writes the JSON to `json` when asked. Fails when the file cannot be
/// written or (after writing it) when a condition did not hold.
pub fn conclude(
    out: &mut impl Write,
    result: &mut summary::RunResult,
    conditions: &[assert::Condition],
    json: Option<&Path>,
) -> anyhow::Result<()> {
    result.checks = assert::evaluate_all(conditions, result);
    // A closed stdout must not stop the JSON file from being written.
    let _ = summary::write_text(out, result);
    let _ = out.flush();
    if let Some(path) = json {
        let mut bytes = Vec::new();
        summary::write_json(&mut bytes, result).context("cannot serialize the result")?;
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    match assert::failures(&result.checks) {
        Some(failed) => Err(Failure::Assert(failed).into()),
        None => Ok(()),
    }
}
