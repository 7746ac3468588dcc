//! The HTTP client of the admin API shared by the `gw` subcommands that talk to a running gateway
//! (`gw upstreams`, `gw register`, `gw deregister`; meant for `gw reload` too).
//!
//! Where: `--admin URL`, else the `admin.address` of `--config FILE`, else `http://127.0.0.1:9901`.
//! Token: `--token`, else `GW_ADMIN_TOKEN`, else the `admin.token` of `--config FILE`.
//! Exit codes ([`Reply::exit_code`]): 0 the gateway accepted the call, 1 it rejected it (an HTTP error
//! status, e.g. 400/401/404/409), 2 it could not be reached (or a usage error).
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// Default admin listener (the DSL's default `admin.address`).
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9901";

/// How long one call may take (a registration waits for the new endpoint's health check).
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Command-line options selecting the gateway and the token.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Admin listener URL, e.g. http://127.0.0.1:9901.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Take the admin address (and token, when none is given otherwise) from this configuration.
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// Admin bearer token (default: $GW_ADMIN_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// A resolved admin API endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL without a trailing slash.
    pub base: String,
    pub token: Option<String>,
}

impl AdminArgs {
    /// Resolves the URL and token (see the module docs). `Err`: a message for a usage error.
    pub fn target(&self) -> Result<Target, String> {
        let from_config = match &self.config {
            Some(f) => {
                let (text, compiled) =
                    gateway_core::compile_file(f).map_err(|e| format!("cannot read {f}: {e}"))?;
                let Some(plan) = compiled.plan else {
                    for d in &compiled.diagnostics {
                        eprint!("{}", d.render(&text));
                    }
                    return Err(format!("{f} has errors"));
                };
                let Some(a) = plan.admin else {
                    return Err(format!("{f} has no admin listener"));
                };
                Some((format!("http://{}", a.addr), a.token))
            }
            None => None,
        };
        let base = self
            .admin
            .clone()
            .or_else(|| from_config.as_ref().map(|(u, _)| u.clone()))
            .unwrap_or_else(|| DEFAULT_ADMIN.into());
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("GW_ADMIN_TOKEN").ok())
            .or_else(|| from_config.and_then(|(_, t)| t));
        Ok(Target {
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }
}

/// The outcome of one call.
#[derive(Debug)]
pub enum Reply {
    /// A 2xx answer's JSON body (`Null` when empty, e.g. 204).
    Ok(Value),
    /// An error status and its body (the gateway's `{"error", "message", ...}`).
    Rejected(u16, Value),
    /// No answer: connection refused, timeout, ...
    Unreachable(String),
}

impl Reply {
    /// 0 accepted, 1 rejected, 2 unreachable.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Reply::Ok(_) => ExitCode::SUCCESS,
            Reply::Rejected(..) => ExitCode::from(1),
            Reply::Unreachable(_) => ExitCode::from(2),
        }
    }

    /// Prints why a call did not succeed on stderr (`gw: 404 not_found: no upstream named "x"`); does
    /// nothing for [`Reply::Ok`].
    pub fn report_failure(&self, target: &Target) {
        match self {
            Reply::Ok(_) => {}
            Reply::Rejected(status, v) => eprintln!(
                "gw: the gateway answered {status} {}: {}",
                v["error"].as_str().unwrap_or("error"),
                v["message"]
                    .as_str()
                    .map_or_else(|| v.to_string(), str::to_string)
            ),
            Reply::Unreachable(e) => {
                eprintln!("gw: cannot reach the admin API at {}: {e}", target.base)
            }
        }
    }
}

/// One path segment, percent-encoded (upstream names, `[v6]:port` addresses).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Calls `method path` (e.g. `"/admin/upstreams"`) with an optional JSON body.
pub fn call(target: &Target, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Reply::Unreachable(format!("cannot start the client: {e}")),
    };
    rt.block_on(async {
        let client = match reqwest::Client::builder().timeout(CALL_LIMIT).build() {
            Ok(c) => c,
            Err(e) => return Reply::Unreachable(e.to_string()),
        };
        let mut req = client.request(method, format!("{}{path}", target.base));
        if let Some(t) = &target.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Reply::Unreachable(e.to_string()),
        };
        let status = resp.status().as_u16();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Reply::Unreachable(format!("the answer broke off: {e}")),
        };
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if (200..300).contains(&status) {
            Reply::Ok(v)
        } else {
            Reply::Rejected(status, v)
        }
    })
}
