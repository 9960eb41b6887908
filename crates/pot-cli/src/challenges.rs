//! `pot keygen` and `pot challenges [commit | check-commitment]`.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use pot_challenge_kdf::{ChallengeSpec, Family, KEY_ENV, MasterKey, check_commitment, commit};
use std::path::PathBuf;

use crate::exit::{self, Failure};

#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the key; the file must not exist yet.
    #[arg(long, short)]
    out: PathBuf,
}

/// Where the master key comes from: `--key-file`, else `$POT_KEY`.
#[derive(Args, Clone)]
pub struct KeyArgs {
    /// File holding the master key as 64 hex digits (else `$POT_KEY`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Create the key file with a fresh random key if it does not exist yet.
    #[arg(long, requires = "key_file")]
    pub create_key: bool,
}

impl KeyArgs {
    /// Whether a key was given (`--key-file` or `$POT_KEY`), so [`Self::load`] will not refuse.
    pub fn is_given(&self) -> bool {
        self.key_file.is_some() || std::env::var_os(KEY_ENV).is_some()
    }

    pub fn load(&self) -> Result<MasterKey> {
        if let Some(path) = &self.key_file {
            if self.create_key && !path.exists() {
                let key = MasterKey::generate()?;
                key.save_new(path)?;
                eprintln!(
                    "created a new master key in {} (id {}); keep it secret until you reveal it",
                    path.display(),
                    key.id()
                );
                return Ok(key);
            }
            return Ok(MasterKey::from_file(path)?);
        }
        match MasterKey::from_env()? {
            Some(key) => Ok(key),
            None => bail!(
                "no master key: pass --key-file FILE (add --create-key to make one) or set ${KEY_ENV}"
            ),
        }
    }
}

/// Which challenges: the defaults are `pot verify`'s, so `pot challenges commit` with the same
/// `--run-id` and `--mode` prints exactly the commitment the verify report will carry.
#[derive(Args, Clone)]
pub struct SpecArgs {
    /// Run identifier; different runs with one key get unrelated challenges (verify's default).
    #[arg(long, default_value = "verify")]
    pub run_id: String,
    /// The verify mode whose query cap is the number of challenges: quick 48, audit 96,
    /// extended 192 (verify's default: audit).
    #[arg(long, default_value = "audit", value_parser = crate::decide::parse_mode)]
    pub mode: pot_stats::Mode,
    /// Number of challenges instead of the mode's cap.
    #[arg(short = 'n', long = "count")]
    pub count: Option<u64>,
    /// Restrict to these families (repeatable): factual, reasoning, code, dialogue, french.
    #[arg(long = "family", value_parser = parse_family)]
    pub families: Vec<Family>,
}

impl Default for SpecArgs {
    /// The same defaults as the flags (clap leaves an optional flattened group `None` when
    /// none of its flags is given).
    fn default() -> Self {
        Self {
            run_id: "verify".into(),
            mode: pot_stats::Mode::audit_grade(),
            count: None,
            families: Vec::new(),
        }
    }
}

impl SpecArgs {
    pub fn count(&self) -> u64 {
        self.count.unwrap_or(self.mode.n_max)
    }

    pub fn spec(&self) -> ChallengeSpec {
        ChallengeSpec::new(self.run_id.clone(), self.count()).with_families(self.families.clone())
    }
}

fn parse_family(name: &str) -> Result<Family, String> {
    Family::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        format!("unknown family `{name}`; choose from {}", known.join(", "))
    })
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ChallengesArgs {
    #[command(subcommand)]
    action: Option<ChallengesAction>,
    #[command(flatten)]
    key: Option<KeyArgs>,
    #[command(flatten)]
    spec: Option<SpecArgs>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ChallengesAction {
    /// Print the commitment to publish before scoring (the key stays secret).
    Commit {
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        spec: SpecArgs,
        #[arg(long)]
        json: bool,
    },
    /// Check that a revealed key reproduces a published commitment (exit 0 if it does, 1 if
    /// not); with `--report`, also that the report's run used exactly that commitment.
    CheckCommitment {
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        spec: SpecArgs,
        /// The published commitment digest (hex).
        #[arg(long)]
        commitment: String,
        /// A `pot verify` report: its run id and query cap replace --run-id / --mode, and its
        /// recorded commitment must be the published one.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

pub fn keygen(args: KeygenArgs) -> Result<u8, Failure> {
    let key = MasterKey::generate()?;
    key.save_new(&args.out)?;
    println!("wrote {} (key id {})", args.out.display(), key.id());
    Ok(exit::SAME)
}

pub fn run(args: ChallengesArgs) -> Result<u8, Failure> {
    match args.action {
        Some(ChallengesAction::Commit { key, spec, json }) => {
            let commitment = commit(&key.load()?, &spec.spec());
            if json {
                crate::embed::print_json(&serde_json::to_value(&commitment)?)?;
            } else {
                println!("{}", commitment.digest);
            }
            Ok(exit::SAME)
        }
        Some(ChallengesAction::CheckCommitment {
            key,
            spec,
            commitment,
            report,
        }) => {
            let key = key.load()?;
            let mut spec = spec.spec();
            if let Some(path) = &report {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                let r: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    exit::fail(
                        exit::LOAD_FAILED,
                        anyhow::anyhow!("{} is not a JSON report: {e}", path.display()),
                    )
                })?;
                let c = &r["challenges"];
                let (Some(run_id), Some(cap), Some(recorded)) = (
                    c["run_id"].as_str(),
                    c["cap"].as_u64(),
                    c["commitment"].as_str(),
                ) else {
                    return Err(exit::fail(
                        exit::LOAD_FAILED,
                        anyhow::anyhow!("{} records no challenge commitment", path.display()),
                    ));
                };
                if recorded != commitment {
                    println!(
                        "MISMATCH: the report's run used commitment {recorded}, not the published {commitment}"
                    );
                    return Ok(exit::DIFFERENT);
                }
                spec = ChallengeSpec::new(run_id, cap).with_families(spec.families.clone());
            }
            if check_commitment(&key, &spec, &commitment) {
                println!("ok: key {} reproduces commitment {commitment}", key.id());
                Ok(exit::SAME)
            } else {
                println!(
                    "MISMATCH: key {} with run id `{}`, n = {} does not reproduce {commitment}",
                    key.id(),
                    spec.run_id,
                    spec.count
                );
                Ok(exit::DIFFERENT)
            }
        }
        None => {
            let key = args.key.unwrap_or(KeyArgs {
                key_file: None,
                create_key: false,
            });
            let spec = args.spec.unwrap_or_default().spec();
            let key = key.load()?;
            let commitment = commit(&key, &spec);
            let challenges = pot_challenge_kdf::generate(&key, &spec);
            if args.json {
                let out = serde_json::json!({ "commitment": commitment, "challenges": challenges });
                crate::embed::print_json(&out)?;
            } else {
                println!(
                    "# run `{}`, {} challenges, key id {}, commitment {}",
                    spec.run_id, spec.count, commitment.key_id, commitment.digest
                );
                for c in &challenges {
                    println!(
                        "\n[{}] {} {}\n{}",
                        c.index,
                        c.family,
                        c.id,
                        c.prompt.trim_end()
                    );
                }
            }
            Ok(exit::SAME)
        }
    }
}
