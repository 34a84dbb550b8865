//! kafka-workload: produces and consumes Kafka messages as a test and load workload, a drop-in for
//! kafka-test-app's `client.py` with measurement and a loss/duplicate/order audit.
//!
//! [`run`] takes resolved [`config::Settings`] and a shutdown token and returns the run's
//! [`Outcome`]; `main.rs` only parses, sets up logging and maps the outcome to an exit code.
//! Data flows one way: flags → settings → client config → loops → tallies → result → printers.

pub mod cli;
pub mod config;
pub mod error;
pub mod kafka;
pub mod logging;
pub mod report;
pub mod shutdown;
pub mod sidecar;
pub mod sink;
pub mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::error::Failure;
use crate::kafka::cluster::Connection;
use crate::kafka::consumer::{self, ConsumerJob, OwnRun};
use crate::kafka::producer::{self, ProducerJob};
use crate::report::result::{self, RunResult};
use crate::report::stats::{ConsumerShared, ProducerShared};
use crate::report::summary;
use crate::sink::mongo::Mongo;
use crate::sink::MongoResult;

/// What a run ended with: its result (when it got far enough to have one) and its status.
pub struct Outcome {
    /// The measured result; `None` when the run failed before any work.
    pub result: Option<RunResult>,
    /// `Ok` or the error that decides the exit code.
    pub status: anyhow::Result<()>,
}

/// How long the producer waits for this process's consumer to be assigned partitions before it
/// starts anyway.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// The run's result from the shared tallies as they stand (at the end, or mid-run for a
/// checkpoint: `running`, when a transactional producer's last transactions are in doubt);
/// MongoDB's counts are the caller's to add.
fn assemble(
    settings: &Settings,
    run_id: &str,
    mock_cluster: bool,
    producer_shared: Option<&Arc<ProducerShared>>,
    consumer_shared: Option<&Arc<ConsumerShared>>,
    running: bool,
) -> RunResult {
    let producer_result = producer_shared.map(|p| {
        let window = *p.window.lock().expect("poisoned");
        let mut r = result::producer_result(p.sent(), &p.snapshot(), &window, p.health.events());
        r.transactions = p
            .transactions()
            .map(|t| result::TxnResult::from_tally(&t, running));
        r
    });
    let expected = settings.consumer.expect.or_else(|| {
        // A transactional run's consumer is owed its committed messages only.
        (settings.consumer.stop_when_run_complete)
            .then(|| {
                producer_result.as_ref().map(|p| match &p.transactions {
                    Some(t) => t.committed_messages,
                    None => p.acked,
                })
            })
            .flatten()
    });
    let consumer_result = consumer_shared.map(|c| {
        let mut result = result::consumer_result(
            &c.snapshot(),
            expected,
            &settings.consumer.group_id,
            c.health.events(),
        );
        result.isolation = settings.consumer.isolation.as_str().into();
        match &producer_result {
            // The transactional producer's word decides what this run's consumer was owed.
            Some(p) if p.transactions.is_some() => {
                let t = p.transactions.as_ref().expect("checked");
                result
                    .audit
                    .apply_transactions(run_id, t, &result.isolation);
            }
            // This run's undelivered messages are the producer's to report, not losses.
            Some(p) => result.audit.excuse_failed(run_id, &p.failed_seqs),
            None => {}
        }
        // Beside its producer, the consumer stops once this run is complete: other runs on the
        // topic were read only part way, and are the fleet merge's to judge.
        if producer_result.is_some()
            && settings.consumer.stop_when_run_complete
            && settings.consumer.expect.is_none()
        {
            result.audit.judge_only(run_id);
        }
        result
    });
    RunResult {
        schema: result::SCHEMA.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        run_id: run_id.to_string(),
        topic: settings.topic.clone(),
        mock_cluster,
        producer: producer_result,
        consumer: consumer_result,
        settings: settings.describe(),
        ..Default::default()
    }
}

/// With `--json` and a consumer or a transactional producer: a function that writes the result
/// as it stands to the file. The consumer calls it right before each commit, so after a kill -9
/// the file covers every committed offset and the records a restarted consumer does not read
/// again are in it; the transactional producer calls it between transactions, so the file names
/// the transactions whose outcome it knew.
fn checkpoint_writer(
    settings: &Settings,
    run_id: &str,
    mock_cluster: bool,
    producer_shared: Option<&Arc<ProducerShared>>,
    consumer_shared: Option<&Arc<ConsumerShared>>,
) -> Option<consumer::Checkpoint> {
    let path = settings.output.json.clone()?;
    if consumer_shared.is_none() && settings.producer.transactions.is_none() {
        return None;
    }
    let (settings, run_id) = (settings.clone(), run_id.to_string());
    let (producer, consumer) = (producer_shared.cloned(), consumer_shared.cloned());
    let warned = std::sync::atomic::AtomicBool::new(false);
    Some(Arc::new(move || {
        let mut r = assemble(
            &settings,
            &run_id,
            mock_cluster,
            producer.as_ref(),
            consumer.as_ref(),
            true,
        );
        if let Some(c) = r.consumer.as_mut() {
            c.stop_reason
                .get_or_insert_with(|| "still running: a checkpoint".into());
        }
        let mut bytes = Vec::new();
        let written = summary::write_json(&mut bytes, &r)
            .and_then(|()| report::write_atomically(&path, &bytes));
        if let Err(e) = written {
            if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the checkpoint of the result");
            }
        }
    }))
}

/// Runs the workload until it is done or `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Outcome {
    settings.log_sources();
    let producer_shared = settings
        .mode
        .produces()
        .then(|| Arc::new(ProducerShared::default()));
    let consumer_shared = settings
        .mode
        .consumes()
        .then(|| Arc::new(ConsumerShared::default()));
    // Served from before the first broker contact (answering 503 until it succeeds) to the end.
    let serve_stop = CancellationToken::new();
    let _serve_guard = serve_stop.clone().drop_guard();
    let metrics_server = match settings.output.metrics_addr {
        None => None,
        Some(addr) => {
            let sources = sidecar::metrics::Sources {
                producer: producer_shared.clone(),
                consumer: consumer_shared.clone(),
                rates: Arc::default(),
            };
            match sidecar::server::Server::start(addr, sources, serve_stop.clone()).await {
                Ok(server) => Some(server),
                Err(e) => {
                    return Outcome {
                        result: None,
                        status: Err(e.into()),
                    }
                }
            }
        }
    };
    let conn = match Connection::open(&settings).await {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                result: None,
                status: Err(e),
            }
        }
    };
    if settings.mode.produces() {
        if let Err(e) = conn.create_topic(&settings).await {
            return Outcome {
                result: None,
                status: Err(e),
            };
        }
    }
    let mongo = match &settings.mongo {
        None => None,
        Some(m) => match Mongo::connect(m).await {
            Ok(mongo) => Some(mongo),
            Err(e) => {
                return Outcome {
                    result: None,
                    status: Err(e),
                }
            }
        },
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let anchor = Instant::now();
    let anchor_epoch_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // The time series count from the same anchor as the loops' clocks.
    let series = report::stats::SeriesTally::new(
        settings.output.series_interval,
        (anchor_epoch_secs * 1e6) as u64,
    );
    if let Some(p) = &producer_shared {
        p.tally.lock().expect("poisoned").series = series.clone();
    }
    if let Some(c) = &consumer_shared {
        c.tally.lock().expect("poisoned").series = series;
    }
    let work = shutdown.child_token();

    // A writer that gives up cancels `work`, which stops both loops.
    let log_limit = settings.output.log_messages;
    let (producer_feed, producer_writer) = match (&mongo, &producer_shared) {
        (Some(m), Some(_)) => {
            let (feed, writer) = m.producer_writer(log_limit, work.clone());
            (Some(feed), Some(writer))
        }
        _ => (None, None),
    };
    let (consumer_feed, consumer_writer) = match (&mongo, &consumer_shared) {
        (Some(m), Some(_)) => {
            let (feed, writer) = m.consumer_writer(
                &settings.consumer.group_id,
                &settings.origin,
                log_limit,
                work.clone(),
            );
            (Some(feed), Some(writer))
        }
        _ => (None, None),
    };

    let progress_stop = CancellationToken::new();
    let password_watch = match (&settings.password_source_file, &settings.sasl) {
        (Some(file), Some(sasl)) => {
            let watch = Arc::new(config::PasswordWatch::new(
                &sasl.username,
                sasl.password.clone(),
            ));
            let probe_settings = settings.clone();
            let probe: config::Probe =
                Arc::new(move |id| kafka::cluster::try_identity(&probe_settings, id));
            tokio::spawn(watch.clone().watch(
                file.clone(),
                settings.username_from_file,
                Duration::from_secs(2),
                probe,
                progress_stop.clone(),
            ));
            Some(watch)
        }
        _ => None,
    };
    let progress = tokio::spawn(report::progress::report(
        report::progress::Plan::from_settings(&settings),
        producer_shared.clone(),
        consumer_shared.clone(),
        progress_stop.clone(),
    ));

    let consumer_task = consumer_shared.as_ref().map(|shared| {
        let job = ConsumerJob {
            settings: settings.clone(),
            bootstrap: conn.bootstrap.clone(),
            anchor,
            anchor_epoch_secs,
            shared: shared.clone(),
            cancel: work.clone(),
            password: password_watch.clone(),
            own: producer_shared.as_ref().map(|p| OwnRun {
                run_id: run_id.clone(),
                producer: p.clone(),
            }),
            mongo: consumer_feed,
            checkpoint: checkpoint_writer(
                &settings,
                &run_id,
                conn.is_mock(),
                producer_shared.as_ref(),
                Some(shared),
            ),
        };
        let work = work.clone();
        tokio::task::spawn_blocking(move || {
            let r = consumer::run(job);
            if r.is_err() {
                work.cancel();
            }
            r
        })
    });

    if let Some(server) = &metrics_server {
        server.set_ready();
    }

    let producer_task = match &producer_shared {
        None => None,
        Some(shared) => {
            if let Some(c) = &consumer_shared {
                // Alongside a consumer, start once it has partitions so end-to-end latency
                // measures delivery, not the group join.
                let waited = Instant::now();
                while !c.assigned.load(std::sync::atomic::Ordering::SeqCst)
                    && waited.elapsed() < JOIN_WAIT
                    && !work.is_cancelled()
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let job = ProducerJob {
                settings: settings.clone(),
                bootstrap: conn.bootstrap.clone(),
                run_id: run_id.clone(),
                anchor,
                shared: shared.clone(),
                cancel: work.clone(),
                password: password_watch.clone(),
                mongo: producer_feed,
                checkpoint: checkpoint_writer(
                    &settings,
                    &run_id,
                    conn.is_mock(),
                    Some(shared),
                    consumer_shared.as_ref(),
                ),
            };
            let work = work.clone();
            Some(tokio::task::spawn_blocking(move || {
                let r = producer::run(job);
                // A failure stops the consumer too, except undelivered messages: the run went
                // to its end, and the consumer reads what was acknowledged before it stops.
                let undelivered = r.as_ref().err().is_some_and(|e| {
                    matches!(e.downcast_ref::<Failure>(), Some(Failure::Undelivered(_)))
                });
                if r.is_err() && !undelivered {
                    work.cancel();
                }
                r
            }))
        }
    };

    let mut status: anyhow::Result<()> = Ok(());
    if let Some(task) = producer_task {
        let r = task
            .await
            .context("producer thread panicked")
            .and_then(|r| r);
        if let Err(e) = r {
            status = Err(e.context("producer"));
        }
    }
    if let Some(task) = consumer_task {
        let r = task
            .await
            .context("consumer thread panicked")
            .and_then(|r| r);
        if let (Err(e), true) = (r, status.is_ok()) {
            status = Err(e.context("consumer"));
        }
    }
    // The loops have closed their feeds; the writers have stored everything or given up.
    let mut mongo_result = mongo.as_ref().map(|m| MongoResult {
        database: m.database().to_string(),
        ..Default::default()
    });
    if let Some(m) = mongo_result.as_mut() {
        let writers = [
            (&mut m.producer, producer_writer),
            (&mut m.consumer, consumer_writer),
        ];
        for (slot, writer) in writers {
            let Some(writer) = writer else { continue };
            let (counts, stored) = writer.finish().await;
            *slot = Some(counts);
            if let (Err(e), true) = (stored, status.is_ok()) {
                status = Err(e);
            }
        }
    }
    progress_stop.cancel();
    let _ = progress.await;

    let mut result = assemble(
        &settings,
        &run_id,
        conn.is_mock(),
        producer_shared.as_ref(),
        consumer_shared.as_ref(),
        false,
    );
    result.mongo = mongo_result;
    if status.is_ok() {
        if let Some(c) = &result.consumer {
            // Loss is a failure only when we know what should have arrived, and the consumer was
            // not stopped before it could read it all (a signal ends the run with exit 0).
            if c.audit.verdict == "aborted_read" {
                status = Err(Failure::Audit(format!(
                    "{} records of aborted transactions were read under read_committed",
                    c.audit.aborted_read
                ))
                .into());
            } else if c.audit.lost > 0 && shutdown.is_cancelled() {
                warn!(
                    lost = c.audit.lost,
                    "stopped by a signal before the audit completed: unread records count as missing"
                );
            } else if c.audit.lost > 0 && c.audit.expected.is_some() {
                status = Err(Failure::Audit(format!(
                    "{} of {} expected messages did not arrive",
                    c.audit.lost,
                    c.audit.expected.unwrap_or(0)
                ))
                .into());
            } else if c.audit.lost > 0 {
                warn!(
                    lost = c.audit.lost,
                    "gaps in the sequence numbers: messages were lost"
                );
            }
        }
    }
    if shutdown.is_cancelled() {
        info!("stopped by signal");
    }
    Outcome {
        result: Some(result),
        status,
    }
}
