//! Commands on messages of the selected mailbox besides FETCH, STORE and SEARCH: EXPUNGE,
//! CLOSE/UNSELECT, COPY/MOVE (with what a move into or out of Junk teaches the filter).

use postern_store::{Mailbox, Rights, SpecialUse, Uid};

use crate::core::{ImapCore, Res, State, no, ok, push};
use crate::format;
use crate::parse::SeqSet;

impl ImapCore {
    pub(crate) async fn expunge(&mut self, out: &mut Vec<u8>, uids: Option<SeqSet>) -> Res {
        let sel = self.selected.as_ref().expect("selected");
        if sel.read_only {
            return no("[READ-ONLY] The mailbox is open read-only (EXAMINE)");
        }
        if !sel.rights.contains(Rights::EXPUNGE) {
            return crate::share::noperm(&sel.mailbox.name, Rights::EXPUNGE);
        }
        let mbid = sel.mailbox.id;
        let entries = self.store().message_list(mbid).await?;
        let doomed: Vec<Uid> = entries
            .iter()
            .filter(|e| e.flags.deleted())
            .filter(|e| uids.as_ref().is_none_or(|s| s.contains(e.uid, u32::MAX)))
            .map(|e| e.uid)
            .collect();
        self.store().expunge(mbid, doomed).await?;
        self.sync(out, true).await?;
        ok("EXPUNGE completed")
    }

    pub(crate) async fn close_selected(&mut self, expunge: bool) -> Res {
        if let Some(sel) = self.selected.take()
            && expunge
            && !sel.read_only
            // Without the right, CLOSE only closes (RFC 4314 4).
            && sel.rights.contains(Rights::EXPUNGE)
        {
            let doomed: Vec<Uid> = self
                .store()
                .message_list(sel.mailbox.id)
                .await?
                .iter()
                .filter(|e| e.flags.deleted())
                .map(|e| e.uid)
                .collect();
            self.store().expunge(sel.mailbox.id, doomed).await?;
        }
        self.state = State::Authenticated;
        ok(if expunge {
            "CLOSE completed"
        } else {
            "UNSELECT completed"
        })
    }

    pub(crate) async fn copy(
        &mut self,
        out: &mut Vec<u8>,
        uid: bool,
        set: &SeqSet,
        name: &str,
        moving: bool,
    ) -> Res {
        let sel = self.selected.as_ref().expect("selected");
        if moving && sel.read_only {
            return no("[READ-ONLY] The mailbox is open read-only (EXAMINE)");
        }
        let take = Rights::DELETE_MESSAGES | Rights::EXPUNGE;
        if moving && !sel.rights.contains(take) {
            return crate::share::noperm(&sel.mailbox.name, Rights::EXPUNGE);
        }
        let target = match self.visible(name).await? {
            Some(v) if v.rights.contains(Rights::INSERT) => v.mailbox,
            Some(v) => return crate::share::noperm(&v.mailbox.name, Rights::INSERT),
            None => return no("[TRYCREATE] Mailbox does not exist; create it first"),
        };
        let sel = self.selected.as_ref().expect("selected");
        let from = sel.mailbox.id;
        let msgs = sel.resolve(set, uid);
        if msgs.is_empty() {
            return ok(if moving {
                "MOVE completed"
            } else {
                "COPY completed"
            });
        }
        let uids: Vec<Uid> = msgs.iter().map(|m| m.1).collect();
        let source_use = sel.mailbox.special_use;
        let pairs = self.store().copy(from, uids, target.id, moving).await?;
        self.learn_junk(source_use, &target, &pairs).await;
        let src: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
        let dst: Vec<Uid> = pairs.iter().map(|p| p.1).collect();
        let code = format!(
            "[COPYUID {} {} {}]",
            target.uidvalidity,
            format::seq_set(&src),
            format::seq_set(&dst)
        );
        if moving {
            push(out, &format!("* OK {code} Moved\r\n"));
            self.sync(out, true).await?;
            ok("MOVE completed")
        } else {
            ok(&format!("{code} COPY completed"))
        }
    }

    /// REPLACE (RFC 8508): the new message is stored first, so a failure leaves the old one;
    /// then the old one is expunged, as MOVE does.
    pub(crate) async fn replace(
        &mut self,
        out: &mut Vec<u8>,
        uid: bool,
        target: u32,
        name: &str,
        message: crate::parse::AppendMessage,
        sinks: Vec<postern_ingest::MessageSink>,
    ) -> Res {
        let sel = self.selected.as_ref().expect("selected");
        if sel.read_only {
            return no("[READ-ONLY] The mailbox is open read-only (EXAMINE)");
        }
        if !sel
            .rights
            .contains(Rights::DELETE_MESSAGES | Rights::EXPUNGE)
        {
            return crate::share::noperm(&sel.mailbox.name, Rights::EXPUNGE);
        }
        let old = if uid {
            match sel.uids.binary_search(&target) {
                Ok(_) => target,
                Err(_) => return no(format!("[NONEXISTENT] No message has UID {target}")),
            }
        } else {
            match sel.uids.get(target as usize - 1) {
                Some(&u) => u,
                None => {
                    return Err(crate::core::Fail::Bad(format!(
                        "No message has sequence number {target}"
                    )));
                }
            }
        };
        let mailbox = sel.mailbox.id;
        let appended = self.append(name, vec![message], sinks).await?;
        if let Some(code) = appended.split_once("] ").map(|(c, _)| c) {
            push(out, &format!("* OK {code}] Replacement Message ID\r\n"));
        }
        self.store().expunge(mailbox, vec![old]).await?;
        self.sync(out, true).await?;
        ok("REPLACE completed")
    }

    /// Mail moved into or out of Junk teaches the filter (`postern_ingest::junk`).
    async fn learn_junk(&self, source: Option<SpecialUse>, target: &Mailbox, pairs: &[(Uid, Uid)]) {
        let moved: Vec<Uid> = pairs.iter().map(|p| p.1).collect();
        postern_ingest::junk::learn(&**self.store(), source, target, &moved).await;
    }
}
