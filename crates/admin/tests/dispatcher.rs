//! The dispatcher's requests beyond the directory: what only the running server does, and
//! the DNS records of a domain.

use std::sync::Arc;

use postern_admin::{Admin, AdminReply, AdminRequest};
use postern_directory::{Directory, DirectoryConfig};
use postern_store::embedded::{EmbeddedStore, Options};

fn directory(t: &tempfile::TempDir) -> Arc<Directory> {
    let store = EmbeddedStore::open(t.path(), Options::default()).unwrap();
    Directory::new(store, DirectoryConfig::default())
}

#[tokio::test]
async fn only_the_running_server_reloads_and_runs_the_doctor() {
    let t = tempfile::tempdir().unwrap();
    let local = Admin::local(directory(&t), Arc::new(Default::default()));
    for req in [AdminRequest::Reload, AdminRequest::Doctor] {
        let e = local.run(req).await.unwrap_err();
        assert!(e.message.contains("running server"), "{}", e.message);
    }
    let reloads: postern_admin::Reloader =
        Arc::new(|| Err("cert.pem: No such file or directory (os error 2)".into()));
    let server = Admin::server(local.directory().clone(), Default::default(), reloads);
    let e = server.run(AdminRequest::Reload).await.unwrap_err();
    // A file the server cannot read is a refusal, not something named that does not exist.
    assert!(!e.is_not_found() && !e.temporary, "{e:?}");
    let ok: postern_admin::Reloader = Arc::new(|| Ok("reloaded".into()));
    let server = Admin::server(local.directory().clone(), Default::default(), ok);
    assert_eq!(
        server.run(AdminRequest::Reload).await.unwrap(),
        AdminReply::Done {
            message: "reloaded".into()
        }
    );
}

#[tokio::test]
async fn dns_records_of_local_domains_only() {
    let t = tempfile::tempdir().unwrap();
    let admin = Admin::local(directory(&t), Arc::new(Default::default()));
    let dns = |domain: &str| AdminRequest::Dns {
        domain: domain.into(),
        check: false,
    };
    let e = admin.run(dns("example.test")).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    admin
        .run(AdminRequest::DomainAdd {
            name: "example.test".into(),
        })
        .await
        .unwrap();
    let AdminReply::Report { json } = admin.run(dns("Example.test.")).await.unwrap() else {
        panic!("not a report");
    };
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["domain"], "example.test");
    assert_eq!(v["records"][0]["type"], "MX");
    assert_eq!(v["records"][0]["status"], "unchecked");
}
