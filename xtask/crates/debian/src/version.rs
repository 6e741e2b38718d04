//! Debian's version order, by hand: about 70 lines and a table of tests,
//! where `debversion` would pull in regex, chrono and num-bigint.

use std::cmp::Ordering;

/// Debian's version order (deb-version(7)): epoch, then upstream version and
/// revision, each compared as alternating non-digit and digit runs, where
/// `~` sorts before everything, even the end of the string.
pub fn compare_versions(left: &str, right: &str) -> Ordering {
    fn split(version: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match version.split_once(':') {
            Some((epoch, rest)) if epoch.bytes().all(|byte| byte.is_ascii_digit()) => {
                (epoch.parse().unwrap_or(0), rest)
            }
            _ => (0, version),
        };
        match rest.rsplit_once('-') {
            Some((upstream, revision)) => (epoch, upstream, revision),
            None => (epoch, rest, ""),
        }
    }
    fn order(byte: Option<u8>) -> i32 {
        match byte {
            None => 0,
            Some(b'~') => -1,
            Some(byte) if byte.is_ascii_alphabetic() => i32::from(byte),
            Some(byte) => i32::from(byte) + 256,
        }
    }
    fn compare_part(left: &str, right: &str) -> Ordering {
        let (mut left, mut right) = (left.as_bytes(), right.as_bytes());
        while !left.is_empty() || !right.is_empty() {
            // Non-digit prefix, character by character.
            while left.first().is_some_and(|byte| !byte.is_ascii_digit())
                || right.first().is_some_and(|byte| !byte.is_ascii_digit())
            {
                let left_byte = left.first().copied().filter(|byte| !byte.is_ascii_digit());
                let right_byte = right.first().copied().filter(|byte| !byte.is_ascii_digit());
                match order(left_byte).cmp(&order(right_byte)) {
                    Ordering::Equal => {}
                    unequal => return unequal,
                }
                if left_byte.is_some() {
                    left = &left[1..];
                }
                if right_byte.is_some() {
                    right = &right[1..];
                }
            }
            // Digit run, numerically (leading zeros ignored).
            let digits = |bytes: &[u8]| bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let (left_count, right_count) = (digits(left), digits(right));
            let trim = |run: &[u8]| -> Vec<u8> {
                run.iter()
                    .copied()
                    .skip_while(|byte| *byte == b'0')
                    .collect()
            };
            let (left_run, right_run) = (trim(&left[..left_count]), trim(&right[..right_count]));
            match left_run
                .len()
                .cmp(&right_run.len())
                .then_with(|| left_run.cmp(&right_run))
            {
                Ordering::Equal => {}
                unequal => return unequal,
            }
            left = &left[left_count..];
            right = &right[right_count..];
        }
        Ordering::Equal
    }
    let (left_epoch, left_upstream, left_revision) = split(left);
    let (right_epoch, right_upstream, right_revision) = split(right);
    left_epoch
        .cmp(&right_epoch)
        .then_with(|| compare_part(left_upstream, right_upstream))
        .then_with(|| compare_part(left_revision, right_revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_dpkg_does() {
        let ordered = [
            "1.0~rc1",
            "1.0",
            "1.0-1",
            "1.0-1+deb12u1",
            "1.0-1+deb12u10",
            "1.0a",
            "1.2.13.dfsg-1",
            "1.10",
            "1:0.1",
            "5:7.0.15-1~deb12u10",
            "5:7.0.15-1",
        ];
        for window in ordered.windows(2) {
            assert_eq!(
                compare_versions(window[0], window[1]),
                Ordering::Less,
                "{} < {}",
                window[0],
                window[1]
            );
            assert_eq!(compare_versions(window[1], window[0]), Ordering::Greater);
        }
        assert_eq!(compare_versions("1.01", "1.1"), Ordering::Equal);
        assert_eq!(
            compare_versions("2.36-9+deb12u14", "2.36-9+deb12u9"),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions("3.0.22-1~deb12u2", "3.0.22-1~deb12u1"),
            Ordering::Greater
        );
        for (lower, higher) in [
            ("1.0~rc1", "1.0"),
            ("2.0", "1:1.0"),
            ("1.0-1", "1.0-1+deb13u1"),
            ("1.0~~", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0+b1"),
            ("1.0-1", "1.0-1.1"),
            ("1.0-1~bpo13+1", "1.0-1"),
            ("0:1.0-2", "1.0-10"),
            ("1.0-a", "1.0-+"),
            ("9", "18446744073709551616"),
        ] {
            assert_eq!(
                compare_versions(lower, higher),
                Ordering::Less,
                "{lower} < {higher}"
            );
            assert_eq!(compare_versions(higher, lower), Ordering::Greater);
        }
        assert_eq!(compare_versions("0:1.0-1", "1.0-1"), Ordering::Equal);
        assert_eq!(compare_versions("1.0-01", "1.0-1"), Ordering::Equal);
    }
}
