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
    match cmd("a LIST (SUBSCRIBED) \"\" (\"*\" %) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n") {
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
    match cmd("a APPEND Drafts (\\Draft) \"05-Mar-2026 10:00:00 +0100\" {3}\r\nabc {2+}\r\nde\r\n")
    {
        Command::Append(m, msgs) => {
            assert_eq!(m, "Drafts");
            assert_eq!(msgs.len(), 2);
            assert_eq!(msgs[0].data, MessageData::Inline(b"abc".to_vec()));
            assert_eq!(
                msgs[0].date,
                Some(days_from_civil(2026, 3, 5) * 86400 + 9 * 3600)
            );
            assert_eq!(msgs[1].data, MessageData::Inline(b"de".to_vec()));
        }
        c => panic!("{c:?}"),
    }
    // As framed: the message data went to a sink, the mailbox literal stayed.
    let framed = b"a APPEND {5}\r\nINBOX {300}\r\n {2}\r\nhi\r\n";
    match parse_framed(framed, &[27], true).1 {
        Ok(Command::Append(m, msgs)) => {
            assert_eq!(m, "INBOX");
            assert_eq!(msgs[0].data, MessageData::Spooled(0));
            assert_eq!(msgs[1].data, MessageData::Inline(b"hi".to_vec()));
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

#[test]
fn within_keys() {
    assert_eq!(
        cmd("a SEARCH OLDER 3600 YOUNGER 86400\r\n"),
        Command::Search {
            uid: false,
            ret: None,
            key: SearchKey::And(vec![SearchKey::Older(3600), SearchKey::Younger(86400)])
        }
    );
    assert!(matches!(
        cmd("a UID SORT (DATE) UTF-8 NOT younger 5\r\n"),
        Command::Sort { key: SearchKey::Not(k), .. } if *k == SearchKey::Younger(5)
    ));
    for input in [
        "a SEARCH OLDER 0\r\n",
        "a SEARCH OLDER -5\r\n",
        "a SEARCH YOUNGER 4294967296\r\n",
        "a SEARCH OLDER soon\r\n",
    ] {
        assert!(bad(input).0.contains("seconds from 1"), "{input}");
    }
    assert!(bad("a SEARCH YOUNGER\r\n").0.contains("expected a space"));
}

#[test]
fn esort() {
    assert_eq!(
        cmd("a UID SORT RETURN (MIN MAX COUNT ALL) (REVERSE DATE) UTF-8 ALL\r\n"),
        Command::Sort {
            uid: true,
            ret: Some(vec![
                SearchRet::Min,
                SearchRet::Max,
                SearchRet::Count,
                SearchRet::All
            ]),
            criteria: vec![(SortKey::Date, true)],
            key: SearchKey::All
        }
    );
    assert!(matches!(
        cmd("a SORT RETURN () (SUBJECT) US-ASCII SEEN\r\n"),
        Command::Sort { ret: Some(r), uid: false, .. } if r.is_empty()
    ));
    assert!(matches!(
        cmd("a SORT (ARRIVAL) UTF-8 ALL\r\n"),
        Command::Sort { ret: None, .. }
    ));
    assert!(
        bad("a SORT RETURN (SAVE) (DATE) UTF-8 ALL\r\n")
            .0
            .contains("SEARCHRES")
    );
    assert!(matches!(
        cmd("a SORT RETURN (PARTIAL 1:10) (DATE) UTF-8 ALL\r\n"),
        Command::Sort { ret: Some(r), .. } if r == [SearchRet::Partial(1, 10)]
    ));
    assert!(
        bad("a SORT RETURN (BEST) (DATE) UTF-8 ALL\r\n")
            .0
            .contains("RETURN option BEST")
    );
    assert!(
        bad("a SORT RETURN (MIN (DATE) UTF-8 ALL\r\n")
            .0
            .contains("atom")
    );
    assert!(bad("a SORT RETURN (MIN) UTF-8 ALL\r\n").0.contains("'('"));
    assert!(
        bad("a SORT RETURN (MIN)\r\n")
            .0
            .contains("expected a space")
    );
}

#[test]
fn preview() {
    let atts = |s: &str| match cmd(s) {
        Command::Fetch {
            atts,
            changed_since,
            ..
        } => (atts, changed_since),
        c => panic!("{c:?}"),
    };
    assert_eq!(
        atts("a FETCH 1 PREVIEW\r\n"),
        (vec![FetchAtt::Preview], None)
    );
    assert_eq!(
        atts("a FETCH 1 (UID PREVIEW (LAZY) FLAGS)\r\n"),
        (
            vec![FetchAtt::Uid, FetchAtt::Preview, FetchAtt::Flags],
            None
        )
    );
    assert_eq!(
        atts("a FETCH 1:* (preview (lazy))\r\n"),
        (vec![FetchAtt::Preview], None)
    );
    // After a lone PREVIEW, a list of something else is the FETCH modifiers.
    assert_eq!(
        atts("a FETCH 1 PREVIEW (CHANGEDSINCE 4)\r\n"),
        (vec![FetchAtt::Preview], Some(4))
    );
    assert_eq!(
        atts("a FETCH 1 PREVIEW (LAZY) (CHANGEDSINCE 4)\r\n"),
        (vec![FetchAtt::Preview], Some(4))
    );
    assert!(
        bad("a FETCH 1 (PREVIEW (LAZY FAST))\r\n")
            .0
            .contains("PREVIEW modifier FAST")
    );
    assert!(bad("a FETCH 1 (PREVIEW (LAZY)\r\n").0.contains("')'"));
    assert!(
        bad("a FETCH 1 (PREVIEW (FUZZY))\r\n")
            .0
            .contains("expected a fetch attribute")
    );
}

#[test]
fn metadata_commands() {
    assert_eq!(
        cmd("a GETMETADATA (MAXSIZE 1024 DEPTH infinity) \"\" (/Shared/Comment /private)\r\n"),
        Command::GetMetadata {
            mailbox: String::new(),
            entries: vec!["/shared/comment".into(), "/private".into()],
            max_size: Some(1024),
            depth: None,
        }
    );
    assert_eq!(
        cmd("a GETMETADATA INBOX /private/comment\r\n"),
        Command::GetMetadata {
            mailbox: "INBOX".into(),
            entries: vec!["/private/comment".into()],
            max_size: None,
            depth: Some(0),
        }
    );
    assert_eq!(
        cmd(
            "a SETMETADATA inbox (/private/comment NIL /shared/x {3+}\r\na\r\n /shared/y ~{2}\r\n\0b)\r\n"
        ),
        Command::SetMetadata(
            "INBOX".into(),
            vec![
                ("/private/comment".into(), None),
                ("/shared/x".into(), Some(b"a\r\n".to_vec())),
                ("/shared/y".into(), Some(b"\0b".to_vec())),
            ]
        )
    );
    for input in [
        "a GETMETADATA (DEPTH 2) INBOX /private/a\r\n",
        "a GETMETADATA (SIZE 2) INBOX /private/a\r\n",
        "a GETMETADATA INBOX /other/a\r\n",
        "a GETMETADATA INBOX \"/private/a*\"\r\n",
        "a SETMETADATA INBOX (/private \"x\")\r\n",
        "a SETMETADATA INBOX (/private/a)\r\n",
        "a SETMETADATA INBOX ()\r\n",
    ] {
        bad(input);
    }
}

#[test]
fn savedate() {
    assert!(matches!(
        cmd("a FETCH 1 (SAVEDATE UID)\r\n"),
        Command::Fetch { atts, .. } if atts == [FetchAtt::SaveDate, FetchAtt::Uid]
    ));
    let day = days_from_civil(2014, 12, 28) * 86400;
    assert_eq!(
        cmd(
            "a SEARCH SAVEDSINCE 28-Dec-2014 SAVEDBEFORE 28-Dec-2014 SAVEDON 28-Dec-2014 SAVEDATESUPPORTED\r\n"
        ),
        Command::Search {
            uid: false,
            ret: None,
            key: SearchKey::And(vec![
                SearchKey::SavedSince(day),
                SearchKey::SavedBefore(day),
                SearchKey::SavedOn(day),
                SearchKey::SaveDateSupported,
            ])
        }
    );
}

#[test]
fn context_return_options() {
    let ret = |s: &str| match cmd(s) {
        Command::Search { ret, .. } | Command::Sort { ret, .. } => ret.unwrap(),
        c => panic!("{c:?}"),
    };
    assert_eq!(
        ret("a SEARCH RETURN (UPDATE) BODY x SEEN\r\n"),
        [SearchRet::Update]
    );
    assert_eq!(
        ret("a UID SORT RETURN (UPDATE ALL CONTEXT) (DATE) UTF-8 ALL\r\n"),
        [SearchRet::Update, SearchRet::All]
    );
    // Either order; counting from the end (RFC 9394) when negative.
    assert_eq!(
        ret("a SEARCH RETURN (PARTIAL 4:2) ALL\r\n"),
        [SearchRet::Partial(2, 4)]
    );
    assert_eq!(
        ret("a SEARCH RETURN (COUNT PARTIAL -1:-100) ALL\r\n"),
        [SearchRet::Count, SearchRet::Partial(-1, -100)]
    );
    assert_eq!(
        ret("a SEARCH RETURN (PARTIAL -50:-1) ALL\r\n"),
        [SearchRet::Partial(-1, -50)]
    );
    assert_eq!(ret("a SEARCH RETURN (MIN MIN) ALL\r\n"), [SearchRet::Min]);
    for (input, why) in [
        (
            "a SEARCH RETURN (PARTIAL 1) ALL\r\n",
            "PARTIAL takes a range",
        ),
        (
            "a SEARCH RETURN (PARTIAL 1:*) ALL\r\n",
            "PARTIAL takes a range",
        ),
        (
            "a SEARCH RETURN (PARTIAL *:1) ALL\r\n",
            "PARTIAL takes a range",
        ),
        (
            "a SEARCH RETURN (PARTIAL 0:5) ALL\r\n",
            "PARTIAL takes a range",
        ),
        (
            "a SEARCH RETURN (PARTIAL -1:5) ALL\r\n",
            "PARTIAL takes a range",
        ),
        (
            "a SEARCH RETURN (PARTIAL 1:4294967296) ALL\r\n",
            "PARTIAL takes a range",
        ),
        (
            "a SEARCH RETURN (PARTIAL 1:5 PARTIAL 6:9) ALL\r\n",
            "PARTIAL twice",
        ),
        (
            "a SEARCH RETURN (ALL PARTIAL 1:5) ALL\r\n",
            "exclude each other",
        ),
        ("a SEARCH RETURN (UPDATE UPDATE) ALL\r\n", "UPDATE twice"),
        (
            "a SEARCH RETURN (UPDATE PARTIAL 1:5) ALL\r\n",
            "with UPDATE",
        ),
    ] {
        let e = bad(input);
        assert!(e.0.contains(why), "{input}: {e}");
    }
    assert_eq!(
        cmd("a CANCELUPDATE \"a1\" \"b2\"\r\n"),
        Command::CancelUpdate(vec!["a1".into(), "b2".into()])
    );
    assert!(bad("a CANCELUPDATE\r\n").0.contains("needs the tag"));
}

#[test]
fn catenate() {
    // The framing spooled the TEXT literals: their data would start at these offsets.
    let framed = b"a APPEND Sent (\\Seen) CATENATE (URL \"/INBOX;UIDVALIDITY=3/;UID=7/;SECTION=1\" TEXT {5}\r\n TEXT {3+}\r\n) CATENATE (URL {13}\r\n/INBOX/;UID=2 UTF8 (~{4}\r\n))\r\n";
    let at: Vec<usize> = [
        b"TEXT {5}\r\n".as_slice(),
        b"TEXT {3+}\r\n",
        b"UTF8 (~{4}\r\n",
    ]
    .iter()
    .map(|m| framed.windows(m.len()).position(|w| w == *m).unwrap() + m.len())
    .collect();
    let (_, c) = parse_framed(framed, &at, true);
    let Command::Append(mailbox, msgs) = c.unwrap() else {
        panic!()
    };
    assert_eq!(mailbox, "Sent");
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].flags, ["\\Seen"]);
    assert_eq!(
        msgs[0].data,
        MessageData::Catenate(vec![
            CatPart::Url("/INBOX;UIDVALIDITY=3/;UID=7/;SECTION=1".into()),
            CatPart::Text(MessageData::Spooled(0)),
            CatPart::Text(MessageData::Spooled(1)),
        ])
    );
    assert_eq!(
        msgs[1].data,
        MessageData::Catenate(vec![
            CatPart::Url("/INBOX/;UID=2".into()),
            CatPart::Text(MessageData::Spooled(2)),
        ])
    );
    // Unspooled (as a unit test gives it), the text is inline.
    match cmd("a APPEND x CATENATE (TEXT {2}\r\nhi)\r\n") {
        Command::Append(_, m) => assert_eq!(
            m[0].data,
            MessageData::Catenate(vec![CatPart::Text(MessageData::Inline(b"hi".to_vec()))])
        ),
        c => panic!("{c:?}"),
    }
    assert!(
        bad("a APPEND x CATENATE (BODY {2}\r\nhi)\r\n")
            .0
            .contains("unknown CATENATE part BODY")
    );
    assert!(bad("a APPEND x CATENATE ()\r\n").0.contains("atom"));
    assert!(
        bad("a APPEND x CATENATE (TEXT ~{2}\r\nhi)\r\n")
            .0
            .contains("not a literal8")
    );
    assert!(bad("a APPEND x CATENATE (URL)\r\n").0.contains("space"));
    let many = format!(
        "a APPEND x CATENATE ({})\r\n",
        vec!["URL ;UID=1"; 1001].join(" ")
    );
    assert!(bad(&many).0.contains("at most 1000 parts"));
    assert_eq!(
        parse_section("1.2.HEADER.FIELDS (Subject)").unwrap(),
        Section {
            part: vec![1, 2],
            text: Some(SectionText::HeaderFields(vec!["Subject".into()]))
        }
    );
    assert!(parse_section("MIME").is_err());
    assert!(parse_section("1]x").is_err());
}
