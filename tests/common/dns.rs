//! An in-process authoritative DNS server (hickory-server) whose answers a test
//! changes while rampart resolves against it, over UDP and TCP on loopback.

use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub struct TestDns {
    pub addr: SocketAddr,
    origin: Name,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
    serial: std::sync::atomic::AtomicU32,
}

impl TestDns {
    /// Serves zone `origin` (e.g. "test.") on 127.0.0.1, UDP and TCP on one port.
    pub async fn start(origin: &str) -> TestDns {
        let origin = Name::from_str(origin).unwrap();
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_str("ns.test.").unwrap(),
            Name::from_str("admin.test.").unwrap(),
            1,
            60,
            60,
            600,
            1,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        // one port for both transports
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 65_535);
        TestDns {
            addr,
            origin,
            zone,
            server: Some(server),
            serial: std::sync::atomic::AtomicU32::new(2),
        }
    }

    fn fqdn(&self, name: &str) -> Name {
        Name::from_str(name)
            .unwrap()
            .append_domain(&self.origin)
            .unwrap()
    }

    fn next_serial(&self) -> u32 {
        self.serial
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces the A and AAAA records of `name` (relative to the zone) with `ips`.
    pub async fn set_ips(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let fqdn = self.fqdn(name);
        let serial = self.next_serial();
        {
            let mut records = self.zone.records_mut().await;
            for t in [RecordType::A, RecordType::AAAA] {
                records.remove(&RrKey::new(LowerName::new(&fqdn), t));
            }
        }
        for ip in ips {
            let rdata = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            self.zone
                .upsert(Record::from_rdata(fqdn.clone(), ttl, rdata), serial)
                .await;
        }
    }

    /// Replaces the SRV records of `name` with (priority, weight, port, target).
    pub async fn set_srv(&self, name: &str, targets: &[(u16, u16, u16, &str)], ttl: u32) {
        let fqdn = self.fqdn(name);
        let serial = self.next_serial();
        {
            let mut records = self.zone.records_mut().await;
            records.insert(
                RrKey::new(LowerName::new(&fqdn), RecordType::SRV),
                Arc::new(RecordSet::new(fqdn.clone(), RecordType::SRV, serial)),
            );
            records.remove(&RrKey::new(LowerName::new(&fqdn), RecordType::SRV));
        }
        for (prio, weight, port, target) in targets {
            let srv = SRV::new(*prio, *weight, *port, self.fqdn(target));
            self.zone
                .upsert(
                    Record::from_rdata(fqdn.clone(), ttl, RData::SRV(srv)),
                    serial,
                )
                .await;
        }
    }

    /// Stops answering (UDP and TCP sockets closed).
    pub async fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.shutdown_gracefully().await;
        }
    }
}

/// A resolver's view of a sick DNS server: a UDP front that passes queries on to
/// `upstream` but answers SERVFAIL itself to the query types `fail` holds, as a
/// server whose AAAA path is broken does.
pub struct FaultyDns {
    pub addr: SocketAddr,
    pub fail: Arc<std::sync::Mutex<Vec<RecordType>>>,
    /// How long each passed-on answer is held back, in milliseconds.
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyDns {
    pub async fn start(upstream: SocketAddr) -> FaultyDns {
        let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        let fail: Arc<std::sync::Mutex<Vec<RecordType>>> = Arc::default();
        let failing = Arc::clone(&fail);
        let delay_ms: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let delay = Arc::clone(&delay_ms);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let query = buf[..n].to_vec();
                let Some(end) = question_end(&query) else {
                    continue;
                };
                let qtype = RecordType::from(u16::from_be_bytes([query[end - 4], query[end - 3]]));
                if failing.lock().unwrap().contains(&qtype) {
                    // the question echoed, QR and RA set, RCODE 2, no records
                    let mut answer = query[..end].to_vec();
                    answer[2] |= 0x80;
                    answer[3] = 0x80 | 2;
                    answer[6..12].fill(0);
                    let _ = sock.send_to(&answer, from).await;
                    continue;
                }
                let sock = Arc::clone(&sock);
                let hold = Duration::from_millis(delay.load(std::sync::atomic::Ordering::SeqCst));
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    let up = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    let _ = up.send_to(&query, upstream).await;
                    let mut back = vec![0u8; 65_535];
                    if let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(2), up.recv(&mut back)).await
                    {
                        let _ = sock.send_to(&back[..m], from).await;
                    }
                });
            }
        });
        FaultyDns {
            addr,
            fail,
            delay_ms,
            task,
        }
    }

    /// Answers SERVFAIL to these query types from now on (none: pass all on).
    pub fn fail(&self, types: &[RecordType]) {
        *self.fail.lock().unwrap() = types.to_vec();
    }
}

impl Drop for FaultyDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the first question of a DNS message ends (after QTYPE and QCLASS).
fn question_end(m: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*m.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    (i + 4 <= m.len()).then_some(i + 4)
}
