//! The dictionaries: MoCo's FIFO queue of keys and the memory bank of Wu et al. (2018).

use crate::nn::loss::l2_normalize;
use crate::rng::{stream, Purpose};
use candle_core::{Device, Result, Tensor};
use rand_distr::{Distribution, StandardNormal};

/// `n` random unit vectors of dimension `c` as rows `(n, c)`, from the run's dictionary stream.
pub fn random_unit_rows(n: usize, c: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = stream(seed, Purpose::Dictionary, 0, 0);
    let data: Vec<f32> = (0..n * c).map(|_| StandardNormal.sample(&mut rng)).collect();
    l2_normalize(&Tensor::from_vec(data, (n, c), device)?)
}

/// The queue of K keys. Stored as rows `(K, C)` so an enqueue is one in-place contiguous
/// write; checkpoints hold the official layout `queue (C, K)` and `queue_ptr`.
#[derive(Debug, Clone)]
pub struct KeyQueue {
    /// Keys as rows, `(K, C)`.
    pub keys: Tensor,
    /// Row that the next enqueue writes first.
    pub ptr: usize,
}

impl KeyQueue {
    /// K random unit keys (the official `randn(dim, K)` normalised along dim).
    pub fn new(k: usize, c: usize, seed: u64, device: &Device) -> Result<Self> {
        Ok(Self {
            keys: random_unit_rows(k, c, seed, device)?.contiguous()?,
            ptr: 0,
        })
    }

    /// K.
    pub fn len(&self) -> usize {
        self.keys.dim(0).unwrap_or(0)
    }

    /// Never empty once built.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enqueue the newest keys `(N, C)` at the pointer, overwriting the oldest, wrapping at K.
    pub fn enqueue(&mut self, keys: &Tensor) -> Result<()> {
        let k = self.len();
        let n = keys.dim(0)?;
        if n > k {
            candle_core::bail!("enqueue of {n} keys into a queue of {k}");
        }
        let keys = keys.detach().contiguous()?;
        let first = n.min(k - self.ptr);
        self.keys.slice_set(&keys.narrow(0, 0, first)?.contiguous()?, 0, self.ptr)?;
        if first < n {
            self.keys.slice_set(&keys.narrow(0, first, n - first)?.contiguous()?, 0, 0)?;
        }
        self.ptr = (self.ptr + n) % k;
        Ok(())
    }
}

/// One feature per training image, `(N_train, C)`.
#[derive(Debug, Clone)]
pub struct MemoryBank {
    /// Rows are unit vectors.
    pub features: Tensor,
    /// b in v ← normalize(b·v + (1−b)·q).
    pub momentum: f64,
}

impl MemoryBank {
    /// Random unit vectors.
    pub fn new(n: usize, c: usize, momentum: f64, seed: u64, device: &Device) -> Result<Self> {
        Ok(Self {
            features: random_unit_rows(n, c, seed, device)?.contiguous()?,
            momentum,
        })
    }

    /// Rows at `indices` `(M,)` u32 → `(M, C)`.
    pub fn rows(&self, indices: &Tensor) -> Result<Tensor> {
        self.features.index_select(indices, 0)
    }

    /// v ← normalize(b·v + (1−b)·q) for the rows `indices` (distinct), `q (M, C)`.
    pub fn update(&mut self, indices: &Tensor, q: &Tensor) -> Result<()> {
        let old = self.rows(indices)?;
        let new = l2_normalize(&((old * self.momentum)? + (q.detach() * (1.0 - self.momentum))?)?)?.contiguous()?;
        let (m, c) = new.dims2()?;
        let idx = indices.reshape((m, 1))?.broadcast_as((m, c))?.contiguous()?;
        self.features.scatter_set(&idx, &new, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(vals: &[f32], c: usize) -> Tensor {
        Tensor::from_vec(vals.to_vec(), (vals.len() / c, c), &Device::Cpu).unwrap()
    }

    #[test]
    fn queue_is_fifo_and_wraps() {
        let mut q = KeyQueue {
            keys: Tensor::zeros((4, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
            ptr: 0,
        };
        q.enqueue(&rows(&[1., 1., 2., 2.], 2)).unwrap();
        assert_eq!(q.ptr, 2);
        q.enqueue(&rows(&[3., 3.], 2)).unwrap();
        q.enqueue(&rows(&[4., 4., 5., 5.], 2)).unwrap(); // wraps: 4 at row 3, 5 at row 0
        assert_eq!(q.ptr, 1);
        let k = q.keys.to_vec2::<f32>().unwrap();
        assert_eq!(k, vec![vec![5., 5.], vec![2., 2.], vec![3., 3.], vec![4., 4.]]);
    }

    #[test]
    fn queue_init_is_unit_and_seeded() {
        let a = KeyQueue::new(8, 4, 1, &Device::Cpu).unwrap();
        let b = KeyQueue::new(8, 4, 1, &Device::Cpu).unwrap();
        assert_eq!(a.keys.to_vec2::<f32>().unwrap(), b.keys.to_vec2::<f32>().unwrap());
        for r in a.keys.to_vec2::<f32>().unwrap() {
            assert!((r.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn bank_update_moves_only_given_rows() {
        let mut bank = MemoryBank {
            features: rows(&[1., 0., 0., 1., 1., 0.], 2).contiguous().unwrap(),
            momentum: 0.5,
        };
        let idx = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        bank.update(&idx, &rows(&[0., 1.], 2)).unwrap();
        let f = bank.features.to_vec2::<f32>().unwrap();
        assert_eq!(f[0], vec![1., 0.]);
        assert_eq!(f[1], vec![0., 1.]);
        let s = 0.5f32.sqrt();
        assert!((f[2][0] - s).abs() < 1e-6 && (f[2][1] - s).abs() < 1e-6);
    }
}
