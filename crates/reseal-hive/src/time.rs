//! FILETIME helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// 100-ns intervals between 1601-01-01 and 1970-01-01.
const EPOCH_DIFF: u64 = 116_444_736_000_000_000;

/// The current time as a Windows FILETIME.
pub fn now_filetime() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    EPOCH_DIFF + d.as_secs() * 10_000_000 + u64::from(d.subsec_nanos()) / 100
}

/// Formats a FILETIME as an ISO-8601 UTC timestamp (seconds precision).
pub fn filetime_to_iso(ft: u64) -> String {
    if ft < EPOCH_DIFF {
        return format!("filetime:{ft}");
    }
    let secs = (ft - EPOCH_DIFF) / 10_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_format() {
        assert_eq!(filetime_to_iso(EPOCH_DIFF), "1970-01-01T00:00:00Z");
        // 2020-02-29 12:34:56 UTC = 1582979696 s after the Unix epoch.
        assert_eq!(
            filetime_to_iso(EPOCH_DIFF + 1_582_979_696 * 10_000_000),
            "2020-02-29T12:34:56Z"
        );
    }
}
