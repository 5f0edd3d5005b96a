//! A whole SMTP session from arbitrary bytes: commands, and after DATA or BDAT the message,
//! through the same state machine and decoder as the server. Invariants: no panic; every
//! reply is a well-formed reply; a message ends only at its terminator or BDAT size, so no
//! command is ever read from message content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::proto::command::RcptTo;
use postern_smtp::proto::core::{Action, CoreConfig, Role, SmtpCore};
use postern_smtp::proto::data::DataDecoder;
use postern_smtp::proto::reply::Reply;

fn check(r: &Reply) {
    let b = r.to_bytes();
    assert!(b.ends_with(b"\r\n"));
    assert!(
        (200..600)
            .contains(&u16::from_str_radix(std::str::from_utf8(&b[..3]).unwrap(), 10).unwrap())
    );
    // CR and LF only as line ends.
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            assert_eq!(b[i - 1], b'\r');
        }
        if c == b'\r' {
            assert_eq!(b.get(i + 1), Some(&b'\n'));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut input)) = data.split_first() else {
        return;
    };
    let cfg = CoreConfig {
        role: if flags & 1 == 0 {
            Role::Mx
        } else {
            Role::Submission
        },
        hostname: "mx.example.test".into(),
        max_size: 1 << 16,
        max_recipients: 5,
        max_errors: 20,
        tls_available: flags & 2 != 0,
        allow_plaintext_auth: flags & 4 != 0,
    };
    let mut core: SmtpCore<RcptTo> = SmtpCore::new(cfg, flags & 8 != 0);
    check(&core.greeting());
    while !input.is_empty() {
        let (line, rest) = match input.iter().position(|&b| b == b'\n') {
            Some(p) => (&input[..p], &input[p + 1..]),
            None => (input, &[][..]),
        };
        input = rest;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut action = core.command(line);
        loop {
            action = match action {
                Action::Reply(r) | Action::RefuseData(r) => {
                    check(&r);
                    break;
                }
                Action::Close(r) => {
                    check(&r);
                    return;
                }
                Action::Quit => return,
                Action::CheckSender(from) => core.sender_checked(from, Ok(())),
                Action::CheckRecipient(r) => {
                    if flags & 16 != 0 && r.address.len() % 3 == 0 {
                        core.recipient_checked(Err(Reply::new(550, "5.1.1", "no such user")))
                    } else {
                        core.recipient_checked(Ok(r))
                    }
                }
                Action::Authenticate { .. } => {
                    core.authenticated(if flags & 32 != 0 {
                        Some("u@example.test".into())
                    } else {
                        None
                    });
                    break;
                }
                Action::StartTls => {
                    core.tls_started();
                    break;
                }
                Action::ReceiveData => {
                    let mut dec = DataDecoder::new(1000, 1 << 16);
                    let mut out = Vec::new();
                    match dec.feed(input, &mut out) {
                        Some(n) => {
                            // The terminator is CRLF.CRLF (or .CRLF at the start), and the
                            // first one in the input.
                            assert!(input[..n].ends_with(b".\r\n"));
                            assert!(n == 3 || input[..n].ends_with(b"\r\n.\r\n"));
                            let first = if input.starts_with(b".\r\n") {
                                3
                            } else {
                                input.windows(5).position(|w| w == b"\r\n.\r\n").unwrap() + 5
                            };
                            assert_eq!(n, first);
                            input = &input[n..];
                            let _ = core.transaction_done();
                        }
                        None => return,
                    }
                    break;
                }
                Action::ReceiveBdat { size, last } => {
                    let n = (size as usize).min(input.len());
                    input = &input[n..];
                    if last {
                        let _ = core.transaction_done();
                    }
                    break;
                }
                Action::DiscardBdat { size, reply } => {
                    let n = (size as usize).min(input.len());
                    input = &input[n..];
                    check(&reply);
                    break;
                }
            };
        }
    }
});
