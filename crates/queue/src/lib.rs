//! Outbound delivery: the queue runner, MX routing, TLS policy (DANE, MTA-STS), the SMTP
//! client, delivery status notifications and DKIM signing.

pub mod client;
pub mod dane;
pub mod dkim;
pub mod dsn;
pub mod mta_sts;
pub mod route;
pub mod runner;
pub mod secure_dns;
pub mod tls_policy;

pub use runner::QueueRunner;
