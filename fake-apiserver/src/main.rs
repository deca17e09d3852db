//! `fake-apiserver`: run the Node-only Kubernetes API test double as a process
//! for shell-driven end-to-end tests.
//!
//! Prints exactly one line, `listening on http://ADDR`, to stdout once bound,
//! then serves until SIGTERM or SIGINT. Logs go to stderr (`RUST_LOG` filters).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Test double of the Kubernetes API subset a node agent uses (core/v1 Nodes).
#[derive(Debug, Parser)]
#[command(name = "fake-apiserver", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on /api requests.
    #[arg(long, env = "FAKE_APISERVER_TOKEN")]
    token: Option<String>,
    /// JSON file with an array of Node objects to preload.
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// Interval between watch BOOKMARK events, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
    /// Number of events kept for watch resumption.
    #[arg(long, default_value_t = 1000)]
    history: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let preload = match &args.nodes {
        Some(path) => fake_apiserver::load_nodes_file(path)?,
        None => Vec::new(),
    };
    let opts = fake_apiserver::Options {
        token: args.token,
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms.max(1)),
        history: args.history,
    };
    let server = fake_apiserver::start(args.listen, opts)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    for node in preload {
        server.upsert_node(node);
    }

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.url()).context("writing to stdout")?;
    stdout.flush().context("flushing stdout")?;
    drop(stdout);

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    server.shutdown().await;
    Ok(())
}
