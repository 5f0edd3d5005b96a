//! Who is who: addresses, password checks, recipient expansion, login limits, API tokens.

mod address;
mod limiter;
mod password;
pub mod sasl;
mod send_as;
pub mod srs;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// SHA-256 of an API token, hex: what is stored instead of the token.
pub fn token_hash(token: &str) -> String {
    postern_store::sha256_hex(token)
}

pub use address::{AddressError, domain_of, is_domain, normalize_address, validate_new_address};
pub use limiter::LoginLimiter;
pub use password::{hash_password, password_problem, verify_password};
use postern_store::{Account, AccountId, Alias, SendPolicy, SharedStore, StoreError, StoreEvent};
pub use send_as::SendRight;

#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    pub min_password_length: usize,
    pub max_failures: u32,
    pub failure_window: Duration,
    pub lockout: Duration,
    pub max_lockout: Duration,
    pub failure_delay: Duration,
    /// `alice+news@` reaches `alice@` ("+" by default; `None` turns it off).
    pub subaddress_separator: Option<char>,
    /// Key of the Sender Rewriting Scheme for forwarded mail; empty: no SRS.
    pub srs_secret: Vec<u8>,
    pub sieve: postern_sieve::Limits,
    /// Most Sieve scripts one account may keep.
    pub max_scripts: usize,
    /// Our name, for Message-IDs of vacation replies.
    pub hostname: String,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            min_password_length: 8,
            max_failures: 10,
            failure_window: Duration::from_secs(900),
            lockout: Duration::from_secs(900),
            max_lockout: Duration::from_secs(86400),
            failure_delay: Duration::from_secs(1),
            subaddress_separator: Some('+'),
            srs_secret: Vec::new(),
            sieve: postern_sieve::Limits::from(&postern_config::Sieve::default()),
            max_scripts: 32,
            hostname: "localhost".into(),
        }
    }
}

impl DirectoryConfig {
    /// The directory's part of the configuration; the SRS key comes from the data directory.
    pub fn from_config(cfg: &postern_config::Config) -> DirectoryConfig {
        DirectoryConfig {
            min_password_length: cfg.auth.min_password_length,
            max_failures: cfg.auth.max_failures,
            failure_window: cfg.auth.failure_window.duration(),
            lockout: cfg.auth.lockout.duration(),
            max_lockout: cfg.auth.max_lockout.duration(),
            failure_delay: Duration::from_millis(cfg.auth.failure_delay_ms),
            subaddress_separator: cfg.routing.separator(),
            srs_secret: srs::secret(&cfg.data_dir),
            sieve: postern_sieve::Limits::from(&cfg.sieve),
            max_scripts: cfg.sieve.max_scripts,
            hostname: cfg.hostname.clone(),
        }
    }
}

/// Where mail to an address goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// A local mailbox owner.
    Local(Account),
    /// An address on another domain (from an alias), to be queued.
    Remote(String),
}

#[derive(Debug)]
pub enum AuthOutcome {
    Ok(Account),
    /// Wrong user or password; the caller must not say which.
    Failed,
    /// Too many failures; try again after this long.
    LockedOut(Duration),
    Disabled,
    /// A shared mailbox: no one logs in as it. The words say what to do instead
    /// ([`shared_login_refusal`]).
    Shared(String),
}

/// Why a login as the shared mailbox `address` is refused, and what to do instead.
pub fn shared_login_refusal(address: &str) -> String {
    format!(
        "{address} is a shared mailbox: log in as yourself; it appears in your mail program under Shared/{address}"
    )
}

pub struct Directory {
    /// Compiles and runs users' Sieve filters.
    pub sieve: Arc<postern_sieve::Engine>,
    store: SharedStore,
    config: DirectoryConfig,
    limiter: LoginLimiter,
    /// Recently verified passwords: address → (stored hash, keyed digest of the password).
    /// Saves an argon2 run per login for clients that log in every few seconds.
    verified: Mutex<HashMap<String, Verified>>,
    cache_key: ring::hmac::Key,
    /// Each argon2 run takes 19 MiB: at most one per CPU at a time, whatever the login rate.
    hashing: tokio::sync::Semaphore,
    srs: Option<srs::Srs>,
}

/// One expansion's state: what was visited, what it found, and the explanation if asked.
struct Walk {
    seen: HashSet<String>,
    seen_accounts: HashSet<AccountId>,
    out: Vec<Destination>,
    catch_all: bool,
    /// Follow accounts' forwarding (delivery does; sender checks do not).
    forwards: bool,
    trace: Option<Vec<String>>,
    /// Set when groups' sending policies are to be checked.
    sender: Option<SenderCtx>,
    /// The first group that refused the sender.
    denied: Option<String>,
}

#[derive(Clone)]
struct SenderCtx {
    /// Normalized; empty for the null sender.
    address: String,
    logged_in: bool,
}

/// Where a message from a given sender to an address goes.
#[derive(Debug)]
pub enum Routed {
    To(Vec<Destination>),
    /// A local domain, no such address.
    Unknown,
    /// A group that does not take mail from this sender: why, in words.
    Denied(String),
}

pub fn policy_words(p: &SendPolicy, domain: &str) -> String {
    match p {
        SendPolicy::Anyone => "anyone may send to it".into(),
        SendPolicy::Members => "only its members may send to it".into(),
        SendPolicy::Senders(l) => format!("only {} may send to it", l.join(", ")),
        SendPolicy::Domain => format!("only logged-in users of {domain} may send to it"),
    }
}

fn note(trace: &mut Option<Vec<String>>, depth: usize, line: String) {
    if let Some(t) = trace {
        t.push(format!("{}{line}", "  ".repeat(depth)));
    }
}

/// (stored hash, HMAC of the password, when).
type Verified = (String, [u8; 32], Instant);

const MAX_ALIAS_DEPTH: usize = 10;
const VERIFIED_TTL: Duration = Duration::from_secs(3600);

impl Directory {
    pub fn new(store: SharedStore, config: DirectoryConfig) -> Arc<Directory> {
        let rng = ring::rand::SystemRandom::new();
        let cache_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).expect("system random source");
        let limiter = LoginLimiter::new(
            store.clone(),
            config.max_failures,
            config.failure_window,
            config.lockout,
            config.max_lockout,
        );
        let srs = (!config.srs_secret.is_empty()).then(|| srs::Srs::new(&config.srs_secret));
        let sieve = Arc::new(postern_sieve::Engine::new(&config.sieve, &config.hostname));
        let dir = Arc::new(Directory {
            sieve,
            srs,
            store,
            config,
            limiter,
            verified: Mutex::new(HashMap::new()),
            cache_key,
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        });
        // Forget cached verifications when accounts change (password resets).
        let weak = Arc::downgrade(&dir);
        let mut rx = dir.store.subscribe();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(StoreEvent::Directory | StoreEvent::Missed)
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            match weak.upgrade() {
                                Some(d) => d.verified.lock().unwrap().clear(),
                                None => return,
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
        dir
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.config
    }

    pub async fn is_local_domain(&self, domain: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .domain_get(&domain.to_ascii_lowercase())
            .await?
            .is_some())
    }

    /// Expands an address to its final destinations: accounts and remote addresses, through
    /// aliases (recursively, each destination once, loops cut). `Ok(None)`: a local domain
    /// with no such address. Addresses of other domains come back as `Remote`.
    pub async fn expand(&self, address: &str) -> Result<Option<Vec<Destination>>, StoreError> {
        self.route(address, true, &mut None).await
    }

    /// Like [`Directory::expand`] for a message from `sender` (the envelope sender, or the
    /// logged-in user's address with `logged_in`): groups whose policy does not let them
    /// send refuse the recipient.
    pub async fn expand_from(
        &self,
        address: &str,
        sender: &str,
        logged_in: bool,
    ) -> Result<Routed, StoreError> {
        let mut trace = None;
        let mut denied = None;
        let ctx = SenderCtx {
            address: normalize_address(sender).unwrap_or_default(),
            logged_in,
        };
        let r = self
            .route_with(address, true, &mut trace, Some(&ctx), &mut denied)
            .await?;
        Ok(match (denied, r) {
            (Some(why), _) => Routed::Denied(why),
            (None, Some(d)) => Routed::To(d),
            (None, None) => Routed::Unknown,
        })
    }

    /// Like [`Directory::expand`], with each step explained in words (for `postern route`).
    pub async fn explain(
        &self,
        address: &str,
    ) -> Result<(Vec<String>, Option<Vec<Destination>>), StoreError> {
        let mut steps = Some(Vec::new());
        let r = self.route(address, true, &mut steps).await?;
        Ok((steps.unwrap_or_default(), r))
    }

    async fn route(
        &self,
        address: &str,
        catch_all: bool,
        trace: &mut Option<Vec<String>>,
    ) -> Result<Option<Vec<Destination>>, StoreError> {
        self.route_with(address, catch_all, trace, None, &mut None)
            .await
    }

    async fn route_with(
        &self,
        address: &str,
        catch_all: bool,
        trace: &mut Option<Vec<String>>,
        sender: Option<&SenderCtx>,
        denied: &mut Option<String>,
    ) -> Result<Option<Vec<Destination>>, StoreError> {
        let Ok(address) = normalize_address(address) else {
            note(trace, 0, format!("{address:?} is not a mail address"));
            return Ok(None);
        };
        let domain = domain_of(&address);
        if !self.is_local_domain(domain).await? {
            note(
                trace,
                0,
                format!(
                    "{domain} is not one of our domains: the message is queued for its mail server"
                ),
            );
            return Ok(Some(vec![Destination::Remote(address)]));
        }
        let mut walk = Walk {
            seen: HashSet::new(),
            seen_accounts: HashSet::new(),
            out: Vec::new(),
            catch_all,
            forwards: catch_all,
            trace: trace.take(),
            sender: sender.cloned(),
            denied: None,
        };
        let found = self.expand_into(&address, 0, &mut walk).await?;
        *trace = walk.trace;
        *denied = walk.denied;
        Ok(found.then_some(walk.out))
    }

    /// Returns false when a local address leads nowhere: no account, alias, sub-address base,
    /// domain alias or catch-all. Precedence: the exact address, then without its detail
    /// (`alice+news` → `alice`), then the domain's `@domain` entry.
    fn expand_into<'a>(
        &'a self,
        address: &'a str,
        depth: usize,
        w: &'a mut Walk,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, StoreError>> + Send + 'a>>
    {
        Box::pin(async move {
            if !w.seen.insert(address.to_string()) || depth > MAX_ALIAS_DEPTH {
                note(
                    &mut w.trace,
                    depth,
                    format!("{address}: already expanded (a loop), skipped"),
                );
                return Ok(true);
            }
            let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
            if local
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case("srs0="))
            {
                // A bounce to mail we forwarded: back to the original sender. Only bounces
                // (the null sender): anything else would let whoever learned the address
                // send to the original sender through us.
                if w.sender.as_ref().is_some_and(|c| !c.address.is_empty()) {
                    note(
                        &mut w.trace,
                        depth,
                        format!("{address}: a forwarding return address takes bounces only"),
                    );
                    return Ok(false);
                }
                let Some(orig) = self
                    .srs
                    .as_ref()
                    .and_then(|s| s.reverse(local, srs::today()))
                else {
                    note(
                        &mut w.trace,
                        depth,
                        format!("{address}: not a forwarding address of ours (or expired)"),
                    );
                    return Ok(false);
                };
                note(
                    &mut w.trace,
                    depth,
                    format!("{address} is a forwarding return address: back to {orig}"),
                );
                if w.seen.insert(orig.clone()) {
                    w.out.push(Destination::Remote(orig));
                }
                return Ok(true);
            }
            if let Some(acc) = self.store.account_by_address(address).await? {
                if let (true, Some(f)) = (w.forwards, acc.forward.clone()) {
                    note(
                        &mut w.trace,
                        depth,
                        format!(
                            "{address} is a user who forwards to {}{}",
                            f.to,
                            if f.keep_copy {
                                ", keeping a copy in its INBOX"
                            } else {
                                ""
                            }
                        ),
                    );
                    if f.keep_copy && w.seen_accounts.insert(acc.id) {
                        w.out.push(Destination::Local(acc));
                    }
                    self.targets(std::slice::from_ref(&f.to), depth, w).await?;
                    return Ok(true);
                }
                let what = if acc.shared {
                    "a shared mailbox"
                } else {
                    "a user"
                };
                note(
                    &mut w.trace,
                    depth,
                    format!("{address} is {what}: delivered to its INBOX"),
                );
                if w.seen_accounts.insert(acc.id) {
                    w.out.push(Destination::Local(acc));
                }
                return Ok(true);
            }
            if let Some(alias) = self.store.alias_get(address).await? {
                let what = match &alias.policy {
                    None => "an alias".to_string(),
                    Some(p) => format!("a group ({})", policy_words(p, domain_of(address))),
                };
                note(
                    &mut w.trace,
                    depth,
                    format!("{address} is {what} for {}", alias.targets.join(", ")),
                );
                if let (Some(p), Some(ctx)) = (&alias.policy, &w.sender)
                    && !self.may_send_to(&alias, p, ctx).await?
                {
                    w.denied = Some(format!(
                        "{address} is a group: {}",
                        policy_words(p, domain_of(address))
                    ));
                    return Ok(true);
                }
                self.targets(&alias.targets, depth, w).await?;
                return Ok(true);
            }
            // The domain's `@domain` entry: a domain alias applies before anything else
            // (the whole address moves), a catch-all only after the detail was tried.
            let entry = self.store.alias_get(&format!("@{domain}")).await?;
            if let Some(e) = &entry
                && let [target] = e.targets.as_slice()
                && let Some(other) = target.strip_prefix('@')
            {
                let moved = format!("{local}@{other}");
                note(
                    &mut w.trace,
                    depth,
                    format!(
                        "{domain} is an alias of the domain {other}: {address} becomes {moved}"
                    ),
                );
                if self.is_local_domain(other).await? {
                    return self.expand_into(&moved, depth + 1, w).await;
                }
                if w.seen.insert(moved.clone()) {
                    w.out.push(Destination::Remote(moved));
                }
                return Ok(true);
            }
            if let Some(sep) = self.config.subaddress_separator
                && let Some((base, detail)) = local.split_once(sep)
                && !base.is_empty()
            {
                let base_addr = format!("{base}@{domain}");
                note(
                    &mut w.trace,
                    depth,
                    format!(
                        "{address}: no such address; {sep}{detail} is a detail, trying {base_addr}"
                    ),
                );
                if self.expand_into(&base_addr, depth, w).await? {
                    return Ok(true);
                }
            }
            let Some(entry) = entry else {
                note(
                    &mut w.trace,
                    depth,
                    format!("{address}: no such user or alias"),
                );
                return Ok(false);
            };
            if !w.catch_all {
                return Ok(false);
            }
            note(
                &mut w.trace,
                depth,
                format!(
                    "{address}: no such user or alias; the catch-all of {domain} takes it, for {}",
                    entry.targets.join(", ")
                ),
            );
            self.targets(&entry.targets, depth, w).await?;
            Ok(true)
        })
    }

    async fn targets(
        &self,
        targets: &[String],
        depth: usize,
        w: &mut Walk,
    ) -> Result<(), StoreError> {
        for t in targets {
            let Ok(t) = normalize_address(t) else {
                continue;
            };
            if self.is_local_domain(domain_of(&t)).await? {
                if !self.expand_into(&t, depth + 1, w).await? {
                    note(
                        &mut w.trace,
                        depth + 1,
                        format!("{t} leads nowhere: nothing delivered there"),
                    );
                }
            } else if w.seen.insert(t.clone()) {
                note(
                    &mut w.trace,
                    depth + 1,
                    format!("{t} is on another domain: queued for its mail server"),
                );
                w.out.push(Destination::Remote(t));
            }
        }
        Ok(())
    }

    async fn may_send_to(
        &self,
        group: &Alias,
        policy: &SendPolicy,
        ctx: &SenderCtx,
    ) -> Result<bool, StoreError> {
        let s = &ctx.address;
        Ok(match policy {
            SendPolicy::Anyone => true,
            _ if s.is_empty() => false,
            // Our own addresses prove themselves by logging in: on the MX anyone can claim
            // them in MAIL FROM.
            SendPolicy::Members | SendPolicy::Senders(_)
                if !ctx.logged_in && self.is_local_domain(domain_of(s)).await? =>
            {
                false
            }
            SendPolicy::Senders(list) => list.iter().any(|a| a == s),
            SendPolicy::Domain => ctx.logged_in && domain_of(s) == domain_of(&group.address),
            SendPolicy::Members => {
                if group.targets.iter().any(|t| t == s) {
                    return Ok(true);
                }
                let sender_account = self.lookup_account(s).await?.map(|a| a.id);
                // Members as delivery would reach them, without forwards or catch-alls.
                self.route(&group.address, false, &mut None)
                    .await?
                    .unwrap_or_default()
                    .iter()
                    .any(|d| match d {
                        Destination::Local(a) => Some(a.id) == sender_account,
                        Destination::Remote(r) => r == s,
                    })
            }
        })
    }

    /// The envelope sender for mail forwarded from `our_domain`: SRS-rewritten, so the
    /// destination's SPF check passes. The null sender stays null.
    pub fn forwarding_sender(&self, sender: &str, our_domain: &str) -> Option<String> {
        let srs = self.srs.as_ref()?;
        srs.forward(sender, our_domain, srs::today())
    }

    /// The name of the API token with this secret, if any.
    pub async fn token_name(&self, token: &str) -> Result<Option<String>, StoreError> {
        if !token.starts_with("pst_") {
            return Ok(None);
        }
        let h = token_hash(token);
        Ok(self
            .store
            .token_list()
            .await?
            .into_iter()
            .find(|t| t.hash == h)
            .map(|t| t.name))
    }

    /// The account for an address, trying it without its detail (`alice+news@`) too.
    pub async fn lookup_account(&self, address: &str) -> Result<Option<Account>, StoreError> {
        if let Some(a) = self.store.account_by_address(address).await? {
            return Ok(Some(a));
        }
        if let Some(sep) = self.config.subaddress_separator
            && let Some((local, domain)) = address.rsplit_once('@')
            && let Some((base, _)) = local.split_once(sep)
            && !base.is_empty()
        {
            return self
                .store
                .account_by_address(&format!("{base}@{domain}"))
                .await;
        }
        Ok(None)
    }

    /// Checks a login over `protocol` ("imap", "smtp"...). Failures are counted per IP and per
    /// account; callers should wait `failure_delay` before answering a failure. Every refusal
    /// is a line in the security log, in the fixed format fail2ban reads.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
        protocol: &str,
    ) -> Result<AuthOutcome, StoreError> {
        let address = normalize_address(username).unwrap_or_else(|_| username.to_ascii_lowercase());
        if let Some(wait) = self.limiter.locked(ip, &address, protocol).await {
            limiter::security_event(
                "login refused",
                ip,
                protocol,
                &address,
                &format!("locked out for {} s more", wait.as_secs().max(1)),
            );
            return Ok(AuthOutcome::LockedOut(wait));
        }
        let account = self.store.account_by_address(&address).await?;
        if let Some(a) = account.as_ref().filter(|a| a.shared) {
            // Nothing to guess: a shared mailbox has no password. Refused like a disabled
            // account (logged, not counted as a failure), with what to do instead.
            limiter::security_event("login refused", ip, protocol, &address, "shared mailbox");
            return Ok(AuthOutcome::Shared(shared_login_refusal(&a.address)));
        }
        let ok = match &account {
            Some(a) => self.check_password(a, password).await,
            None => {
                // Same work for unknown users, so timing does not reveal which exist.
                let _ = self.verify(DUMMY_HASH.clone(), password.to_string()).await;
                false
            }
        };
        match account {
            Some(a) if ok => {
                if a.disabled {
                    limiter::security_event(
                        "login refused",
                        ip,
                        protocol,
                        &address,
                        "account disabled",
                    );
                    return Ok(AuthOutcome::Disabled);
                }
                self.limiter.success(ip, &address).await;
                Ok(AuthOutcome::Ok(a))
            }
            found => {
                let why = if found.is_some() {
                    "wrong password"
                } else {
                    "no such account"
                };
                limiter::security_event("login refused", ip, protocol, &address, why);
                self.limiter.failure(ip, &address, protocol).await;
                Ok(AuthOutcome::Failed)
            }
        }
    }

    async fn check_password(&self, account: &Account, password: &str) -> bool {
        if let Some((hash, d, at)) = self.verified.lock().unwrap().get(&account.address)
            && *hash == account.password_hash
            && at.elapsed() < VERIFIED_TTL
            && ring::hmac::verify(&self.cache_key, password.as_bytes(), d).is_ok()
        {
            return true;
        }
        let ok = self
            .verify(account.password_hash.clone(), password.to_string())
            .await;
        if ok {
            let tag = ring::hmac::sign(&self.cache_key, password.as_bytes());
            let mut digest = [0u8; 32];
            digest.copy_from_slice(tag.as_ref());
            self.verified.lock().unwrap().insert(
                account.address.clone(),
                (account.password_hash.clone(), digest, Instant::now()),
            );
        }
        ok
    }

    /// argon2 off the async threads, a bounded number at a time.
    async fn verify(&self, hash: String, password: String) -> bool {
        let Ok(_slot) = self.hashing.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false)
    }

    pub fn failure_delay(&self) -> Duration {
        self.config.failure_delay
    }

    pub fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }
}

static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("not a real password"));
