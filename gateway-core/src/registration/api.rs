//! The admin API for upstreams, registrations and routes (token required, like every `/admin/` path):
//!
//! - `GET /admin/upstreams`: every upstream with its endpoints (address, weight, source, health,
//!   ejection, in-flight requests);
//! - `POST /admin/upstreams/<name>/endpoints` `{"address": "127.0.0.1:3001", "weight": 2}`: 201 with
//!   the endpoint once the runtime serving it is live (health-checked first when the upstream has a
//!   health check); 400 bad body, address or weight (the compiler's rules), 404 unknown upstream, 409
//!   address already there;
//! - `DELETE /admin/upstreams/<name>/endpoints/<address>`: 204 once no new request can reach it
//!   (in-flight requests finish on the runtime they started with); 404 unknown upstream or address;
//! - `GET /admin/routes`: the compiled routes in match order.
//!
//! Errors are the gateway's one error shape (`{"error", "message", "request_id"}`).
use super::ChangeError;
use crate::error::error_body;
use crate::observability::Metrics;
use crate::proxy::runtime::Runtime;
use crate::proxy::Engine;
use http::{Method, Response};
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;

/// Answers the paths of this module (`None`: not one of them; the rest of the admin API answers it).
/// `refuse` is the admin API's token check: `Some(answer)` refuses the request's `Authorization`.
pub async fn serve(
    engine: &Engine,
    refuse: impl Fn(Option<&[u8]>) -> Option<Response<Vec<u8>>>,
    session: &mut ServerSession,
) -> Option<Response<Vec<u8>>> {
    let req = session.req_header();
    let path = req.uri.path().to_string();
    if !(path == "/admin/routes"
        || path == "/admin/upstreams"
        || path.starts_with("/admin/upstreams/"))
    {
        return None;
    }
    let method = req.method.clone();
    let rid = crate::proxy::steps::request_id::request_id(&req.headers);
    let rid = rid.to_str().unwrap_or("-").to_string();
    let auth = req
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    if let Some(r) = refuse(auth.as_deref()) {
        return Some(r);
    }
    let body = if method == Method::POST {
        match read_body(session).await {
            Ok(b) => b,
            Err(e) => return Some(e.reply(&rid)),
        }
    } else {
        Vec::new()
    };
    Some(match handle(engine, &method, &path, &body).await {
        Ok((status, v)) => reply(status, v),
        Err(e) => e.reply(&rid),
    })
}

/// An admin API error: status, code, message.
struct Failure(u16, &'static str, String);

impl Failure {
    fn reply(&self, rid: &str) -> Response<Vec<u8>> {
        raw(self.0, error_body(self.1, &self.2, rid).to_vec())
    }
}

fn bad(m: impl Into<String>) -> Failure {
    Failure(400, "bad_request", m.into())
}

fn not_found(m: impl Into<String>) -> Failure {
    Failure(404, "not_found", m.into())
}

fn raw(status: u16, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn reply(status: u16, v: Option<Value>) -> Response<Vec<u8>> {
    raw(
        status,
        v.map(|v| v.to_string().into_bytes()).unwrap_or_default(),
    )
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| bad(format!("cannot read the request body: {e}")))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Failure(
                413,
                "payload_too_large",
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

type Answer = Result<(u16, Option<Value>), Failure>;

async fn handle(engine: &Engine, method: &Method, path: &str, body: &[u8]) -> Answer {
    let parts: Vec<String> = path
        .trim_start_matches("/admin/")
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["routes"]) => Ok((200, Some(routes(&engine.runtime())))),
        ("GET", ["upstreams"]) => Ok((200, Some(upstreams(&engine.runtime())))),
        ("POST", ["upstreams", name, "endpoints"]) => register(engine, name, body).await,
        ("DELETE", ["upstreams", name, "endpoints", address]) => {
            deregister(engine, name, address).await
        }
        _ => Err(not_found("unknown admin path")),
    }
}

/// `GET /admin/upstreams`.
pub fn upstreams(rt: &Runtime) -> Value {
    let now = Instant::now();
    let list: Vec<Value> = rt
        .plan
        .upstreams
        .iter()
        .zip(&rt.upstreams)
        .map(|(p, u)| {
            let endpoints: Vec<Value> = u
                .sources
                .iter()
                .map(|e| {
                    let i = u.balancer.endpoints.iter().position(|s| s.addr == e.addr);
                    json!({
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        "source": e.origin.as_str(),
                        "healthy": i.is_some_and(|i| u.balancer.healthy(i)),
                        "ejected": i.zip(u.outlier.as_ref()).is_some_and(|(i, o)| o.is_ejected(i, now)),
                        "in_flight": i.map_or(0, |i| u.balancer.endpoints[i].active.load(std::sync::atomic::Ordering::Relaxed)),
                    })
                })
                .collect();
            json!({
                "name": &*p.name,
                "discovery": p.discovery.as_ref().map(|d| d.describe()),
                "health_check": p.health_check.is_some(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "upstreams": list })
}

/// `GET /admin/routes`: the routes in match order (the order the router tries them).
pub fn routes(rt: &Runtime) -> Value {
    let plan = &rt.plan;
    let rules = plan.router.rules();
    let mut order: Vec<usize> = (0..plan.routes.len()).collect();
    order.sort_by_key(|&i| plan.router.rank(i as u32));
    let list: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let r = &plan.routes[i];
            let rule = &rules[i];
            let up = &plan.upstreams[r.upstream as usize];
            json!({
                "name": &*r.name,
                "match": rule.path.describe(),
                "methods": rule.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "hosts": rule.hosts.iter().map(|h| h.describe()).collect::<Vec<_>>(),
                "headers": rule.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                "upstream": &*up.name,
                "policies": {
                    "auth": r.auth.map(|a| &*plan.auths[a as usize].name),
                    "rate_limits": r.limits.iter().map(|l| &*plan.rate_limits[l.limit as usize].name).collect::<Vec<_>>(),
                    "circuit_breaker": up.breaker.is_some(),
                    "fallback": r.fallback.is_some(),
                },
            })
        })
        .collect();
    json!({ "routes": list })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

/// The upstream's index in the live plan, or 404.
fn upstream_index(rt: &Runtime, name: &str) -> Result<usize, Failure> {
    rt.plan
        .upstreams
        .iter()
        .position(|u| &*u.name == name)
        .ok_or_else(|| not_found(format!("no upstream named \"{name}\"")))
}

/// The compiler's address rule, and an IP literal (host names are DNS discovery's job, and resolving
/// one here would block the admin listener).
fn parse_address(address: &str) -> Result<SocketAddr, Failure> {
    crate::compile::endpoint_address(address).map_err(|(m, h)| bad(format!("{m}: {h}")))?;
    address.parse().map_err(|_| {
        bad(format!(
            "\"{address}\" is not an IP address and port; register IP addresses (host names are resolved by DNS discovery)"
        ))
    })
}

fn admin_metrics(m: &Metrics, upstream: &str, ok: bool, count: usize) {
    let d = m.discovery(upstream, "admin");
    if ok {
        d.success(SystemTime::now(), count);
    } else {
        d.failure();
    }
}

async fn register(engine: &Engine, name: &str, body: &[u8]) -> Answer {
    let rt = engine.runtime();
    let i = upstream_index(&rt, name)?;
    let outcome = (|| {
        let e: NewEndpoint = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body must be {{\"address\": \"host:port\", \"weight\": N}}: {e}"
            ))
        })?;
        let addr = parse_address(&e.address)?;
        crate::compile::endpoint_weight(e.weight).map_err(bad)?;
        if let Some(have) = rt.upstreams[i].sources.iter().find(|s| s.addr == addr) {
            return Err(Failure(
                409,
                "conflict",
                format!(
                    "{addr} is already an endpoint of {name} (source {})",
                    have.origin.as_str()
                ),
            ));
        }
        Ok((addr, e.weight))
    })();
    let regs = &engine.registry.registrations;
    let (addr, weight) = outcome.inspect_err(|_| admin_metrics(&engine.metrics, name, false, 0))?;
    drop(rt);
    let _serial = regs.apply.lock().await;
    regs.insert(name, addr, weight).map_err(|e| {
        admin_metrics(&engine.metrics, name, false, 0);
        change_failure(e, name, addr)
    })?;
    admin_metrics(&engine.metrics, name, true, regs.get(name).len());
    apply(engine).await?;
    let rt = engine.runtime();
    let healthy = upstream_index(&rt, name).ok().is_some_and(|i| {
        let b = &rt.upstreams[i].balancer;
        b.endpoints
            .iter()
            .position(|s| s.addr == addr)
            .is_some_and(|j| b.healthy(j))
    });
    Ok((
        201,
        Some(json!({
            "upstream": name,
            "address": addr.to_string(),
            "weight": weight,
            "source": "admin",
            "healthy": healthy,
        })),
    ))
}

async fn deregister(engine: &Engine, name: &str, address: &str) -> Answer {
    upstream_index(&engine.runtime(), name)?;
    let addr = parse_address(address)?;
    let regs = &engine.registry.registrations;
    let _serial = regs.apply.lock().await;
    regs.remove(name, addr).map_err(|e| {
        admin_metrics(&engine.metrics, name, false, 0);
        change_failure(e, name, addr)
    })?;
    admin_metrics(&engine.metrics, name, true, regs.get(name).len());
    apply(engine).await?;
    Ok((204, None))
}

fn change_failure(e: ChangeError, name: &str, addr: SocketAddr) -> Failure {
    match e {
        ChangeError::Exists => Failure(
            409,
            "conflict",
            format!("{addr} is already registered for {name}"),
        ),
        ChangeError::Missing => not_found(format!(
            "{addr} is not a registered endpoint of {name} (only endpoints registered through the admin API can be deregistered)"
        )),
        ChangeError::Persist(m) => Failure(500, "state_file_error", m),
    }
}

/// Rebuilds the runtime with the current registrations, health-checks new endpoint sets, and swaps
/// it in; a swap by a reload or discovery in between makes it build again (bounded), so the change
/// is live when this returns `Ok`. Callers hold `Registrations::apply`.
async fn apply(engine: &Engine) -> Result<(), Failure> {
    for _ in 0..16 {
        // not while a reload builds from the registry (`Reloader::exclusive`)
        let _one = engine.reloader.exclusive().await;
        let old = engine.runtime();
        let rt = Runtime::build(old.plan.clone(), &engine.metrics, &engine.registry)
            .map_err(|e| Failure(500, "internal_error", e.to_string()))?;
        rt.check_discovered().await;
        let prev = engine.current.compare_and_swap(&old, Arc::new(rt));
        if Arc::ptr_eq(&prev, &old) {
            engine.runtime().prune_endpoint_series(&engine.metrics);
            return Ok(());
        }
    }
    Err(Failure(
        503,
        "busy",
        "the runtime kept changing; the registration is stored and applies with the next change"
            .into(),
    ))
}
