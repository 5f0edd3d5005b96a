//! What `postern serve` says when the data directory was written by a newer Postern.

use std::process::Command;

use postern_store::embedded::{STORE_FORMAT, set_format_version};

#[test]
fn serve_refuses_a_newer_store_plainly() {
    let bin = env!("CARGO_BIN_EXE_postern");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let init = Command::new(bin)
        .args([
            "init",
            "--domain",
            "example.test",
            "--listen-ip",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    set_format_version(&data, STORE_FORMAT + 1).unwrap();

    let out = Command::new(bin)
        .arg("-c")
        .arg(data.join("postern.toml"))
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "error: cannot open the store in {}: this data directory was written by a newer Postern (store format {}; this version reads up to {STORE_FORMAT}): run that newer version, or restore a backup taken with this one\n",
        data.display(),
        STORE_FORMAT + 1
    );
    assert!(stderr.ends_with(&expected), "{stderr}");
    assert!(!data.join("pre-upgrade").exists());
}
