//! Response syntax: strings, literals, flags, dates, mailbox names, sequence sets.

use postern_store::Flags;

/// A string as a quoted string when it can be one, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() <= 1024
        && s.iter()
            .all(|&b| b >= 0x20 && b != 0x7f && b != b'\r' && b != b'\n');
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// OBJECTID (RFC 8474): a mailbox's id, kept through renames and never given to another.
pub fn mailbox_id(id: u64) -> String {
    format!("M{id}")
}

/// OBJECTID: a message's id, from its stored bytes (shared by its copies).
pub fn email_id(blob: u64) -> String {
    format!("E{blob}")
}

/// A mailbox name as the client expects it: UTF-8, or modified UTF-7 for older clients.
pub fn mailbox(out: &mut Vec<u8>, name: &str, utf8: bool) {
    if utf8 {
        string(out, name.as_bytes());
    } else {
        string(out, crate::utf7::encode(name).as_bytes());
    }
}

pub fn flags(out: &mut Vec<u8>, f: &Flags) {
    flags_recent(out, f, false);
}

/// FLAGS, with `\Recent` when the message is recent to this session (IMAP4rev1).
pub fn flags_recent(out: &mut Vec<u8>, f: &Flags, recent: bool) {
    out.push(b'(');
    let mut first = true;
    if recent {
        out.extend_from_slice(b"\\Recent");
        first = false;
    }
    for (bit, name) in Flags::SYSTEM {
        if f.has(bit) {
            if !first {
                out.push(b' ');
            }
            out.extend_from_slice(name.as_bytes());
            first = false;
        }
    }
    for k in &f.keywords {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(k.as_bytes());
        first = false;
    }
    out.push(b')');
}

/// Flag names to a `Flags` value; `\Recent` is ignored, unknown system flags are errors.
pub fn parse_flags(names: &[String]) -> Result<Flags, String> {
    let mut f = Flags::default();
    for n in names {
        if let Some(sys) = n.strip_prefix('\\') {
            if sys.eq_ignore_ascii_case("Recent") {
                continue;
            }
            match Flags::SYSTEM
                .iter()
                .find(|(_, name)| name[1..].eq_ignore_ascii_case(sys))
            {
                Some((bit, _)) => f.bits |= bit,
                None => return Err(format!("unknown system flag {n}")),
            }
        } else if !f.has_keyword(n) {
            f.keywords.push(n.clone());
        }
    }
    Ok(f)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the epoch to (year, month 1-12, day, h, m, s), UTC.
pub fn civil(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        (secs % 3600 / 60) as u32,
        (secs % 60) as u32,
    )
}

/// INTERNALDATE: "28-Nov-2026 10:20:25 +0000".
pub fn internal_date(t: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(t);
    format!(
        "\"{d:02}-{}-{y:04} {hh:02}:{mm:02}:{ss:02} +0000\"",
        MONTHS[m as usize - 1]
    )
}

/// A sorted list of numbers as a compact sequence set ("1:3,7").
pub fn seq_set(nums: &[u32]) -> String {
    let mut v: Vec<u32> = nums.to_vec();
    v.sort_unstable();
    v.dedup();
    seq_list(&v)
}

/// Numbers in the order given, as a sequence set whose ascending runs are ranges: ESORT's ALL
/// keeps the sort order (RFC 5267 3.2), and for ascending input this is `seq_set`.
pub fn seq_list(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && end.checked_add(1) == Some(nums[i + 1]) {
            i += 1;
            end = nums[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut o = Vec::new();
        string(&mut o, b"a \"b\"");
        assert_eq!(o, b"\"a \\\"b\\\"\"");
        let mut o = Vec::new();
        string(&mut o, b"a\r\nb");
        assert_eq!(o, b"{4}\r\na\r\nb");
        assert_eq!(internal_date(1795860025), "\"28-Nov-2026 10:00:25 +0000\"");
        assert_eq!(seq_set(&[5, 1, 2, 3, 9, 10]), "1:3,5,9:10");
        // Sort order kept: only ascending runs become ranges.
        assert_eq!(seq_list(&[5, 1, 2, 3, 9, 8]), "5,1:3,9,8");
        assert_eq!(seq_list(&[1, 2, 3, 5]), seq_set(&[1, 2, 3, 5]));
        assert_eq!(seq_list(&[u32::MAX, 1]), "4294967295,1");
        let f = parse_flags(&["\\Seen".into(), "\\recent".into(), "$Work".into()]).unwrap();
        let mut o = Vec::new();
        flags(&mut o, &f);
        assert_eq!(o, b"(\\Seen $Work)");
        assert!(parse_flags(&["\\Bogus".into()]).is_err());
    }
}
