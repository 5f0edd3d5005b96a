//! Whole IMAP sessions through the core, against a store kept in memory: login (plain and
//! AUTHENTICATE with its continuation), SELECT, FETCH, STORE, SEARCH, COPY/MOVE, APPEND with
//! literals of every kind, IDLE with store events, STARTTLS; input split at arbitrary points.
//! No panic, no stall (input the core never takes), and every response is a well-formed unit:
//! untagged, a continuation, or a tagged OK/NO/BAD, literals included.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use postern_directory::AuthOutcome;
use postern_imap::{CoreConfig, ImapCore, Step, Wait};
use postern_store::{Flags, NewAccount, SharedStore, StoreEvent, embedded};

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
    // Message bytes go to files: to memory too where /dev/shm is there.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    // Left by earlier runs whose process is gone.
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("postern-fuzz-imap-")
            && !std::path::Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = base.join(format!("postern-fuzz-imap-{}", std::process::id()));
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
    config.imap.max_errors = 50;
    config.imap.max_literal.0 = 64 << 10;
    // Past this an APPEND message goes to a spool file: small, so fuzzing reaches it.
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

const MESSAGES: [&[u8]; 3] = [
    b"From: \"Bob\" <bob@far.test>\r\nTo: alice@example.test\r\nSubject: hello\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@far.test>\r\n\r\nHi Alice,\r\nhow are you?\r\n",
    b"From: carol@far.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\ntext\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b--\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nquoted=3Dprintable\r\n",
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

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let w = &*WORLD;
    w.rt.block_on(async {
        let store = &w.store;
        let account = store
            .account_create(NewAccount {
                address: "alice@example.test".into(),
                password_hash: String::new(),
                quota_bytes: if flags & 8 != 0 { 4096 } else { 0 },
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
        let mut core = ImapCore::new(w.cfg.clone(), store.clone(), flags & 1 != 0);
        core.greet();
        check(&core.take_output());
        // Input arrives in pieces of this size: every split point gets tried.
        let piece = 1 + (flags as usize >> 4) * 7;
        let mut input = input;
        let mut idle_events = 0;
        for _ in 0..100_000 {
            let take = input.len().min(piece);
            let n = core.feed(&input[..take]);
            input = &input[n..];
            let step = core.step().await;
            check(&core.take_output());
            match step {
                Step::Read(wait) => {
                    if input.is_empty() {
                        if wait == Wait::Idle && idle_events < 2 {
                            idle_events += 1;
                            core.store_event(Some(StoreEvent::Missed));
                            continue;
                        }
                        break;
                    }
                    assert!(n > 0 || take == 0, "input the core never takes");
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
                Step::Close => break,
            }
        }
        let _ = store.account_delete(account.id).await;
    });
});
