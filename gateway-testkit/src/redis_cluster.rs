//! A real local Redis Cluster for tests: 3 primaries + 3 replicas on free loopback ports, made
//! with `redis-server --cluster-enabled yes` and `redis-cli --cluster create ... --cluster-replicas
//! 1 --cluster-yes`; slot lookups, `redis-cli --cluster reshard`, killing a primary and waiting for
//! its replica to take over. All processes are killed on drop.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{free_port, poll, redis_cli, spawn_server, REDIS_CLI};

/// Cluster node timeout: a dead primary is failed over about this long after it stops answering.
pub const NODE_TIMEOUT_MS: u64 = 1000;

struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running 6-node cluster (see the module docs).
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failed: bool,
    /// Slot ranges served (primaries).
    pub slots: Vec<(u16, u16)>,
}

/// The cluster slot of a key (CRC16/XMODEM of the `{hash tag}` if there is one, mod 16384), as
/// Redis computes it; for picking keys in tests.
pub fn key_slot(key: &[u8]) -> u16 {
    let mut k = key;
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                k = &key[open + 1..open + 1 + len];
            }
        }
    }
    crc16::State::<crc16::XMODEM>::calculate(k) % 16384
}

impl RedisCluster {
    /// Starts 6 nodes and joins them into a cluster; waits until every node reports
    /// `cluster_state:ok`. Panics (with the reason) if that does not happen within 30 s.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let bus = free_port();
            let conf = dir.path().join(format!("nodes-{port}.conf"));
            let mut args = super::redis::server_args(port);
            args.extend(
                [
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf.to_string_lossy(),
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
                    "--cluster-replica-validity-factor",
                    "0",
                    "--dir",
                    &dir.path().to_string_lossy(),
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            let child = spawn_server(port, &args);
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let c = RedisCluster { nodes, _dir: dir };
        let addrs: Vec<String> = c
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(REDIS_CLI)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok(Duration::from_secs(30));
        c
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on 3 primaries covering
    /// all slots.
    pub fn wait_ok(&self, limit: Duration) {
        let ok = poll(limit, || {
            let all_ok = self.live_ports().iter().all(|&p| {
                redis_cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && self
                        .nodes_seen_by(p)
                        .iter()
                        .filter(|n| n.primary && !n.failed)
                        .map(|n| {
                            n.slots
                                .iter()
                                .map(|(a, b)| u32::from(b - a) + 1)
                                .sum::<u32>()
                        })
                        .sum::<u32>()
                        == 16384
            });
            all_ok.then_some(())
        });
        assert!(
            ok.is_some(),
            "cluster did not reach cluster_state:ok within {limit:?}"
        );
    }

    /// Ports of nodes not killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Seed URLs (`redis://127.0.0.1:<port>/`) of all six nodes.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// `CLUSTER NODES` as seen by the node on `port`.
    pub fn nodes_seen_by(&self, port: u16) -> Vec<NodeInfo> {
        redis_cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(parse_node_line)
            .collect()
    }

    /// The topology as seen by the first live node.
    pub fn topology(&self) -> Vec<NodeInfo> {
        self.live_ports()
            .first()
            .map(|&p| self.nodes_seen_by(p))
            .unwrap_or_default()
    }

    /// The live primary serving `slot`, as seen by the first live node.
    pub fn owner(&self, slot: u16) -> Option<NodeInfo> {
        self.topology().into_iter().find(|n| {
            n.primary && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
        })
    }

    /// The lowest slot of each primary (the slot `redis-cli --cluster reshard --cluster-slots 1`
    /// moves from it).
    pub fn lowest_slots(&self) -> Vec<u16> {
        self.topology()
            .iter()
            .filter(|n| n.primary && !n.failed)
            .filter_map(|n| n.slots.iter().map(|s| s.0).min())
            .collect()
    }

    /// Moves the lowest slot of `from` (node id) to `to` with `redis-cli --cluster reshard`
    /// (keys migrate one by one: clients see `ASK` while it runs and `MOVED` after). Returns
    /// whether redis-cli succeeded and how long it took.
    pub fn reshard_one_slot(&self, from: &str, to: &str) -> (bool, Duration) {
        let seed = format!("127.0.0.1:{}", self.live_ports()[0]);
        let t = Instant::now();
        let ok = Command::new(REDIS_CLI)
            .args(["--cluster", "reshard", &seed, "--cluster-from", from])
            .args(["--cluster-to", to, "--cluster-slots", "1", "--cluster-yes"])
            .args(["--cluster-pipeline", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (ok, t.elapsed())
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Waits until a live primary other than `old_port` serves `slot` and the cluster is ok
    /// again; returns its port.
    pub fn wait_new_owner(&self, slot: u16, old_port: u16, limit: Duration) -> Option<u16> {
        poll(limit, || {
            let o = self.owner(slot)?;
            (o.port != old_port
                && self
                    .live_ports()
                    .iter()
                    .all(|&p| redis_cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")))
            .then_some(o.port)
        })
    }

    /// `GET key` through `redis-cli -c` (follows redirections).
    pub fn get(&self, key: &str) -> Option<i64> {
        let port = *self.live_ports().first()?;
        Command::new(REDIS_CLI)
            .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string(), "GET", key])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    }
}

fn parse_node_line(line: &str) -> Option<NodeInfo> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let addr = f[1].split('@').next()?;
    let port = addr.rsplit(':').next()?.parse().ok()?;
    let flags = f[2];
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|a| (a, a)),
        })
        .collect();
    Some(NodeInfo {
        id: f[0].to_string(),
        port,
        primary: flags.contains("master"),
        failed: flags.contains("fail") && !flags.contains("fail?") || flags.contains("noaddr"),
        slots,
    })
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
