//! What a reader teaches by moving mail: into Junk, that its sender sends junk; out of Junk
//! (but not to the Trash), that its sender is trusted. Delivery follows what the user taught.
//! IMAP moves and the webmail's actions both teach through here.

use postern_store::{Mailbox, SpecialUse, Store, Uid};

/// Teaches from messages just moved from a folder of `source` use into `target`, by their
/// new UIDs there.
pub async fn learn(store: &dyn Store, source: Option<SpecialUse>, target: &Mailbox, moved: &[Uid]) {
    let junk = SpecialUse::Junk;
    let verdict = match (source == Some(junk), target.special_use) {
        (false, Some(SpecialUse::Junk)) => true,
        (true, Some(SpecialUse::Junk | SpecialUse::Trash)) => return,
        (true, _) => false,
        (false, _) => return,
    };
    let mut blobs = Vec::new();
    // Bounded: a folder of thousands moved at once teaches by its first hundred.
    for uid in moved.iter().take(100) {
        if let Ok(Some(e)) = store.message_get(target.id, *uid).await {
            blobs.push(e.blob);
        }
    }
    let Ok(heads) = store
        .blob_heads(&blobs, postern_message::MessageMeta::header_len_of)
        .await
    else {
        return;
    };
    let mut senders: Vec<String> = Vec::new();
    for head in heads.into_iter().flatten() {
        let from = postern_message::first_from(&head).map(|a| a.to_ascii_lowercase());
        if let Some(f) = from
            && !senders.contains(&f)
        {
            senders.push(f);
        }
    }
    for s in senders {
        let _ = store
            .sender_verdict_set(target.account, &s, Some(verdict))
            .await;
    }
}
