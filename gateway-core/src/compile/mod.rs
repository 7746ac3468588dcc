//! The compiler: configuration text → [`Plan`], or every diagnostic at once.
//!
//! [`compile`] is a pure function of its inputs (the text, its name, an environment lookup) except that it
//! reads the files the configuration names (TLS certificates, PEM keys) to check they exist and parse. It
//! never opens a network connection. `gw validate` and `gw serve` both run exactly this function.
mod auth;
mod connections;
mod discovery;
mod listeners;
mod policies;
mod routes;
mod store;
mod tracing;
mod upstreams;

pub(crate) use routes::METHODS;
pub use upstreams::{endpoint_address, endpoint_weight};

use crate::config::load::{load, EnvLookup};
use crate::config::spans::SpanIndex;
use crate::diag::{Diagnostic, Diags, Severity};
use crate::plan::Plan;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The result of compiling: a plan when there is no error, and every diagnostic (warnings included).
#[derive(Debug)]
pub struct Compiled {
    /// The plan, `Some` exactly when there is no error.
    pub plan: Option<Plan>,
    /// Errors and warnings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// The error diagnostics.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
    /// The warning diagnostics.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// Compiles configuration `text` read from `source` (a path; relative file names in the configuration are
/// resolved against its directory). `env` resolves `${VAR}` references.
pub fn compile(source: &str, text: &str, env: EnvLookup) -> Compiled {
    compile_as(source, text, env, Kind::Server)
}

/// Compiles a configuration *fragment* for [`crate::policies`]: the same language, checks and
/// diagnostics as [`compile`], except that `listeners` may be left out (a fragment is served by the
/// embedder's own Pingora service); `listeners` and `admin`, when present, are checked and reported
/// as unused with a warning.
pub fn compile_policies(source: &str, text: &str, env: EnvLookup) -> Compiled {
    compile_as(source, text, env, Kind::Policies)
}

/// What a text is compiled for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole gateway (`gw serve`): listeners are required.
    Server,
    /// Policies embedded in another Pingora service: no listeners needed.
    Policies,
}

fn compile_as(source: &str, text: &str, env: EnvLookup, kind: Kind) -> Compiled {
    let mut diags = Diags::new(source);
    let base_dir = Path::new(source)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let plan = match load(text, env, &mut diags) {
        Some((cfg, spans)) => {
            let mut cx = Cx {
                spans: &spans,
                diags: &mut diags,
                base_dir,
            };
            build(cfg, &mut cx, source, kind)
        }
        None => None,
    };
    let has_errors = diags.has_errors();
    let plan = plan.map(|mut p| {
        p.config_hash = config_hash(text);
        p
    });
    Compiled {
        plan: if has_errors { None } else { plan },
        diagnostics: diags.finish(),
    }
}

/// The first 12 hex digits of the SHA-256 of a configuration text (`gw_config_hash`).
pub fn config_hash(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Compiles with the process environment.
pub fn compile_with_process_env(source: &str, text: &str) -> Compiled {
    compile(source, text, &|k| std::env::var(k).ok())
}

/// Compiles a file from disk; an unreadable file is an `Err` with the I/O error, a file that is not
/// UTF-8 an `InvalidData` error naming the line and column of its first bad byte.
pub fn compile_file(path: &str) -> std::io::Result<(String, Compiled)> {
    let bytes = std::fs::read(path)?;
    // no copy of the text: the bytes become the string once they are known to be UTF-8
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let e = crate::config::load::utf8_text(e.as_bytes())
                .err()
                .map_or_else(
                    || std::io::Error::from(std::io::ErrorKind::InvalidData),
                    |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                );
            return Err(e);
        }
    };
    let c = compile_with_process_env(path, &text);
    Ok((text, c))
}

pub(crate) struct Cx<'a> {
    pub spans: &'a SpanIndex<'a>,
    pub diags: &'a mut Diags,
    pub base_dir: PathBuf,
}

impl Cx<'_> {
    pub fn error(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let pos = self.spans.value(path);
        self.diags
            .push(Severity::Error, pos, path, message.into(), hint);
    }
    pub fn error_at_key(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let pos = self.spans.key(path);
        self.diags
            .push(Severity::Error, pos, path, message.into(), hint);
    }
    pub fn warning(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let pos = self.spans.value(path);
        self.diags
            .push(Severity::Warning, pos, path, message.into(), hint);
    }
    pub fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
    /// Errors reported so far (warnings never make an element invalid).
    pub fn error_count(&self) -> usize {
        self.diags.list.iter().filter(|d| d.is_error()).count()
    }
    /// Checks that a duration is not zero.
    pub fn positive(&mut self, path: &str, d: std::time::Duration) {
        if d.is_zero() {
            self.error(path, "must be greater than zero", None);
        }
    }
}

/// Indexes names, reporting duplicates; returns name → index.
pub(crate) fn index_names<'n>(
    cx: &mut Cx,
    section: &str,
    names: impl Iterator<Item = (usize, Option<&'n str>)>,
) -> HashMap<&'n str, u32> {
    let mut map: HashMap<&str, u32> = HashMap::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names {
        let Some(name) = name else { continue };
        let path = format!("{section}[{i}].name");
        if name.is_empty() {
            cx.error(&path, "name must not be empty", None);
            continue;
        }
        if let Some(&j) = first.get(name) {
            let other = cx.spans.value(&format!("{section}[{j}].name"));
            cx.error(
                &path,
                format!("duplicate name \"{name}\" (also at line {})", other.line),
                Some("names must be unique within a section".into()),
            );
            continue;
        }
        first.insert(name, i);
        map.insert(name, i as u32);
    }
    map
}

fn build(mut cfg: crate::config::Config, cx: &mut Cx, source: &str, kind: Kind) -> Option<Plan> {
    let fingerprints = std::mem::take(&mut cfg.fingerprints);
    let server = listeners::server(&cfg.server, cx);
    let (listeners, admin) = listeners::listeners(&cfg, cx, kind == Kind::Server);
    if kind == Kind::Policies {
        for (section, used) in [
            ("listeners", !listeners.is_empty()),
            ("admin", admin.is_some()),
        ] {
            if used {
                let msg = format!(
                    "`{section}` is not used by embedded policies (your Pingora service listens)"
                );
                cx.warning(section, msg, None);
            }
        }
    }
    let otlp = tracing::otlp(&cfg.observability.tracing, cx);
    let policy_index = index_names(
        cx,
        "policies",
        cfg.policies
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.as_ref().map(|p| p.name()))),
    );
    let upstream_index = index_names(
        cx,
        "upstreams",
        cfg.upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (i, u.as_ref().map(|u| u.name.as_str()))),
    );
    let broken = Broken {
        upstreams: cfg.upstreams.iter().any(Option::is_none),
        policies: cfg.policies.iter().any(Option::is_none),
    };
    let pols = policies::policies(&cfg, cx);
    let ups = upstreams::upstreams(&cfg, &upstream_index, &policy_index, &pols, broken, cx);
    let global = policies::resolve_refs(
        cx,
        &"global_policies",
        &cfg.global_policies,
        &policy_index,
        &pols,
        broken,
    );
    let inputs = routes::RouteInputs {
        up_index: &upstream_index,
        policy_index: &policy_index,
        pols: &pols,
        ups: &ups,
        global: &global,
        broken,
    };
    let (routes, router) = routes::routes(&cfg, &inputs, cx);
    // an upstream no route uses is likely a typo somewhere (unless some route failed to parse)
    if !cfg.routes.iter().any(Option::is_none) {
        let is_fallback = |f: &Option<crate::plan::FallbackPlan>, i: usize| matches!(f, Some(crate::plan::FallbackPlan::Upstream(x)) if *x as usize == i);
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let Some(u) = u else { continue };
            // by name: a duplicate of a used name is already an error of its own
            let i = cfg
                .upstreams
                .iter()
                .position(|x| x.as_ref().is_some_and(|x| x.name == u.name))
                .unwrap_or(i);
            let used = routes
                .iter()
                .any(|r| r.upstream as usize == i || is_fallback(&r.fallback, i))
                || ups.iter().flatten().any(|p| {
                    p.plan
                        .breaker
                        .as_ref()
                        .is_some_and(|b| is_fallback(&b.fallback, i))
                });
            if !used {
                cx.warning(
                    &format!("upstreams[{i}].name"),
                    format!("upstream \"{}\" is not used by any route", u.name),
                    None,
                );
            }
        }
    }
    if cx.diags.has_errors() {
        return None;
    }
    Some(Plan {
        source: source.to_string(),
        server,
        listeners,
        admin,
        access_log: match &cfg.observability.access_log {
            crate::config::AccessLogConfig::Off {} => crate::plan::AccessLogSpec::Off,
            crate::config::AccessLogConfig::Stdout {} => crate::plan::AccessLogSpec::Stdout,
            // relative like every other file in the configuration
            crate::config::AccessLogConfig::File { path } => {
                crate::plan::AccessLogSpec::File(cx.resolve(path))
            }
        },
        metrics: cfg.observability.metrics,
        otlp,
        upstreams: ups
            .into_iter()
            .map(|u| u.map(|u| u.plan))
            .collect::<Option<Vec<_>>>()?,
        routes,
        router,
        rate_limits: pols.limits.into_iter().collect::<Option<Vec<_>>>()?,
        rate_limit_redis: pols.redis,
        auths: pols.auths.into_iter().collect::<Option<Vec<_>>>()?,
        config_hash: String::new(),
        fingerprints,
    })
}

/// Whether some elements failed to deserialize: then dangling references to them are not reported
/// (the element's own error already is).
#[derive(Clone, Copy)]
pub(crate) struct Broken {
    pub upstreams: bool,
    pub policies: bool,
}

#[cfg(test)]
mod tests;
