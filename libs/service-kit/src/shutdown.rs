//! Stopping a service: the signal (SIGTERM from Kubernetes, or Ctrl-C), and [`Shutdown`],
//! what a service's assembly is told: when to stop serving requests and when its consumers
//! stop fetching (the same moment for a service binary; in `eventctl dev` the consumers
//! instead drain the in-process bus once the gateway stopped).

use tokio::sync::watch;

/// Resolves when the process is asked to stop.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

/// When a running service stops its parts.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Servers stop accepting and finish the requests in flight when this turns true.
    pub serve: watch::Receiver<bool>,
    /// Consumers stop fetching, finish and ack what they hold when this turns true.
    pub consume: watch::Receiver<bool>,
}

impl Shutdown {
    /// Everything stops on the same signal.
    pub fn on(stop: watch::Receiver<bool>) -> Self {
        Shutdown { serve: stop.clone(), consume: stop }
    }

    /// A stop switch for a service binary: turns true on SIGTERM or Ctrl-C (or when the
    /// sender is used, e.g. after a fatal error).
    pub fn on_signal() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        let on_signal = tx.clone();
        tokio::spawn(async move {
            signal().await;
            let _ = on_signal.send(true);
        });
        (tx, Shutdown::on(rx))
    }
}

/// Resolves once `stop` turns true (never, if its sender is gone without doing so).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A receiver that turns true when `a` or `b` does.
pub fn either(a: watch::Receiver<bool>, b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow() || *b.borrow());
    tokio::spawn(async move {
        tokio::select! {
            () = stopped(a) => {}
            () = stopped(b) => {}
            () = tx.closed() => return,
        }
        let _ = tx.send(true);
    });
    rx
}
