//! What the CLI prints for people: times in RFC 3339, listings as aligned
//! columns under a header, progress bars on a terminal, and the log writer
//! that keeps log lines from tearing a progress bar.
//!
//! Machine output (`--json`) does not come through here: every listing prints
//! JSON Lines (one object per line, nothing else) and every other command one
//! JSON object, with times as Unix seconds.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Unix seconds as RFC 3339 in UTC to the second (`2026-12-02T03:11:29Z`).
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// An optional time for a table cell: RFC 3339, or `-`.
pub fn rfc3339_or_dash(unix: Option<i64>) -> String {
    unix.map_or_else(|| "-".to_string(), rfc3339)
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`): no calendar dependency for one conversion.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A listing for people: a header line, then one line per row, each column as
/// wide as its widest cell (two spaces apart; the last column is not padded).
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Prints the table, or `empty` when it has no rows (a listing says what
    /// is there even when nothing is).
    pub fn print_or(&self, empty: &str) {
        if self.rows.is_empty() {
            println!("{empty}");
        } else {
            print!("{}", self.render());
        }
    }

    /// The header and rows as text, each line ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate().take(columns) {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < columns {
                    text.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(cell.chars().count())));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut out, &mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(String::as_str));
        }
        out
    }
}

/// `n thing` or `n things`.
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// The progress bar on screen, if any: log lines are written around it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A progress bar on standard error, drawn only when standard error is a
/// terminal (tests, CI and pipes see nothing). Cleared when dropped.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar counting to `len`, or a spinner without one. `template` is
    /// indicatif's (`{pos}`, `{len}`, `{per_sec}`, `{msg}`, `{elapsed}`…).
    pub fn start(len: Option<u64>, template: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: ProgressBar::hidden() };
        }
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut shown) = SHOWN.lock() {
            *shown = Some(bar.clone());
        }
        Progress { bar }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Ok(mut shown) = SHOWN.lock() {
            *shown = None;
        }
    }
}

/// Standard error for log lines: each event is written with the progress bar
/// (if one is shown) lifted out of the way, so neither tears the other.
#[derive(Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let shown = SHOWN.lock().ok().and_then(|s| s.clone());
        match shown {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc_to_the_second() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_181_089), "2026-12-02T03:11:29Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_or_dash(None), "-");
    }

    #[test]
    fn tables_align_their_columns_under_a_header() {
        let mut t = Table::new(&["ID", "STATE", "NAMES"]);
        t.row(vec!["res_1".into(), "active".into(), "a.example b.example".into()]);
        t.row(vec!["res_22".into(), "-".into(), String::new()]);
        assert_eq!(t.render(), "ID      STATE   NAMES\nres_1   active  a.example b.example\nres_22  -\n");
    }

    #[test]
    fn counts_say_one_or_many() {
        assert_eq!(count(1, "certificate"), "1 certificate");
        assert_eq!(count(0, "certificate"), "0 certificates");
    }
}
