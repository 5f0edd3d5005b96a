//! Delivery status notifications (RFC 3464): a multipart/report with a human part that quotes
//! the remote server and says what it likely means, the machine-readable status, and the
//! original message (or its header, for RET=HDRS).

use postern_store::{DsnRet, QueueEntry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
        }
    }
}

pub struct Report<'a> {
    pub address: &'a str,
    pub orcpt: Option<&'a str>,
    pub action: Action,
    /// "5.1.1"
    pub status: String,
    /// The remote host, when one answered.
    pub remote: Option<String>,
    /// The remote reply or our own reason, verbatim.
    pub diagnostic: String,
}

/// What a remote status most likely means, for a person.
pub fn explain(status: &str, diagnostic: &str) -> &'static str {
    let d = diagnostic.to_ascii_lowercase();
    match status {
        s if s.starts_with("5.1.1") || s.starts_with("5.1.10") => {
            "The address does not exist at the destination. Check it for typing mistakes."
        }
        s if s.starts_with("5.1.2") || s.starts_with("5.4.4") => {
            "The recipient's domain cannot receive mail: it does not exist or has no mail server. Check the part after the @."
        }
        s if s.starts_with("5.2.2") || s.starts_with("4.2.2") => {
            "The recipient's mailbox is full. They need to delete some mail; you can try again later."
        }
        s if s.starts_with("5.3.4") || s.starts_with("5.2.3") => {
            "The message is too large for the receiving server. Send smaller attachments or share a link instead."
        }
        s if s.starts_with("5.7.26")
            || s.starts_with("5.7.23")
            || s.starts_with("5.7.25")
            || d.contains("spf")
            || d.contains("dmarc")
            || d.contains("dkim") =>
        {
            "The receiving server did not trust where this message came from (SPF, DKIM or DMARC). The sender's domain administrator should check its DNS records (postern dns --check)."
        }
        s if s.starts_with("5.7.") => {
            "The receiving server refused the message by policy (for example as spam, or because of a block list)."
        }
        s if s.starts_with("5.6.7") => {
            "The receiving server cannot take addresses with non-ASCII characters."
        }
        s if s.starts_with("4.") => "A temporary problem; delivery is being retried.",
        _ if d.contains("timed out") || d.contains("connect") => {
            "The receiving server could not be reached for days. It may be down, or the domain's MX records may be wrong."
        }
        _ => "The receiving server refused the message; its reply above says why.",
    }
}

fn boundary(id: &str) -> String {
    format!("=_postern_{id}")
}

/// Builds the notification. `original` is the message as queued (from its body offset).
pub fn build(hostname: &str, entry: &QueueEntry, reports: &[Report], original: &[u8]) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    let date = postern_message::rfc5322_date(now);
    let id = postern_message::new_trace_id();
    let b = boundary(&id);
    let any_failed = reports.iter().any(|r| r.action == Action::Failed);
    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else if reports.iter().all(|r| r.action == Action::Delivered) {
        "Successful Mail Delivery Report"
    } else {
        "Delayed Mail (still being retried)"
    };
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    m.push_str(&format!("To: <{}>\r\n", entry.sender));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{b}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");
    m.push_str(&format!("--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"));
    m.push_str(&format!("This is the mail system at {hostname}.\r\n\r\n"));
    match (any_failed, reports.iter().all(|r| r.action == Action::Delivered)) {
        (true, _) => m.push_str("Your message could not be delivered to one or more recipients.\r\nIt is attached below.\r\n\r\n"),
        (false, true) => m.push_str("Your message was delivered to the recipients below, as you asked to be told.\r\n\r\n"),
        _ => m.push_str("Your message has not been delivered yet to the recipients below. Delivery will be\r\ntried again; you do not need to send it again.\r\n\r\n"),
    }
    for r in reports {
        m.push_str(&format!("<{}>: {}\r\n", r.address, r.action.word()));
        match &r.remote {
            Some(h) => m.push_str(&format!("    {h} said: {}\r\n", r.diagnostic)),
            None => m.push_str(&format!("    {}\r\n", r.diagnostic)),
        }
        if r.action != Action::Delivered {
            m.push_str(&format!(
                "    What it likely means: {}\r\n",
                explain(&r.status, &r.diagnostic)
            ));
        }
        m.push_str("\r\n");
    }
    m.push_str(&format!(
        "--{b}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    m.push_str(&format!("X-Postern-Queue-ID: {}\r\n", entry.trace_id));
    if let Some(e) = &entry.envid {
        m.push_str(&format!("Original-Envelope-Id: {e}\r\n"));
    }
    let arrival = time::OffsetDateTime::from_unix_timestamp(entry.created).unwrap_or(now);
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        postern_message::rfc5322_date(arrival)
    ));
    for r in reports {
        m.push_str("\r\n");
        if let Some(o) = r.orcpt {
            m.push_str(&format!("Original-Recipient: {o}\r\n"));
        }
        m.push_str(&format!("Final-Recipient: rfc822; {}\r\n", r.address));
        m.push_str(&format!("Action: {}\r\n", r.action.word()));
        m.push_str(&format!("Status: {}\r\n", r.status));
        if let Some(h) = &r.remote {
            m.push_str(&format!(
                "Remote-MTA: dns; {}\r\n",
                h.split('[').next().unwrap_or(h)
            ));
            m.push_str(&format!(
                "Diagnostic-Code: smtp; {}\r\n",
                r.diagnostic.replace(['\r', '\n'], " ")
            ));
        } else {
            m.push_str(&format!(
                "Diagnostic-Code: x-postern; {}\r\n",
                r.diagnostic.replace(['\r', '\n'], " ")
            ));
        }
        m.push_str(&format!("Last-Attempt-Date: {date}\r\n"));
    }
    let headers_only = entry.ret == Some(DsnRet::Headers) || !any_failed;
    let mut out = m.into_bytes();
    if headers_only {
        out.extend_from_slice(
            format!("\r\n--{b}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
        );
        let end = original
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 2)
            .unwrap_or(original.len());
        out.extend_from_slice(&original[..end]);
    } else {
        out.extend_from_slice(
            format!("\r\n--{b}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(original);
        if !original.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_store::{QueueRecipient, RecipientState};

    fn entry() -> QueueEntry {
        QueueEntry {
            id: 1,
            blob: 1,
            size: 10,
            sender: "alice@example.test".into(),
            recipients: vec![QueueRecipient {
                address: "bob@far.test".into(),
                orcpt: None,
                notify: None,
                state: RecipientState::Failed,
                last_error: None,
            }],
            envid: Some("E1".into()),
            ret: None,
            trace_id: "T1".into(),
            authenticated: None,
            requiretls: false,
            body_offset: 0,
            created: 1_795_860_000,
            next_attempt: 0,
            attempts: 1,
            last_error: None,
            warned: false,
            bounce: false,
        }
    }

    #[test]
    fn failure_report_is_a_well_formed_multipart_report() {
        let orig = b"Subject: hi\r\n\r\nbody\r\n";
        let r = Report {
            address: "bob@far.test",
            orcpt: Some("rfc822;bob@far.test"),
            action: Action::Failed,
            status: "5.1.1".into(),
            remote: Some("mx.far.test[192.0.2.1]".into()),
            diagnostic: "550 5.1.1 User unknown".into(),
        };
        let m = String::from_utf8(build("mail.example.test", &entry(), &[r], orig)).unwrap();
        assert!(m.contains("Subject: Undelivered Mail Returned to Sender"));
        assert!(m.contains("mx.far.test[192.0.2.1] said: 550 5.1.1 User unknown"));
        assert!(m.contains("What it likely means: The address does not exist"));
        assert!(m.contains("Final-Recipient: rfc822; bob@far.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.far.test\r\n"));
        assert!(m.contains("Original-Envelope-Id: E1"));
        assert!(m.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nbody\r\n"));
        let parsed = postern_message::parse(m.as_bytes()).unwrap();
        assert_eq!(
            parsed.parts.len(),
            4,
            "the report, the text, the status, the message"
        );
        assert!(
            postern_message::meta::compute(m.as_bytes())
                .part(&[3])
                .is_some_and(|p| p.message.is_some()),
            "the returned message is a message/rfc822 part"
        );
    }
}
