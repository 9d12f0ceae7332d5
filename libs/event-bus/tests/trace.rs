//! W3C trace context on the in-process bus: the `traceparent` a batch is published with comes
//! back on each delivery, and the consumer runtime handles the messages in a span naming its
//! trace id (what links a gateway request to the consumers' logs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_bus::consumer::{Consumer, ConsumerConfig, Handler, HandlerError, Outcome};
use event_bus::{Delivery, InProcessBus, OutMessage, Publisher, Subscriber, TraceParent};
use futures::future::BoxFuture;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn msg(i: usize) -> OutMessage {
    OutMessage { subject: "raw-event.t".into(), id: format!("m{i}"), payload: format!("p{i}").into() }
}

#[tokio::test]
async fn the_trace_context_comes_back_on_each_delivery() {
    let bus = InProcessBus::new(100, 1 << 20);
    let mut sub = bus.subscriber("c", "raw-event.>", Duration::from_secs(30));
    let trace = TraceParent::parse(TP);
    assert!(trace.is_some());
    assert!(bus.publish_batch_traced(vec![msg(1), msg(2)], trace).await.iter().all(Result::is_ok));
    assert!(bus.publish_batch(vec![msg(3)]).await.iter().all(Result::is_ok));
    let got = sub.fetch(10, Duration::from_millis(200)).await.unwrap_or_default();
    let traces: Vec<_> = got.iter().map(|d| d.trace).collect();
    assert_eq!(traces, vec![trace, trace, None]);
}

/// Log lines written while the test's subscriber is the default (this thread's).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

struct Logs(Arc<Mutex<usize>>);

impl Handler for Logs {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            tracing::info!(messages = batch.len(), "written");
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) += batch.len();
            Ok(Outcome::done())
        })
    }
}

// One thread: every task of the runtime sees the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn the_consumer_handles_traced_messages_in_a_span_naming_the_trace() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(captured.clone()).with_ansi(false).with_max_level(tracing::Level::INFO).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let bus = InProcessBus::new(100, 1 << 20);
    let mut spec = ConsumerConfig::named("traced").spec(vec!["raw-event.>".to_owned()]);
    spec.batch_wait = Duration::from_millis(10);
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), spec).await.expect("subscribe");
    assert!(bus.publish_batch_traced(vec![msg(1), msg(2)], TraceParent::parse(TP)).await.iter().all(Result::is_ok));
    let handled = Arc::new(Mutex::new(0usize));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(consumer.run(vec![Logs(handled.clone())], stop));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while *handled.lock().unwrap_or_else(|p| p.into_inner()) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not handled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(true).expect("stop");
    run.await.expect("run");
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let line = text.lines().find(|l| l.contains("written")).unwrap_or_else(|| panic!("no handler log: {text}"));
    assert!(line.contains("bus.handle") && line.contains("trace_ids=4bf92f3577b34da6a3ce929d0e0e4736"), "{line}");
}
