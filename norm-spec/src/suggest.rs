//! "Did you mean": the closest known word to a misspelled one, by Jaro–Winkler similarity.

/// The candidate closest to `word` by Jaro–Winkler similarity, if it is similar enough.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(f64, &'a str)> = None;
    for cand in candidates {
        let score = jaro_winkler(word, cand);
        if score > best.map_or(0.0, |b| b.0) {
            best = Some((score, cand));
        }
    }
    best.filter(|b| b.0 >= 0.8).map(|b| b.1)
}

/// Jaro similarity of two strings (by `char`), in `[0, 1]`.
fn jaro(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut b_used = vec![false; b.len()];
    let mut a_matches = Vec::new();
    for (i, &ca) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(b.len());
        for j in lo..hi {
            if !b_used[j] && b[j] == ca {
                b_used[j] = true;
                a_matches.push(ca);
                break;
            }
        }
    }
    let m = a_matches.len();
    if m == 0 {
        return 0.0;
    }
    let b_matches = b.iter().zip(&b_used).filter(|(_, &u)| u).map(|(&c, _)| c);
    let transpositions = a_matches
        .iter()
        .zip(b_matches)
        .filter(|(x, y)| **x != *y)
        .count()
        / 2;
    let m = m as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - transpositions as f64) / m) / 3.0
}

/// Jaro–Winkler similarity (prefix scale 0.1, prefix up to 4 chars), in `[0, 1]`.
pub(crate) fn jaro_winkler(a: &str, b: &str) -> f64 {
    let j = jaro(a, b);
    let prefix = a
        .chars()
        .zip(b.chars())
        .take(4)
        .take_while(|(x, y)| x == y)
        .count();
    j + prefix as f64 * 0.1 * (1.0 - j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaro_winkler_basics() {
        assert!((jaro_winkler("abc", "abc") - 1.0).abs() < 1e-12);
        assert_eq!(jaro_winkler("abc", "xyz"), 0.0);
        assert!(jaro_winkler("martha", "marhta") > 0.96);
    }

    #[test]
    fn closest_needs_similarity() {
        assert_eq!(
            closest("extrenal", ["external"].into_iter()),
            Some("external")
        );
        assert_eq!(closest("zzz", ["external"].into_iter()), None);
    }
}
