//! `gw reload`: asks a running gateway to reload its configuration file through the admin API
//! (`POST /admin/reload`) and prints the answer.
//!
//! Exit codes: 0 applied; 1 rejected (invalid configuration, a change that needs a restart, a
//! refused token, or any other answer); 2 the admin listener could not be reached (or no token).
use std::process::ExitCode;
use std::time::Duration;

/// Runs `gw reload`; `token` falls back to `GW_ADMIN_TOKEN`.
pub fn reload(admin: &str, token: Option<String>, timeout: Duration) -> ExitCode {
    let Some(token) = token.or_else(|| std::env::var("GW_ADMIN_TOKEN").ok()) else {
        eprintln!("gw reload: no admin token: pass --token or set GW_ADMIN_TOKEN");
        return ExitCode::from(2);
    };
    let url = format!("{}/admin/reload", admin.trim_end_matches('/'));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gw reload: {e}");
            return ExitCode::from(2);
        }
    };
    let answer = rt.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let r = client.post(&url).bearer_auth(&token).send().await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    let (status, body) = match answer {
        Ok(x) => x,
        Err(e) => {
            eprintln!("gw reload: cannot reach the admin listener at {url}: {e}");
            return ExitCode::from(2);
        }
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    println!(
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.clone())
    );
    if status == 200 {
        eprintln!(
            "gw reload: applied: {}",
            v["message"].as_str().unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(list) = v["diagnostics"].as_array() {
        for d in list {
            eprintln!(
                "{}:{}:{}: {}: {}",
                d["file"].as_str().unwrap_or_default(),
                d["line"],
                d["column"],
                d["severity"].as_str().unwrap_or_default(),
                d["message"].as_str().unwrap_or_default()
            );
        }
    }
    eprintln!(
        "gw reload: rejected ({status}): {}",
        v["message"].as_str().unwrap_or(body.trim())
    );
    ExitCode::from(1)
}
