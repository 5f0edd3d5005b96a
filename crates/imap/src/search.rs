//! SEARCH (RFC 9051 6.4.4) with ESEARCH results (RFC 4731), MODSEQ (RFC 7162), OLDER and
//! YOUNGER (WITHIN, RFC 5032) and the save-date keys (SAVEDATE, RFC 8514). Flags, sizes and dates come from the message records; header and
//! text keys read the message.

use postern_message::MessageMeta;
use postern_message::text::SearchText as Content;
use postern_store::{MessageEntry, Uid};

use crate::core::{Fail, ImapCore, Res, Selected, ok, push};
use crate::format;
use crate::parse::{Command, SearchKey, SearchRet, SeqNum, SeqSet};

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
    /// Seconds since the epoch when the search began: OLDER and YOUNGER count back from it.
    now: i64,
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
        SearchKey::Header(name, v) => x.c.header_has(name, v),
        SearchKey::Body(v) => x.c.body_has(v),
        SearchKey::Text(v) => x.c.text_has(v),
        SearchKey::ModSeq(n) => e.modseq >= *n,
        SearchKey::EmailId(id) => *id == crate::format::email_id(e.blob),
        // No threads have ids: no message is in one (RFC 8474 5.2 allows THREADID NIL).
        SearchKey::ThreadId(_) => false,
        // Complements of each other, so NOT YOUNGER n is OLDER n.
        SearchKey::Older(n) => e.internal_date < x.now - i64::from(*n),
        SearchKey::Younger(n) => e.internal_date >= x.now - i64::from(*n),
        // RFC 8514 4.3: by the save date, the internal date where none was kept.
        SearchKey::SavedBefore(d) => e.save_date() < *d,
        SearchKey::SavedOn(d) => e.save_date() >= *d && e.save_date() < d + 86400,
        SearchKey::SavedSince(d) => e.save_date() >= *d,
        SearchKey::SaveDateSupported => true,
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
    matching_in(s, key, None).await
}

/// Like [`matching`], looking only at the messages with these UIDs (ascending): the ones that
/// changed, for a search that tells of changes (RFC 5267 4).
pub(crate) async fn matching_in(
    s: &ImapCore,
    key: &SearchKey,
    only: Option<&[Uid]>,
) -> Result<Vec<Hit>, Fail> {
    let sel = s.selected.as_ref().expect("selected");
    let store = s.store().clone();
    let mut all = match only {
        // A few messages are read one by one, not with the whole mailbox.
        Some(o) => crate::fetch::entries(&store, sel.mailbox.id, o)
            .await?
            .into_iter()
            .flatten()
            .collect(),
        None => store.message_list(sel.mailbox.id).await?,
    };
    sel.view_all(&mut all);
    let need = need(key);
    let max_seq = sel.uids.len() as u32;
    let max_uid = sel.uids.last().copied().unwrap_or(0);
    let mut hits: Vec<Hit> = Vec::new();
    let empty = Content::default();
    let now = postern_store::now();
    let present: Vec<(u32, &MessageEntry)> = sel
        .uids
        .iter()
        .enumerate()
        .filter(|(_, u)| only.is_none_or(|o| o.binary_search(u).is_ok()))
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
                now,
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
    let ret_opts = ret.clone().unwrap_or_default();
    let update = ret_opts.contains(&SearchRet::Update);
    if update {
        crate::context::check_tag(s, tag)?;
    }
    let hits = matching(s, &key).await?;
    let found: Vec<(u32, u64)> = hits
        .iter()
        .map(|h| (if uid { h.1 } else { h.0 }, h.2))
        .collect();
    let with_modseq = uses_modseq(&key);
    if ret_opts.contains(&SearchRet::Save) {
        // RFC 5182 2.4: MIN and MAX alone save only the messages they name; PARTIAL saves
        // the messages it returns.
        let ends = ret_opts
            .iter()
            .all(|r| matches!(r, SearchRet::Min | SearchRet::Max | SearchRet::Save))
            && ret_opts.len() > 1;
        let mut saved: Vec<Uid> = if ends {
            let mut v = Vec::new();
            if ret_opts.contains(&SearchRet::Min) {
                v.extend(hits.first().map(|h| h.1));
            }
            if ret_opts.contains(&SearchRet::Max) {
                v.extend(hits.last().map(|h| h.1));
            }
            v
        } else if let Some(w) = partial_of(&ret_opts).map(|(a, b)| window(hits.len(), a, b)) {
            hits[w].iter().map(|h| h.1).collect()
        } else {
            hits.iter().map(|h| h.1).collect()
        };
        saved.sort_unstable();
        saved.dedup();
        if let Some(sel) = s.selected.as_mut() {
            sel.saved = saved;
        }
    }
    if ret_opts == [SearchRet::Save] {
        // SAVE alone answers nothing but OK.
        return ok("SEARCH completed, result saved");
    }
    if ret.is_some() || s.rev2 {
        esearch(out, tag, uid, &ret_opts, &found, with_modseq);
    } else {
        push(out, "* SEARCH");
        for (n, _) in &found {
            push(out, &format!(" {n}"));
        }
        if with_modseq && let Some(m) = found.iter().map(|f| f.1).max() {
            push(out, &format!(" (MODSEQ {m})"));
        }
        push(out, "\r\n");
    }
    if update {
        let uids = hits.iter().map(|h| h.1).collect();
        crate::context::register(s, out, tag, uid, key, crate::context::Kind::Search(uids));
    }
    ok("SEARCH completed")
}

/// The range of RETURN (PARTIAL), if asked for.
pub(crate) fn partial_of(ret: &[SearchRet]) -> Option<(i64, i64)> {
    ret.iter().find_map(|r| match r {
        SearchRet::Partial(a, b) => Some((*a, *b)),
        _ => None,
    })
}

/// The indexes of `n` results that PARTIAL `a:b` names (RFC 9394 3.1: -1 is the last).
pub(crate) fn window(n: usize, a: i64, b: i64) -> std::ops::Range<usize> {
    let n = n as i64;
    let (lo, hi) = if a > 0 {
        (a - 1, b.min(n))
    } else {
        ((n + b).max(0), n + a + 1)
    };
    let lo = lo.clamp(0, n) as usize;
    let hi = hi.clamp(0, n) as usize;
    lo..hi.max(lo)
}

/// The untagged ESEARCH answer (RFC 4731 3; RFC 5267 3.2 for ESORT, 4.4 for PARTIAL).
/// `found`: (number, modseq) in the order asked for, mailbox order for SEARCH and sort order
/// for SORT, so MIN and MAX are the first and the last. No options (or SAVE alone) is ALL;
/// UPDATE alone answers nothing until the mailbox changes.
pub(crate) fn esearch(
    out: &mut Vec<u8>,
    tag: &str,
    uid: bool,
    ret: &[SearchRet],
    found: &[(u32, u64)],
    with_modseq: bool,
) {
    let data: Vec<SearchRet> = ret
        .iter()
        .copied()
        .filter(|r| !matches!(r, SearchRet::Save | SearchRet::Update))
        .collect();
    let ret = if data.is_empty() && !ret.contains(&SearchRet::Update) {
        vec![SearchRet::All]
    } else {
        data
    };
    push(out, &format!("* ESEARCH (TAG \"{tag}\")"));
    if uid {
        push(out, " UID");
    }
    for r in &ret {
        match *r {
            SearchRet::Min if !found.is_empty() => push(out, &format!(" MIN {}", found[0].0)),
            SearchRet::Max => {
                if let Some(last) = found.last() {
                    push(out, &format!(" MAX {}", last.0));
                }
            }
            SearchRet::Count => push(out, &format!(" COUNT {}", found.len())),
            SearchRet::All if !found.is_empty() => {
                let nums: Vec<u32> = found.iter().map(|f| f.0).collect();
                push(out, &format!(" ALL {}", format::seq_list(&nums)))
            }
            SearchRet::Partial(a, b) => {
                let nums: Vec<u32> = found[window(found.len(), a, b)]
                    .iter()
                    .map(|f| f.0)
                    .collect();
                let set = if nums.is_empty() {
                    "NIL".to_string()
                } else {
                    format::seq_list(&nums)
                };
                push(out, &format!(" PARTIAL ({a}:{b} {set})"));
            }
            _ => {}
        }
    }
    if with_modseq && !found.is_empty() {
        // RFC 7162 3.1.5: the highest modseq of the messages returned; MIN or MAX alone
        // return one message each, PARTIAL those in its range.
        let only_ends = ret
            .iter()
            .all(|r| matches!(r, SearchRet::Min | SearchRet::Max));
        let returned = match partial_of(&ret) {
            Some((a, b)) if ret.len() == 1 => &found[window(found.len(), a, b)],
            _ => found,
        };
        let m = if only_ends {
            let min = ret.contains(&SearchRet::Min).then_some(found[0].1);
            let max = ret
                .contains(&SearchRet::Max)
                .then(|| found.last().map_or(0, |l| l.1));
            min.max(max).unwrap_or(0)
        } else {
            returned.iter().map(|f| f.1).max().unwrap_or(0)
        };
        if m > 0 {
            push(out, &format!(" MODSEQ {m}"));
        }
    }
    push(out, "\r\n");
}

/// Puts the messages of the saved result where a command says `$` (RFC 5182 2.1): their UIDs
/// in UID commands and search keys, their sequence numbers in the others.
pub(crate) fn put_saved(sel: &Selected, cmd: &mut Command) {
    let uids = || number_set(&sel.saved);
    let seqs = || {
        let nums: Vec<u32> = sel
            .saved
            .iter()
            .filter_map(|u| sel.uids.binary_search(u).ok().map(|i| i as u32 + 1))
            .collect();
        number_set(&nums)
    };
    let fix = |set: &mut SeqSet, uid: bool| {
        if set.is_saved() {
            *set = if uid { uids() } else { seqs() };
        }
    };
    match cmd {
        Command::Fetch { uid, set, .. }
        | Command::Store { uid, set, .. }
        | Command::Copy { uid, set, .. } => fix(set, *uid),
        Command::Expunge(Some(set)) => fix(set, true),
        Command::Search { key, .. } | Command::Sort { key, .. } | Command::Thread { key, .. } => {
            saved_in_key(key, &uids())
        }
        _ => {}
    }
}

/// `$` in search keys names the saved messages by UID, whichever form was written.
fn saved_in_key(key: &mut SearchKey, saved: &SeqSet) {
    match key {
        SearchKey::SeqSet(s) | SearchKey::Uid(s) if s.is_saved() => {
            *key = SearchKey::Uid(saved.clone())
        }
        SearchKey::Not(k) => saved_in_key(k, saved),
        SearchKey::Or(a, b) => {
            saved_in_key(a, saved);
            saved_in_key(b, saved);
        }
        SearchKey::And(v) => v.iter_mut().for_each(|k| saved_in_key(k, saved)),
        _ => {}
    }
}

/// Ascending numbers as a set (empty: names nothing).
fn number_set(nums: &[u32]) -> SeqSet {
    SeqSet(
        nums.iter()
            .map(|&n| (SeqNum::Num(n), SeqNum::Num(n)))
            .collect(),
    )
}
