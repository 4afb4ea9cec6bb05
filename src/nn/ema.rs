//! The key encoder's momentum update θk ← m·θk + (1−m)·θq, over the *trainable* tensors
//! paired by name (BN running statistics are the key encoder's own, updated by its train-mode
//! forward, as in the official code which zips `.parameters()` only).

use crate::model::ParamStore;
use candle_core::Result;

/// Apply the EMA to every trainable tensor of `key` from `query`; fails naming a tensor
/// missing on either side.
pub fn ema_update(query: &ParamStore, key: &ParamStore, m: f64) -> Result<()> {
    let q = query.trainable();
    let k = key.trainable();
    if q.len() != k.len() {
        candle_core::bail!("ema_update: query has {} trainable tensors, key has {}", q.len(), k.len());
    }
    for (name, qv) in &q {
        let kv = key
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("ema_update: key encoder has no {name}")))?;
        // In place on CPU: one pass, no temporaries (candle's ops allocate three tensors per name).
        crate::kernels::update::ema(&kv, qv.as_tensor(), m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::{Init, Kind};
    use candle_core::Device;

    fn store(v: f32, buf: f32) -> ParamStore {
        let s = ParamStore::new(&Device::Cpu);
        s.get_or_init("a.weight", 3, Kind::Trainable, Init::Const(v), 0).unwrap();
        s.get_or_init("b.weight", (2, 2), Kind::Trainable, Init::Const(v * 2.0), 0).unwrap();
        s.get_or_init("a.running_mean", 3, Kind::Buffer, Init::Const(buf), 0).unwrap();
        s
    }

    #[test]
    fn m0_copies_query_m1_keeps_key_buffers_untouched() {
        let q = store(1.0, 5.0);
        let k = store(3.0, 7.0);
        ema_update(&q, &k, 1.0).unwrap();
        assert_eq!(k.get("a.weight").unwrap().as_tensor().to_vec1::<f32>().unwrap(), vec![3.0; 3]);
        ema_update(&q, &k, 0.0).unwrap();
        assert_eq!(k.get("a.weight").unwrap().as_tensor().to_vec1::<f32>().unwrap(), vec![1.0; 3]);
        assert_eq!(
            k.get("b.weight")
                .unwrap()
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![2.0; 4]
        );
        assert_eq!(k.get("a.running_mean").unwrap().as_tensor().to_vec1::<f32>().unwrap(), vec![7.0; 3]);
        let k2 = store(3.0, 7.0);
        ema_update(&q, &k2, 0.75).unwrap();
        assert_eq!(k2.get("a.weight").unwrap().as_tensor().to_vec1::<f32>().unwrap(), vec![2.5; 3]);
    }

    #[test]
    fn missing_name_is_an_error() {
        let q = store(1.0, 0.0);
        let k = ParamStore::new(&Device::Cpu);
        k.get_or_init("a.weight", 3, Kind::Trainable, Init::Const(0.0), 0).unwrap();
        k.get_or_init("c.weight", (2, 2), Kind::Trainable, Init::Const(0.0), 0).unwrap();
        let err = ema_update(&q, &k, 0.5).unwrap_err().to_string();
        assert!(err.contains("b.weight"), "{err}");
    }
}
