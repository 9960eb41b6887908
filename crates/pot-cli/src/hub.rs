//! Model arguments given as `ORG/NAME[@REVISION]`: resolved in the Hugging Face cache
//! (`pot_formats::hub`) before a command runs, so every command reads a path as before.

use std::path::PathBuf;

use clap::Args;
use pot_formats::hub::{self, HubModel};

use crate::exit::Failure;

#[derive(Args)]
pub struct HubArgs {
    /// A model argument may be a Hugging Face repository, `ORG/NAME[@REVISION]`, found in the
    /// local Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub); nothing is downloaded. A repository holding several GGUF files
    /// needs this option to pick one (a file name inside the snapshot).
    #[arg(long, global = true, value_name = "NAME")]
    pub gguf_file: Option<String>,
}

/// The model arguments of a command, rewritten in place when they name a repository.
pub trait ModelArgs {
    fn model_paths(&mut self) -> Vec<&mut PathBuf>;
    /// What the arguments resolved to, in the order of [`ModelArgs::model_paths`] (`None`: a
    /// path, opened as given).
    fn resolved(&mut self, _sources: Vec<Option<HubModel>>) {}
}

/// Resolves every model argument of `args` that names a repository in the cache; one that
/// looks like a repository but is not in the cache is bad input (exit 4) naming the directory
/// searched and the download command.
pub fn locate<A: ModelArgs>(mut args: A, hub: &HubArgs) -> Result<A, Failure> {
    let mut sources = Vec::new();
    for path in args.model_paths() {
        let found = hub::resolve(path, hub.gguf_file.as_deref())?;
        if let Some(found) = &found {
            *path = found.path.clone();
        }
        sources.push(found);
    }
    args.resolved(sources);
    Ok(args)
}
