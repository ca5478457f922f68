//! Segment files: the versioned header, file and directory names, listing a core's
//! segments, creating a new segment (synchronously: header written and fsynced, directory
//! fsynced, before the executor opens it for appends) and scanning a segment's records
//! sequentially with positional reads.
//!
//! Header layout (40 bytes, little endian):
//! ```text
//! 0..8   magic "RINGMAIL"      8..10  format version (1)   10  kind (1 blob, 2 meta, 3 ckpt)
//! 11     0                     12..14 core                 14..16 0
//! 16..20 sequence              20..24 0                    24..32 nonce (random per file)
//! 32..36 0                     36..40 crc32c of bytes 0..36
//! ```
//! The nonce tells two files with the same name apart (a segment recreated after recovery
//! set a damaged one aside): checkpoints record it with every log position they cover.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, RecordError, RecordHeader, RECORD_HEADER_BYTES};
use super::StoreError;

pub const SEGMENT_MAGIC: [u8; 8] = *b"RINGMAIL";
/// The format version this build writes into every new segment header. Version 2: a blob
/// segment may hold `MessageAppend` records after their blobs (local deliveries, see
/// `store` "Ownership and ordering"). Version 1 (read, never appended to: the blob log
/// writer starts a new segment rather than add index records to a version-1 blob
/// segment): blob segments hold blobs only. So a build that reads only version 1 stops
/// with a clear version error instead of taking an index record in a blob log for damage.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest segment format version this build reads.
pub const FORMAT_VERSION_READ_MIN: u16 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 40;
const _: () = assert!(SEGMENT_HEADER_BYTES == 8 + 2 + 1 + 1 + 2 + 2 + 4 + 4 + 8 + 4 + 4);
/// Highest sequence number a file name can carry (8 digits).
pub const SEGMENT_SEQUENCE_MAX: u32 = 99_999_999;
/// Read size of the sequential scanner.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SegmentKind {
    Blob = 1,
    Meta = 2,
    Checkpoint = 3,
}

impl SegmentKind {
    fn prefix(self) -> &'static str {
        match self {
            SegmentKind::Blob => "blob",
            SegmentKind::Meta => "meta",
            SegmentKind::Checkpoint => "checkpoint",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub kind: SegmentKind,
    pub core: u16,
    pub sequence: u32,
    pub nonce: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10] = self.kind as u8;
        b[12..14].copy_from_slice(&self.core.to_le_bytes());
        b[16..20].copy_from_slice(&self.sequence.to_le_bytes());
        b[24..32].copy_from_slice(&self.nonce.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header; `path` is only used in errors. A wrong version is reported as
    /// [`StoreError::Version`] (checked before the CRC, so a newer format with another
    /// header layout still gets a clear message).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<SegmentHeader, StoreError> {
        let Some(b) = bytes.first_chunk::<SEGMENT_HEADER_BYTES>() else {
            return Err(StoreError::corrupt(
                path,
                0,
                format!(
                    "segment header is {} bytes, expected {SEGMENT_HEADER_BYTES}",
                    bytes.len()
                ),
            ));
        };
        if b[0..8] != SEGMENT_MAGIC {
            return Err(StoreError::corrupt(
                path,
                0,
                "bad magic: not a ringmail segment",
            ));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if !(FORMAT_VERSION_READ_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(StoreError::Version {
                path: path.to_path_buf(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let stored = u32::from_le_bytes([b[36], b[37], b[38], b[39]]);
        let computed = crc32c::crc32c(&b[0..36]);
        if stored != computed {
            return Err(StoreError::corrupt(
                path,
                0,
                "segment header checksum mismatch",
            ));
        }
        if b[11] != 0 || b[14..16] != [0, 0] || b[20..24] != [0; 4] || b[32..36] != [0; 4] {
            return Err(StoreError::corrupt(
                path,
                0,
                "reserved header bytes are not zero",
            ));
        }
        let kind = match b[10] {
            1 => SegmentKind::Blob,
            2 => SegmentKind::Meta,
            3 => SegmentKind::Checkpoint,
            k => {
                return Err(StoreError::corrupt(
                    path,
                    0,
                    format!("unknown segment kind {k}"),
                ))
            }
        };
        Ok(SegmentHeader {
            kind,
            core: u16::from_le_bytes([b[12], b[13]]),
            sequence: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            nonce: u64::from_le_bytes(b[24..32].try_into().unwrap_or_default()),
        })
    }

    /// The format version in the header of `file` (decoded and checked as by
    /// [`SegmentHeader::decode`]).
    pub fn read_version(file: &File, path: &Path) -> Result<u16, StoreError> {
        let mut buf = [0u8; SEGMENT_HEADER_BYTES];
        let n = read_up_to(file, &mut buf, 0).map_err(|e| StoreError::io("read", path, e))?;
        SegmentHeader::decode(&buf[..n], path)?;
        Ok(u16::from_le_bytes([buf[8], buf[9]]))
    }

    /// Reads and decodes the header of `path` and checks it names the expected file.
    pub fn read_expect(
        file: &File,
        path: &Path,
        kind: SegmentKind,
        core: u16,
        sequence: u32,
    ) -> Result<SegmentHeader, StoreError> {
        let mut buf = [0u8; SEGMENT_HEADER_BYTES];
        let n = read_up_to(file, &mut buf, 0).map_err(|e| StoreError::io("read", path, e))?;
        let h = SegmentHeader::decode(&buf[..n], path)?;
        if h.kind != kind || h.core != core || h.sequence != sequence {
            return Err(StoreError::corrupt(
                path,
                0,
                format!(
                    "header says {:?} core {} sequence {}, file name says {kind:?} core {core} \
                     sequence {sequence}",
                    h.kind, h.core, h.sequence
                ),
            ));
        }
        Ok(h)
    }
}

/// A fresh nonce: clock nanoseconds mixed with the pid and a process-wide counter.
pub fn new_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 finalizer over the mixed inputs.
    let mut z =
        nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `<data_dir>/store`.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("store")
}

/// `<data_dir>/store/core-<ii>`.
pub fn core_dir(data_dir: &Path, core: u16) -> PathBuf {
    store_dir(data_dir).join(format!("core-{core:02}"))
}

/// `blob-00000001.seg` / `meta-00000001.seg`.
pub fn segment_file_name(kind: SegmentKind, sequence: u32) -> String {
    format!("{}-{sequence:08}.seg", kind.prefix())
}

pub fn segment_path(dir: &Path, kind: SegmentKind, sequence: u32) -> PathBuf {
    dir.join(segment_file_name(kind, sequence))
}

/// Parses `blob-00000001.seg` (exactly; set-aside files with a suffix do not match).
pub fn parse_segment_name(name: &str) -> Option<(SegmentKind, u32)> {
    let (kind, rest) = if let Some(r) = name.strip_prefix("blob-") {
        (SegmentKind::Blob, r)
    } else if let Some(r) = name.strip_prefix("meta-") {
        (SegmentKind::Meta, r)
    } else {
        return None;
    };
    let digits = rest.strip_suffix(".seg")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u32 = digits.parse().ok()?;
    (seq >= 1).then_some((kind, seq))
}

/// Parses `core-07` into 7.
pub fn parse_core_dir_name(name: &str) -> Option<u16> {
    let digits = name.strip_prefix("core-")?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every `core-*` directory under `<data_dir>/store`, sorted by core.
pub fn list_core_dirs(data_dir: &Path) -> Result<Vec<(u16, PathBuf)>, StoreError> {
    let dir = store_dir(data_dir);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io("list", &dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(core) = parse_core_dir_name(&name) {
            if entry.path().is_dir() {
                out.push((core, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Segment sequences of one kind in `dir`, ascending. Also returns the highest sequence
/// seen in any file name derived from a segment name (set-aside `*.seg.*` files included),
/// so a new segment never reuses the name of one that was set aside.
pub fn list_segments(dir: &Path, kind: SegmentKind) -> Result<(Vec<u32>, u32), StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    let mut seqs = Vec::new();
    let mut highest = 0;
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io("list", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some((k, seq)) = parse_segment_name(&name) {
            if k == kind {
                seqs.push(seq);
                highest = highest.max(seq);
            }
        } else if let Some(idx) = name.find(".seg.") {
            if let Some((k, seq)) = parse_segment_name(&name[..idx + 4]) {
                if k == kind {
                    highest = highest.max(seq);
                }
            }
        }
    }
    seqs.sort_unstable();
    Ok((seqs, highest))
}

/// fsync(2) on a directory, so a create/rename/unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = File::open(dir).map_err(|e| StoreError::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Creates `dir` (and parents) and makes the new entries durable: fsyncs the directory
/// and up to two ancestors (core dir → store dir → data dir are the ones that can be new).
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    let mut p = Some(dir);
    for _ in 0..3 {
        match p {
            Some(d) if !d.as_os_str().is_empty() => {
                sync_dir(d)?;
                p = d.parent();
            }
            _ => break,
        }
    }
    Ok(())
}

/// Creates a new, empty segment: header written and (if `durable`) fsynced, then the
/// directory fsynced. Fails if the file already exists.
pub fn create_segment(
    dir: &Path,
    kind: SegmentKind,
    core: u16,
    sequence: u32,
    durable: bool,
) -> Result<(PathBuf, SegmentHeader), StoreError> {
    if sequence == 0 || sequence > SEGMENT_SEQUENCE_MAX {
        return Err(StoreError::corrupt(
            dir,
            0,
            format!("segment sequence {sequence} out of range 1..={SEGMENT_SEQUENCE_MAX}"),
        ));
    }
    ensure_dir(dir)?;
    let path = segment_path(dir, kind, sequence);
    let header = SegmentHeader {
        kind,
        core,
        sequence,
        nonce: new_nonce(),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| StoreError::io("create", &path, e))?;
    let result =
        f.write_all(&header.encode())
            .and_then(|()| if durable { f.sync_data() } else { Ok(()) });
    if let Err(e) = result {
        // Leave no header-less file behind: recovery would have to guess what it is.
        let _ = fs::remove_file(&path);
        return Err(StoreError::io("write header of", &path, e));
    }
    if durable {
        sync_dir(dir)?;
    }
    Ok((path, header))
}

/// pread that returns fewer bytes only at end of file.
pub fn read_up_to(file: &File, buf: &mut [u8], mut pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                pos += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// [`read_up_to`] into `head` and then `body` with one `preadv`: a record's header and
/// payload land in separate buffers without a copy.
pub fn read_up_to_split(
    file: &File,
    head: &mut [u8],
    body: &mut [u8],
    pos: u64,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let (head_len, total) = (head.len(), head.len() + body.len());
    let mut done = 0;
    while done < total {
        let (h, b) = if done < head_len {
            (&mut head[done..], &mut body[..])
        } else {
            (&mut head[..0], &mut body[done - head_len..])
        };
        let iov = [
            libc::iovec {
                iov_base: h.as_mut_ptr().cast(),
                iov_len: h.len(),
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            },
        ];
        let at = libc::off_t::try_from(pos + done as u64)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: both iovecs describe live buffers borrowed mutably for this call only.
        let n = unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), 2, at) };
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(done)
}

/// One step of a sequential scan.
#[derive(Debug)]
pub enum ScanItem<'a> {
    Record {
        offset: u64,
        header: RecordHeader,
        payload: &'a [u8],
    },
    /// Clean end: the previous record ended exactly at end of file, or everything from
    /// there to the end of file is zero (space written ahead by the log writer; type 0 is
    /// never a valid record). `position()` is where the next record goes.
    End,
    /// The bytes at `offset` are not a valid record (torn or corrupt): the log stops here.
    Invalid { offset: u64, reason: RecordError },
}

/// Reads a segment's records in order through a 1 MiB window of positional reads.
pub struct Scanner<'f> {
    file: &'f File,
    path: PathBuf,
    file_len: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    /// Offset of the record last returned.
    last_record_offset: u64,
    /// Bytes of valid records read so far (the read-ahead window past the last record,
    /// e.g. into a zero-filled tail, is not counted).
    pub bytes_read: u64,
}

impl<'f> Scanner<'f> {
    /// Starts scanning at `start` (just past the header, or a known record boundary).
    pub fn new(file: &'f File, path: &Path, start: u64) -> Result<Scanner<'f>, StoreError> {
        let file_len = file
            .metadata()
            .map_err(|e| StoreError::io("stat", path, e))?
            .len();
        Ok(Scanner {
            file,
            path: path.to_path_buf(),
            file_len,
            pos: start,
            buf: Vec::new(),
            buf_start: start,
            last_record_offset: start,
            bytes_read: 0,
        })
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Offset of the next record (after a `Record`), or where the log stops.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Makes `[pos, pos + n)` available in `buf`; n must be ≤ file_len - pos.
    fn fill(&mut self, n: usize) -> Result<(), StoreError> {
        let have_end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + n as u64 <= have_end {
            return Ok(());
        }
        let want = n.max(SCAN_CHUNK_BYTES) as u64;
        let want = want.min(self.file_len - self.pos) as usize;
        self.buf.clear();
        self.buf.resize(want, 0);
        let got = read_up_to(self.file, &mut self.buf, self.pos)
            .map_err(|e| StoreError::io("read", &self.path, e))?;
        self.buf.truncate(got);
        self.buf_start = self.pos;
        Ok(())
    }

    fn slice(&self, at: u64, n: usize) -> Option<&[u8]> {
        let from = usize::try_from(at.checked_sub(self.buf_start)?).ok()?;
        self.buf.get(from..from.checked_add(n)?)
    }

    /// True if every byte from `from` to the end of file is zero.
    fn zeros_to_end(&self, from: u64) -> Result<bool, StoreError> {
        let mut chunk = vec![0u8; SCAN_CHUNK_BYTES.min((self.file_len - from) as usize)];
        let mut at = from;
        while at < self.file_len {
            let want = chunk.len().min((self.file_len - at) as usize);
            let got = read_up_to(self.file, &mut chunk[..want], at)
                .map_err(|e| StoreError::io("read", &self.path, e))?;
            if chunk[..got].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            if got < want {
                break; // the file shrank under us: what is left was zero
            }
            at += got as u64;
        }
        Ok(true)
    }

    /// The next record, `End`, or `Invalid`. I/O errors are errors, not `Invalid`.
    pub fn next_item(&mut self) -> Result<ScanItem<'_>, StoreError> {
        let invalid = match self.next_raw()? {
            ScanItem::Record { .. } => None,
            ScanItem::End => return Ok(ScanItem::End),
            ScanItem::Invalid { offset, reason } => Some((offset, reason)),
        };
        match invalid {
            None => self.current_record(),
            Some((offset, _)) if self.zeros_to_end(offset)? => Ok(ScanItem::End),
            Some((offset, reason)) => Ok(ScanItem::Invalid { offset, reason }),
        }
    }

    /// Re-borrows the record `next_raw` just accepted (it ends at `pos`).
    fn current_record(&self) -> Result<ScanItem<'_>, StoreError> {
        let offset = self.last_record_offset;
        let head = self
            .slice(offset, RECORD_HEADER_BYTES)
            .and_then(|s| s.first_chunk::<RECORD_HEADER_BYTES>())
            .copied()
            .unwrap_or([0; RECORD_HEADER_BYTES]);
        let header = record::parse_header(&head, u64::MAX).map_err(|e| {
            StoreError::corrupt(&self.path, offset, format!("re-reading a record: {e}"))
        })?;
        Ok(self.record_item(offset, header))
    }

    /// The accepted record at `offset` as a scan item borrowing its payload from the buffer.
    fn record_item(&self, offset: u64, header: RecordHeader) -> ScanItem<'_> {
        let payload = self
            .slice(
                offset + RECORD_HEADER_BYTES as u64,
                header.payload_len as usize,
            )
            .unwrap_or_default();
        ScanItem::Record {
            offset,
            header,
            payload,
        }
    }

    /// `next_item` without the zero-tail rule.
    fn next_raw(&mut self) -> Result<ScanItem<'_>, StoreError> {
        let offset = self.pos;
        if offset >= self.file_len {
            return Ok(ScanItem::End);
        }
        let remaining = self.file_len - offset;
        if remaining < RECORD_HEADER_BYTES as u64 {
            return Ok(ScanItem::Invalid {
                offset,
                reason: RecordError::Short {
                    need: RECORD_HEADER_BYTES as u64,
                    have: remaining,
                },
            });
        }
        self.fill(RECORD_HEADER_BYTES)?;
        let Some(head) = self
            .slice(offset, RECORD_HEADER_BYTES)
            .and_then(|s| s.first_chunk::<RECORD_HEADER_BYTES>())
            .copied()
        else {
            return Ok(ScanItem::Invalid {
                offset,
                reason: RecordError::Short {
                    need: RECORD_HEADER_BYTES as u64,
                    have: self.buf.len() as u64,
                },
            });
        };
        let header = match record::parse_header(&head, remaining - RECORD_HEADER_BYTES as u64) {
            Ok(h) => h,
            Err(reason) => return Ok(ScanItem::Invalid { offset, reason }),
        };
        let total = header.record_bytes() as usize;
        self.fill(total)?;
        let Some(rec) = self.slice(offset, total) else {
            return Ok(ScanItem::Invalid {
                offset,
                reason: RecordError::Short {
                    need: total as u64,
                    have: remaining,
                },
            });
        };
        let payload = &rec[RECORD_HEADER_BYTES..];
        if let Err(reason) = record::verify(&head, &header, payload) {
            return Ok(ScanItem::Invalid { offset, reason });
        }
        self.pos = offset + total as u64;
        self.last_record_offset = offset;
        self.bytes_read += total as u64;
        Ok(self.record_item(offset, header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{encode_record, RecordType};

    #[test]
    fn header_round_trip_and_checks() {
        let h = SegmentHeader {
            kind: SegmentKind::Meta,
            core: 3,
            sequence: 17,
            nonce: 0xDEAD_BEEF_0123_4567,
        };
        let b = h.encode();
        let p = Path::new("x");
        assert_eq!(SegmentHeader::decode(&b, p).unwrap(), h);
        for i in 0..SEGMENT_HEADER_BYTES {
            let mut bad = b;
            bad[i] ^= 0x04;
            assert!(SegmentHeader::decode(&bad, p).is_err(), "flip at {i}");
        }
        assert!(SegmentHeader::decode(&b[..20], p).is_err());
    }

    #[test]
    fn version_mismatch_is_a_clear_error() {
        let h = SegmentHeader {
            kind: SegmentKind::Blob,
            core: 0,
            sequence: 1,
            nonce: 1,
        };
        let with_version = |v: u16| {
            let mut b = h.encode();
            b[8..10].copy_from_slice(&v.to_le_bytes());
            let crc = crc32c::crc32c(&b[0..36]);
            b[36..40].copy_from_slice(&crc.to_le_bytes());
            b
        };
        match SegmentHeader::decode(&with_version(3), Path::new("seg")) {
            Err(StoreError::Version {
                found: 3,
                expected: 2,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // Version 1 (blob segments without index records) is still read.
        assert_eq!(
            SegmentHeader::decode(&with_version(1), Path::new("seg")).unwrap(),
            h
        );
        assert!(SegmentHeader::decode(&with_version(0), Path::new("seg")).is_err());
    }

    #[test]
    fn names_parse() {
        assert_eq!(
            parse_segment_name("blob-00000001.seg"),
            Some((SegmentKind::Blob, 1))
        );
        assert_eq!(
            parse_segment_name(&segment_file_name(SegmentKind::Meta, 12345678)),
            Some((SegmentKind::Meta, 12345678))
        );
        assert_eq!(parse_segment_name("blob-00000001.seg.aside"), None);
        assert_eq!(parse_segment_name("blob-0000001.seg"), None);
        assert_eq!(parse_segment_name("blob-00000000.seg"), None);
        assert_eq!(parse_core_dir_name("core-07"), Some(7));
        assert_eq!(parse_core_dir_name("core-123"), Some(123));
        assert_eq!(parse_core_dir_name("core-7"), None);
    }

    #[test]
    fn scanner_reads_records_and_stops_at_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = create_segment(dir.path(), SegmentKind::Blob, 0, 1, true).unwrap();
        let mut data = Vec::new();
        // One record larger than the scan window, to cross refills.
        let big = vec![0x5Au8; SCAN_CHUNK_BYTES + 10];
        encode_record(&mut data, RecordType::Blob, b"one");
        encode_record(&mut data, RecordType::Blob, &big);
        encode_record(&mut data, RecordType::Blob, b"three");
        let full = data.len();
        data.truncate(full - 2);
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        (&f).write_all(&data).unwrap();
        let f = File::open(&path).unwrap();
        let mut s = Scanner::new(&f, &path, SEGMENT_HEADER_BYTES as u64).unwrap();
        let mut got = Vec::new();
        loop {
            match s.next_item().unwrap() {
                ScanItem::Record { payload, .. } => got.push(payload.len()),
                ScanItem::End => panic!("torn tail not detected"),
                ScanItem::Invalid { offset, reason } => {
                    assert!(matches!(reason, RecordError::Short { .. }));
                    assert_eq!(
                        offset,
                        (SEGMENT_HEADER_BYTES + 2 * RECORD_HEADER_BYTES + 3 + big.len()) as u64
                    );
                    break;
                }
            }
        }
        assert_eq!(got, vec![3, big.len()]);
    }
}
