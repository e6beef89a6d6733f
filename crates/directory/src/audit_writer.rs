//! [`AuditWriter`]: the non-blocking way to record audit events from the login path.
//!
//! Ownership (mini-redis style):
//! - Every `AuditWriter` clone holds a `Sender` of one bounded channel
//!   ([`AUDIT_QUEUE_CAPACITY`] messages) and shares the `dropped` counter.
//! - ONE background task, spawned by [`AuditWriter::spawn`], owns the `Receiver` and a
//!   clone of the [`Directory`]. It batches events (up to [`AUDIT_BATCH_MAX`] or every
//!   [`AUDIT_BATCH_INTERVAL`], whichever comes first) into
//!   [`Directory::insert_audit_events`], retrying a failed batch with backoff.
//! - The task ends when the last `AuditWriter` is dropped (the channel closes; it writes
//!   what it still holds first), or when [`AuditWriter::shutdown`] asks it to drain and
//!   stop. Nobody else holds the receiver, so no task outlives its writers.
//!
//! `record` never waits: when the queue is full the event is dropped, counted in
//! [`AuditWriter::dropped`] and logged. Losing an audit event under overload is preferred
//! to slowing every login down.

use crate::{AuditEvent, Directory};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Messages the queue holds before `record` starts dropping.
pub const AUDIT_QUEUE_CAPACITY: usize = 8192;
/// Largest batch written in one transaction.
pub const AUDIT_BATCH_MAX: usize = 256;
/// Longest time an event waits in a partial batch.
pub const AUDIT_BATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts per batch before it is given up (and its events counted as dropped).
const WRITE_ATTEMPTS: u32 = 4;
/// First retry delay; doubled on each retry.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(50);

enum Message {
    Event(Box<AuditEvent>),
    /// Write everything received so far, then answer.
    Flush(oneshot::Sender<()>),
    /// Stop accepting, write everything queued, answer, end the task.
    Shutdown(oneshot::Sender<()>),
}

/// Handle for recording audit events. Cheap to clone; see the module docs for who owns
/// the background task.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    /// Sending half of the queue; the background task holds the only receiver.
    tx: mpsc::Sender<Message>,
    /// Events lost: queue full, writer stopped, or a batch that failed every retry.
    /// Shared by every clone and by the task.
    dropped: Arc<AtomicU64>,
}

impl AuditWriter {
    /// Starts the background writer task on the current Tokio runtime (must be called
    /// from within one) and returns the first handle.
    pub fn spawn(dir: Directory) -> AuditWriter {
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(dir, rx, dropped.clone()));
        AuditWriter { tx, dropped }
    }

    /// Queues an event. Never waits: if the queue is full (or the writer has stopped) the
    /// event is dropped, counted and logged.
    pub fn record(&self, event: AuditEvent) {
        if let Err(e) = self.tx.try_send(Message::Event(Box::new(event))) {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let (reason, event) = match e {
                mpsc::error::TrySendError::Full(Message::Event(ev)) => ("queue full", Some(ev)),
                mpsc::error::TrySendError::Closed(Message::Event(ev)) => {
                    ("writer stopped", Some(ev))
                }
                _ => ("unexpected message", None),
            };
            tracing::warn!(
                reason,
                dropped_total = total,
                event_id = event.as_ref().map(|e| e.id.as_str()),
                kind = event.as_ref().map(|e| e.kind.as_str()),
                "audit event dropped"
            );
        }
    }

    /// Number of events lost so far (queue full, writer stopped, or write failures).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Returns once every event recorded (by any clone) before this call has been written
    /// (or given up after retries). Returns at once if the writer has stopped.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Message::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Drains the queue, writes everything, and stops the task. Other clones' later
    /// `record` calls are dropped (and counted).
    pub async fn shutdown(self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Message::Shutdown(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// The background task: owns the receiver, batches and writes.
async fn run(dir: Directory, mut rx: mpsc::Receiver<Message>, dropped: Arc<AtomicU64>) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(AUDIT_BATCH_MAX);
    // When the oldest event of the current batch must be written at the latest.
    let mut deadline = Instant::now();
    loop {
        let message = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(message) => message,
                Err(_elapsed) => {
                    write(&dir, &mut batch, &dropped).await;
                    continue;
                }
            }
        };
        match message {
            Some(Message::Event(event)) => {
                if batch.is_empty() {
                    deadline = Instant::now() + AUDIT_BATCH_INTERVAL;
                }
                batch.push(*event);
                if batch.len() >= AUDIT_BATCH_MAX {
                    write(&dir, &mut batch, &dropped).await;
                }
            }
            Some(Message::Flush(ack)) => {
                write(&dir, &mut batch, &dropped).await;
                let _ = ack.send(());
            }
            Some(Message::Shutdown(ack)) => {
                // No new messages; what is already queued is still delivered by recv.
                rx.close();
                let mut acks = vec![ack];
                while let Some(message) = rx.recv().await {
                    match message {
                        Message::Event(event) => {
                            batch.push(*event);
                            if batch.len() >= AUDIT_BATCH_MAX {
                                write(&dir, &mut batch, &dropped).await;
                            }
                        }
                        Message::Flush(ack) | Message::Shutdown(ack) => acks.push(ack),
                    }
                }
                write(&dir, &mut batch, &dropped).await;
                for ack in acks {
                    let _ = ack.send(());
                }
                tracing::debug!("audit writer shut down");
                return;
            }
            None => {
                // Every AuditWriter is gone: write what is left and end.
                write(&dir, &mut batch, &dropped).await;
                return;
            }
        }
    }
}

/// Writes and empties `batch`, retrying with doubling delays; gives up (counting the
/// events as dropped) after [`WRITE_ATTEMPTS`].
async fn write(dir: &Directory, batch: &mut Vec<AuditEvent>, dropped: &AtomicU64) {
    if batch.is_empty() {
        return;
    }
    let mut delay = RETRY_BASE_DELAY;
    for attempt in 1..=WRITE_ATTEMPTS {
        match dir.insert_audit_events(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(error) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(%error, attempt, events = batch.len(), "audit batch write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                let lost = batch.len() as u64;
                let total = dropped.fetch_add(lost, Ordering::Relaxed) + lost;
                tracing::error!(%error, events = lost, dropped_total = total, "audit batch given up after retries");
            }
        }
    }
    batch.clear();
}
