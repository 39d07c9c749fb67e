//! Name resolution for the `dns` resolver. By default the system's resolver (`getaddrinfo`,
//! so `/etc/resolv.conf`, search domains and `/etc/hosts` apply, as in the Collector). With
//! `WEIR_DNS_SERVER=ip:port` in the environment, weir asks that server directly over UDP for A
//! and AAAA records (a resolver of your own, or a test's).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The addresses `hostname` resolves to, sorted, without duplicates.
pub async fn resolve(hostname: &str, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = hostname.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let mut ips = match std::env::var("WEIR_DNS_SERVER")
        .ok()
        .and_then(|s| s.parse::<SocketAddr>().ok())
    {
        Some(server) => {
            let mut v = query(server, hostname, 1, timeout).await?;
            v.extend(query(server, hostname, 28, timeout).await?);
            v
        }
        None => tokio::time::timeout(timeout, tokio::net::lookup_host((hostname, 0)))
            .await
            .map_err(|_| format!("{hostname}: timed out after {timeout:?}"))?
            .map_err(|e| format!("{hostname}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// One question of type `qtype` (1 = A, 28 = AAAA) to `server`.
async fn query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<Vec<IpAddr>, String> {
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        & 0xffff) as u16;
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name}: not a valid DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("dns: {e}"))?;
    sock.send_to(&q, server)
        .await
        .map_err(|e| format!("dns {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .map_err(|_| format!("dns {server}: no answer for {name} within {timeout:?}"))?
            .map_err(|e| format!("dns {server}: {e}"))?;
        if from != server || n < 12 || buf[..2] != id.to_be_bytes() {
            continue; // not our answer
        }
        return parse(&buf[..n], qtype).map_err(|e| format!("dns {server}: {name}: {e}"));
    }
}

/// Skips a (possibly compressed) name at `i`; returns the index after it.
fn skip_name(msg: &[u8], mut i: usize) -> Result<usize, String> {
    loop {
        let len = *msg.get(i).ok_or("truncated name")? as usize;
        if len == 0 {
            return Ok(i + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Ok(i + 2); // a pointer ends the name
        }
        i += 1 + len;
    }
}

fn u16_at(msg: &[u8], i: usize) -> Result<u16, String> {
    Ok(u16::from_be_bytes([
        *msg.get(i).ok_or("truncated")?,
        *msg.get(i + 1).ok_or("truncated")?,
    ]))
}

fn parse(msg: &[u8], qtype: u16) -> Result<Vec<IpAddr>, String> {
    if msg.len() < 12 {
        return Err("truncated header".into());
    }
    let rcode = msg[3] & 0x0f;
    if rcode == 3 {
        return Ok(Vec::new()); // NXDOMAIN: no addresses
    }
    if rcode != 0 {
        return Err(format!("server answered rcode {rcode}"));
    }
    let (qd, an) = (u16_at(msg, 4)?, u16_at(msg, 6)?);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(msg, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(msg, i)?;
        let (ty, len) = (u16_at(msg, i)?, u16_at(msg, i + 8)? as usize);
        let data = msg.get(i + 10..i + 10 + len).ok_or("truncated record")?;
        match (ty, len) {
            (1, 4) if qtype == 1 => out.push(IpAddr::from([data[0], data[1], data[2], data[3]])),
            (28, 16) if qtype == 28 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(data);
                out.push(IpAddr::from(a));
            }
            _ => {} // CNAMEs and the like: the addresses follow them in the answer
        }
        i += 10 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_compressed_names_and_cnames_parse() {
        // id, flags (response), 1 question, 3 answers: a CNAME, then two A records whose
        // names point back at offset 12.
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        m.extend_from_slice(b"\x08samplers\x03svc\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 30, 0, 2, 0xc0, 12]);
        for ip in [[127, 0, 0, 2], [127, 0, 0, 3]] {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
            m.extend_from_slice(&ip);
        }
        let got = parse(&m, 1).expect("parses");
        assert_eq!(
            got,
            vec![IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3])]
        );
        // Truncated and failing answers are errors, not panics.
        assert!(parse(&m[..m.len() - 3], 1).is_err());
        let mut fail = m.clone();
        fail[3] = 0x82; // SERVFAIL
        assert!(parse(&fail, 1).is_err());
        let mut nx = m;
        nx[3] = 0x83;
        assert_eq!(parse(&nx, 1), Ok(Vec::new()));
    }
}
