//! DNS answers with their DNSSEC status, as a validating resolver reports it (the AD bit,
//! RFC 4035 3.2.3, asked for with DO and AD, RFC 6840 5.7). DANE needs to know which answers
//! are authentic; like Postfix, we trust the resolver on this machine to validate.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// One answer: its records of the type asked, and whether the resolver vouches for them
/// (or for their non-existence).
#[derive(Debug, Clone)]
pub struct Answer {
    pub records: Vec<RData>,
    pub secure: bool,
    /// The name does not exist (NXDOMAIN).
    pub nxdomain: bool,
}

/// Why there is no answer: the resolver failed (SERVFAIL, as for bogus data) or is silent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LookupFailed(pub String);

pub struct SecureDns {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl SecureDns {
    /// Asks `nameservers` ("ip" or "ip:port"), or those of /etc/resolv.conf when there are none.
    pub fn new(nameservers: &[String], timeout: Duration) -> SecureDns {
        let mut servers: Vec<SocketAddr> = nameservers
            .iter()
            .filter_map(|ns| {
                ns.parse()
                    .ok()
                    .or_else(|| ns.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
            })
            .collect();
        if servers.len() < nameservers.len() {
            tracing::warn!(
                ?nameservers,
                "some [dns] nameservers are not \"ip\" or \"ip:port\""
            );
        }
        if nameservers.is_empty() {
            let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            servers = conf
                .lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
                .collect();
        }
        if let Some(far) = servers.iter().find(|s| !s.ip().is_loopback()) {
            tracing::warn!(
                resolver = %far,
                "DANE trusts the DNSSEC verdict (AD bit) of a resolver on another machine; \
                 the path to it is not protected: run a validating resolver here"
            );
        }
        SecureDns { servers, timeout }
    }

    /// Whether there is any resolver to ask.
    pub fn is_usable(&self) -> bool {
        !self.servers.is_empty()
    }

    /// Looks up `name`'s records of type `rtype` (CNAMEs followed by the resolver).
    pub async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Answer, LookupFailed> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let qname =
            Name::from_utf8(&fqdn).map_err(|e| LookupFailed(format!("bad name {name:?}: {e}")))?;
        let mut last = LookupFailed("no nameserver configured".into());
        for server in &self.servers {
            for _ in 0..2 {
                match self.ask(*server, &qname, rtype).await {
                    Ok(m) => return interpret(m, rtype, name),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    async fn ask(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Message, LookupFailed> {
        let mut q = Message::query();
        q.metadata.id = rand::random();
        q.metadata.recursion_desired = true;
        q.metadata.authentic_data = true;
        q.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(true);
        q.set_edns(edns);
        let wire = q
            .to_vec()
            .map_err(|e| LookupFailed(format!("cannot encode a query: {e}")))?;
        let fail = |e: std::io::Error| LookupFailed(format!("asking {server}: {e}"));
        let udp = async {
            let bind: SocketAddr = if server.is_ipv6() {
                "[::]:0".parse().unwrap()
            } else {
                "0.0.0.0:0".parse().unwrap()
            };
            let sock = UdpSocket::bind(bind).await.map_err(fail)?;
            sock.connect(server).await.map_err(fail)?;
            sock.send(&wire).await.map_err(fail)?;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = sock.recv(&mut buf).await.map_err(fail)?;
                if let Ok(m) = Message::from_vec(&buf[..n])
                    && answers(&m, &q)
                {
                    return Ok(m);
                }
            }
        };
        let m = tokio::time::timeout(self.timeout, udp)
            .await
            .map_err(|_| LookupFailed(format!("{server} did not answer in time")))??;
        if !m.metadata.truncation {
            return Ok(m);
        }
        let tcp = async {
            let mut s = TcpStream::connect(server).await.map_err(fail)?;
            let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&wire);
            s.write_all(&framed).await.map_err(fail)?;
            let len = s.read_u16().await.map_err(fail)? as usize;
            let mut buf = vec![0u8; len];
            s.read_exact(&mut buf).await.map_err(fail)?;
            let m =
                Message::from_vec(&buf).map_err(|e| LookupFailed(format!("bad answer: {e}")))?;
            if answers(&m, &q) {
                Ok(m)
            } else {
                Err(LookupFailed(format!("{server} answered another question")))
            }
        };
        tokio::time::timeout(self.timeout, tcp)
            .await
            .map_err(|_| LookupFailed(format!("{server} did not answer in time")))?
    }
}

/// Whether `m` is the response to `q`: same id, a response, the same question.
fn answers(m: &Message, q: &Message) -> bool {
    use hickory_resolver::proto::op::MessageType;
    m.metadata.id == q.metadata.id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && q.queries.first().is_some_and(|a| {
            let b = &m.queries[0];
            b.query_type() == a.query_type()
                && b.name()
                    .to_ascii()
                    .eq_ignore_ascii_case(&a.name().to_ascii())
        })
}

fn interpret(m: Message, rtype: RecordType, name: &str) -> Result<Answer, LookupFailed> {
    let secure = m.metadata.authentic_data;
    match m.metadata.response_code {
        ResponseCode::NoError => Ok(Answer {
            records: m
                .answers
                .into_iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data)
                .collect(),
            secure,
            nxdomain: false,
        }),
        ResponseCode::NXDomain => Ok(Answer {
            records: Vec::new(),
            secure,
            nxdomain: true,
        }),
        code => Err(LookupFailed(format!(
            "the resolver answered {code} for {name} {rtype}"
        ))),
    }
}
