//! Tests of the article tour's pieces: the deterministic transforms that make
//! the digits harder (`examples/article/hard_digits.rs`), the verdict logic
//! (`verdict.rs`) and the pre-registered claims (`protocol.rs`).
//!
//! Expected values are computed independently here: pixel moves by index
//! arithmetic, bilinear weights by hand, standard errors from their formula.

use crate::hard_digits::{self, harden, warp, Difficulty, Transform};
use crate::nn::Rng;
use crate::verdict::{self, Sample, Status, Unit, Verdicts};
use crate::{data, model, protocol};
use ndarray::{s, Array2, Array4};

/// An 8×8 image with distinct values (row-major counter).
fn ramp() -> Array2<f32> {
    Array2::from_shape_fn((8, 8), |(y, x)| (8 * y + x + 1) as f32)
}

fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn warp_identity_is_exact() {
    let img = ramp();
    assert_eq!(warp(img.view(), &Transform::IDENTITY), img);
}

#[test]
fn warp_integer_shifts_move_pixels() {
    let img = ramp();
    let right = warp(
        img.view(),
        &Transform {
            shift: (1.0, 0.0),
            ..Transform::IDENTITY
        },
    );
    let up2 = warp(
        img.view(),
        &Transform {
            shift: (0.0, -2.0),
            ..Transform::IDENTITY
        },
    );
    for y in 0..8 {
        for x in 0..8 {
            let want_right = if x == 0 { 0.0 } else { img[[y, x - 1]] };
            assert_eq!(right[[y, x]], want_right, "shift right at ({y}, {x})");
            let want_up = if y >= 6 { 0.0 } else { img[[y + 2, x]] };
            assert_eq!(up2[[y, x]], want_up, "shift up at ({y}, {x})");
        }
    }
}

#[test]
fn warp_half_pixel_shift_interpolates_bilinearly() {
    let img = ramp();
    let half = warp(
        img.view(),
        &Transform {
            shift: (0.5, 0.0),
            ..Transform::IDENTITY
        },
    );
    for y in 0..8 {
        for x in 0..8 {
            let left = if x == 0 { 0.0 } else { img[[y, x - 1]] };
            let want = 0.5 * left + 0.5 * img[[y, x]];
            assert!((half[[y, x]] - want).abs() < 1e-5, "({y}, {x})");
        }
    }
}

#[test]
fn warp_quarter_turn_is_a_counter_clockwise_rotation() {
    let img = ramp();
    let turned = warp(
        img.view(),
        &Transform {
            angle_deg: 90.0,
            ..Transform::IDENTITY
        },
    );
    // Counter-clockwise by 90°: the right column becomes the top row.
    let want = Array2::from_shape_fn((8, 8), |(y, x)| img[[x, 7 - y]]);
    assert!(max_abs_diff(&turned, &want) < 1e-4);
    // Four quarter turns give the image back.
    let mut back = img.clone();
    for _ in 0..4 {
        back = warp(
            back.view(),
            &Transform {
                angle_deg: 90.0,
                ..Transform::IDENTITY
            },
        );
    }
    assert!(max_abs_diff(&back, &img) < 1e-3);
}

#[test]
fn warp_scaling_keeps_the_centre_and_spreads_the_rest() {
    // A single bright pixel next to the centre (3.5, 3.5): at scale 2 the
    // point (4, 4) maps to (4.5, 4.5), the corner shared by four pixels.
    let mut img = Array2::<f32>::zeros((8, 8));
    img[[4, 4]] = 1.0;
    let big = warp(
        img.view(),
        &Transform {
            scale: 2.0,
            ..Transform::IDENTITY
        },
    );
    // Output pixel (y, x) samples the input at 3.5 + (p − 3.5)/2.
    for y in 0..8 {
        for x in 0..8 {
            let (sx, sy) = (3.5 + (x as f64 - 3.5) / 2.0, 3.5 + (y as f64 - 3.5) / 2.0);
            let w = |s: f64| (1.0 - (s - 4.0).abs()).max(0.0);
            let want = (w(sx) * w(sy)) as f32;
            assert!((big[[y, x]] - want).abs() < 1e-6, "({y}, {x})");
        }
    }
}

fn difficulty() -> Difficulty {
    Difficulty {
        max_angle_deg: 20.0,
        max_scale: 0.1,
        max_shift: 1.0,
        noise_sd: 0.3,
        n_train: 800,
    }
}

#[test]
fn random_transforms_stay_within_the_difficulty_and_cover_it() {
    let d = difficulty();
    let mut rng = Rng::new(3);
    let ts: Vec<Transform> = (0..2000).map(|_| Transform::random(&mut rng, &d)).collect();
    let range = |f: &dyn Fn(&Transform) -> f64| {
        ts.iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            })
    };
    let (a0, a1) = range(&|t| t.angle_deg);
    assert!(
        a0 >= -20.0 && a1 <= 20.0 && a0 < -19.0 && a1 > 19.0,
        "{a0} {a1}"
    );
    let (s0, s1) = range(&|t| t.scale);
    assert!(
        s0 >= 0.9 && s1 <= 1.1 && s0 < 0.91 && s1 > 1.09,
        "{s0} {s1}"
    );
    let (x0, x1) = range(&|t| t.shift.0);
    assert!(
        x0 >= -1.0 && x1 <= 1.0 && x0 < -0.95 && x1 > 0.95,
        "{x0} {x1}"
    );
}

#[test]
fn harden_is_deterministic_and_per_image() {
    let d = difficulty();
    let x = Array4::from_shape_fn((6, 1, 8, 8), |(n, _, y, x)| ((n + y * x) % 5) as f32 / 4.0);
    let a = harden(&x, &d, 7, 0);
    let b = harden(&x, &d, 7, 0);
    assert_eq!(a, b, "same seed, same images");
    assert_ne!(a, harden(&x, &d, 8, 0), "another seed");
    assert_ne!(a, harden(&x, &d, 7, 1), "another split");
    // Image i does not depend on the images before or after it.
    let tail = harden(&x.slice(s![..3, .., .., ..]).to_owned(), &d, 7, 0);
    assert_eq!(tail, a.slice(s![..3, .., .., ..]));
    // Image i is exactly: its own transform, then its own noise.
    let mut rng = hard_digits::image_rng(7, 0, 4);
    let t = Transform::random(&mut rng, &d);
    let warped = warp(x.slice(s![4, 0, .., ..]), &t);
    for ((yy, xx), &v) in warped.indexed_iter() {
        let want = v + (0.3 * rng.normal()) as f32;
        assert_eq!(a[[4, 0, yy, xx]], want);
    }
}

#[test]
fn pixel_noise_has_the_declared_spread() {
    let d = Difficulty {
        max_angle_deg: 0.0,
        max_scale: 0.0,
        max_shift: 0.0,
        noise_sd: 0.5,
        n_train: 0,
    };
    let x = Array4::<f32>::zeros((300, 1, 8, 8));
    let y = harden(&x, &d, 1, 0);
    let n = y.len() as f64;
    let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let sd = (y
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    // 19,200 draws: the standard error of the mean is 0.0036, of the sd 0.0026.
    assert!(mean.abs() < 0.015, "mean {mean}");
    assert!((sd - 0.5).abs() < 0.012, "sd {sd}");
}

#[test]
fn hard_digits_split_and_labels() {
    let d = difficulty();
    let clean = data::digits(0);
    let hard = hard_digits::load(0, 0, &d);
    assert_eq!(hard.train_y.len(), 800);
    assert_eq!(hard.test_y.len(), 1797 - 800);
    assert_eq!(hard.train_x.dim(), (800, 1, 8, 8));
    // Same order as the clean split: training images first, then held out.
    let all: Vec<usize> = clean.train_y.iter().chain(&clean.test_y).copied().collect();
    assert_eq!(hard.train_y, all[..800]);
    assert_eq!(hard.test_y, all[800..]);
    // Deterministic, and really changed.
    let again = hard_digits::load(0, 0, &d);
    assert_eq!(hard.train_x, again.train_x);
    assert_eq!(hard.test_x, again.test_x);
    let diff: f32 = (&hard.train_x - &clean.train_x.slice(s![..800, .., .., ..]))
        .iter()
        .map(|v| v.abs())
        .sum::<f32>()
        / (800.0 * 64.0);
    // At least the noise: E|N(0, 0.3)| = 0.3·√(2/π) ≈ 0.24.
    assert!(diff > 0.2, "mean absolute change {diff}");
}

// ---------------------------------------------------------------------------
// Verdict logic
// ---------------------------------------------------------------------------

fn sample(mean: f64, sd: f64, n: usize) -> Sample {
    Sample { mean, sd, n }
}

#[test]
fn sample_statistics() {
    let s = Sample::of(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(s.n, 4);
    assert!((s.mean - 2.5).abs() < 1e-15);
    // Sample variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
    assert!((s.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
    assert!((s.se() - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
    let one = Sample::of(&[0.7]);
    assert_eq!((one.mean, one.sd, one.n), (0.7, 0.0, 1));
}

#[test]
fn greater_uses_twice_the_standard_error_of_the_difference() {
    let b = sample(0.70, 0.02, 10);
    // 2·√(0.02²/10 + 0.02²/10) = 0.017889
    let e = 2.0 * (2.0 * 0.02f64.powi(2) / 10.0).sqrt();
    assert!((verdict::noise(&sample(0.8, 0.02, 10), &b, Unit::Accuracy) - e).abs() < 1e-12);
    let at = |d: f64| verdict::test_greater(&sample(0.70 + d, 0.02, 10), &b, Unit::Accuracy);
    assert_eq!(at(e + 1e-4), Status::Agrees);
    assert_eq!(at(e - 1e-4), Status::Noise);
    assert_eq!(at(0.0), Status::Noise);
    assert_eq!(at(-e + 1e-4), Status::Noise);
    assert_eq!(at(-e - 1e-4), Status::Disagrees);
}

#[test]
fn the_noise_floor_applies_to_single_seeds() {
    let b = sample(0.5, 0.0, 1);
    let g = |d: f64, unit| verdict::test_greater(&sample(0.5 + d, 0.0, 1), &b, unit);
    assert_eq!(g(0.002, Unit::Accuracy), Status::Noise);
    assert_eq!(g(0.004, Unit::Accuracy), Status::Agrees);
    assert_eq!(g(0.4, Unit::Epochs), Status::Noise);
    assert_eq!(g(0.6, Unit::Epochs), Status::Agrees);
    // Deterministic quantities have no floor.
    assert_eq!(g(1e-9, Unit::LearningRate), Status::Agrees);
}

#[test]
fn not_worse_and_close() {
    let b = sample(0.70, 0.02, 10); // noise 0.0179 against a twin
    let e = 2.0 * (2.0 * 0.02f64.powi(2) / 10.0).sqrt();
    let nw = |d: f64| verdict::test_not_worse(&sample(0.70 + d, 0.02, 10), &b, Unit::Accuracy);
    assert_eq!(nw(0.05), Status::Agrees);
    assert_eq!(nw(-e + 1e-4), Status::Agrees);
    assert_eq!(nw(-e - 1e-4), Status::Disagrees);

    let cl = |d: f64, sd: f64| {
        verdict::test_close(
            &sample(0.70 + d, sd, 10),
            &sample(0.70, sd, 10),
            Unit::Accuracy,
            0.02,
        )
    };
    let e1 = 2.0 * (2.0 * 0.01f64.powi(2) / 10.0).sqrt(); // 0.00894
    assert_eq!(cl(0.02 - e1 - 1e-4, 0.01), Status::Agrees);
    assert_eq!(cl(0.02 - e1 + 1e-4, 0.01), Status::Noise);
    assert_eq!(cl(-(0.02 + e1 + 1e-4), 0.01), Status::Disagrees);
    // Too noisy to claim equality even at zero difference.
    assert_eq!(cl(0.0, 0.05), Status::Noise);
}

#[test]
fn verdicts_count_and_render() {
    let mut v = Verdicts::default();
    v.section("Part X");
    let hi = sample(0.9, 0.01, 10);
    let lo = sample(0.6, 0.01, 10);
    assert_eq!(
        v.greater("hi > lo", &hi, &lo, Unit::Accuracy),
        Status::Agrees
    );
    assert_eq!(
        v.greater("lo > hi", &lo, &hi, Unit::Accuracy),
        Status::Disagrees
    );
    assert_eq!(v.less("lo < hi", &lo, &hi, Unit::Accuracy), Status::Agrees);
    assert_eq!(
        v.greater("hi > hi", &hi, &hi, Unit::Accuracy),
        Status::Noise
    );
    assert_eq!(
        v.zero("zero", &Sample::of(&[0.0, 0.0]), Unit::Accuracy),
        Status::Agrees
    );
    assert_eq!(
        v.zero("not zero", &Sample::of(&[0.0, 0.01]), Unit::Accuracy),
        Status::Disagrees
    );
    assert_eq!(v.not_measured("absent"), Status::NotMeasured);
    assert_eq!(v.count(Status::Agrees), 3);
    assert_eq!(v.count(Status::Disagrees), 2);
    let out = v.render();
    assert!(
        out.contains("[DISAGREES] lo > hi: 60.0% vs. 90.0% (Δ -30.0 points, noise ± 0.9)"),
        "{out}"
    );
    assert!(
        out.ends_with("=> 3 agree, 2 disagree, 1 within noise, 1 not measured\n"),
        "{out}"
    );
    assert_eq!(Unit::Fraction.value(0.3, 10), "3/10 seeds");
    assert_eq!(Unit::LearningRate.value(1.778e-4, 1), "1.8e-4");
    assert_eq!(Unit::LearningRate.value(0.316, 1), "0.316");
}

// ---------------------------------------------------------------------------
// The pre-registered claims
// ---------------------------------------------------------------------------

#[test]
fn judge_reads_each_claim_from_its_measurements() {
    use model::NormKind;
    use protocol::{Claim, Measurements, Metric, Test};
    let claims = vec![
        Claim {
            part: 2,
            text: "BN reaches the target sooner".into(),
            test: Test::Less(
                Metric::EpochsToTarget {
                    kind: NormKind::Batch,
                },
                Metric::EpochsToTarget {
                    kind: NormKind::None,
                },
            ),
        },
        Claim {
            part: 3,
            text: "GN beats BN at batch 2".into(),
            test: Test::Greater(
                Metric::Final {
                    kind: NormKind::Group,
                    batch: 2,
                },
                Metric::Final {
                    kind: NormKind::Batch,
                    batch: 2,
                },
            ),
        },
        Claim {
            part: 3,
            text: "missing".into(),
            test: Test::Zero(Metric::BnEvalSpread { trained: 4 }),
        },
    ];
    let mut m = Measurements::new();
    m.insert(
        Metric::EpochsToTarget {
            kind: NormKind::Batch,
        },
        vec![2.0, 3.0, 2.0, 3.0],
    );
    m.insert(
        Metric::EpochsToTarget {
            kind: NormKind::None,
        },
        vec![6.0, 7.0, 6.0, 7.0],
    );
    m.insert(
        Metric::Final {
            kind: NormKind::Group,
            batch: 2,
        },
        vec![0.80, 0.82, 0.81],
    );
    m.insert(
        Metric::Final {
            kind: NormKind::Batch,
            batch: 2,
        },
        vec![0.83, 0.85, 0.84],
    );
    let mut v = Verdicts::default();
    protocol::judge(&claims, &m, &mut v);
    assert_eq!(
        v.statuses(),
        [Status::Agrees, Status::Disagrees, Status::NotMeasured]
    );
    let out = v.render();
    assert!(out.contains("Part 2 — convergence"), "{out}");
    assert!(out.contains("2.5 epochs vs. 6.5 epochs"), "{out}");
}

#[test]
fn the_claims_are_fixed_by_the_protocol() {
    use protocol::{Metric, Protocol, Test};
    let p = Protocol::full();
    let claims = protocol::claims(&p);
    // Every claim names measured batch sizes and a learning rate of the sweep.
    assert!(p.stability_lrs.contains(&p.claim_lr));
    assert!(p.early_epoch >= 1 && p.early_epoch <= p.epochs);
    let batch_ok = |m: &Metric| match *m {
        Metric::Final { batch, .. } => p.batches.contains(&batch),
        Metric::BnRunning { trained }
        | Metric::BnDisagree { trained }
        | Metric::BnEvalSpread { trained } => trained == p.bmin() || trained == p.bmax(),
        Metric::BnBatchStats { trained, eval } => {
            (trained == p.bmin() || trained == p.bmax()) && eval >= 2
        }
        _ => true,
    };
    for c in &claims {
        let ms: Vec<Metric> = match c.test {
            Test::Greater(a, b)
            | Test::Less(a, b)
            | Test::NotWorse(a, b)
            | Test::Close(a, b, _) => {
                assert_ne!(a, b, "{}", c.text);
                assert_eq!(a.unit(), b.unit(), "{}", c.text);
                vec![a, b]
            }
            Test::Zero(a) => vec![a],
        };
        assert!(ms.iter().all(batch_ok), "{}", c.text);
        assert!((1..=4).contains(&c.part));
    }
    // Parts in order, each present.
    let parts: Vec<u8> = claims.iter().map(|c| c.part).collect();
    assert!(parts.windows(2).all(|w| w[0] <= w[1]));
    for part in 1..=4 {
        assert!(parts.contains(&part));
    }
    // The quick protocol judges the same list of claims.
    assert_eq!(protocol::claims(&Protocol::quick()).len(), claims.len());
}
