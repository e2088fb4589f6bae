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
