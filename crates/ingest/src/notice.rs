//! Notes the mail system writes to a user itself (the quota warning).

use postern_store::{Account, Flags, SharedStore};

use crate::prepared::{Prepared, into_folder};

/// Once a delivery takes a mailbox past 90% of its quota (bytes or messages), its owner
/// gets a note saying so, and what happens at 100%. Crossing is judged by this message
/// alone, so the note comes once per crossing without remembering anything.
pub async fn quota_warning(store: &SharedStore, acc: &Account, size: u64) {
    if acc.quota_bytes == 0 && acc.quota_messages == 0 {
        return;
    }
    let Ok(u) = store.account_usage(acc.id).await else {
        return;
    };
    let crossed = |used: u64, added: u64, quota: u64| {
        let mark = quota / 10 * 9;
        quota > 0 && used >= mark && used.saturating_sub(added) < mark
    };
    if !crossed(u.bytes, size, acc.quota_bytes) && !crossed(u.messages, 1, acc.quota_messages) {
        return;
    }
    let domain = postern_directory::domain_of(&acc.address);
    let mut limits = Vec::new();
    if acc.quota_bytes > 0 {
        limits.push(format!(
            "{} of {}",
            human_size(u.bytes),
            human_size(acc.quota_bytes)
        ));
    }
    if acc.quota_messages > 0 {
        limits.push(format!("{} of {} messages", u.messages, acc.quota_messages));
    }
    let text = format!(
        "From: Mail system <postmaster@{domain}>\r\nTo: <{to}>\r\nSubject: Your mailbox is 90% full\r\n\
         Date: {date}\r\nMessage-ID: <quota.{id}.{now}@{domain}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Your mailbox {to} now uses {used}.\r\n\r\n\
         When it is full, new mail to you is held back by the senders' servers (\"mailbox full\")\r\n\
         and returned to them if it stays full for days. Delete mail you no longer need, and\r\n\
         empty the Trash and Junk folders, or ask your administrator for more space.\r\n",
        to = acc.address,
        used = limits.join(" and "),
        date = postern_message::trace::rfc5322_date(time::OffsetDateTime::now_utc()),
        id = acc.id,
        now = postern_store::now(),
    )
    .into_bytes();
    let r = store
        .deliver(Prepared::new(text).deliver(
            postern_store::now(),
            vec![into_folder(
                acc.id,
                postern_store::INBOX,
                Flags::default(),
                false,
            )],
            None,
            Vec::new(),
        ))
        .await;
    if let Err(e) = r {
        tracing::warn!(account = %acc.address, error = %e, "quota warning not delivered");
    }
}

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} KB", n as f64 / 1024.0),
    }
}
