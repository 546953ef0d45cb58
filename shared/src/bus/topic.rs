//! AMQP topic matching, for the in-process bus: `*` is one word, `#` zero or more.

/// True when `key` (dot-separated words) matches the binding `pattern`.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(pw), Some(kw)) if pw == kw => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn words_stars_and_hashes_match_as_amqp_does() {
        assert!(topic_matches("booking.confirmed", "booking.confirmed"));
        assert!(topic_matches("booking.*", "booking.confirmed"));
        assert!(!topic_matches("booking.*", "booking.a.b"));
        assert!(topic_matches("booking.#", "booking.a.b"));
        assert!(topic_matches("#", "payment.captured"));
        assert!(!topic_matches("payment.*", "booking.confirmed"));
    }
}
