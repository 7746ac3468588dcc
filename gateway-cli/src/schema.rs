//! `gw schema`: print the JSON Schema (draft 2020-12) of the configuration language.
use std::io::Write;
use std::process::ExitCode;

/// Writes the schema (the text of `schema/gw.schema.json`) to stdout. Exit 2 when stdout fails.
pub fn print() -> ExitCode {
    let text = gateway_core::config::schema::json_schema_text();
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the schema: {e}");
            ExitCode::from(2)
        }
    }
}
