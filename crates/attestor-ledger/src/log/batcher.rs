//! Group commit: concurrent submitters hand their records to one writer thread, which
//! appends everything waiting as one batch (one transaction, one fsync, one checkpoint)
//! and answers each submitter with its own receipt. Throughput then grows with load
//! instead of being capped by one fsync per submission.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use thiserror::Error;
use tokio::sync::oneshot;

use super::sequencer::{Receipt, Sequencer, SequencerError, Submission};
use crate::store::StoreError;

/// Largest batch the writer appends at once.
pub const DEFAULT_MAX_BATCH: usize = 512;

/// Why a submission was not appended. Nothing was acknowledged for it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("the log writer has stopped")]
    Stopped,
    #[error("this replica is not the sequencer: submit to the one holding the lease")]
    NotSequencer,
    /// Shared because one failed append answers every submitter of its batch.
    #[error("the batch could not be appended: {0}")]
    Append(#[source] Arc<SequencerError>),
    /// The entry is durably in the log, but the checkpoint covering it could not be
    /// published; its receipt comes with the next checkpoint.
    #[error("appended, but not yet covered by a signed checkpoint: {0}")]
    Unpublished(#[source] Arc<SequencerError>),
}

type Job = (Submission, oneshot::Sender<Result<Receipt, BatchError>>);

/// Handle to the writer thread; dropping every handle stops it after the queue drains.
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the writer thread over `sequencer`.
    pub fn start(sequencer: Arc<Sequencer>, max_batch: usize) -> (Batcher, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel::<Job>();
        let writer = std::thread::spawn(move || {
            // Block for the first job, then take whatever else is already waiting.
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                while batch.len() < max_batch.max(1) {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (submissions, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                match sequencer.append(submissions) {
                    Ok(receipts) => {
                        for (reply, receipt) in replies.into_iter().zip(receipts) {
                            // A submitter that gave up no longer needs its receipt.
                            let _ = reply.send(Ok(receipt));
                        }
                    }
                    Err(SequencerError::Store(StoreError::NotSequencer)) => {
                        for reply in replies {
                            let _ = reply.send(Err(BatchError::NotSequencer));
                        }
                    }
                    Err(e @ SequencerError::Unpublished { .. }) => {
                        let cause = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(BatchError::Unpublished(cause.clone())));
                        }
                    }
                    Err(e) => {
                        let cause = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(BatchError::Append(cause.clone())));
                        }
                    }
                }
            }
        });
        (Batcher { jobs }, writer)
    }

    /// Queues a submission and waits until it is durably in the log.
    pub async fn submit(&self, submission: Submission) -> Result<Receipt, BatchError> {
        let (reply, receipt) = oneshot::channel();
        self.jobs
            .send((submission, reply))
            .map_err(|_| BatchError::Stopped)?;
        receipt.await.map_err(|_| BatchError::Stopped)?
    }
}

impl Clone for Batcher {
    fn clone(&self) -> Self {
        Batcher {
            jobs: self.jobs.clone(),
        }
    }
}
