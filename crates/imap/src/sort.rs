//! SORT and THREAD (RFC 5256), with DISPLAYFROM and DISPLAYTO (RFC 5957): the messages the
//! search keys match, ordered by their header fields, or gathered into threads by subject
//! (ORDEREDSUBJECT) or by their references (REFERENCES). SORT RETURN (ESORT, RFC 5267 3)
//! answers in an ESEARCH response.

use std::cmp::Ordering;
use std::collections::HashMap;

use postern_message::MessageMeta;
use postern_message::sort::{SortFields, sort_fields};

use crate::core::{Fail, ImapCore, Res, ok, push};
use crate::parse::{SearchKey, SearchRet, SortKey, ThreadAlgorithm};
use crate::search::Hit;

/// A message to sort: its sort keys, read once.
pub(crate) struct Item {
    seq: u32,
    pub(crate) uid: u32,
    modseq: u64,
    size: u64,
    arrival: i64,
    f: SortFields,
}

impl Item {
    /// The sent date, else the arrival (RFC 5256 2.2).
    fn date(&self) -> i64 {
        self.f.sent.unwrap_or(self.arrival)
    }
}

async fn items(s: &ImapCore, key: &SearchKey) -> Result<Vec<Item>, Fail> {
    let hits = crate::search::matching(s, key).await?;
    items_of(s, &hits).await
}

/// The sort keys of these messages.
pub(crate) async fn items_of(s: &ImapCore, hits: &[Hit]) -> Result<Vec<Item>, Fail> {
    let store = s.store().clone();
    let mut out = Vec::with_capacity(hits.len());
    for chunk in hits.chunks(512) {
        let blobs: Vec<u64> = chunk.iter().map(|h| h.3.blob).collect();
        let heads = store.blob_heads(&blobs, MessageMeta::header_len_of).await?;
        for (h, head) in chunk.iter().zip(heads) {
            out.push(Item {
                seq: h.0,
                uid: h.1,
                modseq: h.2,
                size: h.3.size,
                arrival: h.3.internal_date,
                // A message whose bytes are gone sorts as one with an empty header.
                f: head.map(|b| sort_fields(&b[..])).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

fn compare(k: SortKey, a: &Item, b: &Item) -> Ordering {
    match k {
        SortKey::Arrival => a.arrival.cmp(&b.arrival),
        SortKey::Cc => a.f.cc.cmp(&b.f.cc),
        SortKey::Date => a.date().cmp(&b.date()),
        SortKey::From => a.f.from.cmp(&b.f.from),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => a.f.subject.cmp(&b.f.subject),
        SortKey::To => a.f.to.cmp(&b.f.to),
        SortKey::DisplayFrom => a.f.display_from.cmp(&b.f.display_from),
        SortKey::DisplayTo => a.f.display_to.cmp(&b.f.display_to),
    }
}

pub async fn sort(
    s: &mut ImapCore,
    out: &mut Vec<u8>,
    tag: &str,
    uid: bool,
    ret: Option<Vec<SearchRet>>,
    criteria: Vec<(SortKey, bool)>,
    key: SearchKey,
) -> Res {
    let update = ret.as_ref().is_some_and(|r| r.contains(&SearchRet::Update));
    if update {
        crate::context::check_tag(s, tag)?;
    }
    let mut items = items(s, &key).await?;
    items.sort_by(|a, b| order(&criteria, a, b));
    if let Some(ret) = ret {
        let found: Vec<(u32, u64)> = items
            .iter()
            .map(|i| (if uid { i.uid } else { i.seq }, i.modseq))
            .collect();
        let with_modseq = crate::search::uses_modseq(&key);
        crate::search::esearch(out, tag, uid, &ret, &found, with_modseq);
        if update {
            let kind = crate::context::Kind::Sort { criteria, items };
            crate::context::register(s, out, tag, uid, key, kind);
        }
        return ok("SORT completed");
    }
    push(out, "* SORT");
    for i in &items {
        push(out, &format!(" {}", if uid { i.uid } else { i.seq }));
    }
    push(out, "\r\n");
    ok("SORT completed")
}

/// A message with this UID and subject, for tests.
#[cfg(test)]
pub(crate) fn test_item(uid: u32, subject: &str) -> Item {
    Item {
        seq: uid,
        uid,
        modseq: 1,
        size: 0,
        arrival: 0,
        f: SortFields {
            subject: subject.into(),
            ..Default::default()
        },
    }
}

/// The order of two messages by the criteria; equal by every one, mailbox order (RFC 5256 3),
/// which is the order of their UIDs.
pub(crate) fn order(criteria: &[(SortKey, bool)], a: &Item, b: &Item) -> Ordering {
    for &(k, reverse) in criteria {
        let o = compare(k, a, b);
        let o = if reverse { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.uid.cmp(&b.uid)
}

/// A thread's tree: a message (or, for `None`, a placeholder for one we do not have).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tree {
    pub item: Option<u32>,
    pub children: Vec<Tree>,
}

/// RFC 5256 4: members in line, siblings each in parentheses.
pub(crate) fn format_thread(t: &Tree, out: &mut String) {
    let mut first = true;
    if let Some(n) = t.item {
        out.push_str(&n.to_string());
        first = false;
    }
    match t.children.len() {
        0 => {}
        1 if t.item.is_some() => {
            out.push(' ');
            format_thread(&t.children[0], out);
        }
        _ => {
            if !first {
                out.push(' ');
            }
            for c in &t.children {
                out.push('(');
                format_thread(c, out);
                out.push(')');
            }
        }
    }
}

pub async fn thread(
    s: &mut ImapCore,
    out: &mut Vec<u8>,
    uid: bool,
    algorithm: ThreadAlgorithm,
    key: SearchKey,
) -> Res {
    let items = items(s, &key).await?;
    let trees = match algorithm {
        ThreadAlgorithm::OrderedSubject => ordered_subject(&items),
        ThreadAlgorithm::References => references(&items),
    };
    let mut text = String::from("* THREAD ");
    for t in &trees {
        let t = numbered(t, &items, uid);
        text.push('(');
        format_thread(&t, &mut text);
        text.push(')');
    }
    if trees.is_empty() {
        text.pop();
    }
    text.push_str("\r\n");
    push(out, &text);
    ok("THREAD completed")
}

/// The tree with sequence numbers or UIDs in place of item indexes.
fn numbered(t: &Tree, items: &[Item], uid: bool) -> Tree {
    Tree {
        item: t.item.map(|i| {
            let it = &items[i as usize];
            if uid { it.uid } else { it.seq }
        }),
        children: t.children.iter().map(|c| numbered(c, items, uid)).collect(),
    }
}

/// ORDEREDSUBJECT: one thread per base subject, its messages by date, the first the parent
/// of the others; threads by the date of their first message.
fn ordered_subject(items: &[Item]) -> Vec<Tree> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (&items[a], &items[b]);
        x.f.subject
            .cmp(&y.f.subject)
            .then(x.date().cmp(&y.date()))
            .then(x.seq.cmp(&y.seq))
    });
    let mut threads: Vec<Vec<usize>> = Vec::new();
    for i in idx {
        match threads.last_mut() {
            Some(t) if items[t[0]].f.subject == items[i].f.subject => t.push(i),
            _ => threads.push(vec![i]),
        }
    }
    threads.sort_by_key(|t| (items[t[0]].date(), items[t[0]].seq));
    threads
        .into_iter()
        .map(|t| Tree {
            item: Some(t[0] as u32),
            children: t[1..]
                .iter()
                .map(|&i| Tree {
                    item: Some(i as u32),
                    children: Vec::new(),
                })
                .collect(),
        })
        .collect()
}

/// The containers of the REFERENCES algorithm: one per message id, with or without its message.
struct Containers {
    item: Vec<Option<usize>>,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    by_id: HashMap<String, usize>,
}

impl Containers {
    fn get(&mut self, id: &str) -> usize {
        if let Some(&c) = self.by_id.get(id) {
            return c;
        }
        let c = self.item.len();
        self.item.push(None);
        self.parent.push(None);
        self.children.push(Vec::new());
        self.by_id.insert(id.to_string(), c);
        c
    }

    /// Whether `a` is `b` or below it.
    fn under(&self, mut a: usize, b: usize) -> bool {
        let mut steps = 0;
        loop {
            if a == b {
                return true;
            }
            match self.parent[a] {
                Some(p) if steps < self.item.len() => {
                    a = p;
                    steps += 1;
                }
                _ => return false,
            }
        }
    }

    fn unlink(&mut self, c: usize) {
        if let Some(p) = self.parent[c].take() {
            self.children[p].retain(|&x| x != c);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.parent[child] = Some(parent);
        self.children[parent].push(child);
    }
}

/// REFERENCES (RFC 5256 3): messages linked by Message-ID, References and In-Reply-To, the
/// placeholders for missing ones pruned, roots with the same base subject gathered.
fn references(items: &[Item]) -> Vec<Tree> {
    let mut c = Containers {
        item: Vec::new(),
        parent: Vec::new(),
        children: Vec::new(),
        by_id: HashMap::new(),
    };
    // (1) Link each message to its references.
    for (i, it) in items.iter().enumerate() {
        let id = match &it.f.message_id {
            Some(m) if c.by_id.get(m).is_none_or(|&k| c.item[k].is_none()) => m.clone(),
            // No id, or one already used: a unique one of its own.
            _ => format!("\0{}", it.seq),
        };
        let me = c.get(&id);
        c.item[me] = Some(i);
        let refs: Vec<usize> = it.f.references.iter().map(|r| c.get(r)).collect();
        for w in refs.windows(2) {
            let (a, b) = (w[0], w[1]);
            if c.parent[b].is_none() && !c.under(a, b) {
                c.link(a, b);
            }
        }
        // (1B) The last reference is its parent: a parent it had already (presumed from
        // another message's References) goes first, even when the new link would make a
        // loop and is not made, leaving the message a root.
        c.unlink(me);
        if let Some(&last) = refs.last()
            && !c.under(last, me)
        {
            c.link(last, me);
        }
    }
    // (2) The roots; (3) placeholders pruned.
    let roots: Vec<usize> = (0..c.item.len())
        .filter(|&k| c.parent[k].is_none())
        .collect();
    let mut trees: Vec<Tree> = Vec::new();
    for r in roots {
        trees.extend(prune(&c, r, true));
    }
    // (4) By date, (5) roots with the same base subject gathered.
    for t in &mut trees {
        sort_tree(t, items);
    }
    sort_level(&mut trees, items);
    let subject = |t: &Tree| -> Option<&str> {
        let i = t.item.or_else(|| t.children.first().and_then(|c| c.item))?;
        Some(items[i as usize].f.subject.as_str()).filter(|s| !s.is_empty())
    };
    let mut table: HashMap<String, usize> = HashMap::new();
    for (k, t) in trees.iter().enumerate() {
        let Some(s) = subject(t) else { continue };
        match table.get(s) {
            None => {
                table.insert(s.to_string(), k);
            }
            Some(&o) => {
                let old = &trees[o];
                let better = (t.item.is_none() && old.item.is_some())
                    || (old.item.is_some_and(|i| items[i as usize].f.is_reply)
                        && t.item.is_some_and(|i| !items[i as usize].f.is_reply));
                if better {
                    table.insert(s.to_string(), k);
                }
            }
        }
    }
    let mut merged: Vec<Option<Tree>> = trees.into_iter().map(Some).collect();
    for k in 0..merged.len() {
        let Some(s) = merged[k]
            .as_ref()
            .and_then(|t| subject(t).map(str::to_string))
        else {
            continue;
        };
        let Some(&o) = table.get(&s) else { continue };
        if o == k || merged[o].is_none() {
            continue;
        }
        let this = merged[k].take().expect("present");
        let other = merged[o].as_mut().expect("present");
        let reply = |t: &Tree| t.item.is_some_and(|i| items[i as usize].f.is_reply);
        match (other.item.is_none(), this.item.is_none()) {
            // Both placeholders: one's children join the other's.
            (true, true) => other.children.extend(this.children),
            // A message joins the placeholder's children.
            (true, false) => other.children.push(this),
            (false, true) => {
                let mut this = this;
                this.children.push(std::mem::replace(
                    other,
                    Tree {
                        item: None,
                        children: Vec::new(),
                    },
                ));
                *other = this;
            }
            // A reply under the original.
            (false, false) if reply(&this) && !reply(other) => other.children.push(this),
            // Otherwise siblings under a new placeholder.
            (false, false) => {
                let was = std::mem::replace(
                    other,
                    Tree {
                        item: None,
                        children: Vec::new(),
                    },
                );
                other.children = vec![was, this];
            }
        }
    }
    let mut trees: Vec<Tree> = merged.into_iter().flatten().collect();
    // (6) Every level by date.
    for t in &mut trees {
        sort_tree(t, items);
    }
    sort_level(&mut trees, items);
    trees
}

/// A container's tree with placeholders pruned (RFC 5256 3 step 3): one without children
/// goes; one with children gives them to its parent, unless it is a root with several.
fn prune(c: &Containers, k: usize, root: bool) -> Vec<Tree> {
    let kids: Vec<Tree> = c.children[k]
        .iter()
        .flat_map(|&ch| prune(c, ch, false))
        .collect();
    match c.item[k] {
        Some(i) => vec![Tree {
            item: Some(i as u32),
            children: kids,
        }],
        None if kids.is_empty() => Vec::new(),
        None if root && kids.len() > 1 => vec![Tree {
            item: None,
            children: kids,
        }],
        None => kids,
    }
}

/// A tree's date: its message's, else its first child's.
fn tree_date(t: &Tree, items: &[Item]) -> (i64, u32) {
    match t.item {
        Some(i) => (items[i as usize].date(), items[i as usize].seq),
        None => t
            .children
            .first()
            .map_or((i64::MAX, u32::MAX), |c| tree_date(c, items)),
    }
}

fn sort_tree(t: &mut Tree, items: &[Item]) {
    for ch in &mut t.children {
        sort_tree(ch, items);
    }
    sort_level(&mut t.children, items);
}

fn sort_level(level: &mut [Tree], items: &[Item]) {
    level.sort_by_key(|t| tree_date(t, items));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u32, date: i64, subject: &str, id: &str, refs: &[&str]) -> Item {
        let (subject, is_reply) = postern_message::sort::base_subject(subject);
        Item {
            seq,
            uid: seq + 100,
            modseq: 1,
            size: 0,
            arrival: date,
            f: SortFields {
                sent: Some(date),
                subject,
                is_reply,
                message_id: Some(id.to_string()),
                references: refs.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    fn text(trees: &[Tree], items: &[Item]) -> String {
        let mut s = String::new();
        for t in trees {
            s.push('(');
            format_thread(&numbered(t, items, false), &mut s);
            s.push(')');
        }
        s
    }

    #[test]
    fn threads_by_subject() {
        let items = vec![
            item(1, 10, "Hello", "a", &[]),
            item(2, 20, "Other", "b", &[]),
            item(3, 30, "Re: Hello", "c", &[]),
            item(4, 40, "re: hello", "d", &[]),
            item(5, 25, "Re: Other", "e", &[]),
        ];
        assert_eq!(text(&ordered_subject(&items), &items), "(1 (3)(4))(2 5)");
    }

    #[test]
    fn threads_by_references() {
        let items = vec![
            item(1, 10, "Plans", "a", &[]),
            item(2, 20, "Re: Plans", "b", &["a"]),
            item(3, 30, "Re: Plans", "c", &["a", "b"]),
            item(4, 25, "Re: Plans", "d", &["a"]),
            // Its parent is missing: under the placeholder for "x", with its sibling.
            item(5, 50, "Lunch", "e", &["x"]),
            item(6, 60, "Re: Lunch", "f", &["x"]),
            // No references, the same subject as a thread: gathered under it.
            item(7, 70, "Re: Plans", "g", &[]),
            item(8, 5, "Alone", "h", &[]),
        ];
        assert_eq!(
            text(&references(&items), &items),
            "(8)(1 (2 3)(4)(7))((5)(6))"
        );
    }

    #[test]
    fn a_presumed_parent_goes_even_when_the_real_one_would_loop() {
        // imaptest's thread test: 2 presumes a -> c from its References, then c itself names
        // 2 (b) as its parent. That link would loop (b is under c), so is not made, but the
        // presumed link to a is broken all the same (RFC 5256 3, step 1B): c is a root.
        let mut items = vec![
            item(1, 17_000, "", "a", &[]),
            item(2, 15_000, "", "b", &["a", "c"]),
            item(3, 16_000, "", "c", &["b"]),
        ];
        assert_eq!(text(&references(&items), &items), "(3 2)(1)");
        // With a expunged it is a placeholder with no children left.
        items.remove(0);
        items[0].seq = 1;
        items[1].seq = 2;
        assert_eq!(text(&references(&items), &items), "(2 1)");
    }

    #[test]
    fn reference_loops_do_not_hang() {
        let items = vec![
            item(1, 10, "A", "a", &["b"]),
            item(2, 20, "B", "b", &["a"]),
            item(3, 30, "C", "a", &["a"]),
        ];
        let got = text(&references(&items), &items);
        for n in ["1", "2", "3"] {
            assert!(got.contains(n), "{got}");
        }
    }
}
