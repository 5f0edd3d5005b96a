//! FETCH (with BODY[section]<partial>, BINARY, CONDSTORE CHANGEDSINCE/VANISHED) and STORE.
//! Structure comes from the metadata stored at delivery; message bytes are read by range,
//! and a large range is sent in pieces as the client takes them, never read whole. A FETCH
//! is a job the core resumes after each piece of output is sent.

use std::collections::VecDeque;
use std::io::Write;

use postern_message::MessageMeta;
use postern_store::{
    BlobBytes, BlobId, FlagOp, Flags, FlagsUpdate, MessageEntry, SharedStore, StoreError, Uid,
};
use tracing::warn;

use crate::core::{FLUSH_AT, Fail, ImapCore, Res, no, ok, push};
use crate::format;
use crate::parse::{FetchAtt, Section, SectionText, SeqSet, StoreOp};

/// Ranges of a message at least this long are streamed from storage in pieces.
const STREAM_MIN: u64 = 64 << 10;
/// The size of each piece read from storage.
const CHUNK: u64 = 256 << 10;
/// Messages looked up together.
const BATCH: usize = 512;

/// Entries of the named messages: one range scan for many, point reads for a few.
pub async fn entries(
    store: &SharedStore,
    mailbox: u64,
    uids: &[Uid],
) -> Result<Vec<Option<MessageEntry>>, Fail> {
    if uids.len() <= 32 {
        let mut v = Vec::with_capacity(uids.len());
        for &u in uids {
            v.push(store.message_get(mailbox, u).await?);
        }
        return Ok(v);
    }
    let all = store.message_list(mailbox).await?;
    Ok(uids
        .iter()
        .map(|u| {
            all.binary_search_by_key(u, |e| e.uid)
                .ok()
                .map(|i| all[i].clone())
        })
        .collect())
}

/// Like [`entries`], with messages another session expunged that the store still keeps: the
/// client has not been told, so its sequence numbers still name them (RFC 2180 4.1.2).
async fn entries_or_kept(
    store: &SharedStore,
    mailbox: u64,
    uids: &[Uid],
) -> Result<Vec<Option<MessageEntry>>, Fail> {
    let mut found = entries(store, mailbox, uids).await?;
    let missing: Vec<Uid> = uids
        .iter()
        .zip(&found)
        .filter(|(_, e)| e.is_none())
        .map(|(u, _)| *u)
        .collect();
    if !missing.is_empty() {
        let kept = store.expunged_get(mailbox, &missing).await?;
        for (u, e) in uids.iter().zip(found.iter_mut()) {
            if e.is_none()
                && let Ok(i) = kept.binary_search_by_key(u, |k| k.uid)
            {
                *e = Some(kept[i].clone());
            }
        }
    }
    Ok(found)
}

/// Why a message could not be answered: its bytes are gone (expunged, and no longer kept),
/// or the command fails.
pub(crate) enum Miss {
    Gone,
    Fail(Fail),
}

impl From<StoreError> for Miss {
    fn from(e: StoreError) -> Miss {
        match e {
            StoreError::NotFound(_) => Miss::Gone,
            other => Miss::Fail(other.into()),
        }
    }
}

impl From<Fail> for Miss {
    fn from(f: Fail) -> Miss {
        Miss::Fail(f)
    }
}

/// The message's stored structure, or computed now for messages stored without it.
pub(crate) async fn meta(store: &SharedStore, e: &MessageEntry) -> Result<MessageMeta, Miss> {
    let info = store.blob_info(e.blob).await?;
    if let Some(m) = MessageMeta::decode(&info.meta) {
        return Ok(m);
    }
    let raw = store.blob_read(e.blob, 0, e.size).await?;
    Ok(postern_message::meta::compute(&raw))
}

/// Sections of the top-level header only: served from the message start, no structure needed.
fn header_only(a: &FetchAtt) -> bool {
    matches!(
        a,
        FetchAtt::Section { section, .. }
            if section.part.is_empty()
                && matches!(
                    section.text,
                    Some(SectionText::Header | SectionText::HeaderFields(_) | SectionText::HeaderFieldsNot(_))
                )
    ) || *a == FetchAtt::Rfc822Header
}

fn needs_meta(a: &FetchAtt) -> bool {
    match a {
        FetchAtt::Envelope | FetchAtt::Body | FetchAtt::BodyStructure => true,
        FetchAtt::Rfc822Text => true,
        FetchAtt::Rfc822Header => false,
        FetchAtt::Section { section, .. } => {
            !section.part.is_empty() || (section.text.is_some() && !header_only(a))
        }
        FetchAtt::Binary { part, .. } | FetchAtt::BinarySize(part) => !part.is_empty(),
        _ => false,
    }
}

fn sets_seen(a: &FetchAtt) -> bool {
    matches!(
        a,
        FetchAtt::Rfc822
            | FetchAtt::Rfc822Text
            | FetchAtt::Section { peek: false, .. }
            | FetchAtt::Binary { peek: false, .. }
    )
}

/// Output still to send for the message being answered.
enum Piece {
    Bytes(Vec<u8>),
    /// `len` bytes of a stored message from `offset`, read a chunk at a time.
    Blob {
        blob: BlobId,
        offset: u64,
        len: u64,
    },
}

/// A message looked up and ready to answer.
struct Ready {
    seq: u32,
    entry: MessageEntry,
    head: Option<BlobBytes>,
    meta: Option<MessageMeta>,
}

/// Where a section's bytes are.
pub(crate) enum Span {
    /// Raw bytes of the message.
    Range(u64, u64),
    /// Header fields kept (or dropped, with `not`) from a raw header.
    Fields(u64, u64, Vec<String>, bool),
    Empty,
}

pub struct FetchJob {
    pub tag: String,
    uid: bool,
    mailbox: u64,
    atts: Vec<FetchAtt>,
    want_meta: bool,
    wants_head: bool,
    seen_setting: bool,
    todo: VecDeque<(u32, MessageEntry)>,
    batch: VecDeque<Ready>,
    pieces: VecDeque<Piece>,
    newly_seen: Vec<Uid>,
    /// Messages left out because they are gone: the tagged OK says so (EXPUNGEISSUED).
    skipped_expunged: bool,
    /// Where each answer is written, kept between messages so it is allocated once.
    buf: Vec<u8>,
    /// PREVIEW reads at most this much of a message (`imap.max_preview_read`).
    preview_read: u64,
}

impl FetchJob {
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        s: &mut ImapCore,
        out: &mut Vec<u8>,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        mut atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> Result<FetchJob, Fail> {
        let preview_read = s.cfg.config.imap.max_preview_read.0;
        let sel = s.selected.as_ref().expect("selected");
        let store = s.store().clone();
        let mailbox = sel.mailbox.id;
        // Reading marks \Seen only for those who may (RFC 4314 4).
        let read_only = sel.read_only || !sel.rights.contains(postern_store::Rights::SEEN);
        let msgs = sel.resolve(set, uid);
        if vanished && let Some(cs) = changed_since {
            let ch = store.message_changes(mailbox, cs).await?;
            let gone: Vec<Uid> = ch
                .expunged
                .into_iter()
                .filter(|&u| set.contains(u, u32::MAX))
                .collect();
            if !gone.is_empty() {
                push(
                    out,
                    &format!("* VANISHED (EARLIER) {}\r\n", format::seq_set(&gone)),
                );
            }
        }
        if uid && !atts.contains(&FetchAtt::Uid) {
            atts.insert(0, FetchAtt::Uid);
        }
        if (changed_since.is_some() || (s.condstore && atts.contains(&FetchAtt::Flags)))
            && !atts.contains(&FetchAtt::ModSeq)
        {
            atts.push(FetchAtt::ModSeq);
        }
        let uids: Vec<Uid> = msgs.iter().map(|m| m.1).collect();
        let mut found = entries_or_kept(&store, mailbox, &uids).await?;
        if let Some(sel) = &s.selected {
            found.iter_mut().flatten().for_each(|e| sel.view(e));
        }
        let skipped_expunged = found.iter().any(Option::is_none);
        let todo = msgs
            .iter()
            .zip(found)
            .filter_map(|((seq, _), e)| e.map(|e| (*seq, e)))
            .filter(|(_, e)| changed_since.is_none_or(|cs| e.modseq > cs))
            .collect();
        Ok(FetchJob {
            tag: tag.to_string(),
            uid,
            mailbox,
            want_meta: atts.iter().any(needs_meta),
            wants_head: atts.iter().any(header_only),
            seen_setting: !read_only && atts.iter().any(sets_seen),
            atts,
            todo,
            batch: VecDeque::new(),
            pieces: VecDeque::new(),
            newly_seen: Vec::new(),
            skipped_expunged,
            buf: Vec::new(),
            preview_read,
        })
    }

    /// The job tells NOTIFY's new messages (RFC 5465 5.2): nothing it sends marks \Seen.
    pub(crate) fn telling(mut self) -> FetchJob {
        self.seen_setting = false;
        self
    }

    pub fn name(&self) -> &'static str {
        if self.uid { "UID FETCH" } else { "FETCH" }
    }

    /// Answers until the output should be sent (`false`) or everything is answered (`true`).
    pub async fn run(&mut self, s: &mut ImapCore) -> Result<bool, Fail> {
        let store = s.store().clone();
        loop {
            while let Some(p) = self.pieces.pop_front() {
                match p {
                    Piece::Bytes(b) => {
                        s.out.extend_from_slice(&b);
                        if b.capacity() <= 1 << 20 {
                            self.buf = b;
                        }
                    }
                    Piece::Blob { blob, offset, len } => {
                        let n = len.min(CHUNK);
                        // The literal is announced: without its bytes the connection cannot
                        // go on.
                        let data = store.blob_read(blob, offset, n).await.map_err(|e| {
                            warn!(error = %e, blob, "message bytes gone while being sent");
                            Fail::Bye("[SERVERBUG] Message data is missing".into())
                        })?;
                        if (data.len() as u64) < n {
                            // The stored message is shorter than its record says: the literal
                            // announced cannot be kept, so the connection cannot go on.
                            return Err(Fail::Bye("[SERVERBUG] Message data is missing".into()));
                        }
                        s.out.extend_from_slice(&data);
                        if len > n {
                            self.pieces.push_front(Piece::Blob {
                                blob,
                                offset: offset + n,
                                len: len - n,
                            });
                        }
                    }
                }
                if s.out.len() >= FLUSH_AT {
                    return Ok(false);
                }
            }
            if let Some(r) = self.batch.pop_front() {
                let s = &mut *s;
                let mut recent = false;
                if let Some(sel) = s.selected.as_mut() {
                    recent = sel.is_recent(r.entry.uid);
                    sel.announce(&mut s.out, &r.entry.flags);
                }
                // A message whose bytes went meanwhile is left out whole.
                let mark = self.pieces.len();
                match self.answer(&store, r, recent).await {
                    Ok(()) => {}
                    Err(Miss::Gone) => {
                        self.pieces.truncate(mark);
                        self.skipped_expunged = true;
                    }
                    Err(Miss::Fail(f)) => return Err(f),
                }
                continue;
            }
            if self.todo.is_empty() {
                return Ok(true);
            }
            self.look_up(&store).await?;
        }
    }

    /// Storage lookups in batches: one per 512 messages, not one per message.
    async fn look_up(&mut self, store: &SharedStore) -> Result<(), Fail> {
        let n = self.todo.len().min(BATCH);
        let chunk: Vec<(u32, MessageEntry)> = self.todo.drain(..n).collect();
        let blobs: Vec<u64> = chunk.iter().map(|(_, e)| e.blob).collect();
        // A message whose bytes are gone is left out (`None`).
        let mut heads: Vec<Option<Option<BlobBytes>>> = Vec::with_capacity(chunk.len());
        if self.wants_head {
            for h in store.blob_heads(&blobs, MessageMeta::header_len_of).await? {
                heads.push(match h {
                    Ok(h) => Some(Some(h)),
                    Err(StoreError::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                });
            }
        } else {
            heads.resize(chunk.len(), Some(None));
        }
        let mut metas: Vec<Option<Option<MessageMeta>>> = Vec::with_capacity(chunk.len());
        if self.want_meta {
            let infos = store.blob_infos(&blobs).await?;
            for ((_, e), info) in chunk.iter().zip(infos) {
                let decoded = info.ok().and_then(|i| MessageMeta::decode(&i.meta));
                metas.push(match decoded {
                    Some(m) => Some(Some(m)),
                    None => match meta(store, e).await {
                        Ok(m) => Some(Some(m)),
                        Err(Miss::Gone) => None,
                        Err(Miss::Fail(f)) => return Err(f),
                    },
                });
            }
        } else {
            metas.resize(chunk.len(), Some(None));
        }
        for (((seq, entry), head), meta) in chunk.into_iter().zip(heads).zip(metas) {
            let (Some(head), Some(meta)) = (head, meta) else {
                self.skipped_expunged = true;
                continue;
            };
            self.batch.push_back(Ready {
                seq,
                entry,
                head,
                meta,
            });
        }
        Ok(())
    }

    /// One message's FETCH response, as pieces of output.
    async fn answer(&mut self, store: &SharedStore, r: Ready, recent: bool) -> Result<(), Miss> {
        // Out of the job while it is used, so that literals can be queued meanwhile.
        let atts = std::mem::take(&mut self.atts);
        let res = self.answer_atts(store, &atts, r, recent).await;
        self.atts = atts;
        res
    }

    async fn answer_atts(
        &mut self,
        store: &SharedStore,
        atts: &[FetchAtt],
        r: Ready,
        recent: bool,
    ) -> Result<(), Miss> {
        let Ready {
            seq,
            entry: e,
            head,
            meta: m,
        } = r;
        let mut flags = e.flags.clone();
        let mut flags_changed = false;
        if self.seen_setting && !flags.seen() {
            flags.bits |= Flags::SEEN;
            flags_changed = true;
        }
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        let _ = write!(out, "* {seq} FETCH (");
        for (i, a) in atts.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            match a {
                FetchAtt::Uid => {
                    let _ = write!(out, "UID {}", e.uid);
                }
                FetchAtt::Flags => {
                    push(&mut out, "FLAGS ");
                    format::flags_recent(&mut out, &flags, recent);
                }
                FetchAtt::InternalDate => push(
                    &mut out,
                    &format!("INTERNALDATE {}", format::internal_date(e.internal_date)),
                ),
                FetchAtt::Rfc822Size => {
                    let _ = write!(out, "RFC822.SIZE {}", e.size);
                }
                FetchAtt::ModSeq => {
                    let _ = write!(out, "MODSEQ ({})", e.modseq);
                }
                // The bytes' id: copies of one message share it, as RFC 8474 5.1 asks.
                FetchAtt::EmailId => {
                    let _ = write!(out, "EMAILID ({})", format::email_id(e.blob));
                }
                FetchAtt::ThreadId => push(&mut out, "THREADID NIL"),
                // RFC 8514 4.2: every mailbox keeps save dates; an entry stored before they
                // were kept answers its internal date, as searches use it.
                FetchAtt::SaveDate => push(
                    &mut out,
                    &format!("SAVEDATE {}", format::internal_date(e.save_date())),
                ),
                FetchAtt::Envelope => push(
                    &mut out,
                    &format!("ENVELOPE {}", m.as_ref().unwrap().envelope),
                ),
                FetchAtt::Body => push(&mut out, &format!("BODY {}", m.as_ref().unwrap().body)),
                FetchAtt::BodyStructure => push(
                    &mut out,
                    &format!("BODYSTRUCTURE {}", m.as_ref().unwrap().bodystructure),
                ),
                FetchAtt::Rfc822 => {
                    push(&mut out, "RFC822 ");
                    self.range(store, &mut out, &e, 0, e.size).await?;
                }
                FetchAtt::Rfc822Header => {
                    push(&mut out, "RFC822.HEADER ");
                    format::literal(&mut out, head.as_deref().unwrap_or_default());
                }
                FetchAtt::Rfc822Text => {
                    push(&mut out, "RFC822.TEXT ");
                    let hl = m.as_ref().unwrap().header_len as u64;
                    self.range(store, &mut out, &e, hl, e.size).await?;
                }
                FetchAtt::Section {
                    section, partial, ..
                } => {
                    let _ = write!(out, "BODY[{}]", section_label(section));
                    let header = (section.part.is_empty()).then_some(()).and(head.as_ref());
                    match (header, &section.text) {
                        (Some(h), Some(SectionText::Header)) => {
                            let data = apply_partial(&mut out, h.to_vec(), *partial);
                            out.push(b' ');
                            format::literal(&mut out, &data);
                        }
                        (Some(h), Some(SectionText::HeaderFields(f))) => {
                            let data =
                                apply_partial(&mut out, header_fields(h, f, false), *partial);
                            out.push(b' ');
                            format::literal(&mut out, &data);
                        }
                        (Some(h), Some(SectionText::HeaderFieldsNot(f))) => {
                            let data = apply_partial(&mut out, header_fields(h, f, true), *partial);
                            out.push(b' ');
                            format::literal(&mut out, &data);
                        }
                        _ => match span(&e, m.as_ref(), section) {
                            Span::Range(a, b) => {
                                let (a, b) = partial_range(&mut out, a, b, *partial);
                                out.push(b' ');
                                self.range(store, &mut out, &e, a, b).await?;
                            }
                            Span::Fields(a, b, f, not) => {
                                let raw = store.blob_read(e.blob, a, b.saturating_sub(a)).await?;
                                let data =
                                    apply_partial(&mut out, header_fields(&raw, &f, not), *partial);
                                out.push(b' ');
                                format::literal(&mut out, &data);
                            }
                            Span::Empty => {
                                let data = apply_partial(&mut out, Vec::new(), *partial);
                                out.push(b' ');
                                format::literal(&mut out, &data);
                            }
                        },
                    }
                }
                FetchAtt::Binary { part, partial, .. } => {
                    let data = binary(store, &e, m.as_ref(), part).await?;
                    push(&mut out, &format!("BINARY[{}]", join(part)));
                    let data = apply_partial(&mut out, data, *partial);
                    out.push(b' ');
                    if data.contains(&0) {
                        out.push(b'~');
                    }
                    format::literal(&mut out, &data);
                }
                FetchAtt::BinarySize(part) => {
                    let data = binary(store, &e, m.as_ref(), part).await?;
                    push(
                        &mut out,
                        &format!("BINARY.SIZE[{}] {}", join(part), data.len()),
                    );
                }
                FetchAtt::Preview => {
                    let raw = store
                        .blob_read(e.blob, 0, e.size.min(self.preview_read))
                        .await?;
                    push(&mut out, "PREVIEW ");
                    let text = postern_message::preview::preview(&raw);
                    // 8-bit text only in a literal: a quoted string is 7-bit before UTF8=ACCEPT.
                    if text.is_ascii() {
                        format::string(&mut out, text.as_bytes());
                    } else {
                        format::literal(&mut out, text.as_bytes());
                    }
                }
            }
        }
        if flags_changed && !atts.contains(&FetchAtt::Flags) {
            if !atts.is_empty() {
                out.push(b' ');
            }
            push(&mut out, "FLAGS ");
            format::flags_recent(&mut out, &flags, recent);
        }
        push(&mut out, ")\r\n");
        self.pieces.push_back(Piece::Bytes(out));
        if flags_changed {
            self.newly_seen.push(e.uid);
        }
        Ok(())
    }

    /// Bytes `a..b` of the message as a literal: read now when short, else streamed later.
    /// The first piece is read now either way: a message whose bytes are gone is known to be
    /// before any of its answer is sent.
    async fn range(
        &mut self,
        store: &SharedStore,
        out: &mut Vec<u8>,
        e: &MessageEntry,
        a: u64,
        b: u64,
    ) -> Result<(), Miss> {
        let b = b.max(a).min(e.size.max(a));
        if b - a < STREAM_MIN {
            let data = store.blob_read(e.blob, a, b - a).await?;
            format::literal(out, &data);
            return Ok(());
        }
        let first = store.blob_read(e.blob, a, CHUNK.min(b - a)).await?;
        push(out, &format!("{{{}}}\r\n", b - a));
        out.extend_from_slice(&first);
        self.pieces.push_back(Piece::Bytes(std::mem::take(out)));
        let done = first.len() as u64;
        if done < b - a {
            self.pieces.push_back(Piece::Blob {
                blob: e.blob,
                offset: a + done,
                len: b - a - done,
            });
        }
        Ok(())
    }

    /// After the last message: what was read is marked \Seen.
    pub async fn finish(&mut self, s: &mut ImapCore) -> Res {
        let newly_seen = std::mem::take(&mut self.newly_seen);
        if !newly_seen.is_empty() {
            let r = s
                .store()
                .flags_update(FlagsUpdate {
                    mailbox: self.mailbox,
                    uids: newly_seen,
                    op: FlagOp::Add,
                    flags: Flags {
                        bits: Flags::SEEN,
                        keywords: vec![],
                    },
                    unchanged_since: None,
                    reader: s.reader(),
                })
                .await?;
            if let Some(sel) = s.selected.as_mut() {
                sel.own_changes.extend(r.updated.iter().map(|u| (u.0, u.2)));
                r.updated.iter().for_each(|u| sel.saw(u.0, u.1.seen()));
            }
        }
        if self.skipped_expunged {
            // As Dovecot says it (RFC 5530).
            return ok("[EXPUNGEISSUED] Some messages were already expunged");
        }
        ok("FETCH completed")
    }
}

/// `<start>` in the label, and the part of `data` it names.
fn apply_partial(out: &mut Vec<u8>, data: Vec<u8>, partial: Option<(u32, u32)>) -> Vec<u8> {
    match partial {
        Some((start, len)) => {
            push(out, &format!("<{start}>"));
            let a = (start as usize).min(data.len());
            let b = (a + len as usize).min(data.len());
            data[a..b].to_vec()
        }
        None => data,
    }
}

/// Like [`apply_partial`] for a range of the message: the range it names.
fn partial_range(out: &mut Vec<u8>, a: u64, b: u64, partial: Option<(u32, u32)>) -> (u64, u64) {
    let b = b.max(a);
    match partial {
        Some((start, len)) => {
            push(out, &format!("<{start}>"));
            let s = (a + start as u64).min(b);
            (s, (s + len as u64).min(b))
        }
        None => (a, b),
    }
}

/// Where a section is in the stored message.
pub(crate) fn span(e: &MessageEntry, m: Option<&MessageMeta>, s: &Section) -> Span {
    // Header and body of the message, or of the message/rfc822 part named.
    let (hstart, bstart, end) = if s.part.is_empty() {
        match m {
            Some(m) => (0, m.header_len as u64, e.size),
            None => return Span::Range(0, e.size),
        }
    } else {
        let m = m.expect("metadata loaded");
        let Some(p) = m.part(&s.part) else {
            return Span::Empty;
        };
        match &s.text {
            None => return Span::Range(p.body as u64, p.end as u64),
            Some(SectionText::Mime) => return Span::Range(p.header as u64, p.body as u64),
            Some(_) => match p.message {
                Some((h, b)) => (h as u64, b as u64, p.end as u64),
                None => return Span::Empty,
            },
        }
    };
    match &s.text {
        None => Span::Range(hstart, end),
        Some(SectionText::Header) => Span::Range(hstart, bstart),
        Some(SectionText::Text) => Span::Range(bstart, end),
        Some(SectionText::HeaderFields(f)) => Span::Fields(hstart, bstart, f.clone(), false),
        Some(SectionText::HeaderFieldsNot(f)) => Span::Fields(hstart, bstart, f.clone(), true),
        Some(SectionText::Mime) => Span::Empty,
    }
}

fn join(part: &[u32]) -> String {
    part.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

fn section_label(s: &Section) -> String {
    let mut l = join(&s.part);
    if let Some(t) = &s.text {
        if !l.is_empty() {
            l.push('.');
        }
        match t {
            SectionText::Header => l.push_str("HEADER"),
            SectionText::Text => l.push_str("TEXT"),
            SectionText::Mime => l.push_str("MIME"),
            SectionText::HeaderFields(f) => {
                l.push_str(&format!("HEADER.FIELDS ({})", quote_fields(f)))
            }
            SectionText::HeaderFieldsNot(f) => {
                l.push_str(&format!("HEADER.FIELDS.NOT ({})", quote_fields(f)))
            }
        }
    }
    l
}

fn quote_fields(f: &[String]) -> String {
    f.iter()
        .map(|x| {
            if x.bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
            {
                x.clone()
            } else {
                format!("\"{}\"", x.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keeps (or drops, with `not`) the header fields named in `names`; ends with the blank line.
pub fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len().min(1024));
    let mut keep = false;
    let mut rest = header;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, next) = rest.split_at(end);
        rest = next;
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !(line[0] == b' ' || line[0] == b'\t') {
            let colon = memchr::memchr(b':', line).unwrap_or(line.len());
            let name = line[..colon].trim_ascii();
            let named = names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name));
            keep = named != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// RFC 3516: the part's content with its transfer encoding removed.
async fn binary(
    store: &SharedStore,
    e: &MessageEntry,
    m: Option<&MessageMeta>,
    part: &[u32],
) -> Result<Vec<u8>, Fail> {
    if part.is_empty() {
        return Ok(store.blob_read(e.blob, 0, e.size).await?);
    }
    let m = m.expect("metadata loaded");
    let Some(p) = m.part(part) else {
        return no("[NONEXISTENT] No such part");
    };
    let raw = store
        .blob_read(
            e.blob,
            p.body as u64,
            (p.end as u64).saturating_sub(p.body as u64),
        )
        .await?;
    // A message or multipart part has no encoding of its own to undo: its bytes as they are.
    if p.multipart || p.message.is_some() {
        return Ok(raw);
    }
    match postern_message::decode_transfer(&p.encoding, &raw) {
        Some(data) => Ok(data),
        None => no("[UNKNOWN-CTE] Unknown Content-Transfer-Encoding"),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn store(
    s: &mut ImapCore,
    out: &mut Vec<u8>,
    uid: bool,
    set: &SeqSet,
    op: StoreOp,
    silent: bool,
    flags: &[String],
    unchanged_since: Option<u64>,
) -> Res {
    let sel = s.selected.as_ref().expect("selected");
    if sel.read_only {
        return no("[READ-ONLY] The mailbox is open read-only (EXAMINE)");
    }
    let f = format::parse_flags(flags).map_err(Fail::Bad)?;
    let mailbox = sel.mailbox.id;
    let msgs = sel.resolve(set, uid);
    let uids: Vec<Uid> = msgs.iter().map(|m| m.1).collect();
    let store = s.store().clone();
    let rights = sel.rights;
    use postern_store::Rights;
    if ![Rights::SEEN, Rights::WRITE, Rights::DELETE_MESSAGES]
        .iter()
        .any(|r| rights.contains(*r))
    {
        return crate::share::noperm(&sel.mailbox.name, Rights::WRITE);
    }
    let op = match op {
        StoreOp::Replace => FlagOp::Replace,
        StoreOp::Add => FlagOp::Add,
        StoreOp::Remove => FlagOp::Remove,
    };
    // Flags the user may not change are left as they are (RFC 4314 4): a replacement becomes
    // adding what is asked and taking away the rest of what they may change.
    let all = Rights::SEEN | Rights::WRITE | Rights::DELETE_MESSAGES;
    let steps = if rights.contains(all) || op != FlagOp::Replace {
        vec![(op, crate::mailbox::permitted(f, rights))]
    } else {
        let keep = crate::mailbox::permitted(f, rights);
        let mut drop = crate::mailbox::permitted(
            Flags {
                bits: Flags::SYSTEM.iter().fold(0, |b, s| b | s.0) & !keep.bits,
                keywords: Vec::new(),
            },
            rights,
        );
        drop.keywords.clear();
        vec![(FlagOp::Add, keep), (FlagOp::Remove, drop)]
    };
    let mut r = postern_store::FlagsResult::default();
    for (i, (op, flags)) in steps.into_iter().enumerate() {
        // The second step follows the first: what the first refused stays refused.
        let step_uids: Vec<Uid> = uids
            .iter()
            .copied()
            .filter(|u| !r.modified.contains(u))
            .collect();
        let step = store
            .flags_update(FlagsUpdate {
                mailbox,
                uids: step_uids,
                op,
                flags,
                unchanged_since: unchanged_since.filter(|_| i == 0),
                reader: s.reader(),
            })
            .await?;
        r.updated.extend(step.updated);
        r.modified.extend(step.modified);
    }
    if let Some(sel) = s.selected.as_mut() {
        sel.own_changes.extend(r.updated.iter().map(|u| (u.0, u.2)));
        r.updated.iter().for_each(|u| sel.saw(u.0, u.1.seen()));
    }
    let condstore = s.condstore || unchanged_since.is_some();
    if !silent || condstore {
        let current = entries(&store, mailbox, &uids).await?;
        for ((seq, u), e) in msgs.iter().zip(current) {
            let Some(mut e) = e else { continue };
            if let Some(sel) = &s.selected {
                sel.view(&mut e);
            }
            if r.modified.contains(u) {
                continue;
            }
            let changed = r.updated.iter().any(|x| x.0 == *u);
            if silent && !changed {
                continue;
            }
            let mut recent = false;
            if let Some(sel) = s.selected.as_mut() {
                recent = sel.is_recent(e.uid);
                if !silent {
                    sel.announce(out, &e.flags);
                }
            }
            push(out, &format!("* {seq} FETCH ("));
            let mut parts = Vec::new();
            if uid {
                parts.push(format!("UID {u}"));
            }
            if !silent {
                let mut fl = Vec::new();
                format::flags_recent(&mut fl, &e.flags, recent);
                parts.push(format!("FLAGS {}", String::from_utf8_lossy(&fl)));
            }
            if condstore {
                parts.push(format!("MODSEQ ({})", e.modseq));
            }
            push(out, &parts.join(" "));
            push(out, ")\r\n");
        }
    }
    if !r.modified.is_empty() {
        let nums: Vec<u32> = if uid {
            r.modified.clone()
        } else {
            msgs.iter()
                .filter(|m| r.modified.contains(&m.1))
                .map(|m| m.0)
                .collect()
        };
        return ok(&format!(
            "[MODIFIED {}] Some messages were changed by someone else",
            format::seq_set(&nums)
        ));
    }
    ok("STORE completed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_field_filter() {
        let h = b"From: a\r\nSubject: x\r\n y\r\nTo: b\r\n\r\n";
        assert_eq!(
            header_fields(h, &["subject".into()], false),
            b"Subject: x\r\n y\r\n\r\n"
        );
        assert_eq!(
            header_fields(h, &["Subject".into()], true),
            b"From: a\r\nTo: b\r\n\r\n"
        );
    }
}
