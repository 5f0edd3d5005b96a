//! The few facts of an X.509 certificate the checks report (validity, self-signed), read from
//! its DER without a full parser.

use postern_net::der::tlv;

#[derive(Debug, Clone, PartialEq)]
pub struct CertFacts {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Issuer and subject are the same name: nobody vouches for it but itself.
    pub self_signed: bool,
}

pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // Optional [0] version.
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    let (_, _serial, r) = tlv(rest)?;
    let (_, _sig_alg, r) = tlv(r)?;
    let issuer_start = r;
    let (_, _, r) = tlv(r)?;
    let issuer = &issuer_start[..issuer_start.len() - r.len()];
    let (_, validity, r) = tlv(r)?;
    let subject_start = r;
    let (_, _, r) = tlv(r)?;
    let subject = &subject_start[..subject_start.len() - r.len()];
    let (t1, nb, v) = tlv(validity)?;
    let (t2, na, _) = tlv(v)?;
    Some(CertFacts {
        not_before: asn1_time(t1, nb)?,
        not_after: asn1_time(t2, na)?,
        self_signed: issuer == subject,
    })
}

/// UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ).
fn asn1_time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |i: usize| -> Option<u8> { rest.get(i..i + 2)?.parse().ok() };
    let month = time::Month::try_from(num(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, num(2)?).ok()?;
    let t = time::Time::from_hms(num(4)?, num(6)?, num(8)?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

pub fn format_date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_validity_of_a_generated_certificate() {
        let (pem, _) = postern_net::tls::generate_self_signed("mail.example.test").unwrap();
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let f = cert_facts(&der).expect("parsed");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(f.not_before <= now + 60 && f.not_after > now, "{f:?}");
        assert!(f.self_signed);
    }

    #[test]
    fn times() {
        assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(asn1_time(0x18, b"20380119031408Z"), Some(2147483648));
        assert_eq!(asn1_time(0x17, b"junk"), None);
        assert!(cert_facts(b"\x30\x84\xff").is_none());
    }
}
