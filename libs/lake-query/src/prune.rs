//! Partition pruning: which event-time hours a query can touch, from its predicates on the
//! partition columns `date` and `hour` and on `created_at` (a partition holds the events of
//! one event-time hour, so a `created_at` range bounds the partitions too).
//!
//! The result is conservative: any conjunct it does not understand is ignored (the query
//! still applies it to the rows), so pruning never drops a partition a row could come from.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use event_lake::layout::HOUR_MS;

/// Hours per day.
const DAY_HOURS: i64 = 24;

/// The hours a query can read: `[lo, hi)` in hours since the epoch (either side open) and the
/// hours of the day allowed (bit h = hour h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRange {
    /// First hour (inclusive), hours since the epoch.
    pub lo: Option<i64>,
    /// End hour (exclusive), hours since the epoch.
    pub hi: Option<i64>,
    /// Allowed hours of the day.
    pub hours_of_day: u32,
}

const ALL_HOURS: u32 = (1 << 24) - 1;

impl Default for HourRange {
    fn default() -> Self {
        HourRange { lo: None, hi: None, hours_of_day: ALL_HOURS }
    }
}

impl HourRange {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// The hours of one UTC day.
    pub fn day(day: i64) -> Self {
        HourRange { lo: Some(day * DAY_HOURS), hi: Some((day + 1) * DAY_HOURS), hours_of_day: ALL_HOURS }
    }

    /// Whether an epoch hour may hold rows of the query.
    pub fn contains(&self, hour: i64) -> bool {
        self.lo.is_none_or(|lo| hour >= lo)
            && self.hi.is_none_or(|hi| hour < hi)
            && self.hours_of_day & (1 << hour.rem_euclid(DAY_HOURS)) != 0
    }

    /// True when nothing can match.
    pub fn is_empty(&self) -> bool {
        self.hours_of_day == 0 || matches!((self.lo, self.hi), (Some(lo), Some(hi)) if lo >= hi)
    }

    /// The intersection of two ranges.
    pub fn and(self, o: HourRange) -> HourRange {
        HourRange {
            lo: max_opt(self.lo, o.lo),
            hi: min_opt(self.hi, o.hi),
            hours_of_day: self.hours_of_day & o.hours_of_day,
        }
    }

    /// A range covering both (the hull: an OR of two ranges).
    fn or(self, o: HourRange) -> HourRange {
        if self.is_empty() {
            return o;
        }
        if o.is_empty() {
            return self;
        }
        HourRange {
            lo: self.lo.zip(o.lo).map(|(a, b)| a.min(b)),
            hi: self.hi.zip(o.hi).map(|(a, b)| a.max(b)),
            hours_of_day: self.hours_of_day | o.hours_of_day,
        }
    }

    /// Days (since the epoch) the range covers, when bounded on both sides.
    pub fn days(&self) -> Option<std::ops::Range<i64>> {
        let (lo, hi) = (self.lo?, self.hi?);
        Some(lo.div_euclid(DAY_HOURS)..(hi + DAY_HOURS - 1).div_euclid(DAY_HOURS))
    }

    /// The range implied by a set of filters (a conjunction).
    pub fn from_filters(filters: &[Expr]) -> HourRange {
        filters.iter().fold(HourRange::all(), |acc, f| acc.and(of_expr(f)))
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Which time column an expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeCol {
    /// `date`: days.
    Date,
    /// `hour`: hour of the day.
    Hour,
    /// `created_at`: milliseconds.
    CreatedAt,
}

fn time_col(e: &Expr) -> Option<TimeCol> {
    match e {
        Expr::Column(c) => match c.name.as_str() {
            "date" => Some(TimeCol::Date),
            "hour" => Some(TimeCol::Hour),
            "created_at" => Some(TimeCol::CreatedAt),
            _ => None,
        },
        // Casts between date/time/integer types keep the order of values.
        Expr::Cast(c) => time_col(&c.expr),
        Expr::TryCast(c) => time_col(&c.expr),
        _ => None,
    }
}

/// A literal as a position on the column's axis: days for `date`, hours of the day for
/// `hour`, milliseconds for `created_at`.
fn literal(col: TimeCol, e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else { return None };
    match col {
        TimeCol::Date => match v {
            ScalarValue::Date32(Some(d)) => Some(i64::from(*d)),
            ScalarValue::Date64(Some(ms)) => Some(ms.div_euclid(86_400_000)),
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
                Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp().div_euclid(86_400))
            }
            _ => None,
        },
        TimeCol::Hour => match v {
            ScalarValue::Int8(Some(h)) => Some(i64::from(*h)),
            ScalarValue::Int16(Some(h)) => Some(i64::from(*h)),
            ScalarValue::Int32(Some(h)) => Some(i64::from(*h)),
            ScalarValue::Int64(Some(h)) => Some(*h),
            ScalarValue::UInt8(Some(h)) => Some(i64::from(*h)),
            ScalarValue::UInt16(Some(h)) => Some(i64::from(*h)),
            ScalarValue::UInt32(Some(h)) => Some(i64::from(*h)),
            ScalarValue::UInt64(Some(h)) => i64::try_from(*h).ok(),
            _ => None,
        },
        TimeCol::CreatedAt => match v {
            ScalarValue::TimestampSecond(Some(t), _) => t.checked_mul(1000),
            ScalarValue::TimestampMillisecond(Some(t), _) => Some(*t),
            ScalarValue::TimestampMicrosecond(Some(t), _) => Some(t.div_euclid(1000)),
            ScalarValue::TimestampNanosecond(Some(t), _) => Some(t.div_euclid(1_000_000)),
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                chrono::DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp_millis())
            }
            _ => None,
        },
    }
}

/// The range of `col op value` (value on the column's axis).
fn compare(col: TimeCol, op: Operator, v: i64) -> HourRange {
    let all = HourRange::all();
    match col {
        TimeCol::Date => {
            let (lo, hi) = (v * DAY_HOURS, (v + 1) * DAY_HOURS);
            match op {
                Operator::Eq => HourRange { lo: Some(lo), hi: Some(hi), ..all },
                Operator::Lt => HourRange { hi: Some(lo), ..all },
                Operator::LtEq => HourRange { hi: Some(hi), ..all },
                Operator::Gt => HourRange { lo: Some(hi), ..all },
                Operator::GtEq => HourRange { lo: Some(lo), ..all },
                _ => all,
            }
        }
        TimeCol::Hour => {
            let mask = |keep: &dyn Fn(i64) -> bool| (0..DAY_HOURS).filter(|h| keep(*h)).fold(0u32, |m, h| m | (1 << h));
            let hours_of_day = match op {
                Operator::Eq => mask(&|h| h == v),
                Operator::Lt => mask(&|h| h < v),
                Operator::LtEq => mask(&|h| h <= v),
                Operator::Gt => mask(&|h| h > v),
                Operator::GtEq => mask(&|h| h >= v),
                _ => ALL_HOURS,
            };
            HourRange { hours_of_day, ..all }
        }
        TimeCol::CreatedAt => {
            let hour = v.div_euclid(HOUR_MS);
            match op {
                Operator::Eq => HourRange { lo: Some(hour), hi: Some(hour + 1), ..all },
                // created_at < v: rows up to v - 1 ms.
                Operator::Lt => HourRange { hi: Some((v - 1).div_euclid(HOUR_MS) + 1), ..all },
                Operator::LtEq => HourRange { hi: Some(hour + 1), ..all },
                Operator::Gt | Operator::GtEq => HourRange { lo: Some(hour), ..all },
                _ => all,
            }
        }
    }
}

fn flip(op: Operator) -> Operator {
    match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        other => other,
    }
}

/// The hours one predicate allows (all of them when it is not understood).
fn of_expr(e: &Expr) -> HourRange {
    let all = HourRange::all();
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => of_expr(left).and(of_expr(right)),
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => of_expr(left).or(of_expr(right)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if let Some(col) = time_col(left)
                && let Some(v) = literal(col, right)
            {
                return compare(col, *op, v);
            }
            if let Some(col) = time_col(right)
                && let Some(v) = literal(col, left)
            {
                return compare(col, flip(*op), v);
            }
            all
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            let Some(col) = time_col(expr) else { return all };
            match (literal(col, low), literal(col, high)) {
                (Some(l), Some(h)) => compare(col, Operator::GtEq, l).and(compare(col, Operator::LtEq, h)),
                _ => all,
            }
        }
        Expr::InList(list) if !list.negated => {
            let Some(col) = time_col(&list.expr) else { return all };
            let mut acc: Option<HourRange> = None;
            for item in &list.list {
                let Some(v) = literal(col, item) else { return all };
                let r = compare(col, Operator::Eq, v);
                acc = Some(match acc {
                    None => r,
                    Some(a) => a.or(r),
                });
            }
            acc.unwrap_or(HourRange { hours_of_day: 0, ..all })
        }
        _ => all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn day(s: &str) -> i64 {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date").and_hms_opt(0, 0, 0).expect("t").and_utc().timestamp() / 86_400
    }

    fn date_lit(s: &str) -> Expr {
        lit(ScalarValue::Date32(Some(day(s) as i32)))
    }

    #[test]
    fn date_equality_is_one_day() {
        let r = HourRange::from_filters(&[col("date").eq(date_lit("2026-11-23"))]);
        assert_eq!(r, HourRange::day(day("2026-11-23")));
        assert_eq!(r.days(), Some(day("2026-11-23")..day("2026-11-23") + 1));
    }

    #[test]
    fn hour_and_date_ranges_combine() {
        let d = day("2026-11-23");
        let r = HourRange::from_filters(&[
            col("date").gt_eq(date_lit("2026-11-23")).and(col("date").lt_eq(date_lit("2026-11-24"))),
            col("hour").between(lit(3i32), lit(5i32)),
        ]);
        assert_eq!(r.days(), Some(d..d + 2));
        assert!(r.contains(d * 24 + 3) && r.contains(d * 24 + 29) && !r.contains(d * 24 + 6) && !r.contains(d * 24 + 48 + 3));
    }

    #[test]
    fn created_at_bounds_hours() {
        let ms = 1_795_392_000_000i64; // 2026-11-23T00:00Z
        let ts = |v| lit(ScalarValue::TimestampMillisecond(Some(v), Some("UTC".into())));
        let r = HourRange::from_filters(&[col("created_at").gt_eq(ts(ms + 1_800_000)), col("created_at").lt(ts(ms + 2 * HOUR_MS))]);
        assert_eq!((r.lo, r.hi), (Some(ms / HOUR_MS), Some(ms / HOUR_MS + 2)));
        // Reversed operands and IN lists.
        let r = HourRange::from_filters(&[ts(ms).lt_eq(col("created_at"))]);
        assert_eq!((r.lo, r.hi), (Some(ms / HOUR_MS), None));
        let r = HourRange::from_filters(&[col("date").in_list(vec![date_lit("2026-11-23"), date_lit("2026-11-25")], false)]);
        assert_eq!(r.days(), Some(day("2026-11-23")..day("2026-11-25") + 1));
    }

    #[test]
    fn unknown_predicates_prune_nothing() {
        let r = HourRange::from_filters(&[col("user_id").eq(lit("u1")), col("date").not_eq(date_lit("2026-11-23"))]);
        assert_eq!(r, HourRange::all());
        let r = HourRange::from_filters(&[col("date").eq(date_lit("2026-11-23")).or(col("user_id").eq(lit("u1")))]);
        assert_eq!(r, HourRange::all());
    }
}
