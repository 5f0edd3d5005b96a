//! Trace headers (RFC 5321 4.4) and the ids that name a message across the system.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short id unique on this server: milliseconds since the epoch, then a counter and a
/// random part, in upper-case hex (e.g. `19A2F3C4D5E1A3F07`).
pub fn new_trace_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff;
    let r: u16 = rand::random::<u16>() & 0xfff;
    format!("{ms:011X}{n:03X}{r:03X}")
}

/// "Sat, 28 Nov 2026 10:20:25 +0000" (RFC 5322 3.3).
pub fn rfc5322_date(t: time::OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let off = t.offset();
    let (h, m, _) = off.as_hms();
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        if off.is_negative() { '-' } else { '+' },
        h.unsigned_abs(),
        m.unsigned_abs()
    )
}

pub struct ReceivedInfo<'a> {
    pub helo: &'a str,
    pub ip: std::net::IpAddr,
    pub hostname: &'a str,
    /// RFC 3848 protocol: ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPS...
    pub protocol: String,
    pub id: &'a str,
    pub tls: Option<(&'a str, &'a str)>,
    pub user: Option<&'a str>,
    /// Named only when there is exactly one recipient (RFC 5321 7.6).
    pub for_rcpt: Option<&'a str>,
    pub date: time::OffsetDateTime,
}

pub fn protocol_name(esmtp: bool, tls: bool, auth: bool, utf8: bool) -> String {
    if !esmtp {
        return "SMTP".into();
    }
    let base = if utf8 { "UTF8SMTP" } else { "ESMTP" };
    format!(
        "{base}{}{}",
        if tls { "S" } else { "" },
        if auth { "A" } else { "" }
    )
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '(' && *c != ')')
        .take(255)
        .collect()
}

pub fn received_header(r: &ReceivedInfo) -> String {
    let ip = match r.ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let mut h = format!(
        "Received: from {} ([{ip}])\r\n\tby {} (Postern) with {} id {}",
        clean(r.helo),
        r.hostname,
        r.protocol,
        r.id
    );
    if let Some((version, cipher)) = r.tls {
        h.push_str(&format!(
            "\r\n\t(using {} with cipher {})",
            clean(version),
            clean(cipher)
        ));
    }
    if let Some(u) = r.user {
        h.push_str(&format!("\r\n\t(authenticated as {})", clean(u)));
    }
    if let Some(rcpt) = r.for_rcpt {
        h.push_str(&format!("\r\n\tfor <{}>", clean(rcpt)));
    }
    h.push_str(&format!("; {}\r\n", rfc5322_date(r.date)));
    h
}

pub fn return_path_header(sender: &str) -> String {
    format!("Return-Path: <{}>\r\n", clean(sender))
}

/// Received headers in a message's header section (mail loop detection).
pub fn count_received(message: &[u8]) -> usize {
    let mut n = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_short() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 17);
    }

    #[test]
    fn received() {
        let h = received_header(&ReceivedInfo {
            helo: "client.test",
            ip: "127.0.0.1".parse().unwrap(),
            hostname: "mx.example.test",
            protocol: protocol_name(true, true, true, false),
            id: "ABC",
            tls: Some(("TLS1.3", "TLS13_AES_256_GCM_SHA384")),
            user: Some("alice@example.test"),
            for_rcpt: Some("bob@example.test"),
            date: time::macros::datetime!(2026-11-28 10:20:25 UTC),
        });
        assert_eq!(
            h,
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.example.test (Postern) with ESMTPSA id ABC\r\n\t(using TLS1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\t(authenticated as alice@example.test)\r\n\tfor <bob@example.test>; Sat, 28 Nov 2026 10:20:25 +0000\r\n"
        );
    }

    #[test]
    fn counts_received_in_headers_only() {
        let m = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: in body\r\n";
        assert_eq!(count_received(m), 2);
    }
}
