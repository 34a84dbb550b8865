//! Shim: parse the command line, set up logging, build the runtime, run, print, pick the exit code.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use kafka_workload::{cli::Cli, config::Settings, error, logging, report, shutdown};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = logging::init(cli.log_file.as_deref()) {
        eprintln!("kafka-workload: error: {e:#}");
        return ExitCode::from(error::exit_code(&e));
    }
    if let Some(cli::Command::Merge { .. }) = &cli.command {
        eprintln!("kafka-workload: error: merge is not available yet");
        return ExitCode::from(error::EXIT_USAGE);
    }
    let settings = match Settings::resolve(&cli, &matches) {
        Ok(s) => s,
        Err(e) => {
            let e = anyhow::Error::new(e);
            eprintln!("kafka-workload: error: {e:#}");
            return ExitCode::from(error::exit_code(&e));
        }
    };
    let json_path = settings.output.json.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kafka-workload: error: cannot start the runtime: {e}");
            return ExitCode::from(error::EXIT_FAILURE);
        }
    };
    let outcome = runtime.block_on(async {
        let token = CancellationToken::new();
        shutdown::cancel_on_signals(token.clone());
        kafka_workload::run(settings, token).await
    });
    let mut status = outcome.status;
    if let Some(result) = &outcome.result {
        let mut out = std::io::stdout().lock();
        let _ = report::summary::write_text(&mut out, result);
        if let Some(path) = &json_path {
            let written = serde_json::to_vec_pretty(result)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| std::fs::write(path, bytes).map_err(anyhow::Error::from));
            if let Err(e) = written {
                eprintln!(
                    "kafka-workload: error: cannot write {}: {e}",
                    path.display()
                );
                if status.is_ok() {
                    status = Err(e);
                }
            }
        }
    }
    match status {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kafka-workload: error: {e:#}");
            ExitCode::from(error::exit_code(&e))
        }
    }
}

use kafka_workload::cli;
