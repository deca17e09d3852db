//! semaphore-wireguard (userspace edition): the composition root.
#![forbid(unsafe_code)]

mod cli;
mod logging;
mod standalone;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_from(cli::args());
    match cli.command {
        cli::Command::Tunnel(args) => {
            if !args.foreground {
                return match standalone::daemonize(&args) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("semaphore-wireguard: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            if let Err(e) = logging::init(args.log.log_format, &args.log.log_level) {
                eprintln!("semaphore-wireguard: {e:#}");
                return ExitCode::FAILURE;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("semaphore-wireguard: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(standalone::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("semaphore-wireguard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
