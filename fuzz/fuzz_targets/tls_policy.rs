//! What other servers hand us for the TLS policy: MTA-STS policy files and TXT records, and
//! the certificates DANE looks into. No panic; whatever parses obeys the policy's own limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_queue::dane::{Tlsa, spki};
use postern_queue::mta_sts::{Mode, parse_policy, parse_txt};

fuzz_target!(|data: &[u8]| {
    if let Some(s) = spki(data) {
        assert!(s.len() <= data.len() && s.first() == Some(&0x30));
    }
    for selector in 0..2 {
        let r = Tlsa {
            usage: 3,
            selector,
            matching: 1,
            data: vec![0; 32],
        };
        let _ = r.matches(data);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = parse_policy(&text) {
        assert!(p.max_age <= 31_557_600);
        assert!(p.mode == Mode::None || !p.mx.is_empty());
        let _ = p.allows("mx.example.com");
    }
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    if let Some(id) = parse_txt(&lines) {
        assert!(!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
});
