//! The seeded 8:2 split of the training images into train and validation, and seeded subsets of it.

use rand::seq::SliceRandom;

use crate::data::seed::{rng, Purpose};

/// Train : validation = 8 : 2, as the seed does it.
const VAL_PARTS: usize = 2;
const TOTAL_PARTS: usize = 10;

/// Indices into the training `ImageSet`: disjoint train and validation parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

impl Split {
    /// How many of `len` images go to training and to validation: the first fifth (rounded down) to
    /// validation.
    pub fn sizes(len: usize) -> (usize, usize) {
        let val = len * VAL_PARTS / TOTAL_PARTS;
        (len - val, val)
    }

    /// Shuffles `0..len` with `seed` and gives the first fifth (rounded down) to validation:
    /// 50,000 images become 40,000 train / 10,000 val.
    pub fn new(len: usize, seed: u64) -> Split {
        let mut indices: Vec<usize> = (0..len).collect();
        indices.shuffle(&mut rng(seed, Purpose::Split, 0));
        // len <= isize::MAX elements exist, so len * 2 cannot overflow usize.
        let train = indices.split_off(Split::sizes(len).1);
        Split { train, val: indices }
    }

    /// All images of both parts.
    pub fn len(&self) -> usize {
        self.train.len() + self.val.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A seeded random `total` images of this split, with train and val in this split's proportions
    /// (10,000 of 40,000/10,000 give 8,000/2,000); all of them where it holds fewer (data smaller than a
    /// profile's subset, which the run's reports name as data other than CIFAR-10's, as they do data with
    /// fewer test images than a profile evaluates, of which the run takes all).
    pub fn subset(&self, total: usize, seed: u64) -> Split {
        let available = self.len();
        let total = total.min(available);
        // Round to nearest; never more than either part holds since total <= available. In u128, where
        // the product of two counts of images cannot overflow.
        let (total_wide, val_wide, available_wide) = (total as u128, self.val.len() as u128, available.max(1) as u128);
        let val_count = (((total_wide * val_wide + available_wide / 2) / available_wide) as usize).min(self.val.len());
        let train_count = total - val_count;
        let mut random = rng(seed, Purpose::Subset, 0);
        let mut pick = |part: &[usize], count: usize| {
            let mut part = part.to_vec();
            part.shuffle(&mut random);
            part.truncate(count);
            part
        };
        Split { train: pick(&self.train, train_count), val: pick(&self.val, val_count) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_and_complete() {
        let split = Split::new(1000, 7);
        assert_eq!((split.train.len(), split.val.len()), (800, 200));
        let mut all: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn subset_keeps_fractions_and_stays_inside_parts() {
        let split = Split::new(50_000, 0);
        let subset = split.subset(10_000, 0);
        assert_eq!((subset.train.len(), subset.val.len()), (8_000, 2_000));
        assert!(subset.val.iter().all(|i| split.val.contains(i)));
        // Data with fewer images than the subset: all of them, the same as the split's.
        let all = |split: &Split| {
            let (mut train, mut val) = (split.train.clone(), split.val.clone());
            train.sort_unstable();
            val.sort_unstable();
            (train, val)
        };
        let small = Split::new(100, 0);
        assert_eq!(all(&small.subset(10_000, 0)), all(&small));
        assert!(split.subset(0, 0).is_empty());
    }
}
