//! Prometheus' own linter on metrics text: `promtool check metrics`
//! (package `prometheus`, which `scripts/test` installs).

use std::io::Write;
use std::process::{Command, Stdio};

/// Panics with promtool's complaints unless it accepts `text` silently.
pub fn assert_promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (package prometheus; ./scripts/test installs it)");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let complaints =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool: {complaints}\n{text}"
    );
}
