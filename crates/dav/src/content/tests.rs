use super::*;

/// A weekly meeting at 09:00 in Berlin from Monday 16 March 2026: Central European Time until
/// 29 March, summer time after.
pub(crate) const WEEKLY_BERLIN: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//EN\r
BEGIN:VTIMEZONE\r
TZID:Europe/Berlin\r
BEGIN:DAYLIGHT\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
TZNAME:CEST\r
DTSTART:19700329T020000\r
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r
END:DAYLIGHT\r
BEGIN:STANDARD\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
TZNAME:CET\r
DTSTART:19701025T030000\r
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:weekly-1\r
DTSTAMP:20260301T000000Z\r
DTSTART;TZID=Europe/Berlin:20260316T090000\r
DTEND;TZID=Europe/Berlin:20260316T093000\r
RRULE:FREQ=WEEKLY;COUNT=10\r
SUMMARY:Standup\r
END:VEVENT\r
END:VCALENDAR\r
";

fn t(s: &str) -> i64 {
    parse_utc(s).unwrap()
}

fn event_filter(from: &str, to: &str) -> CompFilter {
    CompFilter {
        name: "VCALENDAR".into(),
        comps: vec![CompFilter {
            name: "VEVENT".into(),
            time_range: Some((t(from), t(to))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn analysis_finds_the_span_of_every_instance() {
    let a = analyze_calendar(WEEKLY_BERLIN.as_bytes(), 1000).unwrap();
    assert_eq!(a.component, "VEVENT");
    assert_eq!(a.uid, "weekly-1");
    // First: 16 March 09:00 CET (08:00Z); last of ten: 18 May 09:30 CEST (07:30Z).
    assert_eq!(a.start, Some(t("20260316T080000Z") - FLOATING_MARGIN));
    assert_eq!(a.end, Some(t("20260518T073000Z") + FLOATING_MARGIN));
    let open = WEEKLY_BERLIN.replace(";COUNT=10", "");
    let a = analyze_calendar(open.as_bytes(), 1000).unwrap();
    assert_eq!(a.end, None, "an unbounded recurrence is open-ended");
}

#[test]
fn time_ranges_follow_daylight_saving_time() {
    let data = WEEKLY_BERLIN.as_bytes();
    let m = |from, to| calendar_matches(data, &event_filter(from, to), 1000).unwrap();
    // 23 March, still winter: 09:00 is 08:00Z.
    assert!(m("20260323T080000Z", "20260323T081000Z"));
    assert!(!m("20260323T070000Z", "20260323T075959Z"));
    // 30 March, summer time: 09:00 is 07:00Z, and 08:00Z is past the meeting.
    assert!(m("20260330T070000Z", "20260330T071000Z"));
    assert!(!m("20260330T080000Z", "20260330T083000Z"));
    // Between two instances, and after the tenth.
    assert!(!m("20260324T000000Z", "20260329T000000Z"));
    assert!(!m("20260519T000000Z", "20270101T000000Z"));
    assert!(m("20260518T072000Z", "20260518T080000Z"));
}

#[test]
fn exceptions_and_excluded_dates() {
    let with_exdate = WEEKLY_BERLIN.replace(
        "RRULE:FREQ=WEEKLY;COUNT=10\r\n",
        "RRULE:FREQ=WEEKLY;COUNT=10\r\nEXDATE;TZID=Europe/Berlin:20260323T090000\r\n",
    );
    let f = event_filter("20260323T000000Z", "20260324T000000Z");
    assert!(!calendar_matches(with_exdate.as_bytes(), &f, 1000).unwrap());
    // The 30 March meeting moved to 14:00 (12:00Z).
    let moved = WEEKLY_BERLIN.replace(
        "END:VEVENT\r\nEND:VCALENDAR",
        "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:weekly-1\r\nDTSTAMP:20260301T000000Z\r\n\
         RECURRENCE-ID;TZID=Europe/Berlin:20260330T090000\r\n\
         DTSTART;TZID=Europe/Berlin:20260330T140000\r\nDTEND;TZID=Europe/Berlin:20260330T143000\r\n\
         SUMMARY:Moved\r\nEND:VEVENT\r\nEND:VCALENDAR",
    );
    let a = analyze_calendar(moved.as_bytes(), 1000).unwrap();
    assert_eq!(a.uid, "weekly-1");
    let m = |from, to| calendar_matches(moved.as_bytes(), &event_filter(from, to), 1000).unwrap();
    assert!(!m("20260330T070000Z", "20260330T071000Z"));
    assert!(m("20260330T120000Z", "20260330T121000Z"));
}

#[test]
fn the_instances_one_query_expands_are_limited() {
    let daily = WEEKLY_BERLIN.replace("FREQ=WEEKLY;COUNT=10", "FREQ=DAILY");
    let f = event_filter("20400101T000000Z", "20400102T000000Z");
    let e = calendar_matches(daily.as_bytes(), &f, 100).unwrap_err();
    assert!(e.contains("instances"), "{e}");
    assert!(calendar_matches(daily.as_bytes(), &f, 10_000).unwrap());
}

#[test]
fn objects_that_are_not_one_thing_are_refused() {
    assert!(analyze_calendar(b"not a calendar", 10).is_err());
    let two_uids = WEEKLY_BERLIN.replace(
        "END:VEVENT\r\nEND:VCALENDAR",
        "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:other\r\nDTSTART:20260101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR",
    );
    assert!(
        analyze_calendar(two_uids.as_bytes(), 10)
            .unwrap_err()
            .contains("UID")
    );
    let mixed = WEEKLY_BERLIN.replace(
        "END:VEVENT\r\nEND:VCALENDAR",
        "END:VEVENT\r\nBEGIN:VTODO\r\nUID:weekly-1\r\nEND:VTODO\r\nEND:VCALENDAR",
    );
    assert!(
        analyze_calendar(mixed.as_bytes(), 10)
            .unwrap_err()
            .contains("one kind")
    );
    let todo = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t1\r\nSUMMARY:x\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    let a = analyze_calendar(todo.as_bytes(), 10).unwrap();
    assert_eq!(
        (a.component.as_str(), a.start, a.end),
        ("VTODO", None, None)
    );
}

#[test]
fn text_and_property_filters() {
    let mut f = event_filter("20260301T000000Z", "20260401T000000Z");
    f.comps[0].props.push(PropFilter {
        name: "SUMMARY".into(),
        text_matches: vec![TextMatch {
            text: "STAND".into(),
            negate: false,
            match_type: MatchType::Contains,
            octet: false,
        }],
        ..Default::default()
    });
    assert!(calendar_matches(WEEKLY_BERLIN.as_bytes(), &f, 100).unwrap());
    f.comps[0].props[0].text_matches[0].negate = true;
    assert!(!calendar_matches(WEEKLY_BERLIN.as_bytes(), &f, 100).unwrap());
    let todo_filter = CompFilter {
        name: "VCALENDAR".into(),
        comps: vec![CompFilter {
            name: "VTODO".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(!calendar_matches(WEEKLY_BERLIN.as_bytes(), &todo_filter, 100).unwrap());
}

#[test]
fn free_busy_periods() {
    let p = busy_periods(
        WEEKLY_BERLIN.as_bytes(),
        (t("20260323T000000Z"), t("20260331T000000Z")),
        100,
    );
    assert_eq!(
        p,
        [
            (t("20260323T080000Z"), t("20260323T083000Z")),
            (t("20260330T070000Z"), t("20260330T073000Z")),
        ]
    );
    let free = WEEKLY_BERLIN.replace("SUMMARY:Standup", "TRANSP:TRANSPARENT");
    assert!(busy_periods(free.as_bytes(), (0, i64::MAX / 2), 100).is_empty());
}

const CARD: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-1\r\nFN:Jane Doe\r\nN:Doe;Jane;;;\r\n\
item1.EMAIL;TYPE=INTERNET:jane@example.test\r\nNOTE:line one\\nline two\r\n  continued\r\nEND:VCARD\r\n";

#[test]
fn vcards() {
    let a = analyze_vcard(CARD.as_bytes()).unwrap();
    assert_eq!((a.component.as_str(), a.uid.as_str()), ("VCARD", "card-1"));
    assert!(analyze_vcard(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n").is_err());
    let f = |name: &str, text: &str, mt| PropFilter {
        name: name.into(),
        text_matches: vec![TextMatch {
            text: text.into(),
            negate: false,
            match_type: mt,
            octet: false,
        }],
        ..Default::default()
    };
    let data = CARD.as_bytes();
    assert!(vcard_matches(
        data,
        &[f("FN", "jane", MatchType::StartsWith)],
        false
    ));
    assert!(vcard_matches(
        data,
        &[f("EMAIL", "@EXAMPLE.test", MatchType::EndsWith)],
        false
    ));
    assert!(!vcard_matches(
        data,
        &[f("FN", "john", MatchType::Contains)],
        false
    ));
    assert!(vcard_matches(
        data,
        &[f("NOTE", "two continued", MatchType::Contains)],
        false
    ));
    let both = [
        f("FN", "jane", MatchType::Contains),
        f("FN", "john", MatchType::Contains),
    ];
    assert!(vcard_matches(data, &both, false));
    assert!(!vcard_matches(data, &both, true));
    let missing = PropFilter {
        name: "TEL".into(),
        is_not_defined: true,
        ..Default::default()
    };
    assert!(vcard_matches(data, &[missing], true));
}
