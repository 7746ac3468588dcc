//! DNS discovery against a real dnsmasq on a loopback port (gateway-testkit's launcher).
mod discovery_common;
use discovery_common::{ep, until_set, updates};
use gateway_core::discovery::{self, DnsRecord, DnsSpec, SourceSpec};
use gateway_core::observability::Metrics;
use gateway_testkit::dnsmasq::Dnsmasq;
use std::time::{Duration, Instant};

fn spec(d: &Dnsmasq, host: &str, record: DnsRecord) -> DnsSpec {
    DnsSpec {
        host: host.into(),
        record,
        resolver: Some(d.addr()),
        min_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn a_and_aaaa_records_follow_changes_within_ttl_plus_one_interval() {
    let ttl = 1;
    let d = Dnsmasq::start(
        "127.0.0.11 svc.test\n127.0.0.12 svc.test\n::1 svc.test\n",
        ttl,
        &[],
    );
    let s = SourceSpec::Dns(spec(&d, "svc.test", DnsRecord::A { port: 8080 }));
    let m = Metrics::new().unwrap();
    let h = discovery::spawn(
        "users",
        discovery::build(&s).unwrap(),
        Some(m.discovery("users", "dns")),
    );
    let mut rx = h.subscribe();
    let first = [
        ep("127.0.0.11:8080", 1),
        ep("127.0.0.12:8080", 1),
        ep("[::1]:8080", 1),
    ];
    until_set(&mut rx, &first, Duration::from_secs(10)).await;

    d.set_hosts("127.0.0.13 svc.test\n");
    // the TTL is 1 s, so the next round is 1 s after the last (clamped into 200ms..2s)
    let bound = Duration::from_secs(u64::from(ttl)) * 2;
    let took = until_set(
        &mut rx,
        &[ep("127.0.0.13:8080", 1)],
        bound + Duration::from_secs(3),
    )
    .await;
    eprintln!("DNS change applied after {took:?} (TTL {ttl}s + one interval = {bound:?})");
    assert!(m
        .render()
        .contains(r#"gw_upstream_endpoints{source="dns",upstream="users"} 1"#));
}

#[tokio::test]
async fn failures_keep_the_last_good_set_then_recover() {
    let mut d = Dnsmasq::start("127.0.0.21 keep.test\n", 1, &[]);
    let s = SourceSpec::Dns(spec(&d, "keep.test", DnsRecord::A { port: 9000 }));
    let m = Metrics::new().unwrap();
    let h = discovery::spawn(
        "keep",
        discovery::build(&s).unwrap(),
        Some(m.discovery("keep", "dns")),
    );
    let mut rx = h.subscribe();
    let good = [ep("127.0.0.21:9000", 1)];
    until_set(&mut rx, &good, Duration::from_secs(10)).await;

    // the name disappears (NXDOMAIN): a failure, not an empty set
    d.set_hosts("127.0.0.99 other.test\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while updates(&m, "keep", "dns", "failure") < 2 {
        assert!(
            Instant::now() < deadline,
            "no failure counted: {}",
            m.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.current().as_deref(), Some(&good[..]));

    // the server is gone
    d.stop();
    let before = updates(&m, "keep", "dns", "failure");
    let deadline = Instant::now() + Duration::from_secs(20);
    while updates(&m, "keep", "dns", "failure") < before + 2 {
        assert!(
            Instant::now() < deadline,
            "no failure counted with dnsmasq down: {}",
            m.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.current().as_deref(), Some(&good[..]));

    // back, with another address: applied (the back-off is capped at max_interval = 2 s)
    std::fs::write(d.hosts_path(), "127.0.0.22 keep.test\n").unwrap();
    d.spawn();
    until_set(
        &mut rx,
        &[ep("127.0.0.22:9000", 1)],
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn srv_records_give_target_port_and_weight_of_the_lowest_priority() {
    let hosts = "127.0.0.31 a.svc.test\n127.0.0.32 b.svc.test\n127.0.0.33 c.svc.test\n";
    let mut d = Dnsmasq::start(
        hosts,
        1,
        &[
            "--srv-host=_http._tcp.svc.test,a.svc.test,8081,0,5",
            "--srv-host=_http._tcp.svc.test,b.svc.test,8082,0,1",
            "--srv-host=_http._tcp.svc.test,c.svc.test,8083,1,9",
        ],
    );
    let s = SourceSpec::Dns(spec(&d, "_http._tcp.svc.test", DnsRecord::Srv));
    let h = discovery::spawn("srv", discovery::build(&s).unwrap(), None);
    let mut rx = h.subscribe();
    until_set(
        &mut rx,
        &[ep("127.0.0.31:8081", 5), ep("127.0.0.32:8082", 1)],
        Duration::from_secs(10),
    )
    .await;
    // SRV records are options: dnsmasq needs a restart for them
    d.restart_with(&["--srv-host=_http._tcp.svc.test,c.svc.test,8090,0,0"]);
    until_set(
        &mut rx,
        &[ep("127.0.0.33:8090", 1)],
        Duration::from_secs(10),
    )
    .await;
}
