//! Checks shared by every free-text field people type.

/// Whether `text` holds characters no one types into a name, a note or a
/// key: control characters other than line breaks and tabs (NUL, BEL,
/// escape sequences) and the bidirectional overrides that make a text
/// display in another order than it reads (U+202A–U+202E, U+2066–U+2069).
pub fn has_control(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

#[cfg(test)]
mod tests {
    use super::has_control;

    #[test]
    fn line_breaks_pass_and_invisible_controls_do_not() {
        assert!(!has_control("敖汉旗 草原人家\n第二行\t(tab)"));
        for bad in [
            "a\u{0}b",
            "bell\u{7}",
            "\u{1b}[31m",
            "abc\u{202E}txt.exe",
            "\u{2066}x",
        ] {
            assert!(has_control(bad), "{bad:?}");
        }
    }
}
