//! Turning a plan into running services: the engine, the Pingora server for `gw serve`, and an embedded
//! runner (own accept loop on tokio) for programs and tests that host the gateway in-process.
use super::admin::AdminApp;
use super::conn::{ConnMetrics, ConnTiming, Guarded, OpenConns, TimingSource};
use super::runtime::{Runtime, StartError};
use super::signals::{handle_sighup, GracefulSignals};
use super::{Engine, Gateway};
use crate::observability::{AccessLog, AccessLogConfig as LogCfg, AccessLogSink, Metrics};
use crate::plan::{AccessLogSpec, ConnectionLimits, Plan};
use crate::state::Registry;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::apps::ServerApp;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

mod conn_runtime;

pub use super::engine::DISCOVERY_FIRST_SETS;

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
    let otlp = match &plan.otlp {
        Some(o) => Some(
            crate::observability::otlp::OtlpExport::start(o, &metrics)
                .map_err(StartError::Tracing)?,
        ),
        None => None,
    };
    let registry = Registry::new();
    let reloader = crate::reload::Reloader::new(&metrics, &plan);
    crate::registration::load_at_start(&registry.registrations, &plan)
        .map_err(StartError::StateFile)?;
    let rt = Runtime::build(Arc::new(plan), &metrics, &registry)?;
    Ok(Arc::new(Engine {
        current: ArcSwap::from_pointee(rt),
        registry,
        metrics,
        access_log,
        otlp,
        ready: Default::default(),
        reloader,
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
        self.engine.start_discovery(DISCOVERY_FIRST_SETS).await;
        let rt = self.engine.runtime();
        rt.warm_up().await;
        self.engine.ready.store(true, Ordering::Release);
        drop(rt);
        let discovery = tokio::spawn(self.engine.clone().discovery_loop(shutdown.clone()));
        self.engine.clone().health_loop(shutdown).await;
        discovery.abort();
    }
}

/// A client listener without Pingora's 64 KiB read buffer in front of each connection. That buffer is
/// allocated zeroed per connection (so it is resident, ~46 KB per idle keep-alive connection measured) and
/// only adds a copy: the HTTP/1 parser reads into its own buffer, and upstream connections are unbuffered
/// in Pingora anyway (docs/performance.md, "Idle connections"). Writes keep Pingora's small buffer.
fn client_listener(addr: SocketAddr) -> pingora::listeners::ListenerConfig {
    use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
    ListenerConfig::tcp(addr.to_string())
        .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
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
    let limits = plan.server.connections;
    let engine = build_engine(plan)?;
    // before anything else runs: a SIGHUP must never kill the process; each one asks for a reload
    let hangup = Arc::new(tokio::sync::Notify::new());
    let on_hangup = hangup.clone();
    if let Err(e) = handle_sighup(move || on_hangup.notify_one()) {
        tracing::warn!("cannot handle SIGHUP: {e}");
    }
    let open = Arc::new(OpenConns::default());
    let conn_metrics = ConnMetrics::register(&engine.metrics);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let proxy_app = Arc::new(proxy_app(&server.configuration, &engine));
    // one service per listener: connection caps are per listener
    for l in &listeners {
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                Some(
                    tls_acceptor(t, &engine, &l.name).map_err(|reason| StartError::Tls {
                        listener: l.name.clone(),
                        reason,
                    })?,
                )
            }
        };
        let app = counted(
            guarded(
                proxy_app.clone(),
                &l.name,
                limits,
                &engine,
                &open,
                &conn_metrics,
                tls,
            ),
            &engine,
        );
        // TLS is terminated by the app (under the head deadline), so every listener is plain TCP here
        let mut svc = Service::new(format!("gw-{}", l.name), app);
        svc.add_listener(client_listener(l.addr));
        server.add_service(svc);
    }
    if let Some(a) = admin {
        let app = Arc::new(HttpServer::new_app(AdminApp {
            engine: engine.clone(),
            token: a.token.clone(),
        }));
        let mut svc = Service::new(
            "gw-admin".into(),
            guarded(app, "admin", limits, &engine, &open, &conn_metrics, None),
        );
        svc.add_listener(client_listener(a.addr));
        server.add_service(svc);
    }
    server.add_service(background_service(
        "gw-background",
        Background {
            engine: engine.clone(),
        },
    ));
    server.add_service(background_service(
        "gw-reload",
        crate::reload::Triggers {
            engine: engine.clone(),
            hangup,
        },
    ));
    for l in &listeners {
        tracing::info!(listener = %l.name, addr = %l.addr, tls = l.tls.is_some(), "listening");
    }
    let flush_engine = engine.clone();
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulSignals {
            open,
            before_exit: Arc::new(move || {
                let _ = flush_engine.access_log.flush();
            }),
        }),
    });
    let _ = engine.access_log.flush();
    Ok(())
}

/// A gateway running inside the caller's tokio runtime, on listeners it binds itself (port 0 works).
pub struct Embedded {
    /// The engine (metrics, readiness, reload).
    pub engine: Arc<Engine>,
    /// Bound addresses of the plan's listeners, in order.
    pub addrs: Vec<SocketAddr>,
    /// The bound admin address, when `admin` is set.
    pub admin_addr: Option<SocketAddr>,
    open: Arc<OpenConns>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Reads the connection timing from the engine's current plan, for each new connection.
struct EngineTiming(Arc<Engine>);

impl TimingSource for EngineTiming {
    fn timing(&self) -> ConnTiming {
        let s = &self.0.runtime().plan.server;
        ConnTiming {
            header_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            grace_period: s.grace_period,
        }
    }
}

/// gw's connection handling ([`Guarded`]: caps, head deadline, TLS handshake, pipelining, drain) around a
/// Pingora HTTP app, for one listener.
fn guarded<A: pingora::apps::HttpServerApp + Send + Sync + 'static>(
    app: Arc<A>,
    listener: &str,
    limits: ConnectionLimits,
    engine: &Arc<Engine>,
    open: &Arc<OpenConns>,
    metrics: &ConnMetrics,
    tls: Option<pingora::listeners::tls::Acceptor>,
) -> Guarded<A, EngineTiming> {
    let g = Guarded::new(
        app,
        listener,
        limits,
        EngineTiming(engine.clone()),
        open.clone(),
        metrics,
    );
    match tls {
        Some(acceptor) => g.with_tls(acceptor),
        None => g,
    }
}

/// A proxy listener's app: [`guarded`], counted in `gw_active_connections`.
fn counted<A: ServerApp + Send + Sync + 'static>(app: A, engine: &Engine) -> CountConnections<A> {
    CountConnections {
        inner: Arc::new(app),
        metrics: engine.metrics.clone(),
    }
}

/// Pingora's HTTP proxy app for the gateway. Idle HTTP/2 connections (no open stream) close after
/// `downstream.idle_timeout`, like idle HTTP/1 keep-alive connections (Pingora keeps them forever by
/// default).
fn proxy_app(conf: &Arc<ServerConf>, engine: &Arc<Engine>) -> pingora::proxy::HttpProxy<Gateway> {
    let mut proxy = pingora::proxy::http_proxy(conf, Gateway::new(engine.clone()));
    let mut opts = pingora::apps::HttpServerOptions::default();
    opts.h2_idle_timeout = Some(engine.runtime().plan.server.idle_timeout);
    proxy.server_options = Some(opts);
    proxy
}

/// The TLS acceptor for a listener (rustls; HTTP/2 offered through ALPN unless `http2: false`).
fn tls_acceptor(
    t: &crate::plan::TlsPlan,
    engine: &Engine,
    listener: &str,
) -> Result<pingora::listeners::tls::Acceptor, String> {
    let cert = t.cert.to_string_lossy();
    let key = t.key.to_string_lossy();
    let mut settings = pingora::listeners::tls::TlsSettings::intermediate(&cert, &key)
        .map_err(|e| e.to_string())?;
    if t.http2 {
        settings.enable_h2();
    }
    // the certificate comes from a resolver a reload can refresh (crate::reload::tls)
    let resolver = Arc::new(crate::reload::tls::CertResolver::load(&t.cert, &t.key)?);
    engine.reloader.register_cert(listener, resolver.clone());
    settings.set_cert_resolver(resolver);
    // Pingora's build() panics when the files do not load; they were checked at validate, but may have
    // changed since: a clear start-up error instead
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| settings.build()))
        .map_err(|_| format!("cannot load the certificate {cert} or the key {key}"))
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
    conns: Arc<conn_runtime::ConnRuntimes>,
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
        conns.spawn(tcp, move |tcp| async move {
            let mut stream = pingora_stream(tcp, peer);
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
        let conns = Arc::new(conn_runtime::ConnRuntimes::new(
            plan.server.threads,
            plan.server.grace_period,
        ));
        let engine = build_engine(plan)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let conf = Arc::new(ServerConf::default());
        let limits = engine.runtime().plan.server.connections;
        let open = Arc::new(OpenConns::default());
        let conn_metrics = ConnMetrics::register(&engine.metrics);
        let proxy_app = Arc::new(proxy_app(&conf, &engine));
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
            let app = Arc::new(counted(
                guarded(
                    proxy_app.clone(),
                    &l.name,
                    limits,
                    &engine,
                    &open,
                    &conn_metrics,
                    None,
                ),
                &engine,
            ));
            tasks.push(tokio::spawn(accept_loop(
                tl,
                app,
                rx.clone(),
                conns.clone(),
            )));
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
            let app = Arc::new(guarded(
                app,
                "admin",
                limits,
                &engine,
                &open,
                &conn_metrics,
                None,
            ));
            tasks.push(tokio::spawn(accept_loop(
                tl,
                app,
                rx.clone(),
                conns.clone(),
            )));
        }
        Ok(Embedded {
            engine,
            addrs,
            admin_addr,
            open,
            shutdown: tx,
            tasks,
        })
    }

    /// First health checks and key fetches (each bounded), then marks the engine ready and starts the
    /// periodic health checks.
    pub async fn warm_up(&mut self) {
        self.engine.start_discovery(DISCOVERY_FIRST_SETS).await;
        self.tasks.push(tokio::spawn(
            self.engine
                .clone()
                .discovery_loop(self.shutdown.subscribe()),
        ));
        let rt = self.engine.runtime();
        rt.warm_up().await;
        self.engine.ready.store(true, Ordering::Release);
        self.tasks.push(tokio::spawn(
            self.engine.clone().health_loop(self.shutdown.subscribe()),
        ));
        self.tasks.extend(crate::reload::watch::spawn(
            &self.engine,
            self.shutdown.subscribe(),
        ));
    }

    /// The first listener's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    /// Stops accepting and ends background work, and drains: idle keep-alive connections close, requests
    /// already received are answered with `Connection: close`.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Client connections open now (every listener and the admin listener).
    pub fn open_connections(&self) -> usize {
        self.open.count()
    }

    /// [`Embedded::stop`], then waits until every client connection has closed or `limit` has passed;
    /// returns whether all closed.
    pub async fn drain(&self, limit: std::time::Duration) -> bool {
        self.stop();
        self.open.wait_idle(limit).await
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

/// A TCP connection accepted by a tokio listener as the stream a Pingora app serves, with its socket
/// digest set like Pingora's own listener does: without it the session has no client address (no
/// X-Forwarded-For, no client IP for rate limits and hashing). Used by gw's own accept loop and by
/// tests that serve a Pingora app on port 0.
#[doc(hidden)]
pub fn pingora_stream(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> pingora::protocols::Stream {
    use pingora::protocols::GetSocketDigest;
    let mut l4: pingora::protocols::l4::stream::Stream = tcp.into();
    let digest =
        pingora::protocols::SocketDigest::from_raw_fd(std::os::unix::io::AsRawFd::as_raw_fd(&l4));
    let _ = digest.peer_addr.set(Some(peer.into()));
    l4.set_socket_digest(digest);
    Box::new(l4)
}
