//! `twoway-server`: parse the command line, start logging, run the command,
//! map the outcome to the documented exit code.

use std::process::ExitCode;

use clap::Parser;
use twoway_common::control::status::ServerStatus;
use twoway_common::control::{Kicked, Reloaded, Request};
use twoway_server::cli::{self, Cli, Command};
use twoway_server::failure::Failure;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    twoway_common::logging::init(cli.log_format);
    let result: Result<(), Failure> = match cli.command {
        Command::Run { config } => twoway_server::daemon::run(&config)
            .await
            .map_err(Into::into),
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
            .map(|status: ServerStatus| cli::print_status(&status, json))
            .map_err(Into::into),
        Command::Kick { identity, config } => {
            cli::control_request(&config, Request::Kick { identity })
                .await
                .map(|a: Kicked| println!("kicked {} session(s)", a.kicked))
                .map_err(Into::into)
        }
        Command::Reload { config } => cli::control_request(&config, Request::Reload)
            .await
            .map(|a: Reloaded| {
                println!(
                    "reloaded; {} session(s) closed, {} updated without a reconnect",
                    a.closed_sessions, a.updated_sessions
                )
            })
            .map_err(Into::into),
        Command::Pki(cmd) => cli::pki_command(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twoway-server: {}", cli::error_text(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
