//! What the webmail sends goes the way of authenticated SMTP submission: the user's hourly
//! limits, recipients routed as at RCPT, the size limit, then ingest with the user's account
//! (From and Sender checked against what they may send as), signing and the queue.

use postern_directory::normalize_address;
use postern_http::Outgoing;
use postern_ingest::{Arrival, Envelope, Incoming, Ingest, Outcome, Raw, Recipient};
use postern_smtp::abuse::Abuse;

pub async fn submit(ingest: &Ingest, abuse: &Abuse, out: Outgoing) -> Result<String, String> {
    let cfg = &*ingest.config;
    let directory = &ingest.directory;
    let user = out.account.address.clone();
    if out.message.len() as u64 > cfg.smtp.max_message_size.0 {
        return Err(format!(
            "the message is larger than this server takes (smtp.max_message_size, {} bytes)",
            cfg.smtp.max_message_size.0
        ));
    }
    if out.recipients.len() > cfg.smtp.max_recipients {
        return Err(format!(
            "at most {} recipients in one message (smtp.max_recipients)",
            cfg.smtp.max_recipients
        ));
    }
    if let Err(w) = abuse.message(&user, cfg.smtp.max_messages_per_hour).await {
        return Err(format!(
            "you have sent {} messages in the last hour, the most this server allows (smtp.max_messages_per_hour); try again {}",
            w.count,
            postern_smtp::abuse::in_words(w.left)
        ));
    }
    let mut rcpts: Vec<Recipient> = Vec::new();
    for r in &out.recipients {
        let address = normalize_address(r.trim().trim_matches(['<', '>']))
            .map_err(|e| format!("recipient {r}: {e}"))?;
        if rcpts
            .iter()
            .any(|x| x.address.eq_ignore_ascii_case(&address))
        {
            continue;
        }
        if let Err(w) = abuse
            .recipient(&user, cfg.smtp.max_recipients_per_hour)
            .await
        {
            return Err(format!(
                "you have sent to {} recipients in the last hour, the most this server allows (smtp.max_recipients_per_hour); try again {}",
                w.count,
                postern_smtp::abuse::in_words(w.left)
            ));
        }
        rcpts.push(crate::sendmail::recipient(directory, &user, address).await?);
    }
    if rcpts.is_empty() {
        return Err("give at least one recipient".into());
    }
    let trace_id = postern_message::new_trace_id();
    let return_path = postern_message::return_path_header(&user);
    let received = format!(
        "Received: by {} (Postern webmail) with HTTPSA id {trace_id};\r\n\t{}\r\n",
        cfg.hostname,
        postern_message::rfc5322_date(time::OffsetDateTime::now_utc())
    );
    let mut raw = Vec::with_capacity(return_path.len() + received.len() + out.message.len());
    raw.extend_from_slice(return_path.as_bytes());
    raw.extend_from_slice(received.as_bytes());
    raw.extend_from_slice(&out.message);
    let outcome = ingest
        .accept(Incoming {
            raw: Raw::Memory(raw),
            return_path_len: return_path.len(),
            ours: 1,
            envelope: Envelope {
                from: user.clone(),
                envid: None,
                ret: None,
                rcpts,
                requiretls: false,
            },
            arrival: Arrival {
                trace_id: trace_id.clone(),
                text: format!("from webmail user {user}"),
                message_id: None,
                checks: None,
            },
            check: None,
            submitter: Some(user.clone()),
            logged_in: true,
            sent_by: Some(out.account),
        })
        .await;
    match outcome {
        Outcome::Taken(_) => Ok(trace_id),
        other => Err(other.status().summary()),
    }
}
