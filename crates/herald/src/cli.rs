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
    /// Keep the memory engine's channels (history, latest state, positions) in this directory
    /// across restarts (overrides engine.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
    /// Mint a connection token signed with the first auth.token.hmac_secrets entry of the
    /// configuration (for tests and tools; production tokens come from your backend).
    Token {
        #[command(flatten)]
        config: ConfigArgs,
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// A channel pattern the user may subscribe to (`room:42`, `chat:*`); repeatable.
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// A channel pattern the user may publish to from the client; repeatable.
        #[arg(long = "publish")]
        publish: Vec<String>,
        /// Public information for presence, as a JSON object.
        #[arg(long)]
        info: Option<String>,
        /// Lifetime, e.g. 1h or 15m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Load generator: fan-out, idle memory, connect rate, publish rate, ceiling server.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Read a password on standard input and print its Argon2id hash, for admin.password_hash.
    HashPassword,
    /// Follow channels over SSE, print each event as a JSON line, resume after drops.
    Tail {
        /// Channel names.
        #[arg(required = true)]
        channels: Vec<String>,
        /// Server URL.
        #[arg(long, env = "HERALD_URL", default_value = client::DEFAULT_SERVER)]
        server: String,
        /// Connection token, for namespaces that are not public (see `herald token`).
        #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
        token: Option<String>,
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
                data_dir: self.data_dir.clone(),
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
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| anyhow::anyhow!("reading the password: {e}"))?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.len() < 12 {
                eprintln!("Use a password of at least 12 characters.");
                return Ok(ExitCode::from(2));
            }
            let hash = herald_server::hash_password(password).map_err(anyhow::Error::msg)?;
            println!("{hash}");
            Ok(ExitCode::SUCCESS)
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
        Command::Token {
            config,
            user,
            channels,
            publish,
            info,
            ttl,
        } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("{problems}");
                    return Ok(ExitCode::from(2));
                }
            };
            let Some(minter) = herald_auth::Minter::from_config(&config.auth.token) else {
                eprintln!("auth.token.hmac_secrets is empty: there is no secret to sign with");
                return Ok(ExitCode::from(2));
            };
            let info = match info.as_deref().map(serde_json::from_str).transpose() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("--info is not JSON: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let request = herald_auth::MintRequest {
                user,
                info,
                channels,
                publish,
                ttl,
                session_start: None,
            };
            match minter.mint(&request, herald_auth::unix_now()) {
                Ok(token) => {
                    println!("{token}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Tail {
            channels,
            server,
            token,
        } => client::tail(&server, &channels, token.as_deref()).await,
        Command::Bench(cmd) => crate::bench::run(cmd).await,
    }
}
