//! The policy engine: a signal value and a rule become a [`Level`]; a tenant's
//! [`PolicyMemory`] adds dwell, hysteresis, recovery, cooldown and the hourly
//! action budget.
//!
//! Everything here is pure: time is passed in as a [`Timestamp`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::sku::{ActionId, Direction, ProfileDef, Rule, SignalId};

/// How bad a reading is, mildest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below every threshold (or dwell not met yet).
    Normal,
    /// At or past `warn`.
    Warn,
    /// At or past `intervene`: the rule's actions should run.
    Intervene,
    /// At or past `refuse`: the tenant is refused.
    Refuse,
}

impl Level {
    /// The lowercase name used in receipts and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warn => "warn",
            Level::Intervene => "intervene",
            Level::Refuse => "refuse",
        }
    }
}

/// Whether `value` is at or past `threshold` on the bad side.
fn breaches(direction: Direction, value: f64, threshold: f64) -> bool {
    match direction {
        Direction::Above => value >= threshold,
        Direction::Below => value <= threshold,
    }
}

/// The level of one reading against one rule, ignoring dwell and history.
///
/// A threshold is reached *at* its value: with `warn: 50` (above), 50 is
/// `Warn` and 49.99 is `Normal`.
pub fn raw_level(rule: &Rule, value: f64) -> Level {
    let past = |t: Option<f64>| t.is_some_and(|t| breaches(rule.direction, value, t));
    if past(rule.refuse) {
        Level::Refuse
    } else if past(rule.intervene) {
        Level::Intervene
    } else if past(rule.warn) {
        Level::Warn
    } else {
        Level::Normal
    }
}

/// Whether `value` is on the good side of the rule's `clear` threshold
/// (strictly: a value equal to `clear` has not cleared).
pub fn is_clear(rule: &Rule, value: f64) -> bool {
    !breaches(rule.direction, value, rule.clear)
}

/// The threshold that `level` stands for under `rule` (`None` for `Normal`).
pub fn threshold(rule: &Rule, level: Level) -> Option<f64> {
    match level {
        Level::Normal => None,
        Level::Warn => rule.warn,
        Level::Intervene => rule.intervene,
        Level::Refuse => rule.refuse,
    }
}

/// One rolling hour, the window of `max_actions_per_hour`.
const HOUR_MS: i64 = 3_600_000;

/// What one reading did to the tenant's policy memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The profile's rule for the signal; `None` when the profile has none
    /// (the reading is recorded at `Normal` and is not an evaluation).
    pub rule: Option<&'static Rule>,
    /// The level of this reading alone.
    pub raw: Level,
    /// The effective level: `raw` once `streak ≥ dwell`, else `Normal`.
    pub level: Level,
    /// The threshold `raw` reached (`None` at `Normal`).
    pub threshold: Option<f64>,
    /// Consecutive breaching readings (`raw ≥ warn`) of this rule, this one included.
    pub streak: u16,
    /// Whether this reading is on the good side of `clear`.
    pub clear: bool,
    /// Consecutive evaluations after which every rule was clear.
    pub recovery: u16,
}

/// Per-rule memory, indexed like the profile's `rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RuleMemory {
    /// Consecutive breaching readings.
    streak: u16,
    /// Effective level of the latest reading.
    level: Level,
    /// Whether the latest reading was clear (a rule never seen is clear).
    clear: bool,
}

impl RuleMemory {
    const FRESH: RuleMemory = RuleMemory {
        streak: 0,
        level: Level::Normal,
        clear: true,
    };
}

/// Dispatch history for cooldown and budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ActionHistory {
    /// Last dispatch time (ms) per action id; at most one entry per action.
    last: Vec<(u16, i64)>,
    /// Dispatch times (ms) of the last hour, oldest first, whatever the
    /// profile was then; never more than the largest budget of any profile.
    recent: VecDeque<i64>,
}

/// Why an intervention did not dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Every action of the rule ran within `cooldown_s`; the first frees up at `until`.
    Cooldown {
        /// The first blocked action.
        action: ActionId,
        /// When that action may run again.
        until: Timestamp,
    },
    /// Dispatching would exceed `max_actions_per_hour`.
    Budget {
        /// Dispatches in the last rolling hour.
        used: u32,
        /// The profile's budget.
        max: u32,
    },
    /// The rule names no actions.
    NoActions,
}

impl Block {
    /// The lowercase name used in receipts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Block::Cooldown { .. } => "cooldown",
            Block::Budget { .. } => "budget",
            Block::NoActions => "no_actions",
        }
    }
}

/// One tenant's policy memory: rule streaks, recovery count, dispatch history.
///
/// Allocated lazily: a tenant that never saw a signal holds two null pointers
/// and a counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMemory {
    /// One entry per rule of the current profile, allocated on the first reading.
    rules: Option<Box<[RuleMemory]>>,
    /// Consecutive evaluations after which every rule was clear.
    recovery: u16,
    /// Allocated on the first dispatch; survives profile changes and resets.
    history: Option<Box<ActionHistory>>,
}

impl PolicyMemory {
    /// Evaluates one reading of `signal` under `profile` and remembers it.
    pub fn evaluate(
        &mut self,
        profile: &'static ProfileDef,
        signal: SignalId,
        value: f64,
    ) -> Evaluation {
        let Some(index) = profile.rules.iter().position(|r| r.signal == signal) else {
            return Evaluation {
                rule: None,
                raw: Level::Normal,
                level: Level::Normal,
                threshold: None,
                streak: 0,
                clear: true,
                recovery: self.recovery,
            };
        };
        let rule = &profile.rules[index];
        let raw = raw_level(rule, value);
        let clear = is_clear(rule, value);
        let rules = self.rules_for(profile);
        let memory = &mut rules[index];
        memory.streak = if raw >= Level::Warn {
            memory.streak.saturating_add(1)
        } else {
            0
        };
        memory.level = if memory.streak >= rule.dwell {
            raw
        } else {
            Level::Normal
        };
        memory.clear = clear;
        let (streak, level) = (memory.streak, memory.level);
        let all_clear = rules.iter().all(|m| m.clear);
        self.recovery = if all_clear {
            self.recovery.saturating_add(1)
        } else {
            0
        };
        Evaluation {
            rule: Some(rule),
            raw,
            level,
            threshold: threshold(rule, raw),
            streak,
            clear,
            recovery: self.recovery,
        }
    }

    fn rules_for(&mut self, profile: &ProfileDef) -> &mut [RuleMemory] {
        let len = profile.rules.len();
        let rules = self
            .rules
            .get_or_insert_with(|| vec![RuleMemory::FRESH; len].into_boxed_slice());
        if rules.len() != len {
            // Only reachable if the caller changed the profile without
            // `reset_rules`; start over rather than index out of bounds.
            *rules = vec![RuleMemory::FRESH; len].into_boxed_slice();
        }
        rules
    }

    /// The tenant's level: the worst effective level over all rules.
    pub fn level(&self) -> Level {
        self.rules
            .iter()
            .flat_map(|rules| rules.iter())
            .map(|m| m.level)
            .max()
            .unwrap_or(Level::Normal)
    }

    /// The rule at the tenant's level if that is at least `intervene`
    /// (the first such rule in spec order).
    pub fn trigger(&self, profile: &'static ProfileDef) -> Option<&'static Rule> {
        let level = self.level();
        if level < Level::Intervene {
            return None;
        }
        let rules = self.rules.as_deref()?;
        let index = rules.iter().position(|m| m.level == level)?;
        profile.rules.get(index)
    }

    /// Consecutive evaluations after which every rule was clear.
    pub fn recovery(&self) -> u16 {
        self.recovery
    }

    /// Forgets rule streaks and the recovery count (profile change, reset);
    /// the dispatch history is kept.
    pub fn reset_rules(&mut self) {
        self.rules = None;
        self.recovery = 0;
    }

    /// Which of `actions` may run at `now`: those outside their cooldown, if
    /// the whole remaining set fits the hourly budget.
    pub fn admit(
        &self,
        profile: &ProfileDef,
        actions: &[ActionId],
        now: Timestamp,
    ) -> Result<Vec<ActionId>, Block> {
        if actions.is_empty() {
            return Err(Block::NoActions);
        }
        let now_ms = now.as_millis();
        let cooldown_ms = i64::from(profile.cooldown_s) * 1000;
        let mut first_block = None;
        let mut allowed = Vec::with_capacity(actions.len());
        for &action in actions {
            let last = self
                .history
                .as_ref()
                .and_then(|h| h.last.iter().find(|(a, _)| *a == action.0))
                .map(|&(_, t)| t);
            match last {
                Some(t) if cooldown_ms > 0 && now_ms < t.saturating_add(cooldown_ms) => {
                    first_block.get_or_insert(Block::Cooldown {
                        action,
                        until: Timestamp(t.saturating_add(cooldown_ms)),
                    });
                }
                _ => allowed.push(action),
            }
        }
        if allowed.is_empty() {
            return Err(first_block.unwrap_or(Block::NoActions));
        }
        if let Some(max) = profile.max_actions_per_hour {
            let used = self.used_in_hour(now);
            let wanted = u32::try_from(allowed.len()).unwrap_or(u32::MAX);
            if used.saturating_add(wanted) > max {
                return Err(Block::Budget { used, max });
            }
        }
        Ok(allowed)
    }

    /// Dispatches counted against the budget in the hour before `now`
    /// (a dispatch exactly 3600 s ago no longer counts).
    pub fn used_in_hour(&self, now: Timestamp) -> u32 {
        let since = now.as_millis().saturating_sub(HOUR_MS);
        let count = self
            .history
            .as_ref()
            .map_or(0, |h| h.recent.iter().filter(|&&t| t > since).count());
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Records that `actions` were dispatched at `now` (cooldown and budget),
    /// keeping at most `keep` dispatch times of the last hour: the SKU's
    /// [`largest_budget`](crate::sku::Sku::largest_budget), so that a later
    /// plan change still counts dispatches made under another profile.
    pub fn record_dispatch(&mut self, keep: Option<u32>, actions: &[ActionId], now: Timestamp) {
        let now_ms = now.as_millis();
        let history = self.history.get_or_insert_with(Box::default);
        for &action in actions {
            match history.last.iter_mut().find(|(a, _)| *a == action.0) {
                Some(entry) => entry.1 = now_ms,
                None => history.last.push((action.0, now_ms)),
            }
        }
        let since = now_ms.saturating_sub(HOUR_MS);
        while history.recent.front().is_some_and(|&t| t <= since) {
            history.recent.pop_front();
        }
        let keep = keep.map_or(0, |max| usize::try_from(max).unwrap_or(usize::MAX));
        history.recent.extend(actions.iter().map(|_| now_ms));
        // Older entries than the largest budget can never matter again.
        while history.recent.len() > keep {
            history.recent.pop_front();
        }
    }

    /// Checks memory read from a checkpoint: rule memory shaped like
    /// `profile`'s rules, cooldown entries naming one of `actions` actions.
    pub fn check(&self, profile: &ProfileDef, actions: usize) -> Result<(), String> {
        if let Some(rules) = &self.rules
            && rules.len() != profile.rules.len()
        {
            return Err(format!(
                "rule memory has `{}` entries, profile `{}` has `{}` rules",
                rules.len(),
                profile.name,
                profile.rules.len()
            ));
        }
        if let Some(history) = &self.history
            && let Some((action, _)) = history
                .last
                .iter()
                .find(|(a, _)| usize::from(*a) >= actions)
        {
            return Err(format!(
                "cooldown names action id `{action}`, the sku has `{actions}` actions"
            ));
        }
        Ok(())
    }

    /// Heap bytes held by this memory (for the idle-tenant budget).
    pub fn heap_bytes(&self) -> usize {
        let rules = self
            .rules
            .as_ref()
            .map_or(0, |r| r.len() * size_of::<RuleMemory>());
        let history = self.history.as_ref().map_or(0, |h| {
            size_of::<ActionHistory>()
                + h.last.capacity() * size_of::<(u16, i64)>()
                + h.recent.capacity() * size_of::<i64>()
        });
        rules + history
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sku::Direction;

    const UP: Rule = Rule {
        signal: SignalId(0),
        direction: Direction::Above,
        warn: Some(50.0),
        intervene: Some(100.0),
        refuse: Some(500.0),
        clear: 40.0,
        dwell: 1,
        actions: &[ActionId(0)],
    };
    const DOWN: Rule = Rule {
        signal: SignalId(1),
        direction: Direction::Below,
        warn: Some(99.0),
        intervene: Some(95.0),
        refuse: Some(90.0),
        clear: 99.5,
        dwell: 2,
        actions: &[ActionId(0), ActionId(1)],
    };
    static RULES: [Rule; 2] = [UP, DOWN];
    static PROFILE: ProfileDef = ProfileDef {
        name: "standard",
        rules: &RULES,
        cooldown_s: 300,
        max_actions_per_hour: Some(3),
    };
    static UNLIMITED: ProfileDef = ProfileDef {
        name: "unlimited",
        rules: &RULES,
        cooldown_s: 0,
        max_actions_per_hour: None,
    };

    fn ts(s: i64) -> Timestamp {
        Timestamp(s * 1000)
    }

    #[test]
    fn above_threshold_edges() {
        let cases = [
            (39.99, Level::Normal, true),
            (40.0, Level::Normal, false),
            (49.99, Level::Normal, false),
            (50.0, Level::Warn, false),
            (50.01, Level::Warn, false),
            (99.99, Level::Warn, false),
            (100.0, Level::Intervene, false),
            (100.01, Level::Intervene, false),
            (499.99, Level::Intervene, false),
            (500.0, Level::Refuse, false),
            (500.01, Level::Refuse, false),
        ];
        for (value, level, clear) in cases {
            assert_eq!(raw_level(&UP, value), level, "{value}");
            assert_eq!(is_clear(&UP, value), clear, "{value}");
        }
    }

    #[test]
    fn below_threshold_edges() {
        let cases = [
            (100.0, Level::Normal, true),
            (99.51, Level::Normal, true),
            (99.5, Level::Normal, false),
            (99.01, Level::Normal, false),
            (99.0, Level::Warn, false),
            (95.01, Level::Warn, false),
            (95.0, Level::Intervene, false),
            (94.99, Level::Intervene, false),
            (90.01, Level::Intervene, false),
            (90.0, Level::Refuse, false),
            (89.99, Level::Refuse, false),
        ];
        for (value, level, clear) in cases {
            assert_eq!(raw_level(&DOWN, value), level, "{value}");
            assert_eq!(is_clear(&DOWN, value), clear, "{value}");
        }
    }

    #[test]
    fn missing_thresholds_are_skipped() {
        let rule = Rule {
            warn: None,
            refuse: None,
            ..UP
        };
        assert_eq!(raw_level(&rule, 99.0), Level::Normal);
        assert_eq!(raw_level(&rule, 100.0), Level::Intervene);
        assert_eq!(raw_level(&rule, 1e9), Level::Intervene);
        assert_eq!(threshold(&rule, Level::Warn), None);
        assert_eq!(threshold(&rule, Level::Intervene), Some(100.0));
    }

    #[test]
    fn dwell_delays_escalation_and_resets_on_a_calm_reading() {
        let mut memory = PolicyMemory::default();
        let down = SignalId(1);
        let first = memory.evaluate(&PROFILE, down, 94.0);
        assert_eq!(
            (first.raw, first.level, first.streak),
            (Level::Intervene, Level::Normal, 1)
        );
        assert_eq!(first.threshold, Some(95.0));
        let second = memory.evaluate(&PROFILE, down, 98.0);
        assert_eq!(
            (second.raw, second.level, second.streak),
            (Level::Warn, Level::Warn, 2)
        );
        assert_eq!(memory.level(), Level::Warn);
        // A reading between warn and clear is not breaching: the streak restarts.
        let calm = memory.evaluate(&PROFILE, down, 99.2);
        assert_eq!(
            (calm.level, calm.streak, calm.clear),
            (Level::Normal, 0, false)
        );
        let again = memory.evaluate(&PROFILE, down, 94.0);
        assert_eq!((again.level, again.streak), (Level::Normal, 1));
    }

    #[test]
    fn hysteresis_counts_recovery_only_past_clear() {
        let mut memory = PolicyMemory::default();
        let up = SignalId(0);
        assert_eq!(memory.evaluate(&PROFILE, up, 60.0).recovery, 0);
        // Between clear (40) and warn (50): normal but still not recovering.
        let between = memory.evaluate(&PROFILE, up, 45.0);
        assert_eq!(
            (between.level, between.clear, between.recovery),
            (Level::Normal, false, 0)
        );
        let at_clear = memory.evaluate(&PROFILE, up, 40.0);
        assert_eq!((at_clear.clear, at_clear.recovery), (false, 0));
        assert_eq!(memory.evaluate(&PROFILE, up, 39.0).recovery, 1);
        assert_eq!(memory.evaluate(&PROFILE, up, 10.0).recovery, 2);
        // One breaching reading restarts the count.
        assert_eq!(memory.evaluate(&PROFILE, up, 45.0).recovery, 0);
        assert_eq!(memory.evaluate(&PROFILE, up, 1.0).recovery, 1);
    }

    #[test]
    fn recovery_needs_every_rule_clear() {
        let mut memory = PolicyMemory::default();
        let (up, down) = (SignalId(0), SignalId(1));
        // A rule never seen counts as clear.
        assert_eq!(memory.evaluate(&PROFILE, up, 1.0).recovery, 1);
        assert_eq!(memory.evaluate(&PROFILE, down, 99.2).recovery, 0);
        // `up` is clear but `down`'s latest reading is not.
        assert_eq!(memory.evaluate(&PROFILE, up, 1.0).recovery, 0);
        assert_eq!(memory.evaluate(&PROFILE, down, 99.9).recovery, 1);
        assert_eq!(memory.evaluate(&PROFILE, up, 1.0).recovery, 2);
    }

    #[test]
    fn unknown_signal_is_normal_and_not_an_evaluation() {
        let mut memory = PolicyMemory::default();
        memory.evaluate(&PROFILE, SignalId(0), 1.0);
        let other = memory.evaluate(&PROFILE, SignalId(7), 1e9);
        assert_eq!(
            (other.rule, other.level, other.recovery),
            (None, Level::Normal, 1)
        );
    }

    #[test]
    fn tenant_level_and_trigger_follow_the_worst_rule() {
        let mut memory = PolicyMemory::default();
        assert_eq!(memory.level(), Level::Normal);
        assert_eq!(memory.trigger(&PROFILE), None);
        memory.evaluate(&PROFILE, SignalId(0), 60.0);
        assert_eq!(memory.level(), Level::Warn);
        assert_eq!(memory.trigger(&PROFILE), None);
        memory.evaluate(&PROFILE, SignalId(0), 150.0);
        assert_eq!(memory.level(), Level::Intervene);
        assert_eq!(memory.trigger(&PROFILE), Some(&RULES[0]));
        memory.reset_rules();
        assert_eq!((memory.level(), memory.recovery()), (Level::Normal, 0));
    }

    #[test]
    fn cooldown_blocks_the_same_action_until_it_expires() {
        let mut memory = PolicyMemory::default();
        let throttle = [ActionId(0)];
        assert_eq!(
            memory.admit(&PROFILE, &throttle, ts(0)),
            Ok(vec![ActionId(0)])
        );
        memory.record_dispatch(PROFILE.max_actions_per_hour, &throttle, ts(0));
        let blocked = Block::Cooldown {
            action: ActionId(0),
            until: ts(300),
        };
        assert_eq!(memory.admit(&PROFILE, &throttle, ts(1)), Err(blocked));
        assert_eq!(
            memory.admit(&PROFILE, &throttle, Timestamp(299_999)),
            Err(blocked)
        );
        assert_eq!(
            memory.admit(&PROFILE, &throttle, ts(300)),
            Ok(vec![ActionId(0)])
        );
        // Another action is not cooled down: only it runs.
        assert_eq!(
            memory.admit(&PROFILE, &[ActionId(0), ActionId(1)], ts(1)),
            Ok(vec![ActionId(1)])
        );
        // No cooldown configured: never blocks.
        assert_eq!(
            memory.admit(&UNLIMITED, &throttle, ts(0)),
            Ok(vec![ActionId(0)])
        );
    }

    #[test]
    fn budget_caps_dispatches_per_rolling_hour() {
        let mut memory = PolicyMemory::default();
        let both = [ActionId(0), ActionId(1)];
        memory.record_dispatch(PROFILE.max_actions_per_hour, &both, ts(0));
        assert_eq!(memory.used_in_hour(ts(0)), 2);
        // Cooldown passed, but two more would make four of three.
        assert_eq!(
            memory.admit(&PROFILE, &both, ts(400)),
            Err(Block::Budget { used: 2, max: 3 })
        );
        assert_eq!(
            memory.admit(&PROFILE, &[ActionId(1)], ts(400)),
            Ok(vec![ActionId(1)])
        );
        memory.record_dispatch(PROFILE.max_actions_per_hour, &[ActionId(1)], ts(400));
        assert_eq!(
            memory.admit(&PROFILE, &[ActionId(0)], ts(3599)),
            Err(Block::Budget { used: 3, max: 3 })
        );
        // Exactly one hour after the first dispatches they no longer count.
        assert_eq!(memory.used_in_hour(ts(3600)), 1);
        assert_eq!(
            memory.admit(&PROFILE, &[ActionId(0)], ts(3600)),
            Ok(vec![ActionId(0)])
        );
        assert_eq!(memory.admit(&PROFILE, &both, ts(4000)), Ok(both.to_vec()));
        // Without a budget nothing is counted.
        assert_eq!(memory.admit(&UNLIMITED, &both, ts(1)), Ok(both.to_vec()));
        assert_eq!(memory.admit(&PROFILE, &[], ts(1)), Err(Block::NoActions));
    }

    #[test]
    fn budget_counts_dispatches_made_under_another_profile() {
        // A tenant on the unlimited plan acts three times, then moves to the
        // budgeted plan: those dispatches are still within the hour.
        let mut memory = PolicyMemory::default();
        let keep = PROFILE.max_actions_per_hour;
        for (i, action) in [0, 1, 0].into_iter().enumerate() {
            let at = ts(i as i64 * 100);
            assert!(memory.admit(&UNLIMITED, &[ActionId(action)], at).is_ok());
            memory.record_dispatch(keep, &[ActionId(action)], at);
        }
        assert_eq!(
            memory.admit(&PROFILE, &[ActionId(1)], ts(900)),
            Err(Block::Budget { used: 3, max: 3 })
        );
        // With no budget anywhere in the SKU nothing is kept.
        let mut free = PolicyMemory::default();
        free.record_dispatch(None, &[ActionId(0)], ts(0));
        assert_eq!(free.used_in_hour(ts(0)), 0);
    }

    #[test]
    fn history_stays_bounded_by_the_budget() {
        let mut memory = PolicyMemory::default();
        for i in 0..100 {
            memory.record_dispatch(
                PROFILE.max_actions_per_hour,
                &[ActionId(0), ActionId(1)],
                ts(i),
            );
        }
        let history = memory.history.as_ref().unwrap();
        assert_eq!(history.recent.len(), 3);
        assert_eq!(history.last.len(), 2);
    }

    #[test]
    fn idle_memory_is_empty() {
        let memory = PolicyMemory::default();
        assert_eq!(memory.heap_bytes(), 0);
        assert!(size_of::<PolicyMemory>() <= 32);
    }
}
