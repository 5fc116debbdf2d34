//! kcptun's `-snmplog` / `-snmpperiod`: the process-wide KCP counters appended to a CSV file.
//!
//! Every period, one row is appended: the Unix time, then kcp-go's 24 counters in kcp-go's
//! order ([`HEADER`]). A file that is empty gets the header row first. The file name is
//! formatted through **Go's time layout** (the reference time is Mon Jan 2 15:04:05 MST
//! 2006), applied to the file-name part only, so `./snmp-20060102.log` starts a new file each
//! day, as with kcptun. Counters are cumulative since the process started (kcptun never
//! resets them either).
//!
//! ```
//! use chrono::TimeZone;
//! use nodelink_tunnel::snmp::{go_time_format, log_path};
//! let t = chrono::Local.with_ymd_and_hms(2024, 3, 9, 7, 5, 1).unwrap();
//! assert_eq!(go_time_format("snmp-20060102.log", &t), "snmp-20240309.log");
//! assert_eq!(go_time_format("2006-01-02T15:04:05 Jan _2 pm", &t), "2024-03-09T07:05:01 Mar  9 am");
//! assert_eq!(log_path("./logs-2006/snmp-20060102.log", &t).to_str(), Some("./logs-2006/snmp-20240309.log"));
//! ```

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Datelike, Local, Offset, TimeZone, Timelike};
use nodelink_kcp::Stats;
use tokio_util::sync::CancellationToken;

/// The CSV header: `Unix` and kcp-go's counter names, in kcp-go's `Snmp.Header()` order.
pub const HEADER: [&str; 25] = [
    "Unix",
    "BytesSent",
    "BytesReceived",
    "MaxConn",
    "ActiveOpens",
    "PassiveOpens",
    "CurrEstab",
    "InErrs",
    "InCsumErrors",
    "KCPInErrors",
    "InPkts",
    "OutPkts",
    "InSegs",
    "OutSegs",
    "InBytes",
    "OutBytes",
    "RetransSegs",
    "FastRetransSegs",
    "EarlyRetransSegs",
    "LostSegs",
    "RepeatSegs",
    "FECParityShards",
    "FECErrs",
    "FECRecovered",
    "FECShortShards",
];

/// One CSV row (without the line end): `unix` then every counter in [`HEADER`]'s order.
pub fn csv_row(unix: i64, stats: &Stats) -> String {
    let fields = stats.fields();
    let mut row = unix.to_string();
    for name in &HEADER[1..] {
        let value = fields
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v);
        let _ = write!(row, ",{value}");
    }
    row
}

/// The file for time `now`: the directory part kept as is, the file name formatted with
/// [`go_time_format`] (kcptun formats only the file name).
pub fn log_path<Tz: TimeZone>(pattern: &str, now: &DateTime<Tz>) -> PathBuf
where
    Tz::Offset: Copy,
{
    let (dir, file) = match pattern.rfind('/') {
        Some(i) => pattern.split_at(i + 1),
        None => ("", pattern),
    };
    PathBuf::from(format!("{dir}{}", go_time_format(file, now)))
}

/// Appends one row of `stats` to the file for `now`, writing the header first when the
/// file is empty. Returns the file's path.
///
/// # Errors
///
/// Opening or writing the file.
pub fn append(pattern: &str, now: &DateTime<Local>, stats: &Stats) -> io::Result<PathBuf> {
    let path = log_path(pattern, now);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut text = String::new();
    if file.metadata()?.len() == 0 {
        text.push_str(&HEADER.join(","));
        text.push('\n');
    }
    text.push_str(&csv_row(now.timestamp(), stats));
    text.push('\n');
    file.write_all(text.as_bytes())?;
    Ok(path)
}

/// Appends the process-wide counters ([`nodelink_kcp::snmp`]) every `period` until
/// `stop` is cancelled. The first row is written one period after the start, as kcptun
/// does. A file error is logged and ends the logger (kcptun does the same).
pub async fn run_logger(pattern: String, period: Duration, stop: CancellationToken) {
    if pattern.is_empty() || period.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Local::now();
        if let Err(e) = append(&pattern, &now, &nodelink_kcp::snmp()) {
            tracing::warn!(file = %log_path(&pattern, &now).display(), error = &e as &dyn std::error::Error,
                "cannot write the SNMP log; no more rows will be written");
            return;
        }
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats `t` with a Go time layout (`2006-01-02 15:04:05`, `Jan _2`, `Monday`, `PM`,
/// `-0700`, `.000`, ...). Text that is not a layout element is copied as is, as in Go.
pub fn go_time_format<Tz: TimeZone>(layout: &str, t: &DateTime<Tz>) -> String
where
    Tz::Offset: Copy,
{
    let mut out = String::new();
    let mut rest = layout;
    while let Some(c) = rest.chars().next() {
        let (text, used) = element(rest, t).unwrap_or_else(|| (c.to_string(), c.len_utf8()));
        out.push_str(&text);
        rest = &rest[used..];
    }
    out
}

/// The layout element at the start of `s`, formatted, and its length in bytes.
fn element<Tz: TimeZone>(s: &str, t: &DateTime<Tz>) -> Option<(String, usize)>
where
    Tz::Offset: Copy,
{
    let month = t.month0() as usize;
    let weekday = t.weekday().num_days_from_monday() as usize;
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    let offset = t.offset().fix().local_minus_utc();
    // Longest tokens first where one is a prefix of another.
    let table: [(&str, String); 30] = [
        ("January", MONTHS[month].to_string()),
        ("Jan", MONTHS[month][..3].to_string()),
        ("Monday", DAYS[weekday].to_string()),
        ("Mon", DAYS[weekday][..3].to_string()),
        ("MST", zone_abbrev(offset)),
        ("2006", format!("{:04}", t.year())),
        ("002", format!("{:03}", t.ordinal())),
        ("01", format!("{:02}", t.month())),
        ("02", format!("{:02}", t.day())),
        ("03", format!("{hour12:02}")),
        ("04", format!("{:02}", t.minute())),
        ("05", format!("{:02}", t.second())),
        ("06", format!("{:02}", t.year().rem_euclid(100))),
        ("_2", format!("{:>2}", t.day())),
        ("15", format!("{:02}", t.hour())),
        ("1", t.month().to_string()),
        ("2", t.day().to_string()),
        ("3", hour12.to_string()),
        ("4", t.minute().to_string()),
        ("5", t.second().to_string()),
        ("PM", if t.hour() >= 12 { "PM" } else { "AM" }.to_string()),
        ("pm", if t.hour() >= 12 { "pm" } else { "am" }.to_string()),
        ("-07:00:00", numeric_zone(offset, ":", true)),
        ("-070000", numeric_zone(offset, "", true)),
        ("-07:00", numeric_zone(offset, ":", false)),
        ("-0700", numeric_zone(offset, "", false)),
        ("-07", numeric_zone(offset, "", false)[..3].to_string()),
        ("Z07:00", z_zone(offset, ":")),
        ("Z0700", z_zone(offset, "")),
        ("Z07", z_zone(offset, "").chars().take(3).collect()),
    ];
    if s.starts_with("_2006") {
        // Go reads "_2006" as a literal underscore followed by the year.
        return Some((format!("_{:04}", t.year()), 5));
    }
    if let Some((token, text)) = table.iter().find(|(token, _)| s.starts_with(token)) {
        return Some((text.clone(), token.len()));
    }
    fraction(s, t.nanosecond() % 1_000_000_000)
}

/// `.000` (fixed digits) or `.999` (trailing zeros dropped) after a `.` or `,`, when not
/// followed by another digit.
fn fraction(s: &str, nanos: u32) -> Option<(String, usize)> {
    let bytes = s.as_bytes();
    let sep = *bytes.first()?;
    if sep != b'.' && sep != b',' {
        return None;
    }
    let digit = *bytes.get(1)?;
    if digit != b'0' && digit != b'9' {
        return None;
    }
    let n = bytes[1..].iter().take_while(|&&b| b == digit).count();
    if bytes.get(1 + n).is_some_and(u8::is_ascii_digit) || n > 9 {
        return None;
    }
    let all = format!("{nanos:09}");
    let mut digits = all[..n].to_string();
    if digit == b'9' {
        digits = digits.trim_end_matches('0').to_string();
        if digits.is_empty() {
            return Some((String::new(), 1 + n));
        }
    }
    Some((format!("{}{digits}", sep as char), 1 + n))
}

fn zone_abbrev(offset: i32) -> String {
    if offset == 0 {
        "UTC".into()
    } else {
        numeric_zone(offset, "", false)
    }
}

fn numeric_zone(offset: i32, sep: &str, seconds: bool) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    if seconds {
        format!("{sign}{h:02}{sep}{m:02}{sep}{s:02}")
    } else {
        format!("{sign}{h:02}{sep}{m:02}")
    }
}

fn z_zone(offset: i32, sep: &str) -> String {
    if offset == 0 {
        "Z".into()
    } else {
        numeric_zone(offset, sep, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at(offset_secs: i32) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(offset_secs)
            .unwrap()
            .with_ymd_and_hms(2021, 9, 22, 15, 4, 5)
            .unwrap()
            + chrono::Duration::milliseconds(120)
    }

    #[test]
    fn go_layouts() {
        let t = at(0);
        assert_eq!(go_time_format("snmp-20060102.log", &t), "snmp-20210922.log");
        assert_eq!(
            go_time_format("Mon Jan _2 15:04:05 MST 2006", &t),
            "Wed Sep 22 15:04:05 UTC 2021"
        );
        assert_eq!(
            go_time_format("Monday January 2, 06 3:4:5 PM", &t),
            "Wednesday September 22, 21 3:4:5 PM"
        );
        assert_eq!(
            go_time_format("15.000|05.999|05,9", &t),
            "15.120|05.12|05,1"
        );
        assert_eq!(go_time_format("002 Z07:00", &t), "265 Z");
        assert_eq!(
            go_time_format("-0700 -07:00 Z0700", &at(-5 * 3600 - 1800)),
            "-0530 -05:30 -0530"
        );
        assert_eq!(go_time_format("plain text.log", &t), "plain text.log");
        assert_eq!(go_time_format("x_2006y", &t), "x_2021y");
        assert_eq!(go_time_format("03pm", &at(0)), "03pm");
    }

    #[test]
    fn only_the_file_name_is_formatted() {
        let t = at(0);
        assert_eq!(
            log_path("/var/2006/01/snmp-2006.csv", &t),
            PathBuf::from("/var/2006/01/snmp-2021.csv")
        );
        assert_eq!(log_path("snmp.log", &t), PathBuf::from("snmp.log"));
    }

    #[test]
    fn header_then_rows() {
        let dir = std::env::temp_dir().join(format!("nodelink-snmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pattern = format!("{}/snmp-20060102.log", dir.display());
        let mut stats = Stats::default();
        stats.bytes_sent = 7;
        stats.bytes_received = 9;
        stats.fec_short_shards = 3;
        let now = Local::now();
        let path = append(&pattern, &now, &stats).unwrap();
        append(&pattern, &now, &stats).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], HEADER.join(","));
        assert!(lines[0].starts_with("Unix,BytesSent,BytesReceived,MaxConn,"));
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(row.len(), 25);
        assert_eq!(row[0], now.timestamp().to_string());
        assert_eq!((row[1], row[2], row[24]), ("7", "9", "3"));
        assert_eq!(lines[1], lines[2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
