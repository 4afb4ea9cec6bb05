//! The training order of a pack: which shards a loader rank reads, in which order, and the
//! shuffle buffer between the shards' sequential reads and the batches.

use super::super::ImageSet;
use crate::rng::{stream, Purpose};
use rand::seq::SliceRandom;
use rand::Rng;

/// The shards that rank `rank` of `world` loader ranks reads this epoch: every `world`-th of
/// the epoch's shard order `shard_order`, from position `rank`. The ranks' lists are disjoint,
/// cover every shard, and differ in length by at most one. Panics unless `rank < world`.
pub fn shards_for(rank: usize, world: usize, shard_order: &[usize]) -> Vec<usize> {
    assert!(rank < world, "loader rank {rank} of {world}");
    shard_order.iter().skip(rank).step_by(world).copied().collect()
}

/// The epoch's order of the shard-backed `set` (indices into it) for rank `rank` of `world`.
/// With `shuffle`: the shards in a seeded order of `epoch`, this rank's share
/// ([`shards_for`]), their members read front to back into a buffer of `buffer` samples, and
/// each sample taken from a seeded random slot of the buffer once it is full (then the rest in
/// a seeded order). Without: the shards and members in index order. A pure function of
/// (set, buffer, seed, epoch, rank, world).
pub fn shard_epoch_order(set: &ImageSet, buffer: usize, seed: u64, epoch: u64, shuffle: bool, rank: usize, world: usize) -> Vec<usize> {
    let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); set.shards.len()];
    for (i, m) in set.members.iter().enumerate() {
        by_shard[m.shard as usize].push(i);
    }
    for members in &mut by_shard {
        members.sort_by_key(|&i| set.members[i].offset);
    }
    let mut shard_order: Vec<usize> = (0..by_shard.len()).collect();
    if shuffle {
        shard_order.shuffle(&mut stream(seed, Purpose::Shuffle, epoch, 1));
    }
    let read = shards_for(rank, world, &shard_order)
        .into_iter()
        .flat_map(|s| by_shard[s].iter().copied());
    if !shuffle {
        return read.collect();
    }
    let mut rng = stream(seed, Purpose::Shuffle, epoch, 2);
    let (mut buf, mut out) = (Vec::with_capacity(buffer.min(set.len())), Vec::with_capacity(set.len()));
    for i in read {
        buf.push(i);
        if buf.len() >= buffer.max(1) {
            let j = rng.random_range(0..buf.len());
            out.push(buf.swap_remove(j));
        }
    }
    buf.shuffle(&mut rng);
    out.extend(buf);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Member;

    #[test]
    fn ranks_share_the_shards_disjointly_and_evenly() {
        let order = [4, 0, 6, 2, 1, 5, 3];
        for world in 1..=8 {
            let mut all: Vec<usize> = Vec::new();
            let lens: Vec<usize> = (0..world)
                .map(|r| {
                    let mine = shards_for(r, world, &order);
                    all.extend(&mine);
                    mine.len()
                })
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..7).collect::<Vec<_>>(), "world {world}");
            assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
        }
        assert_eq!(shards_for(1, 3, &order), [0, 1]);
    }

    fn set(shards: usize, per: usize) -> ImageSet {
        let mut s = ImageSet {
            shards: (0..shards).map(|i| format!("s{i}.tar").into()).collect(),
            ..Default::default()
        };
        for sh in 0..shards {
            for k in 0..per {
                s.members.push(Member {
                    shard: sh as u32,
                    key: format!("{:09}", sh * per + k),
                    offset: 512 + 2048 * k as u64,
                    size: 100,
                });
                s.labels.push(0);
            }
        }
        s
    }

    #[test]
    fn the_buffered_order_is_a_seeded_permutation_that_reads_shards_in_turn() {
        let s = set(5, 20);
        let a = shard_epoch_order(&s, 8, 3, 1, true, 0, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shard_epoch_order(&s, 8, 3, 1, true, 0, 1));
        assert_ne!(a, shard_epoch_order(&s, 8, 3, 2, true, 0, 1));
        // A buffer of 8 reaches at most 7 samples past the read position.
        let shard_of = |i: usize| s.members[i].shard;
        let first_shard = shard_of(a[0]);
        assert!(a[..13].iter().all(|&i| shard_of(i) == first_shard));
        assert_eq!(shard_epoch_order(&s, 8, 3, 1, false, 0, 1), (0..100).collect::<Vec<_>>());
        let halves = [0, 1].map(|r| shard_epoch_order(&s, 8, 3, 1, true, r, 2));
        assert_eq!(halves[0].len() + halves[1].len(), 100);
        assert!(halves[0].iter().all(|i| !halves[1].contains(i)));
    }
}
