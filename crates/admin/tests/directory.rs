//! The admin operations on a real (embedded) store, and how the directory then expands,
//! authenticates and locks out.

use std::net::IpAddr;
use std::sync::Arc;

use postern_admin::{Admin, AdminReply, AdminRequest};
use postern_directory::*;
use postern_store::embedded::{EmbeddedStore, Options};

async fn dir() -> (tempfile::TempDir, Arc<Directory>, Admin) {
    let t = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(t.path(), Options::default()).unwrap();
    let d = Directory::new(
        store,
        DirectoryConfig {
            max_failures: 3,
            ..Default::default()
        },
    );
    let admin = Admin::local(d.clone(), Arc::new(postern_config::Config::default()));
    for r in [
        AdminRequest::DomainAdd {
            name: "example.test".into(),
        },
        AdminRequest::UserAdd {
            address: "alice@example.test".into(),
            password: "s3cret-pass".into(),
            quota: None,
        },
        AdminRequest::UserAdd {
            address: "bob@example.test".into(),
            password: "s3cret-pass".into(),
            quota: None,
        },
    ] {
        admin.run(r).await.unwrap();
    }
    (t, d, admin)
}

fn locals(v: &[Destination]) -> Vec<String> {
    let mut out: Vec<String> = v
        .iter()
        .map(|d| match d {
            Destination::Local(a) => a.address.clone(),
            Destination::Remote(r) => format!("remote:{r}"),
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn aliases_expand_recursively_once_per_person() {
    let (_t, d, admin) = dir().await;
    let add = |alias: &str, t: &[&str]| AdminRequest::AliasAdd {
        alias: alias.into(),
        targets: t.iter().map(|s| s.to_string()).collect(),
    };
    admin
        .run(add("team@example.test", &["alice@example.test"]))
        .await
        .unwrap();
    admin
        .run(add(
            "all@example.test",
            &["team@example.test", "bob@example.test", "carol@far.test"],
        ))
        .await
        .unwrap();
    // A cycle: team → all → team.
    admin
        .run(add(
            "team@example.test",
            &["all@example.test", "bob@example.test"],
        ))
        .await
        .unwrap();
    let got = d.expand("ALL@example.test").await.unwrap().unwrap();
    assert_eq!(
        locals(&got),
        [
            "alice@example.test",
            "bob@example.test",
            "remote:carol@far.test"
        ]
    );
    assert!(d.expand("nobody@example.test").await.unwrap().is_none());
    assert_eq!(
        locals(&d.expand("x@far.test").await.unwrap().unwrap()),
        ["remote:x@far.test"]
    );
    // Plus-addressing reaches the base account.
    assert_eq!(
        locals(&d.expand("alice+news@example.test").await.unwrap().unwrap()),
        ["alice@example.test"]
    );
    // Relay tricks are unknown local addresses, not remote ones.
    for trick in ["alice%far.test@example.test", "far.test!alice@example.test"] {
        assert!(d.expand(trick).await.unwrap().is_none(), "{trick}");
    }
    let alice = d
        .store()
        .account_by_address("alice@example.test")
        .await
        .unwrap()
        .unwrap();
    assert!(d.owns_address(&alice, "team@example.test").await.unwrap());
    assert!(d.owns_address(&alice, "Alice@Example.test").await.unwrap());
    assert!(!d.owns_address(&alice, "bob@example.test").await.unwrap());
}

#[tokio::test]
async fn admin_errors_say_what_to_do() {
    let (_t, _d, admin) = dir().await;
    let e = admin
        .run(AdminRequest::UserAdd {
            address: "x@example.org".into(),
            password: "s3cret-pass".into(),
            quota: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "domain example.org is not local; add it with: postern domain add example.org"
    );
    let e = admin
        .run(AdminRequest::UserAdd {
            address: "alice@example.test".into(),
            password: "s3cret-pass".into(),
            quota: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.message, "user alice@example.test already exists");
    let e = admin
        .run(AdminRequest::UserAdd {
            address: "new@example.test".into(),
            password: "".into(),
            quota: None,
        })
        .await
        .unwrap_err();
    assert!(e.message.contains("empty"), "{}", e.message);
    let e = admin
        .run(AdminRequest::AliasAdd {
            alias: "a@example.test".into(),
            targets: vec!["ghost@example.test".into()],
        })
        .await
        .unwrap_err();
    assert!(
        e.message.contains("postern user add ghost@example.test"),
        "{}",
        e.message
    );
    match admin.run(AdminRequest::UserList).await.unwrap() {
        AdminReply::Users { users } => assert_eq!(users.len(), 2),
        r => panic!("{r:?}"),
    }
}

#[tokio::test]
async fn logins_and_lockout() {
    let (_t, d, admin) = dir().await;
    let ip: IpAddr = "127.0.0.9".parse().unwrap();
    assert!(matches!(
        d.authenticate("alice@example.test", "s3cret-pass", ip, "test")
            .await
            .unwrap(),
        AuthOutcome::Ok(_)
    ));
    // Cached verification still checks the password.
    assert!(matches!(
        d.authenticate("alice@example.test", "wrong", ip, "test")
            .await
            .unwrap(),
        AuthOutcome::Failed
    ));
    assert!(matches!(
        d.authenticate("ghost@example.test", "wrong", ip, "test")
            .await
            .unwrap(),
        AuthOutcome::Failed
    ));
    assert!(matches!(
        d.authenticate("bob@example.test", "wrong", ip, "test")
            .await
            .unwrap(),
        AuthOutcome::Failed
    ));
    // Three failures from this IP: even the right password waits now.
    assert!(matches!(
        d.authenticate("alice@example.test", "s3cret-pass", ip, "test")
            .await
            .unwrap(),
        AuthOutcome::LockedOut(_)
    ));
    // A password change takes effect at once.
    let other: IpAddr = "127.0.0.10".parse().unwrap();
    admin
        .run(AdminRequest::UserPasswd {
            address: "bob@example.test".into(),
            password: "n3w-passw0rd".into(),
        })
        .await
        .unwrap();
    assert!(matches!(
        d.authenticate("bob@example.test", "n3w-passw0rd", other, "test")
            .await
            .unwrap(),
        AuthOutcome::Ok(_)
    ));
}

#[tokio::test]
async fn no_one_logs_in_as_a_shared_mailbox() {
    let (_t, d, _admin) = dir().await;
    d.store()
        .account_create(postern_store::NewAccount {
            address: "info@example.test".into(),
            password_hash: String::new(),
            quota_bytes: 0,
            quota_messages: 0,
            shared: true,
        })
        .await
        .unwrap();
    let ip: IpAddr = "127.0.0.11".parse().unwrap();
    for _ in 0..4 {
        match d
            .authenticate("Info@Example.test", "anything", ip, "test")
            .await
            .unwrap()
        {
            AuthOutcome::Shared(why) => assert_eq!(
                why,
                "info@example.test is a shared mailbox: log in as yourself; it appears in your mail program under Shared/info@example.test"
            ),
            o => panic!("{o:?}"),
        }
    }
    // Not counted as failures: the client's other logins still work.
    assert!(matches!(
        d.authenticate("alice@example.test", "s3cret-pass", ip, "test")
            .await
            .unwrap(),
        AuthOutcome::Ok(_)
    ));
}
