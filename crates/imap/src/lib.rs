//! IMAP4rev2 with IMAP4rev1 compatibility (RFC 9051, 3501) and extensions.

mod fetch;
pub mod format;
pub mod parse;
mod search;
mod server;
mod session;
pub mod utf7;

pub use server::{ImapServer, trailing_literal};
