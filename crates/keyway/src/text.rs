//! A peer's words as keyway shows them: in errors, logs and a terminal.

/// Whether `c` must not reach a terminal from a peer: control characters (escape
/// sequences), and the invisible format characters that reorder or hide text (the
/// bidirectional overrides and isolates, zero-width characters, the BOM).
pub(crate) fn unshowable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// A peer's string made safe to show: no [`unshowable`] characters, at most `max`
/// characters (an ellipsis marks a cut).
pub(crate) fn shown(s: &str, max: usize) -> String {
    let mut kept = s.chars().filter(|c| !unshowable(*c));
    let cleaned: String = kept.by_ref().take(max).collect();
    if kept.next().is_some() {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_reordering_are_taken_out_and_length_is_bounded() {
        assert_eq!(shown("a\u{1b}[31mb\u{202E}c\u{200B}d", 100), "a[31mbcd");
        assert_eq!(shown(&"x".repeat(300), 200).chars().count(), 201);
        assert_eq!(shown("short", 200), "short");
    }
}
