//! Event ids a tenant has seen, kept for a window of time.
//!
//! Pub/Sub delivers at least once: a message whose acknowledgement was lost
//! comes back after the subscription's ack deadline and backoff, and a
//! signed marketplace event can be replayed while its signature timestamp is
//! fresh. Both must be dropped as duplicates, however many other ids arrived
//! in between. So an id is remembered for [`DedupeOptions::window`] of
//! *decision time* (the server's clock, monotonic per tenant), not for a
//! fixed count of newer ids.
//!
//! Memory per tenant is bounded too: at most [`DedupeOptions::capacity`] ids
//! inside the window. A signal id past that bound is refused
//! ([`Remember::Full`]: the ingress answers 429, Pub/Sub redelivers later)
//! rather than evicting a live id, which could let its redelivery through.
//! Entitlement ids are exempt from the bound (they are rare, signed by the
//! marketplace, and must never be refused for a tenant's own signal volume).
//!
//! Each id is stored as a 128-bit SHA-256 prefix of `kind ‖ 0 ‖ id` (16
//! bytes whatever the id looks like) with its decision time. Decision times
//! only grow per tenant, so the ids are in time order and expiry pops from
//! the front; past [`LINEAR`] ids a hash index makes look-ups O(1).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;

/// The default window: Pub/Sub's longest ack deadline (600 s) times six
/// deliveries of a message whose acknowledgements were all lost.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// The default bound of ids per tenant inside the window.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// The default bound of signal ids over all tenants (about 100 MB).
pub const DEFAULT_MAX_TOTAL: usize = 2_000_000;
/// Up to this many ids are searched linearly; past it a hash index is kept.
const LINEAR: usize = 64;

/// How long ids are remembered and how many a tenant may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupeOptions {
    /// How long (in decision time) an id stays remembered.
    pub window: Duration,
    /// Signal ids a tenant may hold inside the window.
    pub capacity: usize,
    /// Signal ids all tenants together may hold (memory is about 50 bytes
    /// each): past it a new id is refused like past a tenant's capacity.
    pub max_total: usize,
}

impl Default for DedupeOptions {
    fn default() -> DedupeOptions {
        DedupeOptions {
            window: DEFAULT_WINDOW,
            capacity: DEFAULT_CAPACITY,
            max_total: DEFAULT_MAX_TOTAL,
        }
    }
}

impl DedupeOptions {
    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The dedupe key of an input id: kind-separated, SHA-256, first 128 bits.
pub(crate) type IdKey = [u8; 16];

/// The key of `id` in the namespace `space` ([`crate::receipt::Input::id_space`]).
pub(crate) fn id_key(space: &str, id: &str) -> IdKey {
    let mut hasher = Sha256::new();
    hasher.update(space.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Hashes an [`IdKey`] by its first eight bytes: they are already uniform
/// (SHA-256), and nobody can aim ids at one bucket without breaking it.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

type Index = HashSet<IdKey, BuildHasherDefault<KeyHasher>>;

/// One remembered id. In checkpoints it is one compact string (base64url of
/// the key, the time as 8 big-endian bytes and a kind byte: 34 characters),
/// since a busy service checkpoints millions of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The 128-bit key of the id (SHA-256 of kind ‖ 0 ‖ id, first 16 bytes).
    pub key: IdKey,
    /// Decision time of its receipt, in milliseconds.
    pub at: i64,
    /// Whether it is an entitlement id (exempt from the capacity bound).
    pub entitlement: bool,
}

impl Seen {
    const BYTES: usize = 16 + 8 + 1;

    fn to_bytes(self) -> [u8; Seen::BYTES] {
        let mut bytes = [0; Seen::BYTES];
        bytes[..16].copy_from_slice(&self.key);
        bytes[16..24].copy_from_slice(&self.at.to_be_bytes());
        bytes[24] = u8::from(self.entitlement);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Seen> {
        if bytes.len() != Seen::BYTES || bytes[24] > 1 {
            return None;
        }
        let mut key = [0; 16];
        key.copy_from_slice(&bytes[..16]);
        let mut at = [0; 8];
        at.copy_from_slice(&bytes[16..24]);
        Some(Seen {
            key,
            at: i64::from_be_bytes(at),
            entitlement: bytes[24] == 1,
        })
    }
}

impl serde::Serialize for Seen {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl<'de> serde::Deserialize<'de> for Seen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Seen, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .ok()
            .and_then(|bytes| Seen::from_bytes(&bytes))
            .ok_or_else(|| serde::de::Error::custom("invalid dedupe entry"))
    }
}

/// Whether an id is new, a duplicate, or past the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remember {
    /// A new id: remember it once its receipt is appended.
    New,
    /// Seen inside the window: drop the input.
    Duplicate,
    /// A new signal id, but the tenant holds `capacity` ids inside the
    /// window; room comes back after `retry_after`.
    Full {
        /// The bound.
        capacity: usize,
        /// When the oldest id expires, from now.
        retry_after: Duration,
    },
}

/// One remembered id as held in memory (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: IdKey,
    at: i64,
}

/// Ids of one namespace, oldest first, with an index once they are many.
#[derive(Debug, Clone, Default)]
struct Ids {
    order: VecDeque<Entry>,
    /// Present while `order` holds more than [`LINEAR`] ids.
    index: Option<Box<Index>>,
}

impl Ids {
    fn expire(&mut self, horizon: i64) {
        while self.order.front().is_some_and(|e| e.at < horizon) {
            self.pop_oldest();
        }
        if self.order.is_empty() {
            // An idle tenant gives its memory back.
            self.order = VecDeque::new();
        } else if self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
        }
    }

    fn unindex(&mut self, old: &Entry) {
        if let Some(index) = &mut self.index {
            index.remove(&old.key);
            if self.order.len() <= LINEAR / 2 {
                self.index = None;
            }
        }
    }

    fn contains(&self, key: &IdKey) -> bool {
        match &self.index {
            Some(index) => index.contains(key),
            None => self.order.iter().any(|e| e.key == *key),
        }
    }

    fn push(&mut self, entry: Entry) {
        if self.order.capacity() == 0 {
            // Most tenants hold one id or a few: the first takes room for
            // itself alone, later ones grow as a `VecDeque` does.
            self.order.reserve_exact(1);
        }
        self.order.push_back(entry);
        match &mut self.index {
            Some(index) => {
                index.insert(entry.key);
            }
            None if self.order.len() > LINEAR => {
                self.index = Some(Box::new(self.order.iter().map(|e| e.key).collect()));
            }
            None => {}
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.order.pop_front() {
            self.unindex(&old);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.order.capacity() * size_of::<Entry>()
            + self.index.as_ref().map_or(0, |index| {
                size_of::<Index>() + index.capacity() * (size_of::<IdKey>() + 1)
            })
    }
}

/// The ids one tenant saw inside the window: signal ids (bounded by
/// [`DedupeOptions::capacity`]) and entitlement ids, each oldest first.
/// Entitlement ids are rare (a few events in a tenant's life), so they live
/// behind a box that exists only while one is held.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recent {
    signals: Ids,
    entitlements: Option<Box<Ids>>,
}

impl Recent {
    /// Forgets ids decided before `now - window`.
    pub(crate) fn expire(&mut self, now: Timestamp, options: &DedupeOptions) {
        let horizon = now.as_millis().saturating_sub(options.window_ms());
        self.signals.expire(horizon);
        if let Some(ids) = &mut self.entitlements {
            ids.expire(horizon);
            if ids.order.is_empty() {
                self.entitlements = None;
            }
        }
    }

    fn ids(&self, entitlement: bool) -> Option<&Ids> {
        if entitlement {
            self.entitlements.as_deref()
        } else {
            Some(&self.signals)
        }
    }

    /// Whether `key` (of an entitlement id when `entitlement`) is held,
    /// expired or not (read-only: [`Recent::check`] decides).
    pub(crate) fn holds(&self, key: &IdKey, entitlement: bool) -> bool {
        self.ids(entitlement).is_some_and(|ids| ids.contains(key))
    }

    /// Whether `key` (of an entitlement id when `entitlement`) is new, a
    /// duplicate, or over the bound, at decision time `now`.
    pub(crate) fn check(
        &mut self,
        key: &IdKey,
        entitlement: bool,
        now: Timestamp,
        options: &DedupeOptions,
    ) -> Remember {
        self.expire(now, options);
        if self.ids(entitlement).is_some_and(|ids| ids.contains(key)) {
            return Remember::Duplicate;
        }
        if !entitlement && self.signals.order.len() >= options.capacity.max(1) {
            let oldest = self.signals.order.front().map_or(now.as_millis(), |e| e.at);
            let expires = oldest.saturating_add(options.window_ms());
            let wait = u64::try_from(expires.saturating_sub(now.as_millis())).unwrap_or(0);
            return Remember::Full {
                capacity: options.capacity,
                retry_after: Duration::from_millis(wait.max(1)),
            };
        }
        Remember::New
    }

    /// Remembers `seen` (after its receipt was appended). During recovery
    /// the bound is kept by forgetting the oldest signal ids (a lowered
    /// `capacity` must not stop a restart).
    pub(crate) fn insert(&mut self, seen: Seen, options: &DedupeOptions) {
        self.expire(Timestamp::from_millis(seen.at), options);
        let entry = Entry {
            key: seen.key,
            at: seen.at,
        };
        if seen.entitlement {
            let ids = self.entitlements.get_or_insert_default();
            if !ids.contains(&entry.key) {
                ids.push(entry);
            }
            return;
        }
        if self.signals.contains(&entry.key) {
            return;
        }
        if self.signals.order.len() >= options.capacity.max(1) {
            self.signals.pop_oldest();
        }
        self.signals.push(entry);
    }

    /// Remembers `seen`, whose key [`Recent::check`] just found new at the
    /// same decision time (so nothing is expired or searched again).
    pub(crate) fn push_checked(&mut self, seen: Seen) {
        let entry = Entry {
            key: seen.key,
            at: seen.at,
        };
        if seen.entitlement {
            self.entitlements.get_or_insert_default().push(entry);
        } else {
            self.signals.push(entry);
        }
    }

    /// Signal ids held (what the service-wide bound counts).
    pub(crate) fn signal_ids(&self) -> usize {
        self.signals.order.len()
    }

    /// Ids held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.signals.order.len() + self.entitlements.as_ref().map_or(0, |ids| ids.order.len())
    }

    #[cfg(test)]
    fn contains(&self, key: &IdKey) -> bool {
        self.signals.contains(key) || self.holds(key, true)
    }

    #[cfg(test)]
    fn indexed(&self) -> bool {
        self.signals.index.is_some()
    }

    /// Approximate heap bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.signals.heap_bytes()
            + self
                .entitlements
                .as_ref()
                .map_or(0, |ids| size_of::<Ids>() + ids.heap_bytes())
    }

    /// The remembered ids, signals then entitlements, each oldest first (for checkpoints).
    pub(crate) fn export(&self) -> Vec<Seen> {
        let seen = |entitlement| {
            move |e: &Entry| Seen {
                key: e.key,
                at: e.at,
                entitlement,
            }
        };
        let signals = self.signals.order.iter().map(seen(false));
        let entitlements = self.entitlements.iter().flat_map(|ids| ids.order.iter());
        signals.chain(entitlements.map(seen(true))).collect()
    }

    /// Rebuilds from a checkpoint's ids.
    pub(crate) fn import(seen: Vec<Seen>, options: &DedupeOptions) -> Recent {
        let mut recent = Recent::default();
        for s in seen {
            recent.insert(s, options);
        }
        recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn options(window_min: u64, capacity: usize) -> DedupeOptions {
        DedupeOptions {
            max_total: usize::MAX,
            window: Duration::from_secs(window_min * 60),
            capacity,
        }
    }

    fn key(n: u32) -> IdKey {
        id_key("signal", &format!("m-{n}"))
    }

    fn signal(n: u32, at: i64) -> Seen {
        Seen {
            key: key(n),
            at,
            entitlement: false,
        }
    }

    #[test]
    fn an_id_is_a_duplicate_for_the_whole_window_whatever_came_after() {
        let options = options(60, 100_000);
        let mut recent = Recent::default();
        recent.insert(signal(0, 0), &options);
        // Thousands of newer ids (the old ring held 32) do not push it out.
        for n in 1..5_000 {
            let at = i64::from(n) * 10;
            assert_eq!(
                recent.check(&key(n), false, Timestamp(at), &options),
                Remember::New
            );
            recent.insert(signal(n, at), &options);
        }
        assert!(recent.indexed());
        let late = Timestamp(59 * MINUTE);
        assert_eq!(
            recent.check(&key(0), false, late, &options),
            Remember::Duplicate
        );
        // After the window it is new again, and the memory is given back.
        let later = Timestamp(60 * MINUTE + 50_001);
        assert_eq!(recent.check(&key(0), false, later, &options), Remember::New);
        assert_eq!(recent.len(), 0);
        assert_eq!(recent.heap_bytes(), 0);
    }

    #[test]
    fn an_idle_tenant_holds_its_one_id_in_the_room_of_one() {
        let options = options(60, 100_000);
        let mut recent = Recent::default();
        assert_eq!(
            size_of::<Recent>(),
            48,
            "signal ids inline, entitlement ids boxed"
        );
        recent.insert(signal(0, 0), &options);
        assert_eq!(recent.heap_bytes(), size_of::<Entry>());
        // An entitlement id boxes its list; the box goes once the id expires.
        let event = Seen {
            entitlement: true,
            ..signal(1, MINUTE)
        };
        recent.insert(event, &options);
        assert!(recent.holds(&event.key, true));
        assert!(!recent.holds(&event.key, false));
        assert_eq!(
            recent.heap_bytes(),
            2 * size_of::<Entry>() + size_of::<Ids>()
        );
        assert_eq!(
            recent.check(&key(2), false, Timestamp(62 * MINUTE), &options),
            Remember::New
        );
        assert!(recent.entitlements.is_none());
        assert_eq!(recent.heap_bytes(), 0);
        // Later ids grow the list as usual.
        for n in 0..3 {
            recent.insert(signal(n, 70 * MINUTE), &options);
        }
        assert_eq!(recent.len(), 3);
    }

    #[test]
    fn the_bound_refuses_new_signal_ids_but_not_entitlement_ids() {
        let options = options(60, 3);
        let mut recent = Recent::default();
        for n in 0..3 {
            recent.insert(signal(n, i64::from(n) * MINUTE), &options);
        }
        let now = Timestamp(10 * MINUTE);
        assert_eq!(
            recent.check(&key(9), false, now, &options),
            Remember::Full {
                capacity: 3,
                retry_after: Duration::from_secs(50 * 60),
            }
        );
        // Known ids are still duplicates, and entitlement ids still fit.
        assert_eq!(
            recent.check(&key(1), false, now, &options),
            Remember::Duplicate
        );
        let event = id_key("entitlement", "evt-1");
        assert_eq!(recent.check(&event, true, now, &options), Remember::New);
        recent.insert(
            Seen {
                key: event,
                at: now.as_millis(),
                entitlement: true,
            },
            &options,
        );
        assert_eq!(
            recent.check(&event, true, now, &options),
            Remember::Duplicate
        );
        // Once the oldest signal id expires there is room again.
        let expired = Timestamp(60 * MINUTE + 1);
        assert_eq!(
            recent.check(&key(9), false, expired, &options),
            Remember::New
        );
    }

    #[test]
    fn recovery_keeps_the_bound_by_forgetting_the_oldest() {
        let options = options(60, 2);
        let recent = Recent::import((0..5).map(|n| signal(n, i64::from(n))).collect(), &options);
        assert_eq!(recent.len(), 2);
        assert!(recent.contains(&key(4)) && recent.contains(&key(3)));
        assert!(!recent.contains(&key(0)));
    }

    #[test]
    fn the_index_follows_the_ids() {
        let options = options(60, 1_000);
        let mut recent = Recent::default();
        for n in 0..200 {
            recent.insert(signal(n, i64::from(n)), &options);
        }
        for n in 0..200 {
            assert!(recent.contains(&key(n)), "{n}");
        }
        assert!(!recent.contains(&key(200)));
        // Expire all but the last ten: the index shrinks away with them.
        recent.expire(Timestamp(60 * MINUTE + 190), &options);
        assert_eq!(recent.len(), 10);
        assert!(!recent.indexed());
        assert!(recent.contains(&key(195)) && !recent.contains(&key(5)));
    }

    #[test]
    fn checkpoint_entries_are_compact_and_round_trip() {
        for seen in [
            signal(7, 1_767_225_600_123),
            Seen {
                key: id_key("entitlement", "evt"),
                at: -5,
                entitlement: true,
            },
        ] {
            let text = serde_json::to_string(&seen).unwrap();
            assert_eq!(text.len(), 34 + 2, "{text}");
            assert_eq!(serde_json::from_str::<Seen>(&text).unwrap(), seen);
        }
        for bad in ["\"\"", "\"AAAA\"", "17", "\"!!\""] {
            assert!(serde_json::from_str::<Seen>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_are_separate_namespaces() {
        assert_ne!(id_key("signal", "x"), id_key("entitlement", "x"));
        assert_ne!(id_key("signal", "x"), id_key("signal/pubsub", "x"));
        assert_eq!(id_key("signal", "x"), id_key("signal", "x"));
    }
}
