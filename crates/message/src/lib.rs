//! Message ingest: parse once at delivery (structure, ENVELOPE, BODYSTRUCTURE), trace ids and
//! trace headers (Received, Return-Path).

pub mod address;
pub mod meta;
pub mod preview;
pub mod sort;
pub mod text;
pub mod trace;
pub mod view;
pub mod write;

pub use meta::{MessageMeta, Part};

/// Parses a message with mail-parser, treating a panic inside it (its debug assertions fire on
/// some corrupt MIME) like an unparsable message, so hostile mail never takes a session down.
pub fn parse(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse(raw))
        .ok()
        .flatten()
}
pub use trace::{
    ReceivedInfo, count_received, new_trace_id, received_header, return_path_header, rfc5322_date,
};

/// The first author's address of a message we made (a vacation reply), as written.
pub fn first_from(raw: &[u8]) -> Option<String> {
    let m = std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse_headers(raw))
        .ok()
        .flatten()?;
    m.from()?.first()?.address().map(str::to_string)
}

/// A part's content with its Content-Transfer-Encoding removed (RFC 3516 BINARY): `None` for
/// an encoding we do not know.
pub fn decode_transfer(encoding: &str, raw: &[u8]) -> Option<Vec<u8>> {
    match encoding {
        "7bit" | "8bit" | "binary" => Some(raw.to_vec()),
        "base64" => Some(mail_parser::decoders::base64::base64_decode(raw).unwrap_or_default()),
        "quoted-printable" => Some(
            mail_parser::decoders::quoted_printable::quoted_printable_decode(raw)
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// A message whose parts carry raw binary (`Content-Transfer-Encoding: binary`, as a BINARY
/// APPEND may bring, RFC 3516 4.4) made into one every mail program can read: those parts
/// base64-encoded and their encoding field changed, as Dovecot does. FETCH BINARY still gives
/// the original bytes. `None` when no part needs it.
pub fn binary_to_base64(raw: &[u8]) -> Option<Vec<u8>> {
    use mail_parser::{HeaderName, PartType};
    let msg = parse(raw)?;
    // (the encoding field's value, the body) of each part to encode, in order.
    let mut edits: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
    for part in &msg.parts {
        if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
            continue;
        }
        let Some(h) = part
            .headers
            .iter()
            .find(|h| h.name == HeaderName::ContentTransferEncoding)
        else {
            continue;
        };
        let value = raw.get(h.offset_start as usize..h.offset_end as usize)?;
        if value.trim_ascii().eq_ignore_ascii_case(b"binary") {
            edits.push((
                h.offset_start as usize..h.offset_end as usize,
                part.offset_body as usize
                    ..(part.offset_end as usize).max(part.offset_body as usize),
            ));
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| e.0.start);
    let mut out = Vec::with_capacity(raw.len() * 4 / 3 + 256);
    let mut at = 0;
    for (field, body) in edits {
        if field.start < at || body.start < field.end || body.end > raw.len() {
            return None;
        }
        out.extend_from_slice(&raw[at..field.start]);
        out.extend_from_slice(b" base64\r\n");
        out.extend_from_slice(&raw[field.end..body.start]);
        let encoded = base64_lines(&raw[body.clone()]);
        out.extend_from_slice(&encoded);
        at = body.end;
    }
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

/// Base64 in lines of 76 characters, CRLF between them (RFC 2045 6.8).
pub(crate) fn base64_lines(data: &[u8]) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 4);
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.extend_from_slice(b"\r\n");
        }
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn binary_parts_become_base64() {
        let raw = b"From: a@b.test\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\n\r\n\n";
        let out = super::binary_to_base64(raw).unwrap();
        assert_eq!(
            out,
            b"From: a@b.test\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAC3kCg0KCg=="
        );
        let m = super::meta::compute(&out);
        let p = m.part(&[1]).unwrap();
        assert_eq!(
            super::decode_transfer(&p.encoding, &out[p.body as usize..p.end as usize]).unwrap(),
            b"\x00-\xe4\n\r\n\n"
        );
        assert!(super::binary_to_base64(b"Subject: x\r\n\r\ntext\r\n").is_none());
        let long = super::base64_lines(&[7u8; 100]);
        assert_eq!(long.split(|&b| b == b'\n').next().unwrap().len(), 77);
    }
}

/// The longest line RFC 5322 2.1.1 allows, without its CRLF.
pub const MAX_LINE: usize = 998;

/// Whether the message has a line longer than `max` octets (its CRLF not counted).
pub fn has_long_lines(raw: &[u8], max: usize) -> bool {
    let mut start = 0;
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |i| start + i);
        let line = &raw[start..end];
        let len = line.len() - usize::from(line.last() == Some(&b'\r'));
        if len > max {
            return true;
        }
        start = end + 1;
    }
    false
}

/// The message with every text part that has a line over `max` octets re-encoded as
/// quoted-printable (RFC 2045 6.7), whose lines are short: how our users' mail with such lines
/// leaves, and how mail passing through is sent again to a server that refused its lines.
/// Header lines are left alone. `None` when no part needs it.
pub fn reencode_long_lines(raw: &[u8], max: usize) -> Option<Vec<u8>> {
    use mail_parser::{HeaderName, PartType};
    let msg = parse(raw)?;
    // (where a Content-Transfer-Encoding field is, or where one goes; the body) of each part.
    let mut edits: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
    for part in &msg.parts {
        if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
            continue;
        }
        let body =
            part.offset_body as usize..(part.offset_end as usize).max(part.offset_body as usize);
        if body.end > raw.len() || !has_long_lines(&raw[body.clone()], max) {
            continue;
        }
        let cte = part
            .headers
            .iter()
            .find(|h| h.name == HeaderName::ContentTransferEncoding);
        let field = match cte {
            Some(h) => {
                let v = raw.get(h.offset_start as usize..h.offset_end as usize)?;
                let v = v.trim_ascii().to_ascii_lowercase();
                if !matches!(v.as_slice(), b"7bit" | b"8bit" | b"binary") {
                    // Already encoded (base64, quoted-printable): its lines are the sender's.
                    continue;
                }
                h.offset_field as usize..h.offset_end as usize
            }
            // No field: one goes at the end of the part's header.
            None => {
                let at = (part.offset_body as usize)
                    .saturating_sub(2)
                    .max(part.offset_header as usize);
                at..at
            }
        };
        edits.push((field, body));
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| e.0.start);
    let mime = msg
        .parts
        .first()
        .is_some_and(|p| p.headers.iter().any(|h| h.name == HeaderName::MimeVersion));
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20 + 64);
    let mut at = 0;
    for (i, (field, body)) in edits.into_iter().enumerate() {
        if field.start < at || body.start < field.end {
            return None;
        }
        out.extend_from_slice(&raw[at..field.start]);
        // A message that was not MIME becomes one, so the encoding is read.
        if i == 0 && !mime && field.start <= msg.parts[0].offset_body as usize {
            out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        }
        out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n");
        out.extend_from_slice(&raw[field.end..body.start]);
        quoted_printable(&raw[body.clone()], &mut out);
        at = body.end;
    }
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

/// Quoted-printable with CRLF line ends kept and soft breaks before 76 characters.
fn quoted_printable(data: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut col = 0;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            col = 0;
            i += 2;
            continue;
        }
        let at_line_end = matches!(data.get(i + 1), None | Some(b'\r'));
        let literal =
            (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !at_line_end;
        let width = if literal { 1 } else { 3 };
        if col + width > 75 {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
        col += width;
        i += 1;
    }
}

#[cfg(test)]
mod long_line_tests {
    use super::*;

    #[test]
    fn long_lines_become_quoted_printable() {
        let line = "x=".repeat(10_000);
        let raw = format!("From: a@b.test\r\nSubject: s\r\n\r\nshort\r\n{line}\r\nend \r\n");
        assert!(has_long_lines(raw.as_bytes(), MAX_LINE));
        let out = reencode_long_lines(raw.as_bytes(), MAX_LINE).unwrap();
        assert!(!has_long_lines(&out, 76));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("From: a@b.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{text}");
        let m = meta::compute(&out);
        let p = m.part(&[1]).unwrap();
        let body = decode_transfer(&p.encoding, &out[p.body as usize..p.end as usize]).unwrap();
        assert_eq!(body, format!("short\r\n{line}\r\nend \r\n").as_bytes());
        assert!(reencode_long_lines(b"Subject: fine\r\n\r\nshort\r\n", MAX_LINE).is_none());
    }
}
