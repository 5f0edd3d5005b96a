//! IMAP command syntax (RFC 9051 9, RFC 3501 9) with the extensions we support. Input is one
//! complete command: its lines and the literals between them, as received.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type R<T> = Result<T, ParseError>;

fn err<T>(m: impl Into<String>) -> R<T> {
    Err(ParseError(m.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Num(u32),
    /// `*`: the largest number in use.
    Star,
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
    Save,
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
    pub data: Vec<u8>,
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
    Idle,
    Check,
    Close,
    Unselect,
    Expunge(Option<SeqSet>),
    Search {
        uid: bool,
        ret: Option<Vec<SearchRet>>,
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
}

/// Limits on nesting, so hostile input costs bounded stack.
const MAX_DEPTH: usize = 32;

pub struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    depth: usize,
    /// UTF-8 mailbox names (IMAP4rev2 or UTF8=ACCEPT); otherwise modified UTF-7.
    pub utf8: bool,
}

impl<'a> Parser<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Parser {
            b,
            pos: 0,
            depth: 0,
            utf8: false,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.b.len() || self.rest_is_crlf()
    }

    fn rest_is_crlf(&self) -> bool {
        let r = &self.b[self.pos..];
        r == b"\r\n" || r == b"\n"
    }

    fn sp(&mut self) -> R<()> {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            Ok(())
        } else {
            err("expected a space")
        }
    }

    fn maybe_sp(&mut self) -> bool {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            err(format!("expected '{}'", c as char))
        }
    }

    pub fn end(&mut self) -> R<()> {
        if self.at_end() {
            Ok(())
        } else {
            err("unexpected text at the end of the command")
        }
    }

    fn is_atom_char(c: u8) -> bool {
        c > 0x20 && c < 0x7f && !b"(){ %*\"\\]".contains(&c)
    }

    /// An atom (letters of a command name, a flag keyword...).
    pub fn atom(&mut self) -> R<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if Self::is_atom_char(c) {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            return err("expected an atom");
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.pos]).into_owned())
    }

    /// A tag: atom characters except '+'.
    pub fn tag(&mut self) -> R<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if Self::is_atom_char(c) && c != b'+' {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            return err("missing tag");
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.pos]).into_owned())
    }

    pub fn number(&mut self) -> R<u64> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.b[start..self.pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ParseError("expected a number".into()))
    }

    fn nz32(&mut self) -> R<u32> {
        match self.number()? {
            n @ 1..=0xffff_ffff => Ok(n as u32),
            _ => err("expected a number from 1 to 4294967295"),
        }
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return err("unterminated quoted string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return err("bad escape in quoted string"),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `{n}` or `{n+}` (or `~{n}` for BINARY), CRLF, then n octets.
    fn literal(&mut self) -> R<Vec<u8>> {
        if self.peek() == Some(b'~') {
            self.pos += 1;
        }
        self.expect(b'{')?;
        let n = self.number()? as usize;
        if self.peek() == Some(b'+') || self.peek() == Some(b'-') {
            self.pos += 1;
        }
        self.expect(b'}')?;
        if self.b[self.pos..].starts_with(b"\r\n") {
            self.pos += 2;
        } else if self.peek() == Some(b'\n') {
            self.pos += 1;
        } else {
            return err("a literal must be followed by CRLF");
        }
        if self.b.len() - self.pos < n {
            return err("literal shorter than announced");
        }
        let v = self.b[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(v)
    }

    pub fn string_bytes(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') | Some(b'~') => self.literal(),
            _ => err("expected a string"),
        }
    }

    pub fn astring(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"') | Some(b'{') => {
                let b = self.string_bytes()?;
                String::from_utf8(b).map_err(|_| ParseError("string is not valid UTF-8".into()))
            }
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    // ASTRING-CHAR includes ']'.
                    if Self::is_atom_char(c) || c == b']' || (c >= 0x80) {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                if self.pos == start {
                    return err("expected an atom or a string");
                }
                String::from_utf8(self.b[start..self.pos].to_vec())
                    .map_err(|_| ParseError("not valid UTF-8".into()))
            }
        }
    }

    /// A mailbox name, decoded from modified UTF-7 unless UTF-8 is on; INBOX is
    /// case-insensitive.
    pub fn mailbox(&mut self) -> R<String> {
        let raw = self.astring()?;
        let name = if self.utf8 {
            raw
        } else {
            crate::utf7::decode(&raw)
                .ok_or_else(|| ParseError("bad modified UTF-7 in mailbox name".into()))?
        };
        Ok(postern_store::embedded::normalize_mailbox_name(&name))
    }

    /// list-mailbox: atom chars plus % * ] or a string.
    fn list_mailbox(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.astring(),
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if Self::is_atom_char(c) || c == b'%' || c == b'*' || c == b']' || c >= 0x80 {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                if self.pos == start {
                    return err("expected a mailbox pattern");
                }
                Ok(String::from_utf8_lossy(&self.b[start..self.pos]).into_owned())
            }
        }
    }

    fn open(&mut self) -> R<()> {
        self.expect(b'(')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("nesting too deep");
        }
        Ok(())
    }

    fn close(&mut self) -> R<()> {
        self.expect(b')')?;
        self.depth -= 1;
        Ok(())
    }

    fn flag(&mut self) -> R<String> {
        if self.peek() == Some(b'\\') {
            self.pos += 1;
            if self.peek() == Some(b'*') {
                self.pos += 1;
                return Ok("\\*".into());
            }
            return Ok(format!("\\{}", self.atom()?));
        }
        self.atom()
    }

    fn flag_list(&mut self) -> R<Vec<String>> {
        self.open()?;
        let mut v = Vec::new();
        if self.peek() != Some(b')') {
            loop {
                v.push(self.flag()?);
                if !self.maybe_sp() {
                    break;
                }
            }
        }
        self.close()?;
        Ok(v)
    }

    pub fn seq_set(&mut self) -> R<SeqSet> {
        let mut v = Vec::new();
        loop {
            let a = self.seq_num()?;
            let b = if self.peek() == Some(b':') {
                self.pos += 1;
                self.seq_num()?
            } else {
                a
            };
            v.push((a, b));
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(SeqSet(v))
    }

    fn seq_num(&mut self) -> R<SeqNum> {
        if self.peek() == Some(b'*') {
            self.pos += 1;
            Ok(SeqNum::Star)
        } else {
            Ok(SeqNum::Num(self.nz32()?))
        }
    }

    fn keyword_is(&mut self, kw: &str) -> bool {
        let end = self.pos + kw.len();
        if end <= self.b.len() && self.b[self.pos..end].eq_ignore_ascii_case(kw.as_bytes()) {
            let next = self.b.get(end).copied();
            if next.is_none_or(|c| !Self::is_atom_char(c)) {
                self.pos = end;
                return true;
            }
        }
        false
    }

    fn section_parts(&mut self) -> R<Section> {
        self.expect(b'[')?;
        let mut s = Section::default();
        loop {
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                s.part.push(self.nz32()?);
                if self.peek() == Some(b'.') {
                    self.pos += 1;
                    continue;
                }
            }
            break;
        }
        if self.peek() != Some(b']') {
            let word = {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == b'.')
                {
                    self.pos += 1;
                }
                String::from_utf8_lossy(&self.b[start..self.pos]).to_ascii_uppercase()
            };
            s.text = Some(match word.as_str() {
                "HEADER" => SectionText::Header,
                "TEXT" => SectionText::Text,
                "MIME" if !s.part.is_empty() => SectionText::Mime,
                "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                    self.sp()?;
                    self.open()?;
                    let mut fields = Vec::new();
                    loop {
                        fields.push(self.astring()?);
                        if !self.maybe_sp() {
                            break;
                        }
                    }
                    self.close()?;
                    if word == "HEADER.FIELDS" {
                        SectionText::HeaderFields(fields)
                    } else {
                        SectionText::HeaderFieldsNot(fields)
                    }
                }
                _ => return err(format!("unknown section {word:?}")),
            });
        }
        self.expect(b']')?;
        Ok(s)
    }

    fn partial(&mut self) -> R<Option<(u32, u32)>> {
        if self.peek() != Some(b'<') {
            return Ok(None);
        }
        self.pos += 1;
        let a = self.number()? as u32;
        self.expect(b'.')?;
        let b = self.nz32()?;
        self.expect(b'>')?;
        Ok(Some((a, b)))
    }

    fn fetch_att(&mut self) -> R<FetchAtt> {
        let name = {
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.')
            {
                self.pos += 1;
            }
            String::from_utf8_lossy(&self.b[start..self.pos]).to_ascii_uppercase()
        };
        Ok(match name.as_str() {
            "FLAGS" => FetchAtt::Flags,
            "INTERNALDATE" => FetchAtt::InternalDate,
            "RFC822.SIZE" => FetchAtt::Rfc822Size,
            "UID" => FetchAtt::Uid,
            "ENVELOPE" => FetchAtt::Envelope,
            "BODYSTRUCTURE" => FetchAtt::BodyStructure,
            "MODSEQ" => FetchAtt::ModSeq,
            "RFC822" => FetchAtt::Rfc822,
            "RFC822.HEADER" => FetchAtt::Rfc822Header,
            "RFC822.TEXT" => FetchAtt::Rfc822Text,
            "BODY" | "BODY.PEEK" if self.peek() == Some(b'[') => {
                let section = self.section_parts()?;
                let partial = self.partial()?;
                FetchAtt::Section {
                    peek: name == "BODY.PEEK",
                    section,
                    partial,
                }
            }
            "BODY" => FetchAtt::Body,
            "BINARY" | "BINARY.PEEK" | "BINARY.SIZE" => {
                let s = self.section_parts()?;
                if s.text.is_some() {
                    return err("BINARY takes part numbers only");
                }
                if name == "BINARY.SIZE" {
                    FetchAtt::BinarySize(s.part)
                } else {
                    FetchAtt::Binary {
                        peek: name == "BINARY.PEEK",
                        part: s.part,
                        partial: self.partial()?,
                    }
                }
            }
            "" => return err("expected a fetch attribute"),
            other => return err(format!("unknown fetch attribute {other}")),
        })
    }

    fn fetch_atts(&mut self) -> R<Vec<FetchAtt>> {
        if self.peek() == Some(b'(') {
            self.open()?;
            let mut v = Vec::new();
            loop {
                v.push(self.fetch_att()?);
                if !self.maybe_sp() {
                    break;
                }
            }
            self.close()?;
            return Ok(v);
        }
        let save = self.pos;
        let word = self.atom().unwrap_or_default().to_ascii_uppercase();
        Ok(match word.as_str() {
            "ALL" => vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Rfc822Size,
                FetchAtt::Envelope,
            ],
            "FAST" => vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Rfc822Size,
            ],
            "FULL" => vec![
                FetchAtt::Flags,
                FetchAtt::InternalDate,
                FetchAtt::Rfc822Size,
                FetchAtt::Envelope,
                FetchAtt::Body,
            ],
            _ => {
                self.pos = save;
                vec![self.fetch_att()?]
            }
        })
    }

    /// date = day-month-year, e.g. 1-Feb-2026 (optionally quoted); seconds at 00:00 UTC.
    fn date(&mut self) -> R<i64> {
        let quoted = self.peek() == Some(b'"');
        if quoted {
            self.pos += 1;
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            self.pos += 1;
        }
        let s = String::from_utf8_lossy(&self.b[start..self.pos]).into_owned();
        if quoted {
            self.expect(b'"')?;
        }
        parse_date(&s).ok_or_else(|| ParseError(format!("bad date {s:?} (use e.g. 1-Feb-2026)")))
    }

    fn search_key(&mut self) -> R<SearchKey> {
        if self.peek() == Some(b'(') {
            self.open()?;
            let mut v = Vec::new();
            loop {
                v.push(self.search_key()?);
                if !self.maybe_sp() {
                    break;
                }
            }
            self.close()?;
            return Ok(if v.len() == 1 {
                v.pop().unwrap()
            } else {
                SearchKey::And(v)
            });
        }
        if self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'*') {
            return Ok(SearchKey::SeqSet(self.seq_set()?));
        }
        let word = self.atom()?.to_ascii_uppercase();
        let arg_s = |p: &mut Self| -> R<String> {
            p.sp()?;
            let b = p.astring_bytes()?;
            Ok(String::from_utf8_lossy(&b).into_owned())
        };
        Ok(match word.as_str() {
            "ALL" => SearchKey::All,
            "ANSWERED" => SearchKey::Flag(postern_store::Flags::ANSWERED, true),
            "UNANSWERED" => SearchKey::Flag(postern_store::Flags::ANSWERED, false),
            "DELETED" => SearchKey::Flag(postern_store::Flags::DELETED, true),
            "UNDELETED" => SearchKey::Flag(postern_store::Flags::DELETED, false),
            "DRAFT" => SearchKey::Flag(postern_store::Flags::DRAFT, true),
            "UNDRAFT" => SearchKey::Flag(postern_store::Flags::DRAFT, false),
            "FLAGGED" => SearchKey::Flag(postern_store::Flags::FLAGGED, true),
            "UNFLAGGED" => SearchKey::Flag(postern_store::Flags::FLAGGED, false),
            "SEEN" => SearchKey::Flag(postern_store::Flags::SEEN, true),
            "UNSEEN" => SearchKey::Flag(postern_store::Flags::SEEN, false),
            "NEW" => SearchKey::New,
            "OLD" => SearchKey::Old,
            "RECENT" => SearchKey::Recent,
            "KEYWORD" => {
                self.sp()?;
                SearchKey::Keyword(self.atom()?, true)
            }
            "UNKEYWORD" => {
                self.sp()?;
                SearchKey::Keyword(self.atom()?, false)
            }
            "LARGER" => {
                self.sp()?;
                SearchKey::Larger(self.number()?)
            }
            "SMALLER" => {
                self.sp()?;
                SearchKey::Smaller(self.number()?)
            }
            "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
                self.sp()?;
                let d = self.date()?;
                match word.as_str() {
                    "BEFORE" => SearchKey::Before(d),
                    "ON" => SearchKey::On(d),
                    "SINCE" => SearchKey::Since(d),
                    "SENTBEFORE" => SearchKey::SentBefore(d),
                    "SENTON" => SearchKey::SentOn(d),
                    _ => SearchKey::SentSince(d),
                }
            }
            "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => SearchKey::Header(
                match word.as_str() {
                    "FROM" => "From",
                    "TO" => "To",
                    "CC" => "Cc",
                    "BCC" => "Bcc",
                    _ => "Subject",
                }
                .into(),
                arg_s(self)?,
            ),
            "HEADER" => {
                let name = arg_s(self)?;
                let value = arg_s(self)?;
                SearchKey::Header(name, value)
            }
            "BODY" => SearchKey::Body(arg_s(self)?),
            "TEXT" => SearchKey::Text(arg_s(self)?),
            "UID" => {
                self.sp()?;
                SearchKey::Uid(self.seq_set()?)
            }
            "NOT" => {
                self.sp()?;
                SearchKey::Not(Box::new(self.nested_key()?))
            }
            "OR" => {
                self.sp()?;
                let a = self.nested_key()?;
                self.sp()?;
                let b = self.nested_key()?;
                SearchKey::Or(Box::new(a), Box::new(b))
            }
            "MODSEQ" => {
                self.sp()?;
                // Optional entry name and type (RFC 7162 3.1.5), ignored.
                if self.peek() == Some(b'"') {
                    self.quoted()?;
                    self.sp()?;
                    self.atom()?;
                    self.sp()?;
                }
                SearchKey::ModSeq(self.number()?)
            }
            other => return err(format!("unknown search key {other}")),
        })
    }

    fn nested_key(&mut self) -> R<SearchKey> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("search nesting too deep");
        }
        let k = self.search_key();
        self.depth -= 1;
        k
    }

    fn astring_bytes(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string_bytes(),
            _ => Ok(self.astring()?.into_bytes()),
        }
    }

    fn status_items(&mut self) -> R<Vec<String>> {
        self.open()?;
        let mut v = Vec::new();
        loop {
            v.push(self.atom()?.to_ascii_uppercase());
            if !self.maybe_sp() {
                break;
            }
        }
        self.close()?;
        Ok(v)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Days from the civil date (proleptic Gregorian) to 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let d: u32 = it.next()?.trim().parse().ok()?;
    let m = it.next()?.to_ascii_uppercase();
    let y: i64 = it.next()?.parse().ok()?;
    let mi = MONTHS.iter().position(|x| *x == m)? as u32 + 1;
    // date-year is 4DIGIT; a wider year would overflow the seconds.
    if !(1..=31).contains(&d) || !(0..=9999).contains(&y) || it.next().is_some() {
        return None;
    }
    Some(days_from_civil(y, mi, d) * 86400)
}

/// date-time: "dd-Mon-yyyy hh:mm:ss +zzzz".
pub fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let mut parts = s.split(' ');
    let date = parse_date(parts.next()?)?;
    let time = parts.next()?;
    let zone = parts.next()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 || zone.len() != 5 || !t.iter().all(|v| (0..=99).contains(v)) {
        return None;
    }
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    if !zone.is_ascii() {
        return None;
    }
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    Some(date + t[0] * 3600 + t[1] * 60 + t[2] - sign * (zh * 3600 + zm * 60))
}

/// Parses one command (after the tag). `utf8`: mailbox names are UTF-8.
pub fn parse_command(p: &mut Parser) -> R<Command> {
    let word = p.atom()?.to_ascii_uppercase();
    let cmd = match word.as_str() {
        "CAPABILITY" => Command::Capability,
        "NOOP" => Command::Noop,
        "LOGOUT" => Command::Logout,
        "STARTTLS" => Command::StartTls,
        "CHECK" => Command::Check,
        "CLOSE" => Command::Close,
        "UNSELECT" => Command::Unselect,
        "IDLE" => Command::Idle,
        "NAMESPACE" => Command::Namespace,
        "LOGIN" => {
            p.sp()?;
            let u = p.astring()?;
            p.sp()?;
            let pw = p.astring_bytes()?;
            Command::Login(
                u,
                String::from_utf8(pw).map_err(|_| ParseError("password is not UTF-8".into()))?,
            )
        }
        "AUTHENTICATE" => {
            p.sp()?;
            let mech = p.atom()?.to_ascii_uppercase();
            let initial = if p.maybe_sp() {
                let start = p.pos;
                while p
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                {
                    p.pos += 1;
                }
                Some(String::from_utf8_lossy(&p.b[start..p.pos]).into_owned())
            } else {
                None
            };
            Command::Authenticate(mech, initial)
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while p.maybe_sp() {
                caps.push(p.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return err("ENABLE needs a capability");
            }
            Command::Enable(caps)
        }
        "ID" => {
            p.sp()?;
            // Parameters are accepted and ignored: ("name" "value" ...) or NIL.
            if p.peek() == Some(b'(') {
                p.open()?;
                while p.peek() != Some(b')') {
                    if p.keyword_is("NIL") {
                    } else {
                        p.string_bytes()?;
                    }
                    if !p.maybe_sp() {
                        break;
                    }
                }
                p.close()?;
            } else if !p.keyword_is("NIL") {
                return err("ID takes a list or NIL");
            }
            Command::Id
        }
        "SELECT" | "EXAMINE" => {
            p.sp()?;
            let mailbox = p.mailbox()?;
            let mut condstore = false;
            let mut qresync = None;
            if p.maybe_sp() {
                p.open()?;
                loop {
                    let w = p.atom()?.to_ascii_uppercase();
                    match w.as_str() {
                        "CONDSTORE" => condstore = true,
                        "QRESYNC" => {
                            p.sp()?;
                            p.open()?;
                            let uidvalidity = p.nz32()?;
                            p.sp()?;
                            let modseq = p.number()?;
                            let mut known_uids = None;
                            let mut seq_match = None;
                            if p.maybe_sp() {
                                if p.peek() != Some(b'(') {
                                    known_uids = Some(p.seq_set()?);
                                    p.maybe_sp();
                                }
                                if p.peek() == Some(b'(') {
                                    p.open()?;
                                    let a = p.seq_set()?;
                                    p.sp()?;
                                    let b = p.seq_set()?;
                                    p.close()?;
                                    seq_match = Some((a, b));
                                }
                            }
                            p.close()?;
                            qresync = Some(Qresync {
                                uidvalidity,
                                modseq,
                                known_uids,
                                seq_match,
                            });
                        }
                        _ => return err(format!("unknown SELECT parameter {w}")),
                    }
                    if !p.maybe_sp() {
                        break;
                    }
                }
                p.close()?;
            }
            Command::Select {
                mailbox,
                read_only: word == "EXAMINE",
                condstore,
                qresync,
            }
        }
        "CREATE" => {
            p.sp()?;
            let m = p.mailbox()?;
            // CREATE-SPECIAL-USE parameters are accepted and ignored.
            if p.maybe_sp() {
                p.open()?;
                let _ = p.atom()?;
                p.sp()?;
                p.flag_list()?;
                p.close()?;
            }
            Command::Create(m)
        }
        "DELETE" => {
            p.sp()?;
            Command::Delete(p.mailbox()?)
        }
        "RENAME" => {
            p.sp()?;
            let a = p.mailbox()?;
            p.sp()?;
            Command::Rename(a, p.mailbox()?)
        }
        "SUBSCRIBE" => {
            p.sp()?;
            Command::Subscribe(p.mailbox()?)
        }
        "UNSUBSCRIBE" => {
            p.sp()?;
            Command::Unsubscribe(p.mailbox()?)
        }
        "LIST" => {
            p.sp()?;
            let mut opts = ListOptions::default();
            if p.peek() == Some(b'(') {
                opts.extended = true;
                p.open()?;
                while p.peek() != Some(b')') {
                    match p.atom()?.to_ascii_uppercase().as_str() {
                        "SUBSCRIBED" => opts.subscribed = true,
                        "RECURSIVEMATCH" => opts.recursive = true,
                        "SPECIAL-USE" => opts.special_use = true,
                        "REMOTE" => {}
                        other => return err(format!("unknown LIST selection option {other}")),
                    }
                    if !p.maybe_sp() {
                        break;
                    }
                }
                p.close()?;
                p.sp()?;
            }
            let reference = p.mailbox_raw()?;
            p.sp()?;
            let mut patterns = Vec::new();
            if p.peek() == Some(b'(') {
                opts.extended = true;
                p.open()?;
                loop {
                    patterns.push(p.list_mailbox()?);
                    if !p.maybe_sp() {
                        break;
                    }
                }
                p.close()?;
            } else {
                patterns.push(p.list_mailbox()?);
            }
            if p.maybe_sp() {
                if !p.keyword_is("RETURN") {
                    return err("expected RETURN");
                }
                opts.extended = true;
                p.sp()?;
                p.open()?;
                while p.peek() != Some(b')') {
                    match p.atom()?.to_ascii_uppercase().as_str() {
                        "SUBSCRIBED" => opts.ret_subscribed = true,
                        "CHILDREN" => opts.ret_children = true,
                        "SPECIAL-USE" => opts.ret_special_use = true,
                        "STATUS" => {
                            p.sp()?;
                            opts.ret_status = Some(p.status_items()?);
                        }
                        other => return err(format!("unknown LIST return option {other}")),
                    }
                    if !p.maybe_sp() {
                        break;
                    }
                }
                p.close()?;
            }
            if opts.recursive && !opts.subscribed {
                return err("RECURSIVEMATCH needs another selection option");
            }
            let patterns = if p.utf8 {
                patterns
            } else {
                patterns
                    .into_iter()
                    .map(|x| crate::utf7::decode(&x).unwrap_or(x))
                    .collect()
            };
            Command::List {
                reference,
                patterns,
                opts,
            }
        }
        "LSUB" => {
            p.sp()?;
            let reference = p.mailbox_raw()?;
            p.sp()?;
            let pat = p.list_mailbox()?;
            Command::Lsub(
                reference,
                if p.utf8 {
                    pat
                } else {
                    crate::utf7::decode(&pat).unwrap_or(pat)
                },
            )
        }
        "STATUS" => {
            p.sp()?;
            let m = p.mailbox()?;
            p.sp()?;
            Command::Status(m, p.status_items()?)
        }
        "APPEND" => {
            p.sp()?;
            let m = p.mailbox()?;
            let mut msgs = Vec::new();
            // MULTIAPPEND (RFC 3502): one or more messages.
            while p.maybe_sp() {
                let mut flags = Vec::new();
                let mut date = None;
                if p.peek() == Some(b'(') {
                    flags = p.flag_list()?;
                    p.sp()?;
                }
                if p.peek() == Some(b'"') {
                    let d = p.quoted()?;
                    date = Some(
                        parse_date_time(&String::from_utf8_lossy(&d))
                            .ok_or_else(|| ParseError("bad date-time".into()))?,
                    );
                    p.sp()?;
                }
                if p.keyword_is("UTF8") {
                    // RFC 6855: UTF8 (literal8)
                    p.sp()?;
                    p.open()?;
                    let data = p.literal()?;
                    p.close()?;
                    msgs.push(AppendMessage { flags, date, data });
                    continue;
                }
                let data = p.literal()?;
                msgs.push(AppendMessage { flags, date, data });
            }
            if msgs.is_empty() {
                return err("APPEND needs a message");
            }
            Command::Append(m, msgs)
        }
        "EXPUNGE" => Command::Expunge(None),
        "SEARCH" => search(p, false)?,
        "FETCH" => fetch(p, false)?,
        "STORE" => store(p, false)?,
        "COPY" | "MOVE" => {
            p.sp()?;
            let set = p.seq_set()?;
            p.sp()?;
            Command::Copy {
                uid: false,
                set,
                mailbox: p.mailbox()?,
                moving: word == "MOVE",
            }
        }
        "UID" => {
            p.sp()?;
            let sub = p.atom()?.to_ascii_uppercase();
            match sub.as_str() {
                "SEARCH" => search(p, true)?,
                "FETCH" => fetch(p, true)?,
                "STORE" => store(p, true)?,
                "COPY" | "MOVE" => {
                    p.sp()?;
                    let set = p.seq_set()?;
                    p.sp()?;
                    Command::Copy {
                        uid: true,
                        set,
                        mailbox: p.mailbox()?,
                        moving: sub == "MOVE",
                    }
                }
                "EXPUNGE" => {
                    p.sp()?;
                    Command::Expunge(Some(p.seq_set()?))
                }
                other => return err(format!("unknown UID command {other}")),
            }
        }
        "GETQUOTA" => {
            p.sp()?;
            Command::GetQuota(p.astring()?)
        }
        "GETQUOTAROOT" => {
            p.sp()?;
            Command::GetQuotaRoot(p.mailbox()?)
        }
        "SETQUOTA" => {
            // Quotas are set by the administrator; the syntax is checked no further.
            while p.pos < p.b.len() && !p.rest_is_crlf() {
                p.pos += 1;
            }
            Command::SetQuota
        }
        other => return err(format!("unknown command {other}")),
    };
    p.end()?;
    Ok(cmd)
}

impl Parser<'_> {
    /// A reference name, which may be empty ("").
    fn mailbox_raw(&mut self) -> R<String> {
        let s = self.astring()?;
        Ok(if self.utf8 {
            s
        } else {
            crate::utf7::decode(&s).unwrap_or(s)
        })
    }
}

fn search(p: &mut Parser, uid: bool) -> R<Command> {
    p.sp()?;
    let mut ret = None;
    if p.keyword_is("RETURN") {
        p.sp()?;
        p.open()?;
        let mut v = Vec::new();
        while p.peek() != Some(b')') {
            v.push(match p.atom()?.to_ascii_uppercase().as_str() {
                "MIN" => SearchRet::Min,
                "MAX" => SearchRet::Max,
                "ALL" => SearchRet::All,
                "COUNT" => SearchRet::Count,
                "SAVE" => SearchRet::Save,
                other => return err(format!("unknown RETURN option {other}")),
            });
            if !p.maybe_sp() {
                break;
            }
        }
        p.close()?;
        p.sp()?;
        ret = Some(v);
    }
    if p.keyword_is("CHARSET") {
        p.sp()?;
        let cs = p.astring()?.to_ascii_uppercase();
        if cs != "UTF-8" && cs != "US-ASCII" {
            return err("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset");
        }
        p.sp()?;
    }
    let mut keys = vec![p.search_key()?];
    while p.maybe_sp() {
        keys.push(p.search_key()?);
    }
    let key = if keys.len() == 1 {
        keys.pop().unwrap()
    } else {
        SearchKey::And(keys)
    };
    Ok(Command::Search { uid, ret, key })
}

fn fetch(p: &mut Parser, uid: bool) -> R<Command> {
    p.sp()?;
    let set = p.seq_set()?;
    p.sp()?;
    let atts = p.fetch_atts()?;
    let mut changed_since = None;
    let mut vanished = false;
    if p.maybe_sp() {
        p.open()?;
        loop {
            match p.atom()?.to_ascii_uppercase().as_str() {
                "CHANGEDSINCE" => {
                    p.sp()?;
                    changed_since = Some(p.number()?);
                }
                "VANISHED" => vanished = true,
                other => return err(format!("unknown FETCH modifier {other}")),
            }
            if !p.maybe_sp() {
                break;
            }
        }
        p.close()?;
    }
    if vanished && (!uid || changed_since.is_none()) {
        return err("VANISHED needs UID FETCH with CHANGEDSINCE");
    }
    Ok(Command::Fetch {
        uid,
        set,
        atts,
        changed_since,
        vanished,
    })
}

fn store(p: &mut Parser, uid: bool) -> R<Command> {
    p.sp()?;
    let set = p.seq_set()?;
    p.sp()?;
    let mut unchanged_since = None;
    if p.peek() == Some(b'(') {
        p.open()?;
        if !p.keyword_is("UNCHANGEDSINCE") {
            return err("expected UNCHANGEDSINCE");
        }
        p.sp()?;
        unchanged_since = Some(p.number()?);
        p.close()?;
        p.sp()?;
    }
    let item = p.atom()?.to_ascii_uppercase();
    let (op, rest) = match item.as_bytes().first() {
        Some(b'+') => (StoreOp::Add, &item[1..]),
        Some(b'-') => (StoreOp::Remove, &item[1..]),
        _ => (StoreOp::Replace, item.as_str()),
    };
    let silent = match rest {
        "FLAGS" => false,
        "FLAGS.SILENT" => true,
        _ => return err("STORE takes FLAGS, +FLAGS or -FLAGS (.SILENT)"),
    };
    p.sp()?;
    let flags = if p.peek() == Some(b'(') {
        p.flag_list()?
    } else {
        let mut v = vec![p.flag()?];
        while p.maybe_sp() {
            v.push(p.flag()?);
        }
        v
    };
    Ok(Command::Store {
        uid,
        set,
        op,
        silent,
        flags,
        unchanged_since,
    })
}

/// Splits a command into tag and the rest; the tag is needed even for a bad command.
pub fn parse(input: &[u8], utf8: bool) -> (Option<String>, R<Command>) {
    let mut p = Parser::new(input);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Command {
        let (_, c) = parse(s.as_bytes(), true);
        c.unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn bad(s: &str) -> ParseError {
        parse(s.as_bytes(), true).1.unwrap_err()
    }

    #[test]
    fn dates_out_of_range_are_refused() {
        // Found by fuzzing: huge years overflowed the seconds; a non-ASCII zone split a char.
        assert_eq!(parse_date("1-Jan-99999999999999"), None);
        assert_eq!(parse_date_time("1-Jan-2020 00:00:00 \u{e9}123"), None);
        assert_eq!(parse_date_time("1-Jan-2020 99999999999:00:00 +0000"), None);
        assert_eq!(parse_date_time("1-Jan-1970 00:00:01 +0000"), Some(1));
        assert!(
            bad("a SEARCH SINCE 1-Jan-99999999999999")
                .0
                .contains("bad date")
        );
    }

    #[test]
    fn basics() {
        assert_eq!(cmd("a CAPABILITY\r\n"), Command::Capability);
        assert_eq!(
            cmd("a login alice \"p w\"\r\n"),
            Command::Login("alice".into(), "p w".into())
        );
        assert_eq!(
            cmd("a LOGIN {5}\r\nalice {3}\r\npwd\r\n"),
            Command::Login("alice".into(), "pwd".into())
        );
        assert_eq!(
            cmd("a LOGIN {5+}\r\nalice pwd\r\n"),
            Command::Login("alice".into(), "pwd".into())
        );
        assert!(
            matches!(cmd("a select inbox\r\n"), Command::Select { mailbox, .. } if mailbox == "INBOX")
        );
        assert!(bad("a NOOP extra\r\n").0.contains("unexpected"));
        assert!(bad("a FOO\r\n").0.contains("unknown command"));
        assert_eq!(parse(b"", true).0, None);
    }

    #[test]
    fn fetch_attributes() {
        match cmd(
            "a UID FETCH 1:*,7 (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)] BODY[1.2.MIME] BINARY.PEEK[1]<0.100> RFC822.SIZE) (CHANGEDSINCE 5 VANISHED)\r\n",
        ) {
            Command::Fetch {
                uid,
                set,
                atts,
                changed_since,
                vanished,
            } => {
                assert!(uid && vanished);
                assert_eq!(changed_since, Some(5));
                assert_eq!(set.0.len(), 2);
                assert_eq!(atts.len(), 5);
                assert_eq!(
                    atts[1],
                    FetchAtt::Section {
                        peek: true,
                        section: Section {
                            part: vec![],
                            text: Some(SectionText::HeaderFields(vec![
                                "From".into(),
                                "Subject".into()
                            ]))
                        },
                        partial: None
                    }
                );
                assert_eq!(
                    atts[2],
                    FetchAtt::Section {
                        peek: false,
                        section: Section {
                            part: vec![1, 2],
                            text: Some(SectionText::Mime)
                        },
                        partial: None
                    }
                );
                assert_eq!(
                    atts[3],
                    FetchAtt::Binary {
                        peek: true,
                        part: vec![1],
                        partial: Some((0, 100))
                    }
                );
            }
            c => panic!("{c:?}"),
        }
        assert_eq!(
            cmd("a FETCH 1 FAST\r\n"),
            Command::Fetch {
                uid: false,
                set: SeqSet(vec![(SeqNum::Num(1), SeqNum::Num(1))]),
                atts: vec![
                    FetchAtt::Flags,
                    FetchAtt::InternalDate,
                    FetchAtt::Rfc822Size
                ],
                changed_since: None,
                vanished: false
            }
        );
        assert!(
            matches!(cmd("a FETCH 1 BODY[]\r\n"), Command::Fetch { atts, .. } if atts == vec![FetchAtt::Section { peek: false, section: Section::default(), partial: None }])
        );
        assert!(bad("a FETCH 0 FLAGS\r\n").0.contains("number"));
        assert!(bad("a FETCH 1 (FLAGS\r\n").0.contains("')'"));
    }

    #[test]
    fn search_keys() {
        match cmd(
            "a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM alice (SUBJECT \"x y\" SINCE 1-Feb-2026) NOT SEEN 1:5\r\n",
        ) {
            Command::Search { uid, ret, key } => {
                assert!(uid);
                assert_eq!(ret, Some(vec![SearchRet::Min, SearchRet::Count]));
                let SearchKey::And(v) = key else { panic!() };
                assert_eq!(v.len(), 3);
                assert!(matches!(&v[0], SearchKey::Or(..)));
                assert_eq!(
                    v[1],
                    SearchKey::Not(Box::new(SearchKey::Flag(postern_store::Flags::SEEN, true)))
                );
            }
            c => panic!("{c:?}"),
        }
        let deep = format!("a SEARCH {}ALL\r\n", "NOT ".repeat(100));
        assert!(bad(&deep).0.contains("deep"));
        assert!(
            bad("a SEARCH CHARSET KOI8-R ALL\r\n")
                .0
                .contains("BADCHARSET")
        );
    }

    #[test]
    fn list_store_append() {
        match cmd(
            "a LIST (SUBSCRIBED) \"\" (\"*\" %) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
        ) {
            Command::List { patterns, opts, .. } => {
                assert_eq!(patterns, ["*", "%"]);
                assert!(opts.subscribed && opts.ret_children && opts.extended);
                assert_eq!(
                    opts.ret_status,
                    Some(vec!["MESSAGES".into(), "UNSEEN".into()])
                );
            }
            c => panic!("{c:?}"),
        }
        assert!(
            matches!(cmd("a STORE 1:3 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Seen $x)\r\n"),
            Command::Store { op: StoreOp::Add, silent: true, unchanged_since: Some(9), ref flags, .. } if flags == &["\\Seen", "$x"])
        );
        match cmd(
            "a APPEND Drafts (\\Draft) \"05-Mar-2026 10:00:00 +0100\" {3}\r\nabc {2+}\r\nde\r\n",
        ) {
            Command::Append(m, msgs) => {
                assert_eq!(m, "Drafts");
                assert_eq!(msgs.len(), 2);
                assert_eq!(msgs[0].data, b"abc");
                assert_eq!(
                    msgs[0].date,
                    Some(days_from_civil(2026, 3, 5) * 86400 + 9 * 3600)
                );
                assert_eq!(msgs[1].data, b"de");
            }
            c => panic!("{c:?}"),
        }
        assert!(bad("a APPEND INBOX {10}\r\nabc\r\n").0.contains("shorter"));
    }

    #[test]
    fn seq_sets() {
        let s = SeqSet(vec![
            (SeqNum::Num(5), SeqNum::Num(3)),
            (SeqNum::Num(9), SeqNum::Star),
            (SeqNum::Num(4), SeqNum::Num(4)),
        ]);
        assert_eq!(s.ranges(12), vec![(3, 5), (9, 12)]);
        assert!(s.contains(12, 12) && !s.contains(6, 12));
    }
}
