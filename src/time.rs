//! Calendar arithmetic without a calendar crate: Unix seconds → RFC 5322 date
//! (`Sun, 22 Nov 2026 03:45:16 +0000`), as used in the SMTP `Received:` header.
//!
//! The conversion is Howard Hinnant's `civil_from_days` (proleptic Gregorian
//! calendar, exact for every day in range). Times are always written in UTC.
//! Input is clamped to years 1970..=9999 so the output always matches the RFC
//! 5322 `date-time` grammar with a four-digit year.
//!
//! This is the crate's one calendar: [`days_from_civil`], [`civil_from_days`],
//! [`MONTHS`], [`WEEKDAYS`] and [`unix_now`] serve every protocol (IMAP dates, MIME
//! `Date:` parsing, mboxrd export), so none keeps a copy of its own.

use std::fmt;
use std::time::SystemTime;

/// Earliest second written: 1970-01-01T00:00:00Z.
pub const UNIX_SECONDS_MIN: i64 = 0;
/// Latest second written: 9999-12-31T23:59:59Z.
pub const UNIX_SECONDS_MAX: i64 = 253_402_300_799;

const SECONDS_PER_DAY: i64 = 86_400;
/// Weekday abbreviations, Sunday first (the index of [`DateTime::weekday`]).
pub const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
/// Month abbreviations, January first (index `month - 1`), as RFC 5322, IMAP and asctime
/// write them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday .. 6 = Saturday
    pub weekday: u32,
}

/// Converts days since 1970-01-01 to (year, month 1..=12, day 1..=31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both casts are of values proven in range by the arithmetic above.
    (year, month as u32, day as u32)
}

/// Converts (year, month 1..=12, day 1..=31) to days since 1970-01-01.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

impl DateTime {
    /// The UTC date and time of `unix` seconds, clamped to
    /// [`UNIX_SECONDS_MIN`]..=[`UNIX_SECONDS_MAX`].
    pub fn from_unix(unix: i64) -> DateTime {
        let unix = unix.clamp(UNIX_SECONDS_MIN, UNIX_SECONDS_MAX);
        let days = unix.div_euclid(SECONDS_PER_DAY);
        let secs = unix.rem_euclid(SECONDS_PER_DAY) as u32; // [0, 86399]
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday (4).
        let weekday = (days + 4).rem_euclid(7) as u32;
        DateTime {
            year,
            month,
            day,
            hour: secs / 3_600,
            minute: secs / 60 % 60,
            second: secs % 60,
            weekday,
        }
    }
}

/// Writes the RFC 5322 form: `Sun, 22 Nov 2026 03:45:16 +0000` (day zero-padded).
impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let weekday = WEEKDAYS[(self.weekday % 7) as usize];
        let month = MONTHS[((self.month + 11) % 12) as usize];
        write!(
            f,
            "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} +0000",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }
}

/// Current Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 5322 date of `unix` seconds in UTC, e.g. `Sun, 22 Nov 2026 03:45:16 +0000`.
pub fn rfc5322_date(unix: i64) -> String {
    DateTime::from_unix(unix).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // Values cross-checked with `date -u -d @N '+%a, %d %b %Y %H:%M:%S +0000'`.
        let cases: &[(i64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
            (86_399, "Thu, 01 Jan 1970 23:59:59 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (951_868_800, "Wed, 01 Mar 2000 00:00:00 +0000"),
            (1_000_000_000, "Sun, 09 Sep 2001 01:46:40 +0000"),
            (1_234_567_890, "Fri, 13 Feb 2009 23:31:30 +0000"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 +0000"),
            (1_735_689_599, "Tue, 31 Dec 2024 23:59:59 +0000"),
            (1_795_319_116, "Sun, 22 Nov 2026 03:45:16 +0000"),
            (2_147_483_647, "Tue, 19 Jan 2038 03:14:07 +0000"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 +0000"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 +0000"),
        ];
        for &(unix, want) in cases {
            assert_eq!(rfc5322_date(unix), want, "unix {unix}");
        }
    }

    #[test]
    fn out_of_range_is_clamped() {
        assert_eq!(rfc5322_date(-1), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(i64::MIN), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 +0000");
    }

    #[test]
    fn civil_round_trips_every_day_and_weekdays_advance() {
        // Every day from 1970 to 2500: days → civil → days is the identity, the
        // date advances by exactly one day, and the weekday cycles.
        let mut prev = civil_from_days(-1);
        let mut prev_weekday = DateTime::from_unix(0).weekday + 6;
        for days in 0..days_from_civil(2500, 1, 1) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let next_in_month = (y, m, d) == (prev.0, prev.1, prev.2 + 1);
            let new_month = d == 1 && ((y, m) == (prev.0, prev.1 + 1) || (y, m) == (prev.0 + 1, 1));
            assert!(next_in_month || new_month, "{prev:?} -> {:?}", (y, m, d));
            let weekday = DateTime::from_unix(days * SECONDS_PER_DAY).weekday;
            assert_eq!(weekday, (prev_weekday + 1) % 7);
            prev = (y, m, d);
            prev_weekday = weekday;
        }
    }

    #[test]
    fn leap_years() {
        let is_leap = |y: i64| days_from_civil(y, 3, 1) - days_from_civil(y, 2, 28) == 2;
        assert!(is_leap(2000));
        assert!(is_leap(2024));
        assert!(!is_leap(1900));
        assert!(!is_leap(2100));
        assert!(!is_leap(2023));
    }
}
