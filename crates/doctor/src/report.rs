//! Findings, grouped in sections, printed for people or as JSON for machines.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    pub findings: Vec<Finding>,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            findings: Vec::new(),
        }
    }

    pub fn ok(&mut self, what: impl Into<String>) {
        self.push(Level::Ok, what.into(), None);
    }

    pub fn info(&mut self, what: impl Into<String>) {
        self.push(Level::Info, what.into(), None);
    }

    pub fn warn(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Warn, what.into(), Some(fix.into()));
    }

    pub fn fail(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Fail, what.into(), Some(fix.into()));
    }

    pub fn push(&mut self, level: Level, what: String, fix: Option<String>) {
        self.findings.push(Finding { level, what, fix });
    }

    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Fail)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub sections: Vec<Section>,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.sections
            .iter()
            .flat_map(|s| &s.findings)
            .filter(|f| f.level == level)
            .count()
    }

    pub fn failed(&self) -> bool {
        self.count(Level::Fail) > 0
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            ok: bool,
            failures: usize,
            warnings: usize,
            sections: &'a [Section],
        }
        serde_json::to_string_pretty(&Out {
            ok: !self.failed(),
            failures: self.count(Level::Fail),
            warnings: self.count(Level::Warn),
            sections: &self.sections,
        })
        .unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.sections {
            out.push_str(&s.title);
            out.push('\n');
            for f in &s.findings {
                out.push_str(&format!("  {:<5} {}\n", f.level.tag(), f.what));
                if let Some(fix) = &f.fix {
                    out.push_str(&format!("        Fix: {fix}\n"));
                }
            }
            out.push('\n');
        }
        let (fails, warns) = (self.count(Level::Fail), self.count(Level::Warn));
        out.push_str(&match (fails, warns) {
            (0, 0) => "All checks passed.\n".to_string(),
            (0, w) => format!("No failures; {w} warning(s) above.\n"),
            (f, w) => format!("{f} problem(s) to fix and {w} warning(s): see each Fix above.\n"),
        });
        out
    }
}
