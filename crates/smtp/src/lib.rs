//! SMTP: receiving as MX and submission for users (RFC 5321, 6409, 8314).

pub mod abuse;
mod filter;
mod ingest;
pub mod proto;
mod server;

pub use server::{SmtpServer, SmtpSettings};
