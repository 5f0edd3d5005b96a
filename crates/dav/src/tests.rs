//! Requests through [`Dav::handle`] against a real embedded store.

use std::sync::Arc;

use postern_store::embedded::{EmbeddedStore, Options};
use postern_store::*;

use crate::xml::{CALDAV, DAV, Element, parse};
use crate::{Dav, Request, Response, Settings};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    account: Account,
    settings: Settings,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Options::default()).unwrap();
    store.domain_add("example.test").await.unwrap();
    let account = store
        .account_create(NewAccount {
            address: "ann@example.test".into(),
            password_hash: "$argon2id$fake".into(),
            quota_bytes: 0,
            quota_messages: 0,
            shared: false,
        })
        .await
        .unwrap();
    let mut settings = Settings::default();
    settings.limits.max_size = 4096;
    Fixture {
        _dir: dir,
        store,
        account,
        settings,
    }
}

impl Fixture {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let dav = Dav {
            store: self.store.as_ref(),
            account: &self.account,
            settings: &self.settings,
        };
        let h = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_string())
        };
        dav.handle(Request {
            method: method.into(),
            path: path.into(),
            depth: h("depth"),
            if_match: h("if-match"),
            if_none_match: h("if-none-match"),
            destination: h("destination"),
            overwrite: h("overwrite"),
            body: body.as_bytes().to_vec(),
        })
        .await
    }

    async fn xml(&self, method: &str, path: &str, body: &str, depth: &str) -> Element {
        let r = self.send(method, path, body, &[("depth", depth)]).await;
        assert_eq!(r.status, 207, "{}", String::from_utf8_lossy(&r.body));
        parse(&r.body).unwrap()
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn hrefs(ms: &Element) -> Vec<String> {
    ms.children_named(DAV, "response")
        .map(|r| r.child(DAV, "href").unwrap().text.clone())
        .collect()
}

/// The text of a property found in the response for `href`.
fn prop<'a>(ms: &'a Element, href: &str, ns: &str, name: &str) -> Option<&'a Element> {
    let r = ms
        .children_named(DAV, "response")
        .find(|r| r.child(DAV, "href").unwrap().text == href)?;
    r.children_named(DAV, "propstat")
        .filter(|p| p.child(DAV, "status").unwrap().text.contains(" 200 "))
        .find_map(|p| p.child(DAV, "prop").unwrap().child(ns, name))
}

const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\n\
UID:e1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260110T100000Z\r\nDTEND:20260110T110000Z\r\n\
SUMMARY:Lunch\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[tokio::test]
async fn discovery_leads_from_the_root_to_the_default_collections() {
    let f = fixture().await;
    let ms = f
        .xml(
            "PROPFIND",
            "/dav/",
            r#"<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>"#,
            "0",
        )
        .await;
    let p = prop(&ms, "/dav/", DAV, "current-user-principal").unwrap();
    assert_eq!(
        p.child(DAV, "href").unwrap().text,
        "/dav/principals/ann@example.test/"
    );
    let ms = f
        .xml(
            "PROPFIND",
            "/dav/principals/ann%40example.test/",
            r#"<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"
                 xmlns:card="urn:ietf:params:xml:ns:carddav"><d:prop><c:calendar-home-set/>
                 <card:addressbook-home-set/><d:nothing-like-this/></d:prop></d:propfind>"#,
            "0",
        )
        .await;
    let me = "/dav/principals/ann@example.test/";
    assert_eq!(
        prop(&ms, me, CALDAV, "calendar-home-set")
            .unwrap()
            .child(DAV, "href")
            .unwrap()
            .text,
        "/dav/calendars/ann@example.test/"
    );
    assert!(prop(&ms, me, DAV, "nothing-like-this").is_none());
    let ms = f
        .xml("PROPFIND", "/dav/calendars/ann@example.test/", "", "1")
        .await;
    assert_eq!(
        hrefs(&ms),
        [
            "/dav/calendars/ann@example.test/",
            "/dav/calendars/ann@example.test/default/"
        ]
    );
    let cal = "/dav/calendars/ann@example.test/default/";
    assert!(
        prop(&ms, cal, DAV, "resourcetype")
            .unwrap()
            .child(CALDAV, "calendar")
            .is_some()
    );
    assert!(prop(&ms, cal, crate::xml::CALSERVER, "getctag").is_some());
    let books = f
        .xml("PROPFIND", "/dav/addressbooks/ann@example.test/", "", "1")
        .await;
    // The default address book, and the domain's.
    assert_eq!(hrefs(&books).len(), 3);
    // Another account's space is not this one's.
    let r = f
        .send("PROPFIND", "/dav/calendars/bob@example.test/", "", &[])
        .await;
    assert_eq!(r.status, 403);
    let r = f.send("OPTIONS", "/dav/", "", &[]).await;
    assert!(header(&r, "dav").unwrap().contains("calendar-access"));
}

#[tokio::test]
async fn resources_are_written_with_etags_and_conditions() {
    let f = fixture().await;
    let href = "/dav/calendars/ann@example.test/default/e1.ics";
    let r = f.send("PUT", href, EVENT, &[("if-none-match", "*")]).await;
    assert_eq!(r.status, 201);
    let etag = header(&r, "etag").unwrap().to_string();
    let r = f.send("PUT", href, EVENT, &[("if-none-match", "*")]).await;
    assert_eq!(r.status, 412);
    let r = f.send("GET", href, "", &[]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, EVENT.as_bytes()));
    assert_eq!(header(&r, "etag"), Some(etag.as_str()));
    let changed = EVENT.replace("Lunch", "Dinner");
    let r = f
        .send("PUT", href, &changed, &[("if-match", "\"stale\"")])
        .await;
    assert_eq!(r.status, 412);
    let r = f.send("PUT", href, &changed, &[("if-match", &etag)]).await;
    assert_eq!(r.status, 204);
    assert_ne!(header(&r, "etag"), Some(etag.as_str()));
    // One UID per calendar; data that is not iCalendar; a component the calendar does not take.
    let r = f
        .send(
            "PUT",
            "/dav/calendars/ann@example.test/default/copy.ics",
            EVENT,
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("no-uid-conflict"));
    let r = f
        .send(
            "PUT",
            "/dav/calendars/ann@example.test/default/x.ics",
            "hello",
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("valid-calendar-data"));
    let big = EVENT.replace("Lunch", &"x".repeat(5000));
    let r = f
        .send(
            "PUT",
            "/dav/calendars/ann@example.test/default/big.ics",
            &big,
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("dav.max_resource_size"));
    let r = f
        .send(
            "PUT",
            "/dav/calendars/ann@example.test/nowhere/x.ics",
            EVENT,
            &[],
        )
        .await;
    assert_eq!(r.status, 409);
    let r = f
        .send("DELETE", href, "", &[("if-match", "\"stale\"")])
        .await;
    assert_eq!(r.status, 412);
    let r = f.send("DELETE", href, "", &[]).await;
    assert_eq!(r.status, 204);
    let r = f.send("GET", href, "", &[]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn calendars_are_made_changed_and_queried() {
    let f = fixture().await;
    let work = "/dav/calendars/ann@example.test/work/";
    let r = f
        .send(
            "MKCALENDAR",
            work,
            r#"<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop>
               <d:displayname>Work</d:displayname>
               <c:supported-calendar-component-set><c:comp name="VEVENT"/></c:supported-calendar-component-set>
               </d:prop></d:set></c:mkcalendar>"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(f.send("MKCALENDAR", work, "", &[]).await.status, 405);
    let r = f
        .send(
            "PROPPATCH",
            work,
            r#"<d:propertyupdate xmlns:d="DAV:" xmlns:i="http://apple.com/ns/ical/" xmlns:x="urn:x">
               <d:set><d:prop><i:calendar-color>#00FF00</i:calendar-color><x:order>3</x:order></d:prop></d:set>
               </d:propertyupdate>"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 207);
    let ms = f.xml("PROPFIND", work, "", "0").await;
    assert_eq!(prop(&ms, work, DAV, "displayname").unwrap().text, "Work");
    assert_eq!(
        prop(&ms, work, crate::xml::APPLE, "calendar-color")
            .unwrap()
            .text,
        "#00FF00"
    );
    assert_eq!(prop(&ms, work, "urn:x", "order").unwrap().text, "3");
    let todo =
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    let r = f.send("PUT", &format!("{work}t.ics"), todo, &[]).await;
    assert_eq!(r.status, 403, "a VEVENT-only calendar takes no VTODO");
    let protected = f
        .send(
            "PROPPATCH",
            work,
            r#"<d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:getetag>x</d:getetag>
               <d:displayname>No</d:displayname></d:prop></d:set></d:propertyupdate>"#,
            &[],
        )
        .await;
    let body = String::from_utf8_lossy(&protected.body).to_string();
    assert!(
        body.contains("403 Forbidden") && body.contains("424 Failed Dependency"),
        "{body}"
    );
    f.send("PUT", &format!("{work}e1.ics"), EVENT, &[]).await;
    let weekly = crate::content::tests::WEEKLY_BERLIN;
    f.send("PUT", &format!("{work}weekly.ics"), weekly, &[])
        .await;
    let query = |from: &str, to: &str| {
        format!(
            r#"<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
              <d:prop><d:getetag/><c:calendar-data/></d:prop><c:filter><c:comp-filter name="VCALENDAR">
              <c:comp-filter name="VEVENT"><c:time-range start="{from}" end="{to}"/></c:comp-filter>
              </c:comp-filter></c:filter></c:calendar-query>"#
        )
    };
    let ms = f
        .xml(
            "REPORT",
            work,
            &query("20260110T000000Z", "20260111T000000Z"),
            "1",
        )
        .await;
    assert_eq!(hrefs(&ms), [format!("{work}e1.ics")]);
    let data = prop(&ms, &format!("{work}e1.ics"), CALDAV, "calendar-data").unwrap();
    assert_eq!(data.text, EVENT);
    // The recurring event's fourth instance, in summer time.
    let ms = f
        .xml(
            "REPORT",
            work,
            &query("20260406T070000Z", "20260406T071500Z"),
            "1",
        )
        .await;
    assert_eq!(hrefs(&ms), [format!("{work}weekly.ics")]);
    let ms = f
        .xml(
            "REPORT",
            work,
            &query("20260406T080000Z", "20260406T081500Z"),
            "1",
        )
        .await;
    assert!(hrefs(&ms).is_empty());
    let get = format!(
        r#"<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
           <d:prop><d:getetag/></d:prop><d:href>{work}e1.ics</d:href><d:href>{work}none.ics</d:href>
           </c:calendar-multiget>"#
    );
    let ms = f.xml("REPORT", work, &get, "1").await;
    assert_eq!(
        hrefs(&ms),
        [format!("{work}e1.ics"), format!("{work}none.ics")]
    );
    let fb = f
        .send(
            "REPORT",
            work,
            r#"<c:free-busy-query xmlns:c="urn:ietf:params:xml:ns:caldav">
               <c:time-range start="20260330T000000Z" end="20260331T000000Z"/></c:free-busy-query>"#,
            &[],
        )
        .await;
    assert_eq!(fb.status, 200);
    let text = String::from_utf8_lossy(&fb.body);
    assert!(
        text.contains("FREEBUSY;FBTYPE=BUSY:20260330T070000Z/20260330T073000Z"),
        "{text}"
    );
    assert_eq!(f.send("DELETE", work, "", &[]).await.status, 204);
    assert_eq!(f.send("PROPFIND", work, "", &[]).await.status, 404);
}

#[tokio::test]
async fn sync_collection_reports_changes_since_a_token() {
    let f = fixture().await;
    let book = "/dav/addressbooks/ann@example.test/default/";
    let card = |uid: &str, name: &str| {
        format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nEND:VCARD\r\n")
    };
    f.send("PUT", &format!("{book}a.vcf"), &card("a", "Ann"), &[])
        .await;
    f.send("PUT", &format!("{book}b.vcf"), &card("b", "Bob"), &[])
        .await;
    let sync = |token: &str| {
        format!(
            r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token>
               <d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#
        )
    };
    let ms = f.xml("REPORT", book, &sync(""), "0").await;
    assert_eq!(hrefs(&ms), [format!("{book}a.vcf"), format!("{book}b.vcf")]);
    let token = ms.child(DAV, "sync-token").unwrap().text.clone();
    f.send("PUT", &format!("{book}b.vcf"), &card("b", "Bobby"), &[])
        .await;
    f.send("DELETE", &format!("{book}a.vcf"), "", &[]).await;
    let ms = f.xml("REPORT", book, &sync(&token), "0").await;
    assert_eq!(hrefs(&ms), [format!("{book}b.vcf"), format!("{book}a.vcf")]);
    let gone = ms.children_named(DAV, "response").nth(1).unwrap();
    assert!(gone.child(DAV, "status").unwrap().text.contains("404"));
    let newer = ms.child(DAV, "sync-token").unwrap().text.clone();
    assert_ne!(newer, token);
    let r = f
        .send("REPORT", book, &sync("urn:x-postern:sync:1-2-3"), &[])
        .await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("valid-sync-token"));
    let q = r#"<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
        <D:prop><D:getetag/><C:address-data/></D:prop><C:filter><C:prop-filter name="FN">
        <C:text-match match-type="starts-with">bob</C:text-match></C:prop-filter></C:filter></C:addressbook-query>"#;
    let ms = f.xml("REPORT", book, q, "1").await;
    assert_eq!(hrefs(&ms), [format!("{book}b.vcf")]);
    let data = prop(
        &ms,
        &format!("{book}b.vcf"),
        crate::xml::CARDDAV,
        "address-data",
    )
    .unwrap();
    assert!(data.text.contains("FN:Bobby"));
}

#[tokio::test]
async fn resources_are_copied_and_moved() {
    let f = fixture().await;
    let cal = "/dav/calendars/ann@example.test/default/";
    let work = "/dav/calendars/ann@example.test/work/";
    assert_eq!(f.send("MKCALENDAR", work, "", &[]).await.status, 201);
    f.send("PUT", &format!("{cal}e1.ics"), EVENT, &[]).await;
    let to_work = format!("https://h.test{work}e1.ics");
    let r = f
        .send(
            "COPY",
            &format!("{cal}e1.ics"),
            "",
            &[("destination", &to_work)],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        f.send("GET", &format!("{work}e1.ics"), "", &[]).await.body,
        EVENT.as_bytes()
    );
    // Within one calendar the UID is taken; moved, it goes along.
    let r = f
        .send(
            "COPY",
            &format!("{cal}e1.ics"),
            "",
            &[("destination", &format!("{cal}e2.ics"))],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = f
        .send(
            "MOVE",
            &format!("{cal}e1.ics"),
            "",
            &[("destination", &format!("{cal}e2.ics"))],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        f.send("GET", &format!("{cal}e1.ics"), "", &[]).await.status,
        404
    );
    assert_eq!(
        f.send("GET", &format!("{cal}e2.ics"), "", &[]).await.status,
        200
    );
    let r = f
        .send(
            "MOVE",
            &format!("{cal}e2.ics"),
            "",
            &[
                ("destination", &format!("{work}e1.ics")),
                ("overwrite", "F"),
            ],
        )
        .await;
    assert_eq!(r.status, 412);
    let r = f
        .send(
            "MOVE",
            &format!("{cal}e2.ics"),
            "",
            &[("destination", &format!("{work}e1.ics"))],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        f.send("GET", &format!("{cal}e2.ics"), "", &[]).await.status,
        404
    );
    let r = f
        .send(
            "COPY",
            &format!("{work}e1.ics"),
            "",
            &[(
                "destination",
                "/dav/addressbooks/ann@example.test/default/x.vcf",
            )],
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn the_domains_address_book_lists_its_accounts_read_only() {
    let f = fixture().await;
    for address in ["bob@example.test", "off@example.test"] {
        let a = f
            .store
            .account_create(NewAccount {
                address: address.into(),
                password_hash: String::new(),
                quota_bytes: 0,
                quota_messages: 0,
                shared: false,
            })
            .await
            .unwrap();
        if address.starts_with("off") {
            f.store
                .account_update(
                    a.id,
                    AccountUpdate {
                        disabled: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
    }
    let home = "/dav/addressbooks/ann@example.test/";
    let dir = format!("{home}directory/");
    let ms = f.xml("PROPFIND", home, "", "1").await;
    assert!(hrefs(&ms).contains(&dir), "{:?}", hrefs(&ms));
    let ms = f.xml("PROPFIND", &dir, "", "1").await;
    assert_eq!(
        hrefs(&ms),
        [
            dir.clone(),
            format!("{dir}ann@example.test.vcf"),
            format!("{dir}bob@example.test.vcf")
        ]
    );
    let r = f
        .send("GET", &format!("{dir}bob@example.test.vcf"), "", &[])
        .await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("EMAIL;TYPE=INTERNET:bob@example.test"));
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:x\r\nFN:X\r\nEND:VCARD\r\n";
    assert_eq!(
        f.send("PUT", &format!("{dir}x.vcf"), card, &[])
            .await
            .status,
        403
    );
    assert_eq!(
        f.send("DELETE", &format!("{dir}bob@example.test.vcf"), "", &[])
            .await
            .status,
        403
    );
    assert_eq!(f.send("DELETE", &dir, "", &[]).await.status, 403);
    assert_eq!(f.send("MKCOL", &dir, "", &[]).await.status, 405);
    // Copied into one's own address book, a card is one's own.
    let r = f
        .send(
            "COPY",
            &format!("{dir}bob@example.test.vcf"),
            "",
            &[("destination", &format!("{home}default/bob.vcf"))],
        )
        .await;
    assert_eq!(r.status, 201);
    let sync = |token: &str| {
        format!(
            r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token>
               <d:prop><d:getetag/></d:prop></d:sync-collection>"#
        )
    };
    let ms = f.xml("REPORT", &dir, &sync(""), "0").await;
    assert_eq!(hrefs(&ms).len(), 2);
    let token = ms.child(DAV, "sync-token").unwrap().text.clone();
    assert!(hrefs(&f.xml("REPORT", &dir, &sync(&token), "0").await).is_empty());
    f.store
        .account_create(NewAccount {
            address: "new@example.test".into(),
            password_hash: String::new(),
            quota_bytes: 0,
            quota_messages: 0,
            shared: false,
        })
        .await
        .unwrap();
    let r = f.send("REPORT", &dir, &sync(&token), &[]).await;
    assert_eq!(
        r.status, 403,
        "a new account makes the old token stale: sync again"
    );
}
