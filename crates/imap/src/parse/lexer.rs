//! The pieces of IMAP syntax: atoms, strings and literals, mailbox names, flags, sequence
//! sets, sections, fetch attributes, search keys, dates.

use super::*;

/// Limits on nesting, so hostile input costs bounded stack.
const MAX_DEPTH: usize = 32;

pub struct Parser<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    depth: usize,
    /// Where literals the framing spooled would have had their data.
    pub(super) spooled: &'a [usize],
    /// UTF-8 mailbox names (IMAP4rev2 or UTF8=ACCEPT); otherwise modified UTF-7.
    pub utf8: bool,
}

impl<'a> Parser<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Parser {
            b,
            pos: 0,
            depth: 0,
            spooled: &[],
            utf8: false,
        }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.b.len() || self.rest_is_crlf()
    }

    pub(super) fn rest_is_crlf(&self) -> bool {
        let r = &self.b[self.pos..];
        r == b"\r\n" || r == b"\n"
    }

    pub(super) fn sp(&mut self) -> R<()> {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            Ok(())
        } else {
            err("expected a space")
        }
    }

    pub(super) fn maybe_sp(&mut self) -> bool {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, c: u8) -> R<()> {
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

    pub(crate) fn is_atom_char(c: u8) -> bool {
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

    pub(super) fn nz32(&mut self) -> R<u32> {
        match self.number()? {
            n @ 1..=0xffff_ffff => Ok(n as u32),
            _ => err("expected a number from 1 to 4294967295"),
        }
    }

    pub(super) fn quoted(&mut self) -> R<Vec<u8>> {
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

    /// An APPEND message: a literal, in the command or spooled.
    pub(super) fn message_literal(&mut self) -> R<MessageData> {
        let start = self.pos;
        if self.peek() == Some(b'~') {
            self.pos += 1;
        }
        self.expect(b'{')?;
        self.number()?;
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        self.expect(b'}')?;
        if self.b[self.pos..].starts_with(b"\r\n") {
            self.pos += 2;
        }
        if let Some(i) = self.spooled.iter().position(|&at| at == self.pos) {
            return Ok(MessageData::Spooled(i));
        }
        self.pos = start;
        self.literal().map(MessageData::Inline)
    }

    /// `{n}` or `{n+}` (or `~{n}` for BINARY), CRLF, then n octets.
    pub(super) fn literal(&mut self) -> R<Vec<u8>> {
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
    /// case-insensitive. A name that is not valid modified UTF-7 is taken as written: it names
    /// no mailbox, which the command then says (NO), as a mistyped name would.
    pub fn mailbox(&mut self) -> R<String> {
        let raw = self.astring()?;
        let name = if self.utf8 {
            raw
        } else {
            crate::utf7::decode(&raw).unwrap_or(raw)
        };
        Ok(postern_store::embedded::normalize_mailbox_name(&name))
    }

    /// The name of a mailbox to be made (CREATE, RENAME's new name): it must be valid modified
    /// UTF-7, or the mailbox could never be named again.
    pub fn new_mailbox(&mut self) -> R<String> {
        let start = self.pos;
        let raw = self.astring()?;
        if !self.utf8 && crate::utf7::decode(&raw).is_none() {
            self.pos = start;
            return err("bad modified UTF-7 in mailbox name");
        }
        self.pos = start;
        self.mailbox()
    }

    /// list-mailbox: atom chars plus % * ] or a string.
    pub(super) fn list_mailbox(&mut self) -> R<String> {
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

    pub(super) fn open(&mut self) -> R<()> {
        self.expect(b'(')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("nesting too deep");
        }
        Ok(())
    }

    pub(super) fn close(&mut self) -> R<()> {
        self.expect(b')')?;
        self.depth -= 1;
        Ok(())
    }

    pub(super) fn flag(&mut self) -> R<String> {
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

    pub(super) fn flag_list(&mut self) -> R<Vec<String>> {
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
        if self.peek() == Some(b'$') {
            self.pos += 1;
            return Ok(SeqSet::saved());
        }
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

    pub(super) fn seq_num(&mut self) -> R<SeqNum> {
        if self.peek() == Some(b'*') {
            self.pos += 1;
            Ok(SeqNum::Star)
        } else {
            Ok(SeqNum::Num(self.nz32()?))
        }
    }

    pub(super) fn keyword_is(&mut self, kw: &str) -> bool {
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

    pub(super) fn section_parts(&mut self) -> R<Section> {
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

    pub(super) fn partial(&mut self) -> R<Option<(u32, u32)>> {
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

    pub(super) fn fetch_att(&mut self) -> R<FetchAtt> {
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
            "EMAILID" => FetchAtt::EmailId,
            "THREADID" => FetchAtt::ThreadId,
            "SAVEDATE" => FetchAtt::SaveDate,
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
            "PREVIEW" => {
                self.preview_modifiers()?;
                FetchAtt::Preview
            }
            "" => return err("expected a fetch attribute"),
            other => return err(format!("unknown fetch attribute {other}")),
        })
    }

    /// PREVIEW's optional `(LAZY)` (RFC 8970 3). A list whose first word is not a preview
    /// modifier is left alone: after a lone PREVIEW it is the FETCH modifiers.
    fn preview_modifiers(&mut self) -> R<()> {
        let save = self.pos;
        if !(self.maybe_sp() && self.peek() == Some(b'(')) {
            self.pos = save;
            return Ok(());
        }
        self.open()?;
        if !self.keyword_is("LAZY") {
            self.depth -= 1;
            self.pos = save;
            return Ok(());
        }
        while self.maybe_sp() {
            let m = self.atom()?.to_ascii_uppercase();
            if m != "LAZY" {
                return err(format!("unknown PREVIEW modifier {m}"));
            }
        }
        self.close()
    }

    pub(super) fn fetch_atts(&mut self) -> R<Vec<FetchAtt>> {
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
    pub(super) fn date(&mut self) -> R<i64> {
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

    pub(super) fn search_key(&mut self) -> R<SearchKey> {
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
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || c == b'*' || c == b'$')
        {
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
            "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" | "SAVEDBEFORE"
            | "SAVEDON" | "SAVEDSINCE" => {
                self.sp()?;
                let d = self.date()?;
                match word.as_str() {
                    "BEFORE" => SearchKey::Before(d),
                    "ON" => SearchKey::On(d),
                    "SINCE" => SearchKey::Since(d),
                    "SENTBEFORE" => SearchKey::SentBefore(d),
                    "SENTON" => SearchKey::SentOn(d),
                    "SAVEDBEFORE" => SearchKey::SavedBefore(d),
                    "SAVEDON" => SearchKey::SavedOn(d),
                    "SAVEDSINCE" => SearchKey::SavedSince(d),
                    _ => SearchKey::SentSince(d),
                }
            }
            "SAVEDATESUPPORTED" => SearchKey::SaveDateSupported,
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
            "EMAILID" => {
                self.sp()?;
                SearchKey::EmailId(self.astring()?)
            }
            "THREADID" => {
                self.sp()?;
                SearchKey::ThreadId(self.astring()?)
            }
            "OLDER" | "YOUNGER" => {
                self.sp()?;
                let n = self.nz32().map_err(|_| {
                    ParseError(format!("{word} takes seconds from 1 to 4294967295"))
                })?;
                if word == "OLDER" {
                    SearchKey::Older(n)
                } else {
                    SearchKey::Younger(n)
                }
            }
            other => return err(format!("unknown search key {other}")),
        })
    }

    pub(super) fn nested_key(&mut self) -> R<SearchKey> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("search nesting too deep");
        }
        let k = self.search_key();
        self.depth -= 1;
        k
    }

    pub(super) fn astring_bytes(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string_bytes(),
            _ => Ok(self.astring()?.into_bytes()),
        }
    }

    pub(super) fn status_items(&mut self) -> R<Vec<String>> {
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
