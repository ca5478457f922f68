//! Append-side file I/O for the store's logs.
//!
//! The store owns *what* it writes; this wrapper owns *how*. fdatasync, truncation and
//! large writes go through the executor's io_uring (glommio's buffered file), so they never
//! block the executor thread. Small writes have a synchronous `pwrite` too
//! ([`AppendFile::write_all_at_now`]): a buffered write into the page cache takes a few
//! microseconds, while io_uring hands a buffered write on ext4 to a kernel worker thread
//! (two context switches and a wake-up per write).

use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A file opened for positional writes and data syncs through io_uring.
pub struct AppendFile {
    file: glommio::io::BufferedFile,
    /// The same file for synchronous `pwrite`.
    std_file: std::fs::File,
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
        let std_file = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(AppendFile {
            file,
            std_file,
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

    /// Writes all of `buf` at `pos` with pwrite(2) on the calling thread: for small
    /// writes into the page cache. A short write (disk full) is an error.
    pub fn write_all_at_now(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.std_file.write_all_at(buf, pos).map_err(|e| {
            if e.kind() == io::ErrorKind::WriteZero {
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("short write to {}: {e}", self.path.display()),
                )
            } else {
                e
            }
        })
    }

    /// fdatasync(2) through io_uring.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| to_io("fdatasync", &self.path, e))
    }

    /// fdatasync(2) on the calling thread (it blocks until the data is on disk).
    pub fn sync_data_now(&self) -> io::Result<()> {
        self.std_file.sync_data()
    }

    /// Cuts the file back to `len` bytes (used to undo a failed batch).
    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| to_io("truncate", &self.path, e))
    }

    /// The file's current size.
    pub fn size_bytes(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// True when the file lives in memory (tmpfs, ramfs): writing zeros ahead of the
    /// data there only costs memory, since fdatasync has no journal or disk to spare.
    pub fn is_memory_backed(&self) -> bool {
        let mut sf = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: fstatfs on a descriptor we own into a buffer of the right type; read
        // only after success.
        let rc = unsafe { libc::fstatfs(self.file.as_raw_fd(), sf.as_mut_ptr()) };
        if rc != 0 {
            return false;
        }
        // SAFETY: fstatfs succeeded, so it initialised the buffer.
        let sf = unsafe { sf.assume_init() };
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        // The type of f_type (and of the constant) differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let (kind, tmpfs) = (sf.f_type as i64, libc::TMPFS_MAGIC as i64);
        kind == tmpfs || kind == RAMFS_MAGIC
    }

    /// Reserves `len` bytes of blocks without changing the visible size.
    pub async fn pre_allocate(&self, len: u64) -> io::Result<()> {
        self.file
            .pre_allocate(len, true)
            .await
            .map_err(|e| to_io("fallocate", &self.path, e))
    }
}
