//! Just enough DER to find fields of an X.509 certificate (RFC 5280 4.1) without a full parser:
//! the doctor reads validity dates, DANE the SubjectPublicKeyInfo.

/// One DER element at the start of `b`: (tag, content, what follows).
pub fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, b.get(head..end)?, b.get(end..)?))
}

/// The SubjectPublicKeyInfo of a certificate, as DER (header included).
pub fn spki(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, validity, subject, then SPKI.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    for _ in 0..5 {
        rest = tlv(rest)?.2;
    }
    let (tag, _, after) = tlv(rest)?;
    (tag == 0x30).then(|| &rest[..rest.len() - after.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_and_bounds() {
        assert_eq!(
            tlv(b"\x02\x01\x05rest"),
            Some((2, &b"\x05"[..], &b"rest"[..]))
        );
        assert_eq!(
            tlv(b"\x30\x82\x00\x01\x00"),
            Some((0x30, &b"\x00"[..], &b""[..]))
        );
        assert_eq!(tlv(b"\x30\x80"), None);
        assert_eq!(tlv(b"\x30\x05ab"), None);
        assert_eq!(spki(b"\x30\x84\xff"), None);
    }
}
