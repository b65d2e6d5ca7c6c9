//! Write-then-rename, so an interrupted or failed write never leaves a half-written file under
//! the final name.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary name used while `path` is being written: same folder (so the rename is atomic),
/// hidden, unique to this process, and with the same extension (image encoders pick the format
/// from it).
pub fn temporary_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!(".{stem}.tmp-{}{ext}", std::process::id()))
}

/// Calls `write` with a temporary path, then renames it to `path`; on failure removes it.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_path(path);
    let outcome = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::write(path, e)));
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let err = write_atomically(&path, |tmp| {
            std::fs::write(tmp, "partial").unwrap();
            Err(Error::write(tmp, "boom"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&path, |tmp| std::fs::write(tmp, "whole").map_err(|e| Error::write(tmp, e))).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole");
    }
}
