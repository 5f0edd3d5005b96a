//! Message ingest: parse once at delivery (structure, ENVELOPE, BODYSTRUCTURE), trace ids and
//! trace headers (Received, Return-Path).

pub mod address;
pub mod meta;
pub mod trace;

pub use meta::{MessageMeta, Part};
pub use trace::{
    ReceivedInfo, count_received, new_trace_id, received_header, return_path_header, rfc5322_date,
};
