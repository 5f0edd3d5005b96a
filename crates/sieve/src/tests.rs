use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

#[derive(Default)]
struct FakeHost {
    mailboxes: Vec<&'static str>,
    seen: RefCell<HashMap<String, u64>>,
    scripts: HashMap<&'static str, &'static str>,
}

impl Host for FakeHost {
    fn mailbox_exists(&self, name: &str) -> bool {
        self.mailboxes.contains(&name)
    }
    fn special_use_exists(&self, s: &str) -> bool {
        s == "\\Junk"
    }
    fn seen_before(&self, id: &str, expiry: u64) -> bool {
        self.seen.borrow_mut().insert(id.into(), expiry).is_some()
    }
    fn script(&self, name: &str, _global: bool) -> Option<String> {
        self.scripts.get(name).map(|s| s.to_string())
    }
}

fn engine() -> Engine {
    Engine::new(&Limits::from(&postern_config::Sieve::default()), "mx.test")
}

const MSG: &[u8] =
    b"From: Bob <bob@far.test>\r\nTo: alice@example.test\r\nSubject: Cheap pills\r\n\
Message-ID: <1@far.test>\r\nList-Id: <sales.far.test>\r\n\r\nBuy now, weekly digest\r\n";

fn env() -> Envelope {
    Envelope {
        from: "bob@far.test".into(),
        to: "alice@example.test".into(),
        user: "alice@example.test".into(),
    }
}

fn run(src: &str, msg: &[u8], host: &FakeHost) -> Outcome {
    let e = engine();
    let s = e.compile(src).unwrap();
    e.run_bytes(s, msg, &env(), host)
}

#[test]
fn implicit_keep_and_fileinto_with_flags() {
    let h = FakeHost::default();
    let o = run("keep;", MSG, &h);
    assert_eq!(
        o.actions,
        [Action::Keep {
            flags: vec![],
            message: 0
        }]
    );
    let o = run(
        r#"require ["fileinto", "imap4flags"];
           if header :contains "subject" "pills" { fileinto :flags "\\Seen" "Junk"; }"#,
        MSG,
        &h,
    );
    assert_eq!(
        o.actions,
        [Action::FileInto {
            folder: "Junk".into(),
            flags: vec!["\\Seen".into()],
            create: false,
            special_use: None,
            message: 0
        }]
    );
}

#[test]
fn discard_reject_and_redirect() {
    let h = FakeHost::default();
    assert!(run("discard;", MSG, &h).actions.is_empty());
    let o = run(r#"require "reject"; reject "not here";"#, MSG, &h);
    assert_eq!(
        o.actions,
        [Action::Reject {
            reason: "not here".into()
        }]
    );
    let o = run(r#"redirect "carol@else.test";"#, MSG, &h);
    assert_eq!(
        o.actions,
        [Action::Redirect {
            to: "carol@else.test".into(),
            message: 0
        }]
    );
    let o = run(
        r#"require "copy"; redirect :copy "carol@else.test";"#,
        MSG,
        &h,
    );
    assert_eq!(o.actions.len(), 2, "{:?}", o.actions);
}

#[test]
fn envelope_subaddress_body_relational_variables() {
    let h = FakeHost::default();
    let src = r#"require ["envelope", "subaddress", "body", "relational", "variables",
                          "comparator-i;ascii-numeric", "fileinto"];
        set "list" "";
        if envelope :domain "from" "far.test" {
            if body :text :contains "digest" {
                if header :matches "subject" "Cheap *" { set "list" "${1}"; }
                if header :count "ge" :comparator "i;ascii-numeric" "to" "1" {
                    fileinto "lists/${list}";
                }
            }
        }"#;
    let o = run(src, MSG, &h);
    assert_eq!(
        o.actions,
        [Action::FileInto {
            folder: "lists/pills".into(),
            flags: vec![],
            create: false,
            special_use: None,
            message: 0
        }]
    );
}

#[test]
fn vacation_once_per_sender() {
    let h = FakeHost::default();
    let src = r#"require "vacation"; vacation :days 3 :subject "Away" "Back on Monday.";"#;
    let o = run(src, MSG, &h);
    // A list message gets no reply; the same message without List-Id does.
    assert!(o.actions.iter().all(|a| !matches!(a, Action::Reply { .. })));
    let plain = b"From: bob@far.test\r\nTo: alice@example.test\r\nSubject: Hi\r\n\
Message-ID: <2@far.test>\r\n\r\nhello\r\n";
    let o = run(src, plain, &h);
    let reply = o
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Reply { to, message } => Some((to.clone(), *message)),
            _ => None,
        })
        .expect("a reply");
    assert_eq!(reply.0, "bob@far.test");
    let text = String::from_utf8_lossy(&o.messages[reply.1 - 1]).to_string();
    assert!(text.contains("Subject: Away"), "{text}");
    assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
    assert!(text.contains("In-Reply-To: <2@far.test>"), "{text}");
    assert!(text.contains("Back on Monday."), "{text}");
    assert!(o.actions.contains(&Action::Keep {
        flags: vec![],
        message: 0
    }));
    assert_eq!(*h.seen.borrow().values().next().unwrap(), 3 * 86400);
    // The second message from the same sender within the days gets none.
    let o = run(src, plain, &h);
    assert!(o.actions.iter().all(|a| !matches!(a, Action::Reply { .. })));
    // Auto-submitted mail never gets one.
    let auto = b"From: carol@far.test\r\nTo: alice@example.test\r\nAuto-Submitted: auto-replied\r\n\r\nx\r\n";
    let mut e = env();
    e.from = "carol@far.test".into();
    let en = engine();
    let o = en.run_bytes(en.compile(src).unwrap(), auto, &e, &h);
    assert!(o.actions.iter().all(|a| !matches!(a, Action::Reply { .. })));
}

#[test]
fn mailbox_include_and_errors_keep() {
    let mut h = FakeHost {
        mailboxes: vec!["INBOX", "Work"],
        ..Default::default()
    };
    h.scripts
        .insert("lib", r#"require "fileinto"; fileinto "Work";"#);
    let o = run(
        r#"require ["mailbox", "fileinto"];
           if mailboxexists "Work" { fileinto :create "Work/Old"; }"#,
        MSG,
        &h,
    );
    assert!(matches!(
        &o.actions[..],
        [Action::FileInto { create: true, .. }]
    ));
    let o = run(r#"require "include"; include :personal "lib";"#, MSG, &h);
    assert!(
        matches!(&o.actions[..], [Action::FileInto { folder, .. }] if folder == "Work"),
        "{o:?}"
    );
    let o = run(
        r#"require "include"; include :personal "missing";"#,
        MSG,
        &h,
    );
    assert!(o.error.is_some());
    assert_eq!(
        o.actions,
        [Action::Keep {
            flags: vec![],
            message: 0
        }],
        "an error keeps the message"
    );
    // A script past the instruction limit stops and keeps the message.
    let mut l = Limits::from(&postern_config::Sieve::default());
    l.max_instructions = 5;
    let e = Engine::new(&l, "mx.test");
    let s = e
        .compile(r#"require "fileinto"; if true {} if true {} if true {} if true {} fileinto "X";"#)
        .unwrap();
    let o = e.run_bytes(s, MSG, &env(), &h);
    assert!(o.error.unwrap().contains("max_instructions"));
    assert_eq!(o.actions.len(), 1);
}

#[test]
fn compile_refuses_what_is_not_offered() {
    let e = engine();
    let err = e.compile(r#"require "enotify"; keep;"#).unwrap_err();
    assert!(err.contains("enotify"), "{err}");
    assert!(e.compile("if true { keep ").is_err());
    assert!(e.compile(r#"require "nonsense"; keep;"#).is_err());
    let ext = e.extensions();
    for x in [
        "fileinto",
        "vacation",
        "imap4flags",
        "envelope",
        "body",
        "include",
        "date",
    ] {
        assert!(ext.split(' ').any(|w| w == x), "{x} in {ext}");
    }
    assert!(!ext.contains("enotify"));
}

#[test]
fn editheader_gives_an_edited_copy() {
    let h = FakeHost::default();
    let o = run(
        r#"require ["editheader", "fileinto"]; addheader "X-Filtered" "yes"; fileinto "F";"#,
        MSG,
        &h,
    );
    let Some(Action::FileInto { message, .. }) = o.actions.first() else {
        panic!("{o:?}")
    };
    assert!(*message > 0);
    let text = String::from_utf8_lossy(&o.messages[message - 1]).to_string();
    assert!(text.starts_with("X-Filtered: yes\r\n"), "{text}");
    assert!(text.contains("Subject: Cheap pills"));
}

#[test]
fn no_vacation_for_automatic_or_bulk_mail() {
    let src = r#"require "vacation"; vacation "Away.";"#;
    for extra in [
        "Auto-Submitted: auto-generated\r\n",
        "Auto-Submitted: Auto-Replied; owner-email=x\r\n",
        "Precedence: bulk\r\n",
        "Precedence: junk\r\n",
        "X-Auto-Response-Suppress: OOF, DR\r\n",
        "List-Unsubscribe: <mailto:u@far.test>\r\n",
    ] {
        let h = FakeHost::default();
        let m = format!(
            "From: carol@far.test\r\nTo: alice@example.test\r\nSubject: x\r\n{extra}\r\nhi\r\n"
        );
        let o = run(src, m.as_bytes(), &h);
        assert!(
            o.actions.iter().all(|a| !matches!(a, Action::Reply { .. })),
            "{extra}"
        );
        assert!(h.seen.borrow().is_empty(), "nothing remembered for {extra}");
    }
    let h = FakeHost::default();
    let m = "From: carol@far.test\r\nTo: alice@example.test\r\nAuto-Submitted: no\r\n\r\nhi\r\n";
    let o = run(src, m.as_bytes(), &h);
    assert!(o.actions.iter().any(|a| matches!(a, Action::Reply { .. })));
}
