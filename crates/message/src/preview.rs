//! A message's preview (IMAP PREVIEW, RFC 8970): the start of its first text part as one line.

use mail_parser::PartType;
use mail_parser::decoders::html::html_to_text;

/// RFC 8970 3.1: a preview is at most 256 characters.
pub const PREVIEW_CHARS: usize = 256;

/// The first text part (text/plain preferred; text/html with its markup removed), whitespace
/// runs made one space, cut to [`PREVIEW_CHARS`] characters. Empty for a message without text.
pub fn preview(raw: &[u8]) -> String {
    let Some(msg) = crate::parse(raw) else {
        return String::new();
    };
    // mail-parser lists the parts a reader would show: text_body holds the text/plain
    // alternatives, or the HTML ones where a message has no plain text.
    let part = msg
        .text_body
        .iter()
        .chain(&msg.html_body)
        .filter_map(|&i| msg.parts.get(i as usize))
        .find(|p| matches!(p.body, PartType::Text(_) | PartType::Html(_)));
    match part.map(|p| &p.body) {
        Some(PartType::Text(t)) => one_line(t),
        Some(PartType::Html(h)) => one_line(&html_to_text(h)),
        _ => String::new(),
    }
}

/// Whitespace runs as one space, control characters dropped, cut to the preview length.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() {
            continue;
        }
        let needed = if space { 2 } else { 1 };
        if chars + needed > PREVIEW_CHARS {
            break;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        chars += needed;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_collapsed() {
        let m = b"Subject: x\r\n\r\n  Hello,\r\n\r\n\tworld  \r\n";
        assert_eq!(preview(m), "Hello, world");
    }

    #[test]
    fn plain_preferred_over_html() {
        let m = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/html\r\n\r\n<p>html <b>version</b></p>\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nplain version\r\n--b--\r\n";
        assert_eq!(preview(m), "plain version");
    }

    #[test]
    fn html_without_tags() {
        let m = b"Content-Type: text/html\r\n\r\n<html><head><style>p{}</style></head>\
<body><p>Hi <b>there</b></p><p>again &amp; again</p></body></html>\r\n";
        assert_eq!(preview(m), "Hi there again & again");
    }

    #[test]
    fn decoded_and_cut_to_256_characters() {
        let body = "é".repeat(300);
        let m = format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
        );
        let p = preview(m.as_bytes());
        assert_eq!(p.chars().count(), 256);
        assert!(p.chars().all(|c| c == 'é'));
        let m = b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nau lait\r\n";
        assert_eq!(preview(m), "café au lait");
    }

    #[test]
    fn no_text_is_empty() {
        let m = b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n";
        assert_eq!(preview(m), "");
        assert_eq!(preview(b"Subject: nothing\r\n\r\n"), "");
        assert_eq!(preview(b""), "");
    }
}
