//! A real Sentinel setup for tests: a primary, one replica and three sentinels (`redis-server
//! <conf> --sentinel`, quorum 2) on free loopback ports, monitoring master [`MASTER`]. Kill the
//! primary and wait for the sentinels to promote the replica. All processes die on drop.
//!
//! Sentinel mode is part of the `redis-server` binary (Debian's `redis-sentinel` package only adds
//! a service and a config file), so nothing beyond `redis-server` is needed.
use std::process::Child;
use std::time::Duration;

use super::redis::{free_port, poll, redis_cli, spawn_server};

/// The monitored master's name.
pub const MASTER: &str = "gwmaster";
/// `down-after-milliseconds` of the sentinels.
pub const DOWN_AFTER_MS: u64 = 500;

/// See the module docs.
pub struct RedisSentinel {
    pub primary_port: u16,
    pub replica_port: u16,
    pub sentinel_ports: Vec<u16>,
    children: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

fn data_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    let mut args = super::redis::server_args(port);
    args.extend(["--dir".to_string(), dir.to_string_lossy().into_owned()]);
    args
}

impl RedisSentinel {
    /// Starts everything and waits until every sentinel knows the replica (else a failover
    /// could not happen); panics after 20 s.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let primary_port = free_port();
        let replica_port = free_port();
        let mut children = vec![(
            primary_port,
            spawn_server(primary_port, &data_args(primary_port, dir.path())),
        )];
        let mut args = data_args(replica_port, dir.path());
        args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary_port.to_string(),
        ]);
        args.extend(["--dbfilename".into(), format!("replica-{replica_port}.rdb")]);
        children.push((replica_port, spawn_server(replica_port, &args)));
        let mut sentinel_ports = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER} 3000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir.path().display()
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            let args = vec![
                conf.to_string_lossy().into_owned(),
                "--sentinel".to_string(),
            ];
            children.push((port, spawn_server(port, &args)));
            sentinel_ports.push(port);
        }
        let s = RedisSentinel {
            primary_port,
            replica_port,
            sentinel_ports,
            children,
            _dir: dir,
        };
        let ready = poll(Duration::from_secs(20), || {
            let replica_known = s.sentinel_ports.iter().all(|&p| {
                redis_cli(p, &["SENTINEL", "REPLICAS", MASTER]).contains(&replica_port.to_string())
            });
            let synced =
                redis_cli(replica_port, &["INFO", "replication"]).contains("master_link_status:up");
            (replica_known && synced).then_some(())
        });
        assert!(
            ready.is_some(),
            "sentinels did not discover the replica within 20 s"
        );
        s
    }

    /// `redis://127.0.0.1:<port>/` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// The primary's port according to the first sentinel.
    pub fn current_primary(&self) -> Option<u16> {
        let out = redis_cli(
            self.sentinel_ports[0],
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Kills the process on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the sentinels name the replica as primary and it answers as a master.
    pub fn wait_promoted(&self, limit: Duration) -> bool {
        poll(limit, || {
            (self.current_primary() == Some(self.replica_port)
                && redis_cli(self.replica_port, &["ROLE"]).starts_with("master"))
            .then_some(())
        })
        .is_some()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
