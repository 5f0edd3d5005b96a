//! Checks on a complete message before it goes to ingest: size, bare line ends, long lines,
//! mail loops; and the reply for a storage problem.

use postern_ingest::Status;
use postern_store::StoreError;

use crate::proto::{DataReport, Reply};

/// Finds bare CR or LF in content that arrives in chunks (BDAT).
#[derive(Default)]
pub struct BareScan {
    prev_cr: bool,
    pub found: bool,
}

impl BareScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.found {
            return;
        }
        for &c in bytes {
            if (c == b'\n') != self.prev_cr {
                self.found = true;
                return;
            }
            self.prev_cr = c == b'\r';
        }
    }

    pub fn finish(&mut self) -> bool {
        self.found || self.prev_cr
    }
}

/// Why a complete message is refused, before it is stored.
pub fn check_content(
    report: &DataReport,
    received: usize,
    max_received: usize,
    reject_bare: bool,
    max_size: u64,
) -> Option<Reply> {
    if report.too_big {
        return Some(Reply::new(
            552,
            "5.3.4",
            format!("Message too big: the limit is {max_size} bytes"),
        ));
    }
    if reject_bare && (report.bare_lf || report.bare_cr) {
        return Some(Reply::new(
            550,
            "5.6.11",
            "Message contains a bare CR or LF; the sending program must end lines with CRLF (RFC 5321 2.3.8)",
        ));
    }
    if received > max_received {
        return Some(Reply::new(
            554,
            "5.4.6",
            format!(
                "Mail loop: the message has {received} Received headers (the limit is {max_received})"
            ),
        ));
    }
    None
}

/// The reply for a status ingest gave.
pub fn reply(s: &Status) -> Reply {
    Reply::new(s.code, s.enhanced, s.text.clone())
}

/// The reply for a storage problem: try again later.
pub fn temp_failure(e: &StoreError) -> Reply {
    reply(&Status::temporary(e))
}
