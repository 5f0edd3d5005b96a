//! The sendmail(1) interface for programs on this machine (cron, mail(1), PHP's mail(), git
//! send-email): `postern sendmail` (or the binary called as `sendmail`) reads the message from
//! stdin and hands it to the running server over its control socket; the server takes it as
//! the local user's submission. Called as `mailq`, it lists the queue.

use std::io::Read;

use anyhow::{Context, bail};
use base64::Engine;
use postern_admin::{AdminRequest, Submission};
use postern_config::Config;
use postern_directory::{Destination, Directory, Routed, domain_of, normalize_address};
use postern_ingest::{Arrival, Envelope, Incoming, Ingest, Outcome, Raw, Recipient};

/// The config a `sendmail` started from anywhere finds (a link made by install-sendmail).
pub const SYSTEM_CONFIG: &str = "/etc/postern/postern.toml";

/// Links this binary as `sbin/sendmail` and `bin/mailq` (what was there is kept beside, as
/// `NAME.before-postern`), and the config as [`SYSTEM_CONFIG`].
pub fn install(
    config: &std::path::Path,
    sbin: &std::path::Path,
    bin: &std::path::Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::symlink;
    let exe = std::env::current_exe()
        .and_then(|e| e.canonicalize())
        .context("cannot find this program's path")?;
    let config = config
        .canonicalize()
        .with_context(|| format!("cannot find {}", config.display()))?;
    let link = |target: &std::path::Path, at: &std::path::Path| -> anyhow::Result<()> {
        if std::fs::read_link(at).is_ok_and(|t| t == target) {
            println!("{} is already {}", at.display(), target.display());
            return Ok(());
        }
        if std::fs::symlink_metadata(at).is_ok() {
            let mut kept = at.as_os_str().to_owned();
            kept.push(".before-postern");
            if std::fs::symlink_metadata(&kept).is_err() {
                std::fs::rename(at, &kept)
                    .with_context(|| format!("cannot move {} aside", at.display()))?;
                println!(
                    "{} kept as {}",
                    at.display(),
                    std::path::Path::new(&kept).display()
                );
            } else {
                std::fs::remove_file(at)
                    .with_context(|| format!("cannot replace {}", at.display()))?;
            }
        }
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        symlink(target, at).with_context(|| format!("cannot link {}", at.display()))?;
        println!("{} -> {}", at.display(), target.display());
        Ok(())
    };
    link(&exe, &sbin.join("sendmail"))?;
    link(&exe, &bin.join("mailq"))?;
    link(&config, std::path::Path::new(SYSTEM_CONFIG))?;
    println!(
        "local programs now send mail through this server (it must be running); their sender is \
         set by [sendmail] in the config"
    );
    Ok(())
}

/// What the command line asked.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub sender: Option<String>,
    pub full_name: Option<String>,
    pub extract: bool,
    /// `-i`/`-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// `-bp`: list the queue (mailq).
    pub list_queue: bool,
    pub recipients: Vec<String>,
}

/// sendmail's options, as Postfix and Exim take them; the ones that only tune delivery
/// (`-odi`, `-oem`, `-v`...) are accepted and change nothing here.
pub fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter().peekable();
    // An option's value: glued (`-fuser`) or the next word.
    fn value<'a>(
        glued: &'a str,
        it: &mut std::iter::Peekable<std::slice::Iter<'a, String>>,
        opt: &str,
    ) -> anyhow::Result<String> {
        if !glued.is_empty() {
            return Ok(glued.to_string());
        }
        it.next()
            .cloned()
            .with_context(|| format!("option {opt} needs a value"))
    }
    while let Some(arg) = it.next() {
        if arg == "--" {
            a.recipients.extend(it.by_ref().cloned());
            break;
        }
        let Some(opt) = arg.strip_prefix('-').filter(|o| !o.is_empty()) else {
            a.recipients.push(arg.clone());
            continue;
        };
        let (flag, rest) = opt.split_at(1);
        match flag {
            "t" => a.extract = true,
            "i" => a.ignore_dots = true,
            "f" | "r" => a.sender = Some(value(rest, &mut it, arg)?),
            "F" => a.full_name = Some(value(rest, &mut it, arg)?),
            "o" if rest == "i" => a.ignore_dots = true,
            // -oem, -odi, -oQ..., -oXvalue: delivery tuning.
            "o" => {}
            "b" => match rest {
                "m" | "" => {}
                "p" => a.list_queue = true,
                other => bail!("sendmail -b{other} is not supported: only -bm and -bp"),
            },
            "v" | "U" | "n" | "m" => {}
            // Options that take a value we do not use.
            "B" | "N" | "R" | "V" | "X" | "C" | "L" | "h" | "O" => {
                value(rest, &mut it, arg)?;
            }
            "q" => bail!("sendmail -q: the server runs its queue itself; see postern queue list"),
            _ => bail!("sendmail option {arg} is not supported"),
        }
    }
    Ok(a)
}

/// Runs as sendmail(1): reads the message, hands it to the server, exits non-zero (with the
/// reason on stderr) when it is not taken.
pub async fn run(cfg: &Config, args: &[String]) -> anyhow::Result<()> {
    let a = parse_args(args)?;
    if a.list_queue {
        return mailq(cfg).await;
    }
    let max = cfg.smtp.max_message_size.0;
    let mut message = Vec::new();
    std::io::stdin()
        .lock()
        .take(max + 1)
        .read_to_end(&mut message)
        .context("cannot read the message from stdin")?;
    if message.len() as u64 > max {
        bail!("the message is larger than smtp.max_message_size ({max} bytes)");
    }
    if !a.ignore_dots {
        message = up_to_lone_dot(message);
    }
    let req = AdminRequest::Submit(Submission {
        local_user: String::new(),
        sender: a.sender,
        full_name: a.full_name,
        recipients: a.recipients,
        extract: a.extract,
        message: base64::engine::general_purpose::STANDARD.encode(&message),
    });
    match crate::control::request(&cfg.data_dir, &req).await? {
        Some(Ok(reply)) => {
            tracing::debug!("{reply}");
            Ok(())
        }
        Some(Err(e)) => bail!("{}", e.message),
        None => {
            bail!("the mail server is not running (postern serve), so the message was not sent")
        }
    }
}

pub async fn mailq(cfg: &Config) -> anyhow::Result<()> {
    let reply = crate::admin_cmd::run(cfg, AdminRequest::QueueList).await?;
    print!("{reply}");
    Ok(())
}

/// Without `-i`, a line with a single dot ends the message (sendmail's old rule).
fn up_to_lone_dot(mut m: Vec<u8>) -> Vec<u8> {
    let mut start = 0;
    while start < m.len() {
        let end = m[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(m.len(), |p| start + p + 1);
        let line = &m[start..end];
        let bare = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if bare == b"." {
            m.truncate(start);
            break;
        }
        start = end;
    }
    m
}

/// The message with CRLF line ends.
fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + m.len() / 32);
    for (i, &b) in m.iter().enumerate() {
        if b == b'\n' && (i == 0 || m[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The header section's fields, unfolded (name lower-case, value), and where the body starts.
fn fields(m: &[u8]) -> (Vec<(String, String, std::ops::Range<usize>)>, usize) {
    let end = m
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(m.len(), |p| p + 2);
    let mut out: Vec<(String, String, std::ops::Range<usize>)> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let next = m[pos..end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(end, |p| pos + p + 2);
        let line = String::from_utf8_lossy(&m[pos..next]);
        let text = line.trim_end_matches(['\r', '\n']);
        if text.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str(text);
                last.2.end = next;
            }
        } else if let Some((name, value)) = text.split_once(':') {
            out.push((
                name.trim().to_ascii_lowercase(),
                value.trim().to_string(),
                pos..next,
            ));
        }
        pos = next;
    }
    (out, end)
}

/// The addresses in an address-list field value (group markers left out).
fn addresses(value: &str) -> Vec<String> {
    postern_message::address::parse_list(value)
        .into_iter()
        .filter_map(|a| Some(format!("{}@{}", a.mailbox?, a.host?)))
        .collect()
}

/// The first local domain, for local users' addresses.
async fn first_domain(directory: &Directory, cfg: &Config) -> String {
    directory
        .store()
        .domain_list()
        .await
        .ok()
        .and_then(|d| d.into_iter().next().map(|d| d.name))
        .unwrap_or_else(|| cfg.hostname.clone())
}

/// Takes a message from a local program: the user's address from `[sendmail]`, the header
/// completed (From, Date, Message-ID when missing; Bcc removed), every recipient routed as a
/// logged-in user's would be, then ingest as a submission.
/// A recipient of mail a logged-in user sends (sendmail, the webmail), routed as SMTP routes
/// it at RCPT: our addresses to their mailboxes (as `sender` may reach them), others remote.
pub(crate) async fn recipient(
    directory: &Directory,
    sender: &str,
    address: String,
) -> Result<Recipient, String> {
    let domain = domain_of(&address).to_ascii_lowercase();
    let local = directory
        .is_local_domain(&domain)
        .await
        .map_err(|e| e.to_string())?;
    let dests = if local {
        match directory.expand_from(&address, sender, true).await {
            Ok(Routed::To(d)) if !d.is_empty() => d,
            Ok(Routed::Denied(why)) => return Err(format!("{address}: {why}")),
            Ok(_) => return Err(format!("{address}: no mailbox by this name")),
            Err(e) => return Err(e.to_string()),
        }
    } else {
        vec![Destination::Remote(address.clone())]
    };
    Ok(Recipient {
        address,
        orcpt: None,
        notify: None,
        dests,
        role: false,
    })
}

pub async fn submit(ingest: &Ingest, s: Submission) -> Result<String, String> {
    let cfg = &*ingest.config;
    let directory = &ingest.directory;
    let message = base64::engine::general_purpose::STANDARD
        .decode(s.message.as_bytes())
        .map_err(|_| "the message did not arrive whole".to_string())?;
    if message.len() as u64 > cfg.smtp.max_message_size.0 {
        return Err(format!(
            "the message is larger than smtp.max_message_size ({} bytes)",
            cfg.smtp.max_message_size.0
        ));
    }
    let user = if s.local_user.is_empty() {
        "unknown".to_string()
    } else {
        s.local_user.clone()
    };
    let account = match cfg.sendmail.users.get(&user) {
        Some(a) => a.clone(),
        None if !cfg.sendmail.from.is_empty() => cfg.sendmail.from.clone(),
        None => format!("{user}@{}", first_domain(directory, cfg).await),
    };
    let sender = s
        .sender
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| account.clone());
    let sender = if sender == "<>" {
        String::new()
    } else {
        normalize_address(sender.trim_matches(['<', '>']))
            .map_err(|e| format!("sender {sender}: {e}"))?
    };

    let mut body = crlf(&message);
    if !body.windows(4).any(|w| w == b"\r\n\r\n") && !body.starts_with(b"\r\n") {
        // Header fields only, or none: the body is empty.
        if !body.ends_with(b"\r\n") && !body.is_empty() {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"\r\n");
    }
    let (found, _) = fields(&body);
    let has = |n: &str| found.iter().any(|(name, _, _)| name == n);
    let mut recipients = s.recipients.clone();
    if s.extract {
        for (name, value, _) in &found {
            if matches!(name.as_str(), "to" | "cc" | "bcc") {
                recipients.extend(addresses(value));
            }
        }
    }
    // Bcc is never sent on (sendmail's rule, -t or not).
    for (name, _, range) in found.iter().rev() {
        if name == "bcc" {
            body.drain(range.clone());
        }
    }
    let trace_id = postern_message::new_trace_id();
    let now = time::OffsetDateTime::now_utc();
    let mut added = String::new();
    if !has("from") {
        let from = if sender.is_empty() { &account } else { &sender };
        match s.full_name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => added.push_str(&format!(
                "From: \"{}\" <{from}>\r\n",
                n.replace(['"', '\\', '\r', '\n'], "")
            )),
            None => added.push_str(&format!("From: {from}\r\n")),
        }
    }
    if !has("date") {
        added.push_str(&format!("Date: {}\r\n", postern_message::rfc5322_date(now)));
    }
    if !has("message-id") {
        added.push_str(&format!("Message-ID: <{trace_id}@{}>\r\n", cfg.hostname));
    }
    body.splice(0..0, added.into_bytes());

    let mut rcpts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in recipients {
        let address = normalize_address(r.trim().trim_matches(['<', '>']))
            .map_err(|e| format!("recipient {r}: {e}"))?;
        if !seen.insert(address.to_ascii_lowercase()) {
            continue;
        }
        rcpts.push(recipient(directory, &account, address).await?);
    }
    if rcpts.is_empty() {
        return Err(
            "no recipients: give them as arguments, or use -t to read To, Cc and Bcc".into(),
        );
    }

    let return_path = postern_message::return_path_header(&sender);
    let received = format!(
        "Received: by {} (Postern, from local user {}) id {trace_id};\r\n\t{}\r\n",
        cfg.hostname,
        user.replace(|c: char| c.is_control() || c == '(' || c == ')', ""),
        postern_message::rfc5322_date(now)
    );
    let mut raw = Vec::with_capacity(return_path.len() + received.len() + body.len());
    raw.extend_from_slice(return_path.as_bytes());
    raw.extend_from_slice(received.as_bytes());
    raw.extend_from_slice(&body);
    let outcome = ingest
        .accept(Incoming {
            raw: Raw::Memory(raw),
            return_path_len: return_path.len(),
            ours: 1,
            envelope: Envelope {
                from: sender,
                envid: None,
                ret: None,
                rcpts,
                requiretls: false,
            },
            arrival: Arrival {
                trace_id: trace_id.clone(),
                text: format!("from local user {user} by sendmail"),
                message_id: None,
                checks: None,
            },
            check: None,
            submitter: Some(format!("local user {user} (sendmail)")),
            logged_in: true,
            sent_by: None,
        })
        .await;
    match outcome {
        Outcome::Taken(_) => Ok(format!("taken as {trace_id}")),
        other => Err(other.status().summary()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn sendmail_options() {
        let a = parse_args(&words("-t -i -f bob@example.test -FBob -odi -oem x@y.test")).unwrap();
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("bob@example.test"));
        assert_eq!(a.full_name.as_deref(), Some("Bob"));
        assert_eq!(a.recipients, ["x@y.test"]);
        assert!(
            parse_args(&words("-oi -- -odd@y.test"))
                .unwrap()
                .ignore_dots
        );
        assert_eq!(
            parse_args(&words("-oi -- -odd@y.test")).unwrap().recipients,
            ["-odd@y.test"]
        );
        assert!(parse_args(&words("-bp")).unwrap().list_queue);
        assert!(parse_args(&words("-bs")).is_err());
        assert!(parse_args(&words("-f")).is_err());
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_told() {
        assert_eq!(up_to_lone_dot(b"a\n.\nb\n".to_vec()), b"a\n");
        assert_eq!(up_to_lone_dot(b"a\r\n.\r\n".to_vec()), b"a\r\n");
        assert_eq!(up_to_lone_dot(b"a\n..\nb".to_vec()), b"a\n..\nb");
        assert_eq!(crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
    }

    #[test]
    fn header_fields_unfolded() {
        let m = b"To: a@x.test,\r\n b@x.test\r\nBcc: c@x.test\r\n\r\nbody\r\n";
        let (f, end) = fields(m);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, "to");
        assert_eq!(addresses(&f[0].1), ["a@x.test", "b@x.test"]);
        assert_eq!(&m[f[1].2.clone()], b"Bcc: c@x.test\r\n");
        assert_eq!(&m[end..], b"\r\nbody\r\n");
    }
}
