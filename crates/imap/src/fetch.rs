//! FETCH (with BODY[section]<partial>, BINARY, CONDSTORE CHANGEDSINCE/VANISHED) and STORE.
//! Structure comes from the metadata stored at delivery; message bytes are read by range.

use postern_message::MessageMeta;
use postern_net::Io;
use postern_store::{FlagOp, Flags, FlagsUpdate, MessageEntry, SharedStore, Uid};

use crate::format;
use crate::parse::{FetchAtt, Section, SectionText, SeqSet, StoreOp};
use crate::session::{Fail, Res, Session, no, push};

/// Output is handed to the socket in pieces of about this size.
const FLUSH_AT: usize = 256 << 10;

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

/// The message's stored structure, or computed now for messages stored without it.
pub async fn meta(store: &SharedStore, e: &MessageEntry) -> Result<MessageMeta, Fail> {
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

#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    s: &mut Session,
    io: &mut Io,
    out: &mut Vec<u8>,
    tag: &str,
    uid: bool,
    set: &SeqSet,
    mut atts: Vec<FetchAtt>,
    changed_since: Option<u64>,
    vanished: bool,
) -> Res {
    let sel = s.selected.as_ref().expect("selected");
    let store = s.sh.store.clone();
    let mailbox = sel.mailbox.id;
    let read_only = sel.read_only;
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
    let want_meta = atts.iter().any(needs_meta);
    let seen_setting = !read_only && atts.iter().any(sets_seen);
    let uids: Vec<Uid> = msgs.iter().map(|m| m.1).collect();
    let found = entries(&store, mailbox, &uids).await?;
    let mut newly_seen = Vec::new();
    let wants_head = atts.iter().any(header_only);
    let present: Vec<(u32, MessageEntry)> = msgs
        .iter()
        .zip(found)
        .filter_map(|((seq, _), e)| e.map(|e| (*seq, e)))
        .filter(|(_, e)| changed_since.is_none_or(|cs| e.modseq > cs))
        .collect();
    // Storage lookups in batches: one per 512 messages, not one per message.
    for chunk in present.chunks(512) {
        let blobs: Vec<u64> = chunk.iter().map(|(_, e)| e.blob).collect();
        let mut heads: Vec<Option<postern_store::Result<Vec<u8>>>> = if wants_head {
            store
                .blob_heads(&blobs, MessageMeta::header_len_of)
                .await?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            chunk.iter().map(|_| None).collect()
        };
        let mut metas: Vec<Option<MessageMeta>> = Vec::with_capacity(chunk.len());
        if want_meta {
            let infos = store.blob_infos(&blobs).await?;
            for ((_, e), info) in chunk.iter().zip(infos) {
                let decoded = info.ok().and_then(|i| MessageMeta::decode(&i.meta));
                metas.push(Some(match decoded {
                    Some(m) => m,
                    None => meta(&store, e).await?,
                }));
            }
        } else {
            metas.extend(chunk.iter().map(|_| None));
        }
        for (k, (seq, e)) in chunk.iter().enumerate() {
            let seq = *seq;
            let mut flags = e.flags.clone();
            let mut flags_changed = false;
            if seen_setting && !flags.seen() {
                flags.bits |= Flags::SEEN;
                flags_changed = true;
                newly_seen.push(e.uid);
            }
            let m = metas[k].take();
            // The header, read once for every header-only item of this message.
            let head = heads[k].take().transpose()?;
            push(out, &format!("* {seq} FETCH ("));
            let mut first = true;
            let mut sep = |out: &mut Vec<u8>| {
                if !first {
                    out.push(b' ');
                }
                first = false;
            };
            for a in &atts {
                sep(out);
                match a {
                    FetchAtt::Uid => push(out, &format!("UID {}", e.uid)),
                    FetchAtt::Flags => {
                        push(out, "FLAGS ");
                        format::flags(out, &flags);
                    }
                    FetchAtt::InternalDate => push(
                        out,
                        &format!("INTERNALDATE {}", format::internal_date(e.internal_date)),
                    ),
                    FetchAtt::Rfc822Size => push(out, &format!("RFC822.SIZE {}", e.size)),
                    FetchAtt::ModSeq => push(out, &format!("MODSEQ ({})", e.modseq)),
                    FetchAtt::Envelope => {
                        push(out, &format!("ENVELOPE {}", m.as_ref().unwrap().envelope))
                    }
                    FetchAtt::Body => push(out, &format!("BODY {}", m.as_ref().unwrap().body)),
                    FetchAtt::BodyStructure => push(
                        out,
                        &format!("BODYSTRUCTURE {}", m.as_ref().unwrap().bodystructure),
                    ),
                    FetchAtt::Rfc822 => {
                        push(out, "RFC822 ");
                        let data = store.blob_read(e.blob, 0, e.size).await?;
                        format::literal(out, &data);
                    }
                    FetchAtt::Rfc822Header => {
                        push(out, "RFC822.HEADER ");
                        format::literal(out, head.as_deref().unwrap_or_default());
                    }
                    FetchAtt::Rfc822Text => {
                        push(out, "RFC822.TEXT ");
                        let hl = m.as_ref().unwrap().header_len as u64;
                        let data = store
                            .blob_read(e.blob, hl, e.size.saturating_sub(hl))
                            .await?;
                        format::literal(out, &data);
                    }
                    FetchAtt::Section {
                        section, partial, ..
                    } => {
                        let data = match (&head, &section.text) {
                            (Some(h), Some(SectionText::Header)) if section.part.is_empty() => {
                                h.clone()
                            }
                            (Some(h), Some(SectionText::HeaderFields(f)))
                                if section.part.is_empty() =>
                            {
                                header_fields(h, f, false)
                            }
                            (Some(h), Some(SectionText::HeaderFieldsNot(f)))
                                if section.part.is_empty() =>
                            {
                                header_fields(h, f, true)
                            }
                            _ => section_bytes(&store, e, m.as_ref(), section).await?,
                        };
                        push(out, &format!("BODY[{}]", section_label(section)));
                        let data = apply_partial(out, data, *partial);
                        out.push(b' ');
                        format::literal(out, &data);
                    }
                    FetchAtt::Binary { part, partial, .. } => {
                        let data = binary(&store, e, m.as_ref(), part).await?;
                        push(out, &format!("BINARY[{}]", join(part)));
                        let data = apply_partial(out, data, *partial);
                        out.push(b' ');
                        if data.contains(&0) {
                            out.push(b'~');
                        }
                        format::literal(out, &data);
                    }
                    FetchAtt::BinarySize(part) => {
                        let data = binary(&store, e, m.as_ref(), part).await?;
                        push(out, &format!("BINARY.SIZE[{}] {}", join(part), data.len()));
                    }
                }
            }
            if flags_changed && !atts.contains(&FetchAtt::Flags) {
                sep(out);
                push(out, "FLAGS ");
                format::flags(out, &flags);
            }
            push(out, ")\r\n");
            if out.len() >= FLUSH_AT {
                io.write(out);
                out.clear();
                io.flush()
                    .await
                    .map_err(|e| Fail::Bye(format!("connection lost: {e}")))?;
            }
        }
    }
    if !newly_seen.is_empty() {
        let r = store
            .flags_update(FlagsUpdate {
                mailbox,
                uids: newly_seen,
                op: FlagOp::Add,
                flags: Flags {
                    bits: Flags::SEEN,
                    keywords: vec![],
                },
                unchanged_since: None,
            })
            .await?;
        if let Some(sel) = s.selected.as_mut() {
            sel.own_changes.extend(r.updated.iter().map(|u| (u.0, u.2)));
        }
    }
    s.ok(out, tag, "FETCH completed")
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

async fn range(
    store: &SharedStore,
    e: &MessageEntry,
    start: u32,
    end: u32,
) -> Result<Vec<u8>, Fail> {
    let (a, b) = (start as u64, (end as u64).max(start as u64));
    Ok(store.blob_read(e.blob, a, b - a).await?)
}

/// Keeps (or drops, with `not`) the header fields named in `names`; ends with the blank line.
pub fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !(line[0] == b' ' || line[0] == b'\t') {
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            let name = String::from_utf8_lossy(name);
            let named = names.iter().any(|n| n.eq_ignore_ascii_case(name.trim()));
            keep = named != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

async fn section_bytes(
    store: &SharedStore,
    e: &MessageEntry,
    m: Option<&MessageMeta>,
    s: &Section,
) -> Result<Vec<u8>, Fail> {
    // Header and body of the message, or of the message/rfc822 part named.
    let (hstart, bstart, end) = if s.part.is_empty() {
        match m {
            Some(m) => (0, m.header_len, e.size as u32),
            None => return Ok(store.blob_read(e.blob, 0, e.size).await?),
        }
    } else {
        let m = m.expect("metadata loaded");
        let Some(p) = m.part(&s.part) else {
            return Ok(Vec::new());
        };
        match &s.text {
            None => return range(store, e, p.body, p.end).await,
            Some(SectionText::Mime) => return range(store, e, p.header, p.body).await,
            Some(_) => match p.message {
                Some((h, b)) => (h, b, p.end),
                None => return Ok(Vec::new()),
            },
        }
    };
    Ok(match &s.text {
        None => range(store, e, hstart, end).await?,
        Some(SectionText::Header) => range(store, e, hstart, bstart).await?,
        Some(SectionText::Text) => range(store, e, bstart, end).await?,
        Some(SectionText::HeaderFields(f)) => {
            header_fields(&range(store, e, hstart, bstart).await?, f, false)
        }
        Some(SectionText::HeaderFieldsNot(f)) => {
            header_fields(&range(store, e, hstart, bstart).await?, f, true)
        }
        Some(SectionText::Mime) => Vec::new(),
    })
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
    if p.multipart || p.message.is_some() {
        return no("[CANNOT] BINARY needs a leaf part");
    }
    let raw = range(store, e, p.body, p.end).await?;
    match p.encoding.as_str() {
        "7bit" | "8bit" | "binary" => Ok(raw),
        "base64" => Ok(mail_parser::decoders::base64::base64_decode(&raw).unwrap_or_default()),
        "quoted-printable" => Ok(
            mail_parser::decoders::quoted_printable::quoted_printable_decode(&raw)
                .unwrap_or_default(),
        ),
        _ => no("[UNKNOWN-CTE] Unknown Content-Transfer-Encoding"),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn store(
    s: &mut Session,
    out: &mut Vec<u8>,
    tag: &str,
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
    let store = s.sh.store.clone();
    let r = store
        .flags_update(FlagsUpdate {
            mailbox,
            uids: uids.clone(),
            op: match op {
                StoreOp::Replace => FlagOp::Replace,
                StoreOp::Add => FlagOp::Add,
                StoreOp::Remove => FlagOp::Remove,
            },
            flags: f,
            unchanged_since,
        })
        .await?;
    if let Some(sel) = s.selected.as_mut() {
        sel.own_changes.extend(r.updated.iter().map(|u| (u.0, u.2)));
    }
    let condstore = s.condstore || unchanged_since.is_some();
    if !silent || condstore {
        let current = entries(&store, mailbox, &uids).await?;
        for ((seq, u), e) in msgs.iter().zip(current) {
            let Some(e) = e else { continue };
            if r.modified.contains(u) {
                continue;
            }
            let changed = r.updated.iter().any(|x| x.0 == *u);
            if silent && !changed {
                continue;
            }
            push(out, &format!("* {seq} FETCH ("));
            let mut parts = Vec::new();
            if uid {
                parts.push(format!("UID {u}"));
            }
            if !silent {
                let mut fl = Vec::new();
                format::flags(&mut fl, &e.flags);
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
        return s.ok(
            out,
            tag,
            &format!(
                "[MODIFIED {}] Some messages were changed by someone else",
                format::seq_set(&nums)
            ),
        );
    }
    s.ok(out, tag, "STORE completed")
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
