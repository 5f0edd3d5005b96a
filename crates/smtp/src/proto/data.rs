//! The DATA receiver (RFC 5321 4.1.1.4, 4.5.2): dot-unstuffing, and the end of the message at
//! `<CRLF>.<CRLF>` and nothing else. Bare CR or LF never ends a line here, so
//! `<LF>.<LF>`, `<LF>.<CRLF>`, `<CR>.<CR>` and friends are message content, never a
//! terminator (SMTP smuggling); they are reported so the message can be refused.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the start of the data).
    LineStart,
    InLine,
    /// Saw CR inside a line.
    Cr,
    /// Saw '.' at the start of a line.
    Dot,
    /// Saw ".\r" at the start of a line.
    DotCr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataReport {
    /// Octets of the unstuffed message (what would have been stored, even past the limit).
    pub size: u64,
    pub bare_lf: bool,
    pub bare_cr: bool,
    /// A line was longer than the limit (octets, CRLF included).
    pub long_line: bool,
    /// More than `max_size` octets: content beyond it was dropped.
    pub too_big: bool,
}

pub struct DataDecoder {
    state: State,
    line_len: usize,
    max_line: usize,
    max_size: u64,
    report: DataReport,
    /// Bare LF and bare CR are stored as CRLF (else kept, and only reported).
    normalize: bool,
}

/// Where decoded content goes.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl DataDecoder {
    /// `max_line` counts CRLF, as RFC 5321 does (1000).
    pub fn new(max_line: usize, max_size: u64) -> Self {
        DataDecoder {
            state: State::LineStart,
            line_len: 0,
            max_line,
            max_size,
            report: DataReport::default(),
            normalize: false,
        }
    }

    /// Stores every bare LF and bare CR as CRLF (Postfix 3.9's `normalize`): the message is
    /// kept, with the line ends every reader expects. The end of the data is still only
    /// CRLF.CRLF.
    pub fn normalizing(mut self) -> Self {
        self.normalize = true;
        self
    }

    fn emit<S: Sink>(&mut self, sink: &mut S, bytes: &[u8]) {
        let before = self.report.size;
        self.report.size += bytes.len() as u64;
        if self.report.size > self.max_size {
            self.report.too_big = true;
            if before < self.max_size {
                let keep = (self.max_size - before) as usize;
                sink.put(&bytes[..keep]);
            }
            return;
        }
        sink.put(bytes);
    }

    fn count_line(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len + 2 > self.max_line {
            self.report.long_line = true;
        }
    }

    /// Feeds received bytes; returns `Some(n)` when the terminator ended at `input[n-1]`
    /// (bytes from `n` on belong to the next command), `None` when more data is needed.
    pub fn feed<S: Sink>(&mut self, input: &[u8], sink: &mut S) -> Option<usize> {
        let mut i = 0;
        // Start of a run of plain line content not yet emitted.
        let mut run = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::InLine => {
                    match b {
                        b'\r' => {
                            self.count_line(i - run);
                            self.emit(sink, &input[run..i]);
                            self.state = State::Cr;
                        }
                        b'\n' => {
                            self.report.bare_lf = true;
                            if self.normalize {
                                self.count_line(i - run);
                                self.emit(sink, &input[run..i]);
                                self.emit(sink, b"\r\n");
                                self.line_len = 0;
                                run = i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                    if self.state != State::InLine {
                        run = i;
                    }
                    continue;
                }
                State::LineStart => {
                    self.line_len = 0;
                    if b == b'.' {
                        self.state = State::Dot;
                        i += 1;
                        run = i;
                        continue;
                    }
                    self.state = State::InLine;
                    run = i;
                    continue;
                }
                State::Cr => {
                    if b == b'\n' {
                        self.emit(sink, b"\r\n");
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        self.report.bare_cr = true;
                        self.emit(sink, if self.normalize { b"\r\n" } else { b"\r" });
                        self.line_len += 1;
                        self.state = State::InLine;
                    }
                    run = i;
                }
                State::Dot => {
                    if b == b'\r' {
                        self.state = State::DotCr;
                        i += 1;
                        run = i;
                    } else {
                        // A stuffed dot: dropped, the line goes on.
                        self.state = State::InLine;
                        run = i;
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                        return Some(i + 1);
                    }
                    // ".\r" then something else: a bare CR in a line that began with a dot.
                    self.report.bare_cr = true;
                    self.emit(sink, if self.normalize { b"\r\n" } else { b"\r" });
                    self.line_len += 1;
                    self.state = State::InLine;
                    run = i;
                }
            }
        }
        if self.state == State::InLine && run < input.len() {
            self.count_line(input.len() - run);
            let (a, b) = (run, input.len());
            self.emit(sink, &input[a..b]);
        }
        None
    }

    pub fn report(&self) -> &DataReport {
        &self.report
    }

    pub fn into_report(self) -> DataReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `step`; returns (content, consumed, report).
    fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<usize>, DataReport) {
        let mut d = DataDecoder::new(1000, 1 << 20);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            if let Some(n) = d.feed(&input[pos..end], &mut out) {
                return (out, Some(pos + n), d.into_report());
            }
            pos = end;
        }
        (out, None, d.into_report())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_whatever_the_chunking() {
        let msg = b"Subject: x\r\n\r\nhello\r\n..stuffed\r\n.\r\nQUIT\r\n";
        for step in 1..msg.len() {
            let (out, end, rep) = run(msg, step);
            assert_eq!(
                out, b"Subject: x\r\n\r\nhello\r\n.stuffed\r\n",
                "step {step}"
            );
            assert_eq!(end, Some(msg.len() - 6), "step {step}");
            assert!(!rep.bare_lf && !rep.bare_cr);
        }
    }

    #[test]
    fn smuggling_shapes_never_terminate() {
        for fake in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r.\r\n",
            b"\r\n.\n",
            b"\n.\r",
            b"\r\n.\r",
            b"\r\n.\rX",
        ] {
            let mut msg = b"Subject: x\r\n\r\nbody".to_vec();
            msg.extend_from_slice(fake);
            msg.extend_from_slice(b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n");
            for step in [1, 2, 3, 7, msg.len()] {
                let (out, end, rep) = run(&msg, step);
                assert_eq!(end, None, "{fake:?} ended the message");
                assert!(rep.bare_lf || rep.bare_cr, "{fake:?} not flagged");
                assert!(out.ends_with(b"RCPT TO:<victim@y.test>\r\n"));
            }
            // Only the real terminator ends it, once.
            msg.extend_from_slice(b".\r\n");
            let (_, end, _) = run(&msg, 5);
            assert_eq!(end, Some(msg.len()));
        }
    }

    #[test]
    fn empty_message_and_dot_lines() {
        assert_eq!(run(b".\r\n", 1).1, Some(3));
        let (out, end, _) = run(b"a\r\n.\r\n", 2);
        assert_eq!((out.as_slice(), end), (&b"a\r\n"[..], Some(6)));
        let (out, _, _) = run(b"..\r\n...x\r\n.\r\n", 4);
        assert_eq!(out, b".\r\n..x\r\n");
    }

    #[test]
    fn long_lines_and_size() {
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        let (_, _, rep) = run(&long, 100);
        assert!(rep.long_line);
        let mut ok = vec![b'a'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(!run(&ok, 100).2.long_line);

        let mut d = DataDecoder::new(1000, 10);
        let mut out = Vec::new();
        assert_eq!(d.feed(b"0123456789abcdef\r\n.\r\n", &mut out), Some(21));
        assert_eq!(out, b"0123456789");
        assert!(d.report().too_big);
        assert_eq!(d.report().size, 18);
    }

    #[test]
    fn normalizing_stores_crlf_and_still_ends_only_at_crlf_dot_crlf() {
        let msg = b"a\nb\rc\r\n\n.\nd\r\n.\r\n";
        for step in 1..msg.len() {
            let mut d = DataDecoder::new(1000, 1 << 20).normalizing();
            let mut out = Vec::new();
            let mut end = None;
            let mut pos = 0;
            while pos < msg.len() && end.is_none() {
                let stop = (pos + step).min(msg.len());
                end = d.feed(&msg[pos..stop], &mut out).map(|n| pos + n);
                pos = stop;
            }
            assert_eq!(end, Some(msg.len()), "step {step}");
            assert_eq!(out, b"a\r\nb\r\nc\r\n\r\n.\r\nd\r\n", "step {step}");
            let rep = d.into_report();
            assert!(rep.bare_lf && rep.bare_cr);
        }
    }
}
