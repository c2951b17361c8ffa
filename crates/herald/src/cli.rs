//! The command line: subcommands, their flags, and dispatch.

use crate::config::{self, Overrides};
use crate::{client, telemetry, wiring};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Herald: a real-time messaging server (SSE and WebSocket) with lossless resume.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// A TOML configuration file (see herald.example.toml).
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log format: pretty or json (overrides log.format).
    #[arg(long)]
    log_format: Option<config::LogFormat>,
    /// Engine: memory (one node), redis or nats (many nodes) (overrides engine.kind).
    #[arg(long)]
    engine: Option<config::EngineKind>,
    /// Engine server URL, e.g. redis://127.0.0.1:6379 or nats://127.0.0.1:4222
    /// (overrides engine.url).
    #[arg(long)]
    engine_url: Option<String>,
    /// Allow listening on a non-loopback address with no authentication configured
    /// (overrides auth.allow_insecure).
    #[arg(long)]
    allow_insecure: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Print the effective configuration (secrets redacted), or every problem with it.
    CheckConfig(ConfigArgs),
    /// Publish one message over the HTTP API.
    Publish {
        /// Channel name.
        channel: String,
        /// The payload, as JSON.
        json: String,
        /// Event type (defaults to `message`).
        #[arg(long)]
        event: Option<String>,
        /// Server URL.
        #[arg(long, env = "HERALD_URL", default_value = client::DEFAULT_SERVER)]
        server: String,
        /// API key, when the server has keys configured.
        #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Load generator: fan-out, idle memory, connect rate, publish rate, ceiling server.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Follow channels over SSE, print each event as a JSON line, resume after drops.
    Tail {
        /// Channel names.
        #[arg(required = true)]
        channels: Vec<String>,
        /// Server URL.
        #[arg(long, env = "HERALD_URL", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
}

impl ConfigArgs {
    fn load(&self) -> Result<config::Config, config::Problems> {
        config::load(
            self.config.as_deref(),
            &Overrides {
                listen: self.listen,
                log_format: self.log_format,
                engine: self.engine,
                engine_url: self.engine_url.clone(),
                allow_insecure: self.allow_insecure,
            },
        )
    }
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let config = match args.load() {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("{problems}");
                    return Ok(ExitCode::from(2));
                }
            };
            telemetry::init(&config.log);
            wiring::serve(config).await
        }
        Command::CheckConfig(args) => match args.load() {
            Ok(config) => {
                print!("{}", config::render(&config)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(problems) => {
                eprintln!("{problems}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Publish {
            channel,
            json,
            event,
            server,
            api_key,
        } => {
            client::publish(
                &server,
                &channel,
                &json,
                event.as_deref(),
                api_key.as_deref(),
            )
            .await
        }
        Command::Tail { channels, server } => client::tail(&server, &channels).await,
        Command::Bench(cmd) => crate::bench::run(cmd).await,
    }
}
