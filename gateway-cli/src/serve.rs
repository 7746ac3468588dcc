//! `gw serve FILE`: validate exactly like `gw validate`, refuse to start on errors, then run until
//! SIGTERM/SIGINT.
use std::process::ExitCode;

pub fn serve(file: &str) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GW_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let (text, compiled) = match gateway_core::compile_file(file) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    for d in &compiled.diagnostics {
        eprint!("{}", d.render(&text));
    }
    let Some(plan) = compiled.plan else {
        eprintln!("gw: not starting: {file} has errors");
        return ExitCode::from(1);
    };
    // the text is only needed to render diagnostics: don't hold it (tens of MB for big configurations)
    // while serving
    drop(text);
    crate::trim::release_free_memory();
    match gateway_core::proxy::server::serve_blocking(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gw: {e}");
            ExitCode::from(3)
        }
    }
}
