//! Searches that tell of changes to their result (CONTEXT=SEARCH and CONTEXT=SORT, RFC 5267
//! 4): SEARCH or SORT with RETURN (UPDATE) keeps its result, and as the selected mailbox
//! changes the session says what joined it (ADDTO) and what left it (REMOVEFROM), until
//! CANCELUPDATE or the mailbox is closed. The core calls in here as it brings the client's
//! view up to date: removals of expunged messages before their EXPUNGE responses (their
//! sequence numbers still hold), the rest after EXISTS and the FETCH responses. Only messages
//! that changed are searched again; sequence numbers in the search keys are taken as the
//! messages they named when the search ran.

use std::cmp::Ordering;

use postern_store::Uid;

use crate::core::{Fail, ImapCore, Res, Selected, ok, push};
use crate::format;
use crate::parse::{SearchKey, SeqNum, SeqSet, SortKey};
use crate::sort::Item;

/// Searches one session may keep telling of changes (each holds its result), as Dovecot.
pub const MAX_UPDATES: usize = 10;

/// A search that tells of changes.
pub struct Update {
    tag: String,
    uid: bool,
    key: SearchKey,
    kind: Kind,
}

pub(crate) enum Kind {
    /// SEARCH: the result's UIDs, ascending. Its ADDTO and REMOVEFROM give position 0, as
    /// RFC 5267 4.3 allows for a result in mailbox order.
    Search(Vec<Uid>),
    /// SORT: the criteria, and the result's sort keys in sort order. Sort keys never change,
    /// so a message keeps its place among the others; positions count from 1.
    Sort {
        criteria: Vec<(SortKey, bool)>,
        items: Vec<Item>,
    },
}

/// RETURN (UPDATE) under a tag that already has a search telling of changes is an error: the
/// client could not tell their updates apart.
pub(crate) fn check_tag(s: &ImapCore, tag: &str) -> Result<(), Fail> {
    let sel = s.selected.as_ref().expect("selected");
    if sel.updates.iter().any(|u| u.tag == tag) {
        return Err(Fail::Bad(format!(
            "The search tagged {tag} already tells of changes: CANCELUPDATE it or use another tag"
        )));
    }
    Ok(())
}

/// Keeps a search's result to tell of its changes; past [`MAX_UPDATES`] the search has been
/// answered and says it will not be updated (NOUPDATE).
pub(crate) fn register(
    s: &mut ImapCore,
    out: &mut Vec<u8>,
    tag: &str,
    uid: bool,
    mut key: SearchKey,
    kind: Kind,
) {
    let sel = s.selected.as_mut().expect("selected");
    if sel.updates.len() >= MAX_UPDATES {
        push(
            out,
            &format!(
                "* NO [NOUPDATE \"{tag}\"] At most {MAX_UPDATES} searches tell of changes at once: CANCELUPDATE one first\r\n"
            ),
        );
        return;
    }
    pin(&mut key, sel);
    sel.updates.push(Update {
        tag: tag.to_string(),
        uid,
        key,
        kind,
    });
}

/// CANCELUPDATE: the searches with these tags stop telling of changes.
pub(crate) fn cancel(s: &mut ImapCore, tags: &[String]) -> Res {
    let sel = s.selected.as_mut().expect("selected");
    for t in tags {
        match sel.updates.iter().position(|u| &u.tag == t) {
            Some(i) => {
                sel.updates.remove(i);
            }
            None => return Err(Fail::No(format!("No search tagged {t} tells of changes"))),
        }
    }
    ok("CANCELUPDATE completed")
}

/// Sequence numbers in the keys become the UIDs of the messages they name now (RFC 5267 4.1:
/// a search's result does not change as others are expunged or arrive).
fn pin(key: &mut SearchKey, sel: &Selected) {
    match key {
        SearchKey::SeqSet(set) => {
            let uids: Vec<Uid> = sel.resolve(set, false).iter().map(|x| x.1).collect();
            *key = SearchKey::Uid(ranges(&uids));
        }
        SearchKey::Not(k) => pin(k, sel),
        SearchKey::Or(a, b) => {
            pin(a, sel);
            pin(b, sel);
        }
        SearchKey::And(v) => v.iter_mut().for_each(|k| pin(k, sel)),
        _ => {}
    }
}

/// Ascending numbers as a set of ranges.
fn ranges(nums: &[u32]) -> SeqSet {
    let mut out: Vec<(SeqNum, SeqNum)> = Vec::new();
    for &n in nums {
        match out.last_mut() {
            Some((_, SeqNum::Num(hi))) if hi.checked_add(1) == Some(n) => *hi = n,
            _ => out.push((SeqNum::Num(n), SeqNum::Num(n))),
        }
    }
    SeqSet(out)
}

/// The number the client knows a message by: its UID, or its sequence number now.
fn number(uids: &[Uid], uid: bool, u: Uid) -> u32 {
    if uid {
        return u;
    }
    uids.binary_search(&u).map_or(0, |i| i as u32 + 1)
}

fn line(out: &mut Vec<u8>, u: &Update, items: &[String]) {
    if items.is_empty() {
        return;
    }
    push(out, &format!("* ESEARCH (TAG \"{}\")", u.tag));
    if u.uid {
        push(out, " UID");
    }
    for i in items {
        push(out, &format!(" {i}"));
    }
    push(out, "\r\n");
}

/// Takes the messages `gone` says of out of a sorted result, a run of neighbours at a time:
/// REMOVEFROM items with the position of each run's first message once the runs before it are
/// gone.
fn remove_runs(
    items: &mut Vec<Item>,
    gone: impl Fn(Uid) -> bool,
    num: impl Fn(Uid) -> u32,
) -> Vec<String> {
    let mut said = Vec::new();
    let mut removed = 0;
    let mut i = 0;
    while i < items.len() {
        if !gone(items[i].uid) {
            i += 1;
            continue;
        }
        let start = i;
        while i < items.len() && gone(items[i].uid) {
            i += 1;
        }
        let nums: Vec<u32> = items[start..i].iter().map(|it| num(it.uid)).collect();
        said.push(format!(
            "REMOVEFROM ({} {})",
            start - removed + 1,
            format::seq_list(&nums)
        ));
        removed += i - start;
    }
    items.retain(|it| !gone(it.uid));
    said
}

/// Before expunges are reported: the messages leaving each result with them, by the numbers
/// the client still knows them by. `gone` is ascending.
pub(crate) fn before_expunge(sel: &mut Selected, out: &mut Vec<u8>, gone: &[Uid]) {
    let is_gone = |u: Uid| gone.binary_search(&u).is_ok();
    for u in &mut sel.updates {
        let uid = u.uid;
        let said = match &mut u.kind {
            Kind::Search(result) => {
                let nums: Vec<u32> = result
                    .iter()
                    .filter(|&&x| is_gone(x))
                    .map(|&x| number(&sel.uids, uid, x))
                    .collect();
                result.retain(|&x| !is_gone(x));
                if nums.is_empty() {
                    Vec::new()
                } else {
                    vec![format!("REMOVEFROM (0 {})", format::seq_set(&nums))]
                }
            }
            Kind::Sort { items, .. } => remove_runs(items, is_gone, |x| number(&sel.uids, uid, x)),
        };
        line(out, u, &said);
    }
}

/// After the mailbox's changes are reported: `changed` (ascending) are the messages whose
/// flags changed or that arrived; each search looks at them again.
pub(crate) async fn after_changes(
    s: &mut ImapCore,
    out: &mut Vec<u8>,
    changed: &[Uid],
) -> Result<(), Fail> {
    let Some(sel) = s.selected.as_mut() else {
        return Ok(());
    };
    if sel.updates.is_empty() || changed.is_empty() {
        return Ok(());
    }
    let mut updates = std::mem::take(&mut sel.updates);
    let mut r = Ok(());
    for u in &mut updates {
        r = update(s, out, u, changed).await;
        if r.is_err() {
            break;
        }
    }
    if let Some(sel) = s.selected.as_mut() {
        sel.updates = updates;
    }
    r
}

async fn update(
    s: &ImapCore,
    out: &mut Vec<u8>,
    u: &mut Update,
    changed: &[Uid],
) -> Result<(), Fail> {
    let hits = crate::search::matching_in(s, &u.key, Some(changed)).await?;
    let matched: Vec<Uid> = hits.iter().map(|h| h.1).collect();
    let is_match = |x: Uid| matched.binary_search(&x).is_ok();
    let was_changed = |x: Uid| changed.binary_search(&x).is_ok();
    let uids = &s.selected.as_ref().expect("selected").uids;
    let num = |x: Uid| number(uids, u.uid, x);
    let mut said = Vec::new();
    match &mut u.kind {
        Kind::Search(result) => {
            let left: Vec<u32> = result
                .iter()
                .filter(|&&x| was_changed(x) && !is_match(x))
                .map(|&x| num(x))
                .collect();
            let joined: Vec<Uid> = matched
                .iter()
                .copied()
                .filter(|x| result.binary_search(x).is_err())
                .collect();
            result.retain(|&x| !was_changed(x) || is_match(x));
            result.extend(&joined);
            result.sort_unstable();
            if !left.is_empty() {
                said.push(format!("REMOVEFROM (0 {})", format::seq_set(&left)));
            }
            if !joined.is_empty() {
                let nums: Vec<u32> = joined.iter().map(|&x| num(x)).collect();
                said.push(format!("ADDTO (0 {})", format::seq_set(&nums)));
            }
        }
        Kind::Sort { criteria, items } => {
            said = remove_runs(items, |x| was_changed(x) && !is_match(x), num);
            let mut have: Vec<Uid> = items.iter().map(|it| it.uid).collect();
            have.sort_unstable();
            let new_hits: Vec<crate::search::Hit> = hits
                .into_iter()
                .filter(|h| have.binary_search(&h.1).is_err())
                .collect();
            if !new_hits.is_empty() {
                let mut new = crate::sort::items_of(s, &new_hits).await?;
                new.sort_by(|a, b| crate::sort::order(criteria, a, b));
                said.extend(insert_runs(items, new, criteria, num));
            }
        }
    }
    line(out, u, &said);
    Ok(())
}

/// Puts new messages (in sort order) into a sorted result; ADDTO items for each run of them
/// that ends up side by side, with the position its first message takes.
fn insert_runs(
    items: &mut Vec<Item>,
    new: Vec<Item>,
    criteria: &[(SortKey, bool)],
    num: impl Fn(Uid) -> u32,
) -> Vec<String> {
    let old = std::mem::take(items);
    let mut merged: Vec<(Item, bool)> = Vec::with_capacity(old.len() + new.len());
    let mut a = old.into_iter().peekable();
    let mut b = new.into_iter().peekable();
    loop {
        let take_new = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => crate::sort::order(criteria, y, x) == Ordering::Less,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => break,
        };
        if take_new {
            merged.push((b.next().expect("peeked"), true));
        } else {
            merged.push((a.next().expect("peeked"), false));
        }
    }
    let mut said = Vec::new();
    let mut i = 0;
    while i < merged.len() {
        if !merged[i].1 {
            i += 1;
            continue;
        }
        let start = i;
        while i < merged.len() && merged[i].1 {
            i += 1;
        }
        let nums: Vec<u32> = merged[start..i].iter().map(|(it, _)| num(it.uid)).collect();
        said.push(format!("ADDTO ({} {})", start + 1, format::seq_list(&nums)));
    }
    items.extend(merged.into_iter().map(|(it, _)| it));
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_become_uids() {
        assert_eq!(
            ranges(&[3, 4, 5, 9]),
            SeqSet(vec![
                (SeqNum::Num(3), SeqNum::Num(5)),
                (SeqNum::Num(9), SeqNum::Num(9))
            ])
        );
        assert_eq!(ranges(&[]), SeqSet(vec![]));
        assert_eq!(number(&[10, 20, 30], false, 30), 3);
        assert_eq!(number(&[10, 20, 30], true, 30), 30);
    }

    #[test]
    fn sorted_results_change_in_runs_with_positions() {
        use crate::sort::test_item;
        let by_subject = [(SortKey::Subject, false)];
        let uids = |items: &[Item]| items.iter().map(|i| i.uid).collect::<Vec<_>>();
        // alpha(2) charlie(4) delta(1) echo(3)
        let mut items: Vec<Item> = [(2, "alpha"), (4, "charlie"), (1, "delta"), (3, "echo")]
            .iter()
            .map(|&(u, s)| test_item(u, s))
            .collect();
        let new = vec![
            test_item(7, "beta"),
            test_item(5, "bravo"),
            test_item(6, "foxtrot"),
        ];
        let said = insert_runs(&mut items, new, &by_subject, |u| u);
        assert_eq!(said, ["ADDTO (2 7,5)", "ADDTO (7 6)"]);
        assert_eq!(uids(&items), [2, 7, 5, 4, 1, 3, 6]);
        // Equal keys keep UID order.
        let said = insert_runs(&mut items, vec![test_item(8, "alpha")], &by_subject, |u| u);
        assert_eq!(said, ["ADDTO (2 8)"]);
        let gone = [2, 8, 5, 3];
        let said = remove_runs(&mut items, |u| gone.contains(&u), |u| u + 100);
        assert_eq!(
            said,
            [
                "REMOVEFROM (1 102,108)",
                "REMOVEFROM (2 105)",
                "REMOVEFROM (4 103)"
            ]
        );
        assert_eq!(uids(&items), [7, 4, 1, 6]);
        assert!(remove_runs(&mut items, |_| false, |u| u).is_empty());
    }
}
