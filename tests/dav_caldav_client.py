"""python3-caldav (Debian's, run by Debian's python3) against a Postern server: the steps of
tests/test_dav.py that need the library. Prints what it saw as one JSON object.

Usage: dav_caldav_client.py BASE_URL USER PASSWORD STEP
"""

import json
import sys
from datetime import datetime, timezone

import caldav

BASE, USER, PASSWORD, STEP = sys.argv[1:5]

WEEKLY = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//postern tests//EN
BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
UID:standup@postern.test
DTSTAMP:20260301T000000Z
DTSTART;TZID=Europe/Berlin:20260316T090000
DTEND;TZID=Europe/Berlin:20260316T093000
RRULE:FREQ=WEEKLY;COUNT=10
SUMMARY:Standup
END:VEVENT
END:VCALENDAR
"""


def single(uid, summary, day):
    return f"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//postern tests//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T000000Z
DTSTART:{day}T100000Z
DTEND:{day}T110000Z
SUMMARY:{summary}
END:VEVENT
END:VCALENDAR
"""


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc)


def names(objs):
    return sorted(str(o.url).rsplit("/", 1)[1] for o in objs)


def summaries(objs):
    out = []
    for o in objs:
        for c in o.icalendar_instance.walk("VEVENT"):
            out.append(str(c.get("SUMMARY")))
    return sorted(out)


client = caldav.DAVClient(url=BASE + "/.well-known/caldav", username=USER, password=PASSWORD,
                          ssl_verify_cert=False)
principal = client.principal()
seen = {}

if STEP == "calendars":
    seen["principal"] = str(principal.url)
    seen["before"] = sorted(c.name or "" for c in principal.calendars())
    work = principal.make_calendar(name="Work", cal_id="work")
    seen["after"] = sorted(c.name or "" for c in principal.calendars())
    work.save_event(single("lunch@postern.test", "Lunch", "20260110"))
    work.save_event(WEEKLY)
    # A time range that meets only the recurring event's fourth instance, 30 March 09:00 in
    # Berlin: 07:00Z in summer time. An hour later (where 09:00 CET would be) meets nothing.
    seen["summer"] = names(work.date_search(utc(2026, 3, 30, 7, 0), utc(2026, 3, 30, 7, 15), expand=False))
    seen["summer_wrong_hour"] = names(work.date_search(utc(2026, 3, 30, 8, 0), utc(2026, 3, 30, 8, 15), expand=False))
    seen["winter"] = names(work.date_search(utc(2026, 3, 23, 8, 0), utc(2026, 3, 23, 8, 15), expand=False))
    seen["after_count"] = names(work.date_search(utc(2026, 5, 25), utc(2026, 6, 1), expand=False))
    seen["january"] = summaries(work.date_search(utc(2026, 1, 10), utc(2026, 1, 11), expand=False))
    expanded = work.search(start=utc(2026, 3, 23), end=utc(2026, 4, 7), event=True, expand=True)
    seen["instances"] = sorted(
        str(c.get("DTSTART").dt.astimezone(timezone.utc).isoformat())
        for o in expanded for c in o.icalendar_instance.walk("VEVENT"))
    ev = work.event_by_uid("lunch@postern.test")
    seen["lunch"] = summaries([ev])
    ev.delete()
    seen["after_delete"] = sorted(summaries(work.events()))
elif STEP == "sync":
    cal = principal.calendar(cal_id="default")
    cal.save_event(single("a@postern.test", "A", "20260201"))
    cal.save_event(single("b@postern.test", "B", "20260202"))
    first = cal.objects_by_sync_token(load_objects=True)
    seen["first"] = summaries(first)
    token = first.sync_token
    a = cal.event_by_uid("a@postern.test")
    a.data = single("a@postern.test", "A changed", "20260201")
    a.save()
    cal.event_by_uid("b@postern.test").delete()
    cal.save_event(single("c@postern.test", "C", "20260203"))
    second = cal.objects_by_sync_token(sync_token=token, load_objects=True)
    seen["second"] = names(second)
    seen["second_loaded"] = summaries([o for o in second if o.data])
    seen["token_changed"] = second.sync_token != token
    third = cal.objects_by_sync_token(sync_token=second.sync_token, load_objects=False)
    seen["third"] = names(third)
print(json.dumps(seen))
