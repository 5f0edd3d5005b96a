//! Sharing: access lists on mailboxes (RFC 4314), each reader's own \Seen in a mailbox shared
//! with them, and who may send as (or on behalf of) another address.

use serde::{Deserialize, Serialize};

/// RFC 4314 rights, as a set of letters. The obsolete `c` and `d` are taken as the rights
/// they stand for (RFC 4314 2.1.1), so a set holds only the eleven of 2.1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rights(u16);

impl Rights {
    /// Every right, in the order RFC 4314 lists them.
    pub const LETTERS: &'static str = "lrswipkxtea";
    pub const LOOKUP: Rights = Rights(1);
    pub const READ: Rights = Rights(1 << 1);
    pub const SEEN: Rights = Rights(1 << 2);
    pub const WRITE: Rights = Rights(1 << 3);
    pub const INSERT: Rights = Rights(1 << 4);
    pub const POST: Rights = Rights(1 << 5);
    pub const CREATE: Rights = Rights(1 << 6);
    pub const DELETE_MAILBOX: Rights = Rights(1 << 7);
    pub const DELETE_MESSAGES: Rights = Rights(1 << 8);
    pub const EXPUNGE: Rights = Rights(1 << 9);
    pub const ADMINISTER: Rights = Rights(1 << 10);
    pub const ALL: Rights = Rights((1 << 11) - 1);
    pub const NONE: Rights = Rights(0);

    /// The letters as a set; `Err` names the first letter that is no right.
    pub fn parse(letters: &str) -> Result<Rights, char> {
        let mut r = Rights::NONE;
        for c in letters.chars() {
            r = r | match c {
                'c' => Rights::CREATE,
                'd' => Rights::DELETE_MESSAGES | Rights::EXPUNGE | Rights::DELETE_MAILBOX,
                _ => match Rights::LETTERS.find(c) {
                    Some(i) => Rights(1 << i),
                    None => return Err(c),
                },
            };
        }
        Ok(r)
    }

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn without(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Rights {
    type Output = Rights;
    fn bitor(self, o: Rights) -> Rights {
        Rights(self.0 | o.0)
    }
}

impl Rights {
    /// As IMAP answers them: the letters, then `c` and `d` for clients of RFC 2086 (RFC 4314
    /// 2.1.1).
    pub fn imap(self) -> String {
        let mut s = self.to_string();
        if self.contains(Rights::CREATE) {
            s.push('c');
        }
        if self.contains(Rights::DELETE_MESSAGES | Rights::EXPUNGE) {
            s.push('d');
        }
        s
    }
}

impl std::fmt::Display for Rights {
    /// The letters in RFC order.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, c) in Rights::LETTERS.chars().enumerate() {
            if self.0 & (1 << i) != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One line of a mailbox's access list. The owner's rights are not kept: an owner has all.
///
/// `identifier` is an account's address (`bob@example.com`), `$` and a group's address
/// (`$team@example.com`: its members), `$` and a domain (`$example.com`: every account of it),
/// or `anyone` / `authenticated` (every account of the server; no one logs in anonymously).
/// Addresses and domains are lower case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    pub identifier: String,
    /// Letters as [`Rights`] writes them (`to_string`).
    pub rights: String,
}

/// How a delegate may send for another address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendAs {
    /// `From: address` as if the address's owner sent it.
    As,
    /// `From: address` with `Sender: delegate`.
    OnBehalf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAsGrant {
    /// The address sent for: an account, a shared mailbox or an alias. Lower case.
    pub address: String,
    /// The account that may send for it. Lower case.
    pub delegate: String,
    pub mode: SendAs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_parse_and_print() {
        let r = Rights::parse("lrs").unwrap();
        assert!(r.contains(Rights::LOOKUP | Rights::READ | Rights::SEEN));
        assert!(!r.contains(Rights::WRITE));
        assert_eq!(r.to_string(), "lrs");
        assert_eq!(Rights::parse("rl").unwrap().to_string(), "lr");
        assert_eq!(Rights::parse("z"), Err('z'));
        assert_eq!(Rights::parse("c").unwrap(), Rights::CREATE);
        assert_eq!(
            Rights::parse("d").unwrap(),
            Rights::parse("xte").unwrap(),
            "RFC 4314 2.1.1: d is the rights it was split into"
        );
        assert_eq!(Rights::ALL.to_string(), "lrswipkxtea");
        assert_eq!(Rights::ALL.imap(), "lrswipkxteacd");
        assert_eq!(
            Rights::parse(&Rights::ALL.to_string()).unwrap(),
            Rights::ALL
        );
        assert!(Rights::parse("").unwrap().is_empty());
    }
}
