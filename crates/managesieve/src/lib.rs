//! ManageSieve (RFC 5804): users list, upload, check and activate their Sieve filters from a
//! mail program (Thunderbird's Sieve add-on, Roundcube, sieve-connect, KMail).

pub mod proto;
pub mod server;

pub use server::ManageSieveServer;
