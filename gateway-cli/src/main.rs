//! `gw`: validate, explain, serve and reload gateway configurations. A thin shell over `gateway_core`.
//!
//! Exit codes: 0 success; 1 the configuration is invalid (or warnings with `--deny-warnings`);
//! 2 usage or I/O error; 3 the gateway failed at run time (e.g. an address already in use).
mod admin_client;
mod registration;
mod reload;
mod schema;
mod serve;
mod test_cmd;
mod trim;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use gateway_core::diag::Diagnostic;
use gateway_core::explain::{explain, DryRunRequest, Explanation};
use std::process::ExitCode;

/// gw's allocator: jemalloc (feature `jemalloc`, on by default; docs/performance.md#allocator has the
/// measurements against glibc malloc and mimalloc).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start (`_RJEM_MALLOC_CONF` in the environment still overrides): a
/// background thread returns freed memory to the system after jemalloc's decay time (~10 s) even while
/// gw is idle, e.g. once thousands of connections have closed (docs/performance.md#idle-connections).
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: MallocConf = MallocConf(c"background_thread:true".as_ptr());

/// A C string pointer jemalloc reads as its `malloc_conf` (a `const char *`).
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: points to a static, immutable, NUL-terminated string.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for MallocConf {}

#[derive(Parser)]
#[command(name = "gw", version, about = "gw: an API gateway engine on Pingora", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check configuration files and report every problem at once, with line:column and a hint.
    #[command(
        after_help = "Examples:\n  gw validate examples/*.yaml\n  gw validate --format json --deny-warnings gateway.yaml\n\nExit status: 0 valid, 1 invalid, 2 usage or I/O error. Never opens a network connection."
    )]
    Validate {
        #[arg(required = true)]
        files: Vec<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Explain, offline, what the gateway would do with one request.
    #[command(
        name = "dry-run",
        after_help = "Examples:\n  gw dry-run examples/seed.yaml --method GET --path '/api/user/42?x=1'\n  gw dry-run examples/seed.yaml --method POST --path /api/auth/login --client-ip 203.0.113.7 --format json\n  gw dry-run gw.yaml --path /api/x --header 'Host: api.example.com' --header 'Authorization: Bearer ...'"
    )]
    DryRun {
        file: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path and optional query string.
        #[arg(long)]
        path: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: std::net::IpAddr,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Run offline expectation files (routes, auth, rate limits) against a configuration.
    #[command(
        after_help = "Examples:\n  gw test examples/seed.yaml examples/seed.test.yaml\n  gw test gw.yaml tests/*.test.yaml --format json\n\nExit status: 0 all cases pass, 1 a case failed, 2 a file is unreadable or invalid. Never opens a network connection."
    )]
    Test {
        /// The configuration under test.
        config: String,
        /// Test files (YAML; see docs/testing-config.md).
        #[arg(required = true)]
        tests: Vec<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Run the gateway until SIGTERM/SIGINT (in-flight requests get the configured grace period).
    #[command(
        after_help = "Examples:\n  gw serve examples/quickstart.yaml\n\nRefuses to start when the configuration has errors (same diagnostics as gw validate)."
    )]
    Serve { file: String },
    /// Ask a running gateway to reload its configuration file (POST /admin/reload).
    #[command(
        after_help = "Examples:\n  GW_ADMIN_TOKEN=... gw reload\n  gw reload --admin http://127.0.0.1:9901 --token \"$TOKEN\"\n\nExit status: 0 applied, 1 rejected (the diagnostics are printed), 2 admin listener unreachable."
    )]
    Reload {
        /// Base URL of the admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// Admin bearer token (default: the GW_ADMIN_TOKEN environment variable).
        #[arg(long)]
        token: Option<String>,
        /// How long to wait for the answer (a reload runs first health checks).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// List every upstream of a running gateway with its endpoints (admin API).
    #[command(
        after_help = "Examples:\n  gw upstreams --admin http://127.0.0.1:9901\n  GW_ADMIN_TOKEN=... gw upstreams --config gw.yaml --format json\n\nExit status: 0 ok, 1 rejected by the gateway, 2 unreachable."
    )]
    Upstreams {
        #[command(flatten)]
        admin: admin_client::AdminArgs,
        #[arg(long, value_enum, default_value = "human")]
        format: registration::Output,
    },
    /// Register an endpoint in an upstream of a running gateway (admin API).
    #[command(
        after_help = "Examples:\n  gw register users 127.0.0.1:3001 --weight 2\n\nExit status: 0 registered, 1 rejected (400 bad address, 404 unknown upstream, 409 already there), 2 unreachable."
    )]
    Register {
        /// Upstream name (as in the configuration).
        upstream: String,
        /// IP:port of the endpoint ([v6]:port for IPv6).
        address: String,
        /// Relative weight, 1-1000.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[command(flatten)]
        admin: admin_client::AdminArgs,
        #[arg(long, value_enum, default_value = "human")]
        format: registration::Output,
    },
    /// Deregister an endpoint registered with `gw register` (admin API).
    #[command(
        after_help = "Examples:\n  gw deregister users 127.0.0.1:3001\n\nExit status: 0 deregistered, 1 rejected, 2 unreachable."
    )]
    Deregister {
        /// Upstream name.
        upstream: String,
        /// IP:port given to `gw register`.
        address: String,
        #[command(flatten)]
        admin: admin_client::AdminArgs,
        #[arg(long, value_enum, default_value = "human")]
        format: registration::Output,
    },
    /// Print the JSON Schema (draft 2020-12) of the configuration language, for editors and CI.
    #[command(
        after_help = "Examples:\n  gw schema > schema/gw.schema.json\n\nIn a YAML file: # yaml-language-server: $schema=../schema/gw.schema.json\nThe schema checks the shape of a file; gw validate also checks references and conflicts."
    )]
    Schema,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  gw completions bash > /etc/bash_completion.d/gw\n  gw completions zsh > ~/.zfunc/_gw"
    )]
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.cmd {
        Cmd::Validate {
            files,
            format,
            deny_warnings,
        } => validate(&files, format, deny_warnings),
        Cmd::DryRun {
            file,
            method,
            path,
            headers,
            client_ip,
            format,
        } => dry_run(&file, method, path, headers, client_ip, format),
        Cmd::Test {
            config,
            tests,
            format,
        } => test_cmd::run(&config, &tests, format == Format::Json),
        Cmd::Serve { file } => serve::serve(&file),
        Cmd::Reload {
            admin,
            token,
            timeout,
        } => reload::reload(&admin, token, timeout),
        Cmd::Upstreams { admin, format } => registration::upstreams(&admin, format),
        Cmd::Register {
            upstream,
            address,
            weight,
            admin,
            format,
        } => registration::register(&admin, &upstream, &address, weight, format),
        Cmd::Deregister {
            upstream,
            address,
            admin,
            format,
        } => registration::deregister(&admin, &upstream, &address, format),
        Cmd::Schema => schema::print(),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "gw", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

fn print_human(diags: &[Diagnostic], text: &str) {
    for d in diags {
        eprint!("{}", d.render(text));
    }
}

fn validate(files: &[String], format: Format, deny_warnings: bool) -> ExitCode {
    let mut all: Vec<Diagnostic> = Vec::new();
    let mut io_error = false;
    let (mut errors, mut warnings) = (0, 0);
    for f in files {
        match gateway_core::compile_file(f) {
            Err(e) => {
                eprintln!("error: cannot read {f}: {e}");
                io_error = true;
            }
            Ok((text, compiled)) => {
                errors += compiled.errors().count();
                warnings += compiled.warnings().count();
                if format == Format::Human {
                    print_human(&compiled.diagnostics, &text);
                }
                all.extend(compiled.diagnostics);
            }
        }
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&gateway_core::diag::to_json(&all))
                .unwrap_or_else(|_| "[]".into())
        ),
        Format::Human => {
            if errors == 0 && warnings == 0 && !io_error {
                eprintln!("{} file(s) valid", files.len());
            } else {
                eprintln!("{errors} error(s), {warnings} warning(s)");
            }
        }
    }
    if io_error {
        ExitCode::from(2)
    } else if errors > 0 || (deny_warnings && warnings > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn dry_run(
    file: &str,
    method: String,
    path: String,
    headers: Vec<String>,
    client_ip: std::net::IpAddr,
    format: Format,
) -> ExitCode {
    let (text, compiled) = match gateway_core::compile_file(file) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(plan) = compiled.plan else {
        print_human(&compiled.diagnostics, &text);
        eprintln!("the configuration has errors; fix them first (gw validate {file})");
        return ExitCode::from(1);
    };
    let mut hs = Vec::new();
    for h in headers {
        match h.split_once(':') {
            Some((k, v)) => hs.push((k.trim().to_string(), v.trim().to_string())),
            None => {
                eprintln!("error: --header takes 'Name: value', got {h:?}");
                return ExitCode::from(2);
            }
        }
    }
    let ex = explain(
        &plan,
        &DryRunRequest {
            method,
            target: path,
            headers: hs,
            client_ip,
        },
    );
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&ex).unwrap_or_default()),
        Format::Human => print!("{}", human(&ex)),
    }
    ExitCode::SUCCESS
}

fn human(ex: &Explanation) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let r = &ex.request;
    let _ = writeln!(
        o,
        "request   {} {}{}",
        r.method,
        r.path,
        r.query
            .as_ref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    if let Some(n) = &r.normalized_path {
        if n != &r.path {
            let _ = writeln!(o, "          normalised to {n}");
        }
    }
    match &ex.route {
        Some(route) => {
            let _ = writeln!(o, "route     {route}");
            for w in &ex.why {
                let _ = writeln!(o, "          because {w}");
            }
        }
        None => {
            let _ = writeln!(o, "route     none");
            for c in &ex.candidates {
                let _ = writeln!(
                    o,
                    "          nearest: {} — {}",
                    c.route,
                    c.reasons.join("; ")
                );
            }
        }
    }
    if let Some(u) = &ex.upstream {
        let _ = writeln!(o, "upstream  {} ({})", u.name, u.load_balancing);
        for e in &u.endpoints {
            let _ = writeln!(o, "          endpoint {e}");
        }
        if let Some(h) = &u.health_check {
            let _ = writeln!(o, "          health {h}");
        }
        let _ = writeln!(o, "          timeouts {}", u.timeouts);
    }
    if let Some(p) = &ex.upstream_path {
        let _ = writeln!(o, "forward   path {p}");
    }
    if let Some(h) = &ex.upstream_host {
        let _ = writeln!(o, "          host {h}");
    }
    let _ = writeln!(o, "chain");
    for (i, p) in ex.policies.iter().enumerate() {
        let _ = writeln!(o, "  {}. {:<16} {} — {}", i + 1, p.phase, p.name, p.detail);
    }
    match ex.outcome.status {
        Some(s) => {
            let _ = writeln!(o, "outcome   respond {s}: {}", ex.outcome.reason);
        }
        None => {
            let _ = writeln!(o, "outcome   proxy: {}", ex.outcome.reason);
        }
    }
    o
}
