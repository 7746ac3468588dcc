//! Issue 11 item 1, end to end: with `trusted_proxies` set, a request carrying two `X-Forwarded-For`
//! field lines (the client's forged one, then the one HAProxy's `option forwardfor` appends) is
//! counted under the address of the last line (a per-IP limit cannot be bypassed by changing the
//! forged line), and the upstream receives every hop in one joined `X-Forwarded-For` value. With
//! `client_ip_header: forwarded`, RFC 7239 `Forwarded` is read instead and `X-Forwarded-For` is not.
use gateway_testkit::{raw_request, RawResponse, Upstream};
use std::net::SocketAddr;

fn config(header: &str) -> String {
    format!(
        r#"
server:
  trusted_proxies: [127.0.0.1]
  client_ip_header: {header}
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  - name: svc
    endpoints: [{{ address: "{{{{UP}}}}" }}]
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: svc
    policies: [per-ip]
policies:
  - {{ name: per-ip, type: rate_limit, window: 1h, max: 1, key: {{ type: client_ip }} }}
"#
    )
}

async fn send(addr: SocketAddr, lines: &[(&str, &str)]) -> RawResponse {
    let mut req = String::from("GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in lines {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(addr, req).await.expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_xff_line_is_the_client() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(&config("x_forwarded_for"), &[("UP", up.addr().to_string())]).await;
    let addr = gw.addrs[0];
    let xff = "x-forwarded-for";
    let r = send(addr, &[(xff, "6.6.6.1"), (xff, "198.51.100.7")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up.last_request().expect("recorded");
    assert_eq!(
        rec.headers.get_all(xff).iter().collect::<Vec<_>>(),
        ["6.6.6.1, 198.51.100.7, 127.0.0.1"],
        "one joined value with every hop"
    );
    // the same real client with another forged first line: still the same per-IP counter
    let r = send(addr, &[(xff, "6.6.6.2"), (xff, "198.51.100.7")]).await;
    assert_eq!(r.status, 429, "per-IP limit bypassed: {}", r.text());
    // another real client is counted on its own
    let r = send(addr, &[(xff, "6.6.6.2"), (xff, "198.51.100.8")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_header_when_configured() {
    let up = Upstream::start("svc").await;
    let gw = gw_suite::gateway(&config("forwarded"), &[("UP", up.addr().to_string())]).await;
    let addr = gw.addrs[0];
    let fwd = "forwarded";
    let r = send(
        addr,
        &[(fwd, "for=6.6.6.1"), (fwd, "for=\"[2001:db8::7]:4711\"")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // same client behind another forged element and a forged X-Forwarded-For: same counter
    let r = send(
        addr,
        &[
            ("x-forwarded-for", "203.0.113.99"),
            (fwd, "for=6.6.6.2, for=\"[2001:db8::7]\";proto=https"),
        ],
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    // X-Forwarded-For alone is not believed: the client is the trusted peer itself
    let r = send(addr, &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(addr, &[("x-forwarded-for", "198.51.100.10")]).await;
    assert_eq!(r.status, 429, "X-Forwarded-For was read: {}", r.text());
}
