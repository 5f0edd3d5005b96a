//! SMTP without I/O: command parsing, replies, the DATA decoder and the session state machine.

pub mod command;
pub mod core;
pub mod data;
pub mod reply;

pub use self::core::{Action, CoreConfig, Envelope, Role, SmtpCore};
pub use command::{Body, Command, MailFrom, RcptTo, Ret};
pub use data::{DataDecoder, DataReport, Sink};
pub use reply::Reply;
