//! Progress of long commands: a live bar on stderr when it is a terminal; otherwise silence
//! while the command runs and one summary line at the end, so logs and pipes get a record
//! without redraw noise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use postern_store::Progress;

/// Shows one command's progress; `finish` or `abandon` (or dropping it) ends the display.
pub struct Reporter {
    verb: String,
    tty: bool,
    started: Instant,
    state: Mutex<State>,
}

struct State {
    phase: String,
    phase_started: Instant,
    now: Counts,
    /// (items, bytes) of the phase that handled the most messages: later phases (verifying,
    /// counting) go over the same bytes again without counting messages, so the summary names
    /// the main one.
    busiest: (u64, u64),
    /// Counts or totals were reported, not only phase names.
    counted: bool,
    reported: bool,
    finished: bool,
    bar: Option<ProgressBar>,
    /// Whether the bar's style is the one with a total (None: not styled yet).
    bar_with_total: Option<bool>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    items: u64,
    bytes: u64,
    total_items: u64,
    total_bytes: u64,
}

impl Counts {
    /// How much of the whole is done, when the whole is known.
    fn fraction(&self) -> Option<f64> {
        if self.total_bytes > 0 {
            Some((self.bytes as f64 / self.total_bytes as f64).min(1.0))
        } else if self.total_items > 0 {
            Some((self.items as f64 / self.total_items as f64).min(1.0))
        } else {
            None
        }
    }
}

impl Reporter {
    /// `verb` opens the summary line: "imported", "exported", "copied".
    pub fn new(verb: &str) -> Reporter {
        Reporter::on(verb, std::io::stderr().is_terminal())
    }

    fn on(verb: &str, tty: bool) -> Reporter {
        let now = Instant::now();
        Reporter {
            verb: verb.to_string(),
            tty,
            started: now,
            state: Mutex::new(State {
                phase: String::new(),
                phase_started: now,
                now: Counts::default(),
                busiest: (0, 0),
                counted: false,
                reported: false,
                finished: false,
                bar: None,
                bar_with_total: None,
            }),
        }
    }

    /// Ends the display of a command that succeeded: clears the bar on a terminal, else prints
    /// the summary line. Nothing at all when no progress was reported (most commands report
    /// none). Only the first call of this or [`Reporter::abandon`] does anything.
    pub fn finish(&self) {
        self.end(true);
    }

    /// Ends the display of a command that failed: the bar goes, and no summary is printed, as
    /// the error is the one line a failed command writes on stderr. Dropping does this too.
    pub fn abandon(&self) {
        self.end(false);
    }

    fn end(&self, succeeded: bool) {
        if let Some(line) = self.closing_line(succeeded) {
            eprintln!("{line}");
        }
    }

    /// Clears the bar; the summary line to print, if any.
    fn closing_line(&self, succeeded: bool) -> Option<String> {
        let mut s = self.lock();
        if s.finished {
            return None;
        }
        s.finished = true;
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        }
        if !succeeded || self.tty || !s.reported {
            return None;
        }
        let (items, bytes) = s.busiest.max((s.now.items, s.now.bytes));
        Some(summary(
            &self.verb,
            s.counted.then_some((items, bytes)),
            self.started.elapsed(),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        if s.finished {
            return;
        }
        change(&mut s);
        s.reported = true;
        if self.tty {
            draw(&mut s);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl Progress for Reporter {
    fn total(&self, items: u64, bytes: u64) {
        self.update(|s| {
            s.now.total_items = items;
            s.now.total_bytes = bytes;
            s.counted = true;
        });
    }

    fn add(&self, items: u64, bytes: u64) {
        self.update(|s| {
            s.now.items += items;
            s.now.bytes += bytes;
            s.counted = true;
        });
    }

    fn phase(&self, name: &str) {
        self.update(|s| {
            s.busiest = s.busiest.max((s.now.items, s.now.bytes));
            s.now = Counts::default();
            s.phase = name.to_string();
            s.phase_started = Instant::now();
        });
    }
}

/// The bar (made at the first report) shows the state: a bar when the total is known,
/// a spinner when not.
fn draw(s: &mut State) {
    let fraction = s.now.fraction();
    let bar = s.bar.get_or_insert_with(|| {
        let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    if s.bar_with_total != Some(fraction.is_some()) {
        let template = if fraction.is_some() {
            "{prefix} [{bar:25}] {msg}"
        } else {
            "{spinner} {prefix} {msg}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .progress_chars("=> ");
        bar.set_style(style);
        s.bar_with_total = Some(fraction.is_some());
    }
    if bar.prefix() != s.phase {
        bar.set_prefix(s.phase.clone());
    }
    bar.set_position(fraction.map_or(0, |f| (f * 1000.0) as u64));
    bar.set_message(status(&s.now, s.phase_started.elapsed()));
}

/// "1200/3000 messages, 16.4/41.2 MiB, 410 msg/s, 13.3 MiB/s, 4 s left"; empty before any count.
fn status(c: &Counts, elapsed: Duration) -> String {
    if c.items == 0 && c.bytes == 0 && c.total_items == 0 && c.total_bytes == 0 {
        return String::new();
    }
    let mut parts = Vec::new();
    parts.push(match c.total_items {
        0 => messages(c.items),
        total => format!("{}/{}", c.items, messages(total)),
    });
    parts.push(match c.total_bytes {
        0 => size(c.bytes),
        total => format!("{} of {}", size(c.bytes), size(total)),
    });
    let secs = elapsed.as_secs_f64();
    if secs >= 0.5 {
        parts.push(format!("{:.0} msg/s", c.items as f64 / secs));
        parts.push(format!("{}/s", size((c.bytes as f64 / secs) as u64)));
    }
    if let Some(f) = c.fraction()
        && f > 0.0
        && secs >= 0.5
    {
        let left = secs * (1.0 - f) / f;
        parts.push(format!("{} left", duration(Duration::from_secs_f64(left))));
    }
    parts.join(", ")
}

/// The one line printed at the end when stderr is not a terminal:
/// "imported: 3000 messages, 41.2 MiB in 3.1 s (13.3 MiB/s, 968 msg/s)".
fn summary(verb: &str, counts: Option<(u64, u64)>, elapsed: Duration) -> String {
    let took = duration(elapsed);
    let Some((items, bytes)) = counts else {
        return format!("{verb} in {took}");
    };
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "{verb}: {}, {} in {took} ({}/s, {:.0} msg/s)",
        messages(items),
        size(bytes),
        size((bytes as f64 / secs) as u64),
        items as f64 / secs
    )
}

fn messages(n: u64) -> String {
    if n == 1 {
        "1 message".to_string()
    } else {
        format!("{n} messages")
    }
}

/// Bytes in binary units, one decimal: "41.2 MiB".
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// "3.1 s" under a minute, else "2 min 05 s", else "1 h 02 min".
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_counts_size_time_and_rate() {
        let line = summary(
            "imported",
            Some((3000, 43_200_000)),
            Duration::from_millis(3100),
        );
        assert_eq!(
            line,
            "imported: 3000 messages, 41.2 MiB in 3.1 s (13.3 MiB/s, 968 msg/s)"
        );
        assert_eq!(
            summary("migrated", None, Duration::from_millis(400)),
            "migrated in 0.4 s"
        );
        assert_eq!(
            summary("copied", Some((1, 10)), Duration::ZERO),
            "copied: 1 message, 10 B in 0.0 s (9.8 KiB/s, 1000 msg/s)"
        );
    }

    #[test]
    fn status_shows_totals_rates_and_time_left_when_known() {
        let c = Counts {
            items: 1000,
            bytes: 10 << 20,
            total_items: 3000,
            total_bytes: 30 << 20,
        };
        assert_eq!(
            status(&c, Duration::from_secs(2)),
            "1000/3000 messages, 10.0 MiB of 30.0 MiB, 500 msg/s, 5.0 MiB/s, 4.0 s left"
        );
        let c = Counts {
            items: 7,
            bytes: 2048,
            ..Counts::default()
        };
        assert_eq!(
            status(&c, Duration::from_millis(100)),
            "7 messages, 2.0 KiB"
        );
        assert_eq!(status(&Counts::default(), Duration::from_secs(9)), "");
        assert_eq!(duration(Duration::from_secs(125)), "2 min 05 s");
        assert_eq!(size(5 << 30), "5.0 GiB");
    }

    #[test]
    fn the_summary_counts_the_busiest_phase_and_only_after_success() {
        let off_tty = |verb| Reporter::on(verb, false);
        let r = off_tty("copied");
        r.phase("copying messages");
        r.total(3, 3 << 20);
        r.add(3, 3 << 20);
        r.phase("counting both stores");
        r.add(1, 1);
        let line = r.closing_line(true).unwrap();
        assert!(
            line.starts_with("copied: 3 messages, 3.0 MiB in "),
            "{line}"
        );
        assert_eq!(r.closing_line(true), None, "once");

        let failed = off_tty("imported");
        failed.add(5, 5);
        assert_eq!(failed.closing_line(false), None, "the error is the line");
        assert_eq!(off_tty("done").closing_line(true), None, "nothing reported");
        let schema = off_tty("migrated");
        schema.phase("bringing the schema up to date");
        assert!(
            schema
                .closing_line(true)
                .unwrap()
                .starts_with("migrated in ")
        );
    }
}
