//! Turning a plan into running services: the engine, the Pingora server for `gw serve`, and an embedded
//! runner (own accept loop on tokio) for programs and tests that host the gateway in-process.
use super::admin::AdminApp;
use super::runtime::{Runtime, StartError};
use super::{Engine, Gateway};
use crate::observability::{AccessLog, AccessLogConfig as LogCfg, AccessLogSink, Metrics};
use crate::plan::{AccessLogSpec, Plan};
use crate::state::Registry;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::apps::ServerApp;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Builds the engine (metrics, access log, runtime) for a plan. Does not bind or start anything.
pub fn build_engine(plan: Plan) -> Result<Arc<Engine>, StartError> {
    let metrics = Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))?;
    let sink = match &plan.access_log {
        AccessLogSpec::Off => AccessLogSink::Off,
        AccessLogSpec::Stdout => AccessLogSink::Stdout,
        AccessLogSpec::File(path) => AccessLogSink::File(path.clone()),
    };
    let access_log = AccessLog::new(LogCfg {
        sink,
        drop_counter: Some(metrics.access_log_dropped()),
        ..Default::default()
    })
    .map_err(|e| StartError::AccessLog(e.to_string()))?;
    let registry = Registry::new();
    let rt = Runtime::build(Arc::new(plan), &metrics, &registry)?;
    Ok(Arc::new(Engine {
        current: ArcSwap::from_pointee(rt),
        registry,
        metrics,
        access_log,
        ready: Default::default(),
    }))
}

/// Warms the runtime up (first health checks, key fetches), marks the engine ready, then runs health
/// checks until shutdown.
struct Background {
    engine: Arc<Engine>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, shutdown: ShutdownWatch) {
        let rt = self.engine.runtime();
        rt.warm_up().await;
        self.engine.ready.store(true, Ordering::Release);
        drop(rt);
        self.engine.clone().health_loop(shutdown).await;
    }
}

/// SIGTERM and SIGINT both drain gracefully (in-flight requests get the grace period).
struct GracefulSignals;

#[async_trait]
impl ShutdownSignalWatch for GracefulSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            std::future::pending::<()>().await;
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Fails early, with the address, when a listener cannot be bound (Pingora would otherwise exit deep
/// inside its start-up).
fn check_bindable(addr: SocketAddr) -> Result<(), StartError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| StartError::Bind {
            addr,
            reason: e.to_string(),
        })
}

/// Runs the gateway on a Pingora server until SIGTERM/SIGINT. Blocks; must not run inside a tokio runtime.
pub fn serve_blocking(plan: Plan) -> Result<(), StartError> {
    for l in &plan.listeners {
        check_bindable(l.addr)?;
    }
    if let Some(a) = &plan.admin {
        check_bindable(a.addr)?;
    }
    let mut conf = ServerConf {
        threads: plan.server.threads,
        // Pingora's no-steal runtime (one current-thread runtime per thread): what the bare Pingora floor
        // uses, and measurably cheaper per request than the work-stealing runtime for a proxy.
        work_stealing: false,
        ..Default::default()
    };
    let grace = plan.server.grace_period.as_secs().max(1);
    conf.grace_period_seconds = Some(grace);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    conf.upstream_keepalive_pool_size = 1024;
    let listeners = plan.listeners.clone();
    let admin = plan.admin.clone();
    let engine = build_engine(plan)?;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = Service::new(
        "gw".to_string(),
        CountConnections {
            inner: Arc::new(pingora::proxy::http_proxy(
                &server.configuration,
                Gateway::new(engine.clone()),
            )),
            metrics: engine.metrics.clone(),
        },
    );
    for l in &listeners {
        let addr = l.addr.to_string();
        match &l.tls {
            None => proxy.add_tcp(&addr),
            Some(t) => {
                let cert = t.cert.to_string_lossy();
                let key = t.key.to_string_lossy();
                let mut settings = pingora::listeners::tls::TlsSettings::intermediate(&cert, &key)
                    .map_err(|e| StartError::Tls {
                        listener: l.name.clone(),
                        reason: e.to_string(),
                    })?;
                if t.http2 {
                    settings.enable_h2();
                }
                proxy.add_tls_with_settings(&addr, None, settings);
            }
        }
    }
    server.add_service(proxy);
    if let Some(a) = admin {
        let mut svc = Service::new(
            "gw-admin".into(),
            HttpServer::new_app(AdminApp {
                engine: engine.clone(),
                token: a.token.clone(),
            }),
        );
        svc.add_tcp(&a.addr.to_string());
        server.add_service(svc);
    }
    server.add_service(background_service(
        "gw-background",
        Background {
            engine: engine.clone(),
        },
    ));
    for l in &listeners {
        tracing::info!(listener = %l.name, addr = %l.addr, tls = l.tls.is_some(), "listening");
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulSignals),
    });
    let _ = engine.access_log.flush();
    Ok(())
}

/// A gateway running inside the caller's tokio runtime, on listeners it binds itself (port 0 works).
pub struct Embedded {
    pub engine: Arc<Engine>,
    /// Bound addresses of the plan's listeners, in order.
    pub addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Keeps `gw_active_connections` up to date around the proxy app: `process_new` handles a whole
/// downstream connection (every HTTP/1 keep-alive request, or every HTTP/2 stream), so a guard held for
/// its duration counts open connections (after the TLS handshake, for TLS listeners).
struct CountConnections<A> {
    inner: Arc<A>,
    metrics: Metrics,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for CountConnections<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let _open = self.metrics.track_connection();
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    app: Arc<A>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let mut l4: pingora::protocols::l4::stream::Stream = tcp.into();
            // Like Pingora's own listener: without a socket digest the session has no client address
            // (no X-Forwarded-For, no client IP for rate limits and hashing).
            use pingora::protocols::GetSocketDigest;
            let digest = pingora::protocols::SocketDigest::from_raw_fd(
                std::os::unix::io::AsRawFd::as_raw_fd(&l4),
            );
            let _ = digest.peer_addr.set(Some(peer.into()));
            l4.set_socket_digest(digest);
            let mut stream: pingora::protocols::Stream = Box::new(l4);
            while let Some(s) = app.process_new(stream, &sd).await {
                stream = s;
            }
        });
    }
}

impl Embedded {
    /// Binds every listener (plain TCP; TLS listeners need `gw serve`) and the admin listener, warms up
    /// (first health checks) and starts serving.
    pub async fn start(plan: Plan) -> Result<Embedded, StartError> {
        let mut gw = Self::bind(plan).await?;
        gw.warm_up().await;
        Ok(gw)
    }

    /// Binds and serves every listener and the admin listener without warming up: until
    /// [`Embedded::warm_up`] has run, the engine is not ready (`/readyz` answers 503).
    pub async fn bind(plan: Plan) -> Result<Embedded, StartError> {
        if let Some(l) = plan.listeners.iter().find(|l| l.tls.is_some()) {
            return Err(StartError::Tls {
                listener: l.name.clone(),
                reason: "the embedded runner serves plain TCP only; use serve_blocking (gw serve) for TLS listeners".into(),
            });
        }
        let listeners = plan.listeners.clone();
        let admin = plan.admin.clone();
        let engine = build_engine(plan)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let conf = Arc::new(ServerConf::default());
        let proxy = Arc::new(CountConnections {
            inner: Arc::new(pingora::proxy::http_proxy(
                &conf,
                Gateway::new(engine.clone()),
            )),
            metrics: engine.metrics.clone(),
        });
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for l in &listeners {
            let tl = tokio::net::TcpListener::bind(l.addr)
                .await
                .map_err(|e| StartError::Bind {
                    addr: l.addr,
                    reason: e.to_string(),
                })?;
            addrs.push(tl.local_addr().map_err(|e| StartError::Bind {
                addr: l.addr,
                reason: e.to_string(),
            })?);
            tasks.push(tokio::spawn(accept_loop(tl, proxy.clone(), rx.clone())));
        }
        let mut admin_addr = None;
        if let Some(a) = admin {
            let tl = tokio::net::TcpListener::bind(a.addr)
                .await
                .map_err(|e| StartError::Bind {
                    addr: a.addr,
                    reason: e.to_string(),
                })?;
            admin_addr = tl.local_addr().ok();
            let app = Arc::new(HttpServer::new_app(AdminApp {
                engine: engine.clone(),
                token: a.token.clone(),
            }));
            tasks.push(tokio::spawn(accept_loop(tl, app, rx.clone())));
        }
        Ok(Embedded {
            engine,
            addrs,
            admin_addr,
            shutdown: tx,
            tasks,
        })
    }

    /// First health checks and key fetches (each bounded), then marks the engine ready and starts the
    /// periodic health checks.
    pub async fn warm_up(&mut self) {
        let rt = self.engine.runtime();
        rt.warm_up().await;
        self.engine.ready.store(true, Ordering::Release);
        self.tasks.push(tokio::spawn(
            self.engine.clone().health_loop(self.shutdown.subscribe()),
        ));
    }

    /// The first listener's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    /// Stops accepting and ends background work. In-flight connections finish on their own.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
