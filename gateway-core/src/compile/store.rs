//! The Redis store of a Redis-backed limit: a standalone server, a Redis Cluster or a
//! Sentinel-managed primary, checked with positioned diagnostics and turned into the limiter's
//! [`RedisConfig`].
//!
//! DSL (`store:` of a `rate_limit` policy):
//! - `url: redis://host:port/db` — one server;
//! - `cluster: true` and/or several URLs in `nodes:` (plus `url`) — a Redis Cluster, those being
//!   seed nodes;
//! - `master: <name>` with the sentinels in `nodes:`/`url`, or
//!   `url: redis+sentinel://host:port[,host:port...]/<master>` — a Sentinel-managed primary;
//! - `outage_share: auto | <0..1]` — see `on_store_error: local` in docs/rate-limiting.md.
use super::Cx;
use crate::config::{OutageShareConfig, RateStoreConfig};
use crate::plan::RedisConfig;
use crate::policy::rate_limit::RedisTopology;

const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// Checks `store` (at `{base}.store`) and builds its configuration; `None` for a local store or
/// when an error was reported.
pub(crate) fn redis_config(
    cx: &mut Cx,
    base: &str,
    store: &RateStoreConfig,
) -> Option<RedisConfig> {
    let RateStoreConfig::Redis {
        url,
        nodes,
        cluster,
        master,
        timeout,
        outage_share,
    } = store
    else {
        return None;
    };
    let before = cx.error_count();
    let at = |f: &str| format!("{base}.store.{f}");
    if let Some(t) = timeout {
        cx.positive(&at("timeout"), t.get());
    }
    let share = match outage_share {
        None => None,
        Some(OutageShareConfig::Word(w)) if w == "auto" => None,
        Some(OutageShareConfig::Fixed(x)) if *x > 0.0 && *x <= 1.0 => {
            Some(((x * 1e6).round() as u32).max(1))
        }
        Some(other) => {
            let shown = match other {
                OutageShareConfig::Fixed(x) => x.to_string(),
                OutageShareConfig::Word(w) => format!("\"{w}\""),
            };
            cx.error(
                &at("outage_share"),
                format!("invalid outage_share {shown}"),
                Some("use auto (1 / live gateways) or a number in (0, 1], e.g. 0.5".into()),
            );
            None
        }
    };
    let topology = match url.as_deref() {
        Some(u) if u.starts_with(SENTINEL_SCHEME) => {
            if *cluster || master.is_some() || !nodes.is_empty() {
                cx.error(
                    &at("url"),
                    "a redis+sentinel:// URL names the sentinels and the master itself",
                    Some("drop cluster/master/nodes, or use a redis:// url with master".into()),
                );
            }
            sentinel_url(cx, &at("url"), u)
        }
        _ => {
            let mut all: Vec<(String, &str)> = Vec::new();
            if let Some(u) = url {
                all.push((at("url"), u));
            }
            for (i, n) in nodes.iter().enumerate() {
                all.push((format!("{base}.store.nodes[{i}]"), n));
            }
            for (path, u) in &all {
                check_url(cx, path, u);
            }
            let list: Vec<String> = all.iter().map(|(_, u)| u.to_string()).collect();
            match (master, *cluster) {
                _ if list.is_empty() => {
                    cx.error(
                        &format!("{base}.store"),
                        "a Redis store needs url or nodes",
                        Some("e.g. url: redis://127.0.0.1:6379/".into()),
                    );
                    None
                }
                (Some(_), true) => {
                    cx.error(
                        &at("master"),
                        "cluster and master (Sentinel) cannot be combined",
                        Some("a Redis Cluster fails over by itself: drop master".into()),
                    );
                    None
                }
                (Some(m), false) => {
                    if m.is_empty() {
                        cx.error(&at("master"), "master name is empty", None);
                    }
                    Some(RedisTopology::Sentinel {
                        sentinels: list,
                        master: m.clone(),
                    })
                }
                (None, c) if c || list.len() > 1 => Some(RedisTopology::Cluster(list)),
                (None, _) => Some(RedisTopology::Standalone),
            }
        }
    };
    if cx.error_count() != before {
        return None;
    }
    let topology = topology?;
    let shown = match &topology {
        RedisTopology::Standalone => url.clone().unwrap_or_else(|| nodes[0].clone()),
        RedisTopology::Cluster(seeds) => seeds.join(","),
        RedisTopology::Sentinel { sentinels, master } => match url {
            Some(u) if u.starts_with(SENTINEL_SCHEME) => u.clone(),
            _ => format!("{} (sentinel master {master})", sentinels.join(",")),
        },
    };
    let mut rc = RedisConfig::new(&shown);
    rc.topology = topology;
    rc.outage_share_ppm = share;
    if let Some(t) = timeout {
        rc.timeout = t.get();
    }
    Some(rc)
}

fn check_url(cx: &mut Cx, path: &str, u: &str) {
    let scheme_ok = u.starts_with("redis://") || u.starts_with("rediss://");
    if !scheme_ok || redis::Client::open(u).is_err() {
        cx.error(
            path,
            format!("invalid Redis URL \"{u}\""),
            Some("use redis://host:port/db or rediss://...".into()),
        );
    }
}

/// `redis+sentinel://host:port[,host:port...]/<master>` → sentinels and master.
fn sentinel_url(cx: &mut Cx, path: &str, u: &str) -> Option<RedisTopology> {
    let rest = &u[SENTINEL_SCHEME.len()..];
    let (hosts, master) = rest.split_once('/').unwrap_or((rest, ""));
    let master = master.trim_end_matches('/');
    let hint = Some("e.g. redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster".into());
    if master.is_empty() || master.contains('/') {
        cx.error(
            path,
            "redis+sentinel:// URL needs the master name as its path",
            hint,
        );
        return None;
    }
    if hosts.contains('@') {
        cx.error(
            path,
            "credentials in a redis+sentinel:// URL are not supported",
            Some("use nodes: [redis://user:pass@host:port] with master:".into()),
        );
        return None;
    }
    let mut sentinels = Vec::new();
    for h in hosts.split(',') {
        let s = format!("redis://{h}");
        if h.is_empty() || redis::Client::open(s.as_str()).is_err() {
            cx.error(path, format!("invalid sentinel address \"{h}\""), hint);
            return None;
        }
        sentinels.push(s);
    }
    Some(RedisTopology::Sentinel {
        sentinels,
        master: master.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use crate::policy::rate_limit::RedisTopology;

    fn store_of(store: &str) -> crate::plan::RedisConfig {
        let text = format!(
            r#"
listeners: [{{ name: l, address: "127.0.0.1:8080" }}]
upstreams: [{{ name: u, endpoints: [{{ address: "127.0.0.1:9" }}] }}]
policies:
  - {{ name: a, type: rate_limit, window: 1m, max: 5, key: {{ type: client_ip }}, store: {store} }}
  - {{ name: b, type: rate_limit, window: 1h, max: 50, key: {{ type: client_ip }}, store: {store} }}
routes: [{{ name: r, match: {{ prefix: / }}, upstream: u, policies: [a, b] }}]
"#
        );
        let c = crate::compile("t.yaml", &text, &|_| None);
        let diags: Vec<String> = c.diagnostics.iter().map(|d| d.message.clone()).collect();
        c.plan
            .unwrap_or_else(|| panic!("{store}: {diags:?}"))
            .rate_limit_redis
            .expect("a Redis store")
    }

    #[test]
    fn standalone_cluster_and_sentinel_forms() {
        let s = store_of(r#"{ type: redis, url: "redis://127.0.0.1:6379/" }"#);
        assert_eq!(s.topology, RedisTopology::Standalone);
        assert_eq!(s.outage_share_ppm, None);

        let c = store_of(
            r#"{ type: redis, nodes: ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"], outage_share: 0.25 }"#,
        );
        assert_eq!(
            c.topology,
            RedisTopology::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ])
        );
        assert_eq!(c.outage_share_ppm, Some(250_000));
        let one = store_of(r#"{ type: redis, cluster: true, url: "redis://10.0.0.1:7000" }"#);
        assert_eq!(
            one.topology,
            RedisTopology::Cluster(vec!["redis://10.0.0.1:7000".into()])
        );

        let expect = RedisTopology::Sentinel {
            sentinels: vec![
                "redis://10.0.0.1:26379".into(),
                "redis://10.0.0.2:26379".into(),
            ],
            master: "mymaster".into(),
        };
        let u = store_of(
            r#"{ type: redis, url: "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster", outage_share: auto }"#,
        );
        assert_eq!(u.topology, expect);
        let m = store_of(
            r#"{ type: redis, master: mymaster, nodes: ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"] }"#,
        );
        assert_eq!(m.topology, expect);
    }
}
