//! `herald bench`: a load generator pointed at any running Herald (or a peer), with a progress
//! bar, a final table and `--json`. Modes: `fanout`, `idle`, `connect`, `publish`, and
//! `ceiling-server` (a bare fan-out server that shows what the machine allows at all).

mod ceiling;
mod fanout;
mod fanout_reads;
mod idle;
mod publish;
mod report;
mod wire;

use clap::Subcommand;
use wire::Target;

/// Options every measuring mode shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// Server URL. `fanout` takes it more than once (or a comma-separated list) to spread
    /// subscribers round-robin over several nodes of one cluster, publishing to the first; the
    /// other modes use the first.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "http://127.0.0.1:7077",
        value_delimiter = ','
    )]
    pub(crate) urls: Vec<String>,
    /// Which server's URL layout to use (`ceiling` is the bench's bare fan-out server).
    #[arg(long, value_enum, default_value = "herald")]
    pub(crate) target: Target,
    /// Process id of the server: its CPU time (and, for `idle`, its RSS) is read from /proc.
    /// `fanout` takes it once per node and sums their CPU time; the other modes use the first.
    #[arg(long = "server-pid", value_name = "PID", value_delimiter = ',')]
    pub(crate) server_pids: Vec<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ServerArgs {
    /// The first server URL.
    pub(crate) fn url(&self) -> &str {
        self.urls
            .first()
            .map_or("http://127.0.0.1:7077", String::as_str)
    }

    /// The first server process id.
    pub(crate) fn server_pid(&self) -> Option<u32> {
        self.server_pids.first().copied()
    }
}

use std::process::ExitCode;

/// The bench modes.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Subscribers over channels receive published messages; throughput, loss, latency.
    Fanout(fanout::FanoutArgs),
    /// Hold idle connections; server memory per connection.
    Idle(idle::IdleArgs),
    /// Connection establishment rate.
    Connect(idle::IdleArgs),
    /// HTTP publish requests per second.
    Publish(publish::PublishArgs),
    /// Run the bare fan-out server used as the ceiling.
    CeilingServer(ceiling::CeilingArgs),
}

/// Runs one bench mode; exits non-zero when the run lost, duplicated or reordered messages.
pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let (result, json) = match cmd {
        BenchCommand::Fanout(a) => {
            let json = a.server.json;
            (fanout::run(a).await?, json)
        }
        BenchCommand::Idle(a) => {
            let json = a.server.json;
            (idle::idle(a).await?, json)
        }
        BenchCommand::Connect(a) => {
            let json = a.server.json;
            (idle::connect(a).await?, json)
        }
        BenchCommand::Publish(a) => {
            let json = a.server.json;
            (publish::run(a).await?, json)
        }
        BenchCommand::CeilingServer(a) => {
            ceiling::serve(a).await?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    report::print(&result, json);
    Ok(if result["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
