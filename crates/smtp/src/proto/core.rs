//! The SMTP session state machine, free of I/O: command lines in, replies and actions out.
//! Lookups (recipients, passwords) and storage happen in the driver, which reports back.

use super::command::{self, Body, Command, MailFrom, RcptTo};
use super::reply::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Port 25: mail from other servers for our domains. No AUTH.
    Mx,
    /// Ports 587/465: our users' mail programs. AUTH before MAIL.
    Submission,
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub role: Role,
    pub hostname: String,
    pub max_size: u64,
    pub max_recipients: usize,
    pub max_errors: u32,
    /// A certificate is configured, so STARTTLS can be offered.
    pub tls_available: bool,
    pub allow_plaintext_auth: bool,
}

/// What the driver must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
    /// Decide whether this sender is allowed; answer with [`SmtpCore::sender_checked`].
    CheckSender(MailFrom),
    /// Resolve the recipient; answer with [`SmtpCore::recipient_checked`].
    CheckRecipient(RcptTo),
    /// Run the SASL exchange; answer with [`SmtpCore::authenticated`].
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    /// Send 220, discard pending input, handshake, then call [`SmtpCore::tls_started`].
    StartTls,
    /// Send 354, receive the message, store it, then call [`SmtpCore::transaction_done`].
    ReceiveData,
    /// Read `size` octets of message; when `last`, store it and call `transaction_done`.
    ReceiveBdat {
        size: u64,
        last: bool,
    },
    /// Read `size` octets and throw them away, then send the reply.
    DiscardBdat {
        size: u64,
        reply: Reply,
    },
    /// DATA was refused. Send the reply; if the client already sent more (message content
    /// pipelined against RFC 2920), close instead of reading it as commands.
    RefuseData(Reply),
    /// Send 221 and close.
    Quit,
}

#[derive(Debug, Clone)]
pub struct Envelope<R> {
    pub from: MailFrom,
    pub rcpts: Vec<R>,
    pub rejected: usize,
}

pub struct SmtpCore<R> {
    cfg: CoreConfig,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    user: Option<String>,
    tx: Option<Envelope<R>>,
    /// A BDAT sequence is under way.
    bdat: bool,
    errors: u32,
}

fn bad_sequence(msg: &str) -> Reply {
    Reply::new(503, "5.5.1", msg)
}

impl<R> SmtpCore<R> {
    pub fn new(cfg: CoreConfig, tls: bool) -> Self {
        SmtpCore {
            cfg,
            helo: None,
            esmtp: false,
            tls,
            user: None,
            tx: None,
            bdat: false,
            errors: 0,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn greeting(&self) -> Reply {
        Reply::new(220, "", format!("{} ESMTP Postern", self.cfg.hostname))
    }

    pub fn helo_name(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn envelope(&self) -> Option<&Envelope<R>> {
        self.tx.as_ref()
    }

    fn auth_offered(&self) -> bool {
        self.cfg.role == Role::Submission && (self.tls || self.cfg.allow_plaintext_auth)
    }

    /// Counts a failed command; past the limit the connection is closed.
    fn fail(&mut self, r: Reply) -> Action {
        if r.code >= 500 {
            self.errors += 1;
            if self.errors >= self.cfg.max_errors {
                return self.too_many_errors();
            }
        }
        Action::Reply(r)
    }

    fn too_many_errors(&self) -> Action {
        Action::Close(Reply::new(
            421,
            "4.7.0",
            format!("{} Too many errors; closing connection", self.cfg.hostname),
        ))
    }

    /// Counts an error the driver saw (bad AUTH, refused message).
    pub fn note_error(&mut self) -> Option<Action> {
        self.errors += 1;
        (self.errors >= self.cfg.max_errors).then(|| self.too_many_errors())
    }

    pub fn line_too_long(&mut self) -> Action {
        self.fail(Reply::new(500, "5.5.6", "Line too long"))
    }

    pub fn command(&mut self, line: &[u8]) -> Action {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(r) => return self.fail(r),
        };
        if self.bdat
            && !matches!(
                cmd,
                Command::Bdat { .. } | Command::Rset | Command::Quit | Command::Noop
            )
        {
            return self.fail(bad_sequence("Only BDAT, RSET or QUIT may follow BDAT"));
        }
        match cmd {
            Command::Ehlo(h) => {
                self.helo = Some(h.clone());
                self.esmtp = true;
                self.tx = None;
                Action::Reply(self.ehlo_reply(&h))
            }
            Command::Helo(h) => {
                self.helo = Some(h);
                self.esmtp = false;
                self.tx = None;
                Action::Reply(Reply::new(250, "", self.cfg.hostname.clone()))
            }
            Command::Mail(m) => self.mail(m),
            Command::Rcpt(r) => {
                let Some(tx) = &self.tx else {
                    return self.fail(bad_sequence("Send MAIL FROM first"));
                };
                if tx.rcpts.len() >= self.cfg.max_recipients {
                    return Action::Reply(Reply::new(
                        452,
                        "4.5.3",
                        format!(
                            "Too many recipients: at most {} per message; send the rest in another message",
                            self.cfg.max_recipients
                        ),
                    ));
                }
                if !tx.from.smtputf8 && !r.address.is_ascii() {
                    return self.fail(Reply::new(
                        553,
                        "5.6.7",
                        "Non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM",
                    ));
                }
                Action::CheckRecipient(r)
            }
            Command::Data => {
                let refusal = match &self.tx {
                    None => Some(bad_sequence("Send MAIL FROM first")),
                    Some(tx) if tx.rcpts.is_empty() && tx.rejected > 0 => {
                        Some(Reply::new(554, "5.5.1", "No valid recipients"))
                    }
                    Some(tx) if tx.rcpts.is_empty() => Some(bad_sequence("Send RCPT TO first")),
                    Some(_) => None,
                };
                match refusal {
                    None => Action::ReceiveData,
                    Some(r) => match self.fail(r) {
                        Action::Reply(r) => Action::RefuseData(r),
                        close => close,
                    },
                }
            }
            Command::Bdat { size, last } => {
                let reply = match &self.tx {
                    None => Some(bad_sequence("Send MAIL FROM first")),
                    Some(tx) if tx.rcpts.is_empty() => {
                        Some(Reply::new(554, "5.5.1", "No valid recipients"))
                    }
                    Some(_) => None,
                };
                match reply {
                    Some(reply) => {
                        self.errors += 1;
                        self.bdat = false;
                        Action::DiscardBdat { size, reply }
                    }
                    None => {
                        self.bdat = !last;
                        Action::ReceiveBdat { size, last }
                    }
                }
            }
            Command::Rset => {
                self.tx = None;
                self.bdat = false;
                Action::Reply(Reply::new(250, "2.0.0", "OK"))
            }
            Command::Noop => Action::Reply(Reply::new(250, "2.0.0", "OK")),
            Command::Quit => Action::Quit,
            Command::Vrfy => Action::Reply(Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept the message and attempt delivery",
            )),
            Command::Expn => self.fail(Reply::new(502, "5.5.1", "EXPN is not available")),
            Command::Help => Action::Reply(Reply::new(
                214,
                "2.0.0",
                "Postern: send EHLO, then MAIL FROM, RCPT TO and DATA (RFC 5321)",
            )),
            Command::StartTls => {
                if self.tls {
                    self.fail(bad_sequence("TLS is already active"))
                } else if !self.cfg.tls_available {
                    Action::Reply(Reply::new(
                        454,
                        "4.7.0",
                        "TLS not available: this server has no certificate",
                    ))
                } else {
                    Action::StartTls
                }
            }
            Command::Auth { mechanism, initial } => {
                if self.cfg.role == Role::Mx {
                    return self.fail(bad_sequence(
                        "AUTH is not available on this port: mail programs send on the submission port (587 or 465)",
                    ));
                }
                if self.helo.is_none() {
                    return self.fail(bad_sequence("Send EHLO first"));
                }
                if self.user.is_some() {
                    return self.fail(bad_sequence("Already authenticated"));
                }
                if self.tx.is_some() {
                    return self.fail(bad_sequence(
                        "AUTH is not allowed during a mail transaction",
                    ));
                }
                if !self.auth_offered() {
                    return self.fail(Reply::new(
                        538,
                        "5.7.11",
                        "Encryption required for authentication: choose STARTTLS (port 587) or SSL/TLS (port 465) for the outgoing server in your mail program",
                    ));
                }
                if mechanism != "PLAIN" && mechanism != "LOGIN" {
                    return self.fail(Reply::new(
                        504,
                        "5.5.4",
                        "Unrecognized authentication type; use PLAIN or LOGIN",
                    ));
                }
                Action::Authenticate { mechanism, initial }
            }
        }
    }

    fn ehlo_reply(&self, helo: &str) -> Reply {
        let mut lines = vec![
            format!("{} greets {helo}", self.cfg.hostname),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.max_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.cfg.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        // RFC 8689: a message that requires TLS can only be handed over in a TLS session.
        if self.tls {
            lines.push("REQUIRETLS".into());
        }
        if self.auth_offered() && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply::multi(250, lines)
    }

    fn mail(&mut self, m: MailFrom) -> Action {
        if self.helo.is_none() {
            return self.fail(bad_sequence("Send HELO or EHLO first"));
        }
        if self.tx.is_some() {
            return self.fail(bad_sequence("Nested MAIL command: send RSET first"));
        }
        if self.cfg.role == Role::Submission && self.user.is_none() {
            let r = if !self.tls && !self.cfg.allow_plaintext_auth {
                Reply::new(
                    530,
                    "5.7.0",
                    "Encryption and authentication required: choose STARTTLS (port 587) or SSL/TLS (port 465) and turn on 'my outgoing server requires authentication' in your mail program",
                )
            } else {
                Reply::new(
                    530,
                    "5.7.0",
                    "Authentication required: turn on 'my outgoing server requires authentication' in your mail program",
                )
            };
            return self.fail(r);
        }
        if !self.esmtp
            && (m.size.is_some()
                || m.body != Body::SevenBit
                || m.smtputf8
                || m.ret.is_some()
                || m.envid.is_some())
        {
            return self.fail(Reply::new(555, "5.5.4", "Parameters need EHLO, not HELO"));
        }
        if m.requiretls && !self.tls {
            return self.fail(Reply::new(
                530,
                "5.7.10",
                "REQUIRETLS needs a TLS session: send STARTTLS first",
            ));
        }
        if m.body == Body::BinaryMime {
            return self.fail(Reply::new(
                555,
                "5.5.4",
                "BODY=BINARYMIME is not supported; use 8BITMIME",
            ));
        }
        if let Some(s) = m.size
            && s > self.cfg.max_size
        {
            return self.fail(Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds the maximum of {} bytes",
                    self.cfg.max_size
                ),
            ));
        }
        if !m.smtputf8 && !m.address.is_ascii() {
            return self.fail(Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address needs the SMTPUTF8 parameter",
            ));
        }
        Action::CheckSender(m)
    }

    pub fn sender_checked(&mut self, from: MailFrom, result: Result<(), Reply>) -> Action {
        match result {
            Ok(()) => {
                self.tx = Some(Envelope {
                    from,
                    rcpts: Vec::new(),
                    rejected: 0,
                });
                Action::Reply(Reply::new(250, "2.1.0", "Sender OK"))
            }
            Err(r) => self.fail(r),
        }
    }

    pub fn recipient_checked(&mut self, result: Result<R, Reply>) -> Action {
        let Some(tx) = &mut self.tx else {
            return Action::Reply(bad_sequence("Send MAIL FROM first"));
        };
        match result {
            Ok(r) => {
                tx.rcpts.push(r);
                Action::Reply(Reply::new(250, "2.1.5", "Recipient OK"))
            }
            Err(reply) => {
                tx.rejected += 1;
                self.fail(reply)
            }
        }
    }

    pub fn authenticated(&mut self, user: Option<String>) {
        if user.is_some() {
            self.user = user;
        }
    }

    /// RFC 3207 4.2: after the handshake, forget everything learnt before it.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.user = None;
        self.tx = None;
        self.bdat = false;
    }

    /// The message was stored or refused: the transaction is over either way.
    pub fn transaction_done(&mut self) -> Option<Envelope<R>> {
        self.bdat = false;
        self.tx.take()
    }

    pub fn abort_transaction(&mut self) {
        self.bdat = false;
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(role: Role, tls: bool) -> SmtpCore<String> {
        core_with(role, tls, 10)
    }

    fn core_with(role: Role, tls: bool, max_errors: u32) -> SmtpCore<String> {
        SmtpCore::new(
            CoreConfig {
                role,
                hostname: "mx.test".into(),
                max_size: 1000,
                max_recipients: 2,
                max_errors,
                tls_available: true,
                allow_plaintext_auth: false,
            },
            tls,
        )
    }

    fn reply(a: Action) -> Reply {
        match a {
            Action::Reply(r) | Action::Close(r) | Action::RefuseData(r) => r,
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn mx_transaction() {
        let mut c = core(Role::Mx, false);
        assert_eq!(reply(c.command(b"MAIL FROM:<a@b.test>")).code, 503);
        let ehlo = reply(c.command(b"EHLO client.test"));
        assert!(ehlo.lines.contains(&"STARTTLS".to_string()));
        assert!(
            !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
            "no AUTH on MX"
        );
        let Action::CheckSender(m) = c.command(b"MAIL FROM:<a@b.test> SIZE=10") else {
            panic!()
        };
        assert_eq!(reply(c.sender_checked(m, Ok(()))).code, 250);
        assert_eq!(reply(c.command(b"DATA")).code, 503);
        let Action::CheckRecipient(r) = c.command(b"RCPT TO:<x@ours.test>") else {
            panic!()
        };
        assert_eq!(reply(c.recipient_checked(Ok(r.address))).code, 250);
        assert_eq!(c.command(b"DATA"), Action::ReceiveData);
        assert_eq!(c.transaction_done().unwrap().rcpts, ["x@ours.test"]);
        assert_eq!(reply(c.command(b"AUTH PLAIN")).code, 503);
    }

    #[test]
    fn requiretls_only_over_tls() {
        let mut plain = core(Role::Mx, false);
        let ehlo = reply(plain.command(b"EHLO client.test"));
        assert!(!ehlo.lines.contains(&"REQUIRETLS".to_string()));
        let r = reply(plain.command(b"MAIL FROM:<a@b.test> REQUIRETLS"));
        assert_eq!((r.code, r.enhanced), (530, "5.7.10"));
        let mut tls = core(Role::Mx, true);
        let ehlo = reply(tls.command(b"EHLO client.test"));
        assert!(ehlo.lines.contains(&"REQUIRETLS".to_string()));
        let Action::CheckSender(m) = tls.command(b"MAIL FROM:<a@b.test> REQUIRETLS") else {
            panic!()
        };
        assert!(m.requiretls);
    }

    #[test]
    fn size_and_recipient_limits() {
        let mut c = core(Role::Mx, false);
        c.command(b"EHLO c");
        assert_eq!(
            reply(c.command(b"MAIL FROM:<a@b.test> SIZE=1001")).code,
            552
        );
        let Action::CheckSender(m) = c.command(b"MAIL FROM:<a@b.test>") else {
            panic!()
        };
        c.sender_checked(m, Ok(()));
        for _ in 0..2 {
            let Action::CheckRecipient(r) = c.command(b"RCPT TO:<x@o.test>") else {
                panic!()
            };
            c.recipient_checked(Ok(r.address));
        }
        assert_eq!(reply(c.command(b"RCPT TO:<y@o.test>")).code, 452);
    }

    #[test]
    fn submission_needs_tls_and_auth() {
        let mut c = core(Role::Submission, false);
        let ehlo = reply(c.command(b"EHLO c"));
        assert!(
            !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
            "no AUTH before TLS"
        );
        assert_eq!(reply(c.command(b"AUTH PLAIN AGEAYg==")).code, 538);
        let r = reply(c.command(b"MAIL FROM:<a@b.test>"));
        assert_eq!((r.code, r.enhanced), (530, "5.7.0"));
        assert!(r.lines[0].contains("STARTTLS"));
        assert_eq!(c.command(b"STARTTLS"), Action::StartTls);
        c.tls_started();
        assert_eq!(
            reply(c.command(b"MAIL FROM:<a@b.test>")).code,
            503,
            "EHLO again after TLS"
        );
        let ehlo = reply(c.command(b"EHLO c"));
        assert!(ehlo.lines.contains(&"AUTH PLAIN LOGIN".to_string()));
        assert!(!ehlo.lines.contains(&"STARTTLS".to_string()));
        assert!(matches!(
            c.command(b"AUTH PLAIN AGEAYg=="),
            Action::Authenticate { .. }
        ));
        c.authenticated(Some("a@b.test".into()));
        assert!(matches!(
            c.command(b"MAIL FROM:<a@b.test>"),
            Action::CheckSender(_)
        ));
    }

    #[test]
    fn errors_close_the_connection() {
        let mut c = core_with(Role::Mx, false, 3);
        assert!(matches!(c.command(b"BOGUS"), Action::Reply(_)));
        assert!(matches!(c.command(b"BOGUS"), Action::Reply(_)));
        assert!(matches!(c.command(b"BOGUS"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn bdat_without_recipients_is_read_and_discarded() {
        let mut c = core(Role::Mx, false);
        c.command(b"EHLO c");
        assert!(matches!(
            c.command(b"BDAT 5 LAST"),
            Action::DiscardBdat { size: 5, .. }
        ));
        let Action::CheckSender(m) = c.command(b"MAIL FROM:<a@b.test>") else {
            panic!()
        };
        c.sender_checked(m, Ok(()));
        let Action::CheckRecipient(r) = c.command(b"RCPT TO:<x@o.test>") else {
            panic!()
        };
        c.recipient_checked(Ok(r.address));
        assert_eq!(
            c.command(b"BDAT 5"),
            Action::ReceiveBdat {
                size: 5,
                last: false
            }
        );
        assert_eq!(
            reply(c.command(b"DATA")).code,
            503,
            "no DATA in a BDAT transaction"
        );
        assert_eq!(
            c.command(b"BDAT 0 LAST"),
            Action::ReceiveBdat {
                size: 0,
                last: true
            }
        );
    }
}
