//! `twoway`: parse the command line, start logging, run the command, and
//! leave with the documented exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use twoway_client::cli::{self, Cli, Command};
use twoway_client::config::ClientConfig;
use twoway_client::error::ClientError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    twoway_common::logging::init(cli.log_format);
    if let Command::Up {
        config,
        detach: true,
        ..
    } = &cli.command
    {
        return match cli::detach(config) {
            Ok(code) => ExitCode::from(code),
            Err(e) => fail(&e),
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&ClientError::Internal(e.to_string())),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up {
                config,
                notify_ready,
                ..
            } => {
                let config = ClientConfig::load(&config)?;
                let on_ready: Option<twoway_client::up::OnReady> = notify_ready.then(|| {
                    Box::new(|| {
                        let mut out = std::io::stdout();
                        let _ = writeln!(out, "ready");
                        let _ = out.flush();
                    }) as twoway_client::up::OnReady
                });
                twoway_client::up::up(config, on_ready).await
            }
            Command::Down { config } => cli::down(&config).await,
            Command::Status { json, config } => cli::status(&config, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("twoway: {e}");
    ExitCode::from(e.exit_code())
}
