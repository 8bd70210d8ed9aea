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
    if let Command::Up { target, .. } = &cli.command {
        if target.name.is_none() && target.config.is_none() {
            use clap::CommandFactory;
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "`up` needs a tunnel NAME (/etc/twoway/NAME.toml) or --config PATH",
                )
                .exit();
        }
    }
    twoway_common::logging::init(cli.log_format);
    if let Command::Up {
        target,
        detach: true,
        ..
    } = &cli.command
    {
        return match cli::detach(&target.path()) {
            Ok(code) => ExitCode::from(code),
            Err(e) => fail(&e),
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(source) => {
            return fail(&ClientError::Process {
                what: "cannot start the runtime: ",
                source,
            })
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up {
                target,
                notify_ready,
                ..
            } => {
                // Exit 5 without CAP_NET_ADMIN before any file is read.
                twoway_client::privilege::check()?;
                let config = ClientConfig::load(&target.path())?;
                let on_ready: Option<twoway_client::up::OnReady> = notify_ready.then(|| {
                    Box::new(|| {
                        let mut out = std::io::stdout();
                        let _ = writeln!(out, "ready");
                        let _ = out.flush();
                    }) as twoway_client::up::OnReady
                });
                twoway_client::up::up(config, on_ready).await
            }
            Command::Request { identity, out } => twoway_client::request::request(&identity, &out)
                .map(|r| {
                    println!("wrote {}", r.key.display());
                    println!("wrote {}", r.csr.display());
                    println!(
                        "send {} to the administrator (`twoway-server pki sign`); \
                         {} stays here: put the returned files next to it",
                        r.csr.display(),
                        r.key.display()
                    );
                }),
            Command::Down { target } => cli::down(&target.path()).await,
            Command::Status { json, target } => cli::status(&target.path(), json).await,
            Command::List {
                json,
                config_dir,
                run_dir,
            } => twoway_client::list::list(json, &config_dir, &run_dir).await,
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
