//! `moco device-check`: every op of the training step on a device against the CPU reference,
//! on random inputs, as relative errors `max|a − b| / max|reference|` in f32.
//!
//! On CUDA the subject is the device path (candle's CUDA ops) and the reference is the CPU path
//! (the harness's CPU kernels). On CPU the subject is the same path CUDA takes, candle's own ops
//! with the kernels turned off, so the check that a GPU machine runs can be rehearsed here.

use crate::config::{RunConfig, ValidRunConfig};
use crate::eval::knn::knn_top1;
use crate::model::layers::{batch_norm_train, conv2d};
use crate::model::{BnMode, Encoder, ParamStore};
use crate::nn::loss::info_nce;
use crate::train::learner::Learner;
use candle_core::{Context, Result};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};

/// Relative error allowed for every op (f32).
pub const TOLERANCE: f64 = 1e-4;

/// One comparison.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was compared (`conv 3x3 s2 grad-input`, …).
    pub name: String,
    /// `max|subject − reference| / max|reference|`.
    pub rel_err: f64,
}

impl Check {
    /// Within [`TOLERANCE`] (and finite).
    pub fn ok(&self) -> bool {
        self.rel_err.is_finite() && self.rel_err < TOLERANCE
    }
}

/// `max|a − b|` over paired elements in f32, a NaN difference counting as infinite (`f32::max`
/// alone would skip it: an element a kernel never wrote is NaN in debug builds). The tests'
/// comparisons.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| {
        let d = (x - y).abs();
        m.max(if d.is_nan() { f32::INFINITY } else { d })
    })
}

/// `max|a − b| / max|b|` over all elements, on the host.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let b = b.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    if a.len() != b.len() {
        candle_core::bail!("sizes differ: {} vs {}", a.len(), b.len());
    }
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
    let diff = a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    Ok(if a.iter().any(|v| !v.is_finite()) {
        f64::INFINITY
    } else {
        diff / scale
    })
}

/// Runs `f` on the reference (CPU, kernels on) and on the subject (`target`; on CPU with the
/// kernels off), and compares each returned tensor.
struct Pair<'a> {
    target: &'a Device,
    out: Vec<Check>,
}

impl Pair<'_> {
    fn both(&self, f: &dyn Fn(&Device) -> Result<Vec<Tensor>>) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let reference = f(&Device::Cpu)?;
        let subject = if self.target.is_cpu() {
            crate::kernels::set_enabled(false);
            let r = f(self.target);
            crate::kernels::set_enabled(true);
            r?
        } else {
            f(self.target)?
        };
        Ok((subject, reference))
    }

    fn compare(&mut self, name: &str, parts: &[&str], f: &dyn Fn(&Device) -> Result<Vec<Tensor>>) -> Result<()> {
        let (s, r) = self.both(f).with_context(|| name.to_string())?;
        for ((a, b), part) in s.iter().zip(&r).zip(parts) {
            let e = rel_err(a, b).with_context(|| format!("{name} {part}"))?;
            self.out.push(Check {
                name: format!("{name} {part}"),
                rel_err: e,
            });
        }
        Ok(())
    }
}

fn randn(shape: &[usize], rng: &mut impl Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// A small MoCo config for the step checks (ResNet-18 layout at width 8, 16×16 input).
fn tiny(mode: &str) -> Result<ValidRunConfig> {
    let mut c = RunConfig::default();
    c.model.width = 8;
    c.model.bn_splits = 2;
    c.train.batch_size = 16;
    c.dictionary.size = 64;
    c.data.image_size = 16;
    c.moco.temperature = 0.2;
    c.dictionary.mode = serde_json::from_value(serde_json::json!(mode)).map_err(candle_core::Error::wrap)?;
    c.validate().map_err(candle_core::Error::wrap)
}

/// Every check, in the order of the step: conv, BN, the encoder's forward and backward,
/// InfoNCE, a training step of each mechanism (two for MoCo), kNN.
pub fn run_checks(target: &Device) -> Result<Vec<Check>> {
    let mut p = Pair { target, out: Vec::new() };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    check_convs(&mut p, &mut rng)?;
    check_batch_norms(&mut p, &mut rng)?;
    check_block_join(&mut p, &mut rng)?;
    check_residual_join(&mut p, &mut rng)?;
    check_encoder(&mut p, &mut rng)?;
    check_infonce(&mut p, &mut rng)?;
    check_steps(&mut p, &mut rng)?;
    check_knn(&mut p, &mut rng)?;
    Ok(p.out)
}

/// Convolutions: forward, grad-input and weight gradient over the stems and strides of a ResNet.
fn check_convs(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    for (n, c, side, cout, k, s, pad) in [
        (8, 3, 16, 16, 3, 1, 1),
        (8, 16, 16, 32, 3, 1, 1),
        (8, 16, 15, 32, 3, 2, 1),
        (8, 16, 16, 32, 1, 2, 0),
    ] {
        let x = randn(&[n, c, side, side], rng)?;
        let w = randn(&[cout, c, k, k], rng)?;
        let ho = (side + 2 * pad - k) / s + 1;
        let r = randn(&[n, cout, ho, ho], rng)?;
        let name = format!("conv {k}x{k} s{s} {c}->{cout} {side}px");
        p.compare(&name, &["forward", "grad-input", "grad-weight"], &|d| {
            let xv = Var::from_tensor(&x.to_device(d)?)?;
            let wv = Var::from_tensor(&w.to_device(d)?)?;
            let y = conv2d(xv.as_tensor(), wv.as_tensor(), s, pad)?;
            let g = (&y * r.to_device(d)?)?.sum_all()?.backward()?;
            let gx = g.get(xv.as_tensor()).context("no input gradient")?.clone();
            let gw = g.get(wv.as_tensor()).context("no weight gradient")?.clone();
            Ok(vec![y, gx, gw])
        })?;
    }
    Ok(())
}

/// Batch norm in train mode over BN groups, with and without the ReLU.
fn check_batch_norms(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    for (n, c, side, groups, relu) in [(16, 8, 8, 4, false), (8, 32, 4, 2, false), (16, 8, 8, 4, true)] {
        let x = (randn(&[n, c, side, side], rng)? * 3.0)?.affine(1.0, 0.5)?;
        let w = randn(&[c], rng)?.affine(0.5, 1.0)?;
        let b = randn(&[c], rng)?;
        let r = randn(&[n, c, side, side], rng)?;
        let name = format!("batch-norm{} train {groups} groups {c}ch {side}px", if relu { "+relu" } else { "" });
        p.compare(&name, &["forward", "mean", "var", "grad-input", "grad-weight", "grad-bias"], &|d| {
            let (xv, wv, bv) = (
                Var::from_tensor(&x.to_device(d)?)?,
                Var::from_tensor(&w.to_device(d)?)?,
                Var::from_tensor(&b.to_device(d)?)?,
            );
            let (y, mean, var) = batch_norm_train(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), groups, relu)?;
            let g = (&y * r.to_device(d)?)?.sum_all()?.backward()?;
            let get = |v: &Var| g.get(v.as_tensor()).cloned().context("no gradient");
            Ok(vec![y, mean, var, get(&xv)?, get(&wv)?, get(&bv)?])
        })?;
    }
    Ok(())
}

/// BN + residual add + ReLU, the join of a residual block.
fn check_block_join(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    let x = (randn(&[8, 16, 8, 8], rng)? * 2.0)?;
    let res = randn(&[8, 16, 8, 8], rng)?;
    let r = randn(&[8, 16, 8, 8], rng)?;
    p.compare(
        "batch-norm+add+relu (block join) train 2 groups 16ch 8px",
        &["forward", "grad-input", "grad-residual", "grad-weight", "grad-bias"],
        &|d| {
            let store = ParamStore::new(d);
            let bn = crate::model::layers::BatchNorm2d::new(&store, "bn", 16, 0)?;
            let (xv, rv) = (Var::from_tensor(&x.to_device(d)?)?, Var::from_tensor(&res.to_device(d)?)?);
            let y = bn.forward_add_relu(xv.as_tensor(), rv.as_tensor(), BnMode::Train { splits: 2 })?;
            let g = (&y * r.to_device(d)?)?.sum_all()?.backward()?;
            let get = |t: &Tensor| g.get(t).cloned().context("no gradient");
            let (w, b) = (
                store.get("bn.weight").context("bn.weight")?,
                store.get("bn.bias").context("bn.bias")?,
            );
            Ok(vec![
                y,
                get(xv.as_tensor())?,
                get(rv.as_tensor())?,
                get(w.as_tensor())?,
                get(b.as_tensor())?,
            ])
        },
    )?;

    Ok(())
}

/// Residual add + ReLU.
fn check_residual_join(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    let a = randn(&[8, 16, 8, 8], rng)?;
    let b = randn(&[8, 16, 8, 8], rng)?;
    let r = randn(&[8, 16, 8, 8], rng)?;
    p.compare("add+relu (residual join)", &["forward", "grad-a", "grad-b"], &|d| {
        let (av, bv) = (Var::from_tensor(&a.to_device(d)?)?, Var::from_tensor(&b.to_device(d)?)?);
        let y = crate::model::layers::add_relu(av.as_tensor(), bv.as_tensor())?;
        let g = (&y * r.to_device(d)?)?.sum_all()?.backward()?;
        let get = |v: &Var| g.get(v.as_tensor()).cloned().context("no gradient");
        Ok(vec![y, get(&av)?, get(&bv)?])
    })?;

    Ok(())
}

/// The encoder forward and backward (ResNet-18 at width 8 with the MLP head).
fn check_encoder(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    let cfg = tiny("moco")?;
    let x = randn(&[16, 3, 16, 16], rng)?;
    let r = randn(&[16, cfg.model.feature_dim], rng)?;
    let (s, re) = p.both(&|d| {
        let store = ParamStore::new(d);
        let enc = Encoder::new(&cfg.model, &store, 0)?;
        let y = enc.forward(&x.to_device(d)?, BnMode::Train { splits: 2 })?;
        let g = (&y * r.to_device(d)?)?.sum_all()?.backward()?;
        let mut out = vec![y];
        for (_, v) in store.trainable() {
            out.push(g.get(v.as_tensor()).cloned().context("no gradient")?);
        }
        Ok(out)
    })?;
    p.out.push(Check {
        name: "encoder forward (ResNet-18 w8 + MLP head)".into(),
        rel_err: rel_err(&s[0], &re[0])?,
    });
    let worst = s[1..]
        .iter()
        .zip(&re[1..])
        .map(|(a, b)| rel_err(a, b))
        .collect::<Result<Vec<_>>>()?;
    p.out.push(Check {
        name: format!("encoder backward, worst of {} parameter gradients", worst.len()),
        rel_err: worst.into_iter().fold(0.0, f64::max),
    });

    Ok(())
}

/// InfoNCE: logits, loss and gradients.
fn check_infonce(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    let q = randn(&[16, 32], rng)?;
    let kp = randn(&[16, 32], rng)?;
    let neg = randn(&[64, 32], rng)?;
    for mask in [false, true] {
        let name = format!(
            "InfoNCE (tau 0.2{})",
            if mask { ", 16 keys, diagonal masked" } else { ", 64 negatives" }
        );
        let kneg = if mask { kp.clone() } else { neg.clone() };
        p.compare(&name, &["loss", "accuracy", "grad-q"], &|d| {
            let qv = Var::from_tensor(&crate::nn::loss::l2_normalize(&q.to_device(d)?)?)?;
            let (loss, acc) = info_nce(qv.as_tensor(), &kp.to_device(d)?, &kneg.to_device(d)?, 0.2, mask)?;
            let g = loss.backward()?;
            Ok(vec![
                loss,
                Tensor::new(&[acc], &Device::Cpu)?,
                g.get(qv.as_tensor()).cloned().context("no gradient")?,
            ])
        })?;
    }

    Ok(())
}

/// A training step of each mechanism (two for MoCo and for MoCo's symmetric loss, then the queue).
fn check_steps(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    // The symmetric step last, its views from its own stream: the other checks' inputs stay.
    let mut symmetric_rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for mode in ["moco", "memory_bank", "end_to_end", "moco symmetric"] {
        let (cfg, rng) = match mode {
            "moco symmetric" => {
                let mut c = tiny("moco")?.into_inner();
                c.moco.symmetric = true;
                (c.validate().map_err(candle_core::Error::wrap)?, &mut symmetric_rng)
            }
            _ => (tiny(mode)?, &mut *rng),
        };
        let steps = if mode.starts_with("moco") { 2 } else { 1 };
        let views: Vec<Tensor> = (0..2).map(|_| randn(&[16, 3, 16, 16], rng)).collect::<Result<_>>()?;
        let (s, r) = p.both(&|d| {
            let mut l = Learner::new(&cfg, 256, d)?;
            let mut choice_rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let v: Vec<Tensor> = views.iter().map(|t| t.to_device(d)).collect::<candle_core::Result<_>>()?;
            let indices: Vec<u32> = (0..16).collect();
            let mut out = Vec::new();
            for _ in 0..steps {
                let ch = l.draw_choices(16, &mut choice_rng);
                let st = l.step(&v, &indices, 0.05, &ch)?;
                out.push(Tensor::new(&[st.loss], &Device::Cpu)?);
            }
            let params: Vec<Tensor> = l
                .q_store
                .trainable()
                .into_iter()
                .map(|(_, v)| v.as_tensor().flatten_all())
                .collect::<candle_core::Result<_>>()?;
            out.push(Tensor::cat(&params, 0)?);
            if let Some(q) = l.queue() {
                out.push(q.keys.clone());
            }
            Ok(out)
        })?;
        for i in 0..steps {
            p.out.push(Check {
                name: format!("{mode} step {} loss", i + 1),
                rel_err: rel_err(&s[i], &r[i])?,
            });
        }
        p.out.push(Check {
            name: format!("{mode} query encoder after {steps} SGD step(s)"),
            rel_err: rel_err(&s[steps], &r[steps])?,
        });
        if mode.starts_with("moco") {
            p.out.push(Check {
                name: format!("{mode} queue after 2 enqueues"),
                rel_err: rel_err(&s[steps + 1], &r[steps + 1])?,
            });
        }
    }
    Ok(())
}

/// The weighted kNN top-1.
fn check_knn(p: &mut Pair, rng: &mut rand_chacha::ChaCha8Rng) -> Result<()> {
    let train = randn(&[512, 32], rng)?;
    let test = randn(&[128, 32], rng)?;
    let tl: Vec<u32> = (0..512).map(|i| i % 10).collect();
    let sl: Vec<u32> = (0..128).map(|i| (i * 7) % 10).collect();
    let (s, r) = p.both(&|d| {
        let acc = knn_top1(&train.to_device(d)?, &tl, &test.to_device(d)?, &sl, 10, 20, 0.1)?;
        Ok(vec![Tensor::new(&[acc as f32], &Device::Cpu)?])
    })?;
    p.out.push(Check {
        name: "kNN top-1 (512 train, 128 test, k 20)".into(),
        rel_err: rel_err(&s[0], &r[0])?,
    });

    Ok(())
}

/// The report `moco device-check` prints.
pub fn report(target: &Device, checks: &[Check]) -> String {
    let what = if target.is_cpu() {
        "cpu: candle's ops (the CUDA path) against the CPU kernels"
    } else {
        "device against the CPU path"
    };
    let mut s = format!("device-check ({what}); relative error must be < {TOLERANCE:e}\n");
    for c in checks {
        s += &format!("  {:<4} {:>10.2e}  {}\n", if c.ok() { "ok" } else { "FAIL" }, c.rel_err, c.name);
    }
    let bad = checks.iter().filter(|c| !c.ok()).count();
    s += &format!("{} checks, {} failed\n", checks.len(), bad);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU kernels and candle's own ops (the CUDA path) agree on every op of the step.
    #[test]
    fn cpu_kernels_agree_with_candle_ops() {
        let checks = run_checks(&Device::Cpu).unwrap();
        assert!(checks.len() > 20);
        let bad: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
        assert!(bad.is_empty(), "{}", report(&Device::Cpu, &checks));
    }
}
