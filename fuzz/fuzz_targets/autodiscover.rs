//! The Autodiscover request handler's parsing: no panic, and the address that comes out is
//! written back escaped in the XML answer (no markup injected from the request).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_config::settings::{Endpoint, Security, Service};
use postern_http::docs;

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let Some(address) = docs::autodiscover_request(body) else {
        return;
    };
    let endpoints = [
        Endpoint {
            service: Service::Imap,
            host: "mail.example.test".into(),
            port: 993,
            security: Security::Tls,
        },
        Endpoint {
            service: Service::Smtp,
            host: "mail.example.test".into(),
            port: 587,
            security: Security::StartTls,
        },
    ];
    let out = docs::autodiscover(&address, &endpoints);
    let names: Vec<&str> = out
        .split("<LoginName>")
        .skip(1)
        .map(|s| s.split("</LoginName>").next().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{out}");
    for n in names {
        assert!(!n.contains(['<', '>']), "markup from the request: {n:?}");
        assert_eq!(unescape(n), address);
    }
    assert_eq!(out.matches("<Protocol>").count(), 2);
    assert_eq!(out.matches("</Protocol>").count(), 2);
});
