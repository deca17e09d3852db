//! semaphore-wireguard (userspace edition): the composition root.
#![deny(unsafe_code)]

mod cli;
mod files;
mod gateway;
mod gateway_health;
mod http;
mod keys;
mod logging;
mod metrics;
mod mirror;
mod options;
mod remote;
mod run;
mod serve;
mod show;
mod standalone;
mod state;
#[allow(unsafe_code)]
mod sys;
mod takeover;
mod wiring;

use std::process::ExitCode;

use clap::Parser;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("semaphore-wireguard: {msg}");
    ExitCode::FAILURE
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse_from(cli::args()) {
        Ok(c) => c,
        Err(e) => {
            // A usage error exits 2, as Go's flag package made the originals do.
            let code = if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Some(cli::Command::Tunnel(args)) => tunnel(args),
        Some(cli::Command::Show(args)) => {
            match show::run(&args.socket_dir, args.interface.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Some(cli::Command::Mirror(args)) => mirror::main(args, runtime()),
        None => run_mode(cli.run),
    }
}

fn tunnel(args: cli::TunnelArgs) -> ExitCode {
    if !args.foreground {
        return match standalone::daemonize(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{e:#}")),
        };
    }
    if let Err(e) = logging::init(args.log.log_format, &args.log.log_level) {
        return fail(format!("{e:#}"));
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(standalone::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            fail(format!("{e:#}"))
        }
    }
}

fn run_mode(args: cli::RunArgs) -> ExitCode {
    let required = match args.required() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("semaphore-wireguard: {e}\n\nRun with --help for usage.");
            return ExitCode::FAILURE;
        }
    };
    let text = match std::fs::read_to_string(&required.clusters_config) {
        Ok(t) => t,
        Err(e) => {
            return fail(format!(
                "cannot read clusters config {}: {e}",
                required.clusters_config.display()
            ));
        }
    };
    let (config, warnings) = match control::config::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "clusters config {}: {}",
                required.clusters_config.display(),
                control::error_chain(&e)
            ));
        }
    };
    if let Err(e) = logging::init(args.log.log_format, &args.log.log_level) {
        return fail(format!("{e:#}"));
    }
    for w in warnings {
        tracing::warn!(config = %required.clusters_config.display(), "{w}");
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let listen = if args.listen_address.is_empty() {
        ":7773".to_string()
    } else {
        args.listen_address
    };
    let mut opts = run::RunOptions::new(required.node_name, listen, args.wg_key_path);
    opts.wait_after_handover = args.wait_after_handover;
    if let control::advertise::EndpointSource::Fixed(_, Some(port)) = args.endpoint_address
        && config.remotes.len() > 1
    {
        return fail(format!(
            "--endpoint-address with a port ({port}) needs a single remote; with {} remotes give the address alone (each remote keeps its listen port)",
            config.remotes.len()
        ));
    }
    opts.endpoint = args.endpoint_address;
    let claims = args.advertise_cidrs.unwrap_or_default();
    if let Some(r) = claims.unknown_remote(config.remotes.iter().map(|r| r.name.as_str())) {
        return fail(format!(
            "--advertise-cidrs names remote {r:?}, which is not in the clusters config"
        ));
    }
    opts.advertise_cidrs = claims;
    opts.namespace = args.namespace;
    match rt.block_on(run::run(config, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            fail(format!("{e:#}"))
        }
    }
}
