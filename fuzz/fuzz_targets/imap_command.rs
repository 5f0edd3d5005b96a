//! IMAP command parsing: the literal marker that ends a line (which decides how many bytes
//! the server reads next), and whole commands with literals spliced in, as the server hands
//! them to the parser; in both UTF-8 modes; IMAP URLs. No panic, no runaway recursion.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some((n, _)) = postern_imap::trailing_literal(line) {
            let open = line.iter().rposition(|&b| b == b'{').unwrap();
            let digits: Vec<u8> = line[open + 1..]
                .iter()
                .copied()
                .filter(u8::is_ascii_digit)
                .collect();
            assert_eq!(
                std::str::from_utf8(&digits)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
                n
            );
        }
    }
    let _ = postern_imap::parse::parse(data, false);
    let (tag, _) = postern_imap::parse::parse(data, true);
    if let Some(t) = tag {
        // A tag is a non-empty run of the input's first bytes.
        assert!(!t.is_empty() && data.starts_with(t.as_bytes()));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = postern_imap::parse::parse_date_time(s);
        let _ = postern_imap::utf7::decode(s);
        // CATENATE's IMAP URLs and their sections.
        if let Ok(u) = postern_imap::url::parse(s)
            && let Some(section) = &u.section
        {
            let _ = postern_imap::parse::parse_section(section);
        }
    }
});
