//! The control socket: admin commands reach a running server through it, so they take effect
//! without a restart and never open the store behind the server's back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use postern_admin::{Admin, AdminError, AdminReply, AdminRequest};
use postern_net::Shutdown;
use postern_store::{NoProgress, Progress};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};

/// A line from the server: progress lines while a request runs, then its reply.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok(AdminReply),
    Err(AdminError),
    Progress(ProgressLine),
}

/// How far the running request has come, counted from the start of its phase.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
struct ProgressLine {
    phase: String,
    items: u64,
    bytes: u64,
    total_items: u64,
    total_bytes: u64,
}

/// Progress lines are sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Collects the progress of the request being answered, for the lines sent before its reply.
#[derive(Default)]
struct Relay(Mutex<RelayState>);

#[derive(Default)]
struct RelayState {
    line: ProgressLine,
    changed: bool,
    sent: Option<Instant>,
}

impl Relay {
    fn change(&self, f: impl FnOnce(&mut ProgressLine)) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s.line);
        s.changed = true;
    }

    /// The line to send at `now`: when something changed, and no sooner than PROGRESS_EVERY
    /// after the last one unless `last` (the reply follows, and the client's summary wants the
    /// final counts).
    fn due(&self, now: Instant, last: bool) -> Option<Vec<u8>> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let early = s.sent.is_some_and(|t| now < t + PROGRESS_EVERY);
        if !s.changed || early && !last {
            return None;
        }
        s.changed = false;
        s.sent = Some(now);
        let mut out = serde_json::to_vec(&Reply::Progress(s.line.clone())).ok()?;
        out.push(b'\n');
        Some(out)
    }
}

impl Progress for Relay {
    fn total(&self, items: u64, bytes: u64) {
        self.change(|l| {
            l.total_items = items;
            l.total_bytes = bytes;
        });
    }

    fn add(&self, items: u64, bytes: u64) {
        self.change(|l| {
            l.items += items;
            l.bytes += bytes;
        });
    }

    fn phase(&self, name: &str) {
        self.change(|l| {
            *l = ProgressLine {
                phase: name.to_string(),
                ..Default::default()
            }
        });
    }
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

async fn handle(stream: UnixStream, admin: &Arc<Admin>, max_line: u64) -> anyhow::Result<()> {
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
                match run_relaying(admin, req, &mut w).await? {
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

/// Runs one request in a task of its own, sending its progress lines to `w` meanwhile: the
/// request may hold its thread for long stretches without yielding, and this task then
/// runs on another. A client that stops reading does not stop the request: once begun, an
/// import runs to its end.
async fn run_relaying(
    admin: &Arc<Admin>,
    req: AdminRequest,
    w: &mut OwnedWriteHalf,
) -> anyhow::Result<Result<AdminReply, AdminError>> {
    let relay = Arc::new(Relay::default());
    let mut run = tokio::spawn({
        let (admin, relay) = (admin.clone(), relay.clone());
        async move { admin.run_with(req, relay).await }
    });
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reading = true;
    let result = loop {
        tokio::select! {
            r = &mut run => break r?,
            _ = tick.tick(), if reading => {
                if let Some(line) = relay.due(Instant::now(), false) {
                    reading = w.write_all(&line).await.is_ok();
                }
            }
        }
    };
    if let Some(line) = relay.due(Instant::now(), true) {
        w.write_all(&line).await?;
    }
    Ok(result)
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
    request_with(data_dir, req, &NoProgress).await
}

/// Sends one request to a running server, telling `progress` how it goes until the reply.
/// `Ok(None)` when no server listens.
pub async fn request_with(
    data_dir: &Path,
    req: &AdminRequest,
    progress: &dyn Progress,
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
    let mut seen = ProgressLine::default();
    loop {
        let line = lines
            .next_line()
            .await?
            .context("the running server closed the control socket without answering")?;
        match serde_json::from_str::<Reply>(&line)? {
            Reply::Progress(p) => forward(&mut seen, p, progress),
            Reply::Ok(r) => return Ok(Some(Ok(r))),
            Reply::Err(e) => return Ok(Some(Err(e))),
        }
    }
}

/// Tells `to` what changed between the progress line `seen` last and `now` (cumulative).
fn forward(seen: &mut ProgressLine, now: ProgressLine, to: &dyn Progress) {
    // Counts going down: a phase began again under the same name.
    if now.phase != seen.phase || now.items < seen.items || now.bytes < seen.bytes {
        to.phase(&now.phase);
        *seen = ProgressLine {
            phase: now.phase.clone(),
            ..Default::default()
        };
    }
    if (now.total_items, now.total_bytes) != (seen.total_items, seen.total_bytes) {
        to.total(now.total_items, now.total_bytes);
    }
    if (now.items, now.bytes) != (seen.items, seen.bytes) {
        to.add(now.items - seen.items, now.bytes - seen.bytes);
    }
    *seen = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_throttled_but_the_last_is_always_sent() {
        let relay = Relay::default();
        let t = Instant::now();
        assert_eq!(relay.due(t, false), None, "nothing to say yet");
        relay.phase("importing");
        relay.total(3000, 1 << 20);
        relay.add(64, 4096);
        let line = relay.due(t, false).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"progress\":{\"phase\":\"importing\",\"items\":64,\"bytes\":4096,\
             \"total_items\":3000,\"total_bytes\":1048576}}\n"
        );
        relay.add(64, 4096);
        assert_eq!(
            relay.due(t + Duration::from_millis(50), false),
            None,
            "too soon"
        );
        let line = relay.due(t + PROGRESS_EVERY, false).unwrap();
        assert!(
            String::from_utf8(line)
                .unwrap()
                .contains("\"items\":128,\"bytes\":8192")
        );
        relay.add(1, 1);
        assert!(
            relay.due(t + PROGRESS_EVERY, true).is_some(),
            "the last line"
        );
        assert_eq!(relay.due(t + PROGRESS_EVERY * 9, true), None, "unchanged");
    }

    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);

    impl Progress for Record {
        fn total(&self, items: u64, bytes: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("total {items} {bytes}"));
        }
        fn add(&self, items: u64, bytes: u64) {
            self.0.lock().unwrap().push(format!("add {items} {bytes}"));
        }
        fn phase(&self, name: &str) {
            self.0.lock().unwrap().push(format!("phase {name}"));
        }
    }

    #[test]
    fn cumulative_lines_become_phases_totals_and_increments() {
        let to = Record::default();
        let mut seen = ProgressLine::default();
        let line = |phase: &str, items, bytes, total_items| ProgressLine {
            phase: phase.to_string(),
            items,
            bytes,
            total_items,
            total_bytes: 0,
        };
        forward(&mut seen, line("copying", 10, 100, 30), &to);
        forward(&mut seen, line("copying", 25, 250, 30), &to);
        forward(&mut seen, line("counting", 2, 20, 0), &to);
        forward(&mut seen, line("counting", 1, 10, 0), &to);
        assert_eq!(
            *to.0.lock().unwrap(),
            [
                "phase copying",
                "total 30 0",
                "add 10 100",
                "add 15 150",
                "phase counting",
                "add 2 20",
                "phase counting",
                "add 1 10",
            ]
        );
    }
}
