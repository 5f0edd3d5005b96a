//! DMARC aggregate reports (RFC 7489 section 7.2, in the format of RFC 9990) and SMTP TLS
//! reports (RFC 8460): what is counted toward the reports we send ([`Tallies`], fed where
//! mail is checked and where it is delivered), building them ([`dmarc::build`],
//! [`tls::build`]), and reading the ones other organizations send about our domains
//! ([`received`]). Sending is the queue's: it knows DNS and signs.

pub mod dmarc;
pub mod received;
mod tallies;
pub mod tls;

pub use tallies::Tallies;

/// Reports cover UTC days.
pub const DAY: i64 = 86_400;

/// The UTC day (days since 1970) of a time in Unix seconds.
pub fn day_of(secs: i64) -> i64 {
    secs.div_euclid(DAY)
}

/// A row's key is its JSON: equal outcomes add up in the store.
fn row_json<T: serde::Serialize>(row: &T) -> String {
    serde_json::to_string(row).unwrap_or_default()
}
