//! Message ingest: trace ids, trace headers (Received, Return-Path), header scans.

pub mod trace;

pub use trace::{
    ReceivedInfo, count_received, new_trace_id, received_header, return_path_header, rfc5322_date,
};
