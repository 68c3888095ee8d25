//! Nanoseconds since the epoch as UTC RFC 3339 text: the shim's CRI log lines and the
//! checkpoint archive's times. No time zone database: UTC only.

/// Formats nanoseconds since the epoch with nine fraction digits: `2026-11-27T07:08:09.000000123Z`.
pub fn rfc3339_nano(ns: i64) -> String {
    let (date, nanos) = civil(ns);
    format!("{date}.{nanos:09}Z")
}

/// Formats nanoseconds since the epoch to the second: `2026-11-30T14:00:00Z`.
pub fn rfc3339(ns: i64) -> String {
    format!("{}Z", civil(ns).0)
}

/// `YYYY-MM-DDTHH:MM:SS` and the nanoseconds within that second.
fn civil(ns: i64) -> (String, i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian, H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    (date, nanos)
}

#[cfg(test)]
mod tests {
    use super::{rfc3339, rfc3339_nano};

    #[test]
    fn times_are_utc_rfc3339_with_and_without_nanoseconds() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_007),
            "2000-02-29T00:00:00.000000007Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_043_600_123_456_789), "2026-11-30T13:00:00Z");
        assert_eq!(rfc3339_nano(-1), "1969-12-31T23:59:59.999999999Z");
    }
}
