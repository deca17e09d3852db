//! Command line.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Userspace WireGuard for Kubernetes nodes without the wireguard kernel module.
#[derive(Parser, Debug)]
#[command(name = "semaphore-wireguard", version, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a WireGuard interface on a TUN device and serve the UAPI socket that `wg`
    /// uses, like wireguard-go. Stops on SIGTERM/SIGINT or when the socket is deleted.
    Tunnel(TunnelArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TunnelArgs {
    /// Stay in the foreground (otherwise detach once the interface exists).
    #[arg(short, long)]
    pub foreground: bool,

    /// MTU of the new TUN device.
    #[arg(long, default_value_t = 1420, value_parser = clap::value_parser!(u16).range(1280..))]
    pub mtu: u16,

    /// Directory of the UAPI socket.
    #[arg(long, default_value = dataplane::uapi::SOCKET_DIR)]
    pub socket_dir: PathBuf,

    #[command(flatten)]
    pub log: LogArgs,

    /// Interface name (at most 15 bytes).
    #[arg(value_parser = parse_ifname)]
    pub interface: String,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, env = "SWG_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "SWG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_ifname(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!("interface name {s:?} must be 1 to 15 bytes"));
    }
    if s.contains('/') || s.chars().any(|c| c.is_whitespace() || c == ':') {
        return Err(format!(
            "interface name {s:?} may not contain '/', ':' or spaces"
        ));
    }
    Ok(s.to_string())
}

/// The process arguments; invoked under a name ending in `-tunnel` (a symlink, for
/// `WG_QUICK_USERSPACE_IMPLEMENTATION`), the `tunnel` subcommand is implied.
pub fn args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let implied = args
        .first()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().ends_with("-tunnel"))
        })
        .unwrap_or(false);
    if implied {
        args.insert(1, "tunnel".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_args_parse() {
        let cli = Cli::try_parse_from(["x", "tunnel", "-f", "wg0"]).unwrap();
        let Command::Tunnel(t) = cli.command;
        assert!(t.foreground);
        assert_eq!(t.interface, "wg0");
        assert_eq!(t.mtu, 1420);
    }

    #[test]
    fn bad_interface_names_are_refused() {
        assert!(Cli::try_parse_from(["x", "tunnel", "a-very-long-interface-name"]).is_err());
        assert!(Cli::try_parse_from(["x", "tunnel", "a/b"]).is_err());
        assert!(Cli::try_parse_from(["x", "tunnel", "-f", "--mtu", "100", "wg0"]).is_err());
    }
}
