//! The findings of a result: sentences written from its numbers, never canned prose.

use super::sweep::{ArmRun, ArmSummary};
use super::Spec;

/// "1.234" or "1.234 ± 0.010" (sample sd over seeds).
fn loss(a: &ArmSummary, seeds: usize) -> String {
    if seeds > 1 {
        format!("{:.3} ± {:.3}", a.val_mean, a.val_sd)
    } else {
        format!("{:.3}", a.val_mean)
    }
}

/// "1000 steps" when every run trained as long; otherwise each length with its arms ("LSTM
/// 1200 steps, the others 300"), since losses after different numbers of steps are not a
/// like-for-like ranking.
fn steps_phrase(arms: &[ArmSummary], runs: &[ArmRun]) -> String {
    let last = |arm: &str| {
        runs.iter().filter(|r| r.arm == arm).filter_map(|r| r.val_curve.last().map(|p| p.0)).fold(0.0, f64::max)
    };
    let per_arm: Vec<(&str, f64)> = arms.iter().map(|a| (a.arm.as_str(), last(&a.arm))).collect();
    let Some(&(_, first)) = per_arm.first() else { return "no steps".into() };
    if per_arm.iter().all(|&(_, s)| s == first) {
        return format!("{first} steps");
    }
    // The most common length is "the others"; the rest are named.
    let mut lengths: Vec<f64> = per_arm.iter().map(|&(_, s)| s).collect();
    lengths.sort_by(f64::total_cmp);
    lengths.dedup();
    let count = |s: f64| per_arm.iter().filter(|&&(_, x)| x == s).count();
    let common = lengths.iter().copied().max_by_key(|&s| count(s)).unwrap_or(first);
    let named: Vec<String> =
        per_arm.iter().filter(|&&(_, s)| s != common).map(|(a, s)| format!("{a} {s} steps")).collect();
    format!("{}, the others {common}", named.join(", "))
}

/// Findings of a sweep: the ranking, the gap against the seed spread, cost, and the probes.
pub(super) fn sweep(spec: &Spec, arms: &[ArmSummary], runs: &[ArmRun]) -> Vec<String> {
    let seeds = runs.iter().filter(|r| arms.first().is_some_and(|a| a.arm == r.arm)).count();
    let steps = steps_phrase(arms, runs);
    let mut ranked: Vec<&ArmSummary> = arms.iter().filter(|a| a.val_mean.is_finite()).collect();
    ranked.sort_by(|a, b| a.val_mean.total_cmp(&b.val_mean));
    let mut out = Vec::new();
    let diverged: Vec<String> = arms
        .iter()
        .filter(|a| !a.val_mean.is_finite())
        .map(|a| if a.diverged.is_empty() { a.arm.clone() } else { format!("{} ({})", a.arm, a.diverged.join("; ")) })
        .collect();
    if !diverged.is_empty() {
        out.push(format!("Did not train to a finite loss: {}.", diverged.join(", ")));
    }
    let (Some(best), Some(worst)) = (ranked.first(), ranked.last()) else { return out };
    out.push(format!(
        "{} reached the lowest validation loss, {}, against {} for {} ({}, {} seed{}).",
        best.arm,
        loss(best, seeds),
        loss(worst, seeds),
        worst.arm,
        steps,
        seeds,
        if seeds == 1 { "" } else { "s" }
    ));
    out.push(format!(
        "Ranking (val loss): {}.",
        ranked.iter().map(|a| format!("{} {:.3}", a.arm, a.val_mean)).collect::<Vec<_>>().join(" < ")
    ));
    if ranked.len() > 1 {
        let gap = ranked[1].val_mean - best.val_mean;
        if seeds > 1 {
            // The spread of the two arms compared, not of the whole sweep: one erratic arm far
            // behind says nothing about whether the leaders differ.
            let spread = best.val_sd.max(ranked[1].val_sd);
            let verdict = if gap > 2.0 * spread { "larger than" } else { "within" };
            out.push(format!(
                "The lead of {} over {} ({gap:.3}) is {verdict} twice the larger of their seed-to-seed standard deviations ({spread:.3}).",
                best.arm, ranked[1].arm
            ));
        } else {
            let more = match spec.full.seeds.len() {
                n if n > 1 => format!(" (--budget full runs {n} seeds)"),
                _ => String::new(),
            };
            out.push(format!(
                "The lead of {} over the runner-up {} is {gap:.3}; one seed does not measure the seed-to-seed spread, so a lead of its size cannot be told from noise{more}.",
                best.arm, ranked[1].arm
            ));
        }
    }
    // Cost over the arms that trained to the end (a diverged run stopped early).
    let finished = || arms.iter().filter(|a| a.val_mean.is_finite());
    if let (Some(fast), Some(slow)) = (
        finished().min_by(|a, b| a.seconds_mean.total_cmp(&b.seconds_mean)),
        finished().max_by(|a, b| a.seconds_mean.total_cmp(&b.seconds_mean)),
    ) {
        if slow.seconds_mean > 1.2 * fast.seconds_mean {
            out.push(format!(
                "Cost: {} trained in {:.1} s, {} in {:.1} s ({:.1}×).",
                fast.arm,
                fast.seconds_mean,
                slow.arm,
                slow.seconds_mean,
                slow.seconds_mean / fast.seconds_mean.max(1e-9)
            ));
        }
    }
    // A diverged run has no checkpoint to count (0).
    let counted = || arms.iter().map(|a| a.params).filter(|&p| p > 0);
    let (pmin, pmax) = (counted().min(), counted().max());
    if let (Some(pmin), Some(pmax)) = (pmin, pmax) {
        if pmin == pmax {
            out.push(format!("Every arm has {pmin} parameters."));
        } else {
            out.push(format!("Parameters range from {pmin} to {pmax}."));
        }
    }
    for a in arms {
        if let Some((ordered, shuffled)) = a.permutation {
            let verdict = if (shuffled - ordered).abs() < 1e-3 {
                "unchanged: its prediction does not depend on the order"
            } else {
                "its prediction depends on the order"
            };
            out.push(format!(
                "{}: shuffling the context before the last token takes the last token's loss from {ordered:.4} to {shuffled:.4} ({verdict}).",
                a.arm
            ));
        }
    }
    out.extend(rate_sensitivity(arms));
    if let Some(r) = &spec.recall {
        out.extend(recall(arms, r.bin));
    }
    if spec.probes.iter().any(|p| p == "context") {
        out.extend(context_usage(arms));
    }
    if spec.probes.iter().any(|p| p == "extrapolation") {
        out.extend(extrapolation(arms));
    }
    if spec.probes.iter().any(|p| p == "diversity") {
        let d: Vec<String> =
            arms.iter().filter_map(|a| a.head_diversity.map(|d| format!("{} {d:.3}", a.arm))).collect();
        if !d.is_empty() {
            out.push(format!(
                "Head diversity (mean Jensen–Shannon divergence between two heads' attention to the same query; 0 = identical, ln 2 = 0.693 = disjoint): {}.",
                d.join(", ")
            ));
        }
    }
    if spec.probes.iter().any(|p| p == "health") {
        let mut e: Vec<&ArmSummary> = arms.iter().filter(|a| a.attn_entropy.is_some_and(f64::is_finite)).collect();
        e.sort_by(|a, b| a.attn_entropy.unwrap().total_cmp(&b.attn_entropy.unwrap()));
        if let (Some(lo), Some(hi)) = (e.first(), e.last()) {
            out.push(format!(
                "Mean attention entropy at the last health step: lowest {} ({:.3} nats, sharper attention), highest {} ({:.3} nats).",
                lo.arm,
                lo.attn_entropy.unwrap(),
                hi.arm,
                hi.attn_entropy.unwrap()
            ));
        }
        for a in arms {
            if let Some((first, last)) = a.grad_norm_first_last {
                if first > 0.0 && last > 0.0 {
                    let ratio = last / first;
                    let trend = if !(0.1..=10.0).contains(&ratio) {
                        "an order of magnitude or more apart"
                    } else {
                        "within 10× of each other"
                    };
                    out.push(format!(
                        "{}: gradient norm {first:.2e} at layer 0 and {last:.2e} at the last layer ({trend}).",
                        a.arm
                    ));
                }
            }
            if let Some(d) = a.dead_share.filter(|d| *d > 0.05) {
                out.push(format!(
                    "{}: {:.1}% of the feed-forward units are inactive on the whole batch.",
                    a.arm,
                    100.0 * d
                ));
            }
        }
    }
    out
}

/// An arm's name without a trailing " lr RATE" (the arms of one set-up at several rates).
pub(super) fn without_rate(arm: &str) -> &str {
    match arm.rsplit_once(" lr ") {
        Some((head, rate)) if rate.parse::<f64>().is_ok() => head,
        _ => arm,
    }
}

/// Learning-rate sensitivity: the arms of one set-up (the same name but for a trailing
/// " lr RATE") at two or more peak rates, their val loss per rate and its spread; set-ups tried
/// at the same rates are compared by that spread.
fn rate_sensitivity(arms: &[ArmSummary]) -> Vec<String> {
    let mut groups: Vec<(&str, Vec<&ArmSummary>)> = Vec::new();
    for a in arms {
        let key = without_rate(&a.arm);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(a),
            None => groups.push((key, vec![a])),
        }
    }
    let mut out = Vec::new();
    // (set-up, its rates, spread of its val loss or what diverged), for the groups measured at
    // 2+ rates.
    let mut spreads: Vec<(&str, Vec<f64>, f64, String)> = Vec::new();
    // Set-ups best at the highest rate they tried; set-ups whose loss is flat over their rates.
    let (mut at_highest, mut flat) = (0usize, 0usize);
    for (key, mut g) in groups {
        g.sort_by(|a, b| a.learning_rate.total_cmp(&b.learning_rate));
        g.dedup_by(|a, b| a.learning_rate == b.learning_rate);
        if g.len() < 2 || g.iter().any(|a| a.learning_rate <= 0.0) {
            continue;
        }
        let losses: Vec<f64> = g.iter().map(|a| a.val_mean).collect();
        let finite = losses.iter().all(|l| l.is_finite());
        let spread = if finite {
            losses.iter().copied().fold(f64::MIN, f64::max) - losses.iter().copied().fold(f64::MAX, f64::min)
        } else {
            f64::INFINITY
        };
        let best = g.iter().filter(|a| a.val_mean.is_finite()).min_by(|a, b| a.val_mean.total_cmp(&b.val_mean));
        let per_rate = g
            .iter()
            .map(|a| match a.val_mean.is_finite() {
                true => format!("val loss {:.3} at lr {:e}", a.val_mean, a.learning_rate),
                false => format!("diverged at lr {:e}", a.learning_rate),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut edge = |b: &ArmSummary| {
            let rates = (g[0].learning_rate, g[g.len() - 1].learning_rate);
            if b.learning_rate == rates.1 {
                at_highest += 1;
                ", the highest tried (the best rate may lie higher)"
            } else if b.learning_rate == rates.0 {
                ", the lowest tried (the best rate may lie lower)"
            } else {
                ""
            }
        };
        // Flat: the spread over the rates is within twice the seed-to-seed spread (0.005 nats
        // at least, for one seed), so no rate is better.
        let sd = g.iter().map(|a| a.val_sd).filter(|s| s.is_finite()).fold(0.0, f64::max);
        let noise = 2.0 * sd.max(0.005);
        let verdict = match (best, finite) {
            (Some(_), true) if spread <= noise => {
                flat += 1;
                match sd > 0.005 {
                    true => format!(
                        "flat: a spread of {spread:.3} over the rates tried, within twice the seed-to-seed spread ({noise:.3})"
                    ),
                    false => format!("flat: a spread of {spread:.3} over the rates tried, under {noise:.3} nats"),
                }
            }
            (Some(b), true) => {
                format!("best at {:e}{}, a spread of {spread:.3} over the rates tried", b.learning_rate, edge(b))
            }
            (Some(b), false) => format!("best at {:e}; {}", b.learning_rate, diverged_rates(&g)),
            (None, _) => "it diverged at every rate tried".to_string(),
        };
        out.push(format!("Learning-rate sensitivity of {key}: {per_rate}; {verdict}."));
        spreads.push((key, g.iter().map(|a| a.learning_rate).collect(), spread, diverged_rates(&g)));
    }
    let sloped = spreads.len() - flat;
    if sloped >= 2 && at_highest == sloped {
        out.push(if flat == 0 {
            format!("All {sloped} set-ups are best at the highest rate they tried: the sweep does not bracket their best rates.")
        } else {
            format!(
                "All {sloped} set-ups whose loss depends on the rate are best at the highest rate they tried: the sweep does not bracket their best rates."
            )
        });
    }
    // Compare the set-ups tried at the same rates.
    let mut done: Vec<Vec<f64>> = Vec::new();
    for (_, rates, _, _) in &spreads {
        if done.contains(rates) {
            continue;
        }
        done.push(rates.clone());
        let mut same: Vec<&(&str, Vec<f64>, f64, String)> = spreads.iter().filter(|s| &s.1 == rates).collect();
        if same.len() < 2 {
            continue;
        }
        same.sort_by(|a, b| a.2.total_cmp(&b.2));
        let (calm, wild) = (same[0], same[same.len() - 1]);
        out.push(format!(
            "Over the rates {}: the least sensitive is {} (spread {:.3}), the most {} ({}).",
            rates.iter().map(|r| format!("{r:e}")).collect::<Vec<_>>().join(", "),
            calm.0,
            calm.2,
            wild.0,
            if wild.2.is_finite() { format!("spread {:.3}", wild.2) } else { wild.3.clone() }
        ));
    }
    out
}

/// "diverged at 3e-2 and 1e-1": the rates of `arms` whose val loss is not finite.
fn diverged_rates(arms: &[&ArmSummary]) -> String {
    let mut rates: Vec<f64> = arms.iter().filter(|a| !a.val_mean.is_finite()).map(|a| a.learning_rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let names: Vec<String> = rates.iter().map(|r| format!("{r:e}")).collect();
    match names.split_last() {
        None => "no rate diverged".into(),
        Some((last, [])) => format!("diverged at {last}"),
        Some((last, rest)) => format!("diverged at {} and {last}", rest.join(", ")),
    }
}

/// Context usage: what each arm gains from the second half of its context, and where its
/// curve flattens (the last doubling of k that still lowered the loss by 1%).
fn context_usage(arms: &[ArmSummary]) -> Vec<String> {
    let mut out = Vec::new();
    for a in arms {
        let c = &a.context_losses;
        if c.len() < 2 {
            continue;
        }
        let (first, last) = (c[0], c[c.len() - 1]);
        let half = c[c.len() - 2];
        let flat_after = c.windows(2).filter(|w| w[1].1 < 0.99 * w[0].1).map(|w| w[1].0).max();
        out.push(format!(
            "{}: loss {:.3} with 1 token of context, {:.3} with {}, {:.3} with {} (the second half of the context is worth {:.3}); {}.",
            a.arm,
            first.1,
            half.1,
            half.0,
            last.1,
            last.0,
            half.1 - last.1,
            match flat_after {
                Some(k) => format!("the last doubling that still cut the loss by 1% or more ended at {k} tokens"),
                None => "no doubling of the context cut the loss by 1%".into(),
            }
        ));
    }
    out
}

/// Associative recall: each arm's held-out accuracy near and far, against chance (one value
/// in ten).
fn recall(arms: &[ArmSummary], bin: usize) -> Vec<String> {
    let mut out = Vec::new();
    let accuracies: Vec<f64> = arms.iter().filter_map(|a| a.recall_accuracy).collect();
    if !accuracies.is_empty() && accuracies.iter().all(|&a| a < 0.15) {
        out.push(format!(
            "No arm learned the recall in this budget: every accuracy is below 15% (chance is 10%; best {:.1}%).",
            100.0 * accuracies.iter().copied().fold(0.0, f64::max)
        ));
    }
    for a in arms {
        let (Some(all), Some(near), Some(far)) = (a.recall_accuracy, a.recall_bins.first(), a.recall_bins.last())
        else {
            continue;
        };
        let verdict = if far.1 >= 0.9 {
            "it recalls across the whole range"
        } else if far.1 < 0.2 {
            "at the farthest distances it is near chance (10%)"
        } else if far.1 < near.1 - 0.1 {
            "accuracy falls with distance"
        } else {
            "accuracy does not depend much on distance"
        };
        let held = match reach(&a.recall_bins, bin) {
            Some(d) if d < far.0 => format!("; at least 90% up to distance {d}"),
            _ => String::new(),
        };
        out.push(format!(
            "{}: {:.1}% of held-out queries recalled; {:.1}% at distances {}–{}, {:.1}% at {}–{} ({verdict}){held}.",
            a.arm,
            100.0 * all,
            100.0 * near.1,
            near.0,
            near.0 + bin - 1,
            100.0 * far.1,
            far.0,
            far.0 + bin - 1
        ));
    }
    out
}

/// The last distance of the run of bins, from the nearest on, where at least 90% of the
/// queries are recalled: how far an arm recalls reliably (None when the nearest bin is below).
fn reach(bins: &[(usize, f64)], bin: usize) -> Option<usize> {
    let held = bins.iter().take_while(|b| b.1 >= 0.9).count();
    (held > 0).then(|| bins[held - 1].0 + bin - 1)
}

/// Length extrapolation: each arm's loss at the trained context against the longest length
/// read, and which arms could not read past the trained context.
fn extrapolation(arms: &[ArmSummary]) -> Vec<String> {
    let mut out = Vec::new();
    let mut held = Vec::new();
    let mut broke = Vec::new();
    let mut unable = Vec::new();
    for a in arms {
        let (Some(first), Some(last)) = (a.extrapolation.first(), a.extrapolation.last()) else { continue };
        match (first.1, last.1) {
            (Some(l0), Some(l1)) => {
                let change = l1 - l0;
                let what = format!("{} {l0:.3} → {l1:.3}", a.arm);
                // Within 2% of the trained context's loss (or better) counts as extrapolating.
                if change <= 0.02 * l0 {
                    held.push(what);
                } else {
                    broke.push(what);
                }
            }
            _ => unable.push(a.arm.clone()),
        }
    }
    let (t0, t1) =
        arms.iter().find_map(|a| Some((a.extrapolation.first()?.0, a.extrapolation.last()?.0))).unwrap_or((0, 0));
    if !held.is_empty() {
        out.push(format!(
            "Trained at {t0} tokens and reading {t1}, the validation loss held (within 2%) or fell for: {}.",
            held.join("; ")
        ));
    }
    if !broke.is_empty() {
        out.push(format!("It rose by more than 2% for: {}.", broke.join("; ")));
    }
    if !unable.is_empty() {
        out.push(format!(
            "Cannot read past {t0} tokens at all (a learned table has one row per trained position): {}.",
            unable.join(", ")
        ));
    }
    out
}

/// The fitted power law of loss against `x`.
pub(super) fn power_law(f: &super::sweep::PowerLaw, x: &str) -> String {
    format!(
        "Fitted power law: val loss ≈ ({:.3e} / {x})^{:.4} (R² = {:.3} on the log-log points). Kaplan et al. (2020) report an exponent of 0.076 for non-embedding parameters of far larger models trained to convergence; a short run of small models is not that regime.",
        f.x_c, f.alpha, f.r2
    )
}

/// The n-gram baselines against the best arm.
pub(super) fn ngram(ngrams: &[super::sweep::NgramBaseline], arms: &[ArmSummary]) -> String {
    let list: Vec<String> =
        ngrams.iter().map(|g| format!("{}-gram {:.3} ({} counts)", g.order, g.val_loss, g.counts)).collect();
    let best_g = ngrams.iter().min_by(|a, b| a.val_loss.total_cmp(&b.val_loss));
    let best_a = arms.iter().filter(|a| a.val_mean.is_finite()).min_by(|a, b| a.val_mean.total_cmp(&b.val_mean));
    let mut s = format!("Kneser-Ney n-gram baselines (validation loss): {}.", list.join(", "));
    if let (Some(g), Some(a)) = (best_g, best_a) {
        let verdict = if a.val_mean < g.val_loss { "beats" } else { "does not beat" };
        s.push_str(&format!(
            " The best Transformer here, {} ({:.3}, {} parameters), {verdict} the best n-gram, order {} ({:.3}, {} counts).",
            a.arm, a.val_mean, a.params, g.order, g.val_loss, g.counts
        ));
    }
    s
}

/// One Pareto-front finding.
pub(super) fn pareto(label: &str, front: &[(f64, f64, String)]) -> String {
    let points: Vec<String> = front.iter().map(|(x, y, name)| format!("{name} ({x:.3e}, {y:.3})")).collect();
    format!("Pareto front of val loss against {label} (cost, loss): {}.", points.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_is_the_end_of_the_reliable_bins_from_the_nearest() {
        let bins = [(0, 1.0), (8, 0.95), (16, 0.5), (24, 0.92)];
        assert_eq!(reach(&bins, 8), Some(15), "a later good bin does not extend the run");
        assert_eq!(reach(&[(0, 0.89), (8, 1.0)], 8), None);
        assert_eq!(reach(&[], 8), None);
    }

    fn arm(name: &str, val: f64, lr: f64) -> ArmSummary {
        serde_json::from_value(serde_json::json!({"arm": name, "val_mean": val, "val_sd": 0.0, "val_min": val,
            "val_max": val, "train_mean": val, "seconds_mean": 1.0, "params": 10, "learning_rate": lr}))
        .unwrap()
    }

    #[test]
    fn steps_are_named_per_arm_when_they_differ() {
        let run = |a: &str, steps: f64| ArmRun {
            arm: a.into(),
            val_curve: vec![(0.0, 3.0), (steps, 1.0)],
            ..Default::default()
        };
        let arms = [arm("A", 1.0, 1e-3), arm("B", 1.0, 1e-3), arm("C", 1.0, 1e-3)];
        let same = [run("A", 300.0), run("B", 300.0), run("C", 300.0)];
        assert_eq!(steps_phrase(&arms, &same), "300 steps");
        let differ = [run("A", 300.0), run("B", 1200.0), run("C", 300.0)];
        assert_eq!(steps_phrase(&arms, &differ), "B 1200 steps, the others 300");
        let spec: Spec = toml::from_str("kind = \"sweep\"\nsetup = \"\"").unwrap();
        let f = sweep(&spec, &arms, &differ);
        assert!(f[0].ends_with("(B 1200 steps, the others 300, 1 seed)."), "{}", f[0]);
    }

    #[test]
    fn rate_sensitivity_groups_arms_by_name_and_compares_equal_rate_sets() {
        let arms = [
            arm("LayerNorm + GELU", 2.5, 3e-3),
            arm("LayerNorm + GELU lr 3e-2", 2.7, 3e-2),
            arm("no norm + GELU", 2.6, 3e-3),
            arm("no norm + GELU lr 3e-2", 4.6, 3e-2),
            arm("SGD lr 0.3", 2.9, 0.3),
            arm("SGD lr fast", 2.9, 1.0),
            arm("LayerNorm + ReLU", 2.5, 3e-3),
        ];
        let f = rate_sensitivity(&arms);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].starts_with("Learning-rate sensitivity of LayerNorm + GELU: val loss 2.500 at lr 3e-3, val loss 2.700 at lr 3e-2; best at 3e-3, the lowest tried (the best rate may lie lower), a spread of 0.200"), "{}", f[0]);
        assert!(f[1].contains("no norm + GELU") && f[1].contains("spread of 2.000"), "{}", f[1]);
        assert!(
            f[2].contains(
                "the least sensitive is LayerNorm + GELU (spread 0.200), the most no norm + GELU (spread 2.000)"
            ),
            "{}",
            f[2]
        );
        // Diverged arms (NaN loss) are named, not given a spread.
        let arms = [
            arm("LayerNorm + GELU", 2.5, 3e-3),
            arm("LayerNorm + GELU lr 3e-2", 2.7, 3e-2),
            arm("LayerNorm + GELU lr 1e-1", 2.9, 1e-1),
            arm("no norm + GELU", 2.6, 3e-3),
            arm("no norm + GELU lr 3e-2", f64::NAN, 3e-2),
            arm("no norm + GELU lr 1e-1", f64::NAN, 1e-1),
        ];
        let f = rate_sensitivity(&arms);
        assert_eq!(
            f[1],
            "Learning-rate sensitivity of no norm + GELU: val loss 2.600 at lr 3e-3, diverged at lr 3e-2, diverged at \
             lr 1e-1; best at 3e-3; diverged at 3e-2 and 1e-1."
        );
        assert!(f[2].ends_with("the most no norm + GELU (diverged at 3e-2 and 1e-1)."), "{}", f[2]);
        // A spread within the seeds' noise is flat, and leaves the verdict on the others.
        let mut sgd = [arm("SGD lr 0.3", 2.350, 0.3), arm("SGD lr 1", 2.328, 1.0)];
        sgd.iter_mut().for_each(|a| a.val_sd = 0.023);
        let arms = [
            sgd[0].clone(),
            sgd[1].clone(),
            arm("Adam lr 1e-3", 2.1, 1e-3),
            arm("Adam lr 3e-3", 1.9, 3e-3),
            arm("RMSProp lr 1e-3", 2.1, 1e-3),
            arm("RMSProp lr 3e-3", 2.0, 3e-3),
        ];
        let f = rate_sensitivity(&arms);
        assert!(
            f[0].ends_with(
                "flat: a spread of 0.022 over the rates tried, within twice the seed-to-seed spread (0.046)."
            ),
            "{}",
            f[0]
        );
        assert!(f[3].starts_with("All 2 set-ups whose loss depends on the rate are best at the highest"), "{f:?}");
        let f = rate_sensitivity(&[arm("SGD lr 0.3", 2.591, 0.3), arm("SGD lr 1", 2.590, 1.0)]);
        assert!(f[0].ends_with("flat: a spread of 0.001 over the rates tried, under 0.010 nats."), "{}", f[0]);
        // Every set-up best at its highest rate: the sweep did not bracket the best rates.
        let arms = [
            arm("SGD lr 0.3", 2.4, 0.3),
            arm("SGD lr 1", 2.3, 1.0),
            arm("Adam lr 1e-3", 2.1, 1e-3),
            arm("Adam lr 3e-3", 1.9, 3e-3),
        ];
        let f = rate_sensitivity(&arms);
        assert!(f[0].contains("best at 1e0, the highest tried (the best rate may lie higher)"), "{}", f[0]);
        assert_eq!(
            f[2],
            "All 2 set-ups are best at the highest rate they tried: the sweep does not bracket their best rates."
        );
        // A rate that is not a number is part of the name; one rate alone says nothing.
        assert_eq!(without_rate("SGD lr fast"), "SGD lr fast");
        assert_eq!(without_rate("momentum 0.9 lr 0.03"), "momentum 0.9");
    }
}
