//! SASL decoders (PLAIN, LOGIN steps, base64): no panic; what decodes re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_directory::sasl;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((user, pass)) = sasl::decode_plain(s) {
        assert!(!user.contains('\0') && !pass.contains('\0'));
    }
    let _ = sasl::decode_login_step(s);
    if let Ok(raw) = sasl::decode_base64(s) {
        assert_eq!(sasl::decode_base64(&sasl::encode(&raw)).unwrap(), raw);
    }
});
