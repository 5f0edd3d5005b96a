//! POP3: the incoming server a mail program downloads from (RFC 1939 and extensions).

pub mod proto;
mod server;

pub use server::Pop3Server;
