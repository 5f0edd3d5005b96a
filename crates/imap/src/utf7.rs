//! Modified UTF-7 mailbox names (RFC 3501 5.1.3), for clients that have not enabled UTF-8.

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

pub fn encode(s: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            let k = chunk.len() + 1;
            for i in 0..k {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// `None` when the name is not valid modified UTF-7.
pub fn decode(s: &str) -> Option<String> {
    if !s.contains('&') {
        return Some(s.to_string());
    }
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'&' {
            out.push(b[i] as char);
            if b[i] >= 0x80 {
                // Raw 8-bit text: take the name as UTF-8 as sent.
                return Some(s.to_string());
            }
            i += 1;
            continue;
        }
        let end = i + 1 + s[i + 1..].find('-')?;
        let enc = &b[i + 1..end];
        i = end + 1;
        if enc.is_empty() {
            out.push('&');
            continue;
        }
        let mut bits = 0u32;
        let mut nbits = 0;
        let mut bytes = Vec::new();
        for &c in enc {
            let v = B64.iter().position(|&x| x == c)? as u32;
            bits = bits << 6 | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                bytes.push((bits >> nbits) as u8);
                bits &= (1 << nbits) - 1;
            }
        }
        let units: Vec<u16> = bytes
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        out.push_str(&String::from_utf16(&units).ok()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (utf8, utf7) in [
            ("Entwürfe", "Entw&APw-rfe"),
            ("&", "&-"),
            ("台北", "&U,BTFw-"),
            ("Plain", "Plain"),
            ("A&B~", "A&-B~"),
        ] {
            assert_eq!(encode(utf8), utf7);
            assert_eq!(decode(utf7).as_deref(), Some(utf8));
        }
        assert_eq!(decode("bad&"), None);
    }
}
