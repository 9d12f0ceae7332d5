//! NATS subject rules: wildcard matching of filters (`*` one token, `>` the rest) and
//! validation of publish subjects, shared by the in-process bus and the callers.

/// True when `subject` matches the NATS-style `filter`: tokens are separated by `.`, `*`
/// matches exactly one token and `>` (last token only) matches one or more remaining tokens.
///
/// ```
/// use event_bus::subject_matches;
/// assert!(subject_matches("raw-event.>", "raw-event.page_view"));
/// assert!(subject_matches("raw-event.*", "raw-event.page_view"));
/// assert!(!subject_matches("raw-event.*", "raw-event.a.b"));
/// assert!(!subject_matches("raw-event.>", "raw-event"));
/// assert!(!subject_matches("raw-event.>", "quarantine.x"));
/// ```
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    if filter.is_empty() || subject.is_empty() {
        return false;
    }
    let mut subject_tokens = subject.split('.');
    let mut filter_tokens = filter.split('.').peekable();
    while let Some(f) = filter_tokens.next() {
        if f == ">" {
            // `>` must be the last filter token and needs at least one subject token.
            return filter_tokens.peek().is_none()
                && subject_tokens.next().is_some_and(|t| !t.is_empty());
        }
        match subject_tokens.next() {
            None | Some("") => return false,
            Some(t) => {
                if f != "*" && f != t {
                    return false;
                }
            }
        }
    }
    subject_tokens.next().is_none()
}

/// Why `subject` can't be published to, or `None` when it is a valid literal subject.
pub(crate) fn publish_subject_problem(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        return Some("empty subject");
    }
    if subject.chars().any(char::is_whitespace) {
        return Some("subject contains white space");
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Some("subject has an empty token");
        }
        if token == "*" || token == ">" {
            return Some("subject contains a wildcard");
        }
    }
    None
}

/// Why `filter` is not a valid subscription filter, or `None`.
pub(crate) fn filter_problem(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("empty filter subject");
    }
    if filter.chars().any(char::is_whitespace) {
        return Some("filter subject contains white space");
    }
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Some("filter subject has an empty token");
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Some("`>` must be the last token of a filter subject");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(subject_matches("a.b.c", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("a.*.c", "a.x.c"));
        assert!(!subject_matches("a.*.c", "a.x.y.c"));
        assert!(subject_matches("a.>", "a.b"));
        assert!(subject_matches("a.>", "a.b.c.d"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches(">", "a"));
        assert!(subject_matches("*.b.>", "x.b.y"));
        assert!(!subject_matches("a.>.c", "a.b.c"));
        assert!(!subject_matches("", "a"));
        assert!(!subject_matches("a", ""));
        assert!(!subject_matches("a.*", "a."));
    }

    #[test]
    fn validation() {
        assert_eq!(publish_subject_problem("raw-event.x"), None);
        assert!(publish_subject_problem("raw-event.*").is_some());
        assert!(publish_subject_problem("raw-event..x").is_some());
        assert!(publish_subject_problem("raw event").is_some());
        assert!(publish_subject_problem("").is_some());
        assert_eq!(filter_problem("raw-event.>"), None);
        assert!(filter_problem("a.>.b").is_some());
    }
}
