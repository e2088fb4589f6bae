//! Replacing a file atomically, for files other programs read while healthsync writes them (the HTML
//! report, the CSV/XLSX exports a BI tool polls).
//!
//! The content goes to a dot-named temp file in the same folder (so the rename never crosses a
//! filesystem, and `*.csv` globs skip it), is flushed and fsync'd, renamed over the target, and the folder
//! is fsync'd so the rename itself survives a power cut. A reader sees the old file or the new one, never a
//! mix. Files are created 0644 less the process umask: readable by others unless the service's
//! `UMask=077` says otherwise. This module knows nothing of what is written.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where an atomic write failed: creating the temp file in the folder, or writing and renaming it.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    #[error("cannot create a file in {}: {source}", dir.display())]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Writes `dir/name` through a temp file + fsync + rename + folder fsync. Returns the final path.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, AtomicWriteError> {
    let target = dir.join(name);
    let failed = |source| AtomicWriteError::Write {
        path: target.clone(),
        source,
    };
    // The rename would replace whatever is at the target, a device or a FIFO included (as root it
    // replaced /dev/full): only a regular file, or nothing, is replaced.
    match std::fs::metadata(&target) {
        Ok(m) if !m.is_file() => {
            return Err(failed(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it exists and is not a regular file; not replacing it",
            )))
        }
        _ => {}
    }
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile creates 0600; these files are meant to be read by others (a BI tool's service account).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|source| AtomicWriteError::Create {
            dir: dir.to_path_buf(),
            source,
        })?;
    {
        let mut buffered = io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write(&mut buffered).map_err(failed)?;
        buffered.flush().map_err(failed)?;
    }
    tmp.as_file().sync_all().map_err(failed)?;
    // Dropping `tmp` on any error above removes it; `persist` renames it over the target.
    tmp.persist(&target).map_err(|e| failed(e.error))?;
    sync_dir(dir).map_err(failed)?;
    Ok(target)
}

/// Makes a rename in `dir` durable. Only Unix can open a folder for fsync; elsewhere this is a no-op.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path and a mode; mkfifo only creates a file system node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn a_fifo_or_device_at_the_target_is_not_replaced() {
        // Issue 25, case 9: `report --out` onto a FIFO (or, as root, /dev/full) replaced it.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("report.html");
        mkfifo(&fifo);
        let err = write_atomic(dir.path(), "report.html", |w| w.write_all(b"<html>")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&kind),
            "the FIFO is still there"
        );
        // Nothing is left behind, and a regular file is still replaced as before.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, "old").unwrap();
        write_atomic(dir.path(), "report.html", |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&fifo).unwrap(), "new");
    }
}
