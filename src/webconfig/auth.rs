//! Basic auth against `basic_auth_users`, as exporter-toolkit does it.
//!
//! - Constant time: whoever the user, known or not, one bcrypt verification
//!   runs (an unknown user's against a dummy hash of the same cost), and
//!   user names are compared without an early exit. A failure therefore
//!   takes the same time whether the user exists or not.
//! - A cache of successful verifications, keyed by the sha256 of user and
//!   password: bcrypt costs tens of milliseconds by design, and Prometheus
//!   sends the same credentials on every scrape. Failures are never cached,
//!   so guessing always pays the full cost.
//! - One bcrypt at a time, off the server's two worker threads: a flood of
//!   wrong passwords costs one core at most and never stalls a scrape whose
//!   credentials are cached.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Users;

/// Entries kept before the cache starts over: a handful of scrapers and
/// health checks, with room for password rotations.
const CACHE_ENTRIES: usize = 256;

pub struct BasicAuth {
    users: Vec<(String, String)>,
    /// What unknown users are verified against.
    dummy: String,
    cache: Mutex<HashSet<[u8; 32]>>,
    bcrypt_turn: tokio::sync::Semaphore,
}

/// The outcome of [`BasicAuth::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No Authorization header, or not a Basic one we can read.
    MissingOrMalformed,
    /// Unknown user or wrong password (which of the two is not told).
    WrongCredentials,
}

impl BasicAuth {
    /// None when no users are configured.
    pub fn new(users: &Users) -> Option<Arc<BasicAuth>> {
        if users.is_empty() {
            return None;
        }
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, h)| (u.to_string(), h.to_string()))
            .collect();
        // Same cost as the real hashes, so an unknown user takes as long.
        let cost = users
            .iter()
            .map(|(_, h)| super::bcrypt_cost(h))
            .max()
            .unwrap_or(10);
        let random: [u8; 16] = rand::random();
        let dummy = bcrypt::hash(random, cost).unwrap_or_else(|_| DUMMY_COST_10.to_string());
        Some(Arc::new(BasicAuth {
            users,
            dummy,
            cache: Mutex::new(HashSet::new()),
            bcrypt_turn: tokio::sync::Semaphore::new(1),
        }))
    }

    /// Decides on the value of an Authorization header.
    pub async fn check(self: &Arc<Self>, header: Option<&[u8]>) -> Decision {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return Decision::MissingOrMalformed;
        };
        let key = cache_key(&user, &password);
        if self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Decision::Allow;
        }
        let Ok(_turn) = self.bcrypt_turn.acquire().await else {
            return Decision::WrongCredentials;
        };
        let this = self.clone();
        let ok = tokio::task::spawn_blocking(move || this.verify(&user, &password))
            .await
            .unwrap_or(false);
        if !ok {
            return Decision::WrongCredentials;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key);
        Decision::Allow
    }

    /// One bcrypt verification, whether the user exists or not.
    fn verify(&self, user: &str, password: &str) -> bool {
        let mut hash = self.dummy.as_str();
        let mut known = subtle::Choice::from(0);
        // Every name is compared, none skipped after a match.
        for (name, h) in &self.users {
            let same = name.as_bytes().ct_eq(user.as_bytes());
            if bool::from(same) {
                hash = h;
            }
            known |= same;
        }
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        matches && bool::from(known)
    }
}

/// Not used unless hashing a random dummy fails; cost 10 like
/// `htpasswd -nBC 10`.
const DUMMY_COST_10: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length first: ("ab", "c") and ("a", "bc") are different keys.
    h.update((user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    h.update(password.as_bytes());
    h.finalize().into()
}

/// `Basic <base64(user:password)>`; the scheme in any case, as RFC 7617 says.
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webconfig::WebConfig;
    use std::path::Path;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {b64}").into_bytes()
    }

    fn auth() -> Arc<BasicAuth> {
        // Cost 4: the lowest bcrypt allows, so the tests stay fast.
        let yaml = format!(
            "basic_auth_users:\n  alice: '{}'\n  bob: '{}'\n",
            bcrypt::hash("right horse", 4).unwrap(),
            bcrypt::hash("battery staple", 4).unwrap()
        );
        let cfg = WebConfig::parse(&yaml, Path::new("web.yml"), Path::new(".")).unwrap();
        BasicAuth::new(&cfg.users).unwrap()
    }

    #[tokio::test]
    async fn the_right_password_is_allowed_and_then_cached() {
        let a = auth();
        let h = basic("alice", "right horse");
        assert_eq!(a.check(Some(&h)).await, Decision::Allow);
        assert_eq!(a.cache.lock().unwrap().len(), 1);
        assert_eq!(a.check(Some(&h)).await, Decision::Allow);
        assert_eq!(
            a.check(Some(&basic("bob", "battery staple"))).await,
            Decision::Allow
        );
        // The scheme's case does not matter.
        let lower = String::from_utf8(h).unwrap().replace("Basic", "bAsIc");
        assert_eq!(a.check(Some(lower.as_bytes())).await, Decision::Allow);
    }

    #[tokio::test]
    async fn wrong_passwords_and_unknown_users_are_refused_and_never_cached() {
        let a = auth();
        for (u, p) in [
            ("alice", "wrong"),
            ("alice", "battery staple"),
            ("bob", "right horse"),
            ("mallory", "right horse"),
            ("", ""),
            ("alice", ""),
            ("Alice", "right horse"),
        ] {
            assert_eq!(
                a.check(Some(&basic(u, p))).await,
                Decision::WrongCredentials,
                "{u}:{p}"
            );
        }
        assert!(a.cache.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn missing_and_malformed_headers_are_refused() {
        let a = auth();
        assert_eq!(a.check(None).await, Decision::MissingOrMalformed);
        for h in [
            &b""[..],
            b"Basic",
            b"Basic !!!notbase64",
            b"Bearer YWxpY2U6cmlnaHQgaG9yc2U=",
            // "alice" without a colon
            b"Basic YWxpY2U=",
            b"\xff\xfe",
        ] {
            assert_eq!(
                a.check(Some(h)).await,
                Decision::MissingOrMalformed,
                "{}",
                String::from_utf8_lossy(h)
            );
        }
    }

    #[test]
    fn an_unknown_user_costs_a_bcrypt_of_the_same_cost() {
        let a = auth();
        assert_eq!(crate::webconfig::bcrypt_cost(&a.dummy), 4);
        assert!(bcrypt::verify("x", &a.dummy).is_ok());
        assert!(bcrypt::verify("x", DUMMY_COST_10).is_ok());
    }

    #[test]
    fn cache_keys_separate_user_from_password() {
        assert_ne!(cache_key("ab", "c"), cache_key("a", "bc"));
        assert_eq!(cache_key("a", "b"), cache_key("a", "b"));
    }

    #[test]
    fn no_users_means_no_auth() {
        assert!(BasicAuth::new(&Users::default()).is_none());
    }
}
