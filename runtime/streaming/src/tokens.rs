//! Single-use, short-lived tokens for streaming requests (kubelet's request cache semantics):
//! a token is random, valid for one minute, redeemed at most once, and at most `capacity` are
//! outstanding at a time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most tokens outstanding at once.
pub const MAX_IN_FLIGHT: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("too many streaming requests in flight ({0}); try again later")]
    Full(usize),
}

pub struct RequestCache<T> {
    inner: Mutex<HashMap<String, (Instant, T)>>,
    ttl: Duration,
    capacity: usize,
}

impl<T> RequestCache<T> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        RequestCache {
            inner: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    /// Stores `value` and returns its new token.
    pub fn insert(&self, value: T) -> Result<String, TokenError> {
        self.insert_at(value, Instant::now())
    }

    fn insert_at(&self, value: T, now: Instant) -> Result<String, TokenError> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (born, _)| now.duration_since(*born) < self.ttl);
        if map.len() >= self.capacity {
            return Err(TokenError::Full(self.capacity));
        }
        loop {
            let token = new_token();
            if !map.contains_key(&token) {
                map.insert(token.clone(), (now, value));
                return Ok(token);
            }
        }
    }

    /// Redeems a token: its value if it exists and has not expired. A token works once.
    pub fn take(&self, token: &str) -> Option<T> {
        self.take_at(token, Instant::now())
    }

    fn take_at(&self, token: &str, now: Instant) -> Option<T> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (born, value) = map.remove(token)?;
        (now.duration_since(born) < self.ttl).then_some(value)
    }
}

/// 16 random bytes, URL-safe (hex).
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let c = RequestCache::new(TOKEN_TTL, 10);
        let t0 = Instant::now();
        let a = c.insert_at("a", t0).unwrap();
        let b = c.insert_at("b", t0).unwrap();
        assert_ne!(a, b);
        assert_eq!(c.take_at(&a, t0), Some("a"));
        assert_eq!(c.take_at(&a, t0), None, "second use");
        assert_eq!(
            c.take_at(&b, t0 + TOKEN_TTL + Duration::from_millis(1)),
            None,
            "expired"
        );
        assert_eq!(c.take_at("nope", t0), None);
    }

    #[test]
    fn capacity_is_bounded_but_expired_tokens_free_space() {
        let c = RequestCache::new(TOKEN_TTL, 2);
        let t0 = Instant::now();
        c.insert_at(1, t0).unwrap();
        c.insert_at(2, t0).unwrap();
        assert_eq!(c.insert_at(3, t0), Err(TokenError::Full(2)));
        assert!(c.insert_at(4, t0 + TOKEN_TTL).is_ok());
    }
}
