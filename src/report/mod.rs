//! Measurement output: the tallies the loops fill ([`stats`]), the run's result types
//! ([`result`], the one home every reader below uses), its text and versioned JSON
//! ([`summary`]), fleet merges of results ([`merge`]), `--assert` thresholds ([`assert`]), and
//! live progress ([`progress`]), and the HTML report of runs and fleets ([`html`]).
//!
//! Nothing here talks to Kafka; printers take `&mut impl Write` and are tested on hand-built
//! values.

pub mod assert;
pub mod html;
pub mod merge;
pub mod progress;
pub mod result;
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
    result: &mut result::RunResult,
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
        write_atomically(path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match assert::failures(&result.checks) {
        Some(failed) => Err(Failure::Assert(failed).into()),
        None => Ok(()),
    }
}

/// Replaces `path` with `bytes` all at once: they go to a temporary file in the same directory,
/// reach the disk, and the file is renamed over `path`. A kill at any moment leaves either the
/// previous complete file or the new complete one, never a truncated one.
///
/// A path that is not a regular file (`/dev/null`, a FIFO) is written to as it is: renaming over
/// it would replace the device. A symbolic link is followed, and its target replaced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let resolved = std::fs::canonicalize(path);
    let path = resolved.as_deref().unwrap_or(path);
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(bytes);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kafka-workload-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // The temporary file is private (0600); the result keeps the mode of the file it replaces,
    // or gets the usual 0644.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new contents");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("result.json")]);
    }

    #[test]
    fn an_atomic_write_to_a_fifo_writes_into_it_and_leaves_it_a_fifo() {
        use std::os::unix::fs::FileTypeExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path in our own temporary directory.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_atomically(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn an_atomic_write_through_a_symlink_replaces_its_target_and_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    }

    #[test]
    fn an_atomic_write_into_a_missing_directory_fails_and_names_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("r.json");
        assert!(write_atomically(&path, b"x").is_err());
        assert!(!path.exists());
    }
}
