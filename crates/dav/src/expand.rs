//! CALDAV:expand (RFC 4791 9.6.5): a recurring object's instances within a range, each a
//! component of its own in UTC, with its RECURRENCE-ID and without the rules.

use calcard::common::timezone::Tz;

use crate::content::{format_utc, meets, parse_calendar};
use crate::files::{blocks, lines};

/// Properties an expanded instance gets anew or loses.
const REPLACED: &[&str] = &[
    "DTSTART",
    "DTEND",
    "DURATION",
    "RRULE",
    "RDATE",
    "EXDATE",
    "EXRULE",
    "RECURRENCE-ID",
];

fn name_of(line: &str) -> String {
    line.split([':', ';'])
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

fn is_date_only(block: &[String]) -> bool {
    block
        .iter()
        .find(|l| name_of(l) == "DTSTART")
        .is_some_and(|l| l.to_ascii_uppercase().contains("VALUE=DATE") && !l.contains('T'))
}

fn date(t: i64) -> String {
    format_utc(t)[..8].to_string()
}

/// The object with its instances in `[from, to)` in place of its rules; the object as it is
/// when it cannot be read that way.
pub fn expand(data: &[u8], range: (i64, i64), max_instances: usize) -> Vec<u8> {
    let Ok(cal) = parse_calendar(data) else {
        return data.to_vec();
    };
    let text = String::from_utf8_lossy(data);
    let parts = blocks(&lines(&text));
    let ids = &cal.components[0].component_ids;
    if ids.len() != parts.len() {
        return data.to_vec();
    }
    let recurs = parts.iter().any(|(_, b)| {
        b.iter()
            .any(|l| matches!(name_of(l).as_str(), "RRULE" | "RDATE" | "RECURRENCE-ID"))
    });
    let mut events = cal.expand_dates(Tz::UTC, max_instances.max(1)).events;
    events.sort_by_key(|e| e.timestamps());
    let mut out =
        String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Postern//CalDAV//EN\r\n");
    for ev in &events {
        let (s, e) = ev.timestamps();
        if !meets(s, e, range.0, range.1) {
            continue;
        }
        let Some(i) = ids.iter().position(|&id| id == ev.comp_id) else {
            continue;
        };
        let (kind, block) = &parts[i];
        if kind == "VTIMEZONE" {
            continue;
        }
        let all_day = is_date_only(block);
        let stamp = |t: i64| {
            if all_day {
                format!(";VALUE=DATE:{}", date(t))
            } else {
                format!(":{}", format_utc(t))
            }
        };
        let overridden = block.iter().any(|l| name_of(l) == "RECURRENCE-ID");
        let mut depth = 0;
        for l in block {
            let upper = l.to_ascii_uppercase();
            if upper.starts_with("END:") {
                depth -= 1;
            }
            if depth == 1 && REPLACED.contains(&name_of(l).as_str()) {
                // An exception keeps the occurrence it replaces, in UTC.
                if name_of(l) == "RECURRENCE-ID" && overridden {
                    out.push_str(&format!(
                        "RECURRENCE-ID{}\r\n",
                        recurrence_id(&cal, ev.comp_id, all_day).unwrap_or_else(|| stamp(s))
                    ));
                }
            } else {
                out.push_str(l);
                out.push_str("\r\n");
            }
            if upper.starts_with("BEGIN:") {
                depth += 1;
                if depth == 1 {
                    out.push_str(&format!("DTSTART{}\r\n", stamp(s)));
                    if e > s {
                        out.push_str(&format!("DTEND{}\r\n", stamp(e)));
                    }
                    if recurs && !overridden {
                        out.push_str(&format!("RECURRENCE-ID{}\r\n", stamp(s)));
                    }
                }
            }
        }
    }
    out.push_str("END:VCALENDAR\r\n");
    out.into_bytes()
}

/// An exception's RECURRENCE-ID, in UTC.
fn recurrence_id(cal: &calcard::icalendar::ICalendar, comp: u32, all_day: bool) -> Option<String> {
    use calcard::icalendar::ICalendarProperty;
    let c = cal.components.get(comp as usize)?;
    let e = c.property(&ICalendarProperty::RecurrenceId)?;
    let tzid = e
        .parameters(&calcard::icalendar::ICalendarParameterName::Tzid)
        .next()
        .and_then(|p| p.as_text());
    let tz = tzid
        .and_then(|id| cal.build_tz_resolver().resolve(id))
        .unwrap_or(Tz::UTC);
    let t = e
        .values
        .first()?
        .as_partial_date_time()?
        .to_date_time_with_tz(tz)?
        .timestamp();
    Some(if all_day {
        format!(";VALUE=DATE:{}", date(t))
    } else {
        format!(":{}", format_utc(t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::parse_utc;
    use crate::content::tests::WEEKLY_BERLIN;

    #[test]
    fn instances_in_utc_across_daylight_saving_time() {
        let range = (
            parse_utc("20260323T000000Z").unwrap(),
            parse_utc("20260407T000000Z").unwrap(),
        );
        let out = String::from_utf8(expand(WEEKLY_BERLIN.as_bytes(), range, 100)).unwrap();
        assert_eq!(out.matches("BEGIN:VEVENT").count(), 3, "{out}");
        assert!(!out.contains("RRULE") && !out.contains("VTIMEZONE"));
        for (start, end) in [
            ("20260323T080000Z", "20260323T083000Z"),
            ("20260330T070000Z", "20260330T073000Z"),
            ("20260406T070000Z", "20260406T073000Z"),
        ] {
            assert!(
                out.contains(&format!(
                    "DTSTART:{start}\r\nDTEND:{end}\r\nRECURRENCE-ID:{start}\r\n"
                )),
                "{out}"
            );
        }
        assert_eq!(out.matches("SUMMARY:Standup").count(), 3);
        // What comes out is an object calcard reads, with one instance per component.
        let a = crate::content::analyze_calendar(out.as_bytes(), 100).unwrap();
        assert_eq!(a.uid, "weekly-1");
    }

    #[test]
    fn exceptions_keep_their_recurrence_id() {
        let moved = WEEKLY_BERLIN.replace(
            "END:VEVENT\r\nEND:VCALENDAR",
            "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:weekly-1\r\nDTSTAMP:20260301T000000Z\r\n\
             RECURRENCE-ID;TZID=Europe/Berlin:20260330T090000\r\n\
             DTSTART;TZID=Europe/Berlin:20260330T140000\r\nDTEND;TZID=Europe/Berlin:20260330T143000\r\n\
             SUMMARY:Moved\r\nEND:VEVENT\r\nEND:VCALENDAR",
        );
        let range = (
            parse_utc("20260330T000000Z").unwrap(),
            parse_utc("20260331T000000Z").unwrap(),
        );
        let out = String::from_utf8(expand(moved.as_bytes(), range, 100)).unwrap();
        assert_eq!(out.matches("BEGIN:VEVENT").count(), 1, "{out}");
        assert!(
            out.contains("DTSTART:20260330T120000Z\r\nDTEND:20260330T123000Z\r\n"),
            "{out}"
        );
        assert!(out.contains("RECURRENCE-ID:20260330T070000Z\r\n"), "{out}");
        assert!(out.contains("SUMMARY:Moved"));
    }
}
