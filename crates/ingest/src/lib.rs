//! Where every message enters Postern, whatever brought it (SMTP, IMAP APPEND, delivery
//! reports and notices, filters' replies, imports, copies between stores): parsed once here,
//! checked, routed, and handed to the store as one delivery. A message goes socket → ingest →
//! store, never back.
//!
//! The SMTP path, in order ([`Ingest::accept`]):
//! 1. [`parsed::Parsed`]: the one parse (a spool file is mapped, never read into memory);
//! 2. the inbound authentication checks, on that parse (`postern_trust`); for a logged-in
//!    user, whether its From and Sender are theirs to use ([`send_as`]);
//! 3. routing ([`route`]): subaddress and Junk folders, each recipient's Sieve filter;
//! 4. the edit of the bytes (our Authentication-Results in, forged ones out) in place;
//! 5. [`commit`]: one atomic write of every copy, queue entry and trace event.
//!
//! Everything else enters through [`Prepared`], the one place a delivery is made.

pub mod commit;
pub mod junk;
mod notice;
pub mod parsed;
pub mod prepared;
pub mod raw;
pub mod route;
pub mod send_as;
pub mod sink;

use std::net::IpAddr;
use std::sync::Arc;

use postern_config::Config;
use postern_directory::{Destination, Directory};
use postern_reports::dmarc::Applied;
use postern_store::{SharedStore, StoreError};
use postern_trust::Decision;

pub use commit::{Arrival, Envelope};
pub use notice::quota_warning;
pub use parsed::Parsed;
pub use prepared::{Prepared, into_folder, into_mailbox, safe_meta};
pub use raw::Raw;
pub use sink::MessageSink;

/// A recipient accepted at RCPT time, with where it leads.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 ORCPT and NOTIFY, as given.
    pub orcpt: Option<String>,
    pub notify: Option<String>,
    pub dests: Vec<Destination>,
    /// postmaster or abuse at one of our domains: takes mail from anyone (RFC 5321 4.5.1).
    pub role: bool,
}

/// What to tell the client about a message: an SMTP reply code, its enhanced status code
/// (RFC 3463) and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl Status {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Status {
        Status {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// A storage problem: the same message may succeed later.
    pub fn temporary(e: &StoreError) -> Status {
        match e {
            StoreError::DiskFull => Status::new(
                452,
                "4.3.1",
                "Insufficient system storage: the server's disk is full; try again later",
            ),
            StoreError::QuotaExceeded => Status::new(452, "4.2.2", "Mailbox full; try again later"),
            StoreError::Io(io) if postern_store::is_disk_full(io) => {
                Status::temporary(&StoreError::DiskFull)
            }
            _ => Status::new(451, "4.3.0", "Local error in processing; try again later"),
        }
    }

    /// "550 5.7.1 words", for logs and the trace.
    pub fn summary(&self) -> String {
        format!("{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// How a message from SMTP ended.
#[derive(Debug)]
pub enum Outcome {
    /// Stored and/or queued (or discarded by every filter): 250.
    Taken(Status),
    /// Refused for a reason the sender's side must hear (`why`: "authentication" for the
    /// inbound checks, "dns" when they could not be made, "filter" for users' filters).
    Refused { status: Status, why: &'static str },
    /// Not stored: a storage problem, temporary.
    Failed { status: Status, error: StoreError },
}

impl Outcome {
    pub fn status(&self) -> &Status {
        match self {
            Outcome::Taken(s)
            | Outcome::Refused { status: s, .. }
            | Outcome::Failed { status: s, .. } => s,
        }
    }
}

/// The client that handed over a message from another server: what the checks look at.
pub struct Client {
    pub ip: IpAddr,
    pub helo: String,
}

/// A message from SMTP, complete, with its envelope.
pub struct Incoming {
    /// Return-Path, then our Received field, then the message as the client sent it.
    pub raw: Raw,
    /// Length of the Return-Path field (0 when no local copy needs one).
    pub return_path_len: usize,
    /// How many header fields after the Return-Path are ours (the Received field).
    pub ours: usize,
    pub envelope: Envelope,
    pub arrival: Arrival,
    /// Set to run the inbound checks: mail from another server on the MX.
    pub check: Option<Client>,
    /// Who vouches for the message (a logged-in user, a relay network): it is signed as ours.
    pub submitter: Option<String>,
    /// Sent by a logged-in user (no SRS for its forwards).
    pub logged_in: bool,
    /// The logged-in user's account, on submission: the header's From and Sender must be
    /// addresses it may use ([`send_as`]).
    pub sent_by: Option<postern_store::Account>,
}

/// What ingest needs of the rest of the server.
pub struct Ingest {
    pub store: SharedStore,
    pub directory: Arc<Directory>,
    pub trust: Option<Arc<postern_trust::Checker>>,
    pub config: Arc<Config>,
    /// Counts toward the DMARC aggregate reports we send.
    pub reports: Option<Arc<postern_reports::Tallies>>,
}

/// Messages at least this large are parsed (and filtered) off the session's thread.
const HEAVY: usize = 64 << 10;

/// Runs `f` where it may block or take long: off the async worker for large jobs, so other
/// sessions of this thread go on meanwhile (needs the multi-threaded runtime the server runs;
/// elsewhere it runs in place).
pub fn heavy<R>(size: usize, f: impl FnOnce() -> R) -> R {
    if size < HEAVY {
        return f();
    }
    blocking(f)
}

/// Runs `f`, which blocks (it waits for storage), without stalling the async worker.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Ingest {
    /// Takes a message from SMTP through every stage to the store; the status says what the
    /// client is told.
    pub async fn accept(&self, m: Incoming) -> Outcome {
        let Incoming {
            mut raw,
            return_path_len,
            ours,
            envelope: env,
            mut arrival,
            check,
            submitter,
            logged_in,
            sent_by,
        } = m;
        if let Err(e) = raw.map() {
            tracing::warn!(error = %e, "cannot read the spooled message");
            let error = StoreError::Io(e);
            return Outcome::Failed {
                status: Status::temporary(&error),
                error,
            };
        }
        // Mail we vouch for (and sign) leaves with lines RFC 5322 allows: a text part with a
        // longer line is re-encoded before anything else sees it.
        let max_line = self.config.smtp.max_text_line.saturating_sub(2);
        if submitter.is_some()
            && postern_message::has_long_lines(raw.bytes(), max_line)
            && let Some(encoded) = heavy(raw.bytes().len(), || {
                postern_message::reencode_long_lines(raw.bytes(), max_line)
            })
        {
            raw = Raw::Memory(encoded);
        }
        let size = raw.len();
        let host = self.config.hostname.as_str();
        let store = &self.store;
        let return_path = raw.bytes()[..return_path_len.min(raw.bytes().len())].to_vec();
        let (added, forged, meta, folders, plans, queue_sender, verdict, reports, sent_as) = {
            let parsed = heavy(raw.bytes().len(), || {
                Parsed::new(raw.bytes(), return_path_len, ours)
            });
            arrival.message_id = parsed.message_id();
            let sent_as = match &sent_by {
                None => send_as::SentAs::default(),
                Some(user) => {
                    let (authors, sender) = (parsed.authors(), parsed.sender());
                    match send_as::check(&self.directory, user, &authors, sender.as_deref()).await {
                        Ok(s) => s,
                        Err(outcome) => {
                            let e = commit::refusal_event(
                                &env,
                                &arrival.trace_id,
                                format!("{}: {}", arrival.text, outcome.status().summary()),
                            );
                            let _ = store.trace_append(vec![e]).await;
                            return outcome;
                        }
                    }
                }
            };
            let verdict = match (&self.trust, &check) {
                (Some(checker), Some(c)) => {
                    let complete = size <= self.config.inbound.max_verify_size.0;
                    let sent = parsed.as_sent();
                    let v = checker
                        .check(
                            c.ip,
                            &c.helo,
                            &env.from,
                            sent.as_ref(),
                            parsed.region(),
                            complete,
                        )
                        .await;
                    // Mail only for postmaster or abuse is taken whatever the checks say
                    // (to Junk when they would refuse it): reports of abuse must arrive.
                    let roles_only = env.rcpts.iter().all(|r| r.role);
                    let refusal = match &v.decision {
                        _ if roles_only => None,
                        postern_trust::Decision::Reject(why) => {
                            Some((Status::new(550, "5.7.1", why.clone()), "authentication"))
                        }
                        postern_trust::Decision::Defer(why) => {
                            Some((Status::new(451, "4.4.3", why.clone()), "dns"))
                        }
                        _ => None,
                    };
                    if let Some((_, "authentication")) = &refusal {
                        self.count_for_report(&v, Applied::Refused);
                    }
                    if let Some((status, why)) = refusal {
                        let e = commit::refusal_event(
                            &env,
                            &arrival.trace_id,
                            format!("{}: {}", arrival.text, status.summary()),
                        );
                        let _ = store.trace_append(vec![e]).await;
                        return Outcome::Refused { status, why };
                    }
                    arrival.checks = Some(v.summary.clone());
                    Some(v)
                }
                _ => None,
            };
            // Authentication-Results claiming our name are ours alone to write (RFC 8601
            // section 5): the sender's go, whoever sent it.
            let forged = parsed.field_ranges(|f| postern_trust::is_our_results(f, host));
            let added = verdict
                .as_ref()
                .map(|v| v.headers.clone())
                .unwrap_or_default();
            let junk = verdict.as_ref().is_some_and(|v| {
                matches!(
                    v.decision,
                    postern_trust::Decision::Junk | postern_trust::Decision::Reject(_)
                )
            });
            if let Some(v) = &verdict {
                let m = &postern_net::metrics::METRICS;
                if junk {
                    m.verdicts.add("junk", 1);
                }
                if v.summary.contains("dmarc=fail") {
                    m.verdicts.add("dmarc_fail", 1);
                }
            }
            let queue_sender =
                route::forwarding_sender(&self.directory, logged_in, &env.from, &env.rcpts).await;
            let mut folders =
                route::subaddress_folders(store, &self.config.routing, &env.rcpts).await;
            if let Some(v) = &verdict {
                route::junk_folders(
                    store,
                    &env.rcpts,
                    &mut folders,
                    junk,
                    &v.header_from,
                    v.author_verified,
                )
                .await;
            }
            let added_fields = parsed::fields_of(&added);
            let filter_view = || parsed.for_filter(&added_fields, &forged);
            let plans = route::plan(
                &self.directory.sieve,
                &self.directory,
                store,
                self.config.sieve.max_message_size.0,
                &env.from,
                &env.rcpts,
                &filter_view,
                size,
                &folders,
                junk,
            )
            .await;
            // The structure of the bytes as they will be stored, edits included.
            let removed: usize = forged.iter().map(|r| r.len()).sum();
            let delta = added.len() as i64 - removed as i64;
            let meta = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                heavy(raw.bytes().len(), || parsed.meta().moved(delta).encode())
            }))
            .unwrap_or_default();
            // Reports other servers send about our domains, kept once the message is.
            let to_us = env
                .rcpts
                .iter()
                .any(|r| r.dests.iter().any(|d| matches!(d, Destination::Local(_))));
            let from_outside = submitter.is_none() && !logged_in;
            let reports = if from_outside && to_us && parsed.is_report() {
                let max = self.config.reports.max_received_size.0 as usize;
                heavy(raw.bytes().len(), || {
                    postern_reports::received::parse(raw.bytes(), max, postern_store::now())
                })
            } else {
                Vec::new()
            };
            (
                added,
                forged,
                meta,
                folders,
                plans,
                queue_sender,
                verdict,
                reports,
                sent_as,
            )
        };
        let raw = match raw.edit(return_path_len, added.into_bytes(), forged).await {
            Ok(r) => r,
            Err(e) => {
                let error = StoreError::from_io(e);
                return Outcome::Failed {
                    status: Status::temporary(&error),
                    error,
                };
            }
        };
        let (status, result) = commit::commit(
            commit::Commit {
                store,
                submitter: submitter.as_deref(),
                queue_sender,
                folders: &folders,
                plans,
                sent_as,
            },
            &env,
            &arrival,
            commit::Stored {
                raw,
                meta,
                return_path,
            },
        )
        .await;
        if result.is_ok() && status.code != 550 {
            self.keep_reports(reports, &arrival.trace_id).await;
        }
        if let (Ok(()), Some(v)) = (&result, &verdict) {
            let applied = if status.code == 550 {
                Applied::Refused
            } else if matches!(v.decision, Decision::Junk | Decision::Reject(_)) {
                Applied::Junk
            } else {
                Applied::Delivered
            };
            self.count_for_report(v, applied);
        }
        match result {
            Err(error) => Outcome::Failed { status, error },
            Ok(()) if status.code == 550 => Outcome::Refused {
                status,
                why: "filter",
            },
            Ok(()) => Outcome::Taken(status),
        }
    }
}

impl Ingest {
    /// Keeps the reports a message held when they are about one of our domains.
    async fn keep_reports(&self, reports: Vec<postern_store::ReceivedReport>, trace_id: &str) {
        for r in reports {
            match self.directory.is_local_domain(&r.domain).await {
                Ok(true) => {}
                _ => continue,
            }
            let (kind, domain, org) = (r.kind.as_str(), r.domain.clone(), r.org.clone());
            match self.store.report_put(r).await {
                Ok(true) => tracing::info!(id = %trace_id, kind, %domain, %org, "report received"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(id = %trace_id, error = %e, "cannot keep a received report")
                }
            }
        }
    }

    /// Counts a checked message toward its author domain's aggregate report, when it asks for
    /// one.
    fn count_for_report(&self, v: &postern_trust::Verdict, applied: Applied) {
        if let (Some(tallies), Some(obs)) = (&self.reports, &v.dmarc_report) {
            tallies.add(postern_reports::dmarc::tally(
                &obs.domain,
                obs.policy.clone(),
                obs.record.clone(),
                obs.rua.clone(),
                applied,
                time::OffsetDateTime::now_utc().unix_timestamp(),
            ));
        }
    }
}
