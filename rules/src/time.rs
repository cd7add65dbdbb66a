//! Time as the engine sees it: milliseconds since the Unix epoch, always an argument — the
//! engine never reads a clock. A leaf every other module may use.

/// Milliseconds since the Unix epoch (UTC). The engine never reads a clock: every time it
/// sees comes from a sample or from the caller's tick.
pub type Millis = i64;
