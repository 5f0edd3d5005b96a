//! Sieve filters (RFC 5228) on sieve-rs: which extensions we offer, checking a script before it
//! is stored, and running one on a message. The run decides; the caller stores and sends.
//!
//! A run is synchronous and bounded (instructions, redirects, messages sent); what it needs to
//! know from storage comes through [`Host`].

use std::sync::Arc;

use mail_parser::Message;
use sieve::compiler::grammar::actions::action_redirect::Notify;
use sieve::compiler::grammar::{Capability, Comparator};
use sieve::{Compiler, Envelope as SieveEnvelope, Event, Input, Recipient, Runtime, Script};

pub use sieve::Sieve;

/// What a run needs to ask storage.
pub trait Host {
    /// Whether the account has this mailbox (the `mailbox` extension).
    fn mailbox_exists(&self, name: &str) -> bool;
    /// Whether the account has a mailbox with this special use (`\Junk`...).
    fn special_use_exists(&self, special_use: &str) -> bool;
    /// Whether `id` was seen within `expiry` seconds; marks it seen either way
    /// (vacation's once-per-sender rule, the `duplicate` extension).
    fn seen_before(&self, id: &str, expiry: u64) -> bool;
    /// Another script of the account (`include :personal`) or of the server (`:global`).
    fn script(&self, name: &str, global: bool) -> Option<String>;
}

/// The message's envelope and whose filter runs.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The envelope sender; empty for bounces.
    pub from: String,
    /// The address the message was sent to (an alias of the account, perhaps).
    pub to: String,
    /// The account's own address.
    pub user: String,
}

/// Which message an action takes: 0 is the one that arrived, n is `Outcome::messages[n-1]`
/// (edited by `editheader` or written by `vacation`).
pub type MessageRef = usize;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Into the INBOX (or wherever delivery would have put it).
    Keep {
        flags: Vec<String>,
        message: MessageRef,
    },
    FileInto {
        folder: String,
        flags: Vec<String>,
        create: bool,
        special_use: Option<String>,
        message: MessageRef,
    },
    /// Refused: at SMTP time when possible, else a notice to the sender.
    Reject { reason: String },
    /// Sent on to another address with the original sender.
    Redirect { to: String, message: MessageRef },
    /// An automatic reply (vacation), sent with the null sender.
    Reply { to: String, message: MessageRef },
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Empty when the message is discarded.
    pub actions: Vec<Action>,
    pub messages: Vec<Vec<u8>>,
    /// Why the script failed; the message is then kept in the INBOX alone.
    pub error: Option<String>,
}

/// Limits of one run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_script_size: usize,
    pub max_instructions: usize,
    pub max_redirects: usize,
    pub max_out_messages: usize,
    pub vacation_default_days: u64,
}

impl From<&postern_config::Sieve> for Limits {
    fn from(c: &postern_config::Sieve) -> Self {
        Limits {
            max_script_size: c.max_script_size.0 as usize,
            max_instructions: c.max_instructions,
            max_redirects: c.max_redirects,
            max_out_messages: c.max_out_messages,
            vacation_default_days: c.vacation_default_days,
        }
    }
}

/// Extensions sieve-rs has that we cannot honour: notifications, external lists and programs,
/// spam and virus scores we do not compute, metadata, mailbox ids, DSN and deliver-by options.
const NOT_OFFERED: &[Capability] = &[
    Capability::Enotify,
    Capability::ExtLists,
    Capability::SpamTest,
    Capability::SpamTestPlus,
    Capability::VirusTest,
    Capability::MboxMetadata,
    Capability::ServerMetadata,
    Capability::MailboxId,
    Capability::Convert,
    Capability::ImapSieve,
    Capability::RedirectDsn,
    Capability::RedirectDeliverBy,
    Capability::EnvelopeDsn,
    Capability::EnvelopeDeliverBy,
    Capability::Fcc,
];

pub struct Engine {
    compiler: Compiler,
    runtime: Runtime,
}

impl Engine {
    pub fn new(limits: &Limits, hostname: &str) -> Engine {
        let compiler = Compiler::new().with_max_script_size(limits.max_script_size);
        let runtime = Runtime::new()
            .without_capabilities(NOT_OFFERED.iter().cloned())
            .without_capability(Capability::Comparator(Comparator::Elbonia))
            .with_cpu_limit(limits.max_instructions)
            .with_max_redirects(limits.max_redirects)
            .with_max_out_messages(limits.max_out_messages)
            .with_default_vacation_expiry(limits.vacation_default_days * 86400)
            .with_local_hostname(hostname.to_string())
            .with_env_variable("name", "Postern")
            .with_env_variable("version", env!("CARGO_PKG_VERSION"))
            .with_env_variable("host", hostname.to_string())
            .with_env_variable("domain", hostname.to_string())
            .with_env_variable("phase", "during");
        Engine { compiler, runtime }
    }

    /// The SIEVE capability string of ManageSieve: every extension a script may require.
    pub fn extensions(&self) -> String {
        let mut v: Vec<String> = Capability::all()
            .iter()
            .filter(|c| !NOT_OFFERED.contains(c))
            .filter(|c| !matches!(c, Capability::Comparator(Comparator::Elbonia)))
            .map(|c| c.to_string())
            .collect();
        v.sort();
        v.join(" ")
    }

    /// Compiles a script, refusing extensions we do not offer, with the reason in words.
    pub fn compile(&self, source: &str) -> Result<Arc<Sieve>, String> {
        let script = self
            .compiler
            .compile(source.as_bytes())
            .map_err(|e| e.to_string())?;
        let script = Arc::new(script);
        // `require` runs first, before anything that could stop the run with an event: the
        // first step of a dry run on an empty message finds what is not offered.
        let mut ctx = self.runtime.filter(b"");
        match ctx.run(Input::script("check", script.clone())) {
            Some(Err(sieve::runtime::RuntimeError::CapabilityNotAllowed(c))) => {
                return Err(format!("extension \"{c}\" is not offered by this server"));
            }
            Some(Err(sieve::runtime::RuntimeError::CapabilityNotSupported(c))) => {
                return Err(format!("extension \"{c}\" is not supported"));
            }
            _ => {}
        }
        Ok(script)
    }

    /// Runs `script` on a message in bytes (a dry run, a test): parsed here.
    pub fn run_bytes(
        &self,
        script: Arc<Sieve>,
        raw: &[u8],
        env: &Envelope,
        host: &dyn Host,
    ) -> Outcome {
        match postern_message::parse(raw) {
            Some(m) => self.run(script, m, env, host),
            None => self.run(script, Message::default(), env, host),
        }
    }

    /// Runs `script` for one recipient account on the message ingest parsed.
    pub fn run(
        &self,
        script: Arc<Sieve>,
        message: Message<'_>,
        env: &Envelope,
        host: &dyn Host,
    ) -> Outcome {
        let quiet = env.from.is_empty() || !may_auto_reply(&message);
        let mut ctx = self.runtime.filter_parsed(message);
        if !env.from.is_empty() {
            ctx.set_envelope(SieveEnvelope::From, env.from.as_str());
        }
        if !env.to.is_empty() {
            ctx.set_envelope(SieveEnvelope::To, env.to.as_str());
        }
        ctx.set_user_address(env.user.as_str());
        let mut out = Outcome::default();
        let mut input = Input::script("active", script);
        let mut includes = 0;
        while let Some(r) = ctx.run(input) {
            input = Input::True;
            let event = match r {
                Ok(e) => e,
                Err(e) => {
                    out.error = Some(error_words(e));
                    break;
                }
            };
            match event {
                Event::IncludeScript { name, optional } => {
                    let (n, global) = match &name {
                        Script::Personal(n) => (n.as_str(), false),
                        Script::Global(n) => (n.as_str(), true),
                    };
                    includes += 1;
                    match host.script(n, global).map(|s| self.compile(&s)) {
                        Some(Ok(s)) if includes <= 16 => input = Input::Script { name, script: s },
                        Some(Ok(_)) => {
                            out.error = Some("too many includes".into());
                            break;
                        }
                        Some(Err(e)) => {
                            out.error = Some(format!("included script {n}: {e}"));
                            break;
                        }
                        None if optional => input = Input::False,
                        None => {
                            out.error = Some(format!("included script {n} does not exist"));
                            break;
                        }
                    }
                }
                Event::MailboxExists {
                    mailboxes,
                    special_use,
                } => {
                    let all = mailboxes.iter().all(|m| match m {
                        sieve::Mailbox::Name(n) => host.mailbox_exists(n),
                        sieve::Mailbox::Id(_) => false,
                    }) && special_use.iter().all(|s| host.special_use_exists(s));
                    input = all.into();
                }
                // Vacation asks "replied already?": for mail that must get no automatic reply
                // the answer is yes, without remembering anything.
                Event::DuplicateId { id, .. } if quiet && id.starts_with("_v") => {
                    input = Input::True;
                }
                Event::DuplicateId { id, expiry, .. } => {
                    input = host.seen_before(&id, expiry).into();
                }
                Event::ListContains { .. } | Event::Function { .. } => input = Input::False,
                Event::SetEnvelope { .. } | Event::Notify { .. } => {}
                Event::Keep { flags, message_id } => out.actions.push(Action::Keep {
                    flags,
                    message: message_id,
                }),
                Event::Discard => {}
                Event::Reject { reason, .. } => out.actions.push(Action::Reject { reason }),
                Event::FileInto {
                    folder,
                    flags,
                    special_use,
                    create,
                    message_id,
                    ..
                } => out.actions.push(Action::FileInto {
                    folder,
                    flags,
                    create,
                    special_use,
                    message: message_id,
                }),
                Event::SendMessage {
                    recipient,
                    notify,
                    message_id,
                    ..
                } => {
                    let to = match recipient {
                        Recipient::Address(a) => vec![a],
                        Recipient::Group(l) => l,
                        Recipient::List(_) => vec![],
                    };
                    // Vacation's replies alone say "never notify"; redirects keep the default.
                    let reply = matches!(notify, Notify::Never);
                    for to in to {
                        out.actions.push(if reply {
                            Action::Reply {
                                to,
                                message: message_id,
                            }
                        } else {
                            Action::Redirect {
                                to,
                                message: message_id,
                            }
                        });
                    }
                }
                Event::CreatedMessage {
                    message_id,
                    message,
                } => {
                    if out.messages.len() < message_id {
                        out.messages.resize(message_id, Vec::new());
                    }
                    out.messages[message_id - 1] = message;
                }
            }
        }
        if out.error.is_some() {
            out.actions = vec![Action::Keep {
                flags: vec![],
                message: 0,
            }];
        }
        out
    }
}

/// RFC 5230 section 4.5 and RFC 3834: no automatic reply to automatic mail, lists or bulk.
fn may_auto_reply(message: &Message) -> bool {
    let Some(root) = message.parts.first() else {
        return true;
    };
    for h in &root.headers {
        let name = h.name.as_str().to_ascii_lowercase();
        // Fields ingest added carry their value as text; the sender's are read as written.
        let value = match message
            .raw_message
            .get(h.offset_start as usize..h.offset_end as usize)
        {
            Some(v) if h.offset_end > h.offset_start => String::from_utf8_lossy(v)
                .replace("\r\n ", " ")
                .replace("\r\n\t", " "),
            _ => h.value.as_text().unwrap_or_default().to_string(),
        };
        let value = value.trim().to_ascii_lowercase();
        let refuse = match name.as_str() {
            "auto-submitted" => value.split(';').next().is_some_and(|v| v.trim() != "no"),
            "precedence" => ["bulk", "list", "junk"].contains(&value.as_str()),
            "x-auto-response-suppress" => value
                .split(',')
                .any(|v| ["all", "oof", "autoreply"].contains(&v.trim())),
            n => n.starts_with("list-"),
        };
        if refuse {
            return false;
        }
    }
    true
}

fn error_words(e: sieve::runtime::RuntimeError) -> String {
    use sieve::runtime::RuntimeError as E;
    match e {
        E::TooManyIncludes => "too many includes".into(),
        E::InvalidInstruction(_) => "an invalid instruction".into(),
        E::ScriptErrorMessage(m) => format!("the script said: {m}"),
        E::CapabilityNotAllowed(c) => format!("extension \"{c}\" is not offered"),
        E::CapabilityNotSupported(c) => format!("extension \"{c}\" is not supported"),
        E::CPULimitReached => "it ran too long (sieve.max_instructions)".into(),
    }
}

#[cfg(test)]
mod tests;
