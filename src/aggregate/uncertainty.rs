//! What published rounds leave out: how sure the numbers are. A bootstrap interval for each
//! implementation's composite (judges resampled), and Krippendorff's alpha for agreement.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Percentile bootstrap over judges. `score(draw)` computes every item's statistic from a
/// multiset of judges (indices into the judge list, with repeats); the result is each item's
/// interval at `level`, `None` when fewer than half the draws gave it a value.
pub fn bootstrap<F>(
    judges: usize,
    items: usize,
    draws: usize,
    seed: u64,
    level: f64,
    score: F,
) -> Vec<Option<[f64; 2]>>
where
    F: Fn(&[usize]) -> Vec<Option<f64>>,
{
    if judges == 0 || draws == 0 {
        return vec![None; items];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(draws); items];
    let mut pick = vec![0usize; judges];
    for _ in 0..draws {
        for p in &mut pick {
            *p = rng.random_range(0..judges);
        }
        for (i, v) in score(&pick).into_iter().enumerate() {
            if let Some(v) = v {
                samples[i].push(v);
            }
        }
    }
    let tail = (1.0 - level) / 2.0;
    samples
        .into_iter()
        .map(|mut s| {
            if s.len() * 2 < draws {
                return None;
            }
            s.sort_by(f64::total_cmp);
            Some([quantile(&s, tail), quantile(&s, 1.0 - tail)])
        })
        .collect()
}

/// Linear-interpolation quantile of sorted values (type 7, as R and numpy default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Krippendorff's alpha with the interval metric. `units[u]` holds the values the coders gave
/// unit `u` (missing ones left out). Units with fewer than two values are not pairable. `None`
/// when there is nothing to compare or every value is the same (expected disagreement zero).
pub fn krippendorff_interval(units: &[Vec<f64>]) -> Option<f64> {
    let pairable: Vec<&Vec<f64>> = units.iter().filter(|u| u.len() >= 2).collect();
    let n: usize = pairable.iter().map(|u| u.len()).sum();
    if n < 2 {
        return None;
    }
    let mut observed = 0.0;
    for u in &pairable {
        observed += pair_disagreement(u) / (u.len() as f64 - 1.0);
    }
    observed /= n as f64;
    let all: Vec<f64> = pairable.iter().flat_map(|u| u.iter().copied()).collect();
    let expected = pair_disagreement(&all) / (n * (n - 1)) as f64;
    (expected > 0.0).then(|| 1.0 - observed / expected)
}

/// The sum over ordered pairs `i != j` of `(a_i - a_j)^2`, as `2 n sum((a - mean)^2)`: linear
/// in the number of values (a round of 200 models has 40,000 scores per criterion, 1.6e9 pairs).
/// Exactly 0 when every value is the same.
fn pair_disagreement(values: &[f64]) -> f64 {
    if values.windows(2).all(|w| w[0] == w[1]) {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    2.0 * n * values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>()
}

/// Below this, agreement is too low to draw conclusions from (Krippendorff's own threshold).
pub const ALPHA_TENTATIVE: f64 = 0.667;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Reference alpha through the coincidence matrix of distinct values (Krippendorff 2011, §
    /// "A. Binary data"... generalised): o_ck = Σ_u (pairs (c,k) in u) / (m_u − 1).
    fn slow_alpha(units: &[Vec<f64>]) -> Option<f64> {
        let key = |x: f64| (x * 1000.0).round() as i64;
        let mut o: BTreeMap<(i64, i64), f64> = BTreeMap::new();
        for u in units.iter().filter(|u| u.len() >= 2) {
            let m = u.len() as f64;
            for (i, a) in u.iter().enumerate() {
                for (j, b) in u.iter().enumerate() {
                    if i != j {
                        *o.entry((key(*a), key(*b))).or_default() += 1.0 / (m - 1.0);
                    }
                }
            }
        }
        let mut n_c: BTreeMap<i64, f64> = BTreeMap::new();
        for ((c, _), v) in &o {
            *n_c.entry(*c).or_default() += v;
        }
        let n: f64 = n_c.values().sum();
        if n < 2.0 {
            return None;
        }
        let d = |c: i64, k: i64| ((c - k) as f64 / 1000.0).powi(2);
        let d_o: f64 = o.iter().map(|((c, k), v)| v * d(*c, *k)).sum::<f64>() / n;
        let mut d_e = 0.0;
        for (c, nc) in &n_c {
            for (k, nk) in &n_c {
                d_e += nc * nk * d(*c, *k);
            }
        }
        d_e /= n * (n - 1.0);
        (d_e > 0.0).then(|| 1.0 - d_o / d_e)
    }

    proptest! {
        #[test]
        fn alpha_matches_the_coincidence_matrix_reference(
            units in proptest::collection::vec(proptest::collection::vec(0u8..11, 0..6), 1..8)
        ) {
            let units: Vec<Vec<f64>> = units.into_iter().map(|u| u.into_iter().map(f64::from).collect()).collect();
            match (krippendorff_interval(&units), slow_alpha(&units)) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-9, "{a} vs {b}"),
                (a, b) => prop_assert_eq!(a.is_some(), b.is_some()),
            }
        }

        /// The bootstrap interval of a mean holds the sample mean, is ordered, and is the same
        /// for the same seed.
        #[test]
        fn bootstrap_is_ordered_reproducible_and_covers_the_estimate(
            values in proptest::collection::vec(0u8..21, 2..9), seed in 0u64..1000
        ) {
            let v: Vec<f64> = values.into_iter().map(f64::from).collect();
            let score = |pick: &[usize]| vec![Some(pick.iter().map(|j| v[*j]).sum::<f64>() / pick.len() as f64)];
            let a = bootstrap(v.len(), 1, 400, seed, 0.95, score)[0].unwrap();
            let b = bootstrap(v.len(), 1, 400, seed, 0.95, score)[0].unwrap();
            prop_assert_eq!(a, b);
            prop_assert!(a[0] <= a[1]);
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(a[0] >= min && a[1] <= max);
        }

        /// The interpolated quantile agrees with a slow reference that walks the sorted list.
        #[test]
        fn quantile_matches_reference(values in proptest::collection::vec(0u16..1000, 1..40), q in 0.0f64..=1.0) {
            let mut v: Vec<f64> = values.into_iter().map(f64::from).collect();
            v.sort_by(f64::total_cmp);
            let pos = q * (v.len() - 1) as f64;
            let mut reference = v[0];
            for i in 0..v.len() - 1 {
                if pos >= i as f64 && pos <= (i + 1) as f64 {
                    reference = v[i] + (pos - i as f64) * (v[i + 1] - v[i]);
                    break;
                }
            }
            prop_assert!((quantile(&v, q) - reference).abs() < 1e-9);
        }
    }

    #[test]
    fn alpha_of_perfect_and_of_random_agreement() {
        assert_eq!(
            krippendorff_interval(&[vec![1.0, 1.0], vec![5.0, 5.0], vec![9.0, 9.0]]),
            Some(1.0)
        );
        assert!(krippendorff_interval(&[vec![1.0, 9.0], vec![9.0, 1.0]]).unwrap() < 0.0);
        assert_eq!(krippendorff_interval(&[vec![3.0, 3.0]]), None);
    }
}
