//! Real messages for `--eml-dir DIR`: every `*.eml` file of one directory
//! (not recursive), read once at start in name order, line ends normalised to
//! CRLF (LF, CRLF and a lone CR all become CRLF, a missing final line end is
//! added) and dot-stuffed once (RFC 5321 §4.5.2), so the DATA payload is sent
//! as stored. Message `seq` is file `seq % files`. Bounded in file count, in
//! bytes per file and in total bytes.

use std::fmt;
use std::path::{Path, PathBuf};

/// Most files taken from one directory.
pub const EML_FILES_MAX: usize = 100_000;
/// Most bytes of all files together (after normalisation).
pub const EML_TOTAL_BYTES_MAX: u64 = 512 << 20;
/// Largest single file (as read).
pub const EML_FILE_BYTES_MAX: u64 = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorpusError {
    #[error("--eml-dir {dir}: cannot {op}: {reason}")]
    Io {
        op: &'static str,
        dir: PathBuf,
        reason: String,
    },
    #[error("--eml-dir {file}: cannot read: {reason}")]
    File { file: PathBuf, reason: String },
    #[error("--eml-dir {dir}: no *.eml files in it")]
    Empty { dir: PathBuf },
    #[error("--eml-dir {file}: the file is empty")]
    EmptyFile { file: PathBuf },
    #[error("--eml-dir {file}: larger than {EML_FILE_BYTES_MAX} bytes")]
    FileTooLarge { file: PathBuf },
    #[error("--eml-dir {dir}: more than {EML_FILES_MAX} *.eml files")]
    TooManyFiles { dir: PathBuf },
    #[error("--eml-dir {dir}: more than {EML_TOTAL_BYTES_MAX} bytes of messages")]
    TooLarge { dir: PathBuf },
}

/// The loaded messages, ready to send.
#[derive(Clone, PartialEq, Eq)]
pub struct EmlCorpus {
    dir: PathBuf,
    /// CRLF, dot-stuffed, ending in CRLF; never empty.
    messages: Vec<Vec<u8>>,
    total_bytes: u64,
}

impl fmt::Debug for EmlCorpus {
    // The contents can be hundreds of MiB: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmlCorpus")
            .field("dir", &self.dir)
            .field("files", &self.messages.len())
            .field("total_bytes", &self.total_bytes)
            .finish()
    }
}

impl EmlCorpus {
    /// Reads every `*.eml` (any case) regular file of `dir`, sorted by name.
    pub fn load(dir: &Path) -> Result<EmlCorpus, CorpusError> {
        let io = |op, e: std::io::Error| CorpusError::Io {
            op,
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("list the directory", e))? {
            let entry = entry.map_err(|e| io("list the directory", e))?;
            let path = entry.path();
            let is_eml = path
                .extension()
                .is_some_and(|ext| ext.eq_ignore_ascii_case("eml"));
            if !is_eml {
                continue;
            }
            // Follows symlinks: a linked message is a message.
            let is_file = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
            if !is_file {
                continue;
            }
            if paths.len() == EML_FILES_MAX {
                return Err(CorpusError::TooManyFiles {
                    dir: dir.to_path_buf(),
                });
            }
            paths.push(path);
        }
        if paths.is_empty() {
            return Err(CorpusError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        paths.sort();
        let mut messages = Vec::with_capacity(paths.len());
        let mut total_bytes = 0u64;
        for path in paths {
            let raw = read_bounded(&path)?;
            if raw.is_empty() {
                return Err(CorpusError::EmptyFile { file: path });
            }
            let message = prepare(&raw);
            total_bytes += message.len() as u64;
            if total_bytes > EML_TOTAL_BYTES_MAX {
                return Err(CorpusError::TooLarge {
                    dir: dir.to_path_buf(),
                });
            }
            messages.push(message);
        }
        Ok(EmlCorpus {
            dir: dir.to_path_buf(),
            messages,
            total_bytes,
        })
    }

    /// Message `seq` (cycling through the files), ready for DATA.
    pub fn get(&self, seq: u64) -> &[u8] {
        let index = (seq % self.messages.len().max(1) as u64) as usize;
        self.messages.get(index).map_or(&[], Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Smallest and largest prepared message.
    pub fn size_bounds(&self) -> (usize, usize) {
        let sizes = self.messages.iter().map(Vec::len);
        (sizes.clone().min().unwrap_or(0), sizes.max().unwrap_or(0))
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, CorpusError> {
    use std::io::Read;
    let fail = |e: std::io::Error| CorpusError::File {
        file: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut raw = Vec::new();
    file.take(EML_FILE_BYTES_MAX + 1)
        .read_to_end(&mut raw)
        .map_err(fail)?;
    if raw.len() as u64 > EML_FILE_BYTES_MAX {
        return Err(CorpusError::FileTooLarge {
            file: path.to_path_buf(),
        });
    }
    Ok(raw)
}

/// Normalises line ends to CRLF, ends the last line, and doubles a leading `.`
/// on every line.
pub fn prepare(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 64 + 2);
    let mut line_start = true;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if line_start && b == b'.' {
            out.push(b'.');
        }
        match b {
            b'\r' => {
                // CRLF or a lone CR: one line end either way.
                if raw.get(i) == Some(&b'\n') {
                    i += 1;
                }
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            _ => {
                out.push(b);
                line_start = false;
            }
        }
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ringmail-loadgen-corpus-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn line_ends_become_crlf_and_the_last_line_is_ended() {
        assert_eq!(prepare(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(prepare(b"x\r\n"), b"x\r\n");
        assert_eq!(prepare(b"\n\n"), b"\r\n\r\n");
        assert_eq!(prepare(b"\r\r\n"), b"\r\n\r\n");
    }

    #[test]
    fn leading_dots_are_stuffed_once_and_a_lone_dot_cannot_end_data() {
        let out = prepare(b"Subject: x\n\n.\n..two\nmid.dle\n.");
        assert_eq!(out, b"Subject: x\r\n\r\n..\r\n...two\r\nmid.dle\r\n..\r\n");
        // No line of the result is a lone ".".
        assert!(!out.split(|&b| b == b'\n').any(|line| line == b".\r"));
        assert!(!out.starts_with(b".\r\n"));
        assert_eq!(prepare(b".\r\n"), b"..\r\n");
    }

    #[test]
    fn loads_eml_files_in_name_order_and_cycles_by_sequence() {
        let dir = temp_dir("load");
        std::fs::write(dir.join("b.eml"), "Subject: b\n\nbody b\n").unwrap();
        std::fs::write(dir.join("a.EML"), "Subject: a\r\n\r\n.\r\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not a message").unwrap();
        std::fs::create_dir(dir.join("sub.eml")).unwrap();
        let corpus = EmlCorpus::load(&dir).unwrap();
        assert_eq!(corpus.len(), 2);
        assert_eq!(corpus.get(0), b"Subject: a\r\n\r\n..\r\n");
        assert_eq!(corpus.get(1), b"Subject: b\r\n\r\nbody b\r\n");
        assert_eq!(corpus.get(2), corpus.get(0));
        assert_eq!(corpus.get(u64::MAX), corpus.get(1));
        assert_eq!(corpus.total_bytes(), 18 + 22);
        assert_eq!(corpus.size_bounds(), (18, 22));
        assert!(!format!("{corpus:?}").contains("Subject"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_missing_or_unreadable_directories_are_clear_errors() {
        let dir = temp_dir("empty");
        std::fs::write(dir.join("x.txt"), "x").unwrap();
        let err = EmlCorpus::load(&dir).unwrap_err();
        assert!(matches!(err, CorpusError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("no *.eml files"), "{err}");
        std::fs::write(dir.join("zero.eml"), "").unwrap();
        let err = EmlCorpus::load(&dir).unwrap_err();
        assert!(
            err.to_string().contains("zero.eml: the file is empty"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = EmlCorpus::load(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                CorpusError::Io {
                    op: "list the directory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&dir.display().to_string()));
    }
}
