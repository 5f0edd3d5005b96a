//! Outbound delivery: the queue runner, MX routing, the SMTP client, delivery status
//! notifications and DKIM signing.

pub mod client;
pub mod dkim;
pub mod dsn;
pub mod route;
pub mod runner;

pub use runner::QueueRunner;
