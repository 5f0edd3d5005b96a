//! The ManageSieve core on arbitrary commands, logged in or not: no panic, and every answer is
//! a complete response line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_managesieve::proto::{Action, Core, CoreConfig, literal_len};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut core = Core::new(
        CoreConfig {
            tls_available: mode & 1 != 0,
            allow_plaintext: mode & 2 != 0,
            max_errors: 5,
            extensions: "fileinto vacation".into(),
            max_redirects: 4,
        },
        mode & 4 != 0,
    );
    if mode & 8 != 0 {
        core.login_done(true, "", false);
    }
    for cmd in rest.split_inclusive(|&b| b == b'\n') {
        let _ = literal_len(cmd);
        match core.command(cmd) {
            Action::Reply(b) | Action::Close(b) => assert!(b.ends_with(b"\r\n")),
            Action::Login { user, .. } => {
                let r = core.login_done(!user.is_empty(), "no", false);
                assert!(r.ends_with(b"\r\n"));
            }
            Action::StartTls => core.tls_started(),
            Action::Op(_) => {}
        }
    }
});
