//! Sizes ("50M", 1024) and durations ("5m", 30) as config values.

use serde::{Deserialize, Deserializer, de};
use std::time::Duration;

/// A size in bytes; strings take K, M, G suffixes (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// A duration in whole seconds; strings take s, m, h, d suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl Seconds {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

fn split_suffix(s: &str) -> (&str, &str) {
    let s = s.trim();
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..i], s[i..].trim())
}

pub fn parse_size(s: &str) -> Option<u64> {
    let (n, unit) = split_suffix(s);
    let n: u64 = n.parse().ok()?;
    let mul: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}

pub fn parse_seconds(s: &str) -> Option<u64> {
    let (n, unit) = split_suffix(s);
    let n: u64 = n.parse().ok()?;
    let mul = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mul)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Ok(ByteSize(n)),
            NumOrStr::Str(s) => parse_size(&s).map(ByteSize).ok_or_else(|| {
                de::Error::custom(format!(
                    "{s:?} is not a size (e.g. 1048576, \"512K\", \"50M\")"
                ))
            }),
        }
    }
}

/// Longer durations than this are refused: deadlines are computed by adding them to now.
const MAX_SECONDS: u64 = 10 * 365 * 86400;

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Seconds(n),
            NumOrStr::Str(s) => parse_seconds(&s).map(Seconds).ok_or_else(|| {
                de::Error::custom(format!(
                    "{s:?} is not a duration (e.g. 30, \"30s\", \"5m\", \"2h\")"
                ))
            })?,
        };
        if s.0 > MAX_SECONDS {
            return Err(de::Error::custom(format!(
                "{} seconds is longer than the 10 years a duration may be",
                s.0
            )));
        }
        Ok(s)
    }
}
