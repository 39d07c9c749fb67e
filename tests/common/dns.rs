//! A DNS server on a loopback port for tests: answers A queries for one name with the
//! addresses the test sets (and changes), anything else with NXDOMAIN. Stopped on drop.
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

pub struct FakeDns {
    pub addr: std::net::SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDns {
    pub async fn start(name: &str, answers: Vec<Ipv4Addr>) -> FakeDns {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind dns");
        let addr = sock.local_addr().expect("addr");
        let answers = Arc::new(Mutex::new(answers));
        let (a, want) = (
            answers.clone(),
            name.trim_end_matches('.').to_ascii_lowercase(),
        );
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let q = &buf[..n];
                if n < 17 {
                    continue;
                }
                // The question: labels from byte 12.
                let mut i = 12;
                let mut labels = Vec::new();
                while i < n && q[i] != 0 {
                    let len = q[i] as usize;
                    labels.push(
                        String::from_utf8_lossy(&q[i + 1..(i + 1 + len).min(n)])
                            .to_ascii_lowercase(),
                    );
                    i += 1 + len;
                }
                let qend = i + 5; // the zero, type, class
                if qend > n {
                    continue;
                }
                let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
                let ips: Vec<Ipv4Addr> = a.lock().unwrap().clone();
                let matches = labels.join(".") == want;
                let mut r = Vec::with_capacity(512);
                r.extend_from_slice(&q[..2]);
                r.extend_from_slice(&[0x81, if matches { 0x80 } else { 0x83 }]);
                r.extend_from_slice(&[0, 1]);
                let count = if matches && qtype == 1 { ips.len() } else { 0 };
                r.extend_from_slice(&(count as u16).to_be_bytes());
                r.extend_from_slice(&[0, 0, 0, 0]);
                r.extend_from_slice(&q[12..qend]);
                for ip in ips.iter().take(count) {
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
                    r.extend_from_slice(&ip.octets());
                }
                let _ = sock.send_to(&r, from).await;
            }
        });
        FakeDns {
            addr,
            answers,
            task,
        }
    }

    /// What the next answers say.
    pub fn set(&self, ips: Vec<Ipv4Addr>) {
        *self.answers.lock().unwrap() = ips;
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
