//! Shim: parse the command line, set up logging, build the runtime, run, print, pick the exit code.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use kafka_workload::cli::{self, Cli};
use kafka_workload::{config::Settings, error, logging, report, shutdown};
use tokio_util::sync::CancellationToken;

/// jemalloc also serves librdkafka's C allocations (Cargo.toml says why).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = logging::init(
        cli.log_file.as_deref(),
        logging::LogFormat::parse(&cli.log_format),
    ) {
        return exit(Err(e));
    }
    if let Some(cli::Command::Merge {
        files,
        json,
        asserts,
    }) = &cli.command
    {
        return exit(merge(files, json.as_deref(), asserts));
    }
    if let Some(cli::Command::Report { files, output }) = &cli.command {
        return exit(report::html::report_files(files, output));
    }
    let settings = match Settings::resolve(&cli, &matches) {
        Ok(s) => s,
        Err(e) => return exit(Err(e.into())),
    };
    // Thresholds are checked before any broker is contacted.
    let conditions = match report::assert::parse_all(&settings.output.asserts).and_then(|c| {
        report::assert::check_measurable(&c, settings.mode.produces(), settings.mode.consumes())
            .map(|()| c)
    }) {
        Ok(c) => c,
        Err(e) => return exit(Err(e.into())),
    };
    let json_path = settings.output.json.clone();
    let html_path = settings.output.html.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return exit(Err(
                anyhow::Error::new(e).context("cannot start the runtime")
            ))
        }
    };
    let outcome = runtime.block_on(async {
        let token = CancellationToken::new();
        shutdown::cancel_on_signals(token.clone());
        kafka_workload::run(settings, token).await
    });
    let mut status = outcome.status;
    if let Some(mut result) = outcome.result {
        let concluded = report::conclude(
            &mut std::io::stdout().lock(),
            &mut result,
            &conditions,
            json_path.as_deref(),
        );
        // A failed run keeps its own exit code; thresholds decide only when it succeeded.
        if let (Err(e), true) = (concluded, status.is_ok()) {
            status = Err(e);
        }
        if let Some(path) = &html_path {
            let input = report::html::Input {
                label: format!("run {}", result.run_id),
                result,
            };
            if let Err(e) = report::html::write(path, &[input], None) {
                if status.is_ok() {
                    status = Err(e);
                } else {
                    tracing::error!("{e:#}");
                }
            }
        }
    }
    exit(status)
}

/// `kafka-workload merge`: combine result files, print, write, check.
fn merge(
    files: &[std::path::PathBuf],
    json: Option<&std::path::Path>,
    asserts: &[String],
) -> anyhow::Result<()> {
    let conditions = report::assert::parse_all(asserts)?;
    let mut result = report::merge::merge_files(files)?;
    report::conclude(
        &mut std::io::stdout().lock(),
        &mut result,
        &conditions,
        json,
    )
}

/// Prints the error with its causes and picks the exit code.
fn exit(status: anyhow::Result<()>) -> ExitCode {
    match status {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kafka-workload: error: {e:#}");
            ExitCode::from(error::exit_code(&e))
        }
    }
}
