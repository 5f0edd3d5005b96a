//! IMAP4rev2 with IMAP4rev1 compatibility (RFC 9051, 3501) and extensions: a core without I/O
//! ([`core::ImapCore`]: bytes and store events in, responses and steps out) and the listener
//! that drives it over a socket.

mod catenate;
mod context;
pub mod core;
mod fetch;
pub mod format;
pub mod framing;
mod list;
mod mailbox;
mod messages;
mod metadata;
mod notify;
pub mod parse;
mod search;
mod server;
mod share;
mod sort;
pub mod url;
pub mod utf7;

pub use core::{CoreConfig, ImapCore, Step, Wait};
pub use framing::trailing_literal;
pub use server::ImapServer;
