//! argon2id password hashes and the rules for new passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters"),
    )
}

pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16-byte salt");
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing")
        .to_string()
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => hasher().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

const COMMON: &[&str] = &[
    "password",
    "password1",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyui",
    "qwerty123",
    "11111111",
    "00000000",
    "iloveyou",
    "abc12345",
    "letmein1",
    "welcome1",
    "changeme",
    "passw0rd",
    "sunshine",
    "football",
    "princess",
    "admin123",
];

/// Why a new password is not acceptable, if it is not.
pub fn password_problem(password: &str, address: &str, min_len: usize) -> Option<String> {
    if password.is_empty() {
        return Some("the password is empty".into());
    }
    if password.chars().count() < min_len {
        return Some(format!(
            "the password is too short: use at least {min_len} characters"
        ));
    }
    if password.chars().any(|c| c.is_control()) {
        return Some("the password contains control characters".into());
    }
    let lower = password.to_lowercase();
    let local = address.split('@').next().unwrap_or("");
    if lower == address || (!local.is_empty() && lower == local) {
        return Some("the password is the same as the address".into());
    }
    if COMMON.contains(&lower.as_str()) {
        return Some("the password is one of the most common passwords".into());
    }
    let first = password.chars().next();
    if password.chars().all(|c| Some(c) == first) {
        return Some("the password repeats one character".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong horse"));
        assert!(!verify_password("garbage", "x"));
    }

    #[test]
    fn weak_passwords() {
        assert!(password_problem("", "a@b.test", 8).is_some());
        assert!(password_problem("short", "a@b.test", 8).is_some());
        assert!(password_problem("password", "a@b.test", 8).is_some());
        assert!(password_problem("aaaaaaaaaa", "a@b.test", 8).is_some());
        assert!(password_problem("alice@b.test", "alice@b.test", 8).is_some());
        assert!(password_problem("tr0ub4dor&3", "a@b.test", 8).is_none());
    }
}
