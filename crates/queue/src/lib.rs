//! Outbound delivery: the queue runner, MX routing, TLS policy (DANE, MTA-STS), the SMTP
//! client, delivery status notifications, DKIM signing, and the DMARC and TLS reports we send.

pub mod client;
pub mod dane;
pub mod dkim;
pub mod dsn;
pub mod mta_sts;
pub mod reports;
pub mod route;
pub mod runner;
pub mod secure_dns;
pub mod tls_policy;

pub use runner::QueueRunner;
