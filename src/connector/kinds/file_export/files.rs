//! The export's file mechanics: atomic replace, timestamped copies, the appended history, the folder probe.
//!
//! Current files are replaced atomically (`crate::atomic_file`: dot-named temp file in the same folder,
//! fsync, rename, folder fsync), so a reader sees the old file or the new one, never a mix. This module knows nothing of scores; `table.rs` shapes them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

use super::table::{kind_of, Cell, Table};
use crate::atomic_file::{sync_dir, AtomicWriteError};
use crate::connector::ExportError;

pub(super) fn err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes `dir/name` atomically ([`crate::atomic_file`]). Returns the final path.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, ExportError> {
    crate::atomic_file::write_atomic(dir, name, write).map_err(|e| match e {
        AtomicWriteError::Create { dir, source } => err(&dir, source),
        AtomicWriteError::Write { path, source } => err(&path, source),
    })
}

/// Removes temp files a crashed run left behind: `.<stem>.<ext>.*.tmp` from [`write_atomic`] and
/// `.<stem>-<stamp>.<ext>.link.tmp` from [`rotate`], and no other export's (`.<stem>-b.csv…` belongs to
/// the stem `<stem>-b`). A job never runs twice at once, so no live temp file of this export can be in the
/// folder when a run starts.
pub fn remove_stale_temps(dir: &Path, stem: &str) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_temp_name(&name, stem) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn is_temp_name(name: &str, stem: &str) -> bool {
    let Some(rest) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_prefix(stem))
        .filter(|_| name.ends_with(".tmp"))
    else {
        return false;
    };
    let ours = |r: &str| r.starts_with(".csv.") || r.starts_with(".xlsx.");
    let copy = rest
        .strip_prefix('-')
        .and_then(|r| Some((r.get(..16)?, r.get(16..)?)));
    ours(rest) || copy.is_some_and(|(stamp, r)| is_stamp(stamp) && ours(r))
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// `<stem>-YYYYMMDDTHHMMSSZ.<ext>` → true. Other files in the folder (the history, an admin's notes) are
/// never rotated away.
fn is_copy_name(name: &str, stem: &str, ext: &str) -> bool {
    let Some(mid) = name
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(ext))
        .and_then(|r| r.strip_suffix('.'))
    else {
        return false;
    };
    is_stamp(mid)
}

/// Keeps the current `<stem>.<ext>` as the timestamped copy `<stem>-<stamp>.<ext>` (a hard link, so no
/// second write; a copy where the filesystem has no links), then deletes all but the newest `keep` copies.
/// `keep = 0` keeps none.
pub fn rotate(
    dir: &Path,
    stem: &str,
    ext: &str,
    stamp: &str,
    keep: usize,
) -> Result<(), ExportError> {
    if keep > 0 {
        let current = dir.join(format!("{stem}.{ext}"));
        let copy = dir.join(format!("{stem}-{stamp}.{ext}"));
        // Link under a temp name, then rename over: a rerun of the same run replaces its copy atomically.
        let tmp = dir.join(format!(".{stem}-{stamp}.{ext}.link.tmp"));
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(&current, &tmp).is_err() {
            fs::copy(&current, &tmp).map_err(|e| err(&tmp, e))?;
        }
        fs::rename(&tmp, &copy).map_err(|e| err(&copy, e))?;
    }
    let mut copies: Vec<String> = fs::read_dir(dir)
        .map_err(|e| err(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_copy_name(n, stem, ext))
        .collect();
    // The stamp sorts as text in time order, so the newest copies come last.
    copies.sort();
    let excess = copies.len().saturating_sub(keep);
    for name in &copies[..excess] {
        let path = dir.join(name);
        fs::remove_file(&path).map_err(|e| err(&path, e))?;
    }
    if excess > 0 {
        sync_dir(dir).map_err(|e| err(dir, e))?;
    }
    Ok(())
}

/// Appends this run's rows to the history CSV.
///
/// Why append and not temp + rename: history grows by one row per account per run, so rewriting it
/// would cost the whole file on every run (hundreds of MB after months of 15-minute runs over 10,000
/// accounts), while an append costs only the run. Crash safety comes from three rules instead:
/// (1) the run's rows are encoded in memory first and written with one `write_all` followed by `fsync`,
/// so a crash can at worst leave the last line torn; (2) before every append, a tail that does not end in
/// a newline is cut back to the last complete line; (3) line breaks inside text (an account name typed
/// with one) become spaces in the history, so one line is always one record and the file can be read
/// from its end. So every line in the file is a whole record, and a reader never sees a torn line for
/// longer than until the next run. A rerun of the same run (same `computed_at`, e.g. a retried `score`)
/// replaces that run's rows at the end instead of adding them twice; with `daily`, any run of the same
/// UTC day does, so the file keeps one block per day. A crash between that cut and the append leaves the
/// run out until the next run, never half of it twice.
///
/// When the columns changed (the model gained or lost a category), the old file is renamed to `aside`
/// and a new one begun, so one file never mixes two headers.
pub fn append_history(
    path: &Path,
    rows: &Table,
    aside: &Path,
    daily: bool,
) -> Result<(), ExportError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| err(path, e))?;
    let mut len = file.metadata().map_err(|e| err(path, e))?.len();
    if len > 0 {
        let keep = complete_lines_len(&mut file, len).map_err(|e| err(path, e))?;
        if keep != len {
            tracing::warn!(path = %path.display(), cut = len - keep, "history ended in a torn line (a crash); cut back to the last whole line");
            file.set_len(keep).map_err(|e| err(path, e))?;
            len = keep;
        }
    }
    if len > 0 {
        file.seek(SeekFrom::Start(0)).map_err(|e| err(path, e))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&mut file);
        let mut first = csv::StringRecord::new();
        let same = reader.read_record(&mut first).unwrap_or(false)
            && first.iter().eq(rows.header.iter().map(String::as_str));
        drop(reader);
        if !same {
            drop(file);
            fs::rename(path, aside).map_err(|e| err(aside, e))?;
            tracing::info!(old = %aside.display(), "history columns changed; the old history was set aside");
            return append_history(path, rows, aside, daily);
        }
    }
    // A rerun of the run (or, daily, of the day) at the end of the file replaces it.
    if let Some(Cell::Time(at)) = rows.rows.first().and_then(|r| r.first()) {
        let prefix = if daily {
            format!("{}T", at.format("%Y-%m-%d"))
        } else {
            format!("{},", at.to_rfc3339_opts(SecondsFormat::Secs, true))
        };
        let start = trailing_block_start(&mut file, len, usize::MAX, |line| {
            line.starts_with(prefix.as_bytes())
        })
        .map_err(|e| err(path, e))?;
        if start < len {
            file.set_len(start).map_err(|e| err(path, e))?;
            len = start;
        }
    }
    let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.rows.len() * 128));
    if len == 0 {
        w.write_record(&rows.header).map_err(|e| err(path, e))?;
    }
    single_line_text(rows)
        .write_rows(&mut w)
        .map_err(|e| err(path, e))?;
    let bytes = w.into_inner().map_err(|e| err(path, e.error()))?;
    file.seek(SeekFrom::Start(len)).map_err(|e| err(path, e))?;
    file.write_all(&bytes).map_err(|e| err(path, e))?;
    file.sync_data().map_err(|e| err(path, e))?;
    Ok(())
}

/// The rows with line breaks in text replaced by spaces (rule 3 above).
fn single_line_text(rows: &Table) -> std::borrow::Cow<'_, Table> {
    let multiline = |c: &Cell| matches!(c, Cell::Text(s) if s.contains(['\n', '\r']));
    if !rows.rows.iter().flatten().any(multiline) {
        return std::borrow::Cow::Borrowed(rows);
    }
    let mut out = rows.clone();
    for cell in out.rows.iter_mut().flatten() {
        if let Cell::Text(s) = cell {
            if s.contains(['\n', '\r']) {
                *s = s.replace(['\n', '\r'], " ");
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The length of the file up to and including its last newline (0 when it has none).
fn complete_lines_len(file: &mut File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Walks whole lines back from `len` (which must end a line) while `keep` accepts them, at most
/// `max_lines`, never into the header (the first line); returns where the kept block starts. Reads the
/// file backwards in chunks and keeps no more than a chunk and a line in memory, so its cost is the
/// block's size, not the file's.
fn trailing_block_start(
    file: &mut File,
    len: u64,
    max_lines: usize,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    // `buf` holds the bytes [buf_start, start).
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = len;
    let mut start = len;
    let mut lines = 0;
    while start > 0 && lines < max_lines {
        // The line ending at `start` (its newline is the byte before) begins after the previous newline.
        let line_start = loop {
            let before_newline = buf.len().saturating_sub(1);
            if let Some(i) = buf[..before_newline].iter().rposition(|b| *b == b'\n') {
                break buf_start + i as u64 + 1;
            }
            if buf_start == 0 {
                break 0;
            }
            let from = buf_start.saturating_sub(CHUNK);
            let mut chunk = vec![0u8; (buf_start - from) as usize];
            file.seek(SeekFrom::Start(from))?;
            file.read_exact(&mut chunk)?;
            chunk.extend_from_slice(&buf);
            buf = chunk;
            buf_start = from;
        };
        if line_start == 0 {
            break;
        }
        let at = (line_start - buf_start) as usize;
        if !keep(&buf[at..]) {
            break;
        }
        buf.truncate(at);
        start = line_start;
        lines += 1;
    }
    Ok(start)
}

/// The history rows computed at or after `since`, at most the newest `max_rows`: read from the end of
/// the file back to the first older line (runs are appended in time order), so a long history costs
/// only the window shown.
pub fn read_history(
    path: &Path,
    since: DateTime<Utc>,
    max_rows: usize,
) -> Result<Table, ExportError> {
    let mut file = File::open(path).map_err(|e| err(path, e))?;
    let len = file.metadata().map_err(|e| err(path, e))?.len();
    let header: Vec<String> = {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&mut file);
        let mut first = csv::StringRecord::new();
        reader.read_record(&mut first).map_err(|e| err(path, e))?;
        first.iter().map(str::to_string).collect()
    };
    let mut table = Table {
        kinds: header.iter().map(|h| kind_of(h)).collect(),
        header,
        rows: Vec::new(),
    };
    // computed_at comes first, in one fixed-width UTC form, so text order is time order.
    let cutoff = since.to_rfc3339_opts(SecondsFormat::Secs, true);
    let start = trailing_block_start(&mut file, len, max_rows, |line| {
        line.get(..cutoff.len())
            .is_some_and(|at| at >= cutoff.as_bytes())
    })
    .map_err(|e| err(path, e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| err(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(io::BufReader::new(file));
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(|e| err(path, e))? {
        table.rows.push(table.parse_row(&record));
    }
    Ok(table)
}

/// Whether the export can write into `dir`: an effect (it creates and removes a probe file), used by
/// `healthsync validate` through `crate::pipeline::check_exports`. A folder that does not exist yet is
/// fine when its nearest existing parent is a writable folder: the first run creates it.
pub fn probe_directory(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    loop {
        match fs::metadata(existing) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if existing == dir => return Err("exists but is not a folder".into()),
            Ok(_) => {
                return Err(format!(
                    "cannot be created: {} is a file, not a folder",
                    existing.display()
                ))
            }
            // Missing, or a path through a file (`/etc/passwd/x`): look at the parent.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                match existing.parent() {
                    Some(p) if !p.as_os_str().is_empty() => existing = p,
                    _ => return Err("does not exist, and no parent folder of it does".into()),
                }
            }
            Err(e) => return Err(format!("cannot be read: {e}")),
        }
    }
    match tempfile::Builder::new()
        .prefix(".healthsync-probe.")
        .tempfile_in(existing)
    {
        Ok(_) if existing == dir => Ok(()),
        Ok(_) => Ok(()),
        Err(e) if existing == dir => Err(format!("is not writable: {}", reason(&e))),
        Err(e) => Err(format!(
            "does not exist and cannot be created: {} is not writable: {}",
            existing.display(),
            reason(&e)
        )),
    }
}

fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::ReadOnlyFilesystem => "read-only filesystem".into(),
        _ => e.to_string(),
    }
}
