//! `gw serve`: not implemented yet.
use std::process::ExitCode;

pub fn serve(_file: &str) -> ExitCode {
    eprintln!("error: gw serve is not implemented yet");
    ExitCode::from(2)
}
