//! SEARCH (RFC 9051 6.4.4) with ESEARCH results (RFC 4731) and MODSEQ (RFC 7162). Flags,
//! sizes and dates come from the message records; header and text keys read the message.

use postern_message::MessageMeta;
use postern_message::text::SearchText as Content;
use postern_store::{MessageEntry, Uid};

use crate::core::{Fail, ImapCore, Res, ok, push};
use crate::format;
use crate::parse::{SearchKey, SearchRet};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Nothing,
    Meta,
    Header,
    Full,
}

fn need(k: &SearchKey) -> Need {
    match k {
        SearchKey::Header(..) => Need::Header,
        SearchKey::Body(_) | SearchKey::Text(_) => Need::Full,
        SearchKey::SentBefore(_) | SearchKey::SentOn(_) | SearchKey::SentSince(_) => Need::Meta,
        SearchKey::Not(k) => need(k),
        SearchKey::Or(a, b) => need(a).max(need(b)),
        SearchKey::And(v) => v.iter().map(need).max().unwrap_or(Need::Nothing),
        _ => Need::Nothing,
    }
}

pub(crate) fn uses_modseq(k: &SearchKey) -> bool {
    match k {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::And(v) => v.iter().any(uses_modseq),
        _ => false,
    }
}

struct Ctx<'a> {
    seq: u32,
    /// Recent to this session.
    recent: bool,
    e: &'a MessageEntry,
    max_seq: u32,
    max_uid: Uid,
    c: &'a Content,
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

fn eval(k: &SearchKey, x: &Ctx) -> bool {
    let e = x.e;
    match k {
        SearchKey::All => true,
        SearchKey::Recent => x.recent,
        SearchKey::New => x.recent && !e.flags.seen(),
        SearchKey::Old => !x.recent,
        SearchKey::SeqSet(s) => s.contains(x.seq, x.max_seq),
        SearchKey::Uid(s) => s.contains(e.uid, x.max_uid),
        SearchKey::Flag(bit, on) => e.flags.has(*bit) == *on,
        SearchKey::Keyword(k, on) => e.flags.has_keyword(k) == *on,
        SearchKey::Larger(n) => e.size > *n,
        SearchKey::Smaller(n) => e.size < *n,
        SearchKey::Before(d) => e.internal_date < *d,
        SearchKey::On(d) => e.internal_date >= *d && e.internal_date < d + 86400,
        SearchKey::Since(d) => e.internal_date >= *d,
        SearchKey::SentBefore(d) => x.c.sent.is_some_and(|s| day(s) < *d),
        SearchKey::SentOn(d) => x.c.sent.is_some_and(|s| day(s) == *d),
        SearchKey::SentSince(d) => x.c.sent.is_some_and(|s| day(s) >= *d),
        SearchKey::Header(name, v) => {
            let name = lower(name);
            let v = lower(v);
            x.c.headers
                .iter()
                .any(|(n, val)| *n == name && val.contains(&v))
        }
        SearchKey::Body(v) => x.c.body.contains(&lower(v)),
        SearchKey::Text(v) => {
            let v = lower(v);
            x.c.raw_header.contains(&v)
                || x.c.headers.iter().any(|(_, val)| val.contains(&v))
                || x.c.body.contains(&v)
        }
        SearchKey::ModSeq(n) => e.modseq >= *n,
        SearchKey::Not(k) => !eval(k, x),
        SearchKey::Or(a, b) => eval(a, x) || eval(b, x),
        SearchKey::And(v) => v.iter().all(|k| eval(k, x)),
    }
}

fn day(t: i64) -> i64 {
    t.div_euclid(86400) * 86400
}

/// A message the search keys match: sequence number, UID, modseq, the record itself.
pub(crate) type Hit = (u32, Uid, u64, MessageEntry);

/// The selected mailbox's messages that `key` matches, in sequence order.
pub(crate) async fn matching(s: &ImapCore, key: &SearchKey) -> Result<Vec<Hit>, Fail> {
    let sel = s.selected.as_ref().expect("selected");
    let store = s.store().clone();
    let all = store.message_list(sel.mailbox.id).await?;
    let need = need(key);
    let max_seq = sel.uids.len() as u32;
    let max_uid = sel.uids.last().copied().unwrap_or(0);
    let mut hits: Vec<Hit> = Vec::new();
    let empty = Content::default();
    let present: Vec<(u32, &MessageEntry)> = sel
        .uids
        .iter()
        .enumerate()
        .filter_map(|(i, &u)| {
            let j = all.binary_search_by_key(&u, |e| e.uid).ok()?;
            Some((i as u32 + 1, &all[j]))
        })
        .collect();
    // Storage lookups in batches: one per 512 messages for dates and headers.
    for chunk in present.chunks(512) {
        let blobs: Vec<u64> = chunk.iter().map(|(_, e)| e.blob).collect();
        let contents: Vec<Option<Content>> = match need {
            Need::Nothing => chunk.iter().map(|_| None).collect(),
            Need::Meta => {
                let infos = store.blob_infos(&blobs).await?;
                let mut v = Vec::with_capacity(chunk.len());
                for ((_, e), info) in chunk.iter().zip(infos) {
                    let sent = match info.ok().and_then(|i| MessageMeta::decode(&i.meta)) {
                        Some(m) => m.sent_local,
                        None => {
                            postern_message::meta::compute(
                                &store.blob_read(e.blob, 0, e.size).await?,
                            )
                            .sent_local
                        }
                    };
                    v.push(Some(Content {
                        sent,
                        ..Default::default()
                    }));
                }
                v
            }
            Need::Header => store
                .blob_heads(&blobs, MessageMeta::header_len_of)
                .await?
                .into_iter()
                .map(|h| h.map(|raw| Some(Content::load(&raw, false))))
                .collect::<Result<_, _>>()?,
            Need::Full => {
                let mut v = Vec::with_capacity(chunk.len());
                for (_, e) in chunk {
                    v.push(Some(Content::load(
                        &store.blob_read(e.blob, 0, e.size).await?,
                        true,
                    )));
                }
                v
            }
        };
        for ((seq, e), content) in chunk.iter().zip(&contents) {
            let ctx = Ctx {
                seq: *seq,
                recent: sel.is_recent(e.uid),
                e,
                max_seq,
                max_uid,
                c: content.as_ref().unwrap_or(&empty),
            };
            if eval(key, &ctx) {
                hits.push((*seq, e.uid, e.modseq, (*e).clone()));
            }
        }
    }
    Ok(hits)
}

pub async fn search(
    s: &mut ImapCore,
    out: &mut Vec<u8>,
    tag: &str,
    uid: bool,
    ret: Option<Vec<SearchRet>>,
    key: SearchKey,
) -> Res {
    let hits = matching(s, &key).await?;
    let nums: Vec<u32> = hits.iter().map(|h| if uid { h.1 } else { h.0 }).collect();
    let mut modseq = uses_modseq(&key).then(|| hits.iter().map(|h| h.2).max().unwrap_or(0));
    if ret.is_some() || s.rev2 {
        let ret = ret
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| vec![SearchRet::All]);
        // RFC 7162 3.1.5: the highest modseq of the messages returned; MIN or MAX alone
        // return one message.
        let only = |want: SearchRet| ret.iter().all(|r| *r == want);
        if modseq.is_some() && !hits.is_empty() {
            if only(SearchRet::Min) {
                modseq = hits
                    .iter()
                    .min_by_key(|h| if uid { h.1 } else { h.0 })
                    .map(|h| h.2);
            } else if only(SearchRet::Max) {
                modseq = hits
                    .iter()
                    .max_by_key(|h| if uid { h.1 } else { h.0 })
                    .map(|h| h.2);
            } else if ret
                .iter()
                .all(|r| matches!(r, SearchRet::Min | SearchRet::Max))
            {
                let lo = hits
                    .iter()
                    .min_by_key(|h| if uid { h.1 } else { h.0 })
                    .map(|h| h.2);
                let hi = hits
                    .iter()
                    .max_by_key(|h| if uid { h.1 } else { h.0 })
                    .map(|h| h.2);
                modseq = lo.max(hi);
            }
        }
        push(out, &format!("* ESEARCH (TAG \"{tag}\")"));
        if uid {
            push(out, " UID");
        }
        for r in &ret {
            match r {
                SearchRet::Min if !nums.is_empty() => {
                    push(out, &format!(" MIN {}", nums.iter().min().unwrap()))
                }
                SearchRet::Max if !nums.is_empty() => {
                    push(out, &format!(" MAX {}", nums.iter().max().unwrap()))
                }
                SearchRet::Count => push(out, &format!(" COUNT {}", nums.len())),
                SearchRet::All if !nums.is_empty() => {
                    push(out, &format!(" ALL {}", format::seq_set(&nums)))
                }
                _ => {}
            }
        }
        if let Some(m) = modseq
            && !nums.is_empty()
        {
            push(out, &format!(" MODSEQ {m}"));
        }
        push(out, "\r\n");
    } else {
        push(out, "* SEARCH");
        for n in &nums {
            push(out, &format!(" {n}"));
        }
        if let Some(m) = modseq
            && !nums.is_empty()
        {
            push(out, &format!(" (MODSEQ {m})"));
        }
        push(out, "\r\n");
    }
    ok("SEARCH completed")
}
