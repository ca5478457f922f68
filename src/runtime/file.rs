//! Asynchronous append-side file I/O on the executor's io_uring.
//!
//! The store owns *what* it writes; this wrapper owns *how*: glommio's buffered file,
//! so that a write + fdatasync never blocks the executor thread.

use std::io;
use std::path::{Path, PathBuf};

/// A file opened for positional writes and data syncs through io_uring.
pub struct AppendFile {
    file: glommio::io::BufferedFile,
    path: PathBuf,
}

fn to_io(op: &'static str, path: &Path, err: glommio::GlommioError<()>) -> io::Error {
    match err {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(format!("{op} {}: {other}", path.display())),
    }
}

impl AppendFile {
    /// Opens an existing file for writing (it must exist: the store creates segments
    /// with their header synchronously before handing them to the executor).
    pub async fn open(path: &Path) -> io::Result<AppendFile> {
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(path)
            .await
            .map_err(|e| to_io("open", path, e))?;
        Ok(AppendFile {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes all of `buf` at `pos`. A short write (on a regular file: the disk is
    /// nearly full) is an error, so the caller undoes the whole batch.
    pub async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        let total = buf.len();
        let n = self
            .file
            .write_at(buf, pos)
            .await
            .map_err(|e| to_io("write", &self.path, e))?;
        if n == total {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "short write to {}: {n} of {total} bytes",
                    self.path.display()
                ),
            ))
        }
    }

    /// fdatasync(2) through io_uring.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| to_io("fdatasync", &self.path, e))
    }

    /// Cuts the file back to `len` bytes (used to undo a failed batch).
    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| to_io("truncate", &self.path, e))
    }

    /// Reserves `len` bytes of blocks without changing the visible size.
    pub async fn pre_allocate(&self, len: u64) -> io::Result<()> {
        self.file
            .pre_allocate(len, true)
            .await
            .map_err(|e| to_io("fallocate", &self.path, e))
    }
}
