//! The rules every backend follows, written once: what a change does to a mailbox's counters,

//! flags and modseqs, what a quota lets in, how names and keys are spelled. Backends only

//! read and write what these decide.

use crate::*;

/// "inbox" and "Inbox/x" name the INBOX (RFC 3501 5.1).
pub fn normalize_mailbox_name(name: &str) -> String {
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if first.eq_ignore_ascii_case(INBOX) {
        match rest {
            Some(r) => format!("{INBOX}/{r}"),
            None => INBOX.to_string(),
        }
    } else {
        name.to_string()
    }
}
