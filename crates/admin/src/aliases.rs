//! Aliases, catch-alls, domain aliases and groups (aliases with a sending policy), and where
//! mail to an address goes through them.

use postern_directory::{Destination, Directory, domain_of, is_domain, normalize_address};
use postern_directory::{policy_words, validate_new_address};
use postern_store::SendPolicy;

use crate::{AdminError, AdminReply, done, require_local_domain};

/// Adds targets to an alias (made if new); `@domain` keys are catch-alls or domain aliases.
pub(crate) async fn alias_add(
    d: &Directory,
    alias: String,
    targets: Vec<String>,
) -> Result<AdminReply, AdminError> {
    if alias.trim().starts_with('@') {
        return domain_entry_add(d, &alias, targets).await;
    }
    let store = d.store();
    let alias = validate_new_address(&alias)?;
    require_local_domain(d, &alias).await?;
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
        if d.is_local_domain(domain_of(&t)).await?
            && d.lookup_account(&t).await?.is_none()
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

/// `@domain` entries: a catch-all (`@example.com` → addresses) or a domain alias
/// (`@example.org` → `@example.com`: every address of one is the same of the other).
async fn domain_entry_add(
    d: &Directory,
    key: &str,
    targets: Vec<String>,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let domain = key
        .trim()
        .trim_start_matches('@')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !is_domain(&domain) {
        return Err(AdminError::new(format!(
            "{key:?}: {domain:?} is not a valid domain name"
        )));
    }
    if !d.is_local_domain(&domain).await? {
        return Err(AdminError::new(format!(
            "domain {domain} is not local; add it with: postern domain add {domain}"
        )));
    }
    let key = format!("@{domain}");
    if let [t] = targets.as_slice()
        && let Some(other) = t.trim().strip_prefix('@')
    {
        let other = other.trim_end_matches('.').to_ascii_lowercase();
        if !is_domain(&other) || other == domain {
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
            && d.lookup_account(&t).await?.is_none()
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

/// Deletes an alias, or only one of its targets.
pub(crate) async fn alias_del(
    d: &Directory,
    alias: String,
    target: Option<String>,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
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

pub(crate) async fn alias_list(d: &Directory) -> Result<AdminReply, AdminError> {
    let mut aliases: Vec<(String, Vec<String>)> = d
        .store()
        .alias_list()
        .await?
        .into_iter()
        .map(|a| (a.address, a.targets))
        .collect();
    aliases.sort();
    Ok(AdminReply::Aliases { aliases })
}

pub(crate) async fn group_add(
    d: &Directory,
    group: String,
    members: Vec<String>,
    policy: String,
    senders: Vec<String>,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
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
    alias_add(d, group.clone(), members).await?;
    let g = store
        .alias_set_policy(&normalize_address(&group)?, Some(policy.clone()))
        .await?;
    done(format!(
        "group {} created with {} member(s); {}",
        g.address,
        g.targets.len(),
        policy_words(&policy, domain_of(&g.address))
    ))
}

pub(crate) async fn group_policy(
    d: &Directory,
    group: String,
    policy: String,
    senders: Vec<String>,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
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
        policy_words(&policy, domain_of(&group))
    ))
}

pub(crate) async fn group_list(d: &Directory) -> Result<AdminReply, AdminError> {
    let mut groups: Vec<(String, String, Vec<String>)> = d
        .store()
        .alias_list()
        .await?
        .into_iter()
        .filter_map(|a| {
            let p = a.policy.as_ref()?;
            let words = policy_words(p, domain_of(&a.address));
            Some((a.address, words, a.targets))
        })
        .collect();
    groups.sort();
    Ok(AdminReply::Groups { groups })
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

/// Where mail to `address` goes, step by step, down to each account's Sieve script.
pub(crate) async fn route(d: &Directory, address: String) -> Result<AdminReply, AdminError> {
    let (mut steps, dests) = d.explain(&address).await?;
    steps.extend(crate::sharing::route_notes(d, &address).await);
    for dest in dests.iter().flatten() {
        if let Destination::Local(acc) = dest
            && let Some((name, _)) = d.store().sieve_active(acc.id).await?
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
