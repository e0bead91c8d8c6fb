//! The signal that tells open streams the server is shutting down.

use tokio::sync::watch;

/// Starts a shutdown; dropping it without triggering leaves listeners waiting.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Cloned into every long-lived stream.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(sender), Shutdown(receiver))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown begins (at once if it already has).
    pub async fn triggered(&mut self) {
        // An error means the trigger is gone, which only happens once the server stopped.
        let _ = self.0.wait_for(|started| *started).await;
    }
}
