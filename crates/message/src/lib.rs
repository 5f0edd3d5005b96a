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
