//! ResNet-18/34/50 (He et al. 2016) as in torchvision, with a CIFAR stem option, and the MoCo
//! projection head; BatchNorm threaded through in train or eval mode.
//!
//! Tensor names (torchvision's `state_dict()`; the checkpoint prefixes `encoder_q.`/`encoder_k.`):
//! ```text
//! conv1.weight                       stem conv (3×3 s1 for CIFAR, 7×7 s2 for ImageNet)
//! bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
//! layer{1..4}.{i}.conv{1,2[,3]}.weight, layer{1..4}.{i}.bn{1,2[,3]}.*
//! layer{2..4}.0.downsample.0.weight, layer{2..4}.0.downsample.1.*   (1×1 conv + BN)
//! fc.weight, fc.bias                 MoCo v1 linear head (feat → dim)
//! fc.0.{weight,bias}, fc.2.{weight,bias}   MoCo v2 MLP head (feat → feat → dim; fc.1 is the ReLU)
//! ```
//! Bottleneck is torchvision's v1.5 (stride on the 3×3 conv). The CIFAR stem replaces the
//! 7×7 conv with a 3×3 stride-1 conv and drops the max-pool, as in the MoCo CIFAR demo.

use super::layers::{avg_pool, max_pool_3x3_s2, BatchNorm2d, BnMode, Conv2d, Linear};
use super::params::ParamStore;
use crate::config::{Arch, HeadKind, ModelConfig, Stem};
use candle_core::{Result, Tensor};

/// Residual block (BasicBlock or Bottleneck).
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let shortcut = match &self.downsample {
            Some((c, bn)) => bn.forward(&c.forward(x)?, mode)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            let z = conv.forward(&y)?;
            y = if i < last {
                bn.forward_relu(&z, mode)?
            } else {
                // The last BN, the residual join and its ReLU in one node.
                bn.forward_add_relu(&z, &shortcut, mode)?
            };
        }
        Ok(y)
    }
}

/// The projection head.
#[derive(Debug, Clone)]
pub enum Head {
    /// `fc`.
    Linear(Linear),
    /// `fc.0`, ReLU, `fc.2`.
    Mlp(Linear, Linear),
}

impl Head {
    /// `(N, feat)` → `(N, dim)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Head::Linear(l) => l.forward(x),
            Head::Mlp(a, b) => b.forward(&a.forward(x)?.relu()?),
        }
    }
}

/// A ResNet backbone plus projection head: one MoCo encoder.
#[derive(Debug, Clone)]
pub struct Encoder {
    stem: (Conv2d, BatchNorm2d),
    imagenet_stem: bool,
    blocks: Vec<Block>,
    head: Head,
    feat_dim: usize,
}

/// Blocks per stage and whether they are bottlenecks.
fn layout(arch: Arch) -> ([usize; 4], bool) {
    match arch {
        Arch::Resnet18 => ([2, 2, 2, 2], false),
        Arch::Resnet34 => ([3, 4, 6, 3], false),
        Arch::Resnet50 => ([3, 4, 6, 3], true),
    }
}

impl Encoder {
    /// Build (or fetch from `store`) every tensor of the encoder.
    pub fn new(cfg: &ModelConfig, store: &ParamStore, seed: u64) -> Result<Self> {
        let w = cfg.width;
        let stem = match cfg.stem {
            Stem::Cifar => Conv2d::new(store, "conv1", 3, w, 3, 1, 1, seed)?,
            Stem::Imagenet => Conv2d::new(store, "conv1", 3, w, 7, 2, 3, seed)?,
        };
        let stem = (stem, BatchNorm2d::new(store, "bn1", w, seed)?);
        let (counts, bottleneck) = layout(cfg.arch);
        let expansion = if bottleneck { 4 } else { 1 };
        let mut blocks = Vec::new();
        let mut cin = w;
        for (stage, &count) in counts.iter().enumerate() {
            let planes = w << stage;
            for i in 0..count {
                let p = format!("layer{}.{i}", stage + 1);
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let cout = planes * expansion;
                let cb = |j: usize, ci: usize, co: usize, k: usize, s: usize| -> Result<(Conv2d, BatchNorm2d)> {
                    Ok((
                        Conv2d::new(store, &format!("{p}.conv{j}"), ci, co, k, s, k / 2, seed)?,
                        BatchNorm2d::new(store, &format!("{p}.bn{j}"), co, seed)?,
                    ))
                };
                let convs = if bottleneck {
                    vec![
                        cb(1, cin, planes, 1, 1)?,
                        cb(2, planes, planes, 3, stride)?,
                        cb(3, planes, cout, 1, 1)?,
                    ]
                } else {
                    vec![cb(1, cin, planes, 3, stride)?, cb(2, planes, planes, 3, 1)?]
                };
                let downsample = if stride != 1 || cin != cout {
                    Some((
                        Conv2d::new(store, &format!("{p}.downsample.0"), cin, cout, 1, stride, 0, seed)?,
                        BatchNorm2d::new(store, &format!("{p}.downsample.1"), cout, seed)?,
                    ))
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                cin = cout;
            }
        }
        let feat_dim = cin;
        let head = match cfg.head {
            HeadKind::Linear => Head::Linear(Linear::new(store, "fc", feat_dim, cfg.feature_dim, seed)?),
            HeadKind::Mlp => Head::Mlp(
                Linear::new(store, "fc.0", feat_dim, feat_dim, seed)?,
                Linear::new(store, "fc.2", feat_dim, cfg.feature_dim, seed)?,
            ),
        };
        Ok(Self {
            stem,
            imagenet_stem: cfg.stem == Stem::Imagenet,
            blocks,
            head,
            feat_dim,
        })
    }

    /// Dimension of the pooled backbone features.
    pub fn feat_dim(&self) -> usize {
        self.feat_dim
    }

    /// Backbone: `(N, 3, S, S)` → pooled features `(N, feat)`.
    pub fn features(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let mut y = self.stem.1.forward_relu(&self.stem.0.forward(x)?, mode)?;
        if self.imagenet_stem {
            y = max_pool_3x3_s2(&y)?;
        }
        for b in &self.blocks {
            y = b.forward(&y, mode)?;
        }
        avg_pool(&y)
    }

    /// Backbone + head: `(N, 3, S, S)` → `(N, dim)` (not normalised).
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.head.forward(&self.features(x, mode)?)
    }

    /// The projection head alone.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Every convolution (each followed by a BN) in forward order, with its input side for a
    /// square `size`×`size` image: what a step runs, for the benchmark's per-op breakdown.
    pub fn conv_specs(&self, size: usize) -> Vec<ConvSpec> {
        let spec = |c: &Conv2d, side: usize| {
            let (cout, cin, k, stride, pad) = c.geometry();
            ConvSpec {
                cin,
                cout,
                k,
                stride,
                pad,
                side,
            }
        };
        let mut out = vec![spec(&self.stem.0, size)];
        let mut side = out[0].out_side();
        if self.imagenet_stem {
            side = (side - 1) / 2 + 1; // max-pool 3×3, stride 2, padding 1
        }
        for b in &self.blocks {
            let mut s = side;
            for (c, _) in &b.convs {
                out.push(spec(c, s));
                s = out[out.len() - 1].out_side();
            }
            if let Some((c, _)) = &b.downsample {
                out.push(spec(c, side));
            }
            side = s;
        }
        out
    }
}

/// A convolution's shape at a given input side (square inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
    /// Input side.
    pub side: usize,
}

impl ConvSpec {
    /// Output side.
    pub fn out_side(&self) -> usize {
        (self.side + 2 * self.pad - self.k) / self.stride + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ParamStore};
    use candle_core::{Device, Tensor};

    fn build(arch: Arch, head: HeadKind, width: usize) -> (ParamStore, Encoder) {
        let cfg = ModelConfig {
            arch,
            width,
            head,
            stem: Stem::Imagenet,
            ..Default::default()
        };
        let store = ParamStore::new(&Device::Cpu);
        let enc = Encoder::new(&cfg, &store, 0).unwrap();
        (store, enc)
    }

    /// Trainable backbone parameters equal torchvision's (resnet18: 11,689,512 with the
    /// 1000-class fc of 513,000; resnet50: 25,557,032 with 2,049,000).
    #[test]
    fn backbone_sizes_match_torchvision() {
        for (arch, backbone, feat) in [(Arch::Resnet18, 11_176_512usize, 512usize), (Arch::Resnet50, 23_508_032, 2048)] {
            let (store, enc) = build(arch, HeadKind::Linear, 64);
            let head = feat * 128 + 128;
            assert_eq!(store.num_trainable() - head, backbone, "{arch:?}");
            assert_eq!(enc.feat_dim(), feat);
        }
    }

    /// The exact key set of ResNet-18 with the MLP head (torchvision names).
    #[test]
    fn resnet18_key_set() {
        let (store, _) = build(Arch::Resnet18, HeadKind::Mlp, 8);
        let names: Vec<String> = store.entries().into_iter().map(|e| e.0).collect();
        let mut expected = vec!["conv1.weight".to_string()];
        let bn = |p: &str| ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"].map(|s| format!("{p}.{s}"));
        expected.extend(bn("bn1"));
        for l in 1..=4 {
            for b in 0..2 {
                for j in 1..=2 {
                    expected.push(format!("layer{l}.{b}.conv{j}.weight"));
                    expected.extend(bn(&format!("layer{l}.{b}.bn{j}")));
                }
                if l > 1 && b == 0 {
                    expected.push(format!("layer{l}.0.downsample.0.weight"));
                    expected.extend(bn(&format!("layer{l}.0.downsample.1")));
                }
            }
        }
        expected.extend(["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"].map(String::from));
        expected.sort();
        assert_eq!(names, expected);
        let buffers = store.entries().into_iter().filter(|e| e.2 == Kind::Buffer).count();
        assert_eq!(buffers, 20 * 3);
    }

    /// The conv list of ResNet-18 with the CIFAR stem: 20 convs, 32 → 4 pixels, and with the
    /// ImageNet stem the max-pool halves the side before layer1.
    #[test]
    fn conv_specs_follow_the_forward() {
        let cfg = ModelConfig {
            width: 4,
            ..Default::default()
        };
        let enc = Encoder::new(&cfg, &ParamStore::new(&Device::Cpu), 0).unwrap();
        let s = enc.conv_specs(32);
        assert_eq!(s.len(), 20);
        assert_eq!((s[0].cin, s[0].cout, s[0].k, s[0].side), (3, 4, 3, 32));
        let last = s.iter().rev().find(|c| c.k == 3).unwrap();
        assert_eq!((last.cin, last.cout, last.out_side()), (32, 32, 4));
        let downs: Vec<_> = s.iter().filter(|c| c.k == 1).map(|c| (c.cin, c.cout, c.side, c.stride)).collect();
        assert_eq!(downs, vec![(4, 8, 32, 2), (8, 16, 16, 2), (16, 32, 8, 2)]);
        let (_, enc) = build(Arch::Resnet18, HeadKind::Linear, 4);
        let s = enc.conv_specs(64);
        assert_eq!((s[0].k, s[0].out_side(), s[1].side), (7, 32, 16));
    }

    #[test]
    fn shapes_through_both_stems() {
        let (_, enc) = build(Arch::Resnet18, HeadKind::Linear, 4);
        let x = Tensor::zeros((2, 3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(enc.forward(&x, BnMode::Train { splits: 1 }).unwrap().dims(), &[2, 128]);
        let cfg = ModelConfig {
            width: 4,
            ..Default::default()
        };
        let enc = Encoder::new(&cfg, &ParamStore::new(&Device::Cpu), 0).unwrap();
        let x = Tensor::zeros((4, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(enc.features(&x, BnMode::Eval).unwrap().dims(), &[4, 32]);
        assert_eq!(enc.forward(&x, BnMode::Train { splits: 2 }).unwrap().dims(), &[4, 128]);
    }
}
