//! Error text with its causes on one line, for messages kept as text (run.json's reason and warnings, a
//! failed run's `failure.json`, the benches' skip lines).

/// `e` and its chain of causes, `: `-separated: the text `{:#}` of an `anyhow::Error` prints, for errors
/// whose message names the file or step and whose `source()` says what went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // A cause already spelled out in the message (the older style) is not repeated.
        if !text.ends_with(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}")]
    struct Outer {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn the_chain_names_the_file_and_the_cause_once() {
        let e = Outer {
            path: "run.json".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(e.to_string(), "reading run.json");
        assert_eq!(error_chain(&e), "reading run.json: disk full");
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "reading run.json: disk full"
        );
    }
}
