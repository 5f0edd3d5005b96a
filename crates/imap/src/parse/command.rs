//! Whole commands from their pieces.

use super::*;

/// Parts one CATENATE message may have: enough for any message a client composes.
const MAX_CAT_PARTS: usize = 1000;

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
            let m = p.new_mailbox()?;
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
            Command::Rename(a, p.new_mailbox()?)
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
                msgs.push(p.append_message()?);
            }
            if msgs.is_empty() {
                return err("APPEND needs a message");
            }
            Command::Append(m, msgs)
        }
        "REPLACE" => replace(p, false)?,
        "EXPUNGE" => Command::Expunge(None),
        "CANCELUPDATE" => {
            let mut tags = Vec::new();
            while p.maybe_sp() {
                let t = p.string_bytes()?;
                tags.push(String::from_utf8(t).map_err(|_| ParseError("tag is not UTF-8".into()))?);
            }
            if tags.is_empty() {
                return err("CANCELUPDATE needs the tag of a search");
            }
            Command::CancelUpdate(tags)
        }
        "SEARCH" => search(p, false)?,
        "SORT" => sort(p, false)?,
        "THREAD" => thread(p, false)?,
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
                "REPLACE" => replace(p, true)?,
                "SORT" => sort(p, true)?,
                "THREAD" => thread(p, true)?,
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
        "SETACL" => {
            p.sp()?;
            let mailbox = p.mailbox()?;
            p.sp()?;
            let identifier = p.astring()?;
            p.sp()?;
            Command::SetAcl(mailbox, identifier, p.astring()?)
        }
        "DELETEACL" => {
            p.sp()?;
            let mailbox = p.mailbox()?;
            p.sp()?;
            Command::DeleteAcl(mailbox, p.astring()?)
        }
        "GETACL" => {
            p.sp()?;
            Command::GetAcl(p.mailbox()?)
        }
        "LISTRIGHTS" => {
            p.sp()?;
            let mailbox = p.mailbox()?;
            p.sp()?;
            Command::ListRights(mailbox, p.astring()?)
        }
        "MYRIGHTS" => {
            p.sp()?;
            Command::MyRights(p.mailbox()?)
        }
        "GETMETADATA" => get_metadata(p)?,
        "SETMETADATA" => set_metadata(p)?,
        "NOTIFY" => notify(p)?,
        other => return err(format!("unknown command {other}")),
    };
    p.end()?;
    Ok(cmd)
}

impl Parser<'_> {
    /// One message of APPEND or REPLACE: `[flag-list SP] [date-time SP] literal`, the literal
    /// possibly `UTF8 (literal8)` (RFC 6855).
    fn append_message(&mut self) -> R<AppendMessage> {
        let p = self;
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
        if p.keyword_is("CATENATE") {
            p.sp()?;
            return Ok(AppendMessage {
                flags,
                date,
                data: MessageData::Catenate(p.cat_parts()?),
                binary: false,
            });
        }
        let utf8 = p.keyword_is("UTF8");
        if utf8 {
            p.sp()?;
            p.open()?;
        }
        let binary = p.peek() == Some(b'~');
        let data = p.message_literal()?;
        if utf8 {
            p.close()?;
        }
        Ok(AppendMessage {
            flags,
            date,
            data,
            binary,
        })
    }

    /// CATENATE's `(cat-part *(SP cat-part))` (RFC 4469 5): `TEXT literal`, `URL astring`, or
    /// `UTF8 (literal8)` (RFC 6855 4).
    fn cat_parts(&mut self) -> R<Vec<CatPart>> {
        let p = self;
        p.open()?;
        let mut parts = Vec::new();
        loop {
            let word = p.atom()?.to_ascii_uppercase();
            p.sp()?;
            parts.push(match word.as_str() {
                "TEXT" => {
                    if p.peek() == Some(b'~') {
                        return err("CATENATE TEXT takes a literal, not a literal8");
                    }
                    CatPart::Text(p.message_literal()?)
                }
                "UTF8" => {
                    p.open()?;
                    if p.peek() != Some(b'~') {
                        return err("UTF8 takes a literal8 (~{n})");
                    }
                    let data = p.message_literal()?;
                    p.close()?;
                    CatPart::Text(data)
                }
                "URL" => CatPart::Url(p.astring()?),
                other => return err(format!("unknown CATENATE part {other}: TEXT or URL")),
            });
            if parts.len() > MAX_CAT_PARTS {
                return err(format!("CATENATE takes at most {MAX_CAT_PARTS} parts"));
            }
            if !p.maybe_sp() {
                break;
            }
        }
        p.close()?;
        Ok(parts)
    }

    /// A reference name, which may be empty ("").
    pub(super) fn mailbox_raw(&mut self) -> R<String> {
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
    let ret = return_options(p)?;
    if p.keyword_is("CHARSET") {
        p.sp()?;
        charset(p)?;
        p.sp()?;
    }
    let key = search_keys(p)?;
    Ok(Command::Search { uid, ret, key })
}

/// `RETURN (...) ` of ESEARCH (RFC 4731), ESORT (RFC 5267 3) and CONTEXT (RFC 5267 4), with
/// the space after it.
fn return_options(p: &mut Parser) -> R<Option<Vec<SearchRet>>> {
    if !p.keyword_is("RETURN") {
        return Ok(None);
    }
    p.sp()?;
    p.open()?;
    let mut v = Vec::new();
    while p.peek() != Some(b')') {
        let opt = match p.atom()?.to_ascii_uppercase().as_str() {
            "MIN" => SearchRet::Min,
            "MAX" => SearchRet::Max,
            "ALL" => SearchRet::All,
            "COUNT" => SearchRet::Count,
            "SAVE" => SearchRet::Save,
            "UPDATE" => SearchRet::Update,
            "PARTIAL" => {
                p.sp()?;
                partial_range(p)?
            }
            // A hint that the result will be asked for again (RFC 5267 4.2): nothing to do.
            "CONTEXT" => {
                if !p.maybe_sp() {
                    break;
                }
                continue;
            }
            other => return err(format!("unknown RETURN option {other}")),
        };
        let same = |r: &SearchRet| std::mem::discriminant(r) == std::mem::discriminant(&opt);
        match opt {
            SearchRet::Update if v.iter().any(same) => return err("RETURN option UPDATE twice"),
            SearchRet::Partial(..) if v.iter().any(same) => {
                return err("RETURN option PARTIAL twice");
            }
            _ if v.iter().any(same) => {}
            _ => v.push(opt),
        }
        if !p.maybe_sp() {
            break;
        }
    }
    p.close()?;
    p.sp()?;
    let partial = v.iter().any(|r| matches!(r, SearchRet::Partial(..)));
    if partial && v.contains(&SearchRet::All) {
        return err("RETURN (PARTIAL) and ALL exclude each other: ask for one");
    }
    if partial && v.contains(&SearchRet::Update) {
        return err("RETURN (PARTIAL) with UPDATE is not offered: ask for ALL with UPDATE");
    }
    Ok(Some(v))
}

/// PARTIAL's range (RFC 5267 4.4, RFC 9394 3.1): `n:m` counting from the first result, or
/// `-n:-m` from the last; either order, never 0 or `*`.
fn partial_range(p: &mut Parser) -> R<SearchRet> {
    fn bad() -> ParseError {
        ParseError("PARTIAL takes a range like 1:100 or -1:-100".into())
    }
    fn end(p: &mut Parser) -> R<i64> {
        let negative = p.peek() == Some(b'-');
        if negative {
            p.pos += 1;
        }
        if !p.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        match p.number() {
            Ok(n @ 1..=0xffff_ffff) if negative => Ok(-(n as i64)),
            Ok(n @ 1..=0xffff_ffff) => Ok(n as i64),
            _ => Err(bad()),
        }
    }
    let a = end(p)?;
    if p.peek() != Some(b':') {
        return Err(bad());
    }
    p.pos += 1;
    let b = end(p)?;
    if (a < 0) != (b < 0) {
        return Err(bad());
    }
    // The end nearer its origin first: 4:2 is 2:4, -5:-1 is -1:-5.
    Ok(if a.abs() <= b.abs() {
        SearchRet::Partial(a, b)
    } else {
        SearchRet::Partial(b, a)
    })
}

/// The section of an IMAP URL (RFC 5092 `;SECTION=`), decoded: `1.2.MIME`, `HEADER.FIELDS (To)`.
pub fn parse_section(text: &str) -> R<Section> {
    let wrapped = format!("[{text}]");
    let mut p = Parser::new(wrapped.as_bytes());
    let s = p.section_parts()?;
    if p.pos != wrapped.len() {
        return err("unexpected text after the section");
    }
    Ok(s)
}

/// The charset SORT and THREAD always name, and SEARCH may.
fn charset(p: &mut Parser) -> R<()> {
    let cs = p.astring()?.to_ascii_uppercase();
    if cs != "UTF-8" && cs != "US-ASCII" {
        return err("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset");
    }
    Ok(())
}

/// One or more search keys: all must match.
fn search_keys(p: &mut Parser) -> R<SearchKey> {
    let mut keys = vec![p.search_key()?];
    while p.maybe_sp() {
        keys.push(p.search_key()?);
    }
    Ok(if keys.len() == 1 {
        keys.pop().unwrap()
    } else {
        SearchKey::And(keys)
    })
}

/// SORT [RETURN (options)] (criteria) charset keys (RFC 5256 3, RFC 5267 3).
fn sort(p: &mut Parser, uid: bool) -> R<Command> {
    p.sp()?;
    let ret = return_options(p)?;
    if ret.as_ref().is_some_and(|r| r.contains(&SearchRet::Save)) {
        return err(
            "SORT RETURN (SAVE) is not offered (SEARCHRES saves SEARCH results): use SEARCH RETURN (SAVE)",
        );
    }
    p.open()?;
    let mut criteria = Vec::new();
    let mut reverse = false;
    loop {
        let word = p.atom()?.to_ascii_uppercase();
        let key = match word.as_str() {
            "REVERSE" => {
                if reverse {
                    return err("REVERSE twice");
                }
                reverse = true;
                p.sp()?;
                continue;
            }
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            other => return err(format!("unknown sort criterion {other}")),
        };
        criteria.push((key, reverse));
        reverse = false;
        if !p.maybe_sp() {
            break;
        }
    }
    if reverse {
        return err("REVERSE needs a criterion after it");
    }
    p.close()?;
    p.sp()?;
    charset(p)?;
    p.sp()?;
    let key = search_keys(p)?;
    Ok(Command::Sort {
        uid,
        ret,
        criteria,
        key,
    })
}

/// THREAD algorithm charset keys (RFC 5256 3).
fn thread(p: &mut Parser, uid: bool) -> R<Command> {
    p.sp()?;
    let algorithm = match p.atom()?.to_ascii_uppercase().as_str() {
        "ORDEREDSUBJECT" => ThreadAlgorithm::OrderedSubject,
        "REFERENCES" => ThreadAlgorithm::References,
        other => return err(format!("unknown THREAD algorithm {other}")),
    };
    p.sp()?;
    charset(p)?;
    p.sp()?;
    let key = search_keys(p)?;
    Ok(Command::Thread {
        uid,
        algorithm,
        key,
    })
}

/// REPLACE and UID REPLACE (RFC 8508 3): the message, the mailbox, one APPEND message.
fn replace(p: &mut Parser, uid: bool) -> R<Command> {
    p.sp()?;
    let target = p.nz32()?;
    p.sp()?;
    let mailbox = p.mailbox()?;
    p.sp()?;
    Ok(Command::Replace {
        uid,
        target,
        mailbox,
        message: p.append_message()?,
    })
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

/// An entry name (RFC 5464 3.2), as kept; a bad one is a BAD. `root`: `/private` and
/// `/shared` themselves may be asked for (with DEPTH, every entry of the kind).
fn entry(p: &mut Parser, root: bool) -> R<String> {
    let name = p.astring()?;
    match root {
        true => postern_store::metadata_prefix(&name),
        false => postern_store::metadata_name(&name),
    }
    .map_err(|e| ParseError(e.to_string()))
}

/// `GETMETADATA [SP "(" options ")"] SP mailbox SP entries` (RFC 5464 5).
fn get_metadata(p: &mut Parser) -> R<Command> {
    p.sp()?;
    let (mut max_size, mut depth) = (None, Some(0));
    if p.peek() == Some(b'(') {
        p.open()?;
        loop {
            let opt = p.atom()?.to_ascii_uppercase();
            p.sp()?;
            match opt.as_str() {
                "MAXSIZE" => max_size = Some(p.number()?),
                "DEPTH" => {
                    depth = match p.atom()?.to_ascii_lowercase().as_str() {
                        "0" => Some(0),
                        "1" => Some(1),
                        "infinity" => None,
                        d => return err(format!("DEPTH is 0, 1 or infinity, not {d}")),
                    }
                }
                other => return err(format!("unknown GETMETADATA option {other}")),
            }
            if !p.maybe_sp() {
                break;
            }
        }
        p.close()?;
        p.sp()?;
    }
    let mailbox = p.mailbox()?;
    p.sp()?;
    let mut entries = Vec::new();
    if p.peek() == Some(b'(') {
        p.open()?;
        loop {
            entries.push(entry(p, true)?);
            if !p.maybe_sp() {
                break;
            }
        }
        p.close()?;
    } else {
        entries.push(entry(p, true)?);
    }
    Ok(Command::GetMetadata {
        mailbox,
        entries,
        max_size,
        depth,
    })
}

/// `SETMETADATA SP mailbox SP "(" entry SP value *(SP entry SP value) ")"`, a value being NIL,
/// a string or a literal8 (RFC 5464 5).
fn set_metadata(p: &mut Parser) -> R<Command> {
    p.sp()?;
    let mailbox = p.mailbox()?;
    p.sp()?;
    p.open()?;
    let mut values = Vec::new();
    loop {
        let name = entry(p, false)?;
        p.sp()?;
        let value = if p.keyword_is("NIL") {
            None
        } else {
            Some(p.string_bytes()?)
        };
        values.push((name, value));
        if !p.maybe_sp() {
            break;
        }
    }
    p.close()?;
    Ok(Command::SetMetadata(mailbox, values))
}

/// `NOTIFY SP ("NONE" / "SET" [SP "STATUS"] SP event-group *(SP event-group))` (RFC 5465 8).
fn notify(p: &mut Parser) -> R<Command> {
    p.sp()?;
    match p.atom()?.to_ascii_uppercase().as_str() {
        "NONE" => {
            return Ok(Command::Notify {
                status: false,
                groups: Vec::new(),
            });
        }
        "SET" => {}
        other => return err(format!("NOTIFY takes SET or NONE, not {other}")),
    }
    p.sp()?;
    let status = p.peek() != Some(b'(') && p.keyword_is("STATUS");
    if status {
        p.sp()?;
    }
    let mut groups = Vec::new();
    loop {
        groups.push(notify_group(p)?);
        if !p.maybe_sp() {
            break;
        }
    }
    Ok(Command::Notify { status, groups })
}

/// `"(" filter-mailboxes SP events ")"`.
fn notify_group(p: &mut Parser) -> R<NotifyGroup> {
    p.open()?;
    let word = p.atom()?.to_ascii_uppercase();
    let filter = match word.as_str() {
        "SELECTED" => NotifyFilter::Selected,
        "SELECTED-DELAYED" => NotifyFilter::SelectedDelayed,
        "INBOXES" => NotifyFilter::Inboxes,
        "PERSONAL" => NotifyFilter::Personal,
        "SUBSCRIBED" => NotifyFilter::Subscribed,
        "SUBTREE" | "MAILBOXES" => {
            p.sp()?;
            let mut names = Vec::new();
            if p.peek() == Some(b'(') {
                p.open()?;
                loop {
                    names.push(p.mailbox()?);
                    if !p.maybe_sp() {
                        break;
                    }
                }
                p.close()?;
            } else {
                names.push(p.mailbox()?);
            }
            if word == "SUBTREE" {
                NotifyFilter::Subtree(names)
            } else {
                NotifyFilter::Mailboxes(names)
            }
        }
        other => return err(format!("unknown NOTIFY mailbox filter {other}")),
    };
    p.sp()?;
    let events = if p.peek() == Some(b'(') {
        p.open()?;
        let mut events = Vec::new();
        while p.peek() != Some(b')') {
            events.push(notify_event(p)?);
            if !p.maybe_sp() {
                break;
            }
        }
        p.close()?;
        Some(events)
    } else if p.keyword_is("NONE") {
        None
    } else {
        return err("NOTIFY events are a list or NONE");
    };
    p.close()?;
    Ok(NotifyGroup { filter, events })
}

fn notify_event(p: &mut Parser) -> R<NotifyEvent> {
    let name = p.atom()?;
    Ok(match name.to_ascii_uppercase().as_str() {
        "MESSAGENEW" => {
            let save = p.pos;
            if p.maybe_sp() && p.peek() == Some(b'(') {
                NotifyEvent::MessageNew(p.fetch_atts()?)
            } else {
                p.pos = save;
                NotifyEvent::MessageNew(Vec::new())
            }
        }
        "MESSAGEEXPUNGE" => NotifyEvent::MessageExpunge,
        "FLAGCHANGE" => NotifyEvent::FlagChange,
        "MAILBOXNAME" => NotifyEvent::MailboxName,
        "SUBSCRIPTIONCHANGE" => NotifyEvent::SubscriptionChange,
        "MAILBOXMETADATACHANGE" => NotifyEvent::MailboxMetadataChange,
        "SERVERMETADATACHANGE" => NotifyEvent::ServerMetadataChange,
        _ => NotifyEvent::Other(name),
    })
}
