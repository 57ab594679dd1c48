//! The one-reply channel a job carries back to its caller: a blocking thread waits on it with a
//! deadline, an async caller (a policy's model call on the server's worker thread) awaits it.
//! Senders may be cloned (a pipelined worker keeps a batch's senders to fail them if the batch
//! is lost); the first reply wins, and the receiver learns when every sender is gone unsent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::Reply;

/// Why no reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("no reply before the deadline")]
    Timeout,
    #[error("the model's worker dropped the job without a reply")]
    Disconnected,
}

struct State {
    reply: Option<Reply>,
    /// A reply was sent (and perhaps taken already).
    sent: bool,
    senders: usize,
    waker: Option<Waker>,
    /// Threads blocked in `recv_deadline`: a reply wakes the condition variable only when there
    /// are some (each wake is a system call, and a batch of 64 sends 64 replies).
    waiting: usize,
}

struct Slot {
    state: Mutex<State>,
    ready: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // a panic while holding this lock leaves the state whole (every write is one assignment)
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self, mut s: MutexGuard<'_, State>) {
        let waker = s.waker.take();
        let waiting = s.waiting > 0;
        drop(s);
        if waiting {
            self.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Where a worker sends a job's reply.
pub(crate) struct ReplySender(Arc<Slot>);

/// Where the caller gets it.
pub struct ReplyReceiver(Arc<Slot>);

/// A new one-reply channel.
pub(crate) fn channel() -> (ReplySender, ReplyReceiver) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State { reply: None, sent: false, senders: 1, waker: None, waiting: 0 }),
        ready: Condvar::new(),
    });
    (ReplySender(slot.clone()), ReplyReceiver(slot))
}

impl ReplySender {
    /// Delivers the reply; a second one is handed back (the job was already answered).
    pub(crate) fn send(&self, reply: Reply) -> Result<(), Reply> {
        let mut s = self.0.lock();
        if s.sent {
            return Err(reply);
        }
        s.reply = Some(reply);
        s.sent = true;
        self.0.wake(s);
        Ok(())
    }
}

impl Clone for ReplySender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        ReplySender(self.0.clone())
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.senders -= 1;
        if s.senders == 0 && !s.sent {
            self.0.wake(s);
        }
    }
}

impl ReplyReceiver {
    /// Blocks this thread until the reply comes, every sender is gone, or `deadline` passes.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Reply, RecvError> {
        let mut s = self.0.lock();
        loop {
            if let Some(r) = s.reply.take() {
                return Ok(r);
            }
            if s.senders == 0 {
                return Err(RecvError::Disconnected);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            // counted under the lock that a sender takes to reply: it sees this thread waiting
            s.waiting += 1;
            s = self.0.ready.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
            s.waiting -= 1;
        }
    }
}

/// Awaiting the receiver: the reply, or `Disconnected`. A deadline is the caller's (a timer
/// around this future); dropping it unanswered is fine.
impl Future for ReplyReceiver {
    type Output = Result<Reply, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock();
        if let Some(r) = s.reply.take() {
            return Poll::Ready(Ok(r));
        }
        if s.senders == 0 {
            return Poll::Ready(Err(RecvError::Disconnected));
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::Output;

    fn reply(score: f32) -> Reply {
        Reply {
            output: Ok(Output::Classification { score, top: Vec::new() }),
            compute: Duration::ZERO,
            queued: Duration::ZERO,
            batch: 1,
        }
    }

    #[test]
    fn the_first_reply_wins_and_a_blocked_receiver_wakes() {
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx2.send(reply(0.25)).expect("first");
        });
        let got = rx.recv_deadline(Instant::now() + Duration::from_secs(5)).expect("reply");
        assert_eq!(got.output, Ok(Output::Classification { score: 0.25, top: Vec::new() }));
        t.join().expect("thread");
        assert!(tx.send(reply(0.5)).is_err(), "a second reply is handed back");
    }

    #[test]
    fn every_sender_gone_unsent_is_disconnected_and_a_late_reply_times_out() {
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        drop(tx);
        assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_millis(10)).err(), Some(RecvError::Timeout));
        drop(tx2);
        assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_secs(5)).err(), Some(RecvError::Disconnected));
    }

    #[test]
    fn an_awaited_receiver_is_woken_by_the_reply_and_by_the_last_sender_leaving() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = tx.send(reply(0.75));
        });
        let got = rt.block_on(rx).expect("reply");
        assert_eq!(got.output, Ok(Output::Classification { score: 0.75, top: Vec::new() }));
        t.join().expect("thread");
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(tx);
        });
        assert_eq!(rt.block_on(rx).err(), Some(RecvError::Disconnected));
        t.join().expect("thread");
    }

    /// A reply sent while, just before or just after its receiver blocks always arrives, and a
    /// blocked receiver wakes when its last sender leaves unsent: the wake is skipped only when
    /// no thread waits.
    #[test]
    fn replies_racing_a_blocking_receiver_are_never_missed() {
        for k in 0..2000u32 {
            let (tx, rx) = channel();
            let t = std::thread::spawn(move || {
                for _ in 0..(k % 7) * 50 {
                    std::hint::spin_loop();
                }
                if k % 5 == 0 {
                    drop(tx);
                } else {
                    tx.send(reply(k as f32)).expect("send");
                }
            });
            let got = rx.recv_deadline(Instant::now() + Duration::from_secs(10));
            t.join().expect("thread");
            match got {
                Ok(r) => assert_eq!(r.output, Ok(Output::Classification { score: k as f32, top: Vec::new() })),
                Err(e) => assert!(k % 5 == 0 && e == RecvError::Disconnected, "{k}: {e}"),
            }
        }
    }
}
