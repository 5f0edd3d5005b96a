//! IMAP input without I/O: bytes in, whole commands out (RFC 9051 2.2: lines, and literals
//! announced at a line's end). Literals are bounded before a byte of them is kept; the message
//! literals of APPEND go to a message sink (memory, then a spool file) as they arrive, line ends
//! made CRLF on the way, so a large message is never held whole in memory.

use std::path::PathBuf;

use postern_ingest::MessageSink;

/// What the next input is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tagged commands.
    Commands,
    /// One line on its own: IDLE's DONE, an AUTHENTICATE response.
    Line,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest line outside literals, its line end included.
    pub max_line: usize,
    /// Largest literal now.
    pub max_literal: u64,
    /// APPEND messages up to this size stay in memory; larger ones go to a spool file.
    pub spool_threshold: usize,
    pub spool_dir: PathBuf,
}

pub enum Frame {
    /// A whole command, lines and inline literals as received (each line ending in CRLF),
    /// and the APPEND message literals that went to sinks, each with the offset in `bytes`
    /// where its data would have been.
    Command {
        bytes: Vec<u8>,
        spooled: Vec<(usize, MessageSink)>,
    },
    /// A line read in [`Mode::Line`], without its line end.
    Line(Vec<u8>),
    /// A line longer than allowed: read to its end and thrown away.
    TooLong,
    /// A literal over the limit, refused before any of it was read: the command's tag, and
    /// whether the client is sending it anyway (non-synchronizing).
    LiteralTooBig { tag: Option<String>, non_sync: bool },
}

enum Literal {
    Inline {
        left: u64,
    },
    Spool {
        left: u64,
        sink: MessageSink,
        cr: bool,
        /// A literal8 (`~{n}`, RFC 3516): binary content, kept exactly as sent.
        binary: bool,
    },
}

#[derive(Default)]
pub struct Framer {
    /// The line being read.
    line: Vec<u8>,
    /// Past `max_line`: reading to the line's end, keeping nothing.
    discarding: bool,
    /// The command being put together.
    cmd: Vec<u8>,
    literals: u32,
    /// The CATENATE list being sent (see [`follow_catenate`]): its TEXT parts count against
    /// the literal limit together.
    catenate: Option<(u32, u64)>,
    spooled: Vec<(usize, MessageSink)>,
    literal: Option<Literal>,
    ready: Option<Frame>,
}

/// `{n}`, `{n+}`, `{n-}` or `~{n}` at the end of a line: (n, non-synchronizing).
pub fn trailing_literal(line: &[u8]) -> Option<(u64, bool)> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    let mut inner = &line[open + 1..line.len() - 1];
    let plus = matches!(inner.last(), Some(b'+') | Some(b'-'));
    if plus {
        inner = &inner[..inner.len() - 1];
    }
    if inner.is_empty() || !inner.iter().all(u8::is_ascii_digit) || inner.len() > 19 {
        return None;
    }
    std::str::from_utf8(inner)
        .ok()?
        .parse()
        .ok()
        .map(|n| (n, plus))
}

fn tag_of(buf: &[u8]) -> Option<String> {
    let end = buf.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&buf[..end]).ok().map(str::to_string)
}

/// Whether the literal announced at the end of `cmd` is an APPEND (or REPLACE) message, or a
/// CATENATE TEXT part of one (RFC 4469): not the mailbox name, which comes first and alone,
/// nor a CATENATE URL.
fn is_message_literal(cmd: &[u8], first: bool) -> bool {
    let before = cmd
        .iter()
        .rposition(|&b| b == b'{')
        .map_or(cmd, |i| &cmd[..i]);
    let before = before.strip_suffix(b"~").unwrap_or(before).trim_ascii_end();
    if before.len() >= 4
        && before[before.len() - 3..].eq_ignore_ascii_case(b"URL")
        && matches!(before[before.len() - 4], b' ' | b'(')
    {
        return false;
    }
    let mut words = cmd.splitn(3, |&b| b == b' ');
    let (_tag, Some(verb), Some(rest)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    if verb.eq_ignore_ascii_case(b"APPEND") {
        return !(first && rest.first() == Some(&b'{'));
    }
    // REPLACE n mailbox message, UID REPLACE n mailbox message (RFC 8508).
    let rest = if verb.eq_ignore_ascii_case(b"UID") {
        match rest.split(|&b| b == b' ').next() {
            Some(v) if v.eq_ignore_ascii_case(b"REPLACE") => &rest[v.len()..],
            _ => return false,
        }
    } else if verb.eq_ignore_ascii_case(b"REPLACE") {
        rest
    } else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    let after_number = rest
        .iter()
        .position(|&b| b == b' ')
        .map_or(&[][..], |i| &rest[i + 1..]);
    !(first && after_number.first() == Some(&b'{'))
}

/// Follows CATENATE lists (RFC 4469) through a command's lines: `state` is the depth of
/// parentheses inside the list being sent and the size of its TEXT parts so far, `None`
/// outside one. Quoted strings (URLs, dates) are skipped; literal data is not in the lines.
fn follow_catenate(state: &mut Option<(u32, u64)>, line: &[u8]) {
    let atom = crate::parse::Parser::is_atom_char;
    let mut quoted = false;
    let mut escaped = false;
    // "CATENATE" was the last word: a "(" opens its list.
    let mut pending = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let catenate = line.len() - i >= 8
            && line[i..i + 8].eq_ignore_ascii_case(b"CATENATE")
            && (i == 0 || !atom(line[i - 1]))
            && line.get(i + 8).is_none_or(|&c| !atom(c));
        match b {
            b' ' => {}
            b'"' => {
                quoted = true;
                pending = false;
            }
            b'(' => {
                match state {
                    Some((depth, _)) => *depth += 1,
                    None if pending => *state = Some((1, 0)),
                    None => {}
                }
                pending = false;
            }
            b')' => {
                if let Some((depth, _)) = state {
                    *depth -= 1;
                    if *depth == 0 {
                        *state = None;
                    }
                }
                pending = false;
            }
            _ if catenate => {
                pending = true;
                i += 8;
                continue;
            }
            _ => pending = false,
        }
        i += 1;
    }
}

impl Framer {
    /// A command (or line) is begun and not finished.
    pub fn in_progress(&self) -> bool {
        !self.line.is_empty() || self.discarding || !self.cmd.is_empty() || self.literal.is_some()
    }

    /// Literal data is being read.
    pub fn in_literal(&self) -> bool {
        self.literal.is_some()
    }

    /// The finished frame, if there is one.
    pub fn take(&mut self) -> Option<Frame> {
        self.ready.take()
    }

    /// Forgets everything received and not yet framed (after STARTTLS nothing sent in the
    /// clear may be executed).
    pub fn clear(&mut self) {
        *self = Framer::default();
    }

    /// Takes input until a frame is ready; returns how many bytes it used. A continuation
    /// request for a synchronizing literal is written to `out`.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mode: Mode,
        limits: &Limits,
        out: &mut Vec<u8>,
    ) -> usize {
        let total = data.len();
        while self.ready.is_none() && !data.is_empty() {
            if let Some(lit) = &mut self.literal {
                let n = match lit {
                    Literal::Inline { left } | Literal::Spool { left, .. } => {
                        (*left).min(data.len() as u64) as usize
                    }
                };
                let (chunk, rest) = data.split_at(n);
                data = rest;
                match lit {
                    Literal::Inline { left } => {
                        self.cmd.extend_from_slice(chunk);
                        *left -= n as u64;
                    }
                    Literal::Spool {
                        left,
                        sink,
                        cr,
                        binary,
                    } => {
                        if *binary {
                            sink.put(chunk);
                        } else {
                            sink.put_crlf(chunk, cr);
                        }
                        *left -= n as u64;
                    }
                }
                let done = matches!(
                    lit,
                    Literal::Inline { left: 0 } | Literal::Spool { left: 0, .. }
                );
                if done && let Some(Literal::Spool { sink, .. }) = self.literal.take() {
                    self.spooled.push((self.cmd.len(), sink));
                } else if done {
                    self.literal = None;
                }
                continue;
            }
            let nl = data.iter().position(|&b| b == b'\n');
            let take = nl.map_or(data.len(), |i| i + 1);
            let (chunk, rest) = data.split_at(take);
            data = rest;
            if !self.discarding {
                self.line.extend_from_slice(chunk);
                if self.line.len() > limits.max_line {
                    self.discarding = true;
                    self.line = Vec::new();
                }
            }
            if nl.is_none() {
                continue;
            }
            if std::mem::take(&mut self.discarding) {
                self.abandon();
                self.ready = Some(Frame::TooLong);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if mode == Mode::Line {
                self.ready = Some(Frame::Line(line));
                continue;
            }
            self.command_line(&line, limits, out);
        }
        total - data.len()
    }

    /// A line of a command: the command is complete, or a literal follows.
    fn command_line(&mut self, line: &[u8], limits: &Limits, out: &mut Vec<u8>) {
        let max_total = limits.max_literal as usize + limits.max_line * 4;
        if self.cmd.len() + line.len() > max_total {
            self.abandon();
            self.ready = Some(Frame::TooLong);
            return;
        }
        self.cmd.extend_from_slice(line);
        follow_catenate(&mut self.catenate, line);
        let Some((n, non_sync)) = trailing_literal(line) else {
            self.cmd.extend_from_slice(b"\r\n");
            self.ready = Some(Frame::Command {
                bytes: std::mem::take(&mut self.cmd),
                spooled: std::mem::take(&mut self.spooled),
            });
            self.literals = 0;
            self.catenate = None;
            return;
        };
        if n > limits.max_literal || self.cmd.len() as u64 + n > max_total as u64 {
            let tag = tag_of(&self.cmd);
            self.abandon();
            self.ready = Some(Frame::LiteralTooBig { tag, non_sync });
            return;
        }
        let message = is_message_literal(&self.cmd, self.literals == 0);
        if message && let Some((_, sum)) = &mut self.catenate {
            // TEXT parts of one CATENATE message are bounded together, before any is read.
            *sum = sum.saturating_add(n);
            if *sum > limits.max_literal {
                let tag = tag_of(&self.cmd);
                self.abandon();
                self.ready = Some(Frame::LiteralTooBig { tag, non_sync });
                return;
            }
        }
        if !non_sync {
            out.extend_from_slice(b"+ Ready for literal data\r\n");
        }
        self.literals += 1;
        self.cmd.extend_from_slice(b"\r\n");
        if n == 0 && !message {
            return;
        }
        let binary = line
            .iter()
            .rposition(|&b| b == b'{')
            .is_some_and(|open| open > 0 && line[open - 1] == b'~');
        // A CATENATE message's TEXT parts share one threshold: together they keep no more in
        // memory than one APPEND message would; later ones go to files.
        let threshold = match self.catenate {
            Some((_, sum)) => limits
                .spool_threshold
                .saturating_sub(sum.saturating_sub(n).min(usize::MAX as u64) as usize),
            None => limits.spool_threshold,
        };
        self.literal = Some(if message {
            Literal::Spool {
                left: n,
                sink: MessageSink::new(b"", 0, threshold, &limits.spool_dir),
                cr: false,
                binary,
            }
        } else {
            Literal::Inline { left: n }
        });
        if n == 0
            && let Some(Literal::Spool { sink, .. }) = self.literal.take()
        {
            self.spooled.push((self.cmd.len(), sink));
        }
    }

    /// Drops the command being put together (its spooled literals go with it).
    fn abandon(&mut self) {
        self.cmd = Vec::new();
        self.spooled.clear();
        self.literals = 0;
        self.catenate = None;
        self.literal = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_line: 100,
            max_literal: 1000,
            spool_threshold: 1 << 20,
            spool_dir: std::env::temp_dir(),
        }
    }

    /// Feeds `input` a byte at a time (the worst split) and returns the frames.
    fn frames(input: &[u8], mode: Mode) -> (Vec<Frame>, Vec<u8>) {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let mut got = Vec::new();
        for b in input.chunks(1) {
            assert_eq!(f.feed(b, mode, &limits(), &mut out), 1);
            got.extend(f.take());
        }
        (got, out)
    }

    #[test]
    fn literal_markers() {
        assert_eq!(trailing_literal(b"a LOGIN {5}"), Some((5, false)));
        assert_eq!(trailing_literal(b"a APPEND x {12+}"), Some((12, true)));
        assert!(is_message_literal(b"a REPLACE 3 x {12+}", true));
        assert!(is_message_literal(b"a UID REPLACE 3 x (\\Seen) {12}", true));
        assert!(!is_message_literal(b"a UID REPLACE 3 {5}", true));
        assert!(is_message_literal(
            b"a UID REPLACE 3 {5}\r\nInbox {12}",
            false
        ));
        assert!(!is_message_literal(b"a UID FETCH 3 {5}", true));
        assert_eq!(trailing_literal(b"a APPEND x ~{3}"), Some((3, false)));
        assert_eq!(trailing_literal(b"a LOGIN {x}"), None);
        assert_eq!(trailing_literal(b"a LOGIN {99999999999999999999}"), None);
        assert_eq!(trailing_literal(b"a NOOP"), None);
    }

    #[test]
    fn commands_with_literals_and_spooled_messages() {
        let (f, out) = frames(
            b"a LOGIN {5}\r\nalice {3+}\r\npw!\r\nb APPEND {5}\r\nINBOX (\\Seen) {7}\r\nx\ny\rz\r\n\r\n",
            Mode::Commands,
        );
        assert_eq!(out, b"+ Ready for literal data\r\n".repeat(3));
        assert_eq!(f.len(), 2);
        let Frame::Command { bytes, spooled } = &f[0] else {
            panic!()
        };
        assert_eq!(bytes, b"a LOGIN {5}\r\nalice {3+}\r\npw!\r\n");
        assert!(spooled.is_empty());
        let Frame::Command { bytes, spooled } = &f[1] else {
            panic!()
        };
        // The mailbox literal stays inline; the message went to a sink, made CRLF.
        assert_eq!(bytes, b"b APPEND {5}\r\nINBOX (\\Seen) {7}\r\n\r\n");
        assert_eq!(spooled.len(), 1);
        assert_eq!(spooled[0].0, bytes.len() - 2);
        assert_eq!(spooled[0].1.original_head(), b"x\r\ny\r\nz\r\n");
    }

    #[test]
    fn catenate_text_parts_are_spooled_and_bounded_together() {
        assert!(is_message_literal(b"a APPEND x CATENATE (TEXT {12}", true));
        assert!(!is_message_literal(b"a APPEND x CATENATE (URL {12}", true));
        assert!(!is_message_literal(
            b"a APPEND x catenate (TEXT {1}\r\nx url {12}",
            false
        ));
        assert!(is_message_literal(
            b"a APPEND x CATENATE (URL {5}\r\n/a/;b TEXT {2}",
            false
        ));
        let follow = |lines: &[&[u8]]| {
            let mut st = None;
            lines.iter().for_each(|l| follow_catenate(&mut st, l));
            st.map(|s: (u32, u64)| s.0)
        };
        assert_eq!(
            follow(&[b"a APPEND x (\\Seen) CATENATE (TEXT {1}"]),
            Some(1)
        );
        assert_eq!(
            follow(&[b"a APPEND x catenate (TEXT {1}", b" TEXT {2}"]),
            Some(1)
        );
        assert_eq!(
            follow(&[b"a APPEND x CATENATE (URL \"/a)b/;UID=1\" TEXT {2}"]),
            Some(1)
        );
        assert_eq!(follow(&[b"a APPEND x CATENATE (URL \"x\") {5}"]), None);
        assert_eq!(
            follow(&[b"a APPEND x CATENATE (UTF8 (~{2}", b") TEXT {3}"]),
            Some(1)
        );
        assert_eq!(follow(&[b"a APPEND x CATENATE (UTF8 (~{2}"]), Some(2));
        assert_eq!(
            follow(&[b"a APPEND x (\\Seen) {5}", b" (\\Seen) {6}"]),
            None
        );
        assert_eq!(follow(&[b"a APPEND xCATENATE (\\Seen) {5}"]), None);

        let text = |n: usize| vec![b'x'; n];
        // Two messages of 600 each: each within the limit of 1000.
        let input = [
            b"a APPEND x CATENATE (TEXT {300}\r\n".as_slice(),
            &text(300),
            b" TEXT {300}\r\n",
            &text(300),
            b") CATENATE (TEXT {600}\r\n",
            &text(600),
            b" URL \"/x/;UID=1\")\r\n",
        ]
        .concat();
        let (f, out) = frames(&input, Mode::Commands);
        assert_eq!(out, b"+ Ready for literal data\r\n".repeat(3));
        let Frame::Command { bytes, spooled } = &f[0] else {
            panic!()
        };
        assert_eq!(spooled.len(), 3, "{}", String::from_utf8_lossy(bytes));
        assert_eq!(spooled[2].1.len(), 600);
        assert!(bytes.len() < 200, "the text went to sinks, not the command");
        // The parts share the spool threshold: past it, parts go to files as they arrive.
        let small = Limits {
            spool_threshold: 500,
            ..limits()
        };
        let mut fr = Framer::default();
        let mut out = Vec::new();
        for b in input.chunks(7) {
            fr.feed(b, Mode::Commands, &small, &mut out);
        }
        let Some(Frame::Command { spooled, .. }) = fr.take() else {
            panic!()
        };
        let kept: Vec<usize> = spooled.iter().map(|s| s.1.original_head().len()).collect();
        assert_eq!(
            spooled.iter().map(|s| s.1.len()).collect::<Vec<_>>(),
            [300, 300, 600]
        );
        assert!(kept[0] == 300 && kept[1] < 300 && kept[2] < 600, "{kept:?}");
        // Plain MULTIAPPEND messages are each bounded alone.
        let input = [
            b"a APPEND x {600}\r\n".as_slice(),
            &text(600),
            b" (\\Seen) {600}\r\n",
            &text(600),
            b"\r\n",
        ]
        .concat();
        let (f, _) = frames(&input, Mode::Commands);
        assert!(matches!(&f[0], Frame::Command { spooled, .. } if spooled.len() == 2));
        // One message's parts together over the limit: refused before the part is read.
        let input = [
            b"a APPEND x CATENATE (TEXT {600}\r\n".as_slice(),
            &text(600),
            b" TEXT {500}\r\nb NOOP\r\n",
        ]
        .concat();
        let (f, _) = frames(&input, Mode::Commands);
        assert!(
            matches!(&f[0], Frame::LiteralTooBig { tag: Some(t), non_sync: false } if t == "a")
        );
        assert!(matches!(&f[1], Frame::Command { bytes, .. } if bytes == b"b NOOP\r\n"));
    }

    #[test]
    fn limits_are_kept() {
        let (f, out) = frames(b"a APPEND INBOX {1001}\r\nb NOOP\r\n", Mode::Commands);
        assert!(out.is_empty(), "no continuation for a literal refused");
        assert!(
            matches!(&f[0], Frame::LiteralTooBig { tag: Some(t), non_sync: false } if t == "a")
        );
        assert!(matches!(&f[1], Frame::Command { bytes, .. } if bytes == b"b NOOP\r\n"));
        let long = [b"a NOOP ".as_slice(), &[b'x'; 200], b"\r\nb NOOP\r\n"].concat();
        let (f, _) = frames(&long, Mode::Commands);
        assert!(matches!(&f[0], Frame::TooLong));
        assert!(matches!(&f[1], Frame::Command { bytes, .. } if bytes == b"b NOOP\r\n"));
        let (f, _) = frames(b"DONE\r\n", Mode::Line);
        assert!(matches!(&f[0], Frame::Line(l) if l == b"DONE"));
    }

    #[test]
    fn one_frame_at_a_time() {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let input = b"a NOOP\r\nb NOOP\r\n";
        let n = f.feed(input, Mode::Commands, &limits(), &mut out);
        assert_eq!(n, 8, "stops after the first whole command");
        assert!(f.take().is_some());
        assert_eq!(f.feed(&input[n..], Mode::Commands, &limits(), &mut out), 8);
    }
}
