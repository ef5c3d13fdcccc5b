//! The statistics published rounds use, written plainly and tested against slow references.

/// The median; the mean of the two middle values for an even count. `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The sample standard deviation (n - 1). `None` for fewer than two values.
pub fn stdev(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values)?;
    let ss: f64 = values.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (values.len() - 1) as f64).sqrt())
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The most frequent of `items`; a tie goes to the one latest in `order` (verdicts are listed best
/// to worst, so a tie goes to the worse verdict). Items not in `order` rank last.
pub fn mode_worst<'a>(items: &[&'a str], order: &[String]) -> Option<&'a str> {
    let rank = |s: &str| order.iter().position(|o| o == s).unwrap_or(usize::MAX);
    let mut best: Option<(&str, usize)> = None;
    for s in items {
        let count = items.iter().filter(|x| *x == s).count();
        best = match best {
            None => Some((s, count)),
            Some((b, c)) if count > c || (count == c && rank(s) > rank(b)) => Some((s, count)),
            keep => keep,
        };
    }
    best.map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference median: the value at rank n/2 by counting, averaged for even n.
    fn slow_median(v: &[f64]) -> f64 {
        let nth = |k: usize| {
            *v.iter()
                .find(|x| {
                    let below = v.iter().filter(|y| y < x).count();
                    let equal = v.iter().filter(|y| y == x).count();
                    below <= k && k < below + equal
                })
                .unwrap()
        };
        let n = v.len();
        if n % 2 == 1 {
            nth(n / 2)
        } else {
            f64::midpoint(nth(n / 2 - 1), nth(n / 2))
        }
    }

    proptest! {
        #[test]
        fn median_matches_reference(v in proptest::collection::vec(0u8..21, 1..30)) {
            let v: Vec<f64> = v.into_iter().map(f64::from).collect();
            prop_assert!((median(&v).unwrap() - slow_median(&v)).abs() < 1e-9);
        }

        #[test]
        fn stdev_matches_two_pass_reference(v in proptest::collection::vec(0u8..21, 2..30)) {
            let v: Vec<f64> = v.into_iter().map(f64::from).collect();
            let n = v.len() as f64;
            let m = v.iter().sum::<f64>() / n;
            let mut ss = 0.0;
            for x in &v { ss += (x - m).powi(2); }
            prop_assert!((stdev(&v).unwrap() - (ss / (n - 1.0)).sqrt()).abs() < 1e-9);
        }
    }

    #[test]
    fn published_agreement_figure() {
        // deepseek's spec scores in the published atomic-write round: stdev 0.82.
        assert_eq!(
            round2(stdev(&[10.0, 9.0, 9.0, 8.0, 10.0, 10.0]).unwrap()),
            0.82
        );
        assert_eq!(median(&[9.0, 9.0, 8.0, 10.0, 10.0]), Some(9.0));
    }

    #[test]
    fn verdict_ties_go_to_the_worse() {
        let order: Vec<String> = ["ship", "ship-with-cleanup", "rewrite"]
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        assert_eq!(mode_worst(&["ship", "rewrite"], &order), Some("rewrite"));
        assert_eq!(
            mode_worst(&["ship", "ship", "rewrite"], &order),
            Some("ship")
        );
        assert_eq!(mode_worst(&[], &order), None);
    }
}
