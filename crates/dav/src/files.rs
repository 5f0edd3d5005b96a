//! Whole calendars and address books as files (`postern dav export|import`): an .ics file
//! is one VCALENDAR with every object and the time zones they use; a .vcf file is the vCards
//! one after another. Work on content lines, so what clients stored is kept as it was.

/// Content lines, unfolded (RFC 5545 3.1): folds are rejoined so BEGIN/END are seen.
pub(crate) fn lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in text.split('\n') {
        let l = l.strip_suffix('\r').unwrap_or(l);
        if (l.starts_with(' ') || l.starts_with('\t'))
            && let Some(last) = out.last_mut()
        {
            last.push_str(&l[1..]);
        } else if !l.is_empty() {
            out.push(l.to_string());
        }
    }
    out
}

fn is(line: &str, what: &str) -> bool {
    line.len() >= what.len() && line[..what.len()].eq_ignore_ascii_case(what)
}

/// The blocks `BEGIN:X` .. `END:X` directly inside the outermost one, with their kinds.
pub(crate) fn blocks(lines: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur: Option<(String, Vec<String>)> = None;
    for l in lines {
        let begin = is(l, "BEGIN:");
        let end = is(l, "END:");
        if begin {
            depth += 1;
            if depth == 2 {
                cur = Some((l[6..].trim().to_ascii_uppercase(), Vec::new()));
            }
        }
        if let Some((_, body)) = cur.as_mut() {
            body.push(l.clone());
        }
        if end {
            if depth == 2
                && let Some(b) = cur.take()
            {
                out.push(b);
            }
            depth -= 1;
        }
    }
    out
}

fn property<'a>(block: &'a [String], name: &str) -> Option<&'a str> {
    block.iter().skip(1).find_map(|l| {
        let head = l.split([':', ';']).next()?;
        if head.eq_ignore_ascii_case(name) {
            l.split_once(':').map(|(_, v)| v.trim())
        } else {
            None
        }
    })
}

const HEAD: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Postern//CalDAV//EN\r\n";

/// One .ics file as calendar objects: (UID, object with the time zones of the file).
pub fn split_calendar(text: &str) -> Result<Vec<(String, String)>, String> {
    let all = lines(text);
    if !all
        .first()
        .is_some_and(|l| l.eq_ignore_ascii_case("BEGIN:VCALENDAR"))
    {
        return Err("the file does not start with BEGIN:VCALENDAR".into());
    }
    let parts = blocks(&all);
    let zones: Vec<&Vec<String>> = parts
        .iter()
        .filter(|(k, _)| k == "VTIMEZONE")
        .map(|(_, b)| b)
        .collect();
    let mut objects: Vec<(String, Vec<&Vec<String>>)> = Vec::new();
    for (kind, b) in &parts {
        if kind == "VTIMEZONE" {
            continue;
        }
        let uid = property(b, "UID")
            .ok_or_else(|| format!("a {kind} has no UID"))?
            .to_string();
        match objects.iter_mut().find(|(u, _)| *u == uid) {
            Some((_, v)) => v.push(b),
            None => objects.push((uid, vec![b])),
        }
    }
    Ok(objects
        .into_iter()
        .map(|(uid, comps)| {
            let mut s = HEAD.to_string();
            for z in &zones {
                for l in z.iter() {
                    s.push_str(l);
                    s.push_str("\r\n");
                }
            }
            for c in comps {
                for l in c {
                    s.push_str(l);
                    s.push_str("\r\n");
                }
            }
            s.push_str("END:VCALENDAR\r\n");
            (uid, s)
        })
        .collect())
}

/// Calendar objects as one .ics file, each time zone once.
pub fn merge_calendar<'a>(objects: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut zones: Vec<(String, Vec<String>)> = Vec::new();
    let mut comps: Vec<Vec<String>> = Vec::new();
    for o in objects {
        let text = String::from_utf8_lossy(o);
        for (kind, b) in blocks(&lines(&text)) {
            if kind == "VTIMEZONE" {
                let id = property(&b, "TZID").unwrap_or("").to_string();
                if !zones.iter().any(|(z, _)| *z == id) {
                    zones.push((id, b));
                }
            } else {
                comps.push(b);
            }
        }
    }
    let mut s = HEAD.to_string();
    for b in zones.iter().map(|(_, b)| b).chain(comps.iter()) {
        for l in b {
            s.push_str(l);
            s.push_str("\r\n");
        }
    }
    s.push_str("END:VCALENDAR\r\n");
    s
}

/// One .vcf file as vCards: (UID or "", the card).
pub fn split_vcards(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for l in lines(text) {
        if l.eq_ignore_ascii_case("BEGIN:VCARD") {
            cur = Some(Vec::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push(l.clone());
        }
        if l.eq_ignore_ascii_case("END:VCARD")
            && let Some(c) = cur.take()
        {
            let uid = property(&c, "UID").unwrap_or("").to_string();
            out.push((uid, c.iter().map(|l| format!("{l}\r\n")).collect()));
        }
    }
    if out.is_empty() {
        return Err("the file holds no BEGIN:VCARD".into());
    }
    Ok(out)
}

/// A resource name for an imported object: its UID when that makes a plain name.
pub fn resource_name(uid: &str, ext: &str, n: usize) -> String {
    let plain = !uid.is_empty()
        && uid.len() <= 200
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c));
    if plain {
        format!("{uid}.{ext}")
    } else {
        format!("imported-{n}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::WEEKLY_BERLIN;

    #[test]
    fn a_calendar_file_splits_by_uid_and_merges_back() {
        let two = WEEKLY_BERLIN.replace(
            "END:VEVENT\r\nEND:VCALENDAR",
            "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:other\r\nDTSTART:20260101T000000Z\r\n\
             SUMMARY:long line\r\n  folded\r\nEND:VEVENT\r\nEND:VCALENDAR",
        );
        let parts = split_calendar(&two).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "weekly-1");
        assert_eq!(parts[1].0, "other");
        for (_, p) in &parts {
            // Each is a calendar object on its own, with the file's time zone.
            let a = crate::content::analyze_calendar(p.as_bytes(), 100).unwrap();
            assert!(p.contains("TZID:Europe/Berlin"));
            assert_eq!(a.component, "VEVENT");
        }
        assert!(parts[1].1.contains("SUMMARY:long line folded"));
        let merged = merge_calendar(parts.iter().map(|(_, p)| p.as_bytes()));
        assert_eq!(merged.matches("BEGIN:VTIMEZONE").count(), 1);
        assert_eq!(merged.matches("BEGIN:VEVENT").count(), 2);
        assert_eq!(split_calendar(&merged).unwrap().len(), 2);
        assert!(split_calendar("BEGIN:VCARD\r\nEND:VCARD\r\n").is_err());
        let no_uid =
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        assert!(split_calendar(no_uid).unwrap_err().contains("UID"));
    }

    #[test]
    fn vcards_and_names() {
        let f = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:A\r\nEND:VCARD\r\n\
                 BEGIN:VCARD\r\nVERSION:4.0\r\nFN:B\r\nEND:VCARD\r\n";
        let cards = split_vcards(f).unwrap();
        assert_eq!(cards.len(), 2);
        assert_eq!((cards[0].0.as_str(), cards[1].0.as_str()), ("a", ""));
        assert!(cards[1].1.starts_with("BEGIN:VCARD\r\nVERSION:4.0"));
        assert!(split_vcards("nothing").is_err());
        assert_eq!(resource_name("abc-1@x", "ics", 3), "abc-1@x.ics");
        assert_eq!(resource_name("a/b", "ics", 3), "imported-3.ics");
        assert_eq!(resource_name("", "vcf", 1), "imported-1.vcf");
    }
}
