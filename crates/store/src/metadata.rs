//! IMAP METADATA (RFC 5464): named values an account keeps on a mailbox or on the server, and
//! the rules both backends apply to them (names, depth, limits).

use std::collections::BTreeMap;

use crate::{Result, StoreError};

/// One entry: its name as kept (lower case, `/private/...` or `/shared/...`) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEntry {
    pub name: String,
    pub value: Vec<u8>,
}

/// What one account may keep. Sizes in bytes; an entry counts its name and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataLimits {
    /// The largest value.
    pub max_value: u64,
    /// Entries of one account on one mailbox, or on the server.
    pub max_entries: u64,
    /// Names and values of all the account's entries together.
    pub max_total: u64,
}

/// Why a `metadata_set` changed nothing: the limit it would pass (RFC 5464 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataRefused {
    /// A value is larger than `max_value` (`[METADATA MAXSIZE n]`).
    TooLarge { max: u64 },
    /// The mailbox (or the server) would hold more than `max_entries` of the account's
    /// entries (`[METADATA TOOMANY]`).
    TooMany { max: u64 },
    /// The account's entries would take more than `max_total` bytes.
    TotalTooLarge { max: u64 },
}

/// The changes one `metadata_set` asks for: name → new value (`None` removes it).
pub type MetadataChanges = Vec<(String, Option<Vec<u8>>)>;

/// An entry name as kept, or why it is no name (RFC 5464 3.2): `/private/...` or `/shared/...`,
/// slash-separated, no empty component, no `*` or `%`, printable ASCII only. Lower case (names
/// are case-insensitive).
pub fn metadata_name(name: &str) -> Result<String> {
    let bad = |why: &str| {
        Err(StoreError::Invalid(format!(
            "bad entry name {name:?}: {why}"
        )))
    };
    if !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return bad("only printable ASCII is allowed");
    }
    if name.contains(['*', '%']) {
        return bad("* and % are not allowed");
    }
    let lower = name.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("/private/")
        .or_else(|| lower.strip_prefix("/shared/"))
    else {
        return bad("it must begin with /private/ or /shared/");
    };
    if rest.is_empty() || rest.split('/').any(str::is_empty) {
        return bad("empty component");
    }
    Ok(lower)
}

/// What `metadata_get` may ask for: an entry name, or all of one kind (`/private`,
/// `/shared`), as kept.
pub fn metadata_prefix(name: &str) -> Result<String> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "/private" | "/shared" => Ok(lower),
        _ => metadata_name(name),
    }
}

/// Who keeps an entry (its name as kept) that `account` names on a mailbox of `owner` (`None`:
/// on the server): a mailbox's `/shared` entries are its owner's, whoever sets them, so
/// everyone it is shared with sees one value; the rest are the account's own.
pub fn metadata_keeper(account: u64, owner: Option<u64>, name: &str) -> u64 {
    match owner {
        Some(o) if name == "/shared" || name.starts_with("/shared/") => o,
        _ => account,
    }
}

/// Whether a kept `name` is `entry` or below it, at most `depth` levels (`None`: any).
pub fn metadata_within(name: &str, entry: &str, depth: Option<u32>) -> bool {
    if name == entry {
        return true;
    }
    let Some(below) = name.strip_prefix(entry).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    depth.is_none_or(|d| below.split('/').count() as u64 <= d as u64)
}

/// Checks a `metadata_set` against the limits. `scope` holds the account's entries on the
/// mailbox (or server) as (name, value size); `total` what all its entries take. A change that
/// only shrinks what is kept always passes, so an account over a lowered limit can tidy up.
pub(crate) fn check_metadata(
    scope: &[(String, u64)],
    total: u64,
    changes: &[(String, Option<Vec<u8>>)],
    limits: &MetadataLimits,
) -> Result<(), MetadataRefused> {
    let mut kept: BTreeMap<&str, u64> = scope.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let before = kept.len() as u64;
    let mut new_total = total as i128;
    for (name, value) in changes {
        if let Some(v) = value
            && v.len() as u64 > limits.max_value
        {
            return Err(MetadataRefused::TooLarge {
                max: limits.max_value,
            });
        }
        if let Some(old) = kept.remove(name.as_str()) {
            new_total -= (name.len() as u64 + old) as i128;
        }
        if let Some(v) = value {
            kept.insert(name, v.len() as u64);
            new_total += (name.len() + v.len()) as i128;
        }
    }
    let after = kept.len() as u64;
    if after > limits.max_entries && after > before {
        return Err(MetadataRefused::TooMany {
            max: limits.max_entries,
        });
    }
    if new_total > limits.max_total as i128 && new_total > total as i128 {
        return Err(MetadataRefused::TotalTooLarge {
            max: limits.max_total,
        });
    }
    Ok(())
}

/// The changes with their names as kept, the last of each name winning; `Invalid` for a bad
/// name.
pub(crate) fn metadata_changes(changes: MetadataChanges) -> Result<MetadataChanges> {
    let mut by_name: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for (name, value) in changes {
        by_name.insert(metadata_name(&name)?, value);
    }
    Ok(by_name.into_iter().collect())
}

/// The changes by the account that keeps them ([`metadata_keeper`]).
pub(crate) fn metadata_by_keeper(
    account: u64,
    owner: Option<u64>,
    changes: &[(String, Option<Vec<u8>>)],
) -> BTreeMap<u64, MetadataChanges> {
    let mut out: BTreeMap<u64, MetadataChanges> = BTreeMap::new();
    for (name, value) in changes {
        out.entry(metadata_keeper(account, owner, name))
            .or_default()
            .push((name.clone(), value.clone()));
    }
    out
}

/// What sessions are told of a `metadata_set` that changed these groups (RFC 5465 5.6, 5.7).
pub(crate) fn metadata_events(
    mailbox: Option<u64>,
    groups: &BTreeMap<u64, MetadataChanges>,
) -> Vec<crate::StoreEvent> {
    groups
        .iter()
        .map(|(&keeper, changes)| crate::StoreEvent::Metadata {
            keeper,
            mailbox,
            names: changes.iter().map(|c| c.0.clone()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MetadataLimits = MetadataLimits {
        max_value: 10,
        max_entries: 2,
        max_total: 40,
    };

    #[test]
    fn names() {
        assert_eq!(
            metadata_name("/Private/Comment").unwrap(),
            "/private/comment"
        );
        assert_eq!(metadata_name("/shared/a/b").unwrap(), "/shared/a/b");
        for bad in [
            "/private",
            "/private/",
            "/shared//a",
            "/shared/a/",
            "/other/a",
            "private/a",
            "/shared/a*",
            "/shared/%",
            "/shared/\u{e9}",
            "/shared/a\tb",
            "",
        ] {
            assert!(metadata_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn depth() {
        let e = "/private/filters/values";
        assert!(metadata_within(e, e, Some(0)));
        assert!(!metadata_within("/private/filters/values/a", e, Some(0)));
        assert!(metadata_within("/private/filters/values/a", e, Some(1)));
        assert!(!metadata_within("/private/filters/values/a/b", e, Some(1)));
        assert!(metadata_within("/private/filters/values/a/b", e, None));
        assert!(!metadata_within("/private/filters/valuesx", e, None));
    }

    #[test]
    fn limits() {
        let set = |n: &str, v: &[u8]| (n.to_string(), Some(v.to_vec()));
        let scope = vec![("/private/a".to_string(), 5)];
        assert_eq!(
            check_metadata(&scope, 15, &[set("/private/b", b"12345")], &LIMITS),
            Ok(())
        );
        assert_eq!(
            check_metadata(&scope, 15, &[set("/private/b", b"12345678901")], &LIMITS),
            Err(MetadataRefused::TooLarge { max: 10 })
        );
        let two = vec![("/private/a".to_string(), 1), ("/private/b".to_string(), 1)];
        assert_eq!(
            check_metadata(&two, 22, &[set("/private/c", b"1")], &LIMITS),
            Err(MetadataRefused::TooMany { max: 2 })
        );
        // Replacing one and removing another is fine at the limit.
        let swap = [
            set("/private/a", b"2"),
            ("/private/b".into(), None),
            set("/private/c", b"1"),
        ];
        assert_eq!(check_metadata(&two, 22, &swap, &LIMITS), Ok(()));
        assert_eq!(
            check_metadata(&scope, 30, &[set("/private/b", b"1234567890")], &LIMITS),
            Err(MetadataRefused::TotalTooLarge { max: 40 })
        );
        // Shrinking passes even above a limit.
        assert_eq!(
            check_metadata(&two, 100, &[("/private/a".into(), None)], &LIMITS),
            Ok(())
        );
    }

    #[test]
    fn keepers() {
        assert_eq!(metadata_keeper(1, Some(2), "/shared/comment"), 2);
        assert_eq!(metadata_keeper(1, Some(2), "/private/comment"), 1);
        assert_eq!(metadata_keeper(1, None, "/shared/comment"), 1);
        assert_eq!(metadata_keeper(1, Some(2), "/shared"), 2);
        assert_eq!(metadata_prefix("/Shared").unwrap(), "/shared");
        assert!(metadata_prefix("/other").is_err());
        assert!(metadata_within("/shared/a/b", "/shared", Some(2)));
        assert!(!metadata_within("/shared/a/b", "/shared", Some(1)));
        let by = metadata_by_keeper(
            1,
            Some(2),
            &[("/private/a".into(), None), ("/shared/a".into(), None)],
        );
        assert_eq!(by.keys().copied().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn changes_keep_the_last_of_a_name() {
        let c = metadata_changes(vec![
            ("/Private/A".into(), Some(b"1".to_vec())),
            ("/private/a".into(), None),
        ])
        .unwrap();
        assert_eq!(c, vec![("/private/a".to_string(), None)]);
        assert!(metadata_changes(vec![("/x".into(), None)]).is_err());
    }
}
