//! Admin operations: one implementation behind the CLI, the control socket and the HTTP API.
//! Requests and replies are serde types so they cross a socket unchanged.

use serde::{Deserialize, Serialize};

use crate::{
    Destination, Directory, domain_of, normalize_address, password_problem, validate_new_address,
};
use postern_store::{AccountUpdate, NewAccount, SendPolicy, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    DomainAdd {
        name: String,
    },
    DomainDel {
        name: String,
    },
    DomainList,
    UserAdd {
        address: String,
        password: String,
        quota: Option<u64>,
    },
    UserDel {
        address: String,
    },
    UserList,
    UserPasswd {
        address: String,
        password: String,
    },
    /// Stop (or allow again) an account's logins; its mail still arrives.
    UserDisable {
        address: String,
        disabled: bool,
    },
    UserQuota {
        address: String,
        quota: u64,
        /// Message count limit; `None` leaves it as it is.
        #[serde(default)]
        messages: Option<u64>,
    },
    AliasAdd {
        alias: String,
        targets: Vec<String>,
    },
    AliasDel {
        alias: String,
        target: Option<String>,
    },
    AliasList,
    /// A group: an alias with a sending policy ("anyone", "members", "domain", "senders").
    GroupAdd {
        group: String,
        members: Vec<String>,
        policy: String,
        senders: Vec<String>,
    },
    GroupPolicy {
        group: String,
        policy: String,
        senders: Vec<String>,
    },
    GroupList,
    /// Send an account's mail on to another address (`None`: stop forwarding).
    Forward {
        address: String,
        to: Option<String>,
        keep_copy: bool,
    },
    /// Where mail to an address goes, step by step.
    Route {
        address: String,
    },
    /// A user's Sieve scripts, by name, with the active one marked.
    SieveList {
        address: String,
    },
    SieveGet {
        address: String,
        name: String,
    },
    /// Checks and stores a script; `activate` makes it the one that runs.
    SievePut {
        address: String,
        name: String,
        source: String,
        activate: bool,
    },
    /// `None`: no script runs for the user.
    SieveActivate {
        address: String,
        name: Option<String>,
    },
    SieveDelete {
        address: String,
        name: String,
    },
    /// A new API token; the reply is the only time its secret is shown.
    TokenCreate {
        name: String,
    },
    TokenList,
    TokenDelete {
        name: String,
    },
    QueueList,
    QueueShow {
        id: u64,
    },
    /// Try now: one entry, or all of them.
    QueueRetry {
        id: Option<u64>,
    },
    QueueDelete {
        id: u64,
    },
    QueueBounce {
        id: u64,
    },
    /// Re-read certificates and DKIM keys (handled by the running server).
    Reload,
    /// Copy a Maildir tree (Dovecot, Courier) into an account (handled by the binary).
    MaildirImport {
        address: String,
        path: String,
    },
    /// Write an account's mail as a Maildir tree (handled by the binary).
    MaildirExport {
        address: String,
        path: String,
    },
    /// Run postern doctor inside the server (handled by the running server).
    Doctor,
    /// Messages and their stories, by any of: trace id, Message-ID, sender, recipient.
    Trace {
        id: Option<String>,
        message_id: Option<String>,
        from: Option<String>,
        to: Option<String>,
        since_secs: Option<u64>,
        limit: usize,
    },
    Ping,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueInfo {
    pub id: u64,
    pub trace_id: String,
    pub sender: String,
    /// (address, state, last error)
    pub recipients: Vec<(String, String, Option<String>)>,
    pub size: u64,
    pub created: i64,
    pub next_attempt: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserInfo {
    pub address: String,
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub messages: u64,
    pub disabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdminReply {
    Done {
        message: String,
    },
    Domains {
        names: Vec<String>,
    },
    Users {
        users: Vec<UserInfo>,
    },
    Aliases {
        aliases: Vec<(String, Vec<String>)>,
    },
    Queue {
        entries: Vec<QueueInfo>,
    },
    Traces {
        traces: Vec<(String, Vec<postern_store::TraceEvent>)>,
    },
    Pong {
        pid: u32,
    },
    /// A doctor report, as JSON.
    Report {
        json: String,
    },
    Groups {
        /// (address, policy in words, members)
        groups: Vec<(String, String, Vec<String>)>,
    },
    Route {
        steps: Vec<String>,
        /// Accounts ("local:" address) and remote addresses ("remote:" address); `None`:
        /// refused at RCPT.
        destinations: Option<Vec<String>>,
    },
}

/// A one-line error for a person, with the fix when there is one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    pub message: String,
    /// The storage failed for now: worth trying again (HTTP 503), not a refusal.
    #[serde(default)]
    pub temporary: bool,
}

impl AdminError {
    pub fn new(m: impl Into<String>) -> Self {
        AdminError {
            message: m.into(),
            temporary: false,
        }
    }

    /// Whether the error says that what was named does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        [
            "does not exist",
            "no such",
            "not found",
            "has no script",
            "there is no",
            "no queued",
        ]
        .iter()
        .any(|w| m.contains(w))
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError {
            temporary: e.is_temporary(),
            message: e.to_string(),
        }
    }
}

impl From<crate::AddressError> for AdminError {
    fn from(e: crate::AddressError) -> Self {
        AdminError::new(e.to_string())
    }
}

fn parse_policy(p: &str, senders: Vec<String>) -> Result<SendPolicy, AdminError> {
    let policy = match p {
        "anyone" => SendPolicy::Anyone,
        "members" => SendPolicy::Members,
        "domain" => SendPolicy::Domain,
        "senders" => {
            let list = senders
                .iter()
                .map(|s| normalize_address(s))
                .collect::<Result<Vec<_>, _>>()?;
            if list.is_empty() {
                return Err(AdminError::new(
                    "policy senders needs the addresses that may send, e.g. --sender boss@example.com",
                ));
            }
            return Ok(SendPolicy::Senders(list));
        }
        other => {
            return Err(AdminError::new(format!(
                "policy {other:?} is unknown; use anyone, members, domain (logged-in users of the group's domain) or senders"
            )));
        }
    };
    if !senders.is_empty() {
        return Err(AdminError::new("--sender goes with policy senders only"));
    }
    Ok(policy)
}

fn done(m: impl Into<String>) -> Result<AdminReply, AdminError> {
    Ok(AdminReply::Done { message: m.into() })
}

impl Directory {
    pub async fn admin(&self, req: AdminRequest) -> Result<AdminReply, AdminError> {
        let store = self.store();
        match req {
            AdminRequest::Ping => Ok(AdminReply::Pong {
                pid: std::process::id(),
            }),
            AdminRequest::DomainAdd { name } => {
                let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
                if !crate::address::is_domain(&name) {
                    return Err(AdminError::new(format!(
                        "{name:?} is not a domain name (e.g. example.com)"
                    )));
                }
                match store.domain_add(&name).await {
                    Ok(_) => done(format!("domain {name} added")),
                    Err(StoreError::AlreadyExists(_)) => {
                        Err(AdminError::new(format!("domain {name} already exists")))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            AdminRequest::DomainDel { name } => {
                let name = name.trim().to_ascii_lowercase();
                match store.domain_delete(&name).await {
                    Ok(()) => done(format!("domain {name} deleted")),
                    Err(StoreError::NotFound(_)) => {
                        Err(AdminError::new(format!("domain {name} is not local")))
                    }
                    Err(StoreError::Invalid(m)) => Err(AdminError::new(m)),
                    Err(e) => Err(e.into()),
                }
            }
            AdminRequest::DomainList => Ok(AdminReply::Domains {
                names: store
                    .domain_list()
                    .await?
                    .into_iter()
                    .map(|d| d.name)
                    .collect(),
            }),
            AdminRequest::UserAdd {
                address,
                password,
                quota,
            } => {
                let address = validate_new_address(&address)?;
                self.require_local_domain(&address).await?;
                if let Some(p) =
                    password_problem(&password, &address, self.config().min_password_length)
                {
                    return Err(AdminError::new(p));
                }
                if store.account_by_address(&address).await?.is_some() {
                    return Err(AdminError::new(format!("user {address} already exists")));
                }
                if store.alias_get(&address).await?.is_some() {
                    return Err(AdminError::new(format!(
                        "{address} is an alias; delete it first with: postern alias del {address}"
                    )));
                }
                let hash = hash_blocking(password).await;
                match store
                    .account_create(NewAccount {
                        address: address.clone(),
                        password_hash: hash,
                        quota_bytes: quota.unwrap_or(0),
                        quota_messages: 0,
                    })
                    .await
                {
                    Ok(_) => done(format!("user {address} added")),
                    Err(StoreError::AlreadyExists(_)) => {
                        Err(AdminError::new(format!("user {address} already exists")))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            AdminRequest::UserDel { address } => {
                let address = normalize_address(&address)?;
                let a = self.require_user(&address).await?;
                store.account_delete(a.id).await?;
                done(format!("user {address} deleted with all its mail"))
            }
            AdminRequest::UserList => {
                let mut users = Vec::new();
                for a in store.account_list().await? {
                    let u = store.account_usage(a.id).await?;
                    users.push(UserInfo {
                        address: a.address,
                        quota_bytes: a.quota_bytes,
                        used_bytes: u.bytes,
                        messages: u.messages,
                        disabled: a.disabled,
                    });
                }
                users.sort_by(|a, b| a.address.cmp(&b.address));
                Ok(AdminReply::Users { users })
            }
            AdminRequest::UserPasswd { address, password } => {
                let address = normalize_address(&address)?;
                let a = self.require_user(&address).await?;
                if let Some(p) =
                    password_problem(&password, &address, self.config().min_password_length)
                {
                    return Err(AdminError::new(p));
                }
                let hash = hash_blocking(password).await;
                store
                    .account_update(
                        a.id,
                        AccountUpdate {
                            password_hash: Some(hash),
                            ..Default::default()
                        },
                    )
                    .await?;
                done(format!("password of {address} changed"))
            }
            AdminRequest::UserDisable { address, disabled } => {
                let address = normalize_address(&address)?;
                let a = self.require_user(&address).await?;
                store
                    .account_update(
                        a.id,
                        AccountUpdate {
                            disabled: Some(disabled),
                            ..Default::default()
                        },
                    )
                    .await?;
                done(format!(
                    "{address} {}",
                    if disabled { "disabled" } else { "enabled" }
                ))
            }
            AdminRequest::UserQuota {
                address,
                quota,
                messages,
            } => {
                let address = normalize_address(&address)?;
                let a = self.require_user(&address).await?;
                store
                    .account_update(
                        a.id,
                        AccountUpdate {
                            quota_bytes: Some(quota),
                            quota_messages: messages,
                            ..Default::default()
                        },
                    )
                    .await?;
                done(format!("quota of {address} set"))
            }
            AdminRequest::AliasAdd { alias, targets } if alias.trim().starts_with('@') => {
                self.domain_entry_add(&alias, targets).await
            }
            AdminRequest::AliasAdd { alias, targets } => {
                let alias = validate_new_address(&alias)?;
                self.require_local_domain(&alias).await?;
                if targets.is_empty() {
                    return Err(AdminError::new(
                        "an alias needs at least one target address",
                    ));
                }
                if store.account_by_address(&alias).await?.is_some() {
                    return Err(AdminError::new(format!(
                        "{alias} is a user; an alias cannot have the same address"
                    )));
                }
                let mut all = store
                    .alias_get(&alias)
                    .await?
                    .map(|a| a.targets)
                    .unwrap_or_default();
                for t in targets {
                    let t = normalize_address(&t)?;
                    if t == alias {
                        return Err(AdminError::new(format!("{alias} cannot point to itself")));
                    }
                    if self.is_local_domain(domain_of(&t)).await?
                        && self.lookup_account(&t).await?.is_none()
                        && store.alias_get(&t).await?.is_none()
                    {
                        return Err(AdminError::new(format!(
                            "{t} is neither a user nor an alias; add it first with: postern user add {t}"
                        )));
                    }
                    if !all.contains(&t) {
                        all.push(t);
                    }
                }
                let n = all.len();
                store.alias_set(&alias, all).await?;
                done(format!("alias {alias} now delivers to {n} address(es)"))
            }
            AdminRequest::AliasDel { alias, target } => {
                let alias = match alias.trim().strip_prefix('@') {
                    Some(d) => format!("@{}", d.trim_end_matches('.').to_ascii_lowercase()),
                    None => normalize_address(&alias)?,
                };
                let Some(a) = store.alias_get(&alias).await? else {
                    return Err(AdminError::new(format!("alias {alias} does not exist")));
                };
                match target {
                    None => {
                        store.alias_delete(&alias).await?;
                        done(format!("alias {alias} deleted"))
                    }
                    Some(t) => {
                        let t = normalize_address(&t)?;
                        let rest: Vec<String> = a.targets.into_iter().filter(|x| *x != t).collect();
                        if rest.is_empty() {
                            store.alias_delete(&alias).await?;
                            done(format!("alias {alias} deleted (it had no other target)"))
                        } else {
                            store.alias_set(&alias, rest).await?;
                            done(format!("{t} removed from alias {alias}"))
                        }
                    }
                }
            }
            AdminRequest::QueueList => {
                let mut entries: Vec<QueueInfo> =
                    store.queue_list().await?.iter().map(queue_info).collect();
                entries.sort_by_key(|e| e.id);
                Ok(AdminReply::Queue { entries })
            }
            AdminRequest::QueueShow { id } => {
                let e = self.queue_entry(id).await?;
                Ok(AdminReply::Queue {
                    entries: vec![queue_info(&e)],
                })
            }
            AdminRequest::QueueRetry { id } => {
                let entries = match id {
                    Some(id) => vec![self.queue_entry(id).await?],
                    None => store.queue_list().await?,
                };
                let n = entries.len();
                for mut e in entries {
                    e.next_attempt = postern_store::now();
                    store.queue_update(e).await?;
                }
                done(format!("{n} queued message(s) will be tried now"))
            }
            AdminRequest::QueueDelete { id } => {
                self.queue_entry(id).await?;
                store.queue_delete(id).await?;
                done(format!(
                    "queued message {id} deleted without notice to the sender"
                ))
            }
            AdminRequest::QueueBounce { id } => {
                let mut e = self.queue_entry(id).await?;
                e.bounce = true;
                e.next_attempt = postern_store::now();
                store.queue_update(e).await?;
                done(format!(
                    "queued message {id} will be returned to its sender"
                ))
            }
            AdminRequest::Reload => Err(AdminError::new(
                "reload needs a running server (postern serve)",
            )),
            AdminRequest::MaildirImport { .. } | AdminRequest::MaildirExport { .. } => Err(
                AdminError::new("Maildir import and export run in the postern binary"),
            ),
            AdminRequest::Doctor => Err(AdminError::new(
                "the doctor over the admin API needs a running server; run postern doctor",
            )),
            AdminRequest::Trace {
                id,
                message_id,
                from,
                to,
                since_secs,
                limit,
            } => {
                let now_ms = postern_store::now() * 1000;
                let since = since_secs
                    .map(|s| now_ms.saturating_sub((s.min(1 << 40) as i64).saturating_mul(1000)))
                    .unwrap_or(0);
                let limit = limit.clamp(1, 1000);
                let norm =
                    |a: String| normalize_address(&a).unwrap_or_else(|_| a.to_ascii_lowercase());
                let mut sets: Vec<Vec<String>> = Vec::new();
                if let Some(id) = id {
                    sets.push(vec![id.trim().to_ascii_uppercase()]);
                }
                if let Some(m) = message_id {
                    let m = m
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string();
                    sets.push(
                        store
                            .trace_find(&format!("mid:<{m}>"), since, limit)
                            .await?,
                    );
                }
                if let Some(f) = from {
                    sets.push(
                        store
                            .trace_find(&format!("from:{}", norm(f)), since, limit)
                            .await?,
                    );
                }
                if let Some(t) = to {
                    sets.push(
                        store
                            .trace_find(&format!("to:{}", norm(t)), since, limit)
                            .await?,
                    );
                }
                let ids: Vec<String> = match sets.split_first() {
                    None => store.trace_recent(since, limit).await?,
                    Some((first, rest)) => first
                        .iter()
                        .filter(|id| rest.iter().all(|s| s.contains(id)))
                        .cloned()
                        .collect(),
                };
                let mut traces = Vec::new();
                for id in ids.into_iter().take(limit) {
                    let events = store.trace_get(&id).await?;
                    if !events.is_empty() {
                        traces.push((id, events));
                    }
                }
                Ok(AdminReply::Traces { traces })
            }
            AdminRequest::GroupAdd {
                group,
                members,
                policy,
                senders,
            } => {
                let policy = parse_policy(&policy, senders)?;
                if store
                    .alias_get(&normalize_address(&group)?)
                    .await?
                    .is_some()
                {
                    return Err(AdminError::new(format!(
                        "{group} exists; add members with: postern group add-member {group} ADDRESS"
                    )));
                }
                Box::pin(self.admin(AdminRequest::AliasAdd {
                    alias: group.clone(),
                    targets: members,
                }))
                .await?;
                let g = store
                    .alias_set_policy(&normalize_address(&group)?, Some(policy.clone()))
                    .await?;
                done(format!(
                    "group {} created with {} member(s); {}",
                    g.address,
                    g.targets.len(),
                    crate::policy_words(&policy, domain_of(&g.address))
                ))
            }
            AdminRequest::GroupPolicy {
                group,
                policy,
                senders,
            } => {
                let policy = parse_policy(&policy, senders)?;
                let group = normalize_address(&group)?;
                if store.alias_get(&group).await?.is_none() {
                    return Err(AdminError::new(format!(
                        "no group {group}; create it with: postern group add {group} MEMBER..."
                    )));
                }
                store.alias_set_policy(&group, Some(policy.clone())).await?;
                done(format!(
                    "{group}: {}",
                    crate::policy_words(&policy, domain_of(&group))
                ))
            }
            AdminRequest::Forward {
                address,
                to,
                keep_copy,
            } => {
                let address = normalize_address(&address)?;
                let a = self.require_user(&address).await?;
                let forward = match to {
                    None => None,
                    Some(t) => {
                        let t = normalize_address(&t)?;
                        if t == a.address {
                            return Err(AdminError::new(format!(
                                "{address} cannot forward to itself"
                            )));
                        }
                        if self.is_local_domain(domain_of(&t)).await?
                            && self.expand(&t).await?.is_none()
                        {
                            return Err(AdminError::new(format!(
                                "{t} is neither a user nor an alias here"
                            )));
                        }
                        Some(postern_store::Forward { to: t, keep_copy })
                    }
                };
                let msg = match &forward {
                    None => format!("{address} no longer forwards; mail stays in its INBOX"),
                    Some(f) if f.keep_copy => {
                        format!(
                            "mail to {address} now goes to {} and stays in its INBOX too",
                            f.to
                        )
                    }
                    Some(f) => format!("mail to {address} now goes to {} only", f.to),
                };
                store
                    .account_update(
                        a.id,
                        AccountUpdate {
                            forward: Some(forward),
                            ..Default::default()
                        },
                    )
                    .await?;
                done(msg)
            }
            AdminRequest::GroupList => {
                let mut groups: Vec<(String, String, Vec<String>)> = store
                    .alias_list()
                    .await?
                    .into_iter()
                    .filter_map(|a| {
                        let p = a.policy.as_ref()?;
                        let words = crate::policy_words(p, domain_of(&a.address));
                        Some((a.address, words, a.targets))
                    })
                    .collect();
                groups.sort();
                Ok(AdminReply::Groups { groups })
            }
            AdminRequest::TokenCreate { name } => {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(AdminError::new(
                        "a token name is 1 to 64 letters, digits, '-', '_' or '.'",
                    ));
                }
                let mut secret = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
                let token = format!(
                    "pst_{}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        secret
                    )
                );
                match store
                    .token_put(postern_store::ApiToken {
                        name: name.clone(),
                        hash: crate::token_hash(&token),
                        created: postern_store::now(),
                    })
                    .await
                {
                    Ok(()) => Ok(AdminReply::Done { message: token }),
                    Err(StoreError::AlreadyExists(_)) => Err(AdminError::new(format!(
                        "a token named {name} exists; delete it first (postern token delete {name})"
                    ))),
                    Err(e) => Err(e.into()),
                }
            }
            AdminRequest::TokenList => {
                let mut l = store.token_list().await?;
                l.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(AdminReply::Done {
                    message: if l.is_empty() {
                        "no API tokens".into()
                    } else {
                        l.iter()
                            .map(|t| format!("{}  created {}", t.name, t.created))
                            .collect::<Vec<_>>()
                            .join("\n")
                    },
                })
            }
            AdminRequest::TokenDelete { name } => match store.token_delete(&name).await {
                Ok(()) => Ok(AdminReply::Done {
                    message: format!("token {name} deleted: it no longer opens the API"),
                }),
                Err(StoreError::NotFound(_)) => {
                    Err(AdminError::new(format!("there is no token named {name}")))
                }
                Err(e) => Err(e.into()),
            },
            AdminRequest::SieveList { address } => {
                let a = self.require_user(&normalize_address(&address)?).await?;
                let l = store.sieve_list(a.id).await?;
                let message = if l.is_empty() {
                    format!("{} has no Sieve scripts", a.address)
                } else {
                    l.iter()
                        .map(|s| {
                            format!(
                                "{}{}  ({} bytes)",
                                s.name,
                                if s.active { "  ACTIVE" } else { "" },
                                s.size
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                Ok(AdminReply::Done { message })
            }
            AdminRequest::SieveGet { address, name } => {
                let a = self.require_user(&normalize_address(&address)?).await?;
                match store.sieve_get(a.id, &name).await? {
                    Some(message) => Ok(AdminReply::Done { message }),
                    None => Err(AdminError::new(format!(
                        "{} has no script named {name}",
                        a.address
                    ))),
                }
            }
            AdminRequest::SievePut {
                address,
                name,
                source,
                activate,
            } => {
                let a = self.require_user(&normalize_address(&address)?).await?;
                if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                    return Err(AdminError::new(
                        "a script name is 1 to 128 characters, none of them control characters",
                    ));
                }
                let limits = &self.config.sieve;
                if source.len() > limits.max_script_size {
                    return Err(AdminError::new(format!(
                        "the script is {} bytes; sieve.max_script_size allows {}",
                        source.len(),
                        limits.max_script_size
                    )));
                }
                let existing = store.sieve_list(a.id).await?;
                if !existing.iter().any(|s| s.name == name)
                    && existing.len() >= self.config.max_scripts
                {
                    return Err(AdminError::new(format!(
                        "{} has {} scripts, the most sieve.max_scripts allows; delete one first",
                        a.address,
                        existing.len()
                    )));
                }
                self.sieve
                    .compile(&source)
                    .map_err(|e| AdminError::new(format!("the script has an error: {e}")))?;
                store.sieve_put(a.id, &name, &source).await?;
                if activate {
                    store.sieve_activate(a.id, Some(&name)).await?;
                }
                let active = activate
                    || store
                        .sieve_active(a.id)
                        .await?
                        .is_some_and(|(n, _)| n == name);
                Ok(AdminReply::Done {
                    message: if active {
                        format!(
                            "script {name} stored for {}; it filters their mail now",
                            a.address
                        )
                    } else {
                        format!(
                            "script {name} stored for {}; not active (postern sieve activate {} {name})",
                            a.address, a.address
                        )
                    },
                })
            }
            AdminRequest::SieveActivate { address, name } => {
                let a = self.require_user(&normalize_address(&address)?).await?;
                match store.sieve_activate(a.id, name.as_deref()).await {
                    Ok(()) => Ok(AdminReply::Done {
                        message: match name {
                            Some(n) => format!("script {n} now filters mail to {}", a.address),
                            None => format!("no script filters mail to {} now", a.address),
                        },
                    }),
                    Err(StoreError::NotFound(_)) => Err(AdminError::new(format!(
                        "{} has no script named {}",
                        a.address,
                        name.unwrap_or_default()
                    ))),
                    Err(e) => Err(e.into()),
                }
            }
            AdminRequest::SieveDelete { address, name } => {
                let a = self.require_user(&normalize_address(&address)?).await?;
                match store.sieve_delete(a.id, &name).await {
                    Ok(()) => Ok(AdminReply::Done {
                        message: format!("script {name} of {} deleted", a.address),
                    }),
                    Err(StoreError::NotFound(_)) => Err(AdminError::new(format!(
                        "{} has no script named {name}",
                        a.address
                    ))),
                    Err(StoreError::Invalid(_)) => Err(AdminError::new(format!(
                        "script {name} is active; deactivate it first (postern sieve activate {} --none)",
                        a.address
                    ))),
                    Err(e) => Err(e.into()),
                }
            }
            AdminRequest::Route { address } => {
                let (mut steps, dests) = self.explain(&address).await?;
                for d in dests.iter().flatten() {
                    if let Destination::Local(acc) = d
                        && let Some((name, _)) = store.sieve_active(acc.id).await?
                    {
                        steps.push(format!(
                            "{}'s Sieve script \"{name}\" then decides where it goes (folders, vacation reply, redirect)",
                            acc.address
                        ));
                    }
                }
                Ok(AdminReply::Route {
                    steps,
                    destinations: dests.map(|ds| {
                        ds.into_iter()
                            .map(|d| match d {
                                Destination::Local(a) => format!("local:{}", a.address),
                                Destination::Remote(r) => format!("remote:{r}"),
                            })
                            .collect()
                    }),
                })
            }
            AdminRequest::AliasList => {
                let mut aliases: Vec<(String, Vec<String>)> = store
                    .alias_list()
                    .await?
                    .into_iter()
                    .map(|a| (a.address, a.targets))
                    .collect();
                aliases.sort();
                Ok(AdminReply::Aliases { aliases })
            }
        }
    }

    /// `@domain` entries: a catch-all (`@example.com` → addresses) or a domain alias
    /// (`@example.org` → `@example.com`: every address of one is the same of the other).
    async fn domain_entry_add(
        &self,
        key: &str,
        targets: Vec<String>,
    ) -> Result<AdminReply, AdminError> {
        let store = self.store();
        let domain = key
            .trim()
            .trim_start_matches('@')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !crate::address::is_domain(&domain) {
            return Err(AdminError::new(format!(
                "{key:?}: {domain:?} is not a valid domain name"
            )));
        }
        if !self.is_local_domain(&domain).await? {
            return Err(AdminError::new(format!(
                "domain {domain} is not local; add it with: postern domain add {domain}"
            )));
        }
        let key = format!("@{domain}");
        if let [t] = targets.as_slice()
            && let Some(other) = t.trim().strip_prefix('@')
        {
            let other = other.trim_end_matches('.').to_ascii_lowercase();
            if !crate::address::is_domain(&other) || other == domain {
                return Err(AdminError::new(format!(
                    "@{other} cannot be the target of {key}: give another domain"
                )));
            }
            store.alias_set(&key, vec![format!("@{other}")]).await?;
            return done(format!(
                "every address of {domain} now delivers as the same address of {other}"
            ));
        }
        if targets.iter().any(|t| t.trim().starts_with('@')) {
            return Err(AdminError::new(
                "a domain alias has exactly one target, the other domain (e.g. @example.com)",
            ));
        }
        if targets.is_empty() {
            return Err(AdminError::new(
                "a catch-all needs at least one target address",
            ));
        }
        let mut all = match store.alias_get(&key).await? {
            Some(a) if a.targets.iter().any(|t| t.starts_with('@')) => {
                return Err(AdminError::new(format!(
                    "{domain} is a domain alias; delete it first: postern alias del {key}"
                )));
            }
            Some(a) => a.targets,
            None => Vec::new(),
        };
        for t in targets {
            let t = normalize_address(&t)?;
            if domain_of(&t) == domain
                && self.lookup_account(&t).await?.is_none()
                && store.alias_get(&t).await?.is_none()
            {
                return Err(AdminError::new(format!(
                    "{t} is neither a user nor an alias; a catch-all must lead somewhere real"
                )));
            }
            if !all.contains(&t) {
                all.push(t);
            }
        }
        store.alias_set(&key, all).await?;
        done(format!(
            "catch-all: mail to unknown addresses of {domain} now goes to the catch-all's targets (exact addresses still come first)"
        ))
    }

    async fn require_local_domain(&self, address: &str) -> Result<(), AdminError> {
        let d = domain_of(address);
        if !self.is_local_domain(d).await? {
            return Err(AdminError::new(format!(
                "domain {d} is not local; add it with: postern domain add {d}"
            )));
        }
        Ok(())
    }

    async fn queue_entry(&self, id: u64) -> Result<postern_store::QueueEntry, AdminError> {
        self.store().queue_get(id).await?.ok_or_else(|| {
            AdminError::new(format!("no queued message {id}; see: postern queue list"))
        })
    }

    async fn require_user(&self, address: &str) -> Result<postern_store::Account, AdminError> {
        self.store()
            .account_by_address(address)
            .await?
            .ok_or_else(|| AdminError::new(format!("user {address} does not exist")))
    }
}

fn queue_info(e: &postern_store::QueueEntry) -> QueueInfo {
    QueueInfo {
        id: e.id,
        trace_id: e.trace_id.clone(),
        sender: e.sender.clone(),
        recipients: e
            .recipients
            .iter()
            .map(|r| {
                let state = match r.state {
                    postern_store::RecipientState::Pending => "pending",
                    postern_store::RecipientState::Delivered => "delivered",
                    postern_store::RecipientState::Failed => "failed",
                };
                (r.address.clone(), state.to_string(), r.last_error.clone())
            })
            .collect(),
        size: e.size,
        created: e.created,
        next_attempt: e.next_attempt,
        attempts: e.attempts,
        last_error: e.last_error.clone(),
    }
}

async fn hash_blocking(password: String) -> String {
    tokio::task::spawn_blocking(move || crate::hash_password(&password))
        .await
        .expect("hashing task")
}
