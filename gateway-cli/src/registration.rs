//! `gw upstreams`, `gw register`, `gw deregister`: thin clients of the admin API
//! (`GET /admin/upstreams`, `POST /admin/upstreams/<name>/endpoints`,
//! `DELETE /admin/upstreams/<name>/endpoints/<address>`).
use crate::admin_client::{call, segment, AdminArgs, Reply};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

/// Human or JSON output.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Json,
}

fn run(
    args: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<&Value>,
    print: impl FnOnce(&Value),
) -> ExitCode {
    let target = match args.target() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gw: {e}");
            return ExitCode::from(2);
        }
    };
    let reply = call(&target, method, path, body);
    match &reply {
        Reply::Ok(v) => print(v),
        _ => reply.report_failure(&target),
    }
    reply.exit_code()
}

fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `gw upstreams`.
pub fn upstreams(args: &AdminArgs, format: Output) -> ExitCode {
    run(args, Method::GET, "/admin/upstreams", None, |v| {
        if format == Output::Json {
            return pretty(v);
        }
        for u in v["upstreams"].as_array().into_iter().flatten() {
            let mut head = u["name"].as_str().unwrap_or("?").to_string();
            if let Some(d) = u["discovery"].as_str() {
                head.push_str(&format!("  (discovery: {d})"));
            }
            println!("{head}");
            let eps = u["endpoints"].as_array().cloned().unwrap_or_default();
            if eps.is_empty() {
                println!("  (no endpoints)");
            }
            for e in eps {
                let health = if e["healthy"] == true {
                    "healthy"
                } else {
                    "unhealthy"
                };
                println!(
                    "  {:<24} weight {:<4} {:<7} {}{}  in-flight {}",
                    e["address"].as_str().unwrap_or("?"),
                    e["weight"],
                    e["source"].as_str().unwrap_or("?"),
                    health,
                    if e["ejected"] == true {
                        ", ejected"
                    } else {
                        ""
                    },
                    e["in_flight"],
                );
            }
        }
    })
}

/// `gw register UPSTREAM ADDRESS [--weight N]`.
pub fn register(
    args: &AdminArgs,
    upstream: &str,
    address: &str,
    weight: u32,
    format: Output,
) -> ExitCode {
    let path = format!("/admin/upstreams/{}/endpoints", segment(upstream));
    let body = json!({"address": address, "weight": weight});
    run(args, Method::POST, &path, Some(&body), |v| {
        if format == Output::Json {
            return pretty(v);
        }
        println!(
            "registered {} in {} (weight {}, {})",
            v["address"].as_str().unwrap_or(address),
            upstream,
            v["weight"],
            if v["healthy"] == true {
                "healthy: receiving traffic"
            } else {
                "unhealthy: no traffic until its health check passes"
            }
        );
    })
}

/// `gw deregister UPSTREAM ADDRESS`.
pub fn deregister(args: &AdminArgs, upstream: &str, address: &str, format: Output) -> ExitCode {
    let path = format!(
        "/admin/upstreams/{}/endpoints/{}",
        segment(upstream),
        segment(address)
    );
    run(args, Method::DELETE, &path, None, |_| {
        if format == Output::Json {
            pretty(&json!({"upstream": upstream, "address": address, "deregistered": true}));
        } else {
            println!("deregistered {address} from {upstream}");
        }
    })
}
