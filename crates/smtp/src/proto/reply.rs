//! SMTP replies with enhanced status codes (RFC 2034, 3463).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// "x.y.z", or empty for replies that carry none (the greeting, EHLO).
    pub enhanced: &'static str,
    /// One entry per line.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: "",
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Wire form, CRLF-terminated; the enhanced code prefixes every line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(if i + 1 < n { b'-' } else { b' ' });
            if !self.enhanced.is_empty() {
                out.extend_from_slice(self.enhanced.as_bytes());
                out.push(b' ');
            }
            // Never let a reply carry a line break of its own.
            out.extend(
                text.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// The first line as text, for logs and traces.
    pub fn summary(&self) -> String {
        format!(
            "{} {}{}",
            self.code,
            if self.enhanced.is_empty() {
                String::new()
            } else {
                format!("{} ", self.enhanced)
            },
            self.lines.first().map(String::as_str).unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(
            Reply::new(250, "2.0.0", "OK").to_bytes(),
            b"250 2.0.0 OK\r\n"
        );
        assert_eq!(
            Reply::multi(250, vec!["a".into(), "b".into()]).to_bytes(),
            b"250-a\r\n250 b\r\n"
        );
        assert_eq!(
            Reply::new(550, "5.1.1", "x\r\ny").to_bytes(),
            b"550 5.1.1 x  y\r\n"
        );
    }
}
