//! Message ingest: parse once at delivery (structure, ENVELOPE, BODYSTRUCTURE), trace ids and
//! trace headers (Received, Return-Path).

pub mod address;
pub mod meta;
pub mod text;
pub mod trace;

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
fn base64_lines(data: &[u8]) -> Vec<u8> {
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
