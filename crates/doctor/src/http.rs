//! Just enough HTTP/1.1 to fetch autoconfig files and ask Autodiscover, as mail programs do.

use crate::net::{LookupError, Net};

pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(url: &str) -> Option<Url> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.to_string(), p.parse().ok()?)
        }
        _ => (authority.to_string(), if https { 443 } else { 80 }),
    };
    if host.is_empty() {
        return None;
    }
    Some(Url {
        https,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        path: path.to_string(),
    })
}

/// GET (or POST `body` as XML); follows up to three redirects. Returns (status, body).
pub async fn fetch(net: &Net, url: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut url = url.to_string();
    for _ in 0..4 {
        let u = parse_url(&url).ok_or_else(|| format!("{url} is not an http(s) address"))?;
        let (status, headers, content) = once(net, &u, body).await?;
        if matches!(status, 301 | 302 | 307 | 308)
            && let Some(loc) = header(&headers, "location")
        {
            url = if loc.starts_with("http") {
                loc
            } else {
                format!(
                    "{}://{}:{}{loc}",
                    if u.https { "https" } else { "http" },
                    u.host,
                    u.port
                )
            };
            continue;
        }
        return Ok((status, content));
    }
    Err("too many redirects".into())
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

type Response = (u16, Vec<(String, String)>, String);

async fn once(net: &Net, u: &Url, body: Option<&str>) -> Result<Response, String> {
    let addrs = net.resolve(&u.host).await.map_err(|e| match e {
        LookupError::NoSuchName => format!("{} does not exist", u.host),
        LookupError::Failed(e) => format!("looking up {}: {e}", u.host),
    })?;
    let mut conn = net.connect(&addrs, u.port).await.map_err(|e| match e {
        crate::probe::ConnError::Refused => format!("nothing answers on port {}", u.port),
        crate::probe::ConnError::TimedOut => format!("port {} does not answer", u.port),
        crate::probe::ConnError::Other(e) => e,
    })?;
    if u.https {
        conn.start_tls(&u.host, net.roots.clone()).await?;
        if let Some((_, cert)) = &conn.tls {
            if let Some(e) = &cert.trust_error {
                return Err(format!("its certificate is not trusted: {e}"));
            }
            if !cert.name_ok {
                return Err(format!("its certificate is not for {}", u.host));
            }
        }
    }
    let host_header = if (u.https && u.port == 443) || (!u.https && u.port == 80) {
        u.host.clone()
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let req = match body {
        None => format!(
            "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: postern-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            u.path
        ),
        Some(b) => format!(
            "POST {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: postern-check\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            u.path,
            b.len()
        ),
    };
    conn.send_raw(req.as_bytes()).await?;
    let raw = conn.read_all(1 << 20).await?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("not an HTTP answer")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or("a broken chunked answer")?;
    } else if let Some(n) = header(&headers, "content-length").and_then(|v| v.parse().ok()) {
        body.truncate(n);
    }
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..nl]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/mail/config-v1.1.xml?x=1").unwrap();
        assert!(!u.https && u.host == "127.0.0.1" && u.port == 8080);
        assert_eq!(u.path, "/mail/config-v1.1.xml?x=1");
        let u = parse_url("https://example.test").unwrap();
        assert!(u.https && u.port == 443 && u.path == "/");
        let u = parse_url("http://[::1]:81/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        assert!(parse_url("ftp://x").is_none());
    }

    #[test]
    fn responses() {
        let (s, _, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((s, b.as_str()), (200, "abcde"));
        let (s, _, b) =
            parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoXX").unwrap();
        assert_eq!((s, b.as_str()), (404, "no"));
        assert!(parse_response(b"garbage").is_err());
    }
}
