//! Single-flight: concurrent misses of one key run the loader once.
//!
//! The first caller to miss a key becomes its *leader* and runs the loader;
//! callers that miss the same key meanwhile become *followers* and wait for
//! the leader's value instead of loading it again, so a hot key that expires
//! (or a Redis that goes away) does not send a stampede to the database.
//!
//! What is shared is the encoded value, not the typed one: the leader encodes
//! it anyway to store it, followers decode their own copy, and the flight
//! map needs no type parameter. The loader's future need not be `'static`:
//! it runs in the leader's task, not a spawned one.
//!
//! A leader whose loader fails, or whose caller goes away mid-load, lands
//! nothing; its followers then run their own loaders. Sharing the failure
//! instead would need the caller's error type to be `Clone`, and
//! re-electing a leader one at a time would let a slow failing loader
//! serialise every waiter behind it.
//!
//! The flight of a key stays registered after its value landed until the
//! leader's background write to Redis finished, so that callers arriving in
//! that window take the landed value rather than load again. The scope is one
//! process; across processes the Redis copy does the same job once written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

/// What a flight carries.
#[derive(Debug, Clone)]
enum Landing {
    /// The leader is loading.
    Pending,
    /// The encoded value.
    Value(Bytes),
    /// The leader's loader failed or its caller went away.
    Failed,
}

type Map = HashMap<String, Arc<watch::Sender<Landing>>>;

/// The flights of one cache.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Arc<Mutex<Map>>,
}

/// A caller's part in the flight of a key.
#[derive(Debug)]
pub(crate) enum Role {
    /// Run the loader, then [`Lead::land`] its value.
    Leader(Lead),
    /// Wait with [`Follow::value`].
    Follower(Follow),
}

impl Flights {
    /// Joins the flight of `key`, or starts one.
    pub(crate) fn join(&self, key: &str) -> Role {
        let mut map = lock(&self.map);
        if let Some(sender) = map.get(key) {
            return Role::Follower(Follow {
                receiver: sender.subscribe(),
            });
        }
        let sender = Arc::new(watch::Sender::new(Landing::Pending));
        map.insert(key.to_string(), sender.clone());
        Role::Leader(Lead {
            map: self.map.clone(),
            key: key.to_string(),
            sender,
        })
    }

    /// Keys with a flight in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

fn lock(map: &Mutex<Map>) -> std::sync::MutexGuard<'_, Map> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// The leader's side of a flight. Dropping it ends the flight: followers
/// that did not get a value are told to load their own.
#[derive(Debug)]
pub(crate) struct Lead {
    map: Arc<Mutex<Map>>,
    key: String,
    sender: Arc<watch::Sender<Landing>>,
}

impl Lead {
    /// Hands the encoded value to every follower, present and arriving.
    pub(crate) fn land(&self, bytes: Bytes) {
        self.sender.send_replace(Landing::Value(bytes));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.sender.send_if_modified(|landing| {
            if matches!(landing, Landing::Pending) {
                *landing = Landing::Failed;
                true
            } else {
                false
            }
        });
        let mut map = lock(&self.map);
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.sender))
        {
            map.remove(&self.key);
        }
    }
}

/// A follower's side of a flight.
#[derive(Debug)]
pub(crate) struct Follow {
    receiver: watch::Receiver<Landing>,
}

impl Follow {
    /// The leader's encoded value, or `None` when it has none to give.
    pub(crate) async fn value(mut self) -> Option<Bytes> {
        let landed = self
            .receiver
            .wait_for(|l| !matches!(l, Landing::Pending))
            .await;
        match landed.as_deref() {
            Ok(Landing::Value(bytes)) => Some(bytes.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_value() {
        let flights = Flights::default();
        let Role::Leader(lead) = flights.join("k") else {
            panic!("the first caller leads");
        };
        let Role::Follower(follow) = flights.join("k") else {
            panic!("the second caller follows");
        };
        let waiting = tokio::spawn(follow.value());
        lead.land(Bytes::from_static(b"v"));
        assert_eq!(waiting.await.unwrap().as_deref(), Some(&b"v"[..]));
        // Until the leader is done, late callers still get the value.
        let Role::Follower(late) = flights.join("k") else {
            panic!("a late caller follows");
        };
        assert_eq!(late.value().await.as_deref(), Some(&b"v"[..]));
        drop(lead);
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_releases_its_followers() {
        let flights = Flights::default();
        let lead = flights.join("k");
        let Role::Follower(follow) = flights.join("k") else {
            panic!("the second caller follows");
        };
        drop(lead);
        assert_eq!(follow.value().await, None);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn keys_fly_independently() {
        let flights = Flights::default();
        let _a = flights.join("a");
        assert!(matches!(flights.join("b"), Role::Leader(_)));
    }
}
