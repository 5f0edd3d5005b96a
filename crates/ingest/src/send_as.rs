//! Who a logged-in user's message says it is from: each `From:` address of our domains must be
//! the user's own, or one they have a send-as grant for (`postern send-as add`); on behalf of
//! it, `Sender:` must be the user. Addresses of other domains are not ours to judge (their
//! DMARC is). A message sent as a shared mailbox leaves a copy in that mailbox's Sent folder.

use postern_directory::{Directory, SendRight, domain_of};
use postern_store::{Account, DeliveryTarget, Flags, SendAs, SpecialUse, StoreError, TraceEvent};

use crate::prepared::{into_folder, into_mailbox};
use crate::{Outcome, Status};

/// A copy for a shared mailbox the message was sent as.
pub struct SentCopy {
    pub account: Account,
    pub folder: String,
    pub target: DeliveryTarget,
}

/// What the check decided, for the commit: trace lines, and the Sent copies.
#[derive(Default)]
pub struct SentAs {
    /// (address sent as, what was decided), e.g. "sent as info@ by alice@ (send-as grant)".
    pub notes: Vec<(String, String)>,
    pub copies: Vec<SentCopy>,
}

impl SentAs {
    /// The decisions as trace events, found by the address sent as too.
    pub fn events(&self, trace_id: &str) -> Vec<TraceEvent> {
        self.notes
            .iter()
            .map(|(address, text)| {
                TraceEvent::new(trace_id, "sender", text.clone()).key(format!("from:{address}"))
            })
            .collect()
    }
}

fn refused(text: String) -> Outcome {
    Outcome::Refused {
        status: Status::new(553, "5.7.1", text),
        why: "sender",
    }
}

fn failed(error: StoreError) -> Outcome {
    Outcome::Failed {
        status: Status::temporary(&error),
        error,
    }
}

/// Checks the header's `From:` addresses (`authors`) and `Sender:` of a message `user` sent;
/// `Err` is what the client is told.
pub async fn check(
    directory: &Directory,
    user: &Account,
    authors: &[String],
    sender: Option<&str>,
) -> Result<SentAs, Outcome> {
    let me = user.address.as_str();
    let ours = |a: &str| {
        let d = domain_of(a).to_string();
        async move { directory.is_local_domain(&d).await }
    };
    let mut out = SentAs::default();
    // Sender: names who sent it: the user, or an address they may send as.
    let sender_is_me = match sender {
        None => false,
        Some(s) => directory.owns_address(user, s).await.map_err(failed)?,
    };
    if let Some(s) = sender
        && !sender_is_me
        && ours(s).await.map_err(failed)?
    {
        match directory.send_as_grant(user, s).await.map_err(failed)? {
            Some(SendAs::As) => out.notes.push((
                s.to_string(),
                format!("Sender: {s} set by {me} (send-as grant)"),
            )),
            _ => {
                return Err(refused(format!(
                    "Sender: <{s}> is not yours: you are logged in as {me}; put your own address in Sender: (or leave it out)"
                )));
            }
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for a in authors {
        if seen.contains(&a.as_str()) || !ours(a).await.map_err(failed)? {
            continue;
        }
        seen.push(a);
        let text = match directory.sending_right(user, a).await.map_err(failed)? {
            Some(SendRight::Own) => continue,
            Some(SendRight::Granted(SendAs::As)) => {
                format!("sent as {a} by {me} (send-as grant)")
            }
            Some(SendRight::Granted(SendAs::OnBehalf)) if sender_is_me => {
                format!(
                    "sent on behalf of {a} by {me} (Sender: {})",
                    sender.unwrap_or(me)
                )
            }
            Some(SendRight::Granted(SendAs::OnBehalf)) => {
                return Err(refused(format!(
                    "From: <{a}> is not yours: you ({me}) may send on behalf of it only with Sender: {me}"
                )));
            }
            None => {
                return Err(refused(format!(
                    "From: <{a}> is not yours: you are logged in as {me}; send from your own address, or ask the administrator: postern send-as add {a} {me}"
                )));
            }
        };
        out.notes.push((a.clone(), text));
        if let Some(copy) = sent_copy(directory, a).await.map_err(failed)? {
            out.copies.push(copy);
        }
    }
    Ok(out)
}

/// The copy for the Sent folder of the shared mailbox at `address`, seen; none when the
/// address is no shared mailbox.
async fn sent_copy(directory: &Directory, address: &str) -> Result<Option<SentCopy>, StoreError> {
    let Some(acc) = directory.lookup_account(address).await? else {
        return Ok(None);
    };
    if !acc.shared {
        return Ok(None);
    }
    let seen = Flags {
        bits: Flags::SEEN,
        keywords: Vec::new(),
    };
    let sent = directory
        .store()
        .mailbox_list(acc.id)
        .await?
        .into_iter()
        .find(|m| m.special_use == Some(SpecialUse::Sent));
    let (folder, target) = match sent {
        Some(m) => (m.name, into_mailbox(acc.id, m.id, seen, false)),
        // Deleted by a member: made again under the usual name.
        None => ("Sent".to_string(), into_folder(acc.id, "Sent", seen, true)),
    };
    Ok(Some(SentCopy {
        account: acc,
        folder,
        target,
    }))
}
