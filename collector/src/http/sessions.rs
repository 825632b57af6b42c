//! Sign-in sessions and the sign-in rate limit, both in memory and bounded.
//!
//! A session id is 256 random bits; only its SHA-256 is kept, with the user, the user's
//! generation at sign-in (a password reset raises it and so ends the session), the session's CSRF
//! token and its times. Sessions end at their maximum age, after their idle timeout, at sign-out,
//! or when the collector restarts. Past [`SESSIONS_MAX`] the least recently used is dropped.
//!
//! The rate limit counts failed sign-ins per account name and per client address over
//! [`FAILURE_WINDOW`]; past the limit the account or the address is locked for [`LOCKOUT`], during
//! which no password is even checked. Each table holds at most [`ATTEMPT_KEYS_MAX`] keys: when full,
//! the entries past their window go first, then the oldest.
//!
//! Never holds a session id or a password in the clear, and never logs one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::users::{encode, random_bytes, secret_hash, UserError, Users};

/// The user accounts with what signing in needs: the sessions, the rate limit, and the permits
/// of password hashing.
pub struct Accounts {
    pub users: Users,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    pub hashing: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Accounts {
    pub fn new(users: Users, web: &crate::config::WebConfig) -> Accounts {
        Accounts {
            users,
            sessions: Sessions::new(
                Duration::from_secs(web.session_max_age_seconds),
                Duration::from_secs(web.session_idle_timeout_seconds),
                SESSIONS_MAX,
            ),
            limiter: LoginLimiter::default(),
            hashing: std::sync::Arc::new(tokio::sync::Semaphore::new(
                super::login::HASHING_IN_FLIGHT_MAX,
            )),
        }
    }
}

/// Most sessions held at once (over all users).
pub const SESSIONS_MAX: usize = 10_000;
/// Failed sign-ins one account name may have within [`FAILURE_WINDOW`] before it is locked.
pub const ACCOUNT_FAILURES_MAX: u32 = 5;
/// Failed sign-ins one client address may have within [`FAILURE_WINDOW`] before it is locked.
pub const ADDRESS_FAILURES_MAX: u32 = 20;
/// The window failures are counted over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a lock lasts.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Most account names and most addresses the rate limit remembers (each).
pub const ATTEMPT_KEYS_MAX: usize = 10_000;

/// A session's user, as the session knows it (the user's row is checked on every request).
#[derive(Clone, Debug)]
pub struct SessionUser {
    pub user: String,
    pub generation: i64,
    pub csrf: String,
    /// The role of a user signed in with OpenID Connect (`oidc.rs`), who has no local account:
    /// the role the provider's claims gave at sign-in. `None`: a local account, whose row
    /// gives the role.
    pub external_role: Option<super::auth::Role>,
}

struct Session {
    user: SessionUser,
    created: Instant,
    last_seen: Instant,
}

pub struct Sessions {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    max_age: Duration,
    idle_timeout: Duration,
    capacity: usize,
}

impl Sessions {
    pub fn new(max_age: Duration, idle_timeout: Duration, capacity: usize) -> Sessions {
        Sessions {
            sessions: Mutex::new(HashMap::new()),
            max_age,
            idle_timeout,
            capacity: capacity.max(1),
        }
    }

    fn alive(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.created) < self.max_age
            && now.saturating_duration_since(session.last_seen) < self.idle_timeout
    }

    /// A new session for `user`: its id (for the cookie) and its CSRF token.
    pub fn create(
        &self,
        user: &str,
        generation: i64,
        now: Instant,
    ) -> Result<(String, SessionUser), UserError> {
        self.start(user, generation, None, now)
    }

    /// A new session for a user of the OpenID Connect provider, with the role it gave.
    pub fn create_external(
        &self,
        actor: &str,
        role: super::auth::Role,
        now: Instant,
    ) -> Result<(String, SessionUser), UserError> {
        self.start(actor, 0, Some(role), now)
    }

    fn start(
        &self,
        user: &str,
        generation: i64,
        external_role: Option<super::auth::Role>,
        now: Instant,
    ) -> Result<(String, SessionUser), UserError> {
        let id = encode(&random_bytes::<32>()?);
        let csrf = encode(&random_bytes::<32>()?);
        let session_user = SessionUser {
            user: user.to_string(),
            generation,
            csrf,
            external_role,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= self.capacity {
            sessions.retain(|_, session| self.alive(session, now));
        }
        if sessions.len() >= self.capacity {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, session)| session.last_seen)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            secret_hash(&id),
            Session {
                user: session_user.clone(),
                created: now,
                last_seen: now,
            },
        );
        Ok((id, session_user))
    }

    /// The session `id` names, if alive (and marks it used); an expired one is dropped.
    pub fn lookup(&self, id: &str, now: Instant) -> Option<SessionUser> {
        let key = secret_hash(id);
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let session = sessions.get_mut(&key)?;
        if !self.alive(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(session.user.clone())
    }

    /// Ends session `id`; whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&secret_hash(id))
            .is_some()
    }

    /// Ends every session of `user`.
    pub fn remove_user(&self, user: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, session| session.user.user != user);
    }

    /// Sessions held.
    pub fn count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

/// Failed attempts by key (an account name or an address), bounded.
struct Attempts {
    entries: HashMap<String, Failures>,
    limit: u32,
    capacity: usize,
}

impl Attempts {
    fn new(limit: u32, capacity: usize) -> Attempts {
        Attempts {
            entries: HashMap::new(),
            limit,
            capacity: capacity.max(1),
        }
    }

    /// How long `key` stays locked, if it is.
    fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        let until = self.entries.get(key)?.locked_until?;
        (until > now).then(|| until.saturating_duration_since(now))
    }

    fn fail(&mut self, key: &str, now: Instant) {
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            let stale = |failures: &Failures| {
                now.saturating_duration_since(failures.first) >= FAILURE_WINDOW
                    && failures.locked_until.is_none_or(|until| until <= now)
            };
            self.entries.retain(|_, failures| !stale(failures));
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, failures)| failures.first)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        let failures = self.entries.entry(key.to_string()).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.saturating_duration_since(failures.first) >= FAILURE_WINDOW
            && failures.locked_until.is_none_or(|until| until <= now)
        {
            *failures = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        failures.count = failures.count.saturating_add(1);
        if failures.count >= self.limit {
            failures.locked_until = now.checked_add(LOCKOUT);
            failures.count = 0;
            failures.first = now;
        }
    }

    fn clear(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// Why a sign-in is not even tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Account(Duration),
    Address(Duration),
}

/// The sign-in rate limit: per account name and per client address.
pub struct LoginLimiter {
    accounts: Mutex<Attempts>,
    addresses: Mutex<Attempts>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(ACCOUNT_FAILURES_MAX, ADDRESS_FAILURES_MAX, ATTEMPT_KEYS_MAX)
    }
}

/// The key of an account name: lower case, so that `Ops` and `ops` share their failures.
fn account_key(name: &str) -> String {
    name.chars().take(64).collect::<String>().to_lowercase()
}

impl LoginLimiter {
    pub fn new(account_limit: u32, address_limit: u32, capacity: usize) -> LoginLimiter {
        LoginLimiter {
            accounts: Mutex::new(Attempts::new(account_limit, capacity)),
            addresses: Mutex::new(Attempts::new(address_limit, capacity)),
        }
    }

    /// Whether a sign-in for `name` from `address` may be tried now.
    pub fn check(&self, name: &str, address: &str, now: Instant) -> Result<(), Locked> {
        if let Some(left) = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .locked(address, now)
        {
            return Err(Locked::Address(left));
        }
        if let Some(left) = self
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .locked(&account_key(name), now)
        {
            return Err(Locked::Account(left));
        }
        Ok(())
    }

    pub fn failed(&self, name: &str, address: &str, now: Instant) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fail(&account_key(name), now);
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fail(address, now);
    }

    /// A successful sign-in clears the account's failures (not the address's).
    pub fn succeeded(&self, name: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear(&account_key(name));
    }

    /// Keys remembered: (accounts, addresses).
    pub fn remembered(&self) -> (usize, usize) {
        (
            self.accounts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entries
                .len(),
            self.addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entries
                .len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn sessions_end_at_their_age_idle_time_or_sign_out() {
        let sessions = Sessions::new(60 * MINUTE, 10 * MINUTE, 100);
        let start = Instant::now();
        let (id, user) = sessions.create("ops", 3, start).unwrap();
        assert_eq!(id.len(), 43, "256 bits in URL-safe base64");
        assert_eq!(user.csrf.len(), 43);
        assert_ne!(id, user.csrf);
        let at = |minutes: u32| start + MINUTE * minutes;
        assert_eq!(sessions.lookup(&id, at(9)).unwrap().user, "ops");
        assert_eq!(sessions.lookup(&id, at(18)).unwrap().generation, 3);
        // Idle for ten minutes: gone.
        assert!(sessions.lookup(&id, at(28)).is_none());
        assert_eq!(sessions.count(), 0);

        let (id, _) = sessions.create("ops", 0, start).unwrap();
        for minute in (5..60).step_by(5) {
            assert!(sessions.lookup(&id, at(minute)).is_some(), "{minute}");
        }
        assert!(sessions.lookup(&id, at(60)).is_none(), "past its age");

        let (id, _) = sessions.create("ops", 0, start).unwrap();
        let (other, _) = sessions.create("li", 0, start).unwrap();
        assert!(sessions.remove(&id));
        assert!(!sessions.remove(&id));
        assert!(sessions.lookup(&id, start).is_none());
        sessions.remove_user("li");
        assert!(sessions.lookup(&other, start).is_none());
        assert!(sessions.lookup("made-up", start).is_none());
    }

    #[test]
    fn sessions_are_bounded_least_recently_used_first() {
        let sessions = Sessions::new(60 * MINUTE, 60 * MINUTE, 3);
        let start = Instant::now();
        let ids: Vec<String> = (0..3)
            .map(|n| sessions.create("ops", 0, start + MINUTE * n).unwrap().0)
            .collect();
        sessions.lookup(&ids[0], start + 4 * MINUTE).unwrap();
        let (newest, _) = sessions.create("ops", 0, start + 5 * MINUTE).unwrap();
        assert_eq!(sessions.count(), 3);
        assert!(sessions.lookup(&ids[1], start + 5 * MINUTE).is_none());
        for id in [&ids[0], &ids[2], &newest] {
            assert!(sessions.lookup(id, start + 5 * MINUTE).is_some());
        }
    }

    #[test]
    fn failures_lock_an_account_and_an_address() {
        let limiter = LoginLimiter::new(3, 5, 100);
        let start = Instant::now();
        for _ in 0..2 {
            limiter.failed("ops", "10.0.0.1", start);
        }
        assert_eq!(limiter.check("ops", "10.0.0.1", start), Ok(()));
        limiter.failed("OPS", "10.0.0.2", start);
        assert!(matches!(
            limiter.check("ops", "10.0.0.9", start),
            Err(Locked::Account(_))
        ));
        assert_eq!(limiter.check("li", "10.0.0.1", start), Ok(()));
        // Unlocked after the lockout.
        assert_eq!(limiter.check("ops", "10.0.0.1", start + LOCKOUT), Ok(()));
        // One address trying many names.
        for n in 0..5 {
            limiter.failed(&format!("user{n}"), "10.0.0.3", start);
        }
        assert!(matches!(
            limiter.check("anyone", "10.0.0.3", start),
            Err(Locked::Address(_))
        ));
        // Failures older than the window are forgotten.
        limiter.failed("li", "10.0.0.4", start);
        limiter.failed("li", "10.0.0.4", start);
        limiter.failed("li", "10.0.0.4", start + FAILURE_WINDOW);
        assert_eq!(
            limiter.check("li", "10.0.0.5", start + FAILURE_WINDOW),
            Ok(())
        );
        limiter.succeeded("li");
    }

    #[test]
    fn the_limiter_remembers_a_bounded_number_of_keys() {
        let limiter = LoginLimiter::new(3, 1000, 50);
        let start = Instant::now();
        for n in 0..10_000u32 {
            limiter.failed(&format!("user{n}"), &format!("addr{}", n % 7), start);
        }
        let (accounts, addresses) = limiter.remembered();
        assert!(accounts <= 50 && addresses <= 7, "{accounts} {addresses}");
    }
}
