//! A stateful Consul test double: the health endpoint gw's Consul discovery uses, written from Consul's
//! HTTP API documentation ("Health - List Service Instances" and "Blocking Queries").
//!
//! `GET /v1/health/service/<service>` answers a JSON list of `{Node, Service, Checks}` entries with an
//! `X-Consul-Index` header. Query parameters: `passing` (bare or `=true`: only instances whose checks all
//! pass), `tag` (repeatable; every tag must be present), `dc` (default `dc1`; another answers 500 "No
//! path to datacenter" unless added with [`ConsulDouble::add_datacenter`]), `index` and `wait` (blocking:
//! with `index` ≥ the current index the request is held until the index moves past it or `wait` expires
//! — default 5m, at most 10m, Go duration syntax like `10s` or `250ms`). Bad `index`/`wait` → 400.
//! When an ACL token is required ([`ConsulDouble::require_token`]), a request without the right
//! `X-Consul-Token` gets 403 "ACL not found". Any other path is 404.
//!
//! Test controls: [`register`](ConsulDouble::register) / [`deregister`](ConsulDouble::deregister) /
//! [`set_check`](ConsulDouble::set_check) (each bumps the index and wakes blocked queries),
//! [`reset_index`](ConsulDouble::reset_index) (the index goes backwards, as after a snapshot restore),
//! [`fail_with`](ConsulDouble::fail_with) (answer that status), [`set_delay`](ConsulDouble::set_delay)
//! (answer slowly), [`set_malformed`](ConsulDouble::set_malformed) (200 with broken JSON),
//! [`stop`](ConsulDouble::stop) (listener and open connections closed: Consul is down), plus request
//! counters and the last query and token seen.
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default `wait` of a blocking query (Consul's).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Longest `wait` (Consul's cap).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// One registered service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Service ID (unique).
    pub id: String,
    /// Service name.
    pub service: String,
    /// Node name and address.
    pub node: String,
    pub node_address: String,
    /// `Service.Address`; empty means "use the node's address".
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    /// `Weights.Passing` (`None`: the field is left out).
    pub weight: Option<u32>,
    /// Status of the service check: `passing`, `warning` or `critical`.
    pub status: String,
    pub datacenter: String,
}

impl Instance {
    /// A passing instance of `service` at `address:port` in `dc1`, on node `node-<id>` (same address),
    /// weight 1.
    pub fn new(id: &str, service: &str, address: &str, port: u16) -> Self {
        Instance {
            id: id.into(),
            service: service.into(),
            node: format!("node-{id}"),
            node_address: address.into(),
            address: address.into(),
            port,
            tags: Vec::new(),
            weight: Some(1),
            status: "passing".into(),
            datacenter: "dc1".into(),
        }
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }
    pub fn weight(mut self, w: Option<u32>) -> Self {
        self.weight = w;
        self
    }
    /// Empty `Service.Address`: clients must fall back to `Node.Address`.
    pub fn on_node_address(mut self, node_address: &str) -> Self {
        self.address = String::new();
        self.node_address = node_address.into();
        self
    }
    pub fn status(mut self, s: &str) -> Self {
        self.status = s.into();
        self
    }
    pub fn datacenter(mut self, dc: &str) -> Self {
        self.datacenter = dc.into();
        self
    }
}

#[derive(Debug)]
struct Inner {
    index: u64,
    instances: BTreeMap<String, Instance>,
    datacenters: BTreeSet<String>,
    token: Option<String>,
    fail: Option<u16>,
    delay: Duration,
    malformed: bool,
    requests: u64,
    blocked_now: u64,
    last_query: Option<String>,
    last_token: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Carries the index; every bump wakes blocked queries.
    index_tx: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn bump(&self, g: &mut Inner) {
        g.index += 1;
        self.index_tx.send_replace(g.index);
    }
}

/// The running double; dropping it stops it.
pub struct ConsulDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl ConsulDouble {
    /// Starts on `127.0.0.1:0` with no instances and index 1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (index_tx, _) = watch::channel(1);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                index: 1,
                instances: BTreeMap::new(),
                datacenters: ["dc1".to_string()].into(),
                token: None,
                fail: None,
                delay: Duration::ZERO,
                malformed: false,
                requests: 0,
                blocked_now: 0,
                last_query: None,
                last_token: None,
            }),
            index_tx,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(ConsulDouble {
            addr,
            shared,
            stop_tx,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds or replaces an instance (by ID); bumps the index.
    pub fn register(&self, i: Instance) {
        let mut g = self.shared.lock();
        g.instances.insert(i.id.clone(), i);
        self.shared.bump(&mut g);
    }
    /// Removes an instance; bumps the index. Returns whether it existed.
    pub fn deregister(&self, id: &str) -> bool {
        let mut g = self.shared.lock();
        let had = g.instances.remove(id).is_some();
        self.shared.bump(&mut g);
        had
    }
    /// Sets the service check status (`passing`, `warning`, `critical`) of an instance; bumps the index.
    pub fn set_check(&self, id: &str, status: &str) {
        let mut g = self.shared.lock();
        if let Some(i) = g.instances.get_mut(id) {
            i.status = status.into();
        }
        self.shared.bump(&mut g);
    }
    /// Makes the index go backwards to `to` (≥ 1), as after a snapshot restore; wakes blocked queries.
    pub fn reset_index(&self, to: u64) {
        let mut g = self.shared.lock();
        g.index = to.max(1);
        self.shared.index_tx.send_replace(g.index);
    }
    /// The current index.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }
    /// Knows another datacenter (queries with `dc=<name>` then succeed).
    pub fn add_datacenter(&self, dc: &str) {
        self.shared.lock().datacenters.insert(dc.into());
    }
    /// Requires this ACL token (`None`: no ACLs).
    pub fn require_token(&self, token: Option<&str>) {
        self.shared.lock().token = token.map(Into::into);
    }
    /// Answer every request with this status (`None`: normal answers).
    pub fn fail_with(&self, status: Option<u16>) {
        self.shared.lock().fail = status;
    }
    /// Wait this long before answering (after any blocking).
    pub fn set_delay(&self, d: Duration) {
        self.shared.lock().delay = d;
    }
    /// Answer 200 with a truncated JSON body.
    pub fn set_malformed(&self, on: bool) {
        self.shared.lock().malformed = on;
    }
    /// Requests received on the health endpoint.
    pub fn requests(&self) -> u64 {
        self.shared.lock().requests
    }
    /// Requests being held by a blocking query right now.
    pub fn blocked_now(&self) -> u64 {
        self.shared.lock().blocked_now
    }
    /// Query string of the last request.
    pub fn last_query(&self) -> Option<String> {
        self.shared.lock().last_query.clone()
    }
    /// `X-Consul-Token` of the last request.
    pub fn last_token(&self) -> Option<String> {
        self.shared.lock().last_token.clone()
    }
    /// Stops the double: the listener closes and open connections are dropped (Consul is down).
    pub fn stop(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(a) = self.accept.take() {
            a.abort();
        }
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

fn answer(status: u16, index: Option<u64>, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    if let Some(i) = index {
        b = b
            .header("X-Consul-Index", i.to_string())
            .header("X-Consul-KnownLeader", "true")
            .header("X-Consul-LastContact", "0")
            .header("Content-Type", "application/json");
    } else {
        b = b.header("Content-Type", "text/plain; charset=utf-8");
    }
    b.body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Parses a Go duration as Consul does (`10s`, `250ms`, `1m30s`, `1h`); bare numbers are invalid.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (num, tail) = rest.split_at(n);
        let v: f64 = num.parse().ok()?;
        let u = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(u);
        let secs = match unit {
            "ns" => v / 1e9,
            "us" | "µs" => v / 1e6,
            "ms" => v / 1e3,
            "s" => v,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(secs).ok()?;
        rest = next;
    }
    Some(total)
}

fn entry(i: &Instance) -> Value {
    let mut svc = json!({
        "ID": i.id, "Service": i.service, "Tags": i.tags, "Address": i.address, "Port": i.port,
        "Meta": {}, "EnableTagOverride": false, "CreateIndex": 10, "ModifyIndex": 10,
    });
    if let Some(w) = i.weight {
        svc["Weights"] = json!({"Passing": w, "Warning": 1});
    }
    json!({
        "Node": {
            "ID": format!("00000000-0000-0000-0000-{:012}", i.node.len()), "Node": i.node,
            "Address": i.node_address, "Datacenter": i.datacenter,
            "TaggedAddresses": {"lan": i.node_address, "wan": i.node_address}, "Meta": {},
            "CreateIndex": 5, "ModifyIndex": 5,
        },
        "Service": svc,
        "Checks": [
            {"Node": i.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
             "Status": "passing", "ServiceID": "", "ServiceName": ""},
            {"Node": i.node, "CheckID": format!("service:{}", i.id),
             "Name": format!("Service '{}' check", i.service), "Status": i.status,
             "ServiceID": i.id, "ServiceName": i.service},
        ],
    })
}

async fn handle(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let Some(service) = req.uri().path().strip_prefix("/v1/health/service/") else {
        return answer(404, None, "404 page not found");
    };
    let service = service.to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let token = req
        .headers()
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let required = {
        let mut g = shared.lock();
        g.requests += 1;
        g.last_query = Some(query.clone());
        g.last_token = token.clone();
        g.token.clone()
    };
    if let Some(want) = required {
        if token.as_deref() != Some(want.as_str()) {
            return answer(403, None, "ACL not found");
        }
    }
    let index = match get("index").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(i)) => i,
        Some(Err(_)) => return answer(400, None, "Invalid index"),
    };
    let wait = match get("wait").map(parse_go_duration) {
        None => DEFAULT_WAIT,
        Some(Some(w)) => w.min(MAX_WAIT),
        Some(None) => return answer(400, None, "Invalid wait time"),
    };
    let passing = matches!(get("passing"), Some("" | "true" | "1"));
    let dc = get("dc").unwrap_or("dc1").to_string();
    let tags: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.clone())
        .collect();
    if !shared.lock().datacenters.contains(&dc) {
        return answer(500, None, "No path to datacenter");
    }
    if index > 0 {
        // Consul's blocking loop: answer once the index moved past the client's, or at `wait`
        let mut rx = shared.index_tx.subscribe();
        shared.lock().blocked_now += 1;
        let _ = tokio::time::timeout(wait, rx.wait_for(|&i| i > index)).await;
        shared.lock().blocked_now -= 1;
    }
    // the failure switches apply to the answer, also of a query held since before they were set
    let (delay, fail, malformed) = {
        let g = shared.lock();
        (g.delay, g.fail, g.malformed)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = fail {
        return answer(status, None, "rpc error: simulated failure");
    }
    let g = shared.lock();
    if malformed {
        return answer(
            200,
            Some(g.index),
            "[{\"Node\": {\"Address\": \"10.0.0.1\"}, \"Serv",
        );
    }
    let list: Vec<Value> = g
        .instances
        .values()
        .filter(|i| i.service == service && i.datacenter == dc)
        .filter(|i| tags.iter().all(|t| i.tags.contains(t)))
        .filter(|i| !passing || i.status == "passing")
        .map(entry)
        .collect();
    answer(200, Some(g.index), Value::Array(list).to_string())
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::get;
    use std::time::Instant;

    async fn list(url: &str) -> (u16, Option<u64>, Value) {
        let r = get(url).await.unwrap();
        let idx = r
            .headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status.as_u16(), idx, body)
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(decode("a%2Fb+c"), "a/b c");
    }

    #[tokio::test]
    async fn filters_passing_tag_dc_and_answers_the_index() {
        let c = ConsulDouble::start().await.unwrap();
        c.register(Instance::new("a", "web", "10.0.0.1", 80).tags(&["v1", "blue"]));
        c.register(
            Instance::new("b", "web", "10.0.0.2", 80)
                .tags(&["v2"])
                .status("critical"),
        );
        c.register(Instance::new("c", "db", "10.0.0.3", 5432));
        c.register(Instance::new("d", "web", "10.1.0.1", 80).datacenter("dc2"));
        let base = format!("{}/v1/health/service/web", c.url());
        let (s, idx, all) = list(&base).await;
        assert_eq!((s, idx), (200, Some(5)));
        assert_eq!(all.as_array().unwrap().len(), 2);
        let (_, _, p) = list(&format!("{base}?passing=true")).await;
        assert_eq!(p.as_array().unwrap().len(), 1);
        assert_eq!(p[0]["Service"]["Address"], "10.0.0.1");
        assert_eq!(p[0]["Service"]["Weights"]["Passing"], 1);
        let (_, _, t) = list(&format!("{base}?tag=v2")).await;
        assert_eq!(t[0]["Service"]["ID"], "b");
        let (_, _, t) = list(&format!("{base}?tag=v1&tag=blue")).await;
        assert_eq!(t.as_array().unwrap().len(), 1);
        let (s, _, _) = list(&format!("{base}?dc=dc2")).await;
        assert_eq!(s, 500);
        c.add_datacenter("dc2");
        let (_, _, d) = list(&format!("{base}?dc=dc2")).await;
        assert_eq!(d[0]["Node"]["Address"], "10.1.0.1");
        assert_eq!(list(&format!("{base}?index=x")).await.0, 400);
        assert_eq!(list(&format!("{base}?index=1&wait=10")).await.0, 400);
        assert_eq!(list(&format!("{}/v1/agent/self", c.url())).await.0, 404);
    }

    #[tokio::test]
    async fn blocking_query_returns_on_change_or_after_wait() {
        let c = Arc::new(ConsulDouble::start().await.unwrap());
        c.register(Instance::new("a", "web", "10.0.0.1", 80));
        let base = format!("{}/v1/health/service/web", c.url());
        let idx = c.index();
        // nothing changes: held for `wait`
        let t = Instant::now();
        let (_, i2, _) = list(&format!("{base}?index={idx}&wait=300ms")).await;
        assert!(
            t.elapsed() >= Duration::from_millis(280),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(i2, Some(idx));
        // a registration while held: answered at once with the new index
        let c2 = c.clone();
        let bg = tokio::spawn(async move {
            while c2.blocked_now() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            c2.register(Instance::new("b", "web", "10.0.0.2", 80));
        });
        let t = Instant::now();
        let (_, i3, body) = list(&format!("{base}?index={idx}&wait=30s")).await;
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(i3, Some(idx + 1));
        assert_eq!(body.as_array().unwrap().len(), 2);
        bg.await.unwrap();
        // an old index answers at once
        let t = Instant::now();
        list(&format!("{base}?index=1&wait=30s")).await;
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn controls_reset_fail_malformed_token_and_stop() {
        let mut c = ConsulDouble::start().await.unwrap();
        c.register(Instance::new("a", "web", "10.0.0.1", 80));
        c.register(Instance::new("b", "web", "10.0.0.2", 80));
        let base = format!("{}/v1/health/service/web", c.url());
        c.reset_index(1);
        assert_eq!(list(&base).await.1, Some(1));
        c.fail_with(Some(500));
        assert_eq!(list(&base).await.0, 500);
        c.fail_with(None);
        c.set_malformed(true);
        let r = get(&base).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(serde_json::from_slice::<Value>(&r.body).is_err());
        c.set_malformed(false);
        c.set_delay(Duration::from_millis(200));
        let t = Instant::now();
        list(&base).await;
        assert!(t.elapsed() >= Duration::from_millis(190));
        c.set_delay(Duration::ZERO);
        c.require_token(Some("secret-token"));
        assert_eq!(list(&base).await.0, 403);
        assert_eq!(c.requests(), 5);
        c.stop();
        assert!(get(&base).await.is_err());
    }
}
