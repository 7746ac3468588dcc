//! Shared helpers for the end-to-end tests: compile a YAML snippet into a plan (panicking with the
//! rendered diagnostics) and run the gateway in-process on 127.0.0.1:0.
#![allow(dead_code)]
use gateway_core::plan::Plan;
use gateway_core::proxy::server::Embedded;

/// Compiles `yaml`; `{{NAME}}` placeholders are replaced from `vars` first.
pub fn plan(yaml: &str, vars: &[(&str, String)]) -> Plan {
    let mut text = yaml.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    let c = gateway_core::compile("test.yaml", &text, &|k| std::env::var(k).ok());
    match c.plan {
        Some(p) => p,
        None => panic!(
            "test config does not compile:\n{}\n{}",
            c.diagnostics
                .iter()
                .map(|d| d.render(&text))
                .collect::<String>(),
            text
        ),
    }
}

/// Starts the gateway in-process; its listeners should use `127.0.0.1:0`.
pub async fn gateway(yaml: &str, vars: &[(&str, String)]) -> Embedded {
    Embedded::start(plan(yaml, vars))
        .await
        .unwrap_or_else(|e| panic!("gateway did not start: {e}"))
}
