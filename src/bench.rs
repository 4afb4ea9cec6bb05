//! `moco bench`: the training step's speed and peak memory, a per-op breakdown, and the input
//! pipeline's throughput, measured the same way as `bench/torch_step.py` and
//! `bench/torch_augment.py` measure PyTorch, so that one command can print `ours / pytorch`.
//!
//! Times are medians of repeated runs after warm-up; the per-op breakdown is in seconds per
//! training step (the query encoder runs each conv forward and both backward passes, the key
//! encoder the forward again), summed over the network's layers.

use crate::config::{DictionaryMode, ValidRunConfig};
use crate::data::augment::{augment_into, AugmentParams};
use crate::data::folder::decode;
use crate::data::loader::{train_order, EpochLoader, PipelineSpec};
use crate::data::sample::{augment_encoded_views, Output};
use crate::data::Image;
use crate::io::error::FileError;
use crate::kernels::batch_norm::batch_norm_train;
use crate::kernels::conv::{parts, ConvGeom};
use crate::model::layers::BN_EPS;
use crate::model::ConvSpec;
use crate::nn::ema::ema_update;
use crate::nn::loss::{info_nce, l2_normalize};
use crate::train::dictionary::MemoryBank;
use crate::train::learner::Learner;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A tensor op failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An image or dataset could not be read.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A folder or report could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The step's loss is not finite: the timing would mean nothing.
    #[error("bench step: loss {0} is not finite")]
    NotFinite(f32),
    /// The per-op breakdown was asked for on a device other than the CPU.
    #[error("the per-op breakdown times the CPU kernels; run it with device = \"cpu\"")]
    NeedsCpu,
    /// The augmentation workers' thread pool could not be started.
    #[error("bench stream: could not start the augmentation workers: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
}

type Result<T> = std::result::Result<T, BenchError>;
use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Names of the per-op breakdown, in print order (the same keys as the PyTorch script).
pub const OPS: [&str; 7] = ["conv_fwd", "conv_grad_input", "conv_grad_weight", "bn", "head", "ema", "queue"];

/// Training examples the memory bank holds in the benchmark (CIFAR-10's training set).
const BANK_ROWS: usize = 50_000;

/// What one step benchmark measured (also what the PyTorch script writes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// `moco-harness` or `pytorch`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Worker threads.
    pub threads: usize,
    /// Images per step.
    pub batch: usize,
    /// Encoder width (64 = ResNet-18).
    pub width: usize,
    /// Dictionary size K.
    pub k: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median seconds per step.
    pub step_s: f64,
    /// `batch / step_s`.
    pub img_per_s: f64,
    /// Peak resident memory of the process so far, MB.
    pub peak_rss_mb: f64,
    /// Seconds per step of each op class ([`OPS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<BTreeMap<String, f64>>,
    /// Per convolution of the encoder (with --ops): shape and GFLOP/s of each pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conv_layers: Vec<ConvLayerTime>,
}

/// One convolution's passes, for finding the slow shapes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvLayerTime {
    /// `cin->cout kxk sS side`.
    pub shape: String,
    /// GFLOP of one forward pass over the batch.
    pub gflop: f64,
    /// GFLOP/s of the forward, grad-input, grad-weight passes.
    pub gflops_fwd: f64,
    /// Grad-input GFLOP/s (0 for the stem, whose input needs none).
    pub gflops_grad_input: f64,
    /// Grad-weight GFLOP/s.
    pub gflops_grad_weight: f64,
}

/// Peak resident set size of this process in MB (Linux `ru_maxrss` is in KB).
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    u.ru_maxrss as f64 / 1024.0
}

/// Median seconds of `reps` calls of `f` (dropping its result included) after `warmup` untimed ones.
pub fn median_time<T>(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    let n = ts.len();
    Ok(if n % 2 == 1 { ts[n / 2] } else { 0.5 * (ts[n / 2 - 1] + ts[n / 2]) })
}

fn randn(shape: &[usize], dev: &Device) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1f32, shape, dev)?)
}

/// Time the full training step of `cfg` (its batch size, K, mode) on random CIFAR-sized input:
/// median of `steps` after `warmup`. With `op_reps > 0` also the per-op breakdown.
pub fn bench_step(cfg: &ValidRunConfig, device: &Device, warmup: usize, steps: usize, op_reps: usize) -> Result<StepReport> {
    let n = cfg.train.batch_size;
    let size = cfg.data.image_size;
    let mut learner = Learner::new(cfg, BANK_ROWS, device)?;
    let views = [randn(&[n, 3, size, size], device)?, randn(&[n, 3, size, size], device)?];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut draw = 0u32;
    let step_s = median_time(warmup, steps, || {
        let choices = learner.draw_choices(n, &mut rng);
        let indices: Vec<u32> = (0..n as u32).map(|i| (draw * n as u32 + i) % BANK_ROWS as u32).collect();
        draw += 1;
        let s = learner.step(&views, &indices, cfg.train.lr, &choices)?;
        device.synchronize()?;
        if !s.loss.is_finite() {
            return Err(BenchError::NotFinite(s.loss));
        }
        Ok(())
    })?;
    let peak = peak_rss_mb();
    let (ops, conv_layers) = if op_reps > 0 {
        let (o, l) = op_breakdown(&mut learner, op_reps)?;
        (Some(o), l)
    } else {
        (None, Vec::new())
    };
    Ok(StepReport {
        implementation: "moco-harness".into(),
        threads: rayon::current_num_threads(),
        batch: n,
        width: cfg.model.width,
        k: learner.negatives(),
        steps,
        step_s,
        img_per_s: n as f64 / step_s,
        peak_rss_mb: peak,
        ops,
        conv_layers,
    })
}

fn rand_vec(len: usize, rng: &mut impl rand::Rng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// What every timing of the per-op breakdown shares.
struct OpBench {
    /// Images per step.
    n: usize,
    /// BatchNorm splits (`model.bn_splits`).
    splits: usize,
    /// The device (the CPU).
    dev: Device,
    /// Timed repetitions of each op.
    reps: usize,
}

/// Seconds per training step of each op class, on the CPU kernels the step uses.
fn op_breakdown(l: &mut Learner, reps: usize) -> Result<(BTreeMap<String, f64>, Vec<ConvLayerTime>)> {
    if !l.device.is_cpu() {
        return Err(BenchError::NeedsCpu);
    }
    let b = OpBench {
        n: l.cfg.train.batch_size,
        splits: l.cfg.model.bn_splits,
        dev: l.device.clone(),
        reps,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut ops: BTreeMap<String, f64> = OPS.iter().map(|k| (k.to_string(), 0.0)).collect();
    let mut layers = Vec::new();
    let mut add = |k: &str, v: f64| *ops.get_mut(k).expect("known op") += v;
    for (i, s) in l.encoder_q.conv_specs(l.cfg.data.image_size).into_iter().enumerate() {
        let t = time_conv(&b, &s, i == 0, &mut rng)?;
        // Two forwards per step (query and key encoder), one backward.
        add("conv_fwd", 2.0 * t.fwd);
        add("conv_grad_input", t.grad_input);
        add("conv_grad_weight", t.grad_weight);
        layers.push(conv_layer_time(b.n, &s, &t));
        add("bn", time_bn(&b, &s)?);
    }
    add("head", time_head(&b, l)?);
    if let Some(t) = time_ema(&b, l)? {
        add("ema", t);
    }
    add("queue", time_dictionary(&b, l)?);
    Ok((ops, layers))
}

/// Median seconds of one convolution's passes over the batch.
struct ConvTimes {
    /// One forward pass.
    fwd: f64,
    /// The gradient of the input (0 for the stem).
    grad_input: f64,
    /// The gradient of the weights.
    grad_weight: f64,
}

/// The output shape `[n, cout, side, side]` of convolution `s` on a batch of `n`.
fn conv_out_shape(n: usize, s: &ConvSpec) -> [usize; 4] {
    [n, s.cout, s.out_side(), s.out_side()]
}

/// Time convolution `s`'s passes on random data; the stem's input is the image, so it has no
/// grad-input pass.
fn time_conv(b: &OpBench, s: &ConvSpec, stem: bool, rng: &mut impl rand::Rng) -> Result<ConvTimes> {
    let n = b.n;
    let g = ConvGeom {
        n,
        c: s.cin,
        h: s.side,
        w: s.side,
        k: s.k,
        stride: s.stride,
        pad: s.pad,
    };
    let out = conv_out_shape(n, s);
    let x = rand_vec(n * s.cin * s.side * s.side, rng);
    let w = rand_vec(s.cout * s.cin * s.k * s.k, rng);
    let gy = rand_vec(out.iter().product(), rng);
    let fwd = median_time(1, b.reps, || Ok(parts::forward(&x, &w, g, s.cout)))?;
    let grad_input = if stem {
        0.0
    } else {
        median_time(1, b.reps, || Ok(parts::grad_input(&x, &w, &gy, g, s.cout)))?
    };
    let grad_weight = median_time(1, b.reps, || Ok(parts::grad_weight(&x, &w, &gy, g, s.cout)))?;
    Ok(ConvTimes {
        fwd,
        grad_input,
        grad_weight,
    })
}

/// Convolution `s`'s shape, GFLOP and GFLOP/s of each pass, from its times `t`.
fn conv_layer_time(n: usize, s: &ConvSpec, t: &ConvTimes) -> ConvLayerTime {
    let gflop = 2.0 * (n * s.cout * s.out_side() * s.out_side() * s.cin * s.k * s.k) as f64 / 1e9;
    let rate = |t: f64| if t > 0.0 { gflop / t } else { 0.0 };
    ConvLayerTime {
        shape: format!("{}->{} {}x{} s{} {}px", s.cin, s.cout, s.k, s.k, s.stride, s.side),
        gflop,
        gflops_fwd: rate(t.fwd),
        gflops_grad_input: rate(t.grad_input),
        gflops_grad_weight: rate(t.grad_weight),
    }
}

/// Seconds per step of the BN after convolution `s`: train forward + backward (query
/// encoder), train forward (key encoder).
fn time_bn(b: &OpBench, s: &ConvSpec) -> Result<f64> {
    let (dev, splits) = (&b.dev, b.splits);
    let out = conv_out_shape(b.n, s);
    let y = Var::from_tensor(&randn(&out, dev)?)?;
    let gyt = randn(&out, dev)?;
    let (wt, bt) = (
        Tensor::ones(s.cout, candle_core::DType::F32, dev)?,
        Tensor::zeros(s.cout, candle_core::DType::F32, dev)?,
    );
    let (wv, bv) = (Var::from_tensor(&wt)?, Var::from_tensor(&bt)?);
    let fb = median_time(1, b.reps, || {
        let (o, _) = batch_norm_train(y.as_tensor(), wv.as_tensor(), bv.as_tensor(), splits, BN_EPS)?;
        Ok((o * &gyt)?.sum_all()?.backward()?)
    })?;
    let y0 = y.as_tensor().detach();
    let f = median_time(1, b.reps, || Ok(batch_norm_train(&y0, &wt, &bt, splits, BN_EPS)?))?;
    Ok(fb + f)
}

/// Seconds of the projection head's forward and backward.
fn time_head(b: &OpBench, l: &Learner) -> Result<f64> {
    let h = Var::from_tensor(&randn(&[b.n, l.encoder_q.feat_dim()], &b.dev)?)?;
    let head = l.encoder_q.head().clone();
    median_time(1, b.reps, || Ok(head.forward(h.as_tensor())?.sum_all()?.backward()?))
}

/// Seconds of the key encoder's momentum update; None when the mode has no key encoder.
fn time_ema(b: &OpBench, l: &Learner) -> Result<Option<f64>> {
    let Some(k_store) = l.key_store() else { return Ok(None) };
    let m = l.cfg.moco.momentum;
    Ok(Some(median_time(1, b.reps, || Ok(ema_update(&l.q_store, k_store, m)?))?))
}

/// Seconds of the InfoNCE loss (forward and backward) against the dictionary of the learner's
/// mode, and the dictionary's update.
fn time_dictionary(b: &OpBench, l: &mut Learner) -> Result<f64> {
    let (mode, dim, tau, size) = (
        l.cfg.dictionary.mode,
        l.cfg.model.feature_dim,
        l.cfg.moco.temperature,
        l.cfg.dictionary.size,
    );
    let q = Var::from_tensor(&l2_normalize(&randn(&[b.n, dim], &b.dev)?)?)?;
    let k = l2_normalize(&randn(&[b.n, dim], &b.dev)?)?;
    match mode {
        DictionaryMode::Moco => {
            let queue = l.queue_mut().expect("moco mode has a queue");
            median_time(1, b.reps, || {
                drop(info_nce(q.as_tensor(), &k, &queue.keys, tau, false)?.0.backward()?);
                queue.enqueue(&k)?;
                Ok(())
            })
        }
        DictionaryMode::MemoryBank => {
            let bank = l.bank_mut().expect("memory_bank mode has a bank");
            time_memory_bank(b, bank, &q, size, tau)
        }
        DictionaryMode::EndToEnd => {
            let kv = Var::from_tensor(&k)?;
            median_time(1, b.reps, || {
                Ok(info_nce(q.as_tensor(), kv.as_tensor(), kv.as_tensor(), tau, true)?.0.backward()?)
            })
        }
    }
}

/// Seconds of the memory bank's step: draw the positives and `size` negatives, the loss
/// (forward and backward), write the queries back.
fn time_memory_bank(b: &OpBench, bank: &mut MemoryBank, q: &Var, size: usize, tau: f64) -> Result<f64> {
    let (n, dev) = (b.n, &b.dev);
    let mut draw = 0u32;
    median_time(1, b.reps, || {
        let idx: Vec<u32> = (0..n as u32).map(|i| (draw * n as u32 + i) % BANK_ROWS as u32).collect();
        let neg: Vec<u32> = (0..size as u32).map(|i| (i * 7919 + draw) % BANK_ROWS as u32).collect();
        draw += 1;
        let idx = Tensor::new(idx.as_slice(), dev)?;
        let pos = bank.rows(&idx)?;
        let negs = bank.rows(&Tensor::new(neg.as_slice(), dev)?)?;
        drop(info_nce(q.as_tensor(), &pos, &negs, tau, false)?.0.backward()?);
        bank.update(&idx, &q.as_tensor().detach())?;
        Ok(())
    })
}

/// What the augmentation benchmark measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AugmentReport {
    /// `moco-harness` or `torchvision`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Images (each gives two views).
    pub images: usize,
    /// Output side.
    pub size: usize,
    /// Decoded JPEGs per second, one core.
    pub decode_img_per_s: f64,
    /// Images per second through the two-view transform, one core.
    pub augment_img_per_s: f64,
    /// Images per second from encoded bytes in memory (the page cache's copy) to two views:
    /// decode + transform, as a streamed epoch does it, DCT scaling off (same bits as decoding
    /// the full image). Absent in reports written before it existed.
    #[serde(default)]
    pub decode_augment_img_per_s: f64,
    /// The same with `data.dct_scaling` on (the JPEG decoded at 1/2, 1/4 or 1/8 where the
    /// crop allows).
    #[serde(default)]
    pub decode_augment_dct_img_per_s: f64,
}

/// The first `limit` JPEG/PNG files of `root/train/<class>/` (or `root/<class>/`), in sorted
/// order: the same list `bench/torch_augment.py` takes.
pub fn bench_images(root: &Path, limit: usize) -> Result<Vec<PathBuf>> {
    let base = if root.join("train").is_dir() {
        root.join("train")
    } else {
        root.to_path_buf()
    };
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&base)
        .map_err(FileError::io(&base))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut files = Vec::new();
    for c in classes {
        let mut fs: Vec<PathBuf> = std::fs::read_dir(&c)
            .map_err(FileError::io(&c))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
                matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
            })
            .collect();
        fs.sort();
        files.extend(fs);
    }
    if files.is_empty() {
        return Err(FileError::Format {
            path: base,
            message: "no images under <class>/ folders".into(),
        }
        .into());
    }
    files.sort();
    files.truncate(limit);
    Ok(files)
}

/// Decode `files`, then push every image through the config's augmentation twice (the two
/// views), on the calling thread only: per-core throughput.
pub fn bench_augment(cfg: &ValidRunConfig, files: &[PathBuf], reps: usize) -> Result<AugmentReport> {
    let t = Instant::now();
    let images: Vec<Image> = files.iter().map(|f| decode(f)).collect::<std::result::Result<_, _>>()?;
    let decode_s = t.elapsed().as_secs_f64();
    let p = AugmentParams::resolve(&cfg.augment);
    let size = cfg.data.image_size;
    let mean = cfg.data.mean.map(|v| v as f32);
    let std = cfg.data.std.map(|v| v as f32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut out = vec![0f32; 3 * size * size];
    let s = median_time(1, reps, || {
        for img in &images {
            for _ in 0..2 {
                augment_into(img, &p, size, mean, std, &mut rng, &mut out);
            }
        }
        Ok(())
    })?;
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).map_err(FileError::io(f)))
        .collect::<std::result::Result<_, _>>()?;
    let mut streamed = |dct: bool| {
        let o = Output {
            dct,
            ..Output::of(&cfg.data)
        };
        let mut views = vec![0f32; 6 * size * size];
        median_time(1, reps, || {
            for (b, f) in bytes.iter().zip(files) {
                let (a, z) = views.split_at_mut(3 * size * size);
                augment_encoded_views(b, f, &p, &o, &mut rng, &mut [a, z])?;
            }
            Ok(())
        })
    };
    let (full, dct) = (streamed(false)?, streamed(true)?);
    let n = images.len() as f64;
    Ok(AugmentReport {
        implementation: "moco-harness".into(),
        images: images.len(),
        size,
        decode_img_per_s: n / decode_s,
        augment_img_per_s: n / s,
        decode_augment_img_per_s: n / full,
        decode_augment_dct_img_per_s: n / dct,
    })
}

/// What the streamed-epoch benchmark measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReport {
    /// How the train split was held (the loader's note: streamed or decoded, and why).
    pub data: String,
    /// Images in the epoch (full batches).
    pub images: usize,
    /// Batch size.
    pub batch: usize,
    /// Output side.
    pub size: usize,
    /// Loader threads (`data.workers`).
    pub workers: usize,
    /// Batches prepared ahead (`data.prefetch`).
    pub prefetch: usize,
    /// Images per second through the whole input pipeline (every view of every image).
    pub img_per_s: f64,
    /// Peak RSS of the process over listing, loading and the epoch, MB.
    pub peak_rss_mb: f64,
}

/// One epoch of the training input pipeline alone (the trainer's `EpochLoader`, the config's
/// workers and prefetch), every batch dropped as it arrives: what streaming costs in time and
/// memory without a model in the way.
pub fn bench_stream(cfg: &ValidRunConfig) -> Result<StreamReport> {
    let splits = crate::data::load(&cfg.data, cfg.seed)?;
    let set = Arc::new(crate::data::pretrain_set(&cfg.data, &splits)?);
    let batch = cfg.train.batch_size;
    let n_batches = set.len() / batch;
    let workers = crate::data::loader::worker_count(cfg.data.workers);
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(workers).build()?);
    let spec = Arc::new(PipelineSpec::new(
        AugmentParams::resolve(&cfg.augment),
        Output::of(&cfg.data),
        2,
        cfg.seed,
    ));
    let order = train_order(&set, &cfg.data, cfg.seed, 0);
    let t = Instant::now();
    let mut loader = EpochLoader::spawn(set, order, batch, 0, n_batches, 0, spec, cfg.data.prefetch, pool);
    let pb = crate::progress::bar(n_batches as u64, "stream epoch".into(), true);
    while let Some(b) = loader.next_batch() {
        drop(b?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(StreamReport {
        data: splits.note.clone().unwrap_or_else(|| "decoded in memory".into()),
        images: n_batches * batch,
        batch,
        size: cfg.data.image_size,
        workers,
        prefetch: cfg.data.prefetch,
        img_per_s: (n_batches * batch) as f64 / t.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
    })
}

/// The ratio table of two step reports (ours first): img/s, peak RSS, each op.
pub fn compare_steps(ours: &StepReport, theirs: &StepReport) -> String {
    let mut s = format!(
        "step: batch {}, width {}, K {}, {} threads (ours) / {} (theirs)\n",
        ours.batch, ours.width, ours.k, ours.threads, theirs.threads
    );
    s += &format!(
        "{:<18} {:>12} {:>12} {:>10}\n",
        "", &ours.implementation, &theirs.implementation, "ratio"
    );
    s += &format!(
        "{:<18} {:>12.1} {:>12.1} {:>9.2}x   (ours / theirs, higher is better)\n",
        "img/s",
        ours.img_per_s,
        theirs.img_per_s,
        ours.img_per_s / theirs.img_per_s
    );
    s += &format!(
        "{:<18} {:>12.0} {:>12.0} {:>9.2}x   (ours / theirs, lower is better)\n",
        "peak RSS MB",
        ours.peak_rss_mb,
        theirs.peak_rss_mb,
        ours.peak_rss_mb / theirs.peak_rss_mb
    );
    if let (Some(a), Some(b)) = (&ours.ops, &theirs.ops) {
        s += "per step, seconds (ours / theirs, lower is better):\n";
        for k in OPS {
            let (x, y) = (a.get(k).copied().unwrap_or(f64::NAN), b.get(k).copied().unwrap_or(f64::NAN));
            s += &format!("  {:<16} {:>12.4} {:>12.4} {:>9.2}x\n", k, x, y, x / y);
        }
    }
    s
}

/// Read a JSON report written by either side.
pub fn read_report<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(FileError::io(path))?;
    let not_a_report = |e: serde_json::Error| format!("not a benchmark report: {e}");
    Ok(serde_json::from_str(&text).map_err(|e| FileError::format(path)(not_a_report(e)))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    fn tiny(mode: &str) -> ValidRunConfig {
        let mut c = RunConfig::default();
        c.model.width = 2;
        c.model.bn_splits = 2;
        c.train.batch_size = 4;
        c.dictionary.size = 16;
        c.data.image_size = 8;
        c.dictionary.mode = serde_json::from_value(serde_json::json!(mode)).unwrap();
        c.validate().unwrap()
    }

    /// Every mechanism's step runs in the bench harness and every op of the breakdown gets a
    /// positive time.
    #[test]
    fn step_bench_reports_every_op() {
        for mode in ["moco", "memory_bank", "end_to_end"] {
            let r = bench_step(&tiny(mode), &Device::Cpu, 1, 2, 1).unwrap();
            assert!(r.step_s > 0.0 && r.img_per_s > 0.0 && r.peak_rss_mb > 0.0, "{mode}: {r:?}");
            let ops = r.ops.unwrap();
            for k in OPS {
                let has_ema = mode == "moco";
                if k != "ema" || has_ema {
                    assert!(ops[k] > 0.0, "{mode}: {k} = {}", ops[k]);
                }
            }
        }
    }

    #[test]
    fn median_is_the_middle_time() {
        let mut i = 0u64;
        let m = median_time(0, 3, || {
            i += 1;
            std::thread::sleep(std::time::Duration::from_millis(if i == 2 { 30 } else { 1 }));
            Ok(())
        })
        .unwrap();
        assert!(m < 0.025, "{m}");
    }
}
