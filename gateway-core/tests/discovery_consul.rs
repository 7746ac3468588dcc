//! Consul discovery against gateway-testkit's stateful Consul double, plus a smoke test against
//! HashiCorp's own `@hashicorp/consul-api-double` served by `@hashicorp/api-double` (skipped, with the
//! reason printed, when node or the packages are missing; see `docs/discovery.md` for the install).
mod discovery_common;
use discovery_common::{ep, until_set, updates};
use gateway_core::discovery::consul::ConsulSource;
use gateway_core::discovery::spec::Backoff;
use gateway_core::discovery::{self, ConsulSpec, Source, SourceSpec};
use gateway_core::observability::Metrics;
use gateway_testkit::consul::{ConsulDouble, Instance};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn spec(url: &str, wait: Duration) -> ConsulSpec {
    ConsulSpec {
        url: url.into(),
        service: "web".into(),
        tag: None,
        datacenter: None,
        token: None,
        ca_file: None,
        wait,
        min_interval: Duration::from_millis(20),
        backoff: Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        },
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn changes_are_applied_within_one_blocking_round_trip() {
    let c = ConsulDouble::start().await.unwrap();
    c.add_datacenter("dc2");
    c.require_token(Some("acl-token-0123456789"));
    let inst = |id: &str, ip: &str| {
        Instance::new(id, "web", ip, 8080)
            .tags(&["blue"])
            .datacenter("dc2")
    };
    c.register(inst("a", "10.0.0.1").weight(Some(3)));
    c.register(
        inst("b", "10.0.0.9")
            .on_node_address("10.0.0.2")
            .weight(None),
    );
    c.register(inst("x", "10.0.0.3").tags(&["green"])); // other tag
    c.register(Instance::new("y", "web", "10.0.0.4", 8080).tags(&["blue"])); // dc1
    let mut s = spec(&c.url(), Duration::from_secs(30));
    s.tag = Some("blue".into());
    s.datacenter = Some("dc2".into());
    s.token = Some("acl-token-0123456789".into());
    let h = discovery::spawn(
        "web",
        discovery::build(&SourceSpec::Consul(s)).unwrap(),
        None,
    );
    let mut rx = h.subscribe();
    // Service.Address, Node.Address when it is empty, Weights.Passing (1 when absent)
    until_set(
        &mut rx,
        &[ep("10.0.0.1:8080", 3), ep("10.0.0.2:8080", 1)],
        Duration::from_secs(5),
    )
    .await;

    // the source now holds a blocking query; a registration answers it at once (wait is 30 s)
    until("a held query", Duration::from_secs(5), || {
        c.blocked_now() == 1
    })
    .await;
    let q = c.last_query().unwrap();
    for part in [
        "passing=true",
        "tag=blue",
        "dc=dc2",
        "wait=30000ms",
        &format!("index={}", c.index()),
    ] {
        assert!(q.contains(part), "{part} missing from {q}");
    }
    assert_eq!(c.last_token().as_deref(), Some("acl-token-0123456789"));
    c.register(inst("c", "10.0.0.5"));
    let took = until_set(
        &mut rx,
        &[
            ep("10.0.0.1:8080", 3),
            ep("10.0.0.2:8080", 1),
            ep("10.0.0.5:8080", 1),
        ],
        Duration::from_secs(3),
    )
    .await;
    eprintln!("registration applied after {took:?}");

    until("a held query", Duration::from_secs(5), || {
        c.blocked_now() == 1
    })
    .await;
    c.deregister("a");
    until_set(
        &mut rx,
        &[ep("10.0.0.2:8080", 1), ep("10.0.0.5:8080", 1)],
        Duration::from_secs(3),
    )
    .await;
    // a failing health check removes the instance (passing only)
    c.set_check("b", "critical");
    until_set(&mut rx, &[ep("10.0.0.5:8080", 1)], Duration::from_secs(3)).await;
    // a successful answer with no instance empties the set
    c.deregister("c");
    until_set(&mut rx, &[], Duration::from_secs(3)).await;
}

/// An instance registered with a host name (Consul allows one in `Service.Address` and
/// `Node.Address`) is resolved by the system resolver: `localhost` becomes a loopback endpoint next
/// to the IP instances (what a failed lookup does is unit-tested in `discovery::consul`).
#[tokio::test]
async fn host_name_instances_are_resolved() {
    let c = ConsulDouble::start().await.unwrap();
    c.register(Instance::new("ip", "web", "10.0.0.1", 8080));
    c.register(Instance::new("named", "web", "localhost", 8081).weight(Some(2)));
    c.register(Instance::new("node-named", "web", "", 8082).on_node_address("localhost"));
    let mut s = ConsulSource::new(spec(&c.url(), Duration::from_secs(1))).unwrap();
    let mut set = s.fetch().await.expect("one round");
    set.sort_by_key(|e| e.addr);
    let loopback = std::net::ToSocketAddrs::to_socket_addrs("localhost:0")
        .unwrap()
        .next()
        .unwrap()
        .ip();
    let at = |port: u16, w: u32| ep(&std::net::SocketAddr::new(loopback, port).to_string(), w);
    let mut want = vec![ep("10.0.0.1:8080", 1), at(8081, 2), at(8082, 1)];
    want.sort_by_key(|e| e.addr);
    assert_eq!(set, want);
}

#[tokio::test]
async fn consul_down_or_answering_garbage_keeps_the_last_endpoints() {
    let mut c = ConsulDouble::start().await.unwrap();
    c.register(Instance::new("a", "web", "10.0.0.1", 80));
    c.register(Instance::new("b", "web", "10.0.0.2", 80));
    let m = Metrics::new().unwrap();
    let s = spec(&c.url(), Duration::from_secs(30));
    let h = discovery::spawn(
        "web",
        discovery::build(&SourceSpec::Consul(s)).unwrap(),
        Some(m.discovery("web", "consul")),
    );
    let mut rx = h.subscribe();
    let good = [ep("10.0.0.1:80", 1), ep("10.0.0.2:80", 1)];
    until_set(&mut rx, &good, Duration::from_secs(5)).await;

    for (what, fail, malformed) in [("500", Some(500), false), ("malformed JSON", None, true)] {
        until("a held query", Duration::from_secs(5), || {
            c.blocked_now() == 1
        })
        .await;
        let failed = updates(&m, "web", "consul", "failure");
        c.fail_with(fail);
        c.set_malformed(malformed);
        c.deregister("b"); // wakes the held query, which now answers garbage
        until(what, Duration::from_secs(5), || {
            updates(&m, "web", "consul", "failure") >= failed + 2
        })
        .await;
        assert_eq!(h.current().as_deref(), Some(&good[..]), "after {what}");
        c.fail_with(None);
        c.set_malformed(false);
        c.register(Instance::new("b", "web", "10.0.0.2", 80));
        // back-off is at most 500 ms here
        until_set(&mut rx, &good, Duration::from_secs(5)).await;
    }
    // a slow answer is just slow
    c.set_delay(Duration::from_millis(300));
    c.register(Instance::new("d", "web", "10.0.0.4", 80));
    until_set(
        &mut rx,
        &[
            ep("10.0.0.1:80", 1),
            ep("10.0.0.2:80", 1),
            ep("10.0.0.4:80", 1),
        ],
        Duration::from_secs(5),
    )
    .await;

    // Consul goes away: the set stays, failures are counted
    let failed = updates(&m, "web", "consul", "failure");
    c.stop();
    until("failures while down", Duration::from_secs(10), || {
        updates(&m, "web", "consul", "failure") >= failed + 2
    })
    .await;
    assert_eq!(h.current().unwrap().len(), 3);
    assert!(m
        .render()
        .contains(r#"gw_upstream_endpoints{source="consul",upstream="web"} 3"#));
}

#[tokio::test]
async fn an_index_that_goes_backwards_is_reset() {
    let c = ConsulDouble::start().await.unwrap();
    for i in 1..=4 {
        c.register(Instance::new(
            &format!("i{i}"),
            "web",
            &format!("10.0.1.{i}"),
            80,
        ));
    }
    let stale = c.index(); // 5
    let wait = Duration::from_secs(3);
    let h = discovery::spawn(
        "web",
        discovery::build(&SourceSpec::Consul(spec(&c.url(), wait))).unwrap(),
        None,
    );
    let mut rx = h.subscribe();
    until("4 endpoints", Duration::from_secs(5), || {
        h.current().is_some_and(|s| s.len() == 4)
    })
    .await;
    until("a held query", Duration::from_secs(5), || {
        c.blocked_now() == 1
    })
    .await;
    assert!(c.last_query().unwrap().contains(&format!("index={stale}")));

    // a snapshot restore: the index goes back to 1; the held query ends at `wait` with index 1 < 5,
    // the source resets to 0 (a non-blocking query) and then blocks on index 1
    c.reset_index(1);
    until(
        "blocking on the new index",
        wait + Duration::from_secs(3),
        || c.blocked_now() == 1 && c.last_query().is_some_and(|q| q.contains("&index=1&")),
    )
    .await;
    // so a change is seen at once, not after a 3 s wait
    c.deregister("i4");
    let took = until_set(
        &mut rx,
        &[
            ep("10.0.1.1:80", 1),
            ep("10.0.1.2:80", 1),
            ep("10.0.1.3:80", 1),
        ],
        Duration::from_secs(2),
    )
    .await;
    assert!(took < wait, "{took:?}");
}

/// Where `@hashicorp/api-double` and `@hashicorp/consul-api-double` are installed: `$GW_API_DOUBLE_DIR`
/// (an npm prefix with `node_modules/`), else npm's global root.
fn api_double_dir() -> Result<(PathBuf, PathBuf), String> {
    let root = match std::env::var_os("GW_API_DOUBLE_DIR") {
        Some(d) => PathBuf::from(d).join("node_modules"),
        None => {
            let out = std::process::Command::new("npm")
                .args(["root", "-g"])
                .output()
                .map_err(|e| format!("npm is not available ({e})"))?;
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let bin = root.join("@hashicorp/api-double/bin/index.js");
    let templates = root.join("@hashicorp/consul-api-double");
    if !bin.exists() || !templates.join("v1/health/service/_").exists() {
        return Err(format!(
            "@hashicorp/api-double and @hashicorp/consul-api-double are not installed under {} \
             (npm install --prefix DIR @hashicorp/api-double @hashicorp/consul-api-double, then GW_API_DOUBLE_DIR=DIR)",
            root.display()
        ));
    }
    Ok((bin, templates))
}

struct Node(std::process::Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn smoke_hashicorp_consul_api_double_answers_parse_into_endpoints() {
    let (bin, templates) = match api_double_dir() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED smoke_hashicorp_consul_api_double: {why}");
            return;
        }
    };
    if !Path::new("/usr/bin/node").exists() && which("node").is_none() {
        eprintln!("SKIPPED smoke_hashicorp_consul_api_double: node is not installed");
        return;
    }
    let port = gateway_testkit::redis::free_port();
    let _node = Node(
        std::process::Command::new("node")
            .arg(&bin)
            .args([
                "--dir",
                &templates.to_string_lossy(),
                "--port",
                &port.to_string(),
            ])
            .env("CONSUL_NODE_COUNT", "3")
            .env("CONSUL_LATENCY", "50")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start api-double"),
    );
    let addr = format!("127.0.0.1:{port}");
    until("api-double listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).is_ok()
    })
    .await;
    let mut src =
        ConsulSource::new(spec(&format!("http://{addr}"), Duration::from_secs(1))).unwrap();
    // first a plain query, then a blocking one with the index it answered
    for round in 0..2 {
        let set = src
            .fetch()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // random data: 3 instances with random IPv4 addresses and ports (port 0 would be skipped)
        assert_eq!(set.len(), 3, "round {round}: {set:?}");
        assert!(set
            .iter()
            .all(|e| e.addr.is_ipv4() && e.addr.port() != 0 && e.weight == 1));
        assert!(src.index() > 0, "X-Consul-Index was not read");
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.exists())
    })
}
