//! `twoway-server`: parse the command line, start logging, run the command,
//! map the outcome to the documented exit code.

use std::process::ExitCode;

use clap::Parser;
use twoway_common::control::Request;
use twoway_server::cli::{self, Cli, Command};

fn exit_code(err: &anyhow::Error) -> u8 {
    use twoway_common::config_file::ConfigErrors;
    use twoway_common::inside::tun::TunError;
    use twoway_server::server::StartError;
    if err
        .downcast_ref::<twoway_server::privilege::NotRoot>()
        .is_some()
        || err.downcast_ref::<cli::ControlPrivilege>().is_some()
        || err
            .downcast_ref::<twoway_server::privilege::NoNetAdmin>()
            .is_some()
    {
        return 5;
    }
    if let Some(e) = err.downcast_ref::<TunError>() {
        return if e.is_privilege() { 5 } else { 1 };
    }
    // The configured address is taken or not this machine's: a configuration
    // error (systemd should not restart into it every 2 s).
    let address_unusable = err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
            )
        })
    });
    if address_unusable
        || err.downcast_ref::<ConfigErrors>().is_some()
        || err.downcast_ref::<StartError>().is_some()
        || err.downcast_ref::<twoway_server::pki::PkiError>().is_some()
    {
        return 2;
    }
    1
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    twoway_common::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => twoway_server::daemon::run(&config).await,
        Command::Check { config } => {
            let problems = twoway_server::check::check(&config);
            for p in &problems {
                eprintln!("{p}");
            }
            if problems.is_empty() {
                println!(
                    "{}: configuration, policy and certificates are valid",
                    config.display()
                );
                return ExitCode::SUCCESS;
            }
            return ExitCode::from(2);
        }
        Command::Status { json, config } => cli::control_request(&config, Request::Status)
            .await
            .map(|answer| cli::print_status(&answer, json)),
        Command::Kick { identity, config } => {
            cli::control_request(&config, Request::Kick { identity })
                .await
                .map(|a| println!("kicked {} session(s)", a["kicked"]))
        }
        Command::Reload { config } => {
            cli::control_request(&config, Request::Reload)
                .await
                .map(|a| {
                    println!(
                        "reloaded; {} session(s) closed, {} updated without a reconnect",
                        a["closed_sessions"],
                        a["updated_sessions"].as_u64().unwrap_or(0)
                    )
                })
        }
        Command::Pki(cmd) => cli::pki_command(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twoway-server: {}", cli::error_text(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}
