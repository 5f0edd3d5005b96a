//! Mail addresses as Postern keys them: `local@domain`, compared case-insensitively.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not a mail address (it needs the form name@domain)")]
    NoAt(String),
    #[error("{0:?}: the part before @ is empty or too long")]
    BadLocal(String),
    #[error("{0:?}: {1:?} is not a valid domain name")]
    BadDomain(String, String),
    #[error(
        "{0:?}: the name before @ may use letters, digits and . _ - + only, without leading, trailing or double dots"
    )]
    BadChars(String),
}

/// Lower-cases an address (local parts are case-insensitive by default) and checks its shape.
/// Accepts `<addr>` and surrounding spaces.
pub fn normalize_address(s: &str) -> Result<String, AddressError> {
    let t = s
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let (local, domain) = t
        .rsplit_once('@')
        .ok_or_else(|| AddressError::NoAt(s.to_string()))?;
    if local.is_empty() || local.len() > 64 {
        return Err(AddressError::BadLocal(s.to_string()));
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !is_domain(&domain) {
        return Err(AddressError::BadDomain(s.to_string(), domain));
    }
    Ok(format!("{}@{}", local.to_lowercase(), domain))
}

/// Stricter rules for addresses we create (accounts, aliases): a plain dot-atom local part.
pub fn validate_new_address(s: &str) -> Result<String, AddressError> {
    let a = normalize_address(s)?;
    let local = a.rsplit_once('@').map(|x| x.0).unwrap_or("");
    let ok_chars = local
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if !ok_chars || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(AddressError::BadChars(s.to_string()));
    }
    Ok(a)
}

pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|x| x.1).unwrap_or("")
}

pub fn is_domain(d: &str) -> bool {
    d.contains('.')
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize_address(" <Alice@Example.TEST> ").unwrap(),
            "alice@example.test"
        );
        assert!(normalize_address("alice").is_err());
        assert!(normalize_address("@example.test").is_err());
        assert!(normalize_address("a@localhost").is_err());
        assert!(normalize_address("a@exa mple.test").is_err());
    }

    #[test]
    fn new_addresses_are_plain() {
        assert!(validate_new_address("first.last+tag@example.test").is_ok());
        assert!(validate_new_address("a..b@example.test").is_err());
        assert!(validate_new_address("\"a b\"@example.test").is_err());
        assert!(validate_new_address("a%b@example.test").is_err());
    }
}
