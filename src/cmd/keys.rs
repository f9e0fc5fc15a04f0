//! `livecheck keys`
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct KeysArgs {}

pub fn run(_args: KeysArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
