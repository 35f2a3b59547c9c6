//! torchvision's ImageNet weights for VGG11-BN, loaded into the feature extractor of our [`Vgg`].
//!
//! The classifier is always new: the seed rebuilds it for 128-px input and 10 classes.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn_store::{ModuleSnapshot, PytorchStore};
use serde::{Deserialize, Serialize};

use crate::data::{DigestAlgorithm, ExpectedFile};

use super::vgg::{Vgg, VggConfig};
use super::ModelError;
use crate::quant::float_model::torchvision_conv_indices;

/// A published torchvision checkpoint: where it lives and how to recognise it.
#[derive(Debug, Clone, Copy)]
pub struct PretrainedWeights {
    pub url: &'static str,
    pub file_name: &'static str,
    /// torchvision names its files `<arch>-<first 8 hex digits of the SHA-256>.pth` and publishes no
    /// length or full digest; `torch.hub` checks that prefix, and so do we.
    pub expected: ExpectedFile<'static>,
}

/// The ImageNet weights a run started from, as its reports and its package record them: the file read,
/// its whole SHA-256 (torchvision publishes only the first 8 hex digits), and where it was downloaded
/// from when it was not given (`--weights`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsFile {
    pub path: PathBuf,
    pub sha256: String,
    pub downloaded_from: Option<String>,
}

/// `torchvision.models.VGG11_BN_Weights.IMAGENET1K_V1`: top-1 70.37 % on ImageNet-1k.
pub const VGG11_BN_IMAGENET1K_V1: PretrainedWeights = PretrainedWeights {
    url: "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
    file_name: "vgg11_bn-6002323d.pth",
    expected: ExpectedFile { length: None, algorithm: DigestAlgorithm::Sha256, digest: "6002323d" },
};

/// Tensors of a torchvision BatchNorm loaded into ours. `num_batches_tracked` starts at 0, as PyTorch's
/// does when it loads torchvision's checkpoint (saved before PyTorch counted batches, so without the
/// counter); fine-tuning counts from there.
const NORM_TENSORS: &str = "weight|bias|running_mean|running_var";
/// The BatchNorm counter, left at 0 (above).
const BATCH_COUNTER: &str = ".num_batches_tracked";

/// Loads torchvision's `features.*` tensors from a `.pth` state_dict into `model`.
///
/// torchvision numbers `features` as one `nn.Sequential` (conv, bn, relu and pools all take an index);
/// ours is a list of conv blocks, so each torchvision index is remapped to its block by one regex per
/// tensor group, derived from the same configuration that built the model. Every feature tensor of the
/// model must be loaded, with the file's shape; a tensor of the file that fits nowhere is an error.
pub fn load_features<B: Backend>(mut model: Vgg<B>, config: &VggConfig, path: &Path) -> Result<Vgg<B>, ModelError> {
    if !path.is_file() {
        return Err(ModelError::MissingCheckpoint(path.to_path_buf()));
    }
    check_saved_by_torch(path)?;
    let mut store = PytorchStore::from_file(path)
        .map_indices_contiguous(false)
        .allow_partial(true)
        .validate(false)
        .with_regex(r"^features\.");
    for (block, conv, norm) in torchvision_places(config) {
        store = store
            .with_key_remapping(format!(r"^features\.{conv}\.(weight|bias)$"), format!("features.{block}.conv.$1"))
            .with_key_remapping(format!(r"^features\.{norm}\.({NORM_TENSORS})$"), format!("features.{block}.norm.$1"));
    }
    // burn-store names a tensor by our model's key; the file's own name is what its owner can look up.
    let named = |text: String| in_torchvision_names(text, config);
    let result = model
        .load_from(&mut store)
        .map_err(|source| ModelError::Checkpoint { path: path.to_path_buf(), message: named(source.to_string()) })?;

    if let Some(error) = result.errors.first() {
        return Err(ModelError::Checkpoint { path: path.to_path_buf(), message: named(error.to_string()) });
    }
    if let Some((key, _)) = result.missing.iter().find(|(key, _)| key.starts_with("features.") && !key.ends_with(BATCH_COUNTER)) {
        return Err(ModelError::MissingTensor { path: path.to_path_buf(), key: named(key.clone()) });
    }
    if let Some(key) = result.unused.iter().find(|key| key.starts_with("features.") && !key.ends_with(BATCH_COUNTER)) {
        return Err(ModelError::UnexpectedTensor { path: path.to_path_buf(), key: key.clone() });
    }
    Ok(model)
}

/// `text` with our features' tensor names (`features.<block>.conv.weight`, `features.<block>.norm.bias`)
/// as torchvision's state dict names them (`features.<index>.weight`, `features.<index + 1>.bias`): the
/// remapping of [`load_features`], backwards.
fn in_torchvision_names(text: String, config: &VggConfig) -> String {
    // Each replacement leaves no `.conv.` or `.norm.` behind, so none is replaced twice.
    torchvision_places(config).fold(text, |text, (block, conv, norm)| {
        text.replace(&format!("features.{block}.conv."), &format!("features.{conv}."))
            .replace(&format!("features.{block}.norm."), &format!("features.{norm}."))
    })
}

/// Each of our blocks with the indices of its conv and its BatchNorm in torchvision's `features` (the
/// BatchNorm right after the conv).
fn torchvision_places(config: &VggConfig) -> impl Iterator<Item = (usize, usize, usize)> {
    torchvision_conv_indices(config).into_iter().enumerate().map(|(block, conv)| (block, conv, conv + 1))
}

/// Fails unless the file at `path` begins as `torch.save` writes: a zip archive (PyTorch 1.6 on), a
/// pickle stream (the legacy format), or a tar archive (the oldest releases), the formats burn-store
/// reads. Any other file would get burn-store's account of its first pickle opcode, and an empty one
/// the same, where the user needs to hear that the file is not a checkpoint at all.
fn check_saved_by_torch(path: &Path) -> Result<(), ModelError> {
    use std::io::Read;

    use crate::data::TAR_MAGIC;
    const ZIP: &[u8] = b"PK\x03\x04";
    const PICKLE_PROTOCOL: u8 = 0x80;
    let head_len = TAR_MAGIC.0 + TAR_MAGIC.1.len();
    let mut head = Vec::with_capacity(head_len);
    std::fs::File::open(path)
        .and_then(|file| file.take(head_len as u64).read_to_end(&mut head))
        .map_err(|source| ModelError::Checkpoint { path: path.to_path_buf(), message: source.to_string() })?;
    if head.is_empty() {
        return Err(ModelError::EmptyCheckpoint(path.to_path_buf()));
    }
    let is_tar = head.get(TAR_MAGIC.0..) == Some(TAR_MAGIC.1);
    match head.starts_with(ZIP) || head[0] == PICKLE_PROTOCOL || is_tar {
        true => Ok(()),
        false => Err(ModelError::NotACheckpoint(path.to_path_buf())),
    }
}

/// Fails unless the file at `path` loads into `config`'s features, tried on the CPU on a model made for
/// the check alone: a command refuses wrong weights before it changes its run or works for minutes
/// (QAT reads them after PTQ's calibration and scoring).
pub fn check_features(config: &VggConfig, path: &Path) -> Result<(), ModelError> {
    load_features(config.init::<burn::backend::Flex>(&Default::default()), config, path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_indices_follow_torchvision_make_layers() {
        // torchvision's vgg11_bn state_dict has convs at these `features.N` indices.
        assert_eq!(torchvision_conv_indices(&VggConfig::seed()), vec![0, 4, 8, 11, 15, 18, 22, 25]);
    }

    #[test]
    fn our_tensor_names_read_back_as_torchvisions() {
        let ours = "features.1.conv.weight, features.3.norm.running_var, features.7.conv.bias, features.10.conv.weight";
        let theirs = "features.4.weight, features.12.running_var, features.25.bias, features.10.conv.weight";
        assert_eq!(in_torchvision_names(ours.to_string(), &VggConfig::seed()), theirs, "(VGG11 has no block 10)");
    }
}
