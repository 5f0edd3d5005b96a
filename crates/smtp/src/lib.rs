//! SMTP: receiving as MX and submission for users (RFC 5321, 6409, 8314).

pub mod abuse;
mod content;
pub mod proto;
mod server;

pub use server::{SmtpServer, SmtpSettings};
