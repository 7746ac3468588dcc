//! A real `dnsmasq` on a free loopback port, serving records from a hosts file the test controls.
//!
//! Started with `--keep-in-foreground --port N --listen-address 127.0.0.1 --bind-interfaces --no-resolv
//! --no-hosts --addn-hosts <file> --local-ttl <ttl>` plus the test's extra options (e.g.
//! `--srv-host=_http._tcp.svc.test,a.svc.test,8080,0,5`); it reads no configuration file of the system.
//! [`Dnsmasq::set_hosts`] rewrites the hosts file and sends SIGHUP (dnsmasq re-reads hosts files on
//! it); options such as SRV records need [`Dnsmasq::restart_with`]. Killed on drop.
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `dnsmasq` package installs the binary (`.ci/run` installs it).
pub const DNSMASQ_BIN: &str = "/usr/sbin/dnsmasq";

/// A running (or stopped) dnsmasq; see the module docs.
pub struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    ttl: u32,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Whether the binary is installed.
    pub fn available() -> bool {
        Path::new(DNSMASQ_BIN).exists()
    }

    /// Starts dnsmasq with `hosts` (hosts-file lines, `IP name...`), answers carrying TTL `ttl` seconds,
    /// and `extra` options. Panics with a clear message when dnsmasq is missing or does not come up.
    pub fn start(hosts: &str, ttl: u32, extra: &[&str]) -> Self {
        assert!(
            Self::available(),
            "these tests need a real DNS server: {DNSMASQ_BIN} is missing (apt-get install dnsmasq)"
        );
        let dir = tempfile::tempdir().expect("temp dir for dnsmasq");
        let mut d = Dnsmasq {
            child: None,
            port: crate::redis::free_port(),
            ttl,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        std::fs::write(d.hosts_path(), hosts).expect("write the dnsmasq hosts file");
        d.spawn();
        d
    }

    /// `127.0.0.1:<port>`, for a resolver setting.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The hosts file dnsmasq reads.
    pub fn hosts_path(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    /// Rewrites the hosts file and makes dnsmasq re-read it (SIGHUP; also clears its cache).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.hosts_path(), hosts).expect("write the dnsmasq hosts file");
        let pid = self.child.as_ref().expect("dnsmasq is not running").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not send SIGHUP to dnsmasq ({pid})");
    }

    /// Restarts on the same port with other extra options (dnsmasq reads options only at start).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// (Re)starts on the same port with the current options.
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("dnsmasq log file");
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".into(),
            format!("--port={}", self.port),
            "--listen-address=127.0.0.1".into(),
            "--bind-interfaces".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--addn-hosts={}", self.hosts_path().display()),
            format!("--local-ttl={}", self.ttl),
            "--pid-file".into(),
            "--user=root".into(),
            "--log-facility=-".into(),
        ];
        args.extend(self.extra.iter().cloned());
        let child = Command::new(DNSMASQ_BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {DNSMASQ_BIN}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let mut msg = String::new();
                let _ = std::fs::File::open(self.log_path())
                    .and_then(|mut f| f.read_to_string(&mut msg));
                panic!(
                    "dnsmasq did not start on port {} ({exited:?}): {msg}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills dnsmasq (the port stays this object's for [`Self::spawn`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
