//! Finding the small detail that keeps mail from working, and saying how to fix it:
//! `postern check` tries an account's settings the way a mail program does, `postern doctor`
//! looks at this server the way the internet does, and `postern dns` lists the records a
//! domain needs.

pub mod check;
pub mod der;
pub mod discover;
pub mod http;
pub mod net;
pub mod probe;
pub mod records;
pub mod report;
pub mod server;
pub mod session;
