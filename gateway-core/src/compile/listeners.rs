//! Server settings, listeners and the admin listener: addresses parse, never collide, TLS files load.
use super::Cx;
use crate::config::{Config, ServerConfig};
use crate::plan::{AdminPlan, ListenerPlan, ServerPlan, TlsPlan};
use std::net::{IpAddr, SocketAddr};

pub(crate) fn server(s: &ServerConfig, cx: &mut Cx) -> ServerPlan {
    if let Some(t) = s.threads.filter(|t| !(1..=1024).contains(t)) {
        cx.error(
            "server.threads",
            format!("threads must be between 1 and 1024, not {t}"),
            Some("or leave it out: one thread per CPU".into()),
        );
    }
    let mut trusted = Vec::new();
    for (i, t) in s.trusted_proxies.iter().enumerate() {
        let parsed = t
            .parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => trusted.push(n),
            Err(_) => cx.error(
                &format!("server.trusted_proxies[{i}]"),
                format!("invalid address or CIDR \"{t}\""),
                Some("e.g. 10.0.0.0/8 or 127.0.0.1".into()),
            ),
        }
    }
    cx.positive(
        "server.downstream.header_timeout",
        s.downstream.header_timeout.get(),
    );
    cx.positive(
        "server.downstream.idle_timeout",
        s.downstream.idle_timeout.get(),
    );
    cx.positive("server.reload.debounce", s.reload.debounce.get());
    if let Some(m) = s.max_body_size {
        if m.0 == 0 {
            cx.error("server.max_body_size", "must be greater than zero", None);
        }
    }
    ServerPlan {
        threads: s.threads.unwrap_or_else(cpu_threads).clamp(1, 1024),
        grace_period: s.grace_period.get(),
        trusted_proxies: trusted,
        header_timeout: s.downstream.header_timeout.get(),
        idle_timeout: s.downstream.idle_timeout.get(),
        max_body_size: s.max_body_size.map(|m| m.0),
        reload: crate::plan::ReloadPlan {
            watch: s.reload.watch,
            debounce: s.reload.debounce.get(),
        },
        client_ip_header: s.client_ip_header,
        path_policy: s.path_policy,
        connections: super::connections::limits(&s.downstream, cx),
    }
}

/// The default worker count: one per CPU this process may run on (affinity and cgroup quota
/// included), like nginx's `worker_processes auto` and Envoy's default concurrency.
fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn parse_addr(cx: &mut Cx, path: &str, a: &str) -> Option<SocketAddr> {
    match a.parse::<SocketAddr>() {
        Ok(s) => Some(s),
        Err(_) => {
            let hint = if let Some(port) = a.strip_prefix("localhost:") {
                Some(format!("write 127.0.0.1:{port}"))
            } else if !a.contains(':') {
                Some(format!("add a port, e.g. \"{a}:8080\""))
            } else {
                Some("write an IP and a port, e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"".into())
            };
            cx.error(path, format!("invalid listen address \"{a}\""), hint);
            None
        }
    }
}

/// Two sockets conflict when the ports are equal and either address is the same or a wildcard.
/// Port 0 asks the OS for a free port, so it never conflicts.
fn conflicts(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `require`: whether a configuration without listeners is an error (not for embedded policies).
pub(crate) fn listeners(
    cfg: &Config,
    cx: &mut Cx,
    require: bool,
) -> (Vec<ListenerPlan>, Option<AdminPlan>) {
    if require && cfg.listeners.is_empty() {
        cx.error(
            "",
            "no listeners are configured",
            Some("add\nlisteners:\n  - name: public\n    address: 127.0.0.1:8080".into()),
        );
    }
    let mut seen_names: Vec<(&str, usize)> = Vec::new();
    let mut bound: Vec<(SocketAddr, String)> = Vec::new();
    let mut out = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let base = format!("listeners[{i}]");
        if let Some((_, j)) = seen_names.iter().find(|(n, _)| *n == l.name) {
            let line = cx.spans.value(&format!("listeners[{j}].name")).line;
            cx.error(
                &format!("{base}.name"),
                format!(
                    "duplicate listener name \"{}\" (also at line {line})",
                    l.name
                ),
                None,
            );
        }
        seen_names.push((&l.name, i));
        let Some(addr) = parse_addr(cx, &format!("{base}.address"), &l.address) else {
            continue;
        };
        if let Some((_, other)) = bound.iter().find(|(b, _)| conflicts(b, &addr)) {
            cx.error(
                &format!("{base}.address"),
                format!("address {addr} conflicts with {other}"),
                Some("each listener needs its own port".into()),
            );
        }
        bound.push((addr, format!("{base}.address")));
        let tls = l.tls.as_ref().map(|t| {
            check_pem(cx, &format!("{base}.tls.cert"), &t.cert, "CERTIFICATE");
            check_pem(cx, &format!("{base}.tls.key"), &t.key, "PRIVATE KEY");
            TlsPlan {
                cert: cx.resolve(&t.cert),
                key: cx.resolve(&t.key),
                http2: t.http2,
            }
        });
        out.push(ListenerPlan {
            name: l.name.clone(),
            addr,
            tls,
        });
    }
    let admin = cfg.admin.as_ref().and_then(|a| {
        let addr = parse_addr(cx, "admin.address", &a.address)?;
        if let Some((_, other)) = bound.iter().find(|(b, _)| conflicts(b, &addr)) {
            cx.error(
                "admin.address",
                format!("admin address {addr} conflicts with {other}"),
                None,
            );
        }
        if a.token.as_ref().is_some_and(|t| t.len() < 16) {
            cx.error(
                "admin.token",
                "the admin token must be at least 16 characters",
                Some("generate one: openssl rand -hex 32, and pass it as ${GW_ADMIN_TOKEN}".into()),
            );
        }
        if !addr.ip().is_loopback() {
            cx.warning(
                "admin.address",
                format!("the admin listener {addr} is reachable from other machines"),
                Some("bind 127.0.0.1 unless a firewall protects it".into()),
            );
        }
        let state_file = a.state_file.as_deref().and_then(|f| {
            if f.is_empty() {
                cx.error("admin.state_file", "the path is empty", None);
                return None;
            }
            Some(cx.resolve(f))
        });
        Some(AdminPlan {
            addr,
            token: a.token.clone(),
            state_file,
        })
    });
    (out, admin)
}

/// Checks that a PEM file exists and holds at least one block of the expected kind.
fn check_pem(cx: &mut Cx, path: &str, file: &str, kind: &str) {
    let f = cx.resolve(file);
    match std::fs::read_to_string(&f) {
        Err(e) => cx.error(
            path,
            format!("cannot read {}: {e}", f.display()),
            Some("relative paths are resolved against the configuration file's folder".into()),
        ),
        Ok(text) => match pem_blocks(&text, kind) {
            Ok(0) => cx.error(path, format!("{} holds no PEM {kind}", f.display()), None),
            Ok(_) => {}
            Err(e) => cx.error(path, format!("{} is not valid PEM: {e}", f.display()), None),
        },
    }
}

/// Counts the PEM blocks whose label contains `kind`, checking that every block is well formed: a
/// matching END line and a body that decodes as base64.
fn pem_blocks(text: &str, kind: &str) -> Result<usize, String> {
    use base64::Engine as _;
    let mut count = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                closed = true;
                break;
            }
            if !l.contains(':') {
                body.push_str(l);
            }
        }
        if !closed {
            return Err(format!("the {label} block has no END line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("the {label} block is not base64: {e}"))?;
        if der.first() != Some(&0x30) {
            return Err(format!("the {label} block does not hold DER data"));
        }
        if label.contains(kind) {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_blocks_are_parsed() {
        let good = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert_eq!(super::pem_blocks(good, "CERTIFICATE"), Ok(1));
        assert_eq!(super::pem_blocks(good, "PRIVATE KEY"), Ok(0));
        assert!(super::pem_blocks(
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
            "CERTIFICATE"
        )
        .is_err());
        assert!(super::pem_blocks("-----BEGIN CERTIFICATE-----\nMAA=\n", "CERTIFICATE").is_err());
    }
}
