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
/// its owner only. A request line may be `max_line` bytes (a message from `postern sendmail`
/// travels in one).
pub fn listen(
    data_dir: &Path,
    admin: Arc<Admin>,
    max_line: u64,
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
            let admin = admin.clone();
            tokio::spawn(async move {
                let _ = handle(stream, &admin, max_line).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

async fn handle(stream: UnixStream, admin: &Admin, max_line: u64) -> anyhow::Result<()> {
    // Who is asking, from the kernel: a submission is that local user's.
    let peer = stream.peer_cred().ok().map(|c| user_name(c.uid()));
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(max_line)).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(mut req) => {
                if let AdminRequest::Submit(s) = &mut req {
                    s.local_user = peer.clone().unwrap_or_default();
                }
                match admin.run(req).await {
                    Ok(r) => Reply::Ok(r),
                    Err(e) => Reply::Err(e),
                }
            }
            Err(e) => Reply::Err(AdminError::new(format!("bad request: {e}"))),
        };
        let mut out = serde_json::to_vec(&reply)?;
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}

/// The login name of a user id, else the number.
fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r writes only into `pw` and `buf` (of the length given); the strings it
    // points `pw` at live in `buf`, read before it goes.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out);
        if rc == 0 && !out.is_null() && !pw.pw_name.is_null() {
            return std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    uid.to_string()
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
