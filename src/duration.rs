//! Durations as a person writes and reads them: one syntax for every
//! command-line option and profile key that takes a duration (`600`,
//! `90s`, `10m`, `1h`, `7d`), one way to print time left (`30d`,
//! `59m 59s`), and ISO 8601 UTC stamps for logs. `--json` keeps plain
//! seconds; these are for the lines a person reads.

/// Whole seconds from `600` (bare seconds), `90s`, `10m`, `1h` or `7d`;
/// `None` for anything else or more than `u32` seconds (136 years).
pub fn parse(s: &str) -> Option<u32> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u32 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The longest duration a profile key or a ban takes: 365 days.
pub const YEAR: u32 = 31_536_000;

/// "a duration from 1 second to 1 day": the phrase every refusal of a
/// duration uses, the command line's and the profile's alike.
pub fn bounds(min: u32, max: u32) -> String {
    format!("a duration from {} to {}", words(min), words(max))
}

/// The hint after a refused duration on the command line.
pub const SYNTAX: &str = "write 600 (seconds), 90s, 10m, 1h or 7d";

/// A clap value parser for a duration option between `min` and `max`
/// seconds, giving seconds.
pub fn arg(
    min: u32,
    max: u32,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match parse(s) {
        Some(secs) if (min..=max).contains(&secs) => Ok(u64::from(secs)),
        _ => Err(format!("`{s}` is not {}: {SYNTAX}", bounds(min, max))),
    }
}

/// `secs` in its largest whole unit, spelled out: "1 second", "365 days",
/// "90 seconds" (not a whole minute and a half).
pub fn words(secs: u32) -> String {
    let (n, unit) = match secs {
        s if s > 0 && s % 86400 == 0 => (s / 86400, "day"),
        s if s > 0 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s > 0 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural}")
}

/// Time left or elapsed, as its two largest units: `30d`, `1d 2h`,
/// `59m 59s`, `5s`. A zero lower unit is left out (`2h`, not `2h 0m`).
pub fn human(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let Some(top) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "0s".to_string();
    };
    let (size, unit) = UNITS[top];
    let mut out = format!("{}{unit}", secs / size);
    if let Some((next, next_unit)) = UNITS.get(top + 1) {
        let rest = secs % size / next;
        if rest > 0 {
            out.push_str(&format!(" {rest}{next_unit}"));
        }
    }
    out
}

/// Milliseconds since the Unix epoch as ISO 8601 UTC with milliseconds:
/// `2026-12-04T18:20:01.123Z`.
pub fn iso8601_ms(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let (days, of_day) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        epoch_ms % 1000
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01, by the
/// era arithmetic of Howard Hinnant's "chrono-compatible low-level date
/// algorithms" (eras of 400 years, years starting in March so the leap
/// day falls last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_bare_seconds() {
        assert_eq!(parse("90"), Some(90));
        assert_eq!(parse("90s"), Some(90));
        assert_eq!(parse("10m"), Some(600));
        assert_eq!(parse("1h"), Some(3600));
        assert_eq!(parse("7d"), Some(604_800));
    }

    #[test]
    fn refuses_other_spellings_and_overflow() {
        for bad in [
            "",
            "m",
            "10x",
            "1.5h",
            "-5",
            "10 m",
            "10M",
            "1h30m",
            "99999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse("49711d"), None, "more than u32 seconds");
    }

    #[test]
    fn arg_keeps_its_bounds_and_says_them() {
        let p = arg(1, 86400);
        assert_eq!(p("10m"), Ok(600));
        assert_eq!(p("1d"), Ok(86400));
        let too_long = p("2d").unwrap_err();
        assert_eq!(
            too_long,
            "`2d` is not a duration from 1 second to 1 day: write 600 (seconds), 90s, 10m, 1h or 7d"
        );
        assert!(p("0").is_err());
        assert!(p("ten").unwrap_err().starts_with("`ten` is not a duration"));
    }

    #[test]
    fn words_name_the_largest_whole_unit() {
        assert_eq!(words(1), "1 second");
        assert_eq!(words(90), "90 seconds");
        assert_eq!(words(600), "10 minutes");
        assert_eq!(words(86400), "1 day");
        assert_eq!(words(31_536_000), "365 days");
    }

    #[test]
    fn human_shows_two_units_at_most() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(5), "5s");
        assert_eq!(human(3599), "59m 59s");
        assert_eq!(human(3540), "59m");
        assert_eq!(human(7200), "2h");
        assert_eq!(human(93_600), "1d 2h");
        assert_eq!(human(2_592_000), "30d");
    }

    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1796408401` is Fri Dec  4 18:20:01 UTC 2026.
        assert_eq!(iso8601_ms(1_796_408_401_123), "2026-12-04T18:20:01.123Z");
        // A leap day and the last millisecond of a leap year.
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
    }
}
