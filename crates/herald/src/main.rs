//! The `herald` binary: parses the command line and runs `serve`, `check-config`, `publish` or
//! `tail`. Wiring, configuration and shutdown live in their own modules.

mod bench;
mod cli;
mod client;
mod config;
mod shutdown;
mod tasks;
mod telemetry;
mod wiring;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
