//! What the intake wraps around a webhook's body before it is a job (its
//! source, delivery id, the headers kept, JSON), and the room that takes:
//! a bound the configuration checks hooks against, so it lives apart from
//! the intake that the configuration's types are used by.

/// Room a webhook's envelope takes beyond its body (source, delivery id,
/// the headers kept, JSON wrapping) for a JSON body with ordinary headers.
/// A hook's `max_body` leaves this much of its queue's payload limit free
/// (the configuration refuses one that does not); a webhook whose envelope still
/// does not fit (a binary body grows by a third in base64) is refused with
/// 413 before it is answered.
pub const ENVELOPE_RESERVE: usize = 16 << 10;
