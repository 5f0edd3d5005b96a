//! The control socket: admin commands reach a running server through it, so they take effect
//! without a restart and never open the store behind the server's back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use postern_admin::{Admin, AdminError, AdminReply, AdminRequest};
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

/// Serves admin requests until shutdown, each answered by `admin`. The socket is readable by
/// its owner only.
pub fn listen(data_dir: &Path, admin: Arc<Admin>, mut shutdown: Shutdown) -> anyhow::Result<()> {
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
            let admin = admin.clone();
            tokio::spawn(async move {
                let _ = handle(stream, &admin).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

async fn handle(stream: UnixStream, admin: &Admin) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(1 << 20)).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(req) => match admin.run(req).await {
                Ok(r) => Reply::Ok(r),
                Err(e) => Reply::Err(e),
            },
            Err(e) => Reply::Err(AdminError::new(format!("bad request: {e}"))),
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
