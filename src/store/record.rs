//! Record framing and the meta log's record payloads.
//!
//! A record is `[payload_len u32 LE][crc32c u32 LE][type u8][3 zero bytes]` followed by
//! `payload_len` bytes of payload. The CRC32C covers bytes 0..4 (length), 8..12 (type and
//! reserved bytes) and the payload, so a torn write, a flipped bit anywhere in the record
//! or a record whose length field was damaged is detected. Type 0 is never valid, so a
//! zero-filled region (a hole, preallocated space) never decodes as a record.
//!
//! Blob records carry the message bytes as given. Meta records carry one rkyv 0.8 archive
//! of the struct named by the type byte; [`decode_meta`] copies the payload into an
//! `AlignedVec` and validates it with `rkyv::access` exactly once per record at load.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::BlobRef;

/// Bytes of the record header.
pub const RECORD_HEADER_BYTES: usize = 12;
const _: () = assert!(RECORD_HEADER_BYTES == 4 + 4 + 1 + 3);

/// Meta payloads are small (a mailbox create carries two bounded names); anything larger
/// is corruption.
pub const META_PAYLOAD_BYTES_MAX: usize = 16 * 1024;

/// The type byte of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// Blob log: the raw message bytes.
    Blob = 1,
    MailboxCreate = 2,
    MessageAppend = 3,
    FlagsSet = 4,
    Expunge = 5,
    /// The single record of a checkpoint file, format version 1 (issue 2). Recognised so
    /// that recovery can say why it ignores it (and scans the meta logs instead); never
    /// written any more.
    Checkpoint = 6,
    // 7 is reserved for `BlobRelocate` (written by the future compactor, see the module
    // doc of `store`); a reader of this version stops at it like at any unknown type.
    /// Defines a keyword's bit in one mailbox.
    KeywordDefine = 8,
    /// Removes a mailbox and its messages.
    MailboxDelete = 9,
    /// Gives a mailbox a new name (same id, UIDVALIDITY and UIDs).
    MailboxRename = 10,
    /// Sets a mailbox's SPECIAL-USE bits.
    MailboxAttrs = 11,
    /// A user's account was initialised (default mailboxes created once).
    AccountInit = 12,
    /// Subscribes or unsubscribes a user to a mailbox name.
    Subscription = 13,
    /// The single record of a checkpoint file, format version 2 (issue 3). Recognised so
    /// that recovery can say why it ignores it; never written any more.
    CheckpointV2 = 14,
    /// A message waits in the outbound queue (`store::queue`).
    QueueAdd = 15,
    /// Delivery attempts changed some recipients of a queue entry.
    QueueUpdate = 16,
    /// A queue entry is finished (delivered, bounced, deleted or lost): it leaves the queue.
    QueueDone = 17,
    /// The single record of a checkpoint file, format version 3 ([`CHECKPOINT_VERSION`]):
    /// version 2 plus the outbound queue; read only to say it is old.
    CheckpointV3 = 18,
    /// The single record of a checkpoint file, format version 4 ([`CHECKPOINT_VERSION`]):
    /// version 3 plus the blob-log positions covered (blob logs carry `MessageAppend`
    /// records too).
    CheckpointV4 = 19,
}

/// The checkpoint format this build writes (the record type of its payload says it: 1 is
/// [`RecordType::Checkpoint`], 2 is [`RecordType::CheckpointV2`], 3 is
/// [`RecordType::CheckpointV3`], 4 is [`RecordType::CheckpointV4`]).
pub const CHECKPOINT_VERSION: u32 = 4;

/// Queue records carry up to `QUEUE_RECIPIENTS_MAX` recipients (with their ORCPT or error
/// texts), so they get a larger bound than the other meta records.
pub const QUEUE_PAYLOAD_BYTES_MAX: usize = 1 << 20;

impl RecordType {
    pub fn from_u8(v: u8) -> Option<RecordType> {
        Some(match v {
            1 => RecordType::Blob,
            2 => RecordType::MailboxCreate,
            3 => RecordType::MessageAppend,
            4 => RecordType::FlagsSet,
            5 => RecordType::Expunge,
            6 => RecordType::Checkpoint,
            8 => RecordType::KeywordDefine,
            9 => RecordType::MailboxDelete,
            10 => RecordType::MailboxRename,
            11 => RecordType::MailboxAttrs,
            12 => RecordType::AccountInit,
            13 => RecordType::Subscription,
            14 => RecordType::CheckpointV2,
            15 => RecordType::QueueAdd,
            16 => RecordType::QueueUpdate,
            17 => RecordType::QueueDone,
            18 => RecordType::CheckpointV3,
            19 => RecordType::CheckpointV4,
            _ => return None,
        })
    }
}

impl RecordType {
    /// The largest payload a record of this type may have; anything larger is corruption.
    pub fn payload_bytes_max(self) -> u64 {
        match self {
            RecordType::Blob => super::MESSAGE_BYTES_MAX as u64,
            RecordType::Checkpoint
            | RecordType::CheckpointV2
            | RecordType::CheckpointV3
            | RecordType::CheckpointV4 => u64::from(u32::MAX),
            RecordType::QueueAdd | RecordType::QueueUpdate | RecordType::QueueDone => {
                QUEUE_PAYLOAD_BYTES_MAX as u64
            }
            _ => META_PAYLOAD_BYTES_MAX as u64,
        }
    }
}

/// A decoded, CRC-checked record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub kind: RecordType,
}

impl RecordHeader {
    pub fn record_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + u64::from(self.payload_len)
    }
}

/// The CRC32C a record with this header and payload must carry.
pub fn record_crc(header: &[u8; RECORD_HEADER_BYTES], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[0..4]);
    let crc = crc32c::crc32c_append(crc, &header[8..12]);
    crc32c::crc32c_append(crc, payload)
}

/// Appends one framed record to `out` and returns its CRC.
///
/// Panics only if `payload` is longer than u32::MAX, which callers rule out with
/// `MESSAGE_BYTES_MAX` / `META_PAYLOAD_BYTES_MAX` before calling.
pub fn encode_record(out: &mut Vec<u8>, kind: RecordType, payload: &[u8]) -> u32 {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    assert!(len as usize == payload.len(), "record payload over 4 GiB");
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8] = kind as u8;
    let crc = record_crc(&header, payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    out.reserve(RECORD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    crc
}

/// Why bytes do not form a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the header or the declared payload: a torn tail.
    Short {
        need: u64,
        have: u64,
    },
    BadType(u8),
    ReservedNotZero,
    TooLarge {
        len: u32,
        max: u64,
    },
    Checksum {
        stored: u32,
        computed: u32,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Short { need, have } => {
                write!(f, "torn record: needs {need} bytes, only {have} present")
            }
            RecordError::BadType(t) => write!(f, "unknown record type {t}"),
            RecordError::ReservedNotZero => write!(f, "reserved header bytes are not zero"),
            RecordError::TooLarge { len, max } => {
                write!(f, "record length {len} exceeds the limit {max}")
            }
            RecordError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// Parses a header without checking the CRC (which needs the payload).
/// `payload_max` bounds the length field (remaining file bytes, or a type limit).
pub fn parse_header(
    bytes: &[u8; RECORD_HEADER_BYTES],
    payload_max: u64,
) -> Result<RecordHeader, RecordError> {
    let payload_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let kind = RecordType::from_u8(bytes[8]).ok_or(RecordError::BadType(bytes[8]))?;
    if bytes[9..12] != [0, 0, 0] {
        return Err(RecordError::ReservedNotZero);
    }
    let type_max = kind.payload_bytes_max();
    if u64::from(payload_len) > type_max {
        return Err(RecordError::TooLarge {
            len: payload_len,
            max: type_max,
        });
    }
    if u64::from(payload_len) > payload_max {
        return Err(RecordError::Short {
            need: RECORD_HEADER_BYTES as u64 + u64::from(payload_len),
            have: RECORD_HEADER_BYTES as u64 + payload_max,
        });
    }
    Ok(RecordHeader {
        payload_len,
        crc,
        kind,
    })
}

/// Decodes and verifies one record at the start of `bytes`; returns the header and the
/// payload slice.
pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), RecordError> {
    let Some(head) = bytes.first_chunk::<RECORD_HEADER_BYTES>() else {
        return Err(RecordError::Short {
            need: RECORD_HEADER_BYTES as u64,
            have: bytes.len() as u64,
        });
    };
    let rest = (bytes.len() - RECORD_HEADER_BYTES) as u64;
    let header = parse_header(head, rest)?;
    let payload = &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + header.payload_len as usize];
    verify(head, &header, payload)?;
    Ok((header, payload))
}

/// Checks the CRC of a parsed header against its payload.
pub fn verify(
    head: &[u8; RECORD_HEADER_BYTES],
    header: &RecordHeader,
    payload: &[u8],
) -> Result<(), RecordError> {
    let computed = record_crc(head, payload);
    if computed != header.crc {
        return Err(RecordError::Checksum {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Meta payloads (rkyv 0.8)

/// Creates a mailbox. Written by the owner core before any message of the mailbox.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MailboxCreate {
    /// `(creating core << 48) | per-core sequence`: unique without coordination.
    pub mailbox_id: u64,
    pub user: String,
    pub name: String,
    pub uid_validity: u32,
}

/// One message in one mailbox.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MessageAppend {
    pub mailbox_id: u64,
    pub uid: u32,
    pub modseq: u64,
    pub blob: BlobRef,
    pub internal_date: i64,
    pub flags: u32,
}

/// Replaces a message's flags (highest modseq wins).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FlagsSet {
    pub mailbox_id: u64,
    pub uid: u32,
    pub modseq: u64,
    pub flags: u32,
}

/// Tombstone: the message is gone (its blob becomes garbage for a compactor).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Expunge {
    pub mailbox_id: u64,
    pub uid: u32,
    pub modseq: u64,
}

/// Keyword `name` is flag bit `bit` (5..=31) of the mailbox from now on.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeywordDefine {
    pub mailbox_id: u64,
    pub modseq: u64,
    pub bit: u8,
    pub name: String,
}

/// The mailbox is gone, with every message in it (their blobs become garbage). Its id is
/// never used again; a mailbox created later with the same name gets a new id.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MailboxDelete {
    pub mailbox_id: u64,
    pub modseq: u64,
}

/// The mailbox is called `name` from now on.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MailboxRename {
    pub mailbox_id: u64,
    pub modseq: u64,
    pub name: String,
}

/// The mailbox's SPECIAL-USE bits (`store::special_use`) from now on.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MailboxAttrs {
    pub mailbox_id: u64,
    pub modseq: u64,
    pub special_use: u8,
}

/// The user's default mailboxes were created once; they are not created again.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AccountInit {
    pub user: String,
}

/// The user is (or is no longer) subscribed to the mailbox name `name`, which need not
/// exist. `seq` is per user and strictly increasing (the highest wins).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Subscription {
    pub user: String,
    pub seq: u64,
    pub name: String,
    pub subscribed: bool,
}

/// One recipient of a queued message, as accepted.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueueRecipient {
    /// The address to deliver to (after alias expansion), as it goes on `RCPT TO`.
    pub address: String,
    /// RFC 3461 NOTIFY as `queue::NOTIFY_*` bits; None when the client gave none.
    pub notify: Option<u8>,
    /// RFC 3461 ORCPT (`addr-type;xtext`, as received); None when absent.
    pub orcpt: Option<String>,
}

/// A message enters the outbound queue of the core that wrote this record. Its blob stays
/// referenced until a [`QueueDone`] for the same id.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueueAdd {
    /// `(creating core << 48) | per-core sequence`, like mailbox ids.
    pub id: u64,
    pub blob: BlobRef,
    /// The SMTP transaction's queue id (logs and `Received:` name it), for operators.
    pub smtp_id: String,
    /// Envelope sender without `<>`; "" for the null sender (no bounce is ever sent to it).
    pub sender: String,
    pub recipients: Vec<QueueRecipient>,
    /// The client asked for SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// The client declared BODY=8BITMIME (RFC 6152).
    pub body_8bitmime: bool,
    /// Unix seconds when the message was accepted.
    pub arrival: i64,
    /// The logged-in user who submitted it (None: received unauthenticated).
    pub authenticated: Option<String>,
    /// RFC 3461 RET (`queue::RET_FULL` / `RET_HDRS`); None when absent.
    pub ret: Option<u8>,
    /// RFC 3461 ENVID (xtext as received); None when absent.
    pub envid: Option<String>,
}

/// The new state of one recipient of a queue entry after an attempt.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RecipientUpdate {
    /// Index into the entry's `QueueAdd::recipients`.
    pub index: u32,
    /// `queue::RecipientState` as a byte.
    pub state: u8,
    /// Attempts made for this recipient so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt (meaningful while deferred).
    pub next_try: i64,
    /// `queue::FLAG_*` bits (e.g. a delay notice was sent).
    pub flags: u8,
    /// The remote's reply or the local reason (bounded), "" if none.
    pub error: String,
}

/// Recipients of a queue entry changed state. `seq` is per entry and strictly increasing
/// (the highest wins, like a modseq).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueueUpdate {
    pub id: u64,
    pub seq: u64,
    /// Unix seconds of the attempt.
    pub at: i64,
    pub recipients: Vec<RecipientUpdate>,
}

/// The entry leaves the queue for good (its blob becomes garbage for a compactor).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueueDone {
    pub id: u64,
    /// `queue::DoneReason` as a byte.
    pub reason: u8,
}

/// Any meta record, decoded into owned values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaRecord {
    MailboxCreate(MailboxCreate),
    MessageAppend(MessageAppend),
    FlagsSet(FlagsSet),
    Expunge(Expunge),
    KeywordDefine(KeywordDefine),
    MailboxDelete(MailboxDelete),
    MailboxRename(MailboxRename),
    MailboxAttrs(MailboxAttrs),
    AccountInit(AccountInit),
    Subscription(Subscription),
    QueueAdd(QueueAdd),
    QueueUpdate(QueueUpdate),
    QueueDone(QueueDone),
}

impl MetaRecord {
    pub fn record_type(&self) -> RecordType {
        match self {
            MetaRecord::MailboxCreate(_) => RecordType::MailboxCreate,
            MetaRecord::MessageAppend(_) => RecordType::MessageAppend,
            MetaRecord::FlagsSet(_) => RecordType::FlagsSet,
            MetaRecord::Expunge(_) => RecordType::Expunge,
            MetaRecord::KeywordDefine(_) => RecordType::KeywordDefine,
            MetaRecord::MailboxDelete(_) => RecordType::MailboxDelete,
            MetaRecord::MailboxRename(_) => RecordType::MailboxRename,
            MetaRecord::MailboxAttrs(_) => RecordType::MailboxAttrs,
            MetaRecord::AccountInit(_) => RecordType::AccountInit,
            MetaRecord::Subscription(_) => RecordType::Subscription,
            MetaRecord::QueueAdd(_) => RecordType::QueueAdd,
            MetaRecord::QueueUpdate(_) => RecordType::QueueUpdate,
            MetaRecord::QueueDone(_) => RecordType::QueueDone,
        }
    }

    /// A short name for errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaRecord::MailboxCreate(_) => "MailboxCreate",
            MetaRecord::MessageAppend(_) => "MessageAppend",
            MetaRecord::FlagsSet(_) => "FlagsSet",
            MetaRecord::Expunge(_) => "Expunge",
            MetaRecord::KeywordDefine(_) => "KeywordDefine",
            MetaRecord::MailboxDelete(_) => "MailboxDelete",
            MetaRecord::MailboxRename(_) => "MailboxRename",
            MetaRecord::MailboxAttrs(_) => "MailboxAttrs",
            MetaRecord::AccountInit(_) => "AccountInit",
            MetaRecord::Subscription(_) => "Subscription",
            MetaRecord::QueueAdd(_) => "QueueAdd",
            MetaRecord::QueueUpdate(_) => "QueueUpdate",
            MetaRecord::QueueDone(_) => "QueueDone",
        }
    }

    /// The mailbox the record belongs to; None for per-user records (account init,
    /// subscriptions) and queue records.
    pub fn mailbox_id(&self) -> Option<u64> {
        Some(match self {
            MetaRecord::MailboxCreate(r) => r.mailbox_id,
            MetaRecord::MessageAppend(r) => r.mailbox_id,
            MetaRecord::FlagsSet(r) => r.mailbox_id,
            MetaRecord::Expunge(r) => r.mailbox_id,
            MetaRecord::KeywordDefine(r) => r.mailbox_id,
            MetaRecord::MailboxDelete(r) => r.mailbox_id,
            MetaRecord::MailboxRename(r) => r.mailbox_id,
            MetaRecord::MailboxAttrs(r) => r.mailbox_id,
            MetaRecord::AccountInit(_)
            | MetaRecord::Subscription(_)
            | MetaRecord::QueueAdd(_)
            | MetaRecord::QueueUpdate(_)
            | MetaRecord::QueueDone(_) => return None,
        })
    }

    /// The user of a per-user record (None for per-mailbox records).
    pub fn user(&self) -> Option<&str> {
        match self {
            MetaRecord::AccountInit(r) => Some(&r.user),
            MetaRecord::Subscription(r) => Some(&r.user),
            _ => None,
        }
    }

    /// The record's place in its scope: the modseq for per-mailbox records (0 for a
    /// create, which precedes every modseq of its mailbox), the per-user sequence for a
    /// subscription (0 for an account init, which is idempotent), the per-entry sequence
    /// of a queue update (0 for a queue add; a queue done is `u64::MAX`: it is last).
    pub fn modseq(&self) -> u64 {
        match self {
            MetaRecord::MailboxCreate(_) | MetaRecord::AccountInit(_) => 0,
            MetaRecord::QueueAdd(_) => 0,
            MetaRecord::QueueUpdate(r) => r.seq,
            MetaRecord::QueueDone(_) => u64::MAX,
            MetaRecord::MessageAppend(r) => r.modseq,
            MetaRecord::FlagsSet(r) => r.modseq,
            MetaRecord::Expunge(r) => r.modseq,
            MetaRecord::KeywordDefine(r) => r.modseq,
            MetaRecord::MailboxDelete(r) => r.modseq,
            MetaRecord::MailboxRename(r) => r.modseq,
            MetaRecord::MailboxAttrs(r) => r.modseq,
            MetaRecord::Subscription(r) => r.seq,
        }
    }

    /// Serializes the payload into `scratch` (reused between calls) and returns it.
    pub fn encode_payload<'a>(
        &self,
        scratch: &'a mut AlignedVec,
    ) -> Result<&'a [u8], rancor::Error> {
        let mut buf = std::mem::take(scratch);
        buf.clear();
        let buf = match self {
            MetaRecord::MailboxCreate(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::MessageAppend(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::FlagsSet(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::Expunge(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::KeywordDefine(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::MailboxDelete(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::MailboxRename(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::MailboxAttrs(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::AccountInit(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::Subscription(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::QueueAdd(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::QueueUpdate(r) => rkyv::api::high::to_bytes_in(r, buf)?,
            MetaRecord::QueueDone(r) => rkyv::api::high::to_bytes_in(r, buf)?,
        };
        *scratch = buf;
        Ok(scratch.as_slice())
    }

    /// Appends the framed record to `out`; returns its CRC.
    pub fn encode(&self, out: &mut Vec<u8>, scratch: &mut AlignedVec) -> Result<u32, String> {
        let kind = self.record_type();
        let payload = self.encode_payload(scratch).map_err(|e| e.to_string())?;
        let max = kind.payload_bytes_max();
        if payload.len() as u64 > max {
            return Err(format!("payload of {} bytes exceeds {max}", payload.len()));
        }
        Ok(encode_record(out, kind, payload))
    }
}

/// Validates a meta payload (copied into `aligned`, reused between calls) and decodes it.
pub fn decode_meta(
    kind: RecordType,
    payload: &[u8],
    aligned: &mut AlignedVec,
) -> Result<MetaRecord, String> {
    aligned.clear();
    aligned.extend_from_slice(payload);
    let bytes = aligned.as_slice();
    let err = |e: rancor::Error| format!("invalid {kind:?} payload: {e}");
    Ok(match kind {
        RecordType::MailboxCreate => {
            let a = rkyv::access::<ArchivedMailboxCreate, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::MailboxCreate(MailboxCreate {
                mailbox_id: a.mailbox_id.to_native(),
                user: a.user.as_str().to_owned(),
                name: a.name.as_str().to_owned(),
                uid_validity: a.uid_validity.to_native(),
            })
        }
        RecordType::MessageAppend => {
            let a = rkyv::access::<ArchivedMessageAppend, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::MessageAppend(MessageAppend {
                mailbox_id: a.mailbox_id.to_native(),
                uid: a.uid.to_native(),
                modseq: a.modseq.to_native(),
                blob: BlobRef {
                    core: a.blob.core.to_native(),
                    segment: a.blob.segment.to_native(),
                    offset: a.blob.offset.to_native(),
                    len: a.blob.len.to_native(),
                },
                internal_date: a.internal_date.to_native(),
                flags: a.flags.to_native(),
            })
        }
        RecordType::FlagsSet => {
            let a = rkyv::access::<ArchivedFlagsSet, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::FlagsSet(FlagsSet {
                mailbox_id: a.mailbox_id.to_native(),
                uid: a.uid.to_native(),
                modseq: a.modseq.to_native(),
                flags: a.flags.to_native(),
            })
        }
        RecordType::Expunge => {
            let a = rkyv::access::<ArchivedExpunge, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::Expunge(Expunge {
                mailbox_id: a.mailbox_id.to_native(),
                uid: a.uid.to_native(),
                modseq: a.modseq.to_native(),
            })
        }
        RecordType::KeywordDefine => {
            let a = rkyv::access::<ArchivedKeywordDefine, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::KeywordDefine(KeywordDefine {
                mailbox_id: a.mailbox_id.to_native(),
                modseq: a.modseq.to_native(),
                bit: a.bit,
                name: a.name.as_str().to_owned(),
            })
        }
        RecordType::MailboxDelete => {
            let a = rkyv::access::<ArchivedMailboxDelete, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::MailboxDelete(MailboxDelete {
                mailbox_id: a.mailbox_id.to_native(),
                modseq: a.modseq.to_native(),
            })
        }
        RecordType::MailboxRename => {
            let a = rkyv::access::<ArchivedMailboxRename, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::MailboxRename(MailboxRename {
                mailbox_id: a.mailbox_id.to_native(),
                modseq: a.modseq.to_native(),
                name: a.name.as_str().to_owned(),
            })
        }
        RecordType::MailboxAttrs => {
            let a = rkyv::access::<ArchivedMailboxAttrs, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::MailboxAttrs(MailboxAttrs {
                mailbox_id: a.mailbox_id.to_native(),
                modseq: a.modseq.to_native(),
                special_use: a.special_use,
            })
        }
        RecordType::AccountInit => {
            let a = rkyv::access::<ArchivedAccountInit, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::AccountInit(AccountInit {
                user: a.user.as_str().to_owned(),
            })
        }
        RecordType::Subscription => {
            let a = rkyv::access::<ArchivedSubscription, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::Subscription(Subscription {
                user: a.user.as_str().to_owned(),
                seq: a.seq.to_native(),
                name: a.name.as_str().to_owned(),
                subscribed: a.subscribed,
            })
        }
        // Queue records are rare next to message records: plain rkyv deserialization.
        RecordType::QueueAdd => {
            let a = rkyv::access::<ArchivedQueueAdd, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::QueueAdd(rkyv::deserialize::<QueueAdd, rancor::Error>(a).map_err(err)?)
        }
        RecordType::QueueUpdate => {
            let a = rkyv::access::<ArchivedQueueUpdate, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::QueueUpdate(
                rkyv::deserialize::<QueueUpdate, rancor::Error>(a).map_err(err)?,
            )
        }
        RecordType::QueueDone => {
            let a = rkyv::access::<ArchivedQueueDone, rancor::Error>(bytes).map_err(err)?;
            MetaRecord::QueueDone(QueueDone {
                id: a.id.to_native(),
                reason: a.reason,
            })
        }
        RecordType::Blob
        | RecordType::Checkpoint
        | RecordType::CheckpointV2
        | RecordType::CheckpointV3
        | RecordType::CheckpointV4 => return Err(format!("{kind:?} record in a meta log")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_meta() -> Vec<MetaRecord> {
        vec![
            MetaRecord::MailboxCreate(MailboxCreate {
                mailbox_id: (3 << 48) | 7,
                user: "alice@example.org".into(),
                name: "INBOX".into(),
                uid_validity: 1_763_000_000,
            }),
            MetaRecord::MessageAppend(MessageAppend {
                mailbox_id: 9,
                uid: 42,
                modseq: 43,
                blob: BlobRef {
                    core: 1,
                    segment: 2,
                    offset: 4096,
                    len: 2048,
                },
                internal_date: -5,
                flags: 0b101,
            }),
            MetaRecord::FlagsSet(FlagsSet {
                mailbox_id: 9,
                uid: 42,
                modseq: 44,
                flags: 1,
            }),
            MetaRecord::Expunge(Expunge {
                mailbox_id: 9,
                uid: 42,
                modseq: 45,
            }),
            MetaRecord::KeywordDefine(KeywordDefine {
                mailbox_id: 9,
                modseq: 46,
                bit: 31,
                name: "$Forwarded-and-a-long-name".into(),
            }),
            MetaRecord::MailboxRename(MailboxRename {
                mailbox_id: 9,
                modseq: 47,
                name: "Archive/2025/Ünïcode".into(),
            }),
            MetaRecord::MailboxAttrs(MailboxAttrs {
                mailbox_id: 9,
                modseq: 48,
                special_use: 0x41,
            }),
            MetaRecord::MailboxDelete(MailboxDelete {
                mailbox_id: 9,
                modseq: 49,
            }),
            MetaRecord::AccountInit(AccountInit {
                user: "alice@example.org".into(),
            }),
            MetaRecord::Subscription(Subscription {
                user: "alice@example.org".into(),
                seq: u64::MAX,
                name: "Does/Not/Exist".into(),
                subscribed: true,
            }),
            queue_add(3),
            MetaRecord::QueueAdd(QueueAdd {
                id: 1,
                blob: BlobRef {
                    core: 0,
                    segment: 1,
                    offset: 40,
                    len: 0,
                },
                smtp_id: String::new(),
                sender: String::new(),
                recipients: vec![QueueRecipient {
                    address: "x@y".into(),
                    notify: None,
                    orcpt: None,
                }],
                smtputf8: false,
                body_8bitmime: false,
                arrival: 0,
                authenticated: None,
                ret: None,
                envid: None,
            }),
            MetaRecord::QueueUpdate(QueueUpdate {
                id: (1 << 48) | 5,
                seq: 2,
                at: 1_763_000_100,
                recipients: vec![
                    RecipientUpdate {
                        index: 0,
                        state: 1,
                        attempts: 1,
                        next_try: 1_763_000_400,
                        flags: 0,
                        error: "451 4.7.1 greylisted, try again later".into(),
                    },
                    RecipientUpdate {
                        index: 2,
                        state: 2,
                        attempts: 1,
                        next_try: 0,
                        flags: 1,
                        error: String::new(),
                    },
                ],
            }),
            MetaRecord::QueueDone(QueueDone {
                id: (1 << 48) | 5,
                reason: 1,
            }),
        ]
    }

    /// A queue entry with `n` recipients, every optional field set.
    fn queue_add(n: usize) -> MetaRecord {
        MetaRecord::QueueAdd(QueueAdd {
            id: (1 << 48) | 5,
            blob: BlobRef {
                core: 1,
                segment: 3,
                offset: 8192,
                len: 12345,
            },
            smtp_id: "4F2A01".into(),
            sender: "alice@example.org".into(),
            recipients: (0..n)
                .map(|i| QueueRecipient {
                    address: format!("user{i}@remote-{i}.test"),
                    notify: Some(if i % 2 == 0 { 4 | 8 } else { 1 }),
                    orcpt: Some(format!("rfc822;user{i}+2B@remote.test")),
                })
                .collect(),
            smtputf8: true,
            body_8bitmime: true,
            arrival: 1_763_000_000,
            authenticated: Some("alice@example.org".into()),
            ret: Some(2),
            envid: Some("QQ314159".into()),
        })
    }

    #[test]
    fn a_full_queue_entry_fits_its_payload_limit_and_round_trips() {
        // QUEUE_RECIPIENTS_MAX recipients, each with the longest address and ORCPT.
        let mut rec = queue_add(0);
        if let MetaRecord::QueueAdd(a) = &mut rec {
            a.recipients = (0..1000)
                .map(|i| QueueRecipient {
                    address: format!("{i:0>310}@remote.t"),
                    notify: Some(4),
                    orcpt: Some("o".repeat(500)),
                })
                .collect();
        }
        let mut out = Vec::new();
        let mut scratch = AlignedVec::new();
        rec.encode(&mut out, &mut scratch).unwrap();
        assert!(
            out.len() > META_PAYLOAD_BYTES_MAX,
            "larger than other records"
        );
        let (h, p) = decode_record(&out).unwrap();
        let back = decode_meta(h.kind, p, &mut AlignedVec::new()).unwrap();
        assert_eq!(back, rec);
        // A mailbox record of that size would be corruption.
        let mut head = [0u8; RECORD_HEADER_BYTES];
        head.copy_from_slice(&out[..RECORD_HEADER_BYTES]);
        head[8] = RecordType::MailboxCreate as u8;
        assert!(matches!(
            parse_header(&head, u64::MAX),
            Err(RecordError::TooLarge { .. })
        ));
        // And a queue record past its own limit is refused at encode time.
        if let MetaRecord::QueueAdd(a) = &mut rec {
            a.recipients.extend(a.recipients.clone());
            a.recipients.extend(a.recipients.clone());
        }
        assert!(rec.encode(&mut Vec::new(), &mut scratch).is_err());
    }

    #[test]
    fn invalid_queue_archives_fail_validation() {
        let mut scratch = AlignedVec::new();
        let mut aligned = AlignedVec::new();
        let rec = queue_add(2);
        let good = rec.encode_payload(&mut scratch).unwrap().to_vec();
        assert_eq!(
            decode_meta(RecordType::QueueAdd, &good, &mut aligned).unwrap(),
            rec
        );
        assert!(decode_meta(RecordType::QueueAdd, &good[..good.len() / 2], &mut aligned).is_err());
        // Read as another queue type, the bytes do not validate as that type's root.
        assert!(decode_meta(RecordType::QueueDone, &good[..4], &mut aligned).is_err());
        // Invalid UTF-8 inside an out-of-line string (longer than rkyv's 8 inline bytes).
        let mut bad = good.clone();
        let at = bad
            .windows(17)
            .position(|w| w == b"alice@example.org")
            .expect("the sender is stored out of line");
        bad[at + 3] = 0xFF;
        assert!(decode_meta(RecordType::QueueAdd, &bad, &mut aligned).is_err());
    }

    #[test]
    fn type_bytes_round_trip_and_seven_stays_reserved() {
        for v in 0..=255u8 {
            if let Some(t) = RecordType::from_u8(v) {
                assert_eq!(t as u8, v);
            }
        }
        assert_eq!(RecordType::from_u8(7), None);
        assert_eq!(RecordType::from_u8(0), None);
        assert_eq!(RecordType::from_u8(20), None);
        assert_eq!(RecordType::from_u8(18), Some(RecordType::CheckpointV3));
        assert_eq!(RecordType::from_u8(19), Some(RecordType::CheckpointV4));
        for rec in sample_meta() {
            assert_eq!(
                RecordType::from_u8(rec.record_type() as u8),
                Some(rec.record_type())
            );
        }
    }

    #[test]
    fn blob_record_round_trip() {
        let mut out = Vec::new();
        let msg = b"Subject: hi\r\n\r\nbody\r\n";
        let crc = encode_record(&mut out, RecordType::Blob, msg);
        assert_eq!(out.len(), RECORD_HEADER_BYTES + msg.len());
        let (h, p) = decode_record(&out).unwrap();
        assert_eq!(h.kind, RecordType::Blob);
        assert_eq!(h.crc, crc);
        assert_eq!(p, msg);
    }

    #[test]
    fn empty_payload_round_trip() {
        let mut out = Vec::new();
        encode_record(&mut out, RecordType::Blob, b"");
        let (h, p) = decode_record(&out).unwrap();
        assert_eq!(h.payload_len, 0);
        assert!(p.is_empty());
    }

    #[test]
    fn meta_records_round_trip() {
        let mut scratch = AlignedVec::new();
        let mut aligned = AlignedVec::new();
        for rec in sample_meta() {
            let mut out = vec![0xAB]; // misalign on purpose: decode must copy
            rec.encode(&mut out, &mut scratch).unwrap();
            let (h, p) = decode_record(&out[1..]).unwrap();
            assert_eq!(h.kind, rec.record_type());
            let back = decode_meta(h.kind, p, &mut aligned).unwrap();
            assert_eq!(back, rec);
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut scratch = AlignedVec::new();
        for rec in sample_meta() {
            let mut out = Vec::new();
            rec.encode(&mut out, &mut scratch).unwrap();
            for i in 0..out.len() {
                for bit in [0x01u8, 0x80] {
                    let mut bad = out.clone();
                    bad[i] ^= bit;
                    assert!(
                        decode_record(&bad).is_err(),
                        "flip {bit:#x} at {i} undetected"
                    );
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_short() {
        let mut out = Vec::new();
        encode_record(&mut out, RecordType::Blob, &[7u8; 100]);
        for cut in 0..out.len() {
            match decode_record(&out[..cut]) {
                Err(RecordError::Short { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn zero_fill_is_not_a_record() {
        assert_eq!(
            decode_record(&[0u8; 64]).unwrap_err(),
            RecordError::BadType(0)
        );
    }

    #[test]
    fn oversized_meta_length_is_rejected() {
        let mut head = [0u8; RECORD_HEADER_BYTES];
        head[0..4].copy_from_slice(&((META_PAYLOAD_BYTES_MAX as u32) + 1).to_le_bytes());
        head[8] = RecordType::MessageAppend as u8;
        assert!(matches!(
            parse_header(&head, u64::MAX),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn invalid_archives_fail_validation() {
        // Bytes that pass the CRC (a writer bug, not disk damage) must still be rejected
        // by rkyv validation instead of being read as garbage.
        let mut scratch = AlignedVec::new();
        let mut aligned = AlignedVec::new();
        let rec = MetaRecord::MailboxCreate(MailboxCreate {
            mailbox_id: 1,
            user: "a-user-name-long-enough-to-live-out-of-line@example.org".into(),
            name: "INBOX".into(),
            uid_validity: 1,
        });
        let good = rec.encode_payload(&mut scratch).unwrap().to_vec();
        assert!(decode_meta(RecordType::MailboxCreate, &good, &mut aligned).is_ok());
        // Too short for the root object.
        assert!(decode_meta(
            RecordType::MailboxCreate,
            &good[..good.len() - 30],
            &mut aligned
        )
        .is_err());
        // The out-of-line string's relative pointer aimed outside the buffer.
        let root = good.len() - std::mem::size_of::<ArchivedMailboxCreate>();
        let mut bad = good.clone();
        bad[root + 12..root + 16].copy_from_slice(&0x7FFF_FF00u32.to_le_bytes());
        assert!(decode_meta(RecordType::MailboxCreate, &bad, &mut aligned).is_err());
        // Invalid UTF-8 inside the string.
        let mut bad = good.clone();
        bad[0] = 0xFF;
        assert!(decode_meta(RecordType::MailboxCreate, &bad, &mut aligned).is_err());
        // A meta decoder never accepts blob or checkpoint types.
        assert!(decode_meta(RecordType::Blob, &good, &mut aligned).is_err());
    }
}
