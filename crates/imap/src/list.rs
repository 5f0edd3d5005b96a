//! What LIST and LSUB answer (RFC 9051 6.3.9, RFC 5258, RFC 3501 6.3.9), worked out from the
//! account's mailboxes and subscribed names without I/O. Subscriptions are names: one may name
//! no mailbox (`\NonExistent`), and an unsubscribed parent of a subscribed name shows in LSUB
//! as `\Noselect` and, with RECURSIVEMATCH, with CHILDINFO.

use std::collections::{BTreeMap, BTreeSet};

use postern_store::{INBOX, Mailbox};

use crate::mailbox::wildcard;
use crate::parse::ListOptions;

/// One LIST or LSUB response.
#[derive(Debug)]
pub struct Listed<'a> {
    pub name: &'a str,
    pub attrs: Vec<&'static str>,
    /// `("CHILDINFO" ("SUBSCRIBED"))`: subscribed names below it that the patterns leave out.
    pub childinfo: bool,
    /// The mailbox of that name, when there is one (for LIST-STATUS).
    pub mailbox: Option<&'a Mailbox>,
}

/// INBOX first, then by name.
fn order(name: &str) -> (bool, &str) {
    (name != INBOX, name)
}

/// The names above `name`: "a/b/c" has "a" and "a/b".
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

fn below(parent: &str, name: &str) -> bool {
    name.len() > parent.len() + 1
        && name.starts_with(parent)
        && name.as_bytes()[parent.len()] == b'/'
}

struct Names<'a> {
    boxes: BTreeMap<&'a str, &'a Mailbox>,
    subscribed: BTreeSet<&'a str>,
    patterns: &'a [String],
}

impl<'a> Names<'a> {
    fn new(boxes: &'a [Mailbox], subscribed: &'a [String], patterns: &'a [String]) -> Self {
        Names {
            boxes: boxes.iter().map(|m| (m.name.as_str(), m)).collect(),
            subscribed: subscribed.iter().map(String::as_str).collect(),
            patterns,
        }
    }

    fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| wildcard(p, name))
    }

    /// RFC 3501: with `%` last in a pattern, the levels of hierarchy it matches are returned
    /// too.
    fn matches_level(&self, name: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| p.ends_with('%') && wildcard(p, name))
    }

    fn has_children(&self, name: &str) -> bool {
        let prefix = format!("{name}/");
        self.boxes
            .range(prefix.as_str()..)
            .next()
            .is_some_and(|(n, _)| n.starts_with(&prefix))
    }

    fn children_attr(&self, name: &str) -> &'static str {
        if self.has_children(name) {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        }
    }
}

/// LIST: mailboxes (and with SUBSCRIBED, subscribed names) that a pattern matches. `levels`
/// are names with no mailbox that `*` lists too (the shared namespace and its owners).
pub fn list<'a>(
    boxes: &'a [Mailbox],
    subscribed: &'a [String],
    patterns: &'a [String],
    opts: &ListOptions,
    levels: &[String],
) -> Vec<Listed<'a>> {
    let n = Names::new(boxes, subscribed, patterns);
    let mut out: BTreeMap<(bool, &str), Listed> = BTreeMap::new();
    if opts.subscribed {
        let mut candidates: BTreeSet<&str> = n.subscribed.clone();
        for s in &n.subscribed {
            candidates.extend(ancestors(s));
        }
        for name in candidates {
            if !n.matches(name) {
                continue;
            }
            let sub = n.subscribed.contains(name);
            // RFC 5258 3.5: a parent whose subscribed descendants the patterns leave out.
            let childinfo =
                opts.recursive && n.subscribed.iter().any(|s| below(name, s) && !n.matches(s));
            if !sub && !childinfo {
                continue;
            }
            let mb = n.boxes.get(name).copied();
            if opts.special_use && mb.and_then(|m| m.special_use).is_none() {
                continue;
            }
            let mut attrs = vec![n.children_attr(name)];
            match mb {
                Some(m) => attrs.extend(m.special_use.map(|su| su.attribute())),
                None => attrs.push("\\NonExistent"),
            }
            if sub {
                attrs.push("\\Subscribed");
            }
            out.insert(
                order(name),
                Listed {
                    name,
                    attrs,
                    childinfo,
                    mailbox: mb,
                },
            );
        }
    } else {
        for (&name, &mb) in &n.boxes {
            if !n.matches(name) || (opts.special_use && mb.special_use.is_none()) {
                continue;
            }
            let mut attrs = vec![n.children_attr(name)];
            attrs.extend(mb.special_use.map(|su| su.attribute()));
            if opts.ret_subscribed && n.subscribed.contains(name) {
                attrs.push("\\Subscribed");
            }
            out.insert(
                order(name),
                Listed {
                    name,
                    attrs,
                    childinfo: false,
                    mailbox: Some(mb),
                },
            );
        }
        // Levels of hierarchy with no mailbox of their own (a rename to "a/b/c" makes no "a").
        if !opts.special_use {
            for &name in n.boxes.keys() {
                for level in ancestors(name) {
                    let listed = n.matches_level(level)
                        || (levels.iter().any(|l| l == level) && n.matches(level));
                    if n.boxes.contains_key(level) || out.contains_key(&order(level)) || !listed {
                        continue;
                    }
                    let mut attrs = vec!["\\Noselect", "\\HasChildren"];
                    if opts.ret_subscribed && n.subscribed.contains(level) {
                        attrs.push("\\Subscribed");
                    }
                    out.insert(
                        order(level),
                        Listed {
                            name: level,
                            attrs,
                            childinfo: false,
                            mailbox: None,
                        },
                    );
                }
            }
        }
    }
    out.into_values().collect()
}

/// LSUB: subscribed names a pattern matches, and (RFC 3501 6.3.9) the unsubscribed levels
/// above subscribed names that a `%` pattern matches, as `\Noselect`.
pub fn lsub<'a>(
    boxes: &'a [Mailbox],
    subscribed: &'a [String],
    patterns: &'a [String],
) -> Vec<Listed<'a>> {
    let n = Names::new(boxes, subscribed, patterns);
    let mut out: BTreeMap<(bool, &str), Listed> = BTreeMap::new();
    for &s in &n.subscribed {
        if n.matches(s) {
            out.insert(
                order(s),
                Listed {
                    name: s,
                    attrs: Vec::new(),
                    childinfo: false,
                    mailbox: n.boxes.get(s).copied(),
                },
            );
        }
        for level in ancestors(s) {
            if !n.subscribed.contains(level) && n.matches_level(level) {
                out.insert(
                    order(level),
                    Listed {
                        name: level,
                        attrs: vec!["\\Noselect"],
                        childinfo: false,
                        mailbox: n.boxes.get(level).copied(),
                    },
                );
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(names: &[&str]) -> Vec<Mailbox> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Mailbox {
                id: i as u64 + 1,
                account: 1,
                name: n.to_string(),
                uidvalidity: 1,
                uidnext: 1,
                highest_modseq: 1,
                special_use: None,
                messages: 0,
                unseen: 0,
                size: 0,
            })
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn shown(v: &[Listed]) -> Vec<String> {
        v.iter()
            .map(|l| {
                let mut s = format!("{} ({})", l.name, l.attrs.join(" "));
                if l.childinfo {
                    s.push_str(" CHILDINFO");
                }
                s
            })
            .collect()
    }

    #[test]
    fn lsub_shows_unsubscribed_parents_at_a_percent_level() {
        let b = boxes(&["INBOX", "t", "t/a", "t/b", "t/b/c", "u", "u/u"]);
        let subs = strings(&["t/a/x", "t/b/c", "u/u", "gone"]);
        assert_eq!(
            shown(&lsub(&b, &subs, &strings(&["t/%"]))),
            ["t/a (\\Noselect)", "t/b (\\Noselect)"]
        );
        assert_eq!(
            shown(&lsub(&b, &subs, &strings(&["%"]))),
            ["gone ()", "t (\\Noselect)", "u (\\Noselect)"]
        );
        // `*` matches the names themselves; no levels are added.
        assert_eq!(shown(&lsub(&b, &subs, &strings(&["*c"]))), ["t/b/c ()"]);
        let subs = strings(&["t", "t/b/c"]);
        assert_eq!(shown(&lsub(&b, &subs, &strings(&["%"]))), ["t ()"]);
    }

    #[test]
    fn list_subscribed_shows_names_without_mailboxes() {
        let b = boxes(&["INBOX", "t", "t/one", "t/two"]);
        let subs = strings(&["t/one", "t/gone", "INBOX"]);
        let opts = ListOptions {
            subscribed: true,
            extended: true,
            ..Default::default()
        };
        assert_eq!(
            shown(&list(&b, &subs, &strings(&["*"]), &opts, &[])),
            [
                "INBOX (\\HasNoChildren \\Subscribed)",
                "t/gone (\\HasNoChildren \\NonExistent \\Subscribed)",
                "t/one (\\HasNoChildren \\Subscribed)"
            ]
        );
        let plain = ListOptions {
            ret_subscribed: true,
            extended: true,
            ..Default::default()
        };
        assert_eq!(
            shown(&list(&b, &subs, &strings(&["t/*"]), &plain, &[])),
            [
                "t/one (\\HasNoChildren \\Subscribed)",
                "t/two (\\HasNoChildren)"
            ]
        );
    }

    #[test]
    fn recursivematch_gives_childinfo_to_parents_of_names_left_out() {
        let b = boxes(&["p", "p/a", "p/b", "q", "q/q", "r", "r/r", "r/s"]);
        let subs = strings(&["p/a", "q/q", "r/r", "r/s", "x/y"]);
        let opts = ListOptions {
            subscribed: true,
            recursive: true,
            extended: true,
            ..Default::default()
        };
        assert_eq!(
            shown(&list(&b, &subs, &strings(&["%"]), &opts, &[])),
            [
                "p (\\HasChildren) CHILDINFO",
                "q (\\HasChildren) CHILDINFO",
                "r (\\HasChildren) CHILDINFO",
                "x (\\HasNoChildren \\NonExistent) CHILDINFO"
            ]
        );
        // A subscribed child the pattern matches itself leaves its parent out.
        assert_eq!(
            shown(&list(&b, &subs, &strings(&["*q"]), &opts, &[])),
            ["q/q (\\HasNoChildren \\Subscribed)"]
        );
        assert_eq!(
            shown(&list(&b, &subs, &strings(&["*r"]), &opts, &[])),
            [
                "r (\\HasChildren) CHILDINFO",
                "r/r (\\HasNoChildren \\Subscribed)"
            ]
        );
        assert_eq!(
            shown(&list(&b, &subs, &strings(&["p", "p/a"]), &opts, &[])),
            ["p/a (\\HasNoChildren \\Subscribed)"]
        );
    }

    #[test]
    fn a_percent_list_shows_levels_without_mailboxes() {
        let b = boxes(&["INBOX", "a/b/c", "d"]);
        let opts = ListOptions::default();
        assert_eq!(
            shown(&list(&b, &[], &strings(&["%"]), &opts, &[])),
            [
                "INBOX (\\HasNoChildren)",
                "a (\\Noselect \\HasChildren)",
                "d (\\HasNoChildren)"
            ]
        );
        assert_eq!(
            shown(&list(&b, &[], &strings(&["a/%"]), &opts, &[])),
            ["a/b (\\Noselect \\HasChildren)"]
        );
        assert_eq!(
            shown(&list(&b, &[], &strings(&["*"]), &opts, &[])),
            [
                "INBOX (\\HasNoChildren)",
                "a/b/c (\\HasNoChildren)",
                "d (\\HasNoChildren)"
            ]
        );
    }
}
