//! SASL PLAIN (RFC 4616) and LOGIN decoding, shared by SMTP, POP3 and IMAP.

use base64::Engine;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("the client cancelled authentication")]
    Cancelled,
    #[error("the response is not valid base64")]
    BadBase64,
    #[error("the credentials are malformed")]
    Malformed,
    #[error("authorization identity differs from the user")]
    AuthzMismatch,
}

pub fn decode_base64(s: &str) -> Result<Vec<u8>, SaslError> {
    let s = s.trim();
    if s == "*" {
        return Err(SaslError::Cancelled);
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| SaslError::BadBase64)
}

fn clean(b: &[u8]) -> Result<String, SaslError> {
    // NUL, CR and LF never belong inside a user name or password.
    if b.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n') {
        return Err(SaslError::Malformed);
    }
    String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed)
}

/// `[authzid] NUL authcid NUL passwd`, base64. Returns (user, password).
pub fn decode_plain(b64: &str) -> Result<(String, String), SaslError> {
    let raw = decode_base64(b64)?;
    let parts: Vec<&[u8]> = raw.split(|&c| c == 0).collect();
    if parts.len() != 3 {
        return Err(SaslError::Malformed);
    }
    let authz = clean(parts[0])?;
    let user = clean(parts[1])?;
    let pass = clean(parts[2])?;
    if user.is_empty() || pass.is_empty() {
        return Err(SaslError::Malformed);
    }
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(&user) {
        return Err(SaslError::AuthzMismatch);
    }
    Ok((user, pass))
}

/// One LOGIN step (user name or password), base64.
pub fn decode_login_step(b64: &str) -> Result<String, SaslError> {
    let v = clean(&decode_base64(b64)?)?;
    if v.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(v)
}

pub fn encode(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        assert_eq!(
            decode_plain(&encode(b"\0alice@x.test\0pw")).unwrap(),
            ("alice@x.test".into(), "pw".into())
        );
        assert_eq!(
            decode_plain(&encode(b"alice@x.test\0alice@x.test\0pw"))
                .unwrap()
                .0,
            "alice@x.test"
        );
        assert_eq!(
            decode_plain(&encode(b"bob\0alice\0pw")),
            Err(SaslError::AuthzMismatch)
        );
        assert_eq!(
            decode_plain(&encode(b"\0alice\0p\rw")),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(&encode(b"\0alice\0pw\0x")),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(&encode(b"\0alice\nx\0pw")),
            Err(SaslError::Malformed)
        );
        assert_eq!(decode_plain("!!!"), Err(SaslError::BadBase64));
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
    }
}
