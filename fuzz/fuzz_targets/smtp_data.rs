//! The DATA decoder fed the same bytes in arbitrary pieces: where the message ends and what it
//! holds must not depend on how the bytes arrived, and the end is the first CRLF.CRLF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::proto::data::DataDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    let mut d1 = DataDecoder::new(1000, 4096);
    let end1 = d1.feed(input, &mut whole);

    let mut pieces = Vec::new();
    let mut d2 = DataDecoder::new(1000, 4096);
    let mut at = 0;
    let mut step = (seed as usize % 7) + 1;
    let mut end2 = None;
    while at < input.len() {
        let n = step.min(input.len() - at);
        if let Some(k) = d2.feed(&input[at..at + n], &mut pieces) {
            end2 = Some(at + k);
            break;
        }
        at += n;
        step = step * 3 % 11 + 1;
    }
    assert_eq!(end1, end2);
    assert_eq!(whole, pieces);
    let (r1, r2) = (d1.report(), d2.report());
    assert_eq!(
        (r1.size, r1.bare_lf, r1.bare_cr, r1.long_line, r1.too_big),
        (r2.size, r2.bare_lf, r2.bare_cr, r2.long_line, r2.too_big)
    );
    if let Some(n) = end1 {
        let first = if input.starts_with(b".\r\n") {
            3
        } else {
            input
                .windows(5)
                .position(|w| w == b"\r\n.\r\n")
                .map(|p| p + 5)
                .unwrap()
        };
        assert_eq!(n, first);
        assert!(whole.len() <= 4096);
    } else {
        assert!(!input.starts_with(b".\r\n"));
        assert!(!input.windows(5).any(|w| w == b"\r\n.\r\n"));
    }
});
