//! METADATA (RFC 5464): GETMETADATA and SETMETADATA on a mailbox, or on the server (mailbox
//! ""). `/private` entries are each user's own, a mailbox's `/shared` entries one value for
//! everyone it is shared with (kept by its owner); on the server both are the user's own, as
//! Dovecot keeps them, except `/shared/admin`, the administrator's contact from the config.
//! Limits (`imap.metadata_*`) are checked by the store, atomically with the change.

use postern_store::{MetadataLimits, MetadataRefused, Rights, metadata_within};

use crate::core::{Fail, ImapCore, Res, no, ok, push};
use crate::format;
use crate::share::{Visible, noperm};

/// The server entry that says how to reach the administrator: read-only (RFC 5464 3.2.1.1).
const ADMIN: &str = "/shared/admin";

/// An entry's value: a quoted string when it can be one, else a literal (literal8 when it
/// holds NUL, RFC 5464 5).
fn value(out: &mut Vec<u8>, v: &[u8]) {
    if v.contains(&0) {
        push(out, &format!("~{{{}}}\r\n", v.len()));
        out.extend_from_slice(v);
    } else if v.is_ascii() {
        format::string(out, v);
    } else {
        format::literal(out, v);
    }
}

/// An entry name: an atom as RFC 5464 writes them, quoted when it holds what an atom may not.
fn entry_name(out: &mut Vec<u8>, name: &str) {
    if name
        .bytes()
        .all(|b| b > b' ' && b < 0x7f && !b"(){\"\\]%*".contains(&b))
    {
        push(out, name);
    } else {
        format::string(out, name.as_bytes());
    }
}

impl ImapCore {
    fn metadata_limits(&self) -> MetadataLimits {
        let c = &self.cfg.config.imap;
        MetadataLimits {
            max_value: c.metadata_max_value.0,
            max_entries: c.metadata_max_entries,
            max_total: c.metadata_max_total.0,
        }
    }

    /// `mailto:` the administrator: `imap.metadata_admin`, else postmaster at this host.
    fn admin_contact(&self) -> String {
        let c = &self.cfg.config;
        match c.imap.metadata_admin.as_str() {
            "" => format!("mailto:postmaster@{}", c.hostname),
            a if a.contains(':') => a.to_string(),
            a => format!("mailto:{a}"),
        }
    }

    /// The mailbox whose entries a command names: `None` for the server. RFC 5464 3.3: on a
    /// mailbox, the user needs `l` and one of `r`, `s`, `w`, `i`, `p`; changing its `/shared`
    /// entries (one value for all it is shared with) also needs `w`.
    async fn metadata_mailbox(
        &self,
        name: &str,
        shared_write: bool,
    ) -> Result<Option<Visible>, Fail> {
        if name.is_empty() {
            return Ok(None);
        }
        let v = self.open(name, Rights::LOOKUP).await?;
        let any = [
            Rights::READ,
            Rights::SEEN,
            Rights::WRITE,
            Rights::INSERT,
            Rights::POST,
        ];
        if !any.iter().any(|&r| v.rights.contains(r)) {
            return noperm(&v.mailbox.name, Rights::READ);
        }
        if shared_write && !v.rights.contains(Rights::WRITE) {
            return noperm(&v.mailbox.name, Rights::WRITE);
        }
        Ok(Some(v))
    }

    /// GETMETADATA (RFC 5464 4.2): each entry asked and, with DEPTH, those below it (NIL when
    /// there are none); MAXSIZE leaves out larger values and says how large the largest was.
    pub(crate) async fn get_metadata(
        &mut self,
        out: &mut Vec<u8>,
        name: &str,
        entries: &[String],
        max_size: Option<u64>,
        depth: Option<u32>,
    ) -> Res {
        let target = self.metadata_mailbox(name, false).await?;
        let mailbox = target.as_ref().map(|v| v.mailbox.id);
        let mut found: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for entry in entries {
            let mut got: Vec<(String, Option<Vec<u8>>)> = self
                .store()
                .metadata_get(self.account_id(), mailbox, entry, depth)
                .await?
                .into_iter()
                .map(|e| (e.name, Some(e.value)))
                .collect();
            if mailbox.is_none() && metadata_within(ADMIN, entry, depth) {
                got.retain(|(n, _)| n != ADMIN);
                got.push((ADMIN.into(), Some(self.admin_contact().into_bytes())));
                got.sort();
            }
            if got.is_empty() {
                got.push((entry.clone(), None));
            }
            for g in got {
                if !found.iter().any(|(n, _)| *n == g.0) {
                    found.push(g);
                }
            }
        }
        let mut longest = None;
        if let Some(max) = max_size {
            found.retain(|(_, v)| match v {
                Some(v) if v.len() as u64 > max => {
                    longest = longest.max(Some(v.len()));
                    false
                }
                _ => true,
            });
        }
        if !found.is_empty() {
            push(out, "* METADATA ");
            let shown = target.as_ref().map_or("", |v| v.mailbox.name.as_str());
            format::mailbox(out, shown, self.utf8);
            push(out, " (");
            for (i, (n, v)) in found.iter().enumerate() {
                if i > 0 {
                    push(out, " ");
                }
                entry_name(out, n);
                push(out, " ");
                match v {
                    Some(v) => value(out, v),
                    None => push(out, "NIL"),
                }
            }
            push(out, ")\r\n");
        }
        match longest {
            Some(n) => ok(&format!("[METADATA LONGENTRIES {n}] GETMETADATA completed")),
            None => ok("GETMETADATA completed"),
        }
    }

    /// RENAME INBOX: the new folder gets INBOX's entries, and INBOX keeps them (RFC 5464 4.1).
    /// Within the limits: entries they refuse stay on INBOX only.
    pub(crate) async fn copy_metadata(&self, from: u64, to: u64) -> Result<(), Fail> {
        let me = self.account_id();
        let mut changes = Vec::new();
        for kind in ["/private", "/shared"] {
            for e in self
                .store()
                .metadata_get(me, Some(from), kind, None)
                .await?
            {
                changes.push((e.name, Some(e.value)));
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let limits = self.metadata_limits();
        if let Err(refused) = self
            .store()
            .metadata_set(me, Some(to), changes, limits)
            .await?
        {
            tracing::info!(
                ?refused,
                "INBOX's METADATA entries not copied to its new name"
            );
        }
        Ok(())
    }

    /// SETMETADATA (RFC 5464 4.3): all the entries or none; NIL removes one.
    pub(crate) async fn set_metadata(
        &mut self,
        name: &str,
        changes: Vec<(String, Option<Vec<u8>>)>,
    ) -> Res {
        let shared = changes.iter().any(|(n, _)| n.starts_with("/shared/"));
        let target = self.metadata_mailbox(name, shared).await?;
        if target.is_none() && changes.iter().any(|(n, _)| n == ADMIN) {
            return no("[NOPERM] /shared/admin is set by the mail administrator");
        }
        let limits = self.metadata_limits();
        let r = self
            .store()
            .metadata_set(
                self.account_id(),
                target.map(|v| v.mailbox.id),
                changes,
                limits,
            )
            .await?;
        match r {
            Ok(()) => ok("SETMETADATA completed"),
            Err(MetadataRefused::TooLarge { max }) => no(format!(
                "[METADATA MAXSIZE {max}] A value may take at most {max} bytes"
            )),
            Err(MetadataRefused::TooMany { max }) => no(format!(
                "[METADATA TOOMANY] At most {max} entries per mailbox (and on the server): remove some first"
            )),
            Err(MetadataRefused::TotalTooLarge { max }) => no(format!(
                "[METADATA TOOMANY] Your entries may take at most {max} bytes in all: remove some first"
            )),
        }
    }
}
