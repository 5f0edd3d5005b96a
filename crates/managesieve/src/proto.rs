//! The ManageSieve wire syntax and session states, free of I/O so it can be tested and fuzzed
//! alone. The listener assembles a whole command (its line plus any literals) and hands it to
//! [`Core::command`]; what needs storage comes back as an [`Op`].

/// The largest literal we announce a willingness to read when no limit is set elsewhere.
pub const MAX_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    HaveSpace { name: String, size: u64 },
    Put { name: String, script: Vec<u8> },
    List,
    SetActive { name: String },
    Get { name: String },
    Delete { name: String },
    Rename { from: String, to: String },
    Check { script: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Reply(Vec<u8>),
    /// Say this, then close.
    Close(Vec<u8>),
    /// Answer OK, then start TLS, then send the capabilities again.
    StartTls,
    /// Check these credentials, then call [`Core::login_done`].
    Login {
        user: String,
        password: String,
    },
    Op(Op),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    NotAuthenticated,
    /// AUTHENTICATE sent without an initial response: the next line is the client's.
    SaslWait,
    Authenticated,
}

pub struct CoreConfig {
    pub tls_available: bool,
    pub allow_plaintext: bool,
    pub max_errors: u32,
    /// The SIEVE capability: every extension scripts may require.
    pub extensions: String,
    pub max_redirects: usize,
}

pub struct Core {
    cfg: CoreConfig,
    state: State,
    tls: bool,
    errors: u32,
}

/// A string as the protocol quotes it; literals for what a quoted string cannot carry.
pub fn string(s: &str) -> String {
    if s.len() > 1024 || s.contains(['"', '\\', '\r', '\n']) {
        format!("{{{}}}\r\n{s}", s.len())
    } else {
        format!("\"{s}\"")
    }
}

/// `OK`, `NO` or `BYE`, an optional response code and a human text.
pub fn response(kind: &str, code: Option<&str>, text: &str) -> Vec<u8> {
    let mut s = kind.to_string();
    if let Some(c) = code {
        s.push_str(" (");
        s.push_str(c);
        s.push(')');
    }
    if !text.is_empty() {
        s.push(' ');
        s.push_str(&string(text));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

pub fn ok(text: &str) -> Vec<u8> {
    response("OK", None, text)
}

pub fn no(code: Option<&str>, text: &str) -> Vec<u8> {
    response("NO", code, text)
}

/// The length of the literal a command line ends with (`{12+}` or `{12}`), if any.
pub fn literal_len(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let n = &body[open + 1..];
    let n = n.strip_suffix(b"+").unwrap_or(n);
    if n.is_empty() || n.len() > 19 || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

#[derive(Debug, PartialEq)]
enum Token {
    Atom(String),
    Str(Vec<u8>),
    Number(u64),
}

/// Splits a whole command (line and literals) into its words.
fn tokens(buf: &[u8]) -> Result<Vec<Token>, &'static str> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = buf.len();
    while i < n {
        match buf[i] {
            b' ' => i += 1,
            b'\r' | b'\n' => {
                if buf[i..] == *b"\r\n" || buf[i..] == *b"\n" {
                    return Ok(out);
                }
                return Err("stray line break");
            }
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match buf.get(i) {
                        None | Some(b'\r') | Some(b'\n') => return Err("unterminated string"),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match buf.get(i + 1) {
                                Some(&c @ (b'"' | b'\\')) => s.push(c),
                                _ => return Err("bad escape in string"),
                            }
                            i += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            b'{' => {
                let close = buf[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or("bad literal")?
                    + i;
                let len = literal_len(&buf[i..=close]).ok_or("bad literal")? as usize;
                let start = close + 1;
                let start = match &buf[start..] {
                    [b'\r', b'\n', ..] => start + 2,
                    [b'\n', ..] => start + 1,
                    _ => return Err("literal length not followed by a line break"),
                };
                let end = start.checked_add(len).ok_or("bad literal")?;
                if end > n {
                    return Err("literal shorter than announced");
                }
                out.push(Token::Str(buf[start..end].to_vec()));
                i = end;
            }
            c if c.is_ascii_digit() => {
                let end = buf[i..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(n, |p| p + i);
                let v = std::str::from_utf8(&buf[i..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("number too large")?;
                out.push(Token::Number(v));
                i = end;
            }
            c if c.is_ascii_alphabetic() => {
                let end = buf[i..]
                    .iter()
                    .position(|b| !b.is_ascii_alphanumeric())
                    .map_or(n, |p| p + i);
                out.push(Token::Atom(
                    String::from_utf8_lossy(&buf[i..end]).to_ascii_uppercase(),
                ));
                i = end;
            }
            _ => return Err("unexpected character"),
        }
    }
    Ok(out)
}

/// A script name: UTF-8 without control characters (RFC 5804 section 1.6).
fn name(t: &Token) -> Result<String, &'static str> {
    let Token::Str(b) = t else {
        return Err("expected a script name in quotes");
    };
    let s = std::str::from_utf8(b).map_err(|_| "script names are UTF-8")?;
    if s.chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return Err("script names have no control characters");
    }
    if s.len() > MAX_NAME {
        return Err("script name too long");
    }
    if s.is_empty() {
        return Err("a script needs a name");
    }
    Ok(s.to_string())
}

fn text(t: &Token) -> Result<String, &'static str> {
    match t {
        Token::Str(b) => String::from_utf8(b.clone()).map_err(|_| "expected UTF-8"),
        _ => Err("expected a string"),
    }
}

impl Core {
    pub fn new(cfg: CoreConfig, tls: bool) -> Core {
        Core {
            cfg,
            state: State::NotAuthenticated,
            tls,
            errors: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    fn may_login(&self) -> bool {
        self.tls || self.cfg.allow_plaintext
    }

    /// The capability listing (also the greeting), ending in OK.
    pub fn capabilities(&self) -> Vec<u8> {
        let mut s = String::from("\"IMPLEMENTATION\" \"Postern\"\r\n");
        if self.may_login() && self.state != State::Authenticated {
            s.push_str("\"SASL\" \"PLAIN\"\r\n");
        } else {
            s.push_str("\"SASL\" \"\"\r\n");
        }
        s.push_str(&format!("\"SIEVE\" \"{}\"\r\n", self.cfg.extensions));
        if !self.tls && self.cfg.tls_available {
            s.push_str("\"STARTTLS\"\r\n");
        }
        s.push_str(&format!(
            "\"MAXREDIRECTS\" \"{}\"\r\n\"VERSION\" \"1.0\"\r\n\"UNAUTHENTICATE\"\r\nOK\r\n",
            self.cfg.max_redirects
        ));
        s.into_bytes()
    }

    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    /// After [`Action::Login`]: the reply to send (`temporary`: a lockout or a server error,
    /// worth trying again later).
    pub fn login_done(&mut self, ok: bool, why: &str, temporary: bool) -> Vec<u8> {
        if ok {
            self.state = State::Authenticated;
            self.errors = 0;
            response("OK", None, "Logged in")
        } else {
            self.state = State::NotAuthenticated;
            response("NO", temporary.then_some("TRYLATER"), why)
        }
    }

    fn error(&mut self, what: &str) -> Action {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            return Action::Close(response("BYE", None, "Too many errors; closing connection"));
        }
        Action::Reply(no(None, what))
    }

    /// A command line of more than `max` octets.
    pub fn line_too_long(&mut self) -> Action {
        Action::Close(response(
            "BYE",
            None,
            "Command too long; closing connection",
        ))
    }

    /// One whole command: its line and the literals it announced.
    pub fn command(&mut self, buf: &[u8]) -> Action {
        let toks = match tokens(buf) {
            Ok(t) => t,
            Err(e) => return self.error(&format!("Syntax error: {e}")),
        };
        if self.state == State::SaslWait {
            self.state = State::NotAuthenticated;
            return match toks.as_slice() {
                [Token::Str(s)] if s == b"*" => Action::Reply(no(None, "Authentication aborted")),
                [Token::Str(s)] => self.sasl_plain(&String::from_utf8_lossy(s)),
                _ => self.error("Expected the SASL response as a string"),
            };
        }
        let Some(Token::Atom(cmd)) = toks.first() else {
            return self.error("Expected a command");
        };
        let args = &toks[1..];
        let authed = self.state == State::Authenticated;
        match (cmd.as_str(), args) {
            ("CAPABILITY", []) => Action::Reply(self.capabilities()),
            ("LOGOUT", []) => Action::Close(ok("Logout complete")),
            ("NOOP", []) => Action::Reply(ok("Done")),
            ("NOOP", [t]) => match text(t) {
                Ok(tag) => Action::Reply(response(
                    "OK",
                    Some(&format!("TAG {}", string(&tag))),
                    "Done",
                )),
                Err(e) => self.error(e),
            },
            ("STARTTLS", []) if self.tls => self.error("TLS is already on"),
            ("STARTTLS", []) if !self.cfg.tls_available => {
                self.error("TLS is not configured on this server")
            }
            ("STARTTLS", []) if authed => self.error("STARTTLS only before logging in"),
            ("STARTTLS", []) => Action::StartTls,
            ("AUTHENTICATE", _) if authed => self.error("Already logged in"),
            ("AUTHENTICATE", [mech, rest @ ..]) if rest.len() <= 1 => {
                if !self.may_login() {
                    return Action::Reply(response(
                        "NO",
                        Some("ENCRYPT-NEEDED"),
                        "Use STARTTLS first: passwords are only taken over TLS",
                    ));
                }
                let mech = match text(mech) {
                    Ok(m) => m.to_ascii_uppercase(),
                    Err(e) => return self.error(e),
                };
                match (mech.as_str(), rest) {
                    ("PLAIN", []) => {
                        self.state = State::SaslWait;
                        Action::Reply(b"\"\"\r\n".to_vec())
                    }
                    ("PLAIN", [t]) => match text(t) {
                        Ok(s) => self.sasl_plain(&s),
                        Err(e) => self.error(e),
                    },
                    ("LOGIN", _) => self
                        .error("Use PLAIN: LOGIN needs more round trips than this server offers"),
                    _ => Action::Reply(no(None, "Unsupported mechanism; use PLAIN")),
                }
            }
            ("UNAUTHENTICATE", []) if authed => {
                self.state = State::NotAuthenticated;
                Action::Reply(ok("Logged out"))
            }
            (
                "HAVESPACE" | "PUTSCRIPT" | "LISTSCRIPTS" | "SETACTIVE" | "GETSCRIPT"
                | "DELETESCRIPT" | "RENAMESCRIPT" | "CHECKSCRIPT" | "UNAUTHENTICATE",
                _,
            ) if !authed => self.error("Log in first"),
            ("HAVESPACE", [n, Token::Number(size)]) => {
                self.op(name(n).map(|name| Op::HaveSpace { name, size: *size }))
            }
            ("PUTSCRIPT", [n, Token::Str(s)]) => self.op(name(n).map(|name| Op::Put {
                name,
                script: s.clone(),
            })),
            ("LISTSCRIPTS", []) => Action::Op(Op::List),
            ("SETACTIVE", [n]) => self.op(match n {
                Token::Str(s) if s.is_empty() => Ok(Op::SetActive {
                    name: String::new(),
                }),
                _ => name(n).map(|name| Op::SetActive { name }),
            }),
            ("GETSCRIPT", [n]) => self.op(name(n).map(|name| Op::Get { name })),
            ("DELETESCRIPT", [n]) => self.op(name(n).map(|name| Op::Delete { name })),
            ("RENAMESCRIPT", [a, b]) => {
                self.op(name(a).and_then(|from| Ok(Op::Rename { from, to: name(b)? })))
            }
            ("CHECKSCRIPT", [Token::Str(s)]) => Action::Op(Op::Check { script: s.clone() }),
            (
                "CAPABILITY" | "LOGOUT" | "NOOP" | "STARTTLS" | "AUTHENTICATE" | "UNAUTHENTICATE"
                | "HAVESPACE" | "PUTSCRIPT" | "LISTSCRIPTS" | "SETACTIVE" | "GETSCRIPT"
                | "DELETESCRIPT" | "RENAMESCRIPT" | "CHECKSCRIPT",
                _,
            ) => self.error(&format!("Wrong arguments for {cmd}")),
            _ => self.error(&format!("Unknown command {cmd}")),
        }
    }

    fn op(&mut self, r: Result<Op, &'static str>) -> Action {
        match r {
            Ok(op) => Action::Op(op),
            Err(e) => self.error(e),
        }
    }

    fn sasl_plain(&mut self, b64: &str) -> Action {
        match postern_directory::sasl::decode_plain(b64) {
            Ok((user, password)) => Action::Login { user, password },
            Err(_) => self.error("Malformed PLAIN response"),
        }
    }
}

/// The reply to LISTSCRIPTS.
pub fn list_reply(scripts: &[(String, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, active) in scripts {
        out.extend_from_slice(string(n).as_bytes());
        if *active {
            out.extend_from_slice(b" ACTIVE");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&ok("Listed"));
    out
}

/// The reply to GETSCRIPT: the script as a literal.
pub fn script_reply(source: &str) -> Vec<u8> {
    let mut out = format!("{{{}}}\r\n", source.len()).into_bytes();
    out.extend_from_slice(source.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&ok("Got it"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(tls: bool) -> Core {
        Core::new(
            CoreConfig {
                tls_available: true,
                allow_plaintext: false,
                max_errors: 3,
                extensions: "fileinto vacation".into(),
                max_redirects: 4,
            },
            tls,
        )
    }

    fn reply(a: Action) -> String {
        match a {
            Action::Reply(b) | Action::Close(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn literals_and_strings() {
        assert_eq!(literal_len(b"PUTSCRIPT \"a\" {12+}\r\n"), Some(12));
        assert_eq!(literal_len(b"PUTSCRIPT \"a\" {3}"), Some(3));
        assert_eq!(literal_len(b"PUTSCRIPT \"{3}\""), None);
        assert_eq!(literal_len(b"X {99999999999999999999+}"), None);
        let t = tokens(b"PUTSCRIPT \"my \\\"s\\\"\" {5+}\r\nkeep;\r\n").unwrap();
        assert_eq!(
            t,
            [
                Token::Atom("PUTSCRIPT".into()),
                Token::Str(b"my \"s\"".to_vec()),
                Token::Str(b"keep;".to_vec())
            ]
        );
        assert!(tokens(b"PUTSCRIPT \"a\" {9+}\r\nkeep;\r\n").is_err());
        assert_eq!(string("a\"b"), "{3}\r\na\"b");
    }

    #[test]
    fn login_needs_tls_and_commands_need_login() {
        let mut c = core(false);
        let caps = String::from_utf8(c.capabilities()).unwrap();
        assert!(
            caps.contains("\"STARTTLS\"") && caps.contains("\"SASL\" \"\""),
            "{caps}"
        );
        assert!(
            reply(c.command(b"AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n")).contains("ENCRYPT-NEEDED")
        );
        assert!(reply(c.command(b"LISTSCRIPTS\r\n")).starts_with("NO"));
        assert_eq!(c.command(b"STARTTLS\r\n"), Action::StartTls);
        c.tls_started();
        let caps = String::from_utf8(c.capabilities()).unwrap();
        assert!(caps.contains("\"SASL\" \"PLAIN\"") && !caps.contains("STARTTLS"));
        // AGEAYg== is "\0a\0b".
        assert_eq!(
            c.command(b"Authenticate \"PLAIN\" \"AGEAYg==\"\r\n"),
            Action::Login {
                user: "a".into(),
                password: "b".into()
            }
        );
        assert!(
            String::from_utf8(c.login_done(true, "", false))
                .unwrap()
                .starts_with("OK")
        );
        assert_eq!(c.command(b"LISTSCRIPTS\r\n"), Action::Op(Op::List));
        assert_eq!(
            c.command(b"SETACTIVE \"\"\r\n"),
            Action::Op(Op::SetActive {
                name: String::new()
            })
        );
        assert_eq!(
            c.command(b"HAVESPACE \"x\" 1000\r\n"),
            Action::Op(Op::HaveSpace {
                name: "x".into(),
                size: 1000
            })
        );
    }

    #[test]
    fn sasl_continuation_and_errors_close() {
        let mut c = core(true);
        assert_eq!(reply(c.command(b"AUTHENTICATE \"PLAIN\"\r\n")), "\"\"\r\n");
        assert_eq!(
            c.command(b"\"AGEAYg==\"\r\n"),
            Action::Login {
                user: "a".into(),
                password: "b".into()
            }
        );
        c.login_done(false, "Wrong user or password", false);
        assert!(reply(c.command(b"BOGUS\r\n")).starts_with("NO"));
        assert!(reply(c.command(b"\"unterminated\r\n")).starts_with("NO"));
        assert!(reply(c.command(b"BOGUS\r\n")).starts_with("BYE"));
    }

    #[test]
    fn bad_names_refused() {
        let mut c = core(true);
        c.login_done(true, "", false);
        assert!(reply(c.command(b"GETSCRIPT \"a\x01b\"\r\n")).starts_with("NO"));
        assert!(reply(c.command(b"GETSCRIPT \"\xff\"\r\n")).starts_with("NO"));
    }
}
