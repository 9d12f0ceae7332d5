//! The lake writer assembled from its configuration on the bus it is given: the lake, the
//! events consumer ([`EventWriter`]), the quarantine consumer ([`QuarantineWriter`]), health
//! and metrics, and scheduled compaction. The binary runs it on NATS JetStream, `eventctl
//! dev` on the in-process bus, the same way.

use std::sync::Arc;
use std::time::Duration;

use event_bus::consumer::{Consumer, Report};
use event_bus::{Bus, BusError};
use event_lake::compact::CompactOptions;
use event_lake::{Lake, LakeError, WriteOptions};
use service_kit::config::{ConfigError, Validate};
use service_kit::shutdown::{Shutdown, stopped};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::LakeWriterConfig;
use crate::events::{EventWriter, WriterCounters, WriterStats};
use crate::quarantine::{QuarantineCounters, QuarantineWriter};

/// Bytes of quarantine records buffered at most before a file is written.
const QUARANTINE_MAX_BYTES: usize = 32 << 20;

/// Why the lake writer could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The lake could not be opened.
    #[error("opening the lake: {0}")]
    Lake(#[from] LakeError),
    /// A consumer could not be created.
    #[error("creating the bus consumers: {0}")]
    Bus(#[from] BusError),
}

/// What the lake writer did, once stopped.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LakeWriterReport {
    /// The events consumer (runtime counts).
    pub events: Report,
    /// The quarantine consumer (runtime counts).
    pub quarantine: Report,
    /// What the event writer wrote.
    pub writer: WriterStats,
    /// Quarantine records written (the gateway's rejected lines and dead letters).
    pub quarantined: u64,
    /// Of those, dead letters.
    pub dead_letters: u64,
}

/// The assembled lake writer, ready to run.
pub struct LakeWriterService {
    lake: Arc<Lake>,
    bus: Arc<dyn Bus>,
    events: Consumer,
    event_writers: Vec<EventWriter>,
    quarantine: Consumer,
    quarantine_writer: QuarantineWriter,
    counters: Arc<WriterCounters>,
    quarantine_counters: Arc<QuarantineCounters>,
    compact_every: Option<Duration>,
}

/// A running lake writer: its two consumers and its server, awaited separately (`eventctl
/// dev` waits for the events consumer to drain before it seals the bus, which ends the
/// quarantine consumer).
pub struct Running {
    /// The events consumer: ends when `consume` turns true, or once a closing bus is drained.
    pub events: JoinHandle<Report>,
    /// The quarantine consumer: as the events one (on the in-process bus, since it takes dead
    /// letters, once the bus is sealed).
    pub quarantine: JoinHandle<Report>,
    /// Health and metrics (when given a listener): ends on `serve`.
    pub server: JoinHandle<std::io::Result<()>>,
    /// What it writes (live).
    pub counters: LakeWriterCounters,
}

/// The live counters of a running lake writer.
#[derive(Debug, Clone)]
pub struct LakeWriterCounters {
    /// The event writer's.
    pub writer: Arc<WriterCounters>,
    /// The quarantine writer's.
    pub quarantine: Arc<QuarantineCounters>,
}

impl LakeWriterCounters {
    /// The report, with the consumers' runtime counts (once they ended).
    pub fn report(&self, events: Report, quarantine: Report) -> LakeWriterReport {
        use std::sync::atomic::Ordering::Relaxed;
        LakeWriterReport {
            events,
            quarantine,
            writer: self.writer.stats(),
            quarantined: self.quarantine.written.load(Relaxed),
            dead_letters: self.quarantine.dead_letters.load(Relaxed),
        }
    }
}

impl LakeWriterService {
    /// Opens the lake and creates both consumers on `bus` (messages are kept for them from
    /// now on).
    pub async fn build(config: &LakeWriterConfig, bus: Arc<dyn Bus>) -> Result<LakeWriterService, BuildError> {
        config.validate()?;
        let lake = Arc::new(Lake::open(&config.lake, WriteOptions::default())?);
        let events = Consumer::subscribe(bus.clone(), config.events_spec()).await?;
        let quarantine = Consumer::subscribe(bus.clone(), config.quarantine_spec()).await?;
        let counters = Arc::new(WriterCounters::default());
        let quarantine_counters = Arc::new(QuarantineCounters::default());
        let max_age = Duration::from_secs(config.max_age_secs);
        let workers = config.events.concurrency.max(1);
        let event_writers =
            (0..workers)
                .map(|_| EventWriter::new(lake.clone(), &config.events.durable, config.limits(), config.memory_bytes / workers, max_age, counters.clone()))
                .collect();
        let quarantine_writer = QuarantineWriter::new(
            lake.clone(),
            Duration::from_secs(config.quarantine_max_age_secs),
            config.quarantine_max_records,
            QUARANTINE_MAX_BYTES,
            quarantine_counters.clone(),
        );
        let compact_every = (config.compact_every_secs > 0).then(|| Duration::from_secs(config.compact_every_secs));
        Ok(LakeWriterService { lake, bus, events, event_writers, quarantine, quarantine_writer, counters, quarantine_counters, compact_every })
    }

    /// The event writer's live counters.
    pub fn counters(&self) -> Arc<WriterCounters> {
        self.counters.clone()
    }

    /// The lake it writes.
    pub fn lake(&self) -> Arc<Lake> {
        self.lake.clone()
    }

    /// Starts both consumers, and serves `/healthz`, `/readyz` (the bus answers) and
    /// `/metrics` on `listener` (if any) until `shutdown.serve`.
    pub fn start(self, listener: Option<TcpListener>, shutdown: Shutdown) -> Running {
        let LakeWriterService { lake, bus, events, event_writers, quarantine, quarantine_writer, counters, quarantine_counters, compact_every } =
            self;
        let events = tokio::spawn(events.run(event_writers, shutdown.consume.clone()));
        let quarantine = tokio::spawn(quarantine.run(vec![quarantine_writer], shutdown.consume.clone()));
        if let Some(every) = compact_every {
            let stop = shutdown.serve.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stopped(stop.clone()) => return }
                    match lake.compact(&CompactOptions::default(), chrono::Utc::now().timestamp_millis()).await {
                        Ok(r) => tracing::info!(?r, "scheduled compaction"),
                        Err(e) => tracing::error!(error = %e, "scheduled compaction failed"),
                    }
                }
            });
        }
        let server = tokio::spawn(async move {
            let Some(listener) = listener else { return Ok(()) };
            let ready: service_kit::health::ReadinessCheck = Arc::new(move || {
                let bus = bus.clone();
                Box::pin(async move { if bus.is_ready().await { Ok(()) } else { Err("the bus does not answer".into()) } })
            });
            service_kit::serve::http(listener, service_kit::health::routes(ready), shutdown.serve).await
        });
        Running { events, quarantine, server, counters: LakeWriterCounters { writer: counters, quarantine: quarantine_counters } }
    }

    /// Runs until `shutdown` (consumers stop on `consume`, or once a closing bus is drained)
    /// and returns what it did.
    pub async fn run(self, listener: Option<TcpListener>, shutdown: Shutdown) -> std::io::Result<LakeWriterReport> {
        self.start(listener, shutdown).join().await
    }
}

impl Running {
    /// Waits for both consumers and the server.
    pub async fn join(self) -> std::io::Result<LakeWriterReport> {
        let events = self.events.await.map_err(std::io::Error::other)?;
        let quarantine = self.quarantine.await.map_err(std::io::Error::other)?;
        let report = self.counters.report(events, quarantine);
        self.server.await.map_err(std::io::Error::other)??;
        Ok(report)
    }
}
