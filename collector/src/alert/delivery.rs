//! Delivery: one task per receiver takes the receiver's oldest pending notification from the
//! outbox, within the receiver's rate limit, and delivers it; a failure worth a retry is
//! tried again after a backoff (or the receiver's Retry-After) until the notification
//! expires; a permanent refusal marks it failed. Notifications of one receiver go out in the
//! order they were queued.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::watch;

use super::outbox::{Row, Status};
use super::receiver::{Delivery, DeliveryError};
use super::{Alerts, ReceiverSlot};

/// How often an idle receiver looks at the outbox when nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The wait before attempt `attempt + 1` after `attempt` failures: `initial` doubled per
/// failure up to `max`, then spread by `jitter` (0 to 1) over 75 % to 125 %, never above
/// `max`, so that receivers coming back are not hit by every collector at once.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << doublings).min(max);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0)).min(max)
}

fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// At most `per_minute` sends in any 60 seconds.
struct RateLimit {
    per_minute: usize,
    sent: VecDeque<Instant>,
}

impl RateLimit {
    /// How long to wait before the next send (zero: go).
    fn wait(&mut self, now: Instant) -> Duration {
        let window = Duration::from_secs(60);
        while self
            .sent
            .front()
            .is_some_and(|sent| now.duration_since(*sent) >= window)
        {
            self.sent.pop_front();
        }
        match self.sent.front() {
            Some(oldest) if self.sent.len() >= self.per_minute => {
                window.saturating_sub(now.duration_since(*oldest))
            }
            _ => Duration::ZERO,
        }
    }
}

async fn blocking<T: Send + 'static>(
    alerts: &Arc<Alerts>,
    work: impl FnOnce(&Alerts) -> T + Send + 'static,
) -> Option<T> {
    let alerts = Arc::clone(alerts);
    match tokio::task::spawn_blocking(move || work(&alerts)).await {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(%error, "An outbox task failed.");
            None
        }
    }
}

/// Delivers the notifications of receiver `index` until `stop` turns true. An attempt in
/// progress is finished (and recorded) before stopping.
pub async fn run(alerts: Arc<Alerts>, index: usize, mut stop: watch::Receiver<bool>) {
    let Some(slot) = alerts.receivers.get(index) else {
        return;
    };
    let name = slot.name.clone();
    let wake = Arc::clone(&slot.wake);
    let mut limit = RateLimit {
        per_minute: slot.messages_per_minute.max(1) as usize,
        sent: VecDeque::new(),
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let receiver = name.clone();
        let next = blocking(&alerts, move |alerts| alerts.outbox.next_pending(&receiver)).await;
        let wait = match next {
            None => IDLE_POLL,
            Some(Err(error)) => {
                tracing::error!(receiver = %name, %error, "Cannot read the alert outbox.");
                IDLE_POLL
            }
            Some(Ok(None)) => IDLE_POLL,
            Some(Ok(Some(row))) => step(&alerts, &alerts.receivers[index], row, &mut limit).await,
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

/// Handles the receiver's oldest pending notification; returns how long to wait before the
/// next step.
async fn step(
    alerts: &Arc<Alerts>,
    slot: &ReceiverSlot,
    row: Row,
    limit: &mut RateLimit,
) -> Duration {
    let now = OffsetDateTime::now_utc();
    let expire_after = time::Duration::seconds(
        i64::try_from(alerts.config.expire_after_seconds).unwrap_or(i64::MAX),
    );
    if now >= row.created_at + expire_after {
        tracing::warn!(receiver = %slot.name, id = row.id, attempts = row.attempts, "A notification expired before it could be delivered.");
        let id = row.id;
        blocking(alerts, move |alerts| {
            alerts
                .outbox
                .finish(id, Status::Expired, Some("not delivered in time"), now)
        })
        .await;
        count(alerts, &slot.name, "expired");
        return Duration::ZERO;
    }
    if row.next_attempt_at > now {
        let wait = (row.next_attempt_at - now).unsigned_abs();
        return wait.min(IDLE_POLL);
    }
    let wait = limit.wait(Instant::now());
    if !wait.is_zero() {
        return wait;
    }
    limit.sent.push_back(Instant::now());
    let attempts = row.attempts.saturating_add(1);
    let delivery = Delivery {
        notification: &row.notification,
        idempotency_key: &row.idempotency_key,
        now,
    };
    let timeout = Duration::from_secs(alerts.config.request_timeout_seconds);
    let result = match tokio::time::timeout(timeout, slot.receiver.deliver(delivery)).await {
        Ok(result) => result,
        Err(_) => Err(DeliveryError::retryable(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    };
    let done = OffsetDateTime::now_utc();
    let id = row.id;
    match result {
        Ok(()) => {
            blocking(alerts, move |alerts| {
                alerts.outbox.delivered(id, attempts, done)
            })
            .await;
            count(alerts, &slot.name, "delivered");
            alerts
                .metrics
                .alert_delivery_latency
                .with_label_values(&[slot.name.as_str()])
                .observe((done - row.created_at).as_seconds_f64().max(0.0));
            tracing::info!(receiver = %slot.name, id, attempts, group = %row.group_key, "Delivered a notification.");
        }
        Err(DeliveryError::Retryable {
            reason,
            retry_after,
        }) => {
            let initial = Duration::from_secs(alerts.config.retry_initial_seconds);
            let max = Duration::from_secs(alerts.config.retry_max_seconds);
            let delay =
                backoff(attempts, initial, max, jitter()).max(retry_after.unwrap_or_default());
            let next = done + delay;
            tracing::warn!(receiver = %slot.name, id, attempts, error = %reason, retry_in_seconds = delay.as_secs_f64(), "Could not deliver a notification; will retry.");
            blocking(alerts, move |alerts| {
                alerts.outbox.retry_later(id, attempts, &reason, next, done)
            })
            .await;
            count(alerts, &slot.name, "retried");
        }
        Err(DeliveryError::Permanent { reason }) => {
            tracing::error!(receiver = %slot.name, id, attempts, error = %reason, "A receiver refused a notification for good; it is marked failed.");
            blocking(alerts, move |alerts| {
                alerts
                    .outbox
                    .retry_later(id, attempts, &reason, done, done)?;
                alerts.outbox.finish(id, Status::Failed, None, done)
            })
            .await;
            count(alerts, &slot.name, "failed");
        }
    }
    Duration::ZERO
}

fn count(alerts: &Alerts, receiver: &str, result: &str) {
    alerts
        .metrics
        .alert_notifications
        .with_label_values(&[receiver, result])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attempt: u32, jitter: f64, expected_seconds: f64) {
        let got = backoff(
            attempt,
            Duration::from_secs(2),
            Duration::from_secs(300),
            jitter,
        );
        assert_eq!(
            got.as_secs_f64(),
            expected_seconds,
            "attempt {attempt} jitter {jitter}"
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        check(1, 0.5, 2.0);
        check(2, 0.5, 4.0);
        check(3, 0.0, 6.0);
        check(3, 1.0, 10.0);
        check(8, 0.5, 256.0);
        check(9, 0.5, 300.0);
        check(9, 1.0, 300.0);
        check(u32::MAX, 0.0, 225.0);
    }

    #[test]
    fn the_rate_limit_allows_n_a_minute() {
        let start = Instant::now();
        let mut limit = RateLimit {
            per_minute: 2,
            sent: VecDeque::new(),
        };
        assert_eq!(limit.wait(start), Duration::ZERO);
        limit.sent.push_back(start);
        limit.sent.push_back(start + Duration::from_secs(10));
        assert_eq!(
            limit.wait(start + Duration::from_secs(20)),
            Duration::from_secs(40)
        );
        assert_eq!(limit.wait(start + Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(limit.sent.len(), 1);
    }
}
