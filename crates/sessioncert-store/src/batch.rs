//! Batching of `check_request` for the shared stores: callers queue their mark, one
//! batcher task takes every queued mark (up to a limit) and has them decided in **one**
//! round trip (one Redis script, one PostgreSQL statement), then answers each caller
//! with its own outcome. The store decides the marks of a batch one by one, in queue
//! order, each atomically; batching changes the cost, never the rule. While a batch is
//! in flight the next one gathers, so batches grow with the load and cost nothing when
//! there is none (a lone mark is sent at once).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{RequestCheck, RequestMark, StoreError};

/// One answer per mark of a batch, in the batch's order; `Err` for the whole batch when
/// it could not be decided (nothing of it is known to have been applied).
pub(crate) type BatchAnswer = Result<Vec<Result<RequestCheck, StoreError>>, StoreError>;

struct Job {
    mark: RequestMark,
    reply: oneshot::Sender<Result<RequestCheck, StoreError>>,
}

/// The queue side of the batcher tasks; dropping it stops them once the queue is empty.
pub(crate) struct CheckBatcher {
    queue: mpsc::Sender<Job>,
}

impl CheckBatcher {
    /// Starts `tasks` batcher tasks on the current runtime, each deciding up to
    /// `max_batch` marks at a time with `decide`; at most `queue` marks wait (callers
    /// beyond wait for room).
    pub(crate) fn spawn<F, Fut>(tasks: usize, max_batch: usize, queue: usize, decide: F) -> Self
    where
        F: Fn(Vec<RequestMark>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = BatchAnswer> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(queue);
        let rx = Arc::new(Mutex::new(rx));
        let decide = Arc::new(decide);
        for _ in 0..tasks.max(1) {
            tokio::spawn(run(rx.clone(), decide.clone(), max_batch.max(1)));
        }
        CheckBatcher { queue: tx }
    }

    /// Queues `mark` and waits for its outcome. `stopped` is the error when the batcher
    /// is gone (the store is shutting down).
    pub(crate) async fn check(
        &self,
        mark: RequestMark,
        stopped: impl Fn() -> StoreError,
    ) -> Result<RequestCheck, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { mark, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run<F, Fut>(rx: Arc<Mutex<mpsc::Receiver<Job>>>, decide: Arc<F>, max_batch: usize)
where
    F: Fn(Vec<RequestMark>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BatchAnswer> + Send + 'static,
{
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let marks = jobs.iter().map(|j| j.mark).collect();
        let answers = decide(marks).await;
        match answers {
            Ok(answers) if answers.len() == jobs.len() => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    // A caller that stopped waiting is fine: its mark was decided anyway.
                    let _ = job.reply.send(answer);
                }
            }
            Ok(answers) => {
                let msg = format!(
                    "the store answered {} marks of a batch of {}",
                    answers.len(),
                    jobs.len()
                );
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Database(msg.clone())));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Database(msg.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessioncert_proto::SessionId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn mark(seq: u64) -> RequestMark {
        RequestMark {
            id: SessionId([1; 16]),
            seq,
            now_ms: 1,
            close: false,
        }
    }

    #[tokio::test]
    async fn marks_gather_while_a_batch_is_in_flight_and_each_caller_gets_its_own_answer() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::<Vec<u64>>::new()));
        let seen = batches.clone();
        let b = Arc::new(CheckBatcher::spawn(
            1,
            64,
            1024,
            move |marks: Vec<RequestMark>| {
                seen.lock()
                    .unwrap()
                    .push(marks.iter().map(|m| m.seq).collect());
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    Ok(marks
                        .iter()
                        .map(|m| {
                            Ok(RequestCheck::Accepted {
                                request_count: m.seq * 10,
                            })
                        })
                        .collect())
                }
            },
        ));
        let calls: Vec<_> = (0..20u64)
            .map(|seq| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.check(mark(seq), || StoreError::Database("x".into()))
                        .await
                })
            })
            .collect();
        for (seq, c) in calls.into_iter().enumerate() {
            assert_eq!(
                c.await.unwrap().unwrap(),
                RequestCheck::Accepted {
                    request_count: seq as u64 * 10
                }
            );
        }
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 20);
        assert!(batches.len() < 20, "marks were batched: {batches:?}");
    }

    #[tokio::test]
    async fn a_failed_or_short_batch_fails_every_caller_in_it() {
        let n = Arc::new(AtomicUsize::new(0));
        let count = n.clone();
        let b = CheckBatcher::spawn(1, 64, 16, move |_marks: Vec<RequestMark>| {
            let k = count.fetch_add(1, Ordering::SeqCst);
            async move {
                if k == 0 {
                    Err(StoreError::Database("down".into()))
                } else {
                    Ok(Vec::new())
                }
            }
        });
        let e = b
            .check(mark(1), || StoreError::Database("stopped".into()))
            .await;
        assert!(e.unwrap_err().to_string().contains("down"));
        let e = b
            .check(mark(2), || StoreError::Database("stopped".into()))
            .await;
        assert!(e.unwrap_err().to_string().contains("answered 0 marks"));
    }
}
