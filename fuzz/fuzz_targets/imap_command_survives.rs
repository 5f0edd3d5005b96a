//! Bad input never drops an IMAP connection: a session logs in, selects INBOX, sends ONE
//! arbitrary command line (literals included, finished if it left one open; lines after it
//! are commands too), and must then still
//! answer NOOP with OK. Only LOGOUT and a non-synchronizing literal over the limit (which the
//! client is already sending: RFC 7888 4 lets the server close) may end the session. Every
//! response is also a well-formed unit.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use postern_directory::AuthOutcome;
use postern_imap::{CoreConfig, ImapCore, Step, Wait};
use postern_store::{Account, Flags, NewAccount, SharedStore, embedded};

struct World {
    rt: tokio::runtime::Runtime,
    store: SharedStore,
    cfg: CoreConfig,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    // Left by earlier runs whose process is gone.
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("postern-fuzz-imap1-")
            && !std::path::Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = base.join(format!("postern-fuzz-imap1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store: SharedStore = rt.block_on(async {
        let s: SharedStore = embedded::EmbeddedStore::open(
            &dir,
            embedded::Options {
                in_memory: true,
                ..Default::default()
            },
        )
        .unwrap();
        s.domain_add("example.test").await.unwrap();
        s
    });
    let mut config = postern_config::Config::default();
    // Bad commands never add up to enough to be thrown out.
    config.imap.max_errors = 1_000_000;
    config.imap.max_literal.0 = 64 << 10;
    config.storage.spool_threshold.0 = 2048;
    World {
        cfg: CoreConfig {
            config: Arc::new(config),
            tls_available: true,
            spool_dir: dir.join("tmp"),
        },
        rt,
        store,
    }
});

const MESSAGES: [&[u8]; 2] = [
    b"From: \"Bob\" <bob@far.test>\r\nTo: alice@example.test\r\nSubject: hello\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\nHi Alice\r\n",
    b"From: carol@far.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\ntext\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b--\r\n",
];

/// Each response unit starts as IMAP allows; a literal's bytes are skipped whole.
fn check(out: &[u8]) {
    let mut rest = out;
    while !rest.is_empty() {
        let unit_start = rest;
        loop {
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                panic!("a response without CRLF: {:?}", String::from_utf8_lossy(rest));
            };
            let line = &rest[..end];
            rest = &rest[end + 2..];
            let Some(n) = postern_imap::trailing_literal(line) else {
                break;
            };
            let n = n.0 as usize;
            assert!(rest.len() >= n, "a literal shorter than announced");
            rest = &rest[n..];
        }
        let words: Vec<&[u8]> = unit_start.splitn(3, |&b| b == b' ').collect();
        let ok = match words.as_slice() {
            [b"*", ..] | [b"+", ..] => true,
            [first, ..] if first.starts_with(b"+\r\n") => true,
            [_tag, status, ..] => matches!(*status, b"OK" | b"NO" | b"BAD"),
            _ => false,
        };
        assert!(ok, "a malformed response: {:?}", String::from_utf8_lossy(unit_start));
    }
}

/// Feeds `input` and runs the core until it waits for more; returns how it waits (`None`:
/// the session closed) and everything it said.
async fn run(core: &mut ImapCore, account: &Account, mut input: &[u8]) -> (Option<Wait>, Vec<u8>) {
    let mut said = Vec::new();
    for _ in 0..100_000 {
        let n = core.feed(input);
        input = &input[n..];
        let step = core.step().await;
        let out = core.take_output();
        check(&out);
        said.extend_from_slice(&out);
        match step {
            Step::Read(wait) => {
                if input.is_empty() {
                    return (Some(wait), said);
                }
                assert!(n > 0, "input the core never takes");
            }
            Step::Flush => {}
            Step::StartTls => core.tls_started(),
            Step::Authenticate { user, password } => {
                let ok = user.eq_ignore_ascii_case(&account.address) && password == "pw";
                core.login_result(Ok(if ok {
                    AuthOutcome::Ok(account.clone())
                } else {
                    AuthOutcome::Failed
                }));
            }
            Step::Close => return (None, said),
        }
    }
    panic!("the session never waits for input");
}

fn tagged_ok(said: &[u8], tag: &str) -> bool {
    said.split(|&b| b == b'\n')
        .any(|l| l.starts_with(format!("{tag} OK").as_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let w = &*WORLD;
    w.rt.block_on(async {
        let store = &w.store;
        let account = store
            .account_create(NewAccount {
                address: "alice@example.test".into(),
                password_hash: String::new(),
                quota_bytes: 0,
                quota_messages: 0,
                shared: false,
            })
            .await
            .unwrap();
        for m in MESSAGES {
            let d = postern_ingest::Prepared::new(m.to_vec()).deliver(
                1_790_000_000,
                vec![postern_ingest::into_folder(account.id, "INBOX", Flags::default(), false)],
                None,
                Vec::new(),
            );
            store.deliver(d).await.unwrap();
        }
        let _ = store.mailbox_create(account.id, "Work", None).await;
        let mut core = ImapCore::new(w.cfg.clone(), store.clone(), true);
        core.greet();
        check(&core.take_output());
        let (_, said) = run(&mut core, &account, b"l LOGIN alice@example.test pw\r\n").await;
        assert!(tagged_ok(&said, "l"), "{}", String::from_utf8_lossy(&said));
        let (_, said) = run(&mut core, &account, b"s SELECT INBOX\r\n").await;
        assert!(tagged_ok(&said, "s"), "{}", String::from_utf8_lossy(&said));

        let mut line = data.to_vec();
        if !line.ends_with(b"\r\n") {
            line.extend_from_slice(b"\r\n");
        }
        let (mut wait, mut said) = run(&mut core, &account, &line).await;
        // Whatever the command left open is finished the way a client would: a literal's
        // bytes, DONE for IDLE, "*" to cancel AUTHENTICATE.
        for _ in 0..4 {
            let more: Vec<u8> = match wait {
                Some(Wait::Idle) => b"DONE\r\n".to_vec(),
                Some(Wait::Response) => b"*\r\n".to_vec(),
                Some(Wait::Literal) => {
                    let mut v = vec![b'x'; 70_000];
                    v.extend_from_slice(b"\r\n");
                    v
                }
                Some(Wait::Command) if core.in_command() => b"\r\n".to_vec(),
                _ => break,
            };
            let (w2, s2) = run(&mut core, &account, &more).await;
            wait = w2;
            said.extend_from_slice(&s2);
        }
        let closed_ok = {
            let text = String::from_utf8_lossy(&said);
            text.contains("* BYE Postern logging out") || text.contains("* BYE [TOOBIG]")
        };
        match wait {
            None => assert!(
                closed_ok,
                "the session was closed: {}",
                String::from_utf8_lossy(&said)
            ),
            Some(_) if closed_ok => {}
            Some(_) => {
                let (_, after) = run(&mut core, &account, b"zz NOOP\r\n").await;
                assert!(
                    tagged_ok(&after, "zz"),
                    "NOOP after {:?} got {:?}",
                    String::from_utf8_lossy(data),
                    String::from_utf8_lossy(&after)
                );
            }
        }
        let _ = store.account_delete(account.id).await;
    });
});
