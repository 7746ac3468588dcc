//! `cargo run --example quickstart`: starts small demo upstreams (user-service on 127.0.0.1:3001/3002,
//! order-service on :4001/4002) and serves `examples/quickstart.yaml` on 127.0.0.1:8080 with the same
//! engine `gw serve` uses. Try:
//!   curl -i http://127.0.0.1:8080/api/user/42
//!   curl -i http://127.0.0.1:8080/api/users/7
//!   curl -s http://127.0.0.1:9901/metrics | grep gw_requests_total
use std::process::ExitCode;

fn main() -> ExitCode {
    // Demo upstreams run on their own runtime thread; Pingora's server needs the main thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let specs = [
                ("user-service-1", "127.0.0.1:3001"),
                ("user-service-2", "127.0.0.1:3002"),
                ("order-service-1", "127.0.0.1:4001"),
                ("order-service-2", "127.0.0.1:4002"),
            ];
            match gateway_testkit::demo_upstreams(&specs).await {
                Ok(ups) => {
                    let _ = tx.send(Ok(()));
                    std::future::pending::<()>().await;
                    drop(ups);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
    });
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("quickstart: cannot start the demo upstreams: {e}");
            return ExitCode::from(3);
        }
        Err(_) => {
            eprintln!("quickstart: the demo upstream thread stopped");
            return ExitCode::from(3);
        }
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml");
    let (text, compiled) = match gateway_core::compile_file(path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("quickstart: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    for d in &compiled.diagnostics {
        eprint!("{}", d.render(&text));
    }
    let Some(plan) = compiled.plan else {
        return ExitCode::from(1);
    };
    eprintln!("gw quickstart: demo upstreams on 127.0.0.1:3001/3002 and :4001/4002; gateway on http://127.0.0.1:8080");
    eprintln!("  curl -i http://127.0.0.1:8080/api/user/42\n  curl -i http://127.0.0.1:8080/api/users/7\n  curl -s http://127.0.0.1:9901/metrics | grep gw_requests_total");
    match gateway_core::proxy::server::serve_blocking(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::from(3)
        }
    }
}
