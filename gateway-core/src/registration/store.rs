//! The `admin.state_file`: registrations as JSON,
//! `{"version": 1, "registrations": [{"upstream": "users", "address": "127.0.0.1:3001", "weight": 2}]}`,
//! replaced atomically on each change: written to a temporary file in the same directory, fsynced,
//! renamed over the old one, and the directory fsynced (so a crash leaves the old or the new file,
//! never a torn one).
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub upstream: String,
    pub address: String,
    pub weight: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    registrations: Vec<Entry>,
}

const VERSION: u32 = 1;

/// Writes `entries` atomically to `path`.
pub fn write(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(&File {
        version: VERSION,
        registrations: entries.to_vec(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the registrations of `path`; a missing file has none. `Err`: why the file is unusable
/// (unreadable, not this format, a bad address or weight).
pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let f: File = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a gw state file: {e}", path.display()))?;
    if f.version != VERSION {
        return Err(format!(
            "{}: unsupported version {} (this gw writes {VERSION})",
            path.display(),
            f.version
        ));
    }
    for e in &f.registrations {
        let checked = crate::compile::endpoint_address(&e.address)
            .map_err(|(m, _)| m)
            .and_then(|()| {
                e.address
                    .parse::<SocketAddr>()
                    .map(drop)
                    .map_err(|_| format!("\"{}\" is not an IP address and port", e.address))
            })
            .and_then(|()| crate::compile::endpoint_weight(e.weight));
        if let Err(m) = checked {
            return Err(format!("{}: upstream {}: {m}", path.display(), e.upstream));
        }
    }
    Ok(f.registrations)
}
