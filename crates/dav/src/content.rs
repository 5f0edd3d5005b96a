//! What a stored iCalendar object or vCard is (RFC 4791 4.1, RFC 6352 5.1), and whether it
//! matches a query's filters (RFC 4791 9.7, RFC 6352 10.5). Recurrences are expanded by
//! calcard, in each event's own time zone.

use calcard::common::timezone::Tz;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarProperty, ICalendarValue,
};
use calcard::vcard::VCard;

/// What a resource's content says of it: what the store keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub component: String,
    pub uid: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// Floating times are read as UTC; the span kept for pre-filtering is widened by this much
/// each way so that a floating event is never filtered out in any zone.
const FLOATING_MARGIN: i64 = 86_400;

/// The components of an iCalendar object that carry its meaning (not its time zones).
fn top_components(cal: &ICalendar) -> Vec<(u32, &ICalendarComponent)> {
    let Some(root) = cal.components.first() else {
        return Vec::new();
    };
    root.component_ids
        .iter()
        .filter_map(|&id| cal.components.get(id as usize).map(|c| (id, c)))
        .filter(|(_, c)| c.component_type != ICalendarComponentType::VTimezone)
        .collect()
}

pub fn parse_calendar(data: &[u8]) -> Result<ICalendar, String> {
    let text = std::str::from_utf8(data).map_err(|_| "the calendar data is not UTF-8")?;
    let cal = ICalendar::parse(text).map_err(|_| "the calendar data is not iCalendar")?;
    if cal.components.first().map(|c| &c.component_type) != Some(&ICalendarComponentType::VCalendar)
    {
        return Err("the calendar data is not a VCALENDAR".into());
    }
    Ok(cal)
}

/// Whether the object's recurrences go on for ever.
fn unbounded(cal: &ICalendar) -> bool {
    top_components(cal).iter().any(|(_, c)| {
        c.entries
            .iter()
            .filter(|e| e.name == ICalendarProperty::Rrule)
            .any(|e| {
                e.values.iter().any(|v| match v {
                    ICalendarValue::RecurrenceRule(r) => r.until.is_none() && r.count.is_none(),
                    _ => false,
                })
            })
    })
}

/// Checks a calendar object resource (one kind of component, one UID) and finds its span.
pub fn analyze_calendar(data: &[u8], max_instances: usize) -> Result<Analysis, String> {
    let cal = parse_calendar(data)?;
    let comps = top_components(&cal);
    let Some((_, first)) = comps.first() else {
        return Err("the calendar object has no component".into());
    };
    let kind = first.component_type.clone();
    if comps.iter().any(|(_, c)| c.component_type != kind) {
        return Err("a calendar object resource holds one kind of component (RFC 4791 4.1)".into());
    }
    let uid = first.uid().unwrap_or("").to_string();
    if comps.iter().any(|(_, c)| c.uid().unwrap_or("") != uid) {
        return Err("the components of a calendar object share one UID (RFC 4791 4.1)".into());
    }
    if uid.is_empty() && kind.has_time_ranges() {
        return Err("the calendar object has no UID".into());
    }
    let expanded = cal.expand_dates(Tz::UTC, max_instances.max(1));
    let (mut start, mut end): (Option<i64>, Option<i64>) = (None, None);
    for ev in &expanded.events {
        let (s, e) = ev.timestamps();
        start = Some(start.map_or(s, |x| x.min(s)));
        end = Some(end.map_or(e.max(s), |x| x.max(e).max(s)));
    }
    if expanded.events.is_empty() || unbounded(&cal) || expanded.events.len() >= max_instances {
        end = None;
    }
    if expanded.events.is_empty() {
        start = None;
    }
    Ok(Analysis {
        component: kind.as_str().to_string(),
        uid,
        start: start.map(|s| s - FLOATING_MARGIN),
        end: end.map(|e| e + FLOATING_MARGIN),
    })
}

pub fn analyze_vcard(data: &[u8]) -> Result<Analysis, String> {
    let text = std::str::from_utf8(data).map_err(|_| "the vCard is not UTF-8")?;
    let card = VCard::parse(text).map_err(|_| "the data is not a vCard")?;
    Ok(Analysis {
        component: "VCARD".into(),
        uid: card.uid().unwrap_or("").to_string(),
        start: None,
        end: None,
    })
}

/// A text-match (RFC 4791 9.7.5, RFC 6352 10.5.4), compared in i;unicode-casemap (lower
/// case) unless the collation is i;octet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMatch {
    pub text: String,
    pub negate: bool,
    pub match_type: MatchType,
    pub octet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

impl TextMatch {
    pub fn matches(&self, value: &str) -> bool {
        let (v, t) = if self.octet {
            (value.to_string(), self.text.clone())
        } else {
            (value.to_lowercase(), self.text.to_lowercase())
        };
        let hit = match self.match_type {
            MatchType::Equals => v == t,
            MatchType::Contains => v.contains(&t),
            MatchType::StartsWith => v.starts_with(&t),
            MatchType::EndsWith => v.ends_with(&t),
        };
        hit != self.negate
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropFilter {
    pub name: String,
    pub is_not_defined: bool,
    pub text_matches: Vec<TextMatch>,
    /// CardDAV's test="allof" (default "anyof") over the text-matches.
    pub all_of: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompFilter {
    pub name: String,
    pub is_not_defined: bool,
    pub time_range: Option<(i64, i64)>,
    pub props: Vec<PropFilter>,
    pub comps: Vec<CompFilter>,
}

/// Whether an instance `[s, e)` meets the range `[from, to)` (RFC 4791 9.9: an instance of no
/// length meets the range it starts in).
pub(crate) fn meets(s: i64, e: i64, from: i64, to: i64) -> bool {
    if e <= s {
        s >= from && s < to
    } else {
        s < to && e > from
    }
}

/// What an expansion could tell of a component.
pub enum RangeCheck {
    Meets,
    Misses,
    /// The instances allowed ran out before the range was passed.
    Unknown,
}

fn component_meets(
    cal: &ICalendar,
    kind: &ICalendarComponentType,
    range: (i64, i64),
    max_instances: usize,
) -> RangeCheck {
    let expanded = cal.expand_dates(Tz::UTC, max_instances.max(1));
    let mut any = false;
    for ev in &expanded.events {
        let Some(c) = cal.components.get(ev.comp_id as usize) else {
            continue;
        };
        if &c.component_type != kind {
            continue;
        }
        any = true;
        let (s, e) = ev.timestamps();
        if meets(s, e, range.0, range.1) {
            return RangeCheck::Meets;
        }
    }
    if expanded.events.len() >= max_instances {
        return RangeCheck::Unknown;
    }
    // A to-do or journal entry without dates meets every range (RFC 4791 9.9).
    if !any && *kind != ICalendarComponentType::VEvent {
        return RangeCheck::Meets;
    }
    RangeCheck::Misses
}

fn entry_texts<'a>(c: &'a ICalendarComponent, name: &'a str) -> Vec<String> {
    c.entries
        .iter()
        .filter(|e| e.name.as_str().eq_ignore_ascii_case(name))
        .map(|e| {
            e.values
                .iter()
                .filter_map(|v| v.as_text())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn props_match(c: &ICalendarComponent, props: &[PropFilter]) -> bool {
    props.iter().all(|p| {
        let values = entry_texts(c, &p.name);
        if p.is_not_defined {
            return values.is_empty();
        }
        if values.is_empty() {
            return false;
        }
        p.text_matches.is_empty()
            || p.text_matches
                .iter()
                .all(|t| values.iter().any(|v| t.matches(v)))
    })
}

/// Whether a stored calendar object matches a calendar-query's filter (its VCALENDAR
/// comp-filter). `Err` when the instances allowed ran out before it could tell.
pub fn calendar_matches(
    data: &[u8],
    filter: &CompFilter,
    max_instances: usize,
) -> Result<bool, String> {
    let cal = parse_calendar(data)?;
    if filter.name != "VCALENDAR" {
        return Ok(false);
    }
    if filter.is_not_defined {
        return Ok(false);
    }
    for f in &filter.comps {
        let comps: Vec<&ICalendarComponent> = top_components(&cal)
            .into_iter()
            .filter(|(_, c)| c.component_type.as_str().eq_ignore_ascii_case(&f.name))
            .map(|(_, c)| c)
            .collect();
        if f.is_not_defined {
            if !comps.is_empty() {
                return Ok(false);
            }
            continue;
        }
        if comps.is_empty() {
            return Ok(false);
        }
        if let Some(range) = f.time_range {
            match component_meets(&cal, &comps[0].component_type, range, max_instances) {
                RangeCheck::Meets => {}
                RangeCheck::Misses => return Ok(false),
                RangeCheck::Unknown => {
                    return Err(format!(
                        "the recurrences of {} run past the instances one query expands",
                        comps[0].uid().unwrap_or("an object")
                    ));
                }
            }
        }
        let sub_ok = |c: &ICalendarComponent| {
            f.comps.iter().all(|sub| {
                let has = c.component_ids.iter().any(|&id| {
                    cal.components
                        .get(id as usize)
                        .is_some_and(|x| x.component_type.as_str().eq_ignore_ascii_case(&sub.name))
                });
                has != sub.is_not_defined
            })
        };
        if !comps.iter().any(|c| props_match(c, &f.props) && sub_ok(c)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Busy periods of a calendar object within a range (RFC 4791 7.10): its opaque, not
/// cancelled events' instances, clipped to the range.
pub fn busy_periods(data: &[u8], range: (i64, i64), max_instances: usize) -> Vec<(i64, i64)> {
    let Ok(cal) = parse_calendar(data) else {
        return Vec::new();
    };
    let expanded = cal.expand_dates(Tz::UTC, max_instances.max(1));
    let mut out = Vec::new();
    for ev in &expanded.events {
        let Some(c) = cal.components.get(ev.comp_id as usize) else {
            continue;
        };
        if c.component_type != ICalendarComponentType::VEvent {
            continue;
        }
        let transparent = entry_texts(c, "TRANSP")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("TRANSPARENT"));
        let cancelled = entry_texts(c, "STATUS")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("CANCELLED"));
        let transparent = transparent
            || matches!(
                c.transparency(),
                Some(calcard::icalendar::ICalendarTransparency::Transparent)
            );
        let cancelled = cancelled
            || matches!(
                c.status(),
                Some(calcard::icalendar::ICalendarStatus::Cancelled)
            );
        if transparent || cancelled {
            continue;
        }
        let (s, e) = ev.timestamps();
        if meets(s, e, range.0, range.1) && e > s {
            out.push((s.max(range.0), e.min(range.1)));
        }
    }
    out.sort_unstable();
    out
}

/// The content lines of a vCard: (name without group, value), unfolded.
fn vcard_lines(text: &str) -> Vec<(String, String)> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if (line.starts_with(' ') || line.starts_with('\t'))
            && let Some(last) = unfolded.last_mut()
        {
            last.push_str(&line[1..]);
        } else {
            unfolded.push(line.to_string());
        }
    }
    let mut out = Vec::new();
    for l in unfolded {
        // The value starts at the first colon outside a quoted parameter value.
        let mut quoted = false;
        let Some(colon) = l.char_indices().find_map(|(i, c)| {
            if c == '"' {
                quoted = !quoted;
            }
            (c == ':' && !quoted).then_some(i)
        }) else {
            continue;
        };
        let head = &l[..colon];
        let name = head.split(';').next().unwrap_or("");
        let name = name.rsplit('.').next().unwrap_or(name).to_ascii_uppercase();
        let value = l[colon + 1..]
            .replace("\\n", "\n")
            .replace("\\N", "\n")
            .replace("\\,", ",")
            .replace("\\;", ";")
            .replace("\\\\", "\\");
        out.push((name, value));
    }
    out
}

/// Whether a vCard matches an addressbook-query's prop-filters (`all_of`: each must).
pub fn vcard_matches(data: &[u8], filters: &[PropFilter], all_of: bool) -> bool {
    if filters.is_empty() {
        return true;
    }
    let text = String::from_utf8_lossy(data);
    let lines = vcard_lines(&text);
    let one = |p: &PropFilter| {
        let values: Vec<&str> = lines
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&p.name))
            .map(|(_, v)| v.as_str())
            .collect();
        if p.is_not_defined {
            return values.is_empty();
        }
        if values.is_empty() {
            return false;
        }
        if p.text_matches.is_empty() {
            return true;
        }
        let hit = |t: &TextMatch| values.iter().any(|v| t.matches(v));
        if p.all_of {
            p.text_matches.iter().all(hit)
        } else {
            p.text_matches.iter().any(hit)
        }
    };
    if all_of {
        filters.iter().all(one)
    } else {
        filters.iter().any(one)
    }
}

/// "20261204T000000Z" (RFC 4791 9.9) in Unix seconds.
pub fn parse_utc(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

pub fn format_utc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests;
