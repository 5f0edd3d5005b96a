//! The protocol steps a mail program takes: greeting, capabilities, STARTTLS, login; the same
//! for IMAP, POP3 and SMTP so the checks read alike.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::discover::Proto;
use crate::probe::Conn;

#[derive(Debug, Default, Clone)]
pub struct Caps {
    pub starttls: bool,
    /// SASL mechanisms offered, upper case.
    pub auth: Vec<String>,
    /// IMAP LOGINDISABLED: no password before TLS.
    pub login_disabled: bool,
    pub sasl_ir: bool,
    pub uidplus: bool,
    pub lines: Vec<String>,
}

#[derive(Debug)]
pub enum Login {
    Ok,
    /// Wrong user name or password (the server rarely says which).
    Refused(String),
    /// Not over this connection: encryption needed first.
    NeedsTls(String),
    /// Locked out or unavailable for now.
    Temporary(String),
    /// The server offers no login here (SMTP without AUTH).
    NotOffered,
    Broken(String),
}

/// What greets us says which protocol the port speaks.
pub fn proto_of_greeting(line: &str) -> Option<Proto> {
    if line.starts_with("* OK") || line.starts_with("* PREAUTH") || line.starts_with("* BYE") {
        Some(Proto::Imap)
    } else if line.starts_with("+OK") || line.starts_with("-ERR") {
        Some(Proto::Pop3)
    } else if line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
        Some(Proto::Smtp)
    } else {
        None
    }
}

/// Reads the greeting; Err with the server's words when it turns us away.
pub async fn greeting(c: &mut Conn, proto: Proto) -> Result<String, String> {
    match proto {
        Proto::Smtp => {
            let (code, lines) = c.smtp_reply().await?;
            let text = lines.join(" ");
            if code == 220 {
                Ok(text)
            } else {
                Err(format!("{code} {text}"))
            }
        }
        Proto::Imap | Proto::Pop3 => {
            let l = c.line().await?;
            if l.starts_with("* OK") || l.starts_with("+OK") || l.starts_with("* PREAUTH") {
                Ok(l)
            } else {
                Err(l)
            }
        }
    }
}

pub async fn caps(c: &mut Conn, proto: Proto) -> Result<Caps, String> {
    let mut caps = Caps::default();
    match proto {
        Proto::Imap => {
            let (untagged, status) = c.imap("c1", "CAPABILITY").await?;
            if !status.starts_with("c1 OK") {
                return Err(status);
            }
            for l in untagged {
                if let Some(rest) = l.strip_prefix("* CAPABILITY ") {
                    for w in rest.split_whitespace() {
                        let w = w.to_ascii_uppercase();
                        match w.as_str() {
                            "STARTTLS" => caps.starttls = true,
                            "LOGINDISABLED" => caps.login_disabled = true,
                            "SASL-IR" => caps.sasl_ir = true,
                            "UIDPLUS" => caps.uidplus = true,
                            _ => {}
                        }
                        if let Some(m) = w.strip_prefix("AUTH=") {
                            caps.auth.push(m.to_string());
                        }
                        caps.lines.push(w);
                    }
                }
            }
        }
        Proto::Pop3 => {
            c.send("CAPA").await?;
            let first = c.line().await?;
            if first.starts_with("+OK") {
                loop {
                    let l = c.line().await?;
                    if l == "." {
                        break;
                    }
                    let u = l.to_ascii_uppercase();
                    if u == "STLS" {
                        caps.starttls = true;
                    }
                    if let Some(m) = u.strip_prefix("SASL ") {
                        caps.auth.extend(m.split_whitespace().map(str::to_string));
                    }
                    caps.lines.push(u);
                }
            }
        }
        Proto::Smtp => {
            c.send("EHLO postern-check.invalid").await?;
            let (code, lines) = c.smtp_reply().await?;
            if code != 250 {
                return Err(format!("{code} {}", lines.join(" ")));
            }
            for l in lines.iter().skip(1) {
                let u = l.to_ascii_uppercase();
                if u == "STARTTLS" {
                    caps.starttls = true;
                }
                if let Some(m) = u.strip_prefix("AUTH ").or_else(|| u.strip_prefix("AUTH=")) {
                    caps.auth.extend(m.split_whitespace().map(str::to_string));
                }
                caps.lines.push(u);
            }
        }
    }
    Ok(caps)
}

/// Sends the STARTTLS command; the handshake is the caller's.
pub async fn starttls(c: &mut Conn, proto: Proto) -> Result<(), String> {
    match proto {
        Proto::Imap => {
            let (_, status) = c.imap("c2", "STARTTLS").await?;
            if status.starts_with("c2 OK") {
                Ok(())
            } else {
                Err(status)
            }
        }
        Proto::Pop3 => {
            c.send("STLS").await?;
            let l = c.line().await?;
            if l.starts_with("+OK") { Ok(()) } else { Err(l) }
        }
        Proto::Smtp => {
            c.send("STARTTLS").await?;
            let (code, lines) = c.smtp_reply().await?;
            if code == 220 {
                Ok(())
            } else {
                Err(format!("{code} {}", lines.join(" ")))
            }
        }
    }
}

fn imap_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

fn classify_imap(status: &str) -> Login {
    let text = status.splitn(3, ' ').nth(2).unwrap_or("").to_string();
    let upper = text.to_ascii_uppercase();
    if upper.starts_with("BAD") {
        Login::Broken(text)
    } else if upper.contains("[UNAVAILABLE]")
        || upper.contains("[INUSE]")
        || upper.contains("[LIMIT]")
    {
        Login::Temporary(text)
    } else if upper.contains("[PRIVACYREQUIRED]") {
        Login::NeedsTls(text)
    } else {
        Login::Refused(text)
    }
}

pub async fn login(c: &mut Conn, proto: Proto, caps: &Caps, user: &str, pass: &str) -> Login {
    match try_login(c, proto, caps, user, pass).await {
        Ok(l) => l,
        Err(e) => Login::Broken(e),
    }
}

async fn try_login(
    c: &mut Conn,
    proto: Proto,
    caps: &Caps,
    user: &str,
    pass: &str,
) -> Result<Login, String> {
    match proto {
        Proto::Imap => {
            if caps.login_disabled {
                return Ok(Login::NeedsTls("LOGINDISABLED".into()));
            }
            let status = if caps.auth.iter().any(|m| m == "PLAIN") {
                if caps.sasl_ir {
                    c.imap("c3", &format!("AUTHENTICATE PLAIN {}", plain(user, pass)))
                        .await?
                        .1
                } else {
                    c.send("c3 AUTHENTICATE PLAIN").await?;
                    let l = c.line().await?;
                    if !l.starts_with('+') {
                        return Ok(classify_imap(&l));
                    }
                    c.send(&plain(user, pass)).await?;
                    loop {
                        let l = c.line().await?;
                        if l.starts_with("c3 ") {
                            break l;
                        }
                    }
                }
            } else {
                c.imap(
                    "c3",
                    &format!("LOGIN {} {}", imap_quote(user), imap_quote(pass)),
                )
                .await?
                .1
            };
            if status.starts_with("c3 OK") {
                Ok(Login::Ok)
            } else {
                Ok(classify_imap(&status))
            }
        }
        Proto::Pop3 => {
            let pop_err = |l: String| {
                let u = l.to_ascii_uppercase();
                if u.contains("[SYS/TEMP]") || u.contains("[IN-USE]") || u.contains("LOCKED") {
                    Login::Temporary(l)
                } else if u.contains("TLS") || u.contains("ENCRYPT") || u.contains("STLS") {
                    Login::NeedsTls(l)
                } else {
                    Login::Refused(l)
                }
            };
            c.send(&format!("USER {user}")).await?;
            let l = c.line().await?;
            if !l.starts_with("+OK") {
                return Ok(pop_err(l));
            }
            c.send(&format!("PASS {pass}")).await?;
            let l = c.line().await?;
            if l.starts_with("+OK") {
                Ok(Login::Ok)
            } else {
                Ok(pop_err(l))
            }
        }
        Proto::Smtp => {
            let (code, lines) = if caps.auth.iter().any(|m| m == "PLAIN") {
                c.send(&format!("AUTH PLAIN {}", plain(user, pass))).await?;
                c.smtp_reply().await?
            } else if caps.auth.iter().any(|m| m == "LOGIN") {
                c.send("AUTH LOGIN").await?;
                let (code, lines) = c.smtp_reply().await?;
                if code != 334 {
                    (code, lines)
                } else {
                    c.send(&B64.encode(user)).await?;
                    let (code, lines) = c.smtp_reply().await?;
                    if code != 334 {
                        (code, lines)
                    } else {
                        c.send(&B64.encode(pass)).await?;
                        c.smtp_reply().await?
                    }
                }
            } else {
                return Ok(Login::NotOffered);
            };
            let text = format!("{code} {}", lines.join(" "));
            Ok(match code {
                235 => Login::Ok,
                530 | 538 | 523 => Login::NeedsTls(text),
                400..=499 => Login::Temporary(text),
                _ => Login::Refused(text),
            })
        }
    }
}

pub async fn quit(c: &mut Conn, proto: Proto) {
    let _ = match proto {
        Proto::Imap => c.send("c9 LOGOUT").await,
        Proto::Pop3 | Proto::Smtp => c.send("QUIT").await,
    };
}
