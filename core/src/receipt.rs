//! What a decision looks like on the ledger, and how a stored receipt turns
//! back into the input it records.
//!
//! A receipt is canonical JSON (RFC 8785, via [`crate::canonical::to_vec`])
//! with the fields `v, tenant, seq, kind, at, sku, spec_sha256, from, to,
//! event, decision, actions, prev` (plus `action` on `action` receipts).
//! Receipts carry no floats: readings and thresholds are decimal strings
//! (`f64` `Display`, which round-trips).
//!
//! Replay: [`parse`] gives back the [`Input`] a receipt recorded (or that it
//! was a timer firing, or an `action` effect that replays by itself), so
//! feeding stored receipts through the same step function rebuilds the
//! identical state.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::canonical::direct::{Canon, object};
use crate::canonical::{self, CanonicalError};
use crate::clock::Timestamp;
use crate::entitlement::{EntitlementError, EntitlementEvent, EntitlementState};
use crate::fsm::{Decision, State};
use crate::marketplace::{Call, Notice};
use crate::policy::{Block, Level};
use crate::sku::{ActionId, PolicyPack, ProfileId, SignalId, Sku};
use crate::tenant::TenantId;

/// The receipt format version, field `v`.
pub const VERSION: u32 = 1;

/// What kind of thing a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An accepted signal and the decision it caused.
    Signal,
    /// One dispatched action (an effect of the previous decision receipt).
    Action,
    /// The outcome of a dispatched action.
    ActionResult,
    /// A marketplace entitlement event (valid or refused).
    Entitlement,
    /// The outcome of a Procurement API call (Google Cloud Marketplace).
    Procurement,
    /// A timer-driven transition (intervention timeout, degraded retry).
    Timeout,
    /// An operator reset.
    Reset,
    /// Input refused after authentication; no transition.
    Rejected,
    /// A tenant-scoped read token issued or revoked; no transition.
    Access,
}

impl Kind {
    /// The snake_case name used in receipts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Signal => "signal",
            Kind::Action => "action",
            Kind::ActionResult => "action_result",
            Kind::Entitlement => "entitlement",
            Kind::Procurement => "procurement",
            Kind::Timeout => "timeout",
            Kind::Reset => "reset",
            Kind::Rejected => "rejected",
            Kind::Access => "access",
        }
    }
}

/// Which door a signal came in by. Event ids are deduplicated per door: an
/// id sent on `/v1/signals` never stands for a Pub/Sub `messageId`, so the
/// API token cannot pre-empt (or be mistaken for) a Pub/Sub delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Via {
    /// `POST /v1/signals`, or a replayed line.
    #[default]
    Api,
    /// `POST /pubsub/push` (its id is the `messageId`).
    PubSub,
}

impl Via {
    /// How receipts name it (`None`: the API, the default, is not written).
    pub const fn receipt_name(self) -> Option<&'static str> {
        match self {
            Via::Api => None,
            Via::PubSub => Some("pubsub"),
        }
    }
}

/// Something that comes into a tenant's governor from outside.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A signal reading (`id`: the message id, for dedupe).
    Signal {
        /// Which signal.
        signal: SignalId,
        /// The reading; finite and inside the signal's range.
        value: f64,
        /// Dedupe id (signal id or Pub/Sub `messageId`).
        id: Option<String>,
        /// When the sender says it measured the reading (its `at`, or the
        /// Pub/Sub publish time): recorded, never decided on.
        observed: Option<Timestamp>,
        /// The door it came in by (ids are deduplicated per door).
        via: Via,
    },
    /// A marketplace entitlement event.
    Entitlement {
        /// The event.
        event: EntitlementEvent,
        /// Dedupe id of the marketplace event.
        id: Option<String>,
        /// The profile the plan maps to, if the event names one.
        plan: Option<ProfileId>,
        /// When the sender says the event happened: recorded, never decided on.
        observed: Option<Timestamp>,
        /// The Google Cloud Marketplace notification it follows, if any.
        marketplace: Option<Box<Notice>>,
    },
    /// The outcome of a Procurement API call, after its retries: recorded,
    /// never a transition (Google's next notification says what changed).
    Procurement {
        /// The call.
        call: Call,
        /// The entitlement or account id it acted on.
        target: String,
        /// `{tenant}:{seq}:{call}`: the deciding receipt and the call.
        key: String,
        /// Whether it succeeded.
        ok: bool,
        /// What the API said (status, error), with the attempt count.
        detail: Option<String>,
    },
    /// The outcome of a dispatched action, after the actuator's retries.
    ActionResult {
        /// The dispatch's key (it names the action and the deciding receipt).
        key: IdempotencyKey,
        /// Whether it succeeded.
        ok: bool,
        /// Free-text detail from the adapter (status, error).
        detail: Option<String>,
    },
    /// An operator reset.
    Reset {
        /// Why, as the operator said.
        reason: String,
    },
    /// Input refused after authentication (e.g. out-of-range value).
    Rejected {
        /// Why it was refused.
        reason: String,
        /// What came in (decimals are stored as strings).
        event: serde_json::Value,
    },
    /// A tenant-scoped read token issued or revoked by the operator: only
    /// its id and the SHA-256 of its secret are recorded, never the secret.
    Access {
        /// Issued or revoked.
        change: AccessChange,
        /// The token's id (16 lowercase hex digits).
        token: String,
        /// SHA-256 of the token's secret, lowercase hex (issued tokens).
        digest: Option<String>,
    },
}

/// What an [`Input::Access`] does to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessChange {
    /// The token may read the tenant's receipts and proofs from now on.
    Issue,
    /// The token no longer may.
    Revoke,
}

impl AccessChange {
    /// The name in receipts (`event.access`).
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessChange::Issue => "token_issued",
            AccessChange::Revoke => "token_revoked",
        }
    }

    fn parse(name: &str) -> Option<AccessChange> {
        [AccessChange::Issue, AccessChange::Revoke]
            .into_iter()
            .find(|c| c.as_str() == name)
    }
}

impl Input {
    /// The receipt kind this input is recorded as.
    pub const fn kind(&self) -> Kind {
        match self {
            Input::Signal { .. } => Kind::Signal,
            Input::Entitlement { .. } => Kind::Entitlement,
            Input::Procurement { .. } => Kind::Procurement,
            Input::ActionResult { .. } => Kind::ActionResult,
            Input::Reset { .. } => Kind::Reset,
            Input::Rejected { .. } => Kind::Rejected,
            Input::Access { .. } => Kind::Access,
        }
    }

    /// The namespace its dedupe id lives in: the receipt kind, and for
    /// signals (and their rejections) the door they came in by.
    pub fn id_space(&self) -> &'static str {
        match self {
            Input::Signal {
                via: Via::PubSub, ..
            } => "signal/pubsub",
            Input::Entitlement {
                marketplace: Some(_),
                ..
            } => "entitlement/marketplace",
            Input::Rejected { event, .. } => match event.get("via").and_then(|v| v.as_str()) {
                Some("pubsub") => "rejected/pubsub",
                Some("marketplace") => "rejected/marketplace",
                _ => "rejected",
            },
            other => other.kind().as_str(),
        }
    }

    /// The dedupe id, if the input carries one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Input::Signal { id, .. } | Input::Entitlement { id, .. } => id.as_deref(),
            // A redelivered poison message (Pub/Sub retries every 4xx) must
            // not write a `rejected` receipt per delivery.
            Input::Rejected { event, .. } => event.get("id").and_then(|id| id.as_str()),
            Input::ActionResult { .. }
            | Input::Procurement { .. }
            | Input::Reset { .. }
            | Input::Access { .. } => None,
        }
    }
}

/// Errors building or parsing receipts.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The receipt has no canonical form (a bug: receipts carry no floats).
    #[error("receipt has no canonical form")]
    Canonical(#[source] CanonicalError),
    /// Stored bytes are not a receipt.
    #[error("stored receipt is not valid json")]
    Json(#[source] serde_json::Error),
    /// A stored receipt lacks a field its kind needs.
    #[error("`{kind}` receipt lacks `event.{field}`")]
    MissingField {
        /// The receipt's kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A stored receipt names a signal, action or profile this SKU lacks.
    #[error("receipt names unknown {what} `{name}`")]
    Unknown {
        /// `signal`, `action` or `profile`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A stored reading is not a decimal number.
    #[error("receipt value `{text}` is not a decimal number")]
    BadValue {
        /// The stored text.
        text: String,
    },
    /// A stored entitlement event name is unknown.
    #[error("receipt carries an unknown entitlement event")]
    Entitlement(#[source] EntitlementError),
    /// A receipt's tenant or sequence number is not what the ledger says.
    #[error(
        "receipt says tenant `{tenant}` seq `{seq}`, stored as `{stored_tenant}` seq `{stored_seq}`"
    )]
    Mismatch {
        /// Tenant in the receipt.
        tenant: String,
        /// Seq in the receipt.
        seq: u64,
        /// Tenant the ledger stored it under.
        stored_tenant: String,
        /// Seq the ledger stored it under.
        stored_seq: u64,
    },
    /// The receipt was written by another SKU: the wrong ledger.
    #[error(
        "receipt was written by sku `{found}`, this governor is sku `{expected}`: the wrong ledger"
    )]
    OtherSku {
        /// The receipt's `sku`.
        found: String,
        /// This SKU's id.
        expected: &'static str,
    },
}

/// The idempotency key of a dispatched action: the tenant, the seq of the
/// receipt that decided the dispatch, and the action. Stable across retries.
///
/// Typed everywhere inside the process; its text `{tenant}:{seq}:{action}`
/// (readable and header-safe: tenant ids are `[A-Za-z0-9._-]`) exists only
/// at the wire: receipts, the `Idempotency-Key` header, a command's
/// arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The tenant the action acts on.
    pub tenant: TenantId,
    /// Seq of the deciding receipt.
    pub seq: u64,
    /// The action.
    pub action: ActionId,
    /// The action's name in the SKU (for the text form).
    name: &'static str,
}

impl IdempotencyKey {
    /// The key of `action`, dispatched for `tenant` by receipt `seq`.
    pub fn new(sku: &'static Sku, tenant: TenantId, seq: u64, action: ActionId) -> IdempotencyKey {
        IdempotencyKey {
            tenant,
            seq,
            action,
            name: sku.action(action).name,
        }
    }

    /// Reads the text form back (`None` when it is not a key of `pack`'s
    /// actions for a valid tenant id).
    pub fn parse(pack: &dyn PolicyPack, text: &str) -> Option<IdempotencyKey> {
        let mut parts = text.rsplitn(3, ':');
        let name = parts.next()?;
        let seq = parts.next()?.parse().ok()?;
        let tenant = TenantId::new(parts.next()?).ok()?;
        let sku = pack.sku();
        let index = sku.actions.iter().position(|a| a.name == name)?;
        let action = ActionId(u16::try_from(index).ok()?);
        Some(IdempotencyKey::new(sku, tenant, seq, action))
    }

    /// The action's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.tenant, self.seq, self.name)
    }
}

/// A decimal string for a reading or threshold (`f64` `Display` round-trips).
pub fn decimal(value: f64) -> String {
    value.to_string()
}

/// [`decimal`] on the stack when it fits, as nearly every reading and
/// threshold does (`f64` `Display` writes no exponent, so a huge or tiny
/// value can run to hundreds of digits: those go on the heap).
enum Decimal {
    Short { digits: [u8; 32], len: u8 },
    Long(String),
}

impl Decimal {
    fn of(value: f64) -> Decimal {
        use std::io::Write;
        let mut digits = [0; 32];
        let mut rest = &mut digits[..];
        if write!(rest, "{value}").is_ok() {
            let len = (32 - rest.len()) as u8;
            return Decimal::Short { digits, len };
        }
        Decimal::Long(decimal(value))
    }

    fn as_str(&self) -> &str {
        match self {
            // `Display` wrote UTF-8 (ASCII): this never falls back.
            Decimal::Short { digits, len } => {
                std::str::from_utf8(&digits[..usize::from(*len)]).unwrap_or_default()
            }
            Decimal::Long(text) => text,
        }
    }
}

impl std::fmt::Debug for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Canon for Decimal {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        self.as_str().put(out)
    }
}

#[cfg(debug_assertions)]
impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What a receipt records beyond its header.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// An input and the FSM's decision on it (`None` when no step ran:
    /// rejected input, refused entitlement event).
    Input {
        /// The input.
        input: &'a Input,
        /// The decision, if a step ran.
        decision: Option<&'a Decision>,
        /// Entitlement `(from, to)` for entitlement events.
        entitlement: Option<(EntitlementState, EntitlementState)>,
        /// Why an entitlement event was refused.
        refused: Option<&'a EntitlementError>,
    },
    /// A timer fired.
    Timer {
        /// The deadline that was due.
        due: Timestamp,
        /// The FSM's decision.
        decision: &'a Decision,
    },
    /// One dispatched action.
    Action {
        /// Its idempotency key (the action and the deciding receipt's seq).
        key: &'a IdempotencyKey,
        /// Whether it undoes an earlier action.
        undo: bool,
    },
}

/// One receipt, ready to be encoded.
#[derive(Debug, Clone, Copy)]
pub struct Receipt<'a> {
    /// The tenant whose chain it extends.
    pub tenant: &'a TenantId,
    /// Its position in the chain (from 1).
    pub seq: u64,
    /// When it was decided: the deciding clock (the server's, or the
    /// replayed line's), never earlier than the tenant's previous receipt.
    pub at: Timestamp,
    /// Hash of the previous receipt (genesis: zeros).
    pub prev: &'a [u8; 32],
    /// State before.
    pub from: State,
    /// State after (`from` when nothing changed).
    pub to: State,
    /// The tenant's level after the step.
    pub level: Level,
    /// Actions dispatched by this receipt, by their keys.
    pub actions: &'a [IdempotencyKey],
    /// The rest.
    pub body: Body<'a>,
}

// The fields of every `*Doc` struct are declared in canonical (sorted) order,
// so the canonical writer streams them without reordering.

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(debug_assertions, derive(Serialize))]
struct EventDoc<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    access: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    call: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision_seq: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    digest: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due: Option<Timestamp>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    entitlement: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<serde_json::Value>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    marketplace: Option<MarketplaceDoc<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    plan: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    signal: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    timer: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    token: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    value: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    via: Option<Cow<'a, str>>,
}

/// `event.marketplace`: a notification's facts, or a Procurement call's target.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(debug_assertions, derive(Serialize))]
struct MarketplaceDoc<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    account: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    entitlement: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    plan: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    state: Option<Cow<'a, str>>,
}

impl<'a> MarketplaceDoc<'a> {
    fn of(notice: &'a Notice) -> MarketplaceDoc<'a> {
        let text = |s: &'a Option<String>| s.as_deref().map(Cow::Borrowed);
        MarketplaceDoc {
            account: text(&notice.account),
            entitlement: text(&notice.entitlement),
            event_type: Some(Cow::Borrowed(&notice.event_type)),
            plan: text(&notice.plan),
            state: text(&notice.state),
        }
    }

    fn notice(self) -> Notice {
        let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
        Notice {
            event_type: owned(self.event_type).unwrap_or_default(),
            entitlement: owned(self.entitlement),
            account: owned(self.account),
            state: owned(self.state),
            plan: owned(self.plan),
        }
    }
}

#[derive(Debug)]
#[cfg_attr(debug_assertions, derive(Serialize))]
struct BlockDoc {
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    action: Option<&'static str>,
    kind: &'static str,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    max: Option<u32>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    until: Option<Timestamp>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    used: Option<u32>,
}

#[derive(Debug)]
#[cfg_attr(debug_assertions, derive(Serialize))]
struct TransitionDoc {
    from: &'static str,
    to: &'static str,
}

#[derive(Debug)]
#[cfg_attr(debug_assertions, derive(Serialize))]
struct DecisionDoc<'a> {
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    block: Option<BlockDoc>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    clear: Option<bool>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    deadline: Option<Timestamp>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    dwell: Option<u16>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    entitlement: Option<TransitionDoc>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    error: Option<String>,
    /// The tenant's level after the step (worst rule).
    level: &'static str,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    raw_level: Option<&'static str>,
    reason: &'static str,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    recovery: Option<u16>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    recovery_needed: Option<u16>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    rule: Option<&'static str>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    signal_level: Option<&'static str>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    streak: Option<u16>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    threshold: Option<Decimal>,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    value: Option<&'a str>,
}

impl<'a> DecisionDoc<'a> {
    fn new(reason: &'static str, level: Level) -> DecisionDoc<'a> {
        DecisionDoc {
            reason,
            level: level.as_str(),
            rule: None,
            signal_level: None,
            raw_level: None,
            value: None,
            threshold: None,
            streak: None,
            dwell: None,
            clear: None,
            recovery: None,
            recovery_needed: None,
            block: None,
            deadline: None,
            entitlement: None,
            error: None,
        }
    }

    /// `value`: the signal's value in decimal, if the input was a signal.
    fn fill(&mut self, sku: &Sku, decision: &Decision, to: State, value: Option<&'a str>) {
        self.recovery_needed = Some(decision.recovery_needed);
        if let Some(ev) = decision.evaluation {
            self.signal_level = Some(ev.level.as_str());
            self.raw_level = Some(ev.raw.as_str());
            self.value = value;
            self.threshold = ev.threshold.map(Decimal::of);
            self.clear = Some(ev.clear);
            self.recovery = Some(ev.recovery);
            if let Some(rule) = ev.rule {
                self.rule = Some(sku.signal(rule.signal).name);
                self.streak = Some(ev.streak);
                self.dwell = Some(rule.dwell);
            }
        }
        self.block = decision.block.map(|block| match block {
            Block::Cooldown { action, until } => BlockDoc {
                kind: block.as_str(),
                action: Some(sku.action(action).name),
                until: Some(until),
                used: None,
                max: None,
            },
            Block::Budget { used, max } => BlockDoc {
                kind: block.as_str(),
                action: None,
                until: None,
                used: Some(used),
                max: Some(max),
            },
            Block::NoActions => BlockDoc {
                kind: block.as_str(),
                action: None,
                until: None,
                used: None,
                max: None,
            },
        });
        self.deadline = match to {
            State::Intervening { deadline } => Some(deadline),
            State::Degraded { retry_at } => Some(retry_at),
            State::Boot | State::Stable | State::Warning | State::Refusing => None,
        };
    }
}

#[derive(Debug)]
#[cfg_attr(debug_assertions, derive(Serialize))]
struct ActionDoc {
    idempotency_key: String,
    name: &'static str,
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    undo: Option<bool>,
}

#[derive(Debug)]
#[cfg_attr(debug_assertions, derive(Serialize))]
struct ReceiptDoc<'a> {
    #[cfg_attr(debug_assertions, serde(skip_serializing_if = "Option::is_none"))]
    action: Option<ActionDoc>,
    actions: Vec<ActionDoc>,
    at: Timestamp,
    decision: DecisionDoc<'a>,
    event: EventDoc<'a>,
    from: &'static str,
    kind: Kind,
    prev: &'a str,
    seq: u64,
    sku: &'static str,
    spec_sha256: &'static str,
    tenant: &'a str,
    to: &'static str,
    v: u32,
}

// How the documents are written (`canonical::direct`): their members as
// declared above; the macro checks at compile time that they are in order.

impl Canon for Kind {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        self.as_str().put(out)
    }
}

impl Canon for EventDoc<'_> {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        object!(out, self; access, action, call, decision_seq, detail, digest, due,
            entitlement, id, idempotency_key, input, marketplace, observed_at, ok, plan,
            reason, signal, timer, token, value, via)
    }
}

impl Canon for MarketplaceDoc<'_> {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        object!(out, self; account, entitlement, event_type, plan, state)
    }
}

impl Canon for BlockDoc {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        object!(out, self; action, kind, max, until, used)
    }
}

impl Canon for TransitionDoc {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        object!(out, self; from, to)
    }
}

impl Canon for DecisionDoc<'_> {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        object!(out, self; block, clear, deadline, dwell, entitlement, error, level,
            raw_level, reason, recovery, recovery_needed, rule, signal_level, streak,
            threshold, value)
    }
}

impl Canon for ActionDoc {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        object!(out, self; idempotency_key, name, undo)
    }
}

impl Canon for ReceiptDoc<'_> {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        object!(out, self; action, actions, at, decision, event, from, kind, prev, seq, sku,
            spec_sha256, tenant, to, v)
    }
}

/// Lowercase hex of a hash, on the stack (the hot path).
fn lower_hex(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0; 64];
    // Fails only when the lengths disagree, which these cannot.
    let _ = hex::encode_to_slice(bytes, &mut out);
    out
}

/// Replaces every number that is not a safe integer by its decimal string.
fn without_floats(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            let safe = n
                .as_i64()
                .is_some_and(|i| i.unsigned_abs() <= canonical::MAX_SAFE_INTEGER);
            if safe {
                value.clone()
            } else {
                Value::String(n.to_string())
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(without_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), without_floats(v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) | Value::String(_) => value.clone(),
    }
}

impl Receipt<'_> {
    /// The receipt's kind.
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Input { input, .. } => input.kind(),
            Body::Timer { .. } => Kind::Timeout,
            Body::Action { .. } => Kind::Action,
        }
    }

    /// The canonical bytes that go on the ledger.
    pub fn encode(&self, sku: &'static Sku) -> Result<Vec<u8>, ReceiptError> {
        // A signal's value goes in twice (the event's and the decision's).
        let signal_value = match self.body {
            Body::Input {
                input: Input::Signal { value, .. },
                ..
            } => Some(Decimal::of(*value)),
            _ => None,
        };
        let mut event = EventDoc::default();
        let mut decision;
        let mut action = None;
        match self.body {
            Body::Input {
                input,
                decision: step,
                entitlement,
                refused,
            } => {
                let reason = step.map_or(self.kind().as_str(), |d| d.reason.as_str());
                decision = DecisionDoc::new(reason, self.level);
                match input {
                    Input::Signal {
                        signal,
                        id,
                        observed,
                        via,
                        ..
                    } => {
                        event.id = id.as_deref().map(Cow::Borrowed);
                        event.observed_at = *observed;
                        event.via = via.receipt_name().map(Cow::Borrowed);
                        event.signal = Some(Cow::Borrowed(sku.signal(*signal).name));
                        event.value = signal_value.as_ref().map(|v| Cow::Borrowed(v.as_str()));
                    }
                    Input::Entitlement {
                        event: e,
                        id,
                        plan,
                        observed,
                        marketplace,
                    } => {
                        event.id = id.as_deref().map(Cow::Borrowed);
                        event.observed_at = *observed;
                        event.entitlement = Some(Cow::Borrowed(e.as_str()));
                        event.plan = plan.map(|p| Cow::Borrowed(sku.profile(p).name));
                        event.marketplace = marketplace.as_deref().map(MarketplaceDoc::of);
                    }
                    Input::Procurement {
                        call,
                        target,
                        key,
                        ok,
                        detail,
                    } => {
                        event.call = Some(Cow::Borrowed(call.as_str()));
                        let target = Some(Cow::Borrowed(target.as_str()));
                        event.marketplace = Some(if *call == Call::ApproveAccount {
                            MarketplaceDoc {
                                account: target,
                                ..MarketplaceDoc::default()
                            }
                        } else {
                            MarketplaceDoc {
                                entitlement: target,
                                ..MarketplaceDoc::default()
                            }
                        });
                        event.idempotency_key = Some(Cow::Borrowed(key));
                        event.ok = Some(*ok);
                        event.detail = detail.as_deref().map(Cow::Borrowed);
                    }
                    Input::ActionResult { key, ok, detail } => {
                        event.action = Some(Cow::Borrowed(key.name()));
                        event.idempotency_key = Some(Cow::Owned(key.to_string()));
                        event.ok = Some(*ok);
                        event.detail = detail.as_deref().map(Cow::Borrowed);
                    }
                    Input::Reset { reason } => event.reason = Some(Cow::Borrowed(reason)),
                    Input::Rejected { reason, event: e } => {
                        event.reason = Some(Cow::Borrowed(reason));
                        event.input = Some(without_floats(e));
                    }
                    Input::Access {
                        change,
                        token,
                        digest,
                    } => {
                        event.access = Some(Cow::Borrowed(change.as_str()));
                        event.token = Some(Cow::Borrowed(token));
                        event.digest = digest.as_deref().map(Cow::Borrowed);
                    }
                }
                if let Some(step) = step {
                    decision.fill(
                        sku,
                        step,
                        self.to,
                        signal_value.as_ref().map(Decimal::as_str),
                    );
                }
                decision.entitlement = entitlement.map(|(from, to)| TransitionDoc {
                    from: from.as_str(),
                    to: to.as_str(),
                });
                if let Some(err) = refused {
                    decision.reason = "entitlement_refused";
                    decision.error = Some(err.to_string());
                }
            }
            Body::Timer { due, decision: d } => {
                event.timer = Some(Cow::Borrowed(match self.from {
                    State::Intervening { .. } => "intervention_deadline",
                    State::Boot
                    | State::Stable
                    | State::Warning
                    | State::Degraded { .. }
                    | State::Refusing => "degraded_retry",
                }));
                event.due = Some(due);
                decision = DecisionDoc::new(d.reason.as_str(), self.level);
                decision.fill(sku, d, self.to, None);
            }
            Body::Action { key, undo } => {
                event.decision_seq = Some(key.seq);
                decision = DecisionDoc::new(if undo { "undo" } else { "dispatch" }, self.level);
                action = Some(ActionDoc {
                    name: key.name(),
                    idempotency_key: key.to_string(),
                    undo: Some(undo),
                });
            }
        }
        let prev = lower_hex(self.prev);
        let doc = ReceiptDoc {
            v: VERSION,
            tenant: self.tenant.as_str(),
            seq: self.seq,
            kind: self.kind(),
            at: self.at,
            sku: sku.id,
            spec_sha256: sku.spec_sha256,
            from: self.from.name(),
            to: self.to.name(),
            event,
            decision,
            actions: self
                .actions
                .iter()
                .map(|key| ActionDoc {
                    name: key.name(),
                    idempotency_key: key.to_string(),
                    undo: None,
                })
                .collect(),
            action,
            // Hex digits are ASCII: this never falls back.
            prev: std::str::from_utf8(&prev).unwrap_or_default(),
        };
        // Most receipts are 500–900 bytes: one allocation, no regrowth.
        let mut out = Vec::with_capacity(1024);
        doc.put(&mut out).map_err(ReceiptError::Canonical)?;
        // Debug builds (every test of every crate) check each receipt
        // against the generic serializer; the documents derive `Serialize`
        // there only.
        #[cfg(debug_assertions)]
        assert_eq!(
            canonical::to_vec(&doc).map_err(ReceiptError::Canonical)?,
            out,
            "the receipt's writer and the canonical serializer disagree"
        );
        Ok(out)
    }
}

/// What a stored receipt carries, for replay.
#[derive(Debug, Clone, PartialEq)]
pub enum Carried {
    /// An input to feed through the registry's step again.
    Input(Input),
    /// A timer firing at the receipt's `at`.
    Timer,
    /// An `action` receipt: an effect of the decision before it; replaying
    /// that decision reproduces it.
    Effect,
}

/// A stored receipt, parsed back.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The tenant.
    pub tenant: TenantId,
    /// Its sequence number.
    pub seq: u64,
    /// Its kind.
    pub kind: Kind,
    /// When.
    pub at: Timestamp,
    /// The state name after it (`None` if not a known state name).
    pub to: Option<&'static str>,
    /// What to replay.
    pub carried: Carried,
}

#[derive(Debug, Deserialize)]
struct StoredDoc<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    seq: u64,
    kind: Kind,
    at: Timestamp,
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(borrow)]
    event: EventDoc<'a>,
}

/// Parses stored receipt bytes back into what they carry.
pub fn parse(pack: &dyn PolicyPack, bytes: &[u8]) -> Result<Parsed, ReceiptError> {
    let doc: StoredDoc<'_> = serde_json::from_slice(bytes).map_err(ReceiptError::Json)?;
    let expected = pack.sku().id;
    if doc.sku != expected {
        return Err(ReceiptError::OtherSku {
            found: doc.sku.into_owned(),
            expected,
        });
    }
    let kind = doc.kind;
    let missing = |field: &'static str| ReceiptError::MissingField {
        kind: kind.as_str(),
        field,
    };
    let event = doc.event;
    let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
    let carried =
        match kind {
            Kind::Signal => {
                let name = event.signal.ok_or_else(|| missing("signal"))?;
                let signal = pack
                    .signal_by_name(&name)
                    .ok_or_else(|| ReceiptError::Unknown {
                        what: "signal",
                        name: name.into_owned(),
                    })?;
                let text = event.value.ok_or_else(|| missing("value"))?;
                let value = text.parse::<f64>().map_err(|_| ReceiptError::BadValue {
                    text: text.clone().into_owned(),
                })?;
                let via = match event.via.as_deref() {
                    None => Via::Api,
                    Some("pubsub") => Via::PubSub,
                    Some(other) => {
                        return Err(ReceiptError::Unknown {
                            what: "door",
                            name: other.to_owned(),
                        });
                    }
                };
                Carried::Input(Input::Signal {
                    signal,
                    value,
                    id: owned(event.id),
                    observed: event.observed_at,
                    via,
                })
            }
            Kind::Entitlement => {
                let name = event.entitlement.ok_or_else(|| missing("entitlement"))?;
                let e = name
                    .parse::<EntitlementEvent>()
                    .map_err(ReceiptError::Entitlement)?;
                let plan =
                    match event.plan {
                        Some(plan) => Some(pack.profile_by_name(&plan).ok_or_else(|| {
                            ReceiptError::Unknown {
                                what: "profile",
                                name: plan.into_owned(),
                            }
                        })?),
                        None => None,
                    };
                Carried::Input(Input::Entitlement {
                    event: e,
                    id: owned(event.id),
                    plan,
                    observed: event.observed_at,
                    marketplace: event.marketplace.map(|m| Box::new(m.notice())),
                })
            }
            Kind::Procurement => {
                let name = event.call.ok_or_else(|| missing("call"))?;
                let call = name.parse::<Call>().map_err(|_| ReceiptError::Unknown {
                    what: "procurement call",
                    name: name.into_owned(),
                })?;
                let doc = event.marketplace.ok_or_else(|| missing("marketplace"))?;
                let target = doc
                    .entitlement
                    .or(doc.account)
                    .ok_or_else(|| missing("marketplace.entitlement"))?;
                Carried::Input(Input::Procurement {
                    call,
                    target: target.into_owned(),
                    key: owned(event.idempotency_key).ok_or_else(|| missing("idempotency_key"))?,
                    ok: event.ok.ok_or_else(|| missing("ok"))?,
                    detail: owned(event.detail),
                })
            }
            Kind::ActionResult => {
                let name = event.action.ok_or_else(|| missing("action"))?;
                let text = event
                    .idempotency_key
                    .ok_or_else(|| missing("idempotency_key"))?;
                let key = IdempotencyKey::parse(pack, &text)
                    .filter(|key| key.name() == name)
                    .ok_or_else(|| ReceiptError::Unknown {
                        what: "idempotency key",
                        name: text.into_owned(),
                    })?;
                Carried::Input(Input::ActionResult {
                    key,
                    ok: event.ok.ok_or_else(|| missing("ok"))?,
                    detail: owned(event.detail),
                })
            }
            Kind::Reset => Carried::Input(Input::Reset {
                reason: event.reason.ok_or_else(|| missing("reason"))?.into_owned(),
            }),
            Kind::Rejected => Carried::Input(Input::Rejected {
                reason: event.reason.ok_or_else(|| missing("reason"))?.into_owned(),
                event: event.input.unwrap_or(serde_json::Value::Null),
            }),
            Kind::Access => {
                let name = event.access.ok_or_else(|| missing("access"))?;
                let change = AccessChange::parse(&name).ok_or_else(|| ReceiptError::Unknown {
                    what: "access change",
                    name: name.into_owned(),
                })?;
                let digest = owned(event.digest);
                if change == AccessChange::Issue && digest.is_none() {
                    return Err(missing("digest"));
                }
                Carried::Input(Input::Access {
                    change,
                    token: owned(event.token).ok_or_else(|| missing("token"))?,
                    digest,
                })
            }
            Kind::Timeout => Carried::Timer,
            Kind::Action => Carried::Effect,
        };
    let tenant = TenantId::new(&doc.tenant).map_err(|_| ReceiptError::Unknown {
        what: "tenant",
        name: doc.tenant.clone().into_owned(),
    })?;
    let to = State::NAMES.into_iter().find(|n| *n == doc.to);
    Ok(Parsed {
        tenant,
        seq: doc.seq,
        kind,
        at: doc.at,
        to,
        carried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sku::{ActionDef, Adapter, TablePack};

    static ACTIONS: [ActionDef; 2] = [
        ActionDef {
            name: "throttle",
            adapter: Adapter::Log,
            undo: None,
            params: "{}",
            timeout_ms: 1,
            retries: 0,
        },
        ActionDef {
            name: "pause",
            adapter: Adapter::Log,
            undo: None,
            params: "{}",
            timeout_ms: 1,
            retries: 0,
        },
    ];
    /// A SKU with two actions and nothing else.
    static SKU: Sku = Sku {
        id: "keys",
        name: "Keys",
        version: "1.0.0",
        spec_sha256: "00",
        tenant_attribute: "tenant_id",
        max_tenants: 1,
        signals: &[],
        actions: &ACTIONS,
        profiles: &[],
        default_profile: ProfileId(0),
        governor: crate::sku::GovernorTiming {
            intervention_timeout_s: 1,
            recovery_evaluations: 1,
            degraded_retry_s: 1,
        },
        entitlement_required: false,
        marketplace: None,
        ingress: crate::sku::IngressDef {
            pubsub_audience: None,
            max_body_bytes: 1,
        },
    };
    static PACK: TablePack = TablePack(&SKU);

    #[test]
    fn idempotency_keys_round_trip_through_their_text_only_at_the_wire() {
        let tenant = TenantId::new("acme.eu-1").unwrap();
        let key = IdempotencyKey::new(&SKU, tenant, 42, ActionId(1));
        assert_eq!(key.to_string(), "acme.eu-1:42:pause");
        assert_eq!(
            IdempotencyKey::parse(&PACK, "acme.eu-1:42:pause"),
            Some(key)
        );
        for bad in [
            "acme:x:throttle",
            "throttle",
            "acme:1:unknown",
            "../x:1:throttle",
            ":1:throttle",
        ] {
            assert_eq!(IdempotencyKey::parse(&PACK, bad), None, "{bad}");
        }
    }

    /// Strings a tenant or operator controls reach receipts as they were
    /// sent: the straight writer escapes them as the generic serializer
    /// does (`encode` compares the two in debug builds), and they read
    /// back unchanged.
    #[test]
    fn hostile_strings_are_written_as_the_serializer_writes_them() {
        use crate::fsm::State;
        use crate::policy::Level;
        let hostile =
            "quote \" back\\slash \u{0} nul \u{1f} unit\n\r\t\u{8}\u{c} é 😀 \u{2028} </script>";
        let tenant = TenantId::new("acme").unwrap();
        let inputs = [
            Input::Reset {
                reason: hostile.to_owned(),
            },
            Input::Rejected {
                reason: hostile.to_owned(),
                event: serde_json::json!({
                    hostile: hostile,
                    "z": [1, "é", {"b": null, "a": true, "\u{e000}": 1, "😀": 2}],
                    "id": "x",
                }),
            },
            Input::Access {
                change: AccessChange::Issue,
                token: "00112233445566ff".to_owned(),
                digest: Some(hostile.to_owned()),
            },
            Input::ActionResult {
                key: IdempotencyKey::new(&SKU, tenant.clone(), 3, ActionId(0)),
                ok: false,
                detail: Some(hostile.to_owned()),
            },
        ];
        for input in &inputs {
            let receipt = Receipt {
                tenant: &tenant,
                seq: 4,
                at: crate::clock::Timestamp(1_700_000_000_123),
                prev: &[7; 32],
                from: State::Stable,
                to: State::Stable,
                level: Level::Normal,
                actions: &[],
                body: Body::Input {
                    input,
                    decision: None,
                    entitlement: None,
                    refused: None,
                },
            };
            let bytes = receipt.encode(&SKU).unwrap();
            let text = std::str::from_utf8(&bytes).unwrap();
            // Only `"`, `\` and control characters are escaped (RFC 8785).
            let escaped = concat!(
                r#"quote \" back\\slash \u0000 nul \u001f unit\n\r\t\b\f "#,
                "é 😀 \u{2028} </script>"
            );
            assert!(text.contains(escaped), "{text}");
            let parsed = parse(&PACK, &bytes).unwrap();
            assert_eq!(parsed.carried, Carried::Input(input.clone()), "{text}");
        }
    }

    #[test]
    fn lower_hex_matches_hex_crate() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(5);
        }
        assert_eq!(lower_hex(&bytes), hex::encode(bytes).as_bytes());
        assert_eq!(lower_hex(&[0; 32]), [b'0'; 64]);
    }

    #[test]
    fn decimals_round_trip() {
        for v in [120.5, 0.1, 1e21, -3.0, 5e-324, f64::MAX] {
            assert_eq!(decimal(v).parse::<f64>().unwrap(), v);
        }
        assert_eq!(decimal(100.0), "100");
        for v in [
            120.5,
            0.1,
            1e21,
            -3.0,
            5e-324,
            f64::MAX,
            1e31,
            1e32,
            -1e30,
            0.0,
            -0.0,
        ] {
            assert_eq!(Decimal::of(v).as_str(), decimal(v), "{v}");
        }
        assert!(matches!(Decimal::of(5e-324), Decimal::Long(_)));
        assert!(matches!(Decimal::of(-1.5), Decimal::Short { .. }));
    }

    #[test]
    fn rejected_input_loses_its_floats() {
        let v =
            serde_json::json!({"value": 1.5, "n": 3, "big": 18446744073709551615u64, "a": [2.25]});
        let cleaned = without_floats(&v);
        assert_eq!(
            cleaned,
            serde_json::json!({"value": "1.5", "n": 3, "big": "18446744073709551615", "a": ["2.25"]})
        );
        assert!(canonical::to_vec(&cleaned).is_ok());
    }
}
