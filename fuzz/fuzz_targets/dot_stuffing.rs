//! Outbound DATA encoding read back by our own DATA decoder: the message ends exactly where
//! the encoder put the end, and the content is the original with CRLF line ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::proto::data::DataDecoder;

fuzz_target!(|body: &[u8]| {
    let wire = postern_queue::client::dot_stuff(body);
    let mut dec = DataDecoder::new(usize::MAX, u64::MAX);
    let mut out = Vec::new();
    assert_eq!(dec.feed(&wire, &mut out), Some(wire.len()));
    // The original, with every line end as CRLF and a final CRLF.
    let mut want = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                want.extend_from_slice(b"\r\n");
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => want.extend_from_slice(b"\r\n"),
            b => want.push(b),
        }
        i += 1;
    }
    if !want.is_empty() && !want.ends_with(b"\r\n") {
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!(out, want);
    assert!(!dec.report().bare_cr && !dec.report().bare_lf);
});
