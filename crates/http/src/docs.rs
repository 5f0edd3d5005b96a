//! The documents mail programs fetch to set themselves up: Thunderbird's autoconfig
//! (clientConfig 1.1), Microsoft's Autodiscover (POX, 2006a), Apple's configuration profile, the
//! MTA-STS policy, and a page for people.

use postern_config::settings::{Endpoint, Security, Service};

pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// Thunderbird autoconfig: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat
pub fn autoconfig(domain: &str, endpoints: &[Endpoint]) -> String {
    let d = xml_escape(domain);
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{d}\">\n    <domain>{d}</domain>\n    <displayName>{d} mail</displayName>\n    <displayShortName>{d}</displayShortName>\n"
    );
    for e in endpoints {
        let (tag, ty) = match e.service {
            Service::Imap => ("incomingServer", "imap"),
            Service::Pop3 => ("incomingServer", "pop3"),
            Service::Smtp => ("outgoingServer", "smtp"),
        };
        let socket = match e.security {
            Security::Tls => "SSL",
            Security::StartTls => "STARTTLS",
        };
        x.push_str(&format!(
            "    <{tag} type=\"{ty}\">\n      <hostname>{}</hostname>\n      <port>{}</port>\n      <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </{tag}>\n",
            xml_escape(&e.host),
            e.port
        ));
    }
    x.push_str("  </emailProvider>\n</clientConfig>\n");
    x
}

const AUTODISCOVER_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";
const OUTLOOK_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// The e-mail address of an Outlook Autodiscover request (requestschema/2006), if the document
/// has the expected shape.
pub fn autodiscover_request(body: &str) -> Option<String> {
    if !body.contains("Autodiscover") {
        return None;
    }
    // <EMailAddress>, with or without a namespace prefix.
    let start = body.find("EMailAddress>")? + "EMailAddress>".len();
    let rest = &body[start..];
    let end = rest.find('<')?;
    let addr = xml_unescape(rest[..end].trim())?;
    (addr.len() <= 320 && !addr.is_empty() && !addr.contains(char::is_control)).then_some(addr)
}

/// The five predefined XML entities; `None` for any other reference.
fn xml_unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let semi = rest[i..].find(';')? + i;
        out.push(match &rest[i + 1..semi] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => return None,
        });
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Outlook's POX Autodiscover response with IMAP, POP3 and SMTP.
pub fn autodiscover(address: &str, endpoints: &[Endpoint]) -> String {
    let a = xml_escape(address);
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"{AUTODISCOVER_NS}\">\n  <Response xmlns=\"{OUTLOOK_NS}\">\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n"
    );
    // One protocol entry per service: the implicit-TLS endpoint when there is one.
    let mut done = Vec::new();
    for e in endpoints {
        if done.contains(&e.service) {
            continue;
        }
        done.push(e.service);
        let (ssl, enc) = match e.security {
            Security::Tls => ("on", "SSL"),
            Security::StartTls => ("on", "TLS"),
        };
        x.push_str(&format!(
            "      <Protocol>\n        <Type>{}</Type>\n        <Server>{}</Server>\n        <Port>{}</Port>\n        <DomainRequired>off</DomainRequired>\n        <LoginName>{a}</LoginName>\n        <SPA>off</SPA>\n        <SSL>{ssl}</SSL>\n        <Encryption>{enc}</Encryption>\n        <AuthRequired>on</AuthRequired>\n      </Protocol>\n",
            e.service.label(),
            xml_escape(&e.host),
            e.port
        ));
    }
    x.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    x
}

/// The Autodiscover error document (for addresses we do not serve, and malformed requests).
pub fn autodiscover_error(code: u32, message: &str) -> String {
    let now = postern_message::rfc5322_date(time::OffsetDateTime::now_utc());
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"{AUTODISCOVER_NS}\">\n  <Response>\n    <Error Time=\"{}\" Id=\"{}\">\n      <ErrorCode>{code}</ErrorCode>\n      <Message>{}</Message>\n      <DebugData />\n    </Error>\n  </Response>\n</Autodiscover>\n",
        xml_escape(&now),
        rand::random::<u32>(),
        xml_escape(message)
    )
}

pub(crate) fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08X}-{:04X}-4{:03X}-{:04X}-{:012X}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// An Apple configuration profile with one com.apple.mail.managed payload (unsigned).
pub fn mobileconfig(address: &str, endpoints: &[Endpoint]) -> Option<String> {
    let incoming = endpoints
        .iter()
        .find(|e| e.service == Service::Imap)
        .or_else(|| endpoints.iter().find(|e| e.service == Service::Pop3))?;
    let outgoing = endpoints.iter().find(|e| e.service == Service::Smtp)?;
    let a = xml_escape(address);
    let (local, domain) = address.rsplit_once('@')?;
    let reverse: Vec<&str> = domain.split('.').rev().collect();
    let ident = format!(
        "{}.mail.{}",
        reverse.join("."),
        local.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let kind = if incoming.service == Service::Imap {
        "EmailTypeIMAP"
    } else {
        "EmailTypePOP"
    };
    let b = |v: bool| if v { "<true/>" } else { "<false/>" };
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountDescription</key><string>{a}</string>
      <key>EmailAccountName</key><string>{a}</string>
      <key>EmailAccountType</key><string>{kind}</string>
      <key>EmailAddress</key><string>{a}</string>
      <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key><string>{ih}</string>
      <key>IncomingMailServerPortNumber</key><integer>{ip}</integer>
      <key>IncomingMailServerUseSSL</key>{itls}
      <key>IncomingMailServerUsername</key><string>{a}</string>
      <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>OutgoingMailServerHostName</key><string>{oh}</string>
      <key>OutgoingMailServerPortNumber</key><integer>{op}</integer>
      <key>OutgoingMailServerUseSSL</key>{otls}
      <key>OutgoingMailServerUsername</key><string>{a}</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key><true/>
      <key>PayloadDescription</key><string>Mail account {a}</string>
      <key>PayloadDisplayName</key><string>{a}</string>
      <key>PayloadIdentifier</key><string>{ident}.account</string>
      <key>PayloadType</key><string>com.apple.mail.managed</string>
      <key>PayloadUUID</key><string>{u1}</string>
      <key>PayloadVersion</key><integer>1</integer>
      <key>PreventAppSheet</key><false/>
      <key>PreventMove</key><false/>
      <key>SMIMEEnabled</key><false/>
    </dict>
  </array>
  <key>PayloadDescription</key><string>Sets up the mail account {a}</string>
  <key>PayloadDisplayName</key><string>Mail for {a}</string>
  <key>PayloadIdentifier</key><string>{ident}</string>
  <key>PayloadRemovalDisallowed</key><false/>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{u2}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"#,
        ih = xml_escape(&incoming.host),
        ip = incoming.port,
        // UseSSL covers both implicit TLS and STARTTLS on Apple devices.
        itls = b(true),
        oh = xml_escape(&outgoing.host),
        op = outgoing.port,
        otls = b(true),
        ident = xml_escape(&ident),
        u1 = uuid(),
        u2 = uuid(),
    ))
}

pub fn mta_sts_policy(mode: &str, mx: &str, max_age: u64) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n")
}

/// "Set up your mail program": the settings table and the automatic-setup links, plain HTML.
pub fn index_page(hostname: &str, endpoints: &[Endpoint], domains: &[String]) -> String {
    let h = xml_escape(hostname);
    let mut rows = String::new();
    for e in endpoints {
        let what = match e.service {
            Service::Imap => "Incoming mail (IMAP)",
            Service::Pop3 => "Incoming mail (POP3)",
            Service::Smtp => "Outgoing mail (SMTP)",
        };
        rows.push_str(&format!(
            "      <tr><th scope=\"row\">{what}</th><td>{}</td><td>{}</td><td>{}</td><td>Normal password</td></tr>\n",
            xml_escape(&e.host),
            e.port,
            e.security.label()
        ));
    }
    let domain_list = domains
        .iter()
        .map(|d| xml_escape(d))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Set up your mail program — {h}</title>
  <style>
    body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #1a1a1a; }}
    table {{ border-collapse: collapse; width: 100%; margin: 1rem 0; }}
    th, td {{ text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #ccc; }}
    thead th {{ background: #f0f0f0; }}
    code {{ background: #f4f4f4; padding: 0 .25rem; }}
    label, input, button {{ font: inherit; }}
  </style>
</head>
<body>
  <main>
    <h1>Set up your mail program</h1>
    <p>Most mail programs (Thunderbird, Outlook, Apple Mail, phones) set themselves up when you type
    only your email address and password. If yours asks for the servers, type these:</p>
    <table id="settings">
      <caption>Settings for mail on {h} ({domain_list})</caption>
      <thead>
        <tr><th scope="col">Server</th><th scope="col">Host name</th><th scope="col">Port</th><th scope="col">Security</th><th scope="col">Authentication</th></tr>
      </thead>
      <tbody>
{rows}      </tbody>
    </table>
    <p>The <strong>user name</strong> is your full email address, for example <code>you@{d0}</code>.</p>
    <h2>Automatic setup</h2>
    <ul>
      <li>Thunderbird: <a href="/.well-known/autoconfig/mail/config-v1.1.xml">autoconfig document</a></li>
      <li>Outlook: Autodiscover at <code>/autodiscover/autodiscover.xml</code></li>
    </ul>
    <form action="/apple/profile.mobileconfig" method="get">
      <label for="email">iPhone, iPad or Mac: your email address</label>
      <input id="email" name="emailaddress" type="email" required placeholder="you@{d0}">
      <button type="submit">Download the profile</button>
    </form>
  </main>
</body>
</html>
"#,
        d0 = domains
            .first()
            .map(|d| xml_escape(d))
            .unwrap_or_else(|| "example.com".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps() -> Vec<Endpoint> {
        vec![
            Endpoint {
                service: Service::Imap,
                host: "mail.example.test".into(),
                port: 993,
                security: Security::Tls,
            },
            Endpoint {
                service: Service::Imap,
                host: "mail.example.test".into(),
                port: 143,
                security: Security::StartTls,
            },
            Endpoint {
                service: Service::Smtp,
                host: "mail.example.test".into(),
                port: 587,
                security: Security::StartTls,
            },
        ]
    }

    #[test]
    fn documents() {
        let a = autoconfig("example.test", &eps());
        assert!(a.contains("<socketType>SSL</socketType>") && a.contains("<port>143</port>"));
        assert!(a.contains("<outgoingServer type=\"smtp\">"));
        let d = autodiscover("a@example.test", &eps());
        assert_eq!(d.matches("<Protocol>").count(), 2, "one entry per service");
        assert!(d.contains("<Encryption>TLS</Encryption>"));
        assert_eq!(
            autodiscover_request("<Autodiscover xmlns=\"x\"><Request><EMailAddress>a@example.test</EMailAddress></Request></Autodiscover>").as_deref(),
            Some("a@example.test")
        );
        assert_eq!(autodiscover_request("<x/>"), None);
        let req = |a: &str| {
            autodiscover_request(&format!(
                "<Autodiscover><Request><EMailAddress>{a}</EMailAddress></Request></Autodiscover>"
            ))
        };
        assert_eq!(
            req("o&apos;brien@example.test").as_deref(),
            Some("o'brien@example.test")
        );
        assert_eq!(req("a&#1;@example.test"), None);
        assert_eq!(req("a\u{10}b@example.test"), None);
        assert!(
            mobileconfig("a@example.test", &eps())
                .unwrap()
                .contains("<integer>993</integer>")
        );
        assert_eq!(xml_escape("<a&\"b>"), "&lt;a&amp;&quot;b&gt;");
    }
}
