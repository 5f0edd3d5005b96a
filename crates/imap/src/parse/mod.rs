//! IMAP command syntax (RFC 9051 9, RFC 3501 9) with the extensions we support. Input is one
//! complete command: its lines and the literals between them, as received. The types of
//! commands are here; `lexer` reads the pieces (atoms, strings, sets, sections, search keys),
//! `command` puts commands together.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type R<T> = Result<T, ParseError>;

pub(crate) fn err<T>(m: impl Into<String>) -> R<T> {
    Err(ParseError(m.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Num(u32),
    /// `*`: the largest number in use.
    Star,
    /// `$` (RFC 5182): the saved search result, alone in its set; the session puts the
    /// messages it names in its place before running the command. Names nothing itself.
    Saved,
}

impl SeqSet {
    /// `$`, the saved search result.
    pub fn saved() -> SeqSet {
        SeqSet(vec![(SeqNum::Saved, SeqNum::Saved)])
    }

    pub fn is_saved(&self) -> bool {
        self.0 == [(SeqNum::Saved, SeqNum::Saved)]
    }
}

/// A sequence set: ranges as given (either order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(SeqNum, SeqNum)>);

impl SeqSet {
    /// Whether `n` is in the set, `star` being the value of `*`.
    pub fn contains(&self, n: u32, star: u32) -> bool {
        let v = |s: SeqNum| match s {
            SeqNum::Num(x) => x,
            SeqNum::Star => star,
            SeqNum::Saved => 0,
        };
        self.0.iter().any(|&(a, b)| {
            let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
            n >= lo && n <= hi
        })
    }

    /// The set as sorted, merged ranges over 1..=star (empty when star is 0 and not used).
    pub fn ranges(&self, star: u32) -> Vec<(u32, u32)> {
        let v = |s: SeqNum| match s {
            SeqNum::Num(x) => x,
            SeqNum::Star => star,
            SeqNum::Saved => 0,
        };
        let mut r: Vec<(u32, u32)> = self
            .0
            .iter()
            .map(|&(a, b)| (v(a).min(v(b)), v(a).max(v(b))))
            .collect();
        r.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::new();
        for (a, b) in r {
            match out.last_mut() {
                Some(l) if a <= l.1.saturating_add(1) => l.1 = l.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAtt {
    Flags,
    InternalDate,
    Rfc822Size,
    Uid,
    Envelope,
    Body,
    BodyStructure,
    ModSeq,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Section {
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u32, u32)>,
    },
    BinarySize(Vec<u32>),
    /// PREVIEW (RFC 8970), with or without LAZY: a preview is always made, so LAZY changes nothing.
    Preview,
    /// OBJECTID (RFC 8474).
    EmailId,
    ThreadId,
    /// SAVEDATE (RFC 8514).
    SaveDate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    SeqSet(SeqSet),
    Uid(SeqSet),
    Flag(u8, bool),
    Keyword(String, bool),
    New,
    Old,
    Recent,
    Larger(u64),
    Smaller(u64),
    /// Internal date comparisons: (kind, day as seconds since the epoch at 00:00 UTC).
    Before(i64),
    On(i64),
    Since(i64),
    SentBefore(i64),
    SentOn(i64),
    SentSince(i64),
    Header(String, String),
    Body(String),
    Text(String),
    ModSeq(u64),
    /// OBJECTID (RFC 8474): the message's EMAILID, THREADID.
    EmailId(String),
    ThreadId(String),
    /// WITHIN (RFC 5032): internal date more than this many seconds ago.
    Older(u32),
    /// WITHIN: internal date at most this many seconds ago.
    Younger(u32),
    /// SAVEDATE (RFC 8514): save date comparisons, like `Before`, `On` and `Since`.
    SavedBefore(i64),
    SavedOn(i64),
    SavedSince(i64),
    /// Every message: this store keeps save dates in every mailbox.
    SaveDateSupported,
    Not(Box<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    And(Vec<SearchKey>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchRet {
    Min,
    Max,
    All,
    Count,
    /// SEARCHRES (RFC 5182): keep the result for `$`.
    Save,
    /// CONTEXT=SEARCH, CONTEXT=SORT (RFC 5267 4): tell of changes to the result as the mailbox
    /// changes, until CANCELUPDATE or the mailbox is closed.
    Update,
    /// RFC 5267 4.4, RFC 9394: the results at these positions (1-based, both ends included),
    /// `first <= last`; negative positions count from the end (-1 the last), both negative.
    Partial(i64, i64),
}

/// SORT criteria (RFC 5256 3, RFC 5957).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

/// THREAD algorithms (RFC 5256 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Replace,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<String>,
    pub date: Option<i64>,
    pub data: MessageData,
    /// Sent as a literal8 (`~{n}`): binary content (RFC 3516 4.4).
    pub binary: bool,
}

/// An APPEND message: in the command, or (as framing does) gone to a sink as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageData {
    Inline(Vec<u8>),
    /// The n-th literal the framing spooled.
    Spooled(usize),
    /// CATENATE (RFC 4469): the message is put together from these parts, in order.
    Catenate(Vec<CatPart>),
}

/// A part of a CATENATE message: data sent with the command, or what an IMAP URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    /// `TEXT literal` (or `UTF8 (literal8)`, RFC 6855), never a further CATENATE.
    Text(MessageData),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOptions {
    pub subscribed: bool,
    pub recursive: bool,
    pub special_use: bool,
    pub ret_subscribed: bool,
    pub ret_children: bool,
    pub ret_special_use: bool,
    pub ret_status: Option<Vec<String>>,
    /// LIST with selection or return options (RFC 5258), or several patterns.
    pub extended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qresync {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<SeqSet>,
    pub seq_match: Option<(SeqSet, SeqSet)>,
}

/// Which mailboxes an event group of NOTIFY names (RFC 5465 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyFilter {
    Selected,
    SelectedDelayed,
    Inboxes,
    Personal,
    Subscribed,
    /// These mailboxes and every one below them.
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

impl NotifyFilter {
    pub fn is_selected(&self) -> bool {
        matches!(self, NotifyFilter::Selected | NotifyFilter::SelectedDelayed)
    }
}

/// An event of NOTIFY, as named (RFC 5465 5): those we do not know are kept by name, for the
/// BADEVENT that names what we do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    /// With the FETCH items to send with each new message (only for the selected mailbox).
    MessageNew(Vec<FetchAtt>),
    MessageExpunge,
    FlagChange,
    MailboxName,
    SubscriptionChange,
    MailboxMetadataChange,
    ServerMetadataChange,
    Other(String),
}

/// `(filter events)`; `events` None for NONE: nothing from those mailboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyGroup {
    pub filter: NotifyFilter,
    pub events: Option<Vec<NotifyEvent>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    StartTls,
    Login(String, String),
    Authenticate(String, Option<String>),
    Enable(Vec<String>),
    Id,
    Select {
        mailbox: String,
        read_only: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    },
    Create(String),
    Delete(String),
    Rename(String, String),
    Subscribe(String),
    Unsubscribe(String),
    List {
        reference: String,
        patterns: Vec<String>,
        opts: ListOptions,
    },
    Lsub(String, String),
    Namespace,
    Status(String, Vec<String>),
    Append(String, Vec<AppendMessage>),
    /// REPLACE (RFC 8508): the message (sequence number, or UID with `uid`) is replaced by a
    /// new one in the named mailbox.
    Replace {
        uid: bool,
        target: u32,
        mailbox: String,
        message: AppendMessage,
    },
    Idle,
    Check,
    Close,
    Unselect,
    Expunge(Option<SeqSet>),
    /// CANCELUPDATE (RFC 5267 4.3): the tags of the searches whose updates end.
    CancelUpdate(Vec<String>),
    Search {
        uid: bool,
        ret: Option<Vec<SearchRet>>,
        key: SearchKey,
    },
    /// (key, reversed) in order of precedence; `ret`: ESORT's RETURN options (RFC 5267 3).
    Sort {
        uid: bool,
        ret: Option<Vec<SearchRet>>,
        criteria: Vec<(SortKey, bool)>,
        key: SearchKey,
    },
    Thread {
        uid: bool,
        algorithm: ThreadAlgorithm,
        key: SearchKey,
    },
    Fetch {
        uid: bool,
        set: SeqSet,
        atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SeqSet,
        op: StoreOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: String,
        moving: bool,
    },
    GetQuota(String),
    GetQuotaRoot(String),
    SetQuota,
    /// RFC 4314: mailbox, identifier, rights (with a leading `+` or `-` to add or take away).
    SetAcl(String, String, String),
    DeleteAcl(String, String),
    GetAcl(String),
    ListRights(String, String),
    MyRights(String),
    /// RFC 5464: entries of a mailbox ("" for the server), names as kept (lower case).
    GetMetadata {
        mailbox: String,
        entries: Vec<String>,
        /// MAXSIZE: larger values are left out.
        max_size: Option<u64>,
        /// DEPTH: 0 (the default), 1, or infinity (`None`).
        depth: Option<u32>,
    },
    /// Entry names (as kept) and values; NIL (`None`) removes.
    SetMetadata(String, Vec<(String, Option<Vec<u8>>)>),
    /// NOTIFY (RFC 5465): NONE (no groups), or SET with STATUS and the groups.
    Notify {
        status: bool,
        groups: Vec<NotifyGroup>,
    },
}

mod command;
mod lexer;
#[cfg(test)]
mod tests;

pub use command::{parse_command, parse_section};
pub use lexer::{Parser, days_from_civil, parse_date, parse_date_time};

/// Splits a command into tag and the rest; the tag is needed even for a bad command.
pub fn parse(input: &[u8], utf8: bool) -> (Option<String>, R<Command>) {
    parse_framed(input, &[], utf8)
}

/// Like [`parse`] for a command whose APPEND message literals the framing spooled: their data
/// would have started at the offsets in `spooled`.
pub fn parse_framed(input: &[u8], spooled: &[usize], utf8: bool) -> (Option<String>, R<Command>) {
    let mut p = Parser::new(input);
    p.spooled = spooled;
    p.utf8 = utf8;
    let tag = match p.tag() {
        Ok(t) => t,
        Err(e) => return (None, Err(e)),
    };
    if let Err(e) = p.sp() {
        return (Some(tag), Err(e));
    }
    let c = parse_command(&mut p);
    (Some(tag), c)
}
