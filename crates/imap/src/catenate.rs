//! CATENATE (RFC 4469): an APPEND message put together on the server from TEXT parts sent with
//! the command and IMAP URLs naming messages, or parts of them, the user may read. Every URL
//! is checked, and the whole size known, before anything is copied; then the parts are written
//! in order to one message sink (memory, then a spool file), a piece at a time: the first
//! TEXT part's own sink carries the message on, stored message data is read in chunks, and
//! each TEXT part is let go once copied. The result goes the way of any APPEND message.

use postern_ingest::{MessageSink, Prepared};
use postern_store::{BlobId, Rights, StoreError};

use crate::core::{Fail, ImapCore};
use crate::fetch::{Miss, Span};
use crate::parse::{CatPart, MessageData};
use crate::url::{MailboxRef, MessageUrl, Server};

/// Stored message data is copied this much at a time.
const CHUNK: u64 = 256 << 10;

/// What a URL names: a range of a stored message, or bytes made from one (header fields).
enum Piece {
    Range { blob: BlobId, start: u64, end: u64 },
    Bytes(Vec<u8>),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Range { start, end, .. } => end - start,
            Piece::Bytes(b) => b.len() as u64,
        }
    }
}

/// A part on its way into the message.
enum Source {
    Sink(MessageSink),
    Bytes(Vec<u8>),
    Url(Piece),
}

/// The URL as a BADURL response code can carry it (RFC 4469 6: no CR, LF or `]`).
fn shown(url: &str) -> String {
    let s: String = url
        .chars()
        .take(300)
        .map(|c| {
            if c.is_ascii_graphic() && c != ']' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.is_empty() { "\"\"".into() } else { s }
}

fn badurl(url: &str, why: &str) -> Fail {
    Fail::No(format!("[BADURL {}] {why}", shown(url)))
}

/// Writes bytes to the sink a piece at a time, so that a sink still in memory spills to its
/// file before it holds more than its threshold and a piece.
fn put(out: &mut MessageSink, bytes: &[u8]) {
    for c in bytes.chunks(CHUNK as usize) {
        out.put(c);
    }
}

impl ImapCore {
    /// The CATENATE message, ready to store. `sinks` are the command's spooled literals; the
    /// TEXT parts take theirs.
    pub(crate) async fn catenate(
        &self,
        parts: Vec<CatPart>,
        sinks: &mut [Option<MessageSink>],
    ) -> Result<Prepared, Fail> {
        let max = self.cfg.config.imap.max_literal.0;
        let mut sources = Vec::with_capacity(parts.len());
        let mut total: u64 = 0;
        for part in parts {
            let src = match part {
                CatPart::Text(MessageData::Spooled(i)) => {
                    let Some(sink) = sinks.get_mut(i).and_then(Option::take) else {
                        return Err(Fail::Bad("CATENATE TEXT part missing".into()));
                    };
                    total = total.saturating_add(sink.len());
                    Source::Sink(sink)
                }
                CatPart::Text(MessageData::Inline(data)) => {
                    let data = crate::mailbox::crlf(data);
                    total = total.saturating_add(data.len() as u64);
                    Source::Bytes(data)
                }
                CatPart::Text(MessageData::Catenate(_)) => {
                    return Err(Fail::Bad("CATENATE parts do not nest".into()));
                }
                CatPart::Url(url) => {
                    let piece = self.resolve_url(&url).await?;
                    total = total.saturating_add(piece.len());
                    Source::Url(piece)
                }
            };
            if total > max {
                return Err(Fail::No(format!(
                    "[TOOBIG] The message would be larger than APPENDLIMIT ({max} bytes)"
                )));
            }
            sources.push(src);
        }
        let mut sources = sources.into_iter();
        let mut out = match sources.next() {
            Some(Source::Sink(s)) => s,
            first => {
                let c = &self.cfg.config;
                let mut s = MessageSink::new(
                    b"",
                    0,
                    c.storage.spool_threshold.0 as usize,
                    &self.cfg.spool_dir,
                );
                if let Some(src) = first {
                    self.copy_into(&mut s, src).await?;
                }
                s
            }
        };
        for src in sources {
            self.copy_into(&mut out, src).await?;
        }
        let raw = out.finish().await.map_err(StoreError::from_io)?;
        Ok(Prepared::from_raw(raw).map_err(StoreError::from_io)?)
    }

    async fn copy_into(&self, out: &mut MessageSink, src: Source) -> Result<(), Fail> {
        match src {
            Source::Sink(sink) => {
                let mut raw = sink.finish().await.map_err(StoreError::from_io)?;
                raw.map().map_err(StoreError::from_io)?;
                put(out, raw.bytes());
            }
            Source::Bytes(b) | Source::Url(Piece::Bytes(b)) => put(out, &b),
            Source::Url(Piece::Range { blob, start, end }) => {
                let mut at = start;
                while at < end {
                    let n = CHUNK.min(end - at);
                    let data = self.store().blob_read(blob, at, n).await?;
                    if data.is_empty() {
                        // The message went away meanwhile: its bytes can no longer be had.
                        return Err(Fail::No(
                            "[EXPUNGEISSUED] A message named by a URL was expunged meanwhile"
                                .into(),
                        ));
                    }
                    put(out, &data);
                    at += data.len() as u64;
                }
            }
        }
        Ok(())
    }

    /// Whether an absolute URL's server part names this server and the logged-in user.
    fn same_server(&self, s: &Server) -> bool {
        let me = self.account.as_ref().map(|a| a.address.as_str());
        if let Some(u) = &s.user
            && !me.is_some_and(|m| m.eq_ignore_ascii_case(u))
        {
            return false;
        }
        let c = &self.cfg.config;
        let listeners: Vec<std::net::SocketAddr> = c
            .listen
            .imap
            .iter()
            .chain(&c.listen.imaps)
            .filter_map(|a| a.parse().ok())
            .collect();
        if let Some(p) = s.port
            && !listeners.iter().any(|a| a.port() == p)
        {
            return false;
        }
        if s.host.eq_ignore_ascii_case(&c.hostname) || s.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        // An address we listen on (any address, for a listener on all of them).
        match s.host.parse::<std::net::IpAddr>() {
            Ok(ip) => listeners
                .iter()
                .any(|a| a.ip() == ip || a.ip().is_unspecified()),
            Err(_) => false,
        }
    }

    /// What a CATENATE URL names, checked: this server and user, a mailbox the user may read,
    /// its UIDVALIDITY if given, a message in it and a section it has.
    async fn resolve_url(&self, url: &str) -> Result<Piece, Fail> {
        let u: MessageUrl =
            crate::url::parse(url).map_err(|e| badurl(url, &format!("Bad IMAP URL: {e}")))?;
        if let Some(s) = &u.server
            && !self.same_server(s)
        {
            return Err(badurl(url, "The URL names another server or user"));
        }
        let selected = self.selected.as_ref().map(|s| s.mailbox.name.clone());
        let name = match &u.mailbox {
            MailboxRef::Absolute(n) => n.clone(),
            MailboxRef::Selected => match &selected {
                Some(s) => s.clone(),
                None => return Err(badurl(url, "A relative URL needs a selected mailbox")),
            },
            MailboxRef::Relative(n) => match &selected {
                Some(s) => format!("{s}/{n}"),
                None => n.clone(),
            },
        };
        let v = match self.visible(&name).await? {
            Some(v) if v.rights.contains(Rights::READ) => v,
            _ => return Err(badurl(url, "No mailbox you may read has that name")),
        };
        if u.uidvalidity.is_some_and(|n| n != v.mailbox.uidvalidity) {
            return Err(badurl(url, "The mailbox's UIDVALIDITY has changed"));
        }
        let Some(e) = self.store().message_get(v.mailbox.id, u.uid).await? else {
            return Err(badurl(url, "No message has that UID"));
        };
        let section = match &u.section {
            Some(s) => Some(
                crate::parse::parse_section(s)
                    .map_err(|err| badurl(url, &format!("Bad SECTION: {err}")))?,
            ),
            None => None,
        };
        let piece = match section {
            None => Piece::Range {
                blob: e.blob,
                start: 0,
                end: e.size,
            },
            Some(section) => {
                let m = match crate::fetch::meta(self.store(), &e).await {
                    Ok(m) => m,
                    Err(Miss::Gone) => return Err(badurl(url, "The message is gone")),
                    Err(Miss::Fail(f)) => return Err(f),
                };
                if !section.part.is_empty() && m.part(&section.part).is_none() {
                    return Err(badurl(url, "The message has no such part"));
                }
                match crate::fetch::span(&e, Some(&m), &section) {
                    Span::Range(start, end) => Piece::Range {
                        blob: e.blob,
                        start: start.min(e.size),
                        end: end.clamp(start.min(e.size), e.size),
                    },
                    Span::Fields(a, b, fields, not) => {
                        let raw = self
                            .store()
                            .blob_read(e.blob, a, b.saturating_sub(a))
                            .await?;
                        Piece::Bytes(crate::fetch::header_fields(&raw, &fields, not))
                    }
                    Span::Empty => Piece::Bytes(Vec::new()),
                }
            }
        };
        Ok(match (u.partial, piece) {
            (None, p) => p,
            (Some((off, len)), Piece::Range { blob, start, end }) => {
                let s = start.saturating_add(off).min(end);
                let e = len.map_or(end, |l| s.saturating_add(l).min(end));
                Piece::Range {
                    blob,
                    start: s,
                    end: e,
                }
            }
            (Some((off, len)), Piece::Bytes(b)) => {
                let s = (off as usize).min(b.len());
                let e = len.map_or(b.len(), |l| s.saturating_add(l as usize).min(b.len()));
                Piece::Bytes(b[s..e].to_vec())
            }
        })
    }
}
