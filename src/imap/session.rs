//! The authenticated and selected states of one IMAP session, on the user's owner core:
//! one `handle_<command>` per command. FETCH and SEARCH live in [`fetch`](super::fetch) and
//! [`search`](super::search), LIST/LSUB/STATUS in [`list`](super::list).
//!
//! IMAP4rev1 is the default; `ENABLE IMAP4rev2` switches to rev2 behaviour (no RECENT,
//! ESEARCH replies, UTF-8 mailbox names). Mailbox names arrive as raw astrings: modified
//! UTF-7 for rev1 clients, UTF-8 once rev2 or UTF8=ACCEPT is enabled.

use std::rc::Rc;

use crate::runtime::core::Core;
use crate::store::{self, flags as sflags, MailboxStatus, StoreError};

use super::codec::FrameErrorKind;
use super::command::{self, Command, CommandBody, Flag, ParseError, StatusItem, StoreMode};
use super::flags::{self, Keywords};
use super::selected::{Selected, SyncMode, ViewEntry};
use super::sequence::SequenceSet;
use super::server::Conn;
use super::{fetch, list, search, utf7};

/// Commands that fail to parse before the connection is closed.
pub const BAD_COMMANDS_MAX: usize = 50;
/// Messages one APPEND (MULTIAPPEND) may carry.
pub const APPEND_MESSAGES_MAX: usize = 1000;

/// Capabilities after login.
pub fn capabilities() -> &'static str {
    "IMAP4rev1 IMAP4rev2 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE \
         UNSELECT UIDPLUS MOVE CHILDREN LIST-EXTENDED LIST-STATUS SPECIAL-USE \
         CREATE-SPECIAL-USE ESEARCH SEARCHRES CONDSTORE QRESYNC STATUS=SIZE MULTIAPPEND \
         UTF8=ACCEPT"
}

/// `TAG BAD ...` for a framing error.
pub fn frame_error(out: &mut Vec<u8>, tag: Option<&str>, kind: FrameErrorKind) {
    let tag = tag.unwrap_or("*");
    let verb = if kind.is_no() { "NO" } else { "BAD" };
    put!(out, "{tag} {verb} {}\r\n", kind.text());
}

/// `TAG BAD ...` for a command that does not parse.
pub fn parse_error(out: &mut Vec<u8>, e: &ParseError) {
    let tag = e.tag().unwrap_or("*");
    put!(out, "{tag} BAD Error in IMAP command: {e}\r\n");
}

/// The ID reply (RFC 2971).
pub fn write_id(out: &mut Vec<u8>, tag: &str) {
    put!(
        out,
        "* ID (\"name\" \"ringmail\" \"version\" \"{}\")\r\n{tag} OK ID completed.\r\n",
        env!("CARGO_PKG_VERSION")
    );
}

/// How a command ended.
enum Flow {
    Continue,
    Logout,
}

/// One authenticated session.
pub struct Session {
    core: Rc<Core>,
    user: String,
    rev2: bool,
    utf8: bool,
    condstore: bool,
    qresync: bool,
    selected: Option<Selected>,
}

impl Session {
    pub fn new(core: Rc<Core>, user: String) -> Session {
        Session {
            core,
            user,
            rev2: false,
            utf8: false,
            condstore: false,
            qresync: false,
            selected: None,
        }
    }

    fn timeout_ms(&self) -> u64 {
        self.core.config.imap.timeout_ms_idle
    }

    pub async fn run(&mut self, conn: &mut Conn) {
        let mut bad = 0usize;
        loop {
            let Some(cmd) = conn
                .next_parsed(self.timeout_ms(), &mut bad, BAD_COMMANDS_MAX)
                .await
            else {
                return;
            };
            match self.dispatch(cmd, conn).await {
                Flow::Continue => {}
                Flow::Logout => return,
            }
            if conn.flush_if_large().await.is_err() {
                return;
            }
        }
    }

    async fn dispatch(&mut self, cmd: Command, conn: &mut Conn) -> Flow {
        let Command { tag, body } = cmd;
        if !self.condstore && enables_condstore(&body) {
            // RFC 7162 §3.1: the first CONDSTORE-enabling command on a selected mailbox
            // gets the mailbox's HIGHESTMODSEQ.
            self.condstore = true;
            if let Some(sel) = &self.selected {
                let m = self
                    .core
                    .store
                    .with_mailbox(&self.user, &sel.name, |mb| mb.modseq_highest())
                    .unwrap_or(0);
                put!(conn.out, "* OK [HIGHESTMODSEQ {}] Highest\r\n", m.max(1));
            }
        }
        let tag = tag.as_str();
        let out = &mut conn.out;
        match body {
            CommandBody::Capability => {
                put!(
                    out,
                    "* CAPABILITY {}\r\n{tag} OK Capability completed.\r\n",
                    capabilities()
                );
            }
            CommandBody::Noop => self.handle_noop(tag, out, "NOOP"),
            CommandBody::Check => self.handle_noop(tag, out, "Check"),
            CommandBody::Logout => {
                put!(out, "* BYE Logging out\r\n{tag} OK Logout completed.\r\n");
                return Flow::Logout;
            }
            CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
                put!(out, "{tag} BAD Already authenticated.\r\n");
            }
            CommandBody::StartTls => {
                put!(out, "{tag} BAD STARTTLS is not permitted after login.\r\n");
            }
            CommandBody::Id { .. } => write_id(out, tag),
            CommandBody::Enable { capabilities } => self.handle_enable(tag, &capabilities, out),
            CommandBody::Namespace => {
                let delim = "\"/\"";
                put!(
                    out,
                    "* NAMESPACE ((\"\" {delim})) NIL NIL\r\n{tag} OK Namespace completed.\r\n"
                );
            }
            CommandBody::Select {
                mailbox,
                condstore,
                qresync,
            } => {
                self.handle_select(tag, &mailbox, false, condstore, qresync, out)
                    .await
            }
            CommandBody::Examine {
                mailbox,
                condstore,
                qresync,
            } => {
                self.handle_select(tag, &mailbox, true, condstore, qresync, out)
                    .await
            }
            CommandBody::Create {
                mailbox,
                special_use,
            } => self.handle_create(tag, &mailbox, &special_use, out).await,
            CommandBody::Delete { mailbox } => self.handle_delete(tag, &mailbox, out).await,
            CommandBody::Rename { from, to } => self.handle_rename(tag, &from, &to, out).await,
            CommandBody::Subscribe { mailbox } => {
                self.handle_subscribe(tag, &mailbox, true, out).await
            }
            CommandBody::Unsubscribe { mailbox } => {
                self.handle_subscribe(tag, &mailbox, false, out).await
            }
            CommandBody::List {
                reference,
                patterns,
                select,
                returns,
            } => {
                let cx = self.list_context();
                list::handle_list(&cx, tag, &reference, &patterns, &select, &returns, out)
            }
            CommandBody::Lsub { reference, pattern } => {
                let cx = self.list_context();
                list::handle_lsub(&cx, tag, &reference, &pattern, out)
            }
            CommandBody::Status { mailbox, items } => {
                self.handle_status(tag, &mailbox, &items, out)
            }
            CommandBody::Append { mailbox, messages } => {
                self.handle_append(tag, &mailbox, messages, out).await
            }
            CommandBody::Idle => return self.handle_idle(tag, conn).await,
            CommandBody::Close => self.handle_close(tag, out, true).await,
            CommandBody::Unselect => self.handle_close(tag, out, false).await,
            CommandBody::Expunge => self.handle_expunge(tag, None, out).await,
            CommandBody::UidExpunge { set } => self.handle_expunge(tag, Some(&set), out).await,
            CommandBody::Search {
                uid,
                charset,
                criteria,
                returns,
            } => {
                self.handle_search(
                    tag,
                    uid,
                    charset.as_deref(),
                    &criteria,
                    returns.as_deref(),
                    out,
                )
                .await
            }
            CommandBody::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                return self
                    .handle_fetch(tag, uid, &set, &items, changed_since, vanished, conn)
                    .await
            }
            CommandBody::Store {
                uid,
                set,
                unchanged_since,
                mode,
                silent,
                flags,
            } => {
                self.handle_store(tag, uid, &set, unchanged_since, mode, silent, &flags, out)
                    .await
            }
            CommandBody::Copy { uid, set, mailbox } => {
                self.handle_copy(tag, uid, &set, &mailbox, false, out).await
            }
            CommandBody::Move { uid, set, mailbox } => {
                self.handle_copy(tag, uid, &set, &mailbox, true, out).await
            }
        }
        Flow::Continue
    }

    // -----------------------------------------------------------------------------------
    // Helpers

    fn sync_mode(&self, expunges: bool) -> SyncMode {
        SyncMode {
            expunges,
            qresync: self.qresync,
            condstore: self.condstore,
            rev2: self.rev2,
        }
    }

    /// Brings the selected view up to date (untagged responses into `out`).
    fn sync(&mut self, out: &mut Vec<u8>, expunges: bool) -> bool {
        let mode = self.sync_mode(expunges);
        let Some(sel) = self.selected.as_mut() else {
            return true;
        };
        let store = &self.core.store;
        let name = sel.name.clone();
        let core = &self.core;
        let id = sel.id;
        let claim = |uid_max: u32| core.claim_recent(id, uid_max);
        let alive = store
            .with_mailbox(&self.user, &name, |mb| {
                if mb.id() != sel.id {
                    return false;
                }
                // Nothing changed since the last sync (every change bumps the modseq): no
                // walk over the view, which every FETCH/STORE/SEARCH/NOOP would pay.
                if sel.is_current(mb.modseq_highest(), mode.expunges) {
                    return true;
                }
                let keywords = Keywords::from_list(mb.keywords());
                sel.sync(
                    mb.messages(),
                    mb.modseq_highest(),
                    &keywords,
                    mode,
                    &claim,
                    out,
                );
                true
            })
            .unwrap_or(false);
        if !alive {
            out.extend_from_slice(b"* BYE The selected mailbox was deleted or renamed.\r\n");
            self.selected = None;
        }
        alive
    }

    /// A mailbox name from the client: mUTF-7 or UTF-8 decoded, INBOX normalized.
    fn mailbox_name(&self, raw: &[u8]) -> Result<String, &'static str> {
        let s = if self.utf8 {
            match std::str::from_utf8(raw) {
                Ok(s) => s.to_string(),
                Err(_) => return Err("Mailbox name is not valid UTF-8"),
            }
        } else {
            match utf7::decode(raw) {
                Ok(s) => s,
                Err(_) => return Err("Mailbox name is not valid mUTF-7"),
            }
        };
        if s.is_empty() || s.len() > store::MAILBOX_NAME_BYTES_MAX {
            return Err("Invalid mailbox name");
        }
        if s.chars().any(|c| c.is_control()) {
            return Err("Mailbox name contains control characters");
        }
        if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
            return Err("Invalid mailbox name: empty hierarchy level");
        }
        Ok(normalize_inbox(&s))
    }

    /// A mailbox name as the client reads it.
    pub fn encode_name(&self, name: &str, out: &mut Vec<u8>) {
        super::response::mailbox_name(out, name, self.utf8);
    }

    fn list_context(&self) -> list::ListContext<'_> {
        list::ListContext {
            store: &self.core.store,
            user: &self.user,
            utf8: self.utf8,
            rev2: self.rev2,
            selected: self.selected.as_ref().map(|s| s.name.as_str()),
        }
    }

    fn no_mailbox(tag: &str, out: &mut Vec<u8>) {
        put!(out, "{tag} NO [NONEXISTENT] Mailbox doesn't exist.\r\n");
    }

    fn store_failed(tag: &str, e: &StoreError, out: &mut Vec<u8>) {
        let (code, text) = match e {
            StoreError::NoSuchMailbox { .. } => ("NONEXISTENT", "Mailbox doesn't exist."),
            StoreError::AlreadyExists { .. } => ("ALREADYEXISTS", "Mailbox already exists."),
            StoreError::Exhausted { .. } => ("LIMIT", "Too many keywords or messages."),
            StoreError::TooLarge { .. } => ("LIMIT", "Too many or too long arguments."),
            StoreError::InvalidName { .. } => ("CANNOT", "Invalid name."),
            StoreError::Forbidden { .. } => ("CANNOT", "Operation not permitted."),
            e if e.is_disk_full() => ("OVERQUOTA", "Not enough disk space."),
            _ => (
                "SERVERBUG",
                "Internal error occurred. Refer to server log for more information.",
            ),
        };
        if matches!(code, "SERVERBUG") {
            eprintln!("ringmail: imap: store error: {e}");
        }
        put!(out, "{tag} NO [{code}] {text}\r\n");
    }

    fn not_selected(tag: &str, out: &mut Vec<u8>) {
        put!(out, "{tag} BAD No mailbox selected.\r\n");
    }

    // -----------------------------------------------------------------------------------
    // Handlers

    fn handle_noop(&mut self, tag: &str, out: &mut Vec<u8>, name: &str) {
        self.sync(out, true);
        put!(out, "{tag} OK {name} completed.\r\n");
    }

    fn handle_enable(&mut self, tag: &str, caps: &[String], out: &mut Vec<u8>) {
        let mut enabled = Vec::new();
        for c in caps {
            let c = c.to_ascii_uppercase();
            let on = match c.as_str() {
                "IMAP4REV2" => {
                    self.rev2 = true;
                    self.utf8 = true;
                    true
                }
                "UTF8=ACCEPT" => {
                    self.utf8 = true;
                    true
                }
                "CONDSTORE" => {
                    self.condstore = true;
                    true
                }
                "QRESYNC" => {
                    self.qresync = true;
                    self.condstore = true;
                    true
                }
                _ => false,
            };
            if on && !enabled.contains(&c) {
                enabled.push(c);
            }
        }
        if !enabled.is_empty() {
            put!(out, "* ENABLED {}\r\n", enabled.join(" "));
        }
        put!(out, "{tag} OK Enabled.\r\n");
    }

    async fn handle_select(
        &mut self,
        tag: &str,
        raw: &[u8],
        read_only: bool,
        condstore: bool,
        qresync: Option<command::QResync>,
        out: &mut Vec<u8>,
    ) {
        if self.selected.take().is_some() {
            // RFC 7162 §3.2.11: tell a QRESYNC client the old mailbox is closed.
            if self.qresync {
                out.extend_from_slice(b"* OK [CLOSED] Previous mailbox closed.\r\n");
            }
        }
        if qresync.is_some() && !self.qresync {
            put!(
                out,
                "{tag} BAD QRESYNC parameter requires ENABLE QRESYNC first.\r\n"
            );
            return;
        }
        if condstore {
            self.condstore = true;
        }
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        let store = &self.core.store;
        let keywords = Keywords::of(store, &self.user, &name);
        let snapshot = store.with_mailbox(&self.user, &name, |mb| {
            (
                mb.id(),
                mb.status(),
                mb.modseq_highest(),
                mb.messages()
                    .iter()
                    .map(|m| ViewEntry {
                        uid: m.uid,
                        flags: m.flags,
                        modseq: m.modseq,
                        expunged: false,
                    })
                    .collect::<Vec<_>>(),
            )
        });
        let Some((id, status, modseq_highest, view)) = snapshot else {
            Self::no_mailbox(tag, out);
            return;
        };
        let uid_max = view.last().map(|e| e.uid).unwrap_or(0);
        let first_recent_uid = if read_only {
            self.core.first_unclaimed(id)
        } else {
            self.core.claim_recent(id, uid_max)
        };
        let recent: Vec<u32> = view
            .iter()
            .filter(|e| e.uid >= first_recent_uid)
            .map(|e| e.uid)
            .collect();
        let signal = self.core.watch.subscribe(id);
        let mut sel = Selected {
            name,
            id,
            read_only,
            uid_validity: status.uid_validity,
            view,
            modseq_seen: modseq_highest,
            recent,
            keywords_shown: keywords.len(),
            ghosts: false,
            signal,
            saved: Vec::new(),
        };
        flags::announce(out, &keywords, read_only);
        put!(out, "* {} EXISTS\r\n", sel.exists());
        if !self.rev2 {
            put!(out, "* {} RECENT\r\n", sel.recent_count());
            if let Some(first_unseen) = sel.view.iter().position(|e| e.flags & sflags::SEEN == 0) {
                put!(out, "* OK [UNSEEN {}] First unseen.\r\n", first_unseen + 1);
            }
        }
        put!(
            out,
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n",
            status.uid_validity,
            status.uid_next
        );
        if self.condstore || self.qresync {
            put!(
                out,
                "* OK [HIGHESTMODSEQ {}] Highest\r\n",
                modseq_highest.max(1)
            );
        }
        if let Some(q) = qresync {
            if q.uid_validity == status.uid_validity {
                self.qresync_report(&mut sel, &q, &keywords, out);
            }
        }
        sel.modseq_seen = modseq_highest;
        self.selected = Some(sel);
        let code = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        put!(out, "{tag} OK [{code}] Select completed.\r\n");
    }

    /// QRESYNC SELECT (RFC 7162 §3.2.5): VANISHED (EARLIER) for UIDs the client knows that are
    /// gone, and FETCH for messages changed since its modseq.
    fn qresync_report(
        &self,
        sel: &mut Selected,
        q: &command::QResync,
        keywords: &Keywords,
        out: &mut Vec<u8>,
    ) {
        let uid_max = sel.uid_max();
        // Expunged UIDs are not remembered individually: every UID in the client's known
        // range that is absent now is reported (allowed: the client ignores unknown ones).
        let limit = uid_max.max(1);
        let gone = match &q.known_uids {
            Some(set) => sel.absent(set, limit, limit),
            None => sel.absent(&SequenceSet::from_ranges(&[(1, limit)]), limit, limit),
        };
        if !gone.is_empty() && q.modseq < sel.modseq_seen {
            put!(
                out,
                "* VANISHED (EARLIER) {}\r\n",
                SequenceSet::from_ranges(&gone)
            );
        }
        for (i, e) in sel.view.iter().enumerate() {
            if e.modseq > q.modseq {
                let recent = sel.is_recent(e.uid) && !self.rev2;
                put!(out, "* {} FETCH (UID {} FLAGS ", i + 1, e.uid);
                flags::write_flags(out, e.flags, recent, keywords);
                put!(out, " MODSEQ ({}))\r\n", e.modseq);
            }
        }
    }

    async fn handle_create(
        &mut self,
        tag: &str,
        raw: &[u8],
        special_use: &[String],
        out: &mut Vec<u8>,
    ) {
        // A trailing delimiter declares that children will follow (RFC 9051 §6.3.4): the
        // mailbox itself is created, as Dovecot does.
        let raw = raw.strip_suffix(b"/").unwrap_or(raw);
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        let mut bits = 0u8;
        for u in special_use {
            match list::special_use_bit(u) {
                Some(b) => bits |= b,
                None => {
                    put!(
                        out,
                        "{tag} NO [USEATTR] Unsupported special-use attribute.\r\n"
                    );
                    return;
                }
            }
        }
        if name == "INBOX" {
            put!(out, "{tag} NO [ALREADYEXISTS] Mailbox already exists.\r\n");
            return;
        }
        match self
            .core
            .store
            .create_mailbox(&self.user, &name, bits)
            .await
        {
            Ok(_) => put!(out, "{tag} OK Create completed.\r\n"),
            Err(e) => Self::store_failed(tag, &e, out),
        }
    }

    async fn handle_delete(&mut self, tag: &str, raw: &[u8], out: &mut Vec<u8>) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        if name == "INBOX" {
            put!(out, "{tag} NO INBOX can't be deleted.\r\n");
            return;
        }
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            // RFC 9051 §6.3.4 allows it; the session leaves the selected state.
            self.selected = None;
        }
        match self.core.store.delete_mailbox(&self.user, &name).await {
            Ok(()) => put!(out, "{tag} OK Delete completed.\r\n"),
            Err(e) => Self::store_failed(tag, &e, out),
        }
    }

    async fn handle_rename(&mut self, tag: &str, from: &[u8], to: &[u8], out: &mut Vec<u8>) {
        let (from, to) = match (self.mailbox_name(from), self.mailbox_name(to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(why), _) | (_, Err(why)) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        if to == "INBOX" {
            put!(out, "{tag} NO [ALREADYEXISTS] Mailbox already exists.\r\n");
            return;
        }
        match self.core.store.rename_mailbox(&self.user, &from, &to).await {
            Ok(()) => {
                if let Some(sel) = self.selected.as_mut() {
                    if sel.name == from && from != "INBOX" {
                        sel.name = to.clone();
                    } else if let Some(rest) = sel.name.strip_prefix(&format!("{from}/")) {
                        sel.name = format!("{to}/{rest}");
                    }
                }
                put!(out, "{tag} OK Rename completed.\r\n")
            }
            Err(e) => Self::store_failed(tag, &e, out),
        }
    }

    async fn handle_subscribe(&mut self, tag: &str, raw: &[u8], on: bool, out: &mut Vec<u8>) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        let what = if on { "Subscribe" } else { "Unsubscribe" };
        match self.core.store.set_subscribed(&self.user, &name, on).await {
            Ok(()) => put!(out, "{tag} OK {what} completed.\r\n"),
            Err(e) => Self::store_failed(tag, &e, out),
        }
    }

    fn handle_status(&mut self, tag: &str, raw: &[u8], items: &[StatusItem], out: &mut Vec<u8>) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        // The selected mailbox's untagged updates come first, as Dovecot does.
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            self.sync(out, false);
        }
        let Some(status) = self.core.store.mailbox_status(&self.user, &name) else {
            Self::no_mailbox(tag, out);
            return;
        };
        out.extend_from_slice(b"* STATUS ");
        self.encode_name(&name, out);
        out.push(b' ');
        list::write_status_items(out, &status, items, self.recent_of(&name));
        put!(out, "\r\n{tag} OK Status completed.\r\n");
    }

    /// RECENT for STATUS: what the selected view holds as recent, else the messages no
    /// session has been told about yet.
    fn recent_of(&self, name: &str) -> u32 {
        match &self.selected {
            Some(s) if s.name == name => s.recent_count(),
            _ => self
                .core
                .store
                .with_mailbox(&self.user, name, |mb| {
                    let first = self.core.first_unclaimed(mb.id());
                    let msgs = mb.messages();
                    (msgs.len() - msgs.partition_point(|m| m.uid < first)) as u32
                })
                .unwrap_or(0),
        }
    }

    async fn handle_append(
        &mut self,
        tag: &str,
        raw: &[u8],
        messages: Vec<command::AppendMessage>,
        out: &mut Vec<u8>,
    ) {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        let store = self.core.store.clone();
        let Some(status) = store.mailbox_status(&self.user, &name) else {
            put!(out, "{tag} NO [TRYCREATE] Mailbox doesn't exist.\r\n");
            return;
        };
        if messages.len() > APPEND_MESSAGES_MAX {
            put!(out, "{tag} NO [LIMIT] Too many messages in one APPEND.\r\n");
            return;
        }
        if messages.iter().any(|m| m.data.is_empty()) {
            put!(out, "{tag} NO Can't save a zero byte message.\r\n");
            return;
        }
        let mut uids = Vec::with_capacity(messages.len());
        let mut uid_validity = status.uid_validity;
        for m in &messages {
            let (bits, names) = flags::split(&m.flags);
            let kw = match store.keyword_bits(&self.user, &name, &names).await {
                Ok(k) => k,
                Err(e) => return Self::store_failed(tag, &e, out),
            };
            let (blob, ticket) = match store.stage_blob(&m.data).await {
                Ok(s) => s,
                Err(e) => return Self::store_failed(tag, &e, out),
            };
            let date = m.date.map(|d| d.unix).unwrap_or_else(crate::time::unix_now);
            let appended = store.append(&self.user, &name, blob, bits | kw, date);
            let (durable, appended) = futures_lite::future::zip(ticket.durable(), appended).await;
            if let Err(e) = durable {
                return Self::store_failed(tag, &e, out);
            }
            match appended {
                Ok((uid, _modseq, validity)) => {
                    uids.push(uid);
                    uid_validity = validity;
                }
                Err(e) => return Self::store_failed(tag, &e, out),
            }
        }
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            self.sync(out, true);
        }
        put!(
            out,
            "{tag} OK [APPENDUID {uid_validity} {}] Append completed.\r\n",
            SequenceSet::from_sorted(&uids)
        );
    }

    async fn handle_idle(&mut self, tag: &str, conn: &mut Conn) -> Flow {
        self.sync(&mut conn.out, true);
        conn.out.extend_from_slice(b"+ idling\r\n");
        if conn.flush().await.is_err() {
            return Flow::Logout;
        }
        let timeout_ms = self.timeout_ms();
        loop {
            let signal = self.selected.as_ref().map(|s| s.signal.clone());
            let woke = conn
                .input_or(timeout_ms, async {
                    match &signal {
                        Some(s) => s.changed().await,
                        None => futures_lite::future::pending::<()>().await,
                    }
                })
                .await;
            match woke {
                None => {
                    if self.core.is_shutting_down() {
                        conn.out
                            .extend_from_slice(b"* BYE Server shutting down.\r\n");
                    } else {
                        conn.out
                            .extend_from_slice(b"* BYE Disconnected for inactivity.\r\n");
                    }
                    return Flow::Logout;
                }
                Some(false) => {
                    self.sync(&mut conn.out, true);
                    if conn.flush().await.is_err() {
                        return Flow::Logout;
                    }
                }
                Some(true) => {
                    let Some(line) = conn.next_line(timeout_ms).await else {
                        return Flow::Logout;
                    };
                    if line.eq_ignore_ascii_case(b"DONE") {
                        self.sync(&mut conn.out, true);
                        put!(conn.out, "{tag} OK Idle completed.\r\n");
                    } else {
                        put!(conn.out, "{tag} BAD Expected DONE.\r\n");
                    }
                    return Flow::Continue;
                }
            }
        }
    }

    async fn handle_close(&mut self, tag: &str, out: &mut Vec<u8>, expunge: bool) {
        let Some(sel) = self.selected.take() else {
            return Self::not_selected(tag, out);
        };
        if expunge && !sel.read_only {
            let deleted: Vec<u32> = self
                .core
                .store
                .with_mailbox(&self.user, &sel.name, |mb| {
                    mb.messages()
                        .iter()
                        .filter(|m| m.flags & sflags::DELETED != 0)
                        .map(|m| m.uid)
                        .collect()
                })
                .unwrap_or_default();
            if !deleted.is_empty() {
                if let Err(e) = self
                    .core
                    .store
                    .expunge_uids(&self.user, &sel.name, &deleted)
                    .await
                {
                    return Self::store_failed(tag, &e, out);
                }
            }
        }
        let what = if expunge { "Close" } else { "Unselect" };
        put!(out, "{tag} OK {what} completed.\r\n");
    }

    async fn handle_expunge(&mut self, tag: &str, uids: Option<&SequenceSet>, out: &mut Vec<u8>) {
        let Some(sel) = self.selected.as_ref() else {
            return Self::not_selected(tag, out);
        };
        if sel.read_only {
            put!(out, "{tag} NO [READ-ONLY] Mailbox is read-only.\r\n");
            return;
        }
        let set = uids.map(|s| s.or_saved(&SequenceSet::from_sorted(&sel.saved)).clone());
        let star = sel.uid_max();
        let name = sel.name.clone();
        let deleted: Vec<u32> = self
            .core
            .store
            .with_mailbox(&self.user, &name, |mb| {
                mb.messages()
                    .iter()
                    .filter(|m| m.flags & sflags::DELETED != 0)
                    .filter(|m| set.as_ref().is_none_or(|s| uid_in_set(s, m.uid, star)))
                    .map(|m| m.uid)
                    .collect()
            })
            .unwrap_or_default();
        if !deleted.is_empty() {
            if let Err(e) = self
                .core
                .store
                .expunge_uids(&self.user, &name, &deleted)
                .await
            {
                return Self::store_failed(tag, &e, out);
            }
        }
        self.sync(out, true);
        let modseq = self.selected.as_ref().map(|s| s.modseq_seen).unwrap_or(0);
        if self.qresync && !deleted.is_empty() {
            put!(
                out,
                "{tag} OK [HIGHESTMODSEQ {modseq}] Expunge completed.\r\n"
            );
        } else {
            put!(out, "{tag} OK Expunge completed.\r\n");
        }
    }

    async fn handle_search(
        &mut self,
        tag: &str,
        uid: bool,
        charset: Option<&str>,
        criteria: &command::SearchKey,
        returns: Option<&[command::SearchReturn]>,
        out: &mut Vec<u8>,
    ) {
        if let Some(cs) = charset {
            let cs = cs.to_ascii_uppercase();
            if !matches!(cs.as_str(), "UTF-8" | "US-ASCII" | "UTF8") {
                put!(
                    out,
                    "{tag} NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.\r\n"
                );
                return;
            }
        }
        if self.selected.is_none() {
            return Self::not_selected(tag, out);
        }
        self.sync(out, uid);
        let Some(sel) = self.selected.as_mut() else {
            return Self::not_selected(tag, out);
        };
        let result = search::run(&self.core.store, &self.user, sel, criteria);
        search::respond(
            tag,
            uid,
            self.rev2,
            sel,
            &result,
            returns,
            self.condstore,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    async fn handle_fetch(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        items: &[command::FetchItem],
        changed_since: Option<u64>,
        vanished: bool,
        conn: &mut Conn,
    ) -> Flow {
        if self.selected.is_none() {
            Self::not_selected(tag, &mut conn.out);
            return Flow::Continue;
        }
        if vanished && (!uid || !self.qresync || changed_since.is_none()) {
            put!(
                conn.out,
                "{tag} BAD VANISHED requires UID FETCH, QRESYNC and CHANGEDSINCE.\r\n"
            );
            return Flow::Continue;
        }
        if changed_since.is_some() {
            self.condstore = true;
        }
        self.sync(&mut conn.out, uid);
        let cx = fetch::FetchContext {
            core: &self.core,
            user: &self.user,
            rev2: self.rev2,
            condstore: self.condstore,
        };
        let Some(sel) = self.selected.as_mut() else {
            Self::not_selected(tag, &mut conn.out);
            return Flow::Continue;
        };
        match fetch::run(&cx, sel, uid, set, items, changed_since, vanished, conn).await {
            Ok(()) => {
                put!(conn.out, "{tag} OK Fetch completed.\r\n");
                Flow::Continue
            }
            Err(fetch::FetchFailure::Io) => Flow::Logout,
            Err(fetch::FetchFailure::No(text)) => {
                put!(conn.out, "{tag} NO {text}\r\n");
                Flow::Continue
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn handle_store(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flag_list: &[Flag],
        out: &mut Vec<u8>,
    ) {
        let Some(sel) = self.selected.as_ref() else {
            return Self::not_selected(tag, out);
        };
        if sel.read_only {
            put!(out, "{tag} NO [READ-ONLY] Mailbox is read-only.\r\n");
            return;
        }
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let name = sel.name.clone();
        let targets = resolve(sel, uid, set);
        let (bits, names) = flags::split(flag_list);
        let store = self.core.store.clone();
        let kw = match store.keyword_bits(&self.user, &name, &names).await {
            Ok(k) => k,
            Err(e) => return Self::store_failed(tag, &e, out),
        };
        let mask = bits | kw;
        let changes: Vec<store::FlagChange> = targets
            .iter()
            .map(|&(_, uid)| store::FlagChange {
                uid,
                mode: match mode {
                    StoreMode::Replace => store::FlagMode::Replace,
                    StoreMode::Add => store::FlagMode::Add,
                    StoreMode::Remove => store::FlagMode::Remove,
                },
                mask,
                unchanged_since,
            })
            .collect();
        let outcomes = match store.update_flags(&self.user, &name, &changes).await {
            Ok(o) => o,
            Err(e) => return Self::store_failed(tag, &e, out),
        };
        // Our changes go into the view first, so the sync below reports only other
        // sessions' changes (no expunges during STORE); ours are written after it.
        if let Some(sel) = self.selected.as_mut() {
            for o in &outcomes {
                if let store::FlagOutcome::Changed { uid, flags, modseq }
                | store::FlagOutcome::Unchanged { uid, flags, modseq } = *o
                {
                    if let Some(seq) = sel.seq_of(uid) {
                        let e = &mut sel.view[seq as usize - 1];
                        if modseq > e.modseq {
                            e.flags = flags;
                            e.modseq = modseq;
                        }
                    }
                }
            }
        }
        self.sync(out, false);
        let keywords = Keywords::of(&store, &self.user, &name);
        let condstore = self.condstore;
        let rev2 = self.rev2;
        let Some(sel) = self.selected.as_mut() else {
            return Self::not_selected(tag, out);
        };
        let mut modified = Vec::new();
        for o in &outcomes {
            let (u, flags_now, modseq, report) = match *o {
                store::FlagOutcome::Changed { uid, flags, modseq } => (uid, flags, modseq, true),
                store::FlagOutcome::Unchanged { uid, flags, modseq } => {
                    (uid, flags, modseq, !silent)
                }
                store::FlagOutcome::Modified { uid } => {
                    modified.push(uid);
                    continue;
                }
                store::FlagOutcome::Missing { .. } => continue,
            };
            let Some(seq) = sel.seq_of(u) else { continue };
            // Another session's change of the same message may have been published after
            // ours (and reported by the sync above): report whichever is newer, never a
            // modseq lower than one this client has seen (imaptest checks it).
            let entry = &mut sel.view[seq as usize - 1];
            if modseq > entry.modseq {
                entry.flags = flags_now;
                entry.modseq = modseq;
            }
            let (flags_now, modseq) = (entry.flags, entry.modseq);
            if !report || (silent && !condstore) {
                continue;
            }
            put!(out, "* {seq} FETCH (");
            if uid {
                put!(out, "UID {u} ");
            }
            if !silent {
                out.extend_from_slice(b"FLAGS ");
                let recent = sel.is_recent(u) && !rev2;
                flags::write_flags(out, flags_now, recent, &keywords);
                if condstore {
                    out.push(b' ');
                }
            }
            if condstore {
                put!(out, "MODSEQ ({modseq})");
            }
            out.extend_from_slice(b")\r\n");
        }
        if modified.is_empty() {
            put!(out, "{tag} OK Store completed.\r\n");
        } else {
            let numbers: Vec<u32> = if uid {
                modified
            } else {
                modified.iter().filter_map(|u| sel.seq_of(*u)).collect()
            };
            put!(
                out,
                "{tag} OK [MODIFIED {}] Conditional store failed.\r\n",
                SequenceSet::from_sorted(&numbers)
            );
        }
    }

    async fn handle_copy(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        raw: &[u8],
        remove: bool,
        out: &mut Vec<u8>,
    ) {
        let Some(sel) = self.selected.as_ref() else {
            return Self::not_selected(tag, out);
        };
        if remove && sel.read_only {
            put!(out, "{tag} NO [READ-ONLY] Mailbox is read-only.\r\n");
            return;
        }
        let to = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                put!(out, "{tag} NO {why}.\r\n");
                return;
            }
        };
        let store = self.core.store.clone();
        if store.mailbox_status(&self.user, &to).is_none() {
            put!(out, "{tag} NO [TRYCREATE] Mailbox doesn't exist.\r\n");
            return;
        }
        let from = sel.name.clone();
        let targets: Vec<u32> = resolve(sel, uid, set)
            .into_iter()
            .filter(|(seq, _)| !sel.view[*seq as usize - 1].expunged)
            .map(|(_, u)| u)
            .collect();
        if targets.is_empty() {
            let what = if remove { "Move" } else { "Copy" };
            if !uid && set_has_out_of_range(set, sel.exists()) {
                put!(
                    out,
                    "{tag} BAD Error in IMAP command: Invalid messageset\r\n"
                );
            } else {
                put!(out, "{tag} OK No messages found. {what} completed.\r\n");
            }
            return;
        }
        let outcome = match store.copy(&self.user, &from, &to, &targets, remove).await {
            Ok(o) => o,
            Err(e) => return Self::store_failed(tag, &e, out),
        };
        let src: Vec<u32> = outcome.pairs.iter().map(|p| p.0).collect();
        let dst: Vec<u32> = outcome.pairs.iter().map(|p| p.1).collect();
        let code = format!(
            "COPYUID {} {} {}",
            outcome.uid_validity,
            SequenceSet::from_sorted(&src),
            SequenceSet::from_sorted(&dst)
        );
        if remove {
            put!(out, "* OK [{code}] Moved UIDs.\r\n");
            self.sync(out, true);
            put!(out, "{tag} OK Move completed.\r\n");
        } else {
            if to == from {
                self.sync(out, uid);
            }
            put!(out, "{tag} OK [{code}] Copy completed.\r\n");
        }
    }
}

/// Commands that switch CONDSTORE on implicitly (RFC 7162 §3.1).
fn enables_condstore(body: &CommandBody) -> bool {
    fn has_modseq(k: &command::SearchKey) -> bool {
        match k {
            command::SearchKey::ModSeq(_) => true,
            command::SearchKey::Not(k) => has_modseq(k),
            command::SearchKey::Or(a, b) => has_modseq(a) || has_modseq(b),
            command::SearchKey::And(v) => v.iter().any(has_modseq),
            _ => false,
        }
    }
    match body {
        CommandBody::Fetch {
            items,
            changed_since,
            ..
        } => {
            changed_since.is_some()
                || items
                    .iter()
                    .any(|i| matches!(i, command::FetchItem::ModSeq))
        }
        CommandBody::Store {
            unchanged_since, ..
        } => unchanged_since.is_some(),
        CommandBody::Search { criteria, .. } => has_modseq(criteria),
        _ => false,
    }
}

/// "INBOX" in any case (and as the first level of a path) is stored as "INBOX".
pub fn normalize_inbox(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".to_string();
    }
    match name.split_once('/') {
        Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX/{rest}"),
        _ => name.to_string(),
    }
}

/// Whether a UID is in a UID set (`*` = the highest UID in the mailbox; `n:*` always holds it).
pub fn uid_in_set(set: &SequenceSet, uid: u32, uid_max: u32) -> bool {
    set.contains(uid, uid_max.max(1))
}

fn set_has_out_of_range(set: &SequenceSet, exists: u32) -> bool {
    match set {
        SequenceSet::Saved => false,
        SequenceSet::Ranges(ranges) => ranges.iter().any(|r| {
            let (_, hi) = r.bounds(exists);
            hi > exists
        }),
    }
}

/// The (sequence number, UID) pairs a set names in the selected view, ascending. Sequence
/// numbers past EXISTS are ignored (Dovecot answers them as OK with nothing).
pub fn resolve(sel: &Selected, uid: bool, set: &SequenceSet) -> Vec<(u32, u32)> {
    let saved;
    let set = if set.is_saved() {
        saved = SequenceSet::from_sorted(&sel.saved);
        if uid {
            &saved
        } else {
            // `$` holds UIDs: map to sequence numbers.
            return sel
                .saved
                .iter()
                .filter_map(|u| sel.seq_of(*u).map(|s| (s, *u)))
                .collect();
        }
    } else {
        set
    };
    if uid {
        let uid_max = sel.uid_max();
        if uid_max == 0 {
            return Vec::new();
        }
        let mut v = Vec::new();
        for r in set.ranges_resolved(uid_max) {
            let lo = sel.view.partition_point(|e| e.uid < *r.start());
            for (i, e) in sel.view[lo..].iter().enumerate() {
                if e.uid > *r.end() {
                    break;
                }
                v.push((lo as u32 + i as u32 + 1, e.uid));
            }
        }
        // `ranges_resolved` gives disjoint ascending ranges: `v` is sorted, each UID once.
        v
    } else {
        let exists = sel.exists();
        if exists == 0 {
            return Vec::new();
        }
        set.iter_resolved(exists)
            .filter(|&n| n >= 1 && n <= exists)
            .map(|n| (n, sel.view[n as usize - 1].uid))
            .collect()
    }
}

/// Status items rendered for STATUS and LIST-STATUS, in the order asked.
pub fn status_value(
    status: &MailboxStatus,
    item: &StatusItem,
    recent: u32,
) -> Option<(&'static str, u64)> {
    Some(match item {
        StatusItem::Messages => ("MESSAGES", status.messages as u64),
        StatusItem::Recent => ("RECENT", u64::from(recent)),
        StatusItem::UidNext => ("UIDNEXT", u64::from(status.uid_next)),
        StatusItem::UidValidity => ("UIDVALIDITY", u64::from(status.uid_validity)),
        StatusItem::Unseen => ("UNSEEN", status.unseen as u64),
        StatusItem::Deleted => ("DELETED", status.deleted as u64),
        StatusItem::Size => ("SIZE", status.size),
        StatusItem::HighestModSeq => ("HIGHESTMODSEQ", status.highest_modseq.max(1)),
        StatusItem::AppendLimit => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_is_normalized_at_the_first_level_only() {
        assert_eq!(normalize_inbox("inbox"), "INBOX");
        assert_eq!(normalize_inbox("InBox/sub"), "INBOX/sub");
        assert_eq!(normalize_inbox("Archive/inbox"), "Archive/inbox");
        assert_eq!(normalize_inbox("INBOXES"), "INBOXES");
    }
}
