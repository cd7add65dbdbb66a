//! The signal a rule compares: the value expression over a sample's fields, taken relative to
//! the sensor's baseline, smoothed, and optionally turned into a change over a window.
//!
//! ```text
//! fields ──(minus baseline)──> expr ──> smooth (median/mean) ──> change_over | swing_within ──> value
//! ```
//!
//! Invariants: every buffer is bounded ([`MAX_WINDOW_SAMPLES`]); a signal yields no value until
//! it has what it needs (a baseline, a full `change_over` history), so a rule never judges on
//! half a window.

use crate::expr::ValueExpr;
use crate::time::Millis;
pub use crate::window::Point;
use crate::window::{drop_front, keep_newest, Points, RecentLevels};
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;

/// The most samples a smoothing or swing window keeps; older ones are dropped first.
pub const MAX_WINDOW_SAMPLES: usize = 512;
/// How many points a `change_over` history keeps across its window: the change is measured
/// over between one window and one window plus 1/32 of it.
const HISTORY_POINTS: i64 = 32;
/// How many points a time window of smoothing keeps across its length at most (plus the two
/// newest readings): readings closer together than 1/24 of the window are thinned out. A one-hour
/// median of one-minute readings keeps one reading in 2.5 minutes; a `median 24h` (the daily
/// level of a wall, whose thermal swing a median over a whole day cancels) one an hour — about
/// 200 bytes per sensor however fast it reports, and a median of 26 values per reading.
const SMOOTH_POINTS: i64 = 24;
/// How far apart readings that agree may lie, as a part of the movement they show: a wall or box
/// that moved 0.1° stays within a noisy box's hundredth of a degree; two spikes in a row seldom
/// land within a third of their size of each other.
const STEADY_FRACTION: f64 = 1.0 / 3.0;
/// How many of a sensor's steps between readings before those a `steady … within` judgement looks
/// at are kept as its own scatter: readings that agree after a real movement lie within a few of
/// the box's ordinary steps of each other, two spikes in a row seldom do.
const SCATTER_STEPS: usize = 12;
/// The ordinary step taken is the third largest of the [`SCATTER_STEPS`]: the two largest may
/// be one spike's way out and back.
const SCATTER_RANK: usize = 3;
/// With `within`, readings that agree may also lie this many ordinary steps apart (of a Gaussian
/// scatter, the step after a real movement exceeds three times its upper quartile about once in
/// a thousand).
const SCATTER_MULTIPLE: f64 = 3.0;
/// The fewest readings a time window takes a median of: five, so that its two newest readings —
/// kept raw however it thins — are never the median.
pub const TIME_WINDOW_MIN_POINTS: usize = 5;
/// The shortest part of its length a time window's readings must span before it is judged (unless
/// it reached back for them): a window keeps one point per [`SMOOTH_POINTS`]th of its length and
/// its two newest readings, so a young one holds few older points, and a jump's first readings
/// were half its median or all of it. A daily median begun an hour or two before (a new box's
/// second day, once its baseline was learned) told `tilt-change` orange "5.2‰ (daily level)" a
/// minute after a jump, on a box the installers had been told was faulty, whose unconfirmed
/// `tilt-sudden` was then folded into it (an outside tester). From an eighth of its length on, a
/// window holds six older points or more: a movement takes four of its spacings or more to be
/// half its median (later in its life, twelve). A daily level is judged three hours after its
/// window began, an hourly one seven and a half minutes after.
const TIME_WINDOW_MIN_SPAN: i64 = 8;
/// The fewest readings a window that holds fewer than it needs reaches back for (an hourly median
/// of a box that reports every 20 minutes or less often): five, because of three a pair of spikes
/// would be the median — a box reporting every half hour with a few spikes a week has such pairs
/// several times a year.
const REACH_BACK_POINTS: usize = 5;
/// How much further back than its own length a window reaches for its fewest readings: after a
/// longer silence it starts afresh.
const STRETCH_LIMIT_SECONDS: i64 = 24 * 3600;
/// The same for a `recent` baseline: a box back from days of silence is judged against where it
/// stood before it (a wall that moved while its box was dead has moved, and `tilt-sudden` must
/// see it — an outside tester found it unseen after 26 h and more); the weather moves a wall a
/// few hundredths of a degree in a week, far below a sudden change.
const RECENT_STRETCH_LIMIT_SECONDS: i64 = 7 * 24 * 3600;
/// How many points a `recent` baseline keeps per field across its window at most (plus the two
/// newest readings).
const RECENT_POINTS: i64 = 8;
/// The fewest points a `recent` baseline takes a median of (with fewer, one bad reading could be
/// the reference); a sensor that reports seldom is judged against its newest
/// [`REACH_BACK_POINTS`] readings, however far back they lie.
const RECENT_MIN_POINTS: usize = 3;

/// The most exact (0, 0) readings a box sends when it starts, before its first measurement
/// ([`Signal::level_away_from_zero`]); a box zeroed on its wall whose readings round to (0, 0)
/// has sent more by the time a movement can be judged against them.
pub(crate) const RESTART_READINGS: usize = RECENT_MIN_POINTS + 1;
/// How far from 0 a box must stand, in one field at least, for a reading of exactly 0 in every
/// field to be its restart: a twentieth of a degree for a tilt box. Nearer, a box that rounds
/// to hundredths reads (0, 0) on a quiet wall, and leaving those readings out moved its daily
/// level off the wall (a blue on a healthy thick wall in the corpus); and a reading that close
/// to where the box stood is no jump for any rule.
pub const RESTART_AWAY: f64 = 0.05;

/// Where the per-sensor reference values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineSpec {
    /// Only a baseline set at installation (`Engine::set_baseline`, by `gridwatch calibrate`).
    Calibrated,
    /// The calibrated baseline if there is one, else the median of the first `window_ms` of
    /// readings.
    Learn { window_ms: Millis },
    /// Each field's own recent level: the median of its readings within the last `window_ms`
    /// before this one (thinned to a few points, at least three of them). "The change from where
    /// the box was a moment ago", in any direction, whatever the box's mounting offset.
    Recent { window_ms: Millis },
}

/// How a field is taken relative to its baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Relative {
    /// `value - baseline` (tilt since installation).
    #[default]
    Difference,
    /// `value / baseline` (turbidity at 1.3 × the site's usual); no value while the baseline
    /// is not positive.
    Ratio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmoothMethod {
    Median,
    Mean,
    /// Over the last n readings: their mean value, when the readings agree with each other —
    /// the expression over each step from one reading to the next is at most a third of the
    /// smallest ([`STEADY_FRACTION`]) — else
    /// 0. A movement that stays (a wall or a box that jumped) passes; spikes, even two in a row
    /// in different directions, and a box whose readings jump about do not.
    Steady,
    /// `apart`: the smaller of the value and the expression over the step from the previous
    /// reading — how far a reading lies from both where the box stood and the reading before
    /// it. A box whose readings jump about counts at every reading, a spike once, a wall or a
    /// box that moved to a new place and stays there once (it counted at every reading until the
    /// recent level caught up: a real jump told installers "knocked or faulty?" right after its
    /// red, an outside tester).
    Apart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Time(Millis),
    Samples(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smooth {
    pub method: SmoothMethod,
    pub window: Window,
    /// `steady n within d`: readings that agree lie within `d` of each other, or within three of
    /// the sensor's ordinary steps between readings when those are larger — and never further
    /// than [`STEADY_FRACTION`] of the movement. Without it, that fraction alone.
    pub within: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// The value now minus the value one window ago ("24 h change"). With `windows` > 1, the
    /// smallest of that many consecutive window changes ("over 0.5‰ in each of two consecutive
    /// 30-day windows").
    ChangeOver { window: Millis, windows: u32 },
    /// The largest distance between the value now and any value within the window
    /// ("sudden change").
    SwingWithin(Millis),
    /// The value carried this far ahead at its pace: plus half the smaller of its changes over
    /// the last two windows of twice this length, when both rose. A median over a window lags a
    /// steady movement by half the window; a `lead` of half the window takes the lag out (a wall
    /// creeping 0.5‰ a day reached its yellow 12 h late on its daily level). A change that did
    /// not go on over both windows (a front of weather) is not carried, nor a fall. The value
    /// alone until the history covers the two windows.
    Lead(Millis),
}

/// A compiled signal.
#[derive(Clone, PartialEq)]
pub struct Signal {
    pub expr: ValueExpr,
    /// `unless`: a reading for which this is 1 or more (a probe's `same(…)`) is not judged;
    /// shared by the rules of a file that take its `[defaults]`.
    pub unless: Option<std::sync::Arc<ValueExpr>>,
    pub baseline: Option<BaselineSpec>,
    /// How fields are taken relative to the baseline (when there is one).
    pub relative: Relative,
    /// The temperature field whose slow changes are taken out of the fields' change from their
    /// installation baseline ([`crate::thermal`]).
    pub compensate: Option<std::sync::Arc<str>>,
    pub smooth: Option<Smooth>,
    pub transform: Option<Transform>,
}

/// Written by hand so that `compensate` and `unless` show only when set: rules are fingerprinted
/// by their debug text, and the rules saved before either existed keep their fingerprints.
impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Signal");
        debug.field("expr", &self.expr);
        if let Some(unless) = &self.unless {
            debug.field("unless", unless);
        }
        debug.field("baseline", &self.baseline).field("relative", &self.relative);
        if let Some(temperature) = &self.compensate {
            debug.field("compensate", temperature);
        }
        debug.field("smooth", &self.smooth).field("transform", &self.transform).finish()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.expr.to_string();
        if let Some(BaselineSpec::Recent { window_ms }) = self.baseline {
            text = format!("{text} from its level over the last {}", humanize(window_ms));
        } else if self.baseline.is_some() {
            text = match self.relative {
                Relative::Difference => format!("{text} from baseline"),
                Relative::Ratio => format!("{text} as a ratio to baseline"),
            };
            if let Some(temperature) = &self.compensate {
                text = format!("{text} less what follows {temperature}");
            }
        }
        if let Some(smooth) = self.smooth {
            let method = match smooth.method {
                SmoothMethod::Median => "median",
                SmoothMethod::Mean => "mean",
                SmoothMethod::Steady => "steady",
                SmoothMethod::Apart => "apart",
            };
            let window = match smooth.window {
                Window::Time(ms) => humanize(ms),
                Window::Samples(n) => format!("{n} samples"),
            };
            text = match (smooth.method, smooth.within) {
                (SmoothMethod::Apart, _) => format!("the smaller of {text} and of its step from the previous reading"),
                (SmoothMethod::Steady, Some(within)) => format!("{method} {window} within {within} of {text}"),
                _ => format!("{method} {window} of {text}"),
            };
        }
        match self.transform {
            Some(Transform::ChangeOver { window, windows: 1 }) => write!(f, "change over {} of {text}", humanize(window)),
            Some(Transform::ChangeOver { window, windows }) => {
                write!(f, "least change over {windows} consecutive windows of {} of {text}", humanize(window))
            }
            Some(Transform::SwingWithin(ms)) => write!(f, "swing within {} of {text}", humanize(ms)),
            Some(Transform::Lead(ms)) => {
                write!(f, "{text} carried {} ahead at its least rise over two windows of {}", humanize(ms), humanize(ms.saturating_mul(2)))
            }
            None => f.write_str(&text),
        }?;
        match &self.unless {
            Some(unless) => write!(f, ", unless {unless}"),
            None => Ok(()),
        }
    }
}

fn humanize(ms: Millis) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Whole seconds since the epoch of a time in milliseconds.
fn second_of(at: Millis) -> i64 {
    at.div_euclid(1000)
}

/// A window's length in whole seconds (at least one).
fn window_seconds(window: Millis) -> i64 {
    (window / 1000).max(1)
}

/// Per-sensor state of a signal's first stage (expression, baseline, smoothing). Rules whose
/// signals share that stage share one state, so a one-hour median is computed once per sample
/// however many rules look at it.
///
/// Memory: a stage without smoothing or a `recent` baseline (most of them) keeps nothing but an
/// empty pointer; a short window (`median 3`) one allocation with its points inline. Saved, it is
/// `{"smooth": window, "recent": [window per field]}`: `smooth` empty when there is nothing,
/// `recent` left out without a recent baseline.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "SavedStage", into = "SavedStage")]
pub struct StageState(Option<Box<StageKept>>);

/// What a stage keeps once it keeps anything.
#[derive(Debug, Default, Clone, PartialEq)]
struct StageKept {
    /// Recent raw values for smoothing.
    smooth: Points,
    /// For `steady`: the expression over the steps between the recent readings, and the fields
    /// of the previous reading.
    steps: Points,
    previous: smallvec::SmallVec<[f32; 2]>,
    /// For a `recent` baseline: each field's recent readings, in the order of the expression's
    /// fields.
    recent: Option<Box<RecentLevels>>,
}

/// A stage as saved (state format 3; `steps`, `previous` and `recent` are new and optional).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedStage {
    #[serde(with = "crate::window::packed")]
    smooth: Points,
    #[serde(default, skip_serializing_if = "Points::is_empty", with = "crate::window::packed")]
    steps: Points,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    previous: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::window::packed_lists")]
    recent: Option<Box<RecentLevels>>,
}

impl From<SavedStage> for StageState {
    fn from(saved: SavedStage) -> StageState {
        let SavedStage { smooth, steps, previous, recent } = saved;
        let empty = smooth.is_empty() && steps.is_empty() && previous.is_empty() && recent.is_none();
        StageState((!empty).then(|| Box::new(StageKept { smooth, steps, previous: previous.into(), recent })))
    }
}

impl From<StageState> for SavedStage {
    fn from(state: StageState) -> SavedStage {
        let StageKept { smooth, steps, previous, recent } = state.0.map(|kept| *kept).unwrap_or_default();
        SavedStage { smooth, steps, previous: previous.into_vec(), recent }
    }
}

/// Per-(rule, sensor) state of a signal's transform: a null pointer until the transform first
/// runs, so the many checks without one stay small. Saved as before: `"Empty"`,
/// `{"History": window}` or `{"Extremes": {…}}`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TransformState(Option<Box<Transformed>>);

/// What a transform keeps, saved under the name of the enum it used to be.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename = "TransformState")]
enum Transformed {
    /// Only in saved files: the state of a transform that has seen nothing.
    Empty,
    /// `change_over`: smoothed values thinned to a few points per window, oldest first.
    History(#[serde(with = "crate::window::packed")] VecDeque<Point>),
    /// `swing_within`: the candidates for the window's lowest and highest values.
    Extremes(Extremes),
}

impl serde::Serialize for TransformState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.as_deref().unwrap_or(&Transformed::Empty).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for TransformState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TransformState, D::Error> {
        Ok(TransformState(match Transformed::deserialize(deserializer)? {
            Transformed::Empty => None,
            kept => Some(Box::new(kept)),
        }))
    }
}

/// Monotonic queues over a time window: `lows` holds values that are lower than every newer one
/// (ascending), `highs` values higher than every newer one (descending); their fronts are the
/// window's minimum and maximum. Each holds only the values that can still be an extreme, a
/// handful for noisy data instead of every reading of the window, so both usually live inline
/// in the transform's one allocation.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Extremes {
    #[serde(with = "crate::window::packed")]
    lows: Points,
    #[serde(with = "crate::window::packed")]
    highs: Points,
}

impl Signal {
    /// Whether two signals compute the same first stage (and can share its state).
    pub fn same_stage(&self, other: &Signal) -> bool {
        self.expr == other.expr
            && self.unless == other.unless
            && self.baseline == other.baseline
            && self.relative == other.relative
            && self.compensate == other.compensate
            && self.smooth == other.smooth
    }

    /// The first stage's value for a sample: the expression, smoothed. `None` when a field is
    /// missing, or while a sample-count window or a `recent` baseline is not yet full. `field`
    /// returns a field's value already taken relative to a calibrated or learned baseline when
    /// the signal has one; a `recent` baseline is applied here.
    ///
    /// Time windows take a median of at least [`TIME_WINDOW_MIN_POINTS`] readings, and of the
    /// newest [`REACH_BACK_POINTS`] for a sensor that reports too seldom to fill them.
    pub fn stage(&self, state: &mut StageState, at: Millis, field: &impl Fn(&str) -> Option<f64>) -> Option<f64> {
        let step = match self.smooth {
            Some(Smooth { method: SmoothMethod::Steady | SmoothMethod::Apart, .. }) => Some(self.step_from_previous(state, field)?),
            _ => None,
        };
        let raw = match self.baseline {
            Some(BaselineSpec::Recent { window_ms }) => self.relative_to_recent(state, at, window_ms, field)?,
            _ => self.expr.evaluate(field),
        }
        .filter(|v| v.is_finite())?;
        match (self.smooth, step) {
            (None, _) => Some(raw),
            (Some(Smooth { method: SmoothMethod::Apart, .. }), Some(step)) => Some(raw.min(step)),
            (Some(Smooth { window: Window::Samples(n), within, .. }), Some(step)) => {
                steady_value(state.0.get_or_insert_with(Box::default), (n, within), at, raw, step)
            }
            (Some(smooth), _) => smooth_value(smooth, &mut state.0.get_or_insert_with(Box::default).smooth, at, raw),
        }
    }

    /// For a `recent` level: whether it lies [`RESTART_AWAY`] or further from 0 in any field —
    /// `None` while it holds nothing, or nothing but a restart's few (0, 0) readings
    /// ([`RESTART_READINGS`]). A box zeroed on its wall has its level there: `Some(false)`.
    /// (The engine takes a reading of exactly 0 in every field where the box stood elsewhere for
    /// a restart, `Engine::restart_reading`.)
    pub fn level_away_from_zero(&self, state: &StageState) -> Option<bool> {
        let lists = state.0.as_ref().and_then(|kept| kept.recent.as_deref())?;
        if lists.iter().all(restart_only) {
            return None;
        }
        Some(lists.iter().any(|points| !points.is_empty() && median_of(points.iter().map(|p| p.value())).abs() >= RESTART_AWAY))
    }

    /// The expression over the change of each field since the previous reading (a large number
    /// for the first one), which becomes the previous reading. `None` when a field is missing.
    fn step_from_previous(&self, state: &mut StageState, field: &impl Fn(&str) -> Option<f64>) -> Option<f64> {
        let fields = self.expr.fields();
        let now: smallvec::SmallVec<[f64; 2]> = fields.iter().map(|name| field(name).filter(|v| v.is_finite())).collect::<Option<_>>()?;
        let kept = state.0.get_or_insert_with(Box::default);
        let step = (kept.previous.len() == fields.len()).then(|| {
            let change = |name: &str| {
                let position = fields.iter().position(|f| *f == name)?;
                Some(now[position] - f64::from(kept.previous[position]))
            };
            self.expr.evaluate(&change).filter(|v| v.is_finite())
        });
        kept.previous = now.iter().map(|&v| v as f32).collect();
        Some(step.flatten().unwrap_or(f64::from(f32::MAX)))
    }

    /// The expression over each field taken relative to the field's recent level, which this
    /// reading then joins. `None` (the reading still joins) while a field has fewer than
    /// [`RECENT_MIN_POINTS`] recent readings; `Some(None)` when a field is missing.
    fn relative_to_recent(&self, state: &mut StageState, at: Millis, window_ms: Millis, field: &impl Fn(&str) -> Option<f64>) -> Option<Option<f64>> {
        let fields = self.expr.fields();
        let kept = state.0.get_or_insert_with(Box::default);
        let lists = kept.recent.get_or_insert_with(|| Box::new(fields.iter().map(|_| Points::new()).collect()));
        // A level that is nothing but a restart's first few (0, 0) readings — a box powered up
        // on its wall, or back from a long silence — is dropped at its first measurement:
        // judged against it, that measurement was a jump of the box's whole mounting offset.
        if fields.len() >= 2 && lists.iter().all(restart_only) && fields.iter().any(|name| field(name) != Some(0.0)) {
            lists.iter_mut().for_each(|points| points.clear());
        }
        let now = second_of(at);
        let cutoff = now - window_seconds(window_ms);
        let spacing = (window_seconds(window_ms) / RECENT_POINTS).max(1);
        let mut references: smallvec::SmallVec<[f64; 4]> = smallvec::SmallVec::new();
        for (name, points) in fields.iter().zip(lists.iter_mut()) {
            let Some(value) = field(name).filter(|v| v.is_finite()) else { return Some(None) };
            // The previous reading is left out of this one's reference (kept one more when the
            // window reaches back): when a wall jumps, the jump's first reading must not move the
            // reference its second is judged against. It did, and `steady 2` judged an exact
            // 0.1° jump seen through 0.01° of noise at 0.079° in its second reading: one such
            // jump in twelve was never red (an outside tester).
            let reached_back = expire(points, cutoff, RECENT_STRETCH_LIMIT_SECONDS, REACH_BACK_POINTS + 1);
            let before_the_last = points.len().saturating_sub(1);
            if before_the_last >= if reached_back { REACH_BACK_POINTS } else { RECENT_MIN_POINTS } {
                references.push(median_of(points.iter().take(before_the_last).map(|p| p.value())));
            }
            // Its first readings are all kept until it can be judged: thinned at once, a new
            // level (a new box, or one whose history came in a burst while the box's clock was
            // not set, all placed within a second) held its first reading and the two newest
            // for `spacing` (7.5 minutes of a one-hour level), judged nothing, and then took
            // a jump of those minutes into its reference — a 0.3° jump was never red (an outside
            // tester).
            thin_push(points, Point::new(now, value), spacing, RECENT_MIN_POINTS + 1, Thinning::FurtherFromMedian);
        }
        let full = references.len() == fields.len();
        if !full {
            return None;
        }
        let relative = |name: &str| {
            let position = fields.iter().position(|f| *f == name)?;
            let value = field(name)?;
            match self.relative {
                Relative::Difference => Some(value - references[position]),
                Relative::Ratio => (references[position] > 0.0).then(|| value / references[position]),
            }
        };
        Some(self.expr.evaluate(&relative))
    }

    /// The signal's value from its stage value, or `None` if it cannot be judged yet.
    pub fn transform(&self, state: &mut TransformState, at: Millis, staged: f64) -> Option<f64> {
        match self.transform {
            None => Some(staged),
            Some(Transform::ChangeOver { window, windows }) => {
                let kept = state.0.get_or_insert_with(|| Box::new(Transformed::Empty));
                if !matches!(**kept, Transformed::History(_)) {
                    // The history never holds more than this; do not let the deque double past it.
                    **kept = Transformed::History(VecDeque::with_capacity(HISTORY_POINTS as usize * windows as usize + 2));
                }
                let Transformed::History(history) = &mut **kept else { return None };
                change_over(history, window, windows, at, staged)
            }
            Some(Transform::Lead(lead)) => {
                let kept = state.0.get_or_insert_with(|| Box::new(Transformed::Empty));
                if !matches!(**kept, Transformed::History(_)) {
                    **kept = Transformed::History(VecDeque::with_capacity(2 * HISTORY_POINTS as usize + 2));
                }
                let Transformed::History(history) = &mut **kept else { return None };
                let pace = change_over(history, lead.saturating_mul(2), 2, at, staged);
                Some(staged + pace.map_or(0.0, |change| change.max(0.0) / 2.0))
            }
            Some(Transform::SwingWithin(window)) => {
                let kept = state.0.get_or_insert_with(|| Box::new(Transformed::Empty));
                if !matches!(**kept, Transformed::Extremes(_)) {
                    **kept = Transformed::Extremes(Extremes::default());
                }
                let Transformed::Extremes(extremes) = &mut **kept else { return None };
                Some(swing_within(extremes, window, at, staged))
            }
        }
    }

    /// Both stages, for a signal with state of its own.
    pub fn observe(&self, stage: &mut StageState, transform: &mut TransformState, at: Millis, field: &impl Fn(&str) -> Option<f64>) -> Option<f64> {
        let staged = self.stage(stage, at, field)?;
        self.transform(transform, at, staged)
    }
}

/// The smoothed value with `value` added; `None` while a window of a number of samples is not
/// yet full (the median of two readings would be their mean, and one knock would count), or a
/// time window holds fewer than [`TIME_WINDOW_MIN_POINTS`] readings spanning a
/// [`TIME_WINDOW_MIN_SPAN`]th of its length, or fewer than [`REACH_BACK_POINTS`] when it reaches
/// back beyond its length for them (just after a start, or a silence of more than a day).
fn smooth_value(smooth: Smooth, buffer: &mut Points, at: Millis, value: f64) -> Option<f64> {
    let now = second_of(at);
    let point = Point::new(now, value);
    match smooth.window {
        Window::Time(window) => {
            let seconds = window_seconds(window);
            thin_push(buffer, point, (seconds / SMOOTH_POINTS).max(1), TIME_WINDOW_MIN_POINTS, Thinning::Newer);
            let reached_back = expire(buffer, now - seconds, STRETCH_LIMIT_SECONDS, REACH_BACK_POINTS);
            if buffer.len() < if reached_back { REACH_BACK_POINTS } else { TIME_WINDOW_MIN_POINTS } {
                return None;
            }
            let span = buffer.last().map_or(0, |p| p.second()) - buffer.first().map_or(0, |p| p.second());
            if !reached_back && span < seconds / TIME_WINDOW_MIN_SPAN {
                return None;
            }
        }
        Window::Samples(n) => {
            buffer.push(point);
            keep_newest(buffer, n);
            if buffer.len() < n {
                return None;
            }
        }
    }
    keep_newest(buffer, MAX_WINDOW_SAMPLES);
    let values = buffer.iter().map(|p| p.value());
    Some(match smooth.method {
        SmoothMethod::Mean => values.sum::<f64>() / buffer.len() as f64,
        // `steady` is taken by `steady_value` (see `Signal::stage`); a median is its nearest kin.
        SmoothMethod::Median | SmoothMethod::Steady | SmoothMethod::Apart => median_of(values),
    })
}

/// `steady n`: the mean of the last n values when their readings agree — every step between
/// them at most [`STEADY_FRACTION`] of the smallest (a movement that stays) — or the smallest of
/// the last n + 1 when
/// each of their steps carried the reading further out along its line from the reference
/// ([`continues_outward`]: a movement that goes on; one reading more than a movement that stays,
/// because with two a healthy wall's spikes lined up a few times in a hundred box-years) — else
/// 0; `None` until there are n values.
fn steady_value(kept: &mut StageKept, (n, within): (usize, Option<f64>), at: Millis, value: f64, step: f64) -> Option<f64> {
    let now = second_of(at);
    kept.smooth.push(Point::new(now, value));
    keep_newest(&mut kept.smooth, n + 1);
    kept.steps.push(Point::new(now, step));
    // The sensor's own scatter is kept only when `within` asks for it.
    keep_newest(&mut kept.steps, if within.is_some() { n + SCATTER_STEPS } else { n });
    if kept.smooth.len() < n {
        return None;
    }
    let newest = &kept.smooth[kept.smooth.len() - n..];
    let smallest = newest.iter().map(|p| p.value()).fold(f64::INFINITY, f64::min);
    let (older, judged) = kept.steps.split_at(kept.steps.len() + 1 - n);
    let agree_within = match within {
        // The step into the first judged reading is left out of the scatter: the movement's own.
        Some(within) => ordinary_step(&older[..older.len().saturating_sub(1)]).map_or(within, |scatter| within.max(scatter * SCATTER_MULTIPLE)),
        None => f64::INFINITY,
    };
    let stays = judged.iter().all(|p| p.value() <= (smallest * STEADY_FRACTION).min(agree_within));
    if stays {
        // Their mean: the size of the movement as n readings measure it. The smallest (as
        // before) took the noise of the worse one for the movement's: an exact 0.1° jump seen
        // through a box's 0.01° of noise was too small in one case in ten (an outside tester).
        return Some(newest.iter().map(|p| p.value()).sum::<f64>() / newest.len() as f64);
    }
    let goes_on = kept.smooth.len() == n + 1
        && kept
            .smooth
            .windows(2)
            .zip(&kept.steps[kept.steps.len() - n..])
            .all(|(pair, step)| continues_outward(pair[0].value(), pair[1].value(), step.value()));
    Some(if goes_on { kept.smooth.iter().map(|p| p.value()).fold(f64::INFINITY, f64::min) } else { 0.0 })
}

/// A sensor's ordinary step between readings, from its recent `steps`: the [`SCATTER_RANK`]th
/// largest, once there are [`SCATTER_STEPS`] of them (none before: a new sensor is judged by
/// [`STEADY_FRACTION`] alone).
fn ordinary_step(steps: &[Point]) -> Option<f64> {
    if steps.len() < SCATTER_STEPS {
        return None;
    }
    let mut values: smallvec::SmallVec<[f64; SCATTER_STEPS]> = steps.iter().map(|p| p.value()).collect();
    values.sort_unstable_by(|a, b| b.total_cmp(a));
    values.get(SCATTER_RANK - 1).copied()
}

/// Whether a reading `step` away from the previous one, whose distances from the reference are
/// `before` and `after`, lies on (nearly) the same line from the reference, further out, by a
/// step no larger than [`STEP_OUT_AT_MOST`] times the distance already gone: a wall that keeps
/// moving (0.04–0.5° a report) was red only once its steps were a third of the distance, four
/// or five reports in (an outside tester). Two spikes in a row seldom line up so.
fn continues_outward(before: f64, after: f64, step: f64) -> bool {
    before > 0.0 && step <= before * STEP_OUT_AT_MOST && after >= before + step * IN_LINE
}

/// How far out along its line a reading must be, as a part of its step from the previous one
/// ([`continues_outward`]): 0.9 is within about 25° of the line.
const IN_LINE: f64 = 0.9;
/// The largest step out, as a multiple of the distance already gone ([`continues_outward`]).
const STEP_OUT_AT_MOST: f64 = 1.5;

/// Drops the points at or before `cutoff`, but keeps the newest `reach_back` of them unless they
/// lie more than `stretch_limit` seconds before it; whether a point at or before `cutoff` is still
/// kept (the window reached back for its readings).
fn expire(points: &mut Points, cutoff: i64, stretch_limit: i64, reach_back: usize) -> bool {
    let expired = points.iter().take_while(|p| p.second() <= cutoff).count();
    let drop = expired.min(points.len().saturating_sub(reach_back));
    if drop > 0 {
        points.drain(..drop);
    }
    drop_front(points, |p| p.second() <= cutoff - stretch_limit);
    points.first().is_some_and(|p| p.second() <= cutoff)
}

/// Whether a `recent` level's points of one field are at most a restart's few exact zeros.
fn restart_only(points: &Points) -> bool {
    points.len() <= RESTART_READINGS && points.iter().all(|p| p.value() == 0.0)
}

/// Which of two points too close together [`thin_push`] drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thinning {
    /// The newer: a smoothing window keeps its points spread as they came.
    Newer,
    /// The value further from the median of the window's points before the two (the newer on
    /// a tie), at the older one's time: a `recent` level is a reference, and a box that reports
    /// on change sends a spike and, minutes later, the reading back on the wall, but a quiet
    /// wall only hourly. Dropping always the newer kept every spike and dropped the reading
    /// after it, until spikes were the median of the newest five and two ordinary readings
    /// "agreed" on a movement from it (red on a healthy one-box house, an outside tester). The
    /// older point's time stays: dropping the older point itself moved the window's anchor
    /// forward a reading at a time, and a box reporting every minute kept four points minutes
    /// apart, with its very first reading holding the window "reached back" — too few to judge
    /// for a week: a 0.2° jump on a new one-box house was never told. The median of the points
    /// before the two, not of all: with a new box's two first readings, a jump and its next
    /// reading, the median of all four lay between the levels, the old level's second reading
    /// was dropped, and the jump became the reference after one judged reading (an outside
    /// tester's 15-minute box, 0.23°: never told).
    FurtherFromMedian,
}

/// Adds `point` as the newest, keeping points at least `spacing` seconds apart except the two
/// newest readings: when the second newest lies closer than `spacing` to the point before it,
/// one of the two goes (`thinning`).
/// Keeping two raw readings at the end means a window that holds little yet (just after a start,
/// or after a gap) still takes a median of three, so one bad reading cannot be half of it.
/// Nothing is thinned while the window holds fewer than `fewest` points, so that a new window
/// is judged from its `fewest`-th reading on, not only once `spacing` has passed.
fn thin_push(points: &mut Points, point: Point, spacing: i64, fewest: usize, thinning: Thinning) {
    let len = points.len();
    if len >= fewest.max(3) && points[len - 2].second() - points[len - 3].second() < spacing {
        let dropped = match thinning {
            Thinning::Newer => len - 2,
            Thinning::FurtherFromMedian => {
                // The level the two are judged against: the points before them (all of them
                // while there are none before).
                let before = if len > 3 { len - 3 } else { len };
                let center = median_of(points[..before].iter().map(|p| p.value()));
                let off = |index: usize| (points[index].value() - center).abs();
                if off(len - 3) > off(len - 2) {
                    points[len - 3] = Point::new(points[len - 3].second(), points[len - 2].value());
                }
                len - 2
            }
        };
        points.remove(dropped);
    }
    points.push(point);
}

/// Median of a non-empty list (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    median_in_place(&mut values)
}

/// Median of a window's values. The values are copied to the stack (windows hold a few dozen
/// points) so the hot path neither allocates nor touches shared scratch space.
fn median_of(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let mut stack = [0.0; 32];
    if values.len() > stack.len() {
        return median_in_place(&mut values.collect::<Vec<f64>>());
    }
    let mut len = 0;
    for (slot, value) in stack.iter_mut().zip(values) {
        *slot = value;
        len += 1;
    }
    median_in_place(&mut stack[..len])
}

/// Median by selection (linear time); reorders `values`. Ordered by `<` alone: the engine never
/// keeps a NaN (a NaN would count as equal to everything, never a panic).
fn median_in_place(values: &mut [f64]) -> f64 {
    let order = |a: &f64, b: &f64| {
        if a < b {
            Ordering::Less
        } else if a > b {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    };
    let odd = values.len() % 2 == 1;
    let mid = values.len() / 2;
    let (below, &mut upper, _) = values.select_nth_unstable_by(mid, order);
    if odd {
        upper
    } else {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// The value now minus the value one window ago; with `windows` > 1, the smallest of that many
/// consecutive window changes (now vs one window ago, one window ago vs two, …). Keeps a point
/// at most every window/32 (about [`HISTORY_POINTS`] per window); each reference is the newest
/// kept point at least k windows old, so a change is measured over between one window and one
/// window plus a spacing. `None` until the history covers all the windows.
fn change_over(history: &mut VecDeque<Point>, window: Millis, windows: u32, at: Millis, value: f64) -> Option<f64> {
    let now = second_of(at);
    let window = window_seconds(window);
    let spacing = (window / HISTORY_POINTS).max(1);
    if history.back().is_none_or(|p| now - p.second() >= spacing) {
        history.push_back(Point::new(now, value));
    }
    let span = window.saturating_mul(i64::from(windows));
    while history.len() > 1 && history[1].second() <= now - span {
        history.pop_front();
    }
    let mut newer = value;
    let mut smallest = f64::INFINITY;
    for k in 1..=i64::from(windows) {
        let cutoff = now - k * window;
        let older = history.partition_point(|p| p.second() <= cutoff).checked_sub(1)?;
        let reference = history[older].value();
        smallest = smallest.min(newer - reference);
        newer = reference;
    }
    Some(smallest)
}

/// The largest distance between `value` and any value of the last `window` (before this one).
fn swing_within(extremes: &mut Extremes, window: Millis, at: Millis, value: f64) -> f64 {
    let now = second_of(at);
    let cutoff = now - window_seconds(window);
    let point = Point::new(now, value);
    // Compared at the precision it is kept in, so a repeated reading is a swing of exactly 0.
    let value = point.value();
    let Extremes { lows, highs } = extremes;
    drop_front(lows, |p| p.second() < cutoff);
    drop_front(highs, |p| p.second() < cutoff);
    let low = lows.first().map_or(value, |p| p.value());
    let high = highs.first().map_or(value, |p| p.value());
    let swing = (value - low).abs().max((high - value).abs());
    while lows.last().is_some_and(|p| p.value() >= point.value()) {
        lows.pop();
    }
    while highs.last().is_some_and(|p| p.value() <= point.value()) {
        highs.pop();
    }
    lows.push(point);
    highs.push(point);
    keep_newest(lows, MAX_WINDOW_SAMPLES);
    keep_newest(highs, MAX_WINDOW_SAMPLES);
    swing
}

/// Learns a baseline as the median of the readings in the first `window_ms` after the first
/// one. Keeps at most [`LEARN_POINTS`] values by thinning evenly, so memory stays bounded
/// however fast the sensor reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Learner {
    started: Millis,
    window_ms: Millis,
    stride: u32,
    seen: u32,
    kept: Vec<f32>,
}

/// Values a learner keeps at most.
pub const LEARN_POINTS: usize = 64;

impl Learner {
    pub fn new(started: Millis, window_ms: Millis) -> Learner {
        Learner { started, window_ms, stride: 1, seen: 0, kept: Vec::new() }
    }

    /// Feeds a reading; returns the baseline once the window has passed.
    pub fn observe(&mut self, at: Millis, value: f64) -> Option<f64> {
        if at - self.started >= self.window_ms && !self.kept.is_empty() {
            return Some(median(self.kept.iter().map(|&v| f64::from(v)).collect()));
        }
        if self.seen % self.stride == 0 {
            self.kept.push(value as f32);
            if self.kept.len() > LEARN_POINTS {
                // Keep every other value and take half as many from now on.
                let mut index = 0;
                self.kept.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn signal(text: &str, smooth: Option<Smooth>, transform: Option<Transform>) -> Signal {
        Signal { expr: ValueExpr::parse(text).unwrap(), unless: None, baseline: None, relative: Relative::Difference, compensate: None, smooth, transform }
    }

    fn run(signal: &Signal, values: &[(Millis, f64)]) -> Vec<Option<f64>> {
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        values.iter().map(|&(at, v)| signal.observe(&mut stage, &mut transform, at, &|_| Some(v))).collect()
    }

    #[test]
    fn a_smoothing_window_is_saved_and_read_back() {
        let s = signal("v", Some(Smooth { method: SmoothMethod::Median, window: Window::Samples(3), within: None }), None);
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        assert_eq!(serde_json::to_string(&stage).unwrap(), r#"{"smooth":[]}"#, "nothing seen: an empty list");
        for (second, v) in [(0, 1.0), (1, 5.0)] {
            s.observe(&mut stage, &mut transform, second * 1000, &|_| Some(v));
        }
        let saved = serde_json::to_string(&stage).unwrap();
        assert_eq!(saved, r#"{"smooth":[0,[1],[1.0,5.0]]}"#, "packed: first second, steps, values");
        let mut loaded: StageState = serde_json::from_str(&saved).unwrap();
        assert_eq!(loaded, stage);
        assert_eq!(s.observe(&mut loaded, &mut transform, 2000, &|_| Some(2.0)), Some(2.0), "the median of 1, 5, 2");
        assert_eq!(serde_json::from_str::<StageState>(r#"{"smooth":[]}"#).unwrap(), StageState::default());
    }

    #[test]
    fn median_filter_ignores_a_single_spike() {
        let s = signal("v", Some(Smooth { method: SmoothMethod::Median, window: Window::Samples(3), within: None }), None);
        let out = run(&s, &[(0, 1.0), (1, 1.0), (2, 9.0), (3, 1.0)]);
        assert_eq!(out, vec![None, None, Some(1.0), Some(1.0)], "no value until the window is full");
    }

    #[test]
    fn a_daily_median_keeps_a_bounded_number_of_points_and_cancels_the_daily_swing() {
        let s = signal("v", Some(Smooth { method: SmoothMethod::Median, window: Window::Time(24 * 60 * MIN), within: None }), None);
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        let mut last = None;
        for m in 0..(3 * 24 * 60) {
            // A level of 1.0 with a daily swing of ±0.5 and one reading a minute.
            let swing = 0.5 * (m as f64 / (24.0 * 60.0) * std::f64::consts::TAU).sin();
            last = s.observe(&mut stage, &mut transform, m * MIN, &|_| Some(1.0 + swing));
            let kept = stage.0.as_ref().map_or(0, |kept| kept.smooth.len());
            assert!(kept <= SMOOTH_POINTS as usize + TIME_WINDOW_MIN_POINTS, "minute {m}: {kept} points");
        }
        let level = last.unwrap();
        assert!((level - 1.0).abs() < 0.05, "the daily median is the level, not the swing: {level}");
    }

    #[test]
    fn a_new_window_never_takes_half_of_one_bad_reading() {
        let s = signal("v", Some(Smooth { method: SmoothMethod::Median, window: Window::Time(24 * 60 * MIN), within: None }), None);
        // Readings every ten minutes: the window is judged once they span three hours.
        let readings: Vec<(Millis, f64)> = (0..=18).map(|i| (i * 10 * MIN, if i == 18 { 9.0 } else { 0.1 })).collect();
        let out = run(&s, &readings);
        assert!(out[..18].iter().all(Option::is_none), "{out:?}");
        assert_eq!(out[18], Some(0.1f32 as f64), "{out:?}");
    }

    /// `expr` relative to its fields' level over the last hour, unsmoothed.
    fn recent_hour(expr: &str) -> Signal {
        Signal {
            expr: ValueExpr::parse(expr).unwrap(),
            unless: None,
            baseline: Some(BaselineSpec::Recent { window_ms: 60 * MIN }),
            relative: Relative::Difference,
            compensate: None,
            smooth: None,
            transform: None,
        }
    }

    #[test]
    fn a_recent_baseline_measures_the_change_from_where_each_field_just_was() {
        let s = recent_hour("hypot(x, y)");
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        // Mounted 0.8° off along x; the jump of 0.1° goes along y, at right angles.
        let reading = |m: i64| if m < 30 { (0.8, 0.0) } else { (0.8, 0.1) };
        let mut out = Vec::new();
        for m in 0..32 {
            let (x, y) = reading(m);
            out.push(s.observe(&mut stage, &mut transform, m * MIN, &|name| Some(if name == "x" { x } else { y })));
        }
        assert_eq!(&out[..3], &[None, None, None], "three readings make the first reference");
        assert!(out[29].unwrap() < 1e-6, "{out:?}");
        assert!((out[30].unwrap() - 0.1).abs() < 1e-6 && (out[31].unwrap() - 0.1).abs() < 1e-6, "{out:?}");
        assert_eq!(serde_json::from_str::<StageState>(&serde_json::to_string(&stage).unwrap()).unwrap(), stage, "saved and read back");
    }

    #[test]
    fn a_box_back_from_days_of_silence_is_judged_against_where_it_stood_before() {
        let s = recent_hour("x");
        let day = 24 * 60 * MIN;
        for (silence, seen) in [(3 * day, true), (8 * day, false)] {
            let (mut stage, mut transform) = (StageState::default(), TransformState::default());
            let readings = (0..120).map(|m| (m * MIN, 0.5)).chain((0..2).map(|m| (silence + m * MIN, 0.7)));
            let out: Vec<Option<f64>> = readings.map(|(at, x)| s.observe(&mut stage, &mut transform, at, &|name| (name == "x").then_some(x))).collect();
            if seen {
                assert!(out[120..].iter().all(|v| v.is_some_and(|v| (v - 0.2).abs() < 1e-6)), "the wall moved 0.2 while its box was silent: {out:?}");
            } else {
                assert_eq!(out[120..], [None, None], "a reference from more than a week ago is not taken: {out:?}");
            }
        }
    }

    #[test]
    fn mean_over_time_window_forgets_old_values() {
        let s = signal("v", Some(Smooth { method: SmoothMethod::Mean, window: Window::Time(10 * MIN), within: None }), None);
        let readings: Vec<(Millis, f64)> = (0..8).map(|i| (i * 2 * MIN, 10.0 * (i + 1) as f64)).collect();
        let out = run(&s, &readings);
        assert_eq!(out, vec![None, None, None, None, Some(30.0), Some(40.0), Some(50.0), Some(60.0)]);
    }

    #[test]
    fn a_window_reaches_back_for_five_readings_when_its_sensor_reports_seldom() {
        let s = signal("v", Some(Smooth { method: SmoothMethod::Median, window: Window::Time(60 * MIN), within: None }), None);
        // A box that reports every 40 minutes: an hour holds one or two of its readings; a pair
        // of spikes among them is still never the median.
        let at = |i: i64| i * 40 * MIN;
        let values = [1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 9.5, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0];
        let readings: Vec<(Millis, f64)> = values.iter().enumerate().map(|(i, &v)| (at(i as i64), v)).collect();
        let out = run(&s, &readings);
        let mut expected = vec![None; 4];
        expected.extend([Some(1.0); 10]);
        expected.push(Some(5.0));
        assert_eq!(out, expected, "two spikes never; a change once three readings show it");
        // Reporting every 3 minutes, then silent for three hours, then a spike first: the window
        // reaches back to the readings before the silence.
        let readings: Vec<(Millis, f64)> = (0..5).map(|i| (i * 3 * MIN, 1.0)).chain([(192 * MIN, 9.0), (195 * MIN, 1.0), (198 * MIN, 1.0)]).collect();
        let out = run(&s, &readings);
        assert_eq!(out, vec![None, None, None, None, Some(1.0), Some(1.0), Some(1.0), Some(1.0)], "the spike after the gap is never the median");
        // After more than a day of silence, it starts afresh: five new readings.
        let day = 24 * 60 * MIN;
        let readings: Vec<(Millis, f64)> = (0..5).map(|i| (i * 3 * MIN, 1.0)).chain((0..5).map(|i| (2 * day + i * 3 * MIN, 9.0))).collect();
        let out = run(&s, &readings);
        let expected = [None, None, None, None, Some(1.0), None, None, None, None, Some(9.0)];
        assert_eq!(out, expected, "nothing judged on readings from days ago");
    }

    #[test]
    fn apart_counts_a_move_that_stays_once_and_readings_that_jump_about_each_time() {
        let s = signal("hypot(x, y)", Some(Smooth { method: SmoothMethod::Apart, window: Window::Samples(2), within: None }), None);
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        let mut feed = |at: Millis, x: f64, y: f64| s.observe(&mut stage, &mut transform, at, &|name| Some(if name == "x" { x } else { y }));
        // The first reading has no step: its value alone.
        assert_eq!(feed(0, 0.3, 0.4), Some(0.5));
        // A move to (0.3, 0.5) that stays: its first reading the step, 0.1, then next to nothing.
        assert!((feed(MIN, 0.3, 0.5).unwrap() - 0.1).abs() < 1e-6);
        assert!(feed(2 * MIN, 0.3, 0.501).unwrap() < 0.002);
        // Readings that jump about: each one's step.
        assert!((feed(3 * MIN, 0.3, 0.3).unwrap() - 0.201).abs() < 1e-6);
        assert!((feed(4 * MIN, 0.3, 0.5).unwrap() - 0.2).abs() < 1e-6);
        // Apart from the reading before but near the origin: the smaller, its distance.
        assert!((feed(5 * MIN, 0.0, 0.01).unwrap() - 0.01).abs() < 1e-6);
    }

    #[test]
    fn steady_within_takes_two_spikes_that_land_apart_for_no_movement() {
        // Two spikes of about 1.6° in a row, 0.29° apart, on a box that steps 0.01° between
        // readings: within a third of their size, `steady 2` takes them for a movement that
        // stays; `within 0.03` does not, and still takes a movement that stays put.
        let run = |within: Option<f64>, spikes: [(f64, f64); 2]| {
            let s = signal("hypot(x, y)", Some(Smooth { method: SmoothMethod::Steady, window: Window::Samples(2), within }), None);
            let (mut stage, mut transform) = (StageState::default(), TransformState::default());
            let mut feed = |at: Millis, x: f64, y: f64| s.observe(&mut stage, &mut transform, at, &|name| Some(if name == "x" { x } else { y }));
            for i in 0..20 {
                feed(i * MIN, 0.0, if i % 2 == 0 { 0.01 } else { 0.0 });
            }
            feed(20 * MIN, spikes[0].0, spikes[0].1);
            feed(21 * MIN, spikes[1].0, spikes[1].1).unwrap_or(0.0)
        };
        let spikes = [(-1.55, 0.81), (-1.36, 0.59)];
        assert!(run(None, spikes) > 1.0, "a third of their size");
        assert_eq!(run(Some(0.03), spikes), 0.0);
        let stays = run(Some(0.03), [(0.3, 0.0), (0.3, 0.01)]);
        assert!((stays - 0.30008).abs() < 1e-3, "{stays}");
    }

    #[test]
    fn steady_passes_a_movement_that_stays_and_nothing_that_jumps_about() {
        let s = signal("hypot(x, y)", Some(Smooth { method: SmoothMethod::Steady, window: Window::Samples(2), within: None }), None);
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        let mut feed = |at: Millis, x: f64, y: f64| s.observe(&mut stage, &mut transform, at, &|name| Some(if name == "x" { x } else { y }));
        assert_eq!(feed(0, 0.0, 0.0), None, "two readings make the first value");
        assert_eq!(feed(MIN, 0.0, 0.0), Some(0.0));
        // Two spikes in a row, in different directions: large values, but they disagree.
        assert_eq!(feed(2 * MIN, 0.5, 0.0), Some(0.0));
        assert_eq!(feed(3 * MIN, 0.0, 0.4), Some(0.0));
        assert_eq!(feed(4 * MIN, 0.0, 0.0), Some(0.0));
        // A move to (0.1, 0.05) that stays.
        assert_eq!(feed(5 * MIN, 0.1, 0.05), Some(0.0), "one reading is not yet a move");
        let moved = feed(6 * MIN, 0.1, 0.052).unwrap();
        assert!((moved - (0.1f64.hypot(0.05) + 0.1f64.hypot(0.052)) / 2.0).abs() < 1e-6, "the mean of the two: {moved}");
        // Back, then two spikes in the same direction but far apart: no.
        feed(7 * MIN, 0.0, 0.0);
        feed(8 * MIN, 0.0, 0.0);
        assert_eq!(feed(9 * MIN, 0.2, 0.0), Some(0.0));
        assert_eq!(feed(10 * MIN, 1.0, 0.0), Some(0.0), "a step four times the distance gone is no movement going on");
        // A wall that keeps moving, 0.06° a report, along (0.6, 0.8): the third reading out
        // confirms the two before it.
        feed(11 * MIN, 0.0, 0.0);
        feed(12 * MIN, 0.0, 0.0);
        assert_eq!(feed(13 * MIN, 0.036, 0.048), Some(0.0));
        assert_eq!(feed(14 * MIN, 0.072, 0.096), Some(0.0), "two readings out could be two spikes");
        let going = feed(15 * MIN, 0.108, 0.144).unwrap();
        assert!((going - 0.06).abs() < 1e-6, "{going}");
    }

    #[test]
    fn a_lead_carries_a_steady_movement_ahead_once_its_pace_is_known() {
        let s = signal("v", None, Some(Transform::Lead(30 * MIN)));
        // One unit an hour: 0.5 ahead in 30 minutes, once two hours show the pace.
        let values: Vec<(Millis, f64)> = (0..=240).map(|m| (m * MIN, m as f64 / 60.0)).collect();
        let out = run(&s, &values);
        assert_eq!(out[90], Some(1.5), "the value alone before the history spans two hours");
        for (m, carried) in out.iter().enumerate().skip(120) {
            let carried = carried.unwrap();
            let ahead = m as f64 / 60.0 + 0.5;
            assert!((carried - ahead).abs() <= 0.02, "minute {m}: {carried} for {ahead}");
        }
        // A step that does not go on (a front of weather) is not carried ahead, nor a fall.
        let step: Vec<(Millis, f64)> = (0..=240).map(|m| (m * MIN, if m < 200 { 1.0 } else { 2.0 })).collect();
        assert_eq!(run(&s, &step)[230], Some(2.0));
        let falling: Vec<(Millis, f64)> = (0..=240).map(|m| (m * MIN, 5.0 - m as f64 / 60.0)).collect();
        assert_eq!(run(&s, &falling)[240], Some(1.0));
    }

    #[test]
    fn change_over_waits_for_a_full_window_then_measures_it() {
        let s = signal("v", None, Some(Transform::ChangeOver { window: 60 * MIN, windows: 1 }));
        let values: Vec<(Millis, f64)> = (0..=90).map(|m| (m * MIN, m as f64 * 0.01)).collect();
        let out = run(&s, &values);
        assert_eq!(out[59], None, "less than an hour of history");
        for (m, change) in out.iter().enumerate().skip(60) {
            let change = change.unwrap();
            assert!((0.6 - 1e-6..=0.6 + 0.02).contains(&change), "minute {m}: {change}");
        }
    }

    #[test]
    fn change_over_history_stays_bounded() {
        let s = signal("v", None, Some(Transform::ChangeOver { window: 24 * 60 * MIN, windows: 1 }));
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        for second in 0..(3 * 24 * 3600) {
            s.observe(&mut stage, &mut transform, second * 1000, &|_| Some(1.0));
        }
        let Some(Transformed::History(history)) = transform.0.as_deref() else { panic!("a change_over keeps a history") };
        assert!(history.len() <= HISTORY_POINTS as usize + 2, "{}", history.len());
    }

    #[test]
    fn consecutive_windows_take_the_smaller_change() {
        let s = signal("v", None, Some(Transform::ChangeOver { window: 10 * MIN, windows: 2 }));
        // Rises 1.0 in the first ten minutes, then 0.2 in the next ten.
        let values: Vec<(Millis, f64)> = (0..=20).map(|m| (m * MIN, if m <= 10 { m as f64 * 0.1 } else { 1.0 + (m - 10) as f64 * 0.02 })).collect();
        let out = run(&s, &values);
        assert_eq!(out[19], None, "two windows are not covered yet");
        let last = out[20].unwrap();
        assert!((last - 0.2).abs() < 1e-6, "the second window's change decides: {last}");
    }

    #[test]
    fn consecutive_windows_history_stays_bounded() {
        let s = signal("v", None, Some(Transform::ChangeOver { window: 60 * MIN, windows: 2 }));
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        for second in 0..(6 * 3600) {
            s.observe(&mut stage, &mut transform, second * 1000, &|_| Some(1.0));
        }
        let Some(Transformed::History(history)) = transform.0.as_deref() else { panic!("a change_over keeps a history") };
        assert!(history.len() <= 2 * HISTORY_POINTS as usize + 2, "{}", history.len());
    }

    #[test]
    fn swing_sees_a_jump_within_the_window_and_forgets_it_after() {
        let s = signal("v", None, Some(Transform::SwingWithin(10 * MIN)));
        let out = run(&s, &[(0, 0.03), (MIN, 0.03), (2 * MIN, 0.45), (5 * MIN, 0.45), (13 * MIN, 0.45)]);
        let out: Vec<f64> = out.into_iter().map(Option::unwrap).collect();
        assert!(out[2] > 0.41 && out[3] > 0.41, "{out:?}");
        assert_eq!(out[4], 0.0, "the old level has left the window");
    }

    #[test]
    fn swing_from_the_extremes_matches_a_scan_of_the_whole_window() {
        let s = signal("v", None, Some(Transform::SwingWithin(10 * MIN)));
        let (mut stage, mut transform) = (StageState::default(), TransformState::default());
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut kept: Vec<(Millis, f64)> = Vec::new();
        for step in 0..2_000i64 {
            // xorshift: irregular values and gaps of 10 to 90 seconds.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = step * 50_000 + (seed % 40) as i64 * 1000;
            let value = f64::from((seed >> 20) as u16) / 1000.0;
            let value = f64::from(value as f32);
            let expected = kept.iter().filter(|&&(t, _)| t >= at - 10 * MIN).map(|&(_, v)| (value - v).abs()).fold(0.0, f64::max);
            let swing = s.observe(&mut stage, &mut transform, at, &|_| Some(value)).unwrap();
            assert!((swing - expected).abs() < 1e-9, "step {step}: {swing} vs {expected}");
            kept.push((at, value));
        }
        let Some(Transformed::Extremes(extremes)) = transform.0.as_deref() else { panic!("a swing keeps extremes") };
        assert!(extremes.lows.len() + extremes.highs.len() < 40, "{} + {}", extremes.lows.len(), extremes.highs.len());
    }

    #[test]
    fn median_handles_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![5.0]), 5.0);
    }

    #[test]
    fn learner_takes_the_median_of_the_first_window() {
        let mut learner = Learner::new(0, 60 * MIN);
        for m in 0..60 {
            let v = if m == 30 { 99.0 } else { 0.2 };
            assert_eq!(learner.observe(m * MIN, v), None);
        }
        assert!((learner.observe(60 * MIN, 5.0).unwrap() - 0.2).abs() < 1e-6);
    }

    #[test]
    fn learner_memory_is_bounded_for_fast_sensors() {
        let mut learner = Learner::new(0, 24 * 60 * MIN);
        for second in 0..(24 * 3600) {
            learner.observe(second * 1000, 1.0);
        }
        assert!(learner.kept.len() <= LEARN_POINTS);
        assert_eq!(learner.observe(24 * 3600 * 1000, 1.0), Some(1.0));
    }

    #[test]
    fn display_reads_as_words() {
        let s = Signal {
            expr: ValueExpr::parse("permille(hypot(x, y))").unwrap(),
            unless: None,
            baseline: Some(BaselineSpec::Learn { window_ms: 24 * 60 * MIN }),
            relative: Relative::Difference,
            compensate: None,
            smooth: Some(Smooth { method: SmoothMethod::Median, window: Window::Time(60 * MIN), within: None }),
            transform: Some(Transform::ChangeOver { window: 24 * 60 * MIN, windows: 1 }),
        };
        assert_eq!(s.to_string(), "change over 1day of median 1h of permille(hypot(x, y)) from baseline");
    }
}
