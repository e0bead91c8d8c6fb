//! The signal that tells open streams the server is shutting down, and the tasks that serve
//! those streams, so that storage closes only after the last of them has ended.

use std::future::Future;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Starts a shutdown; dropping it without triggering leaves listeners waiting.
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
    tasks: TaskTracker,
}

/// Cloned into every long-lived stream.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
    tasks: TaskTracker,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    let tasks = TaskTracker::new();
    (
        ShutdownTrigger {
            sender,
            tasks: tasks.clone(),
        },
        Shutdown { receiver, tasks },
    )
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves once every task started with `Shutdown::spawn` has ended.
    pub async fn tasks_ended(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once shutdown begins (at once if it already has).
    pub async fn triggered(&mut self) {
        // An error means the trigger is gone, which only happens once the server stopped.
        let _ = self.receiver.wait_for(|started| *started).await;
    }

    /// Runs a stream's task, which shutdown waits for before closing storage.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }
}
