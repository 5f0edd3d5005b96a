//! Parse-once message ingest.
