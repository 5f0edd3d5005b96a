//! POP3 without I/O (RFC 1939, 2449, 2595, 3206, 5034): command lines in, replies and actions
//! out. The maildrop is a fixed snapshot for the session; deletions happen only in UPDATE.

use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Authorization,
    Transaction,
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub tls_available: bool,
    pub allow_plaintext: bool,
    pub max_errors: u32,
}

/// One message of the maildrop as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropMessage {
    pub uid: u32,
    /// Octets RETR sends before dot-stuffing (CRLF line endings).
    pub size: u64,
    pub uidl: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send, then close.
    Close(Vec<u8>),
    /// Check the credentials, lock and load the maildrop, then call `logged_in` or send an error.
    Authenticate { user: String, password: String },
    /// Ask for the SASL response ("+ "), then call `sasl_response`.
    SaslContinue,
    /// Send "+OK", then the message (dot-stuffed), then ".".
    Retr { index: usize },
    /// Like Retr, only the header and `lines` body lines.
    Top { index: usize, lines: u64 },
    /// Send "+OK Begin TLS negotiation", discard pending input, handshake, call `tls_started`.
    StartTls,
    /// Enter UPDATE: remove `delete`, mark `seen` as read, then say goodbye and close.
    Update { delete: Vec<u32>, seen: Vec<u32> },
}

pub struct Pop3Core {
    cfg: CoreConfig,
    state: State,
    tls: bool,
    user: Option<String>,
    sasl_pending: bool,
    messages: Vec<DropMessage>,
    deleted: HashSet<usize>,
    retrieved: HashSet<usize>,
    errors: u32,
}

fn ok(text: &str) -> Vec<u8> {
    if text.is_empty() {
        b"+OK\r\n".to_vec()
    } else {
        format!("+OK {text}\r\n").into_bytes()
    }
}

fn err(text: &str) -> Vec<u8> {
    format!("-ERR {text}\r\n").into_bytes()
}

impl Pop3Core {
    pub fn new(cfg: CoreConfig, tls: bool) -> Self {
        Pop3Core {
            cfg,
            state: State::Authorization,
            tls,
            user: None,
            sasl_pending: false,
            messages: Vec::new(),
            deleted: HashSet::new(),
            retrieved: HashSet::new(),
            errors: 0,
        }
    }

    pub fn greeting(&self) -> Vec<u8> {
        ok("Postern POP3 server ready")
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn message(&self, index: usize) -> &DropMessage {
        &self.messages[index]
    }

    fn plaintext_ok(&self) -> bool {
        self.tls || self.cfg.allow_plaintext
    }

    fn fail(&mut self, text: &str) -> Action {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            return Action::Close(err("Too many errors; closing connection"));
        }
        Action::Send(err(text))
    }

    /// A failed login, counted like any error.
    pub fn login_failed(&mut self, text: &str) -> Action {
        self.user = None;
        self.fail(text)
    }

    pub fn line_too_long(&mut self) -> Action {
        self.fail("Line too long")
    }

    pub fn logged_in(&mut self, messages: Vec<DropMessage>) -> Action {
        self.state = State::Transaction;
        self.messages = messages;
        let n = self.messages.len();
        let size: u64 = self.messages.iter().map(|m| m.size).sum();
        Action::Send(ok(&format!("Logged in: {n} messages ({size} octets)")))
    }

    /// RFC 2595 4: after STLS the client starts over, knowing nothing.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.user = None;
    }

    fn capa(&self) -> Vec<u8> {
        let mut c = vec![
            "TOP",
            "UIDL",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "EXPIRE NEVER",
            "IMPLEMENTATION Postern",
        ];
        if self.state == State::Authorization {
            if self.plaintext_ok() {
                c.push("USER");
                c.push("SASL PLAIN");
            }
            if self.cfg.tls_available && !self.tls {
                c.push("STLS");
            }
        }
        let mut out = b"+OK Capability list follows\r\n".to_vec();
        for l in c {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    const PLAINTEXT_REFUSED: &'static str = "[AUTH] Plaintext login is disabled: choose SSL/TLS (port 995) or STARTTLS (port 110) for the incoming server in your mail program";

    /// The response line of a SASL exchange (after "+ ").
    pub fn sasl_response(&mut self, line: &[u8]) -> Action {
        self.sasl_pending = false;
        let s = String::from_utf8_lossy(line);
        self.plain(&s)
    }

    fn plain(&mut self, b64: &str) -> Action {
        match postern_directory::sasl::decode_plain(b64) {
            Ok((user, password)) => Action::Authenticate { user, password },
            Err(postern_directory::sasl::SaslError::Cancelled) => {
                Action::Send(err("Authentication cancelled"))
            }
            Err(e) => self.fail(&format!("[AUTH] Malformed credentials: {e}")),
        }
    }

    fn index(&mut self, arg: Option<&str>) -> Result<usize, Action> {
        let Some(a) = arg else {
            return Err(self.fail("Message number required"));
        };
        let n: usize = match a.parse() {
            Ok(n) => n,
            Err(_) => return Err(self.fail(&format!("{a:?} is not a message number"))),
        };
        if n == 0 || n > self.messages.len() {
            return Err(self.fail(&format!(
                "No such message: {n} (there are {})",
                self.messages.len()
            )));
        }
        if self.deleted.contains(&(n - 1)) {
            return Err(self.fail(&format!("Message {n} is deleted")));
        }
        Ok(n - 1)
    }

    pub fn command(&mut self, line: &[u8]) -> Action {
        if self.sasl_pending {
            return self.sasl_response(line);
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return self.fail("Command is not valid UTF-8");
        };
        let mut parts = line.split(' ');
        let verb = parts.next().unwrap_or("").to_ascii_uppercase();
        let args: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
        let a1 = args.first().copied();
        let a2 = args.get(1).copied();
        match (self.state, verb.as_str()) {
            (_, "CAPA") => Action::Send(self.capa()),
            (_, "QUIT") => match self.state {
                State::Authorization => Action::Close(ok("Postern POP3 server signing off")),
                State::Transaction => {
                    let mut delete: Vec<u32> =
                        self.deleted.iter().map(|&i| self.messages[i].uid).collect();
                    delete.sort_unstable();
                    let mut seen: Vec<u32> = self
                        .retrieved
                        .iter()
                        .filter(|i| !self.deleted.contains(i))
                        .map(|&i| self.messages[i].uid)
                        .collect();
                    seen.sort_unstable();
                    Action::Update { delete, seen }
                }
            },
            (_, "NOOP") if self.state == State::Transaction => Action::Send(ok("")),
            (State::Authorization, "STLS") => {
                if self.tls {
                    self.fail("TLS is already active")
                } else if !self.cfg.tls_available {
                    self.fail("TLS is not available: this server has no certificate")
                } else {
                    Action::StartTls
                }
            }
            (State::Authorization, "USER") => {
                if !self.plaintext_ok() {
                    return self.fail(Self::PLAINTEXT_REFUSED);
                }
                match a1 {
                    Some(_) => {
                        // Some user names contain spaces; take the whole rest of the line.
                        self.user = Some(line[5.min(line.len())..].trim().to_string());
                        Action::Send(ok("Send your password"))
                    }
                    None => self.fail("USER needs a user name (your full email address)"),
                }
            }
            (State::Authorization, "PASS") => {
                if !self.plaintext_ok() {
                    return self.fail(Self::PLAINTEXT_REFUSED);
                }
                let Some(user) = self.user.take() else {
                    return self.fail("Send USER first");
                };
                let password = line.get(5..).unwrap_or("").to_string();
                if password.is_empty() {
                    return self.fail("PASS needs a password");
                }
                Action::Authenticate { user, password }
            }
            (State::Authorization, "AUTH") => match a1.map(|m| m.to_ascii_uppercase()) {
                None => Action::Send(b"+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n".to_vec()),
                Some(m) if m == "PLAIN" => {
                    if !self.plaintext_ok() {
                        return self.fail(Self::PLAINTEXT_REFUSED);
                    }
                    match a2 {
                        Some(initial) if initial != "=" => self.plain(initial),
                        _ => {
                            self.sasl_pending = true;
                            Action::SaslContinue
                        }
                    }
                }
                Some(_) => self.fail("Unsupported authentication mechanism; use PLAIN"),
            },
            (State::Transaction, "STAT") => {
                let (n, size) = self
                    .live()
                    .fold((0, 0u64), |(n, s), (_, m)| (n + 1, s + m.size));
                Action::Send(ok(&format!("{n} {size}")))
            }
            (State::Transaction, "LIST") => self.listing(a1, |m| m.size.to_string()),
            (State::Transaction, "UIDL") => self.listing(a1, |m| m.uidl.clone()),
            (State::Transaction, "RETR") => match self.index(a1) {
                Ok(i) => {
                    self.retrieved.insert(i);
                    Action::Retr { index: i }
                }
                Err(a) => a,
            },
            (State::Transaction, "TOP") => {
                let i = match self.index(a1) {
                    Ok(i) => i,
                    Err(a) => return a,
                };
                match a2.and_then(|l| l.parse::<u64>().ok()) {
                    Some(lines) => Action::Top { index: i, lines },
                    None => self.fail("TOP needs a message number and a line count"),
                }
            }
            (State::Transaction, "DELE") => match self.index(a1) {
                Ok(i) => {
                    self.deleted.insert(i);
                    Action::Send(ok(&format!("Message {} marked for deletion", i + 1)))
                }
                Err(a) => a,
            },
            (State::Transaction, "RSET") => {
                self.deleted.clear();
                let n = self.messages.len();
                Action::Send(ok(&format!("{n} messages")))
            }
            (
                _,
                "STLS" | "USER" | "PASS" | "AUTH" | "STAT" | "LIST" | "UIDL" | "RETR" | "TOP"
                | "DELE" | "RSET" | "NOOP",
            ) => {
                let hint = match self.state {
                    State::Authorization => "log in first",
                    State::Transaction => "you are logged in already",
                };
                self.fail(&format!("{verb} is not valid now: {hint}"))
            }
            _ => {
                let shown: String = verb.chars().take(20).filter(|c| !c.is_control()).collect();
                self.fail(&format!("Unknown command: {shown}"))
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &DropMessage)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted.contains(i))
    }

    fn listing(&mut self, arg: Option<&str>, f: impl Fn(&DropMessage) -> String) -> Action {
        match arg {
            Some(_) => match self.index(arg) {
                Ok(i) => Action::Send(ok(&format!("{} {}", i + 1, f(&self.messages[i])))),
                Err(a) => a,
            },
            None => {
                let mut out = ok("listing follows");
                for (i, m) in self.live() {
                    out.extend_from_slice(format!("{} {}\r\n", i + 1, f(m)).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
                Action::Send(out)
            }
        }
    }
}

/// Dot-stuffs message bytes for the wire, across chunk boundaries (RFC 1939 3).
pub struct DotStuffer {
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
        }
    }
}

impl DotStuffer {
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if self.at_line_start && b == b'.' {
                out.extend_from_slice(&chunk[start..i]);
                out.push(b'.');
                start = i;
            }
            self.at_line_start = b == b'\n';
        }
        out.extend_from_slice(&chunk[start..]);
    }

    /// The terminating line, preceded by a CRLF when the message did not end with one.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(tls: bool) -> Pop3Core {
        Pop3Core::new(
            CoreConfig {
                tls_available: true,
                allow_plaintext: false,
                max_errors: 10,
            },
            tls,
        )
    }

    fn text(a: Action) -> String {
        match a {
            Action::Send(b) | Action::Close(b) => String::from_utf8(b).unwrap(),
            a => panic!("{a:?}"),
        }
    }

    fn drop_of(n: u32) -> Vec<DropMessage> {
        (1..=n)
            .map(|uid| DropMessage {
                uid,
                size: 100 * uid as u64,
                uidl: format!("u{uid}"),
            })
            .collect()
    }

    #[test]
    fn plaintext_refused_without_tls() {
        let mut c = core(false);
        let capa = text(c.command(b"CAPA"));
        assert!(capa.contains("STLS") && !capa.contains("USER"));
        assert!(
            text(c.command(b"USER a@b.test"))
                .starts_with("-ERR [AUTH] Plaintext login is disabled")
        );
        assert_eq!(c.command(b"STLS"), Action::StartTls);
        c.tls_started();
        let capa = text(c.command(b"CAPA"));
        assert!(capa.contains("USER") && capa.contains("SASL PLAIN") && !capa.contains("STLS"));
    }

    #[test]
    fn transaction() {
        let mut c = core(true);
        assert!(text(c.command(b"STAT")).starts_with("-ERR STAT is not valid now"));
        c.command(b"USER alice@example.test");
        assert_eq!(
            c.command(b"PASS secret with spaces"),
            Action::Authenticate {
                user: "alice@example.test".into(),
                password: "secret with spaces".into()
            }
        );
        c.logged_in(drop_of(3));
        assert_eq!(text(c.command(b"STAT")), "+OK 3 600\r\n");
        assert_eq!(text(c.command(b"LIST 2")), "+OK 2 200\r\n");
        assert_eq!(
            text(c.command(b"UIDL")),
            "+OK listing follows\r\n1 u1\r\n2 u2\r\n3 u3\r\n.\r\n"
        );
        assert!(text(c.command(b"DELE 2")).starts_with("+OK"));
        assert_eq!(text(c.command(b"STAT")), "+OK 2 400\r\n");
        assert!(text(c.command(b"RETR 2")).starts_with("-ERR Message 2 is deleted"));
        assert!(text(c.command(b"LIST 4")).starts_with("-ERR No such message"));
        assert!(text(c.command(b"RETR 0")).starts_with("-ERR No such message"));
        assert!(text(c.command(b"RETR x")).starts_with("-ERR"));
        assert_eq!(c.command(b"RETR 3"), Action::Retr { index: 2 });
        assert_eq!(c.command(b"TOP 1 5"), Action::Top { index: 0, lines: 5 });
        text(c.command(b"RSET"));
        assert_eq!(text(c.command(b"STAT")), "+OK 3 600\r\n");
        c.command(b"DELE 1");
        assert_eq!(
            c.command(b"QUIT"),
            Action::Update {
                delete: vec![1],
                seen: vec![3]
            }
        );
    }

    #[test]
    fn sasl_plain() {
        let mut c = core(true);
        assert_eq!(c.command(b"AUTH PLAIN"), Action::SaslContinue);
        let b64 = postern_directory::sasl::encode(b"\0a@b.test\0pw");
        assert_eq!(
            c.command(b64.as_bytes()),
            Action::Authenticate {
                user: "a@b.test".into(),
                password: "pw".into()
            }
        );
        let line = format!("AUTH PLAIN {b64}");
        assert!(matches!(
            c.command(line.as_bytes()),
            Action::Authenticate { .. }
        ));
        assert!(text(c.command(b"AUTH PLAIN !!!")).starts_with("-ERR [AUTH] Malformed"));
    }

    #[test]
    fn too_many_errors() {
        let mut c = core(true);
        for _ in 0..9 {
            assert!(matches!(c.command(b"BOGUS"), Action::Send(_)));
        }
        assert!(matches!(c.command(b"BOGUS"), Action::Close(_)));
    }

    #[test]
    fn dot_stuffing_across_chunks() {
        let msg = b"a\r\n.b\r\n..c\r\n.\r\nd";
        for step in 1..msg.len() {
            let mut d = DotStuffer::default();
            let mut out = Vec::new();
            for ch in msg.chunks(step) {
                d.push(ch, &mut out);
            }
            d.finish(&mut out);
            assert_eq!(out, b"a\r\n..b\r\n...c\r\n..\r\nd\r\n.\r\n", "step {step}");
        }
    }
}
