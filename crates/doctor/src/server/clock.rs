//! The clock against an NTP server (SNTP, RFC 4330): DKIM signatures, TLS certificates and
//! message dates all depend on it.

use std::net::SocketAddr;
use std::time::Duration;

use postern_config::Config;

use crate::report::Section;

pub(super) async fn clock(cfg: &Config) -> Section {
    let mut s = Section::new("Clock");
    let server = &cfg.doctor.ntp_server;
    if server.is_empty() {
        s.info("clock check skipped ([doctor] ntp_server is empty)");
        return s;
    }
    match ntp_offset(server).await {
        Ok(off) => {
            let abs = off.abs();
            let dir = if off > 0.0 { "behind" } else { "ahead of" };
            if abs >= 120.0 {
                s.fail(
                    format!("this server's clock is {abs:.0} s {dir} {server}"),
                    "Turn on time synchronisation (timedatectl set-ntp true, or install chrony); a wrong clock breaks DKIM and certificate checks and misdates mail.",
                );
            } else if abs >= 10.0 {
                s.warn(
                    format!("this server's clock is {abs:.0} s {dir} {server}"),
                    "Turn on time synchronisation (timedatectl set-ntp true, or install chrony).",
                );
            } else {
                s.ok(format!("within {abs:.1} s of {server}"));
            }
        }
        Err(e) => s.warn(
            format!("cannot ask {server} for the time: {e}"),
            "Allow outgoing UDP port 123, or set [doctor] ntp_server to a reachable NTP server.",
        ),
    }
    s
}

/// Seconds to add to our clock to match the server's.
async fn ntp_offset(server: &str) -> Result<f64, String> {
    let addr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(addr).await.map_err(|e| e.to_string())?;
    let mut req = [0u8; 48];
    req[0] = 0x23; // version 4, client
    let t0 = now_f64();
    sock.send(&req).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 128];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let t3 = now_f64();
    if n < 48 || buf[0] & 0x07 != 4 {
        return Err("not an NTP answer".into());
    }
    let secs = u32::from_be_bytes(buf[40..44].try_into().unwrap()) as f64;
    let frac = u32::from_be_bytes(buf[44..48].try_into().unwrap()) as f64 / 4294967296.0;
    let server_time = secs + frac - 2_208_988_800.0;
    Ok(server_time - (t0 + t3) / 2.0)
}

fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
