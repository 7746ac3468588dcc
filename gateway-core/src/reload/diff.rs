//! What a new plan changes compared to the running one: what needs a restart (refused), and the
//! summary of what a reload changes (routes, upstreams, policies added, removed, changed).
use crate::plan::Plan;
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything the running process fixed at start-up that `new` changes; each entry reads like
/// `listeners[0].address changed: restart needed`. Empty: the plan can be reloaded.
///
/// Fixed at start-up: the listener set (names, order, addresses), TLS on/off and HTTP/2 of a listener
/// (certificate and key files are reloadable), worker threads, the grace period, the downstream
/// header and idle timeouts and connection caps, the admin listener (on/off, address, token), the access-log sink and
/// `server.reload` itself.
pub fn restart_needed(old: &Plan, new: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let mut need = |what: String| out.push(format!("{what}: restart needed"));
    let n = old.listeners.len().max(new.listeners.len());
    for i in 0..n {
        match (old.listeners.get(i), new.listeners.get(i)) {
            (Some(a), Some(b)) => {
                if a.name != b.name {
                    need(format!(
                        "listeners[{i}].name changed (\"{}\" → \"{}\")",
                        a.name, b.name
                    ));
                }
                if a.addr != b.addr {
                    need(format!(
                        "listeners[{i}].address changed ({} → {})",
                        a.addr, b.addr
                    ));
                }
                match (&a.tls, &b.tls) {
                    (None, Some(_)) => need(format!("listeners[{i}].tls added")),
                    (Some(_), None) => need(format!("listeners[{i}].tls removed")),
                    (Some(x), Some(y)) if x.http2 != y.http2 => {
                        need(format!("listeners[{i}].tls.http2 changed"))
                    }
                    _ => {}
                }
            }
            (Some(a), None) => need(format!("listeners[{i}] (\"{}\") removed", a.name)),
            (None, Some(b)) => need(format!("listeners[{i}] (\"{}\") added", b.name)),
            (None, None) => {}
        }
    }
    let (s, t) = (&old.server, &new.server);
    if s.threads != t.threads {
        need(format!(
            "server.threads changed ({} → {})",
            s.threads, t.threads
        ));
    }
    if s.grace_period != t.grace_period {
        need("server.grace_period changed".into());
    }
    if s.header_timeout != t.header_timeout {
        need("server.downstream.header_timeout changed".into());
    }
    if s.idle_timeout != t.idle_timeout {
        need("server.downstream.idle_timeout changed".into());
    }
    if s.connections != t.connections {
        need("server.downstream.max_connections or max_connections_per_ip changed".into());
    }
    if s.reload != t.reload {
        need("server.reload changed".into());
    }
    match (&old.admin, &new.admin) {
        (None, Some(_)) => need("admin added".into()),
        (Some(_), None) => need("admin removed".into()),
        (Some(a), Some(b)) => {
            if a.addr != b.addr {
                need(format!("admin.address changed ({} → {})", a.addr, b.addr));
            }
            if a.token != b.token {
                need("admin.token changed".into());
            }
        }
        (None, None) => {}
    }
    if old.access_log != new.access_log {
        need("observability.access_log changed".into());
    }
    if old.otlp != new.otlp {
        need("observability.tracing.otlp changed".into());
    }
    out
}

/// Names added, removed and changed (same name, different content) in one section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Names only the new configuration has.
    pub added: Vec<String>,
    /// Names only the old configuration has.
    pub removed: Vec<String>,
    /// Names in both, with different content.
    pub changed: Vec<String>,
}

impl Changes {
    /// Compares two name → fingerprint maps.
    pub fn between(old: &BTreeMap<String, u64>, new: &BTreeMap<String, u64>) -> Changes {
        let mut c = Changes::default();
        for (name, fp) in new {
            match old.get(name) {
                None => c.added.push(name.clone()),
                Some(o) if o != fp => c.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        c.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        c
    }

    /// Whether nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "+{} -{} ~{}",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        )?;
        for (sign, names) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            for n in names.iter() {
                write!(f, " {sign}{n}")?;
            }
        }
        Ok(())
    }
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    /// The configuration file the plan was compiled from.
    pub source: String,
    /// `gw_config_hash` of the configuration that was running.
    pub previous_hash: String,
    /// `gw_config_hash` of the new configuration.
    pub hash: String,
    /// Routes added, removed and changed.
    pub routes: Changes,
    /// Upstreams added, removed and changed.
    pub upstreams: Changes,
    /// Policies added, removed and changed.
    pub policies: Changes,
    /// Other top-level sections whose content changed (`server`, `global_policies`, ...).
    pub sections: Vec<String>,
    /// TLS listeners now presenting a certificate loaded by this reload.
    pub certificates: Vec<String>,
}

impl ReloadSummary {
    /// Compares the running plan with the one being applied.
    pub fn between(old: &Plan, new: &Plan) -> ReloadSummary {
        let (a, b) = (&old.fingerprints, &new.fingerprints);
        let sections = b
            .sections
            .iter()
            .filter(|(k, v)| a.sections.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(
                a.sections
                    .keys()
                    .filter(|k| !b.sections.contains_key(*k))
                    .cloned(),
            )
            .collect();
        ReloadSummary {
            source: new.source.clone(),
            previous_hash: old.config_hash.clone(),
            hash: new.config_hash.clone(),
            routes: Changes::between(&a.routes, &b.routes),
            upstreams: Changes::between(&a.upstreams, &b.upstreams),
            policies: Changes::between(&a.policies, &b.policies),
            sections,
            certificates: Vec::new(),
        }
    }
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} → {}: routes {}; upstreams {}; policies {}",
            self.previous_hash, self.hash, self.routes, self.upstreams, self.policies
        )?;
        if !self.sections.is_empty() {
            write!(f, "; sections changed: {}", self.sections.join(", "))?;
        }
        if !self.certificates.is_empty() {
            write!(
                f,
                "; certificates reloaded: {}",
                self.certificates.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        let c = crate::compile("t.yaml", yaml, &|_| None);
        c.plan.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
    }

    const BASE: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:8080" }]
admin: { address: "127.0.0.1:9901", token: tttttttttttttttttttt }
upstreams:
  - { name: a, endpoints: [{ address: "127.0.0.1:1" }] }
  - { name: b, endpoints: [{ address: "127.0.0.1:2" }] }
routes:
  - { name: ra, match: { prefix: /a }, upstream: a, policies: [lim] }
  - { name: rb, match: { prefix: /b }, upstream: b }
policies:
  - { type: rate_limit, name: lim, window: 1m, max: 100, key: { type: client_ip } }
"#;

    #[test]
    fn summary_by_name_and_content() {
        let old = plan(BASE);
        let new = plan(
            &BASE
                .replace("127.0.0.1:2", "127.0.0.1:3")
                .replace("max: 100", "max: 50")
                .replace(
                    "  - { name: rb, match: { prefix: /b }, upstream: b }",
                    "  - { name: rc, match: { prefix: /c }, upstream: b }",
                ),
        );
        let s = ReloadSummary::between(&old, &new);
        assert_eq!(s.routes.added, ["rc"]);
        assert_eq!(s.routes.removed, ["rb"]);
        assert!(s.routes.changed.is_empty(), "{s}");
        assert_eq!(s.upstreams.changed, ["b"]);
        assert!(s.upstreams.added.is_empty() && s.upstreams.removed.is_empty());
        assert_eq!(s.policies.changed, ["lim"]);
        assert!(s.sections.is_empty());
        assert_ne!(s.hash, s.previous_hash);
        assert_eq!(
            s.to_string().split(": ").nth(1).unwrap(),
            "routes +1 -1 ~0 +rc -rb; upstreams +0 -0 ~1 ~b; policies +0 -0 ~1 ~lim"
        );
        // key order and formatting do not count as a change
        let same = plan(&BASE.replace(
            "{ name: a, endpoints: [{ address: \"127.0.0.1:1\" }] }",
            "{ endpoints: [{ address: \"127.0.0.1:1\" }], name: a }",
        ));
        let s = ReloadSummary::between(&old, &same);
        assert!(s.upstreams.is_empty() && s.routes.is_empty() && s.policies.is_empty());
        let s = ReloadSummary::between(
            &old,
            &plan(&format!("{BASE}\nserver: {{ max_body_size: 1MB }}\n")),
        );
        assert_eq!(s.sections, ["server"]);
    }

    #[test]
    fn server_reload_is_checked_and_carried_into_the_plan() {
        let p = plan(&format!(
            "{BASE}\nserver: {{ reload: {{ watch: true, debounce: 1s }} }}\n"
        ));
        assert!(p.server.reload.watch);
        assert_eq!(p.server.reload.debounce, std::time::Duration::from_secs(1));
        let c = crate::compile(
            "t.yaml",
            &format!("{BASE}\nserver: {{ reload: {{ watch: true, wach: 1 }} }}\n"),
            &|_| None,
        );
        assert!(c.plan.is_none());
        let d = c.errors().next().expect("an error");
        assert!(d.message.contains("wach"), "{d:?}");
        let c = crate::compile(
            "t.yaml",
            &format!("{BASE}\nserver: {{ reload: {{ debounce: 0s }} }}\n"),
            &|_| None,
        );
        assert!(c.errors().any(|d| d.path == "server.reload.debounce"));
    }

    #[test]
    fn restart_only_changes_are_named() {
        let old = plan(BASE);
        assert!(restart_needed(&old, &plan(BASE)).is_empty());
        let moved = plan(&BASE.replace("127.0.0.1:8080", "127.0.0.1:8081"));
        assert_eq!(
            restart_needed(&old, &moved),
            ["listeners[0].address changed (127.0.0.1:8080 → 127.0.0.1:8081): restart needed"]
        );
        // BASE leaves threads out: one per CPU
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let other = if cpus == 1 { 2 } else { 1 };
        let many = plan(&BASE.replace("token: tttt", "token: uuuu").replace(
            "listeners: [",
            &format!("server: {{ threads: {other} }}\nlisteners: [{{ name: second, address: \"127.0.0.1:8082\" }}, "),
        ));
        let r = restart_needed(&old, &many);
        assert!(
            r.iter().any(|m| m.starts_with("listeners[0].name changed")),
            "{r:?}"
        );
        assert!(
            r.iter()
                .any(|m| m.starts_with("listeners[1] (\"public\") added")),
            "{r:?}"
        );
        assert!(
            r.contains(&format!(
                "server.threads changed ({cpus} → {other}): restart needed"
            )),
            "{r:?}"
        );
        assert!(
            r.contains(&"admin.token changed: restart needed".to_string()),
            "{r:?}"
        );
        // limits, routes and upstreams never need a restart
        let routes = plan(&BASE.replace("max: 100", "max: 5").replace("/b", "/bb"));
        assert!(restart_needed(&old, &routes).is_empty());
    }

    #[test]
    fn the_span_export_is_built_at_start_only() {
        let old = plan(BASE);
        let traced = plan(&format!(
            "{BASE}observability: {{ tracing: {{ otlp: {{ endpoint: \"http://127.0.0.1:4318/v1/traces\" }} }} }}\n"
        ));
        assert_eq!(
            restart_needed(&old, &traced),
            ["observability.tracing.otlp changed: restart needed"]
        );
    }
}
