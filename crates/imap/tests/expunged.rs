//! FETCH of messages another session expunged, through the core against a store in memory:
//! served in full while the store keeps them (RFC 2180 4.1.2); once they are gone, left out
//! whole with `OK [EXPUNGEISSUED]`, never half a response; bytes gone in the middle of a
//! literal close the connection.

use std::sync::Arc;

use postern_directory::AuthOutcome;
use postern_imap::{CoreConfig, ImapCore, Step};
use postern_store::{Account, Flags, NewAccount, SharedStore, embedded, now};

struct World {
    store: SharedStore,
    account: Account,
    cfg: CoreConfig,
    dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store with alice@ and these messages in her INBOX (UIDs 1, 2...).
async fn world(messages: &[Vec<u8>]) -> World {
    let dir = std::env::temp_dir().join(format!(
        "postern-imap-expunged-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    let store: SharedStore = embedded::EmbeddedStore::open(
        &dir,
        embedded::Options {
            in_memory: true,
            ..Default::default()
        },
    )
    .unwrap();
    store.domain_add("example.test").await.unwrap();
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
    for m in messages {
        let d = postern_ingest::Prepared::new(m.clone()).deliver(
            1_790_000_000,
            vec![postern_ingest::into_folder(
                account.id,
                "INBOX",
                Flags::default(),
                false,
            )],
            None,
            Vec::new(),
        );
        store.deliver(d).await.unwrap();
    }
    World {
        cfg: CoreConfig {
            config: Arc::new(postern_config::Config::default()),
            tls_available: false,
            spool_dir: dir.join("tmp"),
        },
        store,
        account,
        dir,
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Feeds a command; returns what the core said up to its next step other than `Flush` (or,
/// with `stop_at_flush`, up to the first `Flush`), and that step.
async fn say(w: &World, core: &mut ImapCore, input: &[u8], stop_at_flush: bool) -> (Vec<u8>, Step) {
    let mut out = Vec::new();
    let mut input = input;
    loop {
        let n = core.feed(input);
        input = &input[n..];
        let step = core.step().await;
        out.extend(core.take_output());
        match step {
            Step::Flush if stop_at_flush => return (out, Step::Flush),
            Step::Flush => {}
            Step::Authenticate { .. } => core.login_result(Ok(AuthOutcome::Ok(w.account.clone()))),
            Step::Read(_) if !input.is_empty() => {}
            other => return (out, other),
        }
    }
}

async fn selected(w: &World) -> ImapCore {
    let mut core = ImapCore::new(w.cfg.clone(), w.store.clone(), true);
    core.greet();
    core.take_output();
    let (out, _) = say(w, &mut core, b"l LOGIN alice@example.test pw\r\n", false).await;
    assert!(String::from_utf8_lossy(&out).contains("l OK"));
    let (out, _) = say(w, &mut core, b"s SELECT INBOX\r\n", false).await;
    assert!(String::from_utf8_lossy(&out).contains("s OK"));
    core
}

/// Another session's EXPUNGE, and the store letting the messages go for good.
async fn expunge_for_good(w: &World, uids: Vec<u32>) {
    let inbox = w
        .store
        .mailbox_by_name(w.account.id, "INBOX")
        .await
        .unwrap()
        .unwrap();
    w.store.expunge(inbox.id, uids).await.unwrap();
    w.store.expunged_purge(now() + 1).await.unwrap();
}

fn msg(subject: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!("Subject: {subject}\r\n\r\n").into_bytes();
    m.extend(std::iter::repeat_n(b'x', body_len));
    m.extend_from_slice(b"\r\n");
    m
}

fn fetched(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.strip_prefix("* ").filter(|r| r.contains(" FETCH (")))
        .map(|r| r.split(' ').next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_messages_are_fetched_in_full_and_gone_ones_left_out() {
    let w = world(&[msg("one", 10), msg("two", 100_000), msg("three", 10)]).await;
    let mut core = selected(&w).await;
    let inbox = w
        .store
        .mailbox_by_name(w.account.id, "INBOX")
        .await
        .unwrap()
        .unwrap();
    w.store.expunge(inbox.id, vec![1, 2]).await.unwrap();
    // Not told yet: its numbers still name them, and the store still has them.
    let (out, _) = say(&w, &mut core, b"f FETCH 1:3 (UID BODY.PEEK[])\r\n", false).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(fetched(&out), ["1", "2", "3"], "{text}");
    assert!(text.contains("Subject: two\r\n\r\nxxxx") && text.contains("f OK FETCH completed"));
    assert!(!text.contains("EXPUNGE"), "not during FETCH");
    w.store.expunged_purge(now() + 1).await.unwrap();
    let (out, _) = say(
        &w,
        &mut core,
        b"g FETCH 1:3 (UID FLAGS BODY.PEEK[])\r\n",
        false,
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(fetched(&out), ["3"], "{text}");
    assert!(
        text.contains("g OK [EXPUNGEISSUED] Some messages were already expunged"),
        "{text}"
    );
    let (out, _) = say(&w, &mut core, b"n NOOP\r\n", false).await;
    // The highest first, as Dovecot sends them.
    assert!(String::from_utf8_lossy(&out).starts_with("* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_bytes_go_during_the_fetch_is_left_out_whole() {
    // The first answer is long enough to be sent in pieces: the others go meanwhile.
    let w = world(&[msg("big", 600_000), msg("two", 70_000), msg("three", 10)]).await;
    let mut core = selected(&w).await;
    let (mut out, step) = say(&w, &mut core, b"f FETCH 1:3 (UID BODY.PEEK[])\r\n", true).await;
    assert_eq!(step, Step::Flush);
    expunge_for_good(&w, vec![2]).await;
    let (rest, _) = say(&w, &mut core, b"", false).await;
    out.extend(rest);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(fetched(&out), ["1", "3"]);
    assert!(text.contains("* 3 FETCH (UID 3 BODY[] {"));
    assert!(text.ends_with("f OK [EXPUNGEISSUED] Some messages were already expunged\r\n"));
    // Every response whole: each literal as long as announced, each line closed.
    let mut rest: &[u8] = &out;
    while !rest.is_empty() {
        let end = rest.windows(2).position(|x| x == b"\r\n").unwrap();
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if let Some((n, _)) = postern_imap::trailing_literal(line) {
            rest = &rest[n as usize..];
            assert!(rest.starts_with(b")\r\n"), "a response cut short");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_gone_inside_a_literal_close_the_connection() {
    let w = world(&[msg("big", 900_000)]).await;
    let mut core = selected(&w).await;
    let (_, step) = say(&w, &mut core, b"f FETCH 1 BODY.PEEK[]\r\n", true).await;
    assert_eq!(step, Step::Flush);
    expunge_for_good(&w, vec![1]).await;
    let (out, step) = say(&w, &mut core, b"", false).await;
    assert_eq!(step, Step::Close, "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("* BYE [SERVERBUG]"));
}
