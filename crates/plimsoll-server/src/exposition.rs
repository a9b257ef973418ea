//! Prometheus' classic text format (0.0.4) from a prometheus-client
//! registry: the one encoding of the server's `/metrics` and of `plimsoll
//! guard`'s own.

use prometheus_client::registry::Registry;

/// Every metric of `registry`, in the classic text format.
pub(crate) fn encode_classic(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, registry)
        .expect("writing to a String cannot fail");
    classic_counter_names(&out)
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has
/// samples `x_total`; in the classic format the `HELP` and `TYPE` lines must
/// name `x_total` itself, or Prometheus' linters report the samples as
/// undocumented. Renames those two lines for counters.
fn classic_counter_names(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + 256);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let next = lines.get(i + 1).copied().unwrap_or("");
        if let (Some(help), Some(kind)) =
            (line.strip_prefix("# HELP "), next.strip_prefix("# TYPE "))
            && let Some((name, help_text)) = help.split_once(' ')
            && kind == format!("{name} counter")
        {
            out.push_str(&format!(
                "# HELP {name}_total {help_text}\n# TYPE {name}_total counter\n"
            ));
            i += 2;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}
