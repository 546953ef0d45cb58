//! Checks shared by every free-text field people type.

use crate::AppError;

/// Checks a text field people type: not blank when `required` (spaces and
/// invisible characters alone are blank), at most `max` characters, no
/// [control characters](has_control). The message starts with the
/// field's name.
pub fn check(field: &str, text: &str, max: usize, required: bool) -> Result<(), AppError> {
    checked(field, text, max, required, false)
}

/// [`check`] for a one-line field (a person's name as on a document, a
/// reason): no line breaks (U+2028 and U+2029 included) or tabs either.
pub fn check_line(field: &str, text: &str, max: usize, required: bool) -> Result<(), AppError> {
    checked(field, text, max, required, true)
}

fn checked(
    field: &str,
    text: &str,
    max: usize,
    required: bool,
    one_line: bool,
) -> Result<(), AppError> {
    let shows_nothing = is_blank(text) || (one_line && !says_something(text));
    if required && shows_nothing {
        // "😀" or "—" is not empty, yet no one's name or reason.
        let needs = if is_blank(text) {
            "must not be empty"
        } else {
            "must hold a letter or a digit"
        };
        return Err(AppError::bad_input(format!("{field}: {needs}")));
    }
    // Left empty, an optional field falls back (an English name to the
    // Chinese one); filled with what shows nothing, it would show a blank.
    if shows_nothing && !text.trim().is_empty() {
        return Err(AppError::bad_input(format!(
            "{field}: shows nothing; leave it empty or write it out"
        )));
    }
    if text.chars().count() > max {
        return Err(AppError::bad_input(format!(
            "{field}: at most {max} characters"
        )));
    }
    if one_line && text.chars().any(breaks_line) {
        return Err(AppError::bad_input(format!(
            "{field}: one line, no line breaks or tabs"
        )));
    }
    if has_control(text) {
        let fine = if one_line {
            ""
        } else {
            " (line breaks as \\n and tabs are fine)"
        };
        return Err(AppError::bad_input(format!(
            "{field}: no control characters or text-direction overrides{fine}"
        )));
    }
    Ok(())
}

/// A text as searches compare it: composed (NFC: "Ü" typed as U and a
/// combining diaeresis is "Ü"), each letter in lower case on its own (so a
/// word's last Σ is σ wherever the word ends, as in the middle of one).
/// The one function for both sides of a search: what is stored and the
/// words a traveler types.
pub fn folded(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    text.nfc()
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ς' { 'σ' } else { c })
        .collect()
}

/// A line break or a tab, in any of Unicode's spellings.
fn breaks_line(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\t' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// True when `text` shows nothing: only spaces and zero-width characters.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_whitespace() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
    })
}

/// True when a one-line text (a name, a title, a reason) holds a letter or
/// a digit of any script: marks, format characters, variation selectors
/// and fillers alone show nothing a reader could take for a name or a
/// reason (U+3164 HANGUL FILLER and its kin are letters that show
/// nothing).
pub fn says_something(text: &str) -> bool {
    text.chars().any(shows_as_letter)
}

/// Whether `text` holds characters no one types into a name, a note or a
/// key: control characters other than line breaks and tabs (NUL, BEL,
/// escape sequences), the bidirectional overrides that make a text
/// display in another order than it reads (U+202A–U+202E, U+2066–U+2069)
/// and a byte-order mark (U+FEFF, pasted from the head of a file).
pub fn has_control(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    })
}

/// The forms an address may be stored in, to look it up by, first to
/// last: as typed (trimmed, lower case), `composed` ([`normalise_email`]'s
/// form, every address stored since addresses were composed), and fully
/// decomposed (NFD) — one stored before is found whichever way its owner
/// types it now, and of two made then, one each way, each as typed.
pub fn email_forms(typed: &str, composed: String) -> Vec<String> {
    use unicode_normalization::UnicodeNormalization;
    let written = typed.trim().to_lowercase();
    let decomposed: String = written.nfd().collect();
    let mut forms: Vec<String> = Vec::with_capacity(3);
    for form in [written, composed, decomposed] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// Normalises (trimmed, lower case, composed: NFC) and checks an email
/// address as every lookup takes it (sign-in, `grantRole`, registration):
/// one `@`, a dotted domain, and nothing that does not show or shows
/// another way round (spaces, control characters, zero-width characters,
/// direction overrides). Chinese and other letters are welcome. What a new
/// address must be besides is [`check_new_email`]: an address already
/// stored is found as it was written, whatever the rules for new ones.
pub fn normalise_email(email: &str) -> Result<String, AppError> {
    // Composed (NFC): "renée" typed as e + U+0301 by some keyboards and
    // pastes is the address typed as é (it made a second account that
    // looked the same, and could not log in to the first).
    use unicode_normalization::UnicodeNormalization;
    // Full-width forms (`ｃｈａｎ＠ｅｘａｍｐｌｅ．ｈｋ`, as a Chinese input
    // method types them) are the ASCII characters they stand for: the
    // address is registered, and signed in to, as its owner reads it.
    let half_width = |c: char| match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        // The ideographic full stops, as Chinese punctuation types `.`
        // (IDNA takes them as dots too).
        '\u{3002}' | '\u{FF61}' => '.',
        other => other,
    };
    let email: String = email
        .trim()
        .chars()
        .map(half_width)
        .collect::<String>()
        .to_lowercase()
        .nfc()
        .collect();
    let hidden = |c: char| {
        c.is_whitespace()
            || matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}')
    };
    if email.len() > 254 {
        return Err(AppError::bad_input(format!(
            "an email address is 254 bytes at most; this one is {}",
            email.len()
        )));
    }
    if email.chars().any(hidden) || has_control(&email) {
        // Said escaped: the character itself would show nothing.
        return Err(AppError::bad_input(format!(
            "{email:?} is not an email address: it holds a space or a character that shows \
             nothing"
        )));
    }
    let shaped = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    if shaped {
        Ok(email)
    } else {
        Err(AppError::bad_input(format!(
            "`{email}` is not an email address"
        )))
    }
}

/// What a new account's address (already [`normalise_email`]d) must also
/// be, so that it does not look like another's in a list of staff or in
/// `grantRole`: each label of its domain written out (none empty, none
/// starting or ending with `-`); none of the characters that show nothing
/// (Unicode's default-ignorable ones — fillers, joiners, variation
/// selectors, invisible operators —, the braille blank) nor full-width
/// forms (`ｂｏｂ`, which reads as `bob`); and no part, before the `@` or
/// between dots, mixing Latin letters with Cyrillic or Greek ones (`bоb`
/// with a Cyrillic о). A part wholly in Cyrillic or Greek is welcome, and
/// so may still look like a Latin one (`ѕес` beside `sec`): telling those
/// apart needs Unicode's confusables table, which Duikou does not carry.
pub fn check_new_email(email: &str) -> Result<(), AppError> {
    let refused = |why: &str| {
        Err(AppError::bad_input(format!(
            "`{email}` cannot be a new account's email: {why}"
        )))
    };
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let labels: Vec<&str> = domain.split('.').collect();
    if labels
        .iter()
        .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return refused("its domain is dotted names, none empty or starting or ending with -");
    }
    if email.chars().any(shows_nothing) {
        return refused("it holds characters that do not show");
    }
    // Dots that are not the dot (`bob․smith` with a one-dot leader beside
    // `bob.smith`): whatever compatibility reads as `.` (the ideographic
    // ones are dots already, by `normalise_email`).
    if email.chars().any(|c| {
        use unicode_normalization::UnicodeNormalization;
        c != '.' && std::iter::once(c).nfkc().eq(std::iter::once('.'))
    }) {
        return refused("write its dots as dots");
    }
    if email.chars().any(|c| matches!(c, '\u{FF01}'..='\u{FF5E}')) {
        return refused("write it in ordinary letters, not full-width ones");
    }
    if std::iter::once(local).chain(labels).any(mixes_lookalikes) {
        return refused("it mixes Latin letters with Cyrillic or Greek ones");
    }
    Ok(())
}

/// Unicode's default-ignorable code points (shown as nothing) and the
/// braille blank, which shows as a space.
fn shows_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// A letter or digit a reader sees (not one of the fillers that show
/// nothing, U+3164 HANGUL FILLER and its kin).
fn shows_as_letter(c: char) -> bool {
    c.is_alphanumeric() && !matches!(c, '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
}

/// Latin letters beside Cyrillic or Greek ones in one part of an address.
fn mixes_lookalikes(part: &str) -> bool {
    let latin = part.chars().any(|c| c.is_ascii_alphabetic());
    let alike = part
        .chars()
        .any(|c| matches!(c, '\u{0370}'..='\u{03FF}' | '\u{0400}'..='\u{052F}'));
    latin && alike
}

/// Most characters of an idempotency key as a service receives it: the
/// caller's (200 at most, checked by the gateway) behind the gateway's
/// scope, `<account>:` or `agency:<agency>:`.
pub const MAX_SCOPED_KEY: usize = 255;

/// An idempotency key as a service receives it, trimmed: 1 to
/// [`MAX_SCOPED_KEY`] characters (characters, not bytes: a key of Chinese
/// characters within the gateway's 200 is a good key).
pub fn scoped_key(key: &str) -> Result<&str, AppError> {
    let key = key.trim();
    if key.is_empty() || key.chars().count() > MAX_SCOPED_KEY {
        return Err(AppError::bad_input(format!(
            "idempotencyKey: 1 to {MAX_SCOPED_KEY} characters"
        )));
    }
    Ok(key)
}

/// `n` with its noun, singular for one: "1 room", "3 rooms".
pub fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::{check, check_line, check_new_email, folded, has_control, normalise_email, plural};

    /// A word is found inside a text whichever case and composition each
    /// is written in: Rust's own lower case made a word's last Σ ς, so
    /// "ΟΔΟΣ" did not find "ΟΔΟΣΤΡΩΜΑ", and a decomposed Ü was not "ü".
    #[test]
    fn a_word_folds_as_the_text_it_is_found_in() {
        for (word, text) in [
            ("ΟΔΟΣ", "ΟΔΟΣΤΡΩΜΑ"),
            ("οδοσ", "Η ΟΔΟΣ"),
            ("U\u{308}rümqi", "ÜRÜMQI Steppe"),
            ("éclat", "Steppe \u{c9}CLAT"),
            ("草原", "首都—草原"),
        ] {
            assert!(folded(text).contains(&folded(word)), "{word} in {text}");
        }
    }

    #[test]
    fn an_email_shows_what_it_is() {
        assert_eq!(
            normalise_email(" Alice@Example.CN ").ok().as_deref(),
            Some("alice@example.cn")
        );
        assert!(normalise_email("张三@例子.中国").is_ok());
        // Typed full-width, as a Chinese input method may: the same address.
        assert_eq!(
            normalise_email("ｃｈａｎ．Ｔａｉｍａｎ＠ｅｘａｍｐｌｅ．ｈｋ")
                .ok()
                .as_deref(),
            Some("chan.taiman@example.hk")
        );
        // With Chinese punctuation's full stop for the dots.
        assert_eq!(
            normalise_email("lisi＠example。com｡cn").ok().as_deref(),
            Some("lisi@example.com.cn")
        );
        for odd in [
            "a@b@example.cn",
            "al\u{7}ice@example.cn",
            "n\u{0}ul@example.cn",
            "al\u{202e}ice@example.cn",
            "alice\u{200b}@example.cn",
            "alice\u{ad}@example.cn",
            "al ice@example.cn",
            "alice@example",
            "@example.cn",
        ] {
            assert!(normalise_email(odd).is_err(), "{odd:?}");
        }
        // What is wrong is shown: a character that shows nothing escaped,
        // a long one's length.
        let said = |email: &str| normalise_email(email).err().map(|e| e.message);
        assert_eq!(
            said("zw\u{200b}@example.cn").as_deref(),
            Some(
                "\"zw\\u{200b}@example.cn\" is not an email address: it holds a space or a \
                 character that shows nothing"
            )
        );
        let long = format!("{}@example.cn", "a".repeat(250));
        assert_eq!(
            said(&long).as_deref(),
            Some("an email address is 254 bytes at most; this one is 261")
        );
    }

    #[test]
    fn a_new_email_does_not_look_like_another() {
        let new = |email: &str| normalise_email(email).and_then(|e| check_new_email(&e));
        // Found registering beside bob@sec.test: each looked like it.
        for alike in [
            "bob@sec.test\u{3164}",
            "bob\u{34f}@sec.test",
            "bob@sec.test\u{180e}",
            "bob@sec.test\u{2800}",
            "bob\u{fe0f}@sec.test",
            "bob@\u{455}ec.test",
            "b\u{43e}b@sec.test",
            "bob@sec..test",
            "bob@-sec.test",
            "bob@sec-.test",
            "b\u{2024}ob@sec.test",
            "bob@sec\u{fe52}test.cn",
        ] {
            assert!(new(alike).is_err(), "{alike:?}");
        }
        // Full-width, it is bob@sec.test itself (taken, not a look-alike).
        assert_eq!(
            normalise_email("ＢＯＢ@sec.test").ok().as_deref(),
            Some("bob@sec.test")
        );
        // Scripts whose letters carry marks, wholly Cyrillic parts, IDN,
        // plus-addressing and hyphens inside a label are welcome.
        for fine in [
            "张三@例子.中国",
            "иван@почта.рф",
            "иван@mail.ru",
            "i\u{307}lker@example.com.tr",
            "मित्र@example.in",
            "น้ำ@example.th",
            "jose\u{301}@example.es",
            "bob+trips@my-sec.test",
            "bob@xn--fsqu00a.xn--fiqs8s",
        ] {
            assert!(new(fine).is_ok(), "{fine:?}");
        }
    }

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
    fn one_line_means_no_break_of_any_spelling_and_blank_means_nothing_shows() {
        for text in ["a\nb", "a\u{2028}b", "a\u{2029}b", "a\u{85}b", "a\tb"] {
            let refused = check_line("reason", text, 10, true).expect_err(text);
            assert_eq!(refused.message, "reason: one line, no line breaks or tabs");
            assert!(check("notes", "a\nb\tc", 10, true).is_ok());
        }
        for text in ["\u{200B}", "\u{2060}\u{200D}", " \u{FEFF} ", "\u{3000}"] {
            let refused = check_line("reason", text, 10, true).expect_err(text);
            assert_eq!(refused.message, "reason: must not be empty");
        }
        for text in [
            "\u{200E}",
            "\u{180E}",
            "\u{AD}",
            "\u{FE0F}",
            "\u{301}",
            "\u{E0041}\u{E0042}",
            "\u{3164}",
            "—",
            "😀",
            "🇨🇳",
        ] {
            let refused = check_line("reason", text, 10, true).expect_err(text);
            assert_eq!(refused.message, "reason: must hold a letter or a digit");
        }
        let bell = check_line("reason", "a\u{7}b", 10, true).expect_err("bell");
        assert!(!bell.message.contains("fine"), "{}", bell.message);
        assert!(check_line("reason", "\u{FEFF}暴雪", 10, true).is_err());
        // A joiner inside an emoji or Mongolian text is not blank, nor is
        // any script's name.
        for text in ["草原\u{200D}🐎", "ᠮᠣᠩᠭᠣᠯ", "ئۇيغۇر", "བོད", "A-7"]
        {
            assert!(check_line("reason", text, 10, true).is_ok(), "{text}");
        }
    }

    #[test]
    fn an_optional_field_is_empty_or_shows_something() {
        for text in ["", " "] {
            assert!(check_line("nameEn", text, 10, false).is_ok(), "{text:?}");
            assert!(check("notes", text, 10, false).is_ok(), "{text:?}");
        }
        for text in ["\u{200B}", "\u{301}", "\u{3164}"] {
            let refused = check_line("nameEn", text, 10, false).expect_err(text);
            assert_eq!(
                refused.message,
                "nameEn: shows nothing; leave it empty or write it out"
            );
        }
        assert!(check("notes", "\u{200B}\n", 10, false).is_err());
        assert!(check("notes", "……", 10, false).is_ok(), "punctuation shows");
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
