//! The results: one row per scenario side, as a markdown table and as JSON.

use super::*;

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Default, Clone)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    /// "publish" or "consume"
    pub(crate) kind: &'static str,
    pub(crate) n: u64,
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    /// fault end -> connected again
    pub(crate) recover_connected: Option<f64>,
    /// fault end -> everything published before it confirmed (publish) / every message handled
    /// (consume)
    pub(crate) recover_done: Option<f64>,
    pub(crate) app_errors: u64,
    pub(crate) buffer_full: u64,
    pub(crate) reconnects: u64,
    /// blackhole: start -> the library's state left CONNECTED
    pub(crate) detect: Option<f64>,
    pub(crate) notes: Vec<String>,
    pub(crate) failures: Vec<String>,
}

impl Row {
    pub(crate) fn new(scenario: &str, kind: &'static str) -> Row {
        Row {
            scenario: scenario.to_string(),
            kind,
            ..Default::default()
        }
    }
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty() && self.missing == 0
    }
    pub(crate) fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        say(&format!(
            "{} ({}): CHECK FAILED: {why}",
            self.scenario, self.kind
        ));
        self.failures.push(why);
    }
    pub(crate) fn check(&mut self, ok: bool, why: impl FnOnce() -> String) {
        if !ok {
            self.fail(why());
        }
    }
}

pub(crate) fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2} s"))
}

pub(crate) fn table(rows: &[Row], cfg: &Cfg) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "## resilient-amqp fault suite ({}; publish rate {} msg/s)\n\n",
        if cfg.full { "FULL" } else { "SHORT" },
        cfg.rate
    ));
    s.push_str(
        "| scenario | side | N | missing | duplicates | recover: connected / done | app errors (BUFFER_FULL) | result | notes |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---|---|---|---|\n");
    for r in rows {
        let mut notes = r.notes.clone();
        for f in &r.failures {
            notes.push(format!("FAILED: {f}"));
        }
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} ({}) | {} | {} |\n",
            r.scenario,
            r.kind,
            r.n,
            r.missing,
            r.duplicates,
            fmt_opt(r.recover_connected),
            fmt_opt(r.recover_done),
            r.app_errors,
            r.buffer_full,
            if r.passed() { "pass" } else { "FAIL" },
            notes.join("; ").replace('|', "/"),
        ));
    }
    s.push_str(
        "\nrecover: *connected* = fault end -> the library connected again (0 when it kept its \
         connection); *done* = fault end -> every message published before the fault end was \
         confirmed (publish) / every seeded message reached a callback (consume). Fault end = the \
         broker accepting TCP again (stop_app, kill), the library seeing the last close \
         (close_all), the proxy forwarding again (blackhole), the watermark restored (alarm). \
         *offline* in the notes = the library's own outages (state not CONNECTED), sampled \
         every 5 ms. Missing and duplicates are \
         counted by an independent lapin reader (publish) or from the callbacks' bodies (consume).\n",
    );
    s
}

pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub(crate) fn json_opt(v: Option<f64>) -> String {
    v.map_or("null".to_string(), |v| format!("{v:.3}"))
}

pub(crate) fn json(rows: &[Row], cfg: &Cfg, took: Duration) -> String {
    let mut s = format!(
        "{{\n  \"mode\": {},\n  \"publish_rate\": {},\n  \"seconds\": {:.1},\n  \"passed\": {},\n  \"failed\": {},\n  \"rows\": [\n",
        json_str(if cfg.full { "full" } else { "short" }),
        cfg.rate,
        secs(took),
        rows.iter().filter(|r| r.passed()).count(),
        rows.iter().filter(|r| !r.passed()).count()
    );
    for (i, r) in rows.iter().enumerate() {
        let list = |v: &[String]| v.iter().map(|x| json_str(x)).collect::<Vec<_>>().join(", ");
        s.push_str(&format!(
            "    {{\"scenario\": {}, \"side\": {}, \"n\": {}, \"missing\": {}, \"duplicates\": {}, \
             \"recover_connected_s\": {}, \"recover_done_s\": {}, \"app_errors\": {}, \
             \"buffer_full\": {}, \"reconnects\": {}, \"detect_s\": {}, \"passed\": {}, \
             \"notes\": [{}], \"failures\": [{}]}}{}\n",
            json_str(&r.scenario),
            json_str(r.kind),
            r.n,
            r.missing,
            r.duplicates,
            json_opt(r.recover_connected),
            json_opt(r.recover_done),
            r.app_errors,
            r.buffer_full,
            r.reconnects,
            json_opt(r.detect),
            r.passed(),
            list(&r.notes),
            list(&r.failures),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    s.push_str("  ]\n}\n");
    s
}
