//! The control socket: admin commands reach a running server through it, so they take effect
//! without a restart and never open the store behind the server's back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use postern_directory::Directory;
use postern_directory::admin::{AdminError, AdminReply, AdminRequest};
use postern_net::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok(AdminReply),
    Err(AdminError),
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// What `Reload` does in the running server.
pub type Reloader = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Runs the doctor in the running server; returns the report as JSON.
pub type DoctorHook = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

/// Serves admin requests until shutdown. The socket is readable by its owner only.
pub fn listen(
    data_dir: &Path,
    dir: Arc<Directory>,
    reload: Reloader,
    doctor: DoctorHook,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let path = socket_path(data_dir);
    // We hold the data directory lock, so a socket file here is a leftover.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.wait() => break,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            let dir = dir.clone();
            let reload = reload.clone();
            let doctor = doctor.clone();
            tokio::spawn(async move {
                let _ = handle(stream, dir, reload, doctor).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

async fn handle(
    stream: UnixStream,
    dir: Arc<Directory>,
    reload: Reloader,
    doctor: DoctorHook,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(1 << 20)).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(AdminRequest::Reload) => match reload() {
                Ok(message) => Reply::Ok(AdminReply::Done { message }),
                Err(message) => Reply::Err(AdminError {
                    message,
                    temporary: false,
                }),
            },
            Ok(AdminRequest::Doctor) => Reply::Ok(AdminReply::Report {
                json: doctor().await,
            }),
            Ok(req @ (AdminRequest::MaildirImport { .. } | AdminRequest::MaildirExport { .. })) => {
                match crate::maildir::run(dir.store(), &dir.config().hostname, req).await {
                    Ok(r) => Reply::Ok(r),
                    Err(e) => Reply::Err(e),
                }
            }
            Ok(req) => match dir.admin(req).await {
                Ok(r) => Reply::Ok(r),
                Err(e) => Reply::Err(e),
            },
            Err(e) => Reply::Err(AdminError {
                message: format!("bad request: {e}"),
                temporary: false,
            }),
        };
        let mut out = serde_json::to_vec(&reply)?;
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}

/// Sends one request to a running server. `Ok(None)` when no server listens.
pub async fn request(
    data_dir: &Path,
    req: &AdminRequest,
) -> anyhow::Result<Option<Result<AdminReply, AdminError>>> {
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let (r, mut w) = stream.into_split();
    let mut out = serde_json::to_vec(req)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    let mut lines = BufReader::new(r).lines();
    let line = lines
        .next_line()
        .await?
        .context("the running server closed the control socket without answering")?;
    Ok(Some(match serde_json::from_str::<Reply>(&line)? {
        Reply::Ok(r) => Ok(r),
        Reply::Err(e) => Err(e),
    }))
}
