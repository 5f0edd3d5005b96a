//! A POP3 session from arbitrary lines through the state machine: no panic; every reply one
//! +OK/-ERR line (or a multi-line answer ending in "."); RETR/TOP/DELE only of messages that
//! exist; UPDATE deletes only messages of the maildrop, once each.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_pop3::proto::{Action, CoreConfig, DropMessage, Pop3Core};

fn check(b: &[u8]) {
    assert!(
        b.starts_with(b"+OK") || b.starts_with(b"-ERR") || b.starts_with(b"+ "),
        "{:?}",
        String::from_utf8_lossy(b)
    );
    assert!(b.ends_with(b"\r\n"));
    if b.starts_with(b"+OK") && b.windows(2).filter(|w| w == b"\r\n").count() > 1 {
        assert!(b.ends_with(b"\r\n.\r\n"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let mut core = Pop3Core::new(
        CoreConfig {
            tls_available: flags & 1 != 0,
            allow_plaintext: flags & 2 != 0,
            max_errors: 20,
        },
        flags & 4 != 0,
    );
    check(&core.greeting());
    let drop: Vec<DropMessage> = (0..(flags as u32 >> 4))
        .map(|i| DropMessage {
            uid: 100 + i,
            size: 10 + i as u64,
            uidl: format!("u{i}"),
        })
        .collect();
    let mut sasl = false;
    for line in input.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut action = if sasl {
            core.sasl_response(line)
        } else {
            core.command(line)
        };
        sasl = false;
        loop {
            action = match action {
                Action::Send(b) => {
                    check(&b);
                    break;
                }
                Action::Close(b) => {
                    check(&b);
                    return;
                }
                Action::Authenticate { .. } => {
                    if flags & 8 != 0 {
                        core.logged_in(drop.clone())
                    } else {
                        core.login_failed("[AUTH] no")
                    }
                }
                Action::SaslContinue => {
                    sasl = true;
                    break;
                }
                Action::Retr { index } | Action::Top { index, .. } => {
                    assert!(index < drop.len());
                    let _ = core.message(index);
                    break;
                }
                Action::StartTls => {
                    core.tls_started();
                    break;
                }
                Action::Update { delete, seen } => {
                    let mut d = delete.clone();
                    d.sort();
                    d.dedup();
                    assert_eq!(d.len(), delete.len());
                    assert!(
                        delete
                            .iter()
                            .chain(&seen)
                            .all(|u| drop.iter().any(|m| m.uid == *u))
                    );
                    return;
                }
            };
        }
    }
});
