//! Checks shared by every free-text field people type.

use crate::AppError;

/// Checks a text field people type: not blank when `required`, at most
/// `max` characters, no [control characters](has_control). The message
/// starts with the field's name.
pub fn check(field: &str, text: &str, max: usize, required: bool) -> Result<(), AppError> {
    if required && text.trim().is_empty() {
        return Err(AppError::bad_input(format!("{field}: must not be empty")));
    }
    if text.chars().count() > max {
        return Err(AppError::bad_input(format!(
            "{field}: at most {max} characters"
        )));
    }
    if has_control(text) {
        return Err(AppError::bad_input(format!(
            "{field}: no control characters or text-direction overrides (line breaks and tabs are fine)"
        )));
    }
    Ok(())
}

/// [`check`] for a one-line field (a person's name as on a document):
/// no line breaks or tabs either.
pub fn check_line(field: &str, text: &str, max: usize, required: bool) -> Result<(), AppError> {
    check(field, text, max, required)?;
    if text.contains(['\n', '\r', '\t']) {
        return Err(AppError::bad_input(format!(
            "{field}: one line, no line breaks or tabs"
        )));
    }
    Ok(())
}

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

/// Normalises (trimmed, lower case) and checks an email address.
pub fn normalise_email(email: &str) -> Result<String, AppError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(AppError::bad_input(format!(
            "`{email}` is not an email address"
        )))
    }
}

/// `n` with its noun, singular for one: "1 room", "3 rooms".
pub fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::{check, has_control, plural};

    #[test]
    fn one_is_singular_and_the_rest_plural() {
        assert_eq!(plural(1, "room", "rooms"), "1 room");
        assert_eq!(plural(0, "room", "rooms"), "0 rooms");
        assert_eq!(plural(3, "seat", "seats"), "3 seats");
    }

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

    #[test]
    fn a_checked_field_is_named_in_its_refusal() {
        assert!(check("notes", "", 10, false).is_ok());
        assert!(check("notes", "草原\n", 3, true).is_ok());
        for (text, max, required) in [
            (" ", 10, true),
            ("草原人家", 3, false),
            ("a\u{0}", 10, false),
        ] {
            let refused = check("notes", text, max, required).expect_err(text);
            assert!(
                refused.message.starts_with("notes: "),
                "{}",
                refused.message
            );
        }
    }
}
